"""The guest's tables walked over the page-table events, compiled, with what a check
against an empty copy finds after each event asked for.

Takes the trace's page-table events as arrays (:func:`stops_of`, :class:`Stops`); gives,
per event asked for, the pages a check of the loaded space against an empty copy finds
missing, the lowest and the guest's translation of it (0, 0, 0: nothing found)
(:func:`walk_and_judge`), and the guest's side of any compiled walk (:func:`guest_state`,
:func:`guest_store`, :func:`guest_op`, :func:`make_room`), which lguest's shadow told of
no store walks beside (:mod:`replayer.engine.untoldwalk`).

The walk is the guest's side of :class:`~replayer.mechanisms.pagetables.GuestMMU` over
flat arrays, compiled with numba (the same walk in Python took 3.5-4.3 s of fork's 10.6 M
events, one Python step per stop): entry stores, ``alloc_*`` zeroing or cloning a frame,
CR3 loads, CR4.PGE and TLB flushes, with the present values a native TLB may still hold
for each entry (its *olds*, kept as :class:`GuestMMU` keeps them: a set per entry, dropped
by the flushes that cover it, global ones kept by a user flush when CR4.PGE is set).

A check against a copy that holds nothing finds every page the loaded directory maps
missing, except where a native TLB may still show the page unmapped: under a directory
entry whose olds name another table (a page that table leaves unmapped) -- what
:meth:`~replayer.mechanisms.coherence.ViewPair._compare` finds against an all-zero view.
The older values of a table's own entries never excuse a page there: they are present,
so a native TLB holding one still maps the page the empty copy lacks.

``tests/replayer/test_empty.py`` holds it to the simulation's checks and, step by step, to
the comparison page by page.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from replayer.engine.common import _ALLOCS, FL_KERN, FL_ONE, FL_USER, WCR3, WCR4, _cached
from replayer.engine.derived import _frames_needed, _pte_entries, _wide
from replayer.engine.walk import table_changes
from replayer.mechanisms.pagetables import GLOBAL, MAX_FRAMES, MEANING, PAGE_MASK, PSE
from replayer.trace import Trace

# What each stop does beside the stores before it (the walk's own codes).
OP_NONE, OP_CR3, OP_FLUSH_ONE, OP_FLUSH_USER, OP_FLUSH_ALL, OP_CR4, OP_ZERO, OP_CLONE = range(8)
_CR4_PGE = 0x80
_BIG = 0xFFC00000
_FIRST_POOL = 1 << 16
#: hook -> the walk's code for it (CR0 changes nothing a check sees).
_OPS = {
    WCR3: OP_CR3,
    FL_ONE: OP_FLUSH_ONE,
    FL_USER: OP_FLUSH_USER,
    FL_KERN: OP_FLUSH_ALL,
    WCR4: OP_CR4,
    _ALLOCS[0]: OP_ZERO,
    _ALLOCS[1]: OP_ZERO,
    _ALLOCS[2]: OP_CLONE,
}


@njit(cache=True, nogil=True)
def _grown(a: np.ndarray, cap: int) -> np.ndarray:
    """``a`` copied into an array of ``cap`` elements."""
    out = np.zeros(cap, dtype=a.dtype)
    out[: len(a)] = a
    return out


@njit(cache=True, nogil=True, inline="always")
def _note(olds, e, old, npool, ndirty):
    """A present value ``old`` overwritten at entry ``e``: one of its olds, unless already
    (room made by the caller); return the pool's and the noted entries' new lengths."""
    head, listed, pval, pnext, dirty = olds
    n = head[e]
    while n:
        if pval[n] == old:
            return npool, ndirty
        n = pnext[n]
    pval[npool] = old
    pnext[npool] = head[e]
    head[e] = npool
    if not listed[e]:
        listed[e] = 1
        dirty[ndirty] = e
        ndirty += 1
    return npool + 1, ndirty


@njit(cache=True, nogil=True)
def _drop_all(olds, ndirty):
    """A flush of everything: no entry keeps an older value."""
    head, listed, _, _, dirty = olds
    for k in range(ndirty):
        e = dirty[k]
        listed[e] = 0
        head[e] = 0


@njit(cache=True, nogil=True)
def _keep_global(olds, npool, ndirty):
    """A flush of non-global entries: each entry keeps only its global olds, copied past
    the pool's end and moved down to its start (room for them made by the caller);
    return the pool's and the noted entries' new lengths."""
    head, listed, pval, pnext, dirty = olds
    base, top, keep = npool, npool, 0
    for k in range(ndirty):
        e = dirty[k]
        n, kept = head[e], 0
        while n:
            if pval[n] & GLOBAL:
                pval[top] = pval[n]
                pnext[top] = kept
                kept = top
                top += 1
            n = pnext[n]
        head[e] = kept
        if kept:
            dirty[keep] = e
            keep += 1
        else:
            listed[e] = 0
    shift = base - 1
    for n in range(base, top):
        pval[n - shift] = pval[n]
        pnext[n - shift] = pnext[n] - shift if pnext[n] else 0
    for k in range(keep):
        head[dirty[k]] -= shift
    return top - shift, keep


@njit(cache=True, nogil=True)
def _drop_entry(olds, mem, e, j, nf):
    """invlpg: directory entry ``e`` keeps no older value, nor does entry ``j`` of each
    table it names now or named since last flushed."""
    head, _, pval, pnext, _ = olds
    v = np.int64(mem[e])
    n = head[e]
    head[e] = 0
    while True:
        if v & 1 and not v & PSE and (v >> 12) < nf:
            head[((v >> 12) << 10) | j] = 0
        if not n:
            break
        v = np.int64(pval[n])
        n = pnext[n]


@njit(cache=True, nogil=True, inline="always")
def guest_store(mem, count, nz, olds, e, v, npool, ndirty):
    """The guest stores ``v`` into entry ``e``; return the pool's and noted entries'
    lengths."""
    old = np.int64(mem[e])
    if old == v:
        return npool, ndirty
    mem[e] = v
    f = e >> 10
    count[f] += (v & 1) - (old & 1)
    nz[f] += (v != 0) - (old != 0)
    if old & 1:
        return _note(olds, e, old, npool, ndirty)
    return npool, ndirty


@njit(cache=True, nogil=True)
def _fill(mem, count, nz, olds, pfn, new, npool, ndirty):
    """``alloc_*`` leaves the 1024 entries ``new`` in frame ``pfn``; return the pool's and
    noted entries' lengths."""
    at = pfn << 10
    c = z = 0
    for k in range(1024):
        v = np.int64(new[k])
        c += v & 1
        z += v != 0
        old = np.int64(mem[at + k])
        if old != v:
            mem[at + k] = v
            if old & 1:
                npool, ndirty = _note(olds, at + k, old, npool, ndirty)
    count[pfn] = c
    nz[pfn] = z
    return npool, ndirty


