/*
 * A minimal pvscope guest written from docs/rom-abi.md alone: no header of the
 * project's own guests (recorder/guests/) is used.  It
 *
 *   1. checks the ROM header at HV_BASE and takes the entry table's address,
 *   2. builds an IDT through write_idt_entry and loads it with load_idt,
 *   3. builds page tables through alloc_pd, alloc_pt, set_pte and set_pmd
 *      (low 4 MiB, the hypervisor region and the APIC page, all 1:1), loads
 *      them with write_cr3 and turns paging on with read_cr0/write_cr0,
 *   4. changes a PTE (set_pte, pte_update) and flushes (flush_tlb_single,
 *      flush_tlb_user), and tears a page table down (release_pt),
 *   5. masks and unmasks interrupts (save_fl, irq_disable, irq_enable, restore_fl),
 *   6. takes one interrupt from the periodic timer through the IOAPIC (pin 2)
 *      and one from the local APIC timer, each acknowledged with apic_write(EOI)
 *      and left through the iret entry, halting with safe_halt while it waits,
 *   7. marks a phase, prints a line and ends the run with the exit service.
 *
 * Build: gcc -m32 -ffreestanding -nostdlib -c minimal.S -o minimal.o
 *        ld -m elf_i386 -nostdlib --build-id=none -T minimal.ld -o minimal.elf minimal.o
 */

/* --- the ROM ABI, as docs/rom-abi.md gives it -------------------------------------- */
#define HV_BASE          0xFFC00000
#define ROM_SIG_LO       0x43535650     /* "PVSC" */
#define ROM_SIG_HI       0x0045504F     /* "OPE\0" */
#define ROM_ABI          1
#define ROM_ABI_OFF      0x08
#define ROM_COUNT_OFF    0x0C
#define ROM_TABLE_OFF    0x10
#define ROM_SERVICE_OFF  0x24
#define ROM_HVBASE_OFF   0x40
#define NR_HOOKS         76

/* entry-table indexes (struct paravirt_ops order, Linux 2.6.21) */
#define PV_read_cr0          12
#define PV_write_cr0         13
#define PV_read_cr3          16
#define PV_write_cr3         17
#define PV_save_fl           21
#define PV_restore_fl        22
#define PV_irq_disable       23
#define PV_irq_enable        24
#define PV_safe_halt         25
#define PV_read_tsc          30
#define PV_load_idt          36
#define PV_write_idt_entry   44
#define PV_apic_write        48
#define PV_apic_read         50
#define PV_flush_tlb_user    53
#define PV_flush_tlb_single  55
#define PV_alloc_pt          57
#define PV_alloc_pd          58
#define PV_release_pt        60
#define PV_set_pte           62
#define PV_set_pmd           64
#define PV_pte_update        65
#define PV_iret              74

#define SVC_EXIT     0
#define SVC_CHECK    1
#define SVC_CONSOLE  3
#define SVC_PHASE    4

#define KERNEL_CS    0x19               /* the recorder's boot GDT: ring-1 code */

#define LAPIC        0xFEE00000
#define IOAPIC       0xFEC00000
#define APIC_EOI     0x0B0
#define APIC_SVR     0x0F0
#define APIC_LVTT    0x320
#define APIC_TMICT   0x380
#define APIC_TDCR    0x3E0

#define VEC_PIT      0x30               /* IOAPIC pin 2 */
#define VEC_LAPIC    0x31               /* local APIC timer */
#define VEC_SPURIOUS 0xFF

#define PTE_KERNEL   0x063              /* present, writable, accessed, dirty */
#define PTE_MMIO     0x07B              /* and cache-disabled, write-through */
#define PDE_TABLE    0x063

#define SCRATCH      0x00300000         /* a page whose mapping is changed and flushed */

/* call hook n (arguments already in eax, edx, ecx; a 4th pushed by the caller) */
#define PV(n) call *(pv_ops + 4 * (n))

	.code32
	.text
	.globl _start
_start:
	movl $stack_top, %esp           /* the recorder leaves ESP 0 */

	/* 1. find the ROM */
	cmpl $ROM_SIG_LO, HV_BASE
	jne no_rom
	cmpl $ROM_SIG_HI, HV_BASE + 4
	jne no_rom
	cmpl $ROM_ABI, HV_BASE + ROM_ABI_OFF
	jne no_rom
	cmpl $NR_HOOKS, HV_BASE + ROM_COUNT_OFF
	jb no_rom
	movl HV_BASE + ROM_SERVICE_OFF, %eax
	movl %eax, service
	movl HV_BASE + ROM_TABLE_OFF, %eax
	xorl %ecx, %ecx
