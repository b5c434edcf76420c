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
extern u32 first_free_phys;
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
	void **slot = (void **)&pv->patch;
	for (u32 i = 0; i < PARAVIRT_NR_HOOKS; i++)
		slot[i] = (void *)(r->entry_table + 8 * i);
	*(struct pv_rom_header **)__pa(&rom) = r;

	pte_t *pgd = (pte_t *)__pa(swapper_pg_dir);
	pv->alloc_pd(__pa(swapper_pg_dir) >> PAGE_SHIFT);
	u32 next = (__pa(_end) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
	u32 first_pt = 0;
	/* the kernel's linear map of all RAM at PAGE_OFFSET */
	for (u32 p = 0; p < r->mem_bytes; p += 1u << 22) {
		u32 pt = boot_alloc(&next);
		u32 n = r->mem_bytes - p >= (1u << 22) ? PTRS_PER_PTE : (r->mem_bytes - p) >> 12;
		if (!first_pt)
			first_pt = pt;
		boot_map_table(pv, pgd, (PAGE_OFFSET + p) >> 22, pt, p, _PAGE_KERNEL, n);
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
	pv->set_pte(&((pte_t *)apic)[(LAPIC_BASE >> 12) & 1023], LAPIC_BASE | _PAGE_KERNEL | 0x18);
	pv->set_pte(&((pte_t *)apic)[(IOAPIC_BASE >> 12) & 1023], IOAPIC_BASE | _PAGE_KERNEL | 0x18);
	pv->set_pmd(&pgd[LAPIC_BASE >> 22], apic | _PAGE_TABLE);
	u32 dev = boot_alloc(&next);
	pv->alloc_pt(dev >> PAGE_SHIFT);
	pv->set_pte(&((pte_t *)dev)[(IODEV_BASE >> 12) & 1023], IODEV_BASE | _PAGE_KERNEL | 0x18);
	pv->set_pmd(&pgd[IODEV_BASE >> 22], dev | _PAGE_TABLE);

	*(u32 *)__pa(&first_free_phys) = next;
	pv->write_cr3(__pa(swapper_pg_dir));
	pv->write_cr0(pv->read_cr0() | 0x80000000u);
	enter_high((u32)boot_stack_top);
}
