/*
 * Tasks and the scheduler: a round-robin run queue driven by the local APIC
 * timer, 2.6.21's context_switch (lazy CPU mode entered before switch_mm and left
 * in __switch_to, lazy TLB for tasks without an mm, the previous mm dropped after
 * the switch), __switch_to (lazy FPU, load_esp0, load_tls, the I/O privilege
 * level, debug registers, %gs), wait queues and timers, fork, exec, exit and wait.
 */
#include "kernel.h"

struct task_struct init_task __attribute__((aligned(16)));
struct task_struct *current = &init_task;
u32 nr_running, nr_tasks, nr_switches, nr_forks, nr_exits, nr_execs;
static struct task_struct task_pool[MAX_TASKS] __attribute__((aligned(16)));
static struct task_struct *task_free;
static struct task_struct *rq_head, *rq_tail;
static spinlock_t rq_lock = SPIN_LOCK_UNLOCKED("runqueue lock recursion");
static struct mm_struct *rq_prev_mm;
static u32 next_pid = 1;
static volatile u32 idle_child_exited;
static u32 stack_free; /* cached kernel stacks, linked through their lowest word */
static u8 init_kstack[THREAD_SIZE] __attribute__((aligned(16)));
extern char __user_lma[], __user_start[], __user_end[];
extern void ret_from_kernel_thread(void);

u64 sched_clock(void) { return paravirt_ops.get_scheduled_cycles(); }

static void free_kstack(u32 base)
{
	*(u32 *)base = stack_free;
	stack_free = base;
}

static u32 alloc_kstack(void)
{
	u32 base = stack_free;
	CHECK(base, "out of kernel stacks", nr_tasks);
	stack_free = *(u32 *)base;
	*(u32 *)base = STACK_MAGIC;
	return base;
}


static struct task_struct *alloc_task(void)
{
	struct task_struct *p = task_free;
	CHECK(p, "too many tasks", nr_tasks);
	task_free = p->next_free;
	memset(p, 0, sizeof(*p));
	p->kstack = alloc_kstack();
	p->state = TASK_UNINTERRUPTIBLE;
	p->thread.esp0 = p->kstack + THREAD_SIZE;
	p->thread.sysenter_cs = __KERNEL_CS;
	p->thread.iopl = 1u << 12; /* this kernel's own cli/sti at CPL 1 need IOPL 1 */
	init_waitqueue_head(&p->child_exit);
	nr_tasks++;
	return p;
}

static void release_task(struct task_struct *p)
{
	free_kstack(p->kstack);
	p->state = TASK_DEAD;
	p->next_free = task_free;
	task_free = p;
	nr_tasks--;
}

void sched_init(void)
{
	for (int i = MAX_TASKS - 1; i >= 0; i--) {
		task_pool[i].next_free = task_free;
		task_free = &task_pool[i];
	}
	/* the kernel stacks, THREAD_SIZE each, from contiguous frames (a slab cache) */
	u32 pfn = alloc_contig_fresh(MAX_TASKS * (THREAD_SIZE / PAGE_SIZE));
	for (int i = MAX_TASKS - 1; i >= 0; i--)
		free_kstack((u32)__va((pfn + (u32)i * (THREAD_SIZE / PAGE_SIZE)) << PAGE_SHIFT));
	init_task.pid = 0;
	init_task.state = TASK_RUNNING;
	init_task.mm = NULL;
	init_task.active_mm = &init_mm;
	init_task.kstack = (u32)init_kstack;
	*(u32 *)init_kstack = STACK_MAGIC;
	/* the boot task runs on boot_stack; esp0 is where a CPL 3 entry lands (pvcall's
	 * one-shot task, run from the boot task itself) */
	init_task.thread.esp0 = (u32)init_kstack + THREAD_SIZE;
	init_task.thread.iopl = 1u << 12;
	init_waitqueue_head(&init_task.child_exit);
	loaded_cr3 = __pa(swapper_pg_dir);
	current = &init_task;
}

/* --- run queue ----------------------------------------------------------------------- */

static void enqueue(struct task_struct *p, int head)
{
	CHECK(!p->on_rq, "task queued twice", p->pid);
	p->on_rq = 1;
	p->run_next = p->run_prev = NULL;
	if (!rq_head) {
		rq_head = rq_tail = p;
	} else if (head) {
		p->run_next = rq_head;
		rq_head->run_prev = p;
		rq_head = p;
	} else {
		p->run_prev = rq_tail;
		rq_tail->run_next = p;
		rq_tail = p;
	}
	nr_running++;
}

