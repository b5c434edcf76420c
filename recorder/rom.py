"""The hypervisor ROM: an entry per ``paravirt_ops`` hook, in the manner of VMware's VMI ROM.

The ROM sits in the hypervisor's region at the top of the guest's address space
(like Xen's and lguest's, the guest maps it there 1:1).  It starts with a
header the guest probes for at boot (signature, ABI version, entry count,
where the entry table is, the kernel's RPL, the workload's scale and seed),
then an entry table (one 8-byte slot per hook in struct order, holding a ``jmp``
to the entry's code), then the entries' code.  As VMI's relocation records let a
kernel call the ROM's code directly, the guest follows each slot's ``jmp`` and
puts its target in ``paravirt_ops``, saving a jump per hook call.

Every entry gives native semantics at CPL 1.  What a CPL 1 guest may do itself
(``cli``/``sti``/``popf`` with IOPL 1, PTE stores, APIC MMIO) it does inline;
what only the hypervisor may do (``write_cr3``, TLB flushes, ``load_idt``,
halt, ...) traps to the recorder with ``int $0x82`` (Xen's 32-bit hypercall
vector); control registers are read from shadows the recorder keeps in the
ROM's data page.

Each entry writes a 40-byte record of the call into a ring buffer in guest
memory (reserved in one instruction, so a record is never split), which the
recorder drains in bulk between quanta: no Python per hook call.  The
reference logging path (``--log-path python``) runs the *same* ROM -- so the
guest retires the same instructions and virtual time and interrupt points
agree -- but builds each record from Python code hooks on the instruction that
reserves the ring record and on the tail where an entry that completes its record
after the body (a result-bearing one, or one whose body could fault) does so,
ignoring the ring.

The assembly is generated from the hook catalogue; the assembled images are
committed (``recorder/rom/*.bin`` with ``*.json`` symbol maps) so users need no
toolchain.  ``python -m recorder.rom`` rebuilds them with GNU as.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pvscope.hooks import HOOKS, Hook

ROM_DIR = Path(__file__).parent / "rom"

# --- the hypervisor region: [HV_BASE, 4 GiB), mapped 1:1 by the guest -----------------------
HV_BASE = 0xFFC00000
HV_SIZE = 0x00400000
ROM_BASE = HV_BASE
SIGNATURE = b"PVSCOPE\x00"
ABI_VERSION = 1

# header fields (offsets from ROM_BASE), all u32 unless noted
H_SIGNATURE = 0x00  # 8 bytes
H_ABI = 0x08
H_ENTRY_COUNT = 0x0C
H_ENTRY_TABLE = 0x10  # address of the entry table
H_KERNEL_RPL = 0x14
H_SCALE = 0x18
H_SEED = 0x1C
H_MEM_BYTES = 0x20
H_SERVICE = 0x24  # address of the service entry (guest reports, exit)
H_NAME = 0x28  # address of the backend name string
H_RESERVED_GDT = 0x2C  # first GDT entry the hypervisor reserves (4 entries)
H_USER_PAGE = 0x30  # address of the page the guest must map user-executable
H_DATA = 0x34  # address of the data page
H_RING = 0x38  # ring base
H_RING_SIZE = 0x3C
H_HV_BASE = 0x40  # start of the hypervisor region the guest must map 1:1
NAME_OFF = 0x80

ENTRY_TABLE = ROM_BASE + 0x1000
ENTRY_SIZE = 8
CODE = ROM_BASE + 0x2000

DATA = ROM_BASE + 0x10000  # writable by the guest kernel
D_RING_HEAD = 0x00
D_CR0 = 0x08
D_CR2 = 0x0C
D_CR3 = 0x10
D_CR4 = 0x14
D_PENDING = 0x18
D_WALLCLOCK = 0x1C
D_CPU_KHZ = 0x20
D_IDT = 0x24  # 6 bytes: limit u16, base u32
# a CPL 3 -> 1 entry the recorder has begun (see gate_stub below), u32 each unless noted
D_GATE_EFLAGS = 0x40  # the interrupted EFLAGS, for the frame
D_GATE_EIP = 0x44  # the interrupted EIP, for the frame
D_GATE_ERROR = 0x48  # the error code, pushed when D_GATE_NEXT is gate_error
D_GATE_NEXT = 0x4C  # gate_error or gate_enter
D_GATE_TARGET = 0x50  # 6 bytes: the IDT gate's handler offset u32, selector u16
D_SLOT = 0x58  # the ring record the latest entry reserved, set by its rdtsc (recorder.clock)

TSS = ROM_BASE + 0x11000  # the recorder's hardware TSS (esp1/ss1 set by load_esp0)
USER_PAGE = ROM_BASE + 0x12000  # CPL 3 trampoline into the call gate
RESERVED_GDT = 28  # entries 28..31: TSS, ring-0 code, call gate, ring-1 gate code
RING = ROM_BASE + 0x100000
RING_SIZE = 0x200000  # followed by a guard page the recorder leaves unmapped
RECORD_SIZE = 40
KERNEL_RPL = 1

#: Record layout (little-endian), shared by ROM-written and recorder-written records.
RECORD_FIELDS = (
    ("code", "<u2"),  # hook id, or 0x100 + event kind; 0 while incomplete
    ("cs", "<u2"),
    ("a0", "<u4"),
    ("a1", "<u4"),
    ("a2", "<u4"),
    ("a3", "<u4"),
    ("res_lo", "<u4"),
    ("res_hi", "<u4"),
    ("site", "<u4"),
    ("eflags", "<u4"),
    ("vtime_lo", "<u4"),  # low 32 bits of the event's exact vtime (the nearest marker
    # before it gives the rest).  CR3 is not logged: it changes only through write_cr3,
    # so the writer derives it from the write_cr3 records
)
CODE_EVENT_BASE = 0x100
HOOK_CODE_BASE = 1  # a hook's record code is its id + 1: code 0 marks a record being written


def record_code(h: Hook) -> int:
    """The code a hook's ring record carries once complete."""
    return HOOK_CODE_BASE + h.id


