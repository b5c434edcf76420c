/*
 * The I/O device's driver, a block driver in 2.6.21's shape: requests are queued
 * under the driver's lock with interrupts saved and disabled, up to 64 go to the
 * device's doorbell (the rest wait in the driver's queue); the level-triggered
 * interrupt's handler takes the same lock, acknowledges every completion, feeds
 * the device from the queue and raises BLOCK_SOFTIRQ, whose handler ends the
 * requests and wakes their waiters.
 */
#include "kernel.h"

#define BLK_REQS 256
struct blk_req {
	u32 tag;
	void (*done)(u32 tag, u32 data);
	u32 data;
	u32 busy;
	u32 next; /* index + 1 in the software queue or the done list; 0 = end */
};

static struct blk_req reqs[BLK_REQS];
static spinlock_t blk_lock = SPIN_LOCK_UNLOCKED("blk lock recursion");
static u32 q_head, q_tail;       /* waiting for a device slot */
static u32 done_head, done_tail; /* completed, waiting for the softirq */
static u32 free_hint, dev_in_flight, nr_busy;
static int blk_ready;
u32 blk_completed, blk_submitted, blk_irqs;

static void list_push(u32 *head, u32 *tail, u32 idx)
{
	reqs[idx].next = 0;
	if (*tail)
		reqs[*tail - 1].next = idx + 1;
	else
		*head = idx + 1;
	*tail = idx + 1;
}

static u32 list_pop(u32 *head, u32 *tail)
{
	u32 idx = *head - 1;
	*head = reqs[idx].next;
	if (!*head)
		*tail = 0;
	return idx;
}

/* called with blk_lock held */
static void start_request(u32 idx)
{
	mmio_write(IODEV_BASE + IODEV_DOORBELL, idx | (reqs[idx].tag << 8));
	dev_in_flight++;
	blk_submitted++;
}

/* submit a request; done(tag, data) runs in softirq context when it completes */
void blk_submit_async(u32 tag, void (*done)(u32 tag, u32 data), u32 data)
{
	unsigned long flags;
	CHECK(blk_ready, "block device used before blk_init", tag);
	spin_lock_irqsave(&blk_lock, flags);
	u32 idx = BLK_REQS;
	for (u32 i = 0; i < BLK_REQS; i++) {
		u32 j = (free_hint + i) % BLK_REQS;
		if (!reqs[j].busy) {
			idx = j;
			break;
		}
	}
	CHECK(idx < BLK_REQS, "block request table full", nr_busy);
	free_hint = idx + 1;
	reqs[idx].tag = tag & 0xFFFFFF;
	reqs[idx].done = done;
	reqs[idx].data = data;
	reqs[idx].busy = 1;
	nr_busy++;
	if (dev_in_flight < IODEV_MAX_IN_FLIGHT)
		start_request(idx);
	else
		list_push(&q_head, &q_tail, idx);
	spin_unlock_irqrestore(&blk_lock, flags);
}

u32 blk_in_flight(void) { return nr_busy; }

static void blk_interrupt(u32 irq, void *dev)
{
	unsigned long flags;
	u32 st;
	spin_lock_irqsave(&blk_lock, flags);
	blk_irqs++;
	while ((st = mmio_read(IODEV_BASE + IODEV_STATUS)) & 0x7FFFFFFFu) {
		u32 tag = mmio_read(IODEV_BASE + IODEV_TAG);
		mmio_write(IODEV_BASE + IODEV_ACK, 1);
		u32 idx = tag & 0xFF;
		CHECK(reqs[idx].busy && (tag >> 8) == reqs[idx].tag, "completion for no request", tag);
		dev_in_flight--;
		list_push(&done_head, &done_tail, idx);
		if (q_head)
			start_request(list_pop(&q_head, &q_tail));
	}
	CHECK(!(st & 0x80000000u), "the device dropped a request", st);
	raise_softirq_irqoff(BLOCK_SOFTIRQ);
	spin_unlock_irqrestore(&blk_lock, flags);
}

static void blk_done_softirq(void)
{
	for (;;) {
		spin_lock_irq(&blk_lock);
		if (!done_head) {
			spin_unlock_irq(&blk_lock);
			break;
		}
		u32 idx = list_pop(&done_head, &done_tail);
		spin_unlock_irq(&blk_lock);
		struct blk_req *r = &reqs[idx];
		if (r->done)
			r->done(r->tag, r->data);
		blk_completed++;
		spin_lock_irq(&blk_lock);
		r->busy = 0;
		nr_busy--;
		spin_unlock_irq(&blk_lock);
	}
}

/* a batch of requests one task waits for (2.6.21's struct completion, counted) */
struct blk_batch {
	volatile u32 left;
	struct wait_queue_head wait;
};

static void batch_done(u32 tag, u32 data)
{
	struct blk_batch *b = (struct blk_batch *)data;
	if (!--b->left)
		wake_up(&b->wait);
}

/* nreq requests, then sleep until all have completed */
int blk_rw(u32 nreq, u32 tag_base)
{
	struct blk_batch b;
	b.left = nreq;
	init_waitqueue_head(&b.wait);
	for (u32 i = 0; i < nreq; i++)
		blk_submit_async(tag_base + i, batch_done, (u32)&b);
	wait_event(b.wait, b.left == 0);
	return (int)nreq;
}

/* one request, waited for */
void blk_rw_one(u32 tag) { blk_rw(1, tag); }

void blk_init(void)
{
	if (blk_ready)
		return;
	open_softirq(BLOCK_SOFTIRQ, blk_done_softirq);
	request_irq(IODEV_PIN, blk_interrupt, NULL, 1);
	blk_ready = 1;
}
