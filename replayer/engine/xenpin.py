"""Xen's lazy pinning: a page-table tree is validated and made read-only when it is first
used, so stores into a tree not yet pinned are plain stores.

Takes a xen-pv replay's cost columns; gives them corrected for when tables are pinned.
In Linux's Xen port (2.6.23, ``arch/i386/xen/mmu.c`` and ``enlighten.c``) a new
address space is pinned by ``xen_dup_mmap`` at the end of ``fork``'s copy and by
``xen_activate_mm`` before it is first switched to: one multicall that makes every
page-table page read-only and a ``PIN_L2_TABLE`` that has Xen validate the tree.
Until then ``xen_set_pte_at`` into it (``mm`` not current), ``xen_set_pte`` and
in-place changes are plain stores; after, such a store faults into Xen's
writable-page-table emulation.  Boot-time tables are written before the first CR3
load likewise (2.6.23 swaps in ``xen_set_pte_init`` until ``init_mm`` is pinned).
2.6.21's paravirt_ops has no ``dup_mmap``/``activate_mm`` hooks, so a trace shows the
pin as the first CR3 load of a directory since it was allocated: charged there (a
hypercall, and the validation and read-only remapping of each table not validated
before), with the stores before it plain.
"""

from __future__ import annotations

import numpy as np

from replayer.backends import MECH_CODE
from replayer.costs import CostTable
from replayer.engine.common import _ALLOCS, _H, _cached
from replayer.engine.derived import _pte_entries, _wide, last_before, loaded_spaces
from replayer.engine.result import ByClass
from replayer.trace import Trace, hooks_in

_WCR3 = _H["write_cr3"]
_SET_PTE_AT = _H["set_pte_at"]


def pinned_stores(trace: Trace) -> np.ndarray:
    """Per event: a PTE store into a table that has been in a loaded address space since
    it was last allocated (so pinned with its tree), False for every other event."""
    ent, _ = _pte_entries(trace)
    sp = _cached(trace, "loaded_spaces", loaded_spaces).spells
    out = np.zeros(trace.n, dtype=bool)
    sidx = np.nonzero(ent >= 0)[0]
    if not len(sp) or not len(sidx):
        return out
    span = trace.n + 1
    f = _wide(ent[sidx]) >> 10
    # the latest spell of the table that began before the store ...
    sat = last_before(sp[:, 0], sp[:, 1], f, sidx, span)
    began = np.where(sat >= 0, sp[np.maximum(sat, 0), 1], -1)
    # ... and no allocation of the table between that and the store
    ak = np.nonzero(hooks_in(trace.hook, _ALLOCS))[0]
    af = trace.arg0[ak].astype(np.int64)
    order = np.lexsort((ak, af))
    ak, af = ak[order], af[order]
    aat = last_before(af, ak, f, sidx, span)
    last_alloc = np.where(aat >= 0, ak[np.maximum(aat, 0)], -1)
    out[sidx] = (began >= 0) & (last_alloc <= began)
    return out


def pin_loads(trace: Trace) -> dict[int, int]:
    """write_cr3 events that load a directory for the first time since it was allocated
    (where Xen pins it) -> the tables Xen validates then: those not validated before
    (the kernel's tables, shared by every directory, are validated once, with the first)."""
    ls = _cached(trace, "loaded_spaces", loaded_spaces)
    h, a0 = trace.hook, trace.arg0
    pinned: set[int] = set()
    validated: set[int] = set()
    out: dict[int, int] = {}
    for k in np.nonzero((h == _WCR3) | np.isin(h, _ALLOCS))[0].tolist():
        if h[k] != _WCR3:
            pfn = int(a0[k])
            pinned.discard(pfn)  # a new tree, or a new table, in that frame
            validated.discard(pfn)
            continue
        pd = int(a0[k]) >> 12
        if pd in pinned:
            continue
        pinned.add(pd)
        new = [t for t in ls.at_cr3.get(k, ()) if t not in validated]
        validated.update(new)
        out[k] = len(new)
    return out


def apply_pinning(
    trace: Trace,
    table: CostTable,
    native: ByClass,
    cols: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Correct xen-pv's (cycles, mechanism, exits, hypercalls, traps) in place: a store
    the model traps on a read-only table costs what it costs natively while the table is
    not yet pinned, and the first load of a directory pays its pin."""
    cyc, mech, ex, hc, trp = cols
    ent, _ = _pte_entries(trace)
    pinned = _cached(trace, "xen_pinned_stores", pinned_stores)
    plain = (mech == MECH_CODE["wp_fault"]) & (ent >= 0) & ~pinned
    cyc[plain] = native[plain]
    mech[plain] = MECH_CODE["native"]
    ex[plain] = hc[plain] = trp[plain] = 0
    for k, tables in _cached(trace, "xen_pin_loads", pin_loads).items():
        cyc[k] += table["hypercall"] + tables * (table["scan_table"] + table["batch_entry"])
        hc[k] += 1
