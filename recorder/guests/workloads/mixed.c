/*
 * mixed: a kernel build in miniature.  "make" keeps four compile jobs running;
 * each "cc" grows its heap with brk, reads its source from the disk, works over
 * the heap (demand faults, some FPU arithmetic), and pipes its output to an
 * "as" it forked and exec'd, which writes the object to the disk; every eight
 * jobs an "ld" maps a large area, reads the objects back, grows the area with
 * mremap and drops it.  User memory is limited, so reclaim and swap join in;
 * the local APIC timer preempts the jobs.  scale = compile jobs.
 */
#include "kernel.h"
#include "user.h"

#define P_MAKE 0
#define P_CC 1
#define P_AS 2
#define P_LD 3
#define JOBS 4
#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

USER_PROGRAM void mixed_as(u32 fd, u32 pid, u32 r)
{
	u32 buf[256], sum = 0, total = 0;
	for (;;) {
		int n = u_read((int)fd, buf, sizeof(buf));
		u_check(n >= 0, 0xA0);
		if (!n)
			break;
		for (int k = 0; k < n / 4; k++)
			sum += buf[k];
		total += (u32)n;
	}
	u_check(total > 0 && (sum & 1) == ((total / 4) & 1), 0xA1);
	buf[0] = sum;
	u_check(u_write(DISK_FD, buf, sizeof(buf)) == sizeof(buf), 0xA2);
	u_exit(0);
}

USER_PROGRAM void mixed_cc(u32 job, u32 pid, u32 r)
{
	u32 heap = u_brk(0), pages = 8 + u_rand(&r) % 24, len = 0;
	while (len < pages * PAGE_SIZE) {
		len += 4 * PAGE_SIZE;
		u_check(u_brk(heap + len) == heap + len, 0xA8);
		u_touch(heap + len - 4 * PAGE_SIZE, 4 * PAGE_SIZE, job);
	}
	/* the source */
	u_check(u_read(DISK_FD, (void *)heap, 2 * PAGE_SIZE) == 2 * PAGE_SIZE, 0xA9);
	/* "parse" and "optimise": passes over the heap, a little floating point */
	u32 acc = 0;
	for (u32 pass = 0; pass < 3; pass++) {
		for (u32 a = heap; a < heap + len; a += PAGE_SIZE / 2)
			*(volatile u32 *)a += a ^ pass;
		__asm__ volatile("fildl %0\n\tfld1\n\tfaddp\n\tfistpl %0" : "+m"(acc));
	}
	u_check(acc == 3, 0xAA);
	/* cc | as */
	int fds[2];
	u_check(u_pipe(fds) == 0, 0xAB);
	int as = u_fork();
	if (as == 0) {
		u_close(fds[1]);
		u_execve(P_AS, (u32)fds[0]);
	}
	u_check(as > 0, 0xAC);
	u_close(fds[0]);
	u32 out[64];
	u32 chunks = 4 + u_rand(&r) % 12;
	for (u32 c = 0; c < chunks; c++) {
		for (int k = 0; k < 64; k++)
			out[k] = (c * 64 + (u32)k) * 2;
		u_check(u_write(fds[1], out, sizeof(out)) == sizeof(out), 0xAD);
	}
	u_close(fds[1]);
	int st = -1;
	u_check(u_waitpid(as, &st) == as && st == 0, 0xAE);
	u_check(u_brk(heap) == heap, 0xAF);
	u_exit(0);
}

USER_PROGRAM void mixed_ld(u32 objs, u32 pid, u32 r)
{
	u32 len = 24 * PAGE_SIZE;
	u32 a = u_mmap(0, len, RW, ANON);
	u_check(a >= USER_MMAP_BASE, 0xB0);
	u32 guard = u_mmap(a + len, PAGE_SIZE, PROT_READ, ANON | MAP_FIXED);
	u_check(guard == a + len, 0xB1);
	for (u32 o = 0; o < objs && o < 8; o++)
		u_check(u_read(DISK_FD, (void *)(a + o * PAGE_SIZE), PAGE_SIZE) == PAGE_SIZE, 0xB2);
	u_touch(a + 8 * PAGE_SIZE, len - 8 * PAGE_SIZE, pid);
	u32 b = u_mremap(a, len, len + 8 * PAGE_SIZE, MREMAP_MAYMOVE);
	u_check(b != a && b >= USER_MMAP_BASE && b < 0xC0000000u, 0xB3);
	for (u32 o = 8 * PAGE_SIZE; o < len; o += PAGE_SIZE) /* written at the old address */
		u_check(*(volatile u32 *)(b + o) == ((a + o) ^ pid), 0xB4);
	u_touch(b + len, 8 * PAGE_SIZE, pid);
	u_check(u_munmap(b, len + 8 * PAGE_SIZE) == 0 && u_munmap(guard, PAGE_SIZE) == 0, 0xB5);
	u_exit(0);
}

USER_PROGRAM void mixed_make(u32 jobs, u32 pid, u32 r)
{
	u32 running = 0;
	for (u32 j = 0; j < jobs; j++) {
		if (running == JOBS) {
			int st = -1;
			u_check(u_waitpid(-1, &st) > 0 && st == 0, 0xB8);
			running--;
		}
		int c = u_fork();
		if (c == 0)
			u_execve(P_CC, j);
		u_check(c > 0, 0xB9);
		running++;
		if ((j & 7) == 7) {
			while (running) {
				int st = -1;
				u_check(u_waitpid(-1, &st) > 0 && st == 0, 0xBA);
				running--;
			}
			c = u_fork();
			if (c == 0)
				u_execve(P_LD, 8);
			int st = -1;
			u_check(c > 0 && u_waitpid(c, &st) == c && st == 0, 0xBB);
		}
	}
	while (running) {
		int st = -1;
		u_check(u_waitpid(-1, &st) > 0 && st == 0, 0xBC);
		running--;
	}
	u_exit(0);
}

void (*const user_programs[])(u32, u32, u32) = { mixed_make, mixed_cc, mixed_as, mixed_ld };
const u32 nr_user_programs = 4;

void workload_main(u32 scale, u32 seed)
{
	kcfg.timeslice = 3;
	kcfg.user_page_limit = 128;
	lapic_set_period(50000);
	blk_init();
	swap_init(512);
	int status = run_init(P_MAKE, scale);
	CHECK(status == 0, "mixed: make failed", status);
}
