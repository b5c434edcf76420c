"""Per-trace derived data every run of a trace shares (backend-independent).

Takes a decoded :class:`~replayer.trace.Trace`; gives, once per trace (kept in
``Trace.cache`` by :func:`replayer.engine.prepare`): the page-table entry each store
names (:func:`pte_entries`), the MMIO events an ``apic_*`` hook's native body made
(:func:`absorbed_mmio`), the tables the loaded directory names over time
(:func:`loaded_spaces`), the entries each directory allocation changes
(:func:`fill_changes`) and the stores into the loaded space
(:func:`loaded_table_stores`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replayer.engine.common import _ALLOCS, _APIC_HOOKS, _H, _cached
from replayer.mechanisms.apic import (
    LAPIC_BASE,
)
from replayer.mechanisms.pagetables import (
    PAGE_OFFSET,
    PRESENT,
    PSE,
    Frames,
)
from replayer.trace import (
    K_MMIO_READ,
    K_MMIO_WRITE,
    Trace,
)


def _fill_table(frames: Frames, pfn: int, clone: tuple[int, int, int] | None) -> None:
    """A table as ``alloc_*`` leaves it: zeroed, or for ``alloc_pd_clone`` (source frame,
    first entry, count) with those entries copied from the source."""
    page = frames.page(pfn)
    if clone is None:
        page[:] = 0
        return
    src, st, count = clone
    lo, hi = min(st, 1024), min(st + count, 1024)
    vals = frames.page(src)[lo:hi].copy()
    page[:] = 0
    page[lo:hi] = vals


def absorbed_mmio(trace: Trace) -> np.ndarray:
    """MMIO events that are the LAPIC access an apic_* hook's native body just made."""
    n = trace.n
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    prev_hook = trace.hook[:-1]
    is_apic = np.isin(prev_hook, _APIC_HOOKS)
    mmio = (trace.kind[1:] == K_MMIO_READ) | (trace.kind[1:] == K_MMIO_WRITE)
    same = trace.arg0[1:].astype(np.int64) == LAPIC_BASE + trace.arg0[:-1].astype(np.int64)
    out[1:] = is_apic & mmio & same
    return out


