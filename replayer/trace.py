"""A trace as the replayer reads it: the event stream decoded into numpy arrays.

The replay never runs the guest; it walks the recorded stream.  Everything it
needs is decoded once, here, into flat arrays (one element per event) so that
the per-backend passes can be vectorized: kinds and hook names become small
integer codes, nullable results become a value array and a mask.  Checkpoints
from ``state.parquet`` are grouped by the index of the event they follow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pvscope import schema
from pvscope.errors import TraceError
from pvscope.hooks import BY_NAME, HOOKS

#: Event kinds in schema order; ``Trace.kind`` holds indices into this tuple (-1: unknown).
KINDS: tuple[str, ...] = tuple(schema.EVENT_KINDS)
K_HOOK = KINDS.index("hook")
K_INTERRUPT = KINDS.index("interrupt")
K_EXCEPTION = KINDS.index("exception")
K_MMIO_READ = KINDS.index("mmio_read")
K_MMIO_WRITE = KINDS.index("mmio_write")
#: Kinds that only newer schema texts name; absent ones get code -2 (never matched).
K_IRQ_RAISE = KINDS.index("irq_raise") if "irq_raise" in KINDS else -2
K_SOFTINT = KINDS.index("softint") if "softint" in KINDS else -2

#: Hook ids by name, for readable engine code.
HOOK_ID: dict[str, int] = {h.name: h.id for h in HOOKS}


class Sparse64:
    """A per-event uint64 column that is mostly 0, kept as the events where it is not
    (ascending) and their values: read like the array it stands for, by an event, a
    slice (step 1), an array of events or a mask (the hook results: a tenth of irqstorm's
    events have one, and the whole column was 130 MiB in every process)."""

    __slots__ = ("n", "at", "values")

    def __init__(self, dense: np.ndarray) -> None:
        self.n = len(dense)
        self.at = np.flatnonzero(dense)
        self.values = np.ascontiguousarray(dense[self.at], dtype=np.uint64)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            e = int(key) + (self.n if key < 0 else 0)
            if not 0 <= e < self.n:
                raise IndexError(key)
            i = int(np.searchsorted(self.at, e))
            found = i < len(self.at) and self.at[i] == e
            return self.values[i] if found else np.uint64(0)
        if isinstance(key, slice):
            start, stop, step = key.indices(self.n)
            if step != 1:
                raise ValueError("a sparse column is sliced with step 1")
            out = np.zeros(max(stop - start, 0), dtype=np.uint64)
            lo, hi = np.searchsorted(self.at, (start, stop))
            out[self.at[lo:hi] - start] = self.values[lo:hi]
            return out
        asked = np.asarray(key)
        if asked.dtype == bool:
            if len(asked) != self.n:
                raise IndexError("a mask of another length")
            asked = np.flatnonzero(asked)
        k = asked.astype(np.int64, copy=False)
        k = np.where(k < 0, k + self.n, k)
        if len(k) and (k.min() < 0 or k.max() >= self.n):
            raise IndexError("an event past the column")
        out = np.zeros(k.shape, dtype=np.uint64)
        if len(self.at):
            pos = np.minimum(np.searchsorted(self.at, k), len(self.at) - 1)
            hit = self.at[pos] == k
            out[hit] = self.values[pos[hit]]
        return out


@dataclass
class Trace:
    """One trace, decoded.  Arrays are indexed by event position (== seq)."""

    path: Path
    manifest: dict[str, Any]
    n: int
    vtime: np.ndarray
    """uint64 virtual time of each event."""
    kind: np.ndarray
    """int8 index into :data:`KINDS` (-1 for a kind this reader does not know)."""
    hook: np.ndarray
    """int16 hook id (``pvscope.hooks.HOOKS`` index), -1 for non-hook events."""
    arg0: np.ndarray
    arg1: np.ndarray
    arg2: np.ndarray
    arg3: np.ndarray
    result: Sparse64
    """uint64 result, 0 where null (kept sparse, read as an array)."""
    has_result: np.ndarray
    """bool: the result column is not null."""
    cpl: np.ndarray
    vif: np.ndarray
    """bool: the guest's EFLAGS.IF when the event happened (before its effect).  (The
    events' ``cr3`` column is not decoded: no replay reads it, and on a 17 M-event trace
    it was 65 MiB in every worker.)"""
    checkpoints: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)
    """Event index -> component -> key -> value, for each checkpoint in ``state.parquet``."""
    tlb: dict[str, np.ndarray] = field(default_factory=dict)
    """The recorder's TLB samples (``tlb.parquet``): seq, user_pages, kernel_pages,
    global_pages, one entry per full flush and one at the end."""
    events_sha256: str = ""
    """sha256 of ``events.parquet``: names the trace in replay manifests."""
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """What every replay of this trace derives alike (decoded entries, the guest's own
    checks), kept by the replay engine so that runs after the first reuse it.  A trace's
    arrays are never changed after loading."""

    @property
    def name(self) -> str:
        """The trace directory's name."""
        return self.path.name


