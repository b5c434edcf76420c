/*
 * Memory: frames and their struct page, kernel page tables and vmalloc, address
 * spaces (a page directory each, its kernel half cloned from swapper_pg_dir),
 * their areas, the page-fault handler (demand-zero and the zero page, the
 * executable's pages, copy-on-write and its reuse, swap-in), fork's copy, exit's
 * and munmap's zap, mprotect, mremap, madvise, brk, and direct reclaim that ages
 * and swaps out anonymous pages.  Page-table notifications follow 2.6.21:
 * alloc_pt/release_pt in pmd_populate/__pte_free_tlb, alloc_pd_clone/release_pd
 * in pgd_ctor/pgd_dtor, set_pte_at for user PTEs, pte_update after in-place
 * changes (ptep_get_and_clear, ptep_set_wrprotect), pte_update_defer for
 * accessed/dirty changes (ptep_set_access_flags, ptep_clear_flush_young), lazy
 * MMU mode around copy_pte_range, zap_pte_range, change_pte_range and move_ptes.
 */
#include "kernel.h"

struct page *mem_map;
u32 max_pfn;
u32 zero_pfn;
static u32 free_head; /* pfn of the first free frame on the list, 0 = none */
static u32 nr_free, next_fresh;
static u32 lru_head, lru_tail;
u32 nr_user_pages, nr_swapped, nr_swapins, nr_reclaim_scans, nr_cow, nr_reuse;
u32 nr_mms_live, nr_ptes_live;
struct mm_struct init_mm = { .pgd = swapper_pg_dir, .users = 2, .count = 2 };
static spinlock_t pgd_lock = SPIN_LOCK_UNLOCKED("pgd_lock recursion");
static u32 next_mm_id = 1;
u32 loaded_cr3; /* what this kernel last loaded into CR3 */

#define MAX_MMS 64
#define MAX_VMAS 1024
static struct mm_struct mm_pool[MAX_MMS];
static struct mm_struct *mm_free;
static struct vm_area vma_pool[MAX_VMAS];
static struct vm_area *vma_free;

/* the fixmap slot 2.6.21's test_wp_bit uses, just below the hypervisor's region */
#define FIX_WP_TEST 0xFFBFF000u

/* --- frames ------------------------------------------------------------------------ */

void clear_page(void *to) { memset(to, 0, PAGE_SIZE); }
void copy_page(void *to, const void *from) { memcpy(to, from, PAGE_SIZE); }

u32 alloc_page(int zero)
{
	u32 pfn;
	if (free_head) {
		pfn = free_head;
		free_head = pfn_page(pfn)->lru_next;
		nr_free--;
	} else if (next_fresh < max_pfn) {
		pfn = next_fresh++;
	} else {
		check_failed("out of memory", max_pfn);
	}
	struct page *p = pfn_page(pfn);
	CHECK(p->flags & PG_free, "allocating a frame that is in use", pfn);
	p->flags = 0;
	p->count = 1;
	p->mapcount = 0;
	p->pad = 0;
	p->mm = NULL;
	p->lru_next = p->lru_prev = 0;
	if (zero)
		clear_page(__va(pfn << PAGE_SHIFT));
	return pfn;
}

u32 nr_free_pages(void) { return nr_free + (max_pfn - next_fresh); }

/* n contiguous frames, never freed (kernel stacks, the swap map) */
u32 alloc_contig_fresh(u32 n)
{
	CHECK(next_fresh + n <= max_pfn, "out of memory for a contiguous area", n);
	u32 first = next_fresh;
	for (u32 i = 0; i < n; i++) {
		struct page *p = pfn_page(next_fresh++);
		p->flags = PG_reserved;
		p->count = 1;
	}
	return first;
}

void get_page(u32 pfn)
{
	struct page *p = pfn_page(pfn);
	if (p->flags & PG_reserved)
		return;
	CHECK(p->count, "get_page on a free frame", pfn);
	p->count++;
}

static void lru_del(u32 pfn);

void put_page(u32 pfn)
{
	struct page *p = pfn_page(pfn);
	if (p->flags & PG_reserved)
		return;
	CHECK(p->count, "page reference count underflow", pfn);
	if (--p->count)
		return;
	CHECK(!p->mapcount, "freeing a frame still mapped", pfn);
	if (p->flags & PG_anon) {
		nr_user_pages--;
		lru_del(pfn);
	}
	p->flags = PG_free;
	p->lru_next = free_head;
	free_head = pfn;
	nr_free++;
}

static void lru_add(u32 pfn)
{
	struct page *p = pfn_page(pfn);
	p->flags |= PG_lru;
	p->lru_next = 0;
	p->lru_prev = lru_tail;
	if (lru_tail)
		pfn_page(lru_tail)->lru_next = pfn;
	else
		lru_head = pfn;
	lru_tail = pfn;
}

static void lru_del(u32 pfn)
{
	struct page *p = pfn_page(pfn);
	if (!(p->flags & PG_lru))
		return;
	if (p->lru_prev)
		pfn_page(p->lru_prev)->lru_next = p->lru_next;
	else
		lru_head = p->lru_next;
	if (p->lru_next)
		pfn_page(p->lru_next)->lru_prev = p->lru_prev;
	else
		lru_tail = p->lru_prev;
	p->flags &= ~PG_lru;
	p->lru_next = p->lru_prev = 0;
}

/* --- kernel page tables -------------------------------------------------------------- */

/* the kernel PTE for addr in swapper_pg_dir, its page table made if missing
 * (pmd_populate_kernel: alloc_pt, set_pmd) */
static pte_t *pte_alloc_kernel(u32 addr)
{
	pte_t *pmd = &swapper_pg_dir[pgd_index(addr)];
	if (!(*pmd & _PAGE_PRESENT)) {
		u32 pfn = alloc_page(1);
		pfn_page(pfn)->flags |= PG_pagetable;
		paravirt_ops.alloc_pt(pfn);
		paravirt_ops.set_pmd(pmd, (pfn << PAGE_SHIFT) | _PAGE_TABLE);
	}
	return (pte_t *)__va(*pmd & PAGE_MASK) + pte_index(addr);
}

pte_t *kernel_pte(u32 addr)
{
	pte_t pmd = swapper_pg_dir[pgd_index(addr)];
	CHECK(pmd & _PAGE_PRESENT, "kernel address without a page table", addr);
	return (pte_t *)__va(pmd & PAGE_MASK) + pte_index(addr);
}

/* The PTE for addr in pgd, its page table allocated (alloc_pt + set_pmd) if asked;
 * for code that manages a page directory by hand (pvcall) */
