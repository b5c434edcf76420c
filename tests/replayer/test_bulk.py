"""The array path for long runs of stores gives what the per-store loops give.

``replayer.mechanisms.bulk.VEC_MIN`` chooses between them; each run is replayed with
every run of stores taken as arrays (0) and none (a threshold no run reaches), and the
results must be equal to the last event, violation and summary key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from replayer import engine
from replayer.backends import all_runs
from replayer.costs import CostTable
from replayer.engine.proofs import _first_after
from replayer.mechanisms import bulk
from replayer.mechanisms.pagetables import FrameOlds, GuestMMU
from replayer.trace import Trace, load
from tests.replayer.test_engine import _same


def _both(tr: Trace, label: str, p4: CostTable, monkeypatch: pytest.MonkeyPatch) -> None:
    run = next(r for r in all_runs() if r.label == label)
    got = []
    for threshold in (0, 1 << 40):
        monkeypatch.setattr(bulk, "VEC_MIN", threshold)
        tr.cache.pop("sequential", None)
        got.append(engine.replay(tr, run, p4, exact=True))
    _same(*got)


#: Runs whose sequential pass takes runs of stores in every way they can be taken (the
#: guest only, queued, both copies, lguest's kinds, lost to an unregistered frame).
SOME = {
    "vmi",
    "xen-pv",
    "lguest-without-pteupdate-trap",
    "vmi-without-pteupdate-none",
    "xen-pv-without-ptalloc-none",
    "lguest-without-pteupdate-none",
}


@pytest.mark.parametrize(
    "label",
    [pytest.param(r.label, marks=() if r.label in SOME else pytest.mark.slow) for r in all_runs()],
)
def test_long_runs_as_arrays_replay_as_store_by_store(
    label: str,
    synth_trace: Trace,
    fork_path: Path,
    p4: CostTable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for tr in (synth_trace, load(fork_path)):
        _both(tr, label, p4, monkeypatch)


def test_a_frame_filled_over_present_entries_keeps_each_older_value() -> None:
    # a fill leaves a FrameOlds; stores and flushes after it see what a dict would hold
    g = GuestMMU(nframes=8)
    g.write_many([(3 << 10) | i for i in range(4)], [0x5001, 0x6001, 0x7101, 0])
    g.fill(3, 0, 1024, None)
    u = g.unflushed[3]
    assert isinstance(u, FrameOlds)
    assert dict(u.items()) == {0: (0x5001,), 1: (0x6001,), 2: (0x7101,)}
    g.write(3, 0, 0x8001)
    g.write(3, 0, 0)  # the entry now also held 0x8001
    assert g.old_values(3, 0) == (0x5001, 0x8001)
    versions = g.stale_tables(3)
    assert [t[0] for t in versions] == [0x5001, 0x8001]
    assert [t[1] for t in versions] == [0x6001, 0x6001]
    g.pge = True
    g.flush_all(include_global=False)  # 0x7101 is global (bit 8): it stays
    assert dict(g.unflushed[3].items()) == {2: (0x7101,)}
    g.flush_all(include_global=True)
    assert not g.unflushed


def test_first_after_matches_a_direct_search() -> None:
    rng = np.random.default_rng(7)
    for trial in range(200):
        kx, kt = rng.integers(-2, 6, rng.integers(0, 40)), rng.integers(-3, 40, 0)
        kt = rng.integers(-3, 40, len(kx))
        x, t = rng.integers(-2, 7, 30), rng.integers(-5, 45, 30)
        if trial % 2:
            order = np.lexsort((kt, kx))
            kx, kt = kx[order], kt[order]
        want = [
            min((b for a, b in zip(kx, kt, strict=True) if a == xi and b > ti), default=None)
            for xi, ti in zip(x, t, strict=True)
        ]
        got = _first_after(kx, kt, x, t)
        big = np.iinfo(np.int64).max
        assert [None if g == big else int(g) for g in got] == want
        # pairs and times too wide to pack in one int64 (entries by composite times): the
        # other search, with the same answers
        w = 1 << 33
        got = _first_after(kx * w, kt * w, x * w, t * w)
        assert [None if g == big else int(g) // w for g in got] == want
