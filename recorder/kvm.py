"""A minimal virtual machine monitor on the Linux KVM API, in Python (``fcntl.ioctl``).

Takes machine code and runs it in a 64-bit long-mode guest at CPL 0 with paging on
(identity-mapped 2 MiB pages over guest RAM and the APIC page), on KVM's in-kernel
interrupt controllers; gives control back at each exit KVM does not handle itself.
Long mode because some KVM implementations page only there: ``kvm-pvm`` (PVM, SOSP
2023), the /dev/kvm of this project's machines, shuts a vCPU down that sets CR0.PG
without EFER.LME, and emulates non-paged code instruction by instruction.  No VMM
binary is used: the VM, its memory, the vCPU and its registers are set up through the
ioctls of ``Documentation/virt/kvm/api.rst`` (KVM API version 12).

Guest physical memory (identity-mapped):

==============  ===========================================================
``0x1000``      GDT: null, 64-bit code (selector 0x08), flat data (0x10)
``0x2000``      IDT: 256 interrupt gates, each to its stub at ``FAULT_STUBS``
                (which reports the vector on ``FAULT_PORT``) unless set
``0x3000``      PML4; ``0x6000`` PDPT; ``0x7000`` page directory of the low
                1 GiB (2 MiB pages); ``0x8000`` that of 3-4 GiB (the APIC
                pages, uncached)
``0x4000``      exception handlers (``HANDLERS``)
``0x5000``      results (``RESULTS``)
``0x10000``     the code being run (``CODE``)
``0x9000``      the fault stubs, 8 bytes each
``0xf000``      the stub that enters CPL 3 (``start_user``)
``0x70000``     the CPL 3 stack top; ``0x80000`` the CPL 0 stack top
==============  ===========================================================
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import signal
import struct
from dataclasses import dataclass

from pvscope.errors import PvscopeError

KVM_API_VERSION = 12
_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_KVM_GET_VCPU_MMAP_SIZE = 0xAE04
_KVM_CREATE_VCPU = 0xAE41
_KVM_SET_USER_MEMORY_REGION = 0x4020AE46
_KVM_SET_TSS_ADDR = 0xAE47
_KVM_CREATE_IRQCHIP = 0xAE60
_KVM_RUN = 0xAE80
_KVM_GET_REGS = 0x8090AE81
_KVM_SET_REGS = 0x4090AE82
_KVM_GET_SREGS = 0x8138AE83
_KVM_SET_SREGS = 0x4138AE84
_KVM_GET_SUPPORTED_CPUID = 0xC008AE05
_KVM_SET_CPUID2 = 0x4008AE90

EXIT_IO, EXIT_HLT, EXIT_MMIO, EXIT_SHUTDOWN, EXIT_FAIL_ENTRY = 2, 5, 6, 8, 9
EXIT_INTERNAL_ERROR = 17
EXIT_NAMES = {
    EXIT_IO: "io",
    EXIT_HLT: "hlt",
    EXIT_MMIO: "mmio",
    EXIT_SHUTDOWN: "shutdown (triple fault)",
    EXIT_FAIL_ENTRY: "failed entry",
    EXIT_INTERNAL_ERROR: "KVM internal error",
}

GDT, IDT, PAGE_DIR, HANDLERS, RESULTS, CODE, STACK_TOP = (
    0x1000,
    0x2000,
    0x3000,
    0x4000,
    0x5000,
    0x10000,
    0x80000,
)
FAULT_STUBS = 0x9000
#: The port a fault stub writes its vector to (exits to this VMM).
FAULT_PORT = 0xF5
#: The port whose write ends a run (not handled in the kernel: it exits to this VMM).
DONE_PORT = 0x501
PDPT, PD_LOW, PD_HIGH = 0x6000, 0x7000, 0x8000
USER_ENTRY, USER_STACK = 0xF000, 0x70000


class KvmError(PvscopeError):
    """KVM is missing, refuses a call, or the guest stopped in a way it should not."""


@dataclass
class Exit:
    """Why the vCPU came back: the reason, and for port I/O the port, direction, size."""

    reason: int
    port: int = 0
    out: bool = False
    size: int = 0

    @property
    def name(self) -> str:
        """The reason's name."""
        return EXIT_NAMES.get(self.reason, f"exit {self.reason}")


