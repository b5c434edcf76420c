"""Nanobenchmarks under KVM: what this host's virtualization primitives cost, in TSC cycles.

Takes nothing but ``/dev/kvm``; gives, per benchmark, the cycles one operation takes
inside a KVM guest (median over repetitions, with the 10th and 90th percentiles) and
the cost-table primitive it measures.  Each benchmark is a loop of one operation,
timed with ``lfence; rdtsc`` around the loop in the guest at CPL 0 (so TSC cycles at
the TSC's nominal rate, not core cycles); an empty loop's cost per iteration is
subtracted.  The guest code is assembled here from the byte encodings of the few
instructions it needs (Intel SDM Vol. 2; AMD APM Vol. 3 for ``vmmcall``).

What a guest cannot measure is left out and says why (:data:`UNMEASURABLE`): an
instruction KVM always intercepts (``cpuid``) has no native cost inside a guest, and
shadow-paging faults do not happen while KVM uses nested paging.
"""

from __future__ import annotations

import os
import platform
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from recorder.kvm import (
    CODE,
    DONE_PORT,
    EXIT_IO,
    FAULT_PORT,
    HANDLERS,
    IDT,
    PD_LOW,
    RESULTS,
    KvmError,
    Machine,
)

_PF_PAGE = 0x400000  # the 2 MiB page the page-fault benchmark unmaps
_PF_PDE = PD_LOW + 8 * (_PF_PAGE >> 21)
_IDTR_IMAGE = RESULTS + 0x100
_FUNC = CODE + 0x800  # a ``ret`` for the call benchmark
_LAPIC_VERSION = 0xFEE00030


def _imm(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFFFFFF)


def _abs(opcode: bytes, reg: int, addr: int) -> bytes:
    """``opcode`` with a ModRM naming ``[addr]`` (an absolute 32-bit address: SIB, no base,
    no index; ModRM mod 00 r/m 101 would be RIP-relative in 64-bit mode)."""
    return opcode + bytes([(reg << 3) | 4, 0x25]) + _imm(addr)


@dataclass(frozen=True)
class Bench:
    """One nanobenchmark: ``body`` repeated ``iterations`` times after ``setup``."""

    name: str
    what: str
    body: bytes | Callable[[int], bytes]
    """The operation; a callable is given the body's guest address."""
    setup: bytes = b""
    iterations: int = 20_000
    per: int = 1
    """Operations per body (cycles are per operation)."""
    handlers: dict[int, bytes] = field(default_factory=dict)
    """Vector -> handler code, for benchmarks that take a fault."""
    base: str = "empty"
    """The benchmark whose per-iteration cost is subtracted."""
    user_exits: bool = False
    """Each operation exits to this VMM (which answers it)."""
    ring: int = 0
    """The CPL the loop runs at: 3 for what needs no privilege (its cost is the same, and
    hypervisors that emulate a guest's supervisor code run CPL 3 natively)."""
    primitive: str | None = None
    """The cost-table primitive it measures, if one."""


#: Benchmark -> the cost-table primitive it measures.
PRIMITIVE_OF = {
    "call_ret": "call_ret",
    "cli_sti": "native_irq_op",
    "iret": "native_iret",
    "cr0_read": "native_cr_read",
    "cr0_write": "native_cr_write",
    "cr3_load": "native_cr3_load",
    "invlpg": "native_invlpg",
    "lidt": "native_privileged",
    "rdtsc": "native_rdtsc",
    "divzero": "native_exception",
    "int": "native_interrupt",
    "pagefault": "native_pagefault",
    "cpuid": "vm_exit",
    "pio_kernel": "hw_io",
}
#: Benchmarks that need no privilege: run at CPL 3, on the CPL 3 empty loop.
USER_MODE = {"call_ret", "rdtsc", "cpuid", "hypercall", "pio_kernel", "mmio_kernel", "pio_user"}


def _call(at: int) -> bytes:
    return b"\xe8" + _imm(_FUNC - (at + 5))


def _hypercall() -> bytes:
    """vmmcall on AMD, vmcall elsewhere: each vendor's own hypercall instruction."""
    return b"\x0f\x01\xd9" if _vendor() == "AuthenticAMD" else b"\x0f\x01\xc1"


IRETQ = b"\x48\xcf"


