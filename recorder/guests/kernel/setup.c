/*
 * The boot path after paging is on, in 2.6.21's order: setup_arch (memory,
 * paging), trap_init and cpu_init (IDT, GDT, TSS, LDT, debug registers, control
 * registers, the FPU), init_IRQ (the 8259A masked, interrupt gates), time_init
 * (PIT, wall clock, TSC), check_bugs (cpuid, machine check, FPU, paravirt
 * patching), the local APIC and IOAPIC, the APIC timer calibrated against the
 * PIT, and the kernel text and read-only data write-protected.
 */
#include "kernel.h"

pte_t swapper_pg_dir[1024] __attribute__((aligned(4096)));
u32 first_free_phys;
u32 boot_cpu_features;
u32 __PAGE_KERNEL, __PAGE_KERNEL_RO;
struct tss_struct init_tss;
u32 apic_calibrated_per_tick;
struct kconfig kcfg = { .hz_insns = 250000, .timeslice = 4, .user_page_limit = 0, .swap_slots = 0 };

static u32 cpu_gdt_table[GDT_ENTRIES * 2] __attribute__((aligned(8)));
static u32 idt_table[256 * 2] __attribute__((aligned(8)));
static struct Xgt_desc_struct gdt_descr, idt_descr;
static struct desc_struct default_ldt[5];
static u8 fxsave_probe[512] __attribute__((aligned(16)));
static u32 boot_count;

extern char _text[], _etext[], __start_rodata[], __end_rodata[];
extern void start_workloads(void);
extern void timer_interrupt(u32 irq, void *dev);

/* --- descriptor tables ------------------------------------------------------------- */

static void set_gdt_desc(int entry, u32 base, u32 limit, u8 access, u8 flags)
{
	u32 lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16);
	u32 hi = ((base >> 16) & 0xFF) | ((u32)access << 8) | (limit & 0xF0000) |
		 ((u32)flags << 20) | (base & 0xFF000000);
	paravirt_ops.write_gdt_entry(cpu_gdt_table, entry, lo, hi);
}

/* type 0xE interrupt gate, 0xF trap gate */
static void set_gate(int vector, void (*handler)(void), int dpl, int type)
{
	u32 off = (u32)handler;
	u32 lo = (off & 0xFFFF) | ((u32)__KERNEL_CS << 16);
	u32 hi = (off & 0xFFFF0000) | 0x8000 | ((u32)dpl << 13) | ((u32)type << 8);
	paravirt_ops.write_idt_entry(idt_table, vector, lo, hi);
}

static void (*stub_for(u32 vector))(void)
{
	for (u32 i = 0; i < trap_stub_count; i++)
		if (trap_stub_vectors[i] == vector)
			return trap_stubs[i];
	check_failed("no entry stub for vector", vector);
}

/* traps.c's trap_init: exception and system-call gates, then cpu_init */
void trap_init(void)
{
	/* interrupt gates where 2.6.21 has them (debug, NMI, page fault), DPL 3 for int3,
	 * into and int $0x80; every other exception is a trap gate */
	for (u32 v = 0; v < 20; v++) {
		int type = (v == 1 || v == 2 || v == 3 || v == 8 || v == 14) ? 0xE : 0xF;
		int dpl = (v == 3 || v == 4) ? 3 : 1;
		set_gate((int)v, stub_for(v), dpl, type);
	}
	set_gate(SYSCALL_VECTOR, stub_for(SYSCALL_VECTOR), 3, 0xF);
	idt_descr.size = sizeof(idt_table) - 1;
	idt_descr.address = (u32)idt_table;
	paravirt_ops.load_idt(&idt_descr);
	cpu_init();
}

static void set_in_cr4(u32 mask) { paravirt_ops.write_cr4(paravirt_ops.read_cr4() | mask); }
static void clear_in_cr4(u32 mask) { paravirt_ops.write_cr4(paravirt_ops.read_cr4() & ~mask); }

