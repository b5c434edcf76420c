"""I/O APIC model: one 82093AA-style IOAPIC with 24 pins, wired to the one LAPIC.

MMIO is the indirect pair IOREGSEL (offset 0x00) / IOWIN (offset 0x10).
Registers behind the window: ID (0x00), version (0x01), arbitration ID (0x02)
and 24 redirection entries (0x10 + 2n low dword, 0x11 + 2n high dword).

Line state and polarity.  Devices call :meth:`Ioapic.set_pin` with the
*logical* state of their line (asserted or not).  The board wires each pin with
a fixed polarity (``active_low_pins``, default all active-high); the physical
level is the logical state, inverted on active-low pins.  The IOAPIC interprets
the physical level through the polarity the guest programmed (bit 13, 1 =
active low).  When the guest programs the polarity the board uses — with the
default wiring, that is the reset value 0 — the IOAPIC sees exactly the logical
state; when it programs the opposite polarity it sees the line inverted, as real
hardware would (an idle level pin then looks asserted).

Delivery is immediate (delivery status always reads 0) to the one CPU: fixed
and lowest-priority modes are delivered as fixed; the destination field is kept
but not checked.  Other delivery modes (SMI, NMI, INIT, ExtINT) are not
delivered and are counted in ``dropped``.  Edges on a masked pin are lost;
a masked level pin delivers when unmasked if it is still asserted.  Writing a
redirection entry with edge trigger mode clears its remote IRR (Linux relies on
this to recover a stuck level entry on old IOAPICs).
"""

from __future__ import annotations

from recorder.lapic import Lapic

__all__ = ["IOAPIC_BASE", "IOAPIC_PINS", "IOAPIC_SIZE", "Ioapic"]

IOAPIC_BASE = 0xFEC00000
"""Physical base address of the IOAPIC MMIO page."""
IOAPIC_SIZE = 0x1000
"""Size of the IOAPIC MMIO window as mapped (unicorn maps whole 4 KiB pages)."""
IOAPIC_PINS = 24
"""Number of interrupt input pins (redirection entries)."""

IOREGSEL = 0x00
IOWIN = 0x10

REG_ID = 0x00
REG_VERSION = 0x01
REG_ARBITRATION = 0x02
REG_REDIR = 0x10

VERSION = 0x00170011  # max redirection entry 23, version 0x11

RTE_VECTOR = 0xFF
RTE_DELIVERY_MODE = 0x700
RTE_DELIVERY_STATUS = 1 << 12
RTE_POLARITY_LOW = 1 << 13
RTE_REMOTE_IRR = 1 << 14
RTE_LEVEL = 1 << 15
RTE_MASKED = 1 << 16
_RTE_LO_WRITABLE = 0x0001AFFF  # everything but delivery status and remote IRR
_RTE_HI_WRITABLE = 0xFF000000  # destination field, bits 56-63

_MASK32 = 0xFFFFFFFF


