"""What one replay gives: per-event columns, interrupt rows and violation rows.

Takes nothing; gives :class:`RunResult` (filled by :func:`replayer.engine.replay`),
:class:`Violation` and the check names (:data:`CHECKS`) with the requirement family
each belongs to (:data:`FAMILY`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pvscope.hooks import HOOKS
from replayer.backends import (
    Run,
)
from replayer.costs import CostTable
from replayer.trace import (
    KINDS,
    Trace,
)

#: Check names, in the order summaries list them.
CHECKS = (
    "irq.masked",
    "irq.lost",
    "mmu.missing",
    "mmu.stale",
    "mmu.perm",
    "device.lapic",
    "device.ioapic",
    "device.cpu",
    "result",
    "privilege",
    "trace.mmu",
)
#: Check family of each check (the requirement a ``--fallback none`` ablation breaks).
FAMILY = {
    "irq.masked": "interrupt",
    "irq.lost": "interrupt",
    "mmu.missing": "mmu",
    "mmu.stale": "mmu",
    "mmu.perm": "mmu",
    "device.lapic": "device",
    "device.ioapic": "device",
    "device.cpu": "device",
    "result": "result",
    "privilege": "privilege",
    "trace.mmu": "trace",
}
FAMILIES = ("interrupt", "mmu", "device", "result", "privilege", "trace")
#: What an event is called in a reason: hook names, then kinds, then ``unknown``.
NAMES: tuple[str, ...] = tuple(h.name for h in HOOKS) + KINDS + ("unknown",)


@dataclass(slots=True)
class Violation:
    """One row of the violations table (slotted: a run may hold half a million)."""

    seq: int
    check: str
    field: str
    expected: str
    actual: str
    detail: str


@dataclass
class RunResult:
    """Everything one replay produced."""

    run: Run
    costs: CostTable
    trace: Trace
    cycles: np.ndarray
    native_cycles: np.ndarray
    mechanism: np.ndarray
    exits: np.ndarray
    hypercalls: np.ndarray
    traps: np.ndarray
    batch_flushes: np.ndarray
    batched: np.ndarray
    violations: list[Violation]
    interrupts: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)
    sequential: str = "exact"
    """How the sequential pass ran: ``exact`` (both copies simulated), ``lean`` (proved
    equal, :meth:`_Replay._lean`) or ``shared`` (reused from a run with an equal pass)."""
    by_reason: ReasonSums | None = field(default=None, compare=False, repr=False)
    """Events and sums per (mechanism, event name), once the summary is made
    (:func:`replayer.engine.summary.reason_sums`; what the exit reasons are made of)."""


@dataclass
class ReasonSums:
    """Per reason code ``mechanism * len(NAMES) + name`` (:data:`NAMES`): events, and the
    sums of ``cycles`` and of each counter (int64, exact)."""

    events: np.ndarray
    sums: dict[str, np.ndarray]
