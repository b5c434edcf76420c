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
from replayer.engine.common import _hex
from replayer.engine.schedule import Schedule
from replayer.engine.state import _modes
from replayer.engine.violations import ViolationBlock
from replayer.mechanisms.coherence import KINDS, CheckResult, ViewPair
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


def untold_rows(
    trace: Trace, where: Schedule, queued: np.ndarray, flush_at: np.ndarray, cache: int
) -> list[ViolationBlock]:
    """The rows of every check ``where`` says, a block per kind of wrong page (in the
    simulation's order once merged by event and check), from one compiled walk of the
    page-table events with lguest's shadow beside the guest's tables
    (:func:`~replayer.engine.untoldwalk.shadow_walk`).

    ``queued``: per event, whether lguest queues the call; ``flush_at``: events that apply
    the queue (before their own effect); ``cache``: shadow directories kept.
    """
    # numba (about 100 MiB a process) only in a process that walks lguest's shadow
    from replayer.engine.emptywalk import stops_of
    from replayer.engine.untoldwalk import shadow_walk

    n = trace.n
    states = np.asarray(where.states, dtype=np.int64)
    if np.any(states[1:] < states[:-1]):
        raise AssertionError("the checks are not in the order of the events they see")
    # a flush before event d applies the queue once event d-1 is done; what is left is
    # applied after the last event
    drains = np.unique(np.append(flush_at[flush_at > 0] - 1, n - 1))
    s = stops_of(trace, np.union1d(drains, states[states >= 0]))
    lo = np.searchsorted(states, s.at, side="left")
    checks = np.searchsorted(states, s.at, side="right") - lo
    drain = np.zeros(len(s.at), dtype=bool)
    drain[np.searchsorted(s.at, drains)] = True
    lg = (queued[s.at], drain, checks, cache)
    found = shadow_walk(s.nf, s.st_e, s.st_v, s.upto, s.op, s.a0, s.a1, s.a2, s.a3, *lg)
    # checks before any event see no loaded directory: they find nothing
    row = found[:, 0] + int(np.count_nonzero(states < 0))
    blocks = []
    for k, kind in enumerate(KINDS):
        mine = found[:, 1] == k
        if mine.any():
            hit, f = row[mine], found[mine]
            blocks.append(where.block(f"mmu.{kind}", hit, f[:, 3], f[:, 4], f[:, 5], f[:, 2]))
    return blocks
