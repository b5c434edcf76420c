"""The guest's page tables walked over the trace's page-table events alone.

Takes the trace; gives :class:`TableWalk`, the guest's tables, TLB and paging state
advanced over the events that change them (:func:`table_changes`), runs of entry stores
taken together, stopping at the events asked for.  A subclass says what a store, a
fill, a TLB flush or a stop does beside the guest's side: lguest told of no store
(:mod:`replayer.engine.untold`) keeps its shadow beside the guest's tables.  (The empty
copies' checks need only the guest's side: :mod:`replayer.engine.emptywalk` walks it
compiled.)

Nothing but these events changes the guest's tables, so a pass that takes only them
sees, at each stop, the tables a simulation of every event sees there.
"""

from __future__ import annotations

import numpy as np

from replayer.engine.common import (
    _ALLOCS,
    FL_KERN,
    FL_ONE,
    FL_USER,
    WCR0,
    WCR3,
    WCR4,
    _cached,
)
from replayer.engine.derived import _frames_needed, _pte_entries, _wide
from replayer.mechanisms import bulk
from replayer.mechanisms.coherence import Entries
from replayer.mechanisms.pagetables import CR0_PG, CR4_PGE, GuestMMU, cloned
from replayer.trace import K_HOOK, Trace, hooks_in

ALLOC_CLONE = _ALLOCS[2]
#: The hooks that change the guest's tables or TLB, other than entry stores.
OPS = np.array([*_ALLOCS, WCR3, FL_USER, FL_KERN, FL_ONE, WCR0, WCR4])
#: Stops a walk takes as Python lists at a time (lists of all of them took gigabytes).
WINDOW = 1 << 16


def table_changes(trace: Trace) -> np.ndarray:
    """The events that change the guest's tables, CR3, paging state or TLB: entry stores
    with an observed value and the hooks of :data:`OPS` (every pass takes them all)."""
    ent, _ = _pte_entries(trace)
    hook = (trace.kind == K_HOOK) & ((ent >= 0) | hooks_in(trace.hook, OPS))
    return np.flatnonzero(hook)


class TableWalk:
    """The guest's tables and TLB advanced over the trace's page-table events.

    :meth:`walk` applies them in order and calls :meth:`stop` after each stop asked for
    (and after each event of :data:`OPS`), with the stores up to it applied.  Subclasses
    say what else a store run (:meth:`stores`), a fill (:meth:`fill`), a TLB flush
    (:meth:`flushed`) or a stop does.
    """

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        ent, val = _pte_entries(trace)
        self.guest = GuestMMU(nframes=_frames_needed(trace, ent))
        loop = _cached(trace, "table changes", table_changes)
        le = _wide(ent[loop])
        self.st = loop[le >= 0]
        self.st_e, self.st_v = le[le >= 0], _wide(val[loop][le >= 0])
        self.ops = loop[le < 0]

    def walk(self, stops: np.ndarray) -> None:
        """Apply every page-table event, stopping after each of ``stops`` (ascending)."""
        # both sorted: marked in one mask rather than sorted together (np.union1d sorted
        # the 1.3 M of fork's in 0.6 s)
        mark = np.zeros(self.trace.n, dtype=bool)
        mark[self.ops] = True
        mark[stops] = True
        every = np.flatnonzero(mark)
        del mark
        a = 0
        for w in range(0, len(every), WINDOW):
            a = self._window(every[w : w + WINDOW], a)

    def _window(self, stops: np.ndarray, a: int) -> int:
        """:meth:`walk` over some of its stops, from store ``a`` on; return the stores
        applied so far."""
        tr, guest = self.trace, self.guest
        at = stops.tolist()
        upto = np.searchsorted(self.st, stops, side="right").tolist()
        # which stops are ops: both sorted, so a search (np.isin sorted all the ops again
        # for every window: 6% of lguest's walk on fork)
        j = np.minimum(np.searchsorted(self.ops, stops), max(len(self.ops) - 1, 0))
        is_op = (self.ops[j] == stops).tolist() if len(self.ops) else [False] * len(stops)
        hs, a0 = tr.hook[stops].tolist(), tr.arg0[stops].tolist()
        a1, a2, a3 = (tr.arg1[stops].tolist(), tr.arg2[stops].tolist(), tr.arg3[stops].tolist())
        for i, x in enumerate(at):
            b = upto[i]
            if b > a:
                self.stores(*self.run_of(a, b))
                a = b
            if is_op[i]:
                h = hs[i]
                if h == WCR3:
                    guest.cr3 = a0[i]
                    self.flushed(x, h, a0[i], guest.flush_all(False))
                elif h == FL_ONE:
                    self.flushed(x, h, a0[i], guest.flush_addr(a0[i]))
                elif h in (FL_USER, FL_KERN):
                    self.flushed(x, h, a0[i], guest.flush_all(h == FL_KERN))
                elif h == WCR0:
                    guest.paging = bool(a0[i] & CR0_PG)
                elif h == WCR4:
                    guest.pge = bool(a0[i] & CR4_PGE)
                else:
                    self.alloc(h, a0[i], a1[i], a2[i], a3[i])
            self.stop(x)
        return a

    def alloc(self, h: int, pfn: int, src: int, start: int, count: int) -> None:
        """alloc_*: the guest zeroes the frame, or clones part of a directory into it
        (:func:`~replayer.mechanisms.pagetables.cloned`)."""
        if h == ALLOC_CLONE:
            self.fill(pfn, 0, 1024, cloned(self.guest.frames, src, start, count))
        else:
            self.fill(pfn, 0, 1024, None)

    def run_of(self, a: int, b: int) -> tuple[Entries, Entries]:
        """The entries and values of stores ``a`` to ``b``: Python lists below
        :data:`~replayer.mechanisms.bulk.VEC_MIN` (the ``*_many`` methods loop over them
        one by one there, and numpy scalars are slow to loop over), arrays from it."""
        es, vs = self.st_e[a:b], self.st_v[a:b]
        return (es.tolist(), vs.tolist()) if b - a < bulk.VEC_MIN else (es, vs)

    def stores(self, es: Entries, vs: Entries) -> None:
        """Apply a run of entry stores (:meth:`run_of`)."""
        self.guest.write_many(es, vs)

    def fill(self, pfn: int, lo: int, hi: int, values: np.ndarray | None) -> bool:
        """The guest zeroes (``values`` None) or copies a range of a frame; False where
        that surely changed nothing."""
        return self.guest.fill(pfn, lo, hi, values)

    def flushed(self, k: int, h: int, a0: int, frames: list[int]) -> None:
        """Event ``k`` (hook ``h``, first argument ``a0``) flushed the guest's TLB; the
        unflushed entries of ``frames`` changed."""

    def stop(self, k: int) -> None:
        """After event ``k``: its effects and every store before it are applied."""
