"""``pvscope replay --reasons`` and the exit reasons in ``--json``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from replayer import exitstat
from replayer.cli import replay


def _run(args: list[str]) -> str:
    r = CliRunner().invoke(replay, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def test_reasons_follow_the_summary_only_when_asked(synth_path: Path, tmp_path: Path) -> None:
    base = [str(synth_path), "-b", "native,xen-pv", "-o", str(tmp_path), "-q"]
    assert "reasons by cycles" not in _run(base)
    out = _run([*base, "--reasons"])
    lines = out.splitlines()
    heads = [i for i, line in enumerate(lines) if "reasons by cycles" in line]
    assert [lines[i].split(":")[0] for i in heads] == ["native", "xen-pv"]
    assert heads[0] > next(i for i, line in enumerate(lines) if line.startswith("xen-pv "))
    assert lines[-1].startswith("results in ")
    rows = exitstat.from_run_dir(tmp_path / "backend=xen-pv")
    shown = [r for r in rows if r["cycles"]][: exitstat.TOP]
    body = lines[heads[1] + 2 : heads[1] + 2 + len(shown)]
    assert [b.split()[:2] for b in body] == [r["reason"].split() for r in shown]
    out = _run([*base, "--reasons", "2"])
    assert "xen-pv: top 2 of" in out


def test_json_carries_every_reason(synth_path: Path, tmp_path: Path) -> None:
    out = _run([str(synth_path), "-b", "xen-pv", "-o", str(tmp_path), "-q", "--json"])
    (s,) = json.loads(out)
    reasons = s["exit_reasons"]
    assert reasons == exitstat.from_run_dir(tmp_path / "backend=xen-pv")
    assert sum(r["cycles"] for r in reasons) == s["cycles"]
    assert sum(r["hypercalls"] for r in reasons) == s["hypercalls"]
    assert sum(r["traps"] for r in reasons) == s["traps"]
    assert sum(r["exits"] for r in reasons) == s["exits"]
