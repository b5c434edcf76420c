"""The checks of a backend whose copy of the tables stays empty, held to the simulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pvscope.hooks import HOOKS
from replayer import engine
from replayer.backends import Run, all_runs
from replayer.costs import CostTable
from replayer.engine import walk
from replayer.engine.empty import JUDGED, EmptyJudge, copy_stays_empty
from replayer.engine.schedule import _QUEUED_ONE
from replayer.mechanisms.coherence import ViewPair
from replayer.mechanisms.pagetables import GLOBAL, PSE, GuestMMU
from replayer.trace import Trace, load
from tests.support import synth

EMPTY = [r for r in all_runs() if copy_stays_empty(r)]


def _alone(tr: Trace, run: Run, p4: CostTable, exact: bool = False) -> engine.RunResult:
    tr.cache.pop("sequential", None)
    tr.cache.pop(JUDGED, None)
    return engine.replay(tr, run, p4, exact=exact)


def _same(a: engine.RunResult, b: engine.RunResult) -> None:
    for col in ("cycles", "mechanism", "exits", "hypercalls", "traps", "batch_flushes", "batched"):
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
    assert a.violations == b.violations
    assert a.summary == b.summary


def test_the_runs_whose_copy_stays_empty_are_the_four_none_ablations() -> None:
    assert sorted(r.label for r in EMPTY) == sorted(
        f"{b}-without-{req}-none" for b in ("vmi", "xen-pv") for req in ("ptalloc", "pteupdate")
    )


@pytest.mark.parametrize("label", [r.label for r in EMPTY])
def test_the_simulated_copy_does_stay_empty_and_the_checks_agree(
    label: str, synth_trace: Trace, fork_path: Path, p4: CostTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = next(r for r in EMPTY if r.label == label)
    monkeypatch.setattr(walk, "WINDOW", 11)  # stops taken as lists, so many at a time
    for tr in (synth_trace, load(fork_path)):
        sim = engine._Replay(tr, run, p4, False, exact=True)
        tr.cache.pop("sequential", None)
        exact = sim.run(None)
        exact.summary = engine.summarize(exact)
        assert not sim.pair.view.np.any()  # what copy_stays_empty claims
        fast = _alone(tr, run, p4)
        assert fast.sequential == "lean"
        assert any(v.check == "mmu.missing" for v in fast.violations)
        _same(fast, exact)


def test_a_table_swapped_under_a_directory_entry_without_a_flush_gets_the_tlb_leeway(
    tmp_path: Path, p4: CostTable
) -> None:
    # the directory entry names table B where it named A, with no flush between: a native
    # TLB may still walk A, so a page B maps and A does not is not counted missing
    b = synth.TraceBuilder(seed=3)
    synth.boot(b)
    proc = synth.spawn(b, pages=4)
    synth.switch_to(b, proc)
    new = b.alloc_frame()
    b.hook("alloc_pt", new)
    for j in range(8):
        b.hook("set_pte", b.ptr(new, j), (b.alloc_frame() << 12) | 0x67)
    i = 0x08048000 >> 22
    b.hook("set_pmd", b.ptr(proc.pd, i), (new << 12) | 0x67)
    b.hook("flush_tlb_single", 0xC0001000)  # a check, leaving the swapped entry unflushed
    b.hook("flush_tlb_user")
    tr = load(b.write(tmp_path / "t"))
    for run in EMPTY:
        fast, exact = _alone(tr, run, p4), _alone(tr, run, p4, exact=True)
        _same(fast, exact)
    found = [v for v in fast.violations if v.check == "mmu.missing"]
    at_single = next(v for v in found if "flush_tlb_single" in v.detail)
    at_user = next(v for v in found if "flush_tlb_user" in v.detail)
    # after the user flush the eight pages of B count; before it, the TLB may hold A's
    assert int(at_user.detail.split()[0]) - int(at_single.detail.split()[0]) == 8


def test_checks_made_while_calls_are_queued_are_judged_at_the_flush(
    tmp_path: Path, p4: CostTable
) -> None:
    # a CR3 load queued in lazy CPU mode: its check waits for the queue's flush, after
    # the stores made meanwhile
    b = synth.TraceBuilder(seed=3)
    synth.boot(b)
    a, c = synth.spawn(b, pages=2), synth.spawn(b, pages=2)
    synth.switch_to(b, a)
    b.hook("set_lazy_mode", 2)
    b.hook("write_cr3", c.pd << 12)
    addr = 0x08048000 + (5 << 12)
    pt = c.tables[addr >> 22]
    b.hook("set_pte_at", c.mm, addr, b.ptr(pt, 5), (b.alloc_frame() << 12) | 0x67)
    b.hook("set_lazy_mode", 0)
    tr = load(b.write(tmp_path / "t"))
    for run in EMPTY:
        fast, exact = _alone(tr, run, p4), _alone(tr, run, p4, exact=True)
        _same(fast, exact)


def test_damaged_traces_give_the_simulations_checks(tmp_path: Path, p4: CostTable) -> None:
    # page-table hooks knocked out of synthetic traces (turned into io_delay): the tables
    # the guest leaves behind are odd in many ways, the checks still agree
    rng = np.random.default_rng(5)
    for seed in range(4):
        b = synth.workload(seed=seed, rounds=2)
        synth.knock_out(b, rng, synth.MMU_HOOKS)
        tr = load(b.write(tmp_path / f"t{seed}"))
        for run in EMPTY:
            _same(_alone(tr, run, p4), _alone(tr, run, p4, exact=True))


def test_the_reasons_of_many_checks_are_each_checks_reason(
    synth_trace: Trace, p4: CostTable
) -> None:
    # Schedule.reasons (one lookup per distinct check kind) says what Schedule.reason says
    # of each row, in the rows' order, including checks applied at a flush of the queue
    from replayer.engine.lean import LeanPass
    from replayer.engine.static import _Costs

    seen_queued = False
    for run in EMPTY:
        lp = LeanPass(synth_trace, run, p4, False)
        lp.cs = _Costs(lp.model, p4)
        where = lp._schedule(lp._queue_plan())
        rows = list(range(len(where)))[::-3]
        assert where.reasons(rows) == [where.reason(i) for i in rows]
        seen_queued |= any("batch flush" in r for r in where.reasons(rows))
    assert seen_queued
    assert EMPTY and where.reasons([]) == []


@pytest.mark.parametrize("seed", range(6))
def test_the_judge_kept_up_to_date_finds_what_a_full_comparison_finds(seed: int) -> None:
    """The judge keeps each directory's entries, their pages and the lowest page from
    one check to the next; after any mix of stores, fills, clones, CR3 loads and flushes
    it finds what the simulation's comparison against an empty copy finds, from
    scratch."""
    rng = np.random.default_rng(seed)
    g = GuestMMU(64)
    g.pge = seed % 2 == 0
    pds, tables = [2, 3, 4], list(range(10, 18))
    judge = EmptyJudge(g, [])
    g.cr3 = pds[0] << 12
    found = 0
    for step in range(400):
        op = rng.random()
        if op < 0.7:  # a run of stores
            es, vs = [], []
            for _ in range(int(rng.integers(1, 5))):
                if rng.random() < 0.7:
                    pfn, idx = int(rng.choice(tables)), int(rng.integers(0, 12))
                    v = 0 if rng.random() < 0.25 else (int(rng.integers(0x100, 0x140)) << 12) | 7
                else:
                    pfn, idx = int(rng.choice(pds)), int(rng.integers(0, 8))
                    if rng.random() < 0.1:
                        v = (int(rng.integers(0, 64)) << 22) | PSE | 7
                    else:
                        v = 0 if rng.random() < 0.2 else (int(rng.choice(tables)) << 12) | 7
                if rng.random() < 0.1:
                    v |= GLOBAL
                es.append((pfn << 10) | idx)
                vs.append(v)
            batch = np.asarray(es, np.int64) if rng.random() < 0.3 else es
            moved = g.write_many(
                batch, np.asarray(vs, np.int64) if isinstance(batch, np.ndarray) else vs
            )
            judge.stamp_run(batch, moved if rng.random() < 0.8 else None)
        elif op < 0.78:  # alloc_pt: often a table already clear
            t = int(rng.choice(tables))
            if g.fill(t, 0, 1024, None):
                judge.stamp_frame(t)
        elif op < 0.82:  # alloc_pd_clone: part of another directory
            pd, src = (int(x) for x in rng.choice(pds, 2, replace=False))
            vals = g.frames.page(src)[4:8].copy()
            changed = g.fill(pd, 0, 1024, None)
            if g.fill(pd, 4, 8, vals) or changed:
                judge.stamp_frame(pd)
        elif op < 0.9:
            g.cr3 = int(rng.choice(pds)) << 12
            g.flush_all(False)
        elif op < 0.95:
            g.flush_addr(int(rng.integers(0, 8)) << 22 | int(rng.integers(0, 12)) << 12)
        else:
            g.flush_all(rng.random() < 0.5)
        pd = g.cr3 >> 12
        full = ViewPair(g)  # a copy that stays empty, compared page by page
        full.set_cr3(pd << 12)
        want = [(f.pages, f.vpn, f.expected) for f in full.check_full().findings]
        assert all(f.kind == "missing" for f in full.check_full().findings)
        got = judge.missing()
        assert ([got] if got is not None else []) == want, step
        found += got is not None
    assert found > 100


def test_a_check_alone_at_a_flush_has_a_code_above_every_hook() -> None:
    """A check that alone waited for the queue's flush is coded as its hook plus
    ``_QUEUED_ONE`` (a checkpoint's as ``_QUEUED_ONE - 1``): no hook may reach that."""
    assert max(h.id for h in HOOKS) < _QUEUED_ONE - 1
