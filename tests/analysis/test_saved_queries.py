"""Saved queries: each one's numbers against an independent computation over the same Parquet.

The expected values are computed here in plain Python from the Parquet files read with
pyarrow, never from the query's own output.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis import queries
from analysis.views import Session
from pvscope import schema
from pvscope.hooks import BY_NAME
from tests.analysis.conftest import workload_traces


def rows(trace: Path, table: str) -> list[dict[str, Any]]:
    return pq.read_table(trace / f"{table}.parquet").to_pylist()


def run(trace: Path, name: str) -> list[dict[str, Any]]:
    with Session(trace) as s:
        return s.query(queries.load(name).sql).to_pylist()


def test_every_saved_query_has_a_header_saying_what_it_answers() -> None:
    saved = queries.saved()
    assert len(saved) >= 9
    for q in saved:
        assert q.title.endswith("?"), q.name
        assert q.doc, q.name
        assert q.needs, q.name


def _no_comments(sql: str) -> str:
    return "\n".join(line.split("--")[0] for line in sql.splitlines())


@pytest.mark.parametrize("q", queries.saved(), ids=lambda q: q.name)
def test_no_saved_query_carries_a_value_forward_with_ignore_nulls(q: queries.SavedQuery) -> None:
    # DuckDB evaluates last_value/first_value(... IGNORE NULLS) over an unbounded frame
    # by scanning back through the nulls: on a trace where the value never appears (the
    # boot trace's 10 M PTE updates and no set_lazy_mode) that is quadratic, and
    # lazy_batching did not finish in 300 s.  Carry a state forward with a running count
    # and a join instead (lazy_batching.sql).
    assert "IGNORE NULLS" not in _no_comments(q.sql).upper()


def _relations(sql: str) -> set[str]:
    """The tables and views a query reads (its FROM and JOIN names, less its CTEs)."""
    sql = _no_comments(sql)
    read = set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_][a-z0-9_]*)", sql, re.IGNORECASE))
    ctes = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s+AS\s*\(", sql, re.IGNORECASE))
    return {r.lower() for r in read} - {c.lower() for c in ctes}


VIEWS = {*schema.TABLES, *schema.RESULT_TABLES, "hooks", "traces"}


@pytest.mark.parametrize("q", queries.saved(), ids=lambda q: q.name)
def test_no_saved_query_joins_every_replayed_event_to_the_trace(q: queries.SavedQuery) -> None:
    # the replay view holds a row per event per run: on a default-scale trace replayed
    # with --backend all, 324 M rows.  Joined to the trace's events (exit_reasons did, to
    # name each event), that took 16-29 s a trace; per-run totals the replay writes
    # (the reasons view) take under a second.  Its needs header names what it reads.
    read = _relations(q.sql) & VIEWS
    assert read, q.name
    assert read <= set(q.needs), (q.name, read)
    assert not {"replay", "events"} <= read, q.name


@pytest.mark.parametrize("trace", workload_traces(), ids=lambda p: p.parent.name)
@pytest.mark.parametrize("name", [q.name for q in queries.saved() if not q.needs_replay])
def test_every_trace_query_runs_on_every_golden_trace(trace: Path, name: str) -> None:
    assert run(trace, name), f"{name} returned no rows on {trace}"


def test_hook_counts(workload: Path) -> None:
    events = [e for e in rows(workload, "events") if e["kind"] == "hook"]
    calls: Counter[tuple[str, str | None]] = Counter()
    distinct: defaultdict[tuple[str, str | None], set[str]] = defaultdict(set)
    for e in events:
        h = BY_NAME[e["hook"]]
        calls[h.group, h.requirement] += 1
        distinct[h.group, h.requirement].add(h.name)
    got = {(r["group"], r["requirement"]): r for r in run(workload, "hook_counts")}
    assert set(got) == set(calls)
    for key, n in calls.items():
        assert got[key]["calls"] == n
        assert got[key]["hooks_called"] == len(distinct[key])
        assert got[key]["share"] == pytest.approx(n / len(events))
        assert got[key]["trace"] == workload.name


def test_hot_sites_are_symbolized(workload: Path) -> None:
    events = [e for e in rows(workload, "events") if e["kind"] == "hook"]
    funcs = [s for s in rows(workload, "symbols") if s["type"] == "func" and s["size"]]
    counts = Counter((e["site"], e["hook"]) for e in events)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))[:25]

    def name(site: int) -> tuple[str | None, int | None]:
        for f in funcs:
            if f["addr"] <= site < f["addr"] + f["size"]:
                return f["name"], site - f["addr"]
        return None, None

    got = run(workload, "hot_sites")
    assert [(r["site"], r["hook"], r["calls"]) for r in got] == [(s, h, n) for (s, h), n in top]
    for r in got:
        assert (r["function"], r["offset"]) == name(r["site"])
        assert r["share"] == pytest.approx(r["calls"] / len(events))
    assert got[0]["function"] is not None


def _latencies(trace: Path) -> dict[int, list[int]]:
    lat: defaultdict[int, list[int]] = defaultdict(list)
    for e in rows(trace, "events"):
        if e["kind"] == "interrupt":
            lat[e["arg0"]].append(e["vtime"] - (e["arg2"] | e["arg3"] << 32))
    return lat


def test_irq_latency_histogram(workload: Path) -> None:
    lat = _latencies(workload)
    assert lat, "every workload takes interrupts"
    expect = []
    for vector in sorted(lat):
        buckets = Counter(x.bit_length() for x in lat[vector])
        seen = 0
        for b in sorted(buckets):
            seen += buckets[b]
            lo = 0 if b == 0 else 1 << (b - 1)
            expect.append((vector, lo, 1 << b, buckets[b], seen / len(lat[vector])))
    got = run(workload, "irq_latency")
    assert [
        (
            r["vector"],
            r["bucket_lo"],
            r["bucket_hi"],
            r["interrupts"],
            pytest.approx(r["cumulative"]),
        )
        for r in got
    ] == expect


def test_irq_latency_summary(workload: Path) -> None:
    lat = _latencies(workload)
    got = {r["vector"]: r for r in run(workload, "irq_latency_summary")}
    assert set(got) == set(lat)
    for vector, xs in lat.items():
        r = got[vector]
        assert r["interrupts"] == len(xs)
        assert (r["min"], r["max"]) == (min(xs), max(xs))
        assert r["mean"] == pytest.approx(sum(xs) / len(xs))
        for p in (50, 90, 99):
            assert r[f"p{p}"] == pytest.approx(float(np.percentile(xs, p)))


def _lazy(trace: Path) -> dict[str, Any]:
    """Walk the events once, as a hypervisor's lazy-MMU queue would."""
    pte_hooks = {h.name for h in BY_NAME.values() if h.requirement == "pteupdate"}
    mode = 0
    queued = 0
    open_batch = False
    batches: list[int] = []
    enters = unbatched = 0
    for e in rows(trace, "events"):
        if e["hook"] == "set_lazy_mode":
            if mode == 1:
                batches.append(queued)
            queued = 0
            open_batch = False
            if e["arg0"] == 1:
                enters += 1
            if e["arg0"] != 3:
                mode = e["arg0"]
        elif e["hook"] in pte_hooks:
            if mode == 1:
                queued += 1
                open_batch = True
            else:
                unbatched += 1
    return {
        "lazy_enters": enters,
        "flushes": len(batches),
        "batched_updates": sum(batches),
        "unbatched_updates": unbatched,
        "updates_per_flush": sum(batches) / len(batches) if batches else None,
        "median_updates_per_flush": float(np.median(batches)) if batches else None,
        "max_updates_per_flush": max(batches) if batches else None,
        "empty_flushes": sum(1 for b in batches if b == 0),
        "unflushed_updates": queued if open_batch else 0,
    }


