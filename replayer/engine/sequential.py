"""The sequential pass: both copies of the page tables simulated, event by event.

Takes the replay state; gives cost rows for every event whose cost depends on state
(page-table stores and allocations, CR3 loads and flushes, lazy-mode batches, APIC
accesses), the MMU check rows at CR3 loads, flushes and checkpoints, and the
devices' rows.  :func:`sequential_key` says which runs may share one pass.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from replayer.backends import MECH_CODE, c
from replayer.engine.checks import DeviceChecks
from replayer.engine.common import (
    _ALLOCS,
    _H,
    _MMU_ONLY,
    _NHOOKS,
    _RELEASES,
    AR,
    AW,
    AWA,
    FL_KERN,
    FL_ONE,
    FL_USER,
    LAZY,
    PTE_UPD,
    PTE_UPD_D,
    SET_PMD,
    SET_PTE,
    SET_PTE_AT,
    WCR0,
    WCR3,
    WCR4,
)
from replayer.engine.derived import _frames_needed, _pte_entries
from replayer.engine.runs import StoreRuns
from replayer.engine.static import _Costs, _stateful
from replayer.engine.traced import TracedPass
from replayer.engine.untold import lguest_load, report
from replayer.mechanisms import bulk
from replayer.mechanisms.apic import VirtualIoapic, VirtualLapic
from replayer.mechanisms.batch import (
    LAZY_CPU,
    LAZY_FLUSH,
    LAZY_MMU,
    LAZY_NONE,
    BatchQueue,
)
from replayer.mechanisms.coherence import ViewPair
from replayer.mechanisms.pagetables import (
    CR0_PG,
    CR4_PGE,
    GuestMMU,
    cloned,
)
from replayer.mechanisms.tracer import WriteTracer
from replayer.trace import (
    K_HOOK,
    K_INTERRUPT,
    K_MMIO_READ,
    K_MMIO_WRITE,
)

ALLOC_CLONE = _ALLOCS[2]
REL_PT, REL_PD = _RELEASES
ALLOC_HOOKS = {*_ALLOCS, *_RELEASES}
#: Loop positions whose columns are Python lists at a time (:meth:`_Simulation.window`).
WINDOW = 1 << 12
_Push = Callable[[Any], object] | None


class SequentialPass(TracedPass, DeviceChecks):
    """The simulating pass (:meth:`_sequential`)."""

    def _sequential(
        self, absorbed: np.ndarray, progress: Callable[[int], None] | None
    ) -> list[tuple[int, ...]]:
        """Simulate the guest's tables and the backend's copy over the stateful events;
        return the rows ``(event, cycles, mechanism, exits, hypercalls, traps, batch
        flushes, batched)`` of events whose cost differs from the static one."""
        return _Simulation(self, absorbed).run(progress)


class _Simulation(StoreRuns):
    """One sequential pass: the loop over the events the backend's state depends on, and
    one handler per kind of event.

    Each hook event starts from its static cost (a list ``[cycles, mechanism, exits,
    hypercalls, traps, batch flushes, batched]``); the queue and the handler change it
    and say whether they did, and only changed costs become rows.  Runs of entry stores
    with no other stateful event between them are taken together (:meth:`stores`).
    """

    def __init__(self, rp: SequentialPass, absorbed: np.ndarray) -> None:
        tr, m, cs, table = rp.trace, rp.model, rp.cs, rp.table
        self.rp, self.trace, self.m, self.table, self.n = rp, tr, m, table, tr.n
        self.batchable_ids = {_H[h]: modes for h, modes in m.batchable.items()}
        stateful = _stateful(m, cs)
        self.queue = BatchQueue(m.batch_capacity) if m.batching else None
        if rp.mirror and not rp.full_check:
            # the hardware walks the guest's own tables (or traps every store to them):
            # nothing about them can differ, so the checks find nothing; the guest's tables
            # are checked against the digests once per trace; what tracing costs depends
            # on the page-table events alone (:meth:`_traced_pass`)
            stateful -= _MMU_ONLY
            if m.mmu == "traced":
                rp._traced_pass()
        # a checkpoint still brings such a hook to the loop: not the loop's to charge
        self.skip_mmu = rp.mirror and not rp.full_check
        loop = self._events(stateful, absorbed)
        self.cps = tr.checkpoints

        ent, val_arr = _pte_entries(tr)
        self.guest = rp.guest = GuestMMU(nframes=_frames_needed(tr, ent))
        pair = ViewPair(self.guest, demand_fill=m.mmu == "demand", shared=rp.mirror)
        if m.mmu == "notified":
            pair.registered = set()
        self.pair = rp.pair = pair
        self.tracer = WriteTracer(m.flood_threshold) if m.mmu == "traced" else None
        self.lru: OrderedDict[int, None] = OrderedDict()
        rp.lapic, rp.ioapic = VirtualLapic(), VirtualIoapic()
        rp.lost = {}
        self.out: list[tuple[int, ...]] = []
        self.pending_check: list[str] = []
        self.lazy = LAZY_NONE
        self._costs(cs)
        self._modes()

        # the loop's columns: arrays, and lists of a window of them (:meth:`window`)
        self.idx_a, self.e_a = loop, np.asarray(ent[loop], dtype=np.int64)
        self.h_a, self.v_a = tr.hook[loop], np.asarray(val_arr[loop], dtype=np.int64)
        self.off = -1

        # tables the loaded directory names: [_, pd, version, set]; version -1: stale
        self.cur_tables_cache: list[Any] = [None, -1, -1, frozenset()]
        self.gmem = self.guest.frames.mem
        self.cur_pd = -1
        if self.queue is not None:
            self.queue.apply = self.apply_batch
        self._store_runs(loop)

    def window(self, pos: int, size: int = WINDOW) -> None:
        """Lists of the loop's columns from position ``pos`` on (``X_l[p - off]`` is
        position ``p``): ``size`` positions, and a short run of stores past them."""
        self.off = pos
        w = slice(pos, pos + size + bulk.VEC_MIN)
        tr, at = self.trace, self.idx_a[w]
        self.idx_l, self.h_l, self.k_l = at.tolist(), self.h_a[w].tolist(), tr.kind[at].tolist()
        self.e_l, self.v_l = self.e_a[w].tolist(), self.v_a[w].tolist()
        self.a0_l, self.a1_l, self.a2_l, self.a3_l = (
            a[at].tolist() for a in (tr.arg0, tr.arg1, tr.arg2, tr.arg3)
        )
        self.res_l, self.hasr_l = tr.result[at].tolist(), tr.has_result[at].tolist()
        # where a run of stores from each position ends (-1: no store): the next bound
        at = np.arange(pos, pos + len(self.idx_l))
        run_end = self.bounds[np.searchsorted(self.bounds, at, side="right")]
        self.run_end_l = np.where(self.store_hook[self.h_a[w]], run_end, -1).tolist()

    def _events(self, stateful: set[int], absorbed: np.ndarray) -> np.ndarray:
        """The events the pass takes: the stateful hooks, interrupts, the device MMIO no
        hook made, checkpoints."""
        tr = self.rp.trace
        hook_mask = np.zeros(_NHOOKS + 1, dtype=bool)
        hook_mask[list(stateful)] = True
        kind = tr.kind
        want = hook_mask[tr.hook] & (kind == K_HOOK)  # hook -1 takes the last, False, slot
        want |= kind == K_INTERRUPT
        want |= ((kind == K_MMIO_READ) | (kind == K_MMIO_WRITE)) & ~absorbed
        cps = tr.checkpoints
        if cps:
            want[np.fromiter(cps, dtype=np.int64, count=len(cps))] = True
        return np.nonzero(want)[0]

    def _costs(self, cs: _Costs) -> None:
        """The costs the handlers charge, resolved once."""
        m, table, T = self.m, self.table, cs.t
        self.queued_cost = T(c("queued", "call_ret", "queue_entry"))
        self.flush_t = T(m.flush_cost)
        self.entry_cyc = table["batch_entry"]
        self.wp_t = T(m.wp_fault)
        self.disc_t = T(m.discover)
        self.scan_cyc = table["scan_table"]
        self.pv_wp = table["pv_fault"] + table["emulate_write"]
        self.timer_t = T(m.timer_write) if m.timer_write else None
        self.call_ret = table["call_ret"]
        self.cyc0, self.mech0, self.ex0, self.hc0, self.tr0 = cs.lists()
        # each hook's static cost, as the handlers' cost list starts
        self.base = [list(t) + [0, 0] for t in zip(*cs.lists(), strict=True)]

    def _modes(self) -> None:
        """What the backend and the ablation make of each kind of event."""
        rp, m = self.rp, self.m
        self.mirror, self.traced = rp.mirror, self.tracer is not None
        self.is_xen, self.is_lguest = m.name == "xen-pv", m.name == "lguest"
        self.trap_alloc = rp.alloc_mode == "trap"
        self.alloc_hook = rp.alloc_mode == "hook"
        self.pte_hook = rp.pte_mode == "hook"
        self.pte_none = rp.pte_mode == "none"
        self.pte_trap = rp.pte_mode == "trap"

    # ------------------------------------------------------------------ the loop

    def run(self, progress: Callable[[int], None] | None) -> list[tuple[int, ...]]:
        """Every event in turn; return the cost rows."""
        rp, cps, n = self.rp, self.cps, self.n
        bulk_ok, loop_only = self.bulk_ok, self.loop_only
        lazy_direct = LAZY not in self.batchable_ids
        report_every = max(n // 100, 1 << 16)
        next_report = report_every
        # a checkpoint follows its event: it is taken at the top of the next iteration (no
        # stateful event lies between), whichever branch handled the event
        cp_at: int | None = None
        pos, n_loop, off, top = 0, len(self.idx_a), -1, 0
        size, visits = WINDOW, 0
        while pos < n_loop:
            if pos >= top or self.off != off:
                # where runs of stores skip most positions, lists of all of them cost more
                # than the rest of the pass: the window shrinks while visits are sparse
                if off >= 0:
                    size = max(size // 4, 64) if visits * 8 < size else min(size * 4, WINDOW)
                self.window(pos, size)
                off, top, visits = pos, min(pos + size, n_loop), 0
                idx_l, h_l, k_l, run_end_l = self.idx_l, self.h_l, self.k_l, self.run_end_l
                a0_l, a1_l, a2_l = self.a0_l, self.a1_l, self.a2_l
            i = pos - off
            visits += 1
            k = idx_l[i]
            if cp_at is not None:
                rp._checkpoint(cp_at, cps[cp_at], self.check)
                cp_at = None
            if bulk_ok and run_end_l[i] > pos and h_l[i] not in loop_only:
                nxt = self.stores(pos, run_end_l[i])
                if nxt > pos:
                    last = int(self.idx_a[nxt - 1])
                    if cps and last in cps:
                        cp_at = last
                    pos = nxt
                    continue
            pos += 1
            if cps and k in cps:
                cp_at = k
            if progress is not None and k >= next_report:
                progress(k)
                next_report = k + report_every
            kd = k_l[i]
            if kd == K_HOOK:
                h = h_l[i]
                if h == LAZY and lazy_direct:
                    self.lazy_mode(pos - 1, k)
                else:
                    self.hook(pos - 1, k, h)
            elif kd == K_INTERRUPT:
                rp._interrupt(k, a0_l[i], a1_l[i])
            elif kd in (K_MMIO_WRITE, K_MMIO_READ):
                rp._mmio(k, kd, a0_l[i], a2_l[i])
        if cp_at is not None:
            rp._checkpoint(cp_at, cps[cp_at], self.check)
        if self.queue is not None and len(self.queue):
            self.drain(n - 1)
        for ks, runs, t in (
            (self.q_ks, self.q_runs, (*self.queued_cost[:2], 0, 0, 0)),
            (self.wp_ks, self.wp_runs, self.wp_t),
        ):
            if ks or runs:
                idx = np.concatenate([np.asarray(ks, dtype=np.int64), *runs])
                # one cost for all of them: scalars, not columns as long as idx
                rp.dyn_cols.append((idx, *(np.int64(x) for x in (*t, 0, 0))))
        return self.out

    def hook(self, pos: int, k: int, h: int) -> None:
        """One hook event: the queue first (a queued call, or a synchronous one that
        applies what is queued), then the handler of its kind."""
        if self.skip_mmu and h in _MMU_ONLY:
            return
        e = self.e_l[pos - self.off]
        if e >= 0 and self.mirror:
            self.mirror_store(k, h, e, self.v_l[pos - self.off])
            return
        if e == -2:
            return  # pte_update with nothing observed: the new value is unknown
        cost = self.base[h].copy()
        touched = False
        queue = self.queue
        modes = self.batchable_ids.get(h)
        other_mm = False
        if self.is_xen and h == SET_PTE_AT and self.pte_hook:
            # xen_set_pte_at: update_va_mapping for the current (or init) mm only;
            # another mm's table takes a plain store, trapped on the pinned table
            other_mm = e >> 10 not in self.cur_tables()
            if other_mm:
                modes = None
                cost[:5] = self.wp_t
                touched = True
        queued = queue is not None and modes is not None and self.lazy in modes
        if queued:
            assert queue is not None
            if len(queue) >= queue.capacity:
                ran = self.drain(k)
                cost[0] = self.flush_t[0] + ran * self.entry_cyc + self.queued_cost[0]
                cost[1], cost[5], cost[6] = MECH_CODE["batch_flush"], 1, ran
            else:
                cost[0], cost[1] = self.queued_cost[0], self.queued_cost[1]
            cost[2] = cost[3] = cost[4] = 0
            touched = True
        elif queue is not None and cost[3] > 0 and h != LAZY and len(queue):
            ran = self.drain(k)
            cost[0] += self.flush_t[0] + ran * self.entry_cyc
            cost[5], cost[6] = 1, ran
            touched = True
        push = queue.push if queued else None  # type: ignore[union-attr]

        if e >= 0:
            touched |= self.pte_store(pos, h, e, cost, push, other_mm)
        elif h in ALLOC_HOOKS:
            touched |= self.alloc(pos, h, cost, push)
        elif h == WCR3:
            touched |= self.load_cr3(pos, k, cost, push)
        elif h in (FL_USER, FL_KERN, FL_ONE):
            touched |= self.flush(pos, k, h, cost, push)
        elif h == LAZY:
            touched |= self.lazy_mode(pos, k, cost)
        elif h == WCR0:
            self.guest.paging = bool(self.a0_l[pos - self.off] & CR0_PG)
        elif h == WCR4:
            self.guest.pge = bool(self.a0_l[pos - self.off] & CR4_PGE)
        elif h in (AW, AWA, AR):
            i = pos - self.off
            a0 = self.a0_l[i]
            self.rp._apic_hook(k, h, a0, self.a1_l[i], self.hasr_l[i], self.res_l[i])
            if h != AR and self.timer_t is not None and a0 == 0x380 and not queued:
                cost[:5] = self.timer_t
                touched = True
        if touched:
            self.out.append((k, *cost))

    # ------------------------------------------------------------------ handlers

    def mirror_store(self, k: int, h: int, e: int, val: int) -> None:
        """An entry store where the hardware walks the guest's tables, or every store to
        them traps."""
        pfn = e >> 10
        self.gmem[e] = val
        if pfn == self.cur_pd:
            self.cur_tables_cache[2] = -1
        if self.traced and self.tracer.write(pfn):  # type: ignore[union-attr]
            wp_t = self.wp_t
            cy = wp_t[0] + (0 if h in (PTE_UPD, PTE_UPD_D) else self.call_ret)
            self.out.append((k, cy, wp_t[1], wp_t[2], wp_t[3], wp_t[4], 0, 0))

    def pte_store(
        self,
        pos: int,
        h: int,
        e: int,
        cost: list[int],
        push: _Push,
        other_mm: bool,
    ) -> bool:
        """An entry store, as the ablation and the backend take it."""
        pair, lru = self.pair, self.lru
        pfn, ix, val = e >> 10, e & 1023, self.v_l[pos - self.off]
        if self.pte_none:
            pair.guest_write(pfn, ix, val)
        elif self.pte_trap or other_mm:
            pair.write_both(pfn, ix, val)
            if self.is_lguest:
                if h == SET_PMD and val & 1 and not val & 0x80:
                    pair.resync_page(val >> 12)  # its shadow table is dropped
                    lru.pop(val >> 12, None)
                elif h != SET_PMD:
                    lru.pop(pfn, None)
        elif self.is_lguest:
            pair.guest_write(pfn, ix, val)
            if h == SET_PTE:
                op: Callable[[], None] | None = pair.resync_all  # FLUSH_TLB(1)
            elif h == SET_PTE_AT:
                op = partial(self.lguest_pte, pfn, ix, val)
            elif h == SET_PMD:
                op = partial(self.lguest_pmd, pfn, ix, val)
            else:
                op = None  # pte_update: lguest is not told; the flush resyncs
            if op is not None:
                push(op) if push else op()
        else:
            if push:
                pair.guest_write_queued(pfn, ix, val)
                push(e)  # applied at the flush: see apply_batch
            else:
                pair.write_both(pfn, ix, val)
            # a table the VMM was not told of is discovered as it is installed
            installs = self.trap_alloc and h == SET_PMD and val & 1 and not val & 0x80
            if installs and self.discover([val >> 12]):
                cost[0] += self.scan_cyc
                return True
        return False

    def alloc(self, pos: int, h: int, cost: list[int], push: _Push) -> bool:
        """alloc_* (the guest zeroes or clones a table) and release_*."""
        guest, pair, mirror = self.guest, self.pair, self.mirror
        pfn = self.a0_l[pos - self.off]
        nwrites = 0 if h in (REL_PT, REL_PD) else 1024
        if h == ALLOC_CLONE:
            i = pos - self.off
            src, start, count = self.a1_l[i], self.a2_l[i], self.a3_l[i]
            vals = cloned(guest.frames, src, start, count)
            if mirror:
                guest.frames.page(pfn)[:] = vals
            else:
                pair.guest_fill(pfn, 0, 1024, vals)
            op = partial(pair.learn_clone, pfn, src, start, count)
        elif nwrites:
            if mirror:
                guest.frames.page(pfn)[:] = 0
            else:
                pair.guest_fill(pfn, 0, 1024)
            op = partial(pair.learn_fill, pfn, 0, 1024)
        else:
            op = partial(pair.forget, pfn)
        if mirror:
            if pfn == self.cur_pd:
                self.cur_tables_cache[2] = -1
            if self.traced and nwrites:
                f = self.tracer.write(pfn, nwrites)  # type: ignore[union-attr]
                if f:
                    self._charge(cost, f, self.wp_t)
                    return True
        elif self.alloc_hook:
            push(op) if push else op()
        elif self.trap_alloc and nwrites and pfn in (pair.registered or ()):
            # the guest's memset hits a frame the VMM still protects: it faults,
            # and the VMM stops trusting (and protecting) the frame
            pair.registered.discard(pfn)  # type: ignore[union-attr]
            cost[0] += self.pv_wp
            cost[4] += 1
            return True
        return False

    @staticmethod
    def _charge(cost: list[int], count: int, t: tuple[int, ...]) -> None:
        """Add ``count`` times the cycles, exits and traps of ``t`` to ``cost``."""
        cost[0] += count * t[0]
        cost[2] += count * t[2]
        cost[4] += count * t[4]

    def load_cr3(self, pos: int, k: int, cost: list[int], push: _Push) -> bool:
        """write_cr3: the guest's TLB flushed, the backend's copy switched (lguest: its
        cached shadow directory, or a re-read of the space), then the MMU check."""
        guest, pair = self.guest, self.pair
        touched = False
        x = self.a0_l[pos - self.off]
        guest.cr3 = x
        self.cur_pd = pd = x >> 12
        pair.guest_flushed(guest.flush_all(False))
        if self.mirror:
            pair.set_cr3(x)
            if self.traced:
                new = self.tracer.discover([pd, *self.cur_tables()])  # type: ignore[union-attr]
                if new:
                    self._charge(cost, new, self.disc_t)
                    touched = True
        else:
            op = partial(self.switch_space, x, pd)
            push(op) if push else op()
            if self.trap_alloc:
                extra = self.discover([pd, *self.cur_tables()])
                if extra:
                    cost[0] += extra * self.scan_cyc
                    touched = True
        self.check(k, "CR3 load")
        return touched

    def switch_space(self, x: int, pd: int) -> None:
        """The backend's side of a CR3 load (at once, or at the flush when queued)."""
        self.pair.set_cr3(x)
        if self.is_lguest:
            lguest_load(self.pair, self.lru, pd, self.m.pgdir_cache)

    def flush(self, pos: int, k: int, h: int, cost: list[int], push: _Push) -> bool:
        """flush_tlb_single / _user / _kernel, then the MMU check."""
        guest, pair, m = self.guest, self.pair, self.m
        touched = False
        if h == FL_ONE:
            addr = self.a0_l[pos - self.off]
            pair.guest_flushed(guest.flush_addr(addr))
            if m.flush_resync:
                op: Callable[[], None] = partial(pair.resync_addr, addr)
                push(op) if push else op()
            reason = f"flush_tlb_single({addr:#x})"
        else:
            pair.guest_flushed(guest.flush_all(h == FL_KERN))
            if m.flush_resync:
                op = pair.resync_all if h == FL_KERN else pair.resync_space
                push(op) if push else op()
            if self.traced:
                new = self.tracer.discover(self.cur_tables())  # type: ignore[union-attr]
                if new:
                    self._charge(cost, new, self.disc_t)
                    touched = True
            reason = "flush_tlb_kernel" if h == FL_KERN else "flush_tlb_user"
        self.check(k, reason)
        return touched

    def lazy_mode(self, pos: int, k: int, cost: list[int] | None = None) -> bool:
        """set_lazy_mode: entering a mode the queue follows; leaving one (or a flush)
        applies what is queued.  Called straight from the loop (no backend queues the
        call itself, and it is the commonest stateful hook) it notes its own cost row;
        given the ``cost`` :meth:`hook` started, it changes that."""
        queue, mode = self.queue, self.a0_l[pos - self.off]
        if mode in (LAZY_NONE, LAZY_MMU, LAZY_CPU):
            self.lazy = mode
        if queue is None:
            return False
        touched = mode in (LAZY_NONE, LAZY_FLUSH) and (len(queue) > 0 or self.is_lguest)
        if touched:
            c = cost if cost is not None else self.base[LAZY].copy()
            if len(queue):
                ran = self.drain(k)
                c[0] = self.cyc0[LAZY] + self.flush_t[0] + ran * self.entry_cyc
                c[1], c[5], c[6] = MECH_CODE["batch_flush"], 1, ran
            else:  # LHCALL_FLUSH_ASYNC, even with nothing queued
                c[0] = self.cyc0[LAZY] + self.table["hypercall"]
                c[1], c[3] = MECH_CODE["hypercall"], 1
            if cost is None:
                self.out.append((k, *c))
        queue.set_mode(mode)
        return touched

    # ------------------------------------------------ the copies, checks, the queue

    def check(self, seq: int, reason: str) -> None:
        """The MMU check after ``seq`` (deferred to the batch flush while calls are
        queued)."""
        if self.queue is not None and len(self.queue):
            if reason not in self.pending_check:
                self.pending_check.append(reason)
            return
        pair = self.pair
        report(
            self.rp.violate, seq, pair.check_full() if self.rp.full_check else pair.check(), reason
        )

    def drain(self, seq: int) -> int:
        """Apply what is queued (then any check deferred to it); return how many."""
        ran = self.queue.flush() if self.queue is not None else 0
        if ran and self.pending_check:
            reasons = ", ".join(self.pending_check)
            self.pending_check.clear()
            self.check(seq, reasons + " (applied at the batch flush)")
        return ran

    def lguest_pmd(self, p: int, i: int, v: int) -> None:
        """lguest told of a set_pmd: the shadow table under the entry is dropped."""
        self.pair.learn_write(p, i, v)
        if v & 1 and not v & 0x80:
            self.pair.resync_page(v >> 12)
            self.lru.pop(v >> 12, None)

    def lguest_pte(self, p: int, i: int, v: int) -> None:
        """lguest told of a set_pte_at.  It caches shadow directories by the guest
        directory's address, apart from its page-table shadows: a frame now used as a
        table is no cached directory."""
        self.lru.pop(p, None)
        self.pair.learn_write(p, i, v)

    def discover(self, pfns: list[int]) -> int:
        """A trap-fallback VMM scans tables it does not protect yet; return how many."""
        k = 0
        reg = self.pair.registered
        for p in pfns:
            if reg is not None and p not in reg:
                reg.add(p)
                self.pair.resync_page(p)
                k += 1
        return k
