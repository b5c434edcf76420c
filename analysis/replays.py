"""Replay results as the analysis reads them: finding them, and comparing two."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvscope.errors import UsageError


def is_replay(p: Path) -> bool:
    """A replay results directory (or a trace's ``replay/``)."""
    p = Path(p)
    return (
        p.is_dir()
        and any(p.rglob("*.parquet"))
        and not (p / "manifest.json").exists()
        or (p.name == "replay" and p.is_dir())
    )


def diff_replays(a: Path, b: Path) -> dict[str, Any]:
    """Compare two replay results (per-check violations, per-group cycles)."""
    raise UsageError("comparing replay results needs the replayer's results (not yet available)")


def render_replay_diff(result: dict[str, Any]) -> list[str]:
    """Lines for the terminal."""
    return [str(result)]
