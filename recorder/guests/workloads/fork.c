/*
 * fork: address-space churn.  init maps and fills a few areas (demand-zero
 * pages, zero-page reads, a heap), then, round after round, forks one to four
 * children.  Each child checks it sees its parent's memory, writes some of it
 * (copy-on-write breaks), sometimes forks a grandchild or execs a small program
 * with an address space of its own, and exits; init waits for them, checks
 * their writes did not reach it, and writes its pages again, which it can now
 * reuse in place.  Every few rounds init unmaps and remaps an area.
 * scale = rounds.  Requirements 3 and 4 heavy: page directories cloned and
 * released, page tables allocated and released, PTEs copied, write-protected,
 * zapped.
 */
#include "kernel.h"
#include "user.h"

#define A_BASE 0x40000000u /* one page table each */
#define A_LEN (32 * PAGE_SIZE)
#define B_BASE 0x40400000u
#define B_LEN (16 * PAGE_SIZE)
#define C_BASE 0x40800000u
#define C_LEN (8 * PAGE_SIZE)
#define HEAP_LEN (4 * PAGE_SIZE)
#define SALT_P 0x5A5A0000u
#define SALT_C 0xC3C30000u
#define P_INIT 0
#define P_SMALL 1

static __user_text void child(u32 round, u32 k, u32 r)
{
	/* what the parent wrote is visible through the shared pages */
	u32 i = u_rand(&r) % 32;
	u_check(*(volatile u32 *)(A_BASE + i * PAGE_SIZE) == ((A_BASE + i * PAGE_SIZE) ^ SALT_P), 0x10);
	/* break copy-on-write on a few pages, and check our own copies */
	u32 n = 2 + (u_rand(&r) & 7);
	for (u32 j = 0; j < n; j++) {
		u32 a = A_BASE + ((i + j * 5) % 32) * PAGE_SIZE;
		*(volatile u32 *)a = a ^ SALT_C;
		u_check(*(volatile u32 *)a == (a ^ SALT_C), 0x11);
	}
	u_read_pages(C_BASE, C_LEN);
	if ((round & 3) == 0 && k == 0) {
		int pid = u_fork();
		if (pid == 0) {
			u32 a = B_BASE + B_LEN / 2 + (u_rand(&r) % 8) * PAGE_SIZE;
			*(volatile u32 *)a = 1; /* a copy of the zero page */
			u_exit(0);
		}
		int st = -1;
		u_check(u_waitpid(pid, &st) == pid && st == 0, 0x12);
	}
	if ((round % 5) == 2 && k == 1)
		u_execve(P_SMALL, round);
	u_exit(0);
}

USER_PROGRAM void fork_init(u32 rounds, u32 pid, u32 r)
{
	u_check(u_mmap(A_BASE, A_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED) == A_BASE, 1);
	u_check(u_mmap(B_BASE, B_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED) == B_BASE, 2);
	u_check(u_mmap(C_BASE, C_LEN, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED) == C_BASE, 3);
	u32 heap = u_brk(0);
	u_check(u_brk(heap + HEAP_LEN) == heap + HEAP_LEN, 4);
	u_touch(A_BASE, A_LEN, SALT_P);
	u_touch(B_BASE, B_LEN / 2, SALT_P);
	u_read_pages(B_BASE + B_LEN / 2, B_LEN / 2);
	u_read_pages(C_BASE, C_LEN);
	u_touch(heap, HEAP_LEN, SALT_P);
	for (u32 round = 0; round < rounds; round++) {
		u32 n = 1 + (u_rand(&r) & 3);
		for (u32 k = 0; k < n; k++) {
			int c = u_fork();
			u_check(c >= 0, 5);
			if (c == 0)
				child(round, k, r ^ (k * 0x9E3779B9u));
		}
		for (u32 k = 0; k < n; k++) {
			int st = -1;
			u_check(u_waitpid(-1, &st) > 0, 6);
			u_check(st == 0, 0x100 | (u32)st);
		}
		/* the children's writes stayed theirs */
		u_check(u_verify(A_BASE, A_LEN, SALT_P), 7);
		u_check(u_verify(heap, HEAP_LEN, SALT_P), 8);
		/* the pages are ours alone again: writing them reuses them in place */
		for (u32 a = A_BASE + (round & 1) * PAGE_SIZE; a < A_BASE + A_LEN; a += 2 * PAGE_SIZE)
			*(volatile u32 *)a = a ^ SALT_P;
		if ((round & 7) == 7) {
			/* the B area goes (and its page table with it) and comes back */
			u_check(u_munmap(B_BASE, B_LEN) == 0, 9);
			u_check(u_mmap(B_BASE, B_LEN, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED) == B_BASE, 10);
			u_touch(B_BASE, B_LEN / 2, SALT_P);
		}
	}
	u_exit(0);
}

/* what a child sometimes execs: a fresh address space that maps, fills and drops memory */
USER_PROGRAM void fork_small(u32 round, u32 pid, u32 r)
{
	u32 len = (4 + (u_rand(&r) & 7)) * PAGE_SIZE;
	u32 a = u_mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	u_check(a >= USER_MMAP_BASE, 0x20);
	u_touch(a, len, pid);
	u_check(u_verify(a, len, pid), 0x21);
	u_check(u_munmap(a, len) == 0, 0x22);
	u_exit(0);
}

void (*const user_programs[])(u32, u32, u32) = { fork_init, fork_small };
const u32 nr_user_programs = 2;

void workload_main(u32 scale, u32 seed)
{
	kcfg.timeslice = 3;
	lapic_set_period(100000);
	int status = run_init(P_INIT, scale);
	CHECK(status == 0, "fork: init failed", status);
}
