"""Replay-side saved queries against plain Python over the same replay Parquet files."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from analysis import queries
from analysis.views import Session
from pvscope.hooks import BY_NAME
from tests.analysis.fake_replay import BACKENDS


def run(trace: Path, name: str) -> list[dict[str, Any]]:
    with Session(trace) as s:
        return s.query(queries.load(name).sql).to_pylist()


def backend_rows(trace: Path, table: str) -> dict[str, list[dict[str, Any]]]:
    return {
        d.name.split("=", 1)[1]: pq.read_table(d / f"{table}.parquet").to_pylist()
        for d in sorted((trace / "replay").iterdir())
    }


def test_cost_by_group(replayed_trace: Path) -> None:
    events = {e["seq"]: e for e in pq.read_table(replayed_trace / "events.parquet").to_pylist()}
    cycles: defaultdict[tuple[str, str], float] = defaultdict(float)
    counts: defaultdict[tuple[str, str], int] = defaultdict(int)
    for backend, rows in backend_rows(replayed_trace, "events").items():
        for r in rows:
            e = events[r["seq"]]
            group = BY_NAME[e["hook"]].group if e["kind"] == "hook" else e["kind"]
            cycles[backend, group] += r["cycles"]
            counts[backend, group] += 1
    got = {(r["backend"], r["group"]): r for r in run(replayed_trace, "cost_by_group")}
    assert set(got) == set(cycles)
    for (backend, group), c in cycles.items():
        r = got[backend, group]
        assert r["cycles"] == c and r["events"] == counts[backend, group]
        assert r["native_cycles"] == cycles["native", group]
        assert r["ratio"] == pytest.approx(c / cycles["native", group])


def test_ablation_matrix(replayed_trace: Path) -> None:
    summaries = {b: rows[0] for b, rows in backend_rows(replayed_trace, "summary").items()}
    native = summaries["native"]["cycles"]
    got = run(replayed_trace, "ablation_matrix")
    assert len(got) == len(BACKENDS)
    by = {(r["backend"], r["without"], r["fallback"]): r for r in got}
    for label, base, without, fallback, _, broken in BACKENDS:
        r = by[base, without, fallback]
        assert r["correct"] == (not broken)
        assert r["violations"] == summaries[label]["violations"]
        assert r["cost_ratio"] == pytest.approx(summaries[label]["cycles"] / native)


def test_violations_and_first_divergence(replayed_trace: Path) -> None:
    expect = {}
    for backend, rows in backend_rows(replayed_trace, "violations").items():
        if not rows:
            continue
        first = min(r["seq"] for r in rows)
        for check in {r["check"] for r in rows}:
            mine = [r["seq"] for r in rows if r["check"] == check]
            expect[backend, check] = (len(mine), min(mine), min(mine) == first)
    got = {
        (r["backend"], r["check"]): (r["violations"], r["first_seq"], r["first_divergence"])
        for r in run(replayed_trace, "violations")
    }
    assert got == expect and expect


def test_exits_per_kinsn(replayed_trace: Path) -> None:
    import json

    insns = json.loads((replayed_trace / "manifest.json").read_text())["counts"]["instructions"]
    per = backend_rows(replayed_trace, "events")
    got = {r["backend"]: r for r in run(replayed_trace, "exits_per_kinsn")}
    for backend, rows in per.items():
        for what in ("exits", "hypercalls", "traps"):
            n = sum(r[what] for r in rows)
            assert got[backend][what] == n
            assert got[backend][f"{what}_per_kinsn"] == pytest.approx(1000 * n / insns)


def test_every_saved_query_runs_on_replayed_traces_and_sets(
    replayed_trace: Path, replayed_set: Path
) -> None:
    for q in queries.saved():
        assert run(replayed_trace, q.name), q.name
        rows = run(replayed_set, q.name)
        assert rows, q.name
        if q.needs_replay:
            assert {r["trace"] for r in rows} == {"a"}, q.name


def test_replay_views_in_a_hive_style_set(replayed_trace: Path, tmp_path: Path) -> None:
    import shutil

    for name in ("x", "y"):
        shutil.copytree(replayed_trace, tmp_path / f"trace={name}")
    with Session(tmp_path) as s:
        cols = [r[0] for r in s.con.execute("DESCRIBE replay").fetchall()]
        counts = s.con.execute(
            "SELECT trace, count(DISTINCT backend), count(*) FROM replay GROUP BY 1 ORDER BY 1"
        ).fetchall()
    n = pq.ParquetFile(replayed_trace / "events.parquet").metadata.num_rows
    assert cols[0] == "trace" and "backend" in cols
    assert counts == [
        ("x", len(BACKENDS), n * len(BACKENDS)),
        ("y", len(BACKENDS), n * len(BACKENDS)),
    ]
    assert {r["trace"] for r in run(tmp_path, "ablation_matrix")} == {"x", "y"}