@njit(cache=True, nogil=True)
def _check(mem, count, olds, pd, nf):
    """What a check of directory ``pd`` against an empty copy finds: (pages missing,
    lowest, its translation), zeros for nothing."""
    head, _, pval, pnext, _ = olds
    total, best, exp = 0, -1, 0
    if pd < 0 or pd >= nf:
        return 0, 0, 0
    for i in range(1024):
        pde = np.int64(mem[(pd << 10) | i])
        if not pde & 1:
            continue
        e, t = (pd << 10) | i, pde >> 12
        tb = t << 10
        if not pde & PSE and (t >= nf or not count[t]):
            continue
        if not head[e] and pde & PSE:
            total += 1024
            if best < 0:
                best, exp = i << 10, (pde & _BIG) | (pde & MEANING)
            continue
        if not head[e]:
            total += count[t]
            if best < 0:
                k = 0
                while not mem[tb + k] & 1:
                    k += 1
                best, exp = (i << 10) | k, np.int64(mem[tb + k]) & (PAGE_MASK | (pde & MEANING))
            continue
        # olds naming a table: a page counts where each of those maps it too
        for k in range(1024):
            if not pde & PSE and not mem[tb + k] & 1:
                continue
            n, mapped = head[e], True
            while n and mapped:
                ov = np.int64(pval[n])
                n = pnext[n]
                if not ov & PSE:
                    mapped = (ov >> 12) < nf and mem[((ov >> 12) << 10) + k] & 1 != 0
            if mapped:
                total += 1
                if best < 0:
                    best = (i << 10) | k
                    if pde & PSE:
                        exp = ((pde & _BIG) + (k << 12)) | (pde & MEANING)
                    else:
                        exp = np.int64(mem[tb + k]) & (PAGE_MASK | (pde & MEANING))
    if not total:
        return 0, 0, 0
    return total, best, exp