CODE_MARKER = 0x1FF  # quantum marker: a0/a1 = vtime (lo/hi); dropped at drain

# what the recorder does at a trap site
TRAP_HOOK = "hook"  # emulate the hook
TRAP_UNMASK = "unmask"  # the guest unmasked with an interrupt pending: deliver it
TRAP_SERVICE = "service"


def _result_hook(h: Hook) -> bool:
    return h.result_slots > 0


# Native bodies.  Registers on entry: eax, edx, ecx = first three argument slots; the
# fourth slot is at {A4}(%esp); {FRAME} is the iret frame.  A body may clobber eax, ecx,
# edx (and ebx only where it saves it); it leaves a result in eax (edx:eax for 64-bit).
_NATIVE: dict[str, str] = {
    "patch": "movl {A4}(%esp), %eax",
    "memory_setup": f"movl ${ROM_BASE + NAME_OFF:#x}, %eax",
    "get_wallclock": f"movl {DATA + D_WALLCLOCK:#x}, %eax",
    "set_wallclock": "xorl %eax, %eax",
    "cpuid": """pushl %ebx
    pushl %esi
    pushl %edi
    pushl %ebp
    movl %eax, %esi
    movl %edx, %edi
    movl %ecx, %ebp
    movl (%esi), %eax
    movl (%ebp), %ecx
    cpuid
    movl %eax, (%esi)
    movl %ebx, (%edi)
    movl %ecx, (%ebp)
    movl {A4_16}(%esp), %esi
    movl %edx, (%esi)
    popl %ebp
    popl %edi
    popl %esi
    popl %ebx""",
    "read_cr0": f"movl {DATA + D_CR0:#x}, %eax",
    "read_cr2": f"movl {DATA + D_CR2:#x}, %eax",
    "read_cr3": f"movl {DATA + D_CR3:#x}, %eax",
    "read_cr4": f"movl {DATA + D_CR4:#x}, %eax",
    "read_cr4_safe": f"movl {DATA + D_CR4:#x}, %eax",
    "save_fl": "pushfl\n    popl %eax",
    "restore_fl": f"""pushl %eax
    popfl
    testl $0x200, %eax
    jz 1f
    cmpl $0, {DATA + D_PENDING:#x}
    je 1f
{{UNMASK}}
1:""",
    "irq_disable": "cli",
    "irq_enable": f"""sti
    cmpl $0, {DATA + D_PENDING:#x}
    je 1f
{{UNMASK}}
1:""",
    "safe_halt": "sti\n{TRAP}",
    "get_cpu_khz": f"movl {DATA + D_CPU_KHZ:#x}, %eax",
    "store_gdt": "sgdt (%eax)",
    "store_idt": f"""movw {DATA + D_IDT:#x}, %cx
    movw %cx, (%eax)
    movl {DATA + D_IDT + 2:#x}, %ecx
    movl %ecx, 2(%eax)""",
    "store_tr": "xorl %eax, %eax\n    str %ax",
    # ABI: t points at the thread's three TLS descriptors, copied to GDT entries 6..8
    "load_tls": """subl $8, %esp
    sgdt 2(%esp)
    movl 4(%esp), %edx
    addl $8, %esp
    movl 0(%eax), %ecx
    movl %ecx, 48(%edx)
    movl 4(%eax), %ecx
    movl %ecx, 52(%edx)
    movl 8(%eax), %ecx
    movl %ecx, 56(%edx)
    movl 12(%eax), %ecx
    movl %ecx, 60(%edx)
    movl 16(%eax), %ecx
    movl %ecx, 64(%edx)
    movl 20(%eax), %ecx
    movl %ecx, 68(%edx)""",
    "write_ldt_entry": "movl %ecx, (%eax,%edx,8)\n    movl {A4}(%esp), %ecx\n"
    "    movl %ecx, 4(%eax,%edx,8)",
    "write_gdt_entry": "movl %ecx, (%eax,%edx,8)\n    movl {A4}(%esp), %ecx\n"
    "    movl %ecx, 4(%eax,%edx,8)",
    "write_idt_entry": "movl %ecx, (%eax,%edx,8)\n    movl {A4}(%esp), %ecx\n"
    "    movl %ecx, 4(%eax,%edx,8)",
    "apic_write": "movl %edx, 0xfee00000(%eax)",
    "apic_write_atomic": "xchgl %edx, 0xfee00000(%eax)",
    "apic_read": "movl 0xfee00000(%eax), %eax",
    "set_pte": "movl %edx, (%eax)",
    "set_pmd": "movl %edx, (%eax)",
    "set_pte_at": "movl {A4}(%esp), %edx\n    movl %edx, (%ecx)",
    "pte_update": "movl (%ecx), %eax",
    "pte_update_defer": "movl (%ecx), %eax",
    "iret": "",
}


