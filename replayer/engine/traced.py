"""The traced pass: what page-table events cost a VMM that write-protects the tables.

Takes the replay state of a ``traced`` backend (hardware-assisted with shadow paging,
binary translation); gives cost rows for the stores that fault, the tables discovered
at CR3 loads and flushes and the allocations that zero a traced table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replayer.engine.common import _ALLOCS, FL_KERN, FL_USER, PTE_UPD, PTE_UPD_D, WCR3
from replayer.engine.derived import (
    _directory_frames,
    _fill_table,
    _frames_needed,
    _pte_entries,
    _wide,
)
from replayer.engine.state import ReplayState
from replayer.mechanisms.pagetables import PRESENT, PSE, Frames, GuestMMU
from replayer.mechanisms.tracer import WriteTracer
from replayer.trace import Trace, hooks_in


@dataclass
class _Stream:
    """The page-table events a traced pass walks (positions into ``sel``)."""

    sel: np.ndarray
    """Entry stores and barriers (allocations, CR3 loads, full flushes), in order."""
    pf: np.ndarray
    """Frame each store names (per position in ``sel``; taken as lists a run of stores
    at a time: lists of all of them held 0.9 GiB on boot's 10 M stores)."""
    b_k: list[int]
    b_h: list[int]
    """Each barrier's event and hook."""
    d_e: list[int]
    d_v: list[int]
    """Stores into frames later read as a directory: entry, value."""
    d_at: list[int]
    """Directory stores before each barrier: ``d_e[d_at[i - 1]:d_at[i]]`` precede it."""
    barriers: list[int]
    dirs: np.ndarray


def _traced_events(tr: Trace) -> _Stream:
    """The stores and barriers; of the stores' values, only those into tables later read
    as a directory (loaded, or cloned from) are kept: only they need contents."""
    ent, val = _pte_entries(tr)
    h = tr.hook
    other_hooks = hooks_in(h, [*_ALLOCS, WCR3, FL_USER, FL_KERN])
    sel = np.nonzero((ent >= 0) | other_hooks)[0]
    dirs = _directory_frames(tr)
    es = _wide(ent[sel])
    keep = (es >= 0) & np.isin(es >> 10, dirs)
    dpos = np.nonzero(keep)[0]
    b_arr = np.nonzero(other_hooks[sel])[0]
    return _Stream(
        sel=sel,
        pf=es >> 10,
        b_k=sel[b_arr].tolist(),
        b_h=h[sel[b_arr]].tolist(),
        d_e=es[dpos].tolist(),
        d_v=val[sel][dpos].tolist(),
        d_at=np.searchsorted(dpos, b_arr).tolist(),
        barriers=b_arr.tolist(),
        dirs=dirs,
    )


class TracedPass(ReplayState):
    """The traced backends' page-table pass."""

    def _traced_pass(self) -> None:
        """What page-table events cost a VMM that write-protects the tables it shadows.

        The guest's tables are the hardware's: each store lands at once.  Only the
        tracer's state (frames traced, the flood counter) runs event by event, over the
        page-table events alone: runs of entry stores between the events that discover
        tables (CR3 loads, full flushes) or zero them (allocations).
        """
        tr, m, cs = self.trace, self.model, self.cs
        # what the tracer does depends on the trace and its flood threshold alone (not on
        # the cost table): walked once per trace and threshold
        key = f"traced walk {m.flood_threshold}"
        got = tr.cache.get(key)
        if got is None:
            s = _traced_events(tr)
            faults, found = _walk_traced(tr, s, WriteTracer(m.flood_threshold))
            got = tr.cache[key] = (s.sel[np.asarray(faults, dtype=np.int64)], found)
        idx, found = got
        wp_t = cs.t(m.wp_fault)
        # every faulting store costs the same (a pte_update has no call of its own to pay)
        upd = hooks_in(tr.hook[idx], [PTE_UPD, PTE_UPD_D])
        cy = np.where(upd, wp_t[0], wp_t[0] + self.table["call_ret"])
        self.dyn_cols.append(
            (idx, cy, *(np.full(len(idx), x, dtype=np.int64) for x in (*wp_t[1:], 0, 0)))
        )
        if found:
            # a barrier's own cost, and per table it traces anew: a discovery, or (an
            # allocation zeroing a traced table) a write-protect fault
            disc_t = cs.t(m.discover)
            cyc0, mech0, ex0, hc0, tr0 = cs.lists()
            rows = []
            for k, hk, new, alloc in found:
                per = wp_t if alloc else disc_t
                rows.append(
                    (
                        k,
                        cyc0[hk] + new * per[0],
                        mech0[hk],
                        ex0[hk] + new * per[2],
                        hc0[hk],
                        tr0[hk] + new * per[4],
                        0,
                        0,
                    )
                )
            arr = np.array(rows, dtype=np.int64)
            self.dyn_cols.append((arr[:, 0], *arr[:, 1:].T))


def _walk_traced(
    tr: Trace, s: _Stream, tracer: WriteTracer
) -> tuple[list[int], list[tuple[int, int, int, bool]]]:
    """The tracer over the stream: the stores that fault (positions in ``s.sel``), and
    the barriers that trace tables anew: (event, hook, how many, whether an allocation
    zeroing them)."""
    guest = GuestMMU(nframes=_frames_needed(tr, _pte_entries(tr)[0]))
    frames = guest.frames
    pf, d_e, d_v, d_at = s.pf, s.d_e, s.d_v, s.d_at
    n = len(s.sel)
    a0, a1, a2, a3 = tr.arg0, tr.arg1, tr.arg2, tr.arg3
    dir_set = set(s.dirs.tolist())
    if len(s.dirs):
        frames.grow(int(s.dirs.max()))
    out: list[tuple[int, int, int, bool]] = []
    faults: list[int] = []
    mem = frames.mem
    pd: int | None = None
    tables: list[int] | None = None  # the loaded directory's, while known
    start = 0
    d0 = 0
    for bi, b in enumerate(s.barriers + [n]):
        d1 = d_at[bi] if bi < len(s.barriers) else len(d_e)
        if d0 < d1:
            for e, v in zip(d_e[d0:d1], d_v[d0:d1], strict=True):
                mem[e] = v
                if e >> 10 == pd:
                    tables = None
            d0 = d1
        if start < b:
            if start:
                faults.extend([start + i for i in tracer.writes(pf[start:b].tolist())])
            else:
                faults.extend(tracer.writes(pf[start:b].tolist()))
        start = b + 1
        if b == n:
            break
        k, hk = s.b_k[bi], s.b_h[bi]
        new = 0
        if hk in _ALLOCS:
            pfn = int(a0[k])
            if pfn in dir_set:  # else never read as a directory: contents do not matter
                clone = (int(a1[k]), int(a2[k]), int(a3[k])) if hk == _ALLOCS[2] else None
                _fill_table(frames, pfn, clone)
            mem = frames.mem
            if pfn == pd:
                tables = None
            new = tracer.write(pfn, 1024)
        elif hk == WCR3:
            pd = int(a0[k]) >> 12
            tables = _tables_named(frames, pd)
            new = tracer.discover([pd, *tables])
        else:
            if tables is None:
                tables = _tables_named(frames, pd)
            new = tracer.discover(tables)
        if new:
            out.append((k, hk, new, hk in _ALLOCS))
    return faults, out


def _tables_named(frames: Frames, pd: int | None) -> list[int]:
    """The tables directory ``pd`` names, sorted (none without a directory)."""
    if pd is None:
        return []
    pdes = frames.page(pd)
    t = (pdes & PRESENT).astype(bool) & ~(pdes & PSE).astype(bool)
    return sorted(set((pdes[t] >> 12).tolist()))