def pte_entries(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Per event: the page-table entry a PTE/PMD write names (``pfn * 1024 + index``, -1 for
    other events, -2 for a pte_update with no observed value) and the value written.

    Entry pointers are physical until a ``write_cr0`` turns paging on, linear-map addresses
    (physical + PAGE_OFFSET) after it.
    """
    h = trace.hook
    two = (h == _H["set_pte"]) | (h == _H["set_pmd"])
    at = h == _H["set_pte_at"]
    upd = (h == _H["pte_update"]) | (h == _H["pte_update_defer"])
    val = (trace.result & 0xFFFFFFFF).astype(np.int64)  # pte_update*: the value observed
    for m, col in ((two, trace.arg1), (at, trace.arg3)):
        k = np.flatnonzero(m)
        val[k] = col[k]
    # the entries, worked out at the stores alone (a few of the events)
    k = np.flatnonzero(two | at | upd)
    two_k = two[k]
    ptr = np.where(two_k, trace.arg0[k], trace.arg2[k]).astype(np.int64)
    cr0 = np.flatnonzero(h == _H["write_cr0"])
    last = np.searchsorted(cr0, k, side="left") - 1  # the last write_cr0 before each
    pg = np.zeros(len(k), dtype=bool)
    has = last >= 0
    pg[has] = (trace.arg0[cr0[last[has]]] & 0x80000000) != 0
    phys = np.where(pg, (ptr - PAGE_OFFSET) & 0xFFFFFFFF, ptr)
    ent = np.full(trace.n, -1, dtype=np.int64)
    e = (phys >> 12) * 1024 + ((phys & 0xFFF) >> 2)
    ent[k] = np.where(upd[k] & ~trace.has_result[k], -2, e)
    return ent, val


def _pte_entries(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pte_entries`, once per trace."""
    got: tuple[np.ndarray, np.ndarray] = _cached(trace, "pte_entries", pte_entries)
    return got


def _frames_needed(trace: Trace, ent: np.ndarray) -> int:
    """Frames the guest's tables need, at least (the store grows beyond on demand)."""
    mem_mib = int(((trace.manifest.get("machine") or {}).get("mem_mib")) or 64)
    frames = max(mem_mib, 4) * 256
    if len(ent):
        frames = max(frames, int(ent.max() >> 10) + 1)
    fills = np.isin(trace.hook, _ALLOCS)
    if fills.any():
        frames = max(frames, int(trace.arg0[fills].max()) + 1, int(trace.arg1[fills].max()) + 1)
    return frames


def _directory_frames(trace: Trace) -> np.ndarray:
    """Frames ever loaded as a directory or cloned from, sorted: the only ones whose
    contents a per-trace pass over the guest's directories needs."""
    h = trace.hook
    return np.unique(
        np.concatenate(
            [
                trace.arg0[h == _H["write_cr3"]].astype(np.int64) >> 12,
                trace.arg1[h == _H["alloc_pd_clone"]].astype(np.int64),
            ]
        )
    )


@dataclass
class LoadedSpaces:
    """The guest's loaded address space over a trace: which page tables its directory
    names, when (backend-independent, one pass per trace: :func:`loaded_spaces`)."""

    spells: np.ndarray
    """(table frame, joined after event, left after event) rows, sorted: the directory
    loaded after the first event names the table until after the second (the trace's
    length: to the end)."""
    at_cr3: dict[int, tuple[int, ...]]
    """write_cr3 event -> the tables the directory it loads names, then."""
    at_invlpg: dict[int, int]
    """flush_tlb_single event -> the table the loaded directory's entry for the address
    names then (-1: none)."""


def _space_events(trace: Trace, dirs: np.ndarray) -> np.ndarray:
    """The events that can change which tables the loaded directory names, or ask:
    CR3 loads, flush_tlb_single, allocations of directory frames, and the stores that
    matter -- into the loaded directory, or to a frame loaded or cloned from before it
    is next zeroed (frames pass between directory and table use)."""
    ent, _ = _pte_entries(trace)
    h = trace.hook
    fill_at = np.flatnonzero(np.isin(h, _ALLOCS))
    cr3_at = np.flatnonzero(h == _H["write_cr3"])
    clone_at = np.flatnonzero(h == _H["alloc_pd_clone"])
    span = trace.n + 1
    cr3_pd = trace.arg0[cr3_at].astype(np.int64) >> 12
    uses = np.sort(
        np.concatenate(
            [cr3_pd * span + cr3_at, trace.arg1[clone_at].astype(np.int64) * span + clone_at]
        )
    )
    zeroed = np.sort(trace.arg0[fill_at].astype(np.int64) * span + fill_at)

    def after(keys: np.ndarray, sf: np.ndarray, sk: np.ndarray) -> np.ndarray:
        # the frame's next event of a kind
        i = np.searchsorted(keys, sf * span + sk, side="right")
        nxt = keys[np.minimum(i, len(keys) - 1)] if len(keys) else np.zeros(len(sk), np.int64)
        return np.where((i < len(keys)) & (nxt // span == sf), nxt % span, span)

    # stores, a slice of the trace at a time (what they need stays small)
    dir_store = []
    for a in range(0, trace.n, _SLICE):
        sk = a + np.flatnonzero(ent[a : a + _SLICE] >= 0)
        sf = ent[sk] >> 10
        last = np.searchsorted(cr3_at, sk) - 1  # the directory loaded when each is made
        pd = np.where(last >= 0, cr3_pd[np.maximum(last, 0)] if len(cr3_at) else -1, -1)
        keep = (sf == pd) | (after(uses, sf, sk) < after(zeroed, sf, sk))
        dir_store.append(sk[keep])
    dir_fill = fill_at[np.isin(trace.arg0[fill_at].astype(np.int64), dirs)]
    invlpg_at = np.flatnonzero(h == _H["flush_tlb_single"])
    return np.unique(np.concatenate([cr3_at, *dir_store, dir_fill, invlpg_at]))


#: Events a pass over the whole trace takes at a time where it would need per-event
#: temporaries of the trace's length.
_SLICE = 1 << 20


def loaded_spaces(trace: Trace) -> LoadedSpaces:
    """The tables the guest's loaded directory names, over the whole trace.

    Only frames ever loaded as a directory (or cloned from) are rebuilt, and of their
    stores only those :func:`_space_events` keeps; the loaded directory's tables are kept
    as counts, changed by stores to it.
    """
    ent, val = _pte_entries(trace)
    h = trace.hook
    WCR3, CLONE, INVLPG = _H["write_cr3"], _H["alloc_pd_clone"], _H["flush_tlb_single"]
    dirs = _directory_frames(trace)
    if not len(dirs):
        return LoadedSpaces(np.zeros((0, 3), dtype=np.int64), {}, {})
    row = {int(d): i for i, d in enumerate(dirs.tolist())}
    mem = np.zeros((len(dirs), 1024), dtype=np.int64)
    chg = _space_events(trace, dirs)
    a0, a1, a2, a3 = (x[chg].tolist() for x in (trace.arg0, trace.arg1, trace.arg2, trace.arg3))
    e_l, v_l, h_l = ent[chg].tolist(), val[chg].tolist(), h[chg].tolist()
    counts: dict[int, int] = {}
    since: dict[int, int] = {}  # table -> the event after which it joined the set
    spells: list[tuple[int, int, int]] = []  # (table, joined after, left after)
    at_cr3: dict[int, tuple[int, ...]] = {}
    at_invlpg: dict[int, int] = {}
    pd = -1
    # per directory row: changes to it, and the counts of the last version counted
    ver = [0] * len(dirs)
    counted: dict[int, tuple[int, dict[int, int]]] = {}

    def recount(k: int) -> None:
        r = row.get(pd)
        new: dict[int, int] = {}
        if r is not None:
            got = counted.get(r)
            if got is None or got[0] != ver[r]:
                got = counted[r] = (ver[r], _named_counts(mem[r]))
            new = got[1]  # read only
        for t in counts.keys() - new.keys():
            spells.append((t, since.pop(t), k))
        for t in new.keys() - counts.keys():
            since[t] = k
        counts.clear()
        counts.update(new)

    for i, k in enumerate(chg.tolist()):
        hk = h_l[i]
        if hk == WCR3:
            pd = a0[i] >> 12
            recount(k)
            at_cr3[k] = tuple(sorted(counts))
        elif hk == INVLPG:
            r = row.get(pd)
            at_invlpg[k] = _names(int(mem[r, a0[i] >> 22])) if r is not None else -1
        elif e_l[i] >= 0:
            e, v = e_l[i], v_l[i]
            pfn, idx = e >> 10, e & 1023
            r = row[pfn]
            old = int(mem[r, idx])
            mem[r, idx] = v
            ver[r] += 1
            if pfn != pd:
                continue
            t_old, t_new = _names(old), _names(v)
            if t_old != t_new:
                _rename(counts, since, spells, k, t_old, t_new)
        else:
            pfn = a0[i]
            r = row[pfn]
            mem[r] = 0
            ver[r] += 1
            if hk == CLONE:
                lo, hi = min(a2[i], 1024), min(a2[i] + a3[i], 1024)
                mem[r, lo:hi] = mem[row[a1[i]], lo:hi]
            if pfn == pd:
                recount(k)
    spells.extend((t, j, trace.n) for t, j in since.items())
    sp = np.array(sorted(spells), dtype=np.int64).reshape(-1, 3)
    return LoadedSpaces(sp, at_cr3, at_invlpg)


def _named_counts(pdes: np.ndarray) -> dict[int, int]:
    """How many of a directory's entries name each table."""
    new: dict[int, int] = {}
    sel = (pdes & PRESENT).astype(bool) & ~(pdes & PSE).astype(bool)
    for t in (pdes[sel] >> 12).tolist():
        new[t] = new.get(t, 0) + 1
    return new


def _names(v: int) -> int:
    """The table a directory entry names (-1: none, or a large page)."""
    return v >> 12 if v & PRESENT and not v & PSE else -1


def _rename(
    counts: dict[int, int],
    since: dict[int, int],
    spells: list[tuple[int, int, int]],
    k: int,
    t_old: int,
    t_new: int,
) -> None:
    """A loaded directory's entry changed from naming ``t_old`` to ``t_new`` at event ``k``:
    a table named by no entry any more ends its spell, a newly named one starts one."""
    if t_old >= 0:
        counts[t_old] -= 1
        if not counts[t_old]:
            del counts[t_old]
            spells.append((t_old, since.pop(t_old), k))
    if t_new >= 0:
        if t_new not in counts:
            counts[t_new] = 0
            since[t_new] = k
        counts[t_new] += 1


def fill_changes(trace: Trace) -> dict[int, np.ndarray]:
    """Per allocation (``alloc_*``) of a frame ever loaded as a directory or cloned from:
    the entries whose meaning (:func:`_meaning`) it changes (one pass per trace over those
    frames' stores)."""
    ent, val = _pte_entries(trace)
    h = trace.hook
    CLONE = _H["alloc_pd_clone"]
    fills = np.isin(h, _ALLOCS)
    dirs = _directory_frames(trace)
    out: dict[int, np.ndarray] = {}
    if not len(dirs):
        return out
    row = {int(d): i for i, d in enumerate(dirs.tolist())}
    mem = np.zeros((len(dirs), 1024), dtype=np.int64)
    store = (ent >= 0) & np.isin(ent >> 10, dirs)
    fill = fills & np.isin(trace.arg0.astype(np.int64), dirs)
    sel = np.nonzero(store | fill)[0]
    e_l, v_l, h_l = ent[sel].tolist(), val[sel].tolist(), h[sel].tolist()
    a0, a1, a2, a3 = (x[sel].tolist() for x in (trace.arg0, trace.arg1, trace.arg2, trace.arg3))
    for i, k in enumerate(sel.tolist()):
        e = e_l[i]
        if e >= 0:
            mem[row[e >> 10], e & 1023] = v_l[i]
            continue
        r = row[a0[i]]
        old = mem[r].copy()
        mem[r] = 0
        if h_l[i] == CLONE:
            lo, hi = min(a2[i], 1024), min(a2[i] + a3[i], 1024)
            mem[r, lo:hi] = mem[row[a1[i]], lo:hi]
        out[k] = np.nonzero(_meaning(mem[r]) != _meaning(old))[0]
    return out


def _meaning(v: np.ndarray) -> np.ndarray:
    """What of an entry's value a translation depends on (frame, present, writable, user,
    large page): equal meanings translate alike under any directory entry."""
    return np.where(v & PRESENT, v & 0xFFFFF087, 0)


def loaded_table_stores(trace: Trace) -> np.ndarray:
    """Per event: a PTE store into a page table the guest's loaded directory names (as the
    guest's tables stand just before the store; False for every other event).

    Xen's ``set_pte_at`` takes a hypercall for the current address space and a plain
    (trapped) store for another: which it is depends on the guest's tables alone, so it is
    found once per trace (:func:`loaded_spaces`).
    """
    ent, _ = _pte_entries(trace)
    sp = _cached(trace, "loaded_spaces", loaded_spaces).spells
    out = np.zeros(trace.n, dtype=bool)
    sidx = np.nonzero(ent >= 0)[0]
    if not len(sp) or not len(sidx):
        return out
    at = last_before(sp[:, 0], sp[:, 1], ent[sidx] >> 10, sidx, trace.n + 1)
    out[sidx] = (at >= 0) & (sidx <= sp[np.maximum(at, 0), 2])
    return out


def last_before(
    frames: np.ndarray, starts: np.ndarray, f: np.ndarray, k: np.ndarray, span: int
) -> np.ndarray:
    """For each (frame ``f``, event ``k``): the index of the last row of that frame that
    starts before ``k``, -1 where there is none.  Rows are sorted by (frame, start);
    ``span`` exceeds every event index."""
    if not len(frames):
        return np.full(len(f), -1, dtype=np.int64)
    pos = np.searchsorted(frames * span + starts, f * span + k, side="left") - 1
    at = np.maximum(pos, 0)
    return np.where((pos >= 0) & (frames[at] == f), at, -1)
