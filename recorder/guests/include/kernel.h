/* The small paravirtual kernel shared by every pvscope workload. */
#ifndef PV_KERNEL_H
#define PV_KERNEL_H
#include "types.h"
#include "paravirt.h"
#include "pvscope.h"
#include "uapi.h"

/* GDT layout, Linux 2.6.21 style, with the kernel at RPL 1 */
#define GDT_ENTRIES 32
#define GDT_ENTRY_TLS_MIN 6
#define GDT_ENTRY_TLS_ENTRIES 3
#define GDT_ENTRY_KERNEL_CS 12
#define GDT_ENTRY_KERNEL_DS 13
#define GDT_ENTRY_USER_CS 14
#define GDT_ENTRY_USER_DS 15
#define GDT_ENTRY_TSS 16
#define GDT_ENTRY_LDT 17
#define __KERNEL_CS ((GDT_ENTRY_KERNEL_CS << 3) | 1)
#define __KERNEL_DS ((GDT_ENTRY_KERNEL_DS << 3) | 1)
#define __USER_CS ((GDT_ENTRY_USER_CS << 3) | 3)
#define __USER_DS ((GDT_ENTRY_USER_DS << 3) | 3)

/* page-table bits */
#define _PAGE_PRESENT 0x001
#define _PAGE_RW 0x002
#define _PAGE_USER 0x004
#define _PAGE_PWT 0x008
#define _PAGE_PCD 0x010
#define _PAGE_ACCESSED 0x020
#define _PAGE_DIRTY 0x040
#define _PAGE_GLOBAL 0x100
#define _PAGE_KERNEL (_PAGE_PRESENT | _PAGE_RW)
#define _PAGE_TABLE (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED)
#define _KERNPG_TABLE (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY)
#define _PAGE_CHG_MASK (PAGE_MASK | _PAGE_ACCESSED | _PAGE_DIRTY)
#define PTRS_PER_PTE 1024
#define PTRS_PER_PGD 1024
#define USER_PTRS_PER_PGD (PAGE_OFFSET >> 22)
#define KERNEL_PGD_PTRS (PTRS_PER_PGD - USER_PTRS_PER_PGD)
#define TASK_SIZE PAGE_OFFSET
#define PGDIR_SIZE (1u << 22)
#define pgd_index(a) ((a) >> 22)
#define pte_index(a) (((a) >> PAGE_SHIFT) & 1023)
/* a swapped-out PTE: not present, slot number above the flag bits */
#define pte_to_swp(p) ((p) >> 8)
#define swp_to_pte(s) (((s) << 8) | 0x80)

/* the kernel's own mappings (2.6.21 adds _PAGE_GLOBAL when the CPU has PGE) */
extern u32 __PAGE_KERNEL, __PAGE_KERNEL_RO;
#define LOWMEM_LIMIT 0x10000000u /* the linear map stops at 256 MiB */
#define VMALLOC_START 0xD0800000u
#define VMALLOC_END 0xF0000000u

/* CR0/CR4 bits */
#define X86_CR0_MP 0x2
#define X86_CR0_EM 0x4
#define X86_CR0_TS 0x8
#define X86_CR0_NE 0x20
#define X86_CR0_WP 0x10000
#define X86_CR0_PG 0x80000000u
#define X86_CR4_VME 0x1
#define X86_CR4_PVI 0x2
#define X86_CR4_TSD 0x4
#define X86_CR4_DE 0x8
#define X86_CR4_PSE 0x10
#define X86_CR4_MCE 0x40
#define X86_CR4_PGE 0x80
#define X86_CR4_OSFXSR 0x200
#define X86_CR4_OSXMMEXCPT 0x400
#define X86_EFLAGS_TF 0x100
#define X86_EFLAGS_IF 0x200
#define X86_EFLAGS_IOPL 0x3000

/* cpuid feature bits (leaf 1, edx) */
#define X86_FEATURE_DE (1u << 2)
#define X86_FEATURE_PSE (1u << 3)
#define X86_FEATURE_TSC (1u << 4)
#define X86_FEATURE_MSR (1u << 5)
#define X86_FEATURE_MCE (1u << 7)
#define X86_FEATURE_APIC (1u << 9)
#define X86_FEATURE_SEP (1u << 11)
#define X86_FEATURE_PGE (1u << 13)
#define X86_FEATURE_MCA (1u << 14)
#define X86_FEATURE_FXSR (1u << 24)
#define X86_FEATURE_XMM (1u << 25)
extern u32 boot_cpu_features;

