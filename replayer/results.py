"""Writing replay results: Hive-partitioned Parquet, one directory per backend, atomically.

``RESULTS/backend=LABEL/`` (``RESULTS`` defaults to ``TRACE/replay``) holds:

* ``events.parquet``     -- per event: seq, cycles, native_cycles, mechanism, exits,
  hypercalls, traps, batch_flushes, batched (the ``replay`` view);
* ``violations.parquet`` -- seq, check, field, expected, actual, detail;
* ``interrupts.parquet`` -- per recorded interrupt: when raised, when the backend
  delivers it, latency in events and virtual time, status;
* ``groups.parquet``     -- per hook group: events, cycles, native cycles, counters;
* ``reasons.parquet``    -- per exit reason (mechanism and event, ``replayer.exitstat``):
  events, exits, hypercalls, traps, cycles -- what the saved query ``exit_reasons``
  reads, rather than joining every run's per-event rows to the trace's;
* ``summary.parquet``    -- one row (the ``summary`` view); ``estimate_share`` and
  ``whole_run_estimate_share`` (the shares of the interface and whole-run cycles priced
  by estimates, ``replayer.engine.provenance``) are null for ablations;
* ``costs.parquet``      -- the cost table used, with every number's source;
* ``manifest.json``      -- the trace (name, events sha256), backend, ablation, cost
  table (name, origin, sha256) and the summary.

Each directory is built as a hidden sibling and renamed into place.  Nothing
here depends on wall-clock time or dict order: the same trace, backend and
cost table give the same bytes.

``RESULTS/results.json`` (the index) names the runs planned and what they were replayed
from and under: the trace (name, path as given and resolved, the sha256 of its events
and of its manifest) and the cost table (name, sha256, origin, and for a file its path),
so that readers can find the trace of results kept anywhere.  A replay under several
cost tables writes one ``RESULTS/costs=NAME/`` results directory per table, and an
index at the top naming the trace and the tables.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pvscope import __version__
from pvscope.errors import TraceError
from pvscope.schema import REASONS, REPLAY, check_file, sha256_of
from replayer import exitstat
from replayer.backends import MECHANISMS
from replayer.engine import CHECKS, FAMILIES, RunResult
from replayer.engine.violations import TEXT

#: Results format version (in every file's schema metadata and the manifest).
RESULTS_VERSION = 2
META = {b"pvscope.replay": json.dumps({"results_version": RESULTS_VERSION}).encode()}
_OPTS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": ["mechanism", "check", "group", "status"],
    # min/max statistics for seq only (what a reader prunes row groups by): for every
    # column they took over a third of the time writing a run's events took
    "write_statistics": ["seq"],
    "write_page_checksum": True,
    # seq runs 0, 1, 2, ...: delta-coded it is a few bytes a page instead of most of the
    # file, and a quarter of the time writing takes
    "column_encoding": {"seq": "DELTA_BINARY_PACKED"},
}
#: ``events.parquet``'s: a run's cycles take a few dozen values (a cost class's each) and
#: are dictionary-coded like its mechanism, and LZ4 compresses where zstd took most of the
#: time.  On fork's 10.6 M events (vmi) a run's events wrote in 0.34 s instead of 0.49 s,
#: in a file of the same size (10.3 MB), that DuckDB sums 40 % faster.
_EVENTS_OPTS: dict[str, Any] = {
    **{k: v for k, v in _OPTS.items() if k != "compression_level"},
    "compression": "lz4",
    "use_dictionary": ["mechanism", "cycles", "native_cycles"],
}
ROW_GROUP = 1 << 20
STATUS = ("ok", "masked", "lost")
#: ``events.parquet``'s columns as ``pvscope.schema.REPLAY`` declares them: none may be
#: null, so Parquet stores them as required, without a definition level per value (on
#: fork's 10.6 M events, writing took 0.49 s instead of 0.75 s, the file the same size).
EVENTS_SCHEMA = pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in REPLAY.columns])


def _dict(codes: np.ndarray, names: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int8, copy=False)), pa.array(list(names), pa.string())
    )


def _write(table: pa.Table, path: Path, opts: dict[str, Any] = _OPTS) -> None:
    table = table.replace_schema_metadata(META)
    pq.write_table(table, path, row_group_size=ROW_GROUP, **opts)


def events_table(r: RunResult, start: int = 0, stop: int | None = None) -> pa.Table:
    """Per-event results (of events ``start`` to ``stop``)."""
    end = r.trace.n if stop is None else min(stop, r.trace.n)
    part = slice(start, end)
    return pa.table(
        {
            "seq": pa.array(np.arange(start, end, dtype=np.uint64)),
            "cycles": pa.array(r.cycles[part]),
            "native_cycles": pa.array(r.native_cycles[part]),
            "mechanism": _dict(r.mechanism[part], MECHANISMS),
            "exits": pa.array(r.exits[part]),
            "hypercalls": pa.array(r.hypercalls[part]),
            "traps": pa.array(r.traps[part]),
            "batch_flushes": pa.array(r.batch_flushes[part]),
            "batched": pa.array(r.batched[part]),
        },
        schema=EVENTS_SCHEMA,
    )


def _write_by_groups(
    n: int, rows: Callable[[int, int], pa.Table], path: Path, opts: dict[str, Any] = _OPTS
) -> None:
    """A table of ``n`` rows made ``rows(start, stop)`` a row group at a time: the file
    :func:`_write` makes of the whole, without Arrow copies of every row at once."""
    if n <= ROW_GROUP:
        _write(rows(0, n), path, opts)
        return
    schema = rows(0, 0).schema.with_metadata(META)
    with pq.ParquetWriter(path, schema, **opts) as w:
        for a in range(0, n, ROW_GROUP):
            w.write_table(rows(a, a + ROW_GROUP), row_group_size=ROW_GROUP)


def _write_events(r: RunResult, path: Path) -> None:
    """``events.parquet``, a row group at a time (:func:`_write_by_groups`): no Arrow copy
    of every column (and of ``seq``) beside the run's own."""
    _write_by_groups(r.trace.n, partial(events_table, r), path, _EVENTS_OPTS)


