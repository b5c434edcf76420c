"""The replay engine: one backend (row of ``replayer.backends``) re-driven by a trace.

No guest runs.  The recorded stream is the reference (native semantics at
CPL 1); the engine feeds each event to the backend's mechanisms and records
what the event cost on that backend and anything the backend got wrong.

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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from pvscope.digest import mapping_digest
from pvscope.hooks import HOOKS
from replayer.backends import (
    MECH_CODE,
    MECHANISMS,
    MMU_ONLY_HOOKS,
    NATIVE,
    Backend,
    Cost,
    Run,
    c,
)
from replayer.costs import CostTable
from replayer.mechanisms.apic import (
    IOAPIC_BASE,
    LAPIC_BASE,
    UNBACKED,
    VirtualIoapic,
    VirtualLapic,
)
from replayer.mechanisms.batch import (
    LAZY_CPU,
    LAZY_FLUSH,
    LAZY_MMU,
    LAZY_NONE,
    BatchQueue,
    QueuePlan,
    plan,
)
from replayer.mechanisms.coherence import ViewPair
from replayer.mechanisms.pagetables import (
    CR0_PG,
    CR4_PGE,
    PAGE_OFFSET,
    PRESENT,
    PSE,
    Frames,
    GuestMMU,
    present_mappings,
)
from replayer.mechanisms.registers import control_registers, read_mismatches
from replayer.mechanisms.tracer import WriteTracer
from replayer.mechanisms.vcpu import (
    backend_if,
    delivery_points,
    recorded_interrupts,
    unmask_events,
)
from replayer.trace import (
    HOOK_ID,
    K_EXCEPTION,
    K_HOOK,
    K_INTERRUPT,
    K_MMIO_READ,
    K_MMIO_WRITE,
    K_SOFTINT,
    Trace,
)

#: Check names, in the order summaries list them.
CHECKS = (
    "irq.masked",
    "irq.lost",
    "mmu.missing",
    "mmu.stale",
    "mmu.perm",
    "device.lapic",
    "device.ioapic",
    "device.cpu",
    "result",
    "privilege",
    "trace.mmu",
)
#: Check family of each check (the requirement a ``--fallback none`` ablation breaks).
FAMILY = {
    "irq.masked": "interrupt",
    "irq.lost": "interrupt",
    "mmu.missing": "mmu",
    "mmu.stale": "mmu",
    "mmu.perm": "mmu",
    "device.lapic": "device",
    "device.ioapic": "device",
    "device.cpu": "device",
    "result": "result",
    "privilege": "privilege",
    "trace.mmu": "trace",
}
FAMILIES = ("interrupt", "mmu", "device", "result", "privilege", "trace")

_H = HOOK_ID
_NHOOKS = len(HOOKS)
_APIC_HOOKS = (_H["apic_write"], _H["apic_write_atomic"], _H["apic_read"])
_UNMASKERS = (_H["irq_enable"], _H["restore_fl"])
#: What a store taken in a run does to the two copies, by its kind (engine ``stores``).
_ACT = (0, 1, 2, 0, 2, 3)
#: Hooks that allocate (zero or clone) a page-table frame, and that release one.
_ALLOCS = [_H["alloc_pt"], _H["alloc_pd"], _H["alloc_pd_clone"]]
_RELEASES = [_H["release_pt"], _H["release_pd"]]
#: Hooks that store one page-table entry.
_PTE_HOOKS = [_H[n] for n in ("set_pte", "set_pte_at", "set_pmd", "pte_update", "pte_update_defer")]
#: Hooks that only change page tables, CR3 or the TLB.
_MMU_ONLY = {_H[n] for n in MMU_ONLY_HOOKS}
#: Hooks the sequential pass handles on every backend.
_STATEFUL = _MMU_ONLY | {
    _H[n]
    for n in (
        "set_lazy_mode",
        "write_cr0",
        "write_cr4",
        "apic_write",
        "apic_write_atomic",
        "apic_read",
    )
}
_PRIVILEGED = np.array([h.requirement == "cpl" or h.rom == "trap" for h in HOOKS] + [False])


def _fill_table(frames: Frames, pfn: int, clone: tuple[int, int, int] | None) -> None:
    """A table as ``alloc_*`` leaves it: zeroed, or for ``alloc_pd_clone`` (source frame,
    first entry, count) with those entries copied from the source."""
    page = frames.page(pfn)
    if clone is None:
        page[:] = 0
        return
    src, st, count = clone
    lo, hi = min(st, 1024), min(st + count, 1024)
    vals = frames.page(src)[lo:hi].copy()
    page[:] = 0
    page[lo:hi] = vals


@dataclass
class Violation:
    """One row of the violations table."""

    seq: int
    check: str
    field: str
    expected: str
    actual: str
    detail: str


@dataclass
class RunResult:
    """Everything one replay produced."""

    run: Run
    costs: CostTable
    trace: Trace
    cycles: np.ndarray
    native_cycles: np.ndarray
    mechanism: np.ndarray
    exits: np.ndarray
    hypercalls: np.ndarray
    traps: np.ndarray
    batch_flushes: np.ndarray
    batched: np.ndarray
    violations: list[Violation]
    interrupts: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)
    sequential: str = "exact"
    """How the sequential pass ran: ``exact`` (both copies simulated), ``lean`` (proved
    equal, :meth:`_Replay._lean`) or ``shared`` (reused from a run with an equal pass)."""


class _Costs:
    """A backend row's costs resolved to cycles under one cost table."""

    def __init__(self, model: Backend, table: CostTable) -> None:
        self.table = table
        self.model = model
        n = _NHOOKS + 1
        self.cyc = np.zeros(n, dtype=np.int64)
        self.mech = np.full(n, MECH_CODE["none"], dtype=np.int8)
        self.ex = np.zeros(n, dtype=np.int32)
        self.hc = np.zeros(n, dtype=np.int32)
        self.tr = np.zeros(n, dtype=np.int32)
        for h in HOOKS:
            self.cyc[h.id], self.mech[h.id], self.ex[h.id], self.hc[h.id], self.tr[h.id] = self.t(
                model.cost(h.name)
            )

    def lists(self) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
        """Per-hook (cycles, mechanism codes, exits, hypercalls, traps) as Python lists, for
        the sequential pass's loop."""
        return (
            self.cyc.tolist(),
            self.mech.tolist(),
            self.ex.tolist(),
            self.hc.tolist(),
            self.tr.tolist(),
        )

    def t(self, cost: Cost) -> tuple[int, int, int, int, int]:
        """(cycles, mechanism code, exits, hypercalls, traps)."""
        return (
            cost.cycles(self.table),
            MECH_CODE[cost.mechanism],
            cost.exits,
            cost.hypercalls,
            cost.traps,
        )


