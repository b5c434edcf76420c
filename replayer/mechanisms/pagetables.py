"""Page tables rebuilt from the hook stream: physical frames, walks, and the guest's intent.

Non-PAE two-level paging with 4 KiB pages (and 4 MiB PSE directory entries).
A *translation* is packed in one uint32 as ``frame | meaning``: the masked PTE
``pvscope.digest`` digests (frame bits plus present/writable/user, a level
only as permissive as both allow), and 0 when nothing is mapped.

Frames live in one flat array (entry ``pfn * 1024 + idx``), grown on demand,
so the replay's inner loop indexes it directly.

:class:`GuestMMU` is the guest's intent: the tables as the guest wrote them
through ``set_pte``/``set_pmd``/..., zeroed at ``alloc_pt``, copied at
``alloc_pd_clone``.  It also keeps the *native TLB* view of the reference
machine: every present value an entry has held since a flush last covered it
may still be cached by a native CPU, so a backend that still shows one of
them is not wrong yet.  (A native TLB never caches a not-present entry, so
mappings the guest adds must be visible at once.)
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np

from replayer.mechanisms import bulk

PAGE_OFFSET = 0xC0000000
PAGE_MASK = 0xFFFFF000
PRESENT = 0x1
MEANING = 0x7
PSE = 0x80
GLOBAL = 0x100
CR0_PG = 0x80000000
CR4_PGE = 0x80

#: Frames of a 32-bit physical address space.
MAX_FRAMES = 1 << 20
_J = np.arange(1024, dtype=np.uint32)
#: A clear frame's bytes (comparing bytes is five times quicker than numpy's ``any`` here).
_ZEROS = bytes(4096)
_ONE = np.uint32(1)


class Frames:
    """Physical memory as far as page tables go: ``mem[pfn * 1024 + idx]``, zero if unwritten.

    ``version[pfn]`` counts changes to a frame (callers bump it), for caches.
    """

    def __init__(self, nframes: int = 1 << 14) -> None:
        self.nframes = 0
        self.np = np.zeros(0, dtype=np.uint32)
        self.mem = memoryview(self.np)  # type: ignore[arg-type]
        """The same store, indexed one entry at a time (faster than numpy for that)."""
        self.version: dict[int, int] = {}
        self.grow(max(nframes, 1) - 1)

    def grow(self, pfn: int) -> None:
        """Make sure frame ``pfn`` exists (doubling the store as needed)."""
        if pfn < self.nframes:
            return
        n = max(pfn + 1, 2 * self.nframes, 1024)
        if n > MAX_FRAMES:
            raise IndexError(f"frame {pfn:#x} is beyond a 32-bit physical address space")
        # np.zeros leaves untouched frames to the OS's zero pages: a large store is cheap
        new = np.zeros(1024 * n, dtype=np.uint32)
        new[: len(self.np)] = self.np
        self.np = new
        self.mem = memoryview(new)  # type: ignore[arg-type]
        self.nframes = n

    def get(self, pfn: int, idx: int) -> int:
        """One entry."""
        return self.mem[(pfn << 10) | idx] if pfn < self.nframes else 0

    def page(self, pfn: int) -> np.ndarray:
        """The frame as a writable uint32 view (grows the store if needed)."""
        self.grow(pfn)
        return self.np[pfn << 10 : (pfn + 1) << 10]

    def bump(self, pfn: int) -> None:
        """Note that frame ``pfn`` changed."""
        self.version[pfn] = self.version.get(pfn, 0) + 1


def cloned(frames: Frames, src: int, start: int, count: int) -> np.ndarray:
    """The 1024 entries ``alloc_pd_clone`` leaves in a frame: ``count`` entries from
    ``start`` copied from frame ``src``, zeros elsewhere (taken before the frame is
    written: it may be its own source).  Written as one fill, an entry zeroed and given
    its value back is not an entry that changed: a native TLB holds nothing older there."""
    lo, hi = min(start, 1024), min(start + count, 1024)
    out = np.zeros(1024, dtype=np.uint32)
    out[lo:hi] = frames.page(src)[lo:hi]
    return out


def translations(pde: int, table: np.ndarray | None) -> np.ndarray:
    """The 1024 translations under one directory entry (0 where nothing is mapped)."""
    if not pde & PRESENT:
        return np.zeros(1024, dtype=np.uint32)
    if pde & PSE:
        base = np.uint32(pde & 0xFFC00000)
        return (base + (_J << np.uint32(12))) | np.uint32(pde & MEANING)
    if table is None:
        return np.zeros(1024, dtype=np.uint32)
    # (frame | the pde's meaning bits of the pte) where present: one mask, then the
    # present bit (kept by the mask, the pde being present) zeroes the others
    out = table & np.uint32(PAGE_MASK | (pde & MEANING))
    out *= out & _ONE
    return out


def walk(frames: Frames, pd: int) -> np.ndarray:
    """Every translation of the address space whose directory is frame ``pd``: (1 << 20,)."""
    pdes = frames.page(pd)
    out = np.zeros((1024, 1024), dtype=np.uint32)
    for i in np.nonzero(pdes & 1)[0].tolist():
        pde = int(pdes[i])
        t = None if pde & PSE or pde >> 12 >= frames.nframes else frames.page(pde >> 12)
        out[i] = translations(pde, t)
    return out.reshape(-1)


def present_mappings(frames: Frames, pd: int) -> np.ndarray:
    """(vpn, translation) pairs of the present translations, as ``pvscope.digest`` wants,
    in vpn order (the nonzero elements of :func:`walk`, without building all 2^20)."""
    pdes = frames.page(pd)
    vpns: list[np.ndarray] = []
    trans: list[np.ndarray] = []
    for i in np.nonzero(pdes & 1)[0].tolist():
        pde = int(pdes[i])
        if pde & PSE:
            vpns.append(np.uint32(i << 10) | _J)
            trans.append(translations(pde, None))
            continue
        if pde >> 12 >= frames.nframes:
            continue
        table = frames.page(pde >> 12)
        j = np.nonzero(table & 1)[0].astype(np.uint32)
        if not len(j):
            continue
        v = table[j]
        vpns.append(np.uint32(i << 10) | j)
        trans.append((v & np.uint32(PAGE_MASK)) | (v & np.uint32(pde & MEANING)))
    if not vpns:
        return np.zeros((0, 2), dtype=np.uint32)
    return np.stack([np.concatenate(vpns), np.concatenate(trans)], axis=1).astype(np.uint32)


class FrameOlds(MutableMapping[int, tuple[int, ...]]):
    """One frame's unflushed entries (index -> older present values) as an array.

    What a fill leaves -- up to 1024 entries with one older value each -- is one
    uint32 copy (``first``; 0 where none, an older value being present and so nonzero)
    instead of 1024 dictionary items; entries with more than one older value, and those
    a dictionary held before the fill (:meth:`note_before`), live in ``more``.  A
    mapping like the dictionaries ``GuestMMU.unflushed`` holds otherwise.
    """

    __slots__ = ("first", "more", "n")

    def __init__(self, first: np.ndarray) -> None:
        self.first = first
        self.more: dict[int, tuple[int, ...]] = {}
        self.n = int(np.count_nonzero(first))

    def __getitem__(self, idx: int) -> tuple[int, ...]:
        t = self.get(idx)
        if t is None:
            raise KeyError(idx)
        return t

    def get(self, idx: int, default: Any = None) -> Any:
        """The entry's older values (``default`` if it has none)."""
        t = self.more.get(idx)
        if t is not None:
            return t
        f = int(self.first[idx])
        return (f,) if f else default

    def __contains__(self, idx: object) -> bool:
        return idx in self.more or (isinstance(idx, int) and bool(self.first[idx]))

    def __setitem__(self, idx: int, olds: tuple[int, ...]) -> None:
        if self.first[idx]:
            self.first[idx] = 0
            self.n -= 1
        self.more[idx] = olds

    def __delitem__(self, idx: int) -> None:
        if idx in self.more:
            del self.more[idx]
        elif self.first[idx]:
            self.first[idx] = 0
            self.n -= 1
        else:
            raise KeyError(idx)

    def __iter__(self) -> Iterator[int]:
        yield from np.flatnonzero(self.first).tolist()
        yield from self.more

    def __len__(self) -> int:
        return self.n + len(self.more)

    def add_many(self, idxs: np.ndarray, olds: np.ndarray) -> None:
        """Note an older value for each entry (as one store at a time would)."""
        free = self.first[idxs] == 0
        if self.more:
            free &= ~np.isin(idxs, np.fromiter(self.more, dtype=np.int64))
        self.first[idxs[free]] = olds[free]
        self.n += int(np.count_nonzero(free))
        for idx, o in zip(idxs[~free].tolist(), olds[~free].tolist(), strict=True):
            t = self.get(idx)
            if t is None:
                self.more[idx] = (o,)
            elif o not in t:
                self[idx] = t + (o,)

    def note_before(self, olds: dict[int, tuple[int, ...]]) -> None:
        """Take ``olds`` (a dictionary's entries) as noted before this frame's own older
        values: an entry in both keeps them first and its own after, unless among them."""
        first = self.first
        for idx, t in olds.items():
            f = int(first[idx])
            if f:
                first[idx] = 0
                self.n -= 1
                if f not in t:
                    t = (*t, f)
            self.more[idx] = t

    def keep_global(self) -> None:
        """Drop the older values a user flush covers (all but global ones)."""
        drop = (self.first & GLOBAL) == 0
        self.n -= int(np.count_nonzero(self.first[drop]))
        self.first[drop] = 0
        for idx in list(self.more):
            keep = tuple(v for v in self.more[idx] if v & GLOBAL)
            if keep:
                self.more[idx] = keep
            else:
                del self.more[idx]

    def version(self, cur: np.ndarray, k: int) -> np.ndarray:
        """The table with each unflushed entry's k-th older value (its last, past it)."""
        t = cur.copy()
        m = self.first != 0
        t[m] = self.first[m]
        for idx, vals in self.more.items():
            t[idx] = vals[min(k, len(vals) - 1)]
        return t


