"""The replay engine: one backend (row of ``replayer.backends``) re-driven by a trace.

No guest runs.  The recorded stream is the reference (native semantics at
CPL 1); the engine feeds each event to the backend's mechanisms and records
what the event cost on that backend and anything the backend got wrong.
:func:`replay` takes a decoded trace, a run (backend row and ablation) and a cost
table, and gives a :class:`RunResult`.

Three passes:

1. *static costs* (vectorized): most events cost what their hook or kind
   costs in the backend row, gathered by hook id over the whole stream;
2. *the sequential pass*: only events whose effect depends on state -- page
   table writes and allocations, CR3 loads and flushes, lazy-mode batches,
   APIC and IOAPIC accesses, control-register reads, checkpoints -- run
   through a Python loop over precomputed index lists;
3. *the virtual CPU* (vectorized): the interrupt flag as the backend sees it,
   when it delivers each recorded interrupt, what unmasking with one pending
   costs, and the ``save_fl`` results and privilege checks.

Correctness checks (violation rows ``seq, check, field, expected, actual,
detail``):

* ``irq.masked`` / ``irq.lost`` -- an interrupt delivered while the guest had
  them masked, or never delivered (the backend never unmasked, or its virtual
  APIC would not take it); latency per interrupt goes to the interrupts table;
* ``mmu.missing`` / ``mmu.stale`` / ``mmu.perm`` -- at every CR3 load, TLB flush
  and checkpoint (deferred to the batch flush while calls are queued), pages
  whose effective translation differs from the guest's intent;
* ``device.lapic`` / ``device.ioapic`` / ``device.cpu`` -- registers at a
  checkpoint that differ from the recorded machine's;
* ``result`` -- a value the guest read (``save_fl``, ``read_cr*``,
  ``apic_read``, ``get_debugreg``, LAPIC/IOAPIC MMIO reads) that differs from
  the recorded one;
* ``privilege`` -- guest code at CPL 0 where the backend requires CPL 1;
* ``trace.mmu`` -- the replay's own rebuild of the guest tables disagrees with
  a checkpoint's digest (the trace, or this replayer, is wrong; every backend
  reports it).

Where each stage lives (each module's docstring says what it takes and gives):

==================  ================================================================
``derived``         per-trace data every run shares (entry stores, loaded spaces, ...)
``static``          pass 1: static costs from the backend row, and native costs
``lean``            pass 2, lean: costs from the queue plan where ``proofs`` say the
                    backend's copy of the tables cannot differ at any check
``proofs``          the whole-trace proofs ``lean`` relies on (``shadow``: lguest's)
``empty``           ... the checks of a copy that stays empty, from the guest's tables
``untold``          ... the checks of lguest told of no store, its shadow kept beside
                    them (both walk the page-table events alone, compiled:
                    ``emptywalk``, ``untoldwalk``; the events they take: ``walk``)
``sequential``      pass 2, simulated: both copies of the tables, event by event
``runs``            ... runs of entry stores taken together, the queue's flush
``traced``          pass 2 for write-protecting VMMs (shadow paging, BT)
``cpu``             pass 3: the virtual CPU (interrupt delivery and its cost)
``checks``          devices and the checks that need no table simulation
``result``          what a replay gives (``RunResult``, ``Violation``, ``CHECKS``)
``summary``         the JSON-able summary of one replay
``state``           the state one replay holds; each pass is a mixin of it
``common``          hook-id sets and the per-trace cache
==================  ================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from replayer.backends import Run
from replayer.costs import CostTable
from replayer.engine.checks import device_pass, trace_mmu_checks
from replayer.engine.common import _H, _cached, _kept
from replayer.engine.cpu import VirtualCpu
from replayer.engine.derived import (
    _fill_table,
    absorbed_mmio,
    fill_changes,
    loaded_spaces,
    loaded_table_stores,
    pte_entries,
)
from replayer.engine.empty import JUDGED, copy_stays_empty
from replayer.engine.lean import (
    LEAN_PROOF,
    LeanPass,
    call_marks,
    judge_empty_copies,
    lazy_mode,
    may_be_lean,
)
from replayer.engine.result import CHECKS, FAMILIES, FAMILY, RunResult, Sparse, Violation
from replayer.engine.sequential import SequentialPass
from replayer.engine.state import sequential_key, structural_key
from replayer.engine.static import _Costs, _static, cost_classes, native_cycles
from replayer.engine.summary import group_codes, summarize
from replayer.engine.violations import Violations
from replayer.engine.wholerun import guest_instructions
from replayer.engine.xenpin import apply_pinning, pin_loads, pinned_stores
from replayer.mechanisms.registers import control_registers, read_mismatches
from replayer.mechanisms.vcpu import backend_if, recorded_interrupts
from replayer.trace import K_HOOK, Trace

__all__ = [
    "CHECKS",
    "FAMILIES",
    "FAMILY",
    "RunResult",
    "Violation",
    "_H",
    "_fill_table",
    "copy_stays_empty",
    "judge_empty_copies",
    "loaded_spaces",
    "group_codes",
    "loaded_table_stores",
    "may_be_lean",
    "native_cycles",
    "native_key",
    "prepare",
    "spaced",
    "SPACED",
    "pte_entries",
    "release",
    "replay",
    "sequential_key",
    "summarize",
]


#: What reads the tables the loaded directory names over the trace (:func:`spaced`), by
#: cache key: the longest part of :func:`prepare`, and what needs nothing else of it.
SPACED = ("loaded_spaces", "loaded_table_stores", "xen_pinned_stores", "xen_pin_loads")


def spaced(trace: Trace) -> dict[str, Any]:
    """The part of :func:`prepare` that reads the tables the loaded directory names: those
    tables over the trace (:func:`loaded_spaces`), the stores into them and Xen's pinned
    stores and pin loads, by cache key (:data:`SPACED`); it needs only the entries each
    store names, so a helper can work it out while :func:`prepare` does the rest."""
    _cached(trace, "loaded_spaces", loaded_spaces)
    _cached(trace, "loaded_table_stores", loaded_table_stores)
    _cached(trace, "xen_pinned_stores", pinned_stores)
    _cached(trace, "xen_pin_loads", pin_loads)
    return {k: trace.cache[k] for k in SPACED}


def prepare(trace: Trace, spaces: Callable[[], dict[str, Any]] | None = None) -> None:
    """Derive what every replay of ``trace`` shares (kept in ``trace.cache``), so that
    processes forked afterwards start with it.

    ``spaces``: gives :func:`spaced` worked out elsewhere meanwhile (a helper process: it
    is the longest part); asked for once the parts that do not need it are done."""
    absorbed = _cached(trace, "absorbed", absorbed_mmio)
    _cached(trace, "cost classes", lambda t: cost_classes(t, absorbed))
    _cached(trace, "group_codes", group_codes)
    _cached(trace, "fill_changes", fill_changes)
    regs = _cached(trace, "control_registers", control_registers)
    _cached(trace, "recorded_interrupts", recorded_interrupts)
    _cached(trace, "read_mismatches", lambda t: read_mismatches(t, regs))
    trace_mmu_checks(trace)
    device_pass(trace, apic_seen=True)  # every run's but vmi-without-apic-none's
    _cached(trace, "guest_instructions", guest_instructions)
    _cached(trace, "lazy_mode", lazy_mode)
    _cached(trace, "call marks", call_marks)
    # then what reads the tables the loaded directory names
    if spaces is not None and any(k not in trace.cache for k in SPACED):
        trace.cache.update(spaces())
    spaced(trace)


def native_key(table: CostTable) -> str:
    """The trace's cache key of the native cycles of each event under ``table``."""
    return f"native_cycles {table.sha256}"