/* MSRs */
#define MSR_IA32_APICBASE 0x1B
#define MSR_IA32_APICBASE_ENABLE (1u << 11)
#define MSR_IA32_MCG_CAP 0x179

/* local APIC registers */
#define APIC_ID 0x20
#define APIC_LVR 0x30
#define APIC_TASKPRI 0x80
#define APIC_EOI 0xB0
#define APIC_LDR 0xD0
#define APIC_DFR 0xE0
#define APIC_SPIV 0xF0
#define APIC_ESR 0x280
#define APIC_ICR 0x300
#define APIC_LVTT 0x320
#define APIC_LVTPC 0x340
#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_LVTERR 0x370
#define APIC_TMICT 0x380
#define APIC_TMCCT 0x390
#define APIC_TDCR 0x3E0
#define APIC_LVT_MASKED (1u << 16)
#define APIC_LVT_TIMER_PERIODIC (1u << 17)
#define APIC_DM_EXTINT 0x700
#define APIC_DM_NMI 0x400

/* vectors, as Linux 2.6.21 numbers them where it has them */
#define FIRST_EXTERNAL_VECTOR 0x20
#define IRQ_VECTOR(pin) (0x31 + (pin))
#define LOCAL_TIMER_VECTOR 0xEF
#define SPURIOUS_APIC_VECTOR 0xFF
#define ERROR_APIC_VECTOR 0xFE
#define SYSCALL_VECTOR 0x80
#define NR_IRQS 24
#define TIMER_PIN 2
#define IODEV_PIN 11

/* the I/O device */
#define IODEV_DOORBELL 0x00
#define IODEV_STATUS 0x04
#define IODEV_TAG 0x08
#define IODEV_ACK 0x0C
#define IODEV_QUEUE 0x10
#define IODEV_MAX_IN_FLIGHT 64

/* the interrupt (or exception, or system call) frame, as entry.S builds it */
struct pt_regs {
	u32 edi, esi, ebp, esp_unused, ebx, edx, ecx, eax;
	u32 es, ds;
	u32 vector, error;
	u32 eip, cs, eflags;
	u32 esp, ss; /* only when entered from CPL 3 */
};
#define user_mode(r) (((r)->cs & 3) == 3)

struct desc_struct {
	u32 a, b;
};

/* 2.6.21 layout prefix: tls_array[3] then esp0 (the ROM's load_esp0 and load_tls read these) */
struct thread_struct {
	struct desc_struct tls_array[GDT_ENTRY_TLS_ENTRIES];
	u32 esp0;
	u32 sysenter_cs;
	u32 esp; /* kernel stack pointer while switched out (TASK_THREAD_ESP) */
	u32 gs;
	u32 iopl;
	u32 debugreg[8];
};

struct tss_struct {
	u32 words[26];
};

/* --- memory ------------------------------------------------------------------------- */

/* one per physical frame (2.6.21's struct page, much reduced) */
struct page {
	u16 count;    /* references; 0 = free */
	u16 mapcount; /* user PTEs mapping it */
	u16 flags;
	u16 pad;
	struct mm_struct *mm; /* reverse map of an anonymous page mapped once */
	u32 vaddr;
	u32 lru_next, lru_prev; /* pfns on the anonymous LRU, 0 = none */
};
#define PG_reserved 0x1 /* kernel image, boot tables, the zero page: never freed */
#define PG_free 0x2
#define PG_anon 0x4
#define PG_lru 0x8
#define PG_pagetable 0x10
#define PG_pinned 0x20 /* a user stack page: never reclaimed */
#define PG_locked 0x40 /* I/O in progress */
extern struct page *mem_map;
extern u32 max_pfn;
#define pfn_page(pfn) (&mem_map[(pfn)])

/* vm_area flags (2.6.21's VM_* values) */
#define VM_READ 0x1
#define VM_WRITE 0x2
#define VM_EXEC 0x4
#define VM_SHARED 0x8
#define VM_MAYWRITE 0x20
#define VM_GROWSDOWN 0x100
#define VM_FILE 0x10000000 /* backed by the image's user text ("the executable") */
#define VM_STACK 0x20000000 /* the stack: pinned, copied eagerly at fork (see mm.c) */

