"""The lean proofs: whether no MMU check can find a page wrong in a backend's copy.

Takes the trace, the events the sequential pass would take and the queue's flush
plan; gives yes or no per kind of copy -- ``notified`` (VMI's shadow, Xen's
validated tables), ``discovered`` (no allocation hooks: tables found at CR3 loads and
installs) and ``shadowed`` (lguest) -- decided over the whole trace at once with
numpy.  A proof may say no where no check would find anything (the run is then
simulated by :mod:`replayer.engine.sequential`); it must not say yes where one would.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from replayer.engine.common import _ALLOCS, _H, _RELEASES, _cached
from replayer.engine.derived import _meaning, _pte_entries, fill_changes, loaded_spaces
from replayer.mechanisms.batch import (
    QueuePlan,
)
from replayer.trace import (
    Trace,
)


class _Proof:
    """Whether no MMU check can find a page wrong in a backend's copy of the page tables
    (:meth:`_Replay._lean`), decided over the whole trace at once; one method per kind of
    copy.  It may say no where a check would find nothing (the run is then simulated);
    it must not say yes where one would find something.

    Times are in quarters of an event: ``4k`` a flush applying the queue before event
    ``k``, ``4k+1`` checks deferred to that flush, ``4k+2`` event ``k`` itself (the guest's
    store, what the backend does at once), ``4k+3`` a check right after it
    (:meth:`shadowed` also orders the operations one flush applies by their events).
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
        self.s_f = ent[self.s_idx] >> 10
        self.s_q = queued[self.s_idx]
        self.a0 = trace.arg0.astype(np.int64)
        self.is_alloc = in_loop & np.isin(h, _ALLOCS)
        self.cr3 = np.nonzero(in_loop & (h == _H["write_cr3"]))[0]
        self.cr3_pd = self.a0[self.cr3] >> 12

    def flushes_upto(self, x: np.ndarray) -> np.ndarray:
        """Flushes at or before each event."""
        return np.searchsorted(self.flush_at, x, side="right")

    def next_flush(self, x: np.ndarray) -> np.ndarray:
        """The first flush after each event (the trace's length: the final drain)."""
        fa, n = self.flush_at, self.trace.n
        if not len(fa):
            return np.full(len(x), n, dtype=np.int64)
        i = self.flushes_upto(x)
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
        r_idx = np.nonzero(in_loop & np.isin(h, _ALLOCS + _RELEASES))[0]
        r_f = self.a0[r_idx]
        order = np.lexsort((r_idx, r_f))
        r_idx, r_f = r_idx[order], r_f[order]
        r_alloc = np.isin(h[r_idx], _ALLOCS)
        r_q = queued[r_idx]
        r_key = r_f * span + r_idx
        pos = np.searchsorted(r_key, s_f * span + s_idx) - 1
        ok = pos >= 0
        ok[ok] = r_f[pos[ok]] == s_f[ok]
        if not ok.all() or not r_alloc[pos].all():
            return False  # a store to a frame never allocated, or released
        late = ~s_q & r_q[pos] & (flushes_upto(s_idx) == flushes_upto(r_idx[pos]))
        nxt = np.minimum(pos + 1, max(len(r_idx) - 1, 0))
        again = (pos + 1 < len(r_idx)) & (r_f[nxt] == s_f)
        late |= s_q & again & (r_idx[nxt] < next_flush(s_idx))
        same = r_f[1:] == r_f[:-1]
        overtaken = same & r_q[:-1] & ~r_q[1:]
        overtaken &= flushes_upto(r_idx[1:]) == flushes_upto(r_idx[:-1])
        if late.any() or overtaken.any():
            return False  # applied out of the guest's order
        c_idx = np.nonzero(in_loop & (h == _H["alloc_pd_clone"]))[0]
        if not len(c_idx):
            return True
        # the backend copies its own copy of the source: no update of the source may be
        # queued when the clone is applied, nor (a queued clone) land before it is
        keys = np.concatenate([s_f * span + s_idx, r_key])
        touch = np.sort(keys)
        touch_q = np.sort(keys[np.concatenate([s_q, r_q])])
        i = flushes_upto(c_idx)
        lo = np.full(len(c_idx), -1, dtype=np.int64)
        if len(self.flush_at):
            lo = np.where(i > 0, self.flush_at[np.maximum(i - 1, 0)], -1)
        src = tr.arg1[c_idx].astype(np.int64) * span

        def between(keys: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.searchsorted(keys, src + b, side="left") - np.searchsorted(
                keys, src + a, side="right"
            )

        busy = between(touch_q, lo, c_idx)
        busy += queued[c_idx] * between(touch, c_idx, next_flush(c_idx))
        return not (busy > 0).any()  # else a clone's source changes while updates fly

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
        tr, in_loop = self.trace, self.in_loop
        h, n = tr.hook, tr.n
        span = 4 * n + 8
        spaces = _cached(tr, "loaded_spaces", loaded_spaces)
        # discoveries: (frame, time, event)
        cr3 = self.cr3
        d_f: list[int] = []
        d_k: list[int] = []
        for k in cr3.tolist():
            found = {int(tr.arg0[k]) >> 12, *spaces.at_cr3.get(k, ())}
            d_f.extend(found)
            d_k.extend([k] * len(found))
        ent, val = _pte_entries(tr)
        inst = in_loop & (h == _H["set_pmd"]) & (ent >= 0) & ((val & 0x81) == 1)
        ik = np.nonzero(inst)[0]
        disc_f = np.concatenate([np.asarray(d_f, dtype=np.int64), val[ik] >> 12])
        disc_k = np.concatenate([np.asarray(d_k, dtype=np.int64), ik])
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

        new = ~registered(disc_f, 4 * disc_k + 2)
        np.add.at(scans, disc_k[new], 1)
        faults[fill_k[registered(fill_f, 4 * fill_k + 2)]] = True
        # wrong from a fill, or a store applied to a frame not kept, to the next discovery
        s_idx, s_f = self.s_idx, self.s_f
        applied = np.where(self.s_q, 4 * self.next_flush(s_idx), 4 * s_idx + 2)
        lost = ~registered(s_f, applied)
        w_f = np.concatenate([fill_f, s_f[lost]])
        w_t = np.concatenate([4 * fill_k + 2, applied[lost]])
        i = np.searchsorted(dk, w_f * span + w_t, side="right")
        nxt = dk[np.minimum(i, len(dk) - 1)] if len(dk) else np.zeros(len(w_f), np.int64)
        w_end = np.where((i < len(dk)) & (nxt // span == w_f), nxt % span, span - 1)
        # one interval per (frame, end): from its first start
        order = np.lexsort((w_t, w_end, w_f))
        w_f, w_t, w_end = w_f[order], w_t[order], w_end[order]
        first = np.ones(len(w_f), dtype=bool)
        first[1:] = (w_f[1:] != w_f[:-1]) | (w_end[1:] != w_end[:-1])
        w_f, w_t, w_end = w_f[first], w_t[first], w_end[first]
        if not len(w_f):
            return True
        when = np.sort(self.check_times(checks, ev, qp))
        try:
            wi, _, _ = self.loaded_checks(w_f, w_t, w_end, when)
        except _Unproved:
            return False
        return not len(wi)

    def shadowed(self, checks: np.ndarray, ev: np.ndarray, qp: QueuePlan, cache: int) -> bool:
        """lguest: a shadow it learns set_pte_at/set_pmd into, re-reads on flushes (the walk
        of an address, the loaded space, everything) and, for a directory not among the
        ``cache`` it keeps, at a CR3 load; in-place updates and allocations it is not told.

        An entry is wrong from a change the shadow missed (pte_update, an allocation's
        memset, a queued set_pte_at overtaken by a later change) to the next re-read
        covering it.  No check may find a wrong entry of the loaded directory, a wrong
        allocated table in the loaded space, or a wrong entry of a loaded table that a
        native TLB could not still hold: one covered by a TLB flush since it went wrong.
        (lguest is correct by the second clause: what it was not told waits for a flush.)
        """
        tr, in_loop, queued = self.trace, self.in_loop, self.queued
        h, n = tr.hook, tr.n
        ent, val = _pte_entries(tr)
        spaces = _cached(tr, "loaded_spaces", loaded_spaces)
        M = n + 1  # composite times: quarter * M + event (ops of one flush in order)

        def at(q: np.ndarray, k: np.ndarray) -> np.ndarray:
            return q.astype(np.int64) * M + k

        def applied(k: np.ndarray) -> np.ndarray:
            return np.where(queued[k], at(4 * self.next_flush(k), k), at(4 * k + 2, k))

        def state(t: np.ndarray) -> np.ndarray:  # the last event whose effects t sees
            q = t // M
            return np.where(q % 4 >= 2, q // 4, q // 4 - 1)

        cr3, cr3_pd, pd_at = self.cr3, self.cr3_pd, self.pd_at

        s_idx, s_f = self.s_idx, self.s_f
        s_e, s_v, s_h = ent[s_idx], val[s_idx], h[s_idx]
        s_t = at(4 * s_idx + 2, s_idx)
        fill_k = np.nonzero(self.is_alloc)[0]
        fill_f = self.a0[fill_k]
        fill_t = at(4 * fill_k + 2, fill_k)
        fill_order = np.argsort(fill_f * M + fill_k, kind="stable")
        f_key = (fill_f * M + fill_k)[fill_order]

        def fill_between(f: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
            """A fill of frame f at an event in (lo, hi)."""
            a = np.searchsorted(f_key, f * M + lo, side="right")
            b = np.searchsorted(f_key, f * M + hi, side="left")
            return b > a

        upd = np.isin(s_h, [_H["pte_update"], _H["pte_update_defer"]])
        learn = np.isin(s_h, [_H["set_pte_at"], _H["set_pmd"]])
        # each store's previous and next store to the same entry
        o = np.argsort(s_e, kind="stable")
        es, ks, vs = s_e[o], s_idx[o], s_v[o]
        same_prev = np.zeros(len(o), dtype=bool)
        same_prev[1:] = es[1:] == es[:-1]
        prev_k = np.full(len(o), -1, dtype=np.int64)
        prev_k[1:] = ks[:-1]
        prev_v = np.zeros(len(o), dtype=np.int64)
        prev_v[1:] = vs[:-1]
        next_k = np.full(len(o), n, dtype=np.int64)
        next_k[:-1] = np.where(es[:-1] == es[1:], ks[1:], n)
        u = np.flatnonzero(upd[o])  # only pte_update's change matters
        chg = ~same_prev[u] | (_meaning(vs[u]) != _meaning(prev_v[u]))
        look = ~chg
        chg[look] = fill_between(es[u][look] >> 10, prev_k[u][look], ks[u][look])
        changed = np.zeros(len(o), dtype=bool)
        changed[o[u]] = chg
        nxt = np.empty(len(o), dtype=np.int64)
        nxt[o] = next_k

        # an allocation of a frame that is (or was) a directory: only the entries it
        # changes; of any other frame: the whole frame, to its next whole re-read
        changes = _cached(tr, "fill_changes", fill_changes)
        known = np.array([k in changes for k in fill_k.tolist()], dtype=bool)
        got = [changes[k] for k in fill_k[known].tolist()]
        counts = np.array([len(x) for x in got], dtype=np.int64)
        fz_k_a = np.repeat(fill_k[known], counts)
        fz_e_a = np.repeat(fill_f[known] * 1024, counts)
        if len(got):
            fz_e_a = fz_e_a + np.concatenate(got)
        fz_t = at(4 * fz_k_a + 2, fz_k_a)
        fill_k, fill_f, fill_t = fill_k[~known], fill_f[~known], fill_t[~known]
        s_a = applied(s_idx)
        stale = learn & queued[s_idx]
        stale &= at(4 * nxt + 2, nxt) < s_a
        look = learn & queued[s_idx] & ~stale
        stale[look] = fill_between(s_f[look], s_idx[look], s_a[look] // M // 4 + 1)
        # wrong entries: (entry, from, leeway from)
        w_e = np.concatenate([s_e[upd & changed], s_e[stale], fz_e_a])
        w_s = np.concatenate([s_t[upd & changed], s_a[stale], fz_t])
        w_l = np.concatenate([s_t[upd & changed], s_t[stale], fz_t])

        # re-reads: everything; frames; entries
        fl_k = np.nonzero(in_loop & (h == _H["flush_tlb_kernel"]))[0]
        setpte = s_h == _H["set_pte"]
        g_t = np.sort(np.concatenate([applied(fl_k), s_a[setpte]]))
        # CR3 loads re-read the space unless the directory is among the cached
        cr3_t = applied(cr3)
        inst = learn & (s_h == _H["set_pmd"]) & ((s_v & 0x81) == 1)
        pops_f = np.concatenate([s_f[s_h == _H["set_pte_at"]], s_v[inst] >> 12])
        pops_t = np.concatenate([s_a[s_h == _H["set_pte_at"]], s_a[inst]])
        # a pop matters only as the first of its frame after a load of that frame
        keep = np.isin(pops_f, cr3_pd)
        pops_f, pops_t = pops_f[keep], pops_t[keep]
        loads = _first_after(pops_f, pops_t, cr3_pd, cr3_t)  # each load's next pop
        big = np.iinfo(np.int64).max
        firsts = np.unique(np.stack([cr3_pd, loads], axis=1)[loads < big], axis=0)
        pops_f, pops_t = firsts[:, 0], firsts[:, 1]
        evs = sorted(
            [(t, 1, f) for t, f in zip(cr3_t.tolist(), cr3_pd.tolist(), strict=True)]
            + [(t, 0, f) for t, f in zip(pops_t.tolist(), pops_f.tolist(), strict=True)]
        )
        lru: OrderedDict[int, None] = OrderedDict()
        miss_t: list[int] = []
        for t, is_cr3, f in evs:
            if not is_cr3:
                lru.pop(f, None)
            elif f in lru:
                lru.move_to_end(f)
            else:
                miss_t.append(t)
                lru[f] = None
                while len(lru) > cache:
                    lru.popitem(last=False)
        fu_k = np.nonzero(in_loop & (h == _H["flush_tlb_user"]))[0]
        rs_t = np.concatenate([np.asarray(miss_t, dtype=np.int64), applied(fu_k)])
        rs_st = state(rs_t)
        wrong_f = np.concatenate([w_e >> 10, fill_f])  # only their re-reads matter
        q_i, q_tab = _tables_at_states(spaces.spells[np.isin(spaces.spells[:, 0], wrong_f)], rs_st)
        fr_f = np.concatenate([pd_at(rs_st), q_tab, s_v[inst] >> 12])
        fr_t = np.concatenate([rs_t, rs_t[q_i], s_a[inst]])
        # entries: set_pte_at/set_pmd learning the current value; a flush_tlb_single's walk
        en_e = [s_e[learn & ~stale]]
        en_t = [s_a[learn & ~stale]]
        il_k = np.nonzero(in_loop & (h == _H["flush_tlb_single"]))[0]
        il_t = applied(il_k)
        if len(il_k):
            addr = self.a0[il_k]
            i, j = addr >> 22, (addr >> 12) & 1023
            pd_k = pd_at(il_k)
            tab = np.array([spaces.at_invlpg.get(k, -1) for k in il_k.tolist()], dtype=np.int64)
            # a queued one re-reads what the walk is when it lands: only if unchanged
            moved = queued[il_k] & (pd_at(state(il_t)) != pd_k)
            pde = pd_k * 1024 + i
            pde_st = np.isin(s_e, pde[queued[il_k]])
            if pde_st.any():
                o2 = np.lexsort((s_idx[pde_st], s_e[pde_st]))
                ke, kk = s_e[pde_st][o2], s_idx[pde_st][o2]
                a = np.searchsorted(ke * M + kk, pde * M + il_k, side="right")
                b = np.searchsorted(ke * M + kk, pde * M + state(il_t), side="right")
                moved |= queued[il_k] & (b > a)
            ok = (pd_k >= 0) & ~moved
            en_e.append(pde[ok])
            en_t.append(il_t[ok])
            ok &= tab >= 0
            en_e.append((tab * 1024 + j)[ok])
            en_t.append(il_t[ok])
        en_e_a, en_t_a = np.concatenate(en_e), np.concatenate(en_t)
        mine = np.isin(en_e_a, w_e)
        en_e_a, en_t_a = en_e_a[mine], en_t_a[mine]
        mine = np.isin(fr_f, wrong_f)
        fr_f, fr_t = fr_f[mine], fr_t[mine]

        # a wrong spell ends at the first re-read after it starts
        def next_global(t: np.ndarray) -> np.ndarray:
            return _first_after(np.zeros(len(g_t), np.int64), g_t, np.zeros(len(t), np.int64), t)

        w_f = w_e >> 10
        w_end = np.minimum(next_global(w_s), _first_after(fr_f, fr_t, w_f, w_s))
        w_end = np.minimum(w_end, _first_after(en_e_a, en_t_a, w_e, w_s))
        a_end = np.minimum(next_global(fill_t), _first_after(fr_f, fr_t, fill_f, fill_t))

        # the checks, each where it is made, and the loaded space then
        c_q = np.sort(self.check_times(checks, ev, qp))
        try:
            # an allocation's memset the shadow missed, in the loaded space at a check
            if len(self.loaded_checks(fill_f, fill_t // M, a_end // M, c_q)[0]):
                return False
            wi, ci, on_pd = self.loaded_checks(w_f, w_s // M, w_end // M, c_q)
        except _Unproved:
            return False
        if not len(wi):
            return True
        if on_pd.any():
            return False  # an entry of the loaded directory itself
        # a TLB flush covering the entry since it went wrong: CR3 loads and full flushes
        full_k = np.nonzero(
            in_loop & np.isin(h, [_H["write_cr3"], _H["flush_tlb_user"], _H["flush_tlb_kernel"]])
        )[0]
        full_t = at(4 * full_k + 2, full_k)
        lo_t, hi_t = w_l[wi], c_q[ci] * M + n  # a check comes after its quarter's ops
        if (np.searchsorted(full_t, hi_t) > np.searchsorted(full_t, lo_t, side="right")).any():
            return False
        # ... and invlpg of an address with the entry's index (any table: a bound)
        if len(il_k):
            j_key = ((self.a0[il_k] >> 12) & 1023) * (4 * M * (n + 2)) + at(4 * il_k + 2, il_k)
            j_key = np.sort(j_key)
            jj = (w_e[wi] & 1023) * (4 * M * (n + 2))
            if (
                np.searchsorted(j_key, jj + hi_t) > np.searchsorted(j_key, jj + lo_t, side="right")
            ).any():
                return False
        return True


def _first_after(kx: np.ndarray, kt: np.ndarray, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each (x, t): the least time in ``kt`` after t paired with x in ``kx`` (the int64
    maximum where there is none)."""
    big = np.iinfo(np.int64).max
    if not len(kx):
        return np.full(len(x), big, dtype=np.int64)
    times = np.sort(np.concatenate([kt, t]))
    times = times[np.append(True, times[1:] != times[:-1])]
    span = len(times) + 1
    keys = np.sort(kx * span + np.searchsorted(times, kt))
    pos = np.searchsorted(keys, x * span + np.searchsorted(times, t), side="right")
    got = keys[np.minimum(pos, len(keys) - 1)]
    ok = (pos < len(keys)) & (got // span == x)
    return np.where(ok, times[np.minimum(got % span, len(times) - 1)], big)


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