static void dequeue(struct task_struct *p)
{
	CHECK(p->on_rq, "dequeue of a task not queued", p->pid);
	if (p->run_prev)
		p->run_prev->run_next = p->run_next;
	else
		rq_head = p->run_next;
	if (p->run_next)
		p->run_next->run_prev = p->run_prev;
	else
		rq_tail = p->run_prev;
	p->on_rq = 0;
	nr_running--;
}

/* try_to_wake_up */
void wake_up_process(struct task_struct *p)
{
	unsigned long flags;
	spin_lock_irqsave(&rq_lock, flags);
	if (p->state != TASK_RUNNING && p->state < TASK_ZOMBIE) {
		p->state = TASK_RUNNING;
		if (!p->on_rq)
			enqueue(p, 0);
		if (current == &init_task)
			current->need_resched = 1;
	}
	spin_unlock_irqrestore(&rq_lock, flags);
}

void scheduler_tick(void)
{
	struct task_struct *p = current;
	if (p == &init_task) {
		if (rq_head)
			p->need_resched = 1;
		return;
	}
	if (p->time_slice && --p->time_slice == 0) {
		p->need_resched = 1;
		p->nivcsw++;
	}
}

/* --- the switch ----------------------------------------------------------------------- */

static inline void stts(void) { paravirt_ops.write_cr0(paravirt_ops.read_cr0() | X86_CR0_TS); }

/* __unlazy_fpu: the FPU state of a task that used it goes back to memory */
void unlazy_fpu(struct task_struct *t)
{
	if (t->status & TS_USEDFPU) {
		__asm__ volatile("fxsave %0; fnclex" : "=m"(t->fxsave));
		t->status &= ~TS_USEDFPU;
		stts();
	} else {
		t->fpu_counter = 0;
	}
}

/* math_state_restore: a #NM (or a switch to a task that uses the FPU a lot) */
void math_state_restore(void)
{
	struct task_struct *t = current;
	paravirt_ops.clts();
	if (!t->used_math) {
		/* init_fpu: a clean state, control word 0x37f, MXCSR 0x1f80 */
		memset(t->fxsave, 0, sizeof(t->fxsave));
		*(u16 *)&t->fxsave[0] = 0x37F;
		*(u32 *)&t->fxsave[24] = 0x1F80;
		t->used_math = 1;
	}
	__asm__ volatile("fxrstor %0" ::"m"(t->fxsave));
	t->status |= TS_USEDFPU;
	t->fpu_counter++;
}

static inline u32 savesegment_gs(void)
{
	u32 v;
	__asm__ volatile("movl %%gs, %0" : "=r"(v));
	return v & 0xFFFF;
}

/* process.c's __switch_to, on next's kernel stack; returns prev */
struct task_struct *__switch_to(struct task_struct *prev, struct task_struct *next)
{
	CHECK(*(u32 *)prev->kstack == STACK_MAGIC, "kernel stack overflow", prev->pid);
	unlazy_fpu(prev);
	paravirt_ops.load_esp0(&init_tss, &next->thread);
	prev->thread.gs = savesegment_gs();
	paravirt_ops.load_tls(&next->thread, 0);
	if (prev->thread.iopl != next->thread.iopl)
		paravirt_ops.set_iopl_mask(next->thread.iopl);
	if (next->tif & TIF_DEBUG) { /* __switch_to_xtra */
		for (int r = 0; r < 8; r++)
			if (r != 4 && r != 5)
				paravirt_ops.set_debugreg(r, next->thread.debugreg[r]);
	}
	/* leave lazy mode, flushing whatever was queued since context_switch entered it */
	arch_leave_lazy_cpu_mode();
	current = next;
	if (next->fpu_counter > 5)
		math_state_restore();
	if (prev->thread.gs | next->thread.gs)
		__asm__ volatile("movl %0, %%gs" ::"r"(next->thread.gs));
	return prev;
}

static void finish_task_switch(struct task_struct *prev)
{
	struct mm_struct *mm = rq_prev_mm;
	rq_prev_mm = NULL;
	spin_unlock_irq(&rq_lock);
	if (mm)
		mmdrop(mm);
	(void)prev;
}

/* the first thing a new task runs, from ret_from_fork */
void schedule_tail(struct task_struct *prev) { finish_task_switch(prev); }

static void context_switch(struct task_struct *prev, struct task_struct *next)
{
	struct mm_struct *mm = next->mm, *oldmm = prev->active_mm;
	arch_enter_lazy_cpu_mode();
	if (!mm) {
		next->active_mm = oldmm; /* enter_lazy_tlb: keep using prev's page tables */
		oldmm->count++;
	} else {
		switch_mm(oldmm, mm);
	}
	if (!prev->mm) {
		prev->active_mm = NULL;
		rq_prev_mm = oldmm;
	}
	prev = switch_to_asm(prev, next);
	finish_task_switch(prev);
}