def _static(trace: Trace, model: Backend, table: CostTable, absorbed: np.ndarray) -> tuple:
    """Per-event (cycles, mech, exits, hypercalls, traps) from the row alone."""
    cs = _Costs(model, table)
    hk = np.where(trace.hook >= 0, trace.hook, _NHOOKS).astype(np.int64)
    cyc, mech = cs.cyc[hk].copy(), cs.mech[hk].copy()
    ex, hc, tr = cs.ex[hk].copy(), cs.hc[hk].copy(), cs.tr[hk].copy()
    kind = trace.kind
    pf = (kind == K_EXCEPTION) & (trace.arg0 == 14)
    for mask, name in (
        (kind == K_INTERRUPT, "interrupt"),
        (pf, "pagefault"),
        ((kind == K_EXCEPTION) & ~pf, "exception"),
        (kind == K_SOFTINT, "softint"),
        (((kind == K_MMIO_READ) | (kind == K_MMIO_WRITE)) & ~absorbed, "mmio"),
        (absorbed, None),
    ):
        if not mask.any():
            continue
        t = cs.t(model.costs[name]) if name else cs.t(c("included"))
        cyc[mask], mech[mask], ex[mask], hc[mask], tr[mask] = t
    return cs, cyc, mech, ex, hc, tr


def absorbed_mmio(trace: Trace) -> np.ndarray:
    """MMIO events that are the LAPIC access an apic_* hook's native body just made."""
    n = trace.n
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    prev_hook = trace.hook[:-1]
    is_apic = np.isin(prev_hook, _APIC_HOOKS)
    mmio = (trace.kind[1:] == K_MMIO_READ) | (trace.kind[1:] == K_MMIO_WRITE)
    same = trace.arg0[1:].astype(np.int64) == LAPIC_BASE + trace.arg0[:-1].astype(np.int64)
    out[1:] = is_apic & mmio & same
    return out


