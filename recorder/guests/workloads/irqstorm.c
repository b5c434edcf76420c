/*
 * irqstorm: the I/O device's completions at a high rate.  Eight processes read
 * and write the device as a disk, one to sixteen pages per call (a request per
 * page), so that up to 64 requests are in flight and more wait in the driver's
 * queue; two more processes only compute, so that completions also interrupt
 * CPL 3.  Every completion is a level-triggered interrupt whose handler takes
 * the driver's lock with interrupts saved and disabled, acknowledges the device
 * over MMIO, refills it and raises the block softirq; every interrupt ends with
 * an EOI through apic_write.  scale = I/O calls per process.
 */
#include "kernel.h"
#include "user.h"

#define P_INIT 0
#define P_IO 1
#define P_CPU 2
#define NR_IO 8
#define NR_CPU 2
#define BUF_PAGES 16

USER_PROGRAM void storm_io(u32 calls, u32 pid, u32 r)
{
	u32 len = BUF_PAGES * PAGE_SIZE;
	u32 buf = u_mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	u_check(buf >= USER_MMAP_BASE, 0x80);
	u_touch(buf, len, pid);
	for (u32 i = 0; i < calls; i++) {
		u32 pages = 1 + u_rand(&r) % BUF_PAGES;
		if (u_rand(&r) & 1) {
			u_check(u_write(DISK_FD, (void *)buf, pages * PAGE_SIZE) == (int)(pages * PAGE_SIZE), 0x81);
		} else {
			u_check(u_read(DISK_FD, (void *)buf, pages * PAGE_SIZE) == (int)(pages * PAGE_SIZE), 0x82);
			/* the device's data: block number and offset mixed */
			u32 v = *(volatile u32 *)(buf + 8);
			u_check(v == (*(volatile u32 *)buf ^ 8), 0x83);
		}
	}
	u_exit(0);
}

USER_PROGRAM void storm_cpu(u32 calls, u32 pid, u32 r)
{
	u32 x = r;
	for (u32 i = 0; i < calls * 8; i++) {
		for (u32 k = 0; k < 64; k++)
			x = x * 1103515245u + 12345u;
		if ((i & 31) == 0)
			(void)u_getpid();
	}
	u_exit(x == 1 ? 1 : 0);
}

USER_PROGRAM void storm_init(u32 calls, u32 pid, u32 r)
{
	for (u32 k = 0; k < NR_IO + NR_CPU; k++) {
		int c = u_fork();
		if (c == 0)
			u_execve(k < NR_IO ? P_IO : P_CPU, calls);
		u_check(c > 0, 0x90);
	}
	for (u32 k = 0; k < NR_IO + NR_CPU; k++) {
		int st = -1;
		u_check(u_waitpid(-1, &st) > 0, 0x91);
		u_check(st == 0, 0x400 | (u32)st);
	}
	u_exit(0);
}

void (*const user_programs[])(u32, u32, u32) = { storm_init, storm_io, storm_cpu };
const u32 nr_user_programs = 3;

void workload_main(u32 scale, u32 seed)
{
	kcfg.timeslice = 4;
	lapic_set_period(100000);
	blk_init();
	int status = run_init(P_INIT, scale);
	CHECK(status == 0, "irqstorm: init failed", status);
	CHECK(blk_completed == blk_submitted && !blk_in_flight(), "irqstorm: requests lost", blk_submitted - blk_completed);
}
