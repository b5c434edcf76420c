"""What one replay gives: per-event columns, interrupt rows and violation rows.

Takes nothing; gives :class:`RunResult` (filled by :func:`replayer.engine.replay`),
:class:`Violation` and the check names (:data:`CHECKS`) with the requirement family
each belongs to (:data:`FAMILY`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from replayer.engine.violations import Violations

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


class LazyColumn:
    """A per-event column kept smaller than one value an event (on a 17 M-event trace a
    whole uint64 column is 130 MiB in every run): read a slice at a time (``col[a:b]``),
    made whole only where asked for (``np.asarray``, :meth:`astype`)."""

    __slots__ = ()

    @property
    def dtype(self) -> np.dtype:
        """The values' type."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, key: Any) -> Any:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int]:
        """One value per event."""
        return (len(self),)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[0 : len(self)]
        return whole if dtype is None else whole.astype(dtype)

    def astype(self, dtype: Any) -> np.ndarray:
        """The whole column as ``dtype``."""
        return np.asarray(self, dtype=dtype)

    def sum(self) -> int:
        """The column's sum, exact."""
        raise NotImplementedError

    def count_nonzero(self) -> int:
        """Events where the column is not 0."""
        raise NotImplementedError


class ByClass(LazyColumn):
    """A per-event column whose value is one per cost class of the event (native cycles:
    the same for every run under one table), kept as the values per class and the trace's
    classes; any index reads ``per[code[key]]``."""

    __slots__ = ("_counts", "code", "per")

    def __init__(self, per: np.ndarray, code: np.ndarray) -> None:
        self.per, self.code = per, code
        self._counts: np.ndarray | None = None

    @property
    def dtype(self) -> np.dtype:
        """The values' type."""
        return self.per.dtype

    def __len__(self) -> int:
        return len(self.code)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.per[self.code[key]]

    def counts(self) -> np.ndarray:
        """Events per class (int64), counted once."""
        if self._counts is None:
            # a slice at a time: bincount widens its input to int64
            m, step = len(self.per), 1 << 20
            self._counts = np.zeros(m, dtype=np.int64)
            for a in range(0, len(self.code), step):
                self._counts += np.bincount(self.code[a : a + step], minlength=m)[:m]
        return self._counts

    def sum(self) -> int:
        """Events per class times the class's value."""
        return int(self.counts() @ self.per.astype(np.int64))

    def count_nonzero(self) -> int:
        """Events of the classes whose value is not 0."""
        return int(self.counts()[self.per != 0].sum())


class Sparse(LazyColumn):
    """A per-event count that is 0 at most events (the lazy-MMU batch columns), kept as
    the events where it is not and its values there."""

    __slots__ = ("idx", "n", "values")

    def __init__(self, n: int, idx: np.ndarray, values: np.ndarray) -> None:
        """``values`` at events ``idx`` (in any order; of an event given twice the later
        value stands, as an assignment's would), 0 elsewhere."""
        order = np.argsort(idx, kind="stable")
        idx, values = idx[order], values[order]
        keep = values != 0
        keep[:-1] &= idx[1:] != idx[:-1]  # the last of an event's values
        self.n, self.idx, self.values = n, idx[keep], values[keep]

    @property
    def dtype(self) -> np.dtype:
        """The values' type."""
        return self.values.dtype

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, slice) or key.indices(self.n)[2] != 1:
            return np.asarray(self)[key]
        a, b, _ = key.indices(self.n)
        out = np.zeros(max(b - a, 0), dtype=self.values.dtype)
        i, j = np.searchsorted(self.idx, [a, b])
        out[self.idx[i:j] - a] = self.values[i:j]
        return out

    def __gt__(self, x: int) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        out[self.idx] = self.values > x
        return out

    def sum(self) -> int:
        """The values' sum."""
        return int(self.values.sum())

    def count_nonzero(self) -> int:
        """Events where the count is not 0."""
        return int(np.count_nonzero(self.values))


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
    native_cycles: ByClass
    """The trace's, under ``costs``: shared by every run, read a slice at a time."""
    mechanism: np.ndarray
    exits: np.ndarray
    hypercalls: np.ndarray
    traps: np.ndarray
    batch_flushes: Sparse
    batched: Sparse
    violations: Violations
    """In the table's order (:class:`replayer.engine.violations.Violations`)."""
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