pte_t *pte_for(pte_t *pgd, u32 addr, int alloc, u32 pde_flags)
{
	pte_t *pde = &pgd[pgd_index(addr)];
	if (!(*pde & _PAGE_PRESENT)) {
		if (!alloc)
			return NULL;
		u32 pfn = alloc_page(1);
		paravirt_ops.alloc_pt(pfn);
		paravirt_ops.set_pmd(pde, (pfn << PAGE_SHIFT) | pde_flags);
	}
	pte_t *pt = __va(*pde & PAGE_MASK);
	return &pt[pte_index(addr)];
}

/* exception table: kernel instructions allowed to fault, and where to resume */
struct exception_table_entry {
	u32 insn, fixup;
};
extern struct exception_table_entry __start___ex_table[], __stop___ex_table[];

static int fixup_exception(struct pt_regs *regs)
{
	for (struct exception_table_entry *e = __start___ex_table; e < __stop___ex_table; e++)
		if (e->insn == regs->eip) {
			regs->eip = e->fixup;
			return 1;
		}
	return 0;
}

/* init.c's test_wp_bit: map a page read-only at a fixmap slot and write to it from
 * the kernel; with CR0.WP the write faults and the fixup reports it */
static int test_wp_bit(void)
{
	pte_t *pte = pte_alloc_kernel(FIX_WP_TEST);
	paravirt_ops.set_pte_at(&init_mm, FIX_WP_TEST, pte, __pa(swapper_pg_dir) | __PAGE_KERNEL_RO);
	paravirt_ops.flush_tlb_single(FIX_WP_TEST);
	u32 flag = 1, tmp;
	__asm__ volatile("movb %1, %%al\n"
			 "1:\tmovb %%al, %1\n\t"
			 "xorl %0, %0\n"
			 "2:\n"
			 ".pushsection __ex_table, \"a\"\n\t.balign 4\n\t.long 1b, 2b\n\t.popsection"
			 : "+r"(flag), "+m"(*(volatile u8 *)FIX_WP_TEST), "=a"(tmp)
			 :
			 : "memory");
	paravirt_ops.set_pte_at(&init_mm, FIX_WP_TEST, pte, 0);
	paravirt_ops.flush_tlb_single(FIX_WP_TEST);
	return flag == 1; /* the write faulted (the fixup skipped the clear): WP works */
}

/* --- vmalloc ------------------------------------------------------------------------- */

#define VM_SLOT_PAGES 4 /* each area: up to 3 pages and a guard page */
#define VM_SLOTS ((VMALLOC_END - VMALLOC_START) / (VM_SLOT_PAGES * PAGE_SIZE))
static u32 vm_next_slot;
static u32 vm_free_slots[256];
static u32 vm_free_n, vm_free_first;

void *vmalloc(u32 size)
{
	u32 pages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT;
	CHECK(pages && pages < VM_SLOT_PAGES, "vmalloc size not supported", size);
	u32 slot;
	/* fresh address space first (new kernel page tables now and then), freed
	 * areas once enough of them wait */
	if (vm_next_slot < VM_SLOTS && vm_free_n < 64) {
		slot = vm_next_slot++;
	} else {
		CHECK(vm_free_n, "vmalloc space exhausted", 0);
		slot = vm_free_slots[vm_free_first];
		vm_free_first = (vm_free_first + 1) % ARRAY_SIZE(vm_free_slots);
		vm_free_n--;
	}
	u32 addr = VMALLOC_START + slot * VM_SLOT_PAGES * PAGE_SIZE;
	for (u32 i = 0; i < pages; i++) {
		u32 pfn = alloc_page(1);
		pte_t *pte = pte_alloc_kernel(addr + i * PAGE_SIZE);
		paravirt_ops.set_pte_at(&init_mm, addr + i * PAGE_SIZE, pte, (pfn << PAGE_SHIFT) | __PAGE_KERNEL);
	}
	return (void *)addr;
}

/* vunmap: ptep_get_and_clear for each page, then flush_tlb_kernel_range (a global
 * flush on a uniprocessor), then the frames go back */
void vfree(void *p, u32 size)
{
	u32 addr = (u32)p, pages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT;
	u32 pfns[VM_SLOT_PAGES];
	for (u32 i = 0; i < pages; i++) {
		pte_t *pte = kernel_pte(addr + i * PAGE_SIZE);
		pte_t old = __atomic_exchange_n(pte, 0, __ATOMIC_SEQ_CST);
		paravirt_ops.pte_update(&init_mm, addr + i * PAGE_SIZE, pte);
		CHECK(old & _PAGE_PRESENT, "vfree of an unmapped page", addr + i * PAGE_SIZE);
		pfns[i] = old >> PAGE_SHIFT;
	}
	paravirt_ops.flush_tlb_kernel();
	for (u32 i = 0; i < pages; i++)
		put_page(pfns[i]);
	u32 slot = (addr - VMALLOC_START) / (VM_SLOT_PAGES * PAGE_SIZE);
	CHECK(vm_free_n < ARRAY_SIZE(vm_free_slots), "too many free vmalloc areas", vm_free_n);
	vm_free_slots[(vm_free_first + vm_free_n) % ARRAY_SIZE(vm_free_slots)] = slot;
	vm_free_n++;
}

/* fault.c's vmalloc_fault: copy the kernel PDE from swapper_pg_dir into the page
 * directory in CR3 (which need not be current's in the middle of a switch) */
static int vmalloc_fault(u32 address)
{
	u32 pgd_paddr = paravirt_ops.read_cr3();
	pte_t *pgd = __va(pgd_paddr & PAGE_MASK);
	u32 i = pgd_index(address);
	pte_t pmd_k = swapper_pg_dir[i];
	if (!(pmd_k & _PAGE_PRESENT))
		return -1;
	if (!(pgd[i] & _PAGE_PRESENT))
		paravirt_ops.set_pmd(&pgd[i], pmd_k);
	else if ((pgd[i] & PAGE_MASK) != (pmd_k & PAGE_MASK))
		check_failed("kernel page directory entry out of sync", address);
	pte_t *pte_k = (pte_t *)__va(pmd_k & PAGE_MASK) + pte_index(address);
	return (*pte_k & _PAGE_PRESENT) ? 0 : -1;
}

/* --- boot ------------------------------------------------------------------------- */

