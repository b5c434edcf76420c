/*
 * Interrupt, exception and system-call entry; the return to user mode; the
 * context switch.  As in 2.6.21's entry.S, interrupts are disabled through
 * paravirt_ops on the way back to user mode (DISABLE_INTERRUPTS) and every
 * return goes through paravirt_ops.iret (INTERRUPT_RETURN); both are patch sites.
 */
#include "asm-offsets.h"

#define PARA_SITE(ptype, clobbers, insns)						\
771:	insns;										\
772:	.pushsection .parainstructions, "a";						\
	.balign 4;									\
	.long 771b;									\
	.byte ptype;									\
	.byte 772b - 771b;								\
	.short clobbers;								\
	.popsection

#define DISABLE_INTERRUPTS							\
	PARA_SITE(PARAVIRT_IRQ_DISABLE, CLBR_EAX,				\
		  pushl %ecx; pushl %edx; call *paravirt_ops + PV_irq_disable; popl %edx; popl %ecx)
#define INTERRUPT_RETURN							\
	PARA_SITE(PARAVIRT_INTERRUPT_RETURN, CLBR_ANY, jmp *%cs:paravirt_ops + PV_iret)

#define ENTRY(name) .globl name; .type name, @function; name:
#define END(name) .size name, . - name

	.text
ENTRY(interrupt_stubs)
stub_00:
	pushl $0
	pushl $0x0
	jmp common_entry
stub_01:
	pushl $0
	pushl $0x1
	jmp common_entry
stub_02:
	pushl $0
	pushl $0x2
	jmp common_entry
stub_03:
	pushl $0
	pushl $0x3
	jmp common_entry
stub_04:
	pushl $0
	pushl $0x4
	jmp common_entry
stub_05:
	pushl $0
	pushl $0x5
	jmp common_entry
stub_06:
	pushl $0
	pushl $0x6
	jmp common_entry
stub_07:
	pushl $0
	pushl $0x7
	jmp common_entry
stub_08:
	pushl $0x8
	jmp common_entry
stub_09:
	pushl $0
	pushl $0x9
	jmp common_entry
stub_0a:
	pushl $0xa
	jmp common_entry
stub_0b:
	pushl $0xb
	jmp common_entry
stub_0c:
	pushl $0xc
	jmp common_entry
stub_0d:
	pushl $0xd
	jmp common_entry
stub_0e:
	pushl $0xe
	jmp common_entry
stub_0f:
	pushl $0
	pushl $0xf
	jmp common_entry
stub_10:
	pushl $0
	pushl $0x10
	jmp common_entry
stub_11:
	pushl $0x11
	jmp common_entry
stub_12:
	pushl $0
	pushl $0x12
	jmp common_entry
stub_13:
	pushl $0
	pushl $0x13
	jmp common_entry
stub_14:
	pushl $0
	pushl $0x14
	jmp common_entry
stub_15:
	pushl $0
	pushl $0x15
	jmp common_entry
stub_16:
	pushl $0
	pushl $0x16
	jmp common_entry
stub_17:
	pushl $0
	pushl $0x17
	jmp common_entry
stub_18:
	pushl $0
	pushl $0x18
	jmp common_entry
stub_19:
	pushl $0
	pushl $0x19
	jmp common_entry
stub_1a:
	pushl $0
	pushl $0x1a
	jmp common_entry
stub_1b:
	pushl $0
	pushl $0x1b
	jmp common_entry
stub_1c:
	pushl $0
	pushl $0x1c
	jmp common_entry
stub_1d:
	pushl $0
	pushl $0x1d
	jmp common_entry
stub_1e:
	pushl $0
	pushl $0x1e
	jmp common_entry
stub_1f:
	pushl $0
	pushl $0x1f
	jmp common_entry
stub_31:
	pushl $0
	pushl $0x31
	jmp common_entry
stub_32:
	pushl $0
	pushl $0x32
	jmp common_entry
stub_33:
	pushl $0
	pushl $0x33
	jmp common_entry
stub_34:
	pushl $0
	pushl $0x34
	jmp common_entry
stub_35:
	pushl $0
	pushl $0x35
	jmp common_entry
stub_36:
	pushl $0
	pushl $0x36
	jmp common_entry
stub_37:
	pushl $0
	pushl $0x37
	jmp common_entry
stub_38:
	pushl $0
	pushl $0x38
	jmp common_entry
stub_39:
	pushl $0
	pushl $0x39
	jmp common_entry
stub_3a:
	pushl $0
	pushl $0x3a
	jmp common_entry
stub_3b:
	pushl $0
	pushl $0x3b
	jmp common_entry
stub_3c:
	pushl $0
	pushl $0x3c
	jmp common_entry
stub_3d:
	pushl $0
	pushl $0x3d
	jmp common_entry
stub_3e:
	pushl $0
	pushl $0x3e
	jmp common_entry
stub_3f:
	pushl $0
	pushl $0x3f
	jmp common_entry
stub_40:
	pushl $0
	pushl $0x40
	jmp common_entry
stub_41:
	pushl $0
	pushl $0x41
	jmp common_entry
stub_42:
	pushl $0
	pushl $0x42
	jmp common_entry
stub_43:
	pushl $0
	pushl $0x43
	jmp common_entry
stub_44:
	pushl $0
	pushl $0x44
	jmp common_entry