#: One frame's unflushed entries: a dictionary, or what a fill leaves.
Olds = dict[int, tuple[int, ...]] | FrameOlds


class GuestMMU:
    """The guest's page tables as it meant them, CR3, paging state and unflushed entries."""

    def __init__(self, nframes: int = 1 << 14) -> None:
        self.frames = Frames(nframes)
        self._cr3: int | None = None
        self.pd: int | None = None
        """Frame number of the loaded directory."""
        self.paging = False
        """CR0.PG: entry pointers are linear-map addresses once set, physical before."""
        self.pge = False
        """CR4.PGE: global entries survive CR3 loads and user flushes."""
        self.unflushed: dict[int, Olds] = {}
        """frame -> index -> older present values a native TLB may still hold."""
        self._settled: set[int] = set()
        """Frames of ``unflushed`` that hold only global values (a user flush keeps them)."""
        self._global: set[int] = set()
        """Frames of ``unflushed`` that may hold a global value (a superset): a user flush
        drops the others whole, without looking at each entry."""

    @property
    def cr3(self) -> int | None:
        """Physical address last loaded with write_cr3 (None before the first)."""
        return self._cr3

    @cr3.setter
    def cr3(self, value: int | None) -> None:
        self._cr3 = value
        self.pd = None if value is None else value >> 12

    def locate(self, ptr: int) -> tuple[int, int]:
        """(frame, index) of the entry a hook's pointer argument names."""
        phys = (ptr - PAGE_OFFSET) & 0xFFFFFFFF if self.paging else ptr
        return phys >> 12, (phys & 0xFFF) >> 2

    def write(self, pfn: int, idx: int, value: int) -> int:
        """The guest stores ``value`` into an entry; return the old value."""
        f = self.frames
        if pfn >= f.nframes:
            f.grow(pfn)
        e = (pfn << 10) | idx
        old = f.mem[e]
        if old != value:
            f.mem[e] = value
            self._note(pfn, idx, old)
        return old

    def write_many(self, entries: list[int] | np.ndarray, values: list[int] | np.ndarray) -> None:
        """:meth:`write` of each (flat entry ``pfn * 1024 + idx``, value) in turn."""
        if len(entries) >= bulk.VEC_MIN:
            self._write_array(bulk.entries(entries), bulk.entries(values))
            return
        if not len(entries):
            return
        f = self.frames
        top = max(entries)
        if top >> 10 >= f.nframes:
            f.grow(top >> 10)
        mem = f.mem
        unflushed, settled, glob = self.unflushed, self._settled, self._global
        for e, v in zip(entries, values, strict=True):
            old = mem[e]
            if old != v:
                mem[e] = v
                if old & PRESENT:
                    # what _note does, inline
                    pfn, idx = e >> 10, e & 1023
                    settled.discard(pfn)
                    if old & GLOBAL:
                        glob.add(pfn)
                    u = unflushed.get(pfn)
                    if u is None:
                        unflushed[pfn] = {idx: (old,)}
                        continue
                    t = u.get(idx)
                    if t is None:
                        u[idx] = (old,)
                    elif old not in t:
                        u[idx] = t + (old,)

    def _write_array(self, es: np.ndarray, vs: np.ndarray) -> None:
        """:meth:`write_many` of a long run, with numpy (the same result)."""
        f = self.frames
        f.grow(int(es.max()) >> 10)
        se, sv, olds, last = bulk.in_sequence(f.np, es, vs)
        f.np[se[last]] = sv[last]
        ch = np.flatnonzero((olds != sv) & ((olds & PRESENT) != 0))
        for e, old in zip(se[ch].tolist(), olds[ch].tolist(), strict=True):
            self._note(e >> 10, e & 1023, old)

    def _note(self, pfn: int, idx: int, old: int) -> None:
        """A present value overwritten: a native TLB may still hold it."""
        if not old & PRESENT:
            return
        self._settled.discard(pfn)
        if old & GLOBAL:
            self._global.add(pfn)
        u = self.unflushed.get(pfn)
        if u is None:
            self.unflushed[pfn] = {idx: (old,)}
            return
        t = u.get(idx)
        if t is None:
            u[idx] = (old,)
        elif old not in t:
            u[idx] = t + (old,)

    def fill(self, pfn: int, lo: int, hi: int, values: np.ndarray | None) -> bool:
        """Overwrite entries [lo, hi) (with zeros if ``values`` is None); False where
        that surely changed nothing (zeroing zeros)."""
        view = self.frames.page(pfn)
        at = pfn << 10
        if self.frames.mem[at + lo : at + hi].tobytes() == _ZEROS[: 4 * (hi - lo)]:
            # nothing there, so no present value overwritten: zeroing zeros (a table is
            # mostly released empty), or a clone into a fresh frame (three in four)
            if values is None:
                return False
            view[lo:hi] = values
            return True
        old = view[lo:hi].copy()
        view[lo:hi] = 0 if values is None else values
        # the present values overwritten, 0 elsewhere: what _note does for each, at once
        old *= (old & _ONE) if values is None else (old & _ONE) * (old != values)
        if not old.any():
            return True
        self._settled.discard(pfn)
        if (old & GLOBAL).any():
            self._global.add(pfn)
        u = self.unflushed.get(pfn)
        if isinstance(u, FrameOlds):
            ch = np.flatnonzero(old)
            u.add_many(ch + lo, old[ch])
            return True
        first = old  # a table zeroed whole: most fills that change something
        if hi - lo < 1024:
            first = np.zeros(1024, dtype=np.uint32)
            first[lo:hi] = old
        fill = self.unflushed[pfn] = FrameOlds(first)
        if u:
            # the frame's few stored entries' older values come before the fill's (noted
            # one at a time, the fill's 16-31 present entries took 16 us a fill on mixed)
            fill.note_before(u)
        return True

    def flush_all(self, include_global: bool) -> list[int]:
        """A TLB flush of everything (``include_global``) or of non-global entries.

        Returns the frames whose unflushed entries changed.
        """
        touched = list(self.unflushed)
        if include_global or not self.pge:
            self.unflushed.clear()
            self._settled.clear()
            self._global.clear()
            return touched
        settled, glob = self._settled, self._global
        for pfn in touched:
            if pfn in settled:
                continue  # only global values: all kept
            if pfn not in glob:
                del self.unflushed[pfn]  # no global value: none kept
                continue
            u = self.unflushed[pfn]
            if isinstance(u, FrameOlds):
                u.keep_global()
                if not u:
                    del self.unflushed[pfn]
                else:
                    settled.add(pfn)
                continue
            for idx in list(u):
                keep = tuple(v for v in u[idx] if v & GLOBAL)
                if keep:
                    u[idx] = keep
                else:
                    del u[idx]
            if not u:
                del self.unflushed[pfn]
            else:
                settled.add(pfn)
        return touched

    def flush_addr(self, addr: int) -> list[int]:
        """invlpg: the entries on the path to ``addr`` in the loaded space are fresh again:
        the directory's entry, and the entry of each table it names now or named since
        last flushed.

        Returns the frames whose unflushed entries changed.
        """
        pd, unflushed = self.pd, self.unflushed
        if pd is None or not unflushed:
            return []
        i, j = addr >> 22, (addr >> 12) & 1023
        u = unflushed.get(pd)
        olds = () if u is None else u.get(i, ())
        touched = []
        if u is not None and olds:
            del u[i]
            touched.append(pd)
            if not u:
                del unflushed[pd]
        named: list[int] = []
        for v in (self.frames.get(pd, i), *olds):
            t = v >> 12
            if v & PRESENT and not v & PSE and t not in named:
                named.append(t)
                u = unflushed.get(t)
                if u is not None and j in u:
                    del u[j]
                    touched.append(t)
                    if not u:
                        del unflushed[t]
        return touched

    def old_values(self, pfn: int, idx: int) -> tuple[int, ...]:
        """Older present values a native TLB may still hold for an entry."""
        u = self.unflushed.get(pfn)
        if u is None:
            return ()
        return u.get(idx, ())

    def stale_tables(self, pfn: int) -> list[np.ndarray]:
        """Versions of a table a native TLB may still see (beyond the current one).

        The k-th version takes each unflushed entry's k-th older value.
        """
        u = self.unflushed.get(pfn)
        if not u:
            return []
        cur = self.frames.page(pfn)
        if isinstance(u, FrameOlds):
            depth = max((len(t) for t in u.more.values()), default=1)
            return [u.version(cur, k) for k in range(depth)]
        depth = max(len(t) for t in u.values())
        out = []
        for k in range(depth):
            t = cur.copy()
            for idx, vals in u.items():
                t[idx] = vals[min(k, len(vals) - 1)]
            out.append(t)
        return out
