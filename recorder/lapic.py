"""Local APIC model: one xAPIC for the recorder's single-CPU PC, in virtual time.

The model follows the Intel SDM (Vol. 3A, chapter "Advanced Programmable
Interrupt Controller", xAPIC mode) for the registers a paravirtual guest touches:
ID, version, TPR/APR/PPR, EOI, LDR/DFR, SVR, ISR/TMR/IRR, ESR, ICR (self-IPI),
the LVT entries and the timer.  It knows nothing of unicorn: the machine calls
:meth:`Lapic.read`/:meth:`Lapic.write` from its MMIO callbacks and
:meth:`Lapic.advance` at quantum boundaries.

Time is virtual (retired guest instructions).  ``now`` is the vtime of the most
recent :meth:`Lapic.advance`; MMIO accesses happen "at" ``now``.

Choices the SDM leaves open, made here once and kept deterministic:

* **Timer.** One timer tick per ``divide`` units of vtime.  The timer keeps the
  vtime of its next expiry; the current count is the number of ticks left,
  rounded up.  Writing the divide configuration while the timer runs keeps the
  current count and restarts the tick phase at ``now``.
* **Masked timer.** A masked LVT timer (or a software-disabled APIC, which
  forces every LVT mask) still counts — current count reads correctly and a
  periodic timer keeps its phase — but raises nothing, and
  :meth:`Lapic.next_deadline` returns ``None`` so that the machine does not cut
  quanta short for expiries that raise nothing.  :meth:`Lapic.advance`
  accounts masked expiries arithmetically (``timer_masked``).
* **ESR** has SDM write-then-read semantics: errors accumulate internally; a
  write to ESR copies the accumulated errors into the readable register and
  clears the accumulator.  So ``write ESR; read ESR`` reports the errors seen
  since the previous write.
* **Software-disabled APIC** (SVR bit 8 clear): fixed interrupts are still
  accepted into IRR and held; none is delivered until the APIC is enabled.
* **INTA with nothing deliverable** returns the spurious vector (SVR bits 0-7)
  and leaves ISR alone, as the hardware does.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "ESR_ILLEGAL_REGISTER",
    "ESR_RECEIVE_ILLEGAL_VECTOR",
    "ESR_SEND_ILLEGAL_VECTOR",
    "LAPIC_BASE",
    "LAPIC_SIZE",
    "SOURCE_ERROR",
    "SOURCE_SELF_IPI",
    "SOURCE_TIMER",
    "Lapic",
]

LAPIC_BASE = 0xFEE00000
"""Physical base address of the xAPIC MMIO page."""
LAPIC_SIZE = 0x1000
"""Size of the xAPIC MMIO page."""

SOURCE_TIMER = 0x100
"""Interrupt source id of the LAPIC timer (IOAPIC pins use 0..23)."""
SOURCE_SELF_IPI = 0x101
"""Interrupt source id of a self-IPI sent through the ICR."""
SOURCE_ERROR = 0x102
"""Interrupt source id of the LVT error interrupt."""

ESR_SEND_ILLEGAL_VECTOR = 1 << 5
"""ESR bit: an IPI was sent with a vector below 16."""
ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6
"""ESR bit: an interrupt with a vector below 16 was received (and dropped)."""
ESR_ILLEGAL_REGISTER = 1 << 7
"""ESR bit: a reserved register offset was accessed."""

# Register offsets (SDM Table "Local APIC Register Address Map").
REG_ID = 0x020
REG_VERSION = 0x030
REG_TPR = 0x080
REG_APR = 0x090
REG_PPR = 0x0A0
REG_EOI = 0x0B0
REG_LDR = 0x0D0
REG_DFR = 0x0E0
REG_SVR = 0x0F0
REG_ISR = 0x100
REG_TMR = 0x180
REG_IRR = 0x200
REG_ESR = 0x280
REG_ICR_LO = 0x300
REG_ICR_HI = 0x310
REG_LVT_TIMER = 0x320
REG_LVT_THERMAL = 0x330
REG_LVT_PERF = 0x340
REG_LVT_LINT0 = 0x350
REG_LVT_LINT1 = 0x360
REG_LVT_ERROR = 0x370
REG_TIMER_INITIAL = 0x380
REG_TIMER_CURRENT = 0x390
REG_TIMER_DIVIDE = 0x3E0

VERSION = 0x00050014  # version 0x14 (integrated xAPIC), max LVT entry 5 (six LVTs)
LVT_MASKED = 1 << 16
LVT_TIMER_PERIODIC = 1 << 17
SVR_ENABLE = 1 << 8

# Writable bits of each read-write register; other bits read as their fixed value.
_LVT_WRITABLE = {
    REG_LVT_TIMER: 0x000300FF,  # vector, mask, mode bit 17 (bit 18, TSC-deadline, reserved)
    REG_LVT_THERMAL: 0x000107FF,  # vector, delivery mode, mask
    REG_LVT_PERF: 0x000107FF,
    REG_LVT_LINT0: 0x0001A7FF,  # vector, delivery mode, polarity, trigger mode, mask
    REG_LVT_LINT1: 0x0001A7FF,
    REG_LVT_ERROR: 0x000100FF,  # vector, mask
}
_LVT_NAMES = {
    REG_LVT_TIMER: "lvt_timer",
    REG_LVT_THERMAL: "lvt_thermal",
    REG_LVT_PERF: "lvt_perf",
    REG_LVT_LINT0: "lvt_lint0",
    REG_LVT_LINT1: "lvt_lint1",
    REG_LVT_ERROR: "lvt_error",
}
_ICR_LO_WRITABLE = 0x000CCFFF  # vector, mode, dest mode, level, trigger, shorthand
_READ_ONLY = frozenset(
    [REG_VERSION, REG_APR, REG_PPR, REG_TIMER_CURRENT]
    + [REG_ISR + 0x10 * i for i in range(8)]
    + [REG_TMR + 0x10 * i for i in range(8)]
    + [REG_IRR + 0x10 * i for i in range(8)]
)

_MASK32 = 0xFFFFFFFF


def _highest(bits: int) -> int:
    """Highest set vector in a 256-bit mask, or 0 when the mask is empty."""
    return bits.bit_length() - 1 if bits else 0


def divide_value(dcr: int) -> int:
    """Divisor selected by a divide configuration register value.

    The SDM encodes the divisor in bits 0, 1 and 3: ``0b000`` is 2, ``0b001``
    4, ... ``0b110`` 128 and ``0b111`` 1.
    """
    code = ((dcr >> 1) & 0b100) | (dcr & 0b011)
    return 1 if code == 0b111 else 2 << code


class Lapic:
    """One xAPIC, MMIO at :data:`LAPIC_BASE`, with its timer in virtual time.

    ``on_eoi(vector)`` is called when an EOI retires a vector whose TMR bit is
    set (a level-triggered interrupt), so the IOAPIC can clear remote IRR.
    """

    BASE = LAPIC_BASE
    SIZE = LAPIC_SIZE

    def __init__(self, on_eoi: Callable[[int], None] | None = None, apic_id: int = 0) -> None:
        self.on_eoi: Callable[[int], None] | None = on_eoi
        """EOI broadcast for level-triggered vectors (the IOAPIC's ``eoi``)."""
        self.now: int = 0
        """Virtual time of the most recent :meth:`advance`."""
        self.unknown_accesses: int = 0
        """Reads and writes of reserved offsets or with an unsupported size/alignment."""
        self.readonly_writes: int = 0
        """Writes to read-only registers (ignored)."""
        self.timer_fires: int = 0
        """Timer expiries that raised an interrupt request (LVT timer unmasked)."""
        self.timer_coalesced: int = 0
        """Of ``timer_fires``, those that found the timer vector already pending in IRR."""
        self.timer_masked: int = 0
        """Timer expiries that raised nothing because the LVT timer was masked."""
        self.spurious_acks: int = 0
        """INTA cycles with nothing deliverable (answered with the spurious vector)."""
        self.unsupported_ipis: int = 0
        """ICR writes with a delivery mode other than fixed/lowest-priority (dropped)."""
        self.errors: int = 0
        """Errors logged into the ESR."""

        self._id = (apic_id & 0xFF) << 24
        self._tpr = 0
        self._ldr = 0
        self._dfr = _MASK32
        self._svr = 0xFF
        self._isr = 0
        self._tmr = 0
        self._irr = 0
        self._esr = 0
        self._esr_pending = 0
        self._icr_lo = 0
        self._icr_hi = 0
        self._lvt = dict.fromkeys(_LVT_WRITABLE, LVT_MASKED)
        self._timer_initial = 0
        self._timer_dcr = 0
        self._timer_running = False
        self._timer_next = 0
        # (source, vtime) of each vector when it entered IRR, and when it moved to ISR.
        self._raised: list[tuple[int, int] | None] = [None] * 256
        self._serviced: list[tuple[int, int] | None] = [None] * 256

    # ------------------------------------------------------------------ time

    def advance(self, vtime: int) -> None:
        """Move ``now`` to ``vtime`` and fire every timer expiry at or before it.

        Several periodic expiries within one step raise the timer vector once
        (a real APIC has one IRR bit per vector); all are counted in
        ``timer_fires`` and the extra ones in ``timer_coalesced``.  The interrupt
        is recorded as raised at the first expiry.  Raises ``ValueError`` if
        ``vtime`` is before ``now``.
        """
        if vtime < self.now:
            raise ValueError(f"virtual time goes backward: {vtime} < {self.now}")
        self.now = vtime
        if not self._timer_running or self._timer_next > vtime:
            return
        first = self._timer_next
        if self._lvt[REG_LVT_TIMER] & LVT_TIMER_PERIODIC:
            period = self._timer_initial * divide_value(self._timer_dcr)
            count = (vtime - first) // period + 1
            self._timer_next = first + count * period
        else:
            count = 1
            self._timer_running = False
        lvt = self._lvt[REG_LVT_TIMER]
        if lvt & LVT_MASKED:
            self.timer_masked += count
            return
        vector = lvt & 0xFF
        already = vector >= 16 and bool((self._irr >> vector) & 1)
        self.timer_fires += count
        self.timer_coalesced += count - 1 + (1 if already else 0)
        self.accept(vector, False, SOURCE_TIMER, first)

    def next_deadline(self) -> int | None:
        """Vtime of the next timer expiry that would raise an interrupt.

        ``None`` when the timer is stopped (initial count 0, or a one-shot that
        has expired) or when the LVT timer is masked: a masked timer still
        counts, but waking the machine for it would raise nothing.
        """
        if not self._timer_running or self._lvt[REG_LVT_TIMER] & LVT_MASKED:
            return None
        return self._timer_next

    def _timer_current(self) -> int:
        if not self._timer_running:
            return 0
        divide = divide_value(self._timer_dcr)
        return (self._timer_next - self.now + divide - 1) // divide

    # ------------------------------------------------------------ interrupts

    def accept(self, vector: int, level: bool, source: int, vtime: int) -> bool:
        """Accept a fixed interrupt into IRR; return whether it was accepted.

        ``level`` sets the vector's TMR bit (level-triggered: EOI is broadcast
        to ``on_eoi``), otherwise TMR is cleared.  Vectors below 16 are illegal:
        the ESR "receive illegal vector" bit is set and the interrupt dropped.
        ``source`` (an IOAPIC pin, :data:`SOURCE_TIMER`, ...) and ``vtime`` are
        kept for :meth:`raised_info`; a vector raised again while still pending
        keeps its earliest record.
        """
        vector &= 0xFF
        if vector < 16:
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return False
        bit = 1 << vector
        if level:
            self._tmr |= bit
        else:
            self._tmr &= ~bit
        if not self._irr & bit:
            self._irr |= bit
            self._raised[vector] = (source, vtime)
        return True

    def raised_info(self, vector: int) -> tuple[int, int]:
        """``(source, vtime)`` of a vector pending in IRR, else of it in ISR.

        Callable right after :meth:`acknowledge` to log delivery latency.
        Raises ``KeyError`` if the vector is in neither.
        """
        info = self._raised[vector] if (self._irr >> vector) & 1 else None
        if info is None and (self._isr >> vector) & 1:
            info = self._serviced[vector]
        if info is None:
            raise KeyError(vector)
        return info

    def ppr(self) -> int:
        """Processor priority: TPR if its class is at least the highest ISR class."""
        isrv = _highest(self._isr)
        if (self._tpr >> 4) >= (isrv >> 4):
            return self._tpr
        return isrv & 0xF0

    def apr(self) -> int:
        """Arbitration priority, computed from TPR, highest ISR and highest IRR."""
        isrv = _highest(self._isr)
        irrv = _highest(self._irr)
        tpr_class = self._tpr >> 4
        if tpr_class >= irrv >> 4 and tpr_class > isrv >> 4:
            return self._tpr
        return max(self._tpr & 0xF0, isrv & 0xF0, irrv & 0xF0)

    @property
    def software_enabled(self) -> bool:
        """SVR bit 8: the APIC is software-enabled."""
        return bool(self._svr & SVR_ENABLE)

    def pending_vector(self) -> int | None:
        """Highest IRR vector deliverable now, or ``None``.

        Deliverable: the APIC is software-enabled and the vector's priority
        class (``vector >> 4``) is above the PPR's class.
        """
        if not self._irr or not self.software_enabled:
            return None
        vector = _highest(self._irr)
        if vector >> 4 > self.ppr() >> 4:
            return vector
        return None

    def acknowledge(self) -> int:
        """INTA: move the deliverable vector from IRR to ISR and return it.

        With nothing deliverable, return the spurious vector (SVR bits 0-7),
        leave ISR unchanged and count ``spurious_acks``.
        """
        vector = self.pending_vector()
        if vector is None:
            self.spurious_acks += 1
            return self._svr & 0xFF
        bit = 1 << vector
        self._irr &= ~bit
        self._isr |= bit
        self._serviced[vector] = self._raised[vector]
        self._raised[vector] = None
        return vector

    def eoi(self) -> int | None:
        """Retire the highest-priority ISR vector (as a write to EOI does).

        Calls ``on_eoi(vector)`` if the vector's TMR bit is set.  Returns the
        retired vector, ``None`` if ISR was empty.
        """
        if not self._isr:
            return None
        vector = _highest(self._isr)
        self._isr &= ~(1 << vector)
        self._serviced[vector] = None
        if (self._tmr >> vector) & 1 and self.on_eoi is not None:
            self.on_eoi(vector)
        return vector

    def _error(self, bits: int) -> None:
        self.errors += 1
        self._esr_pending |= bits
        lvt = self._lvt[REG_LVT_ERROR]
        vector = lvt & 0xFF
        # An error LVT with an illegal vector would report itself forever: stop there.
        if not lvt & LVT_MASKED and vector >= 16:
            self.accept(vector, False, SOURCE_ERROR, self.now)

    def _send_ipi(self) -> None:
        lo = self._icr_lo
        vector = lo & 0xFF
        mode = (lo >> 8) & 0b111
        shorthand = (lo >> 18) & 0b11
        if shorthand == 0b11:  # all excluding self: nobody else on this PC
            return
        if shorthand == 0b00 and not self._is_destination(self._icr_hi >> 24, bool((lo >> 11) & 1)):
            return
        if mode not in (0b000, 0b001):  # only fixed; lowest priority = the one CPU
            self.unsupported_ipis += 1
            return
        if vector < 16:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            return
        self.accept(vector, False, SOURCE_SELF_IPI, self.now)

    def _is_destination(self, dest: int, logical: bool) -> bool:
        if dest == 0xFF:
            return True
        if not logical:
            return dest == self._id >> 24
        ldr = self._ldr >> 24
        if self._dfr >> 28 == 0xF:  # flat model
            return bool(dest & ldr)
        # cluster model: high nibble is the cluster, low nibble a bitmask within it
        return dest >> 4 == ldr >> 4 and bool(dest & ldr & 0xF)

    # ------------------------------------------------------------------ MMIO

    def read(self, offset: int, size: int) -> int:
        """Read ``size`` bytes at ``offset`` in the APIC page (MMIO callback).

        Registers are 32 bits at 16-byte-aligned offsets; a 1- or 2-byte read
        inside a register's first dword returns those bytes.  Reserved offsets
        read 0 and are counted in ``unknown_accesses``.
        """
        reg = offset & ~0xF
        byte = offset & 0xF
        if size not in (1, 2, 4) or byte + size > 4:
            self.unknown_accesses += 1
            return 0
        value = self._read_reg(reg)
        if value is None:
            self.unknown_accesses += 1
            self._error(ESR_ILLEGAL_REGISTER)
            return 0
        return (value >> (8 * byte)) & ((1 << (8 * size)) - 1)

    def _read_reg(self, reg: int) -> int | None:
        if REG_ISR <= reg < REG_ISR + 0x80:
            return (self._isr >> (32 * ((reg - REG_ISR) >> 4))) & _MASK32
        if REG_TMR <= reg < REG_TMR + 0x80:
            return (self._tmr >> (32 * ((reg - REG_TMR) >> 4))) & _MASK32
        if REG_IRR <= reg < REG_IRR + 0x80:
            return (self._irr >> (32 * ((reg - REG_IRR) >> 4))) & _MASK32
        if reg in self._lvt:
            return self._lvt[reg]
        simple = {
            REG_ID: self._id,
            REG_VERSION: VERSION,
            REG_TPR: self._tpr,
            REG_EOI: 0,
            REG_LDR: self._ldr,
            REG_DFR: self._dfr,
            REG_SVR: self._svr,
            REG_ESR: self._esr,
            REG_ICR_LO: self._icr_lo,  # delivery status (bit 12) always reads idle
            REG_ICR_HI: self._icr_hi,
            REG_TIMER_INITIAL: self._timer_initial,
            REG_TIMER_DIVIDE: self._timer_dcr,
        }
        if reg in simple:
            return simple[reg]
        if reg == REG_APR:
            return self.apr()
        if reg == REG_PPR:
            return self.ppr()
        if reg == REG_TIMER_CURRENT:
            return self._timer_current()
        return None

    def write(self, offset: int, size: int, value: int) -> None:
        """Write ``value`` (``size`` bytes) at ``offset`` in the APIC page (MMIO callback).

        Only aligned 32-bit writes reach a register; other sizes or alignments
        and reserved offsets are ignored and counted in ``unknown_accesses``.
        Writes to read-only registers are ignored and counted in
        ``readonly_writes``.
        """
        if size != 4 or offset & 0xF:
            self.unknown_accesses += 1
            return
        reg = offset
        value &= _MASK32
        if reg in _READ_ONLY:
            self.readonly_writes += 1
        elif reg == REG_ID:
            self._id = value & 0xFF000000
        elif reg == REG_TPR:
            self._tpr = value & 0xFF
        elif reg == REG_EOI:
            self.eoi()
        elif reg == REG_LDR:
            self._ldr = value & 0xFF000000
        elif reg == REG_DFR:
            self._dfr = (value & 0xF0000000) | 0x0FFFFFFF
        elif reg == REG_SVR:
            self._svr = value & 0x3FF
            if not self._svr & SVR_ENABLE:
                for lvt in self._lvt:
                    self._lvt[lvt] |= LVT_MASKED
        elif reg == REG_ESR:
            self._esr = self._esr_pending
            self._esr_pending = 0
        elif reg == REG_ICR_LO:
            self._icr_lo = value & _ICR_LO_WRITABLE
            self._send_ipi()
        elif reg == REG_ICR_HI:
            self._icr_hi = value & 0xFF000000
        elif reg in self._lvt:
            value &= _LVT_WRITABLE[reg]
            if not self.software_enabled:
                value |= LVT_MASKED
            self._lvt[reg] = value
        elif reg == REG_TIMER_INITIAL:
            self._timer_initial = value
            self._timer_running = value != 0
            self._timer_next = self.now + value * divide_value(self._timer_dcr)
        elif reg == REG_TIMER_DIVIDE:
            current = self._timer_current()
            self._timer_dcr = value & 0b1011
            if self._timer_running:
                self._timer_next = self.now + current * divide_value(self._timer_dcr)
        else:
            self.unknown_accesses += 1
            self._error(ESR_ILLEGAL_REGISTER)

    # ----------------------------------------------------------- checkpoints

    def registers(self) -> dict[str, int]:
        """Architectural register values for checkpoints, keys in sorted order.

        ``timer_current`` is the current count at ``now``; ``timer_divide`` is
        the divide configuration register (not the divisor).
        """
        regs: dict[str, int] = {
            "id": self._id,
            "version": VERSION,
            "tpr": self._tpr,
            "ppr": self.ppr(),
            "svr": self._svr,
            "esr": self._esr,
            "icr_lo": self._icr_lo,
            "icr_hi": self._icr_hi,
            "timer_initial": self._timer_initial,
            "timer_current": self._timer_current(),
            "timer_divide": self._timer_dcr,
            "ldr": self._ldr,
            "dfr": self._dfr,
        }
        for reg, name in _LVT_NAMES.items():
            regs[name] = self._lvt[reg]
        for i in range(8):
            shift = 32 * i
            regs[f"isr{i}"] = (self._isr >> shift) & _MASK32
            regs[f"tmr{i}"] = (self._tmr >> shift) & _MASK32
            regs[f"irr{i}"] = (self._irr >> shift) & _MASK32
        return dict(sorted(regs.items()))
