"""LAPIC model: register semantics, priorities and the timer in virtual time.

Expected values are derived by hand from the Intel SDM (Vol. 3A, xAPIC).
"""

from __future__ import annotations

import pytest

from recorder.lapic import (
    SOURCE_ERROR,
    SOURCE_SELF_IPI,
    SOURCE_TIMER,
    Lapic,
    divide_value,
)

ID, VERSION, TPR, APR, PPR, EOI = 0x20, 0x30, 0x80, 0x90, 0xA0, 0xB0
LDR, DFR, SVR, ESR = 0xD0, 0xE0, 0xF0, 0x280
ISR0, TMR0, IRR0 = 0x100, 0x180, 0x200
ICR_LO, ICR_HI = 0x300, 0x310
LVT_TIMER, LVT_THERMAL, LVT_PERF = 0x320, 0x330, 0x340
LVT_LINT0, LVT_LINT1, LVT_ERROR = 0x350, 0x360, 0x370
TIMER_INITIAL, TIMER_CURRENT, TIMER_DIVIDE = 0x380, 0x390, 0x3E0


def rd(apic: Lapic, offset: int) -> int:
    return apic.read(offset, 4)


def wr(apic: Lapic, offset: int, value: int) -> None:
    apic.write(offset, 4, value)


def enabled(**kwargs: object) -> Lapic:
    apic = Lapic(**kwargs)  # type: ignore[arg-type]
    wr(apic, SVR, 0x1FF)
    return apic


def irr_vectors(apic: Lapic) -> list[int]:
    return [32 * i + b for i in range(8) for b in range(32) if rd(apic, IRR0 + 16 * i) >> b & 1]


def isr_vectors(apic: Lapic) -> list[int]:
    return [32 * i + b for i in range(8) for b in range(32) if rd(apic, ISR0 + 16 * i) >> b & 1]


# ---------------------------------------------------------------- registers


def test_reset_values() -> None:
    apic = Lapic(apic_id=3)
    assert rd(apic, ID) == 0x03000000
    assert rd(apic, VERSION) == 0x00050014
    assert rd(apic, TPR) == 0
    assert rd(apic, PPR) == 0
    assert rd(apic, LDR) == 0
    assert rd(apic, DFR) == 0xFFFFFFFF
    assert rd(apic, SVR) == 0xFF
    assert rd(apic, ESR) == 0
    for lvt in (LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR):
        assert rd(apic, lvt) == 0x00010000
    assert rd(apic, TIMER_INITIAL) == 0
    assert rd(apic, TIMER_CURRENT) == 0
    assert rd(apic, TIMER_DIVIDE) == 0
    for i in range(8):
        assert rd(apic, ISR0 + 16 * i) == 0
        assert rd(apic, TMR0 + 16 * i) == 0
        assert rd(apic, IRR0 + 16 * i) == 0
    assert not apic.software_enabled
    assert apic.pending_vector() is None


def test_read_only_registers_ignore_writes() -> None:
    apic = enabled()
    apic.accept(0x41, False, 0, 0)
    for offset in (VERSION, APR, PPR, ISR0 + 0x20, TMR0 + 0x20, IRR0 + 0x20, TIMER_CURRENT):
        before = rd(apic, offset)
        wr(apic, offset, 0xFFFFFFFF)
        assert rd(apic, offset) == before
    assert rd(apic, VERSION) == 0x00050014
    assert rd(apic, IRR0 + 0x20) == 0x2  # vector 0x41 = bit 1 of IRR[2]
    assert apic.readonly_writes == 7
    assert apic.unknown_accesses == 0


def test_writable_bits() -> None:
    apic = enabled()
    wr(apic, TPR, 0x1234)
    assert rd(apic, TPR) == 0x34
    wr(apic, ID, 0xFFFFFFFF)
    assert rd(apic, ID) == 0xFF000000
    wr(apic, LDR, 0x12345678)
    assert rd(apic, LDR) == 0x12000000
    wr(apic, DFR, 0)
    assert rd(apic, DFR) == 0x0FFFFFFF  # bits 0-27 reserved, read as 1
    wr(apic, TIMER_DIVIDE, 0xFFFFFFFF)
    assert rd(apic, TIMER_DIVIDE) == 0xB  # bits 0, 1 and 3
    wr(apic, LVT_ERROR, 0xFFFFFFFF)
    assert rd(apic, LVT_ERROR) == 0x000100FF
    wr(apic, LVT_TIMER, 0xFFFFFFFF)
    assert rd(apic, LVT_TIMER) == 0x000300FF  # delivery status RO, bit 18 reserved here
    wr(apic, LVT_LINT0, 0xFFFFFFFF)
    assert rd(apic, LVT_LINT0) == 0x0001A7FF  # delivery status and remote IRR RO
    wr(apic, ICR_HI, 0xFFFFFFFF)
    assert rd(apic, ICR_HI) == 0xFF000000


