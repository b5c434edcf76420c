"""The checks that need no page-table simulation, and the virtual devices' side.

Takes the replay state; gives violation rows: ``trace.mmu`` (the guest tables rebuilt
from the hooks against each checkpoint's digest, once per trace), ``device.*`` at
checkpoints, ``result`` for values the guest read (APIC and IOAPIC reads, control
registers, ``save_fl``) and ``privilege``; and, event by event, the virtual LAPIC
and IOAPIC fed by the passes that walk the devices.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pvscope.digest import mapping_digest
from pvscope.hooks import HOOKS
from replayer.engine.common import _APIC_HOOKS, _H, _NHOOKS, _PRIVILEGED, _cached, _hex
from replayer.engine.derived import _SLICE, _frames_needed, _pte_entries, absorbed_mmio, tables_at
from replayer.engine.result import Violation
from replayer.engine.state import ReplayState
from replayer.engine.violations import Reported, ViolationBlock
from replayer.mechanisms.apic import (
    IOAPIC_BASE,
    LAPIC_BASE,
    UNBACKED,
    VirtualIoapic,
    VirtualLapic,
)
from replayer.mechanisms.pagetables import (
    CR0_PG,
    PSE,
    GuestMMU,
    present_mappings,
)
from replayer.mechanisms.registers import Register, read_mismatches
from replayer.trace import (
    K_EXCEPTION,
    K_HOOK,
    K_INTERRUPT,
    K_MMIO_READ,
    K_MMIO_WRITE,
    K_SOFTINT,
    Trace,
)


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


#: How far past a checkpoint :func:`_pending_in_place` looks for the reports of stores
#: made before it (interrupt handlers in between included).
PENDING_WINDOW = 4096


def _pending_in_place(
    trace: Trace, guest: GuestMMU, k: int, window: int = PENDING_WINDOW
) -> list[tuple[int, int, int]]:
    """In-place PTE changes made before checkpoint ``k`` and reported (pte_update*) after
    it: the reports the interrupted code makes when it goes on, up to its next other MMU
    hook.  Interrupt and exception handlers that run in between (the checkpoint may
    follow the delivery itself) are passed over, to their ``iret``: their reports are
    of their own, later stores."""
    out = []
    kind, hook = trace.kind, trace.hook
    entries = (K_INTERRUPT, K_EXCEPTION, K_SOFTINT)
    depth = 1 if int(kind[k]) in entries else 0  # handlers entered since the store
    iret = _H["iret"]
    for j in range(k + 1, min(k + 1 + window, trace.n)):
        h = int(hook[j])
        if int(kind[j]) in entries:
            depth += 1
        elif h == iret:
            depth = max(depth - 1, 0)
        elif depth:
            continue
        elif h in (_H["pte_update"], _H["pte_update_defer"]) and trace.has_result[j]:
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
        h, a0 = trace.hook, trace.arg0
        at = np.fromiter(sorted(cps), dtype=np.int64, count=len(cps))
        # CR3 and CR0 as each checkpoint finds them: the last load at or before it
        regs = []
        for name in ("write_cr3", "write_cr0"):
            ks = np.flatnonzero((ent < 0) & (h == _H[name]))
            i = np.searchsorted(ks, at, side="right") - 1
            regs.append(
                np.where(i >= 0, a0[ks[np.maximum(i, 0)]], -1).tolist()
                if len(ks)
                else [-1] * len(at)
            )
        digests = _Digests(guest)
        tables = tables_at(trace, guest.frames, at)
        for k, changed, cr3, cr0 in zip(at.tolist(), tables, *regs, strict=True):
            digests.changed(changed)
            if cr3 >= 0:
                guest.cr3 = cr3
            if cr0 >= 0:
                guest.paging = bool(cr0 & CR0_PG)
            v = _checkpoint_digest(trace, guest, k, cps[k], digests.digest())
            if v is not None:
                out.append(v)
    trace.cache["trace.mmu"] = tuple(out)
    return out


class _Digests:
    """The mapping digest of the guest's loaded space (:func:`_digest_of`), kept per
    directory until a frame it was read from changes."""

    def __init__(self, guest: GuestMMU) -> None:
        self.guest = guest
        self.memo: dict[tuple[int, int], int] = {}
        self.readers: dict[int, set[tuple[int, int]]] = {}
        """frame -> the digests read from it (a superset)."""

    def changed(self, pfns: list[int]) -> None:
        """Frames ``pfns`` were written: the digests read from them go."""
        for pfn in pfns:
            for key in self.readers.pop(pfn, ()):
                self.memo.pop(key, None)

    def digest(self) -> int:
        """The digest of the loaded space as the tables are now."""
        g = self.guest
        pd = g.pd
        if not g.paging or pd is None:
            return _digest_of(g)
        key = (pd, g.frames.nframes)  # a store grown since may bring a table in range
        got = self.memo.get(key)
        if got is None:
            got = self.memo[key] = _digest_of(g)
            pdes = g.frames.page(pd)
            tables = (pdes[((pdes & 1) != 0) & ((pdes & PSE) == 0)] >> 12).tolist()
            for pfn in {pd, *tables}:
                self.readers.setdefault(pfn, set()).add(key)
        return got


def _checkpoint_digest(
    trace: Trace, guest: GuestMMU, k: int, want: int, mine: int
) -> Violation | None:
    """The ``trace.mmu`` row for checkpoint ``k`` if the rebuilt tables (whose digest is
    ``mine``) miss its digest."""
    if mine != want:
        # a checkpoint can fall between an in-place store to a PTE and the
        # pte_update that reports it: try the values reported just after it
        pending = _pending_in_place(trace, guest, k)
        for m in range(1, len(pending) + 1):
            mine = _digest_of(guest, pending[:m])
            if mine == want:
                break
    if mine == want:
        return None
    detail = "the page tables rebuilt from the hooks differ from the recorded machine's"
    return Violation(k, "trace.mmu", "digest", _hex(want), _hex(mine), detail)


class DeviceChecks(ReplayState):
    """Devices and checks a pass calls event by event, and the vectorized ones."""

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
        tr, vif_b = self.trace, self.vif_b
        regs = _cached(tr, "checkpoint registers", lambda t: _register_rows(t, self.cregs))
        rows = list(regs)
        for k, cp in sorted(tr.checkpoints.items()):
            cpu = cp.get("cpu", {})
            if "eflags_if" in cpu and k + 1 < tr.n:
                have_if = int(vif_b[k + 1])
                if have_if != cpu["eflags_if"]:
                    want = str(cpu["eflags_if"])
                    detail = "checkpoint"
                    rows.append(Violation(k, "device.cpu", "eflags_if", want, str(have_if), detail))
        # by checkpoint, each one's registers before its flag
        self.violations.extend(sorted(rows, key=lambda v: v.seq))

    def _vectorized_checks(self) -> None:
        """``result`` rows (values read, ``save_fl``) and ``privilege`` rows."""
        tr, m = self.trace, self.model
        self.violations.extend(
            _cached(tr, "result rows", lambda t: _result_rows(t, self.cregs))
            + _cached(tr, f"save_fl rows {self.irq_tracks}", lambda t: _save_fl_rows(t, self.vif_b))
        )
        if "cpl" in m.relies_on:
            cpl_none = self.run_.without == "cpl" and self.run_.fallback == "none"
            bad = _cached(tr, f"cpl 0 {cpl_none}", lambda t: _at_cpl0(t, cpl_none))
            names = [h.name for h in HOOKS] + ["event"]  # a hook id of -1: no hook call
            detail = [
                f"{w} runs at CPL 0 where {m.name} requires the kernel at CPL 1" for w in names
            ]
            # one row per event at CPL 0 (every hook call of a -without-cpl-none): column-wise
            which = tr.hook[bad].astype(np.int64) % len(names)
            self.violations.append(
                ViolationBlock.of(
                    "privilege",
                    bad,
                    field=(which, names),
                    expected="CPL 1",
                    actual="CPL 0",
                    detail=(which, detail),
                )
            )


def _result_rows(trace: Trace, cregs: dict[str, Register]) -> tuple[Violation, ...]:
    """``result`` rows for values read that differ from the registers as the hooks set
    them (the same for every backend)."""
    mismatches = _cached(trace, "read_mismatches", lambda t: read_mismatches(t, cregs))
    return tuple(
        Violation(mm.seq, "result", mm.hook, _hex(mm.recorded), _hex(mm.model), mm.what)
        for mm in mismatches
    )


def _save_fl_rows(trace: Trace, vif_b: np.ndarray) -> tuple[ViolationBlock, ...]:
    """``result`` rows for ``save_fl``: the IF bit the guest reads is the backend's
    virtual IF (``vif_b``).  Column-wise (a ``-without-irq-none`` finds one at most
    ``save_fl`` calls: 460,000 on irqstorm, kept on the trace for the runs after it), the
    values read coded by the few distinct flags words."""
    found = []
    for a in range(0, trace.n, _SLICE):  # a slice at a time: temporaries stay small
        s = slice(a, a + _SLICE)
        sf = np.flatnonzero((trace.hook[s] == _H["save_fl"]) & trace.has_result[s])
        want = ((trace.result[s][sf] >> 9) & 1).astype(bool)
        found.append(a + sf[want != vif_b[s][sf]])
    bad = np.concatenate([np.zeros(0, dtype=np.int64), *found])
    if not len(bad):
        return ()
    words, code = np.unique(trace.result[bad], return_inverse=True)
    return (
        ViolationBlock.of(
            "result",
            bad,
            field="save_fl",
            expected=(code, [_hex(w) for w in words.tolist()]),
            actual=(code, [_hex(w ^ 0x200) for w in words.tolist()]),
            detail="EFLAGS.IF as the backend reports it",
        ),
    )


def _at_cpl0(trace: Trace, cpl_none: bool) -> np.ndarray:
    """Events running at CPL 0 where the kernel should be at CPL 1: events at CPL 0 and
    (``cpl_none``: a kernel left at CPL 0) the privileged hook calls it makes at CPL 1.
    A slice of the trace at a time: its temporaries stay small (made while the run's
    columns are held, they were the peak of a run on irqstorm's 16 M events)."""
    out = []
    for a in range(0, trace.n, _SLICE):
        cpl = trace.cpl[a : a + _SLICE]
        bad = cpl == 0
        if cpl_none:
            hook = trace.hook[a : a + _SLICE]
            priv = _PRIVILEGED[np.where(hook >= 0, hook, _NHOOKS)]
            bad |= (cpl == 1) & (trace.kind[a : a + _SLICE] == K_HOOK) & priv
        out.append(a + np.flatnonzero(bad))
    return np.concatenate([np.zeros(0, dtype=np.int64), *out])


class _Devices(DeviceChecks):
    """The virtual LAPIC and IOAPIC alone, fed by :func:`device_pass`."""

    def __init__(self, apic_seen: bool) -> None:  # no run: the devices need none
        self.apic_seen = apic_seen
        self.lapic, self.ioapic = VirtualLapic(), VirtualIoapic()
        self.lost: dict[int, str] = {}
        self.violations: Reported = []


def _no_mmu_check(seq: int, reason: str) -> None:
    return None


def device_pass(
    trace: Trace, apic_seen: bool
) -> tuple[tuple[Violation | ViolationBlock, ...], dict[int, str]]:
    """The devices event by event (interrupts, APIC hooks, device MMIO no hook made,
    checkpoints' device registers): their violation rows in event order and the recorded
    interrupts they would not take, with why.  They depend on the trace and on whether the
    backend sees the APIC alone, so this runs once per trace and value (kept in
    ``trace.cache``; the caller must not change what it returns)."""
    key = f"devices apic_seen={apic_seen}"
    got = trace.cache.get(key)
    if got is not None:
        return got
    kind, h = trace.kind, trace.hook
    absorbed = _cached(trace, "absorbed", absorbed_mmio)
    ent, _ = _pte_entries(trace)
    # the APIC hooks every sequential pass takes (those with an observed value)
    dev = (kind == K_INTERRUPT) | ((kind == K_HOOK) & np.isin(h, _APIC_HOOKS) & (ent != -2))
    dev |= ((kind == K_MMIO_READ) | (kind == K_MMIO_WRITE)) & ~absorbed
    cps = trace.checkpoints
    at = dev.copy()
    if cps:
        at[np.fromiter(cps, dtype=np.int64, count=len(cps))] = True
    sel = np.nonzero(at)[0]
    cols = zip(
        sel.tolist(),
        kind[sel].tolist(),
        h[sel].tolist(),
        trace.arg0[sel].tolist(),
        trace.arg1[sel].tolist(),
        trace.arg2[sel].tolist(),
        trace.has_result[sel].tolist(),
        trace.result[sel].tolist(),
        dev[sel].tolist(),
        strict=True,
    )
    d = _Devices(apic_seen)
    for k, kd, hh, x0, x1, x2, hasr, res, is_dev in cols:
        if is_dev:
            if kd == K_HOOK:
                d._apic_hook(k, hh, x0, x1, hasr, res)
            elif kd == K_INTERRUPT:
                d._interrupt(k, x0, x1)
            else:
                d._mmio(k, kd, x0, x2)
        if k in cps:
            d._checkpoint(k, cps[k], _no_mmu_check)
    got = trace.cache[key] = (tuple(d.violations), d.lost)
    return got


def _register_rows(trace: Trace, cregs: dict[str, Register]) -> tuple[Violation, ...]:
    """``device.cpu`` rows for control registers at checkpoints (the registers as the
    hooks set them: the same for every backend), by checkpoint and register."""
    cps = sorted(trace.checkpoints.items())
    have = {}
    for key in ("cr0", "cr3", "cr4"):
        ks = [k for k, cp in cps if key in cp.get("cpu", {})]
        val, known = cregs[key].before(np.asarray(ks, dtype=np.int64) + 1)
        have[key] = dict(zip(ks, zip(val.tolist(), known.tolist(), strict=True), strict=True))
    out = []
    for k, cp in cps:
        cpu = cp.get("cpu", {})
        for key in ("cr0", "cr3", "cr4"):
            if key in cpu:
                v, kn = have[key][k]
                if kn and v != cpu[key]:
                    out.append(
                        Violation(k, "device.cpu", key, _hex(cpu[key]), _hex(v), "checkpoint")
                    )
    return tuple(out)
