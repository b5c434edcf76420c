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
