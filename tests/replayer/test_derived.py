"""Per-trace derived data held to plain references."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from replayer.engine import derived
from replayer.engine.checks import trace_mmu_checks
from replayer.engine.common import _ALLOCS, _H
from replayer.engine.derived import _directory_frames, fill_changes, loaded_spaces, pte_entries
from replayer.mechanisms.pagetables import Frames
from replayer.trace import HOOK_ID, Trace, load
from tests.support import synth


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


def _tables_walk(tr: Trace, at: list[int], nframes: int) -> Iterator[Frames]:
    """The guest's frames after each event of ``at`` in turn, event by event."""
    ent, val = pte_entries(tr)
    frames = Frames(nframes)
    allocs, clone = set(_ALLOCS), _H["alloc_pd_clone"]
    stops = set(at)
    ks = np.union1d(np.flatnonzero((ent >= 0) | np.isin(tr.hook, _ALLOCS)), at)
    cols = (ent[ks], val[ks], tr.hook[ks], tr.arg0[ks], tr.arg1[ks], tr.arg2[ks], tr.arg3[ks])
    for k, e, v, h, a0, a1, a2, a3 in zip(ks.tolist(), *(c.tolist() for c in cols), strict=True):
        if e >= 0:
            frames.grow(e >> 10)
            frames.np[e] = v
        elif h in allocs:
            derived._fill_table(frames, a0, (a1, a2, a3) if h == clone else None)
        if k in stops:
            yield frames


def _interleaved(b: synth.TraceBuilder) -> None:
    """Stores and allocations of the same frames between two checkpoints: a table
    stored to, zeroed and stored to again; a directory cloned from a source changed just
    before, then cloned itself and changed after; a directory cloned from itself."""
    synth.boot(b)
    a = synth.spawn(b, pages=3)
    synth.switch_to(b, a)
    b.checkpoint()
    addr = sorted(a.pages)[0]
    pt = a.tables[addr >> 22]
    b.hook("set_pte_at", a.mm, addr, b.ptr(pt, 5), 0x1234067)
    b.hook("alloc_pt", pt)
    b.hook("set_pte_at", a.mm, addr, b.ptr(pt, 6), 0x2345067)
    extra = b.alloc_frame()
    b.hook("alloc_pt", extra)
    b.hook("set_pmd", b.ptr(b.swapper, 0x3F0), (extra << 12) | 0x063)
    c = synth.spawn(b, pages=1)
    d = synth.Proc(pd=b.alloc_frame(), mm=0x7000)
    b.hook("alloc_pd_clone", d.pd, c.pd, 768, 256)
    b.hook("set_pmd", b.ptr(c.pd, 0x3F1), (extra << 12) | 0x063)
    b.hook("alloc_pd_clone", c.pd, c.pd, 700, 324)
    synth.switch_to(b, d)
    b.checkpoint()
    synth.switch_to(b, c)
    b.checkpoint()


def test_tables_at_stops_equal_a_walk_event_by_event(
    tmp_path: Path, fork_path: Path, synth_trace: Trace
) -> None:
    rng = np.random.default_rng(3)
    b = synth.TraceBuilder(seed=1)
    _interleaved(b)
    traces = [load(b.write(tmp_path / "interleaved")), load(fork_path), synth_trace]
    for seed in range(4):
        w = synth.workload(seed=seed, rounds=2)
        synth.knock_out(w, rng, ("set_pte", "set_pte_at", "set_pmd", "alloc_pt", "alloc_pd_clone"))
        traces.append(load(w.write(tmp_path / f"damaged{seed}")))
    for tr in traces:
        fills = np.flatnonzero(np.isin(tr.hook, _ALLOCS))
        near = fills[::3] if len(fills) <= 300 else rng.choice(fills, 60, replace=False)
        # stops anywhere and on allocations; and at the checkpoints alone (many allocations
        # between two stops)
        for at in (
            np.unique(np.concatenate([rng.choice(tr.n, min(tr.n, 60), replace=False), near])),
            np.array(sorted(tr.checkpoints), dtype=np.int64),
        ):
            frames = Frames(1 << 14)
            stops = zip(at.tolist(), derived.tables_at(tr, frames, at), strict=True)
            for (k, _), ref in zip(stops, _tables_walk(tr, at.tolist(), 1 << 14), strict=True):
                got, want = frames.np, ref.np
                n = min(len(got), len(want))
                assert np.array_equal(got[:n], want[:n]), (tr.name, k)
                assert not got[n:].any() and not want[n:].any()