def test_lazy_batching(workload: Path) -> None:
    expect = _lazy(workload)
    (got,) = run(workload, "lazy_batching")
    assert got.pop("trace") == workload.name
    assert got == pytest.approx(expect)


def test_saved_queries_agree_on_a_trace_set_and_its_traces(
    trace_set: Path, golden_trace: Path, small_trace: Path
) -> None:
    for q in queries.saved():
        if q.needs_replay:
            continue
        together = run(trace_set, q.name)
        for name, trace in (("golden", golden_trace), ("small", small_trace)):
            alone = [{**r, "trace": name} for r in run(trace, q.name)]
            assert [r for r in together if r["trace"] == name] == alone, q.name


def test_every_saved_query_runs_on_every_workload(workload_set: Path) -> None:
    """Every built-in workload, recorded and replayed (RUNS), answers every saved query
    (violations too: the irq ablation without a fallback breaks something on each)."""
    names = {p.name for p in workload_set.iterdir()}
    for q in queries.saved():
        got = {r["trace"] for r in run(workload_set, q.name)}
        assert got == names, q.name


def test_lazy_mode_batches_somewhere() -> None:
    """The batching check above means something: pvcall batches its PTE updates."""
    from tests.analysis.conftest import GOLDEN

    assert _lazy(GOLDEN)["batched_updates"] > 0