def release(trace: Trace, table: CostTable, later: list[Run]) -> None:
    """Let go of what the last run left on the trace that none of the ``later`` runs
    (under ``table``) reuses: its sequential pass (:func:`sequential_key`), its lean proof
    or queue plan (:func:`structural_key`), the empty copies' judged checks.  On a 10 M-
    event trace these are hundreds of MiB each, held otherwise until a later run
    replaces them."""
    cache = trace.cache
    kept = cache.get("sequential")
    if kept is not None and all(kept[0] != sequential_key(r, table) for r in later):
        del cache["sequential"]
    kept = cache.get(LEAN_PROOF)
    if kept is not None and all(kept[0] != structural_key(r, table) for r in later):
        del cache[LEAN_PROOF]
    if not any(copy_stays_empty(r) for r in later):
        cache.pop(JUDGED, None)


def _costed_apart(
    dyn_cols: list[tuple[Any, ...]], cols: tuple[np.ndarray, ...], n: int
) -> tuple[Sparse, Sparse]:
    """Write what the events the passes costed apart (each event once) cost into the
    columns made from the row (``cols``: cycles, mechanism, exits, hypercalls, traps);
    return the lazy-MMU batch columns (flushes, batched updates), which only they set."""
    batch: list[list[np.ndarray]] = [[], [], []]  # events, flushes, batched updates
    for idx, *col in dyn_cols:
        for arr, v in zip(cols, col[:5], strict=True):
            _put(arr, idx, v)
        # only the events where a batch column is not 0 (each event is in one pass's
        # costs: collected whole, a lean vmi's 3 M events took 136 MiB more on fork)
        at = np.atleast_1d(idx)
        flushes, queued = (np.broadcast_to(v, at.shape) for v in col[5:])
        some = (flushes != 0) | (queued != 0)
        for got, x in zip(batch, (at, flushes, queued), strict=True):
            got.append(x[some])
    at, flushes, queued = (np.concatenate([np.zeros(0, np.int64), *x]) for x in batch)
    bf, batched = (Sparse(n, at, x.astype(np.uint32)) for x in (flushes, queued))
    return bf, batched