def test_the_tables_rebuilt_meet_every_digest_where_stores_and_allocations_interleave(
    tmp_path: Path,
) -> None:
    b = synth.TraceBuilder(seed=1)
    _interleaved(b)
    tr = load(b.write(tmp_path / "interleaved"))
    assert len(tr.checkpoints) >= 3
    assert trace_mmu_checks(tr) == []


def _high_frames(path: Path) -> Trace:
    """A synthetic trace whose tables sit at frames near 900 MiB and which is long enough
    that a frame times its length (the passes' sort keys) overflows int32."""
    b = synth.TraceBuilder(seed=3, mem_mib=880)
    b.free.reverse()  # the highest frames first
    synth.boot(b)
    a = synth.spawn(b, pages=6)
    synth.switch_to(b, a)
    synth.leave_kernel(b)
    for _ in range(90):
        synth.enter_kernel(b)
        synth.fork_cycle(b, a, faults=2)
        synth.timer_tick(b)
        synth.kmap_churn(b)
        b.checkpoint()
        synth.leave_kernel(b)
    return load(b.write(path))


def test_narrow_entries_give_what_int64_entries_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pte_entries is kept as int32/uint32 (a 17 M-event trace's 130 MiB in every worker);
    # every pass must widen before it multiplies a frame by the trace's length
    from replayer import backends, costs, engine

    tr = _high_frames(tmp_path / "trace")
    ent, val = pte_entries(tr)
    assert (ent.dtype, val.dtype) == (np.int32, np.uint32)
    assert int(ent.max() >> 10) * (tr.n + 1) >= 1 << 31, "no key would overflow"
    table = costs.load("p4")
    runs = [r for r in backends.all_runs() if r.fallback != "trap" or r.without == "ptalloc"]

    def everything() -> list[object]:
        tr.cache.clear()
        sp = loaded_spaces(tr)
        got: list[object] = [sp.spells.tolist(), sp.at_cr3, sp.at_invlpg]
        got += [derived.loaded_table_stores(tr).tolist(), trace_mmu_checks(tr)]
        for run in runs:
            r = engine.replay(tr, run, table)
            got += [r.summary, r.violations, r.cycles.tolist()]
        return got

    narrow = everything()
    monkeypatch.setattr(
        derived, "pte_entries", lambda t: tuple(x.astype(np.int64) for x in (ent, val))
    )
    assert narrow == everything()


def test_whole_trace_masks_taken_a_slice_at_a_time_are_the_whole_ones(
    synth_trace: Trace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # slices far smaller than the trace (their edges fall everywhere) against the
    # definitions worked out on the whole trace at once
    from replayer.engine import checks, summary
    from replayer.engine.common import _PRIVILEGED
    from replayer.trace import K_HOOK

    tr = synth_trace
    hk = np.where(tr.hook >= 0, tr.hook, len(_PRIVILEGED) - 1)
    priv = (tr.kind == K_HOOK) & _PRIVILEGED[hk]
    vif = np.random.default_rng(1).random(tr.n) < 0.5
    for mod in (checks, summary):
        monkeypatch.setattr(mod, "_SLICE", 7)
    at0 = tr.cpl.copy()
    at0[::5] = 0  # some events at CPL 0 too (the synthetic kernel runs at CPL 1), and
    at0[1::7] = 3  # hook calls at CPL 3 (a kernel left at CPL 0 does not make them CPL 0)
    monkeypatch.setattr(tr, "cpl", at0)
    for cpl_none in (False, True):
        cpl = np.where(tr.cpl == 1, 0, tr.cpl) if cpl_none else tr.cpl
        want = np.flatnonzero((cpl == 0) & (priv | (tr.cpl == 0)))
        assert np.array_equal(checks._at_cpl0(tr, cpl_none), want)
    assert len(checks._at_cpl0(tr, True)) > len(checks._at_cpl0(tr, False)) > 0
    sf = np.flatnonzero((tr.hook == HOOK_ID["save_fl"]) & tr.has_result)
    bad = sf[((tr.result[sf] >> 9) & 1).astype(bool) != vif[sf]]
    (block,) = checks._save_fl_rows(tr, vif)
    assert np.array_equal(block.seq, bad) and len(bad)
    assert [block.row(i).expected for i in range(len(bad))] == [hex(int(w)) for w in tr.result[bad]]
    tr.cache.pop("exit reason names", None)
    names = summary.name_codes(tr)
    tr.cache.pop("exit reason names")
    kind = np.where(tr.kind >= 0, tr.kind, len(summary.KINDS)) + len(summary.HOOKS)
    assert np.array_equal(names, np.where(tr.hook >= 0, tr.hook, kind))
