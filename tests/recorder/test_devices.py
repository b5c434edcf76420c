"""Interrupt sources: the periodic timer and the doorbell I/O device."""

from __future__ import annotations

import pytest

from recorder.devices import MMIO_REGIONS, IoDevice, PeriodicTimer, SplitMix64
from recorder.ioapic import Ioapic
from recorder.lapic import Lapic

SVR, EOI = 0xF0, 0xB0
DOORBELL, STATUS, TAG, ACK, QUEUE = 0x00, 0x04, 0x08, 0x0C, 0x10

# Published first outputs of Vigna's splitmix64.c with state 0.
SPLITMIX64_SEED0 = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def machine() -> tuple[Lapic, Ioapic]:
    lapic = Lapic()
    ioapic = Ioapic(lapic)
    lapic.on_eoi = ioapic.eoi
    lapic.write(SVR, 4, 0x1FF)
    return lapic, ioapic


def program(io: Ioapic, pin: int, low: int) -> None:
    io.write(0x00, 4, 0x10 + 2 * pin)
    io.write(0x10, 4, low)


def irr(lapic: Lapic) -> list[int]:
    bits = sum(lapic.read(0x200 + 16 * i, 4) << (32 * i) for i in range(8))
    return [v for v in range(256) if bits >> v & 1]


class Inputs:
    def __init__(self) -> None:
        self.rows: list[tuple[str, int]] = []

    def __call__(self, name: str, value: int) -> None:
        self.rows.append((name, value))


def device(io: Ioapic, seed: int = 0, lo: int = 100, hi: int = 199) -> tuple[IoDevice, Inputs]:
    inputs = Inputs()
    dev = IoDevice(io, seed=seed, min_delay=lo, max_delay=hi, record_input=inputs)
    return dev, inputs


def test_mmio_regions() -> None:
    assert MMIO_REGIONS == (
        (0xFEE00000, 0x1000, "lapic"),
        (0xFEC00000, 0x1000, "ioapic"),
        (0xFEB00000, 0x1000, "device"),
    )
    assert IoDevice.BASE == 0xFEB00000


def test_splitmix64_reference_outputs() -> None:
    rng = SplitMix64(0)
    assert [rng.next() for _ in range(3)] == SPLITMIX64_SEED0


def test_periodic_timer_edges_and_coalescing() -> None:
    lapic, io = machine()
    program(io, 2, 0x30)
    timer = PeriodicTimer(io, pin=2, period=1000)
    assert timer.next_deadline() == 1000
    timer.advance(999)
    assert irr(lapic) == []
    timer.advance(1000)
    assert irr(lapic) == [0x30]
    assert lapic.raised_info(0x30) == (2, 1000)
    assert timer.ticks == 1
    assert io.registers()["pin_asserted"] == 0  # asserted then deasserted
    timer.advance(3500)  # ticks at 2000 and 3000: one edge
    assert timer.ticks == 3
    assert timer.coalesced == 1
    assert io.deliveries[2] == 2
    assert timer.next_deadline() == 4000
    with pytest.raises(ValueError):
        timer.advance(3499)


def test_periodic_timer_start_offset() -> None:
    _, io = machine()
    timer = PeriodicTimer(io, pin=0, period=250, start=40)
    assert timer.next_deadline() == 290
    with pytest.raises(ValueError):
        PeriodicTimer(io, period=0)


