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

from pvscope.hooks import HOOKS
from replayer.backends import (
    MECH_CODE,
    Run,
    c,
)
from replayer.costs import CostTable
from replayer.engine.checks import DeviceChecks
from replayer.engine.common import (
    _ACT,
    _ALLOCS,
    _H,
    _MMU_ONLY,
    _NHOOKS,
    _PTE_HOOKS,
    _RELEASES,
    _hex,
)
from replayer.engine.derived import _frames_needed, _pte_entries
from replayer.engine.state import _modes
from replayer.engine.static import _Costs, _stateful
from replayer.engine.traced import TracedPass
from replayer.mechanisms.apic import (
    VirtualIoapic,
    VirtualLapic,
)
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
)
from replayer.mechanisms.tracer import WriteTracer
from replayer.trace import (
    K_HOOK,
    K_INTERRUPT,
    K_MMIO_READ,
    K_MMIO_WRITE,
)


def sequential_key(
    run: Run, table: CostTable, full_check: bool = False, exact: bool = False
) -> str:
    """Everything a run's sequential pass reads: runs with equal keys have equal passes.

    That is the backend's mechanisms, the costs of the hooks the pass takes (the others
    are costed column-wise), the modes an ablation sets and the cost table -- so an
    ablation that changes only costs the pass does not look at (``cpl``; ``irq`` where
    masking never enters the hypervisor, and whose interrupt flag is checked apart)
    shares its parent's pass.
    """
    m = run.model()
    cs = _Costs(m, table)
    hooks = sorted(_stateful(m, cs))
    own = [(h, cs.t(m.cost(HOOKS[h].name))) for h in hooks]
    mech = (m.name, m.mmu, m.apic, m.batching, m.batch_capacity, sorted(m.batchable.items()))
    more = (
        m.flush_cost,
        m.wp_fault,
        m.discover,
        m.timer_write,
        m.flush_resync,
        m.pgdir_cache,
        m.flood_threshold,
    )
    return repr((mech, more, own, _modes(run)[:3], table.sha256, full_check, exact))


