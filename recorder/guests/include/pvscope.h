/* The pvscope hypervisor ROM ABI (see recorder/rom.py; a test checks these match). */
#ifndef PV_PVSCOPE_H
#define PV_PVSCOPE_H
#include "types.h"

#define PV_HV_BASE 0xFFC00000u      /* hypervisor region, mapped 1:1 up to 4 GiB */
#define PV_ROM_ABI 1
#define PV_SERVICE_EXIT 0           /* service(code, arg, arg): run finished */
#define PV_SERVICE_CHECK 1          /* a kernel invariant failed: arg1 = what, arg2 = detail */
#define PV_SERVICE_PANIC 2
#define PV_SERVICE_CONSOLE 3        /* arg1 = string, arg2 = length */
#define PV_SERVICE_PHASE 4          /* a workload phase begins: arg1 = phase id, arg2 = operations in it (0 ends the last) */

struct pv_rom_header {
	char signature[8];          /* "PVSCOPE\0" */
	u32 abi;
	u32 entry_count;
	u32 entry_table;
	u32 kernel_rpl;
	u32 scale;
	u32 seed;
	u32 mem_bytes;
	u32 service;
	u32 name;
	u32 reserved_gdt;           /* first of 4 GDT entries the hypervisor owns */
	u32 user_page;              /* must be mapped user-executable */
	u32 data;
	u32 ring;
	u32 ring_size;
	u32 hv_base;
};

/* MMIO windows */
#define LAPIC_BASE 0xFEE00000u
#define IOAPIC_BASE 0xFEC00000u
#define IODEV_BASE 0xFEB00000u
#endif
