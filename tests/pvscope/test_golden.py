"""Golden traces: the committed ones still hold, and the check fails when it should."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pvscope import golden as g


def _check(root: Path, names: list[str] | None = None) -> tuple[list[g.Outcome], str]:
    lines: list[str] = []
    outcomes = g.check(names, root, report=lines.append)
    return outcomes, "\n".join(lines)


@pytest.mark.parametrize("workload", g.workloads())
def test_golden_workload_holds(workload: str) -> None:
    outcomes, text = _check(g.GOLDEN_ROOT, [workload])
    assert outcomes[0].ok, text


@pytest.fixture
def golden_copy(tmp_path: Path) -> Path:
    root = tmp_path / "golden"
    shutil.copytree(g.GOLDEN_ROOT / "pvcall", root / "pvcall")
    return root


def test_a_changed_event_fails_with_the_first_differing_row(golden_copy: Path) -> None:
    events = golden_copy / "pvcall" / "trace" / "events.parquet"
    t = pq.read_table(events)
    # drop one hook call from the golden stream: as if the guest path had changed
    victim = t.column("hook").to_pylist().index("write_cr3")
    t = pa.concat_tables([t.slice(0, victim), t.slice(victim + 1)])
    pq.write_table(t.cast(pq.read_schema(events)), events)
    outcomes, text = _check(golden_copy)
    assert not outcomes[0].ok
    assert "[  FAILED  ] pvcall" in text
    assert f"first differing event at seq {victim}" in text
    assert "hook=write_cr3" in text
    assert "reproduce:  pvscope record --guest pvcall" in text
    assert "regenerate: pvscope golden update pvcall" in text


def test_a_truncated_golden_file_is_reported_as_corrupt(golden_copy: Path) -> None:
    events = golden_copy / "pvcall" / "trace" / "events.parquet"
    events.write_bytes(events.read_bytes()[:1000])
    outcomes, text = _check(golden_copy)
    assert not outcomes[0].ok
    assert "golden trace is corrupt" in text and "events.parquet" in text


def test_a_missing_golden_file_is_reported(golden_copy: Path) -> None:
    (golden_copy / "pvcall" / "trace" / "state.parquet").unlink()
    outcomes, text = _check(golden_copy)
    assert "state.parquet is missing" in text and not outcomes[0].ok


def test_golden_traces_stay_small() -> None:
    size = sum(p.stat().st_size for p in g.GOLDEN_ROOT.rglob("*") if p.is_file())
    assert size < 5 * 1024 * 1024