class SequentialPass(TracedPass, DeviceChecks):
    """The simulating pass (:meth:`_sequential`)."""

    # ----------------------------------------------------- the sequential pass

    def _sequential(
        self, absorbed: np.ndarray, progress: Callable[[int], None] | None
    ) -> list[tuple[int, ...]]:
        tr, m, cs, table = self.trace, self.model, self.cs, self.table
        n = tr.n
        batchable_ids = {_H[h]: modes for h, modes in m.batchable.items()}
        stateful = _stateful(m, cs)
        queue = BatchQueue(m.batch_capacity) if m.batching else None
        if self.mirror and not self.full_check:
            # the hardware walks the guest's own tables (or traps every store to them):
            # nothing about them can differ, so the checks find nothing; the guest's tables
            # are checked against the digests once per trace; what tracing costs depends
            # on the page-table events alone (:meth:`_traced_pass`)
            stateful -= _MMU_ONLY
            if m.mmu == "traced":
                self._traced_pass()
        hook_mask = np.zeros(_NHOOKS + 1, dtype=bool)
        hook_mask[list(stateful)] = True
        hk = np.where(tr.hook >= 0, tr.hook, _NHOOKS)
        kind = tr.kind
        want = hook_mask[hk] & (kind == K_HOOK)
        want |= kind == K_INTERRUPT
        want |= ((kind == K_MMIO_READ) | (kind == K_MMIO_WRITE)) & ~absorbed
        cps = tr.checkpoints
        if cps:
            want[np.fromiter(cps, dtype=np.int64, count=len(cps))] = True
        loop = np.nonzero(want)[0]

        ent, val_arr = _pte_entries(tr)
        guest = GuestMMU(nframes=_frames_needed(tr, ent))
        self.guest = guest
        pair = ViewPair(guest, demand_fill=m.mmu == "demand", shared=self.mirror)
        if m.mmu == "notified":
            pair.registered = set()
        self.pair = pair
        tracer = WriteTracer(m.flood_threshold) if m.mmu == "traced" else None
        lru: OrderedDict[int, None] = OrderedDict()
        lapic, ioapic = VirtualLapic(), VirtualIoapic()
        self.lapic, self.ioapic = lapic, ioapic
        self.lost = {}
        out: list[tuple[int, ...]] = []
        pending_check: list[str] = []
        lazy = LAZY_NONE

        T = cs.t
        queued_cost = T(c("queued", "call_ret", "queue_entry"))
        flush_t = T(m.flush_cost)
        entry_cyc = table["batch_entry"]
        wp_t = T(m.wp_fault)
        disc_t = T(m.discover)
        scan_cyc = table["scan_table"]
        pv_wp = table["pv_fault"] + table["emulate_write"]
        timer_t = T(m.timer_write) if m.timer_write else None
        mirror, traced = self.mirror, tracer is not None
        pte_mode, alloc_mode = self.pte_mode, self.alloc_mode
        is_xen, is_lguest = m.name == "xen-pv", m.name == "lguest"
        trap_alloc = alloc_mode == "trap"
        alloc_hook = alloc_mode == "hook"
        pte_hook, pte_none, pte_trap = pte_mode == "hook", pte_mode == "none", pte_mode == "trap"

        idx_l = loop.tolist()
        h_l = tr.hook[loop].tolist()
        k_l = kind[loop].tolist()
        a0_l = tr.arg0[loop].tolist()
        a1_l = tr.arg1[loop].tolist()
        a2_l = tr.arg2[loop].tolist()
        a3_l = tr.arg3[loop].tolist()
        res_l = tr.result[loop].tolist()
        hasr_l = tr.has_result[loop].tolist()
        e_l = ent[loop].tolist()
        v_l = val_arr[loop].tolist()
        cyc0, mech0, ex0, hc0, tr0 = cs.lists()

        H = _H
        SET_PTE, SET_PTE_AT, SET_PMD = H["set_pte"], H["set_pte_at"], H["set_pmd"]
        PTE_UPD, PTE_UPD_D = H["pte_update"], H["pte_update_defer"]
        ALLOC_PT, ALLOC_PD, ALLOC_CLONE = _ALLOCS
        REL_PT, REL_PD = _RELEASES
        WCR3, FL_USER, FL_KERN, FL_ONE = (
            H["write_cr3"],
            H["flush_tlb_user"],
            H["flush_tlb_kernel"],
            H["flush_tlb_single"],
        )
        LAZY = H["set_lazy_mode"]
        WCR0, WCR4 = H["write_cr0"], H["write_cr4"]
        AW, AWA, AR = H["apic_write"], H["apic_write_atomic"], H["apic_read"]
        ALLOC_HOOKS = {ALLOC_PT, ALLOC_PD, ALLOC_CLONE, REL_PT, REL_PD}
        K_INT, K_MR, K_MW = K_INTERRUPT, K_MMIO_READ, K_MMIO_WRITE

        # tables the loaded directory names: [_, pd, version, set]; version -1: stale
        cur_tables_cache: list[Any] = [None, -1, -1, frozenset()]
        gmem = guest.frames.mem
        call_ret = table["call_ret"]
        cur_pd = -1

        def cur_tables() -> frozenset[int]:
            pd = guest.pd
            if pd is None:
                return frozenset()
            v = pair.pver.get(pd, 0)
            if cur_tables_cache[1] != pd or cur_tables_cache[2] != v:
                cur_tables_cache[1], cur_tables_cache[2] = pd, v
                cur_tables_cache[3] = frozenset(pair.guest_tables(pd))
            return cur_tables_cache[3]

        def check(seq: int, reason: str) -> None:
            if queue is not None and len(queue):
                if reason not in pending_check:
                    pending_check.append(reason)
                return
            res = pair.check_full() if self.full_check else pair.check()
            for f in res.findings:
                self.violate(
                    seq,
                    f"mmu.{f.kind}",
                    f"va {f.vpn << 12:#010x}",
                    _hex(f.expected),
                    _hex(f.actual),
                    f"{f.pages} page(s) wrong at {reason}",
                )

        def learn_run(es: list[int], vs: list[int]) -> None:
            # lguest's queued set_pte_at, a run at a time (lguest_pte for each)
            for e in es:
                lru.pop(e >> 10, None)
            pair.learn_write_many(es, vs)

        def apply_batch(entries: list[Any]) -> None:
            # entries: a flat entry (the backend takes the guest's value), an (entry, value)
            # lguest learns, or a callable; consecutive ones of a kind are applied together
            run: list[int] = []
            les: list[int] = []
            lvs: list[int] = []
            for op in entries:
                t = type(op)
                if t is int:
                    if les:
                        learn_run(les, lvs)
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
                    learn_run(les, lvs)
                    les, lvs = [], []
                op()
            if run:
                pair.adopt(run)
            if les:
                learn_run(les, lvs)

        if queue is not None:
            queue.apply = apply_batch

        def drain(seq: int) -> int:
            ran = queue.flush() if queue is not None else 0
            if ran and pending_check:
                reasons = ", ".join(pending_check)
                pending_check.clear()
                check(seq, reasons + " (applied at the batch flush)")
            return ran

        def lguest_pmd(p: int, i: int, v: int) -> None:
            pair.learn_write(p, i, v)
            if v & 1 and not v & 0x80:
                pair.resync_page(v >> 12)  # the shadow table under the entry is dropped
                lru.pop(v >> 12, None)

        def lguest_pte(p: int, i: int, v: int) -> None:
            # lguest caches shadow directories by the guest directory's address, apart from
            # its page-table shadows: a frame now used as a table is no cached directory
            lru.pop(p, None)
            pair.learn_write(p, i, v)

        def discover(pfns: list[int]) -> int:
            """A trap-fallback VMM scans tables it does not protect yet; return how many."""
            k = 0
            reg = pair.registered
            for p in pfns:
                if reg is not None and p not in reg:
                    reg.add(p)
                    pair.resync_page(p)
                    k += 1
            return k

        # Runs of entry stores (no other stateful event between them) are taken together
        # where each store only needs the guest's and the backend's copies updated and its
        # cost noted: the stores are classified one by one as below, then applied a run of
        # one kind at a time.  A store that needs more (a flush, a directory entry of the
        # loaded space, lguest's shadow, a discovered table) ends the run and goes through
        # the loop.  A run ends at a checkpoint.
        n_loop = len(idx_l)
        is_store = np.isin(tr.hook[loop], _PTE_HOOKS)
        after_cp = np.zeros(n_loop, dtype=bool)
        if cps:
            after_cp[1:] = np.isin(loop[:-1], np.fromiter(cps, dtype=np.int64, count=len(cps)))
        bounds = np.append(np.nonzero(~is_store | after_cp)[0], n_loop)
        run_end = bounds[np.searchsorted(bounds, np.arange(n_loop), side="right")]
        run_end_l = np.where(is_store, run_end, -1).tolist()
        bulk_ok = not mirror
        # stores that always take the loop: do not try a run from them
        loop_only = {SET_PMD} if is_lguest and pte_hook else set()
        q_by_mode = {
            mode: frozenset(b for b, modes in batchable_ids.items() if mode in modes)
            for mode in (LAZY_NONE, LAZY_MMU, LAZY_CPU, LAZY_FLUSH)
        }
        q_ks: list[int] = []
        wp_ks: list[int] = []
        capacity = queue.capacity if queue is not None else 0

        def apply_run(act: int, es: list[int], vs: list[int], qadd: list[Any]) -> None:
            # act 0: the guest stores, the backend is not told now; 1: the same, the update
            # queued (diff waits for the flush); 2: the backend learns the store at once
            if act == 3:
                # each store, then every shadow re-read: after the last, all of them are
                pair.guest_write_many(es, vs)
                pair.resync_all()
            elif act == 0:
                pair.guest_write_many(es, vs)
            elif act == 1:
                pair.guest_write_queued_many(es, vs)
            else:
                pair.write_both_many(es, vs)
            if qadd:
                queue.entries.extend(qadd)  # type: ignore[union-attr]

        def stores(pos0: int, end: int, lazy: int) -> int:
            """Take the stores at loop positions [pos0, end) that need nothing more; return
            the position of the first one not taken."""
            qh = q_by_mode.get(lazy, frozenset()) if queue is not None else frozenset()
            qn = len(queue) if queue is not None else 0
            gpd = guest.pd
            vpd = None if pair.view_cr3 is None else pair.view_cr3 >> 12
            # the loaded directory does not change within a run (a store to it ends one)
            loaded = cur_tables() if is_xen and pte_hook else frozenset()
            run_act = -1
            es: list[int] = []
            vs: list[int] = []
            qadd: list[Any] = []
            j = pos0
            while j < end:
                e = e_l[j]
                if e < 0:
                    j += 1  # pte_update with nothing observed
                    continue
                pfn = e >> 10
                if pfn in (gpd, vpd):
                    break  # references of the loaded space change
                h = h_l[j]
                v = v_l[j]
                other = is_xen and pte_hook and h == SET_PTE_AT and pfn not in loaded
                queued = not other and h in qh
                if queued:
                    if qn >= capacity:
                        break
                elif queue is not None and qn and (wp_t[3] if other else hc0[h]) > 0:
                    break
                if pte_none:
                    kind = 0
                elif is_lguest:
                    if h == SET_PMD:
                        if pte_hook or v & 1 and not v & 0x80:
                            break  # the shadow table under the entry is dropped
                        kind = 2
                    elif pte_trap:
                        kind = 4
                    elif h == SET_PTE:
                        if queued:
                            break
                        kind = 5  # FLUSH_TLB(1) at once: every shadow dropped
                    elif h == SET_PTE_AT:
                        kind = 3 if queued else 4
                    else:
                        kind = 0  # pte_update: lguest is not told; the flush resyncs
                elif pte_trap or other:
                    kind = 2
                elif trap_alloc and h == SET_PMD and v & 1 and not v & 0x80:
                    break
                else:
                    kind = 1 if queued else 2
                # kinds: 0 guest only, 1 queued (update applied at the flush), 2 both at once,
                # 3 guest now, lguest queued to learn the value, 4 both at once, lguest,
                # 5 guest now, lguest drops every shadow at once
                act = _ACT[kind]
                if act != run_act:
                    if es:
                        apply_run(run_act, es, vs, qadd)
                        es, vs, qadd = [], [], []
                    run_act = act
                es.append(e)
                vs.append(v)
                if kind == 1:
                    qadd.append(e)
                elif kind == 3:
                    qadd.append((e, v))
                elif kind == 4:
                    lru.pop(pfn, None)  # no cached directory any more (lguest_pte)
                if other:
                    wp_ks.append(idx_l[j])
                elif queued:
                    q_ks.append(idx_l[j])
                    if kind == 1 or kind == 3:
                        qn += 1
                j += 1
            if es:
                apply_run(run_act, es, vs, qadd)
            return j

        report_every = max(n // 100, 1 << 16)
        next_report = report_every
        # a checkpoint follows its event: it is taken at the top of the next iteration (no
        # stateful event lies between), whichever branch handled the event
        cp_at: int | None = None
        skip = 0
        for pos in range(n_loop):
            if pos < skip:
                continue
            k = idx_l[pos]
            if cp_at is not None:
                self._checkpoint(cp_at, cps[cp_at], check)
                cp_at = None
            if bulk_ok and run_end_l[pos] > pos and h_l[pos] not in loop_only:
                skip = stores(pos, run_end_l[pos], lazy)
                if skip > pos:
                    last = idx_l[skip - 1]
                    if cps and last in cps:
                        cp_at = last
                    continue
            if cps and k in cps:
                cp_at = k
            if progress is not None and k >= next_report:
                progress(k)
                next_report = k + report_every
            kd = k_l[pos]
            h = h_l[pos]
            # cost of this event: start from the static one
            cy, me, e_, hcn, tp, nbf, nbt = cyc0[h], mech0[h], ex0[h], hc0[h], tr0[h], 0, 0
            touched = False

            if kd == K_HOOK:
                e = e_l[pos]
                is_pte = e >= 0
                if is_pte:
                    pfn, ix, val = e >> 10, e & 1023, v_l[pos]
                    if mirror:
                        # the hardware walks the guest's tables, or every store to them traps
                        gmem[e] = val
                        if pfn == cur_pd:
                            cur_tables_cache[2] = -1
                        if traced and tracer.write(pfn):  # type: ignore[union-attr]
                            cy = wp_t[0] + (0 if h in (PTE_UPD, PTE_UPD_D) else call_ret)
                            out.append((k, cy, wp_t[1], wp_t[2], wp_t[3], wp_t[4], 0, 0))
                        continue
                elif e == -2:
                    continue  # pte_update with nothing observed: the new value is unknown
                modes = batchable_ids.get(h)
                other_mm = False
                if is_xen and h == SET_PTE_AT and pte_hook:
                    # xen_set_pte_at: update_va_mapping for the current (or init) mm only;
                    # another mm's table takes a plain store, trapped on the pinned table
                    other_mm = pfn not in cur_tables()
                    if other_mm:
                        modes = None
                        cy, me, e_, hcn, tp = wp_t
                        touched = True
                queued = queue is not None and modes is not None and lazy in modes
                if queued:
                    assert queue is not None
                    if len(queue) >= queue.capacity:
                        ran = drain(k)
                        cy = flush_t[0] + ran * entry_cyc + queued_cost[0]
                        me, nbf, nbt = MECH_CODE["batch_flush"], 1, ran
                    else:
                        cy, me = queued_cost[0], queued_cost[1]
                    e_ = hcn = tp = 0
                    touched = True
                elif queue is not None and hcn > 0 and h != LAZY and len(queue):
                    ran = drain(k)
                    cy += flush_t[0] + ran * entry_cyc
                    nbf, nbt = 1, ran
                    touched = True

                push = queue.push if queued else None  # type: ignore[union-attr]

                if is_pte:
                    if pte_none:
                        pair.guest_write(pfn, ix, val)
                    elif pte_trap or other_mm:
                        pair.write_both(pfn, ix, val)
                        if is_lguest:
                            if h == SET_PMD and val & 1 and not val & 0x80:
                                pair.resync_page(val >> 12)  # its shadow table is dropped
                                lru.pop(val >> 12, None)
                            elif h != SET_PMD:
                                lru.pop(pfn, None)
                    elif is_lguest:
                        pair.guest_write(pfn, ix, val)
                        if h == SET_PTE:
                            op: Callable[[], None] | None = pair.resync_all  # FLUSH_TLB(1)
                        elif h == SET_PTE_AT:
                            op = partial(lguest_pte, pfn, ix, val)
                        elif h == SET_PMD:
                            op = partial(lguest_pmd, pfn, ix, val)
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
                        installs = trap_alloc and h == SET_PMD and val & 1 and not val & 0x80
                        if installs and discover([val >> 12]):
                            cy += scan_cyc
                            touched = True
                    if touched:
                        out.append((k, cy, me, e_, hcn, tp, nbf, nbt))
                    continue

                if h in ALLOC_HOOKS:
                    pfn = a0_l[pos]
                    nwrites = 0 if h in (REL_PT, REL_PD) else 1024
                    if h == ALLOC_CLONE:
                        src, start, count = a1_l[pos], a2_l[pos], a3_l[pos]
                        lo, hi = min(start, 1024), min(start + count, 1024)
                        vals = guest.frames.page(src)[lo:hi].copy()
                        if mirror:
                            page = guest.frames.page(pfn)
                            page[:] = 0
                            page[lo:hi] = vals
                        else:
                            pair.guest_fill(pfn, 0, 1024)
                            pair.guest_fill(pfn, lo, hi, vals)
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
                        if pfn == cur_pd:
                            cur_tables_cache[2] = -1
                        if traced and nwrites:
                            f = tracer.write(pfn, nwrites)  # type: ignore[union-attr]
                            if f:
                                cy += f * wp_t[0]
                                e_ += f * wp_t[2]
                                tp += f * wp_t[4]
                                touched = True
                    elif alloc_hook:
                        push(op) if push else op()
                    elif trap_alloc and nwrites and pfn in (pair.registered or ()):
                        # the guest's memset hits a frame the VMM still protects: it faults,
                        # and the VMM stops trusting (and protecting) the frame
                        pair.registered.discard(pfn)  # type: ignore[union-attr]
                        cy += pv_wp
                        tp += 1
                        touched = True
                    if touched:
                        out.append((k, cy, me, e_, hcn, tp, nbf, nbt))
                    continue

                if h == WCR3:
                    x = a0_l[pos]
                    guest.cr3 = x
                    cur_pd = x >> 12
                    pair.guest_flushed(guest.flush_all(False))
                    pd = x >> 12
                    extra = 0

                    if mirror:
                        pair.set_cr3(x)
                        if traced:
                            new = tracer.discover([pd, *cur_tables()])  # type: ignore[union-attr]
                            if new:
                                cy += new * disc_t[0]
                                e_ += new * disc_t[2]
                                tp += new * disc_t[4]
                                touched = True
                    else:

                        def _cr3(x: int = x, pd: int = pd) -> None:
                            pair.set_cr3(x)
                            if is_lguest:
                                if pd in lru:
                                    lru.move_to_end(pd)
                                else:
                                    pair.resync_space()
                                    lru[pd] = None
                                    while len(lru) > m.pgdir_cache:
                                        lru.popitem(last=False)

                        push(_cr3) if push else _cr3()
                        if trap_alloc:
                            extra = discover([pd, *cur_tables()])
                            if extra:
                                cy += extra * scan_cyc
                                touched = True
                    check(k, "CR3 load")
                    if touched:
                        out.append((k, cy, me, e_, hcn, tp, nbf, nbt))
                    continue

                if h in (FL_USER, FL_KERN, FL_ONE):
                    if h == FL_ONE:
                        addr = a0_l[pos]
                        pair.guest_flushed(guest.flush_addr(addr))
                        if m.flush_resync:
                            op = partial(pair.resync_addr, addr)
                            push(op) if push else op()
                        reason = f"flush_tlb_single({addr:#x})"
                    else:
                        pair.guest_flushed(guest.flush_all(h == FL_KERN))
                        if m.flush_resync:
                            op = pair.resync_all if h == FL_KERN else pair.resync_space
                            push(op) if push else op()
                        if traced:
                            new = tracer.discover(cur_tables())  # type: ignore[union-attr]
                            if new:
                                cy += new * disc_t[0]
                                e_ += new * disc_t[2]
                                tp += new * disc_t[4]
                                touched = True
                        reason = "flush_tlb_kernel" if h == FL_KERN else "flush_tlb_user"
                    check(k, reason)
                    if touched:
                        out.append((k, cy, me, e_, hcn, tp, nbf, nbt))
                    continue

                if h == LAZY:
                    mode = a0_l[pos]
                    if mode in (LAZY_NONE, LAZY_MMU, LAZY_CPU):
                        lazy = mode
                    if queue is not None:
                        before = len(queue)
                        if mode in (LAZY_NONE, LAZY_FLUSH) and before:
                            ran = drain(k)
                            cy = cyc0[h] + flush_t[0] + ran * entry_cyc
                            me, nbf, nbt = MECH_CODE["batch_flush"], 1, ran
                            touched = True
                        elif mode in (LAZY_NONE, LAZY_FLUSH) and is_lguest:
                            cy, me, hcn = cyc0[h] + table["hypercall"], MECH_CODE["hypercall"], 1
                            touched = True  # LHCALL_FLUSH_ASYNC, even with nothing queued
                        queue.set_mode(mode)
                    if touched:
                        out.append((k, cy, me, e_, hcn, tp, nbf, nbt))
                    continue

                if h == WCR0:
                    x = a0_l[pos]
                    guest.paging = bool(x & CR0_PG)
                elif h == WCR4:
                    guest.pge = bool(a0_l[pos] & CR4_PGE)
                elif h in (AW, AWA, AR):
                    self._apic_hook(k, h, a0_l[pos], a1_l[pos], hasr_l[pos], res_l[pos])
                    if h != AR and timer_t is not None and a0_l[pos] == 0x380 and not queued:
                        cy, me, e_, hcn, tp = timer_t
                        touched = True

                if touched:
                    out.append((k, cy, me, e_, hcn, tp, nbf, nbt))

            elif kd == K_INT:
                self._interrupt(k, a0_l[pos], a1_l[pos])
            elif kd in (K_MW, K_MR):
                self._mmio(k, kd, a0_l[pos], a2_l[pos])

        if cp_at is not None:
            self._checkpoint(cp_at, cps[cp_at], check)
        if queue is not None and len(queue):
            drain(n - 1)
        for ks, t in ((q_ks, (*queued_cost[:2], 0, 0, 0)), (wp_ks, wp_t)):
            if ks:
                idx = np.asarray(ks, dtype=np.int64)
                cols = (*t, 0, 0)
                self.dyn_cols.append((idx, *(np.full(len(idx), x, dtype=np.int64) for x in cols)))
        return out