void mem_init(u32 first_free, u32 mem_bytes)
{
	u32 lowmem = mem_bytes < LOWMEM_LIMIT ? mem_bytes : LOWMEM_LIMIT;
	max_pfn = lowmem >> PAGE_SHIFT;
	u32 map_bytes = max_pfn * sizeof(struct page);
	mem_map = __va(first_free);
	memset(mem_map, 0, (map_bytes + 3) & ~3u);
	u32 first_pfn = (first_free + map_bytes + PAGE_SIZE - 1) >> PAGE_SHIFT;
	for (u32 pfn = 0; pfn < max_pfn; pfn++) {
		struct page *p = pfn_page(pfn);
		if (pfn < first_pfn) {
			p->flags = PG_reserved;
			p->count = 1;
		} else {
			p->flags = PG_free;
		}
	}
	next_fresh = first_pfn;
	for (u32 i = 0; i < MAX_MMS; i++) {
		mm_pool[i].next_free = mm_free;
		mm_free = &mm_pool[i];
	}
	for (u32 i = 0; i < MAX_VMAS; i++) {
		vma_pool[i].next = vma_free;
		vma_free = &vma_pool[i];
	}
	zero_pfn = alloc_page(1);
	pfn_page(zero_pfn)->flags |= PG_reserved;
}

/* the rest of 2.6.21's mem_init, once traps work: copy_to_user relies on CR0.WP
 * to catch kernel writes to copy-on-write pages */
void mem_init_late(void)
{
	CHECK(test_wp_bit(), "CPU does not honour CR0.WP in supervisor mode", 0);
}

/* --- areas ------------------------------------------------------------------------- */

static struct vm_area *vma_alloc(void)
{
	struct vm_area *v = vma_free;
	CHECK(v, "out of vm_area structures", 0);
	vma_free = v->next;
	memset(v, 0, sizeof(*v));
	return v;
}

static void vma_release(struct vm_area *v)
{
	v->next = vma_free;
	vma_free = v;
}

/* the first area ending above addr, as 2.6.21's find_vma */
struct vm_area *find_vma(struct mm_struct *mm, u32 addr)
{
	for (struct vm_area *v = mm->mmap; v; v = v->next)
		if (addr < v->end)
			return v;
	return NULL;
}

static void vma_link(struct mm_struct *mm, struct vm_area *v)
{
	struct vm_area **pp = &mm->mmap;
	while (*pp && (*pp)->start < v->start)
		pp = &(*pp)->next;
	CHECK(!*pp || (*pp)->start >= v->end, "overlapping areas", v->start);
	v->next = *pp;
	*pp = v;
	v->mm = mm;
}

struct vm_area *vma_add(struct mm_struct *mm, u32 start, u32 end, u32 flags, u32 file_pfn)
{
	struct vm_area *v = vma_alloc();
	v->start = start;
	v->end = end;
	v->flags = flags | VM_MAYWRITE;
	v->file_pfn = file_pfn;
	vma_link(mm, v);
	return v;
}

/* split v at addr: v keeps [start, addr), a new area takes [addr, end) */
static struct vm_area *split_vma(struct mm_struct *mm, struct vm_area *v, u32 addr)
{
	struct vm_area *n = vma_alloc();
	*n = *v;
	n->start = addr;
	if (n->flags & VM_FILE)
		n->file_pfn = v->file_pfn + ((addr - v->start) >> PAGE_SHIFT);
	v->end = addr;
	n->next = v->next;
	v->next = n;
	return n;
}

/* vma_merge, after mprotect: neighbours that agree again become one area */
static void merge_areas(struct mm_struct *mm)
{
	for (struct vm_area *v = mm->mmap; v && v->next;) {
		struct vm_area *n = v->next;
		if (v->end == n->start && v->flags == n->flags && !(v->flags & (VM_FILE | VM_STACK))) {
			v->end = n->end;
			v->anon |= n->anon;
			v->next = n->next;
			vma_release(n);
		} else {
			v = n;
		}
	}
}

static u32 get_unmapped_area(struct mm_struct *mm, u32 len)
{
	u32 addr = mm->mmap_base;
	for (struct vm_area *v = mm->mmap; v; v = v->next) {
		if (v->end <= addr)
			continue;
		if (addr + len <= v->start)
			break;
		addr = v->end;
	}
	CHECK(addr + len <= USER_STACK_TOP - 0x01000000u, "user address space exhausted", len);
	return addr;
}

/* --- address spaces ---------------------------------------------------------------------- */

/* pgd_alloc with pgd_ctor: the user half cleared, the kernel half copied from
 * swapper_pg_dir under pgd_lock, and the hypervisor told it is a clone */
static pte_t *pgd_alloc(void)
{
	unsigned long flags;
	u32 pfn = alloc_page(0);
	pte_t *pgd = __va(pfn << PAGE_SHIFT);
	memset(pgd, 0, USER_PTRS_PER_PGD * sizeof(pte_t));
	spin_lock_irqsave(&pgd_lock, flags);
	memcpy(pgd + USER_PTRS_PER_PGD, swapper_pg_dir + USER_PTRS_PER_PGD,
	       KERNEL_PGD_PTRS * sizeof(pte_t));
	paravirt_ops.alloc_pd_clone(pfn, __pa(swapper_pg_dir) >> PAGE_SHIFT, USER_PTRS_PER_PGD,
				    KERNEL_PGD_PTRS);
	spin_unlock_irqrestore(&pgd_lock, flags);
	return pgd;
}

/* pgd_free with pgd_dtor */
static void pgd_free(pte_t *pgd)
{
	unsigned long flags;
	u32 pfn = __pa(pgd) >> PAGE_SHIFT;
	CHECK(__pa(pgd) != loaded_cr3, "freeing the loaded page directory", __pa(pgd));
	paravirt_ops.release_pd(pfn);
	spin_lock_irqsave(&pgd_lock, flags);
	spin_unlock_irqrestore(&pgd_lock, flags);
	put_page(pfn);
}

struct mm_struct *mm_alloc(void)
{
	struct mm_struct *mm = mm_free;
	CHECK(mm, "out of mm_structs", 0);
	mm_free = mm->next_free;
	memset(mm, 0, sizeof(*mm));
	mm->users = 1;
	mm->count = 1;
	mm->id = next_mm_id++;
	mm->mmap_base = USER_MMAP_BASE;
	mm->pgd = pgd_alloc();
	nr_mms_live++;
	return mm;
}

static void free_ldt(struct mm_struct *mm)
{
	if (mm->ldt) {
		put_page(__pa(mm->ldt) >> PAGE_SHIFT);
		mm->ldt = NULL;
		mm->ldt_size = 0;
	}
}

/* __mmdrop: the last reference (a task's, or a lazy-TLB borrower's) is gone */
void mmdrop(struct mm_struct *mm)
{
	CHECK(mm->count > 0, "mm_count underflow", mm->id);
	if (--mm->count)
		return;
	CHECK(mm != &init_mm, "init_mm dropped", 0);
	CHECK(!mm->mmap && !mm->rss && !mm->nr_ptes, "mm freed with mappings left", mm->rss);
	pgd_free(mm->pgd);
	free_ldt(mm); /* destroy_context */
	mm->next_free = mm_free;
	mm_free = mm;
	nr_mms_live--;
}

