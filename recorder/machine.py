"""The emulated PC: one i386 CPU (unicorn), a local APIC, an IOAPIC and two devices.

The guest kernel runs at CPL 1 and its user tasks at CPL 3; ring 0 is the
recorder.  The CPU runs in quanta of retired instructions; between quanta the
recorder advances virtual time, drains the ROM's ring of hook records, raises
device interrupts and delivers the deliverable ones through the guest's IDT.
Unicorn reports exceptions and ``int n`` through one interrupt hook instead of
the guest's IDT, so the recorder delivers those too: same-privilege entries by
writing the frame itself, CPL 3 -> 1 entries through a call gate (the CPU does
the TSS stack switch; see ``recorder.rom``).

Virtual time (``vtime``) counts retired guest instructions plus idle time
skipped while halted.  Every event's vtime is exact: the instructions retired
before the one that caused it (``recorder.clock``).  Quanta end early at every
device deadline, so interrupts are raised at their exact instruction, and are
delivered there, at the unmask that finds one pending, or at the first
instruction after the ROM entry the deadline fell in.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from unicorn import (
    UC_ARCH_X86,
    UC_CTL_IO_WRITE,
    UC_CTL_TLB_FLUSH,
    UC_HOOK_CODE,
    UC_HOOK_INTR,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MODE_32,
    UC_PROT_ALL,
    Uc,
    UcError,
)
from unicorn import x86_const as X
from unicorn.unicorn_py3.unicorn import uclib

from pvscope.digest import mapping_digest, walk_page_directory
from pvscope.hooks import HOOKS, Hook
from recorder import rom as R
from recorder.clock import InstructionClock, Ring
from recorder.devices import IoDevice, PeriodicTimer
from recorder.elf import GuestImage
from recorder.ioapic import Ioapic
from recorder.lapic import Lapic
from recorder.writer import EVENT_CODES, RECORD_DTYPE, TraceWriter, event_code

# recorder boot GDT, also the layout the reserved entries are copied from
SEL_R0_CODE = 0x08
SEL_R0_DATA = 0x10
SEL_R1_CODE = 0x19
SEL_R1_DATA = 0x21
SEL_TSS = R.RESERVED_GDT * 8
SEL_GATE = (R.RESERVED_GDT + 2) * 8 | 3
SEL_GATE_CODE = (R.RESERVED_GDT + 3) * 8 | 1
BOOT_GDT = R.DATA + 0x800  # the recorder's own GDT before the guest loads one
STUB = R.DATA + 0xC00  # ring-0 stub: ltr, then lret to the guest at CPL 1
EFLAGS_IF = 0x200
EFLAGS_IOPL1 = 0x1000
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})
UNTIL = 0xFFFFFFF0  # an address the CPU never reaches: quanta end by count
MSR_VALUES = {0x1B: 0xFEE00900}  # IA32_APIC_BASE: enabled, BSP, at 0xFEE00000
BATCH_BYTES = 64 * 1024 * 40  # decode drained records in batches of 64 Ki
MIN_INSNS_PER_RECORD = 8  # no hook call logs in fewer (the call and the shortest prologue: 9)

_MARKER = struct.Struct(f"<HHII{R.RECORD_SIZE - 12}x")
_EVENT_RECORD = struct.Struct("<HHIIIIIIIII")

_U32X2 = struct.Struct("<II")
_HEAD_WORD = (R.DATA - R.HV_BASE + R.D_RING_HEAD) >> 2  # the ring head, as a word of hv.u32
# the data page's CPL 3 -> 1 entry fields, from D_GATE_EFLAGS: EFLAGS, EIP, error code, where
# the gate stub goes next, the handler's offset and selector
_GATE_FIELDS = struct.Struct("<IIIIIH")
assert R.D_GATE_EIP - R.D_GATE_EFLAGS == 4 and R.D_GATE_TARGET - R.D_GATE_EFLAGS == 16
_EVENT_CODE = {k: event_code(k) for k in EVENT_CODES}


#: A PTE's ``(pte >> 2) & 0x41`` (U in bit 0, G in bit 6) -> its TLB class: 0 kernel,
#: 1 user, 2 global, 3 user and global (counted as user).
_TLB_CLASS = np.zeros(0x42, dtype=np.intp)
_TLB_CLASS[[0x01, 0x40, 0x41]] = [1, 2, 3]


def _desc(base: int, limit: int, access: int, flags: int) -> bytes:
    return struct.pack(
        "<HHBBBB",
        limit & 0xFFFF,
        base & 0xFFFF,
        (base >> 16) & 0xFF,
        access,
        ((limit >> 16) & 0xF) | (flags << 4),
        (base >> 24) & 0xFF,
    )


def _gate(selector: int, offset: int, dpl: int, params: int) -> bytes:
    return struct.pack("<HHBBH", offset & 0xFFFF, selector, params, 0x8C | (dpl << 5), offset >> 16)


def reserved_gdt_entries(gate_stub: int, busy: bool = True) -> bytes:
    """The four GDT entries the hypervisor owns: TSS, ring-0 code, call gate, gate code."""
    return (
        _desc(R.TSS, 0x67, 0x8B if busy else 0x89, 0)
        + _desc(0, 0xFFFFF, 0x9A, 0xC)
        + _gate(SEL_GATE_CODE, gate_stub, 3, 0)
        + _desc(0, 0xFFFFF, 0xBA, 0xC)
    )


def _register_access(uc: Uc) -> tuple[Callable[[int], int], Callable[[int, int], None]]:
    """Read and write one register straight through unicorn's C API.

    The binding's ``reg_read``/``reg_write`` pick a register class per call and cost
    several microseconds each; a CPL 3 entry or a hypercall needs a dozen of them.
    Only integer registers of at most 32 bits go through here (the buffer is zeroed
    first, so 16-bit selectors read back clean).
    """
    handle = uc._uch
    buf = ctypes.c_uint64()
    ref = ctypes.byref(buf)
    c_read = uclib.uc_reg_read
    c_write = uclib.uc_reg_write

    def read(reg: int) -> int:
        buf.value = 0
        status = c_read(handle, reg, ref)
        if status:
            raise UcError(status)
        return buf.value

    def write(reg: int, value: int) -> None:
        buf.value = value & 0xFFFFFFFF
        status = c_write(handle, reg, ref)
        if status:
            raise UcError(status)

    return read, write


def _handler_eflags(eflags: int, trap_gate: bool) -> int:
    """EFLAGS on entry to an interrupt or exception handler: TF, NT, RF clear; IF too
    through an interrupt gate."""
    eflags &= ~(0x100 | 0x4000 | 0x10000)
    return eflags if trap_gate else eflags & ~EFLAGS_IF


class _HostMemory:
    """Guest memory the recorder reads directly: a host buffer unicorn maps with mem_map_ptr."""

    def __init__(self, uc: Uc, base: int, size: int) -> None:
        self.base = base
        self.size = size
        self.buf = mmap.mmap(-1, size)  # page-aligned, zero-filled
        self.u8 = np.frombuffer(self.buf, dtype=np.uint8)
        self.u32 = np.frombuffer(self.buf, dtype="<u4")
        self._anchor = ctypes.c_char.from_buffer(self.buf)
        uc.mem_map_ptr(base, size, UC_PROT_ALL, ctypes.addressof(self._anchor))


class Stop(Exception):
    """Ends the run: ``status`` is a manifest end status, ``reason`` says why."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class MachineConfig:
    """Everything about the machine that shapes a run (all of it goes in the manifest)."""

    mem_mib: int = 64
    quantum: int = 10_000
    seed: int = 0
    scale: int = 1
    budget: int = 4_000_000_000
    checkpoint_every: int = 100
    """Quanta between state checkpoints."""
    cpu_khz: int = 1_000_000
    """The virtual CPU's clock: one retired instruction per virtual nanosecond."""
    wallclock: int = 1_173_744_000
    """get_wallclock's answer (2007-03-13, the week of the paravirt_ops debate)."""
    timer_pin: int = 2
    timer_period: int = 1_000_000
    device_pin: int = 11
    device_min_delay: int = 20_000
    device_max_delay: int = 200_000

    def manifest(self) -> dict[str, Any]:
        """The configuration as written to the manifest."""
        return {
            "cpu": "i386, kernel at CPL 1, user at CPL 3, IOPL 1",
            "mem_mib": self.mem_mib,
            "quantum": self.quantum,
            "checkpoint_every": self.checkpoint_every,
            "cpu_khz": self.cpu_khz,
            "wallclock": self.wallclock,
            "page_offset": 0xC0000000,
            "hv_base": R.HV_BASE,
            "lapic": {"base": 0xFEE00000, "id": 0},
            "ioapic": {"base": 0xFEC00000, "pins": 24},
            "timer": {"pin": self.timer_pin, "period": self.timer_period},
            "device": {
                "base": IoDevice.BASE,
                "pin": self.device_pin,
                "min_delay": self.device_min_delay,
                "max_delay": self.device_max_delay,
            },
        }


