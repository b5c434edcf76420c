/*
 * sched: many CPL 3 tasks under a fast timer tick.  init starts pairs of tasks
 * joined by a pipe (a producer and a consumer that block on each other) and
 * solo tasks, each looping `scale` times over short computations and system
 * calls (getpid, gettimeofday, sched_yield, nanosleep).  Some solo tasks carry
 * the state __switch_to has to move: the FPU (lazy: #NM, clts, stts), an I/O
 * privilege level (set_iopl_mask), an LDT (set_ldt), a TLS segment in %gs
 * (load_tls), debug registers (set_debugreg); one single-steps itself now and
 * then (#DB, get_debugreg).  The local APIC timer preempts them every few ticks.
 */
#include "kernel.h"
#include "user.h"

#define P_INIT 0
#define P_PAIR 1
#define P_SOLO 2
#define NR_PAIRS 6
#define ROLE_PLAIN 0
#define ROLE_FPU 1
#define ROLE_IOPL 2
#define ROLE_LDT 3
#define ROLE_TLS 4
#define ROLE_DEBUGREG 5
#define ROLE_STEP 6
#define NR_ROLES 7

__uinline u32 compute(u32 x, u32 n)
{
	for (u32 i = 0; i < n; i++)
		x = x * 1103515245u + 12345u;
	return x;
}

__uinline void fpu_step(u32 *acc)
{
	__asm__ volatile("fildl %0\n\tfld1\n\tfaddp\n\tfistpl %0" : "+m"(*acc));
}

/* one pass of the common loop: a computation, now and then a system call */
__uinline void tick_work(u32 i, u32 *r)
{
	*r = compute(*r, 24);
	if ((i & 3) == 1)
		u_yield();
	if ((i & 7) == 3) {
		u32 tv[2];
		u_gettimeofday(tv);
	}
	if ((i & 31) == 17)
		u_sleep(1 + (*r & 1));
	if ((i & 63) == 5)
		(void)u_getpid();
}

USER_PROGRAM void sched_pair(u32 iters, u32 pid, u32 r)
{
	int fds[2];
	u_check(u_pipe(fds) == 0, 0x30);
	int child = u_fork();
	u_check(child >= 0, 0x31);
	if (child == 0) { /* consumer */
		u_close(fds[1]);
		u32 buf[16], expect = 0;
		for (;;) {
			int n = u_read(fds[0], buf, sizeof(buf));
			if (n == 0)
				break;
			u_check(n > 0 && (n & 3) == 0, 0x32);
			for (int k = 0; k < n / 4; k++)
				u_check(buf[k] == expect++, 0x33);
			tick_work(expect, &r);
		}
		u_check(expect == iters * 8, 0x34);
		u_exit(0);
	}
	u_close(fds[0]);
	u32 seq = 0;
	for (u32 i = 0; i < iters; i++) {
		u32 buf[8];
		for (int k = 0; k < 8; k++)
			buf[k] = seq++;
		u_check(u_write(fds[1], buf, sizeof(buf)) == sizeof(buf), 0x35);
		tick_work(i, &r);
	}
	u_close(fds[1]);
	int st = -1;
	u_check(u_waitpid(child, &st) == child && st == 0, 0x36);
	u_exit(0);
}

USER_PROGRAM void sched_solo(u32 arg, u32 pid, u32 r)
{
	u32 role = arg & 0xFF, iters = arg >> 8;
	u32 acc = 0, tls_word = 0x7157AB1Eu;
	if (role == ROLE_IOPL)
		u_check(u_iopl(3) == 0, 0x40);
	if (role == ROLE_LDT) {
		struct user_desc d;
		d.entry_number = 1;
		d.base_addr = 0;
		d.limit = 0xFFFFF;
		d.flags = 0x11;
		u_check(u_modify_ldt(1, &d, sizeof(d)) == 0, 0x41);
	}
	if (role == ROLE_TLS) {
		struct user_desc d;
		d.entry_number = (u32)-1;
		d.base_addr = (u32)&tls_word;
		d.limit = 0xFFFFF;
		d.flags = 0x51;
		u_check(u_set_thread_area(&d) == 0 && d.entry_number >= 6 && d.entry_number <= 8, 0x42);
		u32 sel = (d.entry_number << 3) | 3;
		__asm__ volatile("movl %0, %%gs" ::"r"(sel));
	}
	if (role == ROLE_DEBUGREG) {
		u_check(u_debugreg(0, (u32)&acc) == 0, 0x43);
		u_check(u_debugreg(7, 0x000D0001u) == 0, 0x44); /* DR0: data writes, 4 bytes */
	}
	for (u32 i = 0; i < iters; i++) {
		if (role == ROLE_FPU)
			fpu_step(&acc);
		if (role == ROLE_TLS) {
			u32 v;
			__asm__ volatile("movl %%gs:0, %0" : "=r"(v));
			u_check(v == 0x7157AB1Eu, 0x45);
		}
		if (role == ROLE_STEP && (i & 31) == 17)
			__asm__ volatile("pushfl\n\torl $0x100, (%%esp)\n\tpopfl\n\tnop\n\tnop" ::: "memory", "cc");
		tick_work(i, &r);
	}
	if (role == ROLE_FPU)
		u_check(acc == iters, 0x46);
	u_exit(0);
}

USER_PROGRAM void sched_main(u32 iters, u32 pid, u32 r)
{
	u32 n = 0;
	for (u32 k = 0; k < NR_PAIRS; k++, n++) {
		int c = u_fork();
		if (c == 0)
			u_execve(P_PAIR, iters);
		u_check(c > 0, 0x50);
	}
	for (u32 role = 0; role < NR_ROLES; role++) {
		for (u32 copies = 0; copies < (role == ROLE_FPU ? 3u : 1u); copies++, n++) {
			int c = u_fork();
			if (c == 0)
				u_execve(P_SOLO, role | (iters << 8));
			u_check(c > 0, 0x51);
		}
	}
	for (u32 k = 0; k < n; k++) {
		int st = -1;
		u_check(u_waitpid(-1, &st) > 0, 0x52);
		u_check(st == 0, 0x200 | (u32)st);
	}
	u_exit(0);
}

void (*const user_programs[])(u32, u32, u32) = { sched_main, sched_pair, sched_solo };
const u32 nr_user_programs = 3;

void workload_main(u32 scale, u32 seed)
{
	kcfg.timeslice = 1;
	lapic_set_period(20000);
	int status = run_init(P_INIT, scale);
	CHECK(status == 0, "sched: init failed", status);
}
