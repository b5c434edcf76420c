"""Write-protected shadow tables: which guest page-table frames a VMM traces.

A VMM without page-table notifications (a hardware VMM with shadow paging,
binary translation, or a paravirtual one running ``--without pteupdate
--fallback trap``) write-protects every guest frame it shadows, so each guest
store to one faults and is emulated.  Frames become traced when the VMM
discovers them (at a CR3 load, or when it first walks them).

KVM's write-flood heuristic (commit 86a5ba02, 2007-01-05, "KVM: MMU: Page
table write flood protection"): the third consecutive emulated write to the
same guest page-table frame zaps its shadow, so later writes proceed natively;
the frame is shadowed (traced) again when next discovered.
"""

from __future__ import annotations

from collections.abc import Iterable


class WriteTracer:
    """Traced frames and the flood counter; ``flood_threshold`` None disables the heuristic."""

    def __init__(self, flood_threshold: int | None = None) -> None:
        self.flood_threshold = flood_threshold
        self.traced: set[int] = set()
        self._last: int | None = None
        self._run = 0
        self.zapped = 0
        """Shadows zapped by the flood heuristic."""

    def discover(self, frames: Iterable[int]) -> int:
        """Trace these frames; return how many were not traced before."""
        new = 0
        for f in frames:
            if f not in self.traced:
                self.traced.add(f)
                new += 1
        return new

    def untrace(self, pfn: int) -> None:
        """Stop tracing a frame."""
        self.traced.discard(pfn)
        if self._last == pfn:
            self._last, self._run = None, 0

    def write(self, pfn: int, count: int = 1) -> int:
        """The guest stores ``count`` entries into ``pfn``; return how many faulted."""
        if pfn not in self.traced:
            return 0
        if self.flood_threshold is None:
            self._last, self._run = pfn, 0
            return count
        run = self._run + 1 if self._last == pfn else 1
        room = self.flood_threshold - run + 1  # faulting writes left, this one included
        faults = min(count, room)
        if run + count - 1 >= self.flood_threshold:
            self.traced.discard(pfn)
            self.zapped += 1
            self._last, self._run = None, 0
        else:
            self._last, self._run = pfn, run + count - 1
        return faults

    def writes(self, pfns: list[int]) -> list[int]:
        """The guest stores one entry into each of ``pfns`` in turn (what :meth:`write` does
        for each, in one call); return the positions of the stores that faulted."""
        traced = self.traced
        out: list[int] = []
        if not traced:
            return out
        thr = self.flood_threshold
        last, run = self._last, self._run
        for i, p in enumerate(pfns):
            if p not in traced:
                continue
            out.append(i)
            if thr is None:
                last, run = p, 0
                continue
            run = run + 1 if last == p else 1
            if run >= thr:
                traced.discard(p)
                self.zapped += 1
                last, run = None, 0
            else:
                last = p
        self._last, self._run = last, run
        return out
