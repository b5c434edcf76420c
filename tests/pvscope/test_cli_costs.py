"""``pvscope costs``: the presets listed, a table shown with every number's provenance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pvscope.cli import main
from replayer import costs


def invoke(*args: str, columns: int = 100) -> Any:
    return CliRunner().invoke(main, list(args), env={"COLUMNS": str(columns)})


def toml_from(doc: dict[str, Any]) -> str:
    """Write ``costs show --json`` output back as a cost table."""
    lines = ["[table]", f"name = {json.dumps(doc['name'])}", f"cpu = {json.dumps(doc['cpu'])}"]
    for section, entries in (("primitive", doc["primitives"]), ("guest", doc["guest"])):
        for e in entries:
            lines += [f"[{section}.{e['name']}]", f"cycles = {e['cycles']!r}"]
            lines.append(f"{e['provenance']} = {json.dumps(e['text'])}")
    return "\n".join(lines) + "\n"


def test_list_names_every_preset_with_its_provenance_counts() -> None:
    r = invoke("costs", "list", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["table"]: row for row in json.loads(r.stdout)}
    assert set(rows) == set(costs.presets()) >= {"p4", "nehalem", "icelake"}
    for name, row in rows.items():
        assert row["source"] + row["measured"] + row["estimate"] == len(costs.PRIMITIVES)
        assert row == {"table": name, "cpu": costs.load(name).cpu, **costs.load(name).counts()}
    assert rows["p4"]["source"] == 15 and rows["icelake"]["estimate"] == len(costs.PRIMITIVES)
    text = invoke("costs", "list").stdout
    assert "icelake" in text and "Ice Lake server" in text


@pytest.mark.parametrize("name", ["p4", "icelake"])
def test_show_json_round_trips_the_table(name: str, tmp_path: Path) -> None:
    r = invoke("costs", "show", name, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    t = costs.load(name)
    assert (doc["sha256"], doc["origin"]) == (t.sha256, f"preset:{name}")
    again = costs.parse(toml_from(doc).encode(), "again")
    assert (again.name, again.cpu) == (t.name, t.cpu)
    assert again.cycles == t.cycles and again.sources == t.sources
    assert again.guest == t.guest and again.guest_sources == t.guest_sources
    assert doc["counts"]["primitives"] == t.counts()
    assert sum(doc["shares"]["primitives"].values()) == pytest.approx(1.0)
    assert {e["group"] for e in doc["primitives"]} == set(costs.GROUPS)


def test_show_prints_every_number_grouped_with_separators_and_a_footer() -> None:
    r = invoke("costs", "show", "p4")
    assert r.exit_code == 0, r.output
    out = r.stdout
    for name in [*costs.PRIMITIVES, *costs.GUEST]:
        assert f" {name} " in out, name
    assert "12,733" in out and "15,826" in out  # hw_ptemod, hw_io: thousands separators
    rows = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert rows.index("binary translation") < rows.index("bt_ptemod") < rows.index("guest")
    assert rows.index("guest") < rows.index("cpi_kernel")
    assert "primitives: 15 source (34%), 0 measured (0%), 29 estimate (66%)" in out


def test_show_fits_a_narrow_terminal_without_cutting_numbers() -> None:
    out = invoke("costs", "show", "icelake", columns=64).stdout
    assert max(len(line) for line in out.splitlines()) <= 64
    assert "20,000" in out and "1,545" in out and "…" not in out
    wide = invoke("costs", "show", "icelake", columns=200).stdout
    assert len(wide.splitlines()) < len(out.splitlines())  # the citations wrap, not cut


def test_show_reads_a_table_file_and_names_its_provenance(tmp_path: Path) -> None:
    text = (costs.PRESET_DIR / "nehalem.toml").read_text()
    f = tmp_path / "mine.toml"
    f.write_text(text.replace('name = "nehalem"', 'name = "mine"'))
    doc = json.loads(invoke("costs", "show", str(f), "--json").stdout)
    assert doc["name"] == "mine" and doc["origin"] == "mine.toml"
    vm_exit = next(e for e in doc["primitives"] if e["name"] == "vm_exit")
    assert vm_exit["provenance"] == "source" and "SplitX" in vm_exit["text"]


def test_show_prints_bracketed_text_as_text(tmp_path: Path) -> None:
    m = costs.Measurement(900, "timed [in a KVM guest]", (850.0, 950.0), 5)
    text = costs.render_measured(costs.load("p4"), {"vm_exit": m}, "host", "cpu", [], {})
    f = tmp_path / "host.toml"
    f.write_text(text)
    out = "".join(invoke("costs", "show", str(f), columns=400).stdout.split())
    assert "[kept" in out and "[inaKVMguest]" in out  # rich markup would swallow these


def test_a_broken_table_is_one_line_and_exit_1(tmp_path: Path) -> None:
    text = (costs.PRESET_DIR / "p4.toml").read_text()
    start = text.index("[guest.cpi_kernel]")
    f = tmp_path / "bad.toml"
    f.write_text(text[:start] + text[text.index("[guest.cpi_user]") :])
    r = invoke("costs", "show", str(f))
    assert r.exit_code == 1
    assert r.stderr == f"pvscope: error: {f}: missing guest parameter 'cpi_kernel'\n"
    f.write_text(text.replace('source = "Adams & Agesen ASPLOS 2006, in nanobenchmark', 'x = "'))
    r = invoke("costs", "show", str(f), "--json")
    assert r.exit_code == 1 and r.stdout == ""
    assert "primitive 'native_io': unknown key 'x'" in r.stderr
    assert r.stderr.count("\n") == 1


def test_an_unknown_table_is_a_usage_error_exit_2() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pvscope", "costs", "show", "pentium9"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("pvscope: error: unknown cost table 'pentium9'")
    assert r.stderr.count("\n") == 1


def test_show_with_a_replay_gives_each_runs_estimate_share(tmp_path: Path) -> None:
    from recorder.record import record
    from replayer import api, backends

    trace = tmp_path / "t"
    record("pvcall", trace, scale=300)
    runs = backends.resolve("native,xen-pv") + backends.resolve("xen-pv", "irq", "trap")
    summaries = api.replay_trace(trace, runs, costs.load("p4"), tmp_path / "r")
    r = invoke("costs", "show", "p4", "--replay", str(tmp_path / "r"), "--json")
    assert r.exit_code == 0, r.output
    shares = {s["backend"]: s for s in json.loads(r.stdout)["replay_shares"]}
    for s in summaries:
        got = shares[s["backend"]]
        assert got["estimate_share"] == s["estimate_share"]
        assert got["whole_run_estimate_share"] == s["whole_run"]["estimate_share"]
    assert shares["xen-pv-without-irq-trap"]["whole_run_estimate_share"] is None
    assert 0 < shares["xen-pv"]["whole_run_estimate_share"] < 1
    text = invoke("costs", "show", "p4", "--replay", str(tmp_path / "r")).output
    assert "xen-pv" in text and "an ablation: not computed" in text
    bad = invoke("costs", "show", "nehalem", "--replay", str(tmp_path / "r"))
    assert bad.exit_code == 2 and "replayed under cost table 'p4'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
