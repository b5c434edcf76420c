/* Entry point: the recorder starts us at CPL 1, paging off, on its flat boot GDT. */
	.section .boot.text, "ax"
	.globl _start
	.type _start, @function
_start:
	movl $(boot_stack_top - 0xC0000000), %esp
	call boot_main
1:	ud2
	jmp 1b

	.size _start, . - _start

	.globl enter_high
	.type enter_high, @function
/* enter_high(stack_top): switch to the kernel's linear-map stack and start it */
enter_high:
	movl %eax, %esp
	xorl %ebp, %ebp
	call start_kernel
	ud2
	.size enter_high, . - enter_high

	.bss
	.balign 4096
	.globl boot_stack, boot_stack_top
boot_stack:
	.skip 16384
boot_stack_top:

	.section .note.GNU-stack, "", @progbits