/* i387.c's mxcsr_feature_mask_init: clts, probe with fxsave, stts */
static void mxcsr_feature_mask_init(void)
{
	paravirt_ops.clts();
	if (boot_cpu_features & X86_FEATURE_FXSR) {
		memset(fxsave_probe, 0, sizeof(fxsave_probe));
		__asm__ volatile("fxsave %0" : "=m"(fxsave_probe));
	}
	paravirt_ops.write_cr0(paravirt_ops.read_cr0() | X86_CR0_TS);
}

/* cpu/common.c's cpu_init: per-CPU state for the boot CPU */
void cpu_init(void)
{
	if (boot_cpu_features & (X86_FEATURE_TSC | X86_FEATURE_DE))
		clear_in_cr4(X86_CR4_VME | X86_CR4_PVI | X86_CR4_TSD | X86_CR4_DE);
	paravirt_ops.load_idt(&idt_descr);

	/* switch_to_new_gdt: the flat segments, 2.6.21's layout */
	set_gdt_desc(GDT_ENTRY_KERNEL_CS, 0, 0xFFFFF, 0xBA, 0xC);
	set_gdt_desc(GDT_ENTRY_KERNEL_DS, 0, 0xFFFFF, 0xB2, 0xC);
	set_gdt_desc(GDT_ENTRY_USER_CS, 0, 0xFFFFF, 0xFA, 0xC);
	set_gdt_desc(GDT_ENTRY_USER_DS, 0, 0xFFFFF, 0xF2, 0xC);
	gdt_descr.size = sizeof(cpu_gdt_table) - 1;
	gdt_descr.address = (u32)cpu_gdt_table;
	paravirt_ops.load_gdt(&gdt_descr);
	__asm__ volatile("ljmp %0, $1f\n1:\n\t"
			 "movl %1, %%eax\n\t"
			 "movl %%eax, %%ds\n\tmovl %%eax, %%es\n\tmovl %%eax, %%ss\n\t"
			 "xorl %%eax, %%eax\n\tmovl %%eax, %%fs\n\tmovl %%eax, %%gs"
			 :
			 : "i"(__KERNEL_CS), "i"(__KERNEL_DS)
			 : "eax", "memory");

	init_mm.count++;
	current->active_mm = &init_mm;
	paravirt_ops.load_esp0(&init_tss, &current->thread);
	set_gdt_desc(GDT_ENTRY_TSS, (u32)&init_tss, sizeof(init_tss) - 1, 0x89, 0);
	paravirt_ops.load_tr_desc();
	paravirt_ops.set_ldt(default_ldt, ARRAY_SIZE(default_ldt));

	/* clear all six debug registers */
	for (int r = 0; r < 8; r++)
		if (r != 4 && r != 5)
			paravirt_ops.set_debugreg(r, 0);
	current->status = 0;
	current->used_math = 0;
	mxcsr_feature_mask_init();
}

/* --- interrupt controllers --------------------------------------------------------- */

#define PIC_MASTER_CMD 0x20
#define PIC_MASTER_IMR 0x21
#define PIC_SLAVE_CMD 0xA0
#define PIC_SLAVE_IMR 0xA1
#define PIT_MODE 0x43
#define PIT_CH0 0x40

/* i8259.c: program both 8259As, then leave every line masked (the IOAPIC is used) */
void init_8259A(void)
{
	outb(0xFF, PIC_MASTER_IMR);
	outb(0xFF, PIC_SLAVE_IMR);
	outb_p(0x11, PIC_MASTER_CMD); /* ICW1: edge, cascade, ICW4 */
	outb_p(0x20, PIC_MASTER_IMR); /* ICW2: IR0-7 at vectors 0x20-0x27 */
	outb_p(0x04, PIC_MASTER_IMR); /* ICW3: a slave on IR2 */
	outb_p(0x01, PIC_MASTER_IMR); /* ICW4: 8086 mode, normal EOI */
	outb_p(0x11, PIC_SLAVE_CMD);
	outb_p(0x28, PIC_SLAVE_IMR);
	outb_p(0x02, PIC_SLAVE_IMR);
	outb_p(0x01, PIC_SLAVE_IMR);
	outb(0xFF, PIC_MASTER_IMR);
	outb(0xFF, PIC_SLAVE_IMR);
}

