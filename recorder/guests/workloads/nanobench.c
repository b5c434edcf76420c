/*
 * nanobench: Adams & Agesen's nanobenchmarks (ASPLOS 2006, "A Comparison of
 * Software and Hardware Techniques for x86 Virtualization", section 6.2) and
 * lmbench-style operations, each performed N = NB_OPS_PER_SCALE * scale times in a
 * phase of its own, so that a replay can be divided into cycles per operation.
 *
 * Phases.  Right before a phase's loop the kernel reports
 * service(PV_SERVICE_PHASE, id, N); right after it, service(PV_SERVICE_PHASE, 0, 0)
 * ("no phase": NB_END).  Every loop is so bracketed, not only the last, so that
 * what runs between two phases (a process started or reaped, the next phase set
 * up) belongs to none.  The ids are recorder/nanobench.py's PHASES (a test checks
 * this enum against them) and run in id order.  A CPL 3 program cannot call the
 * ROM's service entry itself: it marks a phase by touching NB_UPCALL, a kernel
 * address, with the phase in eax and N in edx; the kernel's do_page_fault finds no
 * fixup for a user access above TASK_SIZE and offers the fault to
 * workload_page_fault, which reports the phase and resumes the program at the
 * address in ecx.  So a user phase also holds the return from its opening marker
 * (exit_to_user, iret) and the entry of its closing one (one page fault, read_cr2).
 *
 * What each nanobenchmark is on this machine (an i386 kernel at CPL 1 on
 * paravirt_ops, tasks at CPL 3), against the paper's definition:
 *
 *  1 syscall   paper: a user-to-kernel round trip by syscall/sysret.  Here: a null
 *              int $0x80 from CPL 3 (this machine has no sysenter/syscall): a number
 *              the kernel does not implement, answered -ENOSYS by do_syscall, and the
 *              return by iret.  Operation: a softint, vector 0x80.
 *  2 in        paper: in from port 0x80, an off-CPU chipset register.  Here: a
 *              32-bit read of the I/O device's STATUS register (MMIO at IODEV_BASE,
 *              recorder/devices.py IoDevice.BASE + 0x04), side-effect free, the
 *              access every backend must intercept and emulate.  (io_delay's port
 *              0x80 write is a hook the ROM performs, not an access a backend
 *              traps, so it is not used.)  Operation: an mmio_read.
 *  3 cr8wr     paper: a write of %cr8, the task priority.  i386 has no CR8; the
 *              same register is the local APIC's TPR: apic_write(APIC_TASKPRI, 0)
 *              through paravirt_ops, as pvcall does.  Operation: an apic_write hook.
 *  4 call/ret  paper: a call/return pair, the cost of indirect control flow.
 *              Here: the cheapest paravirt hook call whose native body is trivial:
 *              set_lazy_mode(PARAVIRT_LAZY_FLUSH) outside any lazy mode (2.6.21's
 *              native op is paravirt_nop, so natively it is exactly an indirect call
 *              and its ret).  Operation: a set_lazy_mode hook.
 *  5 pgfault   paper: a true page fault (the guest's own page tables say not
 *              present), delivered to the guest's handler.  Here: a kernel-mode load
 *              from an address swapper_pg_dir does not map, with an exception-table
 *              entry: do_page_fault (read_cr2) finds no mm and resolves the fault
 *              through fixup_exception, changing no mapping, and returns by iret.
 *              Operation: an exception, vector 14.
 *  6 divzero   paper: a divide-by-zero fault and its handler's return.  Here: a
 *              divl by zero at CPL 3.  The kernel's do_trap would kill the task
 *              (SIGFPE's default action), so for this phase the workload points IDT
 *              vector 0 (write_idt_entry, a trap gate as trap_init makes) at a null
 *              handler that steps over the 2-byte divl and returns by iret; the
 *              kernel's own gate is written back afterwards.  Operation: an
 *              exception, vector 0.
 *  7 ptemod    paper: a store to a PTE of a live (shadowed/traced) page table.
 *              Here: set_pte_at(&init_mm, ...) rewriting the PTE of a mapped,
 *              touched kernel page in the loaded page directory, toggling its dirty
 *              bit (the frame and permissions stay, so no flush is needed).
 *              Operation: a set_pte_at hook.
 *
 * and the lmbench-style operations (lmbench 3's lat_syscall, lat_proc, lat_ctx,
 * lat_pagefault, lat_mmap, as far as this kernel's system calls allow):
 *
 *  8 null_syscall  getpid (lat_syscall null uses getppid).  Operation: softint 0x80.
 *  9 fork_exit     fork; the child exits at once; the parent waits for it
 *                  (lat_proc fork).  Operation: an address space cloned
 *                  (alloc_pd_clone).
 * 10 ctxsw         two processes alternating by sched_yield (lat_ctx passes a
 *                  token through pipes; this measures the switch with the least
 *                  around it).  An operation is one switch, so each process yields
 *                  N / 2 times.  Operation: __switch_to's load_esp0.
 * 11 page_fault    the first read of each page of an N-page anonymous mapping:
 *                  a demand fault that maps the zero page (lat_pagefault faults in
 *                  a file's cached pages: a mapping made, no page allocated).
 *                  Operation: an exception, vector 14, at CPL 3.
 * 12 mmap_munmap   mmap 4 anonymous pages, write the first, munmap (lat_mmap).
 *                  Operation: two system calls (softint 0x80).
 *
 * Timer interrupts keep running (LAPIC at its default period), as they would under
 * a real benchmark; their events fall in whichever phase they interrupt.
 * N = NB_OPS_PER_SCALE * scale (a test checks it against recorder/nanobench.py).
 */