struct vm_area {
	u32 start, end;
	u32 flags;
	u32 file_pfn; /* VM_FILE: the frame backing start */
	int anon;     /* has anonymous pages (2.6.21's anon_vma): copied at fork */
	struct vm_area *next;
	struct mm_struct *mm;
};

struct mm_struct {
	pte_t *pgd;
	u32 id;
	int users; /* mm_users */
	int count; /* mm_count */
	struct vm_area *mmap;
	u32 nr_ptes;
	u32 rss;
	u32 brk_start, brk;
	u32 mmap_base;
	struct desc_struct *ldt; /* mm->context: a page of LDT entries, or NULL */
	u32 ldt_size;
	u32 faults;
	struct mm_struct *next_free;
};

extern pte_t swapper_pg_dir[1024];
extern struct mm_struct init_mm;

/* --- tasks ------------------------------------------------------------------------ */

#define TASK_RUNNING 0
#define TASK_INTERRUPTIBLE 1
#define TASK_UNINTERRUPTIBLE 2
#define TASK_ZOMBIE 16
#define TASK_DEAD 32
#define TS_USEDFPU 1
#define TIF_DEBUG 1
#define NR_OPEN 8
#define MAX_TASKS 64
#define THREAD_SIZE 8192
#define STACK_MAGIC 0x57AC6E9Du

struct file;
struct task_struct;

/* a uniprocessor spinlock: a flag the kernel checks, with 2.6.21's interrupt handling */
typedef struct {
	u32 locked;
	const char *name;
} spinlock_t;
#define SPIN_LOCK_UNLOCKED(n) { 0, n }
struct wait_queue_head {
	spinlock_t lock;
	struct task_struct *head;
};

struct timer_list {
	struct timer_list *next;
	u32 expires; /* in local APIC ticks */
	void (*fn)(u32 data);
	u32 data;
	int pending;
};

struct task_struct {
	struct thread_struct thread; /* first: TASK_THREAD_ESP */
	u32 pid;
	volatile int state;
	int on_rq;
	volatile u32 need_resched;
	struct mm_struct *mm, *active_mm;
	struct task_struct *parent;
	struct task_struct *run_next, *run_prev;
	struct task_struct *wait_next;
	struct wait_queue_head *waiting_on;
	struct wait_queue_head child_exit;
	u32 time_slice;
	int exit_code;
	u32 kstack; /* lowest address of its THREAD_SIZE kernel stack */
	u32 status; /* TS_USEDFPU */
	u32 fpu_counter;
	int used_math;
	u32 tif;
	u32 nr_children;
	struct file *files[NR_OPEN];
	struct timer_list timer;
	u64 exec_start;
	u64 sum_exec;
	u32 nvcsw, nivcsw;
	u32 rng;
	u32 exec_prog, exec_arg; /* what a task spawned by the kernel runs first */
	struct task_struct *next_free;
	u8 fxsave[512] __attribute__((aligned(16)));
};

extern struct task_struct *current;
extern struct task_struct init_task;
extern struct tss_struct init_tss;

/* --- interrupts ------------------------------------------------------------------- */

typedef void (*irq_handler_t)(u32 irq, void *dev);
struct irq_desc {
	irq_handler_t handler;
	void *dev;
	u32 level; /* level-triggered: fasteoi flow; else edge flow */
	u32 count;
	u32 status;
	spinlock_t lock;
};
#define IRQ_INPROGRESS 1
#define IRQ_PENDING 2
#define IRQ_DISABLED 4

#define TIMER_SOFTIRQ 1
#define BLOCK_SOFTIRQ 4
#define TASKLET_SOFTIRQ 6

extern volatile u32 jiffies;
extern volatile u32 lapic_ticks;
extern volatile u32 preempt_count;
#define HARDIRQ_OFFSET 0x10000
#define SOFTIRQ_OFFSET 0x100
#define in_interrupt() (preempt_count & 0xFFFF00)
#define in_irq() (preempt_count & 0xFF0000)

void spin_lock(spinlock_t *l);
void spin_unlock(spinlock_t *l);
#define spin_lock_irqsave(l, f)                                                                  \
	do {                                                                                     \
		local_irq_save(f);                                                               \
		spin_lock(l);                                                                    \
	} while (0)