def pte_entries(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Per event: the page-table entry a PTE/PMD write names (``pfn * 1024 + index``, -1 for
    other events, -2 for a pte_update with no observed value) and the value written.

    Entry pointers are physical until a ``write_cr0`` turns paging on, linear-map addresses
    (physical + PAGE_OFFSET) after it.
    """
    n = trace.n
    h = trace.hook
    is_cr0 = h == _H["write_cr0"]
    last = np.where(is_cr0, np.arange(n), -1)
    np.maximum.accumulate(last, out=last)
    before = np.empty(n, dtype=np.int64)
    before[0] = -1
    before[1:] = last[:-1]
    pg = np.zeros(n, dtype=bool)
    has = before >= 0
    pg[has] = (trace.arg0[before[has]] & 0x80000000) != 0
    two = np.isin(h, [_H["set_pte"], _H["set_pmd"]])
    at = h == _H["set_pte_at"]
    upd = np.isin(h, [_H["pte_update"], _H["pte_update_defer"]])
    ptr = np.where(two, trace.arg0, np.where(at | upd, trace.arg2, 0)).astype(np.int64)
    val = np.where(
        two, trace.arg1, np.where(at, trace.arg3, (trace.result & 0xFFFFFFFF).astype(np.uint32))
    ).astype(np.int64)
    phys = np.where(pg, (ptr - PAGE_OFFSET) & 0xFFFFFFFF, ptr)
    ent = (phys >> 12) * 1024 + ((phys & 0xFFF) >> 2)
    ent = np.where(two | at | (upd & trace.has_result), ent, -1)
    ent = np.where(upd & ~trace.has_result, -2, ent)
    return ent.astype(np.int64), val


def _cached(trace: Trace, key: str, make: Callable[[Trace], Any]) -> Any:
    """``make(trace)``, once per trace (the caller must not change what it returns)."""
    got = trace.cache.get(key)
    if got is None:
        got = trace.cache[key] = make(trace)
    return got


def _pte_entries(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pte_entries`, once per trace."""
    got: tuple[np.ndarray, np.ndarray] = _cached(trace, "pte_entries", pte_entries)
    return got


def _frames_needed(trace: Trace, ent: np.ndarray) -> int:
    """Frames the guest's tables need, at least (the store grows beyond on demand)."""
    mem_mib = int(((trace.manifest.get("machine") or {}).get("mem_mib")) or 64)
    frames = max(mem_mib, 4) * 256
    if len(ent):
        frames = max(frames, int(ent.max() >> 10) + 1)
    fills = np.isin(trace.hook, _ALLOCS)
    if fills.any():
        frames = max(frames, int(trace.arg0[fills].max()) + 1, int(trace.arg1[fills].max()) + 1)
    return frames


def _digest_of(guest: GuestMMU, overlay: list[tuple[int, int, int]] = ()) -> int:  # type: ignore[assignment]
    """The mapping digest of the guest's loaded space, with entries overlaid."""
    pd = guest.pd
    if not guest.paging or pd is None:
        return mapping_digest([])
    mem = guest.frames.mem
    saved = []
    for pfn, idx, v in overlay:
        guest.frames.grow(pfn)
        mem = guest.frames.mem
        e = (pfn << 10) | idx
        saved.append((e, mem[e]))
        mem[e] = v
    try:
        return mapping_digest(present_mappings(guest.frames, pd))
    finally:
        for e, v in reversed(saved):
            guest.frames.mem[e] = v


def _pending_in_place(
    trace: Trace, guest: GuestMMU, k: int, window: int = 64
) -> list[tuple[int, int, int]]:
    """In-place PTE changes reported (pte_update*) in the few events after ``k``."""
    out = []
    for j in range(k + 1, min(k + 1 + window, trace.n)):
        h = int(trace.hook[j])
        if h in (_H["pte_update"], _H["pte_update_defer"]) and trace.has_result[j]:
            pfn, idx = guest.locate(int(trace.arg2[j]))
            out.append((pfn, idx, int(trace.result[j]) & 0xFFFFFFFF))
        elif h >= 0 and HOOKS[h].group == "mmu":
            break  # the guest moved on: later reports are of later stores
    return out


def trace_mmu_checks(trace: Trace) -> list[Violation]:
    """``trace.mmu``: checkpoints whose digest the guest tables rebuilt from the hooks miss.

    The guest's tables do not depend on the backend, so this is one pass per trace (kept
    in ``trace.cache``) over the events that change them: entry writes, table
    allocations (zeroed or cloned), CR0 and CR3 loads.
    """
    got = trace.cache.get("trace.mmu")
    if got is not None:
        return list(got)
    ent, val = _pte_entries(trace)
    cps = {
        k: cp["mmu"]["digest"]
        for k, cp in trace.checkpoints.items()
        if "digest" in cp.get("mmu", {})
    }
    out: list[Violation] = []
    if cps:
        guest = GuestMMU(nframes=_frames_needed(trace, ent))
        frames = guest.frames
        h = trace.hook
        fill = np.isin(h, _ALLOCS)
        regs = (h == _H["write_cr3"]) | (h == _H["write_cr0"])
        want = (ent >= 0) | fill | regs
        cp_idx = np.fromiter(sorted(cps), dtype=np.int64, count=len(cps))
        want[cp_idx] = True
        sel = np.nonzero(want)[0]
        is_cp = np.zeros(trace.n, dtype=bool)
        is_cp[cp_idx] = True
        # runs of plain entry writes between the events that need more
        other = np.nonzero((ent[sel] < 0) | is_cp[sel])[0].tolist()
        e_l, v_l = ent[sel].tolist(), val[sel].tolist()
        k_l, h_l = sel.tolist(), h[sel].tolist()
        a0, a1, a2, a3 = trace.arg0, trace.arg1, trace.arg2, trace.arg3
        WCR3, WCR0, CLONE = _H["write_cr3"], _H["write_cr0"], _H["alloc_pd_clone"]
        mem = frames.mem
        start = 0
        for pos in other + [len(k_l)]:
            # (the store already holds every frame an entry write names)
            for e, v in zip(e_l[start:pos], v_l[start:pos], strict=True):
                mem[e] = v
            start = pos + 1
            if pos == len(k_l):
                break
            k, hk = k_l[pos], h_l[pos]
            e = e_l[pos]
            if e >= 0:
                if e >= frames.nframes << 10:
                    frames.grow(e >> 10)
                mem = frames.mem
                mem[e] = v_l[pos]
            elif hk == WCR3:
                guest.cr3 = int(a0[k])
            elif hk == WCR0:
                guest.paging = bool(int(a0[k]) & CR0_PG)
            elif fill[k]:
                pfn = int(a0[k])
                _fill_table(
                    frames, pfn, (int(a1[k]), int(a2[k]), int(a3[k])) if hk == CLONE else None
                )
                mem = frames.mem
            if is_cp[k]:
                want_d = cps[k]
                mine = _digest_of(guest)
                if mine != want_d:
                    # a checkpoint can fall between an in-place store to a PTE and the
                    # pte_update that reports it: try the values reported just after it
                    pending = _pending_in_place(trace, guest, k)
                    for m in range(1, len(pending) + 1):
                        mine = _digest_of(guest, pending[:m])
                        if mine == want_d:
                            break
                if mine != want_d:
                    out.append(
                        Violation(
                            k,
                            "trace.mmu",
                            "digest",
                            _hex(want_d),
                            _hex(mine),
                            "the page tables rebuilt from the hooks differ from the recorded "
                            "machine's",
                        )
                    )
                mem = frames.mem
    trace.cache["trace.mmu"] = tuple(out)
    return out


def _directory_frames(trace: Trace) -> np.ndarray:
    """Frames ever loaded as a directory or cloned from, sorted: the only ones whose
    contents a per-trace pass over the guest's directories needs."""
    h = trace.hook
    return np.unique(
        np.concatenate(
            [
                trace.arg0[h == _H["write_cr3"]].astype(np.int64) >> 12,
                trace.arg1[h == _H["alloc_pd_clone"]].astype(np.int64),
            ]
        )
    )


@dataclass
class LoadedSpaces:
    """The guest's loaded address space over a trace: which page tables its directory
    names, when (backend-independent, one pass per trace: :func:`loaded_spaces`)."""

    spells: np.ndarray
    """(table frame, joined after event, left after event) rows, sorted: the directory
    loaded after the first event names the table until after the second (the trace's
    length: to the end)."""
    at_cr3: dict[int, tuple[int, ...]]
    """write_cr3 event -> the tables the directory it loads names, then."""
    at_invlpg: dict[int, int]
    """flush_tlb_single event -> the table the loaded directory's entry for the address
    names then (-1: none)."""


def loaded_spaces(trace: Trace) -> LoadedSpaces:
    """The tables the guest's loaded directory names, over the whole trace.

    Only frames ever loaded as a directory (or cloned from) are rebuilt, and of their
    stores only those into the loaded directory or before the frame is next loaded or
    cloned from (frames pass between directory and table use); the loaded directory's
    tables are kept as counts, changed by stores to it.
    """
    ent, val = _pte_entries(trace)
    h = trace.hook
    WCR3, CLONE = _H["write_cr3"], _H["alloc_pd_clone"]
    fills = np.isin(h, _ALLOCS)
    is_cr3 = h == WCR3
    store = ent >= 0
    dirs = _directory_frames(trace)
    if not len(dirs):
        return LoadedSpaces(np.zeros((0, 3), dtype=np.int64), {}, {})
    row = {int(d): i for i, d in enumerate(dirs.tolist())}
    mem = np.zeros((len(dirs), 1024), dtype=np.int64)
    # a store matters if it is into the loaded directory, or its frame is loaded or cloned
    # from before it is next zeroed (frames pass between directory and table use)
    span = trace.n + 1
    seq = np.arange(trace.n, dtype=np.int64)
    last = np.where(is_cr3, seq, -1)
    np.maximum.accumulate(last, out=last)
    pd_at = np.full(trace.n, -1, dtype=np.int64)
    pd_at[1:] = np.where(last[:-1] >= 0, trace.arg0[np.maximum(last[:-1], 0)] >> 12, -1)
    uses = np.sort(
        np.concatenate(
            [
                (trace.arg0[is_cr3].astype(np.int64) >> 12) * span + seq[is_cr3],
                trace.arg1[h == CLONE].astype(np.int64) * span + seq[h == CLONE],
            ]
        )
    )
    zeroed = np.sort(trace.arg0[fills].astype(np.int64) * span + seq[fills])
    sk = np.nonzero(store)[0]
    sf = ent[sk] >> 10

    def after(keys: np.ndarray) -> np.ndarray:  # the frame's next event of a kind
        i = np.searchsorted(keys, sf * span + sk, side="right")
        nxt = keys[np.minimum(i, len(keys) - 1)] if len(keys) else np.zeros(len(sk), np.int64)
        return np.where((i < len(keys)) & (nxt // span == sf), nxt % span, span)

    next_use, next_zero = after(uses), after(zeroed)
    dir_store = np.zeros(trace.n, dtype=bool)
    dir_store[sk] = (sf == pd_at[sk]) | (next_use < next_zero)
    dir_fill = fills & np.isin(trace.arg0.astype(np.int64), dirs)
    INVLPG = _H["flush_tlb_single"]
    chg = np.nonzero(is_cr3 | dir_store | dir_fill | (h == INVLPG))[0]
    a0, a1, a2, a3 = (x[chg].tolist() for x in (trace.arg0, trace.arg1, trace.arg2, trace.arg3))
    e_l, v_l, h_l = ent[chg].tolist(), val[chg].tolist(), h[chg].tolist()
    counts: dict[int, int] = {}
    since: dict[int, int] = {}  # table -> the event after which it joined the set
    spells: list[tuple[int, int, int]] = []  # (table, joined after, left after)
    at_cr3: dict[int, tuple[int, ...]] = {}
    at_invlpg: dict[int, int] = {}
    pd = -1

    def names(v: int) -> int:
        return v >> 12 if v & PRESENT and not v & PSE else -1

    def recount(k: int) -> None:
        r = row.get(pd)
        new: dict[int, int] = {}
        if r is not None:
            pdes = mem[r]
            sel = (pdes & PRESENT).astype(bool) & ~(pdes & PSE).astype(bool)
            for t in (pdes[sel] >> 12).tolist():
                new[t] = new.get(t, 0) + 1
        for t in counts.keys() - new.keys():
            spells.append((t, since.pop(t), k))
        for t in new.keys() - counts.keys():
            since[t] = k
        counts.clear()
        counts.update(new)

    for i, k in enumerate(chg.tolist()):
        hk = h_l[i]
        if hk == WCR3:
            pd = a0[i] >> 12
            recount(k)
            at_cr3[k] = tuple(sorted(counts))
        elif hk == INVLPG:
            r = row.get(pd)
            at_invlpg[k] = names(int(mem[r, a0[i] >> 22])) if r is not None else -1
        elif e_l[i] >= 0:
            e, v = e_l[i], v_l[i]
            pfn, idx = e >> 10, e & 1023
            r = row[pfn]
            old = int(mem[r, idx])
            mem[r, idx] = v
            if pfn != pd:
                continue
            t_old, t_new = names(old), names(v)
            if t_old == t_new:
                continue
            if t_old >= 0:
                counts[t_old] -= 1
                if not counts[t_old]:
                    del counts[t_old]
                    spells.append((t_old, since.pop(t_old), k))
            if t_new >= 0:
                if t_new not in counts:
                    counts[t_new] = 0
                    since[t_new] = k
                counts[t_new] += 1
        else:
            pfn = a0[i]
            r = row[pfn]
            mem[r] = 0
            if hk == CLONE:
                lo, hi = min(a2[i], 1024), min(a2[i] + a3[i], 1024)
                mem[r, lo:hi] = mem[row[a1[i]], lo:hi]
            if pfn == pd:
                recount(k)
    spells.extend((t, j, trace.n) for t, j in since.items())
    sp = np.array(sorted(spells), dtype=np.int64).reshape(-1, 3)
    return LoadedSpaces(sp, at_cr3, at_invlpg)


def fill_changes(trace: Trace) -> dict[int, np.ndarray]:
    """Per allocation (``alloc_*``) of a frame ever loaded as a directory or cloned from:
    the entries whose meaning (:func:`_meaning`) it changes (one pass per trace over those
    frames' stores)."""
    ent, val = _pte_entries(trace)
    h = trace.hook
    CLONE = _H["alloc_pd_clone"]
    fills = np.isin(h, _ALLOCS)
    dirs = _directory_frames(trace)
    out: dict[int, np.ndarray] = {}
    if not len(dirs):
        return out
    row = {int(d): i for i, d in enumerate(dirs.tolist())}
    mem = np.zeros((len(dirs), 1024), dtype=np.int64)
    store = (ent >= 0) & np.isin(ent >> 10, dirs)
    fill = fills & np.isin(trace.arg0.astype(np.int64), dirs)
    sel = np.nonzero(store | fill)[0]
    e_l, v_l, h_l = ent[sel].tolist(), val[sel].tolist(), h[sel].tolist()
    a0, a1, a2, a3 = (x[sel].tolist() for x in (trace.arg0, trace.arg1, trace.arg2, trace.arg3))
    for i, k in enumerate(sel.tolist()):
        e = e_l[i]
        if e >= 0:
            mem[row[e >> 10], e & 1023] = v_l[i]
            continue
        r = row[a0[i]]
        old = mem[r].copy()
        mem[r] = 0
        if h_l[i] == CLONE:
            lo, hi = min(a2[i], 1024), min(a2[i] + a3[i], 1024)
            mem[r, lo:hi] = mem[row[a1[i]], lo:hi]
        out[k] = np.nonzero(_meaning(mem[r]) != _meaning(old))[0]
    return out


def _meaning(v: np.ndarray) -> np.ndarray:
    """What of an entry's value a translation depends on (frame, present, writable, user,
    large page): equal meanings translate alike under any directory entry."""
    return np.where(v & PRESENT, v & 0xFFFFF087, 0)


def loaded_table_stores(trace: Trace) -> np.ndarray:
    """Per event: a PTE store into a page table the guest's loaded directory names (as the
    guest's tables stand just before the store; False for every other event).

    Xen's ``set_pte_at`` takes a hypercall for the current address space and a plain
    (trapped) store for another: which it is depends on the guest's tables alone, so it is
    found once per trace (:func:`loaded_spaces`).
    """
    ent, _ = _pte_entries(trace)
    sp = _cached(trace, "loaded_spaces", loaded_spaces).spells
    out = np.zeros(trace.n, dtype=bool)
    sidx = np.nonzero(ent >= 0)[0]
    if not len(sp) or not len(sidx):
        return out
    span = trace.n + 1
    f = ent[sidx] >> 10
    pos = np.searchsorted(sp[:, 0] * span + sp[:, 1], f * span + sidx, side="left") - 1
    ok = pos >= 0
    at = np.maximum(pos, 0)
    ok &= (sp[at, 0] == f) & (sidx <= sp[at, 2])
    out[sidx] = ok
    return out


def prepare(trace: Trace) -> None:
    """Derive what every replay of ``trace`` shares (kept in ``trace.cache``), so that
    processes forked afterwards start with it."""
    _cached(trace, "absorbed", absorbed_mmio)
    _cached(trace, "group_codes", group_codes)
    _cached(trace, "loaded_spaces", loaded_spaces)
    _cached(trace, "loaded_table_stores", loaded_table_stores)
    _cached(trace, "fill_changes", fill_changes)
    regs = _cached(trace, "control_registers", control_registers)
    _cached(trace, "recorded_interrupts", recorded_interrupts)
    _cached(trace, "read_mismatches", lambda t: read_mismatches(t, regs))
    trace_mmu_checks(trace)


def native_cycles(trace: Trace, table: CostTable, absorbed: np.ndarray | None = None) -> np.ndarray:
    """What every event costs on bare hardware (the reference for relative cost)."""
    if absorbed is None:
        absorbed = absorbed_mmio(trace)
    return _static(trace, NATIVE, table, absorbed)[1]


def _hex(v: int | None) -> str:
    return "unknown" if v is None else f"{v:#x}"


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


def _modes(run: Run) -> tuple[str | None, str | None, bool, bool]:
    """How a run's backend learns PTE updates and allocations, and whether it sees the APIC
    and tracks the guest's interrupt flag (``hook``: as designed; or the fallback)."""
    req, fb = run.without, run.fallback
    pte_mode = "hook" if req != "pteupdate" else fb
    alloc_mode = "unhooked" if run.backend.name == "lguest" else "hook" if req != "ptalloc" else fb
    return (
        pte_mode,
        alloc_mode,
        not (req == "apic" and fb == "none"),
        not (req == "irq" and fb == "none"),
    )


def _stateful(model: Backend, cs: _Costs) -> set[int]:
    """Hooks the sequential pass takes: those that change or read state on every backend,
    those the backend may queue, and (with a queue) every synchronous entry to the
    hypervisor, which applies what is queued first."""
    out = set(_STATEFUL) | {_H[h] for h in model.batchable}
    if model.batching:
        out |= {h.id for h in HOOKS if cs.hc[h.id] > 0}
    return out


def may_be_lean(run: Run) -> bool:
    """Whether the run's sequential pass may go lean (:meth:`_Replay._lean`): a backend fed
    by notifications, told of every PTE update (or trapping them) and told of page-table
    allocations (or, told of updates, discovering tables), or lguest told of PTE updates
    -- whether it does depends on the trace."""
    pte_mode, alloc_mode, _, _ = _modes(run)
    hooked = alloc_mode == "hook" and pte_mode in ("hook", "trap")
    found = alloc_mode == "trap" and pte_mode == "hook"
    mmu = run.model().mmu
    return (mmu == "notified" and (hooked or found)) or (mmu == "demand" and pte_mode == "hook")


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


class _Replay:
    """State of one replay; :meth:`run` does the three passes."""

    def __init__(
        self, trace: Trace, run: Run, table: CostTable, full_check: bool, exact: bool = False
    ) -> None:
        self.trace = trace
        self.exact = exact
        self.run_ = run
        self.model = run.model()
        self.table = table
        self.full_check = full_check
        self.violations: list[Violation] = []
        m = self.model
        self.mirror = m.mmu in ("direct", "traced")
        self.pte_mode, self.alloc_mode, self.apic_seen, self.irq_tracks = _modes(run)
        self.lost: dict[int, str] = {}
        """Recorded interrupts the backend's devices would not take, and why."""

    # ------------------------------------------------------------------ helpers

    def violate(self, seq: int, check: str, fld: str, exp: str, act: str, detail: str) -> None:
        self.violations.append(Violation(seq, check, fld, exp, act, detail))

    # ------------------------------------------------------------------ passes

    def run(self, progress: Callable[[int], None] | None) -> RunResult:
        tr, m, table = self.trace, self.model, self.table
        n = tr.n
        absorbed = _cached(tr, "absorbed", absorbed_mmio)
        cs, cyc, mech, ex, hc, trp = _static(tr, m, table, absorbed)
        self.cs = cs
        bf = np.zeros(n, dtype=np.int32)
        batched = np.zeros(n, dtype=np.int32)
        nat = _cached(
            tr, f"native_cycles {table.sha256}", lambda t: native_cycles(t, table, absorbed)
        )
        self.vif_b = backend_if(tr.vif, self.irq_tracks)
        self.cregs = _cached(tr, "control_registers", control_registers)

        # runs that differ in nothing the sequential pass reads (an ablation that swaps no
        # cost in, as cpl's) share it: the last one is kept on the trace
        key = sequential_key(self.run_, table, self.full_check, self.exact)
        shared = tr.cache.get("sequential")
        if shared is not None and shared[0] == key:
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
        for idx, *col in self.dyn_cols:
            # events costed apart (each event at most once): what they cost, column-wise
            for arr, v in zip((cyc, mech, ex, hc, trp, bf, batched), col, strict=True):
                arr[idx] = v
        if self.run_.fallback == "trap" and self.run_.without in ("cpl", "irq"):
            # the kernel runs binary-translated: every call it makes pays BT's overhead
            cyc[(tr.kind == K_HOOK) & (tr.cpl == 1)] += table["bt_call_overhead"]

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
            cycles=cyc.astype(np.uint64),
            native_cycles=nat.astype(np.uint64),
            mechanism=mech,
            exits=ex.astype(np.uint32),
            hypercalls=hc.astype(np.uint32),
            traps=trp.astype(np.uint32),
            batch_flushes=bf.astype(np.uint32),
            batched=batched.astype(np.uint32),
            violations=sorted(self.violations, key=lambda v: (v.seq, CHECKS.index(v.check))),
            interrupts=ints,
            sequential=how,
        )
        return res

    # ------------------------------------------------------------ the lean pass

    def _check_events(self, in_loop: np.ndarray) -> np.ndarray:
        """Events after which the MMU is checked: CR3 loads, TLB flushes, checkpoints."""
        h = self.trace.hook
        names = ("write_cr3", "flush_tlb_user", "flush_tlb_kernel", "flush_tlb_single")
        at = in_loop & np.isin(h, [_H[x] for x in names])
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
        False: :meth:`_sequential` simulates both copies.
        """
        tr, m, cs, table = self.trace, self.model, self.cs, self.table
        if self.exact or self.full_check or not may_be_lean(self.run_):
            return False
        n = tr.n
        h, kind = tr.hook, tr.kind
        hk = np.where(h >= 0, h, _NHOOKS)
        ent, _ = _pte_entries(tr)
        a0 = tr.arg0.astype(np.int64)
        queue = m.batching is not None
        batchable_ids = {_H[x]: modes for x, modes in m.batchable.items()}
        hook_mask = np.zeros(_NHOOKS + 1, dtype=bool)
        hook_mask[list(_stateful(m, cs))] = True
        in_loop = hook_mask[hk] & (kind == K_HOOK) & (ent != -2)

        LAZY = _H["set_lazy_mode"]
        is_lazy = h == LAZY
        setm = is_lazy & np.isin(a0, (LAZY_NONE, LAZY_MMU, LAZY_CPU))
        last = np.where(setm, np.arange(n), -1)
        np.maximum.accumulate(last, out=last)
        prev = np.full(n, -1, dtype=np.int64)
        prev[1:] = last[:-1]
        mode = np.where(prev >= 0, a0[np.maximum(prev, 0)], LAZY_NONE)
        can = np.zeros((_NHOOKS + 1, 4), dtype=bool)
        for hid, modes in batchable_ids.items():
            can[hid, list(modes)] = True

        wp_t = cs.t(m.wp_fault)
        other = np.zeros(n, dtype=bool)
        if m.name == "xen-pv" and self.pte_mode == "hook":
            # xen_set_pte_at: a plain (trapped) store into another address space's table
            member = _cached(tr, "loaded_table_stores", loaded_table_stores)
            other = (h == _H["set_pte_at"]) & (ent >= 0) & ~member
        queued = (in_loop & can[hk, mode] & ~other) if queue else np.zeros(n, dtype=bool)
        adds = np.zeros(_NHOOKS + 1, dtype=bool)
        adds[[*_PTE_HOOKS, _H["write_cr3"]]] = True
        if self.alloc_mode == "hook":
            adds[[*_ALLOCS, *_RELEASES]] = True
        if m.flush_resync:
            adds[[_H[x] for x in ("flush_tlb_user", "flush_tlb_kernel", "flush_tlb_single")]] = True
        hcn = np.where(other, wp_t[3], cs.hc[hk])
        drains = np.zeros(n, dtype=bool)
        if queue:
            drains = (
                in_loop
                & ~queued
                & (((hcn > 0) & ~is_lazy) | (is_lazy & np.isin(a0, (LAZY_NONE, LAZY_FLUSH))))
            )
        ev = np.nonzero(queued | drains)[0]
        cap = max(m.batch_capacity, 1)
        qp = plan(queued[ev], queued[ev] & adds[hk[ev]], drains[ev], cap)

        # -- the proof that no check can find a page wrong
        scans = np.zeros(n, dtype=np.int64)  # tables discovered at the event (trap)
        faults = np.zeros(n, dtype=bool)  # allocations faulting on a protected frame
        proof = _Proof(tr, in_loop, queued, ev[qp.flushes], ent)
        if m.mmu == "demand":
            if not proof.shadowed(self._check_events(in_loop), ev, qp, m.pgdir_cache):
                return False
        elif self.alloc_mode == "hook":
            if not proof.notified():
                return False
        elif not proof.discovered(scans, faults, self._check_events(in_loop), ev, qp):
            return False

        # -- costs: what the queue plan and the row say, column-wise
        timer = np.zeros(n, dtype=bool)
        timer_t = cs.t(m.timer_write) if m.timer_write else None
        if timer_t is not None:
            timer = in_loop & np.isin(h, _APIC_HOOKS[:2]) & (a0 == 0x380) & ~queued
        drained = np.zeros(n, dtype=np.int64)
        drained[ev] = qp.drained
        cap_flush = np.zeros(n, dtype=bool)
        cap_flush[ev[qp.capacity_flush]] = True
        async_flush = np.zeros(n, dtype=bool)
        if m.name == "lguest":
            # LHCALL_FLUSH_ASYNC on leaving lazy mode or flushing, even with nothing queued
            async_flush = in_loop & is_lazy & np.isin(a0, (LAZY_NONE, LAZY_FLUSH))
            async_flush &= drained == 0
        idx = np.nonzero(
            queued | (drained > 0) | other | timer | (scans > 0) | faults | async_flush
        )[0]
        hx = hk[idx]
        cy, me = cs.cyc[hx].astype(np.int64), cs.mech[hx].astype(np.int64)
        ex_, hc_, tp_ = (a[hx].astype(np.int64) for a in (cs.ex, cs.hc, cs.tr))
        nbf, nbt = np.zeros(len(idx), dtype=np.int64), np.zeros(len(idx), dtype=np.int64)
        cols = (cy, me, ex_, hc_, tp_)

        def put(sel: np.ndarray, t: tuple[int, ...]) -> None:
            for col, x in zip(cols, t, strict=False):
                col[sel] = x

        put(other[idx], wp_t)
        flush_t = cs.t(m.flush_cost)
        entry = table["batch_entry"]
        d = drained[idx]
        dm = d > 0
        lz = dm & is_lazy[idx]
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

        # -- the devices, event by event
        self.lapic, self.ioapic = VirtualLapic(), VirtualIoapic()
        self.lost = {}
        dev = (kind == K_INTERRUPT) | (in_loop & np.isin(h, _APIC_HOOKS))
        dev |= ((kind == K_MMIO_READ) | (kind == K_MMIO_WRITE)) & ~absorbed
        cps = tr.checkpoints
        at = np.zeros(n, dtype=bool)
        at[dev] = True
        if cps:
            at[np.fromiter(cps, dtype=np.int64, count=len(cps))] = True
        sel = np.nonzero(at)[0]
        cols_l = zip(
            sel.tolist(),
            kind[sel].tolist(),
            h[sel].tolist(),
            tr.arg0[sel].tolist(),
            tr.arg1[sel].tolist(),
            tr.arg2[sel].tolist(),
            tr.has_result[sel].tolist(),
            tr.result[sel].tolist(),
            dev[sel].tolist(),
            strict=True,
        )

        def no_mmu_check(seq: int, reason: str) -> None:
            return None  # the copies are equal whenever a check is made (above)

        for k, kd, hh, x0, x1, x2, hasr, res, is_dev in cols_l:
            if is_dev:
                if kd == K_HOOK:
                    self._apic_hook(k, hh, x0, x1, hasr, res)
                elif kd == K_INTERRUPT:
                    self._interrupt(k, x0, x1)
                else:
                    self._mmio(k, kd, x0, x2)
            if k in cps:
                self._checkpoint(k, cps[k], no_mmu_check)
        return True

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

    def _traced_pass(self) -> None:
        """What page-table events cost a VMM that write-protects the tables it shadows.

        The guest's tables are the hardware's: each store lands at once.  Only the
        tracer's state (frames traced, the flood counter) runs event by event, over the
        page-table events alone: runs of entry stores between the events that discover
        tables (CR3 loads, full flushes) or zero them (allocations).
        """
        tr, m, cs, table = self.trace, self.model, self.cs, self.table
        ent, val = _pte_entries(tr)
        h = tr.hook
        ALLOCS = _ALLOCS
        WCR3, FL_USER, FL_KERN = _H["write_cr3"], _H["flush_tlb_user"], _H["flush_tlb_kernel"]
        PTE_UPD, PTE_UPD_D = _H["pte_update"], _H["pte_update_defer"]
        other_hooks = np.isin(h, [*ALLOCS, WCR3, FL_USER, FL_KERN])
        sel = np.nonzero((ent >= 0) | other_hooks)[0]
        guest = GuestMMU(nframes=_frames_needed(tr, ent))
        frames = guest.frames
        tracer = WriteTracer(m.flood_threshold)
        wp_t, disc_t = cs.t(m.wp_fault), cs.t(m.discover)
        call_ret = table["call_ret"]
        cyc0, mech0, ex0, hc0, tr0 = cs.lists()
        # only the tables later read as a directory (loaded, or cloned from) need contents
        dirs = _directory_frames(tr)
        es = ent[sel]
        keep = (es >= 0) & np.isin(es >> 10, dirs)
        dpos = np.nonzero(keep)[0]
        d_e, d_v = es[dpos].tolist(), val[sel][dpos].tolist()
        k_l, h_l = sel.tolist(), h[sel].tolist()
        pf_l = (es >> 10).tolist()
        a0, a1, a2, a3 = tr.arg0, tr.arg1, tr.arg2, tr.arg3
        b_arr = np.nonzero(other_hooks[sel])[0]
        # directory stores before each barrier: d_e[d_at[i - 1]:d_at[i]] precede barrier i
        d_at = np.searchsorted(dpos, b_arr).tolist()
        barriers = b_arr.tolist()
        dir_set = set(dirs.tolist())
        if len(dirs):
            frames.grow(int(dirs.max()))
        out: list[tuple[int, ...]] = []
        faults: list[int] = []
        mem = frames.mem
        upd_cy = wp_t[0]
        store_cy = wp_t[0] + call_ret
        pd: int | None = None
        tables: list[int] | None = None

        def cur_tables() -> list[int]:
            nonlocal tables
            if pd is None:
                return []
            if tables is None:
                pdes = frames.page(pd)
                t = (pdes & PRESENT).astype(bool) & ~(pdes & PSE).astype(bool)
                tables = sorted(set((pdes[t] >> 12).tolist()))
            return tables

        start = 0
        d0 = 0
        for bi, b in enumerate(barriers + [len(k_l)]):
            d1 = d_at[bi] if bi < len(barriers) else len(d_e)
            if d0 < d1:
                for e, v in zip(d_e[d0:d1], d_v[d0:d1], strict=True):
                    mem[e] = v
                    if e >> 10 == pd:
                        tables = None
                d0 = d1
            if start < b:
                if start:
                    faults.extend([start + i for i in tracer.writes(pf_l[start:b])])
                else:
                    faults.extend(tracer.writes(pf_l[start:b]))
            start = b + 1
            if b == len(k_l):
                break
            k, hk = k_l[b], h_l[b]
            new = 0
            per = disc_t
            if hk in ALLOCS:
                pfn = int(a0[k])
                if pfn not in dir_set:
                    pass  # never read as a directory: its contents do not matter here
                else:
                    clone = (int(a1[k]), int(a2[k]), int(a3[k])) if hk == ALLOCS[2] else None
                    _fill_table(frames, pfn, clone)
                mem = frames.mem
                if pfn == pd:
                    tables = None
                new = tracer.write(pfn, 1024)
                per = wp_t
            elif hk == WCR3:
                pd = int(a0[k]) >> 12
                tables = None
                new = tracer.discover([pd, *cur_tables()])
            else:
                new = tracer.discover(cur_tables())
            if new:
                out.append(
                    (
                        k,
                        cyc0[hk] + new * per[0],
                        mech0[hk],
                        ex0[hk] + new * per[2],
                        hc0[hk],
                        tr0[hk] + new * per[4],
                        0,
                        0,
                    )
                )
        # every faulting store costs the same (a pte_update has no call of its own to pay)
        idx = sel[np.asarray(faults, dtype=np.int64)]
        cy = np.where(np.isin(h[idx], [PTE_UPD, PTE_UPD_D]), upd_cy, store_cy)
        self.dyn_cols.append(
            (idx, cy, *(np.full(len(idx), x, dtype=np.int64) for x in (*wp_t[1:], 0, 0)))
        )
        if out:
            arr = np.array(out, dtype=np.int64)
            self.dyn_cols.append((arr[:, 0], *arr[:, 1:].T))

    def _interrupt(self, k: int, a0: int, src: int) -> None:
        """A recorded interrupt (vector in ``a0``, IOAPIC pin or -1 in ``src``): delivered
        to the virtual LAPIC, or lost with the reason."""
        vec = a0 & 0xFF
        why = self.lapic.blocks(vec, src) if self.apic_seen else "APIC never enabled"
        if why is None and 0 <= src < 24:
            why = self.ioapic.blocks(src)
        if why is not None:
            self.lost[k] = why
        else:
            self.lapic.deliver(vec)

    def _mmio(self, k: int, kd: int, addr: int, val: int) -> None:
        """A LAPIC or IOAPIC MMIO access the guest made itself (not an apic_* hook's)."""
        if LAPIC_BASE <= addr < LAPIC_BASE + 0x1000:
            if kd == K_MMIO_WRITE:
                if self.apic_seen:
                    self.lapic.write(addr - LAPIC_BASE, val)
            else:
                self._apic_result(k, addr - LAPIC_BASE, val, "lapic mmio read")
        elif IOAPIC_BASE <= addr < IOAPIC_BASE + 0x1000:
            ioapic = self.ioapic
            off = addr - IOAPIC_BASE
            if kd == K_MMIO_WRITE:
                ioapic.write(off, val)
                return
            known = ioapic.read(off)
            if known is None:
                ioapic.observe(off, val)
            elif (known[0] ^ val) & known[1]:
                self.violate(
                    k,
                    "result",
                    f"ioapic {off:#x}",
                    _hex(val),
                    _hex(known[0]),
                    f"IOAPIC read (register {ioapic.regsel:#x})",
                )

    def _apic_hook(self, k: int, h: int, reg: int, v: int, has_result: bool, res: int) -> None:
        """apic_write / apic_write_atomic / apic_read: the virtual LAPIC's side."""
        if h == _H["apic_read"]:
            if has_result:
                self._apic_result(k, reg, res & 0xFFFFFFFF, "apic_read")
        elif self.apic_seen:
            self.lapic.write(reg, v)

    def _apic_result(self, k: int, reg: int, got: int, what: str) -> None:
        lapic = self.lapic
        have = lapic.read(reg) if self.apic_seen else UNBACKED
        if reg in (0x020, 0x030) and self.apic_seen and have is None:
            lapic.observe(reg, got)
            return
        if have is None:
            return  # time-dependent or unmodelled register
        if have != got:
            self.violate(k, "result", f"apic {reg:#05x}", _hex(got), _hex(have), what)

    def _checkpoint(
        self,
        k: int,
        cp: dict[str, dict[str, int]],
        check: Callable[[int, str], None],
    ) -> None:
        check(k, "checkpoint")
        lapic_regs = (self.lapic if self.apic_seen else VirtualLapic()).registers()
        for key, want in sorted(cp.get("lapic", {}).items()):
            if key in ("id", "version") and key not in lapic_regs and self.apic_seen:
                self.lapic.observe(0x020 if key == "id" else 0x030, want)
                continue
            have = lapic_regs.get(key)
            if have is not None and have != want:
                self.violate(k, "device.lapic", key, _hex(want), _hex(have), "checkpoint")
        io = self.ioapic.registers()
        for key, want in sorted(cp.get("ioapic", {}).items()):
            got = io.get(key)
            if got is not None and (got[0] ^ want) & got[1]:
                self.violate(k, "device.ioapic", key, _hex(want), _hex(got[0]), "checkpoint")

    def _cpu_checkpoints(self) -> None:
        """Control registers and the interrupt flag at every checkpoint (the backend's IF,
        the registers as the hooks set them), apart from the sequential pass."""
        for k, cp in sorted(self.trace.checkpoints.items()):
            cpu = cp.get("cpu", {})
            for key in ("cr0", "cr3", "cr4"):
                if key in cpu:
                    val, known = self.cregs[key].before(np.array([k + 1]))
                    if known[0] and int(val[0]) != cpu[key]:
                        self.violate(
                            k, "device.cpu", key, _hex(cpu[key]), _hex(int(val[0])), "checkpoint"
                        )
            if "eflags_if" in cpu and k + 1 < self.trace.n:
                have_if = int(self.vif_b[k + 1])
                if have_if != cpu["eflags_if"]:
                    want = str(cpu["eflags_if"])
                    self.violate(k, "device.cpu", "eflags_if", want, str(have_if), "checkpoint")

    # ------------------------------------------------------ the virtual CPU

    def _interrupts(
        self,
        cyc: np.ndarray,
        mech: np.ndarray,
        ex: np.ndarray,
        hc: np.ndarray,
        trp: np.ndarray,
        bf: np.ndarray,
    ) -> dict[str, np.ndarray]:
        tr, m = self.trace, self.model
        ints = _cached(tr, "recorded_interrupts", recorded_interrupts)
        earliest = ints.raised + 1
        notices = None
        irq_trap = self.run_.without == "irq" and self.run_.fallback == "trap"
        if m.vcpu == "lguest-flag" and not irq_trap:
            host = (hc > 0) | (trp > 0) | (ex > 0) | (bf > 0)
            host |= tr.kind == K_INTERRUPT
            host |= tr.kind == K_EXCEPTION
            notices = np.zeros(tr.n, dtype=bool)
            notices[1:] = host[:-1]
        delivered = delivery_points(self.vif_b, earliest, notices)
        status = np.zeros(len(ints), dtype=np.int8)  # 0 ok, 1 masked, 2 lost
        for i, e in enumerate(ints.event.tolist()):
            if e in self.lost:
                delivered[i] = -1
        status[delivered < 0] = 2
        ok = delivered >= 0
        masked = np.zeros(len(ints), dtype=bool)
        inside = ok & (delivered < tr.n)
        masked[inside] = ~tr.vif[delivered[inside]]
        status[masked] = 1

        unmask = m.unmask_pending
        if irq_trap:
            unmask = c("callout", "bt_callout")
        if unmask is not None and self.irq_tracks and len(ints):
            is_unmasker = np.isin(tr.hook, _UNMASKERS)
            ev = unmask_events(delivered, earliest, is_unmasker)
            if len(ev):
                t = self.cs.t(unmask)
                cyc[ev] += t[0]
                mech[ev] = t[1]
                ex[ev] += t[2]
                hc[ev] += t[3]
                trp[ev] += t[4]

        seqs = ints.event
        for i in np.nonzero(status == 1)[0].tolist():
            d = int(delivered[i])
            self.violate(
                d,
                "irq.masked",
                "if",
                "0",
                "1",
                f"vector {int(ints.vector[i]):#x} raised at seq {int(ints.raised[i])} delivered "
                f"before seq {d} while the guest had interrupts masked",
            )
        for i in np.nonzero(status == 2)[0].tolist():
            e = int(seqs[i])
            why = self.lost.get(e, "the backend never unmasked")
            self.violate(
                e,
                "irq.lost",
                "vector",
                f"{int(ints.vector[i]):#x}",
                "never delivered",
                f"native delivered it at seq {e}; {why}",
            )
        vt = tr.vtime
        lat_ev = np.where(ok, delivered - ints.raised, -1)
        lat_vt = np.where(
            ok,
            np.maximum(
                vt[np.clip(delivered, 0, tr.n - 1)].astype(np.int64)
                - ints.raised_vtime.astype(np.int64),
                0,
            ),
            -1,
        )
        nat_ev = seqs - ints.raised
        nat_vt = np.maximum(vt[seqs].astype(np.int64) - ints.raised_vtime.astype(np.int64), 0)
        return {
            "seq": seqs.astype(np.uint64),
            "vector": ints.vector.astype(np.uint16),
            "source": ints.source.astype(np.uint16),
            "raised_seq": ints.raised.astype(np.uint64),
            "delivered_seq": delivered,
            "latency_events": lat_ev,
            "latency_vtime": lat_vt,
            "native_latency_events": nat_ev.astype(np.int64),
            "native_latency_vtime": nat_vt.astype(np.int64),
            "status": status,
        }

    def _vectorized_checks(self) -> None:
        tr, m = self.trace, self.model
        mismatches = _cached(tr, "read_mismatches", lambda t: read_mismatches(t, self.cregs))
        for mm in mismatches:
            self.violate(mm.seq, "result", mm.hook, _hex(mm.recorded), _hex(mm.model), mm.what)
        # save_fl: the IF bit the guest reads is the backend's virtual IF
        sf = np.nonzero((tr.hook == _H["save_fl"]) & tr.has_result)[0]
        if len(sf):
            want = ((tr.result[sf] >> 9) & 1).astype(bool)
            have = self.vif_b[sf]
            for k in sf[want != have].tolist():
                w = int(tr.result[k])
                self.violate(
                    k,
                    "result",
                    "save_fl",
                    _hex(w),
                    _hex(w ^ 0x200),
                    "EFLAGS.IF as the backend reports it",
                )
        if "cpl" in m.relies_on:
            cpl = tr.cpl.astype(np.int16)
            if self.run_.without == "cpl" and self.run_.fallback == "none":
                cpl = np.where(cpl == 1, 0, cpl)
            hk = np.where(tr.hook >= 0, tr.hook, _NHOOKS)
            bad = (cpl == 0) & ((tr.kind == K_HOOK) & _PRIVILEGED[hk] | (tr.cpl == 0))
            for k in np.nonzero(bad)[0].tolist():
                what = HOOKS[tr.hook[k]].name if tr.hook[k] >= 0 else "event"
                self.violate(
                    k,
                    "privilege",
                    what,
                    "CPL 1",
                    "CPL 0",
                    f"{what} runs at CPL 0 where {m.name} requires the kernel at CPL 1",
                )


def replay(
    trace: Trace,
    run: Run,
    table: CostTable,
    progress: Callable[[int], None] | None = None,
    full_check: bool = False,
    exact: bool = False,
) -> RunResult:
    """Replay ``trace`` on ``run``'s backend under cost table ``table``.

    ``full_check`` compares every page at every MMU check (instead of incrementally);
    ``exact`` runs the whole sequential pass even where the lean pass applies (both are for
    tests: the results are the same).
    """
    r = _Replay(trace, run, table, full_check, exact).run(progress)
    r.summary = summarize(r)
    return r


def group_codes(trace: Trace) -> tuple[np.ndarray, list[str]]:
    """Per event: an index into the returned names (hook group, or kind for other events)."""
    from replayer.trace import KINDS

    names = sorted({h.group for h in HOOKS} | set(KINDS) | {"other"})
    code = {g: i for i, g in enumerate(names)}
    by_hook = np.array([code[h.group] for h in HOOKS], dtype=np.int64)
    by_kind = np.array([code[k] for k in KINDS] + [code["other"]], dtype=np.int64)
    kd = np.where(trace.kind >= 0, trace.kind, len(KINDS)).astype(np.int64)
    hk = np.maximum(trace.hook, 0).astype(np.int64)
    return np.where(trace.hook >= 0, by_hook[hk], by_kind[kd]), names


def summarize(r: RunResult) -> dict[str, Any]:
    """The JSON-able summary of one replay (deterministic)."""
    run = r.run
    counts = dict.fromkeys(CHECKS, 0)
    for v in r.violations:
        counts[v.check] += 1
    fam = dict.fromkeys(FAMILIES, 0)
    for name, count in counts.items():
        fam[FAMILY[name]] += count
    first = r.violations[0] if r.violations else None
    cyc = int(r.cycles.sum())
    nat = int(r.native_cycles.sum())
    st = r.interrupts["status"]
    lat = r.interrupts["latency_events"][st != 2]
    latv = r.interrupts["latency_vtime"][st != 2]
    groups: dict[str, dict[str, int]] = {}
    gc, names = _cached(r.trace, "group_codes", group_codes)
    m = len(names)
    events = np.bincount(gc, minlength=m)
    sums = {
        k: np.bincount(gc, weights=getattr(r, k).astype(np.float64), minlength=m)
        for k in ("cycles", "native_cycles", "exits", "hypercalls", "traps", "batch_flushes")
    }
    for i, g in enumerate(names):
        if events[i]:
            groups[g] = {"events": int(events[i])} | {k: int(v[i]) for k, v in sums.items()}
    return {
        "backend": run.label,
        "base": run.backend.name,
        "without": run.without,
        "fallback": run.fallback,
        "trace": r.trace.name,
        "events": r.trace.n,
        "cost_table": r.costs.name,
        "cost_sha256": r.costs.sha256,
        "cycles": cyc,
        "native_cycles": nat,
        "relative_cost": round(cyc / nat, 6) if nat else None,
        "exits": int(r.exits.sum()),
        "hypercalls": int(r.hypercalls.sum()),
        "traps": int(r.traps.sum()),
        "batch_flushes": int(r.batch_flushes.sum()),
        "batched": int(r.batched.sum()),
        "violations": len(r.violations),
        "checks": {k: v for k, v in counts.items() if v},
        "families": {k: v for k, v in fam.items() if v},
        "first_divergence": None
        if first is None
        else {
            "seq": first.seq,
            "check": first.check,
            "field": first.field,
            "expected": first.expected,
            "actual": first.actual,
            "detail": first.detail,
        },
        "interrupts": {
            "recorded": int(len(st)),
            "delivered": int((st == 0).sum()),
            "masked": int((st == 1).sum()),
            "lost": int((st == 2).sum()),
            "latency_events_mean": round(float(lat.mean()), 6) if len(lat) else None,
            "latency_events_max": int(lat.max()) if len(lat) else None,
            "latency_vtime_mean": round(float(latv.mean()), 6) if len(latv) else None,
            "latency_vtime_max": int(latv.max()) if len(latv) else None,
            "native_latency_events_mean": round(
                float(r.interrupts["native_latency_events"].mean()), 6
            )
            if len(st)
            else None,
        },
        "groups": groups,
        "mechanisms": {
            MECHANISMS[i]: int(n)
            for i, n in enumerate(
                np.bincount(r.mechanism.astype(np.int64), minlength=len(MECHANISMS))
            )
            if n
        },
    }
