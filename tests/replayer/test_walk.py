"""The walk of the guest's page tables over the page-table events alone: what each hook
does to the native TLB's older values, as the hardware and Linux 2.6.21 define it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from replayer.engine.walk import TableWalk
from replayer.trace import Trace, load
from tests.support import synth
from tests.support.synth import PAGE_KERNEL, G

CR4_PGE = 0x80


class _Seen(TableWalk):
    """The walk, noting the older values a native TLB may hold after each stop."""

    def __init__(self, trace: Trace) -> None:
        super().__init__(trace)
        self.seen: dict[int, dict[int, dict[int, tuple[int, ...]]]] = {}

    def stop(self, k: int) -> None:
        self.seen[k] = {f: dict(u) for f, u in self.guest.unflushed.items()}


def _walked(b: synth.TraceBuilder, path: Path, marks: list[int]) -> dict[int, dict]:
    w = _Seen(load(b.write(path)))
    w.walk(np.asarray(marks, dtype=np.int64))
    return {k: w.seen[k] for k in marks}


def test_each_flush_drops_what_the_hardware_drops(tmp_path: Path) -> None:
    """With CR4.PGE a CR3 load and ``flush_tlb_user`` keep global translations and
    ``flush_tlb_kernel`` drops them too; ``flush_tlb_single`` drops one address's; without
    CR4.PGE a user flush drops global ones as well."""
    b = synth.TraceBuilder(seed=1)
    synth.boot(b)  # CR4.PGE, the kernel's linear map global
    kt = b.entry(b.swapper, 768) >> 12  # the first kernel table: linear addresses 0xC0000000-
    glob = b.entry(kt, 5)
    assert glob & G
    b.hook("set_pte", b.ptr(kt, 6), (0x400 << 12) | PAGE_KERNEL)  # not global
    b.hook("flush_tlb_kernel")
    b.hook("set_pte", b.ptr(kt, 5), (0x401 << 12) | PAGE_KERNEL)  # a global value over
    b.hook("set_pte", b.ptr(kt, 6), (0x402 << 12) | PAGE_KERNEL)  # a non-global one over
    both = b.n - 1
    user = b.hook("flush_tlb_user")
    kernel = b.hook("flush_tlb_kernel")
    b.hook("set_pte", b.ptr(kt, 5), (0x403 << 12) | PAGE_KERNEL)
    b.hook("set_pte", b.ptr(kt, 7), (0x404 << 12) | PAGE_KERNEL)
    load_cr3 = b.hook("write_cr3", b.swapper << 12)
    single = b.hook("flush_tlb_single", 0xC0000000 | (7 << 12))
    b.hook("write_cr4", b.cr4 & ~CR4_PGE)
    b.hook("set_pte", b.ptr(kt, 8), (0x405 << 12) | PAGE_KERNEL)
    no_pge = b.hook("flush_tlb_user")
    old7 = (7 << 12) | PAGE_KERNEL | G
    seen = _walked(b, tmp_path / "t", [both, user, kernel, load_cr3, single, no_pge])
    assert seen[both] == {kt: {5: (glob,), 6: ((0x400 << 12) | PAGE_KERNEL,)}}
    assert seen[user] == {kt: {5: (glob,)}}
    assert seen[kernel] == {}
    assert seen[load_cr3] == {kt: {7: (old7,)}}  # global, kept (0x401 was not)
    assert seen[single] == {}
    assert seen[no_pge] == {}  # 8's old value was global, but PGE is off


def _idle_by_hand(tr: Trace) -> list[int]:
    """The zeroings of a frame all zeros whose fill before was not a clone, found by
    applying the trace's page-table events one by one to a memory of dictionaries."""
    from replayer.engine.common import _ALLOCS
    from replayer.engine.derived import _pte_entries
    from replayer.engine.walk import ALLOC_CLONE, table_changes

    ent, val = _pte_entries(tr)
    mem: dict[int, dict[int, int]] = {}
    cloned: set[int] = set()
    out = []
    for k in table_changes(tr).tolist():
        e, h = int(ent[k]), int(tr.hook[k])
        if e >= 0:
            mem.setdefault(e >> 10, {})[e & 1023] = int(val[k])
        elif h in _ALLOCS:
            pfn = int(tr.arg0[k])
            page = mem.get(pfn, {})
            if h == ALLOC_CLONE:
                src, lo = mem.get(int(tr.arg1[k]), {}), int(tr.arg2[k])
                hi = lo + int(tr.arg3[k])
                mem[pfn] = {j: v for j, v in src.items() if lo <= j < hi}
                cloned.add(pfn)
                continue
            if not any(page.values()) and pfn not in cloned:
                out.append(k)
            mem[pfn] = {}
            cloned.discard(pfn)
    return out


def test_the_idle_zeroings_are_those_of_a_frame_all_zeros(tmp_path: Path) -> None:
    """A zeroing the walk skips (:func:`~replayer.engine.walk.idle_fills`) is one of a
    frame whose stores since its last zeroing left it all zeros: stores of zeros, a
    value stored and cleared again, a frame never written; not one a clone filled last,
    nor one with an entry left set."""
    from replayer.engine.walk import idle_fills

    b = synth.workload(seed=3, rounds=6)
    t = b.alloc_frame()
    b.hook("alloc_pt", t)  # never written: idle
    b.hook("set_pte", b.ptr(t, 4), 0)
    b.hook("alloc_pt", t)  # a zero stored: idle
    b.hook("set_pte", b.ptr(t, 4), (0x300 << 12) | PAGE_KERNEL)
    b.hook("set_pte", b.ptr(t, 9), (0x301 << 12) | PAGE_KERNEL)
    b.hook("set_pte", b.ptr(t, 4), 0)
    kept = b.hook("alloc_pt", t)  # entry 9 left set: not idle
    b.hook("set_pte", b.ptr(t, 9), (0x302 << 12) | PAGE_KERNEL)
    b.hook("set_pte", b.ptr(t, 9), 0)
    b.hook("alloc_pt", t)  # set and cleared again: idle
    b.hook("alloc_pd_clone", t, b.swapper, 1000, 4)  # the swapper's 1000-1003: zeros
    after_clone = b.hook("alloc_pt", t)  # not known: not idle
    b.hook("alloc_pt", t)  # zeros again after a zeroing: idle
    tr = load(b.write(tmp_path / "t"))
    idle = idle_fills(tr).tolist()
    want = _idle_by_hand(tr)
    assert idle == want
    assert kept not in idle and after_clone not in idle
    assert len(idle) >= 4 + 1  # the four above, and the workload's own