#define spin_unlock_irqrestore(l, f)                                                             \
	do {                                                                                     \
		spin_unlock(l);                                                                  \
		local_irq_restore(f);                                                            \
	} while (0)
#define spin_lock_irq(l)                                                                         \
	do {                                                                                     \
		local_irq_disable();                                                             \
		spin_lock(l);                                                                    \
	} while (0)
#define spin_unlock_irq(l)                                                                       \
	do {                                                                                     \
		spin_unlock(l);                                                                  \
		local_irq_enable();                                                              \
	} while (0)

/* --- kernel configuration a workload may set before it starts tasks ----------------- */
struct kconfig {
	u32 hz_insns;        /* local APIC timer period, in instructions */
	u32 timeslice;       /* ticks a task runs before it is preempted */
	u32 user_page_limit; /* anonymous pages before direct reclaim starts (0 = none) */
	u32 swap_slots;      /* swap area size, in pages */
};
extern struct kconfig kcfg;

/* --- kernel.c: services, checks, console ---------------------------------------------- */
extern struct pv_rom_header *rom;
void service(u32 code, u32 a, u32 b);
void check_failed(const char *what, u32 detail) __attribute__((noreturn));
#define CHECK(cond, what, detail)                                                                \
	do {                                                                                     \
		if (unlikely(!(cond)))                                                           \
			check_failed(what, (u32)(detail));                                       \
	} while (0)
void console(const char *s);
void printk_u(const char *prefix, u32 v);
u32 strlen(const char *s);
void apply_paravirt(void);
void do_exit_kernel(void) __attribute__((noreturn));
extern u32 sysrq_crash_after;

/* setup.c */
void setup_arch_repeat(void);
u32 ioapic_read(u32 reg);
void ioapic_write(u32 reg, u32 v);
void ioapic_mask_pin(u32 pin, int mask);
void ioapic_route_pin(u32 pin, int level);
void setup_lapic_timer(u32 period);
void lapic_set_period(u32 insns);
void mark_rodata_ro(void);
void trap_init(void);
void cpu_init(void);
void init_8259A(void);
void calibrate_apic_clock(void);
void paging_rebuild(void);
extern u32 apic_calibrated_per_tick;
static inline void mmio_write(u32 addr, u32 v) { *(volatile u32 *)addr = v; }
static inline u32 mmio_read(u32 addr) { return *(volatile u32 *)addr; }
static inline void outb(u8 v, u16 port) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outb_p(u8 v, u16 port)
{
	outb(v, port);
	paravirt_ops.io_delay();
}

/* irq.c */
void do_IRQ(struct pt_regs *regs);
void request_irq(u32 pin, irq_handler_t handler, void *dev, int level);
void raise_softirq_irqoff(u32 nr);
void open_softirq(u32 nr, void (*action)(void));
void irq_enter(void);
void irq_exit(void);
void add_timer(struct timer_list *t);
void del_timer(struct timer_list *t);
void init_timers(void);
void mark_ioapic_ready(void);
u64 clock_read(void);
extern u64 wall_ns;
extern struct irq_desc irq_desc[NR_IRQS];

/* blk.c: the I/O device's driver */
void blk_init(void);
int blk_rw(u32 nreq, u32 tag_base);
void blk_rw_one(u32 tag);
void blk_submit_async(u32 tag, void (*done)(u32 tag, u32 data), u32 data);
u32 blk_in_flight(void);
extern u32 blk_completed, blk_submitted, blk_irqs;