@dataclass(frozen=True)
class RomImage:
    """An assembled ROM and where things are in it."""

    image: bytes
    entries: tuple[int, ...]
    """Address of each hook's table slot, in catalogue order."""
    reserve: tuple[int, ...]
    """Address of each entry's rdtsc that reserves its ring record (where the python path logs)."""
    traps: dict[int, tuple[str, int]]
    """Address just after each ``int $0x82`` -> (action, hook id or -1)."""
    completion_tails: tuple[int, ...]
    """Where entries that complete their record after the body have just done so (result
    in eax/edx there for result-bearing ones)."""
    completes_late: tuple[bool, ...]
    """Per hook: whether its entry completes the record after the body (see tails)."""
    site_offset: tuple[int, ...]
    """Per hook: offset from ESP of the return address at its reservation (ebx pushed or not)."""
    idle: int
    """Address of the idle loop a halted CPU spins in."""
    gate_stub: int
    """Ring-1 target of the call gate that finishes a CPL 3 -> 1 entry."""
    gate_error: int
    """Where the gate stub pushes the error code (D_GATE_NEXT for vectors that have one)."""
    gate_enter: int
    """Where the gate stub jumps to the handler (D_GATE_NEXT for vectors without one)."""

    @property
    def base(self) -> int:
        """Load address."""
        return ROM_BASE