def violations_table(r: RunResult) -> pa.Table:
    """Violation rows."""
    return _Violations(r).rows(0, len(r.violations))


class _Violations:
    """A run's violation rows as Arrow columns, any range of rows at a time: a code per row
    into each string column's strings (made once), the strings taken per range."""

    def __init__(self, r: RunResult) -> None:
        v = r.violations
        self.n = len(v)
        self.seqs = v.seqs().astype(np.uint64)
        self.cols = {c: v.coded(c) for c in ("check", *TEXT)}
        self.pools = {c: pa.array(pool, pa.string()) for c, (_, pool) in self.cols.items()}

    def rows(self, start: int, stop: int) -> pa.Table:
        """Rows ``start`` to ``stop``."""
        return pa.table(
            {
                "seq": pa.array(self.seqs[start:stop], pa.uint64()),
                **{
                    c: self.pools[c].take(pa.array(codes[start:stop], pa.int64()))
                    for c, (codes, _) in self.cols.items()
                },
            }
        )


def _write_violations(r: RunResult, path: Path) -> None:
    """``violations.parquet``, a row group at a time (:func:`_write_by_groups`): a
    ``cpl-none`` ablation has a row per privileged hook (668,000 on fork), and a trace
    twice as long would hold every row's strings at once."""
    v = _Violations(r)
    _write_by_groups(v.n, v.rows, path)


def interrupts_table(r: RunResult) -> pa.Table:
    """Per recorded interrupt: raise, native and backend delivery, latency."""
    i = r.interrupts
    ok = i["delivered_seq"] >= 0
    return pa.table(
        {
            "seq": pa.array(i["seq"]),
            "vector": pa.array(i["vector"]),
            "source": pa.array(i["source"]),
            "raised_seq": pa.array(i["raised_seq"]),
            "delivered_seq": pa.array(i["delivered_seq"].astype(np.uint64), mask=~ok),
            "latency_events": pa.array(i["latency_events"], mask=~ok),
            "latency_vtime": pa.array(i["latency_vtime"], mask=~ok),
            "native_latency_events": pa.array(i["native_latency_events"]),
            "native_latency_vtime": pa.array(i["native_latency_vtime"]),
            "status": _dict(i["status"], STATUS),
        }
    )


def groups_table(r: RunResult) -> pa.Table:
    """Totals per hook group (other events by kind)."""
    g = r.summary["groups"]
    names = sorted(g)
    cols: dict[str, Any] = {"group": pa.array(names, pa.string())}
    for k in ("events", "cycles", "native_cycles", "exits", "hypercalls", "traps"):
        cols[k] = pa.array([g[n][k] for n in names], pa.uint64())
    cols["batch_flushes"] = pa.array([g[n]["batch_flushes"] for n in names], pa.uint64())
    return pa.table(cols)


