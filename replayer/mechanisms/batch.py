"""Lazy-mode batch queues: Xen multicalls, lguest's async ring, VMI's queued ROM calls.

While the guest is in a lazy mode (``set_lazy_mode(1)`` MMU, ``(2)`` CPU), a
backend may queue calls instead of entering the hypervisor for each, and
apply them in order at a flush: when the guest leaves the mode or asks for a
flush (``set_lazy_mode(0)``/``(3)``), when the queue is full, or (lguest) at
the start of any synchronous hypercall.

* Xen 2.6.23: a per-CPU multicall buffer of ``MC_BATCH = 32`` entries
  (``arch/i386/xen/multicalls.h``); an entry is batched only while the lazy
  mode it belongs to is active.
* lguest 2.6.23: a 64-entry ring in ``lguest_data``, drained by the host at
  the start of every hypercall (``do_async_hcalls``).
* VMI: ``SetLazyMode`` queues ROM calls; the queue's size is inside the ROM and
  not visible in Linux source (a parameter here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LAZY_NONE, LAZY_MMU, LAZY_CPU, LAZY_FLUSH = 0, 1, 2, 3


def _call_each(entries: list[Any]) -> None:
    for apply in entries:
        apply()


@dataclass
class BatchQueue:
    """Queued operations, applied in order at a flush, and the lazy mode.

    By default entries are callables; ``apply`` may interpret them otherwise.
    """

    capacity: int
    mode: int = LAZY_NONE
    entries: list[Any] = field(default_factory=list)
    flushes: int = 0
    """Non-empty flushes so far."""
    apply: Callable[[list[Any]], None] = _call_each
    """Applies a flushed batch, in order."""

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, op: Any) -> int:
        """Queue an operation; if the queue was full, flush first and return how many ran."""
        ran = 0
        if len(self.entries) >= self.capacity:
            ran = self.flush()
        self.entries.append(op)
        return ran

    def flush(self) -> int:
        """Apply every queued operation in order; return how many."""
        n = len(self.entries)
        if n:
            entries, self.entries = self.entries, []
            self.apply(entries)
            self.flushes += 1
        return n

    def set_mode(self, mode: int) -> int:
        """``set_lazy_mode(mode)``: leaving (0) or flushing (3) applies the queue; return count."""
        if mode in (LAZY_NONE, LAZY_FLUSH):
            ran = self.flush()
            if mode == LAZY_NONE:
                self.mode = LAZY_NONE
            return ran
        self.mode = mode
        return 0


@dataclass
class QueuePlan:
    """What a :class:`BatchQueue` does over a sequence of events, found without running it.

    Positions index the sequence given to :func:`plan`.
    """

    capacity_flush: np.ndarray
    """Per position: a queued event that finds the queue full and first applies it."""
    drained: np.ndarray
    """Per position: how many entries a drain trigger applies (0: the queue was empty)."""
    flushes: np.ndarray
    """Positions where queued entries are applied, ascending (the final drain after the
    last event not included)."""
    pushes: np.ndarray
    """Per position: the event adds an entry (as given)."""


def plan(queued: np.ndarray, pushes: np.ndarray, drains: np.ndarray, capacity: int) -> QueuePlan:
    """The queue's flushes over a sequence, vectorized.

    ``queued``: the event is queued (costs an entry; a full queue is applied first);
    ``pushes``: it also adds an operation (a subset of ``queued``); ``drains``: the event
    applies whatever is queued (never queued itself).  As :class:`BatchQueue`: a queued
    event finding ``capacity`` entries applies them first, so between drains entries are
    applied in blocks of ``capacity`` pushes, each at the first queued event after the
    block's last push; a drain applies what is left.
    """
    n = len(queued)
    # only pushes, queued events and drains matter: work on their positions.  Every
    # search here is of a few keys or O(n): a search of each push's segment in all the
    # pushes' took a fifth of this on fork's 4 M pushes, the union of the flushes a third
    dpos = np.flatnonzero(drains)
    ppos = np.flatnonzero(pushes)
    qpos = np.flatnonzero(queued)
    # a push's segment: the drains before it
    pseg = np.cumsum(drains, dtype=np.int64)[ppos] - drains[ppos]
    # its rank among its segment's pushes: its position past the segment's first push
    seg_first = np.flatnonzero(np.diff(pseg, prepend=-1))
    rank = np.arange(len(ppos)) - np.repeat(seg_first, np.diff(np.append(seg_first, len(ppos))))
    ends = ppos[(rank + 1) % capacity == 0]
    capacity_flush = np.zeros(n, dtype=bool)
    if len(ends) and len(qpos):
        at = np.searchsorted(qpos, ends, side="right")
        ok = at < len(qpos)
        nxt = qpos[at[ok]]
        nxt = nxt[np.searchsorted(dpos, nxt) == np.searchsorted(dpos, ends[ok])]
        capacity_flush[nxt] = True
    nseg = len(dpos) + 1
    per_seg = np.bincount(pseg, minlength=nseg)
    cf = np.flatnonzero(capacity_flush)
    flushed = np.bincount(np.searchsorted(dpos, cf), minlength=nseg) * capacity
    drained = np.zeros(n, dtype=np.int64)
    drained[dpos] = (per_seg - flushed)[: len(dpos)]
    # the capacity flushes (queued events) and the drains that apply something (never
    # queued): apart, so the positions of both are those marked in one mask
    flushing = capacity_flush.copy()
    flushing[dpos[drained[dpos] > 0]] = True
    flushes = np.flatnonzero(flushing)
    return QueuePlan(capacity_flush, drained, flushes, pushes.astype(bool))
