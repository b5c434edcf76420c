"""pvscope nanobench: cycles per operation per backend from the nanobench guest."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pvscope.cli import main
from recorder.nanobench import PHASES


def test_json_has_a_row_per_phase_and_backend_and_the_table_names_every_phase() -> None:
    r = CliRunner().invoke(main, ["nanobench", "-b", "native,xen-pv", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert {(x["phase"], x["backend"]) for x in rows} == {
        (p.name, b) for p in PHASES for b in ("native", "xen-pv")
    }
    by = {(x["phase"], x["backend"]): x["cycles_per_op"] for x in rows}
    # native call/ret is exactly one call/ret pair; xen-pv's ptemod is a hypercall
    assert by["call/ret", "native"] == 11
    assert by["ptemod", "xen-pv"] > 10 * by["ptemod", "native"]
    text = CliRunner().invoke(main, ["nanobench", "-b", "native,xen-pv"]).output
    for p in PHASES:
        assert p.name in text


def test_bad_input_is_one_line() -> None:
    r = CliRunner().invoke(main, ["nanobench", "--scale", "0"])
    assert r.exit_code == 2 and "--scale" in r.output and len(r.output.splitlines()) == 1
    r = CliRunner().invoke(main, ["nanobench", "-b", "nosuch"])
    assert r.exit_code == 2 and len(r.output.splitlines()) == 1
