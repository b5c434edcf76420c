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
unflushed entries and where the check falls: :func:`empty_copy_checks` applies the
trace's page-table events to the guest's tables alone, in one pass with runs of stores
taken together, and judges each check there -- by a count of present entries per table
where no native TLB can hold anything older, else by the simulation's own comparison
(:meth:`ViewPair._compare`).  ``tests/replayer/test_empty.py`` holds every row to the
simulation's.

Where each check falls is :mod:`replayer.engine.schedule`'s.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from replayer.backends import Run
from replayer.engine.common import _cached, _hex
from replayer.engine.schedule import Schedule
from replayer.engine.state import _modes
from replayer.engine.violations import ViolationBlock
from replayer.engine.walk import TableWalk, table_changes
from replayer.mechanisms import bulk
from replayer.mechanisms.coherence import Entries, ViewPair
from replayer.mechanisms.pagetables import (
    MEANING,
    PAGE_MASK,
    PSE,
    GuestMMU,
    Olds,
)
from replayer.trace import Trace

#: One check's findings: pages missing, the lowest such page and the guest's translation.
Missing = tuple[int, int, int]


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


class _Directory:
    """What the quick count keeps of one directory between its checks: its present
    entries, what each maps and their sum, kept up to date by the entries that changed
    (a directory changes an entry or two at a time: rebuilt whole, 107,000 of fork's
    checks took 18 µs each)."""

    __slots__ = (
        "seen",
        "page",
        "mem",
        "order",
        "tabs",
        "pages",
        "total",
        "first",
        "first_i",
        "found",
        "dirty",
    )

    def __init__(self) -> None:
        self.seen = 0
        """The change clock at its last check."""
        self.page = np.zeros(1024, dtype=np.uint32)
        """The directory as of ``seen`` (what its changes are found against)."""
        self.mem = memoryview(self.page)  # type: ignore[arg-type]
        """The same, an entry at a time (quicker than numpy for that)."""
        self.order: list[int] = []
        """The present entries' indices, ascending."""
        self.tabs: dict[int, list[int]] = {}
        """table frame -> the present entries naming it."""
        self.pages: dict[int, int] = {}
        """index -> pages its present entry maps (1024 for a 4 MiB page)."""
        self.total = 0
        """Pages the directory maps."""
        self.first: tuple[int, int] | None = None
        """(lowest page mapped, its translation), as of ``seen``."""
        self.first_i = 1024
        """The index of the entry mapping it (1024: none maps a page)."""
        self.found: Missing | None = None
        """What a check found as of ``seen``, no native TLB's leeway asked."""
        self.dirty: set[int] = set()
        """The tables it named at ``seen`` that changed since (told by the judge as
        they change: asking each table it names at each check was 13.3 M questions on
        fork for 600,000 changed)."""


