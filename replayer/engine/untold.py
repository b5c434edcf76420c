"""The MMU checks of lguest told of no page-table store.

Takes the trace, where each check falls (:func:`replayer.engine.schedule.schedule`) and the
queue's plan; gives every MMU row the simulation's checks give, from a walk of the
page-table events alone (:class:`~replayer.engine.walk.TableWalk`) with lguest's shadow
kept beside the guest's tables.

``lguest --without pteupdate --fallback none``: every PTE hook is a plain store lguest
never sees, and it is never told of an allocation.  Its shadow is re-read only at TLB
flushes (``flush_tlb_kernel`` all of it, ``flush_tlb_user`` the loaded space,
``flush_tlb_single`` the walk of its address) and at a CR3 load whose directory is not
among the ``pgdir_cache`` shadow directories it keeps; a flush or CR3 load made in lazy
mode waits in the queue for its next flush.  So the shadow, and what every check finds
in it, follows from the page-table events and the queue's flushes alone, while lguest's
costs never depend on the shadow: costs come from the queue plan (as where a proof
holds) and the checks from this walk, with the simulation's own copy
(:class:`~replayer.mechanisms.coherence.ViewPair`) and check.
``tests/replayer/test_untold.py`` holds every row to the simulation's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from replayer.backends import Run
from replayer.engine.common import FL_KERN, FL_ONE, WCR3, _hex
from replayer.engine.schedule import Schedule
from replayer.engine.state import _modes
from replayer.engine.walk import TableWalk
from replayer.mechanisms.coherence import CheckResult, Entries, ViewPair
from replayer.trace import Trace

#: How a row is reported: (event, check, field, expected, actual, detail).
Violate = Callable[[int, str, str, str, str, str], None]


def untold(run: Run) -> bool:
    """Whether the run is lguest's shadow told of no store (``--without pteupdate
    --fallback none``)."""
    return run.model().mmu == "demand" and _modes(run)[0] == "none"


def report(violate: Violate, seq: int, res: CheckResult, reason: str) -> None:
    """The rows of one MMU check: one per kind of wrong page, at its lowest page."""
    for f in res.findings:
        violate(
            seq,
            f"mmu.{f.kind}",
            f"va {f.vpn << 12:#010x}",
            _hex(f.expected),
            _hex(f.actual),
            f"{f.pages} page(s) wrong at {reason}",
        )


def lguest_load(pair: ViewPair, lru: OrderedDict[int, None], pd: int, cache: int) -> None:
    """lguest's side of a CR3 load of directory ``pd`` (the switch itself apart): its
    cached shadow directory, or the space re-read and cached (an LRU of ``cache``)."""
    if pd in lru:
        lru.move_to_end(pd)
    else:
        pair.resync_space()
        lru[pd] = None
        while len(lru) > cache:
            lru.popitem(last=False)


class UntoldShadow(TableWalk):
    """lguest's shadow beside the guest's tables, over the page-table events, and the
    checks where the schedule puts them.

    ``queued``: per event, whether lguest queues the call; ``flush_at``: events that apply
    the queue (before their own effect); ``cache``: shadow directories kept.
    """

    def __init__(
        self,
        trace: Trace,
        where: Schedule,
        queued: np.ndarray,
        flush_at: np.ndarray,
        cache: int,
        violate: Violate,
    ) -> None:
        super().__init__(trace)
        self.pair = ViewPair(self.guest, demand_fill=True)
        self.lru: OrderedDict[int, None] = OrderedDict()
        self.where, self.seqs, self.states = where, where.seqs, where.states
        self.queued, self.cache, self.violate = queued, cache, violate
        # a flush before event d applies the queue once event d-1 is done; what is left
        # is applied after the last event
        self.drains = set((flush_at[flush_at > 0] - 1).tolist()) | {trace.n - 1}
        self.pending: list[tuple[int, int]] = []
        self.row = 0

    def run(self) -> None:
        """Every check's rows, in the simulation's order."""
        n = self.trace.n
        at = np.asarray(sorted(self.drains | set(self.states)), dtype=np.int64)
        self.walk(at[(at >= 0) & (at < n)])

    def stores(self, es: Entries, vs: Entries) -> None:
        """Stores lguest never sees: the guest's tables only."""
        self.pair.guest_write_many(es, vs)

    def fill(self, pfn: int, lo: int, hi: int, values: np.ndarray | None) -> bool:
        """An allocation's memset or clone: lguest is not told."""
        return self.pair.guest_fill(pfn, lo, hi, values)

    def flushed(self, k: int, h: int, a0: int, frames: list[int]) -> None:
        """A CR3 load or TLB flush: lguest's side at once, or queued."""
        self.pair.guest_flushed(frames)
        if self.queued[k]:
            self.pending.append((h, a0))
        else:
            self.apply(h, a0)

    def apply(self, h: int, a0: int) -> None:
        """lguest takes a CR3 load (its cached shadow directory, or the space re-read) or a
        flush (the shadows it drops are re-read on demand)."""
        pair = self.pair
        if h == WCR3:
            pair.set_cr3(a0)
            lguest_load(pair, self.lru, a0 >> 12, self.cache)
        elif h == FL_ONE:
            pair.resync_addr(a0)
        elif h == FL_KERN:
            pair.resync_all()
        else:
            pair.resync_space()

    def stop(self, k: int) -> None:
        """After event ``k``: the queue's flush before event k+1 (or the end's), then the
        checks that see the tables as they are now.  (A check made after event k itself
        is made only with nothing queued, when that flush has nothing to apply.)"""
        if k in self.drains and self.pending:
            for h, a0 in self.pending:
                self.apply(h, a0)
            self.pending.clear()
        states, r = self.states, self.row
        while r < len(states) and states[r] == k:
            res = self.pair.check()
            if res.findings:
                report(self.violate, self.seqs[r], res, self.where.reason(r))
            r += 1
        self.row = r
