/*
 * System calls (int $0x80, Linux i386 numbers and argument registers): process
 * control, memory, files (the console, the I/O device as a disk, pipes), the
 * I/O privilege level, the LDT and TLS, time, and two of pvscope's own.
 */
#include "kernel.h"

u32 nr_syscalls;
extern u64 wall_ns;

/* --- files ------------------------------------------------------------------------- */

#define FILE_CONSOLE 1
#define FILE_DISK 2
#define FILE_PIPE_R 3
#define FILE_PIPE_W 4
#define PIPE_BUF_SIZE 2048

struct pipe {
	u8 *buf; /* a vmalloc'd page */
	u32 rd, count;
	u32 readers, writers;
	struct wait_queue_head wait;
	int used;
};

struct file {
	u32 type;
	u32 refs;
	struct pipe *pipe;
};

#define MAX_FILES 128
#define MAX_PIPES 32
static struct file file_pool[MAX_FILES];
static struct pipe pipe_pool[MAX_PIPES];
static struct file console_file = { FILE_CONSOLE, 1, NULL };
static struct file disk_file = { FILE_DISK, 1, NULL };
struct file *std_files[NR_OPEN] = { NULL, &console_file, &console_file, &disk_file };
u32 nr_pipes_live;

struct file *file_get(struct file *f)
{
	f->refs++;
	return f;
}

void file_put(struct file *f)
{
	CHECK(f->refs, "file reference underflow", (u32)f);
	if (--f->refs || f == &console_file || f == &disk_file)
		return;
	struct pipe *p = f->pipe;
	if (p) {
		if (f->type == FILE_PIPE_R)
			p->readers--;
		else
			p->writers--;
		wake_up(&p->wait);
		if (!p->readers && !p->writers) {
			vfree(p->buf, PAGE_SIZE);
			p->used = 0;
			nr_pipes_live--;
		}
	}
	f->type = 0;
}

static struct file *file_alloc(u32 type, struct pipe *p)
{
	for (u32 i = 0; i < MAX_FILES; i++)
		if (!file_pool[i].type) {
			file_pool[i].type = type;
			file_pool[i].refs = 1;
			file_pool[i].pipe = p;
			return &file_pool[i];
		}
	check_failed("out of file structures", MAX_FILES);
}

static int fd_install(struct file *f)
{
	for (int fd = 0; fd < NR_OPEN; fd++)
		if (!current->files[fd]) {
			current->files[fd] = f;
			return fd;
		}
	file_put(f);
	return -EMFILE;
}

static int sys_pipe(u32 ufds)
{
	struct pipe *p = NULL;
	for (u32 i = 0; i < MAX_PIPES; i++)
		if (!pipe_pool[i].used) {
			p = &pipe_pool[i];
			break;
		}
	CHECK(p, "out of pipes", MAX_PIPES);
	p->used = 1;
	p->buf = vmalloc(PAGE_SIZE);
	p->rd = p->count = 0;
	p->readers = p->writers = 1;
	init_waitqueue_head(&p->wait);
	nr_pipes_live++;
	int fds[2];
	fds[0] = fd_install(file_alloc(FILE_PIPE_R, p));
	fds[1] = fd_install(file_alloc(FILE_PIPE_W, p));
	CHECK(fds[0] >= 0 && fds[1] >= 0, "no descriptors for a pipe", 0);
	return copy_to_user(ufds, fds, sizeof(fds));
}

static int pipe_read(struct pipe *p, u32 ubuf, u32 n)
{
	while (!p->count && p->writers) {
		prepare_to_wait(&p->wait, TASK_INTERRUPTIBLE);
		if (!p->count && p->writers)
			schedule();
		finish_wait(&p->wait);
	}
	if (n > p->count)
		n = p->count;
	u32 done = 0;
	while (done < n) {
		u32 chunk = PIPE_BUF_SIZE - p->rd;
		if (chunk > n - done)
			chunk = n - done;
		if (copy_to_user(ubuf + done, p->buf + p->rd, chunk))
			return -EFAULT;
		p->rd = (p->rd + chunk) % PIPE_BUF_SIZE;
		p->count -= chunk;
		done += chunk;
	}
	wake_up(&p->wait);
	return (int)n;
}

static int pipe_write(struct pipe *p, u32 ubuf, u32 n)
{
	u32 done = 0;
	while (done < n) {
		while (p->count == PIPE_BUF_SIZE && p->readers) {
			prepare_to_wait(&p->wait, TASK_INTERRUPTIBLE);
			if (p->count == PIPE_BUF_SIZE && p->readers)
				schedule();
			finish_wait(&p->wait);
		}
		if (!p->readers)
			return done ? (int)done : -32; /* EPIPE */
		u32 wr = (p->rd + p->count) % PIPE_BUF_SIZE;
		u32 chunk = PIPE_BUF_SIZE - wr; /* up to the end of the ring */
		if (chunk > PIPE_BUF_SIZE - p->count)
			chunk = PIPE_BUF_SIZE - p->count;
		if (chunk > n - done)
			chunk = n - done;
		if (copy_from_user(p->buf + wr, ubuf + done, chunk))
			return -EFAULT;
		p->count += chunk;
		done += chunk;
		wake_up(&p->wait);
	}
	return (int)done;
}

