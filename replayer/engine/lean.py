"""The lean sequential pass: costs from the queue plan where a proof says the copies agree.

Takes the replay state; gives True with the cost rows and device events done, or
False (the run must be simulated by :mod:`replayer.engine.sequential`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from replayer.backends import (
    MECH_CODE,
    Run,
    all_runs,
    c,
)
from replayer.costs import CostTable
from replayer.engine.checks import DeviceChecks, device_pass
from replayer.engine.common import (
    _ALLOCS,
    _APIC_HOOKS,
    _H,
    _NHOOKS,
    _PTE_HOOKS,
    _RELEASES,
    LAZY,
    _cached,
    _kept,
)
from replayer.engine.derived import _pte_entries, loaded_table_stores
from replayer.engine.empty import copy_stays_empty, empty_copy_rows, judged
from replayer.engine.proofs import _Proof
from replayer.engine.schedule import Schedule, schedule
from replayer.engine.shadow import Shadowed
from replayer.engine.state import _modes, structural_key
from replayer.engine.static import _Costs, _stateful
from replayer.engine.traced import TracedPass
from replayer.engine.untold import untold, untold_rows
from replayer.mechanisms.batch import (
    LAZY_CPU,
    LAZY_FLUSH,
    LAZY_MMU,
    LAZY_NONE,
    QueuePlan,
    plan,
)
from replayer.trace import (
    K_HOOK,
    Trace,
    hooks_in,
)


def may_be_lean(run: Run) -> bool:
    """Whether the run's sequential pass may go lean (:meth:`_Replay._lean`): a backend fed
    by notifications, told of every PTE update (or trapping them) and told of page-table
    allocations (or, told of updates, discovering tables), or lguest told of PTE updates
    or trapping them -- whether it does depends on the trace; and always a backend whose
    hardware walks the guest's own tables (:func:`mirrors`)."""
    pte_mode, alloc_mode, _, _ = _modes(run)
    hooked = alloc_mode == "hook" and pte_mode in ("hook", "trap")
    found = alloc_mode == "trap" and pte_mode == "hook"
    mmu = run.model().mmu
    return (
        (mmu == "notified" and (hooked or found))
        or (mmu == "demand" and pte_mode in ("hook", "trap"))
        or mirrors(run)
    )


def mirrors(run: Run) -> bool:
    """Whether the backend's copy of the tables is the guest's own (the hardware walks them,
    or traps every store to them) with no queue and no cost of its own for a timer write:
    then its sequential pass takes only the devices (and the tracing costs, per trace)."""
    m = run.model()
    return m.mmu in ("direct", "traced") and m.batching is None and m.timer_write is None


