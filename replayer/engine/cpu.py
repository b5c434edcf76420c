"""The virtual CPU: the interrupt flag as the backend sees it, and each interrupt's fate.

Takes the replay state and the per-event cost columns; gives the interrupts table
(when the backend delivers each recorded interrupt, latency in events and guest
instructions), ``irq.masked``/``irq.lost`` rows, and adds to the cost columns what
unmasking with an interrupt pending costs.
"""

from __future__ import annotations

import numpy as np

from replayer.backends import (
    c,
)
from replayer.engine.common import _UNMASKERS, _cached
from replayer.engine.result import Sparse
from replayer.engine.state import ReplayState
from replayer.engine.violations import ViolationBlock
from replayer.mechanisms.vcpu import (
    Interrupts,
    delivery_points,
    recorded_interrupts,
    unmask_events,
)
from replayer.trace import (
    K_EXCEPTION,
    K_INTERRUPT,
    Trace,
    hooks_in,
)


def unmaskers(trace: Trace) -> np.ndarray:
    """Per event: whether it is a call that may unmask interrupts (``irq_enable``,
    ``restore_fl``); kept on the trace by the first run that reads it."""
    return hooks_in(trace.hook, _UNMASKERS)


class VirtualCpu(ReplayState):
    """The vectorized virtual-CPU pass."""

    def _interrupts(
        self,
        cyc: np.ndarray,
        mech: np.ndarray,
        ex: np.ndarray,
        hc: np.ndarray,
        trp: np.ndarray,
        bf: Sparse,
    ) -> dict[str, np.ndarray]:
        """When the backend delivers each recorded interrupt (its interrupt flag as it
        sees it; lguest's flag is read only when the guest next enters the host), which
        it delivers while the guest had interrupts masked or never, what unmasking with
        one pending adds to the cost columns, and the interrupts table."""
        tr, m = self.trace, self.model
        ints = _cached(tr, "recorded_interrupts", recorded_interrupts)
        earliest = ints.raised + 1
        irq_trap = self.run_.without == "irq" and self.run_.fallback == "trap"
        delivered = self._delivered(
            earliest, (hc, trp, ex, bf), m.vcpu == "lguest-flag" and not irq_trap
        )
        if self.lost:
            delivered[np.isin(ints.event, np.fromiter(self.lost, dtype=np.int64))] = -1
        status = np.zeros(len(ints), dtype=np.int8)  # 0 ok, 1 masked, 2 lost
        status[delivered < 0] = 2
        ok = delivered >= 0
        masked = np.zeros(len(ints), dtype=bool)
        inside = ok & (delivered < tr.n)
        masked[inside] = ~tr.vif[delivered[inside]]
        status[masked] = 1

        unmask = m.unmask_pending
        if irq_trap:
            unmask = c("callout", "bt_callout")
        if unmask is not None and self.irq_tracks and len(ints):
            is_unmasker = _cached(tr, "unmaskers", unmaskers)
            ev = unmask_events(delivered, earliest, is_unmasker)
            if len(ev):
                t = self.cs.t(unmask)
                cyc[ev] += t[0]
                mech[ev] = t[1]
                ex[ev] += t[2]
                hc[ev] += t[3]
                trp[ev] += t[4]

        self._interrupt_rows(ints, delivered, status)
        seqs = ints.event
        vt = tr.vtime
        lat_ev = np.where(ok, delivered - ints.raised, -1)
        lat_vt = np.where(
            ok,
            np.maximum(
                vt[np.clip(delivered, 0, tr.n - 1)].astype(np.int64)
                - ints.raised_vtime.astype(np.int64),
                0,
            ),
            -1,
        )
        nat_ev = seqs - ints.raised
        nat_vt = np.maximum(vt[seqs].astype(np.int64) - ints.raised_vtime.astype(np.int64), 0)
        return {
            "seq": seqs.astype(np.uint64),
            "vector": ints.vector.astype(np.uint16),
            "source": ints.source.astype(np.uint16),
            "raised_seq": ints.raised.astype(np.uint64),
            "delivered_seq": delivered,
            "latency_events": lat_ev,
            "latency_vtime": lat_vt,
            "native_latency_events": nat_ev.astype(np.int64),
            "native_latency_vtime": nat_vt.astype(np.int64),
            "status": status,
        }

    def _delivered(
        self, earliest: np.ndarray, host_cols: tuple[np.ndarray | Sparse, ...], on_entry: bool
    ) -> np.ndarray:
        """Where the backend delivers each interrupt (:func:`delivery_points`; a copy the
        caller may change); ``on_entry``: it notices one pending only when the guest next
        enters the host (an event with exits, hypercalls, traps or batch flushes in
        ``host_cols``, an interrupt or an exception)."""
        tr = self.trace
        if not on_entry:
            # the same for every run whose backend tracks the guest's flag (or every one
            # whose backend does not)
            return _cached(
                tr,
                f"delivery points {self.irq_tracks}",
                lambda t: delivery_points(self.vif_b, earliest, None),
            ).copy()
        host = np.zeros(tr.n, dtype=bool)
        for col in host_cols:
            host |= col > 0
        host |= tr.kind == K_INTERRUPT
        host |= tr.kind == K_EXCEPTION
        notices = np.zeros(tr.n, dtype=bool)
        notices[1:] = host[:-1]
        return delivery_points(self.vif_b, earliest, notices)

    def _interrupt_rows(self, ints: Interrupts, delivered: np.ndarray, status: np.ndarray) -> None:
        """``irq.masked`` and ``irq.lost`` rows (``status`` 1 and 2), column-wise (a
        ``-without-apic-none`` on irqstorm loses half a million interrupts)."""
        masked = np.flatnonzero(status == 1)
        d = delivered[masked].astype(np.int64)
        self.violations.append(
            ViolationBlock.of(
                "irq.masked",
                d,
                field="if",
                expected="0",
                actual="1",
                detail=[
                    f"vector {v:#x} raised at seq {r} delivered before seq {k} while the guest "
                    "had interrupts masked"
                    for v, r, k in zip(
                        ints.vector[masked].tolist(),
                        ints.raised[masked].tolist(),
                        d.tolist(),
                        strict=True,
                    )
                ],
            )
        )
        lost = np.flatnonzero(status == 2)
        e = ints.event[lost].astype(np.int64)
        why = self.lost
        self.violations.append(
            ViolationBlock.of(
                "irq.lost",
                e,
                field="vector",
                expected=[f"{v:#x}" for v in ints.vector[lost].tolist()],
                actual="never delivered",
                detail=[
                    f"native delivered it at seq {k}; {why.get(k, 'the backend never unmasked')}"
                    for k in e.tolist()
                ],
            )
        )
