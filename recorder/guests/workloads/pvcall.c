/*
 * pvcall: the boot sequence, a short self-test of the machine (a demand page
 * fault in the kernel, a CPL 3 task making system calls and faulting in its
 * own page, a few I/O device requests), then a loop calling hooks of every
 * group while the LAPIC timer and the IOAPIC's periodic timer interrupt it.
 * At the default scale (150000) it makes about 2.7 M hook calls.
 */
#include "kernel.h"

#define DEMAND_ZONE 0xD0000000u
#define DEMAND_PAGES 16
#define SCRATCH 0xD0400000u
#define USER_CODE 0x08048000u
#define USER_STACK_TOP 0xBFFFF000u
#define USER_DEMAND 0x40000000u

extern char __user_start[], __user_end[], __user_lma[];

static volatile u32 syscalls, device_done, device_sent;
static u32 prng;
static u32 counter; /* bumped under the loop's irqsave lock */

/* The CPL 3 task: system calls, a touch of an unmapped page, then exit. */
__attribute__((section(".user.text"), naked)) void user_main(void)
{
	__asm__ volatile("movl $64, %%esi\n"
			 "1:\tmovl $1, %%eax\n\t"
			 "int $0x80\n\t"
			 "decl %%esi\n\t"
			 "jnz 1b\n\t"
			 "movl $0x40000000, %%edi\n\t"
			 "movl $0x5a5a5a5a, (%%edi)\n\t"
			 "movl 4(%%edi), %%eax\n\t"
			 "xorl %%eax, %%eax\n\t"
			 "int $0x80\n\t"
			 "ud2" ::: "memory");
}

/* no exec'able programs: pvcall's task runs on the boot task, without the scheduler */
void (*const user_programs[])(u32, u32, u32) = { NULL };
const u32 nr_user_programs = 0;

int workload_syscall(struct pt_regs *regs)
{
	if (regs->eax == 0)
		user_exit(0);
	syscalls++;
	regs->eax = syscalls;
	return 1;
}

int workload_page_fault(struct pt_regs *regs, u32 addr)
{
	u32 user = (regs->error & 4) != 0;
	if (!user && addr >= DEMAND_ZONE && addr < DEMAND_ZONE + DEMAND_PAGES * PAGE_SIZE) {
		pte_t *pte = pte_for(swapper_pg_dir, addr, 1, _PAGE_TABLE);
		paravirt_ops.set_pte(pte, (alloc_page(1) << PAGE_SHIFT) | _PAGE_KERNEL);
		return 1;
	}
	if (user && addr >= USER_DEMAND && addr < USER_DEMAND + PAGE_SIZE) {
		pte_t *pte = pte_for(swapper_pg_dir, addr, 1, _PAGE_TABLE);
		paravirt_ops.set_pte_at(&init_mm, addr & ~(PAGE_SIZE - 1), pte,
					(alloc_page(1) << PAGE_SHIFT) | _PAGE_KERNEL | _PAGE_USER);
		return 1;
	}
	return 0;
}

static void device_irq(u32 irq, void *dev)
{
	while (mmio_read(IODEV_BASE + IODEV_STATUS) & 0xFF) {
		(void)mmio_read(IODEV_BASE + IODEV_TAG);
		mmio_write(IODEV_BASE + IODEV_ACK, 1);
		device_done++;
	}
}

