"""Lazy-mode batch queues."""

from __future__ import annotations

from replayer.mechanisms.batch import LAZY_CPU, LAZY_FLUSH, LAZY_MMU, LAZY_NONE, BatchQueue


def test_queued_operations_run_in_order_at_leave() -> None:
    done: list[int] = []
    q = BatchQueue(capacity=32)
    q.set_mode(LAZY_MMU)
    for i in range(5):
        q.push(lambda i=i: done.append(i))
    assert done == [] and len(q) == 5
    assert q.set_mode(LAZY_NONE) == 5
    assert done == [0, 1, 2, 3, 4] and q.mode == LAZY_NONE and q.flushes == 1


def test_a_full_queue_flushes_before_taking_more() -> None:
    done: list[int] = []
    q = BatchQueue(capacity=32)
    q.set_mode(LAZY_CPU)
    ran = [q.push(lambda i=i: done.append(i)) for i in range(40)]
    assert ran[32] == 32 and sum(ran) == 32
    assert done == list(range(32))
    assert q.set_mode(LAZY_FLUSH) == 8 and q.mode == LAZY_CPU  # flush keeps the mode
    assert q.set_mode(LAZY_NONE) == 0 and q.flushes == 2
