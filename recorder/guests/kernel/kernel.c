/*
 * The kernel's core at PAGE_OFFSET and CPL 1: reports to the hypervisor, the
 * kernel's own checks, uniprocessor spinlocks, boot-time patching of the
 * paravirt call sites, and the dispatcher every interrupt, exception and system
 * call goes through.  Every privileged operation goes through paravirt_ops, as
 * Linux 2.6.21 does.
 */
#include "kernel.h"

struct paravirt_ops paravirt_ops;
struct pv_rom_header *rom;
volatile u32 preempt_count;

/* SysRq-C for tests: after this many system calls, dereference NULL as
 * sysrq_handle_crash does (0 = never).  Tests patch it in a copy of the image. */
u32 sysrq_crash_after __attribute__((section(".data")));

extern struct paravirt_patch __parainstructions[], __parainstructions_end[];

void service(u32 code, u32 a, u32 b)
{
	void (*svc)(u32, u32, u32) = (void (*)(u32, u32, u32))rom->service;
	svc(code, a, b);
}

u32 strlen(const char *s)
{
	u32 n = 0;
	while (s[n])
		n++;
	return n;
}

void console(const char *s) { service(PV_SERVICE_CONSOLE, (u32)s, strlen(s)); }

/* console a line: prefix, then v in decimal */
void printk_u(const char *prefix, u32 v)
{
	static char buf[96];
	u32 n = 0;
	while (prefix[n] && n < 80) {
		buf[n] = prefix[n];
		n++;
	}
	char digits[12];
	int d = 0;
	do {
		digits[d++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (d)
		buf[n++] = digits[--d];
	buf[n++] = '\n';
	buf[n] = 0;
	console(buf);
}

/*
 * A kernel invariant failed: tell the hypervisor, which ends the run with status
 * guest-check and this message.  Nothing after it runs.
 */
void check_failed(const char *what, u32 detail)
{
	service(PV_SERVICE_CHECK, (u32)what, detail);
	for (;;)
		paravirt_ops.halt();
}

/* the workload is done: report and stop (kernel_halt) */
void do_exit_kernel(void)
{
	service(PV_SERVICE_EXIT, 0, 0);
	for (;;)
		paravirt_ops.safe_halt();
}

void spin_lock(spinlock_t *l)
{
	if (l->locked)
		check_failed(l->name ? l->name : "spinlock recursion", (u32)l);
	l->locked = 1;
	preempt_count++;
	barrier();
}

void spin_unlock(spinlock_t *l)
{
	barrier();
	if (!l->locked)
		check_failed("unlock of an unlocked spinlock", (u32)l);
	l->locked = 0;
	preempt_count--;
}

/*
 * alternative.c's apply_paravirt: offer every recorded call site to the backend.
 * The ROM keeps each site as it is (it returns the site's length); a larger
 * answer would be a backend bug, which 2.6.21 BUG()s on.  sync_core is a cpuid.
 */
#ifndef PV_APPLY_PARAVIRT
#define PV_APPLY_PARAVIRT 1
#endif

void apply_paravirt(void)
{
	unsigned long flags;
	local_irq_save(flags);
	for (struct paravirt_patch *p = __parainstructions; p < __parainstructions_end; p++) {
		u32 used = PV_APPLY_PARAVIRT
				   ? paravirt_ops.patch(p->instrtype, p->clobbers, p->instr, p->len)
				   : p->len;
		CHECK(used <= p->len, "paravirt patch longer than its site", (u32)p->instr);
		for (u32 i = used; i < p->len; i++)
			p->instr[i] = 0x90;
	}
	{
		unsigned a = 1, b, c = 0, d;
		paravirt_ops.cpuid(&a, &b, &c, &d);
	}
	local_irq_restore(flags);
}

/* traps.c's do_debug: a single-step trap (a debugger's, or the task's own TF) */
static void do_debug(struct pt_regs *regs)
{
	u32 condition = paravirt_ops.get_debugreg(6);
	if (regs->eflags & X86_EFLAGS_IF)
		local_irq_enable();
	if (!user_mode(regs)) {
		/* single-stepping into a kernel (or hypervisor) entry path: clear TF and
		 * carry on, as clear_TF_reenable does */
		regs->eflags &= ~X86_EFLAGS_TF;
		return;
	}
	(void)condition;
	/* send_sigtrap: the programs here handle SIGTRAP by stopping the stepping */
	regs->eflags &= ~X86_EFLAGS_TF;
	current->thread.debugreg[6] = condition;
	paravirt_ops.set_debugreg(7, 0);
}

/* device_not_available: GET_CR0_INTO_EAX; no emulation; math_state_restore */
static void device_not_available(struct pt_regs *regs)
{
	u32 cr0 = paravirt_ops.read_cr0();
	CHECK(!(cr0 & X86_CR0_EM), "FPU emulation is not configured", cr0);
	math_state_restore();
}

static const char *const exception_names[] = {
	"divide error", "debug", "NMI", "int3", "overflow", "bounds", "invalid opcode",
	"device not available", "double fault", "coprocessor segment overrun", "invalid TSS",
	"segment not present", "stack segment", "general protection", "page fault", "reserved",
	"coprocessor error", "alignment check", "machine check", "SIMD error",
};

void do_trap(struct pt_regs *regs)
{
	u32 v = regs->vector;
	if (v == SYSCALL_VECTOR) {
		do_syscall(regs);
		return;
	}
	if (v == 14) {
		if (!do_page_fault(regs))
			check_failed("unable to handle kernel paging request", paravirt_ops.read_cr2());
		return;
	}
	if (v >= FIRST_EXTERNAL_VECTOR) {
		do_IRQ(regs);
		return;
	}
	if (v == 7) {
		device_not_available(regs);
		return;
	}
	if (v == 1) {
		do_debug(regs);
		return;
	}
	if (user_mode(regs) && current->mm) {
		/* a fault the program caused: the signal's default action kills it */
		if (regs->eflags & X86_EFLAGS_IF)
			local_irq_enable();
		do_exit(v == 6 ? 128 + 4 : 128 + 11);
	}
	check_failed(v < ARRAY_SIZE(exception_names) ? exception_names[v] : "unexpected exception",
		     regs->eip);
}

extern u32 nr_execs, nr_pipes_live;

/*
 * The timer works and masking holds it back: spin with interrupts off for about 1.5
 * local APIC periods (6 instructions an iteration), check no tick was taken, restore
 * the flags and check the tick came then.  Every trace thus has at least one interrupt
 * raised inside a masked section -- what a hypervisor that cannot virtualize masking
 * gets wrong -- however the workload's own masked sections fall against the timer.
 */
static void check_masked_tick(void)
{
	unsigned long flags = paravirt_ops.save_fl();
	paravirt_ops.irq_disable();
	u32 ticks = lapic_ticks;
	for (volatile u32 k = 0; k < kcfg.hz_insns / 4; k++)
		;
	CHECK(lapic_ticks == ticks, "timer tick taken while masked", lapic_ticks - ticks);
	paravirt_ops.restore_fl(flags);
	CHECK(lapic_ticks != ticks, "masked timer tick not delivered at unmask", ticks);
}

/* after boot: the workload, then the kernel's closing checks, then the exit report */
void start_workloads(void)
{
	check_masked_tick();
	workload_main(rom->scale, rom->seed);
	CHECK(current == &init_task, "workload returned outside the boot task", current->pid);
	CHECK(nr_tasks == 0, "tasks left at the end", nr_tasks);
	CHECK(nr_pipes_live == 0, "pipes left open at the end", nr_pipes_live);
	CHECK(!preempt_count, "a lock held at the end", preempt_count);
	mm_check_accounting();
	if (nr_forks || nr_execs) {
		printk_u("forks: ", nr_forks);
		printk_u("context switches: ", nr_switches);
		printk_u("copy-on-write breaks: ", nr_cow);
	}
	console("pvscope kernel: workload done, invariants hold\n");
	do_exit_kernel();
}
