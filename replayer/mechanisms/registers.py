"""Guest-visible registers: CR0, CR2, CR3, CR4 and the debug registers, vectorized.

Every backend gives the guest the value it last wrote (VMI's ROM, Xen's and
lguest's shadows in shared memory, a hardware VMM's read shadows, binary
translation's emulated state), so a read must return the last value written
before it: ``write_crN``, ``clts`` (clears CR0.TS), a page fault (sets CR2),
``set_debugreg``.  A register read before anything wrote it returns what the
machine chose; the first such read is taken as that value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pvscope.hooks import BY_NAME
from replayer.trace import K_EXCEPTION, Trace

CR0_TS = 0x8


@dataclass
class Register:
    """When a register was set (sorted event indices) and to what; when CR0.TS was cleared."""

    name: str
    at: np.ndarray
    value: np.ndarray
    cleared: np.ndarray
    """Events that clear CR0.TS (clts); empty for other registers."""

    def before(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(value, known) of the register just before each event in ``k``."""
        k = np.asarray(k, dtype=np.int64)
        if len(self.at) == 0:
            return np.zeros(len(k), dtype=np.int64), np.zeros(len(k), dtype=bool)
        pos = np.searchsorted(self.at, k, side="left") - 1
        known = pos >= 0
        val = np.where(known, self.value[np.maximum(pos, 0)], 0).astype(np.int64)
        if len(self.cleared):
            cpos = np.searchsorted(self.cleared, k, side="left") - 1
            last_c = np.where(cpos >= 0, self.cleared[np.maximum(cpos, 0)], -1)
            last_w = np.where(known, self.at[np.maximum(pos, 0)], -1)
            val = np.where(known & (last_c > last_w), val & ~CR0_TS, val)
        return val, known


def _hook(trace: Trace, name: str) -> np.ndarray:
    return trace.hook == BY_NAME[name].id


def _register(
    name: str, trace: Trace, writes: np.ndarray, wvals: np.ndarray, reads: np.ndarray
) -> Register:
    """A register set by ``writes`` (mask) to ``wvals``; the first read before any write
    counts as the machine's initial value."""
    w = np.nonzero(writes)[0]
    vals = wvals[w].astype(np.int64)
    r = np.nonzero(reads & trace.has_result)[0]
    if len(r) and (len(w) == 0 or r[0] < w[0]):
        w = np.concatenate([[r[0]], w])
        vals = np.concatenate([[int(trace.result[r[0]]) & 0xFFFFFFFF], vals])
    cleared = np.nonzero(_hook(trace, "clts"))[0] if name == "cr0" else np.zeros(0, np.int64)
    return Register(name, w.astype(np.int64), vals, cleared.astype(np.int64))


def control_registers(trace: Trace) -> dict[str, Register]:
    """CR0, CR2, CR3 and CR4 timelines."""
    pf = (trace.kind == K_EXCEPTION) & (trace.arg0 == 14)
    cr2_writes = _hook(trace, "write_cr2") | pf
    cr2_vals = np.where(pf, trace.arg2, trace.arg0)
    cr4_reads = _hook(trace, "read_cr4") | _hook(trace, "read_cr4_safe")
    return {
        "cr0": _register(
            "cr0", trace, _hook(trace, "write_cr0"), trace.arg0, _hook(trace, "read_cr0")
        ),
        "cr2": _register("cr2", trace, cr2_writes, cr2_vals, _hook(trace, "read_cr2")),
        "cr3": _register(
            "cr3", trace, _hook(trace, "write_cr3"), trace.arg0, _hook(trace, "read_cr3")
        ),
        "cr4": _register("cr4", trace, _hook(trace, "write_cr4"), trace.arg0, cr4_reads),
    }


@dataclass
class Mismatch:
    """A read that returned something else than the register's last value."""

    seq: int
    hook: str
    recorded: int
    model: int
    what: str


def read_mismatches(trace: Trace, regs: dict[str, Register] | None = None) -> list[Mismatch]:
    """Every register read whose recorded result differs from the last value written."""
    regs = regs if regs is not None else control_registers(trace)
    out: list[Mismatch] = []
    for name, hooks in (
        ("cr0", ("read_cr0",)),
        ("cr2", ("read_cr2",)),
        ("cr3", ("read_cr3",)),
        ("cr4", ("read_cr4", "read_cr4_safe")),
    ):
        for h in hooks:
            k = np.nonzero(_hook(trace, h) & trace.has_result)[0]
            _collect(out, trace, k, regs[name], h, name)
    # debug registers, one timeline per register number
    sets = _hook(trace, "set_debugreg")
    gets = _hook(trace, "get_debugreg")
    for regno in sorted(set(trace.arg0[sets | gets].tolist())):
        reg = _register(
            f"dr{regno}",
            trace,
            sets & (trace.arg0 == regno),
            trace.arg1,
            gets & (trace.arg0 == regno),
        )
        k = np.nonzero(gets & (trace.arg0 == regno) & trace.has_result)[0]
        _collect(out, trace, k, reg, "get_debugreg", f"dr{regno}")
    out.sort(key=lambda m: m.seq)
    return out


def _collect(
    out: list[Mismatch], trace: Trace, k: np.ndarray, reg: Register, hook: str, what: str
) -> None:
    if not len(k):
        return
    val, known = reg.before(k)
    got = (trace.result[k] & 0xFFFFFFFF).astype(np.int64)
    for i in np.nonzero(known & (val != got))[0].tolist():
        out.append(Mismatch(int(k[i]), hook, int(got[i]), int(val[i]), f"{what} read"))