#include "kernel.h"
#include "user.h"

#define NB_OPS_PER_SCALE 100
#define NB_STR(x) NB_STR2(x)
#define NB_STR2(x) #x

enum nb_phase {
	NB_END = 0,
	NB_SYSCALL = 1,
	NB_IN = 2,
	NB_CR8WR = 3,
	NB_CALL_RET = 4,
	NB_PGFAULT = 5,
	NB_DIVZERO = 6,
	NB_PTEMOD = 7,
	NB_NULL_SYSCALL = 8,
	NB_FORK_EXIT = 9,
	NB_CTXSW = 10,
	NB_PAGE_FAULT = 11,
	NB_MMAP_MUNMAP = 12,
};

#define P_SYSCALL 0
#define P_DIVZERO 1
#define P_LMBENCH 2

#define NB_UPCALL PAGE_OFFSET          /* mapped, but not for CPL 3: a protection fault */
#define NB_UNMAPPED 0x7FC00000u        /* a page directory slot swapper_pg_dir leaves empty */
#define NB_PTE_VA 0xD0400000u          /* below VMALLOC_START: the ptemod page */
#define MAP_PAGES 4

/* --- the CPL 3 side ------------------------------------------------------------------ */

/* mark a phase from CPL 3: a load from NB_UPCALL, resumed at 1: by workload_page_fault */
__uinline void nb_mark(u32 phase, u32 ops)
{
	u32 addr = NB_UPCALL;
	__asm__ volatile("movl $1f, %%ecx\n\t"
			 "movl (%%ebx), %%ebx\n"
			 "1:"
			 : "+b"(addr)
			 : "a"(phase), "d"(ops)
			 : "ecx", "memory");
}

USER_PROGRAM void nb_syscall(u32 n, u32 pid, u32 r)
{
	int bad = 0;
	nb_mark(NB_SYSCALL, n);
	for (u32 i = 0; i < n; i++)
		bad |= sys0(NR_SYSCALLS) != -ENOSYS;
	nb_mark(NB_END, 0);
	u_check(!bad, 0xB1);
	u_exit(0);
}

USER_PROGRAM void nb_divzero(u32 n, u32 pid, u32 r)
{
	u32 skipped = 0;
	nb_mark(NB_DIVZERO, n);
	for (u32 i = 0; i < n; i++) {
		u32 q = 1, rem = 0;
		/* divl %ecx (f7 f1) by zero: the handler resumes 2 bytes on, eax untouched */
		__asm__ volatile("divl %%ecx" : "+a"(q), "+d"(rem) : "c"(0) : "cc");
		skipped += q;
	}
	nb_mark(NB_END, 0);
	u_check(skipped == n, 0xB2);
	u_exit(0);
}