1:	movl %eax, pv_ops(,%ecx,4)      /* call each 8-byte slot itself */
	addl $8, %eax
	incl %ecx
	cmpl $NR_HOOKS, %ecx
	jb 1b

	/* 2. the IDT: every exception to `fault`, the two timers to `tick` */
	xorl %ebx, %ebx
2:	movl $fault, %esi
	call set_gate
	incl %ebx
	cmpl $32, %ebx
	jb 2b
	movl $VEC_PIT, %ebx
	movl $tick, %esi
	call set_gate
	movl $VEC_LAPIC, %ebx
	movl $tick, %esi
	call set_gate
	movl $VEC_SPURIOUS, %ebx
	movl $spurious, %esi
	call set_gate
	movl $idt_descr, %eax
	PV(PV_load_idt)

	/* 3. page tables: the low 4 MiB, the hypervisor region, the APICs' 4 MiB, all 1:1 */
	movl $pgdir, %eax
	shrl $12, %eax
	PV(PV_alloc_pd)
	movl $pt_low, %edi
	movl $0, %esi
	movl $1024, %ebp
	movl $PTE_KERNEL, %ebx
	call fill_table
	movl $0, %eax
	movl $pt_low, %edx
	call set_pde
	movl $pt_hv, %edi
	movl HV_BASE + ROM_HVBASE_OFF, %esi
	movl $1024, %ebp
	movl $PTE_KERNEL, %ebx
	call fill_table
	movl HV_BASE + ROM_HVBASE_OFF, %eax
	movl $pt_hv, %edx
	call set_pde
	movl $pt_apic, %edi             /* one table covers 0xFEC00000..0xFEFFFFFF */
	movl %edi, %eax
	shrl $12, %eax
	PV(PV_alloc_pt)
	movl $pt_apic + ((IOAPIC >> 12) & 1023) * 4, %eax
	movl $IOAPIC + PTE_MMIO, %edx
	PV(PV_set_pte)
	movl $pt_apic + ((LAPIC >> 12) & 1023) * 4, %eax
	movl $LAPIC + PTE_MMIO, %edx
	PV(PV_set_pte)
	movl $LAPIC, %eax
	movl $pt_apic, %edx
	call set_pde
	movl $pgdir, %eax
	PV(PV_write_cr3)
	PV(PV_read_cr3)
	cmpl $pgdir, %eax
	jne bad_cr3
	PV(PV_read_cr0)
	orl $0x80010000, %eax           /* PG, WP */
	PV(PV_write_cr0)

	/* 4. change one mapping and flush it; then all; then a table's whole life */
	movl $pt_low + (SCRATCH >> 12) * 4, %eax
	movl $0, %edx
	PV(PV_set_pte)
	movl $SCRATCH, %eax
	PV(PV_flush_tlb_single)
	movl $pt_low + (SCRATCH >> 12) * 4, %eax
	movl $SCRATCH + PTE_KERNEL, %edx
	PV(PV_set_pte)
	movl $pt_low + (SCRATCH >> 12) * 4, %ecx
	andl $~0x20, (%ecx)             /* clear Accessed in place, as the kernel's */
	movl $0, %eax                   /* ptep_test_and_clear_young does, then tell */
	movl $SCRATCH, %edx
	PV(PV_pte_update)
	PV(PV_flush_tlb_user)
	movl $spare_pt, %eax
	shrl $12, %eax
	PV(PV_alloc_pt)
	movl $spare_pt, %eax
	shrl $12, %eax
	PV(PV_release_pt)

	/* 5, 6. interrupts: local APIC on, IOAPIC pin 2 routed, then wait for a tick */
	PV(PV_save_fl)
	movl %eax, saved_flags
	PV(PV_irq_disable)
	movl $APIC_SVR, %eax
	movl $0x100 | VEC_SPURIOUS, %edx
	PV(PV_apic_write)
	movl $APIC_SVR, %eax
	PV(PV_apic_read)
	movl $IOAPIC, %ecx
	movl $0x15, (%ecx)              /* IOREGSEL: pin 2, high word: destination APIC 0 */
	movl $0, 0x10(%ecx)
	movl $0x14, (%ecx)              /* pin 2, low word: vector, fixed, edge, high, unmasked */
	movl $VEC_PIT, 0x10(%ecx)
	PV(PV_irq_enable)
	PV(PV_irq_disable)
	movl $1, %ebx
	call wait_ticks
	/* the local APIC timer: one-shot, divide by 1, 5000 instructions */
	movl $APIC_TDCR, %eax
	movl $0xB, %edx
	PV(PV_apic_write)
	movl $APIC_LVTT, %eax
	movl $VEC_LAPIC, %edx
	PV(PV_apic_write)
	movl $APIC_TMICT, %eax
	movl $5000, %edx
	PV(PV_apic_write)
	movl $2, %ebx
	call wait_ticks
	movl saved_flags, %eax
	PV(PV_restore_fl)
	PV(PV_read_tsc)

	/* 7. a phase marker around nothing, a console line, the end */
	movl $SVC_PHASE, %eax
	movl $1, %edx
	movl $0, %ecx
	call *service
	movl $SVC_PHASE, %eax
	movl $0, %edx
	movl $0, %ecx
	call *service
	movl $SVC_CONSOLE, %eax
	movl $done_msg, %edx
	movl $done_len, %ecx
	call *service
	movl $SVC_EXIT, %eax
	xorl %edx, %edx
	xorl %ecx, %ecx
	call *service
