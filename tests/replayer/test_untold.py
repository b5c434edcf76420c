"""lguest told of no page-table store: its checks from a walk of the page-table events,
held to the simulation."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from replayer.backends import all_runs
from replayer.costs import CostTable
from replayer.engine import emptywalk as ew
from replayer.engine import untoldwalk as uw
from replayer.engine.untold import lguest_load, untold
from replayer.mechanisms.coherence import KINDS, ViewPair
from replayer.mechanisms.pagetables import GuestMMU
from replayer.trace import Trace, load
from tests.replayer.test_empty import Step, random_steps, step_on, walk_columns
from tests.replayer.test_engine import _alone, _same
from tests.support import synth
from tests.support.synth import PAGE_KERNEL, G

UNTOLD = next(r for r in all_runs() if r.label == "lguest-without-pteupdate-none")


def test_only_lguest_without_pteupdate_and_no_fallback_is_untold() -> None:
    assert [r.label for r in all_runs() if untold(r)] == [UNTOLD.label]


def test_the_walk_finds_what_the_simulation_finds(
    synth_trace: Trace,
    fork_path: Path,
    pvcall_path: Path,
    p4: CostTable,
) -> None:
    found = []
    for tr in (synth_trace, load(fork_path), load(pvcall_path)):
        exact = _alone(tr, UNTOLD, p4, exact=True)
        fast = _alone(tr, UNTOLD, p4)
        assert exact.sequential == "exact" and fast.sequential == "lean"
        _same(fast, exact)
        found += fast.violations
    # the shadow does go stale, and checks deferred to the queue's flush find it so
    assert any(v.check == "mmu.stale" for v in found)
    assert any("(applied at the batch flush)" in v.detail for v in found)


def test_the_walk_agrees_with_the_simulation_on_damaged_traces(
    tmp_path: Path, p4: CostTable
) -> None:
    # page-table hook calls knocked out (each turned into an io_delay at its seq): the
    # guest's tables and lguest's shadow part ways in more ways than a whole trace shows
    rng = np.random.default_rng(5)
    found = 0
    for seed in range(6):
        b = synth.workload(seed=seed, rounds=2)
        synth.knock_out(b, rng, synth.MMU_HOOKS)
        tr = load(b.write(tmp_path / f"t{seed}"))
        fast, exact = _alone(tr, UNTOLD, p4), _alone(tr, UNTOLD, p4, exact=True)
        _same(fast, exact)
        found += len(fast.violations)
    assert found


def test_a_queued_cr3_load_rereads_at_the_flush_and_a_cached_directory_not_at_all(
    tmp_path: Path, p4: CostTable
) -> None:
    b = synth.TraceBuilder(seed=3)
    synth.boot(b)
    a, other = synth.spawn(b, pages=2), synth.spawn(b, pages=2)
    first, second = sorted(a.pages)[:2]

    def build(b: synth.TraceBuilder) -> None:
        pt = a.tables[first >> 22]
        # a's directory is not cached: lguest re-reads the space, but at the queue's flush,
        # after the store made meanwhile (lguest never sees it; the re-read does)
        b.hook("set_lazy_mode", 2)
        b.hook("write_cr3", a.pd << 12)
        b.hook("set_pte_at", a.mm, first, b.ptr(pt, (first >> 12) & 1023), 0)
        b.hook("set_lazy_mode", 0)
        synth.switch_to(b, other)
        # a's directory is cached now: no re-read, so this store stays unseen
        b.hook("set_pte_at", a.mm, second, b.ptr(pt, (second >> 12) & 1023), 0)
        synth.switch_to(b, a)
        # the trace ends in lazy mode: the last CR3 load waits for the final flush
        synth.switch_to(b, other)
        b.hook("set_lazy_mode", 2)
        b.hook("write_cr3", a.pd << 12)

    build(b)
    tr = load(b.write(tmp_path / "t"))
    fast, exact = _alone(tr, UNTOLD, p4), _alone(tr, UNTOLD, p4, exact=True)
    _same(fast, exact)
    stale = [v for v in exact.violations if v.check == "mmu.stale"]
    assert [v.field for v in stale] == [f"va {second:#010x}"] * 2
    assert all("CR3 load (applied at the batch flush)" in v.detail for v in stale)
    assert stale[-1].seq == tr.n - 1  # the final flush's check


def test_the_least_recently_loaded_directory_leaves_the_cache_and_a_kernel_flush_rereads_all(
    tmp_path: Path, p4: CostTable
) -> None:
    """lguest keeps ``pgdir_cache`` (4) shadow directories and drops the one loaded least
    recently; ``flush_tlb_kernel`` re-reads every frame it holds, loaded or not."""
    assert UNTOLD.model().pgdir_cache == 4
    b = synth.TraceBuilder(seed=4)
    synth.boot(b)
    procs = [synth.spawn(b, pages=1) for _ in range(5)]

    def unseen_store(p: synth.Proc, value: int) -> int:
        addr = next(iter(p.pages))
        pt = p.tables[addr >> 22]
        b.hook("set_pte_at", p.mm, addr, b.ptr(pt, (addr >> 12) & 1023), value)
        return addr

    stale = []  # (the event a stale page is found at, the page)
    for p in procs[:4]:
        synth.switch_to(b, p)  # cached: 0 1 2 3
    va = unseen_store(procs[0], 0)
    synth.switch_to(b, procs[0])  # cached (with three, it would not be): 1 2 3 0
    stale.append((b.n - 1, f"va {va:#010x}"))  # at the lazy section's flush
    synth.switch_to(b, procs[4])  # 2 3 0 4: 1 leaves (first in, it would be 0)
    unseen_store(procs[0], (0x777 << 12) | 7)
    synth.switch_to(b, procs[0])  # cached, not re-read: 2 3 4 0
    stale.append((b.n - 1, f"va {va:#010x}"))
    unseen_store(procs[1], 0)
    synth.switch_to(b, procs[1])  # not cached (with five, it would be): re-read
    unseen_store(procs[3], 0)
    b.hook("flush_tlb_kernel")  # every shadow re-read, 3's as well as the loaded 1's
    synth.switch_to(b, procs[3])  # cached, and fresh from the flush
    tr = load(b.write(tmp_path / "t"))
    fast, exact = _alone(tr, UNTOLD, p4), _alone(tr, UNTOLD, p4, exact=True)
    _same(fast, exact)
    assert [(v.seq, v.field) for v in exact.violations if v.check == "mmu.stale"] == stale


#: A step of :func:`_shadowed`: a step of the empty copies' walk, whether lguest queues
#: its op, and whether the queue is applied after it.
LgStep = tuple[Step, bool, bool]


def _shadowed(steps: list[LgStep], cache: int) -> tuple[list[tuple[int, ...]], list[tuple]]:
    """Each step applied to :class:`GuestMMU` and lguest's side to a demand-filled
    :class:`ViewPair` told of nothing (as the simulation does it), checked page by page
    after each; and the same steps through the compiled walk: (its rows, the
    comparison's), each (check, kind, pages, lowest, expected, actual)."""
    pair = ViewPair(GuestMMU(64), demand_fill=True)
    lru: OrderedDict[int, None] = OrderedDict()
    pending: list[tuple[int, int]] = []

    def apply(code: int, a0: int) -> None:
        if code == ew.OP_CR3:
            pair.set_cr3(a0)
            lguest_load(pair, lru, a0 >> 12, cache)
        elif code == ew.OP_FLUSH_ONE:
            pair.resync_addr(a0)
        elif code == ew.OP_FLUSH_ALL:
            pair.resync_all()
        else:
            pair.resync_space()

    want: list[tuple] = []
    for r, (step, queued, drain) in enumerate(steps):
        step_on(pair, step)
        code, a0 = step[1][:2]
        if code in (ew.OP_CR3, ew.OP_FLUSH_ONE, ew.OP_FLUSH_USER, ew.OP_FLUSH_ALL):
            if queued:
                pending.append((code, a0))
            else:
                apply(code, a0)
        if drain:
            for c, x in pending:
                apply(c, x)
            pending.clear()
        found = {f.kind: f for f in pair.check_full().findings}
        assert pair.check().key() == pair.check_full().key()
        for k, kind in enumerate(KINDS):
            f = found.get(kind)
            if f is not None:
                want.append((r, k, f.pages, f.vpn, f.expected, f.actual))
    got = uw.shadow_walk(
        64,
        *walk_columns([step for step, _, _ in steps]),
        np.array([queued for _, queued, _ in steps], dtype=bool),
        np.array([drain for _, _, drain in steps], dtype=bool),
        np.ones(len(steps), dtype=np.int64),
        cache,
    )
    return [tuple(x) for x in got.tolist()], want


def test_the_compiled_shadow_finds_what_the_simulations_copy_finds() -> None:
    """After any mix of stores, zeroings, clones, CR3 loads, CR4.PGE and flushes, some
    queued to a later flush of lguest's queue, the compiled walk's rows are what the
    simulation's demand-filled copy, re-read as lguest re-reads it, finds page by page."""
    kinds: set[int] = set()
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        steps: list[LgStep] = []
        lazy = False
        for step in random_steps(seed, 500):
            if rng.random() < 0.05:
                lazy = not lazy  # in and out of lazy mode: flushes and loads wait
            steps.append((step, lazy, not lazy or rng.random() < 0.1))
        steps.append((([], (ew.OP_NONE, 0, 0, 0, 0)), False, True))
        got, want = _shadowed(steps, cache=2)
        assert got == want
        assert len({row[0] for row in want}) > 50
        kinds |= {row[1] for row in want}
    assert kinds == {1, 2}  # stale and perm (a demand-filled copy misses nothing)


@pytest.mark.parametrize("pge", [True, False])
def test_a_cr3_load_leaves_a_global_translation_to_the_tlb_only_under_pge(
    tmp_path: Path, p4: CostTable, pge: bool
) -> None:
    """A kernel page's global entry changed with no flush, then a CR3 load of a directory
    lguest has cached (nothing re-read): its shadow still shows the old translation, which
    a native TLB keeps across the load only with CR4.PGE set (as the hardware does)."""
    b = synth.TraceBuilder(seed=5)
    synth.boot(b)  # CR4.PGE, the kernel's linear map global
    if not pge:
        b.hook("write_cr4", b.cr4 & ~0x80)
    a, c = synth.spawn(b, pages=1), synth.spawn(b, pages=1)
    synth.switch_to(b, a)
    synth.switch_to(b, c)  # both directories cached, the kernel's tables read
    kt = b.entry(b.swapper, 768) >> 12
    assert b.entry(kt, 5) & G
    b.hook("set_pte", b.ptr(kt, 5), (0x401 << 12) | PAGE_KERNEL | G)
    synth.switch_to(b, a)  # cached: the check at this load sees the old translation
    tr = load(b.write(tmp_path / "t"))
    fast, exact = _alone(tr, UNTOLD, p4), _alone(tr, UNTOLD, p4, exact=True)
    _same(fast, exact)
    stale = [v for v in exact.violations if v.check == "mmu.stale"]
    assert [v.field for v in stale] == ([] if pge else ["va 0xc0005000"])


def test_the_compiled_shadow_names_the_guest_side_it_is_built_from() -> None:
    """numba's cache of the shadow's walk is keyed to ``untoldwalk.py`` alone: a change
    to the guest's side it calls (``emptywalk.py``) must change ``untoldwalk.py`` too, or
    a cached walk would run the old guest side."""
    got = hashlib.sha256(Path(ew.__file__).read_bytes()).hexdigest()[:16]
    assert got == uw.GUEST_SIDE, f"emptywalk.py changed: set untoldwalk.GUEST_SIDE = {got!r}"