def reasons_table(r: RunResult) -> pa.Table:
    """Totals per exit reason, most cycles first (:func:`replayer.exitstat.from_result`)."""
    rows = exitstat.from_result(r)
    return pa.table({c.name: pa.array([x[c.name] for x in rows], c.type) for c in REASONS.columns})


def summary_table(r: RunResult) -> pa.Table:
    """The one-row summary."""
    s = r.summary
    first = s["first_divergence"] or {}
    ints = s["interrupts"]
    row: dict[str, Any] = {
        "base": pa.array([s["base"]], pa.string()),
        "without": pa.array([s["without"]], pa.string()),
        "fallback": pa.array([s["fallback"]], pa.string()),
        "trace": pa.array([s["trace"]], pa.string()),
        "events": pa.array([s["events"]], pa.uint64()),
        "cost_table": pa.array([s["cost_table"]], pa.string()),
        "cost_sha256": pa.array([s["cost_sha256"]], pa.string()),
        "cycles": pa.array([s["cycles"]], pa.uint64()),
        "native_cycles": pa.array([s["native_cycles"]], pa.uint64()),
        "interface_ratio": pa.array([s["interface_ratio"]], pa.float64()),
        "estimate_share": pa.array([s.get("estimate_share")], pa.float64()),
    }
    w = s["whole_run"]
    row["whole_run_slowdown"] = pa.array([w["slowdown"]], pa.float64())
    row["whole_run_estimate_share"] = pa.array([w.get("estimate_share")], pa.float64())
    row["whole_run_cycles"] = pa.array([w["cycles"]], pa.uint64())
    row["native_whole_run_cycles"] = pa.array([w["native_cycles"]], pa.uint64())
    row["guest_cycles"] = pa.array([w["guest_cycles"]], pa.uint64())
    row["tlb_cycles"] = pa.array([w["tlb_cycles"]], pa.uint64())
    row["tlb_refills"] = pa.array([w["tlb_refills"]], pa.uint64())
    for k in ("exits", "hypercalls", "traps", "batch_flushes", "batched", "violations"):
        row[k] = pa.array([s[k]], pa.uint64())
    for fam in FAMILIES:
        row[f"{fam}_violations"] = pa.array([s["families"].get(fam, 0)], pa.uint64())
    row["first_seq"] = pa.array([first.get("seq")], pa.uint64())
    row["first_check"] = pa.array([first.get("check")], pa.string())
    row["first_detail"] = pa.array([first.get("detail")], pa.string())
    for k in ("recorded", "delivered", "masked", "lost"):
        row[f"interrupts_{k}"] = pa.array([ints[k]], pa.uint64())
    row["latency_events_mean"] = pa.array([ints["latency_events_mean"]], pa.float64())
    row["latency_events_max"] = pa.array([ints["latency_events_max"]], pa.uint64())
    row["latency_vtime_mean"] = pa.array([ints["latency_vtime_mean"]], pa.float64())
    row["latency_vtime_max"] = pa.array([ints["latency_vtime_max"]], pa.uint64())
    return pa.table(row)


def costs_table(r: RunResult) -> pa.Table:
    """The cost table used."""
    t = r.costs
    names = list(t.cycles)
    return pa.table(
        {
            "table": pa.array([t.name] * len(names), pa.string()),
            "primitive": pa.array(names, pa.string()),
            "cycles": pa.array([t.cycles[n] for n in names], pa.uint64()),
            "source": pa.array([t.sources[n] for n in names], pa.string()),
        }
    )


def manifest(r: RunResult) -> dict[str, Any]:
    """What the results directory is: trace, backend, ablation, cost table, summary."""
    tr, run, t = r.trace, r.run, r.costs
    return {
        "results_version": RESULTS_VERSION,
        "pvscope_version": __version__,
        "trace": {
            "name": tr.name,
            "events": tr.n,
            "events_sha256": tr.events_sha256,
            "guest": tr.manifest.get("guest"),
            "schema_version": tr.manifest.get("schema_version"),
        },
        "backend": run.label,
        "base": run.backend.name,
        "ablation": None
        if run.without is None
        else {"without": run.without, "fallback": run.fallback},
        "cost_table": {"name": t.name, "cpu": t.cpu, "origin": t.origin, "sha256": t.sha256},
        "checks": list(CHECKS),
        "summary": r.summary,
    }


