/*
 * Interrupts, 2.6.21's generic IRQ layer in miniature: do_IRQ, the edge flow
 * (acknowledge first) and the fasteoi flow for level-triggered IOAPIC pins
 * (EOI after the handler), handlers run with interrupts enabled
 * (handle_IRQ_event), the local APIC timer (EOI, then the tick), softirqs on the
 * way out (irq_exit), and the timer wheel the tick drives.
 */
#include "kernel.h"

struct irq_desc irq_desc[NR_IRQS];
volatile u32 jiffies;
volatile u32 lapic_ticks;
u64 wall_ns;
static u64 clock_last;
static volatile u32 softirq_pending;
static void (*softirq_vec[32])(void);
static struct timer_list *timer_head;
static spinlock_t timer_lock = SPIN_LOCK_UNLOCKED("timer base lock");
static int ioapic_ready;
extern int calibrating;
void calibrate_tick(void);

static inline void ack_APIC_irq(void) { paravirt_ops.apic_write(APIC_EOI, 0); }

void request_irq(u32 pin, irq_handler_t handler, void *dev, int level)
{
	unsigned long flags;
	struct irq_desc *d = &irq_desc[pin];
	spin_lock_irqsave(&d->lock, flags);
	d->handler = handler;
	d->dev = dev;
	d->level = (u32)level;
	d->status = 0;
	spin_unlock_irqrestore(&d->lock, flags);
	if (ioapic_ready)
		ioapic_route_pin(pin, level);
}

void mark_ioapic_ready(void) { ioapic_ready = 1; }

void open_softirq(u32 nr, void (*action)(void)) { softirq_vec[nr] = action; }
void raise_softirq_irqoff(u32 nr) { softirq_pending |= 1u << nr; }

static void __do_softirq(void)
{
	int restart = 10;
	preempt_count += SOFTIRQ_OFFSET;
	do {
		u32 pending = softirq_pending;
		softirq_pending = 0;
		local_irq_enable();
		for (u32 nr = 0; pending; nr++, pending >>= 1)
			if ((pending & 1) && softirq_vec[nr])
				softirq_vec[nr]();
		local_irq_disable();
	} while (softirq_pending && --restart);
	preempt_count -= SOFTIRQ_OFFSET;
}

static void do_softirq(void)
{
	unsigned long flags;
	if (in_interrupt())
		return;
	local_irq_save(flags);
	if (softirq_pending)
		__do_softirq();
	local_irq_restore(flags);
}

void irq_enter(void) { preempt_count += HARDIRQ_OFFSET; }

void irq_exit(void)
{
	preempt_count -= HARDIRQ_OFFSET;
	if (!in_interrupt() && softirq_pending)
		do_softirq();
}

/* handlers run with interrupts enabled (none here asks for IRQF_DISABLED) */
static void handle_IRQ_event(u32 irq, struct irq_desc *d)
{
	local_irq_enable();
	d->handler(irq, d->dev);
	local_irq_disable();
	d->count++;
}

static void handle_edge_irq(u32 irq, struct irq_desc *d)
{
	spin_lock(&d->lock);
	if (d->status & IRQ_INPROGRESS) {
		/* it fired again while its handler runs: mask, ack and let the loop rerun it */
		d->status |= IRQ_PENDING;
		ioapic_mask_pin(irq, 1);
		ack_APIC_irq();
		spin_unlock(&d->lock);
		return;
	}
	ack_APIC_irq();
	d->status |= IRQ_INPROGRESS;
	do {
		if (d->status & IRQ_PENDING)
			ioapic_mask_pin(irq, 0);
		d->status &= ~IRQ_PENDING;
		spin_unlock(&d->lock);
		handle_IRQ_event(irq, d);
		spin_lock(&d->lock);
	} while (d->status & IRQ_PENDING);
	d->status &= ~IRQ_INPROGRESS;
	spin_unlock(&d->lock);
}