def call_marks(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Per event: whether it is a hook call with an observed value (no ``pte_update``
    without one); and whether it leaves lazy mode or flushes it (``set_lazy_mode`` to
    none or flush).

    The lean pass indexes its tables per hook, of ``_NHOOKS + 1`` rows, by the trace's hook
    column as it is: -1 (no hook call) takes the last row, ``_NHOOKS``, as numpy indexes
    from the end (a copy of the column with ``_NHOOKS`` in its place held 34 MiB on
    irqstorm in every process)."""
    h = trace.hook
    ent, _ = _pte_entries(trace)
    lazy_arg = trace.arg0[h == LAZY]
    leaves = np.zeros(trace.n, dtype=bool)
    leaves[h == LAZY] = (lazy_arg == LAZY_NONE) | (lazy_arg == LAZY_FLUSH)
    return (trace.kind == K_HOOK) & (ent != -2), leaves


#: The trace's cache key of the last lean proof (:meth:`LeanPass._prove`).
LEAN_PROOF = "lean proof"


def lazy_mode(trace: Trace) -> np.ndarray:
    """Per event: the lazy mode it is made in (the last ``set_lazy_mode`` entering one
    before it; int8)."""
    h, a0 = trace.hook, trace.arg0
    at = np.flatnonzero((h == LAZY) & np.isin(a0, (LAZY_NONE, LAZY_MMU, LAZY_CPU)))
    values = np.concatenate(([LAZY_NONE], a0[at])).astype(np.int8)
    lengths = np.diff(np.concatenate(([0], at + 1, [trace.n])))
    return np.repeat(values, lengths)


@dataclass
class _QueuePlan:
    """The events the lean pass looks at and what the backend's queue does with them."""

    in_loop: np.ndarray
    """Events the sequential pass would take (stateful hooks with an observed value)."""
    queued: np.ndarray
    """Calls the backend queues."""
    other: np.ndarray
    """Xen's ``set_pte_at`` into another address space: a plain, trapped store."""
    ev: np.ndarray
    """Queued calls and the calls that drain the queue, in order: positions of ``qp``."""
    qp: QueuePlan
    a0: np.ndarray
    """Per event: its first argument (the trace's uint32 column)."""


def _empty_copy_states(
    trace: Trace, table: CostTable, runs: Sequence[Run] | None = None
) -> set[int]:
    """The states in which the checks of the runs whose copy stays empty among ``runs``
    (default: every such run) are judged (:func:`replayer.engine.schedule.schedule`), so that
    one pass judges them all."""
    out: set[int] = set()
    for run in all_runs() if runs is None else runs:
        if copy_stays_empty(run):
            lp = LeanPass(trace, run, table, False)
            lp.cs = _Costs(lp.model, table)
            out.update(lp._schedule(lp._queue_plan()).states)
    return out


def judge_empty_copies(trace: Trace, table: CostTable) -> None:
    """Judge the checks of every run whose copy stays empty, once, on the trace (what
    the first such replay does; for timing apart)."""
    states = sorted(_empty_copy_states(trace, table))
    judged(trace, states, set)


class LeanPass(TracedPass, DeviceChecks):
    """The lean pass (:meth:`_lean`)."""

    def _check_events(self, in_loop: np.ndarray) -> np.ndarray:
        """Events after which the MMU is checked: CR3 loads, TLB flushes, checkpoints."""
        h = self.trace.hook
        names = ("write_cr3", "flush_tlb_user", "flush_tlb_kernel", "flush_tlb_single")
        at = in_loop & hooks_in(h, [_H[x] for x in names])
        cps = self.trace.checkpoints
        if cps:
            at[np.fromiter(cps, dtype=np.int64, count=len(cps))] = True
        return np.nonzero(at)[0]

    def _lean(self, absorbed: np.ndarray) -> bool:
        """The sequential pass where a proof shows no MMU check can find a page wrong.

        A ``notified`` backend (VMI's shadow, Xen's validated tables) applies each
        notification at once or, queued, in order at the flush.  If every page-table store
        reaches a frame it keeps at the moment the store is applied (the frame's last
        ``alloc_*`` is applied before it and no ``release_*`` before it is), and no
        ``alloc_pd_clone`` copies a source with updates still in flight, its copy equals the
        guest's tables whenever nothing is queued -- which is when every MMU check is made --
        so no check can find a page wrong.  Without allocation hooks (trap fallback) the
        backend keeps what it discovered; then no check may fall where a frame of the loaded
        space is wrong.  lguest's shadow (``demand``) may be wrong at a check only where a
        native TLB could still hold what the shadow holds.  Those conditions
        (:class:`_Proof`) are decided over the whole trace at once, with the queue's
        flushes from :func:`plan`; where they hold, costs come from the queue plan
        column-wise and only device events run one by one.  Where they do not, return
        False: :meth:`_sequential` simulates both copies.  Two kinds of run need no proof:
        a copy that stays empty (:mod:`replayer.engine.empty`) and lguest told of no store
        (:mod:`replayer.engine.untold`), whose checks are worked out from the page-table
        events alone.
        """
        if self.exact or self.full_check:
            return False
        if copy_stays_empty(self.run_):
            self._empty_copy()
            return True
        if untold(self.run_):
            self._untold()
            return True
        if not may_be_lean(self.run_):
            return False
        if mirrors(self.run_):
            # nothing about the tables can differ, so the checks find nothing; the guest's
            # tables are checked against the digests once per trace
            if self.model.mmu == "traced":
                self._traced_pass()
            self._lean_devices()
            return True
        tr = self.trace
        # the plan and the proofs count calls, never cycles: one per structure, whatever
        # the cost table (the last kept on the trace)
        key = structural_key(self.run_, self.table, self.full_check)
        got = _kept(tr, LEAN_PROOF, key)
        if got is None:
            got = tr.cache[LEAN_PROOF] = (key, *self._prove())
        _, p, holds, scans, faults = got
        if not holds:
            return False
        self._lean_costs(p, scans, faults)
        self._lean_devices()
        return True

    def _empty_copy(self) -> None:
        """The pass for a backend whose copy stays empty (:mod:`replayer.engine.empty`):
        costs from the queue plan, as where a proof holds, and every MMU check's row
        worked out from the guest's tables alone."""
        tr = self.trace
        p = self._plain_costs()
        # the states of the empty copies replayed after it in this process, judged on the
        # same pass (a replay of one alone plans no other's queue: 1 s of 3.6 on sched)
        more = partial(_empty_copy_states, tr, self.table, self.later)
        self.violations.append(empty_copy_rows(tr, self._schedule(p), more))
        self._lean_devices()

    def _untold(self) -> None:
        """The pass for lguest told of no store (:mod:`replayer.engine.untold`): costs from
        the queue plan, as where a proof holds, and every MMU check's rows from a walk of
        the page-table events with lguest's shadow beside the guest's tables."""
        tr, p = self.trace, self._plain_costs()
        flush_at = p.ev[p.qp.flushes]
        where = self._schedule(p)
        cache = self.model.pgdir_cache
        self.violations.extend(untold_rows(tr, where, p.queued, flush_at, cache))
        self._lean_devices()

    def _plain_costs(self) -> _QueuePlan:
        """Costs from the queue plan alone (no table discovered, no allocation faulting), as
        where a proof holds; return the plan (kept on the trace, as a proof is)."""
        tr = self.trace
        key = structural_key(self.run_, self.table, self.full_check)
        got = _kept(tr, LEAN_PROOF, key)
        if got is None:
            none = np.zeros(tr.n, dtype=np.int64)
            got = tr.cache[LEAN_PROOF] = (key, self._queue_plan(), True, none, none > 0)
        _, p, _, scans, faults = got
        self._lean_costs(p, scans, faults)
        return p

    def _schedule(self, p: _QueuePlan) -> Schedule:
        """Where the run's MMU checks are judged (:func:`schedule`).  Not kept on the trace:
        on fork each run's takes 65 MiB, 0.26 GB for the four, in the worker whose
        judge already needs the most."""
        return schedule(self.trace, p.in_loop, p.ev, p.qp, self._check_events(p.in_loop))

    def _prove(self) -> tuple[_QueuePlan, bool, np.ndarray, np.ndarray]:
        """The queue plan; whether the proof for the backend's kind of MMU holds; the
        tables discovered at each event and the allocations faulting (trap fallback)."""
        tr, m = self.trace, self.model
        p = self._queue_plan()
        scans = np.zeros(tr.n, dtype=np.int64)  # tables discovered at the event (trap)
        faults = np.zeros(tr.n, dtype=bool)  # allocations faulting on a protected frame
        ent, _ = _pte_entries(tr)
        proof = _Proof(tr, p.in_loop, p.queued, p.ev[p.qp.flushes], ent)
        if m.mmu == "demand":
            checks = self._check_events(p.in_loop)
            trapped = self.pte_mode == "trap"
            holds = Shadowed(proof, checks, p.ev, p.qp, m.pgdir_cache, trapped).holds()
        elif self.alloc_mode == "hook":
            holds = proof.notified()
        else:
            holds = proof.discovered(scans, faults, self._check_events(p.in_loop), p.ev, p.qp)
        return p, holds, scans, faults

    def _queue_plan(self) -> _QueuePlan:
        """Which calls the backend queues (by the lazy mode each is made in), which drain
        the queue, and the queue's flushes (:func:`plan`)."""
        tr, m, cs = self.trace, self.model, self.cs
        n, h = tr.n, tr.hook
        calls, leaves = _cached(tr, "call marks", call_marks)
        ent, _ = _pte_entries(tr)
        a0 = tr.arg0
        hook_mask = np.zeros(_NHOOKS + 1, dtype=bool)
        hook_mask[list(_stateful(m, cs))] = True
        in_loop = hook_mask[h] & calls

        mode = _cached(tr, "lazy_mode", lazy_mode)
        can = np.zeros((_NHOOKS + 1, 4), dtype=bool)
        for name, modes in m.batchable.items():
            can[_H[name], list(modes)] = True

        other = np.zeros(n, dtype=bool)
        if m.name == "xen-pv" and self.pte_mode == "hook":
            # xen_set_pte_at: a plain (trapped) store into another address space's table
            member = _cached(tr, "loaded_table_stores", loaded_table_stores)
            other = (h == _H["set_pte_at"]) & (ent >= 0) & ~member
        queue = m.batching is not None
        adds = np.zeros(_NHOOKS + 1, dtype=bool)
        adds[[*_PTE_HOOKS, _H["write_cr3"]]] = True
        if self.alloc_mode == "hook":
            adds[[*_ALLOCS, *_RELEASES]] = True
        if m.flush_resync:
            adds[[_H[x] for x in ("flush_tlb_user", "flush_tlb_kernel", "flush_tlb_single")]] = True
        # the events the pass takes, alone (a few of the trace's)
        il = np.flatnonzero(in_loop)
        hk_il, other_il = h[il], other[il]
        queued_il = np.zeros(len(il), dtype=bool)
        drains_il = np.zeros(len(il), dtype=bool)
        if queue:
            queued_il = can[hk_il, mode[il]] & ~other_il
            hcn = np.where(other_il, cs.t(m.wp_fault)[3], cs.hc[hk_il])
            synchronous = (hcn > 0) & (h[il] != LAZY)
            drains_il = ~queued_il & (synchronous | leaves[il])
        queued = np.zeros(n, dtype=bool)
        queued[il] = queued_il
        sel = queued_il | drains_il
        ev = il[sel]
        q_ev = queued_il[sel]
        qp = plan(q_ev, q_ev & adds[hk_il[sel]], drains_il[sel], max(m.batch_capacity, 1))
        return _QueuePlan(in_loop, queued, other, ev, qp, a0)

    def _lean_costs(self, p: _QueuePlan, scans: np.ndarray, faults: np.ndarray) -> None:
        """Costs of the events the queue plan changes, column-wise: queued calls, the
        flushes (at a drain or when the queue is full), trapped stores, timer writes,
        tables discovered and allocations faulting on a protected frame."""
        tr, m, cs, table = self.trace, self.model, self.cs, self.table
        n, h, a0 = tr.n, tr.hook, p.a0
        queued, other, ev, qp = p.queued, p.other, p.ev, p.qp
        cap = max(m.batch_capacity, 1)
        timer = np.zeros(n, dtype=bool)
        timer_t = cs.t(m.timer_write) if m.timer_write else None
        if timer_t is not None:
            timer = p.in_loop & hooks_in(h, _APIC_HOOKS[:2]) & (a0 == 0x380) & ~queued
        # the events that drain the queue, apart (a few): what they drain, and the rest 0
        drains = np.zeros(n, dtype=bool)
        drains[ev[qp.drained > 0]] = True
        cap_flush = np.zeros(n, dtype=bool)
        cap_flush[ev[qp.capacity_flush]] = True
        async_flush = np.zeros(n, dtype=bool)
        if m.name == "lguest":
            # LHCALL_FLUSH_ASYNC on leaving lazy mode or flushing, even with nothing queued
            async_flush = p.in_loop & _cached(tr, "call marks", call_marks)[1] & ~drains
        idx = np.nonzero(queued | drains | other | timer | (scans > 0) | faults | async_flush)[0]
        hx = h[idx]
        # as narrow as the run's own columns: idx can hold most of a trace's events
        cy, me = cs.cyc[hx], cs.mech[hx]
        ex_, hc_, tp_ = (a[hx] for a in (cs.ex, cs.hc, cs.tr))
        nbf, nbt = np.zeros(len(idx), dtype=np.int32), np.zeros(len(idx), dtype=np.int32)
        cols = (cy, me, ex_, hc_, tp_)

        def put(sel: np.ndarray, t: tuple[int, ...]) -> None:
            for col, x in zip(cols, t, strict=False):
                col[sel] = x

        put(other[idx], cs.t(m.wp_fault))
        flush_t = cs.t(m.flush_cost)
        entry = table["batch_entry"]
        # what each drain applies (the drains are a few of idx: only they are searched)
        d = np.zeros(len(idx), dtype=np.int64)
        di = np.flatnonzero(drains[idx])
        d[di] = qp.drained[np.searchsorted(ev, idx[di])]
        dm = d > 0
        lz = dm & (h[idx] == LAZY)
        cy[dm & ~lz] += flush_t[0] + d[dm & ~lz] * entry
        cy[lz] = cs.cyc[LAZY] + flush_t[0] + d[lz] * entry
        me[lz] = MECH_CODE["batch_flush"]
        nbf[dm], nbt[dm] = 1, d[dm]
        qm = queued[idx]
        qcost = cs.t(c("queued", "call_ret", "queue_entry"))
        put(qm, (*qcost[:2], 0, 0, 0))
        cf = qm & cap_flush[idx]
        cy[cf] += flush_t[0] + cap * entry
        me[cf] = MECH_CODE["batch_flush"]
        nbf[cf], nbt[cf] = 1, cap
        af = async_flush[idx]
        cy[af] += table["hypercall"]
        me[af] = MECH_CODE["hypercall"]
        hc_[af] = 1
        if timer_t is not None:
            put(timer[idx], timer_t)
        cy += scans[idx] * table["scan_table"]
        fl = faults[idx]
        cy[fl] += table["pv_fault"] + table["emulate_write"]
        tp_[fl] += 1
        self.dyn_cols.append((idx, cy, me, ex_, hc_, tp_, nbf, nbt))

    def _lean_devices(self) -> None:
        """The devices' rows and lost interrupts (:func:`device_pass`, once per trace): the
        MMU check at each checkpoint finds nothing (the copies are equal whenever one is
        made)."""
        found, self.lost = device_pass(self.trace, self.apic_seen)
        self.violations.extend(found)
