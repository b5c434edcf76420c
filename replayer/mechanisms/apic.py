"""Virtual LAPIC and IOAPIC registers as a backend's device model holds them.

Register semantics follow the Intel SDM (Vol. 3A, xAPIC mode) and the
82093AA IOAPIC datasheet: writable bits per register, SVR software disable
forcing every LVT mask, PPR from TPR and the highest in-service vector, EOI
retiring the highest ISR bit.  Time-dependent state (timer current count,
IRR, TMR, ESR) is not modelled: a replay has no clock, only the stream.

A backend without an APIC (Xen's event channels, lguest's hypercalls) keeps
the same registers as a shadow of what the guest asked for; only how much
each access costs differs.  A backend that is not told of APIC writes
(``--without apic --fallback none``) keeps its reset state, and a read of the
page it does not back returns all ones.
"""

from __future__ import annotations

LAPIC_BASE = 0xFEE00000
IOAPIC_BASE = 0xFEC00000
UNBACKED = 0xFFFFFFFF
SOURCE_TIMER, SOURCE_SELF_IPI, SOURCE_ERROR = 0x100, 0x101, 0x102

LVT = {
    0x320: ("lvt_timer", 0x000300FF),
    0x330: ("lvt_thermal", 0x000107FF),
    0x340: ("lvt_perf", 0x000107FF),
    0x350: ("lvt_lint0", 0x0001A7FF),
    0x360: ("lvt_lint1", 0x0001A7FF),
    0x370: ("lvt_error", 0x000100FF),
}
LVT_MASKED = 1 << 16
SVR_ENABLE = 1 << 8
#: offset -> (checkpoint key, writable mask) of the plain read/write registers.
PLAIN = {
    0x080: ("tpr", 0xFF),
    0x0D0: ("ldr", 0xFF000000),
    0x0F0: ("svr", 0x3FF),
    0x300: ("icr_lo", 0x000CCFFF),
    0x310: ("icr_hi", 0xFF000000),
    0x380: ("timer_initial", 0xFFFFFFFF),
    0x3E0: ("timer_divide", 0xB),
    **LVT,
}
REG_ID, REG_VERSION, REG_PPR, REG_EOI, REG_DFR = 0x020, 0x030, 0x0A0, 0x0B0, 0x0E0
REG_ISR = 0x100
#: Registers whose value depends on time or on the device's own history: not compared.
UNMODELLED = (
    {0x090, 0x280, 0x390}
    | {0x180 + 0x10 * i for i in range(8)}
    | {0x200 + 0x10 * i for i in range(8)}
)


def _highest(bits: int) -> int:
    return bits.bit_length() - 1 if bits else 0


class VirtualLapic:
    """One xAPIC's guest-visible registers."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {off: 0 for off in PLAIN}
        for off in LVT:
            self.values[off] = LVT_MASKED
        self.values[0x0F0] = 0xFF
        self.dfr = 0xFFFFFFFF
        self.id: int | None = None
        """Unknown until written or first observed (the machine chooses it)."""
        self.version: int | None = None
        self.isr = 0

    @property
    def enabled(self) -> bool:
        """SVR bit 8."""
        return bool(self.values[0x0F0] & SVR_ENABLE)

    def ppr(self) -> int:
        """Processor priority: TPR if its class is at least the highest ISR class."""
        tpr = self.values[0x080]
        isrv = _highest(self.isr)
        return tpr if tpr >> 4 >= isrv >> 4 else isrv & 0xF0

    def write(self, offset: int, value: int) -> None:
        """A 32-bit write to the register at ``offset``."""
        value &= 0xFFFFFFFF
        if offset == REG_EOI:
            if self.isr:
                self.isr &= ~(1 << _highest(self.isr))
        elif offset == REG_ID:
            self.id = value & 0xFF000000
        elif offset == REG_DFR:
            self.dfr = (value & 0xF0000000) | 0x0FFFFFFF
        elif offset in PLAIN:
            v = value & PLAIN[offset][1]
            if offset in LVT and not self.enabled:
                v |= LVT_MASKED
            self.values[offset] = v
            if offset == 0x0F0 and not v & SVR_ENABLE:
                for o in LVT:
                    self.values[o] |= LVT_MASKED

    def read(self, offset: int) -> int | None:
        """The value a read returns, or None where this model does not know it."""
        if offset in PLAIN:
            return self.values[offset]
        if offset == REG_ID:
            return self.id
        if offset == REG_VERSION:
            return self.version
        if offset == REG_DFR:
            return self.dfr
        if offset == REG_PPR:
            return self.ppr()
        if offset == REG_EOI:
            return 0
        if REG_ISR <= offset < REG_ISR + 0x80 and not offset & 0xF:
            return (self.isr >> (32 * ((offset - REG_ISR) >> 4))) & 0xFFFFFFFF
        return None

    def observe(self, offset: int, value: int) -> None:
        """Learn a register the machine chose (ID, version) from its first observation."""
        if offset == REG_ID and self.id is None:
            self.id = value
        elif offset == REG_VERSION and self.version is None:
            self.version = value

    def deliver(self, vector: int) -> None:
        """The CPU accepted ``vector``: it is in service until EOI."""
        self.isr |= 1 << (vector & 0xFF)

    def blocks(self, vector: int, source: int) -> str | None:
        """Why the backend's LAPIC would not deliver this interrupt now, or None."""
        if not self.enabled:
            return "APIC software-disabled (SVR)"
        if source == SOURCE_TIMER and self.values[0x320] & LVT_MASKED:
            return "LVT timer masked"
        if source == SOURCE_ERROR and self.values[0x370] & LVT_MASKED:
            return "LVT error masked"
        if (vector >> 4) <= (self.ppr() >> 4):
            return f"priority class not above PPR {self.ppr():#x}"
        return None

    def registers(self) -> dict[str, int]:
        """Checkpoint keys this model can vouch for (``recorder``'s names)."""
        out = {name: self.values[off] for off, (name, _) in PLAIN.items()}
        out["dfr"] = self.dfr
        out["ppr"] = self.ppr()
        for i in range(8):
            out[f"isr{i}"] = (self.isr >> (32 * i)) & 0xFFFFFFFF
        if self.id is not None:
            out["id"] = self.id
        if self.version is not None:
            out["version"] = self.version
        return out


