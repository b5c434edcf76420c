"""Static costs: what each event costs from the backend row alone, vectorized.

Takes a trace and a backend row under a cost table; gives per-event (cycles,
mechanism, exits, hypercalls, traps) gathered by hook id or event kind
(:func:`_static`), the bare-hardware reference (:func:`native_cycles`) and the hooks
a backend's sequential pass must take instead (:func:`_stateful`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pvscope.hooks import HOOKS
from replayer.backends import (
    MECH_CODE,
    NATIVE,
    Backend,
    Cost,
    c,
)
from replayer.costs import CostTable
from replayer.engine.common import _H, _NHOOKS, _STATEFUL
from replayer.engine.derived import absorbed_mmio
from replayer.trace import (
    K_EXCEPTION,
    K_INTERRUPT,
    K_MMIO_READ,
    K_MMIO_WRITE,
    K_SOFTINT,
    Trace,
)


class _Costs:
    """A backend row's costs resolved to cycles under one cost table."""

    def __init__(self, model: Backend, table: CostTable) -> None:
        self.table = table
        self.model = model
        n = _NHOOKS + 1
        self.cyc = np.zeros(n, dtype=np.int64)
        self.mech = np.full(n, MECH_CODE["none"], dtype=np.int8)
        self.ex = np.zeros(n, dtype=np.int32)
        self.hc = np.zeros(n, dtype=np.int32)
        self.tr = np.zeros(n, dtype=np.int32)
        for h in HOOKS:
            self.cyc[h.id], self.mech[h.id], self.ex[h.id], self.hc[h.id], self.tr[h.id] = self.t(
                model.cost(h.name)
            )

    def lists(self) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
        """Per-hook (cycles, mechanism codes, exits, hypercalls, traps) as Python lists, for
        the sequential pass's loop."""
        return (
            self.cyc.tolist(),
            self.mech.tolist(),
            self.ex.tolist(),
            self.hc.tolist(),
            self.tr.tolist(),
        )

    def t(self, cost: Cost) -> tuple[int, int, int, int, int]:
        """(cycles, mechanism code, exits, hypercalls, traps)."""
        return (
            cost.cycles(self.table),
            MECH_CODE[cost.mechanism],
            cost.exits,
            cost.hypercalls,
            cost.traps,
        )


def _static(trace: Trace, model: Backend, table: CostTable, absorbed: np.ndarray) -> tuple:
    """Per-event (cycles, mech, exits, hypercalls, traps) from the row alone."""
    cs = _Costs(model, table)
    # per-hook columns have the slot _NHOOKS last: a hook id of -1 (no hook call) takes it;
    # fancy indexing gives new arrays
    hk = trace.hook
    cyc, mech = cs.cyc[hk], cs.mech[hk]
    ex, hc, tr = cs.ex[hk], cs.hc[hk], cs.tr[hk]
    for mask, t in _by_kind(trace, model, cs, absorbed):
        cyc[mask], mech[mask], ex[mask], hc[mask], tr[mask] = t
    return cs, cyc, mech, ex, hc, tr


def _by_kind(
    trace: Trace, model: Backend, cs: _Costs, absorbed: np.ndarray
) -> Iterator[tuple[np.ndarray, tuple[int, int, int, int, int]]]:
    """(events, what each costs) for every kind of event that is no hook call."""
    kind = trace.kind
    pf = (kind == K_EXCEPTION) & (trace.arg0 == 14)
    for mask, name in (
        (kind == K_INTERRUPT, "interrupt"),
        (pf, "pagefault"),
        ((kind == K_EXCEPTION) & ~pf, "exception"),
        (kind == K_SOFTINT, "softint"),
        (((kind == K_MMIO_READ) | (kind == K_MMIO_WRITE)) & ~absorbed, "mmio"),
        (absorbed, None),
    ):
        if mask.any():
            yield mask, cs.t(model.costs[name]) if name else cs.t(c("included"))


def native_cycles(trace: Trace, table: CostTable, absorbed: np.ndarray | None = None) -> np.ndarray:
    """What every event costs on bare hardware (the reference for relative cost)."""
    if absorbed is None:
        absorbed = absorbed_mmio(trace)
    cs = _Costs(NATIVE, table)
    cyc = cs.cyc[trace.hook]
    for mask, t in _by_kind(trace, NATIVE, cs, absorbed):
        cyc[mask] = t[0]
    return cyc


def _stateful(model: Backend, cs: _Costs) -> set[int]:
    """Hooks the sequential pass takes: those that change or read state on every backend,
    those the backend may queue, and (with a queue) every synchronous entry to the
    hypervisor, which applies what is queued first."""
    out = set(_STATEFUL) | {_H[h] for h in model.batchable}
    if model.batching:
        out |= {h.id for h in HOOKS if cs.hc[h.id] > 0}
    return out
