/*
 * The kernel proper, at PAGE_OFFSET and CPL 1: descriptor tables, frame
 * allocator, APIC/IOAPIC setup, trap dispatch and the switch to user mode.
 * Every privileged operation goes through paravirt_ops, as Linux 2.6.21 does.
 */
#include "kernel.h"

struct paravirt_ops paravirt_ops;
struct pv_rom_header *rom;
pte_t swapper_pg_dir[1024] __attribute__((aligned(4096)));
struct mm_struct init_mm = { swapper_pg_dir, 0 };
u32 first_free_phys;
volatile u32 jiffies;
volatile u32 lapic_ticks;

static u32 gdt[GDT_ENTRIES * 2] __attribute__((aligned(8)));
static u32 idt[256 * 2] __attribute__((aligned(8)));
static struct tss_struct tss;
static struct thread_struct thread0;
static u8 kstack[8192] __attribute__((aligned(16)));
static u32 next_phys, mem_top, free_list, free_count;

void service(u32 code, u32 a, u32 b)
{
	void (*svc)(u32, u32, u32) = (void (*)(u32, u32, u32))rom->service;
	svc(code, a, b);
}

static u32 strlen(const char *s)
{
	u32 n = 0;
	while (s[n])
		n++;
	return n;
}

void console(const char *s) { service(PV_SERVICE_CONSOLE, (u32)s, strlen(s)); }

void check_failed(const char *what, u32 detail)
{
	service(PV_SERVICE_CHECK, (u32)what, detail);
	for (;;)
		paravirt_ops.halt();
}

/* Physical frames: a free list threaded through the free frames, then a bump pointer. */
u32 alloc_frame(void)
{
	u32 pfn;
	if (free_list) {
		pfn = free_list;
		free_list = *(u32 *)__va(pfn << PAGE_SHIFT);
		free_count--;
	} else {
		if (next_phys + PAGE_SIZE > mem_top)
			check_failed("out of memory", next_phys);
		pfn = next_phys >> PAGE_SHIFT;
		next_phys += PAGE_SIZE;
	}
	memset(__va(pfn << PAGE_SHIFT), 0, PAGE_SIZE);
	return pfn;
}

void free_frame(u32 pfn)
{
	*(u32 *)__va(pfn << PAGE_SHIFT) = free_list;
	free_list = pfn;
	free_count++;
}

u32 frames_free(void) { return free_count + ((mem_top - next_phys) >> PAGE_SHIFT); }

/* The PTE for addr in pgd, allocating its page table (alloc_pt + set_pmd) if asked. */
pte_t *pte_for(pte_t *pgd, u32 addr, int alloc, u32 pde_flags)
{
	pte_t *pde = &pgd[addr >> 22];
	if (!(*pde & _PAGE_PRESENT)) {
		if (!alloc)
			return NULL;
		u32 pfn = alloc_frame();
		paravirt_ops.alloc_pt(pfn);
		paravirt_ops.set_pmd(pde, (pfn << PAGE_SHIFT) | pde_flags);
	}
	pte_t *pt = __va(*pde & ~(PAGE_SIZE - 1));
	return &pt[(addr >> PAGE_SHIFT) & 1023];
}

static void set_gdt(int entry, u32 base, u32 limit, u8 access, u8 flags)
{
	u32 lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16);
	u32 hi = ((base >> 16) & 0xFF) | ((u32)access << 8) | (limit & 0xF0000) |
		 ((u32)flags << 20) | (base & 0xFF000000);
	paravirt_ops.write_gdt_entry(gdt, entry, lo, hi);
}

void set_idt_gate(int vector, void (*handler)(void), int dpl, int trap)
{
	u32 off = (u32)handler;
	u32 lo = (off & 0xFFFF) | ((u32)__KERNEL_CS << 16);
	u32 hi = (off & 0xFFFF0000) | 0x8000 | ((u32)dpl << 13) | ((trap ? 0xF : 0xE) << 8);
	paravirt_ops.write_idt_entry(idt, vector, lo, hi);
}

