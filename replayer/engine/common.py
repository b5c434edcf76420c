"""Hook ids and the sets of them the stages share, and the per-trace cache.

Takes the hook catalogue; gives ``_H`` (hook id by name) and the id sets each stage
selects events by, plus :func:`_cached` (derive once per trace, in ``Trace.cache``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pvscope.hooks import HOOKS
from replayer.backends import (
    MMU_ONLY_HOOKS,
)
from replayer.trace import (
    HOOK_ID,
    Trace,
)

_H = HOOK_ID
_NHOOKS = len(HOOKS)
#: The hooks the passes handle one by one, by name.
SET_PTE, SET_PTE_AT, SET_PMD = _H["set_pte"], _H["set_pte_at"], _H["set_pmd"]
PTE_UPD, PTE_UPD_D = _H["pte_update"], _H["pte_update_defer"]
WCR3, WCR0, WCR4 = _H["write_cr3"], _H["write_cr0"], _H["write_cr4"]
FL_USER, FL_KERN, FL_ONE = _H["flush_tlb_user"], _H["flush_tlb_kernel"], _H["flush_tlb_single"]
LAZY = _H["set_lazy_mode"]
AW, AWA, AR = _H["apic_write"], _H["apic_write_atomic"], _H["apic_read"]
_APIC_HOOKS = (AW, AWA, AR)
_UNMASKERS = (_H["irq_enable"], _H["restore_fl"])
#: What a store taken in a run does to the two copies, by its kind (engine ``stores``).
_ACT = (0, 1, 2, 0, 2, 3)
#: Hooks that allocate (zero or clone) a page-table frame, and that release one.
_ALLOCS = [_H["alloc_pt"], _H["alloc_pd"], _H["alloc_pd_clone"]]
_RELEASES = [_H["release_pt"], _H["release_pd"]]
#: Hooks that store one page-table entry.
_PTE_HOOKS = [_H[n] for n in ("set_pte", "set_pte_at", "set_pmd", "pte_update", "pte_update_defer")]
#: Hooks that only change page tables, CR3 or the TLB.
_MMU_ONLY = {_H[n] for n in MMU_ONLY_HOOKS}
#: Hooks the sequential pass handles on every backend.
_STATEFUL = _MMU_ONLY | {
    _H[n]
    for n in (
        "set_lazy_mode",
        "write_cr0",
        "write_cr4",
        "apic_write",
        "apic_write_atomic",
        "apic_read",
    )
}
_PRIVILEGED = np.array([h.requirement == "cpl" or h.rom == "trap" for h in HOOKS] + [False])


def _cached(trace: Trace, key: str, make: Callable[[Trace], Any]) -> Any:
    """``make(trace)``, once per trace (the caller must not change what it returns)."""
    got = trace.cache.get(key)
    if got is None:
        got = trace.cache[key] = make(trace)
    return got


def _kept(trace: Trace, name: str, key: str) -> Any:
    """What the last run kept on the trace under ``name`` (a tuple whose first item is
    the ``key`` it was made for), if this run's ``key`` is the same; another's, which the
    caller replaces, is let go first (held beside its replacement, hundreds of MiB)."""
    got = trace.cache.get(name)
    if got is not None and got[0] != key:
        del trace.cache[name]
        return None
    return got


def _hex(v: int | None) -> str:
    return "unknown" if v is None else f"{v:#x}"