/* the PIT's channel 0 as the periodic tick (HZ = 1000 at the machine's 1 GHz) */
static void setup_pit_timer(void)
{
	const u32 latch = 1193;
	unsigned long flags;
	local_irq_save(flags);
	outb_p(0x34, PIT_MODE);
	outb_p(latch & 0xFF, PIT_CH0);
	outb(latch >> 8, PIT_CH0);
	local_irq_restore(flags);
}

u32 ioapic_read(u32 reg)
{
	mmio_write(IOAPIC_BASE, reg);
	return mmio_read(IOAPIC_BASE + 0x10);
}

void ioapic_write(u32 reg, u32 v)
{
	mmio_write(IOAPIC_BASE, reg);
	mmio_write(IOAPIC_BASE + 0x10, v);
}

static u32 ioapic_rte_lo[NR_IRQS];

void ioapic_mask_pin(u32 pin, int mask)
{
	u32 v = (ioapic_rte_lo[pin] & ~0x10000u) | (mask ? 0x10000u : 0);
	ioapic_rte_lo[pin] = v;
	ioapic_write(0x10 + 2 * pin, v);
}

/* a redirection entry: destination APIC 0, fixed delivery, edge/high or level/high */
void ioapic_route_pin(u32 pin, int level)
{
	ioapic_write(0x11 + 2 * pin, 0);
	ioapic_rte_lo[pin] = IRQ_VECTOR(pin) | (level ? (1u << 15) : 0);
	ioapic_write(0x10 + 2 * pin, ioapic_rte_lo[pin]);
}

/* io_apic.c: read the IOAPIC's identity, mask every pin, route the ones in use */
static void setup_IO_APIC(void)
{
	u32 id = ioapic_read(0);
	u32 ver = ioapic_read(1);
	u32 entries = ((ver >> 16) & 0xFF) + 1;
	CHECK(entries == NR_IRQS, "IOAPIC with an unexpected number of pins", ver);
	ioapic_write(0, id & 0x0F000000u);
	for (u32 pin = 0; pin < entries; pin++) {
		(void)ioapic_read(0x10 + 2 * pin);
		ioapic_rte_lo[pin] = 0x10000 | IRQ_VECTOR(pin);
		ioapic_write(0x10 + 2 * pin, ioapic_rte_lo[pin]);
	}
	for (u32 pin = 0; pin < entries; pin++)
		if (irq_desc[pin].handler)
			ioapic_route_pin(pin, (int)irq_desc[pin].level);
	mark_ioapic_ready();
}

static int verify_local_APIC(void)
{
	u32 reg0 = paravirt_ops.apic_read(APIC_LVR);
	paravirt_ops.apic_write(APIC_LVR, reg0 ^ 0x00FF00FFu); /* read-only on a real APIC */
	u32 reg1 = paravirt_ops.apic_read(APIC_LVR);
	if (reg1 != reg0 || (reg0 & 0xFF) == 0 || (reg0 & 0xFF) == 0xFF)
		return 0;
	if (((reg0 >> 16) & 0xFF) < 2)
		return 0;
	reg0 = paravirt_ops.apic_read(APIC_ID);
	paravirt_ops.apic_write(APIC_ID, reg0 ^ 0xFF000000u); /* read-write on a real APIC */
	reg1 = paravirt_ops.apic_read(APIC_ID);
	paravirt_ops.apic_write(APIC_ID, reg0);
	return reg1 == (reg0 ^ 0xFF000000u);
}