@njit(cache=True, nogil=True)
def make_room(olds, cap, npool, ndirty, more):
    """The olds' pool and noted entries grown (doubled) to take ``more`` stores and a
    fill beside a user flush's copies; return them and their capacity.  Called between
    stops only: growth inside the store loop made numba's code ten times slower."""
    need = 2 * max(npool, ndirty) + more + 1024
    if need >= cap:
        while need >= cap:
            cap *= 2
        h, ls, pv, pn, dt = olds
        olds = (h, ls, _grown(pv, cap), _grown(pn, cap), _grown(dt, cap))
    return olds, cap


@njit(cache=True, nogil=True)
def guest_op(mem, count, nz, olds, new, o, x0, x1, x2, x3, pd, pge, npool, ndirty, nf):
    """The guest's side of a stop's op ``o`` (arguments ``x0``-``x3``); return the loaded
    directory, CR4.PGE and the pool's and noted entries' lengths."""
    if o in (OP_CR3, OP_FLUSH_USER, OP_FLUSH_ALL):
        if o == OP_CR3:
            pd = x0 >> 12
        if o == OP_FLUSH_ALL or not pge:
            _drop_all(olds, ndirty)
            npool, ndirty = 1, 0
        else:
            npool, ndirty = _keep_global(olds, npool, ndirty)
    elif o == OP_FLUSH_ONE and 0 <= pd < nf:
        _drop_entry(olds, mem, (pd << 10) | (x0 >> 22), (x0 >> 12) & 1023, nf)
    elif o == OP_CR4:
        pge = x0 & _CR4_PGE != 0
    elif o == OP_ZERO and nz[x0]:
        new[:] = 0
        npool, ndirty = _fill(mem, count, nz, olds, x0, new, npool, ndirty)
    elif o == OP_CLONE:
        lo, hi = min(x2, 1024), min(x2 + x3, 1024)
        new[:] = 0
        if lo < hi:
            new[lo:hi] = mem[(x1 << 10) + lo : (x1 << 10) + hi]
        npool, ndirty = _fill(mem, count, nz, olds, x0, new, npool, ndirty)
    return pd, pge, npool, ndirty


@njit(cache=True, nogil=True)
def guest_state(nf):
    """The guest's side of a walk before any event: its tables (``mem``), present and
    nonzero entries per frame, the olds (head, listed, pool values, pool links, noted
    entries) and the pool's capacity."""
    olds = (
        np.zeros(nf << 10, dtype=np.int32),  # head: an entry's first old in the pool
        np.zeros(nf << 10, dtype=np.uint8),  # listed: in the noted entries
        np.zeros(_FIRST_POOL, dtype=np.uint32),  # the pool: values,
        np.zeros(_FIRST_POOL, dtype=np.int32),  # and the next of each entry's
        np.zeros(_FIRST_POOL, dtype=np.int64),  # the noted entries (some since dropped)
    )
    count, nz = np.zeros(nf, dtype=np.int32), np.zeros(nf, dtype=np.int32)
    return np.zeros(nf << 10, dtype=np.uint32), count, nz, olds, _FIRST_POOL