def generate_asm() -> str:
    """Assembly source of the ROM, from the hook catalogue."""
    out: list[str] = [
        "# pvscope ROM -- generated by recorder/rom.py from pvscope/hooks.py",
        "    .code32",
        "    .text",
        "rom_base:",
        '    .ascii "PVSCOPE\\0"',
        f"    .long {ABI_VERSION}, {len(HOOKS)}, {ENTRY_TABLE:#x}, {KERNEL_RPL}",
        "    .long 0, 0, 0  # scale, seed, memory bytes: filled in at load",
        f"    .long svc_entry - rom_base + {ROM_BASE:#x}, {ROM_BASE + NAME_OFF:#x}",
        f"    .long {RESERVED_GDT}, {USER_PAGE:#x}, {DATA:#x}, {RING:#x}, {RING_SIZE:#x}",
        f"    .long {HV_BASE:#x}",
        f"    .org {NAME_OFF:#x}",
        '    .asciz "pvscope"',
        f"    .org {ENTRY_TABLE - ROM_BASE:#x}",
    ]
    for h in HOOKS:
        out += [f"slot_{h.name}:", f"    jmp body_{h.name}", "    .balign 8, 0x90"]
    out.append(f"    .org {CODE - ROM_BASE:#x}")
    trap_n = 0

    def trap(action: str, hid: int) -> str:
        nonlocal trap_n
        trap_n += 1
        return f"    int $0x82\ntrap_{action}_{hid if hid >= 0 else 'x'}_{trap_n}:"

    for h in HOOKS:
        body = _NATIVE.get(h.name)
        if h.rom in ("trap", "unsupported"):
            body = "{TRAP}" if body is None else body
        elif body is None:
            body = ""  # nop
        reg = slot_register(h)
        if reg == "%ecx" and "{A4" in body:
            raise ValueError(f"{h.name}: an ecx entry pops its return address; no stack slots")
        a4 = 8 if reg == "%ebx" else 4  # the ebx entries push it first
        body = (
            body.replace("{A4_16}", str(a4 + 16))
            .replace("{A4}", str(a4))
            .replace("{TRAP}", trap(TRAP_HOOK, h.id))
            .replace("{UNMASK}", trap(TRAP_UNMASK, h.id))
        )
        pops = _pops_return(h, body)
        late = _result_hook(h) or (pops and "(" in body)
        out.append(f"body_{h.name}:")
        out += _prologue(h, reg, pops, late)
        if body:
            out.append("    " + body)
        if h.jump:  # iret
            out += ["    popl %ebx", "    iret"]
            continue
        if _result_hook(h):
            out.append(f"    movl %eax, 20({reg})")
            if h.result_slots == 2:
                out.append(f"    movl %edx, 24({reg})")
        if late:
            out += [f"    movw ${record_code(h)}, ({reg})", f"tail_{h.name}:"]
        if pops:
            out.append(f"    jmp *28({reg})")
        else:
            out += ["    popl %ebx", "    ret"] if reg == "%ebx" else ["    ret"]
    out += [
        # service entry: eax = code, edx, ecx = arguments; not a paravirt_ops hook
        "svc_entry:",
        trap(TRAP_SERVICE, -1),
        "    ret",
        "idle_loop:",
        "    jmp idle_loop",
        # Ring-1 side of the call gate, finishing a CPL 3 -> 1 entry without a trap.  The
        # recorder sent the CPU to the trampoline with the handler's EFLAGS already loaded
        # (IF, TF cleared as the IDT gate says) and left the rest in the data page.  The
        # gate pushed the trampoline's EIP, the user's CS, ESP, SS on the TSS's ss1:esp1
        # stack; turn that into an interrupt frame (EIP, CS, EFLAGS, ESP, SS, error code
        # if any) and far-jump to the IDT gate's handler.  No register or flag changes.
        "gate_stub:",
        "    pushl 4(%esp)",  # the user's CS ...
        "    popl (%esp)",  # ... over the trampoline's EIP (pop addresses after esp moves)
        f"    pushl {DATA + D_GATE_EFLAGS:#x}",  # the interrupted EFLAGS ...
        "    popl 4(%esp)",  # ... over the old copy of the user's CS
        f"    pushl {DATA + D_GATE_EIP:#x}",
        f"    jmp *{DATA + D_GATE_NEXT:#x}",
        "gate_error:",
        f"    pushl {DATA + D_GATE_ERROR:#x}",
        "gate_enter:",
        f"    ljmp *{DATA + D_GATE_TARGET:#x}",
        f"    .org {USER_PAGE - ROM_BASE:#x}",
        "user_tramp:",
        f"    lcall ${(RESERVED_GDT + 2) * 8 | 3:#x}, $0",
        "    ud2",
        f"    .org {USER_PAGE - ROM_BASE + 0x1000:#x}",
    ]
    return "\n".join(out) + "\n"


def slot_register(h: Hook) -> str:
    """The register an entry keeps its ring record's address in.

    ecx when the C calling convention leaves it free (at most two argument slots, a
    body that does not use it, a called entry); else ebx, saved and restored.
    """
    body = _NATIVE.get(h.name, "")
    if h.jump or h.slots > 2 or "%ecx" in body or "%cx" in body:
        return "%ebx"
    return "%ecx"


def _pops_return(h: Hook, body: str) -> bool:
    """Whether the entry pops its return address into its record and returns with ``jmp
    *28(%ecx)``: one instruction less than copying it and returning with ``ret``.

    Only ecx entries (ebx is pushed above the return address) whose body does not trap:
    an interrupt delivered from a trap could switch tasks and keep the entry, so its
    record, open for long.  A body that touches memory through a pointer could fault
    and run a handler inside the entry; such an entry completes its record after the
    body, so that while the handler runs the record is incomplete and the recorder
    neither frees nor reuses its slot (it holds incomplete records' slots).
    """
    return slot_register(h) == "%ecx" and not h.jump and "int $0x82" not in body


