"""The nanobench guest: its phases, their operations, the C/Python/SQL agreement on the
phase ids, and per-operation cycles from a replay.

Expected values come from the trace's Parquet read with pyarrow and from
``recorder/nanobench.py``'s data, never from the code under test's own output.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from analysis import queries
from analysis.nanobench import per_operation
from analysis.views import Session
from recorder import nanobench as nb
from recorder.guests import GUEST_DIR, GUESTS
from recorder.record import record

SOURCE = GUEST_DIR / "workloads" / "nanobench.c"
PVSCOPE_H = GUEST_DIR / "include" / "pvscope.h"
SCALE = GUESTS[nb.GUEST].small_scale
N = nb.operations(SCALE)


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nanobench") / "trace"
    m = record(nb.GUEST, out, scale=SCALE)
    assert m["end"]["status"] == "complete", m["end"]
    assert "invariants hold" in m["console"]
    return out


@pytest.fixture(scope="module")
def results(trace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from replayer import api, backends, costs

    out = tmp_path_factory.mktemp("nanobench-replay")
    api.replay_trace(
        trace, backends.resolve("native,xen-pv"), costs.load(costs.DEFAULT_PRESET), out, jobs=1
    )
    return out


def events(trace: Path) -> list[dict[str, Any]]:
    return pq.read_table(trace / "events.parquet").to_pylist()


def markers(rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [
        (e["arg1"], e["arg2"])
        for e in rows
        if e["kind"] == "guest" and e["arg0"] == nb.SERVICE_PHASE
    ]


def by_phase(rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Events by the phase of the last marker before them (markers left out)."""
    out: dict[int, list[dict[str, Any]]] = {}
    phase = nb.END
    for e in rows:
        if e["kind"] == "guest" and e["arg0"] == nb.SERVICE_PHASE:
            phase = e["arg1"]
            continue
        out.setdefault(phase, []).append(e)
    return out


def defining(phase: nb.Phase, e: dict[str, Any]) -> bool:
    if e["kind"] != phase.kind:
        return False
    if phase.cpl is not None and e["cpl"] != phase.cpl:
        return False
    return e["hook"] == phase.match if phase.kind == "hook" else e["arg0"] == phase.match


# --- the trace ----------------------------------------------------------------------------


def test_phases_appear_in_order_each_closed_with_its_operation_count(trace: Path) -> None:
    want = [m for p in nb.PHASES for m in ((p.id, N), (nb.END, 0))]
    assert markers(events(trace)) == want


def test_each_phase_holds_its_operations_defining_events(trace: Path) -> None:
    phases = by_phase(events(trace))
    for p in nb.PHASES:
        got = sum(defining(p, e) for e in phases[p.id])
        assert got >= p.per_op * N, (p.name, got)
        # and not many more: the events counted are the operation, not background
        assert got <= p.per_op * N + 2, (p.name, got)


def test_defining_events_sql_condition_selects_the_same_events(trace: Path) -> None:
    rows = events(trace)
    for p in nb.PHASES:
        want = sum(defining(p, e) for e in rows)
        sql = f"select count(*) from read_parquet('{trace}/events.parquet') where {p.where()}"
        assert duckdb.sql(sql).fetchall()[0][0] == want, p.name


def test_nanobenchmark_specifics(trace: Path) -> None:
    phases = by_phase(events(trace))
    # pgfault is resolved without a mapping change: no PTE or PMD written in it
    written = Counter(e["hook"] for e in phases[nb.BY_NAME["pgfault"].id] if e["kind"] == "hook")
    assert not {"set_pte", "set_pte_at", "set_pmd"} & set(written)
    assert written["read_cr2"] == N
    # cr8wr writes the task priority register
    assert {e["arg0"] for e in phases[nb.BY_NAME["cr8wr"].id] if e["hook"] == "apic_write"} == {
        0x80
    }
    # divzero returns to the divide's caller N times: an iret per fault
    dz = phases[nb.BY_NAME["divzero"].id]
    assert sum(e["hook"] == "iret" and e["arg1"] & 3 == 3 for e in dz) >= N
    # ptemod rewrites one PTE
    ptes = {e["arg2"] for e in phases[nb.BY_NAME["ptemod"].id] if e["hook"] == "set_pte_at"}
    assert len(ptes) == 1


