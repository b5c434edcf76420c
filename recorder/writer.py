"""Writing a trace: decode ROM-format records into the schema's columns, stream to Parquet.

Records arrive in the 40-byte layout the ROM writes (``recorder.rom.RECORD_FIELDS``),
whichever path logged them, and are decoded here in bulk with numpy.  Row groups
are cut at fixed row counts, so a trace's bytes do not depend on when the recorder
happened to drain.  Files are written into the directory the caller gives (a
temporary one; the caller renames it into place when the trace is complete).
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pvscope import schema
from pvscope.hooks import BY_NAME, HOOKS
from recorder.rom import CODE_EVENT_BASE, CODE_MARKER, HOOK_CODE_BASE, RECORD_FIELDS

RECORD_DTYPE = np.dtype(list(RECORD_FIELDS))
#: Event kinds in code order: record code CODE_EVENT_BASE + i is EVENT_CODES[i].
EVENT_CODES: tuple[str, ...] = tuple(k for k in schema.EVENT_KINDS if k != "hook")
KIND_NAMES: tuple[str, ...] = ("hook", *EVENT_CODES)
HOOK_NAMES: tuple[str, ...] = tuple(h.name for h in HOOKS)
ROW_GROUP = 1 << 20

_WRITE_CR3 = BY_NAME["write_cr3"].id
_RESULT_SLOTS = np.zeros(CODE_EVENT_BASE, dtype=np.int8)
#: Argument fields (a0..a3) a hook's record carries; the rest of a ring slot is left as the
#: slot's previous record had it (the recorder clears only a reused slot's code), so the
#: decoder zeroes them.
_ARG_FIELDS = np.zeros(CODE_EVENT_BASE, dtype=np.int8)
for _h in HOOKS:
    _RESULT_SLOTS[_h.id] = _h.result_slots
    _ARG_FIELDS[_h.id] = 3 if _h.jump else min(_h.slots, 4)

_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 6,
    "write_statistics": True,
    "use_dictionary": ["kind", "hook", "source", "component", "key", "type"],
    "data_page_size": 1 << 20,
    "write_page_checksum": True,  # a CRC per page: readers catch a flipped byte cheaply
}


def event_code(kind: str) -> int:
    """Record code of a non-hook event kind."""
    return CODE_EVENT_BASE + EVENT_CODES.index(kind)


class _Stream:
    """A Parquet file written in fixed-size row groups."""

    def __init__(self, path: Path, table: schema.Table) -> None:
        self.table = table
        self.writer = pq.ParquetWriter(path, table.arrow_schema(), **_PARQUET_OPTIONS)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows = 0

    def append(self, t: pa.Table) -> None:
        if t.num_rows == 0:
            return
        self.pending.append(t)
        self.pending_rows += t.num_rows
        while self.pending_rows >= ROW_GROUP:
            whole = pa.concat_tables(self.pending)
            self.writer.write_table(whole.slice(0, ROW_GROUP), row_group_size=ROW_GROUP)
            rest = whole.slice(ROW_GROUP)
            self.pending = [rest] if rest.num_rows else []
            self.pending_rows = rest.num_rows
            self.rows += ROW_GROUP

    def close(self) -> int:
        if self.pending_rows:
            whole = pa.concat_tables(self.pending)
            self.writer.write_table(whole, row_group_size=ROW_GROUP)
            self.rows += whole.num_rows
        self.writer.close()
        return self.rows


def _dict_array(indices: np.ndarray, names: tuple[str, ...], valid: np.ndarray | None = None):
    mask = None if valid is None else ~valid
    idx = pa.array(indices.astype(np.int8), type=pa.int8(), mask=mask)
    return pa.DictionaryArray.from_arrays(idx, pa.array(names, type=pa.string()))


class TraceWriter:
    """Streams one trace's tables into a directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.events = _Stream(self.dir / schema.EVENTS.file, schema.EVENTS)
        self.inputs = _Stream(self.dir / schema.INPUTS.file, schema.INPUTS)
        self.tlb = _Stream(self.dir / schema.TLB.file, schema.TLB)
        self.state = _Stream(self.dir / schema.STATE.file, schema.STATE)
        self.seq = 0
        self.vtime = 0
        self.cr3 = 0
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[int]] = []
        self.kind_counts = np.zeros(len(KIND_NAMES), dtype=np.int64)
        self.hook_counts = np.zeros(len(HOOK_NAMES), dtype=np.int64)

    def submit_records(self, raw: bytes) -> None:
        """Decode and write records on the writer's own thread, in submission order.

        Emulation (in unicorn, outside the GIL) then overlaps decoding and compression.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pvscope-writer")
        self._futures.append(self._pool.submit(self.add_records, raw))
        done = [f for f in self._futures if f.done()]
        for f in done:
            f.result()  # re-raise a writer error here rather than at the end
            self._futures.remove(f)

    def wait(self) -> None:
        """Wait until every submitted batch is written."""
        for f in self._futures:
            f.result()
        self._futures.clear()

    def add_records(self, raw: bytes | np.ndarray) -> int:
        """Decode a run of complete records (markers included); return events added."""
        rec = np.frombuffer(raw, dtype=RECORD_DTYPE) if isinstance(raw, bytes | bytearray) else raw
        if len(rec) == 0:
            return 0
        # virtual time: a record carries the low 32 bits of its exact vtime; the latest
        # marker before it (before the first, the one the previous batch ended with) is
        # within a quantum of it and gives the rest
        mpos = np.flatnonzero(rec["code"] == CODE_MARKER)
        if len(mpos):
            mvt = rec["a0"][mpos].astype(np.uint64) | (
                rec["a1"][mpos].astype(np.uint64) << np.uint64(32)
            )
            runs = np.diff(mpos, prepend=-1, append=len(rec)) - 1  # records between markers
            keep = np.ones(len(rec), dtype=bool)
            keep[mpos] = False
            rec = rec[keep]
            near = np.repeat(np.concatenate(([np.uint64(self.vtime)], mvt)), runs)
            self.vtime = int(mvt[-1])
        else:
            near = np.full(len(rec), self.vtime, dtype=np.uint64)
        delta = rec["vtime_lo"].astype(np.int64) - (near & np.uint64(0xFFFFFFFF)).astype(np.int64)
        delta = (delta + (1 << 31)) % (1 << 32) - (1 << 31)  # as a signed 32-bit difference
        vtime = (near.astype(np.int64) + delta).astype(np.uint64)
        code = rec["code"].astype(np.int32)
        code = np.where(code < CODE_EVENT_BASE, code - HOOK_CODE_BASE, code)  # hook ids
        n = len(rec)
        if n == 0:
            return 0
        # CR3 changes only through write_cr3 (a CPL 1 kernel cannot load it otherwise): an
        # event's CR3 is the value the latest write_cr3 before it loaded
        is_w = code == _WRITE_CR3
        last = np.maximum.accumulate(np.where(is_w, np.arange(n), -1))
        before = np.concatenate(([-1], last[:-1]))
        a0 = rec["a0"]
        cr3 = np.where(before >= 0, a0[np.maximum(before, 0)], np.uint32(self.cr3))
        cr3 = cr3.astype(np.uint32)
        if is_w.any():
            self.cr3 = int(a0[last[-1]])
        is_hook = code < CODE_EVENT_BASE
        kind_idx = np.where(is_hook, 0, code - CODE_EVENT_BASE + 1)
        hook_idx = np.where(is_hook, code, 0)
        slots = np.where(is_hook, _RESULT_SLOTS[np.minimum(code, CODE_EVENT_BASE - 1)], 0)
        nargs = np.where(is_hook, _ARG_FIELDS[np.minimum(code, CODE_EVENT_BASE - 1)], 4)
        args = [np.where(nargs > k, rec[f"a{k}"], np.uint32(0)) for k in range(4)]
        lo = rec["res_lo"].astype(np.uint64)
        hi = rec["res_hi"].astype(np.uint64) << np.uint64(32)
        result = np.where(slots == 2, lo | hi, lo)
        columns = [
            pa.array(np.arange(self.seq, self.seq + n, dtype=np.uint64)),
            pa.array(vtime),
            _dict_array(kind_idx, KIND_NAMES),
            _dict_array(hook_idx, HOOK_NAMES, valid=is_hook),
            pa.array(args[0]),
            pa.array(args[1]),
            pa.array(args[2]),
            pa.array(args[3]),
            pa.array(result, mask=slots == 0),
            pa.array(rec["site"]),
            pa.array((rec["cs"] & 3).astype(np.uint8)),
            pa.array((rec["eflags"] >> 9) & 1 == 1),
            pa.array(cr3),
        ]
        self.events.append(pa.Table.from_arrays(columns, schema=schema.EVENTS.arrow_schema()))
        self.kind_counts += np.bincount(kind_idx, minlength=len(KIND_NAMES))
        self.hook_counts += np.bincount(hook_idx[is_hook], minlength=len(HOOK_NAMES))
        self.seq += n
        return n

    def add_inputs(self, rows: list[tuple[int, int, str, int]]) -> None:
        """Append (seq, vtime, source, value) inputs."""
        if not rows:
            return
        seq, vtime, source, value = zip(*rows, strict=True)
        self.inputs.append(
            pa.Table.from_arrays(
                [
                    pa.array(seq, pa.uint64()),
                    pa.array(vtime, pa.uint64()),
                    pa.array(source, pa.string()).dictionary_encode().cast(schema.NAME),
                    pa.array(value, pa.uint64()),
                ],
                schema=schema.INPUTS.arrow_schema(),
            )
        )

    def add_tlb(self, rows: list[tuple[int, int, int, int, int]]) -> None:
        """Append (seq, vtime, user_pages, kernel_pages, global_pages) TLB samples."""
        if not rows:
            return
        cols = list(zip(*rows, strict=True))
        types = (pa.uint64(), pa.uint64(), pa.uint32(), pa.uint32(), pa.uint32())
        self.tlb.append(
            pa.Table.from_arrays(
                [pa.array(c, t) for c, t in zip(cols, types, strict=True)],
                schema=schema.TLB.arrow_schema(),
            )
        )

    def add_state(self, rows: list[tuple[int, int, str, str, int]]) -> None:
        """Append (seq, vtime, component, key, value) checkpoint rows."""
        if not rows:
            return
        seq, vtime, comp, key, value = zip(*rows, strict=True)
        self.state.append(
            pa.Table.from_arrays(
                [
                    pa.array(seq, pa.uint64()),
                    pa.array(vtime, pa.uint64()),
                    pa.array(comp, pa.string()).dictionary_encode().cast(schema.NAME),
                    pa.array(key, pa.string()).dictionary_encode().cast(schema.NAME),
                    pa.array(value, pa.uint64()),
                ],
                schema=schema.STATE.arrow_schema(),
            )
        )

    def write_symbols(self, symbols: list[tuple[str, int, int, str]]) -> None:
        """Write the guest's symbol table."""
        names, addrs, sizes, types = zip(*symbols, strict=True) if symbols else ((), (), (), ())
        t = pa.Table.from_arrays(
            [
                pa.array(names, pa.string()),
                pa.array(addrs, pa.uint32()),
                pa.array(sizes, pa.uint32()),
                pa.array(types, pa.string()).dictionary_encode().cast(schema.NAME),
            ],
            schema=schema.SYMBOLS.arrow_schema(),
        )
        pq.write_table(t, self.dir / schema.SYMBOLS.file, **_PARQUET_OPTIONS)

    def close(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Finish every file and write the manifest (with counts) last."""
        self.wait()
        if self._pool is not None:
            self._pool.shutdown()
        counts = {
            "events": self.events.close(),
            "inputs": self.inputs.close(),
            "tlb": self.tlb.close(),
            "state": self.state.close(),
            "by_kind": {k: int(c) for k, c in zip(KIND_NAMES, self.kind_counts, strict=True) if c},
            "by_hook": {h: int(c) for h, c in zip(HOOK_NAMES, self.hook_counts, strict=True) if c},
        }
        manifest = {**manifest, "counts": {**manifest.get("counts", {}), **counts}}
        manifest["files"] = schema.file_digests(self.dir)
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        (self.dir / "manifest.json").write_text(text)
        return manifest
