"""Exact virtual time: where in a quantum the CPU is, to the instruction.

Unicorn runs a quantum with ``emu_start(count=n)`` and counts the instructions it
executes in its engine structure (``emu_counter``, compared against ``emu_count``
before each instruction).  The binding exposes neither, so :func:`counter_offset`
finds the pair once per process by experiment, and :class:`InstructionClock` reads
the counter in place:

* while a callback runs for an instruction, ``counter - 1`` instructions of the
  quantum have retired before it, so the event's vtime is ``base + counter - 1``;
* writing ``emu_count`` ends the running quantum early, at an exact instruction
  (a device armed mid-quantum, a halt);
* after ``emu_start`` returns, ``min(counter, emu_count)`` instructions executed.

Hook calls are logged by guest code in the ROM, with no recorder code in the
path, so each ROM entry reserves its ring record with ``rdtsc`` and the recorder
hooks that instruction (in the ROM only): the hook takes the record's slot from
the ring head, advances the head, writes the slot's address to the data page for
the entry to fill and the entry's exact vtime into the slot, and skips the
``rdtsc`` itself (no register or flag changes).  Reserving and stamping in one
instruction keeps the stream's order and its vtimes in step: an event the
recorder logs between quanta can never fall between a record's place in the
ring and its time.  On x86-64 Linux the hook is 57 bytes of native code (below,
with its source), so a hook call costs one helper call and no Python; elsewhere
a Python callback does the same.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import struct
import sys
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_32, Uc
from unicorn import x86_const as X
from unicorn.unicorn_py3.unicorn import uclib

# int (*)(uc_engine *uc /* rdi */, struct _Stamp *s /* rsi */), the fields as in _Stamp:
#     mov rax, [rsi]          ; offset of emu_counter in the engine structure
#     mov rax, [rdi+rax]      ; emu_counter: this instruction and those before it
#     add rax, [rsi+8]        ; + vtime at the quantum's start
#     dec rax                 ; = instructions retired before this one
#     mov rdx, [rsi+16]
#     mov ecx, [rdx]          ; the slot: the ring head (a guest address)
#     mov r8, [rsi+24]
#     mov [r8], ecx           ; tell the entry where its record is
#     lea r9d, [rcx+40]
#     mov [rdx], r9d          ; advance the head by one record
#     sub rcx, [rsi+32]       ; offset into the ring (huge if below it)
#     cmp rcx, [rsi+40]
#     ja 1f                   ; not inside the ring: the entry's own write faults
#     add rcx, [rsi+48]
#     mov [rcx+36], eax       ; the record's vtime_lo
# 1:  mov eax, 1              ; skip the rdtsc
#     ret
_STAMP_X86_64 = bytes.fromhex(
    "488b06488b04074803460848ffc8488b56108b0a4c8b4618418908448d492844890a"
    "482b4e20483b4e28770748034e30894124b801000000c3"
)
RECORD_SIZE = 40
_INSN_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
VTIME_LO = 36  # offset of vtime_lo in a record (recorder.rom.RECORD_FIELDS)

_COUNTER_OFF: int | None = None


def counter_offset() -> int:
    """Offset of ``emu_counter`` (followed by ``emu_count``) in unicorn's engine structure.

    Found by experiment: after ``emu_start(count=n)`` over straight-line code the
    pair reads ``(n + 1, n)``; two different ``n`` leave exactly one candidate.
    """
    global _COUNTER_OFF
    if _COUNTER_OFF is not None:
        return _COUNTER_OFF
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x4000)
    uc.mem_write(0x1000, b"\x90" * 0x1000)
    handle = _handle(uc)
    found: set[int] | None = None
    for n in (37, 101):
        uc.emu_start(0x1000, 0x2000, count=n)
        raw = ctypes.string_at(handle, 8192)
        offs = {
            i for i in range(0, len(raw) - 15, 8) if struct.unpack_from("<QQ", raw, i) == (n + 1, n)
        }
        found = offs if found is None else found & offs
    if not found or len(found) != 1:
        raise RuntimeError(
            f"cannot locate unicorn's instruction counter ({len(found or ())} candidates)"
        )
    _COUNTER_OFF = found.pop()
    return _COUNTER_OFF


def _handle(uc: Uc) -> int:
    value = uc._uch.value  # noqa: SLF001 -- the engine pointer the binding keeps
    if not value:
        raise RuntimeError("unicorn engine is closed")
    return int(value)


class _Stamp(ctypes.Structure):
    _fields_ = [
        ("off", ctypes.c_uint64),  # of emu_counter in the engine structure
        ("base", ctypes.c_uint64),  # vtime at the quantum's start
        ("head", ctypes.c_uint64),  # host address of the ring head (u32 guest address)
        ("slot", ctypes.c_uint64),  # host address of the word the entry reads its slot from
        ("ring", ctypes.c_uint64),  # guest address of the ring
        ("last", ctypes.c_uint64),  # ring size less one record: the last slot's offset
        ("host", ctypes.c_uint64),  # host address of the ring
    ]


@dataclass(frozen=True)
class Ring:
    """Where the ROM's ring and its bookkeeping words are, for the reserving stamp."""

    head: int
    """Host address of the ring head (a u32 guest address)."""
    slot: int
    """Host address of the u32 the entry reads its record's guest address from."""
    guest: int
    """Guest address of the ring."""
    size: int
    """Ring size in bytes."""
    host: int
    """Host address of the ring."""


