"""Backends as data: a mechanism per hook group, and what each hook costs in primitives.

A backend is one row: which virtual-CPU, MMU, batching and APIC mechanism it
uses, which of the 2007 requirements it relies on, and for each category of
hook the primitives one call costs (summed from the cost table).  The one
replay engine (``replayer.engine``) reads the row; no backend has code of its
own.  Sources for each row are the 2.6.21-2.6.23 implementations (VMI
``arch/i386/kernel/vmi.c``, Xen ``arch/i386/xen/*``, lguest ``drivers/lguest/*``;
``replayer/README.md`` says what each backend does per hook group), KVM for the
hardware VMMs and Adams & Agesen (ASPLOS 2006) for binary translation.

Modelling choices where the real ports differ from the interface being
measured are said where they are made (search for "choice:").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pvscope.errors import UsageError
from pvscope.hooks import BY_NAME, HOOKS, REQUIREMENTS
from replayer.costs import CostTable

#: Event labels for the cost mechanism of one event, in output dictionary order.
MECHANISMS = (
    "native",
    "memory",
    "rom_call",
    "hypercall",
    "queued",
    "batch_flush",
    "vm_exit",
    "wp_fault",
    "trap",
    "translated",
    "callout",
    "discover",
    "delivery",
    "included",
    "none",
)
MECH_CODE = {m: i for i, m in enumerate(MECHANISMS)}


@dataclass(frozen=True)
class Cost:
    """What one event costs: a mechanism label, primitives to sum, and counters."""

    mechanism: str
    primitives: tuple[tuple[str, int], ...] = ()
    exits: int = 0
    hypercalls: int = 0
    traps: int = 0

    def cycles(self, table: CostTable) -> int:
        """Cycles under a cost table."""
        return sum(table[p] * k for p, k in self.primitives)

    def plus(self, other: Cost, mechanism: str | None = None) -> Cost:
        """Both costs, labelled ``mechanism`` (default: the other's)."""
        return Cost(
            mechanism or other.mechanism,
            self.primitives + other.primitives,
            self.exits + other.exits,
            self.hypercalls + other.hypercalls,
            self.traps + other.traps,
        )


def c(mechanism: str, *prims: str, exits: int = 0, hypercalls: int = 0, traps: int = 0) -> Cost:
    """Shorthand: ``c("hypercall", "call_ret", "2*batch_entry", hypercalls=1)``."""
    parsed = []
    for p in prims:
        k, _, name = p.rpartition("*")
        parsed.append((name, int(k) if k else 1))
    assert mechanism in MECH_CODE, mechanism
    return Cost(mechanism, tuple(parsed), exits, hypercalls, traps)


ZERO = c("none")

#: Hook -> cost category (hooks in one category cost alike within a backend).
CATEGORY: dict[str, str] = {}
for _names, _cat in (
    (("save_fl",), "irq_read"),
    (("restore_fl", "irq_disable", "irq_enable"), "irq_write"),
    (("iret", "irq_enable_sysexit"), "iret"),
    (("safe_halt", "halt"), "halt"),
    (
        (
            "patch",
            "arch_setup",
            "memory_setup",
            "init_IRQ",
            "banner",
            "time_init",
            "setup_boot_clock",
            "setup_secondary_clock",
            "startup_ipi_hook",
            "map_pt_hook",
        ),
        "nop",
    ),
    (("get_wallclock", "set_wallclock"), "wallclock"),
    (("read_tsc", "get_scheduled_cycles"), "tsc"),
    (("get_cpu_khz",), "cpu_khz"),
    (("cpuid",), "cpuid"),
    (("get_debugreg", "set_debugreg"), "debugreg"),
    (("read_cr0",), "cr0_read"),
    (("write_cr0", "clts"), "cr0_write"),
    (("read_cr2",), "cr2_read"),
    (("write_cr2",), "cr2_write"),
    (("read_cr3",), "cr3_read"),
    (("write_cr3",), "cr3_write"),
    (("read_cr4", "read_cr4_safe"), "cr4_read"),
    (("write_cr4",), "cr4_write"),
    (("wbinvd",), "wbinvd"),
    (("read_msr", "write_msr", "read_pmc"), "msr"),
    (("load_tr_desc", "load_gdt", "set_ldt"), "desc_load"),
    (("load_idt",), "idt_load"),
    (("store_gdt", "store_idt", "store_tr"), "desc_store"),
    (("load_tls",), "tls"),
    (("write_ldt_entry", "write_gdt_entry"), "desc_write"),
    (("write_idt_entry",), "idt_write"),
    (("load_esp0",), "stack"),
    (("set_iopl_mask",), "iopl"),
    (("io_delay",), "io_delay"),
    (("apic_write", "apic_write_atomic"), "apic_write"),
    (("apic_read",), "apic_read"),
    (("flush_tlb_user", "flush_tlb_kernel"), "flush"),
    (("flush_tlb_single",), "invlpg"),
    (("alloc_pt", "alloc_pd", "alloc_pd_clone", "release_pt", "release_pd"), "ptalloc"),
    (("set_pte", "set_pte_at", "set_pmd"), "pte_write"),
    (("pte_update", "pte_update_defer"), "pte_update"),
    (("set_pte_atomic", "set_pte_present", "set_pud", "pte_clear", "pmd_clear"), "pae"),
    (("set_lazy_mode",), "lazy"),
):
    for _n in _names:
        CATEGORY[_n] = _cat
assert set(CATEGORY) == {h.name for h in HOOKS}, set(CATEGORY) ^ {h.name for h in HOOKS}

#: Non-hook event costs a backend row gives, by name.
EVENT_COSTS = ("interrupt", "pagefault", "exception", "softint", "mmio")

#: What a requirement's hooks are, by category (for ablations).
REQ_CATEGORIES: dict[str, tuple[str, ...]] = {
    # requirement (2) names cli/sti/pushf/popf; iret keeps the backend's own path
    "irq": ("irq_read", "irq_write"),
    "ptalloc": ("ptalloc",),
    "pteupdate": ("pte_write", "pte_update"),
    "apic": ("apic_write", "apic_read"),
    "cpl": (),
}


#: Hooks that only change page tables, CR3 or the TLB.
MMU_ONLY_HOOKS = (
    "set_pte",
    "set_pte_at",
    "set_pmd",
    "pte_update",
    "pte_update_defer",
    "alloc_pt",
    "alloc_pd",
    "alloc_pd_clone",
    "release_pt",
    "release_pd",
    "write_cr3",
    "flush_tlb_user",
    "flush_tlb_kernel",
    "flush_tlb_single",
)


@dataclass(frozen=True)
class Backend:
    """One backend: mechanisms, requirements relied on, and per-category costs."""

    name: str
    summary: str
    paravirt: bool
    relies_on: tuple[str, ...]
    vcpu: str
    """``native`` (cli/sti), ``rom`` (VMI ROM calls), ``xen-mask`` (mask byte, hypercall to
    unmask with one pending), ``lguest-flag`` (flag, no check on unmask), ``vmx`` (no exit;
    interrupt-window exit), ``bt`` (translated)."""
    mmu: str
    """``direct`` (hardware walks the guest's tables), ``notified`` (a copy kept from
    notifications alone), ``demand`` (a shadow filled on demand, dropped on flushes),
    ``traced`` (write-protected shadow: every write to a known table faults)."""
    apic: str
    """``mmio``, ``rom``, ``evtchn`` (no APIC: event channels), ``hcall`` (no APIC:
    hypercalls), ``mmio-exit``, ``trapped``."""
    table: dict[str, str]
    """Human-readable mechanism per hook group, for ``pvscope backends``."""
    costs: dict[str, Cost]
    """Category -> cost (every category in :data:`CATEGORY` plus :data:`EVENT_COSTS`)."""
    overrides: dict[str, Cost] = field(default_factory=dict)
    """Hook name -> cost, where one hook differs from its category."""
    batching: str | None = None
    batch_capacity: int = 0
    batch_source: str = ""
    batchable: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Hook name -> lazy modes in which the call is queued."""
    flush_cost: Cost = ZERO
    """The transfer that applies a batch (entries cost ``batch_entry`` each on top)."""
    unmask_pending: Cost | None = None
    """Extra cost of unmasking with an interrupt pending (None: it is not noticed)."""
    wp_fault: Cost = ZERO
    """A guest store to a traced page table."""
    discover: Cost = ZERO
    """Shadowing one newly discovered page table."""
    flood_threshold: int | None = None
    """KVM write-flood heuristic (commit 86a5ba02): zap after this many emulated writes."""
    tlb_walk: str = "native"
    """How a TLB miss is walked: ``native`` (the guest's, a shadow's or Xen's direct tables,
    one level per reference) or ``nested`` (guest tables on nested tables: the
    two-dimensional walk)."""
    timer_write: Cost | None = None
    """An APIC timer write, where the backend turns it into a hypercall."""
    flush_resync: bool = False
    """TLB flushes re-read the flushed entries (lguest drops its shadow)."""
    pgdir_cache: int = 0
    """Shadow page directories kept across CR3 loads (lguest); 0: not applicable."""

    def cost(self, hook: str) -> Cost:
        """The static cost of one call of ``hook``."""
        return self.overrides.get(hook) or self.costs[CATEGORY[hook]]


def _native_costs() -> dict[str, Cost]:
    nat = "native"
    return {
        "irq_read": c(nat, "native_irq_op"),
        "irq_write": c(nat, "native_irq_op"),
        "iret": c(nat, "native_iret"),
        "halt": c(nat, "native_irq_op", "native_halt"),
        "nop": c(nat, "call_ret"),
        "wallclock": c(nat, "call_ret", "2*native_io"),
        "tsc": c(nat, "call_ret", "native_rdtsc"),
        "cpu_khz": c(nat, "call_ret"),
        "cpuid": c(nat, "call_ret", "native_cpuid"),
        "debugreg": c(nat, "call_ret", "native_privileged"),
        "cr0_read": c(nat, "call_ret", "native_cr_read"),
        "cr0_write": c(nat, "call_ret", "native_cr_write"),
        "cr2_read": c(nat, "call_ret", "native_cr_read"),
        "cr2_write": c(nat, "call_ret", "native_cr_write"),
        "cr3_read": c(nat, "call_ret", "native_cr_read"),
        "cr3_write": c(nat, "call_ret", "native_cr3_load"),
        "cr4_read": c(nat, "call_ret", "native_cr_read"),
        "cr4_write": c(nat, "call_ret", "native_cr_write"),
        "wbinvd": c(nat, "call_ret", "native_wbinvd"),
        "msr": c(nat, "call_ret", "native_privileged"),
        "desc_load": c(nat, "call_ret", "native_privileged"),
        "idt_load": c(nat, "call_ret", "native_privileged"),
        "desc_store": c(nat, "call_ret", "native_cr_read"),
        "tls": c(nat, "call_ret", "6*native_store"),
        "desc_write": c(nat, "call_ret", "2*native_store"),
        "idt_write": c(nat, "call_ret", "2*native_store"),
        "stack": c(nat, "call_ret", "native_store"),
        "iopl": c(nat, "call_ret", "native_irq_op"),
        "io_delay": c(nat, "call_ret", "native_io"),
        "apic_write": c(nat, "call_ret", "native_mmio"),
        "apic_read": c(nat, "call_ret", "native_mmio"),
        "flush": c(nat, "call_ret", "native_cr3_load"),
        "invlpg": c(nat, "call_ret", "native_invlpg"),
        "ptalloc": c(nat, "call_ret"),
        "pte_write": c(nat, "call_ret", "native_store"),
        "pte_update": c(nat, "call_ret"),
        "pae": c(nat, "call_ret"),
        "lazy": c(nat, "call_ret"),
        "interrupt": c("delivery", "native_interrupt"),
        "pagefault": c("delivery", "native_pagefault"),
        "exception": c("delivery", "native_exception"),
        "softint": c("delivery", "native_exception"),
        "mmio": c(nat, "native_mmio"),
    }


def _with(base: dict[str, Cost], **kw: Cost) -> dict[str, Cost]:
    out = dict(base)
    for k, v in kw.items():
        assert k in out, k
        out[k] = v
    return out


_N = _native_costs()
_ROM = c("rom_call", "rom_call")
_ROMV = c("rom_call", "rom_call", "rom_vmm", hypercalls=1)
_HC = c("hypercall", "call_ret", "hypercall", hypercalls=1)
_PVTRAP = c("trap", "call_ret", "pv_fault", "emulate_insn", traps=1)
_MEM = c("memory", "call_ret", "mem_op")
_PV_EVENTS = {
    "interrupt": c("delivery", "native_interrupt", "pv_bounce"),
    "pagefault": c("delivery", "native_pagefault", "pv_bounce", traps=1),
    "exception": c("delivery", "native_exception", "pv_bounce", traps=1),
    "mmio": c("trap", "pv_fault", "emulate_mmio", traps=1),
}

NATIVE = Backend(
    name="native",
    summary="bare hardware: the native paravirt_ops (cli/sti, plain stores, MMIO)",
    paravirt=False,
    relies_on=(),
    vcpu="native",
    mmu="direct",
    apic="mmio",
    table={
        "irq masking": "cli/sti",
        "PTE updates": "direct write",
        "PT alloc/release": "-",
        "CR3/TLB": "native",
        "APIC": "MMIO",
        "batching": "-",
    },
    costs=_N,
)

VMI = Backend(
    name="vmi",
    summary="VMware VMI: every hook a call into the hypervisor's ROM; shadow tables kept "
    "coherent by notifications",
    paravirt=True,
    relies_on=("cpl", "irq", "ptalloc", "pteupdate", "apic"),
    vcpu="rom",
    mmu="notified",
    apic="rom",
    table={
        "irq masking": "ROM call (VMM entry to deliver a pending interrupt)",
        "PTE updates": "ROM SetPxE/UpdatePxE, shadow kept coherent, queued in lazy mode",
        "PT alloc/release": "ROM AllocatePage/ReleasePage (notified)",
        "CR3/TLB": "ROM SetCR3/FlushTLB/InvalPage",
        "APIC": "ROM APICWrite/APICRead",
        "batching": "ROM queue in lazy mode",
    },
    costs=_with(
        _N,
        irq_read=_ROM,
        irq_write=_ROM,
        iret=c("rom_call", "rom_call", "native_iret"),
        halt=_ROMV,
        wallclock=_ROM,
        tsc=_ROM,
        cpu_khz=_ROM,
        cpuid=_ROMV,
        debugreg=_ROMV,
        cr0_read=_ROM,
        cr0_write=_ROMV,
        cr2_read=_ROM,
        cr2_write=_ROMV,
        cr3_read=_ROM,
        cr3_write=_ROMV,
        cr4_read=_ROM,
        cr4_write=_ROMV,
        wbinvd=_ROMV,
        # vmi.c leaves the MSR ops native: "trap and emulate for now"
        msr=c("trap", "call_ret", "pv_fault", "emulate_insn", traps=1),
        desc_load=_ROMV,
        idt_load=_ROMV,
        desc_store=_ROM,
        tls=c("rom_call", "3*rom_call", "3*rom_vmm", hypercalls=3),
        desc_write=_ROMV,
        idt_write=_ROMV,
        stack=_ROMV,
        iopl=_ROMV,
        io_delay=_ROM,
        apic_write=_ROMV,
        apic_read=_ROMV,
        flush=_ROMV,
        invlpg=_ROMV,
        ptalloc=_ROMV,
        pte_write=_ROMV,
        pte_update=_ROMV,
        lazy=_ROM,
        **_PV_EVENTS,
    ),
    batching="rom-queue",
    # choice: the ROM's queue size is not visible in Linux source (arch/i386/kernel/vmi.c
    # only calls the ROM's flush); taken as 64 entries, lguest's ring size, as a parameter
    batch_capacity=64,
    batch_source="estimate: the VMI ROM's queue size is not visible in Linux source; 64",
    batchable={h: (1, 2) for h in (*MMU_ONLY_HOOKS, "load_esp0", "load_tls")},
    flush_cost=c("batch_flush", "rom_vmm"),
    unmask_pending=c("rom_call", "rom_vmm", hypercalls=1),
)

_XEN_MC = c("hypercall", "call_ret", "hypercall", "batch_entry", hypercalls=1)
_XEN_WP = c("wp_fault", "call_ret", "pv_fault", "emulate_write", "validate_entry", traps=1)
XEN = Backend(
    name="xen-pv",
    summary="Xen paravirtual guest: event mask byte in the shared page, pinned and validated "
    "direct page tables updated by hypercall or trapped writes, multicall batches",
    paravirt=True,
    relies_on=("cpl", "irq", "ptalloc", "pteupdate"),
    vcpu="xen-mask",
    mmu="notified",
    apic="evtchn",
    table={
        "irq masking": "mask byte in shared page, hypercall only to unmask with one pending",
        "PTE updates": "mmu_update/update_va_mapping hypercalls (multicall batches of 32 in "
        "lazy mode), set_pte and in-place changes trapped on the read-only pinned tables",
        "PT alloc/release": "pin/unpin (hypercall)",
        "CR3/TLB": "hypercall (mmuext), batched in lazy mode",
        "APIC": "event channels (no APIC): timer by hypercall, the rest in shared memory",
        "batching": "multicall, 32 entries",
    },
    costs=_with(
        _N,
        irq_read=_MEM,
        irq_write=_MEM,
        iret=_HC,
        halt=_HC,
        wallclock=_MEM,
        cpu_khz=_MEM,
        cpuid=_PVTRAP,  # ud2a "xen" cpuid traps
        debugreg=_HC,
        cr0_read=_PVTRAP,  # native instructions at ring 1 fault and Xen emulates them
        cr0_write=_PVTRAP,
        cr2_read=_MEM,
        cr2_write=_MEM,
        cr3_read=_MEM,
        cr3_write=_XEN_MC,
        cr4_read=_PVTRAP,
        cr4_write=c("native", "call_ret"),  # ignored
        wbinvd=_PVTRAP,
        msr=_PVTRAP,
        desc_load=_XEN_MC,
        idt_load=_HC,
        tls=c("hypercall", "call_ret", "hypercall", "3*batch_entry", hypercalls=1),
        desc_write=_HC,
        idt_write=_HC,
        stack=_XEN_MC,
        iopl=_HC,
        io_delay=c("native", "call_ret"),  # nop
        apic_write=_MEM,
        apic_read=_MEM,
        flush=_XEN_MC,
        invlpg=_XEN_MC,
        ptalloc=_HC,
        pte_write=c("hypercall", "call_ret", "hypercall", "validate_entry", hypercalls=1),
        pte_update=_XEN_WP,
        lazy=_MEM,
        **_PV_EVENTS,
    ),
    overrides={
        "irq_disable": c("memory", "mem_op"),  # xen_irq_disable_direct is inlined
        "load_tr_desc": c("native", "call_ret"),  # nop
        "set_pte": _XEN_WP,  # a store to a read-only pinned table: writable-pagetable trap
    },
    batching="multicall",
    batch_capacity=32,
    batch_source="source: MC_BATCH = 32, arch/i386/xen/multicalls.h (2.6.23)",
    batchable={
        "set_pte_at": (1,),
        "set_pmd": (1,),
        "flush_tlb_user": (1,),
        "flush_tlb_kernel": (1,),
        "flush_tlb_single": (1,),
        "write_cr3": (2,),
        "load_esp0": (2,),
        "load_gdt": (2,),
        "set_ldt": (2,),
        "load_tls": (2,),
    },
    flush_cost=c("batch_flush", "hypercall"),
    unmask_pending=c("hypercall", "hypercall", hypercalls=1),  # force_evtchn_callback
    wp_fault=_XEN_WP,
    timer_write=c("hypercall", "call_ret", "hypercall", hypercalls=1),  # set_timer_op
)

_LG_MEMHC = c("hypercall", "call_ret", "native_store", "hypercall", hypercalls=1)
LGUEST = Backend(
    name="lguest",
    summary="lguest: interrupt flag in a shared page, shadow page tables kept by hypercalls "
    "and dropped on flushes, a 64-entry async hypercall ring",
    paravirt=True,
    relies_on=("cpl", "irq", "pteupdate"),
    vcpu="lguest-flag",
    mmu="demand",
    apic="hcall",
    table={
        "irq masking": "flag in shared page (no check for pending interrupts on unmask)",
        "PTE updates": "hypercall (SET_PTE/SET_PMD; set_pte flushes all), async ring in "
        "lazy mode; shadow filled on demand",
        "PT alloc/release": "not hooked",
        "CR3/TLB": "hypercall (NEW_PGTABLE, FLUSH_TLB drops shadow entries)",
        "APIC": "none: timer by hypercall, the rest in shared memory",
        "batching": "async ring, 64 entries",
    },
    costs=_with(
        _N,
        irq_read=c("memory", "mem_op"),
        irq_write=c("memory", "mem_op"),
        iret=c("memory", "mem_op", "native_iret"),
        halt=_HC,
        wallclock=_MEM,
        cpu_khz=_MEM,
        debugreg=_PVTRAP,
        cr0_read=_MEM,
        cr0_write=_HC,
        cr2_read=_MEM,
        cr2_write=_MEM,
        cr3_read=_MEM,
        cr3_write=_HC,
        cr4_read=_MEM,
        cr4_write=c("native", "call_ret"),
        wbinvd=c("native", "call_ret"),
        msr=_PVTRAP,
        desc_load=_HC,
        idt_load=c("hypercall", "call_ret", "256*hypercall", hypercalls=256),
        tls=_HC,
        desc_write=_HC,
        idt_write=_HC,
        stack=_HC,
        io_delay=_PVTRAP,  # outb at ring 1 faults; the host's emulate_insn skips it
        apic_write=_MEM,
        apic_read=_MEM,
        flush=_HC,
        invlpg=_HC,
        ptalloc=c("native", "call_ret"),
        pte_write=_LG_MEMHC,
        pte_update=c("native", "call_ret"),
        lazy=_MEM,
        **_PV_EVENTS,
    ),
    overrides={
        "set_debugreg": c("native", "call_ret"),  # empty ("FIXME")
        "load_tr_desc": c("native", "call_ret"),
        "set_ldt": c("native", "call_ret"),
        "write_ldt_entry": c("native", "call_ret", "2*native_store"),
        "cpuid": c("native", "call_ret", "native_cpuid"),  # unprivileged
    },
    batching="async-ring",
    batch_capacity=64,
    batch_source="source: lguest_data's 64-entry async hypercall ring (lguest 2.6.23)",
    batchable={
        h: (1, 2)
        for h in (
            "set_pte",
            "set_pte_at",
            "set_pmd",
            "flush_tlb_user",
            "flush_tlb_kernel",
            "flush_tlb_single",
            "write_cr3",
            "load_esp0",
            "load_tls",
            "write_cr0",
            "clts",
        )
    },
    flush_cost=c("batch_flush", "hypercall"),
    unmask_pending=None,
    timer_write=c("hypercall", "call_ret", "hypercall", hypercalls=1),
    flush_resync=True,
    # choice: lguest keeps a few shadow page directories across CR3 loads; 4 here
    # (recalled from drivers/lguest, not checked)
    pgdir_cache=4,
)

_VMX = c("vm_exit", "call_ret", "vm_exit", exits=1)
_HVM_COSTS = _with(
    _N,
    halt=c("vm_exit", "native_irq_op", "vm_exit", exits=1),
    wallclock=c("vm_exit", "call_ret", "2*hw_io", exits=2),
    cpuid=_VMX,
    debugreg=_VMX,
    cr0_write=_VMX,
    cr4_write=_VMX,
    wbinvd=_VMX,
    msr=_VMX,
    io_delay=c("vm_exit", "call_ret", "hw_io", exits=1),
    apic_write=c("vm_exit", "call_ret", "vm_exit", "emulate_mmio", exits=1),
    apic_read=c("vm_exit", "call_ret", "vm_exit", "emulate_mmio", exits=1),
    interrupt=c("delivery", "vm_exit", "native_interrupt", exits=1),
    pagefault=c("delivery", "hw_exception"),
    exception=c("delivery", "hw_exception"),
    softint=c("delivery", "hw_exception"),
    mmio=c("vm_exit", "vm_exit", "emulate_mmio", exits=1),
)
HVM_SHADOW = Backend(
    name="hvm-shadow",
    summary="hardware VMM (VT-x/SVM) with shadow paging: write-protected shadows, CR3 and "
    "invlpg exits, KVM's write-flood heuristic",
    paravirt=False,
    relies_on=(),
    vcpu="vmx",
    mmu="traced",
    apic="mmio-exit",
    table={
        "irq masking": "no exit (interrupt-window exit to deliver a pending interrupt)",
        "PTE updates": "write-protect fault + emulation (KVM write-flood heuristic)",
        "PT alloc/release": "discovered at CR3 load",
        "CR3/TLB": "VM exit",
        "APIC": "MMIO exit + decode",
        "batching": "-",
    },
    costs=_with(
        _HVM_COSTS,
        cr3_read=_VMX,  # CR3-store exiting stays on without EPT (KVM vmx.c)
        cr3_write=_VMX,
        flush=_VMX,
        invlpg=_VMX,
        pagefault=c("delivery", "hw_pagefault", exits=1),
    ),
    unmask_pending=c("vm_exit", "vm_exit", exits=1),
    wp_fault=c("wp_fault", "hw_ptemod", exits=1),
    discover=c("discover", "shadow_fill", exits=1),
    flood_threshold=3,
)

HVM_NPT = Backend(
    name="hvm-npt",
    summary="hardware VMM with nested paging (EPT/NPT): no exits for page tables, CR3 or invlpg",
    paravirt=False,
    relies_on=(),
    vcpu="vmx",
    mmu="direct",
    apic="mmio-exit",
    table={
        "irq masking": "no exit (interrupt-window exit to deliver a pending interrupt)",
        "PTE updates": "no exit",
        "PT alloc/release": "-",
        "CR3/TLB": "no exit",
        "APIC": "MMIO exit",
        "batching": "-",
    },
    costs=_HVM_COSTS,
    unmask_pending=c("vm_exit", "vm_exit", exits=1),
    tlb_walk="nested",
)

_BT = c("translated", "bt_translated")
_BTC = c("callout", "call_ret", "bt_call_overhead", "bt_callout")
BT = Backend(
    name="bt",
    summary="binary translation (VMware's software VMM): privileged code translated in "
    "place, traced page tables, trapped APIC accesses",
    paravirt=False,
    relies_on=(),
    vcpu="bt",
    mmu="traced",
    apic="trapped",
    table={
        "irq masking": "translated in place",
        "PTE updates": "traced page fault",
        "PT alloc/release": "discovered",
        "CR3/TLB": "translated (callout)",
        "APIC": "trapped",
        "batching": "-",
    },
    costs=_with(
        {k: v.plus(c(v.mechanism, "bt_call_overhead")) for k, v in _N.items()},
        irq_read=_BT,
        irq_write=_BT,
        iret=c("callout", "bt_callout"),
        halt=c("callout", "bt_callout"),
        wallclock=_BTC,
        tsc=c("translated", "call_ret", "bt_call_overhead", "bt_translated"),
        cpuid=_BTC,
        debugreg=_BTC,
        cr0_read=c("translated", "call_ret", "bt_call_overhead", "bt_translated"),
        cr0_write=_BTC,
        cr2_read=c("translated", "call_ret", "bt_call_overhead", "bt_translated"),
        cr3_read=c("translated", "call_ret", "bt_call_overhead", "bt_translated"),
        cr3_write=_BTC,
        cr4_read=c("translated", "call_ret", "bt_call_overhead", "bt_translated"),
        cr4_write=_BTC,
        wbinvd=_BTC,
        msr=_BTC,
        desc_load=_BTC,
        idt_load=_BTC,
        tls=c("wp_fault", "call_ret", "bt_call_overhead", "2*bt_ptemod", traps=2),
        desc_write=c("wp_fault", "call_ret", "bt_call_overhead", "bt_ptemod", traps=1),
        idt_write=c("wp_fault", "call_ret", "bt_call_overhead", "bt_ptemod", traps=1),
        io_delay=_BTC,
        apic_write=c("trap", "call_ret", "bt_call_overhead", "bt_callout", traps=1),
        apic_read=c("trap", "call_ret", "bt_call_overhead", "bt_callout", traps=1),
        flush=_BTC,
        invlpg=_BTC,
        interrupt=c("delivery", "bt_exception"),
        pagefault=c("delivery", "bt_pagefault", traps=1),
        exception=c("delivery", "bt_exception"),
        softint=c("delivery", "native_exception", "bt_syscall_overhead"),
        mmio=c("trap", "bt_callout", traps=1),
    ),
    unmask_pending=c("callout", "bt_callout"),
    wp_fault=c("wp_fault", "bt_ptemod", traps=1),
    discover=c("discover", "bt_pagefault", traps=1),
    # choice: no source says when VMware's VMM stops tracing a frame; like KVM's (commit
    # 86a5ba02) it is taken to drop a trace after three consecutive faulting writes
    flood_threshold=3,
)

#: Every backend, in the order ``pvscope backends`` lists them.
BACKENDS: dict[str, Backend] = {
    b.name: b for b in (NATIVE, VMI, XEN, LGUEST, HVM_SHADOW, HVM_NPT, BT)
}

for _b in BACKENDS.values():
    _missing = (set(CATEGORY.values()) | set(EVENT_COSTS)) - set(_b.costs)
    assert not _missing, (_b.name, _missing)

FALLBACKS = ("trap", "none")

#: What a fallback costs, per requirement: the category costs replacing the backend's.
TRAP_COSTS: dict[str, dict[str, Cost]] = {
    # VMware's answer to unvirtualizable masking: binary-translate the kernel
    "irq": {
        "irq_read": c("translated", "bt_translated"),
        "irq_write": c("translated", "bt_translated"),
    },
    "ptalloc": {"ptalloc": c("native", "call_ret")},
    "pteupdate": {
        "pte_write": c(
            "wp_fault", "call_ret", "native_store", "pv_fault", "emulate_write", traps=1
        ),
        "pte_update": c("wp_fault", "call_ret", "pv_fault", "emulate_write", traps=1),
    },
    "apic": {
        "apic_write": c("trap", "call_ret", "pv_fault", "emulate_mmio", traps=1),
        "apic_read": c("trap", "call_ret", "pv_fault", "emulate_mmio", traps=1),
    },
    "cpl": {},
}
NONE_COSTS: dict[str, dict[str, Cost]] = {
    "irq": {k: _N[k] for k in ("irq_read", "irq_write")},
    "ptalloc": {"ptalloc": _N["ptalloc"]},
    "pteupdate": {"pte_write": _N["pte_write"], "pte_update": _N["pte_update"]},
    "apic": {"apic_write": _N["apic_write"], "apic_read": _N["apic_read"]},
    "cpl": {},
}


#: What a requirement guards, as the replay's check families: taking it away with no
#: fallback may break these and only these.  A kernel running at CPL 0 executes
#: privileged hooks (privilege); unvirtualized masking or an APIC the hypervisor does
#: not see changes when interrupts arrive and what the guest reads back (interrupt,
#: device, result); unnotified page-table changes leave the hypervisor's copy wrong (mmu).
REQUIREMENT_FAMILIES: dict[str, tuple[str, ...]] = {
    "cpl": ("privilege",),
    "irq": ("interrupt", "device", "result"),
    "ptalloc": ("mmu",),
    "pteupdate": ("mmu",),
    "apic": ("interrupt", "device", "result"),
}


@dataclass(frozen=True)
class Run:
    """One replay to do: a backend, possibly without one requirement and with a fallback."""

    backend: Backend
    without: str | None = None
    fallback: str | None = None

    @property
    def label(self) -> str:
        """``vmi`` or ``vmi-without-irq-none``: the ``backend=`` partition value."""
        if self.without is None:
            return self.backend.name
        return f"{self.backend.name}-without-{self.without}-{self.fallback}"

    @property
    def expected_families(self) -> tuple[str, ...]:
        """Check families this run is designed to fail (empty: it must replay correctly).

        A backend as designed and a ``--fallback trap`` ablation must be correct; a
        ``--fallback none`` ablation breaks what its requirement guarded
        (:data:`REQUIREMENT_FAMILIES`), and nothing else."""
        if self.without is None or self.fallback != "none":
            return ()
        return REQUIREMENT_FAMILIES[self.without]

    def model(self) -> Backend:
        """The backend row with the ablation's category costs swapped in."""
        b = self.backend
        if self.without is None:
            return b
        swap = (TRAP_COSTS if self.fallback == "trap" else NONE_COSTS)[self.without]
        if self.without == "pteupdate" and self.fallback == "trap" and b.wp_fault != ZERO:
            # a backend that already traps page-table writes (Xen) traps them all alike
            wp = b.wp_fault
            swap = {"pte_write": wp, "pte_update": wp}
        costs = {**b.costs, **swap}
        hooks = {n for n, cat in CATEGORY.items() if cat in swap}
        overrides = {h: v for h, v in b.overrides.items() if h not in hooks}
        batchable = {h: v for h, v in b.batchable.items() if h not in hooks}
        return replace(b, costs=costs, overrides=overrides, batchable=batchable)


def ablations(backend: Backend) -> list[Run]:
    """Every ablation of one backend: each requirement it relies on, each fallback."""
    return [Run(backend, req, fb) for req in backend.relies_on for fb in FALLBACKS]


def all_runs() -> list[Run]:
    """Every backend as designed, then every ablation of every paravirtual backend."""
    runs = [Run(b) for b in BACKENDS.values()]
    for b in BACKENDS.values():
        runs += ablations(b)
    return runs


def resolve(backends: str, without: str | None = None, fallback: str | None = None) -> list[Run]:
    """Parse ``--backend NAME[,NAME...]|all [--without REQ --fallback trap|none]``."""
    names = [n.strip() for n in backends.split(",") if n.strip()]
    if not names:
        raise UsageError("no backend named (give --backend NAME[,NAME...] or all)")
    if without is not None and without not in REQUIREMENTS:
        raise UsageError(f"unknown requirement {without!r} (one of: {', '.join(REQUIREMENTS)})")
    if (without is None) != (fallback is None):
        raise UsageError(
            "--without and --fallback go together (--without REQ --fallback trap|none)"
        )
    if fallback is not None and fallback not in FALLBACKS:
        raise UsageError(f"unknown fallback {fallback!r} (trap or none)")
    if "all" in names:
        if len(names) > 1 or without is not None:
            raise UsageError("--backend all already runs every backend and every ablation")
        return all_runs()
    runs = []
    for n in names:
        b = BACKENDS.get(n)
        if b is None:
            raise UsageError(f"unknown backend {n!r} (one of: {', '.join(BACKENDS)}, all)")
        if without is not None:
            if not b.paravirt:
                raise UsageError(
                    f"{n} is not a paravirtual backend: it has no requirement to ablate"
                )
            if without not in b.relies_on:
                raise UsageError(
                    f"{n} does not rely on {without} (it relies on: {', '.join(b.relies_on)})"
                )
        runs.append(Run(b, without, fallback))
    seen: set[str] = set()
    out = []
    for r in runs:
        if r.label not in seen:
            seen.add(r.label)
            out.append(r)
    return out


def hook_requirement(name: str) -> str | None:
    """The requirement a hook serves (from the catalogue)."""
    return BY_NAME[name].requirement
