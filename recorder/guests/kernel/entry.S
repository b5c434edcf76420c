/* Interrupt and exception entry stubs (one stub per vector the kernel handles;
 * the return goes through paravirt_ops.iret, as INTERRUPT_RETURN does). */
#define KERNEL_DS ((13 << 3) | 1)
#define OFF_IRET (12 + 4 * 74)
	.text
stub_00:
	pushl $0
	pushl $0x0
	jmp trap_common
stub_01:
	pushl $0
	pushl $0x1
	jmp trap_common
stub_02:
	pushl $0
	pushl $0x2
	jmp trap_common
stub_03:
	pushl $0
	pushl $0x3
	jmp trap_common
stub_04:
	pushl $0
	pushl $0x4
	jmp trap_common
stub_05:
	pushl $0
	pushl $0x5
	jmp trap_common
stub_06:
	pushl $0
	pushl $0x6
	jmp trap_common
stub_07:
	pushl $0
	pushl $0x7
	jmp trap_common
stub_08:
	pushl $0x8
	jmp trap_common
stub_09:
	pushl $0
	pushl $0x9
	jmp trap_common
stub_0a:
	pushl $0xa
	jmp trap_common
stub_0b:
	pushl $0xb
	jmp trap_common
stub_0c:
	pushl $0xc
	jmp trap_common
stub_0d:
	pushl $0xd
	jmp trap_common
stub_0e:
	pushl $0xe
	jmp trap_common
stub_0f:
	pushl $0
	pushl $0xf
	jmp trap_common
stub_10:
	pushl $0
	pushl $0x10
	jmp trap_common
stub_11:
	pushl $0x11
	jmp trap_common
stub_12:
	pushl $0
	pushl $0x12
	jmp trap_common
stub_13:
	pushl $0
	pushl $0x13
	jmp trap_common
stub_14:
	pushl $0
	pushl $0x14
	jmp trap_common
stub_15:
	pushl $0
	pushl $0x15
	jmp trap_common
stub_16:
	pushl $0
	pushl $0x16
	jmp trap_common
stub_17:
	pushl $0
	pushl $0x17
	jmp trap_common
stub_18:
	pushl $0
	pushl $0x18
	jmp trap_common
stub_19:
	pushl $0
	pushl $0x19
	jmp trap_common
stub_1a:
	pushl $0
	pushl $0x1a
	jmp trap_common
stub_1b:
	pushl $0
	pushl $0x1b
	jmp trap_common
stub_1c:
	pushl $0
	pushl $0x1c
	jmp trap_common
stub_1d:
	pushl $0
	pushl $0x1d
	jmp trap_common
stub_1e:
	pushl $0
	pushl $0x1e
	jmp trap_common
stub_1f:
	pushl $0
	pushl $0x1f
	jmp trap_common
stub_31:
	pushl $0
	pushl $0x31
	jmp trap_common
stub_32:
	pushl $0
	pushl $0x32
	jmp trap_common
stub_33:
	pushl $0
	pushl $0x33
	jmp trap_common
stub_34:
	pushl $0
	pushl $0x34
	jmp trap_common
stub_35:
	pushl $0
	pushl $0x35
	jmp trap_common
stub_36:
	pushl $0
	pushl $0x36
	jmp trap_common
stub_37:
	pushl $0
	pushl $0x37
	jmp trap_common
stub_38:
	pushl $0
	pushl $0x38
	jmp trap_common
stub_39:
	pushl $0
	pushl $0x39
	jmp trap_common
stub_3a:
	pushl $0
	pushl $0x3a
	jmp trap_common
stub_3b:
	pushl $0
	pushl $0x3b
	jmp trap_common
stub_3c:
	pushl $0
	pushl $0x3c
	jmp trap_common
stub_3d:
	pushl $0
	pushl $0x3d
	jmp trap_common
stub_3e:
	pushl $0
	pushl $0x3e
	jmp trap_common
stub_3f:
	pushl $0
	pushl $0x3f
	jmp trap_common
stub_40:
	pushl $0
	pushl $0x40
	jmp trap_common
stub_41:
	pushl $0
	pushl $0x41
	jmp trap_common
stub_42:
	pushl $0
	pushl $0x42
	jmp trap_common
stub_43:
	pushl $0
	pushl $0x43
	jmp trap_common
stub_44:
	pushl $0
	pushl $0x44
	jmp trap_common
stub_45:
	pushl $0
	pushl $0x45
	jmp trap_common
stub_46:
	pushl $0
	pushl $0x46
	jmp trap_common
stub_47:
	pushl $0
	pushl $0x47
	jmp trap_common
stub_48:
	pushl $0
	pushl $0x48
	jmp trap_common
stub_80:
	pushl $0
	pushl $0x80
	jmp trap_common
stub_ef:
	pushl $0
	pushl $0xef
	jmp trap_common
stub_fe:
	pushl $0
	pushl $0xfe
	jmp trap_common
stub_ff:
	pushl $0
	pushl $0xff
	jmp trap_common
trap_common:
	pushl %ds
	pushl %es
	pushal
	movl $KERNEL_DS, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %esp, %eax
	call do_trap
	popal
	popl %es
	popl %ds
	addl $8, %esp
	jmp *paravirt_ops+OFF_IRET

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
	.byte 0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x80, 0xef, 0xfe, 0xff
	.balign 4
trap_stub_count:
	.long 60

/* int run_user(u32 eip, u32 esp): enter CPL 3 at eip; returns when the task exits */
	.text
	.globl run_user, user_exit
run_user:
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
	jmp *paravirt_ops+OFF_IRET

/* void user_exit(int code): back to run_user's caller, on the kernel stack */
user_exit:
	movl user_saved_esp, %esp
	popl %edi
	popl %esi
	popl %ebx
	popl %ebp
	ret

	.bss
	.balign 4
user_saved_esp:
	.long 0
