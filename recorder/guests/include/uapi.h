/* The system-call interface between the kernel and its CPL 3 programs (Linux i386 numbers). */
#ifndef PV_UAPI_H
#define PV_UAPI_H

#define __NR_exit 1
#define __NR_fork 2
#define __NR_read 3
#define __NR_write 4
#define __NR_close 6
#define __NR_waitpid 7
#define __NR_execve 11 /* here: execve(program number, argument, 0) */
#define __NR_getpid 20
#define __NR_pipe 42
#define __NR_brk 45
#define __NR_gettimeofday 78
#define __NR_munmap 91
#define __NR_iopl 110
#define __NR_modify_ldt 123
#define __NR_mprotect 125
#define __NR_sched_yield 158
#define __NR_nanosleep 162 /* here: nanosleep(ticks of the local APIC timer) */
#define __NR_mremap 163
#define __NR_mmap2 192
#define __NR_madvise 219
#define __NR_set_thread_area 243
/* pvscope's own: set one of the caller's debug registers, as a debugger's
 * PTRACE_POKEUSER would; and report a failed check in a user program */
#define __NR_pv_debugreg 320
#define __NR_pv_check 321
#define NR_SYSCALLS 322

#define PROT_READ 1
#define PROT_WRITE 2
#define PROT_EXEC 4
#define MAP_SHARED 1
#define MAP_PRIVATE 2
#define MAP_FIXED 0x10
#define MAP_ANONYMOUS 0x20
#define MREMAP_MAYMOVE 1
#define MADV_DONTNEED 4
#define EFAULT 14
#define ENOMEM 12
#define EINVAL 22
#define ENOSYS 38
#define ECHILD 10
#define EAGAIN 11
#define EBADF 9
#define EMFILE 24

#define STDOUT_FD 1
#define DISK_FD 3 /* every task starts with the I/O device open as fd 3 */

#define USER_BASE 0x08048000u
#define USER_STACK_TOP 0xBFFFF000u
#define USER_STACK_PAGES 2
#define USER_MMAP_BASE 0x40000000u

/* struct user_desc for set_thread_area and modify_ldt */
struct user_desc {
	unsigned int entry_number;
	unsigned int base_addr;
	unsigned int limit;
	unsigned int flags; /* bit 0 seg_32bit, bit 4 limit_in_pages, bit 5 seg_not_present, bit 6 useable */
};
#endif
