"""Replay-side saved queries against plain Python over the replayer's Parquet files.

Expected values come from the per-event results (``backend=LABEL/events.parquet``), the
violation rows, each run's ``manifest.json`` and the trace's own events -- never from the
summary or per-group tables the queries read.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from analysis import queries
from analysis.views import Session
from pvscope.hooks import BY_NAME


def run(trace: Path, name: str) -> list[dict[str, Any]]:
    with Session(trace) as s:
        return s.query(queries.load(name).sql).to_pylist()


def runs(trace: Path) -> dict[str, Path]:
    return {d.name.split("=", 1)[1]: d for d in sorted((trace / "replay").glob("backend=*"))}


def table(d: Path, name: str) -> list[dict[str, Any]]:
    return pq.read_table(d / f"{name}.parquet").to_pylist()


def test_the_replays_include_a_broken_ablation(replayed_trace: Path) -> None:
    assert set(runs(replayed_trace)) >= {"native", "vmi", "xen-pv", "vmi-without-irq-none"}
    assert table(runs(replayed_trace)["vmi-without-irq-none"], "violations")


def test_cost_by_group(replayed_trace: Path) -> None:
    events = pq.read_table(replayed_trace / "events.parquet", columns=["kind", "hook"]).to_pylist()
    group = [BY_NAME[e["hook"]].group if e["kind"] == "hook" else e["kind"] for e in events]
    expect: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for label, d in runs(replayed_trace).items():
        per = pq.read_table(d / "events.parquet", columns=["seq", "cycles", "native_cycles"])
        for seq, cyc, nat in zip(
            *(per.column(c).to_pylist() for c in per.column_names), strict=True
        ):
            acc = expect[label, group[seq]]
            acc[0] += 1
            acc[1] += cyc
            acc[2] += nat
    got = run(replayed_trace, "cost_by_group")
    assert {(r["backend"], r["group"]) for r in got} == set(expect)
    totals: dict[str, int] = defaultdict(int)
    for (label, _), (_, cyc, _) in expect.items():
        totals[label] += cyc
    for r in got:
        n, cyc, nat = expect[r["backend"], r["group"]]
        assert (r["events"], r["cycles"], r["native_cycles"]) == (n, cyc, nat)
        assert r["interface_ratio"] == pytest.approx(cyc / nat if nat else None)
        assert r["share"] == pytest.approx(cyc / totals[r["backend"]])


def test_ablation_matrix(replayed_trace: Path) -> None:
    got = {r["backend"]: r for r in run(replayed_trace, "ablation_matrix")}
    assert set(got) == set(runs(replayed_trace))
    for label, d in runs(replayed_trace).items():
        m = json.loads((d / "manifest.json").read_text())
        v = table(d, "violations")
        per = pq.read_table(d / "events.parquet", columns=["cycles", "native_cycles"])
        cyc = sum(per.column("cycles").to_pylist())
        nat = sum(per.column("native_cycles").to_pylist())
        r = got[label]
        assert r["base"] == m["base"] and r["backend"] == label
        assert (r["without"], r["fallback"]) == (
            (m["ablation"]["without"], m["ablation"]["fallback"]) if m["ablation"] else (None, None)
        )
        assert r["correct"] == (not v) and r["violations"] == len(v)
        if v:
            first = min(v, key=lambda x: x["seq"])
            assert (r["first_seq"], r["first_check"]) == (first["seq"], first["check"])
        assert r["cycles"] == cyc
        assert r["interface_ratio"] == pytest.approx(cyc / nat)
    assert got["native"]["interface_ratio"] == pytest.approx(1.0)
    assert got["native"]["whole_run_slowdown"] == pytest.approx(1.0)
    assert not got["vmi-without-irq-none"]["correct"]


def test_whole_run_has_the_estimate_share(replayed_trace: Path) -> None:
    got = {r["backend"]: r for r in run(replayed_trace, "whole_run")}
    assert set(got) == set(runs(replayed_trace))
    for label, d in runs(replayed_trace).items():
        w = json.loads((d / "manifest.json").read_text())["summary"]["whole_run"]
        share = got[label]["whole_run_estimate_share"]
        assert share == w["estimate_share"]
        # the backends as designed have one, in [0, 1]; ablations do not
        assert (share is None) == (got[label]["without"] is not None)
        assert share is None or 0.0 <= share <= 1.0


def test_violations_and_first_divergence(replayed_trace: Path) -> None:
    expect = {}
    for label, d in runs(replayed_trace).items():
        rows = table(d, "violations")
        if not rows:
            continue
        first = min(r["seq"] for r in rows)
        for check in {r["check"] for r in rows}:
            mine = sorted((r["seq"], r["detail"]) for r in rows if r["check"] == check)
            expect[label, check] = (len(mine), mine[0][0], mine[0][0] == first, mine[0][1])
    got = {
        (r["backend"], r["check"]): (
            r["violations"],
            r["first_seq"],
            r["first_divergence"],
            r["first_detail"],
        )
        for r in run(replayed_trace, "violations")
    }
    assert got == expect and expect


def test_exits_per_kinsn(replayed_trace: Path) -> None:
    insns = json.loads((replayed_trace / "manifest.json").read_text())["counts"]["instructions"]
    got = {r["backend"]: r for r in run(replayed_trace, "exits_per_kinsn")}
    for label, d in runs(replayed_trace).items():
        per = pq.read_table(d / "events.parquet")
        for what in ("exits", "hypercalls", "traps", "batch_flushes"):
            n = sum(per.column(what).to_pylist())
            assert got[label][what] == n
            assert got[label][f"{what}_per_kinsn"] == pytest.approx(1000 * n / insns)


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
    for name in ("x", "y"):
        shutil.copytree(replayed_trace, tmp_path / f"trace={name}")
    with Session(tmp_path) as s:
        s.ensure()
        cols = [r[0] for r in s.con.execute("DESCRIBE summary").fetchall()]
        counts = s.con.execute(
            "SELECT trace, count(DISTINCT backend), count(*) FROM replay GROUP BY 1 ORDER BY 1"
        ).fetchall()
    n = pq.ParquetFile(replayed_trace / "events.parquet").metadata.num_rows
    k = len(runs(replayed_trace))
    assert cols[:2] == ["trace", "backend"] and cols.count("trace") == 1
    assert counts == [("x", k, n * k), ("y", k, n * k)]
    assert {r["trace"] for r in run(tmp_path, "ablation_matrix")} == {"x", "y"}


def test_costs_view_is_the_cost_table_used(replayed_trace: Path) -> None:
    import tomllib

    from replayer import costs

    with Session(replayed_trace) as s:
        rows = s.query('SELECT DISTINCT "table", primitive, cycles FROM costs').to_pylist()
    toml = tomllib.loads((costs.PRESET_DIR / f"{costs.DEFAULT_PRESET}.toml").read_text())
    expect = {(toml["table"]["name"], k, v["cycles"]) for k, v in toml["primitive"].items()}
    assert {(r["table"], r["primitive"], r["cycles"]) for r in rows} == expect
