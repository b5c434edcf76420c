"""Runs of entry stores applied with numpy: the array halves of the ``*_many`` methods.

A run of stores is given as flat entries (``pfn * 1024 + idx``) and values, in the
order the guest made them; an entry may repeat.  Below :data:`VEC_MIN` stores the
callers keep their per-store Python loops (numpy's fixed cost per call is larger than
the loop there); from it on they call these.  Both give the same state: tests run
the engine with the threshold at 0 and at infinity and compare every result.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

#: Runs of at least this many stores take the array path.  On fork, two thirds of the
#: stores come in runs of 32-64 (a fork's copied tables): below 128 the loops take them
#: faster than numpy's dozen calls a run (48 -> 128: lguest told of no store's walk
#: 28.8 s -> 24.8 s, the empty copies' judge 15.2 s -> 14.1 s; the other runs the same).
VEC_MIN = 128


def entries(x: Sequence[int] | np.ndarray) -> np.ndarray:
    """Flat entries (or values) as an int64 array."""
    return np.asarray(x, dtype=np.int64)


def _by_entry(es: np.ndarray, vs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stores sorted by entry, keeping their order per entry, and which follow a
    store to the same entry (``same[i]``: store ``i + 1`` repeats store ``i``'s entry)."""
    order = np.argsort(es, kind="stable")
    se, sv = es[order], vs[order]
    return se, sv, se[1:] == se[:-1]


def in_sequence(mem: np.ndarray, es: np.ndarray, vs: np.ndarray) -> tuple[np.ndarray, ...]:
    """The stores sorted by entry, keeping their order per entry: ``(entries, values,
    olds, last)`` where ``olds[i]`` is what store ``i`` overwrote (the entry's value in
    ``mem`` for its first store, the previous store's value after) and ``last`` marks
    each entry's final store."""
    if (es[1:] > es[:-1]).all():  # entries rising, each once (a table filled in order)
        return es, vs, mem[es].astype(np.int64), np.ones(len(es), dtype=bool)
    se, sv, same = _by_entry(es, vs)
    olds = mem[se].astype(np.int64)
    if same.any():
        olds[1:][same] = sv[:-1][same]
    last = np.append(~same, True)
    return se, sv, olds, last


def final(es: np.ndarray, vs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each entry once, sorted, with the value its last store left."""
    if (es[1:] > es[:-1]).all():
        return es, vs
    se, sv, same = _by_entry(es, vs)
    last = np.append(~same, True)
    return se[last], sv[last]


def by_frame(sorted_entries: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(pfn, indices)`` for each frame of sorted flat entries, in frame order."""
    pf = sorted_entries >> 10
    cut = np.flatnonzero(pf[1:] != pf[:-1]) + 1
    starts = np.concatenate(([0], cut)).tolist()
    ends = np.concatenate((cut, [len(pf)])).tolist()
    for a, b in zip(starts, ends, strict=True):
        yield int(pf[a]), sorted_entries[a:b] & 1023


def frames_of(es: np.ndarray) -> list[int]:
    """The distinct frames a run of entries touches, sorted."""
    pf = es >> 10
    lo = int(pf.min())
    if lo == int(pf.max()):
        return [lo]  # the usual run: one table
    out: list[int] = np.unique(pf).tolist()
    return out


def in_frames(es: np.ndarray, frames: list[int]) -> np.ndarray:
    """Which entries lie in one of ``frames``."""
    if len(frames) == 1:
        return (es >> 10) == frames[0]
    return np.isin(es >> 10, frames)