void mmput(struct mm_struct *mm)
{
	CHECK(mm->users > 0, "mm_users underflow", mm->id);
	if (--mm->users)
		return;
	exit_mmap(mm);
	mmdrop(mm);
}

/* tlb.h/tlbflush.h on a uniprocessor: only the loaded address space needs a flush */
void flush_tlb_mm(struct mm_struct *mm)
{
	if (mm == current->active_mm)
		paravirt_ops.flush_tlb_user();
}

void flush_tlb_page(struct mm_struct *mm, u32 addr)
{
	if (mm == current->active_mm)
		paravirt_ops.flush_tlb_single(addr);
}

/* switch_mm: a new page directory, and the LDT if it differs */
void switch_mm(struct mm_struct *prev, struct mm_struct *next)
{
	if (prev == next)
		return;
	loaded_cr3 = __pa(next->pgd);
	paravirt_ops.write_cr3(loaded_cr3);
	if (prev->ldt != next->ldt || prev->ldt_size != next->ldt_size)
		paravirt_ops.set_ldt(next->ldt, next->ldt_size);
}

static u32 vma_prot(struct vm_area *v)
{
	/* 2.6.21's protection_map for private mappings: writable ones are mapped
	 * read-only (PAGE_COPY) until a write fault makes the page the process's own */
	return _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED;
}

/* entries in use in a user page table, kept in its struct page (checked when it is freed) */
static inline void pt_inc(pte_t *ptep) { pfn_page(__pa(ptep) >> PAGE_SHIFT)->pad++; }
static inline void pt_dec(pte_t *ptep)
{
	struct page *p = pfn_page(__pa(ptep) >> PAGE_SHIFT);
	CHECK(p->pad, "page table use count underflow", __pa(ptep));
	p->pad--;
}

static pte_t *pte_lookup(struct mm_struct *mm, u32 addr)
{
	pte_t pmd = mm->pgd[pgd_index(addr)];
	if (!(pmd & _PAGE_PRESENT))
		return NULL;
	return (pte_t *)__va(pmd & PAGE_MASK) + pte_index(addr);
}

/* __pte_alloc + pmd_populate */
static pte_t *pte_alloc_map(struct mm_struct *mm, u32 addr)
{
	pte_t *pmd = &mm->pgd[pgd_index(addr)];
	if (!(*pmd & _PAGE_PRESENT)) {
		u32 pfn = alloc_page(1); /* pte_alloc_one: a zeroed page */
		pfn_page(pfn)->flags |= PG_pagetable;
		paravirt_ops.alloc_pt(pfn);
		paravirt_ops.set_pmd(pmd, (pfn << PAGE_SHIFT) | _PAGE_TABLE);
		mm->nr_ptes++;
		nr_ptes_live++;
	}
	return (pte_t *)__va(*pmd & PAGE_MASK) + pte_index(addr);
}

/* --- swap ---------------------------------------------------------------------------- */

static u32 *swap_frames; /* pfn of each slot's backing frame (the "disk") */
static u8 *swap_count;
static u32 swap_nr, swap_hint, swap_used;

void swap_init(u32 slots)
{
	if (!slots)
		return;
	u32 pages = (slots * 5 + PAGE_SIZE - 1) / PAGE_SIZE;
	u32 first = alloc_contig_fresh(pages);
	swap_frames = __va(first << PAGE_SHIFT);
	memset(swap_frames, 0, pages * PAGE_SIZE);
	swap_count = (u8 *)(swap_frames + slots);
	for (u32 s = 0; s < slots; s++) {
		swap_frames[s] = alloc_page(0);
		pfn_page(swap_frames[s])->flags |= PG_reserved;
	}
	swap_nr = slots;
}

static u32 swap_alloc(void)
{
	for (u32 i = 0; i < swap_nr; i++) {
		u32 s = (swap_hint + i) % swap_nr;
		if (!swap_count[s]) {
			swap_count[s] = 1;
			swap_hint = s + 1;
			swap_used++;
			return s + 1; /* slot 0 is never used: a zero PTE is pte_none */
		}
	}
	return 0;
}

static void swap_free(u32 entry)
{
	u32 s = entry - 1;
	CHECK(s < swap_nr && swap_count[s], "freeing a free swap slot", entry);
	if (!--swap_count[s])
		swap_used--;
}

static void swap_duplicate(u32 entry)
{
	u32 s = entry - 1;
	CHECK(s < swap_nr && swap_count[s] && swap_count[s] < 250, "bad swap entry", entry);
	swap_count[s]++;
}

/* --- reclaim ----------------------------------------------------------------------------- */

static struct vm_area *vma_of(struct mm_struct *mm, u32 addr)
{
	struct vm_area *v = find_vma(mm, addr);
	return v && v->start <= addr ? v : NULL;
}

/*
 * try_to_free_pages, reduced: walk the anonymous LRU from its cold end.  A page
 * referenced since the last pass gets a second chance (ptep_clear_flush_young:
 * the accessed bit cleared, pte_update_defer, a single-page flush if its mm is
 * loaded); an unreferenced one is written to swap and unmapped
 * (try_to_unmap_one: ptep_clear_flush, then set_pte_at of the swap entry).
 */
static u32 shrink_anon_list(u32 want)
{
	u32 freed = 0, scanned = 0, limit = 4 * (nr_user_pages + 1);
	nr_reclaim_scans++;
	while (freed < want && scanned++ < limit && lru_head) {
		u32 pfn = lru_head;
		struct page *p = pfn_page(pfn);
		lru_del(pfn);
		lru_add(pfn); /* rotate; removed below if it goes */
		if (p->mapcount != 1 || !p->mm || (p->flags & (PG_pinned | PG_locked)))
			continue;
		struct mm_struct *mm = p->mm;
		u32 addr = p->vaddr;
		pte_t *pte = pte_lookup(mm, addr);
		if (!pte || (*pte & (_PAGE_PRESENT | PAGE_MASK)) != ((pfn << PAGE_SHIFT) | _PAGE_PRESENT)) {
			p->mm = NULL; /* the reverse map went stale: leave the page alone */
			continue;
		}
		if (*pte & _PAGE_ACCESSED) {
			__atomic_and_fetch(pte, ~(u32)_PAGE_ACCESSED, __ATOMIC_SEQ_CST);
			paravirt_ops.pte_update_defer(mm, addr, pte);
			flush_tlb_page(mm, addr);
			continue;
		}
		if (blk_in_flight() > 192)
			break; /* the device is congested: no more writeback now */
		u32 entry = swap_alloc();
		if (!entry)
			break;
		/* pageout: the frame's contents to its slot, and a write to the device */
		copy_page(__va(swap_frames[entry - 1] << PAGE_SHIFT), __va(pfn << PAGE_SHIFT));
		blk_submit_async(0x5A000000u | entry, NULL, 0);
		pte_t old = __atomic_exchange_n(pte, 0, __ATOMIC_SEQ_CST);
		paravirt_ops.pte_update(mm, addr, pte);
		flush_tlb_page(mm, addr);
		CHECK(old & _PAGE_PRESENT, "swapping out an unmapped page", addr);
		paravirt_ops.set_pte_at(mm, addr, pte, swp_to_pte(entry));
		p->mapcount = 0;
		p->mm = NULL;
		mm->rss--;
		put_page(pfn);
		nr_swapped++;
		freed++;
	}
	return freed;
}