/*
 * The disk: one device request per page.  Like DMA, the transfer itself costs the
 * CPU nothing; the kernel copies only each page's first 64 bytes (a header of
 * block number and offset) between the program's buffer and its own.
 */
#define DISK_HDR 64
static u32 disk_seq;

static int disk_rw(u32 ubuf, u32 n, int write)
{
	u32 hdr[DISK_HDR / 4];
	if (!n)
		return 0;
	u32 pages = (n + PAGE_SIZE - 1) / PAGE_SIZE;
	u32 seq = disk_seq;
	disk_seq += pages;
	if (write)
		for (u32 p = 0; p < pages; p++) {
			u32 k = n - p * PAGE_SIZE < DISK_HDR ? n - p * PAGE_SIZE : DISK_HDR;
			if (copy_from_user(hdr, ubuf + p * PAGE_SIZE, k))
				return -EFAULT;
		}
	blk_rw(pages, (write ? 0x10000u : 0x20000u) | (seq & 0xFFFF));
	if (!write)
		for (u32 p = 0; p < pages; p++) {
			u32 k = n - p * PAGE_SIZE < DISK_HDR ? n - p * PAGE_SIZE : DISK_HDR;
			for (u32 i = 0; i < DISK_HDR / 4; i++)
				hdr[i] = (seq + p) ^ (i * 4);
			if (copy_to_user(ubuf + p * PAGE_SIZE, hdr, k))
				return -EFAULT;
		}
	return (int)n;
}

static int sys_read(u32 fd, u32 buf, u32 n)
{
	struct file *f = fd < NR_OPEN ? current->files[fd] : NULL;
	if (!f)
		return -EBADF;
	if (f->type == FILE_DISK)
		return disk_rw(buf, n, 0);
	if (f->type == FILE_PIPE_R)
		return pipe_read(f->pipe, buf, n);
	return -EBADF;
}

static int sys_write(u32 fd, u32 buf, u32 n)
{
	struct file *f = fd < NR_OPEN ? current->files[fd] : NULL;
	if (!f)
		return -EBADF;
	if (f->type == FILE_DISK)
		return disk_rw(buf, n, 1);
	if (f->type == FILE_PIPE_W)
		return pipe_write(f->pipe, buf, n);
	if (f->type == FILE_CONSOLE) {
		static char line[128];
		u32 k = n < sizeof(line) - 1 ? n : sizeof(line) - 1;
		if (copy_from_user(line, buf, k))
			return -EFAULT;
		line[k] = 0;
		console(line);
		return (int)n;
	}
	return -EBADF;
}

static int sys_close(u32 fd)
{
	if (fd >= NR_OPEN || !current->files[fd])
		return -EBADF;
	file_put(current->files[fd]);
	current->files[fd] = NULL;
	return 0;
}

/* --- segments and privileges -------------------------------------------------------------- */

static void pack_descriptor(struct desc_struct *d, const struct user_desc *info)
{
	u32 base = info->base_addr, limit = info->limit;
	d->a = ((base & 0xFFFF) << 16) | (limit & 0xFFFF);
	d->b = (base & 0xFF000000) | ((base >> 16) & 0xFF) | (limit & 0xF0000) |
	       ((info->flags & 0x20) ? 0 : 0x8000) | /* present unless seg_not_present */
	       (3u << 13) | 0x1000 | 0x200 |           /* DPL 3, code/data, writable data */
	       ((info->flags & 1) ? 0x400000 : 0) |    /* 32-bit */
	       ((info->flags & 0x10) ? 0x800000 : 0);  /* limit in pages */
}

/* do_set_thread_area: a TLS descriptor, loaded at once with load_TLS */
static int sys_set_thread_area(u32 uinfo)
{
	struct user_desc info;
	if (copy_from_user(&info, uinfo, sizeof(info)))
		return -EFAULT;
	u32 idx = info.entry_number;
	if (idx == (u32)-1) {
		for (idx = GDT_ENTRY_TLS_MIN; idx < GDT_ENTRY_TLS_MIN + GDT_ENTRY_TLS_ENTRIES; idx++)
			if (!current->thread.tls_array[idx - GDT_ENTRY_TLS_MIN].b)
				break;
		if (idx == GDT_ENTRY_TLS_MIN + GDT_ENTRY_TLS_ENTRIES)
			return -EAGAIN;
		info.entry_number = idx;
		if (copy_to_user(uinfo, &info.entry_number, 4))
			return -EFAULT;
	}
	if (idx < GDT_ENTRY_TLS_MIN || idx >= GDT_ENTRY_TLS_MIN + GDT_ENTRY_TLS_ENTRIES)
		return -EINVAL;
	pack_descriptor(&current->thread.tls_array[idx - GDT_ENTRY_TLS_MIN], &info);
	paravirt_ops.load_tls(&current->thread, 0);
	return 0;
}

