/*
 * boot: the boot path alone.  The kernel boots (ROM probe, paravirt_ops, the
 * kernel's page tables, descriptor tables, 8259A, PIT, CPU identification, local
 * APIC and IOAPIC, the APIC timer calibrated against the PIT, kernel text
 * write-protected), then repeats the boot path `scale` times on the running
 * kernel: the linear map's page tables rebuilt and swapped in, descriptor
 * tables, interrupt controllers, clocks and CPU set up again.  No user tasks.
 */
#include "kernel.h"

void (*const user_programs[])(u32, u32, u32) = { NULL };
const u32 nr_user_programs = 0;

void workload_main(u32 scale, u32 seed)
{
	u32 before = nr_free_pages();
	for (u32 i = 0; i < scale; i++) {
		setup_arch_repeat();
		CHECK(nr_free_pages() == before, "the boot path leaks frames", before - nr_free_pages());
	}
}