static void handle_fasteoi_irq(u32 irq, struct irq_desc *d)
{
	spin_lock(&d->lock);
	CHECK(!(d->status & IRQ_INPROGRESS), "level interrupt nested in its own handler", irq);
	d->status |= IRQ_INPROGRESS;
	spin_unlock(&d->lock);
	handle_IRQ_event(irq, d);
	spin_lock(&d->lock);
	d->status &= ~IRQ_INPROGRESS;
	ack_APIC_irq();
	spin_unlock(&d->lock);
}

/* --- the clock ----------------------------------------------------------------------- */

/* clocksource read: the TSC, through the hook */
u64 clock_read(void) { return paravirt_ops.read_tsc(); }

/* the PIT tick: do_timer and update_wall_time */
void timer_interrupt(u32 irq, void *dev)
{
	jiffies++;
	u64 now = clock_read();
	wall_ns += now - clock_last;
	clock_last = now;
	if (calibrating)
		calibrate_tick();
}

static void run_local_timers(void)
{
	if (timer_head && (s32)(lapic_ticks - timer_head->expires) >= 0)
		raise_softirq_irqoff(TIMER_SOFTIRQ);
}

/* smp_apic_timer_interrupt: EOI first, then the per-CPU tick */
static void smp_apic_timer_interrupt(void)
{
	ack_APIC_irq();
	irq_enter();
	lapic_ticks++;
	scheduler_tick();
	run_local_timers();
	irq_exit();
}

static void smp_error_interrupt(void)
{
	u32 v = paravirt_ops.apic_read(APIC_ESR);
	paravirt_ops.apic_write(APIC_ESR, 0);
	u32 v1 = paravirt_ops.apic_read(APIC_ESR);
	ack_APIC_irq();
	check_failed("APIC error interrupt", v | (v1 << 8));
}

void do_IRQ(struct pt_regs *regs)
{
	u32 v = regs->vector;
	if (v == LOCAL_TIMER_VECTOR) {
		smp_apic_timer_interrupt();
		return;
	}
	if (v == SPURIOUS_APIC_VECTOR)
		return; /* no EOI for a spurious interrupt */
	if (v == ERROR_APIC_VECTOR)
		smp_error_interrupt();
	u32 irq = v - IRQ_VECTOR(0);
	CHECK(v >= IRQ_VECTOR(0) && irq < NR_IRQS, "interrupt on an unknown vector", v);
	struct irq_desc *d = &irq_desc[irq];
	CHECK(d->handler, "interrupt with no handler", irq);
	irq_enter();
	if (d->level)
		handle_fasteoi_irq(irq, d);
	else
		handle_edge_irq(irq, d);
	irq_exit();
}

/* --- timers ---------------------------------------------------------------------- */

void add_timer(struct timer_list *t)
{
	unsigned long flags;
	spin_lock_irqsave(&timer_lock, flags);
	CHECK(!t->pending, "timer added twice", (u32)t);
	struct timer_list **pp = &timer_head;
	while (*pp && (s32)((*pp)->expires - t->expires) <= 0)
		pp = &(*pp)->next;
	t->next = *pp;
	*pp = t;
	t->pending = 1;
	spin_unlock_irqrestore(&timer_lock, flags);
}

void del_timer(struct timer_list *t)
{
	unsigned long flags;
	spin_lock_irqsave(&timer_lock, flags);
	if (t->pending) {
		struct timer_list **pp = &timer_head;
		while (*pp != t)
			pp = &(*pp)->next;
		*pp = t->next;
		t->pending = 0;
	}
	spin_unlock_irqrestore(&timer_lock, flags);
}

static void run_timer_softirq(void)
{
	spin_lock_irq(&timer_lock);
	while (timer_head && (s32)(lapic_ticks - timer_head->expires) >= 0) {
		struct timer_list *t = timer_head;
		timer_head = t->next;
		t->pending = 0;
		spin_unlock_irq(&timer_lock);
		t->fn(t->data);
		spin_lock_irq(&timer_lock);
	}
	spin_unlock_irq(&timer_lock);
}

void init_timers(void)
{
	open_softirq(TIMER_SOFTIRQ, run_timer_softirq);
	clock_last = 0;
}
