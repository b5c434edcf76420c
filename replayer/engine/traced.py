"""The traced pass: what page-table events cost a VMM that write-protects the tables.

Takes the replay state of a ``traced`` backend (hardware-assisted with shadow paging,
binary translation); gives cost rows for the stores that fault, the tables discovered
at CR3 loads and flushes and the allocations that zero a traced table.
"""

from __future__ import annotations

import numpy as np

from replayer.engine.common import _ALLOCS, _H
from replayer.engine.derived import _directory_frames, _fill_table, _frames_needed, _pte_entries
from replayer.engine.state import ReplayState
from replayer.mechanisms.pagetables import (
    PRESENT,
    PSE,
    GuestMMU,
)
from replayer.mechanisms.tracer import WriteTracer


class TracedPass(ReplayState):
    """The traced backends' page-table pass."""

    def _traced_pass(self) -> None:
        """What page-table events cost a VMM that write-protects the tables it shadows.

        The guest's tables are the hardware's: each store lands at once.  Only the
        tracer's state (frames traced, the flood counter) runs event by event, over the
        page-table events alone: runs of entry stores between the events that discover
        tables (CR3 loads, full flushes) or zero them (allocations).
        """
        tr, m, cs, table = self.trace, self.model, self.cs, self.table
        ent, val = _pte_entries(tr)
        h = tr.hook
        ALLOCS = _ALLOCS
        WCR3, FL_USER, FL_KERN = _H["write_cr3"], _H["flush_tlb_user"], _H["flush_tlb_kernel"]
        PTE_UPD, PTE_UPD_D = _H["pte_update"], _H["pte_update_defer"]
        other_hooks = np.isin(h, [*ALLOCS, WCR3, FL_USER, FL_KERN])
        sel = np.nonzero((ent >= 0) | other_hooks)[0]
        guest = GuestMMU(nframes=_frames_needed(tr, ent))
        frames = guest.frames
        tracer = WriteTracer(m.flood_threshold)
        wp_t, disc_t = cs.t(m.wp_fault), cs.t(m.discover)
        call_ret = table["call_ret"]
        cyc0, mech0, ex0, hc0, tr0 = cs.lists()
        # only the tables later read as a directory (loaded, or cloned from) need contents
        dirs = _directory_frames(tr)
        es = ent[sel]
        keep = (es >= 0) & np.isin(es >> 10, dirs)
        dpos = np.nonzero(keep)[0]
        d_e, d_v = es[dpos].tolist(), val[sel][dpos].tolist()
        k_l, h_l = sel.tolist(), h[sel].tolist()
        pf_l = (es >> 10).tolist()
        a0, a1, a2, a3 = tr.arg0, tr.arg1, tr.arg2, tr.arg3
        b_arr = np.nonzero(other_hooks[sel])[0]
        # directory stores before each barrier: d_e[d_at[i - 1]:d_at[i]] precede barrier i
        d_at = np.searchsorted(dpos, b_arr).tolist()
        barriers = b_arr.tolist()
        dir_set = set(dirs.tolist())
        if len(dirs):
            frames.grow(int(dirs.max()))
        out: list[tuple[int, ...]] = []
        faults: list[int] = []
        mem = frames.mem
        upd_cy = wp_t[0]
        store_cy = wp_t[0] + call_ret
        pd: int | None = None
        tables: list[int] | None = None

        def cur_tables() -> list[int]:
            nonlocal tables
            if pd is None:
                return []
            if tables is None:
                pdes = frames.page(pd)
                t = (pdes & PRESENT).astype(bool) & ~(pdes & PSE).astype(bool)
                tables = sorted(set((pdes[t] >> 12).tolist()))
            return tables

        start = 0
        d0 = 0
        for bi, b in enumerate(barriers + [len(k_l)]):
            d1 = d_at[bi] if bi < len(barriers) else len(d_e)
            if d0 < d1:
                for e, v in zip(d_e[d0:d1], d_v[d0:d1], strict=True):
                    mem[e] = v
                    if e >> 10 == pd:
                        tables = None
                d0 = d1
            if start < b:
                if start:
                    faults.extend([start + i for i in tracer.writes(pf_l[start:b])])
                else:
                    faults.extend(tracer.writes(pf_l[start:b]))
            start = b + 1
            if b == len(k_l):
                break
            k, hk = k_l[b], h_l[b]
            new = 0
            per = disc_t
            if hk in ALLOCS:
                pfn = int(a0[k])
                if pfn not in dir_set:
                    pass  # never read as a directory: its contents do not matter here
                else:
                    clone = (int(a1[k]), int(a2[k]), int(a3[k])) if hk == ALLOCS[2] else None
                    _fill_table(frames, pfn, clone)
                mem = frames.mem
                if pfn == pd:
                    tables = None
                new = tracer.write(pfn, 1024)
                per = wp_t
            elif hk == WCR3:
                pd = int(a0[k]) >> 12
                tables = None
                new = tracer.discover([pd, *cur_tables()])
            else:
                new = tracer.discover(cur_tables())
            if new:
                out.append(
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
        # every faulting store costs the same (a pte_update has no call of its own to pay)
        idx = sel[np.asarray(faults, dtype=np.int64)]
        cy = np.where(np.isin(h[idx], [PTE_UPD, PTE_UPD_D]), upd_cy, store_cy)
        self.dyn_cols.append(
            (idx, cy, *(np.full(len(idx), x, dtype=np.int64) for x in (*wp_t[1:], 0, 0)))
        )
        if out:
            arr = np.array(out, dtype=np.int64)
            self.dyn_cols.append((arr[:, 0], *arr[:, 1:].T))
