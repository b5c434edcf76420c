"""Runs of entry stores the sequential pass takes together, and the queue's flush.

Takes the sequential pass's state (:class:`replayer.engine.sequential._Simulation`) at
an entry store; gives the position after the run of stores it applied to both copies
of the tables at once, with their cost rows noted (the queued ones and Xen's trapped
stores into another address space, column-wise at the end of the pass).  A flush of
the backend's queue likewise applies consecutive entries of one kind together
(:meth:`StoreRuns.apply_batch`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from replayer.engine.common import _ACT, _NHOOKS, _PTE_HOOKS, SET_PMD, SET_PTE, SET_PTE_AT
from replayer.mechanisms import bulk
from replayer.mechanisms.batch import LAZY_CPU, LAZY_FLUSH, LAZY_MMU, LAZY_NONE, BatchQueue
from replayer.mechanisms.coherence import ViewPair
from replayer.mechanisms.pagetables import GuestMMU
from replayer.trace import Trace


class StoreRuns:
    """The runs-of-stores half of the sequential pass (attributes set by its setup)."""

    trace: Trace
    queue: BatchQueue | None
    guest: GuestMMU
    pair: ViewPair
    lru: OrderedDict[int, None]
    batchable_ids: dict[int, Any]
    cps: dict[int, Any]
    lazy: int
    mirror: bool
    is_xen: bool
    is_lguest: bool
    pte_hook: bool
    pte_none: bool
    pte_trap: bool
    trap_alloc: bool
    wp_t: tuple[int, int, int, int, int]
    hc0: list[int]
    idx_l: list[int]
    off: int
    bounds: np.ndarray
    store_hook: np.ndarray
    e_a: np.ndarray
    h_a: np.ndarray
    v_a: np.ndarray
    idx_a: np.ndarray
    h_l: list[int]
    e_l: list[int]
    v_l: list[int]
    cur_tables_cache: list[Any]

    def _store_runs(self, loop: np.ndarray) -> None:
        """Where each run of entry stores ends (a run ends at a checkpoint), and what may
        be taken in one (:meth:`stores`)."""
        cps = self.cps
        n_loop = len(loop)
        store_hook = np.zeros(_NHOOKS + 1, dtype=bool)
        store_hook[_PTE_HOOKS] = True
        is_store = store_hook[self.h_a]
        # a run ends before the next event that is no store, and after a checkpoint
        bound = ~is_store
        if cps:
            cp = np.fromiter(cps, dtype=np.int64, count=len(cps))
            at = np.searchsorted(loop, cp)
            found = at < n_loop
            at = at[found][loop[at[found]] == cp[found]]
            bound[at[at + 1 < n_loop] + 1] = True
        # where a run from each position ends is looked up as the loop's window needs it
        self.bounds = np.append(np.flatnonzero(bound), n_loop)
        self.store_hook = store_hook
        self.bulk_ok = not self.mirror
        # stores that always take the loop: do not try a run from them
        self.loop_only = {SET_PMD} if self.is_lguest and self.pte_hook else set()
        self.q_by_mode = {
            mode: frozenset(b for b, modes in self.batchable_ids.items() if mode in modes)
            for mode in (LAZY_NONE, LAZY_MMU, LAZY_CPU, LAZY_FLUSH)
        }
        # the same, as masks over hook ids, and each hook's hypercalls (stores_array)
        self.q_masks: dict[int, np.ndarray] = {}
        for mode, hooks in self.q_by_mode.items():
            self.q_masks[mode] = np.zeros(_NHOOKS + 1, dtype=bool)
            if self.queue is not None:
                self.q_masks[mode][list(hooks)] = True
        self.hc0_a = np.asarray(self.hc0, dtype=np.int64)
        # events whose cost is the queued call's, and Xen's trapped stores: runs of them
        # events whose cost is the queued call's, and Xen's trapped stores: one by one
        # and a run at a time
        self.q_ks: list[int] = []
        self.wp_ks: list[int] = []
        self.q_runs: list[np.ndarray] = []
        self.wp_runs: list[np.ndarray] = []
        self.capacity = self.queue.capacity if self.queue is not None else 0

    def window(self, pos: int) -> None:
        """Make the loop's column lists start at position ``pos`` (the simulation's)."""
        raise NotImplementedError

    def cur_tables(self) -> frozenset[int]:
        """The tables the guest's loaded directory names (cached per directory version)."""
        cache = self.cur_tables_cache
        pd = self.guest.pd
        if pd is None:
            return frozenset()
        v = self.pair.pver.get(pd, 0)
        if cache[1] != pd or cache[2] != v:
            cache[1], cache[2] = pd, v
            cache[3] = frozenset(self.pair.guest_tables(pd))
        return cache[3]

    def learn_run(self, es: list[int], vs: list[int]) -> None:
        """lguest's queued set_pte_at, a run at a time (lguest_pte for each)."""
        for e in es:
            self.lru.pop(e >> 10, None)
        self.pair.learn_write_many(es, vs)

    def apply_batch(self, entries: list[Any]) -> None:
        """The queue's flush: entries are a flat entry (the backend takes the guest's
        value), an (entry, value) lguest learns, or a callable; consecutive ones of a kind
        are applied together."""
        pair = self.pair
        run: list[int] = []
        les: list[int] = []
        lvs: list[int] = []
        for op in entries:
            t = type(op)
            if t is int:
                if les:
                    self.learn_run(les, lvs)
                    les, lvs = [], []
                run.append(op)
                continue
            if run:
                pair.adopt(run)
                run = []
            if t is tuple:
                les.append(op[0])
                lvs.append(op[1])
                continue
            if les:
                self.learn_run(les, lvs)
                les, lvs = [], []
            op()
        if run:
            pair.adopt(run)
        if les:
            self.learn_run(les, lvs)

    # ------------------------------------------------------------ runs of stores
    # Runs of entry stores (no other stateful event between them) are taken together
    # where each store only needs the guest's and the backend's copies updated and its
    # cost noted: the stores are classified one by one as below, then applied a run of
    # one kind at a time.  A store that needs more (a flush, a directory entry of the
    # loaded space, lguest's shadow, a discovered table) ends the run and goes through
    # the loop.  A run ends at a checkpoint.

    def apply_run(
        self, act: int, es: list[int] | np.ndarray, vs: list[int] | np.ndarray, qadd: list[Any]
    ) -> None:
        """Apply a run of stores of one kind: act 0, the guest stores, the backend is not
        told now; 1, the same, the update queued (diff waits for the flush); 2, the
        backend learns the store at once; 3, each store, then every shadow re-read (after
        the last, all of them are)."""
        pair = self.pair
        if act == 3:
            pair.guest_write_many(es, vs)
            pair.resync_all()
        elif act == 0:
            pair.guest_write_many(es, vs)
        elif act == 1:
            pair.guest_write_queued_many(es, vs)
        else:
            pair.write_both_many(es, vs)
        if qadd:
            self.queue.entries.extend(qadd)  # type: ignore[union-attr]

    def _lguest_kind(self, h: int, v: int, queued: bool) -> int:
        """How lguest takes a store in a run (kinds as in :meth:`stores`; -1: not in a
        run)."""
        if h == SET_PMD:
            if self.pte_hook or v & 1 and not v & 0x80:
                return -1  # the shadow table under the entry is dropped
            return 2
        if self.pte_trap:
            return 4
        if h == SET_PTE:
            return -1 if queued else 5  # FLUSH_TLB(1) at once: every shadow dropped
        if h == SET_PTE_AT:
            return 3 if queued else 4
        return 0  # pte_update: lguest is not told; the flush resyncs

    def stores(self, pos0: int, end: int) -> int:
        """Take the stores at loop positions [pos0, end) that need nothing more; return
        the position of the first one not taken (long runs: :meth:`stores_array`).

        Kinds: 0 guest only, 1 queued (update applied at the flush), 2 both at once, 3
        guest now, lguest queued to learn the value, 4 both at once, lguest, 5 guest now,
        lguest drops every shadow at once.
        """
        if end - pos0 >= bulk.VEC_MIN:
            return self.stores_array(pos0, end)
        if end - self.off > len(self.idx_l):
            self.window(pos0)  # the run goes past the lists (only where VEC_MIN is raised)
        queue, e_l, h_l, v_l, idx_l = self.queue, self.e_l, self.h_l, self.v_l, self.idx_l
        off = self.off
        qh = self.q_by_mode.get(self.lazy, frozenset()) if queue is not None else frozenset()
        qn = len(queue) if queue is not None else 0
        gpd = self.guest.pd
        vpd = None if self.pair.view_cr3 is None else self.pair.view_cr3 >> 12
        xen_hook = self.is_xen and self.pte_hook
        # the loaded directory does not change within a run (a store to it ends one)
        loaded = self.cur_tables() if xen_hook else frozenset()
        pte_none, pte_trap, is_lguest = self.pte_none, self.pte_trap, self.is_lguest
        run_act = -1
        es: list[int] = []
        vs: list[int] = []
        qadd: list[Any] = []
        j = pos0
        while j < end:
            e = e_l[j - off]
            if e < 0:
                j += 1  # pte_update with nothing observed
                continue
            pfn = e >> 10
            if pfn in (gpd, vpd):
                break  # references of the loaded space change
            h, v = h_l[j - off], v_l[j - off]
            other = xen_hook and h == SET_PTE_AT and pfn not in loaded
            queued = not other and h in qh
            if queued:
                if qn >= self.capacity:
                    break
            elif queue is not None and qn and (self.wp_t[3] if other else self.hc0[h]) > 0:
                break
            if pte_none:
                kind = 0
            elif is_lguest:
                kind = self._lguest_kind(h, v, queued)
                if kind < 0:
                    break
            elif pte_trap or other:
                kind = 2
            elif self.trap_alloc and h == SET_PMD and v & 1 and not v & 0x80:
                break
            else:
                kind = 1 if queued else 2
            act = _ACT[kind]
            if act != run_act:
                if es:
                    self.apply_run(run_act, es, vs, qadd)
                    es, vs, qadd = [], [], []
                run_act = act
            es.append(e)
            vs.append(v)
            if kind == 1:
                qadd.append(e)
            elif kind == 3:
                qadd.append((e, v))
            elif kind == 4:
                self.lru.pop(pfn, None)  # no cached directory any more (lguest_pte)
            if other:
                self.wp_ks.append(idx_l[j - off])
            elif queued:
                self.q_ks.append(idx_l[j - off])
                if kind == 1 or kind == 3:
                    qn += 1
            j += 1
        if es:
            self.apply_run(run_act, es, vs, qadd)
        return j

    def stores_array(self, pos0: int, end: int) -> int:  # long: one classification, as arrays
        """:meth:`stores` over a long run: each rule of the one-by-one loop as a mask."""
        queue = self.queue
        sl = slice(pos0, end)
        e, h, v = self.e_a[sl], self.h_a[sl], self.v_a[sl]
        ok = e >= 0  # pte_update with nothing observed: skipped
        pfn = e >> 10
        gpd = self.guest.pd
        vpd = None if self.pair.view_cr3 is None else self.pair.view_cr3 >> 12
        brk = np.zeros(len(e), dtype=bool)
        for p in (gpd, vpd):
            if p is not None:
                brk |= pfn == p
        other = np.zeros(len(e), dtype=bool)
        if self.is_xen and self.pte_hook:
            at = h == SET_PTE_AT
            if at.any():
                loaded = np.fromiter(self.cur_tables(), dtype=np.int64)
                other = at & ~np.isin(pfn, loaded)
        qm = self.q_masks.get(self.lazy)
        queued = (qm[h] if qm is not None else np.zeros(len(e), dtype=bool)) & ~other
        pmd_new = (h == SET_PMD) & ((v & 1) != 0) & ((v & 0x80) == 0)
        if self.pte_none:
            kind = np.zeros(len(e), dtype=np.int8)
        elif self.is_lguest:
            kind = np.zeros(len(e), dtype=np.int8)
            kind[h == SET_PMD] = -1 if self.pte_hook else 2
            kind[pmd_new] = -1
            if self.pte_trap:
                kind[h != SET_PMD] = 4
            else:
                kind[h == SET_PTE] = 5
                kind[(h == SET_PTE) & queued] = -1
                kind[h == SET_PTE_AT] = 4
                kind[(h == SET_PTE_AT) & queued] = 3
        else:
            kind = np.where(queued, 1, 2).astype(np.int8)
            kind[other] = 2
            if self.pte_trap:
                kind[:] = 2
            elif self.trap_alloc:
                brk |= pmd_new & ~other
        brk |= kind < 0
        if queue is not None:
            # the queue's length before each store: it grows by the stores queued as 1 or 3
            grows = ok & queued & ((kind == 1) | (kind == 3))
            qn = len(queue) + np.cumsum(grows) - grows
            brk |= queued & (qn >= self.capacity)
            hc = self.hc0_a[h]
            hc[other] = self.wp_t[3]
            brk |= ~queued & (qn > 0) & (hc > 0)
        brk &= ok
        stop = int(np.argmax(brk)) if brk.any() else len(e)
        take = ok[:stop]
        e, v, h, kind = e[:stop][take], v[:stop][take], h[:stop][take], kind[:stop][take]
        other, queued = other[:stop][take], queued[:stop][take]
        if not len(e):
            return pos0 + stop
        idx = self.idx_a[sl][:stop][take]
        if (kind == 4).any():
            for p in bulk.frames_of(e[kind == 4]):
                self.lru.pop(p, None)  # no cached directory any more (lguest_pte)
        if other.any():
            self.wp_runs.append(idx[other])
        if (queued & ~other).any():
            self.q_runs.append(idx[queued & ~other])
        act = np.asarray(_ACT, dtype=np.int8)[kind]
        cut = np.flatnonzero(act[1:] != act[:-1]) + 1
        for a, b in zip([0, *cut.tolist()], [*cut.tolist(), len(e)], strict=True):
            es, vs, ks = e[a:b], v[a:b], kind[a:b]
            qadd: list[Any] = []
            if (ks == 1).any():
                qadd = es.tolist()
            elif (ks == 3).any():
                q3 = ks == 3
                qadd = list(zip(es[q3].tolist(), vs[q3].tolist(), strict=True))
            if b - a < bulk.VEC_MIN:
                self.apply_run(int(act[a]), es.tolist(), vs.tolist(), qadd)
            else:
                self.apply_run(int(act[a]), es, vs, qadd)
        return pos0 + stop
