"""Virtual LAPIC and IOAPIC registers (SDM / 82093AA semantics)."""

from __future__ import annotations

from replayer.mechanisms.apic import VirtualIoapic, VirtualLapic


def test_writes_keep_only_writable_bits() -> None:
    a = VirtualLapic()
    a.write(0x080, 0x1FF)  # TPR: 8 bits
    a.write(0x0F0, 0xFFFFF)  # SVR: bits 0-9
    a.write(0x320, 0xFFFFFFFF)  # LVT timer: vector, mask, mode
    a.write(0x0E0, 0x12345678)  # DFR: model bits, the rest ones
    assert a.read(0x080) == 0xFF
    assert a.read(0x0F0) == 0x3FF
    assert a.read(0x320) == 0x300FF
    assert a.read(0x0E0) == 0x1FFFFFFF


def test_a_software_disabled_apic_masks_every_lvt() -> None:
    a = VirtualLapic()
    a.write(0x0F0, 0x1FF)
    a.write(0x320, 0x200EF)
    assert a.blocks(0xEF, 0x100) is None
    a.write(0x0F0, 0x0FF)
    assert a.read(0x320) == 0x300EF
    a.write(0x320, 0x200EF)  # stays masked while disabled
    assert (a.read(0x320) or 0) & 0x10000
    assert a.blocks(0xEF, 0x100) == "APIC software-disabled (SVR)"


def test_in_service_vectors_raise_the_priority_and_eoi_retires_the_highest() -> None:
    a = VirtualLapic()
    a.write(0x0F0, 0x1FF)
    a.deliver(0x31)
    a.deliver(0xEF)
    assert a.ppr() == 0xE0
    assert a.read(0x100 + 0x10 * 7) == 1 << (0xEF - 224)
    assert a.blocks(0xE5, 0x101) is not None  # same class as in-service 0xEF
    a.write(0x0B0, 0)
    assert a.ppr() == 0x30 and a.blocks(0xE5, 0x101) is None
    a.write(0x080, 0x40)  # TPR above
    assert a.blocks(0x31, 3) is not None


def test_unknown_id_and_version_are_learned_from_first_sight() -> None:
    a = VirtualLapic()
    assert a.read(0x020) is None and a.read(0x030) is None
    a.observe(0x030, 0x50014)
    assert a.read(0x030) == 0x50014
    assert a.read(0x390) is None  # timer current count: time-dependent, not modelled


def test_ioapic_redirection_entries_through_the_window() -> None:
    io = VirtualIoapic()
    assert io.blocks(1) is not None  # reset: masked
    io.write(0x00, 0x12)
    io.write(0x10, 0xFFFFFFFF)
    io.write(0x00, 0x13)
    io.write(0x10, 0xFFFFFFFF)
    assert io.lo[1] == 0x1AFFF and io.hi[1] == 0xFF000000
    io.write(0x00, 0x12)
    io.write(0x10, 0x31)
    assert io.blocks(1) is None
    assert io.read(0x10) == (0x31, 0xFFFFAFFF)