/* mm.c */
void mem_init(u32 first_free, u32 mem_bytes);
void mem_init_late(void);
u32 alloc_page(int zero);
void get_page(u32 pfn);
void put_page(u32 pfn);
u32 nr_free_pages(void);
u32 alloc_contig_fresh(u32 n);
void copy_page(void *to, const void *from);
void clear_page(void *to);
extern u32 zero_pfn;
pte_t *pte_for(pte_t *pgd, u32 addr, int alloc, u32 pde_flags);
pte_t *kernel_pte(u32 addr);
void *vmalloc(u32 size);
void vfree(void *addr, u32 size);
struct mm_struct *mm_alloc(void);
void mmput(struct mm_struct *mm);
void mmdrop(struct mm_struct *mm);
struct mm_struct *dup_mm(struct mm_struct *old);
void switch_mm(struct mm_struct *prev, struct mm_struct *next);
struct vm_area *find_vma(struct mm_struct *mm, u32 addr);
struct vm_area *vma_add(struct mm_struct *mm, u32 start, u32 end, u32 flags, u32 file_pfn);
int do_page_fault(struct pt_regs *regs);
int handle_mm_fault(struct mm_struct *mm, struct vm_area *vma, u32 addr, int write);
u32 do_mmap(u32 addr, u32 len, u32 prot, u32 flags);
int do_munmap(struct mm_struct *mm, u32 start, u32 len);
int do_mprotect(u32 start, u32 len, u32 prot);
u32 do_mremap(u32 addr, u32 old_len, u32 new_len, u32 flags);
int do_madvise(u32 start, u32 len, u32 advice);
u32 do_brk(u32 brk);
int install_user_page(struct mm_struct *mm, u32 addr, u32 flags);
void exit_mmap(struct mm_struct *mm);
int copy_to_user(u32 to, const void *from, u32 n);
int copy_from_user(void *to, u32 from, u32 n);
void mm_check_accounting(void);
void flush_tlb_page(struct mm_struct *mm, u32 addr);
void flush_tlb_mm(struct mm_struct *mm);
extern u32 nr_user_pages, nr_swapped, nr_swapins, nr_reclaim_scans, nr_cow, nr_reuse;
extern u32 nr_mms_live, nr_ptes_live, loaded_cr3;
void swap_init(u32 slots);

/* sched.c */
void sched_init(void);
void schedule(void);
void scheduler_tick(void);
void wake_up_process(struct task_struct *p);
void init_waitqueue_head(struct wait_queue_head *q);
void wake_up(struct wait_queue_head *q);
void prepare_to_wait(struct wait_queue_head *q, int state);
void finish_wait(struct wait_queue_head *q);
#define wait_event(q, cond)                                                                      \
	do {                                                                                     \
		for (;;) {                                                                       \
			prepare_to_wait(&(q), TASK_UNINTERRUPTIBLE);                             \
			if (cond)                                                                \
				break;                                                           \
			schedule();                                                              \
		}                                                                                \
		finish_wait(&(q));                                                               \
	} while (0)
void sleep_ticks(u32 ticks);
u64 sched_clock(void);
void cpu_idle_until(volatile u32 *flag);
int do_fork(struct pt_regs *regs);
void do_exit(int code) __attribute__((noreturn));
int do_wait(int pid, int *status, int nohang);
int run_init(u32 prog, u32 arg);
int do_execve(struct pt_regs *regs, u32 prog, u32 arg);
struct task_struct *spawn_user(u32 prog, u32 arg);
void exit_to_user(struct pt_regs *regs);
void math_state_restore(void);
void unlazy_fpu(struct task_struct *t);
extern u32 nr_running, nr_tasks, nr_switches, nr_forks, nr_exits;
extern u32 ctx_lazy_cpu;
void set_tls_desc(struct task_struct *t, u32 idx, u32 base, u32 limit);

/* syscall.c */
void do_syscall(struct pt_regs *regs);
u32 user_program(u32 prog);
extern u32 nr_syscalls;
struct file *file_get(struct file *f);
void file_put(struct file *f);

/* lib.c */
void *memset(void *d, int c, u32 n);
void *memcpy(void *d, const void *s, u32 n);
u32 prng_next(u32 *state);
u64 div_u64_rem(u64 n, u32 d, u32 *rem);

/* provided by each workload */
void workload_main(u32 scale, u32 seed);
/* the workload's user programs, by number (execve's first argument) */
extern void (*const user_programs[])(u32, u32, u32);
extern const u32 nr_user_programs;
/* optional hooks a workload may define (weak; pvcall uses them for its legacy task) */
int workload_page_fault(struct pt_regs *regs, u32 addr) __attribute__((weak));
int workload_syscall(struct pt_regs *regs) __attribute__((weak));

/* entry.S */
extern void (*const trap_stubs[])(void);
extern const u8 trap_stub_vectors[];
extern const u32 trap_stub_count;
extern void ret_from_fork(void);
struct task_struct *switch_to_asm(struct task_struct *prev, struct task_struct *next);
int run_user(u32 eip, u32 esp);
void user_exit(int code) __attribute__((noreturn));
#endif