# --- one declaration, three places --------------------------------------------------------


def c_enum(text: str) -> dict[str, int]:
    body = re.search(r"enum nb_phase \{(.*?)\};", text, re.S)
    assert body, "no enum nb_phase"
    return {k: int(v) for k, v in re.findall(r"(NB_\w+)\s*=\s*(\d+)", body[1])}


def enum_mismatch(text: str) -> dict[str, tuple[int | None, int | None]]:
    want = {p.c_name: p.id for p in nb.PHASES} | {"NB_END": nb.END}
    got = c_enum(text)
    keys = want.keys() | got.keys()
    return {k: (want.get(k), got.get(k)) for k in keys if want.get(k) != got.get(k)}


def test_c_enum_matches_the_python_phases() -> None:
    text = SOURCE.read_text()
    assert enum_mismatch(text) == {}
    assert int(re.search(r"#define NB_OPS_PER_SCALE (\d+)", text)[1]) == nb.OPS_PER_SCALE
    assert int(re.search(r"#define PV_SERVICE_PHASE (\d+)", PVSCOPE_H.read_text())[1]) == (
        nb.SERVICE_PHASE
    )


def test_enum_check_fails_on_a_changed_enum() -> None:
    text = SOURCE.read_text()
    swapped = text.replace("NB_IN = 2,", "NB_IN = 3,", 1)
    assert swapped != text
    assert enum_mismatch(swapped) == {"NB_IN": (2, 3)}
    dropped = re.sub(r"\tNB_CTXSW = 10,\n", "", text)
    assert enum_mismatch(dropped) == {"NB_CTXSW": (10, None)}


def test_saved_query_names_match_the_python_phases() -> None:
    sql = queries.load("nanobench").sql
    names = dict(re.findall(r"\((\d+), '([^']*)'\)", sql))
    assert {int(k): v for k, v in names.items() if k != "0"} == {p.id: p.name for p in nb.PHASES}


# --- the analysis side --------------------------------------------------------------------


def test_saved_query_counts_events_per_phase_and_kind(trace: Path) -> None:
    phases = by_phase(events(trace))
    with Session(trace) as s:
        got = s.query(queries.load("nanobench").sql).to_pylist()
    want = {
        (pid, kind): n
        for pid, rows in phases.items()
        for kind, n in Counter(e["kind"] for e in rows).items()
    }
    assert {(r["phase_id"], r["kind"]): r["events"] for r in got} == want
    for r in got:
        if r["phase_id"]:
            assert r["phase"] == nb.BY_ID[r["phase_id"]].name
            assert r["operations"] == N
            assert r["events_per_op"] == pytest.approx(r["events"] / N)
        else:
            assert r["phase"] == "(outside phases)" and r["operations"] is None


def test_per_operation_gives_a_row_per_phase_and_backend(trace: Path, results: Path) -> None:
    rows = per_operation(trace, results)
    assert [(r["phase_id"], r["backend"]) for r in rows] == [
        (p.id, b) for p in nb.PHASES for b in ("native", "xen-pv")
    ]
    phases = by_phase(events(trace))
    cycles: dict[str, list[int]] = {}
    for b in ("native", "xen-pv"):
        t = pq.read_table(results / f"backend={b}" / "events.parquet")
        cycles[b] = t.column("cycles").to_pylist()
    for r in rows:
        evs = phases[r["phase_id"]]
        assert r["phase"] == nb.BY_ID[r["phase_id"]].name
        assert r["operations"] == N
        assert r["events_per_op"] == pytest.approx(len(evs) / N)
        want = sum(cycles[r["backend"]][e["seq"]] for e in evs)
        assert r["cycles"] == want
        if want:
            assert r["cycles_per_op"] == pytest.approx(want / N) and r["cycles_per_op"] > 0
        else:
            assert r["cycles_per_op"] is None
    # every phase's operation costs something on both backends
    assert all(r["cycles_per_op"] for r in rows)


def test_per_operation_without_results_has_no_cycles(trace: Path) -> None:
    rows = per_operation(trace)
    assert [r["phase_id"] for r in rows] == [p.id for p in nb.PHASES]
    assert all(r["backend"] is None and r["cycles_per_op"] is None for r in rows)