/* a page for a user mapping, reclaiming first if the workload set a limit */
static u32 alloc_user_page(int zero)
{
	if (kcfg.user_page_limit && nr_user_pages >= kcfg.user_page_limit && swap_nr)
		shrink_anon_list(16);
	u32 pfn = alloc_page(zero);
	pfn_page(pfn)->flags |= PG_anon;
	nr_user_pages++;
	return pfn;
}

static void page_add_new_anon_rmap(u32 pfn, struct mm_struct *mm, u32 addr)
{
	struct page *p = pfn_page(pfn);
	p->mapcount = 1;
	p->mm = mm;
	p->vaddr = addr & PAGE_MASK;
	lru_add(pfn);
}

static void page_remove_rmap(u32 pfn, struct mm_struct *mm)
{
	struct page *p = pfn_page(pfn);
	if (p->flags & PG_reserved)
		return;
	CHECK(p->mapcount, "page mapcount underflow", pfn);
	p->mapcount--;
	if (p->mm == mm)
		p->mm = NULL; /* whoever still maps it, it is not mm */
}

/* --- faults ---------------------------------------------------------------------------- */

static int do_anonymous_page(struct mm_struct *mm, struct vm_area *vma, u32 address,
			     pte_t *pte, int write)
{
	pte_t entry;
	if (write) {
		u32 pfn = alloc_user_page(1);
		if (*pte) { /* reclaim slept or raced: somebody filled it */
			put_page(pfn);
			return 1;
		}
		page_add_new_anon_rmap(pfn, mm, address);
		if (vma->flags & VM_STACK)
			pfn_page(pfn)->flags |= PG_pinned;
		entry = (pfn << PAGE_SHIFT) | vma_prot(vma) | _PAGE_DIRTY | _PAGE_RW;
	} else {
		entry = (zero_pfn << PAGE_SHIFT) | vma_prot(vma); /* the zero page, read-only */
	}
	vma->anon = 1;
	mm->rss++;
	pt_inc(pte);
	paravirt_ops.set_pte_at(mm, address & PAGE_MASK, pte, entry);
	return 1;
}

/* the executable's page (filemap_nopage + do_no_page) */
static int do_no_page(struct mm_struct *mm, struct vm_area *vma, u32 address, pte_t *pte)
{
	u32 pfn = vma->file_pfn + ((address - vma->start) >> PAGE_SHIFT);
	mm->rss++;
	pt_inc(pte);
	paravirt_ops.set_pte_at(mm, address & PAGE_MASK, pte, (pfn << PAGE_SHIFT) | vma_prot(vma));
	return 1;
}

static int do_swap_page(struct mm_struct *mm, struct vm_area *vma, u32 address, pte_t *pte,
			pte_t orig)
{
	u32 entry = pte_to_swp(orig);
	/* read_swap_cache_async and wait_on_page_locked: a device read, its interrupt */
	blk_rw_one(0x5B000000u | entry);
	u32 pfn = alloc_user_page(0);
	if (*pte != orig) {
		put_page(pfn);
		return 1;
	}
	copy_page(__va(pfn << PAGE_SHIFT), __va(swap_frames[entry - 1] << PAGE_SHIFT));
	pte_t val = (pfn << PAGE_SHIFT) | vma_prot(vma);
	page_add_new_anon_rmap(pfn, mm, address);
	mm->rss++;
	paravirt_ops.set_pte_at(mm, address & PAGE_MASK, pte, val);
	swap_free(entry);
	nr_swapins++;
	return 1;
}

/* ptep_set_access_flags: a changed entry stored in place, pte_update_defer, a flush */
static void ptep_set_access_flags(struct mm_struct *mm, u32 address, pte_t *pte, pte_t entry,
				  int dirty)
{
	if (*pte != entry && dirty) {
		*pte = entry;
		paravirt_ops.pte_update_defer(mm, address & PAGE_MASK, pte);
		flush_tlb_page(mm, address & PAGE_MASK);
	}
}

static int do_wp_page(struct mm_struct *mm, struct vm_area *vma, u32 address, pte_t *pte,
		      pte_t orig)
{
	u32 old = orig >> PAGE_SHIFT;
	struct page *op = pfn_page(old);
	u32 addr = address & PAGE_MASK;
	if (old != zero_pfn && (op->flags & PG_anon) && op->mapcount == 1 && op->count == 1) {
		/* nobody else maps it: reuse the page, make it writable in place */
		op->mm = mm;
		op->vaddr = addr;
		ptep_set_access_flags(mm, addr, pte, orig | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_RW, 1);
		nr_reuse++;
		return 1;
	}
	u32 pfn = alloc_user_page(old == zero_pfn);
	if (*pte != orig) { /* reclaim touched this entry meanwhile */
		put_page(pfn);
		return 1;
	}
	if (old != zero_pfn)
		copy_page(__va(pfn << PAGE_SHIFT), __va(old << PAGE_SHIFT));
	/* ptep_clear_flush, then the new entry */
	__atomic_exchange_n(pte, 0, __ATOMIC_SEQ_CST);
	paravirt_ops.pte_update(mm, addr, pte);
	flush_tlb_page(mm, addr);
	page_add_new_anon_rmap(pfn, mm, addr);
	paravirt_ops.set_pte_at(mm, addr, pte,
				(pfn << PAGE_SHIFT) | vma_prot(vma) | _PAGE_DIRTY | _PAGE_RW);
	page_remove_rmap(old, mm);
	put_page(old);
	nr_cow++;
	return 1;
}