def _put(arr: np.ndarray, idx: Any, v: Any) -> None:
    """``arr[idx] = v`` (each event of ``idx`` once), but for the events where the value
    and ``arr`` are both 0: a fresh column of zeros keeps unwritten the pages where only
    zeros would be written, and they take no memory (vmi's exits on 17 M events: 65 MiB
    for a column that stays 0, from a pass's 340,000 events spread over all of it)."""
    if np.ndim(idx) == 0:
        arr[idx] = v
        return
    v = np.asarray(v)
    if v.ndim == 0:
        if v:
            arr[idx] = v
        else:
            arr[idx[arr[idx] != 0]] = 0
        return
    keep = v != 0
    keep |= arr[idx] != 0
    if keep.all():
        # the usual case for cycles: no copies of the events and values kept (on fork a
        # lean vmi's 4.7 M events: 0.19 s -> 0.10 s, most of it faulting in the copies)
        arr[idx] = v
        return
    arr[idx[keep]] = v[keep]


class _Replay(LeanPass, SequentialPass, VirtualCpu):
    """One replay; :meth:`run` does the three passes."""

    def run(
        self, progress: Callable[[int], None] | None, later: Sequence[Run] | None = None
    ) -> RunResult:
        tr, m, table = self.trace, self.model, self.table
        n = tr.n
        self.later = list(later or ())
        absorbed = _cached(tr, "absorbed", absorbed_mmio)
        self.cs = _Costs(m, table)
        self.vif_b = _cached(  # read only
            tr, f"backend if {self.irq_tracks}", lambda t: backend_if(t.vif, self.irq_tracks)
        )
        self.cregs = _cached(tr, "control_registers", control_registers)

        # runs that differ in nothing the sequential pass reads (an ablation that swaps no
        # cost in, as cpl's) share it: the last one is kept on the trace
        key = sequential_key(self.run_, table, self.full_check, self.exact)
        shared = _kept(tr, "sequential", key)
        if shared is not None:
            _, dyn_cols, found, lost = shared
            self.dyn_cols, self.lost = list(dyn_cols), lost
            self.violations.extend(found)
            how = "shared"
        else:
            self.dyn_cols = []
            how = "lean" if self._lean(absorbed) else "exact"
            dyn = self._sequential(absorbed, progress) if how == "exact" else []
            if dyn:
                idx = np.fromiter((d[0] for d in dyn), dtype=np.int64, count=len(dyn))
                cols = np.array(dyn, dtype=np.int64)[:, 1:]
                self.dyn_cols.insert(0, (idx, *cols.T))
            tr.cache["sequential"] = (key, tuple(self.dyn_cols), tuple(self.violations), self.lost)
        if later is not None:
            release(tr, table, list(later))
        # the per-event columns only now, once the pass's whole-trace temporaries (a proof,
        # the empty copies' judge, a walk) are gone: a run's peak holds one or the other
        _, cyc, mech, ex, hc, trp = _static(tr, m, table, absorbed, self.cs)
        nat = _cached(tr, native_key(table), lambda t: native_cycles(t, table, absorbed))
        bf, batched = _costed_apart(self.dyn_cols, (cyc, mech, ex, hc, trp), n)
        if m.name == "xen-pv" and self.pte_mode == "hook":
            apply_pinning(tr, table, nat, (cyc, mech, ex, hc, trp))
        if self.run_.fallback == "trap" and self.run_.without in ("cpl", "irq"):
            # the kernel runs binary-translated: every call it makes pays BT's overhead
            # (added in place: a gathered copy of the calls' cycles is 100 MiB on 17 M events)
            calls = (tr.kind == K_HOOK) & (tr.cpl == 1)
            np.add(cyc, table["bt_call_overhead"], out=cyc, where=calls)

        self._cpu_checkpoints()
        self.violations.extend(trace_mmu_checks(tr))
        ints = self._interrupts(cyc, mech, ex, hc, trp, bf)
        self._vectorized_checks()
        if progress:
            progress(n)

        res = RunResult(
            run=self.run_,
            costs=table,
            trace=tr,
            # the run's own arrays, non-negative: reinterpreted, not copied
            cycles=cyc.view(np.uint64),
            native_cycles=nat,  # the trace's, shared
            mechanism=mech,
            exits=ex.view(np.uint32),
            hypercalls=hc.view(np.uint32),
            traps=trp.view(np.uint32),
            batch_flushes=bf,
            batched=batched,
            violations=Violations(self.violations),
            interrupts=ints,
            sequential=how,
        )
        return res


def replay(
    trace: Trace,
    run: Run,
    table: CostTable,
    progress: Callable[[int], None] | None = None,
    full_check: bool = False,
    exact: bool = False,
    summary: bool = True,
    later: Sequence[Run] | None = None,
) -> RunResult:
    """Replay ``trace`` on ``run``'s backend under cost table ``table``.

    ``full_check`` compares every page at every MMU check (instead of incrementally);
    ``exact`` runs the whole sequential pass even where the lean pass applies (both are for
    tests: the results are the same).  ``summary=False`` leaves ``summary`` empty, for a
    caller that reads only the columns.  ``later``: the runs still to be replayed on this
    trace under ``table``, if the caller knows them; what none of them reuses (:func:`release`)
    is then let go of as soon as the pass is done, before the per-event columns are made
    (on a 17 M-event trace a lean proof is about 0.3 GiB).
    """
    r = _Replay(trace, run, table, full_check, exact).run(progress, later)
    if summary:
        r.summary = summarize(r)
    return r