USER_PROGRAM void nb_lmbench(u32 n, u32 pid, u32 r)
{
	int st;

	nb_mark(NB_NULL_SYSCALL, n);
	for (u32 i = 0; i < n; i++)
		u_check(u_getpid() == (int)pid, 0xB3);
	nb_mark(NB_END, 0);

	nb_mark(NB_FORK_EXIT, n);
	for (u32 i = 0; i < n; i++) {
		int c = u_fork();
		if (c == 0)
			u_exit(0);
		st = -1;
		u_check(c > 0 && u_waitpid(c, &st) == c && st == 0, 0xB4);
	}
	nb_mark(NB_END, 0);

	/* the partner is forked outside the phase; each of the two yields n / 2 times */
	u32 half = (n + 1) / 2;
	int c = u_fork();
	if (c == 0) {
		for (u32 i = 0; i <= half; i++)
			u_yield();
		u_exit(0);
	}
	u_check(c > 0, 0xB5);
	nb_mark(NB_CTXSW, n);
	for (u32 i = 0; i < half; i++)
		u_yield();
	nb_mark(NB_END, 0);
	st = -1;
	u_check(u_waitpid(c, &st) == c && st == 0, 0xB6);

	u32 a = u_mmap(0, n * PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS);
	u_check(a >= USER_MMAP_BASE, 0xB7);
	u32 sum = 0;
	nb_mark(NB_PAGE_FAULT, n);
	for (u32 i = 0; i < n; i++)
		sum |= *(volatile u32 *)(a + i * PAGE_SIZE);
	nb_mark(NB_END, 0);
	u_check(sum == 0 && u_munmap(a, n * PAGE_SIZE) == 0, 0xB8);

	nb_mark(NB_MMAP_MUNMAP, n);
	for (u32 i = 0; i < n; i++) {
		u32 m = u_mmap(0, MAP_PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
		u_check(m >= USER_MMAP_BASE, 0xB9);
		*(volatile u32 *)m = i;
		u_check(u_munmap(m, MAP_PAGES * PAGE_SIZE) == 0, 0xBA);
	}
	nb_mark(NB_END, 0);
	u_exit(0);
}

void (*const user_programs[])(u32, u32, u32) = { nb_syscall, nb_divzero, nb_lmbench };
const u32 nr_user_programs = 3;

/* --- the kernel side ------------------------------------------------------------------ */

static void phase(u32 id, u32 ops) { service(PV_SERVICE_PHASE, id, ops); }

/* a CPL 3 program's phase marker (see nb_mark) */
int workload_page_fault(struct pt_regs *regs, u32 addr)
{
	if (!user_mode(regs) || addr != NB_UPCALL || regs->ebx != NB_UPCALL)
		return 0;
	phase(regs->eax, regs->edx);
	regs->eip = regs->ecx;
	return 1;
}

/* the divzero phase's vector-0 handler: step over the divl, return by iret */
extern void nb_divide_error(void);
__asm__(".text\n"
	".globl nb_divide_error\n"
	"nb_divide_error:\n\t"
	"addl $2, (%esp)\n\t"
	"jmp *%cs:paravirt_ops + " NB_STR(PV_iret) "\n");

/* trap_init's gate encoding (setup.c set_gate) */
static void gate(u32 *g, void (*handler)(void), u32 dpl)
{
	u32 off = (u32)handler;
	g[0] = (off & 0xFFFF) | ((u32)__KERNEL_CS << 16);
	g[1] = (off & 0xFFFF0000) | 0x8000 | (dpl << 13) | (0xFu << 8);
}

static void (*stub(u32 vector))(void)
{
	for (u32 i = 0; i < trap_stub_count; i++)
		if (trap_stub_vectors[i] == vector)
			return trap_stubs[i];
	check_failed("nanobench: no entry stub", vector);
}

/*
 * The IDT the kernel loaded: the table is private to setup.c, and store_idt is a
 * hook no 2.6.21 path of this kind calls, so find it in the kernel's data by the
 * two trap gates trap_init wrote (vector 0 and the system-call gate).
 */
static u32 *find_idt(void)
{
	extern char __end_rodata[], _end[];
	u32 g0[2], g80[2];
	gate(g0, stub(0), 1);
	gate(g80, stub(SYSCALL_VECTOR), 3);
	for (u32 *p = (u32 *)(((u32)__end_rodata + 7) & ~7u); p + 512 <= (u32 *)_end; p += 2)
		if (p[0] == g0[0] && p[1] == g0[1] && p[2 * SYSCALL_VECTOR] == g80[0] &&
		    p[2 * SYSCALL_VECTOR + 1] == g80[1])
			return p;
	check_failed("nanobench: the IDT was not found", 0);
}

static void set_vector0(u32 *idt, void (*handler)(void))
{
	u32 g[2];
	gate(g, handler, 1);
	paravirt_ops.write_idt_entry(idt, 0, g[0], g[1]);
}

/* a kernel-mode load that faults and is resolved by the exception table */
static inline u32 load_fixup(u32 addr)
{
	u32 v = 0xFFFFFFFFu;
	__asm__ volatile("1:\tmovl (%1), %0\n2:\n"
			 ".pushsection __ex_table, \"a\"\n\t.balign 4\n\t.long 1b, 2b\n\t.popsection"
			 : "+r"(v)
			 : "r"(addr)
			 : "memory");
	return v;
}

void workload_main(u32 scale, u32 seed)
{
	u32 n = NB_OPS_PER_SCALE * scale;
	u32 *idt = find_idt();
	int status;

	/* 1 syscall, at CPL 3 */
	status = run_init(P_SYSCALL, n);
	CHECK(status == 0, "nanobench: syscall program failed", status);

	/* 2 in: an intercepted device register read */
	u32 acc = 0;
	phase(NB_IN, n);
	for (u32 i = 0; i < n; i++)
		acc |= mmio_read(IODEV_BASE + IODEV_STATUS);
	phase(NB_END, 0);
	CHECK(acc == 0, "nanobench: the idle device reported completions", acc);

	/* 3 cr8wr: the task priority, i386's CR8 */
	phase(NB_CR8WR, n);
	for (u32 i = 0; i < n; i++)
		paravirt_ops.apic_write(APIC_TASKPRI, 0);
	phase(NB_END, 0);

	/* 4 call/ret: a hook call whose native body is empty */
	phase(NB_CALL_RET, n);
	for (u32 i = 0; i < n; i++)
		paravirt_ops.set_lazy_mode(PARAVIRT_LAZY_FLUSH);
	phase(NB_END, 0);

	/* 5 pgfault: a true fault, resolved without a mapping change */
	CHECK(!(swapper_pg_dir[pgd_index(NB_UNMAPPED)] & _PAGE_PRESENT),
	      "nanobench: the pgfault address is mapped", NB_UNMAPPED);
	u32 fixed = 0;
	phase(NB_PGFAULT, n);
	for (u32 i = 0; i < n; i++)
		fixed += load_fixup(NB_UNMAPPED + ((i & 7) << PAGE_SHIFT)) == 0xFFFFFFFFu;
	phase(NB_END, 0);
	CHECK(fixed == n, "nanobench: a pgfault load did not fault", fixed);

	/* 6 divzero, at CPL 3, under the workload's own vector-0 handler */
	set_vector0(idt, nb_divide_error);
	status = run_init(P_DIVZERO, n);
	set_vector0(idt, stub(0));
	CHECK(status == 0, "nanobench: divzero program failed", status);

	/* 7 ptemod: rewrite a live kernel PTE */
	pte_t *pte = pte_for(swapper_pg_dir, NB_PTE_VA, 1, _KERNPG_TABLE);
	u32 pte0 = (alloc_page(1) << PAGE_SHIFT) | _PAGE_KERNEL | _PAGE_ACCESSED;
	paravirt_ops.set_pte(pte, pte0);
	*(volatile u32 *)NB_PTE_VA = seed;
	phase(NB_PTEMOD, n);
	for (u32 i = 0; i < n; i++)
		paravirt_ops.set_pte_at(&init_mm, NB_PTE_VA, pte, pte0 | ((i & 1) ? 0 : _PAGE_DIRTY));
	phase(NB_END, 0);
	CHECK(*(volatile u32 *)NB_PTE_VA == seed, "nanobench: the ptemod page changed", seed);
	paravirt_ops.set_pte(pte, 0);
	paravirt_ops.flush_tlb_single(NB_PTE_VA);
	put_page(pte0 >> PAGE_SHIFT);

	/* 8..12: lmbench-style, at CPL 3 */
	status = run_init(P_LMBENCH, n);
	CHECK(status == 0, "nanobench: lmbench program failed", status);
}
