/*
 * struct paravirt_ops as in Linux 2.6.21 (include/asm-i386/paravirt.h), member for
 * member and in the same order; the PAE members are kept so the layout matches the
 * ROM's entry table.  Compiled with -mregparm=3: the first three argument words go
 * in eax, edx, ecx, as the 2.6.20 fastcall ABI and the ROM expect.
 */
#ifndef PV_PARAVIRT_H
#define PV_PARAVIRT_H
#include "types.h"
#include "asm-offsets.h"

struct Xgt_desc_struct {
	u16 size;
	u32 address;
} __attribute__((packed));

struct tss_struct;
struct thread_struct;
struct mm_struct;

struct paravirt_ops {
	unsigned int kernel_rpl;
	int paravirt_enabled;
	const char *name;

	unsigned (*patch)(u8 type, u16 clobber, void *firstinsn, unsigned len);
	void (*arch_setup)(void);
	char *(*memory_setup)(void);
	void (*init_IRQ)(void);
	void (*banner)(void);
	unsigned long (*get_wallclock)(void);
	int (*set_wallclock)(unsigned long);
	void (*time_init)(void);
	void (*cpuid)(unsigned int *eax, unsigned int *ebx, unsigned int *ecx, unsigned int *edx);
	unsigned long (*get_debugreg)(int regno);
	void (*set_debugreg)(int regno, unsigned long value);
	void (*clts)(void);
	unsigned long (*read_cr0)(void);
	void (*write_cr0)(unsigned long);
	unsigned long (*read_cr2)(void);
	void (*write_cr2)(unsigned long);
	unsigned long (*read_cr3)(void);
	void (*write_cr3)(unsigned long);
	unsigned long (*read_cr4_safe)(void);
	unsigned long (*read_cr4)(void);
	void (*write_cr4)(unsigned long);
	unsigned long (*save_fl)(void);
	void (*restore_fl)(unsigned long);
	void (*irq_disable)(void);
	void (*irq_enable)(void);
	void (*safe_halt)(void);
	void (*halt)(void);
	void (*wbinvd)(void);
	u64 (*read_msr)(unsigned int msr, int *err);
	int (*write_msr)(unsigned int msr, u64 val);
	u64 (*read_tsc)(void);
	u64 (*read_pmc)(void);
	u64 (*get_scheduled_cycles)(void);
	unsigned long (*get_cpu_khz)(void);
	void (*load_tr_desc)(void);
	void (*load_gdt)(const struct Xgt_desc_struct *);
	void (*load_idt)(const struct Xgt_desc_struct *);
	void (*store_gdt)(struct Xgt_desc_struct *);
	void (*store_idt)(struct Xgt_desc_struct *);
	void (*set_ldt)(const void *desc, unsigned entries);
	unsigned long (*store_tr)(void);
	void (*load_tls)(struct thread_struct *t, unsigned int cpu);
	void (*write_ldt_entry)(void *dt, int entrynum, u32 low, u32 high);
	void (*write_gdt_entry)(void *dt, int entrynum, u32 low, u32 high);
	void (*write_idt_entry)(void *dt, int entrynum, u32 low, u32 high);
	void (*load_esp0)(struct tss_struct *tss, struct thread_struct *thread);
	void (*set_iopl_mask)(unsigned mask);
	void (*io_delay)(void);
	void (*apic_write)(unsigned long reg, unsigned long v);
	void (*apic_write_atomic)(unsigned long reg, unsigned long v);
	unsigned long (*apic_read)(unsigned long reg);
	void (*setup_boot_clock)(void);
	void (*setup_secondary_clock)(void);
	void (*flush_tlb_user)(void);
	void (*flush_tlb_kernel)(void);
	void (*flush_tlb_single)(u32 addr);
	void (*map_pt_hook)(int type, pte_t *va, u32 pfn);
	void (*alloc_pt)(u32 pfn);
	void (*alloc_pd)(u32 pfn);
	void (*alloc_pd_clone)(u32 pfn, u32 clonepfn, u32 start, u32 count);
	void (*release_pt)(u32 pfn);
	void (*release_pd)(u32 pfn);
	void (*set_pte)(pte_t *ptep, pte_t pteval);
	void (*set_pte_at)(struct mm_struct *mm, u32 addr, pte_t *ptep, pte_t pteval);
	void (*set_pmd)(pmd_t *pmdp, pmd_t pmdval);
	void (*pte_update)(struct mm_struct *mm, u32 addr, pte_t *ptep);
	void (*pte_update_defer)(struct mm_struct *mm, u32 addr, pte_t *ptep);
	void (*set_pte_atomic)(pte_t *ptep, u64 pteval);
	void (*set_pte_present)(struct mm_struct *mm, unsigned long addr, pte_t *ptep, u64 pte);
	void (*set_pud)(u32 *pudp, u64 pudval);
	void (*pte_clear)(struct mm_struct *mm, unsigned long addr, pte_t *ptep);
	void (*pmd_clear)(pmd_t *pmdp);
	void (*set_lazy_mode)(int mode);
	void (*irq_enable_sysexit)(void);
	void (*iret)(void);
	void (*startup_ipi_hook)(int phys_apicid, unsigned long start_eip, unsigned long start_esp);
};