def test_sub_dword_reads_and_unknown_offsets() -> None:
    apic = Lapic()
    assert apic.read(VERSION, 2) == 0x0014
    assert apic.read(VERSION + 2, 1) == 0x05
    assert apic.read(VERSION + 4, 4) == 0  # bytes 4-15 of a slot are reserved
    assert apic.unknown_accesses == 1
    assert rd(apic, 0x40) == 0  # reserved register
    wr(apic, 0x50, 0x12345678)
    assert rd(apic, 0x50) == 0
    apic.write(TPR, 1, 0x20)  # only 32-bit writes reach a register
    assert rd(apic, TPR) == 0
    assert apic.unknown_accesses == 5
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0x80  # illegal register address


def test_divide_encoding() -> None:
    # SDM: bits 3,1,0 = 000 -> 2, 001 -> 4, 010 -> 8, 011 -> 16,
    # 100 -> 32, 101 -> 64, 110 -> 128, 111 -> 1.
    table = {0x0: 2, 0x1: 4, 0x2: 8, 0x3: 16, 0x8: 32, 0x9: 64, 0xA: 128, 0xB: 1}
    assert {dcr: divide_value(dcr) for dcr in table} == table
    assert divide_value(0x4) == 2  # bit 2 is not part of the encoding


def test_tpr_ppr_and_apr() -> None:
    apic = enabled()
    wr(apic, TPR, 0x35)
    assert rd(apic, PPR) == 0x35  # no ISR: PPR = TPR
    wr(apic, TPR, 0)
    apic.accept(0x51, False, 0, 0)
    assert apic.acknowledge() == 0x51
    wr(apic, TPR, 0x35)
    assert rd(apic, PPR) == 0x50  # ISR class 5 > TPR class 3: PPR = ISRV & 0xF0
    wr(apic, TPR, 0x5A)
    assert rd(apic, PPR) == 0x5A  # TPR class 5 >= ISR class 5: PPR = TPR
    wr(apic, TPR, 0x60)
    assert rd(apic, PPR) == 0x60
    # APR: TPR class 2 < IRR class 4, so max(TPR, ISRV, IRRV) & 0xF0.
    apic2 = enabled()
    wr(apic2, TPR, 0x27)
    apic2.accept(0x45, False, 0, 0)
    assert rd(apic2, APR) == 0x40
    wr(apic2, TPR, 0x57)  # TPR class 5 >= IRR class 4 and > ISR class 0
    assert rd(apic2, APR) == 0x57


def test_svr_disable_masks_lvts() -> None:
    apic = enabled()
    wr(apic, LVT_TIMER, 0x20)
    wr(apic, LVT_ERROR, 0xFE)
    assert rd(apic, LVT_TIMER) == 0x20
    wr(apic, SVR, 0xFF)  # software disable
    assert rd(apic, LVT_TIMER) == 0x10020
    assert rd(apic, LVT_ERROR) == 0x100FE
    wr(apic, LVT_TIMER, 0x21)  # mask cannot be cleared while disabled
    assert rd(apic, LVT_TIMER) == 0x10021
    wr(apic, SVR, 0x1FF)
    assert rd(apic, LVT_TIMER) == 0x10021  # stays masked until rewritten
    wr(apic, LVT_TIMER, 0x21)
    assert rd(apic, LVT_TIMER) == 0x21


# --------------------------------------------------------------- interrupts


