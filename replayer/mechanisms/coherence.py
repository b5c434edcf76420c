"""A backend's view of the page tables beside the guest's intent, and the coherence check.

The backend keeps its own copy of every page-table frame it knows: a VMI
shadow fed by ROM notifications, Xen's validated direct tables, lguest's
shadow, a hardware VMM's write-protected shadow.  What it learns, and when,
is the mechanism (``replayer.engine``); this module holds the copy, keeps the
set of entries where copy and intent differ (``diff``, refreshed on every
write to either side), and checks the effective translation of every mapped
page of the loaded address space against the guest's intent.

The check is incremental: a page's translation can differ only where an
entry on its walk differs, so only the directory entries in ``diff`` and the
directory entries naming a table with entries in ``diff`` are compared, and
a directory entry whose inputs (both entries, both tables' versions, the
native-TLB leeway) have not changed reuses its verdict.  Verdicts are kept per
directory, with the clock at that directory's last check: every change stamps
its frame with the clock, so a check finds what changed since the last check
of the *same* address space (switching spaces keeps both spaces' verdicts)
and re-judges only the entries naming those frames.  Three common verdicts take
no full comparison: both sides' entry names one table (only the entries in
``diff`` can differ), the backend's maps nothing (every page the guest's table
maps is missing), or maps nothing in a demand-filled view (nothing is wrong).
:meth:`ViewPair.check_full` compares all 2^20 pages from scratch and must agree
(``tests/replayer/test_coherence.py``).

A mismatch is *missing* (the guest maps the page, the backend does not),
*stale* (the backend maps another frame, or a page the guest unmapped) or
*perm* (same frame, other present/writable/user bits).  A translation a
native TLB may still hold (``GuestMMU.unflushed``) is not counted: native
hardware could show it too.  A *demand-fill* view (lguest's shadow) fills
what it lacks from the guest's tables on first use, so only what it does map
can be wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from replayer.mechanisms import bulk
from replayer.mechanisms.pagetables import (
    MEANING,
    PAGE_MASK,
    PRESENT,
    PSE,
    Frames,
    GuestMMU,
    translations,
)

KINDS = ("missing", "stale", "perm")
_EMPTY: tuple[tuple[str, int, int, int, int], ...] = ()
_TABLE_BITS = np.uint32(PRESENT | PSE)
_ONE, _FOUR, _LOW = np.uint32(1), np.uint32(4), np.uint32(~PAGE_MASK & 0xFFFFFFFF)
# a wrong page's kind (index into KINDS; 3: none) by its code in ``_compare``: present
# on the guest's side only: missing; on the backend's only, or on both with frames that
# differ: stale; on both, same frame: perm (only the meaning bits differ)
#: A run of flat entries (or values): a list, or an int64 array for long runs.
Entries = list[int] | np.ndarray


def _frames(entries: Entries) -> Iterable[int]:
    """The distinct frames of a run of entries."""
    if isinstance(entries, np.ndarray):
        return bulk.frames_of(entries)
    return {e >> 10 for e in entries}


def _top(entries: Entries) -> int:
    """The highest frame a run of entries touches."""
    return (int(entries.max()) if isinstance(entries, np.ndarray) else max(entries)) >> 10


_KIND_OF = np.array([3, 0, 1, 2, 3, 0, 1, 1], dtype=np.intp)
_KIND_CODE = _KIND_OF.tolist()
_LOW_INT = ~PAGE_MASK & 0xFFFFFFFF
#: Above this many entries differing in a table, numpy over all 1024 is quicker.
_FEW = 48


@dataclass
class Finding:
    """Pages of one kind found wrong at one check, and the lowest one as an example."""

    kind: str
    pages: int
    vpn: int
    expected: int
    actual: int


@dataclass
class CheckResult:
    """What one coherence check found."""

    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No page wrong."""
        return not self.findings

    def key(self) -> tuple[tuple[str, int, int, int, int], ...]:
        """Comparable form (for incremental-vs-full tests)."""
        return tuple((f.kind, f.pages, f.vpn, f.expected, f.actual) for f in self.findings)