def test_doorbell_completes_after_seeded_delay() -> None:
    lapic, io = machine()
    program(io, 11, 0x8041)  # level, vector 0x41
    dev, inputs = device(io, seed=0, lo=100, hi=199)
    lapic.advance(1000)
    dev.advance(1000)
    dev.write(DOORBELL, 4, 7)
    delay = 100 + SPLITMIX64_SEED0[0] % 100  # far below the rejection limit 2**64 - 16
    assert inputs.rows == [("device.delay", delay)]
    assert dev.read(QUEUE, 4) == 1
    assert dev.read(STATUS, 4) == 0
    assert dev.read(TAG, 4) == 0xFFFFFFFF
    assert dev.next_deadline() == 1000 + delay
    dev.advance(1000 + delay - 1)
    assert irr(lapic) == []
    dev.advance(1000 + delay)
    assert dev.read(STATUS, 4) == 1
    assert dev.read(TAG, 4) == 7
    assert dev.read(QUEUE, 4) == 0
    assert dev.next_deadline() is None
    assert irr(lapic) == [0x41]
    assert lapic.raised_info(0x41) == (11, 1000 + delay)
    dev.write(ACK, 4, 0)
    assert dev.read(STATUS, 4) == 0
    assert dev.read(TAG, 4) == 0xFFFFFFFF
    assert io.registers()["pin_asserted"] == 0


def test_completion_order_and_level_line() -> None:
    lapic, io = machine()
    program(io, 11, 0x8041)
    dev, inputs = device(io, seed=5, lo=50, hi=50)  # equal deadlines: submission order
    for tag in (1, 2, 3):
        dev.write(DOORBELL, 4, tag)
    assert [v for _, v in inputs.rows] == [50, 50, 50]
    dev.advance(50)
    assert dev.read(STATUS, 4) == 3
    assert lapic.acknowledge() == 0x41
    tags = []
    for _ in range(3):
        tags.append(dev.read(TAG, 4))
        dev.write(ACK, 4, 0)
        if tags == [1]:
            lapic.write(EOI, 4, 0)  # two still unacknowledged: line still asserted
            assert io.deliveries[11] == 2
    assert tags == [1, 2, 3]
    assert io.registers()["pin_asserted"] == 0
    dev.write(ACK, 4, 0)  # nothing left: no effect
    assert dev.read(STATUS, 4) == 0


def test_completions_in_deadline_order() -> None:
    _, io = machine()
    dev, inputs = device(io, seed=0, lo=100, hi=199)
    for tag in (10, 20):
        dev.write(DOORBELL, 4, tag)
    delays = [v for _, v in inputs.rows]
    assert delays == [100 + v % 100 for v in SPLITMIX64_SEED0[:2]]
    dev.advance(200)
    expected = [tag for _, tag in sorted(zip(delays, (10, 20), strict=True))]
    got = []
    while dev.read(STATUS, 4):
        got.append(dev.read(TAG, 4))
        dev.write(ACK, 4, 0)
    assert got == expected


def test_same_seed_same_delays_different_seed_differs() -> None:
    _, io = machine()
    runs = []
    for seed in (42, 42, 43):
        dev, inputs = device(io, seed=seed, lo=1_000, hi=1_000_000)
        for tag in range(10):
            dev.write(DOORBELL, 4, tag)
        runs.append(inputs.rows)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert all(1_000 <= v <= 1_000_000 for _, v in runs[0] + runs[2])


def test_overflow_sets_error_and_drops() -> None:
    _, io = machine()
    dev, inputs = device(io)
    for tag in range(64):
        dev.write(DOORBELL, 4, tag)
    assert dev.read(STATUS, 4) == 0
    dev.write(DOORBELL, 4, 64)
    assert dev.read(STATUS, 4) == 0x80000000
    assert dev.read(QUEUE, 4) == 64
    assert dev.dropped == 1
    assert len(inputs.rows) == 64  # a dropped doorbell draws no delay
    dev.advance(10_000)
    assert dev.read(STATUS, 4) == 0x80000040  # error sticks, 64 completed
    dev.write(STATUS, 4, 0x80000000)  # write 1 to clear
    assert dev.read(STATUS, 4) == 0x40


def test_device_rejects_bad_config_and_backward_time() -> None:
    _, io = machine()
    with pytest.raises(ValueError):
        device(io, lo=10, hi=5)
    dev, _ = device(io)
    dev.advance(10)
    with pytest.raises(ValueError):
        dev.advance(9)
