"""pvscope demo end to end, and pvscope diff on two replay results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analysis import replays
from analysis.cli import EXIT_DIFFERS, demo, diff
from tests.analysis.conftest import replay
from tests.support.reseal import reseal_run


def test_demo_records_replays_compares_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def some_runs(trace: Path, out: Path, quiet: bool = False) -> None:
        # the tests' subset of runs, to keep this quick; demo itself replays all of them
        assert out == trace / "replay"
        replay(trace)

    monkeypatch.setattr(replays, "replay_all", some_runs)
    out = tmp_path / "demo"
    r = CliRunner().invoke(
        demo, ["-o", str(out), "--guest", "pvcall", "--scale", "300"], catch_exceptions=False
    )
    assert r.exit_code == 0, r.output
    assert "backends and ablations compared" in r.output
    # the irq ablation is wrong, said as every command says it: correct no, where first
    wrong = [x for x in r.output.splitlines() if "│ vmi " in x and "│ irq " in x and "none" in x]
    assert wrong and all("│ no " in x and " at seq " in x for x in wrong), r.output
    html = (out / "report.html").read_text()
    assert "WRONG" in html and "Cost per backend" in html
    assert (out / "pvcall.trace" / "manifest.json").exists()
    r = CliRunner().invoke(demo, ["-o", str(out), "--scale", "300"])
    assert r.exit_code == 2 and "already exists" in r.output


def test_demo_without_a_replayer_still_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replays, "replayer_available", lambda: False)
    out = tmp_path / "demo"
    r = CliRunner().invoke(demo, ["-o", str(out), "--guest", "pvcall", "--scale", "300", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["ablation_matrix"] == [] and Path(d["report"]).exists()


def test_diff_equal_replays(replayed_trace: Path, tmp_path: Path) -> None:
    shutil.copytree(replayed_trace, tmp_path / "t")
    r = CliRunner().invoke(diff, [str(replayed_trace / "replay"), str(tmp_path / "t" / "replay")])
    assert r.exit_code == 0, r.output
    assert "equal" in r.output


def test_diff_replays_per_group_and_check(replayed_trace: Path, tmp_path: Path) -> None:
    t = tmp_path / "t"
    shutil.copytree(replayed_trace, t)
    # B: vmi pays 7 more cycles on its mmu group, and the broken ablation loses a violation
    p = t / "replay" / "backend=vmi" / "groups.parquet"
    g = pq.read_table(p)
    cycles = [
        c + 7 if name == "mmu" else c
        for name, c in zip(
            g.column("group").to_pylist(), g.column("cycles").to_pylist(), strict=True
        )
    ]
    i = g.column_names.index("cycles")
    pq.write_table(g.set_column(i, "cycles", pa.array(cycles, pa.uint64())), p)
    v = t / "replay" / "backend=vmi-without-irq-none" / "violations.parquet"
    vt = pq.read_table(v)
    pq.write_table(vt.slice(1), v)
    reseal_run(p.parent)
    reseal_run(v.parent)
    r = CliRunner().invoke(diff, [str(replayed_trace / "replay"), str(t / "replay"), "--json"])
    assert r.exit_code == EXIT_DIFFERS, r.output
    d = json.loads(r.output)
    assert [(x["backend"], x["group"], x["delta"]) for x in d["groups"]] == [("vmi", "mmu", 7)]
    removed = vt.slice(0, 1).to_pylist()[0]
    (c,) = [c for c in d["checks"] if c["check"] == removed["check"]]
    assert c["backend"] == "vmi-without-irq-none"
    assert c["delta"] == -1 and c["first_seq_a"] == removed["seq"]
    text = CliRunner().invoke(diff, [str(replayed_trace / "replay"), str(t / "replay")]).output
    assert "replay results differ" in text and "vmi-without-irq-none" in text


def test_diff_a_trace_with_a_replay_is_a_usage_error(replayed_trace: Path) -> None:
    r = CliRunner().invoke(diff, [str(replayed_trace), str(replayed_trace / "replay")])
    assert r.exit_code == 2 and "two traces or two replay results" in r.output