@njit(cache=True, nogil=True)
def _walk(nf, st_e, st_v, upto, op, a0, a1, a2, a3, want):
    """:func:`walk_and_judge` over its arrays: stop ``s`` applies stores up to
    ``upto[s]``, then its op, then a check if ``want[s]``."""
    mem, count, nz, olds, cap = guest_state(nf)
    npool, ndirty, pd, pge, a, w = 1, 0, -1, False, 0, 0
    found = np.zeros((int(want.sum()), 3), dtype=np.int64)
    new = np.zeros(1024, dtype=np.uint32)
    for s in range(len(op)):
        olds, cap = make_room(olds, cap, npool, ndirty, upto[s] - a)
        for b in range(a, upto[s]):
            npool, ndirty = guest_store(mem, count, nz, olds, st_e[b], st_v[b], npool, ndirty)
        a = upto[s]
        pd, pge, npool, ndirty = guest_op(
            mem, count, nz, olds, new, op[s], a0[s], a1[s], a2[s], a3[s], pd, pge, npool, ndirty, nf
        )
        if want[s]:
            found[w, 0], found[w, 1], found[w, 2] = _check(mem, count, olds, pd, nf)
            w += 1
    return found


@dataclass
class Stops:
    """The page-table events as a compiled walk takes them: ``nf`` frames; the entry
    stores (``st_e``, ``st_v``); the stops -- every event that is not a store, and the
    events asked for -- with the stores each applies up to (``upto``), its op (the walk's
    code, ``OP_NONE`` for an event only asked for) and its first four arguments, and
    whether it was asked for (``want``)."""

    nf: int
    st_e: np.ndarray
    st_v: np.ndarray
    at: np.ndarray
    upto: np.ndarray
    op: np.ndarray
    a0: np.ndarray
    a1: np.ndarray
    a2: np.ndarray
    a3: np.ndarray
    want: np.ndarray


def stops_of(trace: Trace, wanted: np.ndarray) -> Stops:
    """The trace's page-table events as a compiled walk takes them, stopping also after
    each of ``wanted`` (event indices, ascending)."""
    ent, val = _pte_entries(trace)
    nf = _frames_needed(trace, ent)
    if nf > MAX_FRAMES:
        raise IndexError(f"frame {nf - 1:#x} is beyond a 32-bit physical address space")
    loop = _cached(trace, "table changes", table_changes)
    le = _wide(ent[loop])
    stored = le >= 0
    st = loop[stored]
    ops = loop[~stored]
    mark = np.zeros(trace.n, dtype=np.uint8)
    mark[ops] = 1
    mark[np.asarray(wanted, dtype=np.int64)] |= 2
    stops = np.flatnonzero(mark)
    kind = mark[stops]
    del mark
    code = np.full(len(stops), OP_NONE, dtype=np.int8)
    h = trace.hook[stops]
    for hook, c in _OPS.items():
        code[(h == hook) & (kind & 1 != 0)] = c
    a0, a1, a2, a3 = (
        col[stops].astype(np.int64) for col in (trace.arg0, trace.arg1, trace.arg2, trace.arg3)
    )
    return Stops(
        nf,
        le[stored].astype(np.int64),
        _wide(val[loop][stored]).astype(np.int64),
        stops,
        np.searchsorted(st, stops, side="right"),
        code,
        a0,
        a1,
        a2,
        a3,
        kind & 2 != 0,
    )


def walk_and_judge(trace: Trace, wanted: list[int]) -> np.ndarray:
    """What a check against an empty copy finds after each of ``wanted`` (events that
    change the tables, ascending): (pages missing, lowest, its translation) per row,
    zeros for nothing."""
    s = stops_of(trace, np.asarray(wanted, dtype=np.int64))
    return _walk(s.nf, s.st_e, s.st_v, s.upto, s.op, s.a0, s.a1, s.a2, s.a3, s.want)