def benches() -> list[Bench]:
    """Every benchmark, the empty loop first (64-bit code)."""
    de_handler = b"\x48\x83\x04\x24\x02" + IRETQ  # add qword [rsp], 2 (skip div); iretq
    pf_handler = _abs(b"\x83", 1, _PF_PDE) + b"\x01"  # or dword [pde], present
    pf_handler += b"\x48\x83\xc4\x08" + IRETQ  # drop the error code; iretq
    unmap = _abs(b"\x81", 4, _PF_PDE) + _imm(0xFFFFFFFE)  # and dword [pde], ~present
    keep = _abs(b"\x81", 4, _PF_PDE) + _imm(0xFFFFFFFF)
    remap = _abs(b"\x83", 1, _PF_PDE) + b"\x01"
    touch = b"\x0f\x01\x38" + b"\x8b\x08"  # invlpg [rax]; mov ecx, [rax]
    at_pf = b"\xb8" + _imm(_PF_PAGE)  # mov eax, page
    # iretq to the next instruction: push ss, rsp, rflags, cs and (by call) rip
    iret = b"\x48\x89\xe0\x6a\x10\x50\x9c\x6a\x08\xe8\x00\x00\x00\x00"
    iret += b"\x48\x83\x04\x24\x07" + IRETQ  # add qword [rsp], 7; iretq
    out = [
        Bench("empty", "the loop alone (dec, jnz)", b""),
        Bench("empty3", "the loop alone, at CPL 3", b"", ring=3),
        Bench("call_ret", "call and ret", _call),
        Bench("cli_sti", "cli; sti (per instruction)", b"\xfa\xfb", per=2),
        Bench("pushf_popf", "pushf; popf (per instruction)", b"\x9c\x9d", per=2),
        Bench("iret", "iretq to the same ring, with its five-word frame pushed", iret),
        Bench("cr0_read", "mov rax, cr0", b"\x0f\x20\xc0"),
        Bench("cr0_write", "mov cr0, rax (same value)", b"\x0f\x22\xc0", setup=b"\x0f\x20\xc0"),
        Bench(
            "cr3_load",
            "mov cr3, rax (same value: a TLB flush)",
            b"\x0f\x22\xd8",
            setup=b"\x0f\x20\xd8",
        ),
        Bench("invlpg", "invlpg of one 2 MiB page", b"\x0f\x01\x38", setup=at_pf),
        Bench("lidt", "lidt (same table)", _abs(b"\x0f\x01", 3, _IDTR_IMAGE)),
        Bench("rdtsc", "rdtsc", b"\x0f\x31"),
        Bench(
            "divzero",
            "div by zero: #DE through the IDT, handler skips, iretq",
            b"\xf7\xf3",
            setup=b"\x31\xdb",
            handlers={0: de_handler},
        ),
        Bench("int", "int 0x80 to an iretq", b"\xcd\x80", handlers={0x80: IRETQ}),
        Bench(
            "pagefault_base",
            "the page-fault loop without the fault",
            keep + touch + remap,
            setup=at_pf,
            iterations=5_000,
        ),
        Bench(
            "pagefault",
            "#PF on an unmapped page: handler maps it, iretq, retry",
            unmap + touch,
            setup=at_pf,
            handlers={14: pf_handler},
            iterations=5_000,
            base="pagefault_base",
        ),
        Bench(
            "cpuid",
            "cpuid leaf 0: an exit the hypervisor handles",
            b"\x31\xc0\x0f\xa2",
            iterations=5_000,
        ),
        Bench(
            "hypercall",
            "vmmcall/vmcall of an unknown number: the hypervisor answers -ENOSYS",
            lambda at: b"\xb8" + _imm(0xFFFF) + _hypercall(),
            iterations=5_000,
        ),
        Bench(
            "pio_kernel",
            "in al, 0x21: port I/O to the in-kernel PIC",
            b"\xe4\x21",
            iterations=5_000,
        ),
        Bench(
            "mmio_kernel",
            "a read of the local APIC's version register: MMIO exit, decode, in-kernel APIC",
            b"\x8b\x08",
            setup=b"\xb8" + _imm(_LAPIC_VERSION),
            iterations=5_000,
        ),
        Bench(
            "pio_user",
            "in al, 0x80: port I/O exit answered by this Python VMM",
            b"\xe4\x80",
            iterations=500,
            user_exits=True,
        ),
    ]
    for i, b in enumerate(out):
        if b.name in USER_MODE:
            b = replace(b, ring=3, base="empty3")
        out[i] = replace(b, primitive=PRIMITIVE_OF.get(b.name))
    return out


