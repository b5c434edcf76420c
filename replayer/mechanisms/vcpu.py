"""The virtual CPU: the interrupt flag as a backend sees it, and when it delivers.

Everything here is vectorized over the whole stream; the irq hooks are the
most frequent events by far (commit 139ec7c4: "the most called ops, by
several orders of magnitude, are the interrupt manipulation ops").

Boundaries: boundary ``k`` is the point just before event ``k``; the guest's
interrupt flag there is the recorded ``vif[k]`` (the ROM logs EFLAGS on entry,
before the hook acts).  An interrupt raised by event ``r`` (an ``irq_raise``)
can be delivered from boundary ``r + 1`` on.

How a backend's virtual CPU delivers a pending interrupt:

* if its virtual IF is set at boundary ``r + 1``, there (the hypervisor takes
  the interrupt and injects it on the way back);
* otherwise at the first later boundary where its virtual IF is set *and* it
  notices: a backend that checks for pending interrupts when the guest
  unmasks (native ``sti``, VMI's ROM, Xen's ``evtchn_upcall_pending`` test, a
  hardware VMM's interrupt window, BT's translated ``sti``) notices at once;
  lguest's ``irq_enable`` does not check (comment M:003 in
  ``drivers/lguest/lguest.c``), so it notices only at its next entry to the
  host (a hypercall, a trap, another interrupt).

A backend whose virtual IF does not follow the guest (``--without irq
--fallback none``: ``popf`` at CPL 1 silently keeps IF) is modelled with IF
always set: it delivers as soon as anything is raised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replayer.trace import K_INTERRUPT, K_IRQ_RAISE, Trace

EFLAGS_IF = 0x200


@dataclass
class Interrupts:
    """The interrupts the reference delivered, paired with when they were raised."""

    event: np.ndarray
    """int64 index of each interrupt event (native's delivery)."""
    vector: np.ndarray
    source: np.ndarray
    raised: np.ndarray
    """int64 index of the event that raised it (its ``irq_raise``), or the event before the
    first one at or after its raise time when the trace has no ``irq_raise`` events."""
    raised_vtime: np.ndarray
    """uint64 virtual time it was raised."""

    def __len__(self) -> int:
        return len(self.event)


def recorded_interrupts(trace: Trace) -> Interrupts:
    """Pair each interrupt event with the ``irq_raise`` that made its vector pending."""
    ints = np.nonzero(trace.kind == K_INTERRUPT)[0]
    raised_vt = trace.arg2[ints].astype(np.uint64) | (trace.arg3[ints].astype(np.uint64) << 32)
    # without irq_raise events: the event before the first at or after the raise time
    fallback = np.searchsorted(trace.vtime, raised_vt, side="left").astype(np.int64) - 1
    raised = np.minimum(np.maximum(fallback, 0), np.maximum(ints.astype(np.int64) - 1, 0))
    raises = np.nonzero(trace.kind == K_IRQ_RAISE)[0]
    if len(raises):
        both = np.union1d(ints, raises)
        pending: dict[int, list[int]] = {}
        pos = {int(e): k for k, e in enumerate(ints.tolist())}
        is_raise = trace.kind[both] == K_IRQ_RAISE
        vec = trace.arg0[both].tolist()
        coalesced = trace.arg3[both].tolist()
        for e, r, v, c in zip(both.tolist(), is_raise.tolist(), vec, coalesced, strict=True):
            if r:
                if not c:
                    pending.setdefault(v & 0xFF, []).append(e)
            else:
                q = pending.get(v & 0xFF)
                if q:
                    raised[pos[e]] = q.pop(0)
    return Interrupts(
        event=ints.astype(np.int64),
        vector=trace.arg0[ints].astype(np.int64) & 0xFF,
        source=trace.arg1[ints].astype(np.int64),
        raised=raised.astype(np.int64),
        raised_vtime=raised_vt,
    )


def backend_if(vif: np.ndarray, tracks_guest: bool) -> np.ndarray:
    """The backend's virtual IF at each boundary: the guest's, or stuck set."""
    return vif.astype(bool).copy() if tracks_guest else np.ones(len(vif), dtype=bool)


def delivery_points(
    vif_b: np.ndarray, earliest: np.ndarray, notices: np.ndarray | None
) -> np.ndarray:
    """Boundary at which the backend delivers each interrupt, -1 if it never does.

    ``earliest`` is the first boundary each may be delivered at (its raise + 1);
    ``notices[k]`` whether the backend would notice a pending interrupt at
    boundary ``k`` once its IF is set (None: always).  An interrupt the backend
    would take but has not noticed by the end of the stream (its IF is set, no
    entry to the host came) is delivered at boundary ``n``, the end: it is late,
    not lost.
    """
    n = len(vif_b)
    out = np.full(len(earliest), -1, dtype=np.int64)
    if n == 0 or len(earliest) == 0:
        return out
    e = np.minimum(earliest, n - 1)
    ok_now = vif_b[e]
    cand = np.nonzero(vif_b if notices is None else vif_b & notices)[0]
    if len(cand):
        pos = np.searchsorted(cand, e, side="left")
        later = np.where(pos < len(cand), cand[np.minimum(pos, len(cand) - 1)], -1)
    else:
        later = np.full(len(e), -1, dtype=np.int64)
    out = np.where(ok_now, e, later).astype(np.int64)
    if notices is not None:
        # IF set somewhere after the raise, but nothing entered the host: late, at the end
        if_set = np.nonzero(vif_b)[0]
        last = if_set[-1] if len(if_set) else -1
        out = np.where((out < 0) & (last >= e), n, out)
    return out


def unmask_events(delivered: np.ndarray, earliest: np.ndarray, unmaskers: np.ndarray) -> np.ndarray:
    """Events that unmasked with an interrupt pending and so made the backend deliver.

    ``unmaskers[k]``: event ``k`` is a hook that checks for pending interrupts when
    it sets IF (``irq_enable``, ``restore_fl``).  Returns sorted unique indices.
    """
    deferred = (delivered > earliest) & (delivered > 0)
    ev = delivered[deferred] - 1
    ev = ev[unmaskers[ev]] if len(ev) else ev
    return np.unique(ev)
