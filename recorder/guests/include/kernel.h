/* The small paravirtual kernel shared by every pvscope workload. */
#ifndef PV_KERNEL_H
#define PV_KERNEL_H
#include "types.h"
#include "paravirt.h"
#include "pvscope.h"

/* GDT layout, Linux 2.6.21 style, with the kernel at RPL 1 */
#define GDT_ENTRIES 32
#define GDT_ENTRY_TLS_MIN 6
#define GDT_ENTRY_KERNEL_CS 12
#define GDT_ENTRY_KERNEL_DS 13
#define GDT_ENTRY_USER_CS 14
#define GDT_ENTRY_USER_DS 15
#define GDT_ENTRY_TSS 16
#define __KERNEL_CS ((GDT_ENTRY_KERNEL_CS << 3) | 1)
#define __KERNEL_DS ((GDT_ENTRY_KERNEL_DS << 3) | 1)
#define __USER_CS ((GDT_ENTRY_USER_CS << 3) | 3)
#define __USER_DS ((GDT_ENTRY_USER_DS << 3) | 3)

/* page-table bits */
#define _PAGE_PRESENT 0x001
#define _PAGE_RW 0x002
#define _PAGE_USER 0x004
#define _PAGE_ACCESSED 0x020
#define _PAGE_DIRTY 0x040
#define _PAGE_KERNEL (_PAGE_PRESENT | _PAGE_RW)
#define _PAGE_TABLE (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER)
#define PTRS_PER_PTE 1024
#define USER_PTRS_PER_PGD (PAGE_OFFSET >> 22)
#define KERNEL_PGD_PTRS (1024 - USER_PTRS_PER_PGD)

/* local APIC registers */
#define APIC_ID 0x20
#define APIC_LVR 0x30
#define APIC_TASKPRI 0x80
#define APIC_EOI 0xB0
#define APIC_SPIV 0xF0
#define APIC_ESR 0x280
#define APIC_ICR 0x300
#define APIC_LVTT 0x320
#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_LVTERR 0x370
#define APIC_TMICT 0x380
#define APIC_TMCCT 0x390
#define APIC_TDCR 0x3E0
#define APIC_LVT_MASKED (1u << 16)
#define APIC_LVT_TIMER_PERIODIC (1u << 17)

/* vectors, as Linux 2.6.21 numbers them where it has them */
#define FIRST_EXTERNAL_VECTOR 0x20
#define IRQ_VECTOR(pin) (0x31 + (pin))
#define LOCAL_TIMER_VECTOR 0xEF
#define SPURIOUS_APIC_VECTOR 0xFF
#define ERROR_APIC_VECTOR 0xFE
#define SYSCALL_VECTOR 0x80
#define TIMER_PIN 2
#define IODEV_PIN 11

/* the I/O device */
#define IODEV_DOORBELL 0x00
#define IODEV_STATUS 0x04
#define IODEV_TAG 0x08
#define IODEV_ACK 0x0C

struct pt_regs {
	u32 edi, esi, ebp, esp_unused, ebx, edx, ecx, eax;
	u32 es, ds;
	u32 vector, error;
	u32 eip, cs, eflags;
	u32 esp, ss; /* only when entered from CPL 3 */
};

/* 2.6.21 layout prefix: tls_array[3] then esp0 (load_esp0 and load_tls read these) */
struct thread_struct {
	u32 tls_array[6];
	u32 esp0;
	u32 sysenter_cs;
};

struct tss_struct {
	u32 words[26];
};

struct mm_struct {
	pte_t *pgd;
	u32 id;
};

extern struct pv_rom_header *rom;
extern pte_t swapper_pg_dir[1024];
extern struct mm_struct init_mm;
extern volatile u32 jiffies;
extern volatile u32 lapic_ticks;

/* kernel.c */
void service(u32 code, u32 a, u32 b);
void check_failed(const char *what, u32 detail) __attribute__((noreturn));
void console(const char *s);
u32 alloc_frame(void);
void free_frame(u32 pfn);
u32 frames_free(void);
pte_t *pte_for(pte_t *pgd, u32 addr, int alloc, u32 pde_flags);
void set_idt_gate(int vector, void (*handler)(void), int dpl, int trap);
int run_user(u32 eip, u32 esp);
void ioapic_write(u32 reg, u32 v);
u32 ioapic_read(u32 reg);
static inline void mmio_write(u32 addr, u32 v) { *(volatile u32 *)addr = v; }
static inline u32 mmio_read(u32 addr) { return *(volatile u32 *)addr; }

/* lib.c */
void *memset(void *d, int c, u32 n);
void *memcpy(void *d, const void *s, u32 n);
u32 prng_next(u32 *state);

/* provided by each workload */
void workload_main(u32 scale, u32 seed);
void workload_irq(u32 vector);
int workload_page_fault(struct pt_regs *regs, u32 addr);
u32 workload_syscall(struct pt_regs *regs);

/* entry.S */
extern void (*const trap_stubs[])(void);
extern const u8 trap_stub_vectors[];
extern const u32 trap_stub_count;
#endif
