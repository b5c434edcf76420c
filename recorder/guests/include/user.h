/*
 * The CPL 3 side: system-call wrappers and small helpers for the workloads' user
 * programs.  User code lives in .user.text, which the kernel maps at USER_BASE as
 * each process's executable; it may use only its registers, its stack and the
 * memory it maps, so everything here is inline and touches no kernel data.
 */
#ifndef PV_USER_H
#define PV_USER_H
#include "types.h"
#include "uapi.h"

#define __user_text __attribute__((section(".user.text"), noinline))
#define __uinline static inline __attribute__((always_inline))
#define USER_PROGRAM __attribute__((section(".user.text"), noreturn, used))

__uinline int sys0(u32 nr)
{
	int r;
	__asm__ volatile("int $0x80" : "=a"(r) : "0"(nr) : "memory");
	return r;
}
__uinline int sys1(u32 nr, u32 a)
{
	int r;
	__asm__ volatile("int $0x80" : "=a"(r) : "0"(nr), "b"(a) : "memory");
	return r;
}
__uinline int sys2(u32 nr, u32 a, u32 b)
{
	int r;
	__asm__ volatile("int $0x80" : "=a"(r) : "0"(nr), "b"(a), "c"(b) : "memory");
	return r;
}
__uinline int sys3(u32 nr, u32 a, u32 b, u32 c)
{
	int r;
	__asm__ volatile("int $0x80" : "=a"(r) : "0"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return r;
}
__uinline int sys5(u32 nr, u32 a, u32 b, u32 c, u32 d, u32 e)
{
	int r;
	__asm__ volatile("int $0x80"
			 : "=a"(r)
			 : "0"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
			 : "memory");
	return r;
}

__uinline __attribute__((noreturn)) void u_exit(int code)
{
	sys1(__NR_exit, (u32)code);
	__builtin_unreachable();
}
__uinline int u_fork(void) { return sys0(__NR_fork); }
__uinline int u_getpid(void) { return sys0(__NR_getpid); }
__uinline int u_yield(void) { return sys0(__NR_sched_yield); }
__uinline int u_sleep(u32 ticks) { return sys1(__NR_nanosleep, ticks); }
__uinline int u_waitpid(int pid, int *status) { return sys3(__NR_waitpid, (u32)pid, (u32)status, 0); }
__uinline int u_execve(u32 prog, u32 arg) { return sys3(__NR_execve, prog, arg, 0); }
__uinline int u_read(int fd, void *buf, u32 n) { return sys3(__NR_read, (u32)fd, (u32)buf, n); }
__uinline int u_write(int fd, const void *buf, u32 n) { return sys3(__NR_write, (u32)fd, (u32)buf, n); }
__uinline int u_close(int fd) { return sys1(__NR_close, (u32)fd); }
__uinline int u_pipe(int *fds) { return sys1(__NR_pipe, (u32)fds); }
__uinline u32 u_brk(u32 addr) { return (u32)sys1(__NR_brk, addr); }
__uinline u32 u_mmap(u32 addr, u32 len, u32 prot, u32 flags)
{
	return (u32)sys5(__NR_mmap2, addr, len, prot, flags, (u32)-1);
}
__uinline int u_munmap(u32 addr, u32 len) { return sys2(__NR_munmap, addr, len); }
__uinline int u_mprotect(u32 addr, u32 len, u32 prot) { return sys3(__NR_mprotect, addr, len, prot); }
__uinline u32 u_mremap(u32 addr, u32 old_len, u32 new_len, u32 flags)
{
	return (u32)sys5(__NR_mremap, addr, old_len, new_len, flags, 0);
}
__uinline int u_madvise(u32 addr, u32 len, u32 advice) { return sys3(__NR_madvise, addr, len, advice); }
__uinline int u_gettimeofday(u32 *tv) { return sys2(__NR_gettimeofday, (u32)tv, 0); }
__uinline int u_iopl(u32 level) { return sys1(__NR_iopl, level); }
__uinline int u_modify_ldt(u32 func, void *ptr, u32 bytes) { return sys3(__NR_modify_ldt, func, (u32)ptr, bytes); }
__uinline int u_set_thread_area(struct user_desc *d) { return sys1(__NR_set_thread_area, (u32)d); }
__uinline int u_debugreg(u32 reg, u32 value) { return sys2(__NR_pv_debugreg, reg, value); }
/* a failed check in a user program: the kernel ends the run and says why */
__uinline void u_check(int ok, u32 code)
{
	if (!ok)
		sys1(__NR_pv_check, code);
}

__uinline u32 u_rand(u32 *s)
{
	u32 x = *s ? *s : 0x9E3779B9u;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

/* touch every page of [addr, addr + len): write a word derived from the address */
__uinline void u_touch(u32 addr, u32 len, u32 salt)
{
	for (u32 a = addr; a < addr + len; a += PAGE_SIZE)
		*(volatile u32 *)a = a ^ salt;
}
__uinline int u_verify(u32 addr, u32 len, u32 salt)
{
	for (u32 a = addr; a < addr + len; a += PAGE_SIZE)
		if (*(volatile u32 *)a != (a ^ salt))
			return 0;
	return 1;
}
__uinline void u_read_pages(u32 addr, u32 len)
{
	for (u32 a = addr; a < addr + len; a += PAGE_SIZE)
		(void)*(volatile u32 *)a;
}
#endif