void schedule(void)
{
	struct task_struct *prev = current, *next;
	CHECK(!in_interrupt(), "scheduling while atomic", preempt_count);
	u64 now = sched_clock();
	spin_lock_irq(&rq_lock);
	if (prev != &init_task) {
		if (prev->state != TASK_RUNNING) {
			if (prev->on_rq)
				dequeue(prev);
			prev->nvcsw++;
		} else if (!prev->time_slice) {
			/* slice used up: to the back of the queue with a fresh one */
			dequeue(prev);
			enqueue(prev, 0);
			prev->time_slice = kcfg.timeslice;
		}
	}
	next = rq_head ? rq_head : &init_task;
	if (next != &init_task && !next->time_slice)
		next->time_slice = kcfg.timeslice;
	prev->need_resched = 0;
	prev->sum_exec += now - prev->exec_start;
	next->exec_start = now;
	if (prev == next) {
		spin_unlock_irq(&rq_lock);
		return;
	}
	nr_switches++;
	context_switch(prev, next);
}

/* --- wait queues and timers -------------------------------------------------------------- */

void init_waitqueue_head(struct wait_queue_head *q)
{
	q->lock.locked = 0;
	q->lock.name = "wait queue lock recursion";
	q->head = NULL;
}

static void wq_remove(struct wait_queue_head *q, struct task_struct *t)
{
	struct task_struct **pp = &q->head;
	while (*pp && *pp != t)
		pp = &(*pp)->wait_next;
	if (*pp)
		*pp = t->wait_next;
	t->wait_next = NULL;
	t->waiting_on = NULL;
}

void prepare_to_wait(struct wait_queue_head *q, int state)
{
	unsigned long flags;
	spin_lock_irqsave(&q->lock, flags);
	if (current->waiting_on != q) {
		CHECK(!current->waiting_on, "task on two wait queues", current->pid);
		current->wait_next = q->head;
		q->head = current;
		current->waiting_on = q;
	}
	current->state = state;
	spin_unlock_irqrestore(&q->lock, flags);
}

void finish_wait(struct wait_queue_head *q)
{
	unsigned long flags;
	current->state = TASK_RUNNING;
	spin_lock_irqsave(&q->lock, flags);
	if (current->waiting_on == q)
		wq_remove(q, current);
	spin_unlock_irqrestore(&q->lock, flags);
}

void wake_up(struct wait_queue_head *q)
{
	unsigned long flags;
	spin_lock_irqsave(&q->lock, flags);
	while (q->head) {
		struct task_struct *t = q->head;
		wq_remove(q, t);
		wake_up_process(t);
	}
	spin_unlock_irqrestore(&q->lock, flags);
}

static void process_timeout(u32 data) { wake_up_process((struct task_struct *)data); }

/* schedule_timeout */
void sleep_ticks(u32 ticks)
{
	struct timer_list *t = &current->timer;
	t->expires = lapic_ticks + (ticks ? ticks : 1);
	t->fn = process_timeout;
	t->data = (u32)current;
	current->state = TASK_INTERRUPTIBLE;
	add_timer(t);
	schedule();
	del_timer(t);
	current->state = TASK_RUNNING;
}

/* the idle loop (cpu_idle + default_idle) until *flag is set */
void cpu_idle_until(volatile u32 *flag)
{
	CHECK(current == &init_task, "idle loop outside the idle task", current->pid);
	while (!*flag) {
		while (!current->need_resched && !*flag) {
			local_irq_disable();
			if (!current->need_resched && !*flag)
				paravirt_ops.safe_halt();
			else
				local_irq_enable();
		}
		if (current->need_resched)
			schedule();
	}
}

/* --- fork, exec, exit, wait ---------------------------------------------------------------- */

/* a new task's kernel stack: its pt_regs at the top, and below them the frame
 * switch_to_asm pops (ebx, esi, edi, ebp, then where to return) */
static struct pt_regs *setup_task_stack(struct task_struct *p, void (*ret)(void))
{
	struct pt_regs *regs = (struct pt_regs *)(p->thread.esp0 - sizeof(struct pt_regs));
	u32 *frame = (u32 *)regs - 5;
	frame[0] = frame[1] = frame[2] = frame[3] = 0;
	frame[4] = (u32)ret;
	p->thread.esp = (u32)frame;
	return regs;
}

