"""A run's violation rows, kept column-wise where a check makes many.

Takes the rows a replay's passes report, in the order they report them: single
:class:`~replayer.engine.result.Violation` rows, and :class:`ViolationBlock` s -- the
rows of one check made at once, each string column as codes into the strings it says
(most rows repeat a few).  Gives :class:`Violations`, those rows in the table's order
(by event, then by check, then as reported): a sequence of
:class:`~replayer.engine.result.Violation` made only for the rows read one by one, the
counts per check and the columns of ``violations.parquet`` made from the codes.

A ``--fallback none`` ablation reports a row at most events (668,288 ``privilege`` rows
for each ``-without-cpl-none`` on fork, 521,545 ``mmu.missing`` for each copy that stays
empty): an object per row took seconds a run to make, sort, count and write, and the
rows' memory through the write.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from replayer.engine.result import CHECKS, Violation

#: Each check's place in :data:`CHECKS` (the order of one event's rows).
CHECK_ORDER = {name: i for i, name in enumerate(CHECKS)}
#: The string columns of a row, in the table's order.
TEXT = ("field", "expected", "actual", "detail")


@dataclass
class ViolationBlock:
    """Rows of one check, column-wise: per row its event and, per string column of
    :data:`TEXT`, a code into that column's strings."""

    check: str
    seq: np.ndarray
    codes: dict[str, np.ndarray]
    strings: dict[str, list[str]]

    @classmethod
    def of(
        cls, check: str, seq: np.ndarray, **cols: str | list[str] | tuple[np.ndarray, list[str]]
    ) -> ViolationBlock:
        """Rows of ``check`` at events ``seq``, each column of :data:`TEXT` given as one
        string for every row, a list of one per row (each string coded once), or codes
        already made and the strings they index."""
        codes: dict[str, np.ndarray] = {}
        strings: dict[str, list[str]] = {}
        for c in TEXT:
            v = cols[c]
            if isinstance(v, str):
                codes[c], strings[c] = np.zeros(len(seq), dtype=np.int64), [v]
            elif isinstance(v, tuple):
                codes[c], strings[c] = np.asarray(v[0], dtype=np.int64), v[1]
            else:
                said: dict[str, int] = {}
                codes[c] = np.fromiter((said.setdefault(x, len(said)) for x in v), np.int64, len(v))
                strings[c] = list(said)
        return cls(check, np.asarray(seq, dtype=np.int64), codes, strings)

    def __len__(self) -> int:
        return len(self.seq)

    def row(self, i: int) -> Violation:
        """Row ``i`` as a :class:`Violation`."""
        s = [self.strings[c][int(self.codes[c][i])] for c in TEXT]
        return Violation(int(self.seq[i]), self.check, *s)


#: What a pass reports: single rows and blocks, in the order reported.
Reported = list[Violation | ViolationBlock]


class Violations(Sequence[Violation]):
    """A run's rows in the table's order: by event, then by check (:data:`CHECKS`), then
    as reported."""

    def __init__(self, reported: Sequence[Violation | ViolationBlock] = ()) -> None:
        self._singles: list[Violation] = []
        self._blocks: list[ViolationBlock] = []
        # every row's chunk (-1: a single row) and place in it, in the order reported; a
        # run of single rows is one piece
        chunk: list[np.ndarray] = []
        at: list[np.ndarray] = []
        seq: list[np.ndarray] = []
        check: list[np.ndarray] = []
        run: list[Violation] = []

        def singles_done() -> None:
            if run:
                k = len(self._singles)
                chunk.append(np.full(len(run), -1))
                at.append(np.arange(k, k + len(run)))
                seq.append(np.fromiter((v.seq for v in run), np.int64, len(run)))
                check.append(np.fromiter((CHECK_ORDER[v.check] for v in run), np.int64, len(run)))
                self._singles.extend(run)
                run.clear()

        for v in reported:
            if isinstance(v, Violation):
                run.append(v)
            elif len(v):
                singles_done()
                chunk.append(np.full(len(v), len(self._blocks)))
                at.append(np.arange(len(v)))
                seq.append(np.asarray(v.seq, dtype=np.int64))
                check.append(np.full(len(v), CHECK_ORDER[v.check]))
                self._blocks.append(v)
        singles_done()
        if chunk:
            c, a = np.concatenate(chunk), np.concatenate(at)
            s, o = np.concatenate(seq), np.concatenate(check)
            order = np.lexsort((o, s))  # stable: ties stay as reported
            self._chunk, self._at = c[order], a[order]
            self._seq, self._check = s[order], o[order]
        else:
            self._chunk = self._at = self._seq = self._check = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._chunk)

    def _row(self, i: int) -> Violation:
        c, a = int(self._chunk[i]), int(self._at[i])
        return self._singles[a] if c < 0 else self._blocks[c].row(a)

    @overload
    def __getitem__(self, i: int) -> Violation: ...
    @overload
    def __getitem__(self, i: slice) -> list[Violation]: ...
    def __getitem__(self, i: int | slice) -> Violation | list[Violation]:
        if isinstance(i, slice):
            return [self._row(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._row(i)

    def __iter__(self) -> Iterator[Violation]:
        return (self._row(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Violations | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __repr__(self) -> str:
        return f"Violations({len(self)} rows: {self[:3]}{'...' if len(self) > 3 else ''})"

    def counts(self) -> dict[str, int]:
        """Rows per check, every check of :data:`CHECKS` named."""
        n = np.bincount(self._check, minlength=len(CHECKS)) if len(self) else [0] * len(CHECKS)
        return {name: int(n[i]) for i, name in enumerate(CHECKS)}

    def seqs(self) -> np.ndarray:
        """Each row's event, in order."""
        return self._seq

    def checks(self) -> list[str]:
        """Each row's check, in order."""
        return np.asarray(CHECKS, dtype=object)[self._check].tolist()

    def coded(self, name: str) -> tuple[np.ndarray, list[str]]:
        """Column ``name`` (``check`` or one of :data:`TEXT`) as a code per row, in order,
        into the strings it says: a writer makes the column from them without a string
        object per row (half a million rows a run are common)."""
        if name == "check":
            return self._check, list(CHECKS)
        codes = np.empty(len(self), dtype=np.int64)
        single = self._chunk < 0
        said: dict[str, int] = {}
        row_strings = (getattr(self._singles[a], name) for a in self._at[single].tolist())
        codes[single] = [said.setdefault(x, len(said)) for x in row_strings]
        pool = list(said)
        for b, block in enumerate(self._blocks):
            mine = self._chunk == b
            codes[mine] = len(pool) + block.codes[name][self._at[mine]]
            pool.extend(block.strings[name])
        return codes, pool

    def column(self, name: str) -> list[str]:
        """Each row's string in column ``name`` of :data:`TEXT`, in order."""
        codes, pool = self.coded(name)
        return np.asarray(pool, dtype=object)[codes].tolist() if len(codes) else []
