"""Tests that edit a trace or a replay on purpose make it consistent again: the manifest
names each file's size and hash, which readers check."""

from __future__ import annotations

import json
from pathlib import Path

from pvscope import schema


def reseal(trace: Path) -> None:
    """Rewrite a trace's manifest ``files`` for its table files as they now are."""
    m = json.loads((trace / "manifest.json").read_text())
    m["files"] = schema.file_digests(trace)
    (trace / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")


def reseal_run(run: Path) -> None:
    """The same for one replay run's directory (``backend=LABEL``)."""
    m = json.loads((run / "manifest.json").read_text())
    m["files"] = {
        p.name: {"bytes": p.stat().st_size, "sha256": schema.sha256_of(p)}
        for p in sorted(run.glob("*.parquet"))
    }
    (run / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")