@dataclass
class RunResult:
    """How a run ended."""

    status: str
    reason: str
    vtime: int
    instructions: int
    hook_calls: int
    console: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Machine:
    """One guest run on the emulated PC, logging into a TraceWriter."""

    def __init__(
        self,
        image: GuestImage,
        config: MachineConfig,
        writer: TraceWriter,
        log_path: str = "ring",
        on_progress: Callable[[int, int], None] | None = None,
        stamp: str = "auto",
    ) -> None:
        if log_path not in ("ring", "python"):
            raise ValueError(f"unknown log path {log_path!r}")
        if stamp not in ("auto", "native", "python"):
            raise ValueError(f"unknown stamp {stamp!r}")
        self.image = image
        self.cfg = config
        self.writer = writer
        self.python_log = log_path == "python"
        self.on_progress = on_progress
        self.rom = R.load()
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self._reg, self._wreg = _register_access(self.uc)
        self.mem_bytes = config.mem_mib << 20
        self.vtime = 0
        self.instructions = 0
        self.halted = False
        self.resume_eip = 0
        self.idt_base = 0
        self.idt_limit = 0
        self.cr3 = 0  # CR0.PG and CR3 change only through the recorder (setup, hypercalls)
        self._paging = False
        self.debugregs = [0] * 8
        self.msrs: dict[int, int] = {}
        self.console: list[str] = []
        self.inputs: list[tuple[int, int, str, int]] = []
        self.tlb_rows: list[tuple[int, int, int, int, int]] = []
        # (directory frame, its entries less Accessed bits, tables, 4 MiB entries' indices)
        self._tlb_layout: tuple[int, bytes, np.ndarray, np.ndarray] = (
            -1,
            b"",
            np.zeros(0, np.uint32),
            np.zeros(0, np.intp),
        )
        self.stop: Stop | None = None
        self.hook_calls_seen = False
        # logging state
        self.held: list[tuple[int, bytes]] = []  # ring records held back, in stream order
        self.ring_start = R.RING  # where the records not yet drained begin
        self.markers_undrained = 0
        self.buf = bytearray()  # python path: records built in Python
        self.buf_pending: list[tuple[int, Hook]] = []  # records awaiting a result
        self.drained_events = 0
        self._pending = False  # an interrupt is deliverable (mirrors the ROM's flag)
        self._deadline: int | None = 0  # earliest device deadline; 0 = recompute
        self._head = R.RING
        self.batch: list[bytes] = []  # drained records not yet decoded
        self.batch_bytes = 0
        self._old_exception_off = _old_exception_offset()
        self._setup_devices()
        self._setup_memory()
        self._setup_cpu()
        self._setup_hooks()
        hv = ctypes.addressof(self.hv._anchor) - R.HV_BASE  # host address of guest 0
        self.clock = InstructionClock(
            self.uc,
            Ring(
                hv + R.DATA + R.D_RING_HEAD,
                hv + R.DATA + R.D_SLOT,
                R.RING,
                R.RING_SIZE,
                hv + R.RING,
            ),
            R.CODE,
            R.DATA - 1,
            native=None if stamp == "auto" else stamp == "native",
        )
        self._step = False  # run one instruction at a time: an interrupt waits on a ROM entry
        self._ctx = self.uc.context_save()

    # --- setup ---------------------------------------------------------------------------

    def _setup_devices(self) -> None:
        machine = self

        class RecordingLapic(Lapic):
            def accept(self, vector: int, level: bool, source: int, vtime: int) -> bool:
                already = bool(self.read(0x200 + (vector >> 5) * 0x10, 4) >> (vector & 31) & 1)
                ok = super().accept(vector, level, source, vtime)
                if ok:
                    machine._emit("irq_raise", vector, source, int(level), int(already))
                return ok

        self.lapic = RecordingLapic(on_eoi=lambda v: self.ioapic.eoi(v))
        self.ioapic = Ioapic(self.lapic)
        self.timer = PeriodicTimer(self.ioapic, self.cfg.timer_pin, self.cfg.timer_period)
        self.device = IoDevice(
            self.ioapic,
            self.cfg.device_pin,
            seed=self.cfg.seed,
            min_delay=self.cfg.device_min_delay,
            max_delay=self.cfg.device_max_delay,
            record_input=self._record_input,
        )

    def _setup_memory(self) -> None:
        uc = self.uc
        # guest RAM and the hypervisor's pages up to the ring's guard live in host buffers the
        # recorder reads without a call into unicorn (writes that could hit code still go
        # through unicorn, which invalidates translated blocks)
        self.ram = _HostMemory(uc, 0, self.mem_bytes)
        self._pages = self.ram.u32.reshape(-1, 1024)  # guest RAM as 4 KiB pages of words
        guard = R.RING + R.RING_SIZE
        self.hv = _HostMemory(uc, R.HV_BASE, guard - R.HV_BASE)
        slots = R.RING_SIZE // R.RECORD_SIZE
        ring = self.hv.u8[R.RING - R.HV_BASE : R.RING - R.HV_BASE + slots * R.RECORD_SIZE]
        self._ring_codes = ring.view(RECORD_DTYPE)["code"]
        uc.mem_map(guard + 0x1000, R.HV_BASE + R.HV_SIZE - guard - 0x1000)
        for seg in self.image.segments:
            if seg.paddr + seg.memsz > self.mem_bytes:
                raise Stop(
                    "guest-fault",
                    f"segment at {seg.paddr:#x}+{seg.memsz:#x} is outside guest RAM "
                    f"({self.cfg.mem_mib} MiB)",
                )
            uc.mem_write(seg.paddr, seg.data)
        uc.mem_write(R.ROM_BASE, self.rom.image)
        uc.mem_write(
            R.ROM_BASE + R.H_SCALE,
            struct.pack(
                "<III", self.cfg.scale & 0xFFFFFFFF, self.cfg.seed & 0xFFFFFFFF, self.mem_bytes
            ),
        )
        self._data32(R.D_RING_HEAD, R.RING)
        self._data32(R.D_WALLCLOCK, self.cfg.wallclock)
        self._data32(R.D_CPU_KHZ, self.cfg.cpu_khz)
        for base, size, read, write in (
            (0xFEE00000, 0x1000, self.lapic.read, self.lapic.write),
            (0xFEC00000, 0x1000, self.ioapic.read, self.ioapic.write),
            (IoDevice.BASE, 0x1000, self.device.read, self.device.write),
        ):
            uc.mmio_map(
                base,
                size,
                self._mmio_reader(base, read),
                None,
                self._mmio_writer(base, write),
                None,
            )

    def _setup_cpu(self) -> None:
        uc = self.uc
        gdt = bytearray(32 * 8)
        for i, d in (
            (1, _desc(0, 0xFFFFF, 0x9A, 0xC)),
            (2, _desc(0, 0xFFFFF, 0x92, 0xC)),
            (3, _desc(0, 0xFFFFF, 0xBA, 0xC)),
            (4, _desc(0, 0xFFFFF, 0xB2, 0xC)),
            (5, _desc(0, 0xFFFFF, 0xFA, 0xC)),
            (6, _desc(0, 0xFFFFF, 0xF2, 0xC)),
        ):
            gdt[i * 8 : i * 8 + 8] = d
        gdt[R.RESERVED_GDT * 8 :] = reserved_gdt_entries(self.rom.gate_stub, busy=False)
        uc.mem_write(BOOT_GDT, bytes(gdt))
        uc.reg_write(X.UC_X86_REG_GDTR, (0, BOOT_GDT, len(gdt) - 1, 0))
        uc.reg_write(X.UC_X86_REG_CR0, uc.reg_read(X.UC_X86_REG_CR0) | 1)
        for reg, sel in (
            (X.UC_X86_REG_SS, SEL_R0_DATA),
            (X.UC_X86_REG_DS, SEL_R0_DATA),
            (X.UC_X86_REG_ES, SEL_R0_DATA),
        ):
            uc.reg_write(reg, sel)
        uc.reg_write(X.UC_X86_REG_CS, SEL_R0_CODE)
        # ring-0 stub: ltr; load ring-1 data segments; lret to the guest's entry at CPL 1
        stub = (
            bytes([0x66, 0xB8])
            + struct.pack("<H", SEL_TSS)
            + bytes([0x0F, 0x00, 0xD8])
            + bytes([0x66, 0xB8])
            + struct.pack("<H", SEL_R1_DATA)
            + bytes([0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xE0, 0x8E, 0xE8])
            + bytes([0x6A, SEL_R1_DATA, 0x6A, 0x00, 0x6A, SEL_R1_CODE, 0x68])
            + struct.pack("<I", self.image.entry)
            + bytes([0xCB])
        )
        uc.mem_write(STUB, stub)
        uc.reg_write(X.UC_X86_REG_ESP, R.DATA + 0x1000)
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2 | EFLAGS_IOPL1)
        try:
            uc.emu_start(STUB, STUB + len(stub) - 1 + 1, count=9)
        except UcError as e:  # pragma: no cover - machine setup is not guest-dependent
            raise RuntimeError(f"recorder boot stub failed: {e}") from None
        self._data32(R.D_CR0, uc.reg_read(X.UC_X86_REG_CR0))
        self._data32(R.D_CR4, uc.reg_read(X.UC_X86_REG_CR4))

    def _setup_hooks(self) -> None:
        uc = self.uc
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(
            UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED,
            self._on_unmapped,
        )
        if self.python_log:
            self._reserve_hook = {a: h for a, h in zip(self.rom.reserve, HOOKS, strict=True)}
            for a in self.rom.reserve:
                uc.hook_add(UC_HOOK_CODE, self._on_entry, begin=a, end=a)
            for a in self.rom.completion_tails:
                uc.hook_add(UC_HOOK_CODE, self._on_result, begin=a, end=a)

    # --- small helpers ----------------------------------------------------------------------

    def _data32(self, off: int, value: int) -> None:
        self.hv.u32[(R.DATA - R.HV_BASE + off) >> 2] = value & 0xFFFFFFFF

    def _ring_head(self) -> int:
        """The ring head the ROM advances."""
        return int(self.hv.u32[_HEAD_WORD])

    def _pread(self, pa: int, n: int) -> bytes:
        """Guest-physical bytes (RAM from the host buffer, anything else through unicorn)."""
        if pa + n <= self.mem_bytes:
            return self.ram.buf[pa : pa + n]
        return bytes(self.uc.mem_read(pa, n))

    def _ring_read(self, addr: int, n: int) -> bytes:
        off = addr - R.HV_BASE
        return self.hv.buf[off : off + n]

    def _ring_zero(self, start: int, end: int) -> None:
        """Mark the ring slots in [start, end) free: code 0 (the ROM writes it last).

        Their other fields keep the old record's values; the ROM and the recorder overwrite
        every field a record carries, and the writer ignores (zeroes) the others.
        """
        first = (start - R.RING) // R.RECORD_SIZE
        last = (end - R.RING) // R.RECORD_SIZE
        self._ring_codes[first:last] = 0

    def _rd32(self, pa: int) -> int:
        """A little-endian word of guest RAM (aligned or not); UcError outside RAM."""
        if pa & 3 == 0 and pa + 4 <= self.mem_bytes:
            return int(self.ram.u32[pa >> 2])
        return int.from_bytes(self.uc.mem_read(pa, 4), "little")

    def translate(self, va: int, write: bool = False, user: bool = False) -> int | None:
        """Guest-physical address of a virtual one through the current page tables."""
        va &= 0xFFFFFFFF
        if not self._paging:
            return va
        cr3 = self.cr3 & 0xFFFFF000
        try:
            pde = self._rd32(cr3 + (va >> 22) * 4)
            if not pde & 1 or (user and not pde & 4):
                return None
            if pde & 0x80:
                return (pde & 0xFFC00000) | (va & 0x3FFFFF)
            pte = self._rd32((pde & 0xFFFFF000) + ((va >> 12) & 1023) * 4)
        except UcError:
            return None
        if not pte & 1 or (user and not pte & 4) or (write and user and not pte & 2 & pde):
            return None
        return (pte & 0xFFFFF000) | (va & 0xFFF)

    def vread(self, va: int, n: int) -> bytes:
        """Read guest virtual memory (page by page)."""
        out = bytearray()
        while n > 0:
            pa = self.translate(va)
            if pa is None:
                raise Stop("guest-fault", f"recorder could not read guest address {va:#x}")
            k = min(n, 0x1000 - (va & 0xFFF))
            out += self._pread(pa, k)
            va, n = va + k, n - k
        return bytes(out)

    def vwrite(self, va: int, data: bytes) -> bool:
        """Write guest virtual memory; False if a page is not mapped."""
        off = 0
        while off < len(data):
            pa = self.translate(va + off, write=True)
            if pa is None:
                return False
            k = min(len(data) - off, 0x1000 - ((va + off) & 0xFFF))
            self.uc.mem_write(pa, data[off : off + k])
            off += k
        return True

    def vread32(self, va: int) -> int:
        """A little-endian word of guest virtual memory."""
        if va & 3 == 0:
            pa = self.translate(va)
            if pa is not None and pa + 4 <= self.mem_bytes:
                return int(self.ram.u32[pa >> 2])
        return int.from_bytes(self.vread(va, 4), "little")

    def _mid_entry(self, eip: int) -> bool:
        """Inside a ROM entry or the CPL 3 -> 1 trampoline: no interrupt, no checkpoint."""
        return R.ROM_BASE <= eip < R.DATA or R.USER_PAGE <= eip < R.USER_PAGE + 0x1000

    # --- logging ----------------------------------------------------------------------------

    def _events_so_far(self) -> int:
        if self.python_log:
            pending = len(self.buf) // R.RECORD_SIZE
        else:
            head = self._ring_head()
            pending = len(self.held) + (head - self.ring_start) // R.RECORD_SIZE
        return self.drained_events + pending - self.markers_undrained

    def _append_record(self, rec: bytes) -> None:
        if self.python_log:
            self.buf += rec
            return
        u32 = self.hv.u32
        head = int(u32[_HEAD_WORD])
        if head + R.RECORD_SIZE > R.RING + R.RING_SIZE:
            raise Stop("ring-overflow", "the ROM's ring buffer filled within one quantum")
        off = head - R.HV_BASE
        self.hv.buf[off : off + R.RECORD_SIZE] = rec
        u32[_HEAD_WORD] = head + R.RECORD_SIZE
        self._head = head + R.RECORD_SIZE

    def _emit(
        self,
        kind: str,
        a0: int = 0,
        a1: int = 0,
        a2: int = 0,
        a3: int = 0,
        site: int | None = None,
        cs: int | None = None,
        eflags: int | None = None,
    ) -> None:
        """Log an event the recorder itself observed (CS, EFLAGS and the site default to the
        CPU's current ones)."""
        rec = _EVENT_RECORD.pack(
            _EVENT_CODE[kind],
            (self._reg(X.UC_X86_REG_CS) if cs is None else cs) & 0xFFFF,
            a0 & 0xFFFFFFFF,
            a1 & 0xFFFFFFFF,
            a2 & 0xFFFFFFFF,
            a3 & 0xFFFFFFFF,
            0,
            0,
            (self._reg(X.UC_X86_REG_EIP) if site is None else site) & 0xFFFFFFFF,
            self._reg(X.UC_X86_REG_EFLAGS) if eflags is None else eflags,
            self._now() & 0xFFFFFFFF,
        )
        self._append_record(rec)

    def _now(self) -> int:
        """Exact vtime of the instruction the CPU is at (between quanta: ``vtime``)."""
        return self.clock.now() if self.clock.running else self.vtime

    def _marker(self) -> None:
        self._append_record(
            _MARKER.pack(R.CODE_MARKER, 0, self.vtime & 0xFFFFFFFF, self.vtime >> 32)
        )
        self.markers_undrained += 1

    def _record_input(self, source: str, value: int) -> None:
        self.inputs.append((max(self._events_so_far() - 1, 0), self._now(), source, value))

    def drain(self, *, force: bool = False) -> bool:
        """Move complete records out of the ring (or the python path's buffer) into the batch
        the writer decodes; True if nothing incomplete was left behind.

        Without ``force`` the ring is only emptied once half full: between quanta the
        recorder then touches guest memory once, to read the head.
        """
        if self.python_log:
            first = min((i for i, _ in self.buf_pending), default=len(self.buf) // R.RECORD_SIZE)
            if first:
                stop = first * R.RECORD_SIZE
                self._consume(self.buf[:stop])
                del self.buf[:stop]
                self.buf_pending = [(i - first, h) for i, h in self.buf_pending]
            # the ROM still writes its ring; this path ignores it, only keeps it from filling
            if self._ring_head() - R.RING > R.RING_SIZE // 2:
                self._data32(R.D_RING_HEAD, R.RING)
            return not self.buf_pending
        if not force and not self.held and self._head - R.RING <= R.RING_SIZE // 2:
            return True  # the head the last marker was written at: far from full
        head = min(self._ring_head(), R.RING + R.RING_SIZE)
        size = R.RECORD_SIZE
        base = self.ring_start
        raw = self._ring_read(base, head - base)
        if self.held:
            # re-read the held records that were still being written when last drained
            self.held = [(a, self._ring_read(a, size) if a else r) for a, r in self.held]
            first = next(
                (i for i, (_a, r) in enumerate(self.held) if r[:2] == b"\0\0"), len(self.held)
            )
            if first:
                self._consume(b"".join(r for _a, r in self.held[:first]))
                for a, _r in self.held[:first]:
                    if a:  # a slot that was being written: free it for reuse
                        self._ring_zero(a, a + size)
                del self.held[:first]
        if self.held:  # still waiting on an earlier record: hold everything behind it
            k = 0
        else:
            codes = np.frombuffer(raw, dtype=RECORD_DTYPE)["code"]
            incomplete = np.flatnonzero(codes == 0)
            k = int(incomplete[0]) if len(incomplete) else len(codes)
            if k:
                self._consume(raw[: k * size])
        self.held += [
            (
                base + i * size if raw[i * size : i * size + 2] == b"\0\0" else 0,
                raw[i * size : (i + 1) * size],
            )
            for i in range(k, len(raw) // size)
        ]
        live = [a for a, _r in self.held if a]
        # restart the ring at its start unless a slot still being written is within one
        # quantum's worth of records of it; while any is held, drain at every boundary
        margin = (self.cfg.quantum // MIN_INSNS_PER_RECORD + 1) * size
        new_base = R.RING if not live or min(live) >= R.RING + margin else max(live) + size
        start = R.RING  # zero every slot that will be reused, sparing those being written
        for a in sorted(live) + [head]:
            if a > start:
                self._ring_zero(start, a)
            start = max(start, a + size)
        self.ring_start = new_base
        self._data32(R.D_RING_HEAD, new_base)
        return not live

    def _consume(self, raw: bytes | bytearray) -> None:
        raw = bytes(raw)
        codes = np.frombuffer(raw, dtype=RECORD_DTYPE)["code"]
        markers = int(np.count_nonzero(codes == R.CODE_MARKER))
        self.markers_undrained -= markers
        self.drained_events += len(codes) - markers
        self.batch.append(raw)
        self.batch_bytes += len(raw)
        if self.batch_bytes >= BATCH_BYTES:
            self.flush_batch()

    def flush_batch(self) -> None:
        """Decode the drained records into the trace."""
        if self.batch:
            self.writer.submit_records(b"".join(self.batch))
            self.batch = []
            self.batch_bytes = 0

    # python logging path: a record per call, built from the registers
    def _on_entry(self, uc: Uc, address: int, size: int, _ud: Any) -> None:
        # at the instruction where the ROM reserves its ring record, so both paths log the
        # call at the same point; the stack may hold the ROM's saved ebx
        h = self._reserve_hook[address]
        esp = self._reg(X.UC_X86_REG_ESP) + self.rom.site_offset[h.id]
        a = [0, 0, 0, 0]
        if h.jump:
            frame = self.vread(esp, 12)
            a[0], a[1], a[2] = struct.unpack("<III", frame)
            site = a[0]
        else:
            regs = (X.UC_X86_REG_EAX, X.UC_X86_REG_EDX, X.UC_X86_REG_ECX)
            for i in range(min(h.slots, 3)):
                a[i] = self._reg(regs[i])
            site = self.vread32(esp)
            if h.slots >= 4:
                a[3] = self.vread32(esp + 4)
        pending = self.rom.completes_late[h.id]
        rec = struct.pack(
            "<HHIIIIIIIII",
            0 if pending else R.record_code(h),
            self._reg(X.UC_X86_REG_CS),
            *a,
            0,
            0,
            site,
            self._reg(X.UC_X86_REG_EFLAGS),
            self._now() & 0xFFFFFFFF,  # as the ROM's reserving rdtsc, about to run, stamps it
        )
        if pending:
            self.buf_pending.append((len(self.buf) // R.RECORD_SIZE, h))
        self.buf += rec

    def _on_result(self, uc: Uc, address: int, size: int, _ud: Any) -> None:
        idx, h = self.buf_pending.pop()
        off = idx * R.RECORD_SIZE
        struct.pack_into("<H", self.buf, off, R.record_code(h))
        if h.result_slots:
            struct.pack_into(
                "<II",
                self.buf,
                off + 20,
                self._reg(X.UC_X86_REG_EAX),
                self._reg(X.UC_X86_REG_EDX) if h.result_slots == 2 else 0,
            )

    # --- MMIO ---------------------------------------------------------------------------

    def _mmio_reader(self, base: int, read: Callable[[int, int], int]):
        def cb(uc: Uc, offset: int, size: int, _ud: Any) -> int:
            self._catch_up()
            value = read(offset, size)
            self._emit("mmio_read", base + offset, size, value)
            self._sync_pending()
            return value

        return cb

    def _mmio_writer(self, base: int, write: Callable[[int, int, int], None]):
        def cb(uc: Uc, offset: int, size: int, value: int, _ud: Any) -> None:
            self._catch_up()
            self._emit("mmio_write", base + offset, size, value)
            write(offset, size, value)
            self._sync_pending()
            # a device may have been armed: end the quantum at its deadline
            self._deadline = self._next_deadline()
            if self._deadline is not None:
                self.clock.end_at(self._deadline)

        return cb

    def _sync_pending(self) -> None:
        pending = self.lapic.pending_vector() is not None
        if pending != self._pending:
            self._pending = pending
            self._data32(R.D_PENDING, int(pending))

    def _on_unmapped(
        self, uc: Uc, access: int, address: int, size: int, value: int, _ud: Any
    ) -> bool:
        if R.RING + R.RING_SIZE <= address < R.RING + R.RING_SIZE + 0x1000:
            self._stop(Stop("ring-overflow", "the ROM's ring buffer filled within one quantum"))
            return False
        self._stop(
            Stop(
                "guest-fault",
                f"access to {address:#x}, outside guest RAM and devices, at EIP "
                f"{self._reg(X.UC_X86_REG_EIP):#x}",
            )
        )
        return False

    def interrupt(self, reason: str) -> None:
        """End the run at the next instruction boundary, ``interrupted`` (from a signal
        handler: it only sets the stop and asks unicorn to stop)."""
        self._stop(Stop("interrupted", reason))

    def _stop(self, stop: Stop) -> None:
        if self.stop is None:
            self.stop = stop
        self.uc.emu_stop()

    # --- exceptions, software interrupts and hypercalls ---------------------------------

    def _on_interrupt(self, uc: Uc, intno: int, _ud: Any) -> None:
        eip = self._reg(X.UC_X86_REG_EIP)
        trap = self.rom.traps.get(eip) if intno == 0x82 else None
        if trap is not None:
            self._on_trap(trap[0], trap[1], eip)
            return
        if intno >= 32 or self._is_int_insn(eip, intno):
            self._software_interrupt(intno, eip)
            return
        self._exception(intno, eip)

    def _is_int_insn(self, eip: int, vector: int) -> bool:
        try:
            before = self.vread(eip - 2, 2)
        except Stop:
            return False
        return before == bytes([0xCD, vector]) or (vector == 3 and before[1] == 0xCC)

    def _software_interrupt(self, vector: int, eip: int) -> None:
        cs = self._reg(X.UC_X86_REG_CS)
        eflags = self._reg(X.UC_X86_REG_EFLAGS)
        self._emit("softint", vector, site=eip, cs=cs, eflags=eflags)
        gate = self._idt_gate(vector)
        if gate is not None and (cs & 3) > gate[3]:
            self._exception(13, eip - 2, error=vector * 8 + 2)
            return
        self._deliver(vector, return_eip=eip, gate=gate, cs=cs, eflags=eflags)

    def _exception(self, vector: int, eip: int, error: int | None = None) -> None:
        cr2 = 0
        if vector == 14:
            cr2 = self._reg(X.UC_X86_REG_CR2)
            self._data32(R.D_CR2, cr2)
            error = self._page_fault_error(cr2, eip)
        elif error is None:
            error = 0
        self._emit("exception", vector, error, cr2, site=eip)
        self._clear_old_exception()
        if vector == 8:
            raise Stop("triple-fault", f"double fault at EIP {eip:#x}")
        self._deliver(vector, error=error if vector in ERROR_CODE_VECTORS else None, return_eip=eip)

    def _clear_old_exception(self, *, only_if_set: bool = False) -> None:
        """Tell unicorn's CPU that the exception it raised last was delivered.

        Unicorn delivers no exception itself, so its CPU never learns the previous one was
        handled and would turn the next fault into a double fault.  An exception raised by
        the instruction at which a quantum's count runs out is dropped by unicorn (the
        instruction faults again when the next quantum starts) and leaves the same state
        behind, so the run loop checks after every quantum.
        """
        ctx = self._ctx
        self.uc.context_update(ctx)
        where = ctx.context.value + self._old_exception_off
        if only_if_set and ctypes.string_at(where, 4) == b"\xff\xff\xff\xff":
            return
        ctypes.memmove(where, b"\xff\xff\xff\xff", 4)
        self.uc.context_restore(ctx)

    def _page_fault_error(self, cr2: int, eip: int) -> int:
        user = (self._reg(X.UC_X86_REG_CS) & 3) == 3
        present = self.translate(cr2, user=user) is not None
        err = (1 if present else 0) | (4 if user else 0)
        if self._writes(eip, cr2):
            err |= 2
        return err

    def _writes(self, eip: int, addr: int) -> bool:
        """Whether the instruction at eip writes memory (decoded as the CPU would report)."""
        esp = self._reg(X.UC_X86_REG_ESP)
        if esp - 64 <= addr < esp:
            return True  # a push, call or interrupt frame
        try:
            code = self.vread(eip, 4)
        except Stop:
            return False
        i = 0
        while i < 3 and code[i] in (
            0x66,
            0x67,
            0xF2,
            0xF3,
            0xF0,
            0x26,
            0x2E,
            0x36,
            0x3E,
            0x64,
            0x65,
        ):
            i += 1
        op = code[i]
        reg = (code[i + 1] >> 3) & 7 if i + 1 < len(code) else 0
        if op == 0x0F and i + 1 < len(code):
            op2 = code[i + 1]
            return op2 in (0xB0, 0xB1, 0xAB, 0xB3, 0xBB, 0xBA, 0xC0, 0xC1) or 0x90 <= op2 <= 0x9F
        if op in (
            0x88,
            0x89,
            0xC6,
            0xC7,
            0x86,
            0x87,
            0xA2,
            0xA3,
            0xAA,
            0xAB,
            0xA4,
            0xA5,
            0xD0,
            0xD1,
            0xD2,
            0xD3,
            0xC0,
            0xC1,
        ):
            return True
        if op < 0x40 and op & 7 in (0, 1) and op not in (0x38, 0x39):
            return True
        if op in (0x80, 0x81, 0x83):
            return reg != 7
        if op in (0xFE, 0xFF):
            return reg in (0, 1)
        if op in (0xF6, 0xF7):
            return reg in (2, 3)
        return False

    def _idt_gate(self, vector: int) -> tuple[int, int, bool, int] | None:
        """(selector, offset, is_trap_gate, dpl) of a present IDT gate, or None."""
        if vector * 8 + 7 > self.idt_limit or not self.idt_base:
            return None
        va = self.idt_base + vector * 8
        pa = self.translate(va) if va & 7 == 0 else None
        if pa is not None and pa + 8 <= self.mem_bytes:
            lo, hi = int(self.ram.u32[pa >> 2]), int(self.ram.u32[(pa >> 2) + 1])
        else:
            lo, hi = _U32X2.unpack(self.vread(va, 8))
        if not hi & 0x8000:
            return None
        kind = (hi >> 8) & 0x1F
        if kind not in (0xE, 0xF):
            return None
        return (lo >> 16) & 0xFFFF, (hi & 0xFFFF0000) | (lo & 0xFFFF), kind == 0xF, (hi >> 13) & 3

    def _deliver(
        self,
        vector: int,
        *,
        error: int | None = None,
        return_eip: int,
        gate: tuple[int, int, bool, int] | None = None,
        cs: int | None = None,
        eflags: int | None = None,
    ) -> None:
        """Enter the IDT gate of ``vector``; the caller may pass the gate and the CS and
        EFLAGS it already read (unchanged since)."""
        if gate is None:
            gate = self._idt_gate(vector)
        if gate is None:
            status = "guest-fault" if vector < 32 else "guest-fault"
            raise Stop(
                status,
                f"vector {vector:#x} at EIP {return_eip:#x} has no IDT gate"
                + ("" if self.idt_base else " (no IDT loaded)"),
            )
        selector, handler, trap_gate, _dpl = gate
        if cs is None:
            cs = self._reg(X.UC_X86_REG_CS)
        if eflags is None:
            eflags = self._reg(X.UC_X86_REG_EFLAGS)
        if cs & 3 == 3:
            # CPL 3 -> 1: let the CPU switch stacks through the TSS by taking the call gate
            # from the user-executable trampoline; the ROM's gate stub turns what the gate
            # pushed into the interrupt frame and jumps to the handler, with what it needs
            # from the data page.  The user's stack is never touched, as with a real gate.
            # The handler's EFLAGS are loaded now (the trampoline must not single-step).
            _GATE_FIELDS.pack_into(
                self.hv.buf,
                R.DATA - R.HV_BASE + R.D_GATE_EFLAGS,
                eflags,
                return_eip & 0xFFFFFFFF,
                (error or 0) & 0xFFFFFFFF,
                self.rom.gate_enter if error is None else self.rom.gate_error,
                handler,
                selector,
            )
            self._wreg(X.UC_X86_REG_EFLAGS, _handler_eflags(eflags, trap_gate))
            self._wreg(X.UC_X86_REG_EIP, R.USER_PAGE)
            return
        words = [return_eip, cs, eflags]
        if error is not None:
            words.insert(0, error)
        esp = self._reg(X.UC_X86_REG_ESP) - 4 * len(words)
        if not self.vwrite(esp, struct.pack(f"<{len(words)}I", *words)):
            raise Stop(
                "triple-fault", f"kernel stack {esp:#x} unwritable delivering vector {vector:#x}"
            )
        self._enter_handler(esp, selector, handler, trap_gate, eflags)

    def _enter_handler(
        self, esp: int, selector: int, handler: int, trap_gate: bool, eflags: int
    ) -> None:
        self._wreg(X.UC_X86_REG_ESP, esp)
        if selector != self._reg(X.UC_X86_REG_CS):
            self._wreg(X.UC_X86_REG_CS, selector)
        self._wreg(X.UC_X86_REG_EFLAGS, _handler_eflags(eflags, trap_gate))
        self._wreg(X.UC_X86_REG_EIP, handler)

    def _deliver_external(self) -> None:
        """Deliver the highest-priority deliverable interrupt, if the guest can take it."""
        if self.lapic.pending_vector() is None:
            return
        eflags = self._reg(X.UC_X86_REG_EFLAGS)
        if not eflags & EFLAGS_IF:
            return
        eip = self._reg(X.UC_X86_REG_EIP)
        if not self.halted and self._mid_entry(eip):
            return
        self._interrupt_now(self.resume_eip if self.halted else eip)

    def _interrupt_now(self, return_eip: int) -> None:
        vector = self.lapic.acknowledge()
        source, raised = self.lapic.raised_info(vector)
        self._emit("interrupt", vector, source, raised & 0xFFFFFFFF, raised >> 32, site=return_eip)
        self.halted = False
        self._deliver(vector, return_eip=return_eip)
        self._sync_pending()

    # --- hypercalls: what a CPL 1 kernel cannot do itself ---------------------------------

    def _on_trap(self, action: str, hid: int, eip: int) -> None:
        if action == R.TRAP_HOOK:
            self.hook_calls_seen = True
            self._hypercall(HOOKS[hid], eip)
        elif action == R.TRAP_UNMASK:
            eflags = self._reg(X.UC_X86_REG_EFLAGS)
            if eflags & EFLAGS_IF and self.lapic.pending_vector() is not None:
                self._interrupt_now(eip)
        elif action == R.TRAP_SERVICE:
            self._service()

    def _hypercall(self, h: Hook, eip: int) -> None:
        uc = self.uc
        a0 = self._reg(X.UC_X86_REG_EAX)
        name = h.name
        result: int | None = None
        if h.rom == "unsupported":
            raise Stop(
                "guest-fault",
                f"the guest called {name}, which this non-PAE, "
                "single-CPU, int-$0x80 machine does not provide",
            )
        if name == "write_cr0":
            value = a0 | 1
            self._wreg(X.UC_X86_REG_CR0, value)
            self._data32(R.D_CR0, value)
            self._paging = bool(self._reg(X.UC_X86_REG_CR0) & 0x80000000)
        elif name == "write_cr2":
            self._data32(R.D_CR2, a0)
        elif name == "write_cr3":
            self._tlb_sample()
            self._wreg(X.UC_X86_REG_CR3, a0)
            self._data32(R.D_CR3, a0)
            self.cr3 = a0
        elif name == "write_cr4":
            self._wreg(X.UC_X86_REG_CR4, a0)
            self._data32(R.D_CR4, a0)
        elif name == "clts":
            value = self._reg(X.UC_X86_REG_CR0) & ~8
            self._wreg(X.UC_X86_REG_CR0, value)
            self._data32(R.D_CR0, value)
            self._paging = bool(self._reg(X.UC_X86_REG_CR0) & 0x80000000)
        elif name == "get_debugreg":
            result = self.debugregs[a0 & 7]
        elif name == "set_debugreg":
            self.debugregs[a0 & 7] = self._reg(X.UC_X86_REG_EDX)
        elif name in ("safe_halt", "halt"):
            if not self._reg(X.UC_X86_REG_EFLAGS) & EFLAGS_IF:
                raise Stop("halted-forever", f"{name} with interrupts masked at {eip:#x}")
            self.halted = True
            self.resume_eip = eip
            self._wreg(X.UC_X86_REG_EIP, self.rom.idle)
            self.clock.end_at(self._now())  # the boundary skips the idle time
        elif name == "read_msr":
            a1 = self._reg(X.UC_X86_REG_EDX)
            msr = self._now() if a0 == 0x10 else self.msrs.get(a0, MSR_VALUES.get(a0))
            ok = msr is not None
            if a1 and not self.vwrite(a1, struct.pack("<i", 0 if ok else -14)):
                raise Stop("guest-fault", f"read_msr: err pointer {a1:#x} unmapped")
            result = msr or 0
        elif name == "write_msr":
            self.msrs[a0] = self._reg(X.UC_X86_REG_EDX) | (self._reg(X.UC_X86_REG_ECX) << 32)
            result = 0
        elif name in ("read_tsc", "get_scheduled_cycles"):
            result = self._now()
        elif name == "read_pmc":
            result = 0
        elif name == "load_gdt":
            limit, base = struct.unpack("<HI", self.vread(a0, 6))
            if limit < (R.RESERVED_GDT + 4) * 8 - 1:
                raise Stop(
                    "guest-fault",
                    f"GDT of limit {limit:#x} leaves no room for the "
                    f"hypervisor's entries {R.RESERVED_GDT}..{R.RESERVED_GDT + 3}",
                )
            if not self.vwrite(base + R.RESERVED_GDT * 8, reserved_gdt_entries(self.rom.gate_stub)):
                raise Stop("guest-fault", f"GDT at {base:#x} is not mapped writable")
            uc.reg_write(X.UC_X86_REG_GDTR, (0, base, limit, 0))
        elif name == "load_idt":
            limit, base = struct.unpack("<HI", self.vread(a0, 6))
            self.idt_base, self.idt_limit = base, limit
            uc.mem_write(R.DATA + R.D_IDT, struct.pack("<HI", limit, base))
        elif name == "load_esp0":
            esp0 = self.vread32(self._reg(X.UC_X86_REG_EDX) + 24)
            _U32X2.pack_into(
                self.hv.buf, R.TSS - R.HV_BASE + 0x0C, esp0, self._reg(X.UC_X86_REG_SS) & 0xFFFF
            )
        elif name == "set_iopl_mask":
            eflags = (self._reg(X.UC_X86_REG_EFLAGS) & ~0x3000) | (a0 & 0x3000)
            self._wreg(X.UC_X86_REG_EFLAGS, eflags)
        elif name in ("flush_tlb_user", "flush_tlb_kernel", "flush_tlb_single"):
            if name != "flush_tlb_single":  # invlpg drops one entry: at most one refill
                self._tlb_sample()
            uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        # load_tr_desc, set_ldt, wbinvd, io_delay: nothing to emulate on this machine
        if result is not None:
            self._wreg(X.UC_X86_REG_EAX, result & 0xFFFFFFFF)
            self._wreg(X.UC_X86_REG_EDX, (result >> 32) & 0xFFFFFFFF)

    def _service(self) -> None:
        code = self._reg(X.UC_X86_REG_EAX)
        a = self._reg(X.UC_X86_REG_EDX)
        b = self._reg(X.UC_X86_REG_ECX)
        self._emit("guest", code, a, b)
        if code == 3:  # console
            self.console.append(self.vread(a, min(b, 4096)).decode("latin-1"))
            return
        if code == 4:  # phase marker: the guest event above is all it leaves
            return
        if code == 0:
            raise Stop("complete", "the guest finished its workload")
        what = self._cstring(a)
        kind = "check failed" if code == 1 else "panic"
        raise Stop("guest-check", f"guest {kind}: {what} ({b:#x})")

    def _cstring(self, va: int) -> str:
        try:
            raw = self.vread(va, 128)
        except Stop:
            return f"<string at {va:#x} unreadable>"
        return raw.split(b"\0", 1)[0].decode("latin-1")

    # --- the run loop ---------------------------------------------------------------------

    def _advance_devices(self, vtime: int | None = None) -> None:
        t = self.vtime if vtime is None else vtime
        for dev in (self.lapic, self.timer, self.device):
            dev.advance(t)
        self._sync_pending()
        self._deadline = self._next_deadline()

    def _catch_up(self) -> None:
        """Bring the devices to the exact vtime of the instruction accessing one."""
        now = self._now()
        if self.lapic.now != now:
            self._advance_devices(now)

    def _next_deadline(self) -> int | None:
        ds = [
            d
            for d in (
                self.lapic.next_deadline(),
                self.timer.next_deadline(),
                self.device.next_deadline(),
            )
            if d is not None
        ]
        return min(ds) if ds else None

    def _boundary(self) -> None:
        self._marker()
        self._check_runaway()
        # devices change only at their deadlines or when the guest touches them (which
        # clears the cached deadline), so most boundaries have nothing to advance
        if self._deadline is not None and self._deadline <= self.vtime:
            self._advance_devices()
        if self.halted and not self._pending:
            nxt = self._next_deadline()
            if nxt is None:
                raise Stop("halted-forever", "halted with no interrupt source armed")
            if nxt > self.vtime:
                skip = nxt - self.vtime
                self._emit("idle", skip & 0xFFFFFFFF, skip >> 32, site=self.resume_eip)
                self.vtime = nxt
                self._marker()
                self._advance_devices()
        if self._pending:
            self._deliver_external()
        # a deliverable interrupt held back by a ROM entry goes in right after it
        self._step = (
            self._pending
            and not self.halted
            and bool(self._reg(X.UC_X86_REG_EFLAGS) & EFLAGS_IF)
            and self._mid_entry(self._reg(X.UC_X86_REG_EIP))
        )

    def _check_runaway(self) -> None:
        """Stop a guest that has run off into zeroed memory (``00 00`` decodes as an add,
        so it would crawl on, ~100 k instructions a second, to the budget's end)."""
        if self.halted:
            return
        try:
            code = self.vread(self._reg(X.UC_X86_REG_EIP), 16)
        except Stop:
            return
        if not any(code):
            raise Stop(
                "guest-fault",
                f"executing zeroed memory at EIP {self._reg(X.UC_X86_REG_EIP):#x} "
                "(the guest ran away)",
            )

    def checkpoint(self, final: bool = False) -> bool:
        """Record LAPIC, IOAPIC, CPU and MMU state; False (deferred) mid-ROM-entry."""
        eip = self._reg(X.UC_X86_REG_EIP)
        if not final and self._mid_entry(eip):
            return False
        if not self.drain(force=True) and not final:
            return False
        seq = self.drained_events - 1
        if seq < 0:
            return True  # nothing happened yet that a checkpoint could follow
        rows: list[tuple[int, int, str, str, int]] = []
        for comp, regs in (("lapic", self.lapic.registers()), ("ioapic", self.ioapic.registers())):
            rows += [(seq, self.vtime, comp, k, int(v)) for k, v in sorted(regs.items())]
        cpu = {
            "cr0": self._reg(X.UC_X86_REG_CR0),
            "cr3": self._reg(X.UC_X86_REG_CR3),
            "cr4": self._reg(X.UC_X86_REG_CR4),
            "eflags_if": (self._reg(X.UC_X86_REG_EFLAGS) >> 9) & 1,
            "cpl": self._reg(X.UC_X86_REG_CS) & 3,
        }
        rows += [(seq, self.vtime, "cpu", k, v) for k, v in sorted(cpu.items())]
        rows.append((seq, self.vtime, "mmu", "digest", self._mmu_digest()))
        self.writer.add_state(rows)
        return True

    def _tlb_sample(self) -> None:
        """A ``tlb`` row: the translations the CPU walked since the last sample
        (:meth:`_tlb_walked`)."""
        got = self._tlb_walked() if self._paging else None
        if got is not None:
            user, kernel, glob = got
            self.tlb_rows.append(
                (max(self._events_so_far() - 1, 0), self._now(), user, kernel, glob)
            )

    def _tlb_walked(self) -> tuple[int, int, int] | None:
        """Count the translations the CPU walked since the last sample and start anew:
        (user, kernel, global) pages; None when the loaded directory is outside RAM.

        The CPU sets a PTE's Accessed bit when it walks to it to fill the TLB (and
        never clears it), so after a full flush every page touched again sets it
        again: the bits set between two flushes are that interval's TLB refills,
        counted once per page.  A 4 MiB page is one entry.  The bits are cleared, as
        an OS's page-aging scan would; the MMU digest and the hooks' arguments do not
        include them -- but a guest may read them (a page-aging scan of its own), so
        clearing them is part of what the guest runs on.
        """
        pd = self.cr3 >> 12
        if pd >= len(self._pages):
            return None
        # the hypervisor's region (the ROM and the recorder's ring) is the instrument's,
        # not the guest's working set: its pages are not counted
        guest_pd = self._pages[pd, : R.HV_BASE >> 22]
        # which entries name tables and which map 4 MiB pages changes only when the
        # directory does (the CPU's Accessed bits aside): found again only then
        key = (guest_pd & np.uint32(~0x20 & 0xFFFFFFFF)).tobytes()
        if self._tlb_layout[0] != pd or self._tlb_layout[1] != key:
            present_large = guest_pd & 0x81  # P and PS
            tables = guest_pd[present_large == 1] >> 12
            tables = tables[tables < self.mem_bytes >> 12]
            self._tlb_layout = (pd, key, tables, np.flatnonzero(present_large == 0x81))
        tables, big_at = self._tlb_layout[2], self._tlb_layout[3]
        big = guest_pd[big_at]
        user = kernel = glob = 0
        if len(tables):
            pages = self._pages
            flat = pages[tables].reshape(-1)  # the tables' entries, one table after another
            at = np.flatnonzero((flat & 0x21) == 0x21)
            if len(at):
                walked = flat[at]
                # U (bit 2) and G (bit 8): 0 kernel, 1 and 3 user, 2 global
                n = np.bincount(_TLB_CLASS[(walked >> 2) & 0x41], minlength=4)
                user, kernel, glob = int(n[1] + n[3]), int(n[0]), int(n[2])
                # clear the walked entries' Accessed bits alone (a table named twice is
                # counted and cleared twice, alike)
                pages[tables[at >> 10], at & 1023] = walked & np.uint32(~0x20 & 0xFFFFFFFF)
        hit_big = (big & 0x20) != 0
        if hit_big.any():
            walked = big[hit_big]
            user += int(np.count_nonzero(walked & 4))
            g = int(np.count_nonzero((walked & 0x104) == 0x100))
            glob += g
            kernel += len(walked) - int(np.count_nonzero(walked & 4)) - g
            guest_pd[(guest_pd & 0xA1) == 0xA1] &= np.uint32(~0x20 & 0xFFFFFFFF)
        return user, kernel, glob

    def _mmu_digest(self) -> int:
        if not self._reg(X.UC_X86_REG_CR0) & 0x80000000:
            return mapping_digest([])
        cr3 = self._reg(X.UC_X86_REG_CR3) & 0xFFFFF000

        def table(pfn: int) -> bytes | None:
            pa = pfn << 12
            return self.ram.buf[pa : pa + 4096] if pa + 4096 <= self.mem_bytes else None

        pd = table(cr3 >> 12)
        if pd is None:
            return mapping_digest([])
        pairs = walk_page_directory(pd, table)
        vpn = pairs[:, 0]
        if len(vpn) and bool(np.all(vpn[1:] > vpn[:-1])):
            # the walk lists pages in ascending order, each once, so mapping_digest's sort
            # would leave the rows as they are: hash them as mapping_digest would
            return int.from_bytes(
                hashlib.sha256(pairs.astype("<u4").tobytes()).digest()[:8], "little"
            )
        return mapping_digest(pairs)

    def _quantum(self) -> int:
        """Instructions to run next: a quantum, cut at the budget and the next device
        deadline; one while an interrupt waits on a ROM entry."""
        count = min(self.cfg.quantum, self.cfg.budget - self.instructions)
        if self._deadline == 0:
            self._deadline = self._next_deadline()
        if self._deadline is not None and self._deadline > self.vtime:
            count = min(count, self._deadline - self.vtime)
        return min(count, 1) if self._step else count

    def close(self) -> None:
        """Release the emulator now, before the memory it maps (idempotent).  Left to the
        garbage collector, the engine may be closed after its buffers -- or in a process
        forked later, which collects the parent's garbage as its own."""
        uc = self.__dict__.pop("uc", None)
        if uc is not None:
            # unicorn's own finalizer (uc_close), run once; the binding is pinned to 2.1
            finalizer = getattr(uc, "_Uc__finalizer", None)
            if finalizer is not None:
                finalizer()

    def run(self) -> RunResult:
        """Run the guest to its end (or the budget); write every event; say how it ended."""
        cfg = self.cfg
        uc = self.uc
        self._marker()
        quanta = 0
        due = False
        stop: Stop | None = None
        try:
            while stop is None:
                count = self._quantum()
                if count <= 0:
                    stop = Stop("budget", f"instruction budget of {cfg.budget} reached")
                    break
                self.clock.start(self.vtime)
                try:
                    uc.emu_start(self._reg(X.UC_X86_REG_EIP), UNTIL, count=count)
                except UcError as e:
                    stop = self.stop or Stop(
                        "guest-fault",
                        f"CPU error ({e}) at EIP {self._reg(X.UC_X86_REG_EIP):#x}",
                    )
                    break
                finally:
                    # the quantum's instructions count however it ended (a Stop a callback
                    # raised comes out of emu_start too)
                    ran = self.clock.stop(count)
                    self.instructions += ran
                    self.vtime += ran
                if self.stop is not None:
                    stop = self.stop
                    break
                self._clear_old_exception(only_if_set=True)
                quanta += 1
                self._boundary()
                due = due or quanta % cfg.checkpoint_every == 0
                if due and self.checkpoint():
                    due = False
                else:
                    self.drain()
                if self.on_progress is not None and quanta % 64 == 0:
                    self.on_progress(self.instructions, self.drained_events)
        except Stop as s:
            stop = s
        except KeyboardInterrupt:
            stop = Stop("interrupted", "interrupted by the user (Ctrl-C)")
        assert stop is not None
        complete = self.drain(force=True)
        self.checkpoint(final=True)
        self.flush_batch()
        self.writer.wait()
        self._tlb_sample()
        self.writer.add_inputs(self.inputs)
        self.writer.add_tlb(self.tlb_rows)
        extra = {} if complete else {"incomplete_records": "a hook call was cut short"}
        return RunResult(
            stop.status,
            stop.reason,
            self.vtime,
            self.instructions,
            int(self.writer.kind_counts[0]),
            "".join(self.console),
            extra,
        )


def _old_exception_offset() -> int:
    """Where unicorn's saved CPU context keeps the 'exception being delivered' field.

    Found by experiment once per process: a fault raised in a scratch CPU changes it from
    -1 to the vector, and no other word of the context changes that way.
    """
    global _OLD_EXCEPTION_OFF
    if _OLD_EXCEPTION_OFF is not None:
        return _OLD_EXCEPTION_OFF
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x2000)
    uc.mem_write(0x1000, bytes([0x8E, 0xD8]))  # mov %eax, %ds: selector beyond the GDT, #GP
    uc.reg_write(X.UC_X86_REG_EAX, 0x1234)
    uc.reg_write(X.UC_X86_REG_CR0, uc.reg_read(X.UC_X86_REG_CR0) | 1)
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0, 0xF, 0))
    before = bytes(uc.context_save())
    seen: list[bytes] = []

    def hook(u: Uc, intno: int, _ud: Any) -> None:
        seen.append(bytes(u.context_save()))
        u.emu_stop()

    uc.hook_add(UC_HOOK_INTR, hook)
    with contextlib.suppress(UcError):
        uc.emu_start(0x1000, 0x1002, count=1)
    if not seen:
        raise RuntimeError("cannot locate unicorn's exception state (no fault was raised)")
    after = seen[0]
    want = (13).to_bytes(4, "little")
    offs = [
        i
        for i in range(0, len(before) - 3, 4)
        if before[i : i + 4] == b"\xff\xff\xff\xff" and after[i : i + 4] == want
    ]
    if len(offs) != 1:
        raise RuntimeError(f"cannot locate unicorn's exception state ({len(offs)} candidates)")
    _OLD_EXCEPTION_OFF = offs[0]
    return offs[0]


_OLD_EXCEPTION_OFF: int | None = None