def available() -> str | None:
    """None if KVM can be used here, else why not (one line)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"/dev/kvm: {e.strerror}"
    try:
        v = fcntl.ioctl(fd, _KVM_GET_API_VERSION)
    finally:
        os.close(fd)
    return None if v == KVM_API_VERSION else f"KVM API version {v}, not {KVM_API_VERSION}"


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
_libc.ioctl.restype = ctypes.c_int


def _ioctl(fd: int, req: int, arg: int | bytes | bytearray = 0, what: str = "") -> int:
    if isinstance(arg, int):  # an unsigned long argument (fcntl.ioctl takes a C int)
        r = _libc.ioctl(fd, req, arg)
        if r < 0:
            raise KvmError(f"KVM {what or hex(req)}: {os.strerror(ctypes.get_errno())}")
        return int(r)
    try:
        got = fcntl.ioctl(fd, req, arg)  # a buffer argument is filled in place
    except OSError as e:
        raise KvmError(f"KVM {what or hex(req)}: {e.strerror}") from None
    return got if isinstance(got, int) else 0


def _segment(selector: int, code: bool) -> bytes:
    """A flat ring-0 segment (64-bit code, or data), as ``struct kvm_segment``."""
    typ = 0xB if code else 0x3  # execute/read accessed; read/write accessed
    db, long = (0, 1) if code else (1, 0)
    return struct.pack("<QIHBBBBBBBBBx", 0, 0xFFFFFFFF, selector, typ, 1, 0, db, 1, long, 1, 0, 0)


def _gate(handler: int) -> bytes:
    """A 64-bit ring-0 interrupt gate to ``handler`` through selector 0x08."""
    return struct.pack("<HHHHII", handler & 0xFFFF, 0x08, 0x8E00, (handler >> 16) & 0xFFFF, 0, 0)


class Machine:
    """One VM with one vCPU, its RAM mapped into this process (``mem``)."""

    def __init__(self, mem_mib: int = 64, irqchip: bool = True) -> None:
        why = available()
        if why is not None:
            raise KvmError(why)
        self._fds: list[int] = []
        self.kvm = self._open()
        self.vm = _ioctl(self.kvm, _KVM_CREATE_VM, 0, "create VM")
        self._fds.append(self.vm)
        self.size = mem_mib << 20
        self.mem = mmap.mmap(-1, self.size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self.mem))
        region = struct.pack("<IIQQQ", 0, 0, 0, self.size, addr)
        _ioctl(self.vm, _KVM_SET_USER_MEMORY_REGION, region, "set memory")
        with contextlib.suppress(KvmError):  # needed on Intel (real-mode TSS) only
            _ioctl(self.vm, _KVM_SET_TSS_ADDR, 0xFFFBD000, "set TSS address")
        self.irqchip = irqchip
        if irqchip:
            _ioctl(self.vm, _KVM_CREATE_IRQCHIP, 0, "create irqchip")
        self.cpu = _ioctl(self.vm, _KVM_CREATE_VCPU, 0, "create vCPU")
        self._fds.append(self.cpu)
        run_size = _ioctl(self.kvm, _KVM_GET_VCPU_MMAP_SIZE, 0, "vCPU mmap size")
        self.run_area = mmap.mmap(
            self.cpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self._cpuid()
        self._tables()
        self._protected_mode()
        self._first_entry()

    def _first_entry(self) -> None:
        """Enter the guest once, on a stub: a hypervisor that cannot run it (one that
        refuses its paging mode, say) fails here in one line, not mid-measurement."""
        self.write(CODE, b"\x66\xba" + struct.pack("<H", DONE_PORT) + b"\xee\xeb\xfe")
        self.start(CODE)
        ex = self.run()
        if not (ex.reason == EXIT_IO and ex.port == DONE_PORT):
            raise KvmError(f"the guest does not start: {ex.name} exit at {self.eip():#x}")

    def _open(self) -> int:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self._fds.append(fd)
        return fd

    def close(self) -> None:
        """Release the vCPU, the VM and the memory."""
        self.run_area.close()
        for fd in reversed(self._fds):
            os.close(fd)
        self._fds.clear()
        self.mem.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ memory

    def write(self, gpa: int, data: bytes) -> None:
        """Copy ``data`` into guest memory at ``gpa``."""
        self.mem[gpa : gpa + len(data)] = data

    def read(self, gpa: int, n: int) -> bytes:
        """``n`` bytes of guest memory at ``gpa``."""
        return self.mem[gpa : gpa + n]

    def set_gate(self, vector: int, handler: int | None = None) -> None:
        """Point IDT entry ``vector`` at ``handler`` (None: back at its fault stub)."""
        if handler is None:
            handler = FAULT_STUBS + 8 * vector
        self.write(IDT + 16 * vector, _gate(handler))

    def _tables(self) -> None:
        # null; kernel code 0x08 and data 0x10; user code 0x1b and data 0x23 (DPL 3)
        descs = (0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF, 0x00AFFA000000FFFF, 0x00CFF2000000FFFF)
        self.write(GDT, struct.pack("<5Q", *descs))
        for v in range(256):  # mov al, v; out FAULT_PORT, al; jmp $
            self.write(FAULT_STUBS + 8 * v, bytes([0xB0, v, 0xE6, FAULT_PORT, 0xEB, 0xFE]))
            self.set_gate(v, FAULT_STUBS + 8 * v)
        # present, writable, user: every page is reachable from CPL 3 as well
        self.write(PAGE_DIR, struct.pack("<Q", PDPT | 7))
        self.write(PDPT, struct.pack("<4Q", PD_LOW | 7, 0, 0, PD_HIGH | 7))
        ram = [(i << 21) | 0x87 for i in range(self.size >> 21)]  # 2 MiB pages
        self.write(PD_LOW, struct.pack(f"<{len(ram)}Q", *ram))
        apic = [(0xC0000000 + (i << 21)) | 0x9F for i in range(512)]  # + PWT, PCD: uncached
        self.write(PD_HIGH, struct.pack("<512Q", *apic))

    def _cpuid(self) -> None:
        """Give the vCPU every CPUID feature KVM supports (4 MiB pages among them)."""
        nent = 256
        buf = bytearray(struct.pack("<II", nent, 0) + bytes(40 * nent))
        _ioctl(self.kvm, _KVM_GET_SUPPORTED_CPUID, buf, "supported CPUID")
        n = struct.unpack_from("<I", buf, 0)[0]
        _ioctl(self.cpu, _KVM_SET_CPUID2, bytearray(buf[: 8 + 40 * n]), "set CPUID")

    def _protected_mode(self) -> None:
        sregs = bytearray(312)
        _ioctl(self.cpu, _KVM_GET_SREGS, sregs, "get sregs")
        code, data = _segment(0x08, True), _segment(0x10, False)
        sregs[0:24] = code
        for i in (1, 2, 3, 4, 5):  # ds es fs gs ss
            sregs[24 * i : 24 * i + 24] = data
        struct.pack_into("<QH", sregs, 192, GDT, 5 * 8 - 1)  # gdt
        struct.pack_into("<QH", sregs, 208, IDT, 256 * 16 - 1)  # idt
        # cr0 (PE, MP, ET, NE, WP, PG), cr2, cr3, cr4 (PAE, OSFXSR), cr8, efer (LME, LMA)
        struct.pack_into("<QQQQQQ", sregs, 224, 0x80010033, 0, PAGE_DIR, 0x220, 0, 0x500)
        _ioctl(self.cpu, _KVM_SET_SREGS, sregs, "set sregs")

    # ------------------------------------------------------------------ running

    def start_user(self, eip: int = CODE) -> None:
        """Set the vCPU to enter ``eip`` at CPL 3 (with IOPL 3: port I/O allowed), through
        an ``iretq`` from a stub at ``USER_ENTRY``."""
        stub = b"\x6a\x23\x68" + struct.pack("<I", USER_STACK)  # push ss; push rsp
        stub += b"\x68" + struct.pack("<I", 0x3002) + b"\x6a\x1b"  # push rflags; push cs
        stub += b"\x68" + struct.pack("<I", eip) + b"\x48\xcf"  # push rip; iretq
        self.write(USER_ENTRY, stub)
        self.start(USER_ENTRY)

    def start(self, eip: int = CODE, **regs: int) -> None:
        """Set the vCPU to run from ``eip`` with a fresh stack and the given registers
        (``eax=...``, ``ebx=...``: the eight general registers by their 32-bit names)."""
        names = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp")
        vals = [regs.get("e" + n[1:], 0) for n in names]
        vals[6] = STACK_TOP
        r = struct.pack("<18Q", *vals, *([0] * 8), eip, 0x2)
        _ioctl(self.cpu, _KVM_SET_REGS, r, "set regs")

    def run(self, timeout: float = 5.0) -> Exit:
        """Run until an exit this VMM must see; a guest that makes none within ``timeout``
        seconds is stopped (SIGALRM interrupts KVM_RUN) with a :class:`KvmError`."""
        old = signal.signal(signal.SIGALRM, lambda *_: None)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            _ioctl(self.cpu, _KVM_RUN, 0, "run")
        except KvmError as e:
            if "interrupted" in str(e).lower():
                raise KvmError(f"the guest made no exit within {timeout:g} s") from None
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        reason = struct.unpack_from("<I", self.run_area, 8)[0]
        if reason == EXIT_IO:
            direction, size, port = struct.unpack_from("<BBH", self.run_area, 32)
            return Exit(reason, port, direction == 1, size)
        return Exit(reason)

    def io_data(self, size: int) -> int:
        """The value of the current port-I/O exit (an ``out``), or write one (``in``)."""
        off = struct.unpack_from("<Q", self.run_area, 40)[0]
        return int.from_bytes(self.run_area[off : off + size], "little")

    def answer_in(self, size: int, value: int) -> None:
        """Give an ``in`` its value before the next :meth:`run`."""
        off = struct.unpack_from("<Q", self.run_area, 40)[0]
        self.run_area[off : off + size] = value.to_bytes(size, "little")

    def eip(self) -> int:
        """The vCPU's instruction pointer."""
        r = bytearray(144)
        _ioctl(self.cpu, _KVM_GET_REGS, r, "get regs")
        return int(struct.unpack_from("<Q", r, 128)[0])