int handle_mm_fault(struct mm_struct *mm, struct vm_area *vma, u32 address, int write)
{
	pte_t *pte = pte_alloc_map(mm, address);
	pte_t entry = *pte;
	mm->faults++;
	if (!(entry & _PAGE_PRESENT)) {
		if (!entry)
			return (vma->flags & VM_FILE) ? do_no_page(mm, vma, address, pte)
						      : do_anonymous_page(mm, vma, address, pte, write);
		return do_swap_page(mm, vma, address, pte, entry);
	}
	if (write && !(entry & _PAGE_RW))
		return do_wp_page(mm, vma, address, pte, entry);
	entry |= _PAGE_ACCESSED | (write ? _PAGE_DIRTY : 0);
	if (entry != *pte)
		ptep_set_access_flags(mm, address, pte, entry, write);
	else if (write)
		flush_tlb_page(mm, address & PAGE_MASK);
	return 1;
}

/* fault.c's do_page_fault; returns 0 for a kernel fault nobody can handle */
int do_page_fault(struct pt_regs *regs)
{
	u32 address = paravirt_ops.read_cr2();
	u32 error = regs->error;
	struct mm_struct *mm = current->mm;

	if (address >= TASK_SIZE) {
		if (!(error & 0xD) && vmalloc_fault(address) >= 0)
			return 1;
		goto no_mm;
	}
	if (regs->eflags & X86_EFLAGS_IF)
		local_irq_enable();
	if (!mm || in_interrupt())
		goto no_mm;
	struct vm_area *vma = find_vma(mm, address);
	if (!vma || vma->start > address)
		goto bad_area;
	int write = (error & 2) != 0;
	if (write ? !(vma->flags & VM_WRITE)
		  : ((error & 1) || !(vma->flags & (VM_READ | VM_EXEC))))
		goto bad_area;
	return handle_mm_fault(mm, vma, address, write);

bad_area:
	if (error & 4) {
		/* the program touched what it has not mapped: SIGSEGV kills it */
		do_exit(128 + 11);
	}
no_mm:
	if (fixup_exception(regs))
		return 1;
	if (workload_page_fault && workload_page_fault(regs, address))
		return 1;
	if (user_mode(regs) && mm)
		do_exit(128 + 11);
	if (address < PAGE_SIZE)
		check_failed("unable to handle kernel NULL pointer dereference", address);
	return 0;
}

/* --- unmapping ----------------------------------------------------------------------- */

/* zap_pte_range over [addr, end) of one page table; full = the whole mm is going */
static void zap_pte_range(struct mm_struct *mm, u32 addr, u32 end, int full)
{
	pte_t *pte = pte_lookup(mm, addr);
	if (!pte)
		return;
	arch_enter_lazy_mmu_mode();
	for (; addr < end; addr += PAGE_SIZE, pte++) {
		pte_t ptent = *pte;
		if (!ptent)
			continue;
		if (full) {
			paravirt_ops.set_pte_at(mm, addr, pte, 0); /* pte_clear */
		} else {
			ptent = __atomic_exchange_n(pte, 0, __ATOMIC_SEQ_CST);
			paravirt_ops.pte_update(mm, addr, pte); /* ptep_get_and_clear */
		}
		pt_dec(pte);
		if (ptent & _PAGE_PRESENT) {
			u32 pfn = ptent >> PAGE_SHIFT;
			page_remove_rmap(pfn, mm);
			put_page(pfn);
			mm->rss--;
		} else {
			swap_free(pte_to_swp(ptent));
		}
	}
	arch_leave_lazy_mmu_mode();
}

static void unmap_range(struct mm_struct *mm, u32 start, u32 end, int full)
{
	while (start < end) {
		u32 next = (start + PGDIR_SIZE) & ~(PGDIR_SIZE - 1);
		if (next > end || next == 0)
			next = end;
		zap_pte_range(mm, start, next, full);
		start = next;
	}
}

/* free_pgtables: page tables over [start, end) no area uses any more
 * (pmd_clear, then __pte_free_tlb's release_pt) */
static void free_pgtables(struct mm_struct *mm, u32 start, u32 end)
{
	for (u32 i = pgd_index(start); i <= pgd_index(end - 1) && i < USER_PTRS_PER_PGD; i++) {
		pte_t pmd = mm->pgd[i];
		if (!(pmd & _PAGE_PRESENT))
			continue;
		u32 lo = i << 22, hi = lo + PGDIR_SIZE;
		int used = 0;
		for (struct vm_area *v = mm->mmap; v && !used; v = v->next)
			used = v->start < hi && v->end > lo;
		if (used)
			continue;
		u32 pfn = pmd >> PAGE_SHIFT;
		CHECK(!pfn_page(pfn)->pad, "freeing a page table that still maps", lo);
		paravirt_ops.set_pmd(&mm->pgd[i], 0);
		paravirt_ops.release_pt(pfn);
		pfn_page(pfn)->flags &= ~PG_pagetable;
		put_page(pfn);
		mm->nr_ptes--;
		nr_ptes_live--;
	}
}

void exit_mmap(struct mm_struct *mm)
{
	for (struct vm_area *v = mm->mmap; v; v = v->next)
		unmap_range(mm, v->start, v->end, 1);
	struct vm_area *v = mm->mmap;
	mm->mmap = NULL;
	while (v) {
		struct vm_area *n = v->next;
		free_pgtables(mm, v->start, v->end);
		vma_release(v);
		v = n;
	}
	flush_tlb_mm(mm); /* tlb_finish_mmu */
	CHECK(!mm->rss && !mm->nr_ptes, "exit_mmap left pages mapped", mm->rss);
}

/* split areas so that none straddles start or end */
static void split_at(struct mm_struct *mm, u32 start, u32 end)
{
	for (struct vm_area *v = mm->mmap; v; v = v->next) {
		if (v->start < start && v->end > start)
			split_vma(mm, v, start);
		else if (v->start < end && v->end > end)
			split_vma(mm, v, end);
	}
}

int do_munmap(struct mm_struct *mm, u32 start, u32 len)
{
	len = (len + PAGE_SIZE - 1) & PAGE_MASK;
	u32 end = start + len;
	if ((start & ~PAGE_MASK) || !len || end > TASK_SIZE || end < start)
		return -EINVAL;
	split_at(mm, start, end);
	struct vm_area **pp = &mm->mmap, *gone = NULL;
	while (*pp) {
		struct vm_area *v = *pp;
		if (v->start >= start && v->end <= end) {
			CHECK(!(v->flags & VM_STACK), "unmapping the stack", v->start);
			*pp = v->next;
			v->next = gone;
			gone = v;
		} else {
			pp = &v->next;
		}
	}
	if (!gone)
		return 0;
	/* unmap_region: zap, free the page tables left empty, flush */
	for (struct vm_area *v = gone; v; v = v->next)
		unmap_range(mm, v->start, v->end, 0);
	free_pgtables(mm, start, end);
	flush_tlb_mm(mm);
	while (gone) {
		struct vm_area *n = gone->next;
		vma_release(gone);
		gone = n;
	}
	return 0;
}