@dataclass
class _Directory:
    """What the incremental check keeps of one directory between its checks."""

    seen: int = 0
    """The clock at its last check."""
    refs: dict[int, list[int]] = field(default_factory=dict)
    refs_ver: int = -1
    """Table frame -> indices naming it on either side, as of the directory's version."""
    refs_of: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(1024, np.uint32), np.zeros(1024, np.uint32))
    )
    """Both sides' copies of the directory that ``refs`` was worked out from (only the
    entries that changed since are taken again)."""
    verdicts: dict[int, tuple[tuple, tuple[tuple[str, int, int, int, int], ...]]] = field(
        default_factory=dict
    )
    """directory index -> (key, verdict)."""
    deps: dict[int, set[int]] = field(default_factory=dict)
    """frame -> directory indices whose verdict may depend on it (a superset)."""
    groups: set[int] | None = None
    """The indices the last check compared."""
    found: dict[int, tuple[tuple[str, int, int, int, int], ...]] = field(default_factory=dict)
    """index -> its findings, at the last check (only indices with some)."""
    result: CheckResult = field(default_factory=lambda: CheckResult())


class ViewPair:
    """Guest intent and one backend's copy of the tables, with the entries where they differ."""

    def __init__(self, guest: GuestMMU, demand_fill: bool = False, shared: bool = False) -> None:
        self.guest = guest
        self.shared = shared
        """The backend's view *is* the guest's memory (hardware walks the guest's tables, or
        traps every write to them): nothing to learn, nothing can differ."""
        self.view = guest.frames if shared else Frames(guest.frames.nframes)
        self.view_cr3: int | None = None
        self.demand_fill = demand_fill
        self.diff: dict[int, set[int]] = {}
        """frame -> indices where guest and view differ."""
        self.ver: dict[int, int] = {}
        """frame -> the clock at its last change (either side, or its unflushed entries)."""
        self.clock = 0
        """Ticks at every change (a run of stores takes one tick): a frame changed after a
        check iff its ``ver`` is above the clock the check saw."""
        self.pver: dict[int, int] = {}
        """frame -> change count of its contents (either side)."""
        self.registered: set[int] | None = None
        """Frames the backend keeps a copy of (None: every frame).  A backend fed by
        notifications shadows or validates only the frames it was told are page tables;
        an update to any other frame has nowhere to go and is lost."""
        self._dirs: dict[int, _Directory] = {}
        """directory frame -> what the incremental check keeps of it."""
        self._tables: dict[int, tuple[int, list[int]]] = {}
        """directory frame -> (its version, the tables the guest's copy names)."""
        self._diff_exact = True
        """No store has bypassed ``diff`` yet (:meth:`guest_write_queued`): every entry
        outside it is equal on both sides."""

    # ----------------------------------------------------------- keeping diff

    def bump(self, pfn: int) -> None:
        """Frame ``pfn`` changed on some side."""
        self.clock += 1
        self.ver[pfn] = self.clock

    def _touch(self, pfn: int, idx: int) -> None:
        # any content change may change a verdict (through the native-TLB leeway of an old
        # directory entry naming this table); references change only with a loaded directory
        self.clock += 1
        self.ver[pfn] = self.clock
        if pfn == self.guest.pd or (self.view_cr3 is not None and pfn == self.view_cr3 >> 12):
            self.pver[pfn] = self.pver.get(pfn, 0) + 1
        e = (pfn << 10) | idx
        g, v = self.guest.frames, self.view
        gv = g.mem[e] if pfn < g.nframes else 0
        vv = v.mem[e] if pfn < v.nframes else 0
        s = self.diff.get(pfn)
        if gv != vv:
            if s is None:
                self.diff[pfn] = {idx}
            else:
                s.add(idx)
        elif s is not None and idx in s:
            s.discard(idx)
            if not s:
                del self.diff[pfn]

    def _touch_page(self, pfn: int) -> None:
        self.bump(pfn)
        self.pver[pfn] = self.pver.get(pfn, 0) + 1
        self.guest.frames.grow(pfn)
        self.view.grow(pfn)
        d = np.nonzero(self.guest.frames.page(pfn) != self.view.page(pfn))[0]
        if len(d):
            self.diff[pfn] = set(d.tolist())
        else:
            self.diff.pop(pfn, None)

    # ------------------------------------------------------------ guest side

    def guest_write(self, pfn: int, idx: int, value: int) -> None:
        """The guest stores an entry (the backend may or may not learn of it)."""
        self.guest.write(pfn, idx, value)
        self._touch(pfn, idx)

    def _bump_many(self, entries: Entries) -> None:
        # one version bump per frame stands for several: versions are only compared
        ver, pver = self.ver, self.pver
        self.clock += 1
        now = self.clock
        gpd = self.guest.pd
        vpd = None if self.view_cr3 is None else self.view_cr3 >> 12
        for pfn in _frames(entries):
            ver[pfn] = now
            if pfn in (gpd, vpd):
                pver[pfn] = pver.get(pfn, 0) + 1

    def _retouch_many(self, entries: Entries) -> None:
        """``diff`` after entries changed on some side: they differ where the values do."""
        g, v, diff = self.guest.frames, self.view, self.diff
        top = _top(entries)
        if top >= v.nframes:
            v.grow(top)
        if len(entries) >= bulk.VEC_MIN:
            es = bulk.entries(entries)
            frames = bulk.frames_of(es)
            # by frame: one (the usual run, entries as they come: a repeated entry is the
            # same either way), or several (sorted)
            ue = es if len(frames) == 1 else np.unique(es)
            neq = g.np[ue] != v.np[ue]
            for pfn, ix in [(frames[0], ue & 1023)] if len(frames) == 1 else bulk.by_frame(ue):
                d = neq[: len(ix)]
                neq = neq[len(ix) :]
                s = diff.get(pfn)
                if d.any():
                    if s is None:
                        s = diff[pfn] = set()
                    s.update(ix[d].tolist())
                if s is not None and not d.all():
                    s.difference_update(ix[~d].tolist())
                    if not s:
                        del diff[pfn]
            return
        gm, vm = g.mem, v.mem
        for e in entries:
            pfn, idx = e >> 10, e & 1023
            s = diff.get(pfn)
            if gm[e] != vm[e]:
                if s is None:
                    diff[pfn] = {idx}
                else:
                    s.add(idx)
            elif s is not None and idx in s:
                s.discard(idx)
                if not s:
                    del diff[pfn]

    def guest_write_many(self, entries: Entries, values: Entries) -> None:
        """:meth:`guest_write` of each (flat entry, value) in turn."""
        if not len(entries):
            return
        if len(entries) >= bulk.VEC_MIN:
            self.guest.write_many(entries, values)
            self._bump_many(entries)
            self._retouch_many(entries)
            return
        # a short run (lists): what GuestMMU.write_many, _bump_many and _retouch_many do,
        # in one loop (an entry stored twice is judged last at its last value)
        self.clock += 1
        now, ver, diff = self.clock, self.ver, self.diff
        guest, v = self.guest, self.view
        g = guest.frames
        top = max(entries) >> 10
        if top >= g.nframes:
            g.grow(top)
        if top >= v.nframes:
            v.grow(top)
        gm, vm, note = g.mem, v.mem, guest._note
        gpd = guest.pd
        vpd = None if self.view_cr3 is None else self.view_cr3 >> 12
        dirs = False
        for e, val in zip(entries, values, strict=True):
            pfn, idx = e >> 10, e & 1023
            old = gm[e]
            if old != val:
                gm[e] = val
                if old & PRESENT:
                    note(pfn, idx, old)  # a native TLB may still hold it
            ver[pfn] = now
            if pfn in (gpd, vpd):
                dirs = True
            s = diff.get(pfn)
            if val != vm[e]:
                if s is None:
                    diff[pfn] = {idx}
                else:
                    s.add(idx)
            elif s is not None and idx in s:
                s.discard(idx)
                if not s:
                    del diff[pfn]
        if dirs:  # a directory's contents counted once a run, as _bump_many does
            pver = self.pver
            for pfn in {e >> 10 for e in entries}:
                if pfn in (gpd, vpd):
                    pver[pfn] = pver.get(pfn, 0) + 1

    def guest_write_queued_many(self, entries: Entries, values: Entries) -> None:
        """:meth:`guest_write_queued` of each (flat entry, value) in turn."""
        if not len(entries):
            return
        self._diff_exact = False
        self.guest.write_many(entries, values)
        ver = self.ver
        self.clock += 1
        now = self.clock
        for pfn in _frames(entries):
            ver[pfn] = now

    def write_both_many(self, entries: Entries, values: Entries) -> None:
        """:meth:`write_both` of each (flat entry, value) in turn."""
        if not len(entries):
            return
        self.guest.write_many(entries, values)
        self._bump_many(entries)
        reg, diff = self.registered, self.diff
        v = self.view
        top = _top(entries)
        if top >= v.nframes:
            v.grow(top)
        if len(entries) >= bulk.VEC_MIN:
            self._write_both_array(bulk.entries(entries), bulk.entries(values))
            return
        vm = v.mem
        lost = []
        for e, val in zip(entries, values, strict=True):
            pfn = e >> 10
            if reg is not None and pfn not in reg:
                lost.append(e)  # nowhere to apply it
                continue
            vm[e] = val
            s = diff.get(pfn)
            if s is not None:
                idx = e & 1023
                if idx in s:
                    s.discard(idx)
                    if not s:
                        del diff[pfn]
        if lost:
            self._retouch_many(lost)

    def _write_both_array(self, es: np.ndarray, vs: np.ndarray) -> None:
        """The backend's half of :meth:`write_both_many` for a long run, with numpy."""
        diff = self.diff
        es, vs, lost = self._registered(es, vs)
        if len(es):
            ue, uv = bulk.final(es, vs)
            self.view.np[ue] = uv
            for pfn, ix in bulk.by_frame(ue):
                s = diff.get(pfn)
                if s is not None:
                    s.difference_update(ix.tolist())
                    if not s:
                        del diff[pfn]
        if len(lost):
            self._retouch_many(lost)

    def _registered(
        self, es: np.ndarray, vs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stores to frames the backend keeps (entries, values), and the entries of the
        others: updates with nowhere to go."""
        reg = self.registered
        if reg is None:
            return es, vs, es[:0]
        frames = bulk.frames_of(es)
        gone = [p for p in frames if p not in reg]
        if not gone:
            return es, vs, es[:0]
        if len(gone) == len(frames):
            return es[:0], vs[:0], es
        out = bulk.in_frames(es, gone)
        return es[~out], vs[~out], es[out]

    def learn_write_many(self, entries: Entries, values: Entries) -> None:
        """:meth:`learn_write` of each (flat entry, value) in turn."""
        if len(entries) >= bulk.VEC_MIN:
            self._learn_array(bulk.entries(entries), bulk.entries(values))
            return
        reg = self.registered
        if reg is not None:
            kept = [(e, v) for e, v in zip(entries, values, strict=True) if e >> 10 in reg]
            entries, values = [e for e, _ in kept], [v for _, v in kept]
        if not entries:
            return
        v = self.view
        top = _top(entries)
        if top >= v.nframes:
            v.grow(top)
        vm = v.mem
        for e, val in zip(entries, values, strict=True):
            vm[e] = val
        self._bump_many(entries)
        self._retouch_many(entries)

    def _learn_array(self, es: np.ndarray, vs: np.ndarray) -> None:
        """:meth:`learn_write_many` of a long run, with numpy."""
        es, vs, _ = self._registered(es, vs)
        if not len(es):
            return
        self.view.grow(int(es.max()) >> 10)
        ue, uv = bulk.final(es, vs)
        self.view.np[ue] = uv
        self._bump_many(es)
        self._retouch_many(es)

    def guest_fill(self, pfn: int, lo: int, hi: int, values: np.ndarray | None = None) -> bool:
        """The guest zeroes or copies a range of a frame by itself (memset/memcpy); False
        where that surely changed nothing (:meth:`GuestMMU.fill`)."""
        changed = self.guest.fill(pfn, lo, hi, values)
        if changed or not self._diff_exact:
            self._touch_page(pfn)
        else:
            # zeroing zeros (three in four of fork's 287,000 fills) changes neither side
            # nor, ``diff`` being exact, what differs
            self.view.grow(pfn)
        return changed

    def guest_flushed(self, frames: list[int]) -> None:
        """The guest's unflushed entries changed on these frames (after a flush)."""
        for pfn in frames:
            self.bump(pfn)

    # ---------------------------------------------------------- backend side

    def register(self, pfn: int) -> None:
        """The backend now keeps a copy of frame ``pfn`` (it is a page table to it)."""
        if self.registered is not None:
            self.registered.add(pfn)

    def learn_write(self, pfn: int, idx: int, value: int) -> None:
        """The backend applies an entry write it was told of (or trapped)."""
        if self.registered is not None and pfn not in self.registered:
            return
        v = self.view
        if pfn >= v.nframes:
            v.grow(pfn)
        v.mem[(pfn << 10) | idx] = value
        self._touch(pfn, idx)

    def learn_fill(self, pfn: int, lo: int, hi: int, values: np.ndarray | None = None) -> None:
        """The backend zeroes, or copies into, a range of its copy of a frame."""
        self.register(pfn)
        page = self.view.page(pfn)
        page[lo:hi] = 0 if values is None else values
        self._touch_page(pfn)

    def learn_clone(self, pfn: int, src: int, start: int, count: int) -> None:
        """``alloc_pd_clone`` as a backend sees it: a directory whose entries [start,
        start+count) copy ``src`` -- from the backend's *own* copy of ``src`` -- and
        whose other entries are clear."""
        self.register(pfn)
        lo, hi = start, min(start + count, 1024)
        vals = self.view.page(src)[lo:hi].copy()
        page = self.view.page(pfn)
        page[:] = 0
        page[lo:hi] = vals
        self._touch_page(pfn)

    def forget(self, pfn: int) -> None:
        """The backend stops keeping frame ``pfn`` (released): later updates to it are lost.

        Its last copy stays, as a shadow or validated table would until reused; a backend
        without registration (``registered`` None) keeps every frame anyway.
        """
        if self.registered is not None:
            self.registered.discard(pfn)

    def write_both(self, pfn: int, idx: int, value: int) -> None:
        """The guest stores an entry and the backend learns it at once."""
        self.guest.write(pfn, idx, value)
        if self.registered is not None and pfn not in self.registered:
            self._touch(pfn, idx)
            return
        v = self.view
        if pfn >= v.nframes:
            v.grow(pfn)
        v.mem[(pfn << 10) | idx] = value
        self.clock += 1
        self.ver[pfn] = self.clock
        if pfn == self.guest.pd or (self.view_cr3 is not None and pfn == self.view_cr3 >> 12):
            self.pver[pfn] = self.pver.get(pfn, 0) + 1
        s = self.diff.get(pfn)
        if s is not None and idx in s:
            s.discard(idx)
            if not s:
                del self.diff[pfn]

    def set_cr3(self, cr3: int | None) -> None:
        """The backend switches to a directory."""
        self.view_cr3 = cr3

    def guest_write_queued(self, pfn: int, idx: int, value: int) -> None:
        """The guest stores an entry whose update the backend has queued, to be applied with
        :meth:`adopt` at the flush.  ``diff`` is not updated meanwhile: checks wait for the
        flush, and the backend learns every update in order, so at the flush the entry
        takes the guest's value."""
        self._diff_exact = False
        self.guest.write(pfn, idx, value)
        self.clock += 1
        self.ver[pfn] = self.clock

    def adopt(self, entries: list[int]) -> None:
        """At a flush: the backend takes the guest's values of these entries (flat indices)."""
        g, v, reg, diff = self.guest.frames.mem, self.view, self.registered, self.diff
        gpd = self.guest.pd
        vpd = None if self.view_cr3 is None else self.view_cr3 >> 12
        ver, pver = self.ver, self.pver
        self.clock += 1
        now = self.clock
        for e in entries:
            pfn = e >> 10
            if reg is not None and pfn not in reg:
                self._touch(pfn, e & 1023)  # nowhere to apply it: the update is lost
                continue
            if pfn >= v.nframes:
                v.grow(pfn)
            v.mem[e] = g[e]
            ver[pfn] = now
            if pfn in (gpd, vpd):
                pver[pfn] = pver.get(pfn, 0) + 1
            s = diff.get(pfn)
            if s is not None and (e & 1023) in s:
                s.discard(e & 1023)
                if not s:
                    del diff[pfn]

    def resync_entry(self, pfn: int, idx: int) -> None:
        """The backend re-reads one entry from guest memory."""
        if pfn in self.diff and idx in self.diff[pfn]:
            self.learn_write(pfn, idx, self.guest.frames.get(pfn, idx))

    def resync_page(self, pfn: int) -> None:
        """The backend re-reads (discovers, validates) a whole frame from guest memory."""
        if pfn not in self.diff or (self.registered is not None and pfn not in self.registered):
            return
        if self._diff_exact and len(self.diff[pfn]) <= 16:
            # only the entries in diff differ: copying them is copying the page
            self.view.grow(pfn)
            vm, gm, base = self.view.mem, self.guest.frames.mem, pfn << 10
            for idx in self.diff[pfn]:
                vm[base | idx] = gm[base | idx]
        else:
            self.view.page(pfn)[:] = self.guest.frames.page(pfn)
        self.bump(pfn)
        self.pver[pfn] = self.pver.get(pfn, 0) + 1
        del self.diff[pfn]

    def resync_addr(self, addr: int) -> None:
        """The entries on the walk to ``addr`` in the loaded space are re-read."""
        pd = self.guest.pd
        if pd is None:
            return
        i, j = addr >> 22, (addr >> 12) & 1023
        old = self.view.get(pd, i)
        self.resync_entry(pd, i)
        pde = self.guest.frames.get(pd, i)
        for p in {pde, old}:
            if p & PRESENT and not p & PSE:
                self.resync_entry(p >> 12, j)

    def resync_space(self) -> None:
        """Every entry of the loaded address space is re-read (directory and its tables)."""
        pd = self.guest.pd
        if pd is None:
            return
        self.resync_page(pd)
        diff = self.diff
        # only the tables that differ are re-read (mixed's lguest: 3.4 M tables named at
        # 151,000 reloads, nearly all equal on both sides)
        for t in [t for t in self.guest_tables(pd) if t in diff]:
            self.resync_page(t)

    def resync_all(self) -> None:
        """Every frame the backend holds is re-read (all shadows dropped)."""
        for pfn in sorted(self.diff):
            self.resync_page(pfn)

    def guest_tables(self, pd: int) -> list[int]:
        """Frames of the page tables the guest's directory ``pd`` names (kept per
        directory until it changes; a shared view's guest memory is written past the
        versions)."""
        v = -1 if self.shared else self.ver.get(pd, 0)
        seen = self._tables.get(pd)
        if seen is not None and seen[0] == v >= 0:
            return seen[1]
        pdes = self.guest.frames.page(pd)
        # present and not a 4 MiB page, in one mask
        out = sorted(set((pdes[(pdes & _TABLE_BITS) == PRESENT] >> 12).tolist()))
        self._tables[pd] = (v, out)
        return out

    # ------------------------------------------------------------ the check

    def _references(self, pd: int, d: _Directory) -> dict[int, list[int]]:
        """Table frame -> directory indices naming it, in either side's copy of ``pd``
        (worked out again only for the entries that changed since)."""
        v = self.ver.get(pd, 0)
        if d.refs_ver == v:
            return d.refs
        g, b = self.guest.frames.page(pd), self.view.page(pd)
        og, ob = d.refs_of
        at = np.flatnonzero((g != og) | (b != ob))
        if len(at):
            refs = d.refs
            ng, nb = g[at], b[at]
            olds = zip(og[at].tolist(), ob[at].tolist(), strict=True)
            news = zip(ng.tolist(), nb.tolist(), strict=True)
            for i, old, new in zip(at.tolist(), olds, news, strict=True):
                was = {p >> 12 for p in old if p & PRESENT and not p & PSE}
                now = {p >> 12 for p in new if p & PRESENT and not p & PSE}
                for t in was - now:
                    lst = refs[t]
                    lst.remove(i)
                    if not lst:
                        del refs[t]
                for t in now - was:
                    refs.setdefault(t, []).append(i)
            og[at], ob[at] = ng, nb
        d.refs_ver = v
        return d.refs

    def _groups(self, pd: int, refs: dict[int, list[int]]) -> set[int]:
        """The directory entries a page could be wrong under: those that differ, and
        those naming a table with entries that differ."""
        diff = self.diff
        groups = set(diff.get(pd, ()))
        if len(refs) < len(diff):
            for t, idxs in refs.items():
                if t in diff:
                    groups.update(idxs)
        else:
            for t in diff:
                found = refs.get(t)
                if found:
                    groups.update(found)
        return groups

    def check(self) -> CheckResult:
        """Compare the loaded space over what differs (incremental, cached verdicts)."""
        pd = self.guest.pd
        if pd is None:
            return CheckResult()
        if self.view_cr3 is None or self.view_cr3 >> 12 != pd:
            return self.check_full()
        if not self.diff:
            return CheckResult()
        d = self._dirs.get(pd)
        if d is None:
            d = self._dirs[pd] = _Directory()
        ver = self.ver
        since, d.seen = d.seen, self.clock
        refs = self._references(pd, d)
        if d.groups is None or ver.get(pd, 0) > since:
            # the directory changed (or was never compared): every entry, by its key
            groups = self._groups(pd, refs)
            todo: set[int] = groups
            d.found = {}
        else:
            # the directory's entries did not change: only those naming (now or at their
            # last verdict) a table that changed since can get another verdict.  The
            # entries a page could be wrong under change only with a table named that
            # changed, so they are worked out again from what differs (mostly a frame or
            # two) rather than by asking each table named whether it changed.
            vget = ver.get
            stale = [f for f in d.deps if vget(f, 0) > since]
            groups = self._groups(pd, refs)
            todo = set()
            for f in stale:
                todo |= d.deps[f]
            todo &= groups
            todo |= groups - d.groups
            gone = d.groups - groups
            if not todo and not gone:
                # no verdict to redo, none to drop: the findings stand (most of
                # pagefault's checks)
                d.groups = groups
                return d.result
            for i in gone:
                d.found.pop(i, None)
        self._merge(pd, todo, d)
        d.groups = groups
        d.result = _combine(list(d.found.values()))
        return d.result

    def check_full(self) -> CheckResult:
        """Compare every page of the loaded space from scratch (what :meth:`check` equals)."""
        pd = self.guest.pd
        if pd is None:
            return CheckResult()
        return self._merge_two(pd, pd if self.view_cr3 is None else self.view_cr3 >> 12)

    def _merge(self, pd: int, todo: set[int], d: _Directory) -> None:
        """Verdicts of directory entries ``todo`` of ``pd`` into ``d.found``.

        A verdict is a function of its key: both entries, the unflushed values of the
        guest's, and the versions of the tables they name; a key seen before reuses its
        verdict.
        """
        gf, vf, guest, ver = self.guest.frames, self.view, self.guest, self.ver
        found, verdicts, dep_index = d.found, d.verdicts, d.deps
        # the directory's entries on both sides (Frames.get inlined; nothing here grows a
        # store) and its unflushed ones (GuestMMU.old_values)
        gmem, vmem, base = gf.mem, vf.mem, pd << 10
        g_in, v_in = pd < gf.nframes, pd < vf.nframes
        unflushed = guest.unflushed.get(pd)
        demand = self.demand_fill
        for i in todo:
            gpde = gmem[base | i] if g_in else 0
            vpde = vmem[base | i] if v_in else 0
            if not (gpde | vpde) & PRESENT or demand and not vpde & PRESENT:
                # nothing mapped, or a demand-filled view's entry to fill on first use:
                # nothing can be wrong (:meth:`_compare`), whatever the tables hold
                found.pop(i, None)
                continue
            olds = unflushed.get(i, ()) if unflushed is not None else ()
            key = (
                gpde,
                vpde,
                olds,
                ver.get(gpde >> 12, 0),
                ver.get(vpde >> 12, 0),
                tuple([ver.get(o >> 12, 0) for o in olds]) if olds else (),
            )
            seen = verdicts.get(i)
            if seen is not None and seen[0] == key:
                r = seen[1]
            else:
                r = self._compare(i, gpde, vpde, olds)
                verdicts[i] = (key, r)
                for f in (gpde >> 12, vpde >> 12, *(o >> 12 for o in olds)):
                    dep_index.setdefault(f, set()).add(i)
            if r:
                found[i] = r
            else:
                found.pop(i, None)

    def _merge_two(self, pd: int, vpd: int) -> CheckResult:
        gf, vf = self.guest.frames, self.view
        results = []
        for i in range(1024):
            gpde, vpde = gf.get(pd, i), vf.get(vpd, i)
            if (gpde | vpde) & PRESENT:
                r = self._compare(i, gpde, vpde, self.guest.old_values(pd, i))
                if r:
                    results.append(r)
        return _combine(results)

    def _table(self, frames: Frames, pde: int) -> np.ndarray | None:
        if pde & PSE or not pde & PRESENT or pde >> 12 >= frames.nframes:
            return None
        return frames.page(pde >> 12)

    def _compare(
        self, i: int, gpde: int, vpde: int, olds: tuple[int, ...]
    ) -> tuple[tuple[str, int, int, int, int], ...]:
        """Per kind: (kind, pages, lowest vpn, expected, actual) under directory entry i."""
        if self.demand_fill and not vpde & PRESENT:
            # the view fills the whole entry from the guest's on first use: it can show
            # nothing other than what the guest maps (fork's lguest told of no store:
            # 187,000 of 191,000 full comparisons)
            return _EMPTY
        if gpde & PRESENT and not gpde & PSE:
            if gpde == vpde:
                few = self._compare_few(i, gpde, olds)
                if few is not None:
                    return few
            elif not vpde & PRESENT and not self.demand_fill:
                unmapped = self._compare_unmapped(i, gpde, olds)
                if unmapped is not None:
                    return unmapped
        g = translations(gpde, self._table(self.guest.frames, gpde))
        b = translations(vpde, self._table(self.view, vpde))
        if self.demand_fill:
            b = np.where(b & 1, b, g)
        if self.guest.unflushed:
            bad = b != g
            if not bad.any():
                return _EMPTY
            # a native TLB may still hold what the entries on the walk held since flushed
            for pde in (gpde, *olds):
                if not pde & PRESENT:
                    continue
                alts: list[np.ndarray | None]
                if pde & PSE:
                    alts = [None]
                else:
                    alts = list(self.guest.stale_tables(pde >> 12))
                    if pde != gpde:
                        alts.append(self._table(self.guest.frames, pde))
                for t in alts:
                    bad &= b != translations(pde, t)
            at = np.flatnonzero(bad)
        else:
            at = np.flatnonzero(b != g)
        if not len(at):
            return _EMPTY
        # classify only the pages found wrong (in page order): a code per page from
        # present on the guest's side (1), on the backend's (2), frames differ (4)
        gb, bb = g[at], b[at]
        code = (gb & _ONE) | ((bb & _ONE) << _ONE)
        code[(gb ^ bb) > _LOW] |= _FOUR
        kind_of = _KIND_OF[code]
        counts = np.bincount(kind_of, minlength=4).tolist()
        if counts.count(0) == 3:
            # one kind only (the usual case): its first page is the first wrong one
            k = counts.index(len(at))
            if k < 3:
                j = int(at[0])
                return ((KINDS[k], counts[k], (i << 10) | j, int(g[j]), int(b[j])),)
        out = []
        for k, kind in enumerate(KINDS):
            c = counts[k]
            if c:
                j = int(at[int(np.argmax(kind_of == k))])
                out.append((kind, c, (i << 10) | j, int(g[j]), int(b[j])))
        return tuple(out)

    def _leeway(self, t: int, olds: tuple[int, ...]) -> bool:
        """Whether a native TLB may hold something older under a directory entry naming
        table ``t`` (older values of the entry, ``olds``, or of the table's entries)."""
        return bool(self.guest.unflushed) and bool(olds or self.guest.unflushed.get(t))

    def _compare_unmapped(
        self, i: int, pde: int, olds: tuple[int, ...]
    ) -> tuple[tuple[str, int, int, int, int], ...] | None:
        """:meth:`_compare` where the guest's entry ``i`` is ``pde`` (a present table), the
        backend's maps nothing and a native TLB holds nothing older under it: every page
        the table maps is missing.  None where that does not apply."""
        t = pde >> 12
        gf = self.guest.frames
        if t >= gf.nframes or self._leeway(t, olds):
            return None
        page = gf.page(t)
        at = np.flatnonzero(page & _ONE)
        if not len(at):
            return _EMPTY
        j = int(at[0])
        first = int(page[j]) & (PAGE_MASK | (pde & MEANING))
        return (("missing", len(at), (i << 10) | j, first, 0),)

    def _compare_few(
        self, i: int, pde: int, olds: tuple[int, ...]
    ) -> tuple[tuple[str, int, int, int, int], ...] | None:
        """:meth:`_compare` where both sides' entry ``i`` is ``pde`` (a present table) and
        a native TLB holds nothing older under it: a page can differ only where the two
        copies of the table differ (``diff``), so only those entries are compared, one by
        one.  None where that does not apply (the caller compares all 1024)."""
        t = pde >> 12
        gf, vf = self.guest.frames, self.view
        if t >= gf.nframes or t >= vf.nframes:
            return None
        idxs = self.diff.get(t)
        if not idxs:
            return _EMPTY
        if len(idxs) > _FEW or self._leeway(t, olds):
            return None
        gm, vm, base = gf.mem, vf.mem, t << 10
        mask = PAGE_MASK | (pde & MEANING)
        demand = self.demand_fill
        counts = [0, 0, 0, 0]
        first: list[tuple[int, int, int] | None] = [None, None, None, None]
        for j in sorted(idxs):
            g = gm[base | j] & mask
            if not g & 1:
                g = 0
            b = vm[base | j] & mask
            if not b & 1:
                b = g if demand else 0
            if g == b:
                continue
            k = _KIND_CODE[(g & 1) | ((b & 1) << 1) | (4 if (g ^ b) > _LOW_INT else 0)]
            counts[k] += 1
            if first[k] is None:
                first[k] = (j, g, b)
        out = []
        for k, kind in enumerate(KINDS):
            f = first[k]
            if f is not None:
                out.append((kind, counts[k], (i << 10) | f[0], f[1], f[2]))
        return tuple(out)


def _combine(results: list[tuple[tuple[str, int, int, int, int], ...]]) -> CheckResult:
    counts: dict[str, int] = {}
    first: dict[str, tuple[str, int, int, int, int]] = {}
    for r in results:
        for t in r:
            kind = t[0]
            f = first.get(kind)
            if f is None:
                first[kind] = t
                counts[kind] = t[1]
            else:
                counts[kind] += t[1]
                if t[2] < f[2]:
                    first[kind] = t
    res = CheckResult()
    for k in KINDS:
        if k in counts:
            t = first[k]
            res.findings.append(Finding(k, counts[k], t[2], t[3], t[4]))
    return res