def assemble(b: Bench) -> bytes:
    """The loop around ``b.body``, timed, the two TSC readings stored at RESULTS, then an
    ``out`` to DONE_PORT."""
    head = b.setup + b"\xbd" + _imm(b.iterations)  # mov ebp, n
    head += b"\x0f\xae\xe8\x0f\x31\x89\xc6\x89\xd7"  # lfence; rdtsc; mov esi,eax; mov edi,edx
    at = CODE + len(head)
    body = b.body(at) if callable(b.body) else b.body
    loop = body + b"\xff\xcd"  # dec ebp
    jnz_at = at + len(loop)
    loop += b"\x0f\x85" + struct.pack("<i", at - (jnz_at + 6))
    tail = b"\x0f\xae\xe8\x0f\x31"  # lfence; rdtsc
    tail += _abs(b"\x89", 6, RESULTS) + _abs(b"\x89", 7, RESULTS + 4)  # esi, edi
    tail += _abs(b"\x89", 0, RESULTS + 8) + _abs(b"\x89", 2, RESULTS + 12)  # eax, edx
    tail += b"\x66\xba" + struct.pack("<H", DONE_PORT) + b"\xee\xeb\xfe"
    code = head + loop + tail
    if len(code) > _FUNC - CODE:
        raise ValueError(f"{b.name}: code too long")
    return code


@dataclass
class Measured:
    """One benchmark's result: cycles per operation, or why there is none."""

    bench: Bench
    median: float = 0.0
    p10: float = 0.0
    p90: float = 0.0
    repetitions: int = 0
    failed: str | None = None
    """Why the guest could not run the benchmark here (e.g. a fault the hypervisor
    raises for the instruction)."""


def _run_once(m: Machine, b: Bench, code: bytes) -> float:
    """Cycles per iteration of one timed loop."""
    m.write(CODE, code)
    if b.ring == 3:
        m.start_user(CODE)
    else:
        m.start(CODE)
    while True:
        ex = m.run()
        if ex.reason == EXIT_IO and ex.port == DONE_PORT:
            break
        if ex.reason == EXIT_IO and b.user_exits and not ex.out:
            m.answer_in(ex.size, 0xFF)
            continue
        if ex.reason == EXIT_IO and ex.port == FAULT_PORT:
            raise KvmError(f"the guest took exception vector {m.io_data(1)}")
        raise KvmError(f"{ex.name} exit at {m.eip():#x}")
    s0, s1, e0, e1 = struct.unpack("<IIII", m.read(RESULTS, 16))
    return ((e1 << 32 | e0) - (s1 << 32 | s0)) / b.iterations


def _quantiles(xs: list[float]) -> tuple[float, float, float]:
    s = sorted(xs)

    def pick(q: float) -> float:
        return s[min(len(s) - 1, round(q * (len(s) - 1)))]

    return pick(0.5), pick(0.1), pick(0.9)


def _bench(b: Bench, repetitions: int) -> tuple[list[float] | None, str | None]:
    """One benchmark's timings, in a VM of its own (a fault in one leaves no state)."""
    try:
        with Machine() as m:
            m.write(_IDTR_IMAGE, struct.pack("<HQ", 256 * 16 - 1, IDT))
            m.write(_FUNC, b"\xc3")
            for vec, code in b.handlers.items():
                addr = HANDLERS + 0x40 * (vec + 1)
                m.write(addr, code)
                m.set_gate(vec, addr)
            code = assemble(b)
            _run_once(m, b, code)  # warm up
            return [_run_once(m, b, code) for _ in range(repetitions)], None
    except KvmError as e:
        return None, str(e)


#: The most an empty loop iteration may cost for code to count as running natively.
NATIVE_LOOP = 20.0


def measure(
    repetitions: int = 21,
    scale: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Measured]:
    """Run every benchmark ``repetitions`` times (``scale`` multiplies iterations);
    cycles per operation, its base loop subtracted.  Where the empty loop shows that
    the hypervisor emulates the guest's supervisor code (some do: ``kvm-pvm`` runs only
    CPL 3 natively unless the guest kernel is built for it), the CPL 0 benchmarks are
    not run and say so."""
    raw: dict[str, list[float] | None] = {}
    out: dict[str, Measured] = {}
    emulated: str | None = None
    for b in benches():
        if progress:
            progress(b.name)
        if b.ring == 0 and emulated:
            out[b.name], raw[b.name] = Measured(b, failed=emulated), None
            continue
        b = replace(b, iterations=max(int(b.iterations * scale), 10))
        raw[b.name], why = _bench(b, repetitions)
        base = raw.get(b.base) if not b.name.startswith("empty") else [0.0] * repetitions
        got = raw[b.name]
        if got is None or base is None:
            out[b.name] = Measured(b, failed=why or f"its base {b.base} failed")
            continue
        per_op = [(x - y) / b.per for x, y in zip(got, base, strict=True)]
        med, lo, hi = _quantiles(per_op)
        out[b.name] = Measured(b, med, lo, hi, repetitions)
        if b.name == "empty" and med > NATIVE_LOOP:
            emulated = (
                f"the hypervisor emulates CPL 0 code here (an empty loop iteration takes "
                f"{med:,.0f} TSC cycles at CPL 0, not a few): no native cost can be measured"
            )
    return out


