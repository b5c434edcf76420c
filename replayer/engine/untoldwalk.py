"""lguest's shadow told of no store, kept beside the guest's tables over the page-table
events, compiled, with what each MMU check finds in it.

Takes the trace's page-table events as a compiled walk takes them
(:class:`~replayer.engine.emptywalk.Stops`), with per stop whether lguest queues its call,
whether the queue is applied after it and how many checks are made there; gives, per
kind of wrong page a check finds, (check, kind, pages, lowest, expected, actual).

The guest's side is :mod:`replayer.engine.emptywalk`'s walk.  lguest's side is what
:class:`~replayer.mechanisms.coherence.ViewPair` keeps for a demand-filled view told of
nothing: a copy of every frame (``view``) that only re-reads change, and per frame how
many entries differ from the guest's.  lguest re-reads at TLB flushes
(``flush_tlb_kernel`` every frame, ``flush_tlb_user`` the loaded directory and its
tables, ``flush_tlb_single`` the entries on the walk of its address) and at a CR3 load
of a directory not among the ``cache`` it keeps (least recently loaded leaves first);
a flush or load lguest queues is applied at the queue's flush.

A check compares the loaded space page by page as
:meth:`~replayer.mechanisms.coherence.ViewPair.check_full` does: a page the shadow does
not map is filled from the guest's on use (nothing wrong), one it maps otherwise than
the guest is wrong unless a native TLB may still hold that translation (the older
values of the guest's entries on its walk, :mod:`replayer.engine.emptywalk`'s olds).
Under a directory entry both sides hold alike, only entries of its table that differ
can be wrong: a check looks only where a frame differs.

``tests/replayer/test_untold.py`` holds it to the simulation's checks and, step by step,
to ``ViewPair``'s.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from replayer.engine.emptywalk import (
    OP_CLONE,
    OP_CR3,
    OP_FLUSH_ALL,
    OP_FLUSH_ONE,
    OP_FLUSH_USER,
    OP_ZERO,
    guest_op,
    guest_state,
    guest_store,
    make_room,
)
from replayer.mechanisms.pagetables import MEANING, PAGE_MASK, PSE

#: The start of the sha256 of ``emptywalk.py``, whose compiled functions this module's
#: call.  numba keys a function's cached machine code to its own file's contents alone,
#: so a change there must change this file too, or the cache would keep the old code
#: (``tests/replayer/test_untold.py`` holds it to the file).
GUEST_SIDE = "0b2df57c45c3bd0b"
_BIG = 0xFFC00000
_LOW = 0xFFF
#: Where a walk's scalars live in its ``sc`` array: frames that differ, frames listed as
#: ever differing since the last flush of everything, directories cached.
_ND, _NDL, _NLRU = 0, 1, 2
#: A wrong page's kind (0 missing, 1 stale, 2 perm, 3 none) by its code: present on the
#: guest's side (1), on lguest's (2), frames differ (4); as ``ViewPair`` classifies.
_KIND = np.array([3, 0, 1, 2, 3, 0, 1, 1], dtype=np.int64)


@njit(cache=True, nogil=True, inline="always")
def _retouch(shadow, sc, f, was, now):
    """An entry of frame ``f`` differed from the guest's (``was``) and now does (``now``)."""
    _, diffc, dl, dlisted = shadow
    if was == now:
        return
    if now:
        if not diffc[f]:
            sc[_ND] += 1
        diffc[f] += 1
        if not dlisted[f]:
            dlisted[f] = 1
            dl[sc[_NDL]] = f
            sc[_NDL] += 1
    else:
        diffc[f] -= 1
        if not diffc[f]:
            sc[_ND] -= 1


@njit(cache=True, nogil=True)
def _recount(mem, shadow, sc, f):
    """Frame ``f`` was filled on the guest's side: how many of its entries differ."""
    view, diffc, dl, dlisted = shadow
    at, c = f << 10, 0
    for k in range(1024):
        c += mem[at + k] != view[at + k]
    if bool(c) != bool(diffc[f]):
        sc[_ND] += 1 if c else -1
    diffc[f] = c
    if c and not dlisted[f]:
        dlisted[f] = 1
        dl[sc[_NDL]] = f
        sc[_NDL] += 1


@njit(cache=True, nogil=True)
def _reread_page(mem, shadow, sc, f, nf):
    """lguest re-reads frame ``f`` whole."""
    view, diffc, _, _ = shadow
    if f < 0 or f >= nf or not diffc[f]:
        return
    at = f << 10
    view[at : at + 1024] = mem[at : at + 1024]
    diffc[f] = 0
    sc[_ND] -= 1


@njit(cache=True, nogil=True)
def _reread_entry(mem, shadow, sc, e):
    """lguest re-reads entry ``e``."""
    view = shadow[0]
    if mem[e] != view[e]:
        view[e] = mem[e]
        _retouch(shadow, sc, e >> 10, True, False)