def _codes(col: pa.ChunkedArray, table: dict[str, int], what: str, path: Path) -> np.ndarray:
    """Dictionary/string column -> int16 codes via ``table``; null -> -1; unknown -> error."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    names = arr.dictionary.to_pylist()
    lut = np.full(len(names) + 1, -1, dtype=np.int16)
    for i, name in enumerate(names):
        if name is None:
            continue
        code = table.get(name)
        if code is None:
            if what == "kind":
                continue  # a kind this reader does not model: kept, never matched
            raise TraceError(f"{path}: unknown {what} {name!r}")
        lut[i] = code
    idx = arr.indices.to_numpy(zero_copy_only=False)
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        idx = np.where(valid, idx, len(names))
    return lut[idx.astype(np.int64)]


def _u(table: pa.Table, name: str, dtype: str) -> np.ndarray:
    return _as(table.column(name), dtype)


def _as(col: pa.ChunkedArray, dtype: str) -> np.ndarray:
    if col.null_count:
        col = col.fill_null(0)
    return np.ascontiguousarray(col.to_numpy().astype(dtype, copy=False))


def load(path: Path) -> Trace:
    """Read and decode a trace directory; raise :class:`TraceError` naming what is wrong.

    The events are read a column at a time: what is held at once is the decoded columns
    and one column as Parquet gives it."""
    path = Path(path)
    manifest = schema.read_manifest(path)
    pf = schema.open_table(path, "events")
    file = path / schema.EVENTS.file
    state = schema.read_table(path, "state")
    n = pf.metadata.num_rows

    def column(name: str) -> pa.ChunkedArray:
        pa.default_memory_pool().release_unused()  # the column before it is decoded
        return schema.read_columns(pf, file, [name]).column(name)

    try:
        seq = _as(column("seq"), "uint64")
        if n and not np.array_equal(seq, np.arange(n, dtype=np.uint64)):
            raise TraceError(f"{file}: seq is not 0, 1, 2, ... in order")
        del seq
        kind = _codes(column("kind"), {k: i for i, k in enumerate(KINDS)}, "kind", path)
        hook = _codes(column("hook"), {h: i for h, i in HOOK_ID.items()}, "hook", path)
        res = column("result")
        has_result = (
            res.is_valid().to_numpy(zero_copy_only=False)
            if res.null_count
            else np.ones(n, dtype=bool)
        )
        result = Sparse64(_as(res, "uint64"))
        del res
        trace = Trace(
            path=path,
            manifest=manifest,
            n=n,
            vtime=_as(column("vtime"), "uint64"),
            kind=kind.astype(np.int8),
            hook=np.where(kind == K_HOOK, hook, -1).astype(np.int16),
            arg0=_as(column("arg0"), "uint32"),
            arg1=_as(column("arg1"), "uint32"),
            arg2=_as(column("arg2"), "uint32"),
            arg3=_as(column("arg3"), "uint32"),
            result=result,
            has_result=np.asarray(has_result, dtype=bool),
            cpl=_as(column("cpl"), "uint8"),
            vif=_as(column("vif"), "bool"),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
        raise TraceError(f"{file}: corrupt event columns ({e})") from None
    trace.checkpoints = _checkpoints(state, n, path)
    tlb = schema.read_table(path, "tlb")
    try:
        trace.tlb = {
            c: _u(tlb, c, "uint64") for c in ("seq", "user_pages", "kernel_pages", "global_pages")
        }
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
        raise TraceError(f"{path / 'tlb.parquet'}: corrupt columns ({e})") from None
    # read_manifest has checked the file against the manifest's hash: no need to hash again
    known = manifest.get("files", {}).get(schema.EVENTS.file, {}).get("sha256")
    trace.events_sha256 = known or schema.sha256_of(path / schema.EVENTS.file)
    del state, tlb
    pa.default_memory_pool().release_unused()  # the decoded columns are all that stays
    return trace


def _checkpoints(state: pa.Table, n: int, path: Path) -> dict[int, dict[str, dict[str, int]]]:
    out: dict[int, dict[str, dict[str, int]]] = {}
    if state.num_rows == 0:
        return out
    seqs, comps, keys, vals = (
        _pylist(state.column(c)) for c in ("seq", "component", "key", "value")
    )
    for s, c, k, v in zip(seqs, comps, keys, vals, strict=True):
        if s is None or c is None or k is None or v is None:
            raise TraceError(f"{path / 'state.parquet'}: null in a checkpoint row")
        if s >= n:
            raise TraceError(f"{path / 'state.parquet'}: checkpoint after seq {s}, past the end")
        out.setdefault(int(s), {}).setdefault(str(c), {})[str(k)] = int(v)
    return out


def _pylist(col: pa.ChunkedArray) -> list:
    """A column's values as Python objects (a dictionary-encoded one decoded first: its
    own to_pylist goes element by element, ten times slower)."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col.to_pylist()


def hooks_in(hook: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """Per event of ``hook`` (a trace's hook column or part of it: int16, -1 for an event
    that is no hook call): whether its hook is one of ``ids``.  ``np.isin``'s answer, by a
    table lookup (``np.isin`` took 90 ms on 10.5 M events, the lookup 15 ms)."""
    if hook.dtype != np.int16:
        return np.isin(hook, list(ids))
    table = np.zeros(1 << 16, dtype=bool)
    table[np.asarray(list(ids), dtype=np.int64) & 0xFFFF] = True
    return table[hook.view(np.uint16)]


def hook_ids(*names: str) -> list[int]:
    """Hook ids of the named hooks (KeyError naming an unknown one)."""
    return [BY_NAME[n].id if n in BY_NAME else _unknown(n) for n in names]


def _unknown(name: str) -> int:
    raise KeyError(f"unknown hook {name!r}")