RTE_WRITABLE_LO = 0x0001AFFF  # all but delivery status (12) and remote IRR (14)
RTE_COMPARE_LO = 0xFFFFAFFF
RTE_MASKED = 1 << 16
IOREGSEL, IOWIN = 0x00, 0x10


class VirtualIoapic:
    """One IOAPIC's registers behind IOREGSEL/IOWIN, 24 redirection entries."""

    PINS = 24

    def __init__(self) -> None:
        self.regsel = 0
        self.id = 0
        self.lo = [RTE_MASKED] * self.PINS
        self.hi = [0] * self.PINS
        self.learned: dict[int, int] = {}
        """Read-only registers (version, arbitration) as first observed."""

    def write(self, offset: int, value: int) -> None:
        """A 32-bit MMIO write at ``offset`` in the IOAPIC page."""
        if offset == IOREGSEL:
            self.regsel = value & 0xFF
        elif offset == IOWIN:
            r = self.regsel
            if r == 0:
                self.id = value & 0x0F000000
            elif 0x10 <= r < 0x10 + 2 * self.PINS:
                pin = (r - 0x10) >> 1
                if r & 1:
                    self.hi[pin] = value & 0xFF000000
                else:
                    self.lo[pin] = value & RTE_WRITABLE_LO

    def read(self, offset: int) -> tuple[int, int] | None:
        """(value, mask of the bits this model knows) for an MMIO read, or None."""
        if offset == IOREGSEL:
            return self.regsel, 0xFF
        if offset != IOWIN:
            return None
        r = self.regsel
        if r == 0:
            return self.id, 0x0F000000
        if 0x10 <= r < 0x10 + 2 * self.PINS:
            pin = (r - 0x10) >> 1
            return (self.hi[pin], 0xFFFFFFFF) if r & 1 else (self.lo[pin], RTE_COMPARE_LO)
        if r in self.learned:
            return self.learned[r], 0xFFFFFFFF
        return None

    def observe(self, offset: int, value: int) -> None:
        """Learn a read-only register from its first observation."""
        if offset == IOWIN and self.regsel in (1, 2) and self.regsel not in self.learned:
            self.learned[self.regsel] = value

    def blocks(self, pin: int) -> str | None:
        """Why this pin's interrupt would not be delivered now, or None."""
        if 0 <= pin < self.PINS and self.lo[pin] & RTE_MASKED:
            return f"IOAPIC pin {pin} masked"
        return None

    def registers(self) -> dict[str, tuple[int, int]]:
        """Checkpoint key -> (value, compare mask) this model can vouch for."""
        out: dict[str, tuple[int, int]] = {"id": (self.id, 0xFFFFFFFF)}
        out["ioregsel"] = (self.regsel, 0xFFFFFFFF)
        for p in range(self.PINS):
            out[f"redir{p}_lo"] = (self.lo[p], RTE_COMPARE_LO)
            out[f"redir{p}_hi"] = (self.hi[p], 0xFFFFFFFF)
        return out