def test_accept_sets_irr_and_tmr() -> None:
    apic = enabled()
    assert apic.accept(0xFF, True, 3, 10)
    assert apic.accept(0x21, False, 4, 20)
    assert rd(apic, IRR0 + 0x70) == 0x80000000
    assert rd(apic, TMR0 + 0x70) == 0x80000000
    assert rd(apic, IRR0 + 0x10) == 0x2
    assert rd(apic, TMR0 + 0x10) == 0
    assert apic.raised_info(0xFF) == (3, 10)
    assert apic.raised_info(0x21) == (4, 20)
    apic.accept(0x21, False, 5, 30)  # re-raised while pending: earliest record kept
    assert apic.raised_info(0x21) == (4, 20)
    apic.accept(0xFF, False, 3, 40)  # accepted as edge now: TMR cleared
    assert rd(apic, TMR0 + 0x70) == 0
    with pytest.raises(KeyError):
        apic.raised_info(0x22)


def test_illegal_vector_sets_esr_and_is_dropped() -> None:
    apic = enabled()
    assert not apic.accept(5, False, 0, 0)
    assert irr_vectors(apic) == []
    assert rd(apic, ESR) == 0  # SDM: errors become visible on the next ESR write
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0x40  # receive illegal vector
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0


def test_error_lvt_raises_error_interrupt() -> None:
    apic = enabled()
    wr(apic, LVT_ERROR, 0xFE)
    apic.advance(77)
    apic.accept(15, False, 0, 77)
    assert irr_vectors(apic) == [0xFE]
    assert apic.raised_info(0xFE) == (SOURCE_ERROR, 77)


def test_priority_order_and_ppr_blocking() -> None:
    apic = enabled()
    for vector in (0x35, 0x41, 0x32):
        apic.accept(vector, False, 0, 0)
    assert apic.pending_vector() == 0x41  # highest vector first
    assert apic.acknowledge() == 0x41
    assert isr_vectors(apic) == [0x41]
    assert rd(apic, PPR) == 0x40
    assert apic.pending_vector() is None  # 0x35: class 3 <= PPR class 4
    apic.accept(0x45, False, 0, 0)
    assert apic.pending_vector() is None  # same class as in service: held
    apic.accept(0x50, False, 0, 0)
    assert apic.pending_vector() == 0x50  # higher class nests
    assert apic.acknowledge() == 0x50
    wr(apic, EOI, 0)
    assert isr_vectors(apic) == [0x41]  # EOI retired the highest ISR vector
    assert apic.pending_vector() is None
    wr(apic, EOI, 0)
    assert isr_vectors(apic) == []
    order = []
    while apic.pending_vector() is not None:
        order.append(apic.acknowledge())
        wr(apic, EOI, 0)
    assert order == [0x45, 0x35, 0x32]
    assert irr_vectors(apic) == []


def test_tpr_blocks_lower_classes() -> None:
    apic = enabled()
    wr(apic, TPR, 0x50)
    apic.accept(0x55, False, 0, 0)
    assert apic.pending_vector() is None  # class 5 is not above TPR class 5
    apic.accept(0x61, False, 0, 0)
    assert apic.pending_vector() == 0x61
    apic.acknowledge()
    wr(apic, EOI, 0)
    assert apic.pending_vector() is None
    wr(apic, TPR, 0x4F)
    assert apic.pending_vector() == 0x55


def test_disabled_apic_holds_interrupts() -> None:
    apic = Lapic()
    apic.accept(0x40, False, 0, 0)
    assert apic.pending_vector() is None
    assert apic.acknowledge() == 0xFF  # spurious vector, ISR untouched
    assert apic.spurious_acks == 1
    assert isr_vectors(apic) == []
    wr(apic, SVR, 0x1F7)
    assert apic.pending_vector() == 0x40
    apic.acknowledge()
    assert apic.acknowledge() == 0xF7


def test_eoi_broadcast_only_for_level() -> None:
    calls: list[int] = []
    apic = enabled(on_eoi=calls.append)
    apic.accept(0x60, True, 9, 0)
    apic.accept(0x50, False, 9, 0)
    assert apic.acknowledge() == 0x60
    assert apic.raised_info(0x60) == (9, 0)  # still known while in service
    wr(apic, EOI, 0)
    assert calls == [0x60]
    assert apic.acknowledge() == 0x50
    wr(apic, EOI, 0)
    assert calls == [0x60]
    wr(apic, EOI, 0)  # nothing in service: no effect
    assert calls == [0x60]