class Ioapic:
    """One IOAPIC at :data:`IOAPIC_BASE` delivering to ``lapic``.

    Wire :meth:`eoi` as the LAPIC's ``on_eoi``.  ``active_low_pins`` is a
    bitmask of the pins the board wires active-low (see the module docstring).
    """

    BASE = IOAPIC_BASE
    SIZE = IOAPIC_SIZE
    PINS = IOAPIC_PINS

    def __init__(self, lapic: Lapic, ioapic_id: int = 0, active_low_pins: int = 0) -> None:
        self.lapic: Lapic = lapic
        """The LAPIC every interrupt is delivered to."""
        self.active_low_pins: int = active_low_pins & ((1 << IOAPIC_PINS) - 1)
        """Pins the board wires active-low (bitmask)."""
        self.deliveries: list[int] = [0] * IOAPIC_PINS
        """Interrupt messages sent to the LAPIC, per pin."""
        self.dropped: list[int] = [0] * IOAPIC_PINS
        """Interrupts not delivered because of an unsupported delivery mode, per pin."""
        self.unknown_accesses: int = 0
        """Accesses to reserved offsets or register indexes, or of an unsupported size."""

        self._id = (ioapic_id & 0xF) << 24
        self._arbitration = self._id
        self._regsel = 0
        self._lo = [RTE_MASKED] * IOAPIC_PINS  # without remote IRR, kept in _remote_irr
        self._hi = [0] * IOAPIC_PINS
        self._asserted = 0  # logical line state, bit per pin
        self._remote_irr = 0  # bit per pin

    # ----------------------------------------------------------------- lines

    def _seen(self, pin: int) -> bool:
        """The line as the IOAPIC interprets it through the programmed polarity."""
        physical = bool(((self._asserted ^ self.active_low_pins) >> pin) & 1)
        return physical != bool(self._lo[pin] & RTE_POLARITY_LOW)

    def set_pin(self, pin: int, asserted: bool, vtime: int) -> None:
        """Drive ``pin``'s line to the logical state ``asserted`` at ``vtime``.

        Edge-triggered entries deliver once on a transition to asserted (as
        seen through the programmed polarity) if unmasked.  Level-triggered
        entries deliver while seen asserted, unmasked and remote IRR clear.
        """
        if not 0 <= pin < IOAPIC_PINS:
            raise ValueError(f"IOAPIC pin out of range: {pin}")
        before = self._seen(pin)
        if asserted:
            self._asserted |= 1 << pin
        else:
            self._asserted &= ~(1 << pin)
        after = self._seen(pin)
        if self._lo[pin] & RTE_LEVEL:
            self._level_check(pin, vtime)
        elif after and not before and not self._lo[pin] & RTE_MASKED:
            self._deliver(pin, vtime)

    def _level_check(self, pin: int, vtime: int) -> None:
        lo = self._lo[pin]
        if (
            lo & RTE_LEVEL
            and not lo & RTE_MASKED
            and not (self._remote_irr >> pin) & 1
            and self._seen(pin)
        ):
            self._deliver(pin, vtime)

    def _deliver(self, pin: int, vtime: int) -> None:
        lo = self._lo[pin]
        if (lo & RTE_DELIVERY_MODE) not in (0x000, 0x100):  # fixed, lowest priority
            self.dropped[pin] += 1
            return
        level = bool(lo & RTE_LEVEL)
        self.deliveries[pin] += 1
        if self.lapic.accept(lo & RTE_VECTOR, level, pin, vtime) and level:
            self._remote_irr |= 1 << pin

    def eoi(self, vector: int) -> None:
        """EOI broadcast from the LAPIC for a level-triggered ``vector``.

        Clears remote IRR of every level entry with that vector and delivers
        again (at the LAPIC's ``now``) if its line is still asserted.
        """
        for pin in range(IOAPIC_PINS):
            lo = self._lo[pin]
            if lo & RTE_LEVEL and (lo & RTE_VECTOR) == vector:
                self._remote_irr &= ~(1 << pin)
                self._level_check(pin, self.lapic.now)

    # ------------------------------------------------------------------ MMIO

    def read(self, offset: int, size: int) -> int:
        """Read IOREGSEL or IOWIN (MMIO callback); other offsets read 0."""
        if offset == IOREGSEL and size in (1, 2, 4):
            return self._regsel
        if offset == IOWIN and size == 4:
            value = self.read_register(self._regsel)
            if value is None:
                self.unknown_accesses += 1
                return 0
            return value
        self.unknown_accesses += 1
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """Write IOREGSEL or IOWIN (MMIO callback); other offsets are ignored."""
        if offset == IOREGSEL and size in (1, 2, 4):
            self._regsel = value & 0xFF
        elif offset == IOWIN and size == 4:
            if not self.write_register(self._regsel, value & _MASK32):
                self.unknown_accesses += 1
        else:
            self.unknown_accesses += 1

    def read_register(self, index: int) -> int | None:
        """Value of the register at ``index`` behind IOWIN, ``None`` if reserved."""
        if index == REG_ID:
            return self._id
        if index == REG_VERSION:
            return VERSION
        if index == REG_ARBITRATION:
            return self._arbitration
        if REG_REDIR <= index < REG_REDIR + 2 * IOAPIC_PINS:
            pin = (index - REG_REDIR) >> 1
            if index & 1:
                return self._hi[pin]
            return self._lo[pin] | (RTE_REMOTE_IRR if (self._remote_irr >> pin) & 1 else 0)
        return None

    def write_register(self, index: int, value: int) -> bool:
        """Write the register at ``index`` behind IOWIN; ``False`` if reserved.

        Read-only registers and bits ignore writes.  Writing the ID also loads
        the arbitration ID.  Writing a redirection entry's low dword may
        deliver: a level entry that is now unmasked with its line asserted.
        """
        if index == REG_ID:
            self._id = value & 0x0F000000
            self._arbitration = self._id
            return True
        if index in (REG_VERSION, REG_ARBITRATION):
            return True
        if REG_REDIR <= index < REG_REDIR + 2 * IOAPIC_PINS:
            pin = (index - REG_REDIR) >> 1
            if index & 1:
                self._hi[pin] = value & _RTE_HI_WRITABLE
                return True
            self._lo[pin] = value & _RTE_LO_WRITABLE
            if not self._lo[pin] & RTE_LEVEL:
                self._remote_irr &= ~(1 << pin)
            self._level_check(pin, self.lapic.now)
            return True
        return False

    # ----------------------------------------------------------- checkpoints

    def registers(self) -> dict[str, int]:
        """Register values and line state for checkpoints, keys in sorted order.

        ``redirN_lo`` includes the remote IRR bit as read through IOWIN;
        ``pin_asserted`` is the logical line state and ``remote_irr`` the
        remote IRR bits, both as bitmasks by pin.
        """
        regs: dict[str, int] = {
            "id": self._id,
            "version": VERSION,
            "arbitration": self._arbitration,
            "ioregsel": self._regsel,
            "pin_asserted": self._asserted,
            "remote_irr": self._remote_irr,
        }
        for pin in range(IOAPIC_PINS):
            lo = self.read_register(REG_REDIR + 2 * pin)
            hi = self.read_register(REG_REDIR + 2 * pin + 1)
            assert lo is not None and hi is not None
            regs[f"redir{pin}_lo"] = lo
            regs[f"redir{pin}_hi"] = hi
        return dict(sorted(regs.items()))
