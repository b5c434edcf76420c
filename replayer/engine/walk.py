"""The events a walk of the guest's page tables takes.

Takes the trace; gives :func:`table_changes`, the events that change the guest's tables,
CR3, paging state or TLB.  Nothing but these events changes the guest's tables, so a
pass that takes only them sees, after each, the tables a simulation of every event sees
there: the compiled walks of the empty copies (:mod:`replayer.engine.emptywalk`) and of
lguest's shadow told of no store (:mod:`replayer.engine.untoldwalk`) take them alone.
"""

from __future__ import annotations

import numpy as np

from replayer.engine.common import (
    _ALLOCS,
    FL_KERN,
    FL_ONE,
    FL_USER,
    WCR0,
    WCR3,
    WCR4,
)
from replayer.engine.derived import _pte_entries
from replayer.trace import K_HOOK, Trace, hooks_in

#: The hooks that change the guest's tables or TLB, other than entry stores.
OPS = np.array([*_ALLOCS, WCR3, FL_USER, FL_KERN, FL_ONE, WCR0, WCR4])


def table_changes(trace: Trace) -> np.ndarray:
    """The events that change the guest's tables, CR3, paging state or TLB: entry stores
    with an observed value and the hooks of :data:`OPS` (every pass takes them all)."""
    ent, _ = _pte_entries(trace)
    hook = (trace.kind == K_HOOK) & ((ent >= 0) | hooks_in(trace.hook, OPS))
    return np.flatnonzero(hook)