int do_fork(struct pt_regs *regs)
{
	struct task_struct *parent = current;
	CHECK(parent->mm, "fork without an address space", parent->pid);
	struct task_struct *p = alloc_task();
	unlazy_fpu(parent); /* prepare_to_copy */
	u32 esp0 = p->thread.esp0;
	p->thread = parent->thread;
	p->thread.esp0 = esp0;
	p->thread.gs = savesegment_gs(); /* copy_thread */
	memcpy(p->fxsave, parent->fxsave, sizeof(p->fxsave));
	p->used_math = parent->used_math;
	p->tif = parent->tif;
	p->pid = next_pid++;
	p->parent = parent;
	p->rng = parent->rng ^ (p->pid * 0x9E3779B9u);
	parent->nr_children++;
	p->mm = dup_mm(parent->mm);
	p->active_mm = p->mm;
	for (int i = 0; i < NR_OPEN; i++)
		p->files[i] = parent->files[i] ? file_get(parent->files[i]) : NULL;
	struct pt_regs *child = setup_task_stack(p, ret_from_fork);
	*child = *regs;
	child->eax = 0;
	/* sched_fork: the child takes half the parent's remaining slice */
	p->time_slice = (parent->time_slice + 1) / 2;
	parent->time_slice /= 2;
	if (!parent->time_slice)
		parent->need_resched = 1;
	/* wake_up_new_task: on a uniprocessor the child runs first */
	unsigned long flags;
	spin_lock_irqsave(&rq_lock, flags);
	p->state = TASK_RUNNING;
	enqueue(p, 1);
	parent->need_resched = 1;
	spin_unlock_irqrestore(&rq_lock, flags);
	nr_forks++;
	return (int)p->pid;
}

u32 user_program(u32 prog)
{
	CHECK(prog < nr_user_programs, "exec of an unknown program", prog);
	return (u32)user_programs[prog];
}

int do_execve(struct pt_regs *regs, u32 prog, u32 arg)
{
	if (prog >= nr_user_programs)
		return -EINVAL;
	struct task_struct *t = current;
	struct mm_struct *mm = mm_alloc();
	u32 text = (u32)(__user_end - __user_start);
	vma_add(mm, USER_BASE, (USER_BASE + text + PAGE_SIZE - 1) & PAGE_MASK,
		VM_READ | VM_EXEC | VM_FILE, (u32)__user_lma >> PAGE_SHIFT);
	u32 stack_lo = USER_STACK_TOP - USER_STACK_PAGES * PAGE_SIZE;
	vma_add(mm, stack_lo, USER_STACK_TOP, VM_READ | VM_WRITE | VM_STACK, 0)->anon = 1;
	for (u32 a = stack_lo; a < USER_STACK_TOP; a += PAGE_SIZE)
		install_user_page(mm, a,
				  _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY);
	mm->brk_start = mm->brk = 0x10000000u;

	/* exec_mmap: switch to the new mm, then let the old one go */
	struct mm_struct *old = t->mm, *active = t->active_mm;
	t->mm = mm;
	t->active_mm = mm;
	switch_mm(active, mm); /* activate_mm */
	if (old)
		mmput(old);
	else
		mmdrop(active);

	/* flush_thread: no TLS, no debug registers, no FPU state */
	memset(t->thread.tls_array, 0, sizeof(t->thread.tls_array));
	memset(t->thread.debugreg, 0, sizeof(t->thread.debugreg));
	t->tif &= ~TIF_DEBUG;
	if (t->status & TS_USEDFPU) {
		t->status &= ~TS_USEDFPU;
		stts();
	}
	t->used_math = 0;
	t->fpu_counter = 0;
	t->thread.gs = 0;
	__asm__ volatile("movl %0, %%gs" ::"r"(0));
	paravirt_ops.load_tls(&t->thread, 0);

	memset(regs, 0, sizeof(*regs));
	regs->eip = user_program(prog);
	regs->esp = USER_STACK_TOP - 16;
	regs->cs = __USER_CS;
	regs->ss = regs->ds = regs->es = __USER_DS;
	regs->eflags = X86_EFLAGS_IF | t->thread.iopl | 0x2;
	regs->eax = arg;
	regs->edx = t->pid;
	regs->ecx = t->rng;
	nr_execs++;
	return 0;
}

/* a new task's first run in the kernel: exec its program (kernel_execve from init) */
void kernel_thread_exec(struct pt_regs *regs)
{
	struct task_struct *t = current;
	CHECK(!do_execve(regs, t->exec_prog, t->exec_arg), "init exec failed", t->exec_prog);
}