@njit(cache=True, nogil=True)
def _reread_space(mem, shadow, sc, pd, nf):
    """lguest re-reads the loaded directory and every table the guest's names."""
    if pd < 0 or pd >= nf:
        return
    _reread_page(mem, shadow, sc, pd, nf)
    for i in range(1024):
        pde = np.int64(mem[(pd << 10) | i])
        if pde & 1 and not pde & PSE:
            _reread_page(mem, shadow, sc, pde >> 12, nf)


@njit(cache=True, nogil=True)
def _reread_all(mem, shadow, sc, nf):
    """lguest re-reads every frame it holds (those that ever differed since the last)."""
    dl, dlisted = shadow[2], shadow[3]
    for k in range(sc[_NDL]):
        f = dl[k]
        dlisted[f] = 0
        _reread_page(mem, shadow, sc, f, nf)
    sc[_NDL] = 0


@njit(cache=True, nogil=True)
def _reread_addr(mem, shadow, sc, pd, addr, nf):
    """lguest re-reads the entries on the walk to ``addr``: the directory's, and that of
    each table the guest's entry or lguest's old one names."""
    if pd < 0 or pd >= nf:
        return
    e = (pd << 10) | (addr >> 22)
    j = (addr >> 12) & 1023
    old = np.int64(shadow[0][e])
    _reread_entry(mem, shadow, sc, e)
    pde = np.int64(mem[e])
    for p in (pde, old):
        if p & 1 and not p & PSE and (p >> 12) < nf:
            _reread_entry(mem, shadow, sc, ((p >> 12) << 10) | j)


@njit(cache=True, nogil=True)
def _load(mem, shadow, sc, lru, cache, f, pd, nf):
    """lguest loads directory ``f``: its cached shadow directory (now the most recently
    loaded), or the guest's loaded space ``pd`` re-read and ``f`` cached."""
    n = sc[_NLRU]
    for k in range(n):
        if lru[k] == f:
            lru[k : n - 1] = lru[k + 1 : n].copy()
            lru[n - 1] = f
            return
    _reread_space(mem, shadow, sc, pd, nf)
    lru[n] = f
    n += 1
    while n > cache:
        lru[: n - 1] = lru[1:n].copy()
        n -= 1
    sc[_NLRU] = n


@njit(cache=True, nogil=True)
def _apply(mem, shadow, sc, lru, cache, o, x0, pd, vpd, nf):
    """lguest takes a CR3 load or a TLB flush; return the directory it has loaded."""
    if o == OP_CR3:
        _load(mem, shadow, sc, lru, cache, x0 >> 12, pd, nf)
        return x0 >> 12
    if o == OP_FLUSH_ONE:
        _reread_addr(mem, shadow, sc, pd, x0, nf)
    elif o == OP_FLUSH_ALL:
        _reread_all(mem, shadow, sc, nf)
    else:
        _reread_space(mem, shadow, sc, pd, nf)
    return vpd


@njit(cache=True, nogil=True, inline="always")
def _tr(m, nf, pde, j):
    """The translation of page ``j`` under directory entry ``pde`` in tables ``m``."""
    if not pde & 1:
        return 0
    if pde & PSE:
        return ((pde & _BIG) + (j << 12)) | (pde & MEANING)
    if (pde >> 12) >= nf:
        return 0
    v = np.int64(m[((pde >> 12) << 10) | j]) & (PAGE_MASK | (pde & MEANING))
    return v if v & 1 else 0


@njit(cache=True, nogil=True, inline="always")
def _through(pde, v):
    """Table entry ``v`` translated under directory entry ``pde`` (a table)."""
    v &= PAGE_MASK | (pde & MEANING)
    return v if v & 1 else 0


@njit(cache=True, nogil=True)
def _excused(mem, olds, nf, de, gpde, j, b):
    """Whether a native TLB may still hold translation ``b`` of page ``j`` under the
    guest's directory entry ``de``: an older value of the table entry its walk reaches,
    or through an older value of the directory entry (a big page, or the table it named
    with the entry as it is or was); ``de`` -1: a directory beyond the tables."""
    head, _, pval, pnext, _ = olds
    if gpde & 1 and not gpde & PSE and (gpde >> 12) < nf:
        n = head[((gpde >> 12) << 10) | j]
        while n:
            if _through(gpde, np.int64(pval[n])) == b:
                return True
            n = pnext[n]
    n = head[de] if de >= 0 else 0
    while n:
        o = np.int64(pval[n])
        n = pnext[n]
        if o & PSE:
            if ((o & _BIG) + (j << 12)) | (o & MEANING) == b:
                return True
            continue
        if (o >> 12) >= nf:
            continue
        te = ((o >> 12) << 10) | j
        if _through(o, np.int64(mem[te])) == b:
            return True
        m = head[te]
        while m:
            if _through(o, np.int64(pval[m])) == b:
                return True
            m = pnext[m]
    return False