def test_self_ipi() -> None:
    apic = enabled(apic_id=2)
    apic.advance(500)
    wr(apic, ICR_LO, 0x00040040)  # shorthand self, fixed, vector 0x40
    assert irr_vectors(apic) == [0x40]
    assert apic.raised_info(0x40) == (SOURCE_SELF_IPI, 500)
    assert rd(apic, ICR_LO) & 0x1000 == 0  # delivery status idle
    wr(apic, ICR_HI, 0x02000000)
    wr(apic, ICR_LO, 0x50)  # physical destination 2 = own ID
    assert irr_vectors(apic) == [0x40, 0x50]
    wr(apic, ICR_HI, 0x05000000)
    wr(apic, ICR_LO, 0x60)  # physical destination 5: nobody
    wr(apic, ICR_LO, 0x000C0070)  # all excluding self: nobody
    assert irr_vectors(apic) == [0x40, 0x50]
    wr(apic, LDR, 0x01000000)
    wr(apic, ICR_HI, 0x01000000)
    wr(apic, ICR_LO, 0x880)  # logical flat, destination 0x01 matches LDR
    assert irr_vectors(apic) == [0x40, 0x50, 0x80]
    wr(apic, ICR_LO, 0x00040003)  # self with illegal vector
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0x20  # send illegal vector
    wr(apic, ICR_LO, 0x00040490)  # NMI: not modelled, dropped and counted
    assert apic.unsupported_ipis == 1
    assert irr_vectors(apic) == [0x40, 0x50, 0x80]


# -------------------------------------------------------------------- timer


def test_one_shot_timer() -> None:
    apic = enabled()
    wr(apic, LVT_TIMER, 0x20)
    wr(apic, TIMER_DIVIDE, 0xB)  # divide by 1
    apic.advance(100)
    wr(apic, TIMER_INITIAL, 1000)
    assert apic.next_deadline() == 1100
    assert rd(apic, TIMER_CURRENT) == 1000
    apic.advance(350)
    assert rd(apic, TIMER_CURRENT) == 750
    apic.advance(1099)
    assert rd(apic, TIMER_CURRENT) == 1
    assert irr_vectors(apic) == []
    apic.advance(1100)
    assert irr_vectors(apic) == [0x20]
    assert apic.raised_info(0x20) == (SOURCE_TIMER, 1100)
    assert rd(apic, TIMER_CURRENT) == 0
    assert apic.next_deadline() is None
    apic.acknowledge()
    apic.advance(5000)
    assert irr_vectors(apic) == []
    assert apic.timer_fires == 1
    assert rd(apic, TIMER_INITIAL) == 1000


def test_timer_default_divide_by_two() -> None:
    apic = enabled()
    wr(apic, LVT_TIMER, 0x20)
    wr(apic, TIMER_INITIAL, 10)  # at vtime 0, divide by 2: 20 vtime units
    assert apic.next_deadline() == 20
    apic.advance(1)
    assert rd(apic, TIMER_CURRENT) == 10  # 10 - 1 // 2
    apic.advance(2)
    assert rd(apic, TIMER_CURRENT) == 9
    apic.advance(19)
    assert rd(apic, TIMER_CURRENT) == 1
    apic.advance(20)
    assert irr_vectors(apic) == [0x20]


def test_timer_divide_by_128() -> None:
    apic = enabled()
    wr(apic, LVT_TIMER, 0x20)
    wr(apic, TIMER_DIVIDE, 0xA)
    wr(apic, TIMER_INITIAL, 10)
    apic.advance(127)
    assert rd(apic, TIMER_CURRENT) == 10
    apic.advance(128)
    assert rd(apic, TIMER_CURRENT) == 9
    assert apic.next_deadline() == 1280


def test_divide_change_keeps_current_count() -> None:
    apic = enabled()
    wr(apic, LVT_TIMER, 0x20)
    wr(apic, TIMER_DIVIDE, 0xB)
    wr(apic, TIMER_INITIAL, 100)
    apic.advance(30)
    wr(apic, TIMER_DIVIDE, 0x0)  # now divide by 2, 70 ticks left
    assert rd(apic, TIMER_CURRENT) == 70
    assert apic.next_deadline() == 170