class EmptyJudge:
    """What a check against an empty copy finds in the guest's tables, as a walk of the
    page-table events (:class:`~replayer.engine.walk.TableWalk`) keeps them: the walk says
    which frames each run of stores or fill changed (:meth:`stamp_run`,
    :meth:`stamp_frame`) and calls :meth:`stop` after each of its stops, the ``wanted``
    ones among them: a :class:`~replayer.engine.walk.Rider`.  Any walk of those events will
    do: the guest's tables alone (:func:`judged`), or lguest's untold shadow's
    (:mod:`replayer.engine.untold`), which judges the empty copies' checks on its way when
    they are replayed after it.

    A change clock stamps every frame a store or fill changes, and a changed table is
    noted by the directories that named it at their last check; at a check, a directory's
    entries that changed since its last check, and those naming a table noted, are
    counted again, and a table's present entries are counted once per change.
    """

    def __init__(self, guest: GuestMMU, wanted: list[int]) -> None:
        """``wanted``: the events after which a check is judged, ascending."""
        self.guest = guest
        # the simulation's comparison, against a view that stays empty (leeway cases)
        self.pair = ViewPair(guest)
        self.clock = 1
        self.stamp: dict[int, int] = {}
        """frame -> the clock at its last change."""
        self.pstamp: dict[int, int] = {}
        """frame -> the clock at its last change of a present bit."""
        self.counted: dict[int, tuple[int, int]] = {}
        """table frame -> (its ``pstamp`` when counted, its present entries): a run of
        stores to one table moves the count by what it set and cleared (fork: 600,485
        counts of 1,024 entries became 257,330)."""
        self.lowest: dict[int, tuple[int, int]] = {}
        """table frame -> (its ``pstamp`` when searched, its lowest present index)."""
        self.dirs: dict[int, _Directory] = {}
        self.named_by: dict[int, set[_Directory]] = {}
        """table frame -> the directories naming it as of their last check."""
        self.told: dict[int, int] = {}
        """table frame -> the clock when the directories naming it were last told it
        changed: told again only after a check since (which may have cleared it)."""
        self.checked = 0
        """The clock at the last check of any directory."""
        self.wanted = wanted
        self._next = wanted[0] if wanted else -1
        """The next event wanted (the walk stops in order)."""
        self._found: tuple[list[int], list[int], list[int]] = ([], [], [])
        """Per event wanted so far: pages missing (0: none), the lowest and its translation."""

    def stamp_run(self, es: Entries, moved: tuple[int, int] | None) -> None:
        """A run of stores to entries ``es`` was applied, ``moved`` of them setting and
        clearing a present bit (None: not known): their frames are stamped, and a table
        counted before keeps its count moved by as much."""
        self.clock += 1
        now, stamp, told, checked = self.clock, self.stamp, self.told, self.checked
        frames = {e >> 10 for e in es} if isinstance(es, list) else bulk.frames_of(es)
        for p in frames:
            stamp[p] = now
            if told.get(p, 0) <= checked:
                self._tell(p)
        if moved == (0, 0):
            return  # no present bit changed: counts and lowest entries stand
        pstamp = self.pstamp
        if moved is not None and len(frames) == 1:
            (t,) = frames
            got = self.counted.get(t)
            if got is not None and got[0] == pstamp.get(t, 0):
                self.counted[t] = (now, got[1] + moved[0] - moved[1])
        for p in frames:
            pstamp[p] = now

    def stamp_frame(self, pfn: int) -> None:
        """Frame ``pfn`` was filled."""
        self.clock += 1
        self.stamp[pfn] = self.pstamp[pfn] = self.clock
        if self.told.get(pfn, 0) <= self.checked:
            self._tell(pfn)

    def _tell(self, t: int) -> None:
        """Frame ``t`` changed: the directories naming it note it."""
        ds = self.named_by.get(t)
        if ds:
            self.told[t] = self.clock
            for d in ds:
                d.dirty.add(t)

    def stop(self, k: int) -> None:
        """After event ``k``: what a check finds, if ``k`` is wanted."""
        if k == self._next:
            pages, vpn, exp = self._found
            n, low, tr = self.missing() or (0, 0, 0)
            pages.append(n)
            vpn.append(low)
            exp.append(tr)
            done = len(pages)
            self._next = self.wanted[done] if done < len(self.wanted) else -1

    def judged(self) -> Judged:
        """What a check found after each event wanted (the walk done)."""
        assert len(self._found[0]) == len(self.wanted), "the walk stopped short"
        at = np.asarray([-1, *self.wanted], dtype=np.int64)
        pages, vpn, exp = (np.asarray([0, *c], dtype=np.int64) for c in self._found)
        return Judged(at, pages, vpn, exp)

    def _count(self, t: int) -> int:
        """Present entries of table frame ``t`` (0 for a frame the store never reached),
        counted once per change of a present bit not counted in passing (and its lowest
        present entry found with them)."""
        now = self.pstamp.get(t, 0)
        got = self.counted.get(t)
        if got is not None and got[0] == now:
            return got[1]
        gf = self.guest.frames
        c = 0
        if t < gf.nframes:
            present = gf.np[t << 10 : (t + 1) << 10] & 1
            c = int(np.count_nonzero(present))
            if c:  # the lowest present entry while at it (mixed: asked after 73,083 of
                # 105,342 counts, each a search of its own)
                self.lowest[t] = (now, int(present.argmax()))
        self.counted[t] = (now, c)
        return c

    def _lowest(self, t: int) -> int:
        """The lowest present index of table frame ``t`` (which has one), searched once
        per change of a present bit."""
        now = self.pstamp.get(t, 0)
        got = self.lowest.get(t)
        if got is not None and got[0] == now:
            return got[1]
        k = int(np.argmax(self.guest.frames.page(t) & 1))
        self.lowest[t] = (now, k)
        return k

    def _entries(self, d: _Directory, page: np.ndarray) -> int:
        """Take the directory's entries that changed since ``d.page``; return the lowest
        index changed (1024: none)."""
        changed = np.flatnonzero(page != d.page).tolist()
        if not changed:
            return 1024
        mem, tabs, pages, order = d.mem, d.tabs, d.pages, d.order
        for i in changed:  # an entry or two: numpy's indexing costs more than it saves
            old, v = mem[i], int(page[i])
            mem[i] = v
            if old & 1:
                d.total -= pages.pop(i)
                if not old & PSE:
                    named = tabs[old >> 12]
                    named.remove(i)
                    if not named:
                        del tabs[old >> 12]
                        self.named_by[old >> 12].discard(d)
                if not v & 1:
                    del order[bisect_left(order, i)]
            elif v & 1:
                insort(order, i)
            if v & 1:
                if v & PSE:
                    pages[i] = 1024
                else:
                    if v >> 12 not in tabs:
                        tabs[v >> 12] = []
                        self.named_by.setdefault(v >> 12, set()).add(d)
                    tabs[v >> 12].append(i)
                    pages[i] = self._count(v >> 12)
                d.total += pages[i]
        return changed[0]

    def _first(
        self, d: _Directory, skip: set[int] | frozenset[int] = frozenset()
    ) -> tuple[tuple[int, int] | None, int]:
        """The lowest page the directory maps (past entries ``skip``) and its translation,
        and the index of the entry mapping it (None and 1024: none maps a page)."""
        pages, mem = d.pages, d.mem
        for i in d.order:
            if pages[i] and i not in skip:
                pde = mem[i]
                if pde & PSE:
                    return (i << 10, (pde & 0xFFC00000) | (pde & MEANING)), i
                t = pde >> 12
                k = self._lowest(t)
                tr = int(self.guest.frames.mem[(t << 10) | k]) & (PAGE_MASK | (pde & MEANING))
                return ((i << 10) | k, tr), i
        return None, 1024

    def missing(self) -> Missing | None:
        """What a check of the loaded space against an empty copy finds now."""
        guest = self.guest
        pd = guest.pd
        if pd is None:
            return None
        stamp = self.stamp
        d = self.dirs.get(pd)
        if d is not None and d.seen == self.clock and not guest.unflushed:
            # nothing changed since this directory's last check (on sched, whose context
            # switches make most checks, 466,000 of them between 17,830 stores)
            return d.found
        if d is None:
            d = self.dirs[pd] = _Directory()
        seen = d.seen
        lowest = 1024
        if seen == 0 or stamp.get(pd, 0) > seen:
            lowest = self._entries(d, guest.frames.page(pd))
        # the tables named that changed since: their entries map another count
        if d.dirty:
            pages, tabs = d.pages, d.tabs
            for t in d.dirty:
                named = tabs.get(t)
                if named:
                    c = self._count(t)
                    for i in named:
                        d.total += c - pages[i]
                        pages[i] = c
                        if i < lowest:
                            lowest = i
            d.dirty.clear()
        # the lowest page mapped stays where no entry at or before its entry changed
        if lowest <= d.first_i:
            d.first, d.first_i = self._first(d)
        d.seen = self.checked = self.clock
        d.found = None if d.first is None else (d.total, *d.first)
        unf = guest.unflushed
        if unf:
            u_pd = unf.get(pd)
            mem, tabs = d.mem, d.tabs
            lee = {i for i in u_pd if mem[i] & 1} if u_pd else set()
            for f, u in unf.items():
                under = tabs.get(f)
                if under and u:
                    lee.update(under)
            if lee:
                return self._with_leeway(d, sorted(lee), u_pd)
        return d.found

    def _with_leeway(self, d: _Directory, lee: list[int], u_pd: Olds | None) -> Missing | None:
        """:meth:`missing` where a native TLB may hold something older under the present
        entries ``lee``: those are judged as the simulation does."""
        total = d.total
        best: tuple[int, int] | None = None
        for i in lee:
            total -= d.pages[i]
            olds = u_pd.get(i, ()) if u_pd else ()
            for f in self.pair._compare(i, d.mem[i], 0, olds):
                total += f[1]
                if best is None or f[2] < best[0]:
                    best = (f[2], f[3])
        first = d.first
        if d.first_i in lee:  # the lowest page of the other entries
            first, _ = self._first(d, set(lee))
        if first is not None and (best is None or first[0] < best[0]):
            best = first
        if not total or best is None:
            return None
        return total, best[0], best[1]


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
    for), and kept on the trace for them (:class:`Judged`), unless a walk before judged
    them all (lguest's untold shadow's, :mod:`replayer.engine.lean`)."""
    mine = _last_changes(trace, states)
    got: Judged | None = trace.cache.get(JUDGED)
    if got is None or not got.holds(mine):
        todo = to_judge(trace, {*mine.tolist(), *more()})
        if got is not None:
            todo = sorted({*todo, *got.states[1:].tolist()})
        walk = TableWalk(trace)
        walk.rider = judge = EmptyJudge(walk.guest, todo)
        walk.walk(np.zeros(0, dtype=np.int64))  # the judge's stops alone
        got = trace.cache[JUDGED] = judge.judged()
    i = np.searchsorted(got.states, mine)
    return got.pages[i], got.vpn[i], got.exp[i]


def empty_copy_rows(trace: Trace, where: Schedule, more: Callable[[], set[int]]) -> ViolationBlock:
    """The ``mmu.missing`` row of every check that finds something against an empty
    copy, of the checks ``where`` says (:func:`schedule`), in their order: the lowest page
    missing, the guest's translation of it, none, and how many pages at what.  ``more``:
    the states other runs' checks are judged in (:func:`judged`).

    Most rows repeat a page, its translation and a detail: the strings are made once per
    (page, translation, pages, what the check was made at), and the rows (half a million
    on fork) are codes into them."""
    pages, vpn, exp = judged(trace, where.states, more)
    hit = np.flatnonzero(pages)
    # each row's (page, translation, pages, reason), numbered as distinct (by a sort of the
    # four columns: np.unique of the rows took a second a run on fork)
    key = np.stack([vpn[hit], exp[hit], pages[hit], where.reason_keys(hit)])
    o = np.lexsort(key[::-1])
    ordered = key[:, o]
    new = np.ones(len(hit), dtype=bool)
    new[1:] = (ordered[:, 1:] != ordered[:, :-1]).any(axis=0)
    code = np.empty(len(hit), dtype=np.int64)
    code[o] = np.cumsum(new) - 1
    s_vpn, s_exp, s_pages, s_why = (c.tolist() for c in ordered[:, new])
    detail = [f"{n} page(s) wrong at {where.said(k)}" for n, k in zip(s_pages, s_why, strict=True)]
    return ViolationBlock.of(
        "mmu.missing",
        np.asarray(where.seqs, dtype=np.int64)[hit],
        field=(code, [f"va {v << 12:#010x}" for v in s_vpn]),
        expected=(code, [_hex(e) for e in s_exp]),
        actual=_hex(0),
        detail=(code, detail),
    )