@njit(cache=True, nogil=True)
def _page(mem, view, olds, nf, de, i, j, gpde, vpde, kinds):
    """Page ``j`` under directory index ``i``: counted in ``kinds`` if wrong."""
    g = _tr(mem, nf, gpde, j)
    b = _tr(view, nf, vpde, j)
    if not b & 1:
        return  # lguest fills it from the guest's on use
    if b == g or _excused(mem, olds, nf, de, gpde, j, b):
        return
    k = _KIND[(g & 1) | 2 | (4 if (g ^ b) > _LOW else 0)]
    if not kinds[k, 0]:
        kinds[k, 1], kinds[k, 2], kinds[k, 3] = (i << 10) | j, g, b
    kinds[k, 0] += 1


@njit(cache=True, nogil=True)
def _judge(mem, shadow, olds, sc, pd, vpd, nf, kinds):
    """What a check of the guest's loaded directory ``pd`` against lguest's ``vpd`` finds,
    per kind: (pages, lowest, expected, actual) into ``kinds``."""
    view, diffc, _, _ = shadow
    kinds[:] = 0
    if pd < 0:
        return
    if vpd < 0:
        vpd = pd
    if vpd == pd and not sc[_ND]:
        return
    for i in range(1024):
        de = (pd << 10) | i if pd < nf else -1
        gpde = np.int64(mem[de]) if de >= 0 else 0
        vpde = np.int64(view[(vpd << 10) | i]) if vpd < nf else 0
        if not vpde & 1:
            continue
        if gpde != vpde:
            for j in range(1024):
                _page(mem, view, olds, nf, de, i, j, gpde, vpde, kinds)
        elif not gpde & PSE and (gpde >> 12) < nf and diffc[gpde >> 12]:
            tb = (gpde >> 12) << 10
            for j in range(1024):
                if mem[tb + j] != view[tb + j]:
                    _page(mem, view, olds, nf, de, i, j, gpde, vpde, kinds)


@njit(cache=True, nogil=True)
def shadow_walk(nf, st_e, st_v, upto, op, a0, a1, a2, a3, queued, drain, checks, cache):
    """Stop ``s`` applies stores up to ``upto[s]`` and its op on the guest's side; lguest
    takes the op at once or (``queued[s]``) at the queue's flush, which is applied after
    the stop if ``drain[s]``; then ``checks[s]`` checks are made.  Return one row per
    kind found by a check: (check, kind, pages, lowest, expected, actual)."""
    mem, count, nz, olds, cap = guest_state(nf)
    shadow = (
        np.zeros(nf << 10, dtype=np.uint32),  # lguest's copy of every frame
        np.zeros(nf, dtype=np.int32),  # entries that differ, per frame
        np.zeros(nf, dtype=np.int64),  # frames that differed since the last full re-read
        np.zeros(nf, dtype=np.uint8),  # ... and whether listed there
    )
    sc = np.zeros(3, dtype=np.int64)
    lru = np.zeros(cache + 1, dtype=np.int64)
    pend_o = np.zeros(len(op), dtype=np.int8)
    pend_a = np.zeros(len(op), dtype=np.int64)
    out = np.zeros((1 << 12, 6), dtype=np.int64)
    kinds = np.zeros((3, 4), dtype=np.int64)
    new = np.zeros(1024, dtype=np.uint32)
    view = shadow[0]
    npool, ndirty, pd, vpd, pge, a, r, nout, npend = 1, 0, -1, -1, False, 0, 0, 0, 0
    for s in range(len(op)):
        olds, cap = make_room(olds, cap, npool, ndirty, upto[s] - a)
        if nout + 3 * checks[s] >= len(out):
            grown = np.zeros((2 * (nout + 3 * checks[s]), 6), dtype=np.int64)
            grown[:nout] = out[:nout]
            out = grown
        for b in range(a, upto[s]):
            e, v = st_e[b], st_v[b]
            old = np.int64(mem[e])
            if old != v:
                npool, ndirty = guest_store(mem, count, nz, olds, e, v, npool, ndirty)
                was = np.int64(view[e])
                _retouch(shadow, sc, e >> 10, old != was, v != was)
        a = upto[s]
        o, x0 = op[s], a0[s]
        filled = o == OP_CLONE or (o == OP_ZERO and nz[x0] != 0)
        pd, pge, npool, ndirty = guest_op(
            mem, count, nz, olds, new, o, x0, a1[s], a2[s], a3[s], pd, pge, npool, ndirty, nf
        )
        if filled:
            _recount(mem, shadow, sc, x0)
        if o in (OP_CR3, OP_FLUSH_ONE, OP_FLUSH_USER, OP_FLUSH_ALL):
            if queued[s]:
                pend_o[npend], pend_a[npend] = o, x0
                npend += 1
            else:
                vpd = _apply(mem, shadow, sc, lru, cache, o, x0, pd, vpd, nf)
        if drain[s]:
            for k in range(npend):
                vpd = _apply(mem, shadow, sc, lru, cache, pend_o[k], pend_a[k], pd, vpd, nf)
            npend = 0
        for _ in range(checks[s]):
            _judge(mem, shadow, olds, sc, pd, vpd, nf, kinds)
            for k in range(3):
                if kinds[k, 0]:
                    out[nout, 0], out[nout, 1] = r, k
                    out[nout, 2:] = kinds[k]
                    nout += 1
            r += 1
    return out[:nout].copy()
