"""The whole-run estimate: the interface's cycles plus what the guest does between events.

Takes a :class:`~replayer.engine.result.RunResult`; gives the ``whole_run`` dict of its
summary.  The interface ratio (``interface_ratio``) prices only the events; a real run
also retires the guest's own instructions and refills its TLB.  Here:

* guest instructions come from ``vtime``: the instructions between two events ran
  at the privilege level of the later one (the code that caused it), less the idle
  time skipped while halted; they cost the table's ``cpi_kernel`` or ``cpi_user``
  cycles each, alike on every backend (the guest's code runs natively under all of
  them; binary translation's extra is charged at the events);
* TLB refills are measured by the recorder (``tlb.parquet``): after every full
  flush, each page walked to again is one refill (non-global pages; global kernel
  pages survive CR3 loads where CR4.PGE is on), plus one per ``flush_tlb_single``.
  Each costs ``tlb_walk_native`` cycles, or ``tlb_walk_nested`` on a backend whose
  misses walk the guest's tables through nested tables.

Not charged (and said so in the summary): TLB flushes a VMM's own world switches
cause (untagged TLBs), cache effects, and instructions the recorder's quantum
arithmetic cannot split more finely than one event apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pvscope.hooks import BY_NAME
from replayer.engine.common import _cached
from replayer.engine.derived import _SLICE
from replayer.engine.result import RunResult
from replayer.trace import KINDS, Trace

_IDLE = KINDS.index("idle")
_INVLPG = BY_NAME["flush_tlb_single"].id
NOT_CHARGED = (
    "TLB refills after a VMM's own world switches (untagged TLBs), cache and pipeline "
    "effects of exits, the guest's instruction mix (one CPI per privilege level)"
)


def guest_instructions(trace: Trace) -> dict[str, int]:
    """Guest instructions by privilege level (``kernel``: CPL 0-2, ``user``: CPL 3) and the
    idle time skipped while halted."""
    if trace.n == 0:
        return {"kernel": 0, "user": 0, "idle": 0}
    idle_at = np.flatnonzero(trace.kind == _IDLE)
    skipped = trace.arg0[idle_at].astype(np.int64) | (trace.arg1[idle_at].astype(np.int64) << 32)
    # an idle event is logged before its skip: the gap to the next event holds it
    nxt = idle_at + 1
    inside = nxt < trace.n
    sub_at, sub = nxt[inside], skipped[inside]
    user = total = prev = 0
    for a in range(0, trace.n, _SLICE):  # a slice at a time: temporaries stay small
        vt = trace.vtime[a : a + _SLICE].astype(np.int64)
        gap = np.diff(vt, prepend=prev)
        prev = int(vt[-1])
        lo, hi = np.searchsorted(sub_at, [a, a + len(vt)]).tolist()
        gap[sub_at[lo:hi] - a] -= sub[lo:hi]
        gap = np.maximum(gap, 0)
        total += int(gap.sum())
        user += int(gap[trace.cpl[a : a + _SLICE] == 3].sum())
    end = int(trace.manifest.get("counts", {}).get("instructions", 0))
    # instructions after the last event (to the end of the run) ran at the last's level
    tail = max(end - total, 0) if end else 0
    if trace.cpl[-1] == 3:
        user += tail
    return {"kernel": total + tail - user, "user": user, "idle": int(skipped.sum())}


def tlb_refills(trace: Trace) -> int:
    """TLB refills the recorder measured: non-global pages walked after full flushes, plus
    one per single-page invalidation."""
    t = trace.tlb
    pages = int(t["user_pages"].sum() + t["kernel_pages"].sum()) if t else 0
    return pages + int(np.count_nonzero(trace.hook == _INVLPG))


def whole_run(r: RunResult) -> dict[str, Any]:
    """Estimated whole-run cycles of this backend and of native on the same work."""
    table = r.costs
    g = table.guest
    ins = _cached(r.trace, "guest_instructions", guest_instructions)
    refills = _cached(r.trace, "tlb_refills", tlb_refills)
    guest = ins["kernel"] * g["cpi_kernel"] + ins["user"] * g["cpi_user"]
    walk = g["tlb_walk_nested"] if r.run.backend.tlb_walk == "nested" else g["tlb_walk_native"]
    tlb = refills * walk
    interface = int(r.cycles.sum())
    native_interface = int(r.native_cycles.sum())
    whole = interface + guest + tlb
    native_whole = native_interface + guest + refills * g["tlb_walk_native"]
    return {
        "cycles": round(whole),
        "native_cycles": round(native_whole),
        "slowdown": round(whole / native_whole, 6) if native_whole else None,
        "interface_cycles": interface,
        "guest_cycles": round(guest),
        "tlb_cycles": round(tlb),
        "guest_instructions": {"kernel": ins["kernel"], "user": ins["user"]},
        "idle_vtime": ins["idle"],
        "tlb_refills": refills,
        "tlb_walk": r.run.backend.tlb_walk,
        "not_charged": NOT_CHARGED,
    }
