/*
 * Early boot, paging off, running from the low (physical) alias: probe the
 * hypervisor ROM, fill paravirt_ops from its entry table, build the kernel's
 * page tables through the hooks (alloc_pd, alloc_pt, set_pte, set_pmd), load
 * CR3, turn paging on with write_cr0 and enter the kernel at PAGE_OFFSET.
 * Nothing here may touch a high address until paging is on.
 */
#include "kernel.h"

#define BOOT __attribute__((section(".boot.text")))

extern char _end[];
extern u32 first_free_phys, boot_cpu_features;
extern void enter_high(u32 stack_top) __attribute__((noreturn));
extern char boot_stack_top[];

BOOT static void boot_fail(void)
{
	for (;;)
		__asm__ volatile("ud2");
}

BOOT static u32 boot_alloc(u32 *next)
{
	u32 p = *next;
	volatile u32 *w = (volatile u32 *)p;
	for (u32 i = 0; i < PAGE_SIZE / 4; i++)
		w[i] = 0;
	*next = p + PAGE_SIZE;
	return p;
}

BOOT static void boot_map_table(struct paravirt_ops *pv, pte_t *pgd, u32 pde_index, u32 pt,
				u32 first_phys, u32 flags, u32 count)
{
	pte_t *t = (pte_t *)pt;
	pv->alloc_pt(pt >> PAGE_SHIFT);
	for (u32 j = 0; j < count; j++)
		pv->set_pte(&t[j], (first_phys + (j << PAGE_SHIFT)) | flags);
	pv->set_pmd(&pgd[pde_index], pt | _PAGE_TABLE);
}

/* where the ROM slot at addr leads: the target of its jmp (rel32 or rel8), else the slot */
static BOOT void *rom_entry_target(u32 addr)
{
	const u8 *p = (const u8 *)addr;
	if (p[0] == 0xE9)
		return (void *)(addr + 5 + *(const s32 *)(p + 1));
	if (p[0] == 0xEB)
		return (void *)(addr + 2 + (s8)p[1]);
	return (void *)addr;
}

BOOT void boot_main(void)
{
	struct pv_rom_header *r = (struct pv_rom_header *)PV_HV_BASE;
	if (r->signature[0] != 'P' || r->signature[1] != 'V' || r->signature[2] != 'S' ||
	    r->signature[3] != 'C' || r->signature[4] != 'O' || r->signature[5] != 'P' ||
	    r->signature[6] != 'E' || r->signature[7] != 0)
		boot_fail();
	if (r->abi != PV_ROM_ABI || r->entry_count < PARAVIRT_NR_HOOKS)
		boot_fail();

	struct paravirt_ops *pv = (struct paravirt_ops *)__pa(&paravirt_ops);
	pv->kernel_rpl = r->kernel_rpl;
	pv->paravirt_enabled = 1;
	pv->name = (const char *)r->name;
	/* each entry-table slot holds a jmp to the entry's code: call the code directly,
	 * as VMI's relocation records let a kernel do, and save a jump per hook call */
	void **slot = (void **)&pv->patch;
	for (u32 i = 0; i < PARAVIRT_NR_HOOKS; i++)
		slot[i] = rom_entry_target(r->entry_table + 8 * i);
	*(struct pv_rom_header **)__pa(&rom) = r;

	/* identify the CPU first: 2.6.21's pagetable_init turns on global pages (PGE)
	 * before it builds the kernel's page tables, and marks kernel PTEs global */
	unsigned a = 1, b, c = 0, d;
	pv->cpuid(&a, &b, &c, &d);
	*(u32 *)__pa(&boot_cpu_features) = d;
	u32 kflags = _PAGE_KERNEL | _PAGE_ACCESSED | _PAGE_DIRTY;
	if (d & X86_FEATURE_PGE) {
		pv->write_cr4(pv->read_cr4() | X86_CR4_PGE);
		kflags |= _PAGE_GLOBAL;
	}
	*(u32 *)__pa(&__PAGE_KERNEL) = kflags;
	*(u32 *)__pa(&__PAGE_KERNEL_RO) = kflags & ~_PAGE_RW;

	pte_t *pgd = (pte_t *)__pa(swapper_pg_dir);
	pv->alloc_pd(__pa(swapper_pg_dir) >> PAGE_SHIFT);
	u32 next = (__pa(_end) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
	u32 first_pt = 0;
	/* the kernel's linear map of low memory at PAGE_OFFSET */
	u32 lowmem = r->mem_bytes < LOWMEM_LIMIT ? r->mem_bytes : LOWMEM_LIMIT;
	for (u32 p = 0; p < lowmem; p += 1u << 22) {
		u32 pt = boot_alloc(&next);
		u32 n = lowmem - p >= (1u << 22) ? PTRS_PER_PTE : (lowmem - p) >> 12;
		if (!first_pt)
			first_pt = pt;
		boot_map_table(pv, pgd, (PAGE_OFFSET + p) >> 22, pt, p, kflags, n);
	}
	/* the low 4 MiB stay mapped 1:1 until we run from PAGE_OFFSET */
	pv->set_pmd(&pgd[0], first_pt | _PAGE_TABLE);
	/* the hypervisor region 1:1, its trampoline page user-executable */
	u32 hv = boot_alloc(&next);
	boot_map_table(pv, pgd, r->hv_base >> 22, hv, r->hv_base, _PAGE_KERNEL, PTRS_PER_PTE);
	pv->set_pte(&((pte_t *)hv)[(r->user_page >> 12) & 1023],
		    r->user_page | _PAGE_PRESENT | _PAGE_USER);
	/* local APIC, IOAPIC and the I/O device, uncached */
	u32 apic = boot_alloc(&next);
	pv->alloc_pt(apic >> PAGE_SHIFT);
	pv->set_pte(&((pte_t *)apic)[(LAPIC_BASE >> 12) & 1023], LAPIC_BASE | kflags | 0x18);
	pv->set_pte(&((pte_t *)apic)[(IOAPIC_BASE >> 12) & 1023], IOAPIC_BASE | kflags | 0x18);
	pv->set_pmd(&pgd[LAPIC_BASE >> 22], apic | _PAGE_TABLE);
	u32 dev = boot_alloc(&next);
	pv->alloc_pt(dev >> PAGE_SHIFT);
	pv->set_pte(&((pte_t *)dev)[(IODEV_BASE >> 12) & 1023], IODEV_BASE | kflags | 0x18);
	pv->set_pmd(&pgd[IODEV_BASE >> 22], dev | _PAGE_TABLE);

	*(u32 *)__pa(&first_free_phys) = next;
	pv->write_cr3(__pa(swapper_pg_dir));
	/* paging on, with head.S's WP, NE and MP (the kernel relies on WP for COW) */
	pv->write_cr0(pv->read_cr0() | X86_CR0_PG | X86_CR0_WP | X86_CR0_NE | X86_CR0_MP);
	enter_high((u32)boot_stack_top);
}