#define PARAVIRT_NR_HOOKS 76
#define PARAVIRT_OFF_IRET PV_iret

#define PARAVIRT_LAZY_NONE 0
#define PARAVIRT_LAZY_MMU 1
#define PARAVIRT_LAZY_CPU 2
#define PARAVIRT_LAZY_FLUSH 3

extern struct paravirt_ops paravirt_ops;

/*
 * The interrupt-flag operations are 2.6.21's patchable call sites: each site is
 * recorded in .parainstructions (address, type, length, clobbers) and offered to
 * paravirt_ops.patch at boot by apply_paravirt.  The ROM leaves every site as it
 * is, so they stay indirect calls that save ecx and edx around the call.
 */
struct paravirt_patch {
	u8 *instr;
	u8 instrtype;
	u8 len;
	u16 clobbers;
};

#define PARA_SITE(insns)                                                                  \
	"771:\n\t" insns "\n772:\n\t"                                                      \
	".pushsection .parainstructions,\"a\"\n\t.balign 4\n\t.long 771b\n\t"             \
	".byte %c[ptype]\n\t.byte 772b-771b\n\t.short %c[pclob]\n\t.popsection"

static inline __attribute__((always_inline)) void raw_local_irq_disable(void)
{
	__asm__ volatile(PARA_SITE("pushl %%ecx; pushl %%edx; call *%c[op]; popl %%edx; popl %%ecx")
			 :
			 : [op] "i"(&paravirt_ops.irq_disable), [ptype] "i"(PARAVIRT_IRQ_DISABLE),
			   [pclob] "i"(CLBR_EAX)
			 : "memory", "cc", "eax");
}

static inline __attribute__((always_inline)) void raw_local_irq_enable(void)
{
	__asm__ volatile(PARA_SITE("pushl %%ecx; pushl %%edx; call *%c[op]; popl %%edx; popl %%ecx")
			 :
			 : [op] "i"(&paravirt_ops.irq_enable), [ptype] "i"(PARAVIRT_IRQ_ENABLE),
			   [pclob] "i"(CLBR_EAX)
			 : "memory", "cc", "eax");
}

static inline __attribute__((always_inline)) unsigned long raw_local_save_flags(void)
{
	unsigned long f;
	__asm__ volatile(PARA_SITE("pushl %%ecx; pushl %%edx; call *%c[op]; popl %%edx; popl %%ecx")
			 : "=a"(f)
			 : [op] "i"(&paravirt_ops.save_fl), [ptype] "i"(PARAVIRT_SAVE_FLAGS),
			   [pclob] "i"(CLBR_EAX)
			 : "memory", "cc");
	return f;
}

static inline __attribute__((always_inline)) void raw_local_irq_restore(unsigned long f)
{
	__asm__ volatile(PARA_SITE("pushl %%ecx; pushl %%edx; call *%c[op]; popl %%edx; popl %%ecx")
			 : "=a"(f)
			 : "0"(f), [op] "i"(&paravirt_ops.restore_fl), [ptype] "i"(PARAVIRT_RESTORE_FLAGS),
			   [pclob] "i"(CLBR_EAX)
			 : "memory", "cc");
}

/* 2.6.21's __raw_local_irq_save: save_fl and irq_disable at one 18-byte site */
static inline __attribute__((always_inline)) unsigned long raw_local_irq_save(void)
{
	unsigned long f;
	__asm__ volatile(PARA_SITE("pushl %%ecx; pushl %%edx; call *%c[op1]; call *%c[op2]; "
				   "popl %%edx; popl %%ecx")
			 : "=a"(f)
			 : [op1] "i"(&paravirt_ops.save_fl), [op2] "i"(&paravirt_ops.irq_disable),
			   [ptype] "i"(PARAVIRT_SAVE_FLAGS_IRQ_DISABLE), [pclob] "i"(CLBR_EAX)
			 : "memory", "cc");
	return f;
}

#define local_irq_save(flags) ((flags) = raw_local_irq_save())
#define local_irq_restore(flags) raw_local_irq_restore(flags)
#define local_irq_disable() raw_local_irq_disable()
#define local_irq_enable() raw_local_irq_enable()
#define irqs_disabled() (!(raw_local_save_flags() & 0x200))

#define arch_enter_lazy_mmu_mode() paravirt_ops.set_lazy_mode(PARAVIRT_LAZY_MMU)
#define arch_leave_lazy_mmu_mode() paravirt_ops.set_lazy_mode(PARAVIRT_LAZY_NONE)
#define arch_enter_lazy_cpu_mode() paravirt_ops.set_lazy_mode(PARAVIRT_LAZY_CPU)
#define arch_leave_lazy_cpu_mode() paravirt_ops.set_lazy_mode(PARAVIRT_LAZY_NONE)
#endif
