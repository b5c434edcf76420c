"""The proof for lguest's shadow page tables (``demand``): no check finds a page wrong that
a native TLB could not still hold.

Takes a :class:`~replayer.engine.proofs._Proof` (the trace, the events the pass takes,
the queue's flushes) with the MMU check events and lguest's directory-cache size; gives
yes or no.  Times are composite, ``quarter * M + event`` (``M`` the trace's length plus
one), so that the operations one queue flush applies stay in their events' order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from replayer.engine.common import _H, PTE_UPD, PTE_UPD_D, SET_PMD, SET_PTE_AT, _cached
from replayer.engine.derived import _meaning, _pte_entries, _wide, fill_changes, loaded_spaces
from replayer.engine.proofs import _first_after, _tables_at_states, _Unproved
from replayer.mechanisms.batch import QueuePlan
from replayer.trace import hooks_in

if TYPE_CHECKING:
    from replayer.engine.proofs import _Proof

_UPDATES = [PTE_UPD, PTE_UPD_D]
_LEARNS = [SET_PTE_AT, SET_PMD]


class Shadowed:
    """lguest: a shadow it learns set_pte_at/set_pmd into, re-reads on flushes (the walk
    of an address, the loaded space, everything) and, for a directory not among the
    ``cache`` it keeps, at a CR3 load; in-place updates and allocations it is not told.

    An entry is wrong from a change the shadow missed (pte_update, an allocation's
    memset, a queued set_pte_at overtaken by a later change) to the next re-read
    covering it.  No check may find a wrong entry of the loaded directory, a wrong
    allocated table in the loaded space, or a wrong entry of a loaded table that a
    native TLB could not still hold: one covered by a TLB flush since it went wrong.
    (lguest is correct by the second clause: what it was not told waits for a flush.)

    ``trapped``: lguest without the PTE-update hooks, trapping every store to a table
    instead (``--without pteupdate --fallback trap``).  It then learns every store at once
    (none is queued, set_pte drops no shadow) and a store to a frame drops any cached
    directory of that frame; only the allocations' memsets go unseen.
    """

    def __init__(
        self,
        proof: _Proof,
        checks: np.ndarray,
        ev: np.ndarray,
        qp: QueuePlan,
        cache: int,
        trapped: bool = False,
    ) -> None:
        self.p, self.checks, self.ev, self.qp, self.cache = proof, checks, ev, qp, cache
        self.trapped = trapped
        tr = proof.trace
        self.h, self.n = tr.hook, tr.n
        self.M = tr.n + 1
        self.spaces = _cached(tr, "loaded_spaces", loaded_spaces)
        ent, val = _pte_entries(tr)
        s_idx = proof.s_idx
        self.s_e, self.s_v, self.s_h = _wide(ent[s_idx]), _wide(val[s_idx]), self.h[s_idx]
        self.s_t = self.at(4 * s_idx + 2, s_idx)
        self.s_a = self.applied(s_idx)
        self.learn = hooks_in(self.s_h, _LEARNS) | trapped
        self.inst = self.learn & (self.s_h == _H["set_pmd"]) & ((self.s_v & 0x81) == 1)

    def at(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The composite time of quarter ``q`` of event ``k``."""
        return q.astype(np.int64) * self.M + k

    def applied(self, k: np.ndarray) -> np.ndarray:
        """When lguest takes each event: at once, or (queued) at the next flush."""
        p = self.p
        return np.where(p.queued[k], self.at(4 * p.next_flush(k), k), self.at(4 * k + 2, k))

    def state(self, t: np.ndarray) -> np.ndarray:
        """The last event whose effects time ``t`` sees."""
        q = t // self.M
        return np.where(q % 4 >= 2, q // 4, q // 4 - 1)

    def holds(self) -> bool:
        """Whether no check can find a page wrong in lguest's shadow."""
        self._wrong()
        self._rereads()
        self._ends()
        return self._verdict()

    def _wrong(self) -> None:
        """Entries the shadow has wrong, from when: ``w_e`` (entry), ``w_s`` (from),
        ``w_l`` (from, for a native TLB's leeway); and allocations of frames that were
        never a directory (``fill_*``: the whole frame wrong)."""
        p, M = self.p, self.M
        s_idx, s_f, s_e, s_t = p.s_idx, p.s_f, self.s_e, self.s_t
        fill_k = np.nonzero(p.is_alloc)[0]
        fill_f = p.a0[fill_k]
        fill_t = self.at(4 * fill_k + 2, fill_k)
        f_key = np.sort(fill_f * M + fill_k)

        def fill_between(f: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
            """A fill of frame f at an event in (lo, hi)."""
            a = np.searchsorted(f_key, f * M + lo, side="right")
            b = np.searchsorted(f_key, f * M + hi, side="left")
            return b > a

        upd = hooks_in(self.s_h, _UPDATES) & (not self.trapped)
        changed, nxt = self._next_stores(upd, fill_between)

        # an allocation of a frame that is (or was) a directory: only the entries it
        # changes; of any other frame: the whole frame, to its next whole re-read
        changes = _cached(p.trace, "fill_changes", fill_changes)
        known = np.array([k in changes for k in fill_k.tolist()], dtype=bool)
        got = [changes[k] for k in fill_k[known].tolist()]
        counts = np.array([len(x) for x in got], dtype=np.int64)
        fz_k_a = np.repeat(fill_k[known], counts)
        fz_e_a = np.repeat(fill_f[known] * 1024, counts)
        if len(got):
            fz_e_a = fz_e_a + np.concatenate(got)
        fz_t = self.at(4 * fz_k_a + 2, fz_k_a)
        self.fill_k, self.fill_f, self.fill_t = fill_k[~known], fill_f[~known], fill_t[~known]
        s_a, learn, queued = self.s_a, self.learn, p.queued
        stale = learn & queued[s_idx]
        stale &= self.at(4 * nxt + 2, nxt) < s_a
        look = learn & queued[s_idx] & ~stale
        stale[look] = fill_between(s_f[look], s_idx[look], s_a[look] // M // 4 + 1)
        self.stale = stale
        self.w_e = np.concatenate([s_e[upd & changed], s_e[stale], fz_e_a])
        self.w_s = np.concatenate([s_t[upd & changed], s_a[stale], fz_t])
        self.w_l = np.concatenate([s_t[upd & changed], s_t[stale], fz_t])

    def _next_stores(
        self, upd: np.ndarray, fill_between: Callable[..., np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per store: whether it is one of ``upd`` that changes what its entry means (or
        a fill of its frame came since the entry's last store), and the event of the
        entry's next store (the trace's length if none).  Apart from :meth:`_wrong`, so
        that its temporaries go before the rest of the proof is worked out; the previous
        store's event and value are taken for ``upd``'s stores only (boot has 10 M
        stores: each array a store long is 80 MiB)."""
        n, s_e, s_idx, s_v = self.n, self.s_e, self.p.s_idx, self.s_v
        o = np.argsort(s_e, kind="stable")  # by entry, in time within one
        same_next = s_e[o[:-1]] == s_e[o[1:]]
        ks = s_idx[o]
        nxt = np.full(len(o), n, dtype=np.int64)
        nxt[o[:-1]] = ks[1:]
        nxt[o[:-1][~same_next]] = n  # an entry's last store: none after it
        u = np.flatnonzero(upd[o])  # only pte_update's change matters
        first = ~np.concatenate(([False], same_next))[u]  # no store to the entry before
        del same_next
        up = np.maximum(u - 1, 0)  # the store before, in the entry's order
        ou = o[u]
        chg = _meaning(s_v[ou])
        chg = first | (chg != _meaning(np.where(first, 0, s_v[o[up]])))
        # the rest only where the meaning stayed: whether a fill of the frame came between
        # (each array a store long is 80 MiB on boot: none made for all the stores)
        lk = np.flatnonzero(~chg)
        prev_k = np.where(first[lk], -1, ks[up[lk]])
        chg[lk] = fill_between(s_e[ou[lk]] >> 10, prev_k, ks[u[lk]])
        changed = np.zeros(len(o), dtype=bool)
        changed[ou] = chg
        return changed, nxt

    def _rereads(self) -> None:
        """What lguest re-reads, when: everything (``g_t``), whole frames (``fr_*``: the
        space at a CR3 load that misses its directory cache or a user flush, a table a
        set_pmd installs) and entries (``en_*``: set_pte_at/set_pmd learning the value, a
        flush_tlb_single's walk)."""
        p, h = self.p, self.h
        s_v, s_a, learn, inst = self.s_v, self.s_a, self.learn, self.inst
        fl_k = np.nonzero(p.in_loop & (h == _H["flush_tlb_kernel"]))[0]
        setpte = (self.s_h == _H["set_pte"]) & (not self.trapped)  # FLUSH_TLB(1)
        self.g_t = np.sort(np.concatenate([self.applied(fl_k), s_a[setpte]]))
        fu_k = np.nonzero(p.in_loop & (h == _H["flush_tlb_user"]))[0]
        rs_t = np.concatenate([self._cache_misses(), self.applied(fu_k)])
        rs_st = self.state(rs_t)
        wrong_f = np.concatenate([self.w_e >> 10, self.fill_f])  # only their re-reads matter
        spells = self.spaces.spells
        q_i, q_tab = _tables_at_states(spells[np.isin(spells[:, 0], wrong_f)], rs_st)
        fr_f = np.concatenate([p.pd_at(rs_st), q_tab, s_v[inst] >> 12])
        fr_t = np.concatenate([rs_t, rs_t[q_i], s_a[inst]])
        en_e = [self.s_e[learn & ~self.stale]]
        en_t = [s_a[learn & ~self.stale]]
        self._walks(en_e, en_t)
        en_e_a, en_t_a = np.concatenate(en_e), np.concatenate(en_t)
        mine = np.isin(en_e_a, self.w_e)
        self.en_e, self.en_t = en_e_a[mine], en_t_a[mine]
        mine = np.isin(fr_f, wrong_f)
        self.fr_f, self.fr_t = fr_f[mine], fr_t[mine]

    def _cache_misses(self) -> np.ndarray:
        """When a CR3 load misses lguest's cache of shadow directories (an LRU of
        ``cache`` entries; a directory frame taken as a table leaves it)."""
        p, s_f, s_a = self.p, self.p.s_f, self.s_a
        cr3_pd = p.cr3_pd
        cr3_t = self.applied(p.cr3)
        # a store lguest learns into a frame: set_pte_at told, or any store trapped
        at_pte = (self.s_h != _H["set_pmd"]) if self.trapped else (self.s_h == _H["set_pte_at"])
        pops_f = np.concatenate([s_f[at_pte], self.s_v[self.inst] >> 12])
        pops_t = np.concatenate([s_a[at_pte], s_a[self.inst]])
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
                while len(lru) > self.cache:
                    lru.popitem(last=False)
        return np.asarray(miss_t, dtype=np.int64)

    def _walks(self, en_e: list[np.ndarray], en_t: list[np.ndarray]) -> None:
        """Add the entries a flush_tlb_single's walk re-reads (the directory entry and the
        table entry of its address), and when."""
        p, M, s_e, s_idx = self.p, self.M, self.s_e, self.p.s_idx
        self.il_k = il_k = np.nonzero(p.in_loop & (self.h == _H["flush_tlb_single"]))[0]
        if not len(il_k):
            return
        il_t = self.applied(il_k)
        queued = p.queued
        addr = p.a0[il_k]
        i, j = addr >> 22, (addr >> 12) & 1023
        pd_k = p.pd_at(il_k)
        tab = np.array([self.spaces.at_invlpg.get(k, -1) for k in il_k.tolist()], dtype=np.int64)
        # a queued one re-reads what the walk is when it lands: only if unchanged
        moved = queued[il_k] & (p.pd_at(self.state(il_t)) != pd_k)
        pde = pd_k * 1024 + i
        pde_st = np.isin(s_e, pde[queued[il_k]])
        if pde_st.any():
            o2 = np.lexsort((s_idx[pde_st], s_e[pde_st]))
            ke, kk = s_e[pde_st][o2], s_idx[pde_st][o2]
            a = np.searchsorted(ke * M + kk, pde * M + il_k, side="right")
            b = np.searchsorted(ke * M + kk, pde * M + self.state(il_t), side="right")
            moved |= queued[il_k] & (b > a)
        ok = (pd_k >= 0) & ~moved
        en_e.append(pde[ok])
        en_t.append(il_t[ok])
        ok &= tab >= 0
        en_e.append((tab * 1024 + j)[ok])
        en_t.append(il_t[ok])

    def _ends(self) -> None:
        """A wrong spell ends at the first re-read after it starts (the wrong entries'
        spells and the unseen allocations' asked together: one sort of each re-read kind)."""
        g_t, w_e, w_s = self.g_t, self.w_e, self.w_s
        self.w_f = w_e >> 10
        f = np.concatenate([self.w_f, self.fill_f])
        t = np.concatenate([w_s, self.fill_t])
        every = _first_after(np.zeros(len(g_t), np.int64), g_t, np.zeros(len(t), np.int64), t)
        ends = np.minimum(every, _first_after(self.fr_f, self.fr_t, f, t))
        n = len(w_s)
        self.w_end = np.minimum(ends[:n], _first_after(self.en_e, self.en_t, w_e, w_s))
        self.a_end = ends[n:]

    def _verdict(self) -> bool:
        """The checks, each where it is made, against the wrong spells in the loaded space
        then; a wrong entry of a loaded table passes only if no TLB flush could have
        covered it since it went wrong."""
        p, M, n, h = self.p, self.M, self.n, self.h
        c_q = np.sort(p.check_times(self.checks, self.ev, self.qp))
        try:
            # an allocation's memset the shadow missed, in the loaded space at a check
            if len(p.loaded_checks(self.fill_f, self.fill_t // M, self.a_end // M, c_q)[0]):
                return False
            wi, ci, on_pd = p.loaded_checks(self.w_f, self.w_s // M, self.w_end // M, c_q)
        except _Unproved:
            return False
        if not len(wi):
            return True
        if on_pd.any():
            return False  # an entry of the loaded directory itself
        # a TLB flush covering the entry since it went wrong: CR3 loads and full flushes
        full = [_H["write_cr3"], _H["flush_tlb_user"], _H["flush_tlb_kernel"]]
        full_k = np.nonzero(p.in_loop & np.isin(h, full))[0]
        full_t = self.at(4 * full_k + 2, full_k)
        lo_t, hi_t = self.w_l[wi], c_q[ci] * M + n  # a check comes after its quarter's ops
        if (np.searchsorted(full_t, hi_t) > np.searchsorted(full_t, lo_t, side="right")).any():
            return False
        # ... and invlpg of an address with the entry's index (any table: a bound)
        il_k = self.il_k
        if len(il_k):
            span = 4 * M * (n + 2)
            j_key = np.sort(((p.a0[il_k] >> 12) & 1023) * span + self.at(4 * il_k + 2, il_k))
            jj = (self.w_e[wi] & 1023) * span
            hits = np.searchsorted(j_key, jj + hi_t)
            if (hits > np.searchsorted(j_key, jj + lo_t, side="right")).any():
                return False
        return True
