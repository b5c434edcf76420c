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

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from replayer.engine.common import _ALLOCS, _APIC_HOOKS, _H, _cached
from replayer.mechanisms import bulk
from replayer.mechanisms.apic import (
    LAPIC_BASE,
)
from replayer.mechanisms.pagetables import (
    PAGE_OFFSET,
    PRESENT,
    PSE,
    Frames,
    cloned,
)
from replayer.trace import (
    K_MMIO_READ,
    K_MMIO_WRITE,
    Trace,
    hooks_in,
)


def _fill_table(frames: Frames, pfn: int, clone: tuple[int, int, int] | None) -> None:
    """A table as ``alloc_*`` leaves it: zeroed, or for ``alloc_pd_clone`` (source frame,
    first entry, count) with those entries copied from the source."""
    frames.page(pfn)[:] = 0 if clone is None else cloned(frames, *clone)


def absorbed_mmio(trace: Trace) -> np.ndarray:
    """MMIO events that are the LAPIC access an apic_* hook's native body just made."""
    n = trace.n
    out = np.zeros(n, dtype=bool)
    at = np.flatnonzero(hooks_in(trace.hook, _APIC_HOOKS))
    nxt = at[at + 1 < n] + 1
    kind = trace.kind[nxt]
    mmio = (kind == K_MMIO_READ) | (kind == K_MMIO_WRITE)
    same = trace.arg0[nxt].astype(np.int64) == LAPIC_BASE + trace.arg0[nxt - 1].astype(np.int64)
    out[nxt[mmio & same]] = True
    return out


