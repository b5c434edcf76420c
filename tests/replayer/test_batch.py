"""Lazy-mode batch queues."""

from __future__ import annotations

import numpy as np

from replayer.mechanisms.batch import (
    LAZY_CPU,
    LAZY_FLUSH,
    LAZY_MMU,
    LAZY_NONE,
    BatchQueue,
    plan,
)


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


def test_the_vectorized_plan_flushes_where_the_queue_does() -> None:
    rng = np.random.default_rng(7)
    for _ in range(2000):
        cap, n = int(rng.integers(1, 6)), int(rng.integers(0, 40))
        r = rng.random(n)
        queued, drains = r < 0.5, (r >= 0.5) & (r < 0.7)
        pushes = queued & (rng.random(n) < 0.8)  # some queued calls add nothing to apply
        q = BatchQueue(capacity=cap, apply=lambda entries: None)
        cap_flush, drained, flushes = np.zeros(n, dtype=bool), np.zeros(n, dtype=int), []
        for i in range(n):
            if queued[i]:
                if len(q) >= cap:
                    q.flush()
                    cap_flush[i] = True
                    flushes.append(i)
                if pushes[i]:
                    q.entries.append(i)
            elif drains[i]:
                drained[i] = q.flush()
                if drained[i]:
                    flushes.append(i)
        p = plan(queued, pushes, drains, cap)
        assert p.capacity_flush.tolist() == cap_flush.tolist()
        assert p.drained.tolist() == drained.tolist()
        assert p.flushes.tolist() == flushes
