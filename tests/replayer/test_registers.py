"""Guest-visible registers: a read returns the last value written (vectorized)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from replayer.mechanisms.registers import control_registers, read_mismatches
from replayer.trace import Trace, load
from tests.support import synth


def _trace(tmp_path: Path, build: Callable[[synth.TraceBuilder], None]) -> Trace:
    b = synth.TraceBuilder(seed=1)
    build(b)
    return load(b.write(tmp_path / "t"))


def test_reads_follow_writes_clts_and_page_faults(tmp_path: Path) -> None:
    def build(b: synth.TraceBuilder) -> None:
        b.hook("read_cr0", result=0x11)  # 0: the machine's value, learned
        b.hook("read_cr0", result=0x11)  # 1: same
        b.hook("write_cr0", 0x8001003B)  # 2: TS set
        b.hook("clts")  # 3
        b.hook("read_cr0", result=0x80010033)  # 4: TS cleared
        b.exception(14, 2, 0x0804A000)  # 5
        b.hook("read_cr2", result=0x0804A000)  # 6
        b.hook("write_cr2", 0x1234)  # 7
        b.hook("read_cr2", result=0x1234)  # 8
        b.hook("set_debugreg", 7, 0x400)  # 9
        b.hook("get_debugreg", 7, result=0x400)  # 10
        b.hook("get_debugreg", 6, result=0xFFFF0FF0)  # 11: never written: learned

    tr = _trace(tmp_path, build)
    regs = control_registers(tr)
    val, known = regs["cr0"].before(np.array([0, 1, 4, 12]))
    assert known.tolist() == [False, True, True, True]
    assert val.tolist()[1:] == [0x11, 0x80010033, 0x80010033]
    assert regs["cr2"].before(np.array([6, 8]))[0].tolist() == [0x0804A000, 0x1234]
    assert read_mismatches(tr, regs) == []


def test_a_read_that_disagrees_is_reported(tmp_path: Path) -> None:
    def build(b: synth.TraceBuilder) -> None:
        b.hook("write_cr3", 0x200000)
        b.hook("read_cr3", result=0x300000)
        b.hook("set_debugreg", 0, 0xC0100000)
        b.hook("get_debugreg", 0, result=0)

    tr = _trace(tmp_path, build)
    got = [(m.seq, m.hook, m.recorded, m.model) for m in read_mismatches(tr)]
    assert got == [(1, "read_cr3", 0x300000, 0x200000), (3, "get_debugreg", 0, 0xC0100000)]
