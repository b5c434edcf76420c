"""Query speed and trace storage, measured in one run.

Builds (once, then reuses) a trace set of at least ``--events`` events (default 50 M) by
recording the pvcall guest with different seeds into Hive-style ``trace=NAME``
directories, then for every saved query times

* ``pvscope``: what ``pvscope query SET --saved NAME`` does after Python has started --
  open the read-only session (manifests, views, lock), run the query, fetch the result
  as Arrow;
* ``bare``: DuckDB on the raw Parquet -- a fresh connection with plain views over
  ``read_parquet('SET/*/TABLE.parquet', hive_partitioning = true)`` and the same SQL,
  fetched the same way;

alternating the two (queries over replay results too, when every trace in the set has
been replayed), and prints the median of each and their ratio (the bar: at most
1.2x).  It also prints bytes per event of ``events.parquet`` as the recorder writes it,
per column, and what the same events take with the writer options proposed for the
recorder (``PROPOSED_OPTIONS``).

    python bench/query.py [--events 50000000] [--dir /tmp/pvscope-bench-query] [--repeat 5]
                          [--replay native,vmi,xen-pv]
    python bench/query.py --traces DIR [--json]

``--traces DIR`` times what a user runs instead, each as a whole ``pvscope`` process
(Python start-up included), on every trace directory in ``DIR`` (say, the seven built-in
workloads recorded at their default scale, replayed or not) and then on ``DIR`` as one
trace set: every saved query (``pvscope query T --saved NAME -o FILE``, skipping those
over replay results where a trace has none) and ``pvscope report T -q -o FILE``.  The
bars: at most 10 s per trace, 60 s over the set.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import queries  # noqa: E402
from analysis.views import (  # noqa: E402
    Session,
    _hooks_table,
    _traces_table,
    open_source,
    replay_files,
)
from pvscope import schema  # noqa: E402

#: Writer options proposed for recorder/writer.py: the current ones plus delta encoding
#: of the two monotonic columns (seq, vtime), which zstd alone cannot shrink well.
PROPOSED_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 6,
    "write_statistics": True,
    "use_dictionary": ["kind", "hook"],
    "column_encoding": {"seq": "DELTA_BINARY_PACKED", "vtime": "DELTA_BINARY_PACKED"},
    "data_page_size": 1 << 20,
}


def build_set(root: Path, events: int, scale: int | None) -> Path:
    """Record pvcall traces with seeds 0, 1, ... until the set holds ``events`` events."""
    from recorder.record import record

    root.mkdir(parents=True, exist_ok=True)
    have = 0
    seed = 0
    while have < events:
        out = root / f"trace=pvcall-s{seed:02d}"
        if not (out / "manifest.json").exists():
            t0 = time.perf_counter()
            m = record("pvcall", out, scale=scale, seed=seed, force=True)
            print(
                f"  recorded {out.name}: {m['counts']['events']:,} events "
                f"in {time.perf_counter() - t0:.1f}s",
                file=sys.stderr,
            )
        have += pq.ParquetFile(out / "events.parquet").metadata.num_rows
        seed += 1
    return root


def replay_set(root: Path, spec: str) -> None:
    """Replay every trace of the set with the backends ``spec`` names (skipping done ones)."""
    from replayer import api, backends, costs

    runs = backends.resolve(spec)
    table = costs.load(costs.DEFAULT_PRESET)
    for trace in sorted(root.iterdir()):
        todo = [r for r in runs if not (trace / "replay" / f"backend={r.label}").is_dir()]
        if not todo:
            continue
        t0 = time.perf_counter()
        api.replay_trace(trace, todo, table)
        print(
            f"  replayed {trace.name} on {', '.join(r.label for r in todo)} "
            f"in {time.perf_counter() - t0:.1f}s",
            file=sys.stderr,
        )


def storage(root: Path) -> None:
    """Bytes per event of events.parquet, per column, now and with PROPOSED_OPTIONS."""
    files = sorted(root.glob("*/events.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    size = sum(f.stat().st_size for f in files)
    print(f"\nstorage: {rows:,} events in {len(files)} traces, {size:,} bytes")
    print(f"  events.parquet as recorded: {size / rows:.3f} bytes/event (bar: <= 6)")
    per_col: dict[str, int] = {}
    for f in files:
        md = pq.ParquetFile(f).metadata
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                per_col[col.path_in_schema] = (
                    per_col.get(col.path_in_schema, 0) + col.total_compressed_size
                )
    print("  per column: " + ", ".join(f"{k} {v / rows:.3f}" for k, v in per_col.items()))
    sample = files[0]
    t = pq.read_table(sample)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "events.parquet"
        writer = pq.ParquetWriter(out, t.schema, **PROPOSED_OPTIONS)
        writer.write_table(t, row_group_size=1 << 20)
        writer.close()
        before = sample.stat().st_size / t.num_rows
        after = out.stat().st_size / t.num_rows
    print(
        f"  {sample.parent.name}: {before:.3f} bytes/event as recorded, {after:.3f} with "
        f"PROPOSED_OPTIONS ({PROPOSED_OPTIONS['column_encoding']})"
    )


def bare_connection(root: Path, side: Path) -> duckdb.DuckDBPyConnection:
    """Plain DuckDB over the raw Parquet: a view per table, nothing else."""
    con = duckdb.connect(":memory:")
    for t in schema.TABLES.values():
        glob = str(root / "*" / t.file).replace("'", "''")
        con.execute(
            f"CREATE VIEW {t.name} AS SELECT * FROM read_parquet('{glob}', "
            "hive_partitioning = true, hive_types = {'trace': 'VARCHAR'})"
        )
    for name in ("hooks", "traces"):
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{side / name}.parquet')")
    first = open_source(root).traces[0]
    for view, files in replay_files(first).items():
        rel = files[0].relative_to(first.path)
        glob = str(root / "*" / rel.parent.parent / "*" / rel.name).replace("'", "''")
        con.execute(
            f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{glob}', "
            "hive_partitioning = true, union_by_name = true, hive_types = {'trace': 'VARCHAR'})"
        )
    return con


def time_queries(root: Path, repeat: int) -> list[tuple[str, float, float]]:
    """(query, pvscope median seconds, bare median seconds) for every saved query."""
    side = Path(tempfile.mkdtemp(prefix="pvscope-bench-side-"))
    pq.write_table(_hooks_table(), side / "hooks.parquet")
    pq.write_table(_traces_table(open_source(root)), side / "traces.parquet")
    results = []
    replayed = all((t.path / "replay").is_dir() for t in open_source(root).traces)
    for q in queries.saved():
        if q.needs_replay and not replayed:
            continue
        pv: list[float] = []
        bare: list[float] = []
        for i in range(repeat + 1):
            t0 = time.perf_counter()
            with Session(root) as s:
                a = s.query(q.sql)
            t1 = time.perf_counter()
            con = bare_connection(root, side)
            b = con.sql(q.sql).to_arrow_table()
            con.close()
            t2 = time.perf_counter()
            if i == 0:
                assert a.num_rows == b.num_rows, q.name
                continue  # warm the page cache for both
            pv.append(t1 - t0)
            bare.append(t2 - t1)
        results.append((q.name, statistics.median(pv), statistics.median(bare)))
    return results


def whole_processes(root: Path, as_json: bool) -> None:
    """Every saved query and the report, each a whole ``pvscope`` process, on every trace
    in ``root`` and on ``root`` as a set (see the module's docstring)."""
    import json
    import subprocess

    traces = sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())
    if not traces:
        sys.exit(f"{root}: no trace directories in it")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pvscope-bench-") as tmp:
        for src in [*traces, root]:
            members = traces if src == root else [src]
            replayed = all((t / "replay").is_dir() for t in members)
            events = sum(pq.ParquetFile(t / "events.parquet").metadata.num_rows for t in members)
            jobs = [
                (q.name, ["query", str(src), "--saved", q.name, "-q", "-o", f"{tmp}/q.parquet"])
                for q in queries.saved()
                if replayed or not q.needs_replay
            ]
            jobs.append(("report", ["report", str(src), "-q", "-o", f"{tmp}/report.html"]))
            for name, argv in jobs:
                t0 = time.perf_counter()
                r = subprocess.run(
                    [sys.executable, "-m", "pvscope", *argv], capture_output=True, text=True
                )
                dt = time.perf_counter() - t0
                if r.returncode != 0:
                    sys.exit(f"pvscope {' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
                row = {
                    "source": "set of all" if src == root else src.name,
                    "events": events,
                    "replayed": replayed,
                    "what": name,
                    "seconds": dt,
                }
                rows.append(row)
                if not as_json:
                    bar = 60.0 if src == root else 10.0
                    flag = "" if dt < bar else f"  over the {bar:.0f} s bar"
                    print(
                        f"{row['source']:<12} {events:>12,} events  {name:<22} {dt:7.2f} s{flag}",
                        flush=True,
                    )
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    for src in dict.fromkeys(r["source"] for r in rows):
        mine = [r for r in rows if r["source"] == src]
        worst = max(mine, key=lambda r: r["seconds"])
        print(
            f"{src:<12} slowest: {worst['what']} {worst['seconds']:.2f} s; "
            f"all {len(mine)} one after another {sum(r['seconds'] for r in mine):.1f} s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000_000)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "pvscope-bench-query")
    ap.add_argument("--scale", type=int, default=None, help="pvcall scale per trace")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--replay",
        default="native,vmi,xen-pv",
        help="backends to replay every trace with, so the replay-side queries are timed too "
        "('' for none; default: native,vmi,xen-pv)",
    )
    ap.add_argument("--traces", type=Path, help="time whole pvscope processes on DIR's traces")
    ap.add_argument("--json", action="store_true", help="with --traces: rows as JSON")
    args = ap.parse_args()
    if args.traces is not None:
        whole_processes(args.traces, args.json)
        return
    root = build_set(args.dir / "set", args.events, args.scale)
    if args.replay:
        replay_set(root, args.replay)
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in root.glob("*/events.parquet"))
    print(f"trace set {root}: {n:,} events, cpus {os.cpu_count()}, duckdb {duckdb.__version__}")
    storage(root)
    print(f"\nquery time, median of {args.repeat} (bar: pvscope <= 1.2x bare duckdb)")
    print(f"  {'saved query':<22} {'pvscope s':>10} {'bare s':>10} {'ratio':>7}")
    worst = 0.0
    for name, pv, bare in time_queries(root, args.repeat):
        ratio = pv / bare
        worst = max(worst, ratio)
        flag = "" if ratio <= 1.2 else "  over the bar"
        print(f"  {name:<22} {pv:>10.3f} {bare:>10.3f} {ratio:>6.2f}x{flag}")
    print(f"  worst ratio {worst:.2f}x" + ("" if math.isfinite(worst) else ""))


if __name__ == "__main__":
    main()
