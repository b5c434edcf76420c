"""Exit reasons: the saved query, the replayer's table and a plain walk over the Parquet agree."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from analysis import queries
from analysis.views import Session
from replayer import backends, costs, engine, exitstat
from replayer.trace import load


def _query(trace: Path) -> dict[tuple[str, str], dict[str, Any]]:
    with Session(trace) as s:
        rows = s.query(queries.load("exit_reasons").sql).to_pylist()
    return {(r["backend"], r["reason"]): r for r in rows}


def test_the_saved_query_counts_what_the_parquet_holds(replayed_trace: Path) -> None:
    ev = pq.read_table(replayed_trace / "events.parquet", columns=["kind", "hook"]).to_pylist()
    name = [e["hook"] if e["kind"] == "hook" else e["kind"] for e in ev]
    want: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for d in sorted((replayed_trace / "replay").glob("backend=*")):
        label = d.name.removeprefix("backend=")
        t = pq.read_table(d / "events.parquet").to_pydict()
        for i, seq in enumerate(t["seq"]):
            acc = want[label, f"{t['mechanism'][i]} {name[seq]}"]
            acc[0] += 1
            for j, k in enumerate(("exits", "hypercalls", "traps", "cycles"), 1):
                acc[j] += t[k][i]
    got = _query(replayed_trace)
    assert set(got) == set(want)
    for key, (n, x, h, tr, c) in want.items():
        r = got[key]
        assert (r["events"], r["exits"], r["hypercalls"], r["traps"], r["cycles"]) == (
            n,
            x,
            h,
            tr,
            c,
        )
        assert r["mean_cycles"] == pytest.approx(c / n)
    for label in {b for b, _ in got}:
        shares = [r["share"] for (b, _), r in got.items() if b == label]
        assert sum(s or 0 for s in shares) == pytest.approx(1.0)


def test_the_replayer_table_equals_the_saved_query(replayed_trace: Path) -> None:
    got = _query(replayed_trace)
    labels = {b for b, _ in got}
    assert {"native", "vmi", "xen-pv"} <= labels
    for label in labels:
        rows = exitstat.from_run_dir(replayed_trace / "replay" / f"backend={label}")
        sql = sorted(
            (r for (b, _), r in got.items() if b == label),
            key=lambda r: (-r["cycles"], r["reason"]),
        )
        keys = ("reason", "events", "exits", "hypercalls", "traps", "cycles")
        assert [tuple(r[k] for k in keys) for r in rows] == [tuple(r[k] for k in keys) for r in sql]
        for a, b in zip(rows, sql, strict=True):
            assert a["share"] == pytest.approx(b["share"])
            assert a["mean_cycles"] == pytest.approx(b["mean_cycles"])


def test_a_run_result_and_its_written_results_give_the_same_reasons(
    replayed_trace: Path,
) -> None:
    tr = load(replayed_trace)
    (run,) = backends.resolve("xen-pv", None, None)
    r = engine.replay(tr, run, costs.load(costs.DEFAULT_PRESET))
    mine = exitstat.from_result(r)
    assert mine == exitstat.from_run_dir(replayed_trace / "replay" / "backend=xen-pv")
    assert sum(x["events"] for x in mine) == tr.n
    assert sum(x["cycles"] for x in mine) == int(r.cycles.sum())
    assert any(x["reason"].startswith("hypercall ") for x in mine)
    text = exitstat.lines("xen-pv", mine, top=3)
    assert text[0] == f"xen-pv: top 3 of {len(mine)} reasons by cycles"
    assert len(text) == 2 + 3 + 1 and text[-1].lstrip().startswith(f"({len(mine) - 3} more)")
