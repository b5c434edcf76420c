"""The decoded trace's helpers."""

from __future__ import annotations

import numpy as np

from pvscope.hooks import HOOKS
from replayer.trace import hooks_in


def test_hooks_in_answers_as_isin_does() -> None:
    """The lookup's answer is ``np.isin``'s, for every hook id and for events that are
    no hook call (-1), on the whole column, on part of it and on another dtype."""
    rng = np.random.default_rng(3)
    hook = rng.integers(-1, len(HOOKS), 50_000).astype(np.int16)
    for ids in ([], [0], [h.id for h in HOOKS[::3]], [len(HOOKS) - 1, 2, 2]):
        want = np.isin(hook, ids)
        assert (hooks_in(hook, ids) == want).all()
        assert (hooks_in(hook[::7], ids) == want[::7]).all()
        assert (hooks_in(hook.astype(np.int64), ids) == want).all()
    assert not hooks_in(hook, [0])[hook == -1].any()


def test_a_sparse_column_reads_as_the_array_it_stands_for() -> None:
    """By an event (from either end), a slice, an array of events or a mask, on columns
    of no, some and only nonzero values; an event past either end is an error."""
    import pytest

    from replayer.trace import Sparse64

    rng = np.random.default_rng(5)
    for dense in (
        np.zeros(0, dtype=np.uint64),
        np.zeros(50, dtype=np.uint64),
        np.where(rng.random(200) < 0.1, rng.integers(1, 1 << 63, 200), 0).astype(np.uint64),
        rng.integers(1, 1 << 63, 30).astype(np.uint64),
    ):
        col, n = Sparse64(dense), len(dense)
        assert len(col) == n
        for e in (0, 1, n // 2, n - 1, -1, -n):
            if -n <= e < n and n:
                assert col[e] == dense[e] and col[np.int64(e)] == dense[e]
        for a, b in ((None, None), (0, n), (3, 17), (n // 2, None), (-5, None), (7, 3)):
            assert (col[a:b] == dense[a:b]).all() and len(col[a:b]) == len(dense[a:b])
        idx = rng.integers(0, max(n, 1), 40) if n else np.zeros(0, dtype=np.int64)
        assert (col[idx] == dense[idx]).all()
        assert (col[-idx - 1 if n else idx] == dense[-idx - 1 if n else idx]).all()
        mask = rng.random(n) < 0.5
        assert (col[mask] == dense[mask]).all()
        assert col[mask].dtype == np.uint64
        with pytest.raises(IndexError):
            col[n]
        with pytest.raises(IndexError):
            col[np.array([n])]
