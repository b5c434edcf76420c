/* Offsets shared by C and assembly; kernel.c checks them with BUILD_BUG_ON. */
#ifndef PV_ASM_OFFSETS_H
#define PV_ASM_OFFSETS_H
/* struct paravirt_ops: three data words, then one pointer per hook in catalogue order */
#define PV_OFF(id) (12 + 4 * (id))
#define PV_read_cr0 PV_OFF(12)
#define PV_irq_disable PV_OFF(23)
#define PV_irq_enable PV_OFF(24)
#define PV_iret PV_OFF(74)
/* 2.6.21's patch types (include/asm-i386/paravirt.h) and clobber masks */
#define PARAVIRT_IRQ_DISABLE 0
#define PARAVIRT_IRQ_ENABLE 1
#define PARAVIRT_RESTORE_FLAGS 2
#define PARAVIRT_SAVE_FLAGS 3
#define PARAVIRT_SAVE_FLAGS_IRQ_DISABLE 4
#define PARAVIRT_INTERRUPT_RETURN 5
#define PARAVIRT_STI_SYSEXIT 6
#define CLBR_NONE 0
#define CLBR_EAX 1
#define CLBR_ECX 2
#define CLBR_EDX 4
#define CLBR_ANY 7
/* struct task_struct: thread first; thread.esp is where switch_to parks a task */
#define TASK_THREAD_ESP 32
/* pt_regs */
#define PT_CS 52
#define __KERNEL_DS_VALUE ((13 << 3) | 1)
#endif