3:	ud2                             /* not reached: the exit service ends the run */
	jmp 3b

no_rom:
	ud2                             /* no ROM: nothing to report to */
	jmp no_rom

bad_cr3:
	movl $cr3_msg, %edx
	movl %eax, %ecx
	jmp check_failed

/* wait_ticks: with interrupts masked, halt until `ticks` reaches ebx; returns masked */
wait_ticks:
1:	cmpl %ebx, ticks
	jae 2f
	PV(PV_safe_halt)                /* returns with IF set, after the interrupt */
	PV(PV_irq_disable)
	jmp 1b
2:	ret

/* set_gate: vector ebx -> handler esi, an interrupt gate, DPL 1 */
set_gate:
	movl %esi, %eax
	andl $0xFFFF0000, %eax
	orl $0x0000AE00, %eax           /* present, DPL 1, 32-bit interrupt gate */
	pushl %eax                      /* 4th argument: high word */
	movl %esi, %ecx
	andl $0xFFFF, %ecx
	orl $KERNEL_CS << 16, %ecx      /* 3rd: low word */
	movl %ebx, %edx                 /* 2nd: entry number */
	movl $idt, %eax                 /* 1st: the table */
	PV(PV_write_idt_entry)
	addl $4, %esp                   /* the caller pops stack arguments */
	ret

/* fill_table: table edi (zeroed, 4 KiB aligned) maps ebp pages from physical esi, flags ebx */
fill_table:
	movl %edi, %eax
	shrl $12, %eax
	PV(PV_alloc_pt)
1:	movl %edi, %eax
	leal (%esi,%ebx), %edx
	PV(PV_set_pte)
	addl $4, %edi
	addl $4096, %esi
	decl %ebp
	jnz 1b
	ret

/* set_pde: the directory entry covering address eax -> table edx */
set_pde:
	shrl $22, %eax
	leal pgdir(,%eax,4), %eax
	orl $PDE_TABLE, %edx
	PV(PV_set_pmd)
	ret

/* the timers' handler: count, EOI, return through the iret entry */
tick:
	pushl %eax
	pushl %ecx
	pushl %edx
	incl ticks
	movl $APIC_EOI, %eax
	xorl %edx, %edx
	PV(PV_apic_write)
	popl %edx
	popl %ecx
	popl %eax
	jmp *(pv_ops + 4 * PV_iret)

/* the spurious vector: no EOI */
spurious:
	jmp *(pv_ops + 4 * PV_iret)

fault:
	movl $fault_msg, %edx
	movl (%esp), %ecx               /* the error code or EIP: detail only */
check_failed:
	movl $SVC_CHECK, %eax
	call *service
4:	ud2
	jmp 4b

	.data
	.balign 4
idt_descr:
	.word 256 * 8 - 1
	.long idt
done_msg:
	.ascii "abi guest: done\n"
	.set done_len, . - done_msg
fault_msg:
	.asciz "abi guest: unexpected exception"
cr3_msg:
	.asciz "abi guest: read_cr3 disagrees with write_cr3"

	.bss
	.balign 4096
pgdir:	.skip 4096
pt_low:	.skip 4096
pt_hv:	.skip 4096
pt_apic: .skip 4096
spare_pt: .skip 4096
idt:	.skip 256 * 8
	.balign 4
pv_ops:	.skip 4 * NR_HOOKS
service: .skip 4
ticks:	.skip 4
saved_flags: .skip 4
	.balign 16
	.skip 8192
stack_top:

	.section .note.GNU-stack, "", @progbits
