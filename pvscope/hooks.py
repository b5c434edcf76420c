"""The hook catalogue: Linux 2.6.21's ``struct paravirt_ops``, declared once as data.

Every function pointer of the i386 ``struct paravirt_ops`` in Linux 2.6.21
(``include/asm-i386/paravirt.h`` at v2.6.21, commit ``de46c337``), in struct
order, with its arguments in ``regparm(3)`` order (eax, edx, ecx, then the
stack), its result, its group and the 2007 requirement it serves.  The list
builds the recorder's ROM (an entry per hook, in this order), decodes the
trace, drives the replayer and is served to SQL as the ``hooks`` table.

Requirements are named as in Zachary Amsden's March 2007 mail:

* ``cpl``       -- (1) the kernel runs at a non-zero CPL;
* ``irq``       -- (2) interrupt masking is virtualizable;
* ``ptalloc``   -- (3) the hypervisor is notified of page-table allocation/release;
* ``pteupdate`` -- (4) the hypervisor is notified of page-table-entry updates;
* ``apic``      -- the most valuable of the lesser hooks, ``apic_write``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Group = Literal["cpu", "irq", "mmu", "apic", "time", "init"]
Requirement = Literal["cpl", "irq", "ptalloc", "pteupdate", "apic"]
RomKind = Literal["native", "shadow", "trap", "nop", "unsupported"]

#: Requirement names with their number in the 2007 argument (``apic`` has none).
REQUIREMENTS: dict[str, int | None] = {
    "cpl": 1,
    "irq": 2,
    "ptalloc": 3,
    "pteupdate": 4,
    "apic": None,
}

#: C types used in the catalogue, and how many 32-bit argument slots each takes.
ARG_SLOTS: dict[str, int] = {
    "u32": 1,
    "int": 1,
    "ulong": 1,
    "ptr": 1,
    "pte_t": 1,
    "pmd_t": 1,
    "u8": 1,
    "u16": 1,
    "u64": 2,
}


@dataclass(frozen=True)
class Hook:
    """One ``paravirt_ops`` function pointer."""

    name: str
    """The member name in ``struct paravirt_ops`` (2.6.21)."""
    group: Group
    """``cpu``, ``irq``, ``mmu``, ``apic``, ``time`` or ``init``."""
    args: tuple[tuple[str, str], ...]
    """(name, C type) in call order; regparm(3) puts the first three slots in eax, edx, ecx."""
    result: str | None
    """C type of the result, or None for ``void``."""
    requirement: Requirement | None
    """Which of the 2007 requirements the hook serves, if any."""
    rom: RomKind
    """How the recording ROM gives native semantics at CPL 1: inline (``native``), from
    state the recorder keeps in the ROM's data page (``shadow``), by trapping to the
    recorder (``trap``), as a no-op (``nop``), or not at all on this machine (``unsupported``)."""
    doc: str
    """One line: what the hook does."""
    jump: bool = False
    """Reached by ``jmp``, not ``call`` (``iret``, ``irq_enable_sysexit``): no return address."""
    pae_only: bool = False
    """Present only with CONFIG_X86_PAE; never called by a non-PAE kernel."""
    observes: str | None = None
    """What the ROM reads and logs in the ``result`` column of a void hook (the PTE value a
    ``pte_update`` leaves behind, as a VMI ROM would read it), or None."""
    id: int = field(default=-1, compare=False)
    """Index in struct order; the ROM entry number and the ``hook_id`` in traces."""

    @property
    def slots(self) -> int:
        """Number of 32-bit argument slots the arguments take."""
        return sum(ARG_SLOTS[t] for _, t in self.args)

    @property
    def result_slots(self) -> int:
        """0 for void, 2 for a 64-bit result (edx:eax), else 1 (also for observed values)."""
        if self.result is None:
            return 1 if self.observes else 0
        return ARG_SLOTS.get(self.result, 1)


def _h(
    name: str,
    group: Group,
    args: str,
    result: str | None,
    requirement: Requirement | None,
    rom: RomKind,
    doc: str,
    **kw: bool | str,
) -> Hook:
    parsed: tuple[tuple[str, str], ...] = ()
    if args:
        parsed = tuple((a.split(":")[0].strip(), a.split(":")[1].strip()) for a in args.split(","))
    return Hook(name, group, parsed, result, requirement, rom, doc, **kw)  # type: ignore[arg-type]


_CATALOGUE: tuple[Hook, ...] = (
    _h(
        "patch",
        "init",
        "type:u8, clobber:u16, firstinsn:ptr, len:u32",
        "u32",
        None,
        "native",
        "offer to patch a call site; the ROM leaves it alone and returns len",
    ),
    _h("arch_setup", "init", "", None, None, "nop", "early architecture setup"),
    _h(
        "memory_setup",
        "init",
        "",
        "ptr",
        None,
        "native",
        "describe the memory map; returns the name of its source",
    ),
    _h("init_IRQ", "init", "", None, None, "nop", "set up interrupt controllers"),
    _h("banner", "init", "", None, None, "nop", "print the paravirt banner"),
    _h("get_wallclock", "time", "", "ulong", None, "shadow", "read the wall clock (seconds)"),
    _h("set_wallclock", "time", "nowtime:ulong", "int", None, "native", "set the wall clock"),
    _h("time_init", "time", "", None, None, "nop", "choose and start the clock source"),
    _h(
        "cpuid",
        "cpu",
        "eax:ptr, ebx:ptr, ecx:ptr, edx:ptr",
        None,
        None,
        "native",
        "CPUID through pointers to the four registers",
    ),
    _h("get_debugreg", "cpu", "regno:int", "ulong", None, "trap", "read a debug register"),
    _h(
        "set_debugreg",
        "cpu",
        "regno:int, value:ulong",
        None,
        None,
        "trap",
        "write a debug register",
    ),
    _h("clts", "cpu", "", None, None, "trap", "clear CR0.TS"),
    _h("read_cr0", "cpu", "", "ulong", None, "shadow", "read CR0"),
    _h("write_cr0", "cpu", "x:ulong", None, None, "trap", "write CR0 (paging on/off, WP, TS)"),
    _h("read_cr2", "mmu", "", "ulong", None, "shadow", "read CR2, the last page-fault address"),
    _h("write_cr2", "mmu", "x:ulong", None, None, "trap", "write CR2"),
    _h("read_cr3", "mmu", "", "ulong", None, "shadow", "read CR3, the page-directory base"),
    _h(
        "write_cr3",
        "mmu",
        "x:ulong",
        None,
        None,
        "trap",
        "load CR3: switch address space and flush non-global TLB entries",
    ),
    _h("read_cr4_safe", "cpu", "", "ulong", None, "shadow", "read CR4 (0 if absent)"),
    _h("read_cr4", "cpu", "", "ulong", None, "shadow", "read CR4"),
    _h("write_cr4", "cpu", "x:ulong", None, None, "trap", "write CR4"),
    _h(
        "save_fl",
        "irq",
        "",
        "ulong",
        "irq",
        "native",
        "read EFLAGS; only IF is meaningful (pushf; pop)",
    ),
    _h(
        "restore_fl",
        "irq",
        "flags:ulong",
        None,
        "irq",
        "native",
        "restore IF from saved flags (push; popf)",
    ),
    _h("irq_disable", "irq", "", None, "irq", "native", "mask interrupts (cli)"),
    _h("irq_enable", "irq", "", None, "irq", "native", "unmask interrupts (sti)"),
    _h(
        "safe_halt", "irq", "", None, "irq", "trap", "unmask and halt until an interrupt (sti; hlt)"
    ),
    _h("halt", "irq", "", None, "irq", "trap", "halt until an interrupt"),
    _h("wbinvd", "cpu", "", None, None, "trap", "write back and invalidate caches"),
    _h("read_msr", "cpu", "msr:u32, err:ptr", "u64", None, "trap", "read an MSR, *err = 0/-EFAULT"),
    _h("write_msr", "cpu", "msr:u32, val:u64", "int", None, "trap", "write an MSR"),
    _h("read_tsc", "time", "", "u64", None, "trap", "read the time-stamp counter"),
    _h("read_pmc", "cpu", "", "u64", None, "trap", "read a performance counter"),
    _h("get_scheduled_cycles", "time", "", "u64", None, "trap", "cycles the vCPU was scheduled"),
    _h("get_cpu_khz", "time", "", "ulong", None, "shadow", "CPU frequency in kHz"),
    _h("load_tr_desc", "cpu", "", None, "cpl", "trap", "load the task register (ltr)"),
    _h("load_gdt", "cpu", "dtr:ptr", None, "cpl", "trap", "load the GDT register (lgdt)"),
    _h("load_idt", "cpu", "dtr:ptr", None, "cpl", "trap", "load the IDT register (lidt)"),
    _h("store_gdt", "cpu", "dtr:ptr", None, None, "native", "store the GDT register (sgdt)"),
    _h("store_idt", "cpu", "dtr:ptr", None, None, "shadow", "store the IDT register (sidt)"),
    _h("set_ldt", "cpu", "desc:ptr, entries:u32", None, "cpl", "trap", "load an LDT (lldt)"),
    _h("store_tr", "cpu", "", "ulong", None, "native", "store the task register (str)"),
    _h(
        "load_tls",
        "cpu",
        "t:ptr, cpu:u32",
        None,
        None,
        "native",
        "copy a thread's TLS descriptors into the GDT",
    ),
    _h(
        "write_ldt_entry",
        "cpu",
        "dt:ptr, entrynum:int, low:u32, high:u32",
        None,
        None,
        "native",
        "write one LDT descriptor",
    ),
    _h(
        "write_gdt_entry",
        "cpu",
        "dt:ptr, entrynum:int, low:u32, high:u32",
        None,
        None,
        "native",
        "write one GDT descriptor",
    ),
    _h(
        "write_idt_entry",
        "cpu",
        "dt:ptr, entrynum:int, low:u32, high:u32",
        None,
        None,
        "native",
        "write one IDT gate",
    ),
    _h(
        "load_esp0",
        "cpu",
        "tss:ptr, thread:ptr",
        None,
        "cpl",
        "trap",
        "set the kernel stack for entry from user mode (TSS esp1 at CPL 1)",
    ),
    _h("set_iopl_mask", "cpu", "mask:u32", None, "cpl", "trap", "set EFLAGS.IOPL"),
    _h("io_delay", "cpu", "", None, None, "trap", "delay after port I/O (outb $0x80)"),
    _h(
        "apic_write",
        "apic",
        "reg:ulong, v:ulong",
        None,
        "apic",
        "native",
        "write a local APIC register",
    ),
    _h(
        "apic_write_atomic",
        "apic",
        "reg:ulong, v:ulong",
        None,
        "apic",
        "native",
        "write a local APIC register (xchg, for Pentium errata)",
    ),
    _h("apic_read", "apic", "reg:ulong", "ulong", "apic", "native", "read a local APIC register"),
    _h("setup_boot_clock", "apic", "", None, "apic", "nop", "start the boot CPU's APIC timer"),
    _h(
        "setup_secondary_clock",
        "apic",
        "",
        None,
        "apic",
        "nop",
        "start a secondary CPU's APIC timer",
    ),
    _h("flush_tlb_user", "mmu", "", None, None, "trap", "flush non-global TLB entries"),
    _h(
        "flush_tlb_kernel",
        "mmu",
        "",
        None,
        None,
        "trap",
        "flush all TLB entries, global ones included",
    ),
    _h(
        "flush_tlb_single",
        "mmu",
        "addr:u32",
        None,
        None,
        "trap",
        "flush the TLB entry for one address (invlpg)",
    ),
    _h(
        "map_pt_hook",
        "mmu",
        "type:int, va:ptr, pfn:u32",
        None,
        "ptalloc",
        "nop",
        "a page-table page was mapped with kmap_atomic (HIGHPTE)",
    ),
    _h("alloc_pt", "mmu", "pfn:u32", None, "ptalloc", "nop", "a page becomes a page table"),
    _h("alloc_pd", "mmu", "pfn:u32", None, "ptalloc", "nop", "a page becomes a page directory"),
    _h(
        "alloc_pd_clone",
        "mmu",
        "pfn:u32, clonepfn:u32, start:u32, count:u32",
        None,
        "ptalloc",
        "nop",
        "a new page directory copies count kernel entries from another from start",
    ),
    _h("release_pt", "mmu", "pfn:u32", None, "ptalloc", "nop", "a page table is freed"),
    _h("release_pd", "mmu", "pfn:u32", None, "ptalloc", "nop", "a page directory is freed"),
    _h(
        "set_pte",
        "mmu",
        "ptep:ptr, pteval:pte_t",
        None,
        "pteupdate",
        "native",
        "write a page-table entry",
    ),
    _h(
        "set_pte_at",
        "mmu",
        "mm:ptr, addr:u32, ptep:ptr, pteval:pte_t",
        None,
        "pteupdate",
        "native",
        "write a user page-table entry, naming its address space and address",
    ),
    _h(
        "set_pmd",
        "mmu",
        "pmdp:ptr, pmdval:pmd_t",
        None,
        "pteupdate",
        "native",
        "write a page-directory entry",
    ),
    _h(
        "pte_update",
        "mmu",
        "mm:ptr, addr:u32, ptep:ptr",
        None,
        "pteupdate",
        "native",
        "a PTE was changed in place (protection or access change); flush follows",
        observes="*ptep",
    ),
    _h(
        "pte_update_defer",
        "mmu",
        "mm:ptr, addr:u32, ptep:ptr",
        None,
        "pteupdate",
        "native",
        "as pte_update, may be deferred until the TLB flush",
        observes="*ptep",
    ),
    _h(
        "set_pte_atomic",
        "mmu",
        "ptep:ptr, pteval:u64",
        None,
        "pteupdate",
        "unsupported",
        "PAE: write a 64-bit PTE atomically",
        pae_only=True,
    ),
    _h(
        "set_pte_present",
        "mmu",
        "mm:ptr, addr:ulong, ptep:ptr, pte:u64",
        None,
        "pteupdate",
        "unsupported",
        "PAE: write a present 64-bit PTE",
        pae_only=True,
    ),
    _h(
        "set_pud",
        "mmu",
        "pudp:ptr, pudval:u64",
        None,
        "pteupdate",
        "unsupported",
        "PAE: write a PUD entry",
        pae_only=True,
    ),
    _h(
        "pte_clear",
        "mmu",
        "mm:ptr, addr:ulong, ptep:ptr",
        None,
        "pteupdate",
        "unsupported",
        "PAE: clear a 64-bit PTE",
        pae_only=True,
    ),
    _h(
        "pmd_clear",
        "mmu",
        "pmdp:ptr",
        None,
        "pteupdate",
        "unsupported",
        "PAE: clear a PMD entry",
        pae_only=True,
    ),
    _h(
        "set_lazy_mode",
        "cpu",
        "mode:int",
        None,
        None,
        "nop",
        "enter (1 MMU, 2 CPU), leave (0) or flush (3) a batching mode",
    ),
    _h(
        "irq_enable_sysexit",
        "irq",
        "",
        None,
        "irq",
        "unsupported",
        "sti; sysexit: return to user mode from sysenter",
        jump=True,
    ),
    _h("iret", "irq", "", None, "irq", "native", "return from interrupt", jump=True),
    _h(
        "startup_ipi_hook",
        "apic",
        "phys_apicid:int, start_eip:ulong, start_esp:ulong",
        None,
        None,
        "nop",
        "a secondary CPU is about to be started",
    ),
)

#: All hooks in struct order; ``HOOKS[i].id == i``.
HOOKS: tuple[Hook, ...] = tuple(Hook(**{**h.__dict__, "id": i}) for i, h in enumerate(_CATALOGUE))
#: Hooks by name.
BY_NAME: dict[str, Hook] = {h.name: h for h in HOOKS}

#: Data members of ``struct paravirt_ops`` (not hooks): name, C type, what the ROM supplies.
DATA_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("kernel_rpl", "unsigned int", "the CPL the kernel runs at (1 here: requirement 1)"),
    ("paravirt_enabled", "int", "1 when running on a hypervisor"),
    ("name", "const char *", "the backend's name"),
)

#: Kernel version the catalogue follows.
ABI = "linux-2.6.21-i386-paravirt_ops"


def hook(name: str) -> Hook:
    """Look up a hook by its ``paravirt_ops`` member name; raise KeyError naming it."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown hook {name!r}") from None
