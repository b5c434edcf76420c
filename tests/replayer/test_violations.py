"""A run's violation rows, single and column-wise: one order, one table."""

from __future__ import annotations

import numpy as np
import pytest

from replayer.engine.result import Violation
from replayer.engine.violations import CHECK_ORDER, TEXT, ViolationBlock, Violations


def _block(check: str, seqs: list[int], fields: list[str]) -> ViolationBlock:
    names = sorted(set(fields))
    code = np.array([names.index(f) for f in fields], dtype=np.int64)
    zero = np.zeros(len(seqs), dtype=np.int64)
    return ViolationBlock(
        check,
        np.array(seqs, dtype=np.int64),
        {"field": code, "expected": zero, "actual": zero, "detail": code},
        {
            "field": names,
            "expected": ["CPL 1"],
            "actual": ["CPL 0"],
            "detail": [f"d {n}" for n in names],
        },
    )


def _rows(b: ViolationBlock) -> list[Violation]:
    return [b.row(i) for i in range(len(b))]


def test_rows_come_by_event_then_check_then_as_reported() -> None:
    a = Violation(5, "result", "save_fl", "1", "0", "x")
    b = _block("privilege", [9, 5, 1, 5], ["cli", "sti", "cli", "cli"])
    c = Violation(5, "privilege", "late", "CPL 1", "CPL 0", "y")
    d = Violation(1, "irq.masked", "vector 32", "", "", "z")
    v = Violations([a, b, c, d])
    flat = [a, *_rows(b), c, d]
    # Python's sort is stable: the order the engine's sort of the objects gave
    want = sorted(flat, key=lambda x: (x.seq, CHECK_ORDER[x.check]))
    assert [(x.seq, x.check, x.field) for x in v] == [(x.seq, x.check, x.field) for x in want]
    assert v == want and v[0] == want[0] and v[-1] == want[-1] and v[1:3] == want[1:3]
    assert v.counts()["privilege"] == 5 and v.counts()["result"] == 1
    assert sum(v.counts().values()) == len(v) == 7
    for col in TEXT:
        assert v.column(col) == [getattr(x, col) for x in want]
    assert v.checks() == [x.check for x in want]
    for col in ("check", *TEXT):  # what the table is written from
        codes, pool = v.coded(col)
        assert [pool[c] for c in codes.tolist()] == [getattr(x, col) for x in want]
    assert v.seqs().tolist() == [x.seq for x in want]
    with pytest.raises(IndexError):
        v[7]


def test_no_rows() -> None:
    v = Violations([_block("privilege", [], [])])
    assert len(v) == 0 and v == [] and not v and list(v) == []
    assert v.column("field") == [] and set(v.counts().values()) == {0}


def test_a_block_of_strings_codes_each_once() -> None:
    b = ViolationBlock.of(
        "irq.lost",
        np.array([4, 2, 9]),
        field="vector",
        expected=["0x20", "0x21", "0x20"],
        actual="never delivered",
        detail=["a", "b", "c"],
    )
    assert b.strings["expected"] == ["0x20", "0x21"] and b.codes["expected"].tolist() == [0, 1, 0]
    assert [b.row(i) for i in range(3)] == [
        Violation(4, "irq.lost", "vector", "0x20", "never delivered", "a"),
        Violation(2, "irq.lost", "vector", "0x21", "never delivered", "b"),
        Violation(9, "irq.lost", "vector", "0x20", "never delivered", "c"),
    ]
    assert [v.seq for v in Violations([b])] == [2, 4, 9]
