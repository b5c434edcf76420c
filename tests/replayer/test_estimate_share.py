"""The share of a run's cycles that rests on estimates: bounds, extremes, linearity, output."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from replayer import api, backends, costs, engine
from replayer.cli import replay as replay_cmd
from replayer.engine import provenance
from replayer.trace import Trace, load

DESIGNED = [backends.Run(b) for b in backends.BACKENDS.values()]


def _relabel(table: costs.CostTable, kind: Callable[[str], str], name: str) -> costs.CostTable:
    """``table``'s numbers with each entry's provenance replaced by ``kind(entry)``."""
    lines = ["[table]", f"name = {json.dumps(name)}", f"cpu = {json.dumps(table.cpu)}", ""]
    for section, values in (("primitive", table.cycles), ("guest", table.guest)):
        for n, v in values.items():
            why = json.dumps(f"test: relabelled from {table.provenance(n)}")
            lines += [f"[{section}.{n}]", f"cycles = {v!r}", f"{kind(n)} = {why}", ""]
    return costs.parse("\n".join(lines).encode(), f"test:{name}")


@pytest.fixture(scope="module")
def mixed_table(p4: costs.CostTable) -> costs.CostTable:
    """p4's numbers with all three provenance kinds present, among primitives and guest
    parameters alike (p4 itself has no measured entry)."""
    names = [*p4.cycles, *p4.guest]
    kinds = {n: costs.PROVENANCE[i % 3] for i, n in enumerate(names)}
    return _relabel(p4, kinds.__getitem__, "p4-mixed")


def _replay_all(trace: Path, runs: list[backends.Run], table: costs.CostTable, out: Path) -> dict:
    sums = api.replay_trace(load(trace), runs, table, out, jobs=1)
    return {s["backend"]: s for s in sums}


def test_shares_are_in_the_unit_interval_and_null_for_ablations(
    fork_path: Path, p4: costs.CostTable, tmp_path: Path
) -> None:
    runs = [*DESIGNED, backends.Run(backends.BACKENDS["vmi"], "irq", "none")]
    got = _replay_all(fork_path, runs, p4, tmp_path)
    for run in DESIGNED:
        s = got[run.label]
        for share in (s["estimate_share"], s["whole_run"]["estimate_share"]):
            assert share is not None and 0.0 <= share <= 1.0, (run.label, share)
    # p4's CPI and walk costs are estimates: the whole run rests more on them
    assert got["xen-pv"]["whole_run"]["estimate_share"] > got["xen-pv"]["estimate_share"] > 0
    abl = got["vmi-without-irq-none"]
    assert abl["estimate_share"] is None and abl["whole_run"]["estimate_share"] is None
    row = pq.read_table(tmp_path / "backend=xen-pv" / "summary.parquet").to_pylist()[0]
    assert row["estimate_share"] == got["xen-pv"]["estimate_share"]
    assert row["whole_run_estimate_share"] == got["xen-pv"]["whole_run"]["estimate_share"]
    row = pq.read_table(tmp_path / "backend=vmi-without-irq-none" / "summary.parquet")
    assert row.column("estimate_share").to_pylist() == [None]
    m = json.loads((tmp_path / "backend=xen-pv" / "manifest.json").read_text())
    assert m["summary"]["estimate_share"] == got["xen-pv"]["estimate_share"]


def test_an_all_source_table_rests_on_no_estimate(
    synth_path: Path, p4: costs.CostTable, tmp_path: Path
) -> None:
    table = _relabel(p4, lambda n: "source", "p4-sourced")
    for s in _replay_all(synth_path, DESIGNED, table, tmp_path).values():
        assert s["estimate_share"] == 0.0 and s["whole_run"]["estimate_share"] == 0.0


def test_the_icelake_table_is_all_estimate(synth_path: Path, tmp_path: Path) -> None:
    table = costs.load("icelake")
    assert table.counts()["estimate"] == len(table.cycles)
    for s in _replay_all(synth_path, DESIGNED, table, tmp_path).values():
        assert s["estimate_share"] == 1.0 and s["whole_run"]["estimate_share"] == 1.0


LINEAR_RUNS = [
    ("vmi", None, None),
    ("xen-pv", None, None),
    ("lguest", None, None),
    ("hvm-shadow", None, None),
    ("hvm-npt", None, None),
    ("bt", None, None),
    ("vmi", "pteupdate", "none"),
    ("xen-pv", "ptalloc", "none"),
    ("lguest", "irq", "none"),
    ("xen-pv", "cpl", "trap"),
]


@pytest.mark.parametrize(("name", "without", "fallback"), LINEAR_RUNS)
def test_costs_are_linear_in_the_table_event_by_event(
    fork_path: Path,
    mixed_table: costs.CostTable,
    name: str,
    without: str | None,
    fallback: str | None,
) -> None:
    tr = load(fork_path)
    run = backends.Run(backends.BACKENDS[name], without, fallback)
    full = engine.replay(tr, run, mixed_table)
    parts = [engine.replay(tr, run, mixed_table.masked({k})) for k in costs.PROVENANCE]
    assert all(p.cycles.sum() > 0 for p in parts), "every kind prices some events"
    total = np.sum([p.cycles.astype(np.int64) for p in parts], axis=0)
    assert np.array_equal(total, full.cycles.astype(np.int64))
    native = np.sum([p.native_cycles.astype(np.int64) for p in parts], axis=0)
    assert np.array_equal(native, full.native_cycles.astype(np.int64))
    # masking changes prices, never what the backend does
    for p in parts:
        assert p.summary["violations"] == full.summary["violations"]
        assert p.summary["exits"] == full.summary["exits"]
    whole = [p.summary["whole_run"] for p in parts]
    for k in ("cycles", "guest_cycles", "tlb_cycles"):
        # each part rounded on its own
        assert sum(w[k] for w in whole) == pytest.approx(full.summary["whole_run"][k], abs=2)


def test_the_masked_replay_leaves_the_shared_sequential_pass(
    synth_trace: Trace, p4: costs.CostTable
) -> None:
    run = backends.Run(backends.BACKENDS["xen-pv"])
    r = engine.replay(synth_trace, run, p4)
    shared = synth_trace.cache["sequential"]
    provenance.add_estimate_share(r)
    assert synth_trace.cache["sequential"] is shared
    again = engine.replay(synth_trace, run, p4)
    assert again.sequential == "shared"
    assert r.summary["estimate_share"] is not None


def _cli(args: list[str]) -> tuple[int, str]:
    r = CliRunner().invoke(replay_cmd, args)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.output


def test_json_carries_both_shares(synth_path: Path, tmp_path: Path) -> None:
    code, out = _cli(
        [str(synth_path), "-b", "vmi,xen-pv", "-o", str(tmp_path), "-q", "--json"]
        + ["--costs", "icelake"]
    )
    assert code == 0
    rows = json.loads(out)
    assert [r["backend"] for r in rows] == ["vmi", "xen-pv"]
    for r in rows:
        assert r["estimate_share"] == 1.0 and r["whole_run"]["estimate_share"] == 1.0


def test_text_output_has_the_column_and_the_footer(synth_path: Path, tmp_path: Path) -> None:
    code, out = _cli([str(synth_path), "-b", "xen-pv", "-o", str(tmp_path), "-q"])
    assert code == 0
    head, row = out.splitlines()[:2]
    assert "est." in head.split() and head.index("est.") < head.index("interface")
    share = load_share(tmp_path / "backend=xen-pv")
    assert f"{share:.0%}" in row.split()
    footer = (
        f"{share:.0%} of xen-pv's whole-run cycles rest on estimates: see pvscope costs show p4"
    )
    assert (footer in out) == (share >= 0.5)
    code, out = _cli(
        [str(synth_path), "-b", "xen-pv", "-o", str(tmp_path), "-q", "--costs", "icelake"]
    )
    assert (
        "100% of xen-pv's whole-run cycles rest on estimates: see pvscope costs show icelake" in out
    )


def load_share(d: Path) -> float:
    return pq.read_table(d / "summary.parquet").column("whole_run_estimate_share")[0].as_py()


def test_the_report_shows_the_share(synth_path: Path, tmp_path: Path) -> None:
    from analysis import report as rep

    trace = tmp_path / "trace"
    shutil.copytree(synth_path, trace)
    api.replay_trace(load(trace), DESIGNED, costs.load("icelake"), jobs=1)
    section = rep._whole_run_section(rep.collect(trace))
    assert ">on estimates</th>" in section and '<td class="">100.0%</td>' in section
    assert "Every backend&#x27;s whole-run cycles rest mostly on estimates (100.0%)" in section
    assert "see pvscope costs show icelake" in section


@pytest.mark.parametrize("run", DESIGNED, ids=lambda r: r.label)
def test_a_masked_replay_reusing_its_runs_proofs_equals_a_fresh_one(
    run: backends.Run, fork_path: Path, p4: costs.CostTable
) -> None:
    # the lean pass's plan and proofs are kept per structure, not per cost table: the
    # masked replay after its run takes them as left; a fresh trace derives its own
    tr = load(fork_path)
    engine.replay(tr, run, p4)
    kept = provenance.masked_replay(tr, run, p4, provenance.ESTIMATE)
    fresh = provenance.masked_replay(load(fork_path), run, p4, provenance.ESTIMATE)
    assert kept.summary == fresh.summary
    for col in ("cycles", "mechanism", "exits", "hypercalls", "traps", "batched"):
        assert np.array_equal(getattr(kept, col), getattr(fresh, col)), col


@pytest.mark.parametrize("name", ["vmi", "lguest", "hvm-shadow"])
def test_the_share_taken_before_the_run_equals_the_share_taken_after(
    name: str, fork_path: Path, p4: costs.CostTable
) -> None:
    # replay_with_share makes the masked replay first (its columns let go before the run's
    # own are made): the run and its share are those of the masked replay made after it
    run = backends.Run(backends.BACKENDS[name])
    after = engine.replay(load(fork_path), run, p4)
    provenance.add_estimate_share(after)
    before = provenance.replay_with_share(load(fork_path), run, p4)
    assert before.summary == after.summary
    assert before.summary["estimate_share"] is not None
    for col in ("cycles", "mechanism", "exits", "hypercalls", "traps", "batched"):
        assert np.array_equal(getattr(before, col), getattr(after, col)), col
    ablation = backends.Run(backends.BACKENDS[name], "cpl", "trap")
    assert provenance.estimate_sums(load(fork_path), ablation, p4) is None
