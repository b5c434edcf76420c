"""The bare run ``bench/record.py --workloads`` measures the recorder against: the same
guest on the same machine, nothing recorded, the same path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from recorder.record import record

BENCH = Path(__file__).resolve().parents[2] / "bench" / "record.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_record", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# pagefault's page aging reads the Accessed bits TLB samples clear: a bare run that did
# not clear them would retire 7,077,773 instructions at scale 45, not 7,446,407
@pytest.mark.parametrize(("guest", "scale"), [("fork", 20), ("pagefault", 45)])
def test_bare_run_takes_the_recorded_path_and_records_nothing(
    tmp_path: Path, guest: str, scale: int
) -> None:
    m = record(guest, tmp_path / "t", scale=scale)
    got = _bench().bare(guest, scale)
    r, machine = got["result"], got["machine"]
    assert r.status == m["end"]["status"] == "complete"
    assert r.instructions == m["counts"]["instructions"]
    assert machine.drained_events == m["counts"]["events"]
    assert r.hook_calls == m["counts"]["by_kind"]["hook"]
    # nothing recorded: no state checkpoints, no TLB samples, no decoded events
    assert machine.tlb_rows == [] and machine.batch == []