# ---------------------------------------------------------------------- the host


def _cpuinfo() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if not line.strip():
            break
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


def _vendor() -> str:
    return _cpuinfo().get("vendor_id", "")


@dataclass
class Host:
    """Where a calibration ran."""

    cpu: str
    vendor: str
    kernel: str
    nested: bool
    """KVM itself runs inside a virtual machine (the CPU reports a hypervisor)."""
    cpu_mhz: float | None
    """The core clock /proc/cpuinfo reports (not the TSC's rate)."""
    date: str
    hypervisor: str
    """The kernel module behind /dev/kvm (kvm-intel, kvm-amd, kvm-pvm)."""

    def describe(self) -> str:
        """One line: CPU, kernel, hypervisor, nesting."""
        nest = "nested inside a VM" if self.nested else "on bare metal"
        return f"{self.cpu}, Linux {self.kernel}, {self.hypervisor} {nest}"


def host() -> Host:
    """The CPU model, kernel and whether KVM runs nested."""
    info = _cpuinfo()
    flags = info.get("flags", "").split()
    mhz = info.get("cpu MHz")
    return Host(
        cpu=info.get("model name", platform.processor() or "unknown CPU"),
        vendor=info.get("vendor_id", ""),
        kernel=os.uname().release,
        nested="hypervisor" in flags,
        cpu_mhz=float(mhz) if mhz else None,
        date=time.strftime("%Y-%m-%d"),
        hypervisor=next(
            (
                m.replace("_", "-")
                for m in ("kvm_pvm", "kvm_intel", "kvm_amd")
                if Path(f"/sys/module/{m}").exists()
            ),
            "kvm",
        ),
    )


#: Primitives no guest can time, and why (kept from the base table).
UNMEASURABLE = {
    "native_cpuid": "cpuid always exits to the hypervisor inside a guest",
    "native_wbinvd": "wbinvd exits to the hypervisor inside a guest",
    "native_mmio": "a guest's APIC accesses exit; the bare device access cannot be timed in a VM",
    "native_io": "a guest's port I/O exits; the bare device access cannot be timed in a VM",
    "native_halt": "hlt is charged nothing (idle time is not a cost of the interface)",
    "hw_ptemod": "shadow-paging faults: not among the benchmarks yet",
    "hw_pagefault": "shadow-paging faults: not among the benchmarks yet",
    "shadow_fill": "shadow-paging faults: not among the benchmarks yet",
}


def table_entries(
    results: dict[str, Measured], h: Host
) -> tuple[dict[str, tuple[int, str, tuple[float, float], int]], dict[str, str]]:
    """From the benchmarks, the primitives measured (cycles, how, spread, repetitions) and
    why each other primitive a benchmark stands for was not."""
    got: dict[str, tuple[int, str, tuple[float, float], int]] = {}
    why = dict(UNMEASURABLE)

    def how(m: Measured, what: str) -> str:
        ring = "CPL 3" if m.bench.ring == 3 else "CPL 0"
        return (
            f"pvscope calibrate {h.date}: {what}, timed in a KVM guest at {ring}; median of "
            f"{m.repetitions} repetitions of {m.bench.iterations:,} operations, TSC "
            f"cycles less its base loop's ({m.bench.base}); {h.describe()}"
        )

    for m in results.values():
        prim = m.bench.primitive
        if prim is None:
            continue
        if m.failed:
            why[prim] = f"could not be measured here: {m.failed}"
            continue
        got[prim] = (round(m.median), how(m, m.bench.what), (m.p10, m.p90), m.repetitions)
    div = results.get("divzero")
    if div is not None and not div.failed:  # a guest's exceptions do not exit
        got["hw_exception"] = (
            round(div.median),
            how(div, div.bench.what),
            (div.p10, div.p90),
            div.repetitions,
        )
    mm, ex = results.get("mmio_kernel"), results.get("cpuid")
    if mm is not None and ex is not None and not mm.failed and not ex.failed:
        cyc = max(round(mm.median - ex.median), 0)
        what = f"{mm.bench.what}, less the cpuid exit round trip"
        got["emulate_mmio"] = (
            cyc,
            how(mm, what),
            (mm.p10 - ex.median, mm.p90 - ex.median),
            mm.repetitions,
        )
    elif mm is not None and mm.failed:
        why["emulate_mmio"] = f"could not be measured here: {mm.failed}"
    return got, why
