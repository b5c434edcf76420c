"""Static costs: what each event costs from the backend row alone, vectorized.

Takes a trace and a backend row under a cost table; gives per-event (cycles,
mechanism, exits, hypercalls, traps) gathered by hook id or event kind
(:func:`_static`), the bare-hardware reference (:func:`native_cycles`) and the hooks
a backend's sequential pass must take instead (:func:`_stateful`).
"""

from __future__ import annotations

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
from replayer.engine.common import _H, _NHOOKS, _STATEFUL, _cached
from replayer.engine.derived import absorbed_mmio
from replayer.engine.result import ByClass
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


#: The costs of events that are no hook call, by the backend row's name (None: an MMIO
#: access an ``apic_*`` hook's native body made, included in the hook's cost); in
#: :func:`cost_classes` each takes the slot ``_NHOOKS + 1 + i``.
_KIND_COSTS = ("interrupt", "pagefault", "exception", "softint", "mmio", None)


def cost_classes(
    trace: Trace, absorbed: np.ndarray
) -> tuple[np.ndarray, tuple[bool, ...], np.ndarray]:
    """Per event: the slot its static cost is read from (its hook id; ``_NHOOKS`` for no
    hook call; ``_NHOOKS + 1 + i`` for the ``i``-th of :data:`_KIND_COSTS`), int16; which
    of :data:`_KIND_COSTS` occur; and the slots that occur."""
    kind = trace.kind
    code = np.where(trace.hook >= 0, trace.hook, _NHOOKS).astype(np.int16)
    pf = (kind == K_EXCEPTION) & (trace.arg0 == 14)
    present = []
    for i, mask in enumerate(
        (
            kind == K_INTERRUPT,
            pf,
            (kind == K_EXCEPTION) & ~pf,
            kind == K_SOFTINT,
            ((kind == K_MMIO_READ) | (kind == K_MMIO_WRITE)) & ~absorbed,
            absorbed,
        )
    ):
        present.append(bool(mask.any()))
        code[mask] = _NHOOKS + 1 + i
    return code, tuple(present), np.flatnonzero(np.bincount(code, minlength=1))


def _per_class(
    trace: Trace, model: Backend, cs: _Costs, absorbed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The trace's cost class of each event, the classes it uses, and per column (cycles,
    mech, exits, hypercalls, traps) its value in each class under ``cs``."""
    code, present, slots = _cached(trace, "cost classes", lambda t: cost_classes(t, absorbed))
    extra = [
        cs.t(model.costs[name] if name else c("included")) if there else (0, 0, 0, 0, 0)
        for name, there in zip(_KIND_COSTS, present, strict=True)
    ]
    cols: tuple[np.ndarray, ...] = (cs.cyc, cs.mech, cs.ex, cs.hc, cs.tr)
    per = [
        np.concatenate([col, np.array([t[j] for t in extra], dtype=col.dtype)])
        for j, col in enumerate(cols)
    ]
    return code, slots, per


def _static(
    trace: Trace, model: Backend, table: CostTable, absorbed: np.ndarray, cs: _Costs | None = None
) -> tuple:
    """Per-event (cycles, mech, exits, hypercalls, traps) from the row alone (``cs``: the
    row's costs under ``table``, if already resolved)."""
    if cs is None:
        cs = _Costs(model, table)
    code, slots, pers = _per_class(trace, model, cs, absorbed)
    out = []
    for per in pers:
        # each column a new array: one value everywhere is filled, not gathered
        used = per[slots]
        if len(used) == 0 or (used == 0).all():
            out.append(np.zeros(trace.n, dtype=per.dtype))
        elif (used == used[0]).all():
            out.append(np.full(trace.n, used[0], dtype=per.dtype))
        else:
            out.append(per[code])
    return (cs, *out)


def native_cycles(trace: Trace, table: CostTable, absorbed: np.ndarray | None = None) -> ByClass:
    """What every event costs on bare hardware (the reference for relative cost), by the
    event's cost class: a column read a slice at a time, never made whole."""
    if absorbed is None:
        absorbed = absorbed_mmio(trace)
    code, _, pers = _per_class(trace, NATIVE, _Costs(NATIVE, table), absorbed)
    return ByClass(pers[0].view(np.uint64), code)


def _stateful(model: Backend, cs: _Costs) -> set[int]:
    """Hooks the sequential pass takes: those that change or read state on every backend,
    those the backend may queue, and (with a queue) every synchronous entry to the
    hypervisor, which applies what is queued first."""
    out = set(_STATEFUL) | {_H[h] for h in model.batchable}
    if model.batching:
        out |= {h.id for h in HOOKS if cs.hc[h.id] > 0}
    return out