static void setup_descriptors(void)
{
	static struct Xgt_desc_struct gdt_desc, idt_desc;
	set_gdt(GDT_ENTRY_KERNEL_CS, 0, 0xFFFFF, 0xBA, 0xC);
	set_gdt(GDT_ENTRY_KERNEL_DS, 0, 0xFFFFF, 0xB2, 0xC);
	set_gdt(GDT_ENTRY_USER_CS, 0, 0xFFFFF, 0xFA, 0xC);
	set_gdt(GDT_ENTRY_USER_DS, 0, 0xFFFFF, 0xF2, 0xC);
	set_gdt(GDT_ENTRY_TSS, (u32)&tss, sizeof(tss) - 1, 0x89, 0);
	gdt_desc.size = sizeof(gdt) - 1;
	gdt_desc.address = (u32)gdt;
	paravirt_ops.load_gdt(&gdt_desc);
	__asm__ volatile("ljmp %0, $1f\n1:\n\t"
			 "movl %1, %%eax\n\t"
			 "movl %%eax, %%ds\n\tmovl %%eax, %%es\n\tmovl %%eax, %%ss\n\t"
			 "xorl %%eax, %%eax\n\tmovl %%eax, %%fs\n\tmovl %%eax, %%gs"
			 :
			 : "i"(__KERNEL_CS), "i"(__KERNEL_DS)
			 : "eax", "memory");
	for (u32 i = 0; i < trap_stub_count; i++) {
		u32 v = trap_stub_vectors[i];
		set_idt_gate(v, trap_stubs[i], v == SYSCALL_VECTOR ? 3 : 1, v == SYSCALL_VECTOR);
	}
	idt_desc.size = sizeof(idt) - 1;
	idt_desc.address = (u32)idt;
	paravirt_ops.load_idt(&idt_desc);
	paravirt_ops.load_tr_desc();
	thread0.esp0 = (u32)kstack + sizeof(kstack);
	thread0.sysenter_cs = __KERNEL_CS;
	paravirt_ops.load_esp0(&tss, &thread0);
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

static void setup_apic(void)
{
	u32 ver = paravirt_ops.apic_read(APIC_LVR);
	if ((ver & 0xFF) < 0x10)
		check_failed("no integrated local APIC", ver);
	paravirt_ops.apic_write(APIC_SPIV, 0x100 | SPURIOUS_APIC_VECTOR);
	paravirt_ops.apic_write(APIC_TASKPRI, 0);
	paravirt_ops.apic_write(APIC_LVT0, APIC_LVT_MASKED);
	paravirt_ops.apic_write(APIC_LVT1, APIC_LVT_MASKED);
	paravirt_ops.apic_write(APIC_LVTERR, ERROR_APIC_VECTOR);
	paravirt_ops.apic_write(APIC_ESR, 0);
	paravirt_ops.setup_boot_clock();
	paravirt_ops.apic_write(APIC_TDCR, 0xB); /* divide by 1 */
	paravirt_ops.apic_write(APIC_LVTT, LOCAL_TIMER_VECTOR | APIC_LVT_TIMER_PERIODIC);
	paravirt_ops.apic_write(APIC_TMICT, 250000);

	u32 entries = ((ioapic_read(1) >> 16) & 0xFF) + 1;
	for (u32 pin = 0; pin < entries; pin++) {
		ioapic_write(0x10 + 2 * pin, 0x10000 | IRQ_VECTOR(pin)); /* masked */
		ioapic_write(0x11 + 2 * pin, 0);
	}
	ioapic_write(0x10 + 2 * TIMER_PIN, IRQ_VECTOR(TIMER_PIN));		 /* edge, high */
	ioapic_write(0x10 + 2 * IODEV_PIN, IRQ_VECTOR(IODEV_PIN) | (1u << 15)); /* level */
}

void do_trap(struct pt_regs *regs)
{
	u32 v = regs->vector;
	if (v == 14) {
		u32 addr = paravirt_ops.read_cr2();
		if (!workload_page_fault(regs, addr))
			check_failed("unhandled page fault", addr);
		return;
	}
	if (v < FIRST_EXTERNAL_VECTOR)
		check_failed("unexpected exception", v | (regs->eip << 8));
	if (v == SYSCALL_VECTOR) {
		regs->eax = workload_syscall(regs);
		return;
	}
	if (v == SPURIOUS_APIC_VECTOR)
		return;
	if (v == ERROR_APIC_VECTOR) {
		paravirt_ops.apic_write(APIC_ESR, 0);
		check_failed("APIC error", paravirt_ops.apic_read(APIC_ESR));
	}
	if (v == LOCAL_TIMER_VECTOR)
		lapic_ticks++;
	else if (v == IRQ_VECTOR(TIMER_PIN))
		jiffies++;
	workload_irq(v);
	paravirt_ops.apic_write(APIC_EOI, 0);
}

void start_kernel(void)
{
	/* zap_low_mappings: the 1:1 alias of low memory is no longer needed */
	paravirt_ops.set_pmd(&swapper_pg_dir[0], 0);
	paravirt_ops.flush_tlb_kernel();
	next_phys = first_free_phys;
	mem_top = rom->mem_bytes;

	paravirt_ops.arch_setup();
	(void)paravirt_ops.memory_setup();
	paravirt_ops.banner();
	setup_descriptors();
	paravirt_ops.init_IRQ();
	setup_apic();
	paravirt_ops.time_init();
	(void)paravirt_ops.get_wallclock();
	(void)paravirt_ops.get_cpu_khz();
	{
		unsigned a = 0, b, c = 0, d;
		paravirt_ops.cpuid(&a, &b, &c, &d);
	}
	(void)paravirt_ops.read_tsc();
	console("pvscope kernel: booted at CPL 1\n");
	paravirt_ops.irq_enable();
	workload_main(rom->scale, rom->seed);
	service(PV_SERVICE_EXIT, 0, 0);
	for (;;)
		paravirt_ops.safe_halt();
}