def test_periodic_timer_coalesces() -> None:
    apic = enabled()
    wr(apic, LVT_TIMER, 0x20030)  # periodic, vector 0x30
    wr(apic, TIMER_DIVIDE, 0x1)  # divide by 4
    wr(apic, TIMER_INITIAL, 25)  # period 100
    apic.advance(50)
    assert rd(apic, TIMER_CURRENT) == 13  # 25 - 50 // 4
    assert apic.next_deadline() == 100
    apic.advance(100)
    assert irr_vectors(apic) == [0x30]
    assert rd(apic, TIMER_CURRENT) == 25  # reloaded
    assert apic.next_deadline() == 200
    assert apic.acknowledge() == 0x30
    wr(apic, EOI, 0)
    apic.advance(450)  # expiries at 200, 300 and 400
    assert irr_vectors(apic) == [0x30]
    assert apic.raised_info(0x30) == (SOURCE_TIMER, 200)
    assert apic.timer_fires == 4
    assert apic.timer_coalesced == 2
    assert rd(apic, TIMER_CURRENT) == 25 - (450 // 4) % 25
    assert apic.next_deadline() == 500
    apic.advance(500)  # vector still pending in IRR: coalesced again
    assert apic.timer_fires == 5
    assert apic.timer_coalesced == 3
    assert apic.raised_info(0x30) == (SOURCE_TIMER, 200)


def test_masked_timer_counts_but_raises_nothing() -> None:
    apic = enabled()
    wr(apic, TIMER_DIVIDE, 0xB)
    wr(apic, LVT_TIMER, 0x10020)  # masked one-shot
    wr(apic, TIMER_INITIAL, 10)
    assert apic.next_deadline() is None
    apic.advance(5)
    assert rd(apic, TIMER_CURRENT) == 5
    apic.advance(10)
    assert irr_vectors(apic) == []
    assert rd(apic, TIMER_CURRENT) == 0
    assert apic.timer_masked == 1
    assert apic.timer_fires == 0

    apic = enabled()
    wr(apic, TIMER_DIVIDE, 0xB)
    wr(apic, LVT_TIMER, 0x30020)  # masked periodic, period 10
    wr(apic, TIMER_INITIAL, 10)
    apic.advance(35)
    assert irr_vectors(apic) == []
    assert apic.timer_masked == 3
    assert rd(apic, TIMER_CURRENT) == 5
    wr(apic, LVT_TIMER, 0x20020)  # unmask: the phase was kept
    assert apic.next_deadline() == 40
    apic.advance(40)
    assert irr_vectors(apic) == [0x20]
    assert apic.raised_info(0x20) == (SOURCE_TIMER, 40)


def test_initial_count_zero_stops_timer() -> None:
    apic = enabled()
    wr(apic, LVT_TIMER, 0x20020)
    wr(apic, TIMER_INITIAL, 10)
    wr(apic, TIMER_INITIAL, 0)
    assert apic.next_deadline() is None
    apic.advance(1000)
    assert irr_vectors(apic) == []


def test_time_never_goes_backward() -> None:
    apic = Lapic()
    apic.advance(10)
    apic.advance(10)
    with pytest.raises(ValueError):
        apic.advance(9)


def test_registers_checkpoint() -> None:
    apic = enabled(apic_id=1)
    wr(apic, TPR, 0x20)
    wr(apic, LVT_TIMER, 0x20031)
    wr(apic, TIMER_DIVIDE, 0xB)
    wr(apic, TIMER_INITIAL, 100)
    apic.accept(0x41, True, 0, 0)
    apic.advance(40)
    regs = apic.registers()
    assert list(regs) == sorted(regs)
    expected_keys = {"id", "version", "tpr", "ppr", "svr", "esr", "icr_lo", "icr_hi"}
    expected_keys |= {"lvt_timer", "lvt_lint0", "lvt_lint1", "lvt_error", "lvt_thermal"}
    expected_keys |= {"lvt_perf", "timer_initial", "timer_current", "timer_divide", "ldr", "dfr"}
    expected_keys |= {f"{r}{i}" for r in ("isr", "tmr", "irr") for i in range(8)}
    assert set(regs) == expected_keys
    assert regs["id"] == 0x01000000
    assert regs["svr"] == 0x1FF
    assert regs["tpr"] == regs["ppr"] == 0x20
    assert regs["irr2"] == regs["tmr2"] == 0x2
    assert regs["timer_current"] == 60
    assert regs["timer_divide"] == 0xB
    assert regs["lvt_timer"] == 0x20031