/* start a user program as a child of the boot task (pid 1 and the like) */
struct task_struct *spawn_user(u32 prog, u32 arg)
{
	struct task_struct *p = alloc_task();
	p->pid = next_pid++;
	p->parent = &init_task;
	init_task.nr_children++;
	p->rng = rom->seed ^ (p->pid * 0x9E3779B9u) ^ arg;
	p->exec_prog = prog;
	p->exec_arg = arg;
	for (int i = 0; i < NR_OPEN; i++)
		p->files[i] = NULL;
	extern struct file *std_files[NR_OPEN];
	for (int i = 0; i < NR_OPEN; i++)
		if (std_files[i])
			p->files[i] = file_get(std_files[i]);
	setup_task_stack(p, ret_from_kernel_thread);
	unsigned long flags;
	spin_lock_irqsave(&rq_lock, flags);
	p->state = TASK_RUNNING;
	p->time_slice = kcfg.timeslice;
	enqueue(p, 0);
	current->need_resched = 1;
	spin_unlock_irqrestore(&rq_lock, flags);
	return p;
}

void exit_to_user(struct pt_regs *regs)
{
	while (current->need_resched) {
		schedule();
		local_irq_disable();
	}
	CHECK(*(u32 *)current->kstack == STACK_MAGIC, "kernel stack overflow", current->pid);
	CHECK(!preempt_count, "returning to user mode with a lock held", preempt_count);
}

void do_exit(int code)
{
	struct task_struct *t = current;
	CHECK(t != &init_task, "the idle task exited", code);
	CHECK(!in_interrupt(), "exit in interrupt context", preempt_count);
	/* exit_mm: the mm stays loaded (active_mm) until the switch away drops it */
	struct mm_struct *mm = t->mm;
	if (mm) {
		t->mm = NULL;
		mm->count++;
		mmput(mm);
	}
	for (int i = 0; i < NR_OPEN; i++)
		if (t->files[i]) {
			file_put(t->files[i]);
			t->files[i] = NULL;
		}
	del_timer(&t->timer);
	/* exit_notify: orphans go to our parent; the parent hears of us */
	for (u32 i = 0; i < MAX_TASKS; i++) {
		struct task_struct *c = &task_pool[i];
		if (c->state != TASK_DEAD && c->parent == t && c != t) {
			c->parent = t->parent;
			t->parent->nr_children++;
		}
	}
	t->exit_code = code;
	nr_exits++;
	if (t->parent == &init_task)
		idle_child_exited = 1;
	local_irq_disable();
	t->state = TASK_ZOMBIE;
	wake_up(&t->parent->child_exit);
	schedule();
	check_failed("a dead task ran again", t->pid);
}

int do_wait(int pid, int *status, int nohang)
{
	struct task_struct *t = current;
	for (;;) {
		int found = 0;
		for (u32 i = 0; i < MAX_TASKS; i++) {
			struct task_struct *c = &task_pool[i];
			if (c->state == TASK_DEAD || c->parent != t || c == t)
				continue;
			if (pid > 0 && c->pid != (u32)pid)
				continue;
			found = 1;
			if (c->state == TASK_ZOMBIE) {
				int cpid = (int)c->pid;
				*status = c->exit_code;
				t->nr_children--;
				release_task(c);
				return cpid;
			}
		}
		if (!found)
			return -ECHILD;
		if (nohang)
			return 0;
		prepare_to_wait(&t->child_exit, TASK_INTERRUPTIBLE);
		int zombie = 0;
		for (u32 i = 0; i < MAX_TASKS; i++) {
			struct task_struct *c = &task_pool[i];
			if (c->state == TASK_ZOMBIE && c->parent == t)
				zombie = 1;
		}
		if (!zombie)
			schedule();
		finish_wait(&t->child_exit);
	}
}

/* run a program as init (a child of the idle task) and idle until it exits;
 * returns its exit status, having reaped every orphan left behind */
int run_init(u32 prog, u32 arg)
{
	struct task_struct *p = spawn_user(prog, arg);
	u32 pid = p->pid;
	int status = -1, result = -1, done = 0;
	for (;;) {
		idle_child_exited = 0;
		int r;
		while ((r = do_wait(-1, &status, 1)) > 0)
			if ((u32)r == pid) {
				result = status;
				done = 1;
			}
		if (done && r == -ECHILD) {
			/* stop borrowing the last task's page tables (leave_mm): back to
			 * swapper_pg_dir, so that mm can go */
			struct mm_struct *old = current->active_mm;
			if (old != &init_mm) {
				init_mm.count++;
				current->active_mm = &init_mm;
				switch_mm(old, &init_mm);
				mmdrop(old);
			}
			return result;
		}
		cpu_idle_until(&idle_child_exited);
	}
}
