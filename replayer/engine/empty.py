"""The MMU checks of a backend whose copy of the page tables stays empty.

Takes the replay state and the queue plan (:mod:`replayer.engine.lean`); gives the
``mmu.missing`` row of every MMU check that finds something, worked out from the
guest's tables alone.

A notified backend (``vmi``, ``xen-pv``) keeps a copy only of the frames it is told are
page tables, and fills it only from what it is told:

* ``--without ptalloc --fallback none``: it is told of no table, so every update it is
  sent has nowhere to go;
* ``--without pteupdate --fallback none``: it zeroes each table it is told of, copies a
  cloned directory from its own copy of the source (zeros, by induction), and is told of
  no store.

Either way its copy holds nothing for the whole run (:func:`copy_stays_empty`), and an
MMU check finds every page the guest's loaded space maps missing, except where a native
TLB could still hold a translation that is not there (an older directory entry naming
another table).  What a check finds is then a function of the guest's tables, their
unflushed entries and where the check falls: :func:`judged` has the trace's page-table
events applied to the guest's tables alone, in one compiled pass
(:mod:`replayer.engine.emptywalk`), and each check judged there.
``tests/replayer/test_empty.py`` holds every row to the simulation's.

Where each check falls is :mod:`replayer.engine.schedule`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from replayer.backends import Run
from replayer.engine.common import _cached
from replayer.engine.schedule import Schedule
from replayer.engine.state import _modes
from replayer.engine.violations import ViolationBlock
from replayer.engine.walk import table_changes
from replayer.trace import Trace


def copy_stays_empty(run: Run) -> bool:
    """Whether the run's backend copy of the tables holds nothing for the whole run: a
    notified backend told of no table (``--without ptalloc --fallback none``) or of no
    store (``--without pteupdate --fallback none``), re-reading nothing on its own."""
    pte_mode, alloc_mode, _, _ = _modes(run)
    m = run.model()
    if m.mmu != "notified" or m.flush_resync:
        return False
    return (alloc_mode == "none" and pte_mode in ("hook", "none")) or (
        pte_mode == "none" and alloc_mode in ("hook", "none")
    )


#: The trace's cache key of the checks judged so far (:func:`judged`).
JUDGED = "empty copy checks"


@dataclass
class Judged:
    """What checks against an empty copy find, by state (ascending; -1: before the first
    change of the tables): pages missing (0: nothing found), the lowest and the guest's
    translation of it."""

    states: np.ndarray
    pages: np.ndarray
    vpn: np.ndarray
    exp: np.ndarray

    def holds(self, states: np.ndarray) -> bool:
        """Whether every one of ``states`` is judged."""
        i = np.minimum(np.searchsorted(self.states, states), len(self.states) - 1)
        return bool((self.states[i] == states).all())


def _last_changes(trace: Trace, at: list[int] | np.ndarray) -> np.ndarray:
    """The last event at or before each of ``at`` that changed the guest's tables (-1:
    none): a check after any event sees what it sees after that one."""
    changes = _cached(trace, "table changes", table_changes)
    i = np.searchsorted(changes, np.asarray(at, dtype=np.int64), side="right") - 1
    return np.where(i >= 0, changes[np.maximum(i, 0)], -1)


def to_judge(trace: Trace, states: set[int]) -> list[int]:
    """The states a walk judges so that checks after each of ``states`` are judged
    (:func:`judged`): the changes they see, ascending."""
    want = np.unique(_last_changes(trace, np.fromiter(states, np.int64, len(states))))
    return want[want >= 0].tolist()


def judged(
    trace: Trace, states: list[int] | np.ndarray, more: Callable[[], set[int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a check against an empty copy finds after each of ``states`` (event
    indices), in their order, by the last event before it that changed the tables: pages
    missing (0: nothing found), the lowest and the guest's translation of it.  Judged in
    one pass over the trace, together with ``more()`` (the states other runs will ask
    for), and kept on the trace for them (:class:`Judged`)."""
    mine = _last_changes(trace, states)
    got: Judged | None = trace.cache.get(JUDGED)
    if got is None or not got.holds(mine):
        todo = to_judge(trace, {*mine.tolist(), *more()})
        if got is not None:
            todo = sorted({*todo, *got.states[1:].tolist()})
        # numba (about 100 MiB a process) only in a process that judges such checks
        from replayer.engine.emptywalk import walk_and_judge

        found = walk_and_judge(trace, todo)
        at = np.asarray([-1, *todo], dtype=np.int64)
        pages, vpn, exp = (np.concatenate([[0], found[:, c]]) for c in range(3))
        got = trace.cache[JUDGED] = Judged(at, pages, vpn, exp)
    i = np.searchsorted(got.states, mine)
    return got.pages[i], got.vpn[i], got.exp[i]


def empty_copy_rows(trace: Trace, where: Schedule, more: Callable[[], set[int]]) -> ViolationBlock:
    """The ``mmu.missing`` row of every check that finds something against an empty
    copy, of the checks ``where`` says (:func:`schedule`), in their order: the lowest page
    missing, the guest's translation of it, none, and how many pages at what.  ``more``:
    the states other runs' checks are judged in (:func:`judged`)."""
    pages, vpn, exp = judged(trace, where.states, more)
    hit = np.flatnonzero(pages)
    none = np.zeros(len(hit), dtype=np.int64)
    return where.block("mmu.missing", hit, vpn[hit], exp[hit], none, pages[hit])
