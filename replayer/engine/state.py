"""The state one replay holds, shared by the stages, and the modes an ablation sets.

Takes a run (backend row and ablation) and a cost table; gives
:class:`ReplayState`, the base every pass mixes into, and :func:`_modes`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pvscope.hooks import HOOKS
from replayer.backends import (
    Run,
)
from replayer.costs import CostTable
from replayer.engine.result import Violation
from replayer.engine.static import _Costs, _stateful
from replayer.engine.violations import Reported
from replayer.mechanisms.apic import (
    VirtualIoapic,
    VirtualLapic,
)
from replayer.mechanisms.coherence import ViewPair
from replayer.mechanisms.pagetables import (
    GuestMMU,
)
from replayer.trace import (
    Trace,
)


def _modes(run: Run) -> tuple[str | None, str | None, bool, bool]:
    """How a run's backend learns PTE updates and allocations, and whether it sees the APIC
    and tracks the guest's interrupt flag (``hook``: as designed; or the fallback)."""
    req, fb = run.without, run.fallback
    pte_mode = "hook" if req != "pteupdate" else fb
    alloc_mode = "unhooked" if run.backend.name == "lguest" else "hook" if req != "ptalloc" else fb
    return (
        pte_mode,
        alloc_mode,
        not (req == "apic" and fb == "none"),
        not (req == "irq" and fb == "none"),
    )


class ReplayState:
    """What one replay holds while its passes run; each stage is a mixin of it.

    Set here: the run, its backend row and cost table, and the modes its ablation sets.
    Set by :meth:`replayer.engine._Replay.run` before the passes: ``cs`` (the row's costs
    resolved), ``vif_b`` (the interrupt flag as the backend sees it), ``cregs``
    (control registers) and ``dyn_cols`` (costs the passes found event by event).  Set
    by the pass that simulates devices: ``lapic``, ``ioapic``, ``lost``.
    """

    cs: _Costs
    vif_b: np.ndarray
    cregs: Any
    dyn_cols: list[tuple[Any, ...]]
    lapic: VirtualLapic
    ioapic: VirtualIoapic
    guest: GuestMMU
    pair: ViewPair

    def __init__(
        self, trace: Trace, run: Run, table: CostTable, full_check: bool, exact: bool = False
    ) -> None:
        self.trace = trace
        self.exact = exact
        self.run_ = run
        self.model = run.model()
        self.table = table
        self.full_check = full_check
        self.violations: Reported = []
        m = self.model
        self.mirror = m.mmu in ("direct", "traced")
        self.pte_mode, self.alloc_mode, self.apic_seen, self.irq_tracks = _modes(run)
        self.lost: dict[int, str] = {}
        """Recorded interrupts the backend's devices would not take, and why."""
        self.later: list[Run] = []
        """The runs to be replayed after this one in the same process (what a pass may
        work out for them on its way and leave on the trace)."""

    # ------------------------------------------------------------------ helpers

    def violate(self, seq: int, check: str, fld: str, exp: str, act: str, detail: str) -> None:
        self.violations.append(Violation(seq, check, fld, exp, act, detail))


def structural_key(run: Run, table: CostTable, full_check: bool = False) -> str:
    """What the lean pass's queue plan and proofs read: :func:`sequential_key` without a
    cycle count (the mechanisms, each stateful hook's mechanism and exit, hypercall and
    trap counts, the modes) -- equal for a run under any cost table, so a replay under
    another table (the estimate share's masked one) reuses the proofs."""
    m = run.model()
    cs = _Costs(m, table)
    own = [(h, cs.t(m.cost(HOOKS[h].name))[1:]) for h in sorted(_stateful(m, cs))]
    mech = (m.name, m.mmu, m.apic, m.batching, m.batch_capacity, sorted(m.batchable.items()))
    more = (m.flush_cost, m.wp_fault, m.discover, m.timer_write, m.flush_resync)
    return repr((mech, more, m.pgdir_cache, m.flood_threshold, own, _modes(run)[:3], full_check))


def sequential_key(
    run: Run, table: CostTable, full_check: bool = False, exact: bool = False
) -> str:
    """Everything a run's sequential pass reads: runs with equal keys have equal passes.

    That is the backend's mechanisms, the costs of the hooks the pass takes (the others
    are costed column-wise), the modes an ablation sets and the cost table -- so an
    ablation that changes only costs the pass does not look at (``cpl``; ``irq`` where
    masking never enters the hypervisor, and whose interrupt flag is checked apart)
    shares its parent's pass.
    """
    m = run.model()
    cs = _Costs(m, table)
    hooks = sorted(_stateful(m, cs))
    own = [(h, cs.t(m.cost(HOOKS[h].name))) for h in hooks]
    mech = (m.name, m.mmu, m.apic, m.batching, m.batch_capacity, sorted(m.batchable.items()))
    more = (
        m.flush_cost,
        m.wp_fault,
        m.discover,
        m.timer_write,
        m.flush_resync,
        m.pgdir_cache,
        m.flood_threshold,
    )
    return repr((mech, more, own, _modes(run)[:3], table.sha256, full_check, exact))
