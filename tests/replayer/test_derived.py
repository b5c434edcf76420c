"""Per-trace derived data held to plain references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from replayer.engine import derived
from replayer.engine.common import _ALLOCS, _H
from replayer.engine.derived import _directory_frames, fill_changes, loaded_spaces, pte_entries
from replayer.trace import Trace, load


def _meaning(v: int) -> int:
    return v & 0xFFFFF087 if v & 1 else 0


def _fill_changes_walk(tr: Trace) -> dict[int, list[int]]:
    """:func:`fill_changes` event by event over whole frames, in plain Python."""
    ent, val = pte_entries(tr)
    dirs = set(_directory_frames(tr).tolist())
    allocs, clone = set(_ALLOCS), _H["alloc_pd_clone"]
    mem: dict[int, list[int]] = {}
    out: dict[int, list[int]] = {}
    for k, (e, v, h) in enumerate(zip(ent.tolist(), val.tolist(), tr.hook.tolist(), strict=True)):
        if e >= 0:
            mem.setdefault(e >> 10, [0] * 1024)[e & 1023] = v
            continue
        pfn = int(tr.arg0[k])
        if h not in allocs or pfn not in dirs:
            continue
        old = mem.get(pfn, [0] * 1024)
        new = [0] * 1024
        src = int(tr.arg1[k])
        if h == clone and src != pfn:  # a clone of itself copies the zeroes it just wrote
            lo, hi = min(int(tr.arg2[k]), 1024), min(int(tr.arg2[k] + tr.arg3[k]), 1024)
            new[lo:hi] = mem.get(src, [0] * 1024)[lo:hi]
        mem[pfn] = new
        out[k] = [j for j in range(1024) if _meaning(old[j]) != _meaning(new[j])]
    return out


@pytest.mark.parametrize("window", [derived._WINDOW, 7])
def test_fill_changes_equal_a_walk_over_whole_frames(
    window: int, fork_path: Path, synth_trace: Trace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(derived, "_WINDOW", window)  # events taken as lists, so many at a time
    for tr in (load(fork_path), synth_trace):
        got = fill_changes(tr)
        want = _fill_changes_walk(tr)
        assert want, "the trace allocates no directory frame"
        assert got.keys() == want.keys()
        for k, idx in want.items():
            assert got[k].tolist() == idx, k
            assert got[k].dtype == np.int64


def test_loaded_spaces_do_not_depend_on_how_many_events_are_taken_at_a_time(
    fork_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tr = load(fork_path)
    whole = loaded_spaces(tr)
    monkeypatch.setattr(derived, "_WINDOW", 5)
    sliced = loaded_spaces(tr)
    assert np.array_equal(whole.spells, sliced.spells) and len(whole.spells)
    assert whole.at_cr3 == sliced.at_cr3 and whole.at_invlpg == sliced.at_invlpg
