"""The checks of a backend whose copy of the tables stays empty, held to the simulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pvscope.hooks import HOOKS
from replayer import engine
from replayer.backends import Run, all_runs
from replayer.costs import CostTable
from replayer.engine import emptywalk as ew
from replayer.engine.empty import JUDGED, copy_stays_empty
from replayer.engine.schedule import _QUEUED_ONE
from replayer.mechanisms.coherence import ViewPair
from replayer.mechanisms.pagetables import GLOBAL, PSE, GuestMMU, cloned
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


def _agree(tr: Trace, p4: CostTable) -> list[engine.RunResult]:
    """Every empty copy replayed alone, held to the simulation; their results."""
    out = []
    for run in EMPTY:
        fast = _alone(tr, run, p4)
        _same(fast, _alone(tr, run, p4, exact=True))
        out.append(fast)
    return out


def test_the_runs_whose_copy_stays_empty_are_the_four_none_ablations() -> None:
    assert sorted(r.label for r in EMPTY) == sorted(
        f"{b}-without-{req}-none" for b in ("vmi", "xen-pv") for req in ("ptalloc", "pteupdate")
    )


@pytest.mark.parametrize("label", [r.label for r in EMPTY])
def test_the_simulated_copy_does_stay_empty_and_the_checks_agree(
    label: str, synth_trace: Trace, fork_path: Path, p4: CostTable
) -> None:
    run = next(r for r in EMPTY if r.label == label)
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
    fast = _agree(tr, p4)[-1]
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
    _agree(tr, p4)


def test_a_table_zeroed_by_its_allocation_alone_gives_the_simulations_checks(
    tmp_path: Path, p4: CostTable
) -> None:
    # a table the loaded directory names, zeroed by an allocation alone (no store to it
    # after): only the allocation says its pages went
    b = synth.TraceBuilder(seed=4)
    synth.boot(b)
    proc = synth.spawn(b, pages=4)
    synth.switch_to(b, proc)
    b.hook("flush_tlb_user")
    b.hook("alloc_pt", proc.tables[0x08048000 >> 22])
    b.hook("flush_tlb_kernel")
    tr = load(b.write(tmp_path / "zeroed"))
    fast = _agree(tr, p4)[-1]
    missing = [v for v in fast.violations if v.check == "mmu.missing"]
    assert int(missing[-2].detail.split()[0]) - int(missing[-1].detail.split()[0]) == 4


def test_damaged_traces_give_the_simulations_checks(tmp_path: Path, p4: CostTable) -> None:
    # page-table hooks knocked out of synthetic traces (turned into io_delay): the tables
    # the guest leaves behind are odd in many ways, the checks still agree
    rng = np.random.default_rng(5)
    for seed in range(6):
        b = synth.workload(seed=seed, rounds=2)
        synth.knock_out(b, rng, synth.MMU_HOOKS)
        tr = load(b.write(tmp_path / f"t{seed}"))
        _agree(tr, p4)


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


#: A step of :func:`_walked`: stores ``((pfn, idx, value), ...)``, then an op of the
#: compiled walk's with its four arguments.
Step = tuple[list[tuple[int, int, int]], tuple[int, int, int, int, int]]


def step_on(pair: ViewPair, step: Step) -> None:
    """A step's stores and op on the guest's side of ``pair`` (its copy learns nothing:
    what a backend learns is the caller's)."""
    stores, (code, a0, a1, a2, a3) = step
    g = pair.guest
    for pfn, idx, v in stores:
        pair.guest_write(pfn, idx, v)
    if code == ew.OP_ZERO:
        pair.guest_fill(a0, 0, 1024, None)
    elif code == ew.OP_CLONE:
        pair.guest_fill(a0, 0, 1024, cloned(g.frames, a1, a2, a3))
    elif code == ew.OP_CR4:
        g.pge = bool(a0 & 0x80)
    elif code == ew.OP_CR3:
        g.cr3 = a0
        pair.guest_flushed(g.flush_all(False))
    elif code == ew.OP_FLUSH_ONE:
        pair.guest_flushed(g.flush_addr(a0))
    elif code in (ew.OP_FLUSH_USER, ew.OP_FLUSH_ALL):
        pair.guest_flushed(g.flush_all(code == ew.OP_FLUSH_ALL))


def walk_columns(steps: list[Step]) -> tuple[np.ndarray, ...]:
    """The steps as a compiled walk takes them: stores' entries and values, the stores
    each step applies up to, its op and the op's four arguments."""
    st_e = np.asarray([pfn << 10 | idx for st, _ in steps for pfn, idx, _ in st], np.int64)
    st_v = np.asarray([v for st, _ in steps for _, _, v in st], dtype=np.int64)
    upto = np.cumsum([len(st) for st, _ in steps], dtype=np.int64)
    cols = [np.asarray(c, dtype=np.int64) for c in zip(*(op for _, op in steps), strict=True)]
    return st_e, st_v, upto, cols[0].astype(np.int8), *cols[1:]


def _walked(steps: list[Step]) -> tuple[list[tuple[int, ...]], list[tuple[int, int, int]]]:
    """Each step applied to :class:`GuestMMU` and checked by the simulation's comparison
    against a view that stays empty, page by page; and the same steps through the compiled
    walk, a check after each: (the walk's findings, the comparison's)."""
    pair = ViewPair(GuestMMU(64))
    want = []
    for step in steps:
        step_on(pair, step)
        found: list[tuple[int, int, int]] = []
        if pair.guest.cr3 is not None:
            pair.set_cr3(pair.guest.cr3)
            findings = pair.check_full().findings
            assert all(f.kind == "missing" for f in findings)
            found = [(f.pages, f.vpn, f.expected) for f in findings]
        want.append(found[0] if found else (0, 0, 0))
    got = ew._walk(64, *walk_columns(steps), np.ones(len(steps), dtype=bool))
    return [tuple(x) for x in got.tolist()], want


def random_steps(seed: int, n: int = 400) -> list[Step]:
    """A random mix of stores (now and then global, a big page, or a directory naming a
    directory), zeroings, clones, CR3 loads, CR4.PGE and the three flushes over three
    directories and eight tables, after a first CR3 load (and CR4.PGE for even seeds)."""
    rng = np.random.default_rng(seed)
    pds, tables = [2, 3, 4], list(range(10, 18))
    steps: list[Step] = [([], (ew.OP_CR3, pds[0] << 12, 0, 0, 0))]
    if seed % 2 == 0:
        steps.append(([], (ew.OP_CR4, 0x80, 0, 0, 0)))
    for _ in range(n):
        r = rng.random()
        stores: list[tuple[int, int, int]] = []
        op = (ew.OP_NONE, 0, 0, 0, 0)
        if r < 0.7:  # a run of stores
            for _ in range(int(rng.integers(1, 5))):
                if rng.random() < 0.7:
                    pfn, idx = int(rng.choice(tables)), int(rng.integers(0, 12))
                    v = 0 if rng.random() < 0.25 else (int(rng.integers(0x100, 0x140)) << 12) | 7
                else:
                    pfn, idx = int(rng.choice(pds)), int(rng.integers(0, 12))
                    # now and then a directory names a directory (a self-map)
                    named = int(rng.choice(tables + pds if rng.random() < 0.2 else tables))
                    v = 0 if rng.random() < 0.2 else (named << 12) | 7
                    if rng.random() < 0.1:
                        v = (int(rng.integers(0, 64)) << 22) | PSE | 7
                if rng.random() < 0.1:
                    v |= GLOBAL
                if rng.random() < 0.1:
                    v &= ~2  # read-only: the same frame, other permissions
                stores.append((pfn, idx, v))
        elif r < 0.78:  # alloc_pt: often a table already clear
            op = (ew.OP_ZERO, int(rng.choice(tables)), 0, 0, 0)
        elif r < 0.82:  # alloc_pd_clone: part of another directory (or itself)
            pd, src = (int(x) for x in rng.choice(pds, 2))
            op = (ew.OP_CLONE, pd, src, 4, 4)
        elif r < 0.9:
            op = (ew.OP_CR3, int(rng.choice(pds)) << 12, 0, 0, 0)
        elif r < 0.95:
            addr = int(rng.integers(0, 12)) << 22 | int(rng.integers(0, 12)) << 12
            op = (ew.OP_FLUSH_ONE, addr, 0, 0, 0)
        else:
            op = (ew.OP_FLUSH_ALL if rng.random() < 0.5 else ew.OP_FLUSH_USER, 0, 0, 0, 0)
        steps.append((stores, op))
    return steps


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_walk_finds_what_a_full_comparison_finds(seed: int) -> None:
    """After any mix of stores, zeroings, clones, CR3 loads, CR4.PGE and flushes, the
    compiled walk's check finds what the simulation's comparison against an empty copy
    finds, from the guest's tables as :class:`GuestMMU` keeps them."""
    got, want = _walked(random_steps(seed))
    assert got == want
    assert sum(w[0] > 0 for w in want) > 100


def test_an_invlpg_through_a_self_map_freshens_the_directory_entry_it_reaches() -> None:
    """A directory entry naming the directory itself: an invlpg through it freshens the
    directory's own entry it reaches as a table's, and the pages an older table of that
    entry did not map are missing again."""
    pd, old, new = 2, 10, 11
    steps: list[Step] = [
        ([(old, 0, 0x100067)], (ew.OP_CR3, pd << 12, 0, 0, 0)),
        ([(new, k, (0x200 + k) << 12 | 0x67) for k in range(4)], (ew.OP_NONE, 0, 0, 0, 0)),
        ([(pd, 0, pd << 12 | 0x67), (pd, 1, old << 12 | 0x67)], (ew.OP_FLUSH_USER, 0, 0, 0, 0)),
        ([(pd, 1, new << 12 | 0x67)], (ew.OP_NONE, 0, 0, 0, 0)),  # the TLB may hold `old`
        ([], (ew.OP_FLUSH_ONE, (0 << 22) | (1 << 12), 0, 0, 0)),  # through entry 0: (pd, 1)
    ]
    got, want = _walked(steps)
    assert got == want
    # the pages table `new` maps beyond what `old` did: excused, then missing after invlpg
    assert got[3][0] + 3 == got[4][0]


def test_a_check_alone_at_a_flush_has_a_code_above_every_hook() -> None:
    """A check that alone waited for the queue's flush is coded as its hook plus
    ``_QUEUED_ONE`` (a checkpoint's as ``_QUEUED_ONE - 1``): no hook may reach that."""
    assert max(h.id for h in HOOKS) < _QUEUED_ONE - 1