/* ldt.c's write_ldt: grow the LDT to a page (alloc_ldt, reloaded with set_ldt),
 * then write the entry with write_ldt_entry */
static int sys_modify_ldt(u32 func, u32 ptr, u32 bytes)
{
	struct mm_struct *mm = current->mm;
	struct user_desc info;
	if (func != 1 || bytes != sizeof(info))
		return -ENOSYS;
	if (copy_from_user(&info, ptr, sizeof(info)))
		return -EFAULT;
	if (info.entry_number >= PAGE_SIZE / 8)
		return -EINVAL;
	if (!mm->ldt) {
		u32 pfn = alloc_page(1);
		mm->ldt = __va(pfn << PAGE_SHIFT);
		mm->ldt_size = PAGE_SIZE / 8;
		paravirt_ops.set_ldt(mm->ldt, mm->ldt_size);
	}
	struct desc_struct d;
	pack_descriptor(&d, &info);
	paravirt_ops.write_ldt_entry(mm->ldt, (int)info.entry_number, d.a, d.b);
	return 0;
}

/* sys_iopl: this kernel keeps IOPL 1 for itself, so levels 1 to 3 */
static int sys_iopl(struct pt_regs *regs, u32 level)
{
	if (level > 3)
		return -EINVAL;
	if (level < 1)
		level = 1;
	current->thread.iopl = level << 12;
	regs->eflags = (regs->eflags & ~X86_EFLAGS_IOPL) | current->thread.iopl;
	paravirt_ops.set_iopl_mask(current->thread.iopl);
	return 0;
}

static int sys_pv_debugreg(u32 reg, u32 value)
{
	if (reg > 7 || reg == 4 || reg == 5)
		return -EINVAL;
	current->thread.debugreg[reg] = value;
	if (reg == 7) {
		if (value)
			current->tif |= TIF_DEBUG;
		else
			current->tif &= ~TIF_DEBUG;
	}
	return 0;
}

static int sys_gettimeofday(u32 tv)
{
	u64 ns = wall_ns + (clock_read() & 0xFFFFF); /* clocksource read since the last tick */
	u32 rem;
	u32 sec = paravirt_ops.get_wallclock() + (u32)div_u64_rem(ns, 1000000000u, &rem);
	u32 out[2] = { sec, rem / 1000 };
	return copy_to_user(tv, out, sizeof(out));
}

static int sys_waitpid(int pid, u32 ustatus)
{
	int status = 0;
	int r = do_wait(pid, &status, 0);
	if (r > 0 && ustatus && copy_to_user(ustatus, &status, sizeof(status)))
		return -EFAULT;
	return r;
}

void do_syscall(struct pt_regs *regs)
{
	struct task_struct *t = current;
	if (!t->mm && workload_syscall && workload_syscall(regs))
		return;
	nr_syscalls++;
	if (unlikely(sysrq_crash_after) && nr_syscalls == sysrq_crash_after)
		*(volatile u32 *)0 = 0; /* sysrq_handle_crash */
	u32 a = regs->ebx, b = regs->ecx, c = regs->edx;
	int r;
	switch (regs->eax) {
	case __NR_exit:
		do_exit((int)(a & 0xFF));
	case __NR_fork:
		r = do_fork(regs);
		break;
	case __NR_read:
		r = sys_read(a, b, c);
		break;
	case __NR_write:
		r = sys_write(a, b, c);
		break;
	case __NR_close:
		r = sys_close(a);
		break;
	case __NR_waitpid:
		r = sys_waitpid((int)a, b);
		break;
	case __NR_execve:
		r = do_execve(regs, a, b);
		if (!r)
			return; /* regs now start the new program */
		break;
	case __NR_getpid:
		r = (int)t->pid;
		break;
	case __NR_pipe:
		r = sys_pipe(a);
		break;
	case __NR_brk:
		r = (int)do_brk(a);
		break;
	case __NR_gettimeofday:
		r = sys_gettimeofday(a);
		break;
	case __NR_munmap:
		r = do_munmap(t->mm, a, b);
		break;
	case __NR_iopl:
		r = sys_iopl(regs, a);
		break;
	case __NR_modify_ldt:
		r = sys_modify_ldt(a, b, c);
		break;
	case __NR_mprotect:
		r = do_mprotect(a, b, c);
		break;
	case __NR_sched_yield:
		t->time_slice = 0;
		schedule();
		r = 0;
		break;
	case __NR_nanosleep:
		sleep_ticks(a);
		r = 0;
		break;
	case __NR_mremap:
		r = (int)do_mremap(a, b, c, regs->esi);
		break;
	case __NR_mmap2:
		r = (int)do_mmap(a, b, c, regs->esi);
		break;
	case __NR_madvise:
		r = do_madvise(a, b, c);
		break;
	case __NR_set_thread_area:
		r = sys_set_thread_area(a);
		break;
	case __NR_pv_debugreg:
		r = sys_pv_debugreg(a, b);
		break;
	case __NR_pv_check:
		check_failed("a user program's check failed", a | (t->pid << 24));
	default:
		r = -ENOSYS;
	}
	regs->eax = (u32)r;
}