def write(r: RunResult, root: Path) -> Path:
    """Write one replay's results under ``root/backend=LABEL``, atomically; return it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"backend={r.run.label}"
    final = root / name
    # names of our own: a replay killed mid-write leaves its temporaries, never another's
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}.", dir=root))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
    old = root / f".old-{name}.{os.getpid()}"
    if old.exists():
        shutil.rmtree(old)
    try:
        _write_events(r, tmp / "events.parquet")
        _write_violations(r, tmp / "violations.parquet")
        _write(interrupts_table(r), tmp / "interrupts.parquet")
        _write(groups_table(r), tmp / "groups.parquet")
        _write(reasons_table(r), tmp / "reasons.parquet")
        _write(summary_table(r), tmp / "summary.parquet")
        _write(costs_table(r), tmp / "costs.parquet")
        m = manifest(r)
        m["files"] = {
            p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(tmp.glob("*.parquet"))
        }
        (tmp / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")
        if final.exists():
            final.rename(old)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            old.rename(final)
        raise
    if old.exists():
        shutil.rmtree(old)
    return final


INDEX = "results.json"
#: A results directory replayed under several cost tables holds one ``costs=NAME``
#: directory per table.
TABLE_PREFIX = "costs="
"""The results directory's index: the trace and cost table every run in it was replayed
from and under, and the runs replays into it planned (a run cut short is one planned
and absent)."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TraceError(f"{path}: not readable JSON ({type(e).__name__})") from None