/* apic.c's setup_local_APIC, as APIC_init_uniprocessor runs it */
static void setup_local_APIC(void)
{
	int err = 0;
	u64 base = paravirt_ops.read_msr(MSR_IA32_APICBASE, &err);
	CHECK(!err && (base & MSR_IA32_APICBASE_ENABLE), "local APIC disabled in APICBASE", base);
	CHECK(verify_local_APIC(), "no usable local APIC", 0);
	u32 maxlvt = (paravirt_ops.apic_read(APIC_LVR) >> 16) & 0xFF;

	paravirt_ops.apic_write(APIC_DFR, 0xFFFFFFFFu); /* flat model */
	u32 v = paravirt_ops.apic_read(APIC_LDR) & 0x00FFFFFFu;
	paravirt_ops.apic_write(APIC_LDR, v | (1u << 24));
	v = paravirt_ops.apic_read(APIC_TASKPRI) & ~0xFFu;
	paravirt_ops.apic_write(APIC_TASKPRI, v);
	/* acknowledge anything a previous kernel left in service */
	for (int i = 7; i >= 0; i--) {
		u32 isr = paravirt_ops.apic_read(0x100 + 0x10 * (u32)i);
		for (int j = 31; j >= 0; j--)
			if (isr & (1u << j))
				paravirt_ops.apic_write(APIC_EOI, 0);
	}
	v = paravirt_ops.apic_read(APIC_SPIV) & ~0xFFu;
	paravirt_ops.apic_write(APIC_SPIV, v | 0x100 | SPURIOUS_APIC_VECTOR);
	/* ExtINT on LINT0 stays masked: the IOAPIC routes the timer (check_timer) */
	paravirt_ops.apic_write(APIC_LVT0, APIC_DM_EXTINT | APIC_LVT_MASKED);
	paravirt_ops.apic_write(APIC_LVT1, APIC_DM_NMI);
	if (maxlvt > 3)
		paravirt_ops.apic_write(APIC_ESR, 0);
	(void)paravirt_ops.apic_read(APIC_ESR);
	paravirt_ops.apic_write(APIC_LVTERR, ERROR_APIC_VECTOR);
	if (maxlvt > 3)
		paravirt_ops.apic_write(APIC_ESR, 0);
	v = paravirt_ops.apic_read(APIC_ESR);
	CHECK(v == 0, "local APIC reports errors after setup", v);
	if (maxlvt >= 4)
		paravirt_ops.apic_write(APIC_LVTPC, APIC_LVT_MASKED);
}

static volatile u32 cal_ticks;
static volatile u32 cal_tmcct[3];
static volatile u64 cal_tsc[3];

/* the PIT tick handler while the APIC timer is calibrated (lapic_cal_handler) */
void calibrate_tick(void)
{
	if (cal_ticks < 3) {
		cal_tmcct[cal_ticks] = paravirt_ops.apic_read(APIC_TMCCT);
		cal_tsc[cal_ticks] = paravirt_ops.read_tsc();
		cal_ticks++;
	}
}
int calibrating;

void setup_lapic_timer(u32 count)
{
	paravirt_ops.apic_write(APIC_TDCR, 0x3); /* divide by 16 */
	paravirt_ops.apic_write(APIC_LVTT, LOCAL_TIMER_VECTOR | APIC_LVT_TIMER_PERIODIC);
	paravirt_ops.apic_write(APIC_TMICT, count);
}

/*
 * calibrate_APIC_clock: let the APIC timer count down from its maximum, one-shot
 * and masked, and sample it (and the TSC) at PIT ticks.  2.6.21 samples HZ/10
 * ticks with the CPU spinning; this kernel takes two tick intervals and halts
 * between them.
 */
void calibrate_apic_clock(void)
{
	paravirt_ops.apic_write(APIC_TDCR, 0x3);
	paravirt_ops.apic_write(APIC_LVTT, LOCAL_TIMER_VECTOR | APIC_LVT_MASKED);
	paravirt_ops.apic_write(APIC_TMICT, 0xFFFFFFFFu);
	cal_ticks = 0;
	calibrating = 1;
	while (cal_ticks < 3) {
		local_irq_disable();
		if (cal_ticks < 3)
			paravirt_ops.safe_halt();
		else
			local_irq_enable();
	}
	calibrating = 0;
	u32 delta = (cal_tmcct[1] - cal_tmcct[2] + cal_tmcct[0] - cal_tmcct[1]) / 2;
	u64 tsc = (cal_tsc[2] - cal_tsc[0]) >> 1;
	CHECK(delta > 0 && tsc > 0, "APIC timer calibration failed", delta);
	apic_calibrated_per_tick = delta;
	/* a tick is 1 ms; the workload's period is in instructions (ns at cpu_khz 1e6) */
	u32 count = (u32)div_u64_rem((u64)delta * kcfg.hz_insns, 1000000u, NULL);
	setup_lapic_timer(count ? count : 1);
}