/* --- fork ---------------------------------------------------------------------------- */

/*
 * copy_pte_range for one page table, in lazy MMU mode: writable private pages
 * become read-only in both (ptep_set_wrprotect in the parent) and shared.
 *
 * The stack is copied eagerly instead (each page duplicated now).  The machine
 * delivers an interrupt or exception from CPL 3 by writing the interrupted
 * EFLAGS below the user's ESP itself, without regard for write protection, so
 * a stack page shared copy-on-write would be written under the other process.
 */
static void copy_pte_range(struct mm_struct *dst, struct mm_struct *src, struct vm_area *vma,
			   u32 addr, u32 end)
{
	pte_t *src_pte = pte_lookup(src, addr);
	if (!src_pte)
		return;
	pte_t *dst_pte = pte_alloc_map(dst, addr);
	arch_enter_lazy_mmu_mode();
	for (; addr < end; addr += PAGE_SIZE, src_pte++, dst_pte++) {
		pte_t pte = *src_pte;
		if (!pte)
			continue;
		pt_inc(dst_pte);
		if (!(pte & _PAGE_PRESENT)) {
			swap_duplicate(pte_to_swp(pte));
			paravirt_ops.set_pte_at(dst, addr, dst_pte, pte);
			continue;
		}
		u32 pfn = pte >> PAGE_SHIFT;
		if (vma->flags & VM_STACK) {
			u32 npfn = alloc_user_page(0);
			copy_page(__va(npfn << PAGE_SHIFT), __va(pfn << PAGE_SHIFT));
			page_add_new_anon_rmap(npfn, dst, addr);
			pfn_page(npfn)->flags |= PG_pinned;
			dst->rss++;
			paravirt_ops.set_pte_at(dst, addr, dst_pte, (npfn << PAGE_SHIFT) | (pte & ~PAGE_MASK));
			continue;
		}
		if (pte & _PAGE_RW) {
			__atomic_and_fetch(src_pte, ~(u32)_PAGE_RW, __ATOMIC_SEQ_CST);
			paravirt_ops.pte_update(src, addr, src_pte);
			pte &= ~_PAGE_RW;
		}
		pte &= ~_PAGE_ACCESSED; /* pte_mkold */
		if (!(pfn_page(pfn)->flags & PG_reserved)) {
			get_page(pfn);
			pfn_page(pfn)->mapcount++;
		}
		dst->rss++;
		paravirt_ops.set_pte_at(dst, addr, dst_pte, pte);
	}
	arch_leave_lazy_mmu_mode();
}

struct mm_struct *dup_mm(struct mm_struct *old)
{
	struct mm_struct *mm = mm_alloc();
	mm->brk_start = old->brk_start;
	mm->brk = old->brk;
	mm->mmap_base = old->mmap_base;
	if (old->ldt) { /* copy_ldt: the child's copy is not loaded anywhere yet */
		u32 pfn = alloc_page(0);
		mm->ldt = __va(pfn << PAGE_SHIFT);
		memcpy(mm->ldt, old->ldt, PAGE_SIZE);
		mm->ldt_size = old->ldt_size;
	}
	for (struct vm_area *v = old->mmap; v; v = v->next) {
		struct vm_area *n = vma_add(mm, v->start, v->end, v->flags, v->file_pfn);
		n->anon = v->anon;
		/* the executable's pages are not copied: the child faults them in */
		if (!v->anon && (v->flags & VM_FILE))
			continue;
		for (u32 a = v->start; a < v->end;) {
			u32 next = (a + PGDIR_SIZE) & ~(PGDIR_SIZE - 1);
			if (next > v->end || next == 0)
				next = v->end;
			copy_pte_range(mm, old, v, a, next);
			a = next;
		}
	}
	flush_tlb_mm(old);
	return mm;
}

/* a page of a new process's stack, mapped at exec (install_arg_page) */
int install_user_page(struct mm_struct *mm, u32 addr, u32 flags)
{
	pte_t *pte = pte_alloc_map(mm, addr);
	u32 pfn = alloc_user_page(1);
	page_add_new_anon_rmap(pfn, mm, addr);
	pfn_page(pfn)->flags |= PG_pinned;
	mm->rss++;
	pt_inc(pte);
	paravirt_ops.set_pte_at(mm, addr, pte, (pfn << PAGE_SHIFT) | flags);
	return 0;
}

/* --- mmap, mprotect, mremap, madvise, brk ----------------------------------------------- */

u32 do_mmap(u32 addr, u32 len, u32 prot, u32 flags)
{
	struct mm_struct *mm = current->mm;
	len = (len + PAGE_SIZE - 1) & PAGE_MASK;
	if (!len || !(flags & MAP_ANONYMOUS) || (flags & MAP_SHARED) || !(prot & PROT_READ))
		return (u32)-EINVAL;
	if (flags & MAP_FIXED) {
		if ((addr & ~PAGE_MASK) || addr + len > USER_STACK_TOP - 0x01000000u || addr < USER_MMAP_BASE)
			return (u32)-EINVAL;
		do_munmap(mm, addr, len);
	} else {
		addr = get_unmapped_area(mm, len);
	}
	vma_add(mm, addr, addr + len, prot & (VM_READ | VM_WRITE | VM_EXEC), 0);
	return addr;
}

/* change_pte_range in lazy MMU mode: ptep_get_and_clear, pte_modify, set_pte_at */
static void change_pte_range(struct mm_struct *mm, u32 addr, u32 end, u32 newprot)
{
	pte_t *pte = pte_lookup(mm, addr);
	if (!pte)
		return;
	arch_enter_lazy_mmu_mode();
	for (; addr < end; addr += PAGE_SIZE, pte++) {
		if (!(*pte & _PAGE_PRESENT))
			continue;
		pte_t ptent = __atomic_exchange_n(pte, 0, __ATOMIC_SEQ_CST);
		paravirt_ops.pte_update(mm, addr, pte);
		ptent = (ptent & _PAGE_CHG_MASK) | newprot;
		paravirt_ops.set_pte_at(mm, addr, pte, ptent);
	}
	arch_leave_lazy_mmu_mode();
}