stub_45:
	pushl $0
	pushl $0x45
	jmp common_entry
stub_46:
	pushl $0
	pushl $0x46
	jmp common_entry
stub_47:
	pushl $0
	pushl $0x47
	jmp common_entry
stub_48:
	pushl $0
	pushl $0x48
	jmp common_entry
stub_80:
	pushl $0
	pushl $0x80
	jmp common_entry
stub_ef:
	pushl $0
	pushl $0xef
	jmp common_entry
stub_fe:
	pushl $0
	pushl $0xfe
	jmp common_entry
stub_ff:
	pushl $0
	pushl $0xff
	jmp common_entry

END(interrupt_stubs)

/* SAVE_ALL, then the C dispatcher; the frame is struct pt_regs */
ENTRY(common_entry)
	cld
	pushl %ds
	pushl %es
	pushal
	movl $__KERNEL_DS_VALUE, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %esp, %eax
	call do_trap
END(common_entry)
ENTRY(ret_from_trap)
	movl PT_CS(%esp), %eax		/* back to CPL 3, or to the kernel (RPL 1)? */
	andl $3, %eax
	cmpl $3, %eax
	jb restore_all
END(ret_from_trap)
/* resume_userspace / syscall_exit: interrupts off while the work flags are checked */
ENTRY(resume_userspace)
	DISABLE_INTERRUPTS
	movl %esp, %eax
	call exit_to_user
END(resume_userspace)
ENTRY(restore_all)
	popal
	popl %es
	popl %ds
	addl $8, %esp
	INTERRUPT_RETURN
END(restore_all)

/* a new task's first return: finish the switch, then leave as from a system call */
ENTRY(ret_from_fork)
	call schedule_tail
	jmp ret_from_trap
END(ret_from_fork)

/* a task the kernel starts (init): finish the switch, exec, leave for user mode */
ENTRY(ret_from_kernel_thread)
	call schedule_tail
	movl %esp, %eax
	call kernel_thread_exec
	jmp ret_from_trap
END(ret_from_kernel_thread)

/*
 * struct task_struct *switch_to_asm(prev, next): park prev's callee-saved registers
 * and stack pointer in prev->thread, take next's, run __switch_to on next's stack
 * and return (for a new task, into ret_from_fork) with prev in eax.
 */
ENTRY(switch_to_asm)
	pushl %ebp
	pushl %edi
	pushl %esi
	pushl %ebx
	movl %esp, TASK_THREAD_ESP(%eax)
	movl TASK_THREAD_ESP(%edx), %esp
	call __switch_to
	popl %ebx
	popl %esi
	popl %edi
	popl %ebp
	ret
END(switch_to_asm)

/* int run_user(u32 eip, u32 esp): enter CPL 3 at eip on the current task; returns
 * when the task calls user_exit (pvcall's one-shot task, without the scheduler) */
ENTRY(run_user)
	pushl %ebp
	pushl %ebx
	pushl %esi
	pushl %edi
	movl %esp, user_saved_esp
	pushl $((15 << 3) | 3)
	pushl %edx
	pushl $0x1202
	pushl $((14 << 3) | 3)
	pushl %eax
	movl $((15 << 3) | 3), %ecx
	movl %ecx, %ds
	movl %ecx, %es
	INTERRUPT_RETURN
END(run_user)

/* void user_exit(int code): back to run_user's caller, on the kernel stack */
ENTRY(user_exit)
	movl user_saved_esp, %esp
	popl %edi
	popl %esi
	popl %ebx
	popl %ebp
	ret
END(user_exit)

	.section .rodata
	.balign 4
	.globl trap_stubs, trap_stub_vectors, trap_stub_count
trap_stubs:
	.long stub_00
	.long stub_01
	.long stub_02
	.long stub_03
	.long stub_04
	.long stub_05
	.long stub_06
	.long stub_07
	.long stub_08
	.long stub_09
	.long stub_0a
	.long stub_0b
	.long stub_0c
	.long stub_0d
	.long stub_0e
	.long stub_0f
	.long stub_10
	.long stub_11
	.long stub_12
	.long stub_13
	.long stub_14
	.long stub_15
	.long stub_16
	.long stub_17
	.long stub_18
	.long stub_19
	.long stub_1a
	.long stub_1b
	.long stub_1c
	.long stub_1d
	.long stub_1e
	.long stub_1f
	.long stub_31
	.long stub_32
	.long stub_33
	.long stub_34
	.long stub_35
	.long stub_36
	.long stub_37
	.long stub_38
	.long stub_39
	.long stub_3a
	.long stub_3b
	.long stub_3c
	.long stub_3d
	.long stub_3e
	.long stub_3f
	.long stub_40
	.long stub_41
	.long stub_42
	.long stub_43
	.long stub_44
	.long stub_45
	.long stub_46
	.long stub_47
	.long stub_48
	.long stub_80
	.long stub_ef
	.long stub_fe
	.long stub_ff
trap_stub_vectors:
	.byte 0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf
	.byte 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f
	.byte 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x40
	.byte 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x80, 0xef, 0xfe, 0xff
	.balign 4
trap_stub_count:
	.long 60

	.bss
	.balign 4
user_saved_esp:
	.long 0

	.section .note.GNU-stack, "", @progbits