/* the local APIC timer's period, in instructions (the scheduler tick) */
void lapic_set_period(u32 insns)
{
	kcfg.hz_insns = insns;
	u32 count = (u32)div_u64_rem((u64)apic_calibrated_per_tick * insns, 1000000u, NULL);
	setup_lapic_timer(count ? count : 1);
}

/* --- memory ------------------------------------------------------------------------ */

/* change_page_attr + global_flush_tlb, as 2.6.21's mark_rodata_ro does with
 * CONFIG_DEBUG_RODATA: kernel text and read-only data lose their write bit */
void mark_rodata_ro(void)
{
	u32 end = ((u32)__end_rodata + PAGE_SIZE - 1) & PAGE_MASK;
	for (u32 a = (u32)_text; a < end; a += PAGE_SIZE) {
		pte_t *pte = kernel_pte(a);
		paravirt_ops.set_pte(pte, (__pa(a) & PAGE_MASK) | __PAGE_KERNEL_RO);
	}
	/* flush_kernel_map on each CPU */
	paravirt_ops.wbinvd();
	paravirt_ops.flush_tlb_kernel();
}

/*
 * Rebuild the linear map's page tables in place, as memory hot-remap or a large
 * page split would: a fresh table per 4 MiB (alloc_pt, set_pte, set_pmd), a global
 * flush, then the old tables released (release_pt) and freed.
 */
void paging_rebuild(void)
{
	u32 lowmem = rom->mem_bytes < LOWMEM_LIMIT ? rom->mem_bytes : LOWMEM_LIMIT;
	u32 old[LOWMEM_LIMIT >> 22];
	u32 n = 0;
	for (u32 p = 0; p < lowmem; p += PGDIR_SIZE, n++) {
		u32 pfn = alloc_page(1);
		pte_t *pt = __va(pfn << PAGE_SHIFT);
		u32 count = lowmem - p >= PGDIR_SIZE ? PTRS_PER_PTE : (lowmem - p) >> PAGE_SHIFT;
		paravirt_ops.alloc_pt(pfn);
		pte_t *cur = __va(swapper_pg_dir[pgd_index(PAGE_OFFSET + p)] & PAGE_MASK);
		for (u32 j = 0; j < count; j++)
			paravirt_ops.set_pte(&pt[j], cur[j]); /* same mappings, RO text included */
		old[n] = swapper_pg_dir[pgd_index(PAGE_OFFSET + p)] >> PAGE_SHIFT;
		paravirt_ops.set_pmd(&swapper_pg_dir[pgd_index(PAGE_OFFSET + p)],
				     (pfn << PAGE_SHIFT) | _PAGE_TABLE);
	}
	paravirt_ops.flush_tlb_kernel();
	for (u32 i = 0; i < n; i++) {
		paravirt_ops.release_pt(old[i]);
		pfn_page(old[i])->flags &= ~(PG_reserved | PG_pagetable); /* boot's tables too */
		put_page(old[i]);
	}
}

/* --- the CPU ----------------------------------------------------------------------- */

static void identify_cpu(void)
{
	unsigned a = 0, b, c = 0, d;
	paravirt_ops.cpuid(&a, &b, &c, &d); /* vendor, highest leaf */
	CHECK(a >= 1, "cpuid leaf 1 missing", a);
	a = 1;
	c = 0;
	paravirt_ops.cpuid(&a, &b, &c, &d);
	boot_cpu_features = d;
	CHECK(d & X86_FEATURE_APIC, "CPU without a local APIC", d);
}