def native_stamp_supported() -> bool:
    """Whether this host runs the native stamp (x86-64 Linux)."""
    return sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


class _NativeCode:
    """The stamp routine in an executable page (mapped writable, then read/execute)."""

    _page: mmap.mmap | None = None
    _addr = 0

    @classmethod
    def address(cls) -> int:
        if cls._page is None:
            page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            page.write(_STAMP_X86_64)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            if libc.mprotect(addr, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
                raise OSError(ctypes.get_errno(), "mprotect of the stamp routine failed")
            cls._page, cls._addr = page, addr
        return cls._addr


class InstructionClock:
    """The exact vtime of the instruction the CPU is at, for one machine's engine, and
    the ROM's reserving stamp at ``rdtsc`` between guest addresses ``begin``..``end``."""

    def __init__(
        self, uc: Uc, ring: Ring, begin: int, end: int, native: bool | None = None
    ) -> None:
        off = counter_offset()
        handle = _handle(uc)
        self._counter = ctypes.c_size_t.from_address(handle + off)
        self._limit = ctypes.c_size_t.from_address(handle + off + 8)
        self.base = 0
        """vtime at the start of the running quantum."""
        self.running = False
        self._ring = ring
        self._stamp = _Stamp(
            off, 0, ring.head, ring.slot, ring.guest, ring.size - RECORD_SIZE, ring.host
        )
        self._head = ctypes.c_uint32.from_address(ring.head)
        self._slot = ctypes.c_uint32.from_address(ring.slot)
        self.native = native_stamp_supported() if native is None else native
        if self.native:
            fn = ctypes.c_void_p(_NativeCode.address())
        else:  # the binding offers no rdtsc hook: register the callback with the C API
            self._callback = _INSN_CB(lambda _uc, _ud: int(self._python_stamp()))
            fn = ctypes.cast(self._callback, ctypes.c_void_p)
        h = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            uc._uch,  # noqa: SLF001
            ctypes.byref(h),
            UC_HOOK_INSN,
            fn,
            ctypes.c_void_p(ctypes.addressof(self._stamp)),
            ctypes.c_uint64(begin),
            ctypes.c_uint64(end),
            ctypes.c_int(X.UC_X86_INS_RDTSC),
        )
        if status != 0:
            raise RuntimeError(f"cannot hook rdtsc (unicorn error {status})")

    def _python_stamp(self) -> bool:
        """What the native routine does, in Python."""
        slot = self._head.value
        self._slot.value = slot
        self._head.value = (slot + RECORD_SIZE) & 0xFFFFFFFF
        off = slot - self._ring.guest
        if 0 <= off <= self._ring.size - RECORD_SIZE:
            ctypes.c_uint32.from_address(self._ring.host + off + VTIME_LO).value = (
                self.now() & 0xFFFFFFFF
            )
        return True  # skip the rdtsc

    def start(self, vtime: int) -> None:
        """A quantum starts at ``vtime``."""
        self.base = vtime
        self._stamp.base = vtime
        self.running = True

    def stop(self, count: int) -> int:
        """The quantum (started with ``count``) returned: how many instructions it ran."""
        self.running = False
        return min(self._counter.value, self._limit.value, count)

    def now(self) -> int:
        """vtime of the current instruction: those retired before it (quantum start
        between quanta)."""
        if not self.running:
            return self.base
        return self.base + self._counter.value - 1

    def end_at(self, vtime: int) -> None:
        """End the running quantum once the instruction count reaches ``vtime`` (after the
        current instruction at the earliest); no-op if it already ends sooner."""
        if not self.running:
            return
        want = max(vtime - self.base, self._counter.value)
        if want < self._limit.value:
            self._limit.value = want