def pte_entries(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Per event: the page-table entry a PTE/PMD write names (``pfn * 1024 + index``, -1 for
    other events, -2 for a pte_update with no observed value; int32) and the value written
    (uint32).

    Entry pointers are physical until a ``write_cr0`` turns paging on, linear-map addresses
    (physical + PAGE_OFFSET) after it.  Both arrays are as narrow as a 32-bit guest's
    entries allow (an entry number is below 2**30): they are kept for the whole replay, in
    every worker (on a 17 M-event trace, 130 MiB narrower than int64).  Arithmetic on them
    beyond shifts, masks and comparisons wants them widened first (:func:`_wide`).
    """
    n, h = trace.n, trace.hook
    ent = np.full(n, -1, dtype=np.int32)
    val = np.empty(n, dtype=np.uint32)
    for a in range(0, n, _SLICE):  # a slice at a time: temporaries stay small
        val[a : a + _SLICE] = trace.result[a : a + _SLICE] & 0xFFFFFFFF
    cr0_at = np.flatnonzero(h == _H["write_cr0"])
    cr0_pg = (trace.arg0[cr0_at] & 0x80000000) != 0
    two_ids, at_id = (_H["set_pte"], _H["set_pmd"]), _H["set_pte_at"]
    upd_ids = (_H["pte_update"], _H["pte_update_defer"])
    stores = np.flatnonzero(hooks_in(h, [*two_ids, at_id, *upd_ids]))
    for a in range(0, len(stores), _SLICE):
        k = stores[a : a + _SLICE]
        hk = h[k]
        two, at = hooks_in(hk, two_ids), hk == at_id
        # paging is on if the last write_cr0 before the store set PG
        j = np.searchsorted(cr0_at, k) - 1
        pg = (j >= 0) & cr0_pg[np.maximum(j, 0)] if len(cr0_at) else np.zeros(len(k), bool)
        ptr = np.where(two, trace.arg0[k], trace.arg2[k]).astype(np.int64)
        val[k[two]] = trace.arg1[k[two]]
        val[k[at]] = trace.arg3[k[at]]
        phys = np.where(pg, (ptr - PAGE_OFFSET) & 0xFFFFFFFF, ptr)
        e = (phys >> 12) * 1024 + ((phys & 0xFFF) >> 2)
        ent[k] = np.where(two | at | trace.has_result[k], e, -2)
    return ent, val


def _wide(a: np.ndarray) -> np.ndarray:
    """Some of :func:`pte_entries`' entries or values as int64, for arithmetic (a frame
    times the trace's length overflows int32)."""
    return a.astype(np.int64)


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
    fills = hooks_in(trace.hook, _ALLOCS)
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
    fill_at = np.flatnonzero(hooks_in(h, _ALLOCS))
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
        sf = _wide(ent[sk]) >> 10
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
#: Events a loop takes as Python lists at a time.
_WINDOW = 1 << 16


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
    everything = _space_events(trace, dirs)
    space = _Space()
    at_cr3: dict[int, tuple[int, ...]] = {}
    at_invlpg: dict[int, int] = {}
    pd = -1
    rver = [0] * len(dirs)  # per directory row: a count of its changes

    def recount(k: int) -> tuple[int, ...]:
        r = row.get(pd)
        return space.recount(k, None if r is None else (r, rver[r]), mem)

    # the events as Python lists a slice at a time: lists of all of them took gigabytes
    for at in range(0, len(everything), _WINDOW):
        chg = everything[at : at + _WINDOW]
        args = (trace.arg0, trace.arg1, trace.arg2, trace.arg3)
        a0, a1, a2, a3 = (x[chg].tolist() for x in args)
        e_l, v_l, h_l = ent[chg].tolist(), val[chg].tolist(), h[chg].tolist()
        for i, k in enumerate(chg.tolist()):
            hk = h_l[i]
            if hk == WCR3:
                pd = a0[i] >> 12
                at_cr3[k] = recount(k)
            elif hk == INVLPG:
                r = row.get(pd)
                at_invlpg[k] = _names(int(mem[r, a0[i] >> 22])) if r is not None else -1
            elif e_l[i] >= 0:
                e, v = e_l[i], v_l[i]
                pfn, idx = e >> 10, e & 1023
                r = row[pfn]
                old = int(mem[r, idx])
                mem[r, idx] = v
                rver[r] += 1
                if pfn != pd:
                    continue
                space.rename(k, old, v)
            else:
                pfn = a0[i]
                r = row[pfn]
                mem[r] = 0
                rver[r] += 1
                if hk == CLONE:
                    lo, hi = min(a2[i], 1024), min(a2[i] + a3[i], 1024)
                    mem[r, lo:hi] = mem[row[a1[i]], lo:hi]
                if pfn == pd:
                    recount(k)
    spells = space.spells
    spells.extend((t, j, trace.n) for t, j in space.since.items())
    sp = np.array(sorted(spells), dtype=np.int64).reshape(-1, 3)
    return LoadedSpaces(sp, at_cr3, at_invlpg)


class _Space:
    """The tables the loaded directory names, as counts, and the spells they are named."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.since: dict[int, int] = {}  # table -> the event after which it joined the set
        self.spells: list[tuple[int, int, int]] = []  # (table, joined after, left after)
        # per directory row: its tables as of a change count (a directory is often loaded
        # again unchanged: its tables are not counted again)
        self.named: dict[int, tuple[int, dict[int, int], tuple[int, ...]]] = {}
        # the (row, count) ``counts`` equals (None: changed since), and the tables that
        # leave and join the set on a switch from one such to another
        self.cur: tuple[int, int] | None = None
        self.moves: dict[tuple[tuple[int, int], tuple[int, int]], tuple[list, list]] = {}

    def recount(self, k: int, key: tuple[int, int] | None, mem: np.ndarray) -> tuple[int, ...]:
        """After event ``k`` the loaded directory is row ``key[0]`` of ``mem`` at change
        count ``key[1]`` (None: no directory row); return its tables, sorted."""
        new: dict[int, int] = {}
        order: tuple[int, ...] = ()
        if key is not None:
            r, ver = key
            seen = self.named.get(r)
            if seen is None or seen[0] != ver:
                pdes = mem[r]
                sel = (pdes & PRESENT).astype(bool) & ~(pdes & PSE).astype(bool)
                for t in (pdes[sel] >> 12).tolist():
                    new[t] = new.get(t, 0) + 1
                seen = self.named[r] = (ver, new, tuple(sorted(new)))
            new, order = seen[1], seen[2]
        counts, cur = self.counts, self.cur
        move = self.moves.get((cur, key)) if cur is not None and key is not None else None
        if move is None:
            move = (list(counts.keys() - new.keys()), list(new.keys() - counts.keys()))
            if cur is not None and key is not None:
                self.moves[cur, key] = move
        for t in move[0]:
            self.spells.append((t, self.since.pop(t), k))
        for t in move[1]:
            self.since[t] = k
        counts.clear()
        counts.update(new)
        self.cur = key
        return order

    def rename(self, k: int, old: int, new: int) -> None:
        """A loaded directory's entry changed from ``old`` to ``new`` at event ``k``: a
        table named by no entry any more ends its spell, a newly named one starts one."""
        t_old, t_new = _names(old), _names(new)
        if t_old == t_new:
            return
        self.cur = None
        counts, since = self.counts, self.since
        if t_old >= 0:
            counts[t_old] -= 1
            if not counts[t_old]:
                del counts[t_old]
                self.spells.append((t_old, since.pop(t_old), k))
        if t_new >= 0:
            if t_new not in counts:
                counts[t_new] = 0
                since[t_new] = k
            counts[t_new] += 1


def _names(v: int) -> int:
    """The table a directory entry names (-1: none, or a large page)."""
    return v >> 12 if v & PRESENT and not v & PSE else -1


def fill_changes(trace: Trace) -> dict[int, np.ndarray]:
    """Per allocation (``alloc_*``) of a frame ever loaded as a directory or cloned from:
    the entries whose meaning (:func:`_meaning`) it changes (one pass per trace over those
    frames' stores)."""
    ent, val = _pte_entries(trace)
    h = trace.hook
    CLONE = _H["alloc_pd_clone"]
    fills = hooks_in(h, _ALLOCS)
    dirs = _directory_frames(trace)
    out: dict[int, np.ndarray] = {}
    if not len(dirs):
        return out
    row = {int(d): i for i, d in enumerate(dirs.tolist())}
    # per row, the meaning of each entry that has one (a present entry): the others mean
    # nothing whatever their value, so a zeroing changes exactly these
    live: list[dict[int, int]] = [{} for _ in range(len(dirs))]
    store = (ent >= 0) & np.isin(ent >> 10, dirs)
    fill = fills & np.isin(trace.arg0.astype(np.int64), dirs)
    everything = np.nonzero(store | fill)[0]
    # the events as Python lists a slice at a time: lists of all of them took gigabytes
    for at in range(0, len(everything), _WINDOW):
        sel = everything[at : at + _WINDOW]
        e_l, v_l, h_l = ent[sel].tolist(), val[sel].tolist(), h[sel].tolist()
        args = (trace.arg0, trace.arg1, trace.arg2, trace.arg3)
        a0, a1, a2, a3 = (x[sel].tolist() for x in args)
        for i, k in enumerate(sel.tolist()):
            e = e_l[i]
            if e >= 0:
                v = v_l[i]
                if v & PRESENT:
                    live[row[e >> 10]][e & 1023] = v & _MEANING
                else:
                    live[row[e >> 10]].pop(e & 1023, None)
                continue
            r = row[a0[i]]
            old = live[r]
            new: dict[int, int] = {}
            if h_l[i] == CLONE and a1[i] != a0[i]:  # a clone of itself copies its zeroes
                lo, hi = min(a2[i], 1024), min(a2[i] + a3[i], 1024)
                new = {j: m for j, m in live[row[a1[i]]].items() if lo <= j < hi}
            live[r] = new
            moved = [j for j in old.keys() | new.keys() if old.get(j, 0) != new.get(j, 0)]
            out[k] = np.array(sorted(moved), dtype=np.int64)
    return out


#: The bits of a present entry a translation depends on (:func:`_meaning`).
_MEANING = 0xFFFFF087


def _meaning(v: np.ndarray) -> np.ndarray:
    """What of an entry's value a translation depends on (frame, present, writable, user,
    large page): equal meanings translate alike under any directory entry."""
    return np.where(v & PRESENT, v & _MEANING, 0)


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
    at = last_before(sp[:, 0], sp[:, 1], _wide(ent[sidx]) >> 10, sidx, trace.n + 1)
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


def tables_at(trace: Trace, frames: Frames, at: np.ndarray) -> Iterator[list[int]]:
    """The guest's tables (``frames``, from the trace's start) brought to each event of
    ``at`` (ascending) in turn, that event's own store or allocation included; yields
    the frames changed since the last.

    Stores and allocations between two stops are applied together, in effect: a frame
    allocated there keeps the stores made after its last allocation, the others every
    store's last value; an ``alloc_pd_clone`` copies its source as the source was at the
    clone, stores and allocations of the source in between included.
    """
    ent, val = _pte_entries(trace)
    h = trace.hook
    st = np.flatnonzero(ent >= 0)
    se, sv = _wide(ent[st]), _wide(val[st])
    fl = np.flatnonzero((ent < 0) & hooks_in(h, _ALLOCS))
    f_pfn = trace.arg0[fl].astype(np.int64)
    s_cut = np.searchsorted(st, at, side="right").tolist()
    f_cut = np.searchsorted(fl, at, side="right").tolist()
    s0 = f0 = 0
    for s1, f1 in zip(s_cut, f_cut, strict=True):
        if f1 == f0:
            changed = _store_all(frames, se[s0:s1], sv[s0:s1])
        else:
            changed = _apply_between(trace, frames, st[s0:s1], se[s0:s1], sv[s0:s1], fl[f0:f1])
            changed = sorted(set(changed) | set(f_pfn[f0:f1].tolist()))
        s0, f0 = s1, f1
        yield changed


def _store_all(frames: Frames, es: np.ndarray, vs: np.ndarray) -> list[int]:
    """Entry stores, in order (the last to an entry stays); the frames written."""
    if not len(es):
        return []
    ue, uv = bulk.final(es, vs)
    frames.np[ue] = uv
    return bulk.frames_of(ue)


def _apply_between(  # long: the clones' sources, then every frame's final state
    trace: Trace, frames: Frames, ks: np.ndarray, es: np.ndarray, vs: np.ndarray, fk: np.ndarray
) -> list[int]:
    """:func:`tables_at` over stores ``ks`` (entries ``es``, values ``vs``) and
    allocations ``fk`` that interleave; the frames stores reached."""
    span = trace.n + 1
    clone_h = _H["alloc_pd_clone"]
    f_pfn = trace.arg0[fk].astype(np.int64)
    # stores by (frame, event), allocations by (frame, event): who did what to a frame when
    sf = es >> 10
    so = np.argsort(sf, kind="stable")
    s_key = sf[so] * span + ks[so]
    s_e, s_v = es[so], vs[so]
    fo = np.argsort(f_pfn, kind="stable")
    f_frames, f_at = f_pfn[fo], fk[fo]
    snaps: dict[int, tuple[int, int, np.ndarray]] = {}
    # each clone, in order: its source as the source's last allocation before it left it
    # (as the interval found it, if none), then the source's stores since
    ck = fk[trace.hook[fk] == clone_h]
    src = trace.arg1[ck].astype(np.int64)
    start, count = trace.arg2[ck].astype(np.int64), trace.arg3[ck].astype(np.int64)
    lo_a, hi_a = np.minimum(start, 1024), np.minimum(start + count, 1024)
    li = last_before(f_frames, f_at, src, ck, span)
    since = np.where(li >= 0, f_at[np.maximum(li, 0)], -1)
    j0 = np.searchsorted(s_key, src * span + since, side="right")
    j1 = np.searchsorted(s_key, src * span + ck, side="left")
    cols = (ck, src, lo_a, hi_a, li, since, j0, j1)
    for k, sf_, lo, hi, i, t, a0, a1 in zip(*(c.tolist() for c in cols), strict=True):
        out = np.zeros(hi - lo, dtype=np.int64)
        if i < 0:
            out[:] = frames.page(sf_)[lo:hi]
        else:
            got = snaps.get(t)
            if got is not None:
                a, b = max(lo, got[0]), min(hi, got[1])
                if a < b:
                    out[a - lo : b - lo] = got[2][a - got[0] : b - got[0]]
        if a1 > a0:
            ue, uv = bulk.final(s_e[a0:a1], s_v[a0:a1])
            ix = ue & 1023
            m = (ix >= lo) & (ix < hi)
            out[ix[m] - lo] = uv[m]
        snaps[k] = (lo, hi, out)
    # each frame allocated here: as its last allocation left it
    last = np.append(f_frames[1:] != f_frames[:-1], True)
    for pfn, k in zip(f_frames[last].tolist(), f_at[last].tolist(), strict=True):
        page = frames.page(pfn)
        page[:] = 0
        got = snaps.get(k)
        if got is not None:
            page[got[0] : got[1]] = got[2]
    # then the stores each frame kept: those after its last allocation
    uf, ut = f_frames[last], f_at[last]
    pos = np.minimum(np.searchsorted(uf, sf), len(uf) - 1)
    keep = (uf[pos] != sf) | (ks > ut[pos])
    return _store_all(frames, es[keep], vs[keep])
