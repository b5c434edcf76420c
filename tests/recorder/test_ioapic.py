"""IOAPIC model: IOREGSEL/IOWIN, redirection entries, edge/level, EOI, polarity.

Expected values are derived by hand from the 82093AA datasheet and the SDM.
"""

from __future__ import annotations

import pytest

from recorder.ioapic import Ioapic
from recorder.lapic import Lapic

IOREGSEL, IOWIN = 0x00, 0x10
SVR, EOI = 0xF0, 0xB0


def machine(ioapic_id: int = 0, active_low_pins: int = 0) -> tuple[Lapic, Ioapic]:
    lapic = Lapic()
    ioapic = Ioapic(lapic, ioapic_id, active_low_pins=active_low_pins)
    lapic.on_eoi = ioapic.eoi
    lapic.write(SVR, 4, 0x1FF)
    return lapic, ioapic


def rd(io: Ioapic, index: int) -> int:
    io.write(IOREGSEL, 4, index)
    return io.read(IOWIN, 4)


def wr(io: Ioapic, index: int, value: int) -> None:
    io.write(IOREGSEL, 4, index)
    io.write(IOWIN, 4, value)


def rte(pin: int) -> int:
    return 0x10 + 2 * pin


def irr(lapic: Lapic) -> list[int]:
    bits = sum(lapic.read(0x200 + 16 * i, 4) << (32 * i) for i in range(8))
    return [v for v in range(256) if bits >> v & 1]


def test_reset_and_identification() -> None:
    _, io = machine(ioapic_id=2)
    assert rd(io, 0x00) == 0x02000000
    assert rd(io, 0x01) == 0x00170011
    assert rd(io, 0x02) == 0x02000000
    for pin in (0, 11, 23):
        assert rd(io, rte(pin)) == 0x00010000  # masked
        assert rd(io, rte(pin) + 1) == 0
    assert rd(io, 0x03) == 0  # reserved
    assert rd(io, 0x40) == 0  # one past redirection entry 23 (0x3F)
    assert io.unknown_accesses == 2


def test_ioregsel_and_window() -> None:
    _, io = machine()
    io.write(IOREGSEL, 4, 0x1234)
    assert io.read(IOREGSEL, 4) == 0x34  # 8 bits used
    io.write(IOREGSEL, 1, 0x01)
    assert io.read(IOWIN, 4) == 0x00170011
    assert io.read(0x20, 4) == 0  # other offsets
    io.write(0x20, 4, 0xFFFFFFFF)
    assert io.unknown_accesses == 2
    wr(io, 0x00, 0xFFFFFFFF)
    assert rd(io, 0x00) == 0x0F000000  # ID bits 24-27
    assert rd(io, 0x02) == 0x0F000000  # arbitration ID loaded from ID
    wr(io, 0x01, 0)
    assert rd(io, 0x01) == 0x00170011  # read-only


def test_redirection_entry_writable_bits() -> None:
    _, io = machine()
    wr(io, rte(5), 0xFFFFFFFF)
    assert rd(io, rte(5)) == 0x0001AFFF  # delivery status (12), remote IRR (14) read-only
    wr(io, rte(5) + 1, 0xFFFFFFFF)
    assert rd(io, rte(5) + 1) == 0xFF000000  # destination, bits 56-63


def test_edge_delivers_once_per_rising_edge() -> None:
    lapic, io = machine()
    wr(io, rte(2), 0x30)  # edge, active high, fixed, unmasked
    io.set_pin(2, True, 100)
    assert irr(lapic) == [0x30]
    assert lapic.raised_info(0x30) == (2, 100)
    assert lapic.read(0x180 + 0x10, 4) == 0  # TMR clear: edge
    io.set_pin(2, True, 150)  # no transition
    assert io.deliveries[2] == 1
    io.set_pin(2, False, 160)
    io.set_pin(2, True, 170)
    assert io.deliveries[2] == 2
    assert lapic.acknowledge() == 0x30
    lapic.write(EOI, 4, 0)
    assert rd(io, rte(2)) == 0x30  # no remote IRR for edge entries


def test_masked_edge_is_lost() -> None:
    lapic, io = machine()
    wr(io, rte(3), 0x10031)
    io.set_pin(3, True, 10)
    wr(io, rte(3), 0x31)  # unmasking does not replay a lost edge
    assert irr(lapic) == []
    assert io.deliveries[3] == 0