static void self_test(void)
{
	/* demand paging in the kernel: each first touch faults, the handler maps a frame */
	for (u32 i = 0; i < DEMAND_PAGES; i++) {
		volatile u32 *p = (volatile u32 *)(DEMAND_ZONE + i * PAGE_SIZE);
		if (i & 1)
			*p = i;
		else if (*p != 0)
			check_failed("demand page not zeroed", i);
	}
	/* a CPL 3 task: map its code read-only and a stack, enter it with iret */
	for (u32 va = USER_CODE, pa = (u32)__user_lma; va < USER_CODE + (u32)(__user_end - __user_start);
	     va += PAGE_SIZE, pa += PAGE_SIZE)
		paravirt_ops.set_pte_at(&init_mm, va, pte_for(swapper_pg_dir, va, 1, _PAGE_TABLE),
					pa | _PAGE_PRESENT | _PAGE_USER);
	paravirt_ops.set_pte_at(&init_mm, USER_STACK_TOP - PAGE_SIZE,
				pte_for(swapper_pg_dir, USER_STACK_TOP - PAGE_SIZE, 1, _PAGE_TABLE),
				(alloc_page(1) << PAGE_SHIFT) | _PAGE_KERNEL | _PAGE_USER);
	paravirt_ops.flush_tlb_user();
	run_user(USER_CODE, USER_STACK_TOP);
	if (syscalls != 64)
		check_failed("user task syscalls", syscalls);
	/* four requests to the I/O device; their completions interrupt */
	for (u32 i = 0; i < 4; i++) {
		mmio_write(IODEV_BASE + IODEV_DOORBELL, 100 + i);
		device_sent++;
	}
}

void workload_main(u32 scale, u32 seed)
{
	prng = seed;
	request_irq(IODEV_PIN, device_irq, NULL, 1);
	self_test();

	pte_t *scratch = pte_for(swapper_pg_dir, SCRATCH, 1, _PAGE_TABLE) -
			 ((SCRATCH >> PAGE_SHIFT) & 1023);
	u32 pteval = (alloc_page(1) << PAGE_SHIFT) | _PAGE_KERNEL;

	/* The loop is written so that hook calls, not loop bookkeeping, take most of
	 * its instructions: the recorder's speed is measured on it. */
	for (u32 i = 0; i < scale; i++) {
		/* a spinlock with irqsave, as every 2.6.21 driver takes one */
		unsigned long flags = paravirt_ops.save_fl();
		paravirt_ops.irq_disable();
		counter++;
		paravirt_ops.restore_fl(flags);

		/* and one without saving flags, as spin_lock_irq/spin_unlock_irq do */
		paravirt_ops.irq_disable();
		counter++;
		paravirt_ops.irq_enable();

		/* map four scratch pages, the last three batched in lazy MMU mode */
		u32 slot = (i << 2) & 1023;
		pte_t *pte = &scratch[slot];
		paravirt_ops.set_pte(pte, pteval);
		arch_enter_lazy_mmu_mode();
		paravirt_ops.set_pte(pte + 1, pteval);
		paravirt_ops.set_pte(pte + 2, pteval);
		paravirt_ops.set_pte(pte + 3, pteval);
		arch_leave_lazy_mmu_mode();
		*pte &= ~_PAGE_RW; /* write-protect in place, as ptep_set_wrprotect does */
		paravirt_ops.pte_update(&init_mm, SCRATCH + (slot << PAGE_SHIFT), pte);
		(void)paravirt_ops.read_cr3();
		(void)paravirt_ops.read_cr0();
		(void)paravirt_ops.save_fl();

		paravirt_ops.irq_disable();
		counter += paravirt_ops.read_cr2() & 1;
		paravirt_ops.irq_enable();

		if ((i & 63) != 0)
			continue;
		paravirt_ops.flush_tlb_single(SCRATCH + (slot << PAGE_SHIFT));
		(void)paravirt_ops.apic_read(APIC_TASKPRI);
		if ((i & 1023) == 0) {
			paravirt_ops.set_pte(pte, 0);
			paravirt_ops.flush_tlb_user();
			(void)paravirt_ops.get_wallclock();
			(void)paravirt_ops.read_tsc();
			paravirt_ops.apic_write(APIC_TASKPRI, 0);
			if (device_sent - device_done < 8) {
				mmio_write(IODEV_BASE + IODEV_DOORBELL, prng_next(&prng));
				device_sent++;
			}
		}
	}
	/* let the last device requests complete */
	while (device_done < device_sent)
		paravirt_ops.safe_halt();
	if (counter < scale)
		check_failed("lost updates", counter);
}