/* mce/p6.c: machine-check banks as MCG_CAP reports them */
static void mcheck_init(void)
{
	if ((boot_cpu_features & (X86_FEATURE_MCE | X86_FEATURE_MCA)) !=
	    (X86_FEATURE_MCE | X86_FEATURE_MCA))
		return;
	int err = 0;
	u64 cap = paravirt_ops.read_msr(MSR_IA32_MCG_CAP, &err);
	u32 banks = err ? 0 : (u32)cap & 0xFF;
	for (u32 i = 1; i < banks; i++) {
		paravirt_ops.write_msr(0x400 + 4 * i, 0xFFFFFFFFFFFFFFFFull);
		paravirt_ops.write_msr(0x401 + 4 * i, 0);
	}
	set_in_cr4(X86_CR4_MCE);
}

/* bugs.c's check_bugs: identify, machine check, the FPU's fast save, then patching */
static void check_bugs(void)
{
	identify_cpu();
	mcheck_init();
	if (boot_cpu_features & X86_FEATURE_FXSR)
		set_in_cr4(X86_CR4_OSFXSR);
	if (boot_cpu_features & X86_FEATURE_XMM)
		set_in_cr4(X86_CR4_OSXMMEXCPT);
	apply_paravirt();
}

static void init_IRQ(void)
{
	paravirt_ops.init_IRQ();
	init_8259A();
	for (u32 pin = 0; pin < NR_IRQS; pin++)
		set_gate((int)IRQ_VECTOR(pin), stub_for(IRQ_VECTOR(pin)), 1, 0xE);
	set_gate(LOCAL_TIMER_VECTOR, stub_for(LOCAL_TIMER_VECTOR), 1, 0xE);
	set_gate(ERROR_APIC_VECTOR, stub_for(ERROR_APIC_VECTOR), 1, 0xE);
	set_gate(SPURIOUS_APIC_VECTOR, stub_for(SPURIOUS_APIC_VECTOR), 1, 0xE);
}

static void time_init(void)
{
	paravirt_ops.time_init();
	setup_pit_timer();
	(void)paravirt_ops.get_wallclock();
	CHECK(paravirt_ops.get_cpu_khz() > 0, "CPU clock unknown", 0);
	(void)paravirt_ops.read_tsc();
}

/* the APIC half of smp_prepare_cpus on a uniprocessor: local APIC, IOAPIC, APIC timer */
static void apic_init_uniprocessor(void)
{
	setup_local_APIC();
	setup_IO_APIC();
	paravirt_ops.setup_boot_clock();
	calibrate_apic_clock();
}

/* what the boot workload repeats: the boot path again, on a running kernel */
void setup_arch_repeat(void)
{
	unsigned long flags;
	local_irq_save(flags);
	paging_rebuild();
	paravirt_ops.arch_setup();
	(void)paravirt_ops.memory_setup();
	trap_init();
	init_IRQ();
	time_init();
	check_bugs();
	local_irq_restore(flags);
	apic_init_uniprocessor();
	mark_rodata_ro();
	boot_count++;
}

void start_kernel(void)
{
	/* zap_low_mappings: the 1:1 alias of low memory is no longer needed */
	paravirt_ops.set_pmd(&swapper_pg_dir[0], 0);
	paravirt_ops.flush_tlb_kernel();

	/* setup_arch */
	paravirt_ops.arch_setup();
	(void)paravirt_ops.memory_setup();
	paravirt_ops.banner();
	mem_init(first_free_phys, rom->mem_bytes);
	sched_init();

	trap_init();
	init_IRQ();
	init_timers();
	time_init();
	mem_init_late();
	check_bugs();
	console("pvscope kernel: booted at CPL 1\n");
	request_irq(TIMER_PIN, timer_interrupt, NULL, 0);
	local_irq_enable();
	apic_init_uniprocessor();
	mark_rodata_ro();
	start_workloads();
}