def _prologue(h: Hook, reg: str, pops: bool, late: bool) -> list[str]:
    """Reserve a record and fill it; complete it now unless ``late``.

    The recorder turns ``rdtsc`` in the ROM into the reservation: it takes the slot
    at the ring head, advances the head, stamps the slot with the exact vtime and
    leaves its address in the data page (``recorder.clock``).  The ``rdtsc`` comes
    after the ebx push, which could fault: a handler's own entries must not reserve
    between it and the load of the slot.
    """
    lines = ["    pushl %ebx"] if reg == "%ebx" else []
    sp = 4 if reg == "%ebx" else 0  # where the return address (or iret frame) is
    lines += [
        f"rsv_{h.name}:",
        "    rdtsc",
        f"    movl {DATA + D_SLOT:#x}, {reg}",
        "    pushfl",
        f"    popl 32({reg})",
    ]
    if h.jump:  # iret: log the frame it returns through; all registers are live
        for i in range(3):
            lines += [f"    pushl {sp + 4 * i}(%esp)", f"    popl {4 + 4 * i}({reg})"]
        lines += [f"    pushl {sp}(%esp)", f"    popl 28({reg})"]
    else:
        regs = ["%eax", "%edx", "%ecx"]
        for i in range(min(h.slots, 3)):
            lines.append(f"    movl {regs[i]}, {4 + 4 * i}({reg})")
        if h.slots >= 4:
            lines += [f"    pushl {sp + 4}(%esp)", f"    popl 16({reg})"]
        if pops:
            lines.append(f"    popl 28({reg})")
        else:
            lines += [f"    pushl {sp}(%esp)", f"    popl 28({reg})"]
    lines.append(f"    movw %cs, 2({reg})")
    if not late:
        lines.append(f"    movw ${record_code(h)}, ({reg})")
    return lines


def build(outdir: Path = ROM_DIR) -> Path:
    """Assemble the ROM with GNU as; write ``rom.bin`` and its symbol map ``rom.json``."""
    as_, objcopy, nm = (shutil.which(t) for t in ("as", "objcopy", "nm"))
    if not (as_ and objcopy and nm):
        raise RuntimeError("building the ROM needs GNU as, objcopy and nm (binutils)")
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, binf = Path(tmp, "rom.S"), Path(tmp, "rom.o"), Path(tmp, "rom.bin")
        src.write_text(generate_asm())
        subprocess.run([as_, "--32", "-o", str(obj), str(src)], check=True)
        subprocess.run([objcopy, "-O", "binary", "-j", ".text", str(obj), str(binf)], check=True)
        syms = subprocess.run([nm, str(obj)], check=True, capture_output=True, text=True).stdout
        image = binf.read_bytes()
    table: dict[str, int] = {}
    for line in syms.splitlines():
        parts = line.split()
        if len(parts) == 3:
            table[parts[2]] = ROM_BASE + int(parts[0], 16)
    traps: dict[str, list[object]] = {}
    for name, addr in sorted(table.items()):
        if name.startswith("trap_"):
            _, action, hid, _n = name.split("_")
            traps[f"{addr:#x}"] = [action, -1 if hid == "x" else int(hid)]
    meta = {
        "entries": [table[f"slot_{h.name}"] for h in HOOKS],
        "reserve": [table[f"rsv_{h.name}"] for h in HOOKS],
        "traps": traps,
        "completion_tails": [table[f"tail_{h.name}"] for h in HOOKS if f"tail_{h.name}" in table],
        "completes_late": [f"tail_{h.name}" in table for h in HOOKS],
        "site_offset": [0 if slot_register(h) == "%ecx" else 4 for h in HOOKS],
        "idle": table["idle_loop"],
        "gate_stub": table["gate_stub"],
        "gate_error": table["gate_error"],
        "gate_enter": table["gate_enter"],
        "size": len(image),
    }
    (outdir / "rom.bin").write_bytes(image)
    (outdir / "rom.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return outdir / "rom.bin"


@cache
def load(romdir: Path = ROM_DIR) -> RomImage:
    """The committed ROM image."""
    meta = json.loads((romdir / "rom.json").read_text())
    image = (romdir / "rom.bin").read_bytes()
    traps = {int(k, 16): (v[0], int(v[1])) for k, v in meta["traps"].items()}
    return RomImage(
        image=image,
        entries=tuple(meta["entries"]),
        reserve=tuple(meta["reserve"]),
        traps=traps,
        completion_tails=tuple(meta["completion_tails"]),
        completes_late=tuple(meta["completes_late"]),
        site_offset=tuple(meta["site_offset"]),
        idle=meta["idle"],
        gate_stub=meta["gate_stub"],
        gate_error=meta["gate_error"],
        gate_enter=meta["gate_enter"],
    )


if __name__ == "__main__":
    print(build(), file=sys.stderr)