int do_mprotect(u32 start, u32 len, u32 prot)
{
	struct mm_struct *mm = current->mm;
	len = (len + PAGE_SIZE - 1) & PAGE_MASK;
	u32 end = start + len;
	if ((start & ~PAGE_MASK) || !len || end > TASK_SIZE || !(prot & PROT_READ))
		return -EINVAL;
	for (struct vm_area *v = mm->mmap; v; v = v->next)
		if (v->start < end && v->end > start && (v->flags & (VM_STACK | VM_FILE)))
			return -EINVAL;
	split_at(mm, start, end);
	for (struct vm_area *v = mm->mmap; v; v = v->next) {
		if (v->start < start || v->end > end)
			continue;
		v->flags = (v->flags & ~(VM_READ | VM_WRITE | VM_EXEC)) | (prot & 7);
		for (u32 a = v->start; a < v->end;) {
			u32 next = (a + PGDIR_SIZE) & ~(PGDIR_SIZE - 1);
			if (next > v->end || next == 0)
				next = v->end;
			change_pte_range(mm, a, next, vma_prot(v));
			a = next;
		}
	}
	flush_tlb_mm(mm); /* flush_tlb_range: the whole TLB on a uniprocessor */
	merge_areas(mm);
	return 0;
}

/* move_ptes in lazy MMU mode: each entry cleared with a flush and set at its new place */
static void move_ptes(struct mm_struct *mm, u32 old_addr, u32 new_addr, u32 len)
{
	for (u32 off = 0; off < len;) {
		u32 oa = old_addr + off, na = new_addr + off;
		u32 n = PGDIR_SIZE - (oa & (PGDIR_SIZE - 1));
		u32 m = PGDIR_SIZE - (na & (PGDIR_SIZE - 1));
		if (m < n)
			n = m;
		if (n > len - off)
			n = len - off;
		pte_t *op = pte_lookup(mm, oa);
		if (op) {
			pte_t *np = pte_alloc_map(mm, na);
			op = pte_lookup(mm, oa);
			arch_enter_lazy_mmu_mode();
			for (u32 i = 0; i < n; i += PAGE_SIZE, op++, np++) {
				if (!*op)
					continue;
				pte_t pte = __atomic_exchange_n(op, 0, __ATOMIC_SEQ_CST);
				paravirt_ops.pte_update(mm, oa + i, op);
				pt_dec(op);
				pt_inc(np);
				flush_tlb_page(mm, oa + i);
				if (pte & _PAGE_PRESENT) {
					struct page *p = pfn_page(pte >> PAGE_SHIFT);
					if (p->mm == mm && p->vaddr == oa + i)
						p->vaddr = na + i;
				}
				paravirt_ops.set_pte_at(mm, na + i, np, pte);
			}
			arch_leave_lazy_mmu_mode();
		}
		off += n;
	}
}

u32 do_mremap(u32 addr, u32 old_len, u32 new_len, u32 flags)
{
	struct mm_struct *mm = current->mm;
	old_len = (old_len + PAGE_SIZE - 1) & PAGE_MASK;
	new_len = (new_len + PAGE_SIZE - 1) & PAGE_MASK;
	struct vm_area *v = vma_of(mm, addr);
	if (!v || addr + old_len > v->end || (v->flags & (VM_STACK | VM_FILE)) || !new_len ||
	    (addr & ~PAGE_MASK))
		return (u32)-EINVAL;
	split_at(mm, addr, addr + old_len); /* the range may be part of a larger area */
	v = vma_of(mm, addr);
	if (new_len <= old_len) {
		if (new_len < old_len)
			do_munmap(mm, addr + new_len, old_len - new_len);
		return addr;
	}
	struct vm_area *next = v->next;
	if (!next || next->start >= addr + new_len) {
		v->end = addr + new_len; /* room to grow in place */
		return addr;
	}
	if (!(flags & MREMAP_MAYMOVE))
		return (u32)-ENOMEM;
	u32 new_addr = get_unmapped_area(mm, new_len);
	struct vm_area *n = vma_add(mm, new_addr, new_addr + new_len, v->flags, 0);
	n->anon = v->anon;
	move_ptes(mm, addr, new_addr, old_len);
	do_munmap(mm, addr, old_len);
	return new_addr;
}

int do_madvise(u32 start, u32 len, u32 advice)
{
	struct mm_struct *mm = current->mm;
	len = (len + PAGE_SIZE - 1) & PAGE_MASK;
	if (advice != MADV_DONTNEED || (start & ~PAGE_MASK))
		return -EINVAL;
	for (struct vm_area *v = mm->mmap; v; v = v->next) {
		u32 s = v->start > start ? v->start : start;
		u32 e = v->end < start + len ? v->end : start + len;
		if (s < e && !(v->flags & VM_STACK))
			unmap_range(mm, s, e, 0); /* zap_page_range */
	}
	flush_tlb_mm(mm);
	return 0;
}

u32 do_brk(u32 brk)
{
	struct mm_struct *mm = current->mm;
	u32 old = (mm->brk + PAGE_SIZE - 1) & PAGE_MASK;
	u32 newbrk = (brk + PAGE_SIZE - 1) & PAGE_MASK;
	if (brk < mm->brk_start || brk > mm->brk_start + 0x08000000u)
		return mm->brk;
	if (newbrk < old) {
		do_munmap(mm, newbrk, old - newbrk);
	} else if (newbrk > old) {
		struct vm_area *v = old > mm->brk_start ? vma_of(mm, old - 1) : NULL;
		struct vm_area *nx = find_vma(mm, old);
		if (nx && nx->start < newbrk)
			return mm->brk;
		if (v)
			v->end = newbrk;
		else
			vma_add(mm, old, newbrk, VM_READ | VM_WRITE, 0);
	}
	mm->brk = brk;
	return brk;
}

/* --- user memory from the kernel ------------------------------------------------------- */

/* the kernel reaches user memory directly; a fault on it (not present, or
 * copy-on-write with CR0.WP) is handled like the program's own */
int copy_to_user(u32 to, const void *from, u32 n)
{
	if (to >= TASK_SIZE || n > TASK_SIZE - to)
		return -EFAULT;
	memcpy((void *)to, from, n);
	return 0;
}

int copy_from_user(void *to, u32 from, u32 n)
{
	if (from >= TASK_SIZE || n > TASK_SIZE - from)
		return -EFAULT;
	memcpy(to, (const void *)from, n);
	return 0;
}

void mm_check_accounting(void)
{
	CHECK(nr_mms_live == 0, "address spaces leaked", nr_mms_live);
	CHECK(nr_ptes_live == 0, "page tables leaked", nr_ptes_live);
	CHECK(nr_user_pages == 0, "user pages leaked", nr_user_pages);
	CHECK(swap_used == 0, "swap slots leaked", swap_used);
}
