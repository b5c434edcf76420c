/*
 * pagefault: demand paging under memory pressure.  Four processes each keep a
 * working set that, together, is larger than the memory the kernel lets user
 * pages have; direct reclaim ages their pages (accessed bits cleared with
 * pte_update_defer and single-page flushes) and swaps the cold ones out to the
 * I/O device, and touching them again faults them back in (a device read, its
 * completion interrupt).  Each round a process also maps a transient area,
 * fills part of it and reads the rest (the zero page), write-protects and
 * re-enables half of it with mprotect (then writes fault and reuse the pages),
 * grows it with mremap into a new place (PTEs moved one by one, each flushed),
 * drops two pages with madvise and unmaps it.  scale = rounds per process.
 */
#include "kernel.h"
#include "user.h"

#define P_INIT 0
#define P_WORKER 1
#define NR_WORKERS 4
#define WS_PAGES 40
#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

USER_PROGRAM void pf_worker(u32 rounds, u32 pid, u32 r)
{
	u32 salt = pid << 20;
	u32 ws = u_mmap(0, WS_PAGES * PAGE_SIZE, RW, ANON);
	u_check(ws >= USER_MMAP_BASE, 0x60);
	u_touch(ws, WS_PAGES * PAGE_SIZE, salt);
	for (u32 round = 0; round < rounds; round++) {
		/* revisit the working set: some of it was swapped out meanwhile */
		for (u32 j = 0; j < 8; j++) {
			u32 a = ws + (u_rand(&r) % WS_PAGES) * PAGE_SIZE;
			u_check(*(volatile u32 *)a == (a ^ salt), 0x61);
			if (u_rand(&r) & 1)
				*(volatile u32 *)(a + 4) = round;
		}
		/* a transient area, with a one-page neighbour so that growing it moves it */
		u32 pages = 4 + u_rand(&r) % 20, len = pages * PAGE_SIZE;
		u32 t = u_mmap(0, len, RW, ANON);
		u_check(t >= USER_MMAP_BASE, 0x62);
		u32 guard = u_mmap(t + len, PAGE_SIZE, PROT_READ, ANON | MAP_FIXED);
		u_check(guard == t + len, 0x63);
		u_touch(t, len / 2, salt);
		u_read_pages(t + len / 2, len - len / 2);
		u32 half = (pages / 2) * PAGE_SIZE;
		u_check(u_mprotect(t, half, PROT_READ) == 0, 0x64);
		u_check(u_verify(t, half, salt), 0x65);
		u_check(u_mprotect(t, half, RW) == 0, 0x66);
		u_touch(t, half, salt);
		if (u_rand(&r) & 1) {
			u32 n = u_mremap(t, len, len + 4 * PAGE_SIZE, MREMAP_MAYMOVE);
			u_check(n != t && n >= USER_MMAP_BASE && n < 0xC0000000u, 0x67);
			/* the data moved with the mapping: it was written at its old address */
			for (u32 a = 0; a < half; a += PAGE_SIZE)
				u_check(*(volatile u32 *)(n + a) == ((t + a) ^ salt), 0x68);
			t = n;
			len += 4 * PAGE_SIZE;
			u_touch(t + len - 4 * PAGE_SIZE, 4 * PAGE_SIZE, salt);
		}
		u_check(u_madvise(t, 2 * PAGE_SIZE, MADV_DONTNEED) == 0, 0x69);
		u_check(*(volatile u32 *)t == 0, 0x6A); /* dropped: zero-filled again */
		u_check(u_munmap(t, len) == 0, 0x6B);
		u_check(u_munmap(guard, PAGE_SIZE) == 0, 0x6C);
	}
	u_check(u_munmap(ws, WS_PAGES * PAGE_SIZE) == 0, 0x6D);
	u_exit(0);
}

USER_PROGRAM void pf_init(u32 rounds, u32 pid, u32 r)
{
	for (u32 k = 0; k < NR_WORKERS; k++) {
		int c = u_fork();
		if (c == 0)
			u_execve(P_WORKER, rounds);
		u_check(c > 0, 0x70);
	}
	for (u32 k = 0; k < NR_WORKERS; k++) {
		int st = -1;
		u_check(u_waitpid(-1, &st) > 0, 0x71);
		u_check(st == 0, 0x300 | (u32)st);
	}
	u_exit(0);
}

void (*const user_programs[])(u32, u32, u32) = { pf_init, pf_worker };
const u32 nr_user_programs = 2;

void workload_main(u32 scale, u32 seed)
{
	kcfg.timeslice = 3;
	kcfg.user_page_limit = 112; /* the four working sets alone need 160 */
	lapic_set_period(50000);
	blk_init();
	swap_init(512);
	int status = run_init(P_INIT, scale);
	CHECK(status == 0, "pagefault: init failed", status);
	CHECK(nr_swapped && (nr_swapins || scale < 4), "pagefault: no paging happened", nr_swapped);
}