def _write_index(root: Path, index: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{INDEX}.", dir=root)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(index, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, root / INDEX)


def table_dirs(root: Path) -> list[Path]:
    """The per-table results directories (``costs=NAME``) of a results directory replayed
    under several cost tables; empty for one replayed under one."""
    return sorted(d for d in Path(root).glob(f"{TABLE_PREFIX}*") if d.is_dir())


def read_index(root: Path) -> dict[str, Any] | None:
    """A results directory's index (``results.json``), None where it has none."""
    index = _read_json(Path(root) / INDEX)
    if index is not None and not isinstance(index, dict):
        raise TraceError(f"{Path(root) / INDEX}: not a results index")
    return index


def plan(
    root: Path,
    labels: list[str],
    events_sha256: str,
    cost_sha256: str,
    about: dict[str, Any] | None = None,
) -> None:
    """Before replaying ``labels`` into ``root``: results of another trace or cost table
    (or of several tables) are replaced whole (never mixed with these), then the runs join
    the index's plan.  ``about`` (``trace`` and ``cost_table``: what the results were
    replayed from and under, with paths) joins the index.  Written atomically; the caller
    holds the directory's lock."""
    root = Path(root)
    index = read_index(root)
    present = [d for d in root.glob("backend=*") if d.is_dir()]
    if index is None and present:  # results from before the index: as their manifests say
        first = _read_json(present[0] / "manifest.json") or {}
        index = {
            "events_sha256": first.get("trace", {}).get("events_sha256"),
            "cost_sha256": first.get("cost_table", {}).get("sha256"),
            "planned": sorted(d.name.removeprefix("backend=") for d in present),
        }
    for d in table_dirs(root):  # a set replayed under several tables: replaced
        shutil.rmtree(d)
    if index is None or (index.get("events_sha256"), index.get("cost_sha256")) != (
        events_sha256,
        cost_sha256,
    ):
        for d in present:  # another trace's or table's: replaced, not mixed in
            shutil.rmtree(d)
        index = {"planned": []}
    index.pop("tables", None)
    index.update(
        results_version=RESULTS_VERSION, events_sha256=events_sha256, cost_sha256=cost_sha256
    )
    index.update(about or {})
    index["planned"] = sorted(set(index.get("planned", [])) | set(labels))
    _write_index(root, index)


def plan_tables(
    root: Path, events_sha256: str, tables: dict[str, dict[str, Any]], about: dict[str, Any]
) -> None:
    """Before replaying one trace under several cost tables into ``root`` (one
    ``costs=NAME`` directory each, itself a results directory of one table): runs of
    another trace, or of one table at the top, are replaced whole; tables already there
    for this trace stay (a table of the same name and another hash is replaced by its
    own :func:`plan`).  ``tables`` maps each name to its ``name``, ``sha256``,
    ``origin`` and ``path``, in the order given (the index's ``order``: these tables, then
    the ones kept); ``about`` carries ``trace``.  The caller holds the lock."""
    root = Path(root)
    index = read_index(root)
    same = (
        isinstance(index, dict)
        and isinstance(index.get("tables"), dict)
        and index.get("events_sha256") == events_sha256
    )
    for d in root.glob("backend=*"):  # one table's runs at the top: replaced
        if d.is_dir():
            shutil.rmtree(d)
    kept: dict[str, Any] = {}
    if same and index is not None:
        kept = dict(index["tables"])
    else:
        for d in table_dirs(root):
            shutil.rmtree(d)
    kept.update(tables)
    order = list(tables) + [
        n for n in (index or {}).get("order", []) if n in kept and n not in tables
    ]
    new = {
        "results_version": RESULTS_VERSION,
        "events_sha256": events_sha256,
        "tables": kept,
        "order": order,
        **about,
    }
    _write_index(root, new)


def _check_run_files(d: Path, m: dict[str, Any], full: bool) -> None:
    files = m.get("files")
    if not isinstance(files, dict):
        return  # results from before the check
    for name, want in sorted(files.items()):
        check_file(d / name, want, full)


def verify(root: Path, full: bool = False) -> None:
    """Refuse, in one line naming what is wrong, a results directory that is not what
    its index and manifests say: a run planned and missing (a replay cut short), a run
    without its manifest or summary, a manifest of another backend, version or trace,
    runs of different cost tables, a file of another size than its manifest says (with
    ``full``, other bytes).  A directory replayed under several cost tables is verified
    table by table, and refused when a table its index names is missing."""
    root = Path(root)
    index = read_index(root)
    if table_dirs(root) or (isinstance(index, dict) and "tables" in index):
        _verify_tables(root, index, full)
        return
    runs = sorted(d for d in root.glob("backend=*") if d.is_dir())
    tables: dict[str, str] = {}
    traces: set[str] = set()
    for d in runs:
        label = d.name.removeprefix("backend=")
        m = _read_json(d / "manifest.json")
        if not isinstance(m, dict):
            raise TraceError(f"{d / 'manifest.json'}: missing; these results are incomplete")
        if m.get("results_version") != RESULTS_VERSION:
            raise TraceError(
                f"{d / 'manifest.json'}: results version {m.get('results_version')!r}; "
                f"this pvscope reads {RESULTS_VERSION}"
            )
        if m.get("backend") != label:
            raise TraceError(
                f"{d / 'manifest.json'}: names backend {m.get('backend')!r}, not {label!r}"
            )
        if not (d / "summary.parquet").is_file():
            raise TraceError(f"{d / 'summary.parquet'}: missing; these results are incomplete")
        _check_run_files(d, m, full)
        tables[label] = str(m.get("cost_table", {}).get("sha256"))
        traces.add(str(m.get("trace", {}).get("events_sha256")))
    if len(set(tables.values())) > 1:
        a, b = sorted(set(tables.values()))[:2]
        la = min(k for k, v in tables.items() if v == a)
        lb = min(k for k, v in tables.items() if v == b)
        raise TraceError(
            f"{root}: runs of different cost tables ({la}: {a[:12]}, {lb}: {b[:12]}); "
            "replay into one directory per table"
        )
    if len(traces) > 1:
        raise TraceError(f"{root}: runs of different traces; replay into one directory per trace")
    if isinstance(index, dict):
        missing = sorted(set(index.get("planned", [])) - {d.name[8:] for d in runs})
        if missing:
            raise TraceError(
                f"{root}: incomplete: {len(missing)} of {len(index['planned'])} planned runs "
                f"missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): "
                "a replay was cut short; run it again"
            )


def _verify_tables(root: Path, index: dict[str, Any] | None, full: bool) -> None:
    """:func:`verify` for a directory of ``costs=NAME`` results directories."""
    if any(d.is_dir() for d in root.glob("backend=*")):
        raise TraceError(f"{root}: runs of one cost table beside runs of several; replay it again")
    tables = (index or {}).get("tables")
    if not isinstance(tables, dict):
        raise TraceError(f"{root / INDEX}: missing or names no cost tables; replay it again")
    dirs = {d.name.removeprefix(TABLE_PREFIX): d for d in table_dirs(root)}
    missing = sorted(set(tables) - set(dirs))
    if missing:
        raise TraceError(
            f"{root}: incomplete: the runs under cost table {missing[0]} are missing: "
            "a replay was cut short; run it again"
        )
    for name, d in sorted(dirs.items()):
        if name not in tables:
            raise TraceError(f"{d}: a cost table the index does not name; replay it again")
        verify(d, full)
        sub = read_index(d) or {}
        if sub.get("events_sha256") != (index or {}).get("events_sha256"):
            raise TraceError(f"{d}: runs of another trace than {root / INDEX} names")
        if sub.get("cost_sha256") != tables[name].get("sha256"):
            raise TraceError(f"{d}: runs of another cost table than {root / INDEX} names")