def test_level_remote_irr_and_eoi_redelivery() -> None:
    lapic, io = machine()
    wr(io, rte(11), 0x8041)  # level, active high, vector 0x41
    io.set_pin(11, True, 10)
    assert irr(lapic) == [0x41]
    assert lapic.read(0x180 + 0x20, 4) == 0x2  # TMR bit for 0x41
    assert rd(io, rte(11)) == 0xC041  # remote IRR set
    io.set_pin(11, True, 20)  # remote IRR blocks a second message
    assert io.deliveries[11] == 1
    assert lapic.acknowledge() == 0x41
    lapic.advance(30)
    lapic.write(EOI, 4, 0)  # still asserted: delivered again
    assert io.deliveries[11] == 2
    assert irr(lapic) == [0x41]
    assert lapic.raised_info(0x41) == (11, 30)
    assert rd(io, rte(11)) == 0xC041
    assert lapic.acknowledge() == 0x41
    io.set_pin(11, False, 40)
    lapic.write(EOI, 4, 0)
    assert rd(io, rte(11)) == 0x8041  # remote IRR cleared, nothing re-delivered
    assert irr(lapic) == []
    assert io.deliveries[11] == 2


def test_eoi_clears_every_level_entry_with_the_vector() -> None:
    lapic, io = machine()
    wr(io, rte(10), 0x8041)
    wr(io, rte(11), 0x8041)
    wr(io, rte(12), 0x8042)
    io.set_pin(10, True, 0)
    io.set_pin(11, True, 0)
    io.set_pin(12, True, 0)
    assert io.registers()["remote_irr"] == (1 << 10) | (1 << 11) | (1 << 12)
    assert lapic.acknowledge() == 0x42
    io.set_pin(12, False, 0)
    lapic.write(EOI, 4, 0)
    assert io.registers()["remote_irr"] == (1 << 10) | (1 << 11)
    assert lapic.acknowledge() == 0x41
    io.set_pin(10, False, 0)
    lapic.write(EOI, 4, 0)
    assert io.registers()["remote_irr"] == 1 << 11  # pin 11 re-delivered, pin 10 idle
    assert io.deliveries[10:13] == [1, 2, 1]


def test_masked_level_delivers_on_unmask() -> None:
    lapic, io = machine()
    wr(io, rte(9), 0x18041)  # masked level
    io.set_pin(9, True, 5)
    assert irr(lapic) == []
    lapic.advance(50)
    wr(io, rte(9), 0x8041)
    assert irr(lapic) == [0x41]
    assert lapic.raised_info(0x41) == (9, 50)


def test_switching_to_edge_clears_remote_irr() -> None:
    lapic, io = machine()
    wr(io, rte(11), 0x8041)
    io.set_pin(11, True, 0)
    lapic.acknowledge()
    assert rd(io, rte(11)) == 0xC041
    wr(io, rte(11), 0x10041)  # masked edge
    assert rd(io, rte(11)) == 0x10041
    wr(io, rte(11), 0x8041)  # back to level, unmasked, still asserted
    assert rd(io, rte(11)) == 0xC041
    assert io.deliveries[11] == 2


def test_polarity_with_active_low_wiring() -> None:
    lapic, io = machine(active_low_pins=1 << 11)
    wr(io, rte(11), 0xA041)  # level, active low: matches the board
    assert irr(lapic) == []  # idle line (physically high) is not asserted
    io.set_pin(11, True, 7)
    assert irr(lapic) == [0x41]
    assert io.registers()["pin_asserted"] == 1 << 11


def test_wrong_polarity_sees_line_inverted() -> None:
    lapic, io = machine(active_low_pins=1 << 11)
    wr(io, rte(11), 0x8041)  # programmed active high on an active-low line
    assert irr(lapic) == [0x41]  # idle line is physically high: looks asserted
    lapic2, io2 = machine()
    wr(io2, rte(3), 0x2031)  # edge, active low, on an active-high line
    io2.set_pin(3, True, 10)  # physical rise = falling edge as programmed
    assert irr(lapic2) == []
    io2.set_pin(3, False, 20)
    assert irr(lapic2) == [0x31]
    assert lapic2.raised_info(0x31) == (3, 20)


def test_delivery_modes() -> None:
    lapic, io = machine()
    wr(io, rte(4), 0x130)  # lowest priority: the one CPU
    io.set_pin(4, True, 0)
    assert irr(lapic) == [0x30]
    wr(io, rte(5), 0x431)  # NMI: not modelled
    io.set_pin(5, True, 0)
    assert irr(lapic) == [0x30]
    assert io.dropped[5] == 1
    assert io.deliveries[5] == 0


def test_registers_checkpoint() -> None:
    _, io = machine(ioapic_id=1)
    wr(io, rte(11), 0x8041)
    wr(io, rte(11) + 1, 0x01000000)
    io.set_pin(11, True, 0)
    io.set_pin(2, True, 0)
    regs = io.registers()
    assert list(regs) == sorted(regs)
    assert regs["id"] == 0x01000000
    assert regs["version"] == 0x00170011
    assert regs["redir11_lo"] == 0xC041
    assert regs["redir11_hi"] == 0x01000000
    assert regs["redir0_lo"] == 0x10000
    assert regs["pin_asserted"] == (1 << 11) | (1 << 2)
    assert regs["remote_irr"] == 1 << 11
    assert len([k for k in regs if k.startswith("redir")]) == 48


def test_pin_out_of_range() -> None:
    _, io = machine()
    with pytest.raises(ValueError):
        io.set_pin(24, True, 0)
