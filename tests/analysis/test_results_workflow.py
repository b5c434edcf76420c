"""Results directories kept away from their trace, as a new user makes them: ``replay -o``
under two cost tables, then ``diff``, ``query`` and ``report`` on them from elsewhere;
a trace gone or replaced is named in one line.  Real subprocesses, relative paths."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import EXIT_DIFFERS
from recorder.record import record

PV = [sys.executable, "-m", "pvscope"]


def pv(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PV, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pvscope: error: "), p.stderr
    return lines[0]


def test_results_kept_outside_their_trace(tmp_path: Path) -> None:
    work, runs = tmp_path / "work", tmp_path / "runs"
    work.mkdir()
    runs.mkdir()
    record("pvcall", work / "T", scale=300, seed=7)
    for name, table in (("r_p4", "p4"), ("r_neh", "nehalem")):
        p = pv(
            work, "replay", "T", "-b", "native,vmi", "--costs", table, "-q", "-o", f"../runs/{name}"
        )
        assert p.returncode == 0, p.stderr
    # the results name their trace and table
    index = json.loads((runs / "r_p4" / "results.json").read_text())
    assert index["trace"]["path"] == "T"
    assert index["trace"]["resolved"] == str((work / "T").resolve())
    manifest = json.loads((work / "T" / "manifest.json").read_text())
    assert index["trace"]["events_sha256"] == manifest["files"]["events.parquet"]["sha256"]
    assert len(index["trace"]["manifest_sha256"]) == 64
    assert index["cost_table"]["name"] == "p4" and index["cost_table"]["path"] is None

    # diff from another working directory: cost relative to native under each table
    p = pv(tmp_path, "diff", "runs/r_p4", "runs/r_neh", "--json")
    assert p.returncode == EXIT_DIFFERS, p.stderr
    d = json.loads(p.stdout)
    assert d["groups"] == []  # not absolute cycles per group
    assert (d["cost_tables"]["a"]["name"], d["cost_tables"]["b"]["name"]) == ("p4", "nehalem")
    vmi = {r["side"]: r for r in d["relative"] if r["backend"] == "vmi"}
    assert vmi["a"]["whole_run_slowdown"] > 1 and vmi["b"]["interface_ratio"] > 1
    assert vmi["b"]["slowdown_change"] == pytest.approx(
        vmi["b"]["whole_run_slowdown"] - vmi["a"]["whole_run_slowdown"]
    )
    text = pv(tmp_path, "diff", "runs/r_p4", "runs/r_neh").stdout
    assert "cost tables differ: A p4, B nehalem" in text and "whole-run A" in text

    for name, table in (("r_p4", "p4"), ("r_neh", "nehalem")):
        sql = "select s.cost_table, count(distinct e.seq) n from summary s, events e group by 1"
        p = pv(tmp_path, "query", f"runs/{name}", sql, "--json")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout) == [{"cost_table": table, "n": manifest["counts"]["events"]}]
        p = pv(tmp_path, "report", f"runs/{name}", "-q", "-o", f"{name}.html")
        assert p.returncode == 0, p.stderr
        assert "Cost per backend" in (tmp_path / f"{name}.html").read_text()

    # several tables in one go, kept apart; the report compares them
    p = pv(work, "replay", "T", "-b", "native,vmi", "--costs", "p4,nehalem", "-o", "../runs/both")
    assert p.returncode == 0, p.stderr
    assert "cost table p4" in p.stdout and "cost table nehalem" in p.stdout
    assert sorted(x.name for x in (runs / "both").iterdir()) == [
        "costs=nehalem",
        "costs=p4",
        "results.json",
    ]
    p = pv(tmp_path, "report", "runs/both", "-q", "--no-html", "--json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)["cost_tables"]
    assert {(r["backend"], r["side"]) for r in rows} == {
        (b, t) for b in ("native", "vmi") for t in ("p4", "nehalem")
    }
    # ... each table's runs the same as replayed alone
    both = {(r["backend"], r["side"]): r["whole_run_slowdown"] for r in rows}
    alone = {(r["backend"], r["side"]): r["whole_run_slowdown"] for r in d["relative"]}
    assert both[("vmi", "p4")] == alone[("vmi", "a")]
    assert both[("vmi", "nehalem")] == alone[("vmi", "b")]

    # the trace moved away: named by hash and recorded path, found again with --trace
    hidden = tmp_path / "hidden" / "deep"
    hidden.mkdir(parents=True)
    shutil.move(work / "T", hidden / "T")
    err = one_line_error(pv(tmp_path, "diff", "runs/r_p4", "runs/r_neh"))
    sha = index["trace"]["events_sha256"]
    assert "cannot find the trace" in err and sha[:12] in err and str(work / "T") in err
    assert "cannot find the trace" in one_line_error(pv(tmp_path, "report", "runs/r_p4", "-q"))
    p = pv(tmp_path, "query", "runs/r_p4", "select count(*) n from summary", "--json")
    assert p.returncode == 0 and json.loads(p.stdout) == [{"n": 2}]  # the replay views only
    assert "not found" in p.stderr
    p = pv(tmp_path, "diff", "runs/r_p4", "runs/r_neh", "--trace", "hidden/deep/T")
    assert p.returncode == EXIT_DIFFERS, p.stderr

    # another trace where it was: refused, in one line
    record("pvcall", work / "T", scale=200, seed=7)
    for args in (
        ("diff", "runs/r_p4", "runs/r_neh"),
        ("query", "runs/r_p4", "select 1"),
        ("report", "runs/r_p4", "-q"),
    ):
        err = one_line_error(pv(tmp_path, *args))
        assert "another trace" in err and sha[:12] in err, err
    err = one_line_error(pv(tmp_path, "report", "runs/r_p4", "-q", "--trace", "work/T"))
    assert "another trace" in err
