"""The lean proofs: whether no MMU check can find a page wrong in a backend's copy.

Takes the trace, the events the sequential pass would take and the queue's flush
plan; gives yes or no per kind of copy -- ``notified`` (VMI's shadow, Xen's
validated tables) and ``discovered`` (no allocation hooks: tables found at CR3 loads
and installs); lguest's shadow has its own module (:mod:`replayer.engine.shadow`) --
decided over the whole trace at once with numpy.  A proof may say no where no check
would find anything (the run is then simulated by :mod:`replayer.engine.sequential`);
it must not say yes where one would.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from replayer.engine.common import _ALLOCS, _H, _RELEASES, _cached
from replayer.engine.derived import _SLICE, _pte_entries, _wide, loaded_spaces
from replayer.mechanisms.batch import (
    QueuePlan,
)
from replayer.trace import (
    Trace,
    hooks_in,
)


class _Wide:
    """A uint32 column read as int64 where indexed (no widened copy of all of it)."""

    def __init__(self, col: np.ndarray) -> None:
        self.col = col

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        return self.col[idx].astype(np.int64)


class _Proof:
    """Whether no MMU check can find a page wrong in a backend's copy of the page tables
    (:meth:`_Replay._lean`), decided over the whole trace at once; one method per kind of
    copy.  It may say no where a check would find nothing (the run is then simulated);
    it must not say yes where one would find something.

    Times are in quarters of an event: ``4k`` a flush applying the queue before event
    ``k``, ``4k+1`` checks deferred to that flush, ``4k+2`` event ``k`` itself (the guest's
    store, what the backend does at once), ``4k+3`` a check right after it
    (:class:`~replayer.engine.shadow.Shadowed` also orders the operations one flush applies
    by their events).
    """

    def __init__(
        self,
        trace: Trace,
        in_loop: np.ndarray,
        queued: np.ndarray,
        flush_at: np.ndarray,
        ent: np.ndarray,
    ) -> None:
        self.trace, self.in_loop, self.queued, self.flush_at = trace, in_loop, queued, flush_at
        h = trace.hook
        self.s_idx = np.nonzero(in_loop & (ent >= 0))[0]
        self.s_f = _wide(ent[self.s_idx]) >> 10
        self.s_q = queued[self.s_idx]
        self.a0 = _Wide(trace.arg0)
        self.is_alloc = in_loop & _cached(trace, "alloc hooks", lambda t: hooks_in(t.hook, _ALLOCS))
        self.cr3 = np.nonzero(in_loop & (h == _H["write_cr3"]))[0]
        self.cr3_pd = self.a0[self.cr3] >> 12

    def flushes_upto(self, x: np.ndarray) -> np.ndarray:
        """Flushes at or before each event."""
        return np.searchsorted(self.flush_at, x, side="right")

    def next_flush(self, x: np.ndarray, upto: np.ndarray | None = None) -> np.ndarray:
        """The first flush after each event (the trace's length: the final drain);
        ``upto``: :meth:`flushes_upto` of ``x``, where the caller has it already."""
        fa, n = self.flush_at, self.trace.n
        if not len(fa):
            return np.full(len(x), n, dtype=np.int64)
        i = self.flushes_upto(x) if upto is None else upto
        return np.where(i < len(fa), fa[np.minimum(i, len(fa) - 1)], n)

    def pd_at(self, st: np.ndarray) -> np.ndarray:
        """The directory loaded after each event of ``st`` (-1: none yet)."""
        if not len(self.cr3):
            return np.full(len(st), -1, dtype=np.int64)
        i = np.searchsorted(self.cr3, st, side="right") - 1
        return np.where(i >= 0, self.cr3_pd[np.maximum(i, 0)], -1)

    def loaded_checks(
        self, f: np.ndarray, lo: np.ndarray, hi: np.ndarray, when: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, c, directory) for each check at quarter ``when[c]`` (sorted) in [lo[i],
        hi[i]) while frame f[i] is in the loaded space: the loaded directory (directory
        True) or a table it names.  The spans are cut by the loaded space first, so only
        checks that see a wrong frame are listed."""
        n = self.trace.n
        span = 4 * n + 8
        hi = np.minimum(hi, span - 1)
        spells = _cached(self.trace, "loaded_spaces", loaded_spaces).spells
        cr3_next = np.append(self.cr3[1:], n)
        out = []
        for is_pd, lf, la, lb in (
            (True, self.cr3_pd, 4 * self.cr3 + 2, 4 * cr3_next + 2),
            (False, spells[:, 0], 4 * spells[:, 1] + 2, 4 * spells[:, 2] + 2),
        ):
            # a frame's spans of either kind are disjoint: sorted by start, ends sorted too
            o = np.lexsort((la, lf))
            lf, la, lb = lf[o], la[o], lb[o]
            a = np.searchsorted(lf * span + lb, f * span + lo, side="right")
            b = np.searchsorted(lf * span + la, f * span + hi, side="left")
            cnt = np.maximum(b - a, 0)
            wi = np.repeat(np.arange(len(f)), cnt)
            li = _expand(a, cnt)
            c0 = np.searchsorted(when, np.maximum(lo[wi], la[li]), side="left")
            c1 = np.searchsorted(when, np.minimum(hi[wi], lb[li]), side="left")
            cnt = np.maximum(c1 - c0, 0)
            if cnt.sum() > 5_000_000:
                raise _Unproved
            out.append((np.repeat(wi, cnt), _expand(c0, cnt), np.full(int(cnt.sum()), is_pd)))
        return (
            np.concatenate([x[0] for x in out]),
            np.concatenate([x[1] for x in out]),
            np.concatenate([x[2] for x in out]),
        )

    def check_times(self, checks: np.ndarray, ev: np.ndarray, qp: QueuePlan) -> np.ndarray:
        """When each check is made, in quarters: right after its event, or at the flush
        that empties the queue (``checks``: events, ascending)."""
        late = _pending_after(ev, qp, checks) > 0
        return np.where(late, 4 * self.next_flush(checks) + 1, 4 * checks + 3)

    def notified(self) -> bool:
        """Told of every allocation: every store reaches a frame the backend keeps when it
        is applied (the frame's last alloc_* applied before it, no release_* before it, in
        the guest's order), and no clone copies a source with updates in flight."""
        tr, in_loop, queued = self.trace, self.in_loop, self.queued
        h, n = tr.hook, tr.n
        span = n + 1
        flushes_upto, next_flush = self.flushes_upto, self.next_flush
        s_idx, s_f, s_q = self.s_idx, self.s_f, self.s_q
        tables = _cached(tr, "table hooks", lambda t: hooks_in(t.hook, _ALLOCS + _RELEASES))
        r_idx = np.nonzero(in_loop & tables)[0]
        r_f = self.a0[r_idx]
        order = np.lexsort((r_idx, r_f))
        r_idx, r_f = r_idx[order], r_f[order]
        r_alloc = hooks_in(h[r_idx], _ALLOCS)
        r_q = queued[r_idx]
        r_key = r_f * span + r_idx
        pos = np.searchsorted(r_key, s_f * span + s_idx) - 1
        ok = pos >= 0
        ok[ok] = r_f[pos[ok]] == s_f[ok]
        if not ok.all() or not r_alloc[pos].all():
            return False  # a store to a frame never allocated, or released
        r_up = flushes_upto(r_idx)  # once per hook, not once per store
        s_up = flushes_upto(s_idx)  # once per store, for both rules
        late = ~s_q & r_q[pos] & (s_up == r_up[pos])
        nxt = np.minimum(pos + 1, max(len(r_idx) - 1, 0))
        again = (pos + 1 < len(r_idx)) & (r_f[nxt] == s_f)
        late |= s_q & again & (r_idx[nxt] < next_flush(s_idx, s_up))
        same = r_f[1:] == r_f[:-1]
        overtaken = same & r_q[:-1] & ~r_q[1:]
        overtaken &= r_up[1:] == r_up[:-1]
        if late.any() or overtaken.any():
            return False  # applied out of the guest's order
        c_idx = np.nonzero(in_loop & (h == _H["alloc_pd_clone"]))[0]
        if not len(c_idx):
            return True
        # the backend copies its own copy of the source: no update of the source may be
        # queued when the clone is applied, nor (a queued clone) land before it is; only
        # the sources' stores and hooks matter (sorting all of them took 0.6 s on fork)
        src_f = tr.arg1[c_idx].astype(np.int64)
        s_in, r_in = np.isin(s_f, src_f), np.isin(r_f, src_f)
        keys = np.concatenate([(s_f * span + s_idx)[s_in], r_key[r_in]])
        touch = np.sort(keys)
        touch_q = np.sort(keys[np.concatenate([s_q[s_in], r_q[r_in]])])
        i = flushes_upto(c_idx)
        lo = np.full(len(c_idx), -1, dtype=np.int64)
        if len(self.flush_at):
            lo = np.where(i > 0, self.flush_at[np.maximum(i - 1, 0)], -1)
        src = src_f * span

        def between(keys: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.searchsorted(keys, src + b, side="left") - np.searchsorted(
                keys, src + a, side="right"
            )

        busy = between(touch_q, lo, c_idx)
        busy += queued[c_idx] * between(touch, c_idx, next_flush(c_idx))
        return not (busy > 0).any()  # else a clone's source changes while updates fly

    def _discoveries(self, at_cr3: dict[int, tuple[int, ...]]) -> tuple[np.ndarray, ...]:
        """Frames a backend not told of allocations discovers, and the events it does: the
        loaded directory and its tables at each CR3 load, and a table a set_pmd installs.
        (Arrays made from the loads' sets one at a time: lists of every discovery held
        gigabytes on sched, whose context switches discover 10 M.)"""
        tr, cr3, h = self.trace, self.cr3, self.trace.hook
        counts: list[int] = []

        def found() -> Iterator[int]:
            pds = (tr.arg0[cr3].astype(np.int64) >> 12).tolist()
            for k, pd in zip(cr3.tolist(), pds, strict=True):
                got = {pd, *at_cr3.get(k, ())}
                counts.append(len(got))
                yield from got

        d_f = np.fromiter(found(), dtype=np.int64)
        d_k = np.repeat(cr3.astype(np.int64), counts)
        ent, val = _pte_entries(tr)
        inst = self.in_loop & (h == _H["set_pmd"]) & (ent >= 0) & ((val & 0x81) == 1)
        ik = np.nonzero(inst)[0]
        return np.concatenate([d_f, _wide(val[ik]) >> 12]), np.concatenate([d_k, ik])

    def discovered(
        self,
        scans: np.ndarray,
        faults: np.ndarray,
        checks: np.ndarray,
        ev: np.ndarray,
        qp: QueuePlan,
    ) -> bool:
        """Not told of allocations (``--without ptalloc --fallback trap``): the backend
        keeps a frame from when it discovers it -- as the loaded directory or one of its
        tables at a CR3 load, or as a table a set_pmd installs -- re-reading it whole, to
        the frame's next allocation (whose memset faults on the protected frame).  A frame
        is wrong from an allocation or a store the backend missed to its next discovery;
        no check may fall where a wrong frame is in the loaded space.

        Fills ``scans`` (tables discovered at each event) and ``faults`` (allocations of a
        protected frame) for the costs.
        """
        tr = self.trace
        span = 4 * tr.n + 8
        disc_f, disc_k = self._discoveries(_cached(tr, "loaded_spaces", loaded_spaces).at_cr3)
        fill_k = np.nonzero(self.is_alloc)[0]
        fill_f = self.a0[fill_k]
        # registered at a time: the frame's last discovery before it follows its last fill
        dk = np.sort(disc_f * span + 4 * disc_k + 2)
        fk = np.sort(fill_f * span + 4 * fill_k + 2)

        def last_before(keys: np.ndarray, f: np.ndarray, t: np.ndarray) -> np.ndarray:
            i = np.searchsorted(keys, f * span + t, side="left") - 1
            got = keys[np.maximum(i, 0)] if len(keys) else np.zeros(len(f), np.int64)
            return np.where((i >= 0) & (got // span == f), got % span, -1)

        def registered(f: np.ndarray, t: np.ndarray) -> np.ndarray:
            d = last_before(dk, f, t)
            return (d >= 0) & (d > last_before(fk, f, t))

        # a discovery of a frame discovered since its last fill changes nothing: no
        # registered() answer, and no wrong spell ends there (one that starts after the
        # fill ends at the first discovery after it); only new ones are kept, and they are
        # found a slice at a time
        new = np.zeros(len(disc_f), dtype=bool)
        for a in range(0, len(disc_f), _SLICE):
            at = slice(a, a + _SLICE)
            new[at] = ~registered(disc_f[at], 4 * disc_k[at] + 2)
        np.add.at(scans, disc_k[new], 1)
        dk = np.sort(disc_f[new] * span + 4 * disc_k[new] + 2)
        del disc_f, disc_k
        faults[fill_k[registered(fill_f, 4 * fill_k + 2)]] = True
        s_idx, s_f, s_q = self.s_idx, self.s_f, self.s_q
        # wrong from a fill, or a store applied to a frame not kept, to the next discovery;
        # a slice of stores at a time, each slice's spells merged at once: the temporaries
        # are 8 bytes a store each, and boot has 10 M stores, most before any discovery
        parts = [_spells(dk, span, fill_f, 4 * fill_k + 2)]
        for a in range(0, len(s_idx), _SLICE):
            at = slice(a, a + _SLICE)
            # when the stores reach the backend: at once, or at the queue's flush
            t = np.where(s_q[at], 4 * self.next_flush(s_idx[at]), 4 * s_idx[at] + 2)
            lost = ~registered(s_f[at], t)
            parts.append(_spells(dk, span, s_f[at][lost], t[lost]))
        w_f, w_t, w_end = _first_per(*(np.concatenate(c) for c in zip(*parts, strict=True)))
        if not len(w_f):
            return True
        when = np.sort(self.check_times(checks, ev, qp))
        try:
            wi, _, _ = self.loaded_checks(w_f, w_t, w_end, when)
        except _Unproved:
            return False
        return not len(wi)


def _spells(dk: np.ndarray, span: int, f: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, ...]:
    """Frame ``f`` wrong from ``t`` to its next discovery (``dk``: discoveries as sorted
    ``frame * span + time``): (frame, start, end), one per (frame, end), from its first
    start (:func:`_first_per`)."""
    i = np.searchsorted(dk, f * span + t, side="right")
    nxt = dk[np.minimum(i, len(dk) - 1)] if len(dk) else np.zeros(len(f), np.int64)
    return _first_per(f, t, np.where((i < len(dk)) & (nxt // span == f), nxt % span, span - 1))


def _first_per(f: np.ndarray, t: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, ...]:
    """Intervals (frame, start, end) sorted by frame and end, one per (frame, end): the
    one with the earliest start."""
    order = np.lexsort((t, end, f))
    f, t, end = f[order], t[order], end[order]
    first = np.ones(len(f), dtype=bool)
    first[1:] = (f[1:] != f[:-1]) | (end[1:] != end[:-1])
    return f[first], t[first], end[first]


def _first_after(kx: np.ndarray, kt: np.ndarray, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each (x, t): the least time in ``kt`` after t paired with x in ``kx`` (the int64
    maximum where there is none)."""
    big = np.iinfo(np.int64).max
    if not len(kx):
        return np.full(len(x), big, dtype=np.int64)
    if len(x):
        kx, kt, x, t = (np.asarray(a, dtype=np.int64) for a in (kx, kt, x, t))
        lo = min(int(kt.min()), int(t.min()))
        span = max(int(kt.max()), int(t.max())) - lo + 1
        bound = max(abs(int(kx.min())), abs(int(kx.max())), abs(int(x.min())), abs(int(x.max())))
        if (bound + 1) * span < 1 << 62:
            # (pair, time) packed in one int64: one sort, skipped where already sorted
            keys = kx * span + (kt - lo)
            if len(keys) > 1 and not (keys[1:] >= keys[:-1]).all():
                keys = np.sort(keys)
            pos = np.searchsorted(keys, x * span + (t - lo), side="right")
            got = keys[np.minimum(pos, len(keys) - 1)]
            ok = (pos < len(keys)) & (got // span == x)
            return np.where(ok, got % span + lo, big)
    # (pair, time) does not fit one int64: the keys sorted by pair, then time, and each
    # query's first key after it found by a binary search within its pair's keys, all
    # queries at once (ranking every time first took twice as long: lguest's proof on fork)
    o = np.lexsort((kt, kx))
    skx, skt = kx[o], kt[o]
    pos = np.searchsorted(skx, x, side="left")
    end = np.searchsorted(skx, x, side="right")
    step = 1 << int((end - pos).max(initial=0)).bit_length()
    while step:
        at = pos + step - 1
        pos = np.where((at < end) & (skt[np.minimum(at, len(skt) - 1)] <= t), at + 1, pos)
        step >>= 1
    return np.where(pos < end, skt[np.minimum(pos, len(skt) - 1)], big)


class _Unproved(Exception):
    """The proof gives up (too many cases to look at)."""


def _tables_at_states(spells: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query index, table) for every table the loaded directory names after each event in
    ``states`` (spells as in :class:`LoadedSpaces`)."""
    order = np.argsort(states, kind="stable")
    qs = states[order]
    a = np.searchsorted(qs, spells[:, 1], side="left")
    b = np.searchsorted(qs, spells[:, 2], side="left")
    cnt = np.maximum(b - a, 0)
    si = np.repeat(np.arange(len(spells)), cnt)
    return order[_expand(a, cnt)], spells[si, 0]


def _expand(start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """start[i], start[i] + 1, ... (count[i] of them), for each i in turn."""
    total = int(count.sum())
    return np.repeat(start, count) + (np.arange(total) - np.repeat(np.cumsum(count) - count, count))


def _pending_after(ev: np.ndarray, qp: QueuePlan, at: np.ndarray) -> np.ndarray:
    """Entries left in the queue right after each event of ``at`` (plan positions ``ev``)."""
    cum = np.cumsum(qp.pushes)  # pushes up to each plan position
    i = np.searchsorted(ev, at, side="right") - 1
    upto = np.where(i >= 0, cum[np.maximum(i, 0)], 0) if len(ev) else np.zeros(len(at), int)
    # what the last flush at or before applied: all pushes before it (a capacity flush
    # comes before its own event's push), or through it (a drain)
    fl = qp.flushes
    done = cum[fl] - (qp.capacity_flush[fl] & qp.pushes[fl])
    j = np.searchsorted(ev[fl], at, side="right") - 1
    base = np.where(j >= 0, done[np.maximum(j, 0)], 0) if len(fl) else np.zeros(len(at), int)
    return upto - base
