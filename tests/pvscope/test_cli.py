"""The command line: one-line errors, exit codes, machine-readable output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pvscope.hooks import HOOKS
from tests.recorder.conftest import make_elf32


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pvscope", *args], capture_output=True, text=True, cwd=cwd
    )


def test_hooks_json_lists_the_catalogue() -> None:
    r = run("hooks", "--json")
    assert r.returncode == 0
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows] == [h.name for h in HOOKS]
    assert {x["requirement"] for x in rows} >= {"irq", "ptalloc", "pteupdate", "apic", "cpl"}


def test_guests_lists_pvcall() -> None:
    r = run("guests")
    assert r.returncode == 0 and "pvcall" in r.stdout


def test_record_prints_a_summary_and_exits_zero(tmp_path: Path) -> None:
    r = run("record", "--guest", "pvcall", "-o", str(tmp_path / "t"), "--scale", "50", "-q")
    assert r.returncode == 0, r.stderr
    assert "complete" in r.stdout
    r = run("record", "--guest", "pvcall", "-o", str(tmp_path / "j"), "--scale", "50", "--json")
    manifest = json.loads(r.stdout)
    assert manifest["end"]["status"] == "complete"
    assert isinstance(manifest["counts"]["events"], int)
    # the summary line: counts with separators, plurals, as every command says them
    m = json.loads((tmp_path / "t" / "manifest.json").read_text())
    n = m["counts"]["events"]
    line = run(
        "record", "--guest", "pvcall", "-o", str(tmp_path / "t"), "--scale", "50", "-q", "--force"
    ).stdout
    assert f"{n:,} events (" in line and f"{m['counts']['instructions']:,} instructions" in line


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--guest", "nope"], 1, "unknown guest"),
        (["--guest", "{tmp}/missing.elf"], 1, "no such guest image"),
        (["--guest", "{tmp}/text.elf"], 1, "not an ELF file"),
        (["--guest", "{tmp}/x64.elf"], 1, "64-bit ELF"),
        (["--guest", "{tmp}/norom.elf"], 1, "never found the ROM"),
        (["--guest", "pvcall", "--budget", "0"], 2, "budget"),
        (["--guest", "pvcall", "--budget", "-1"], 2, "budget"),
    ],
)
def test_record_bad_input_is_one_line_without_traceback(
    tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    (tmp_path / "text.elf").write_text("hello\n")
    (tmp_path / "x64.elf").write_bytes(make_elf32(b"\x90", elfclass=2))
    (tmp_path / "norom.elf").write_bytes(make_elf32(b"\x0f\x0b"))
    out = tmp_path / "out"
    r = run("record", *[a.format(tmp=tmp_path) for a in args], "-o", str(out), "-q")
    assert r.returncode == code, r.stderr
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not out.exists()


def test_existing_output_and_unwritable_path(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    r = run("record", "--guest", "pvcall", "-o", str(tmp_path / "t"), "-q")
    assert r.returncode == 2 and "already exists" in r.stderr
    r = run("record", "--guest", "pvcall", "-o", str(tmp_path / "no" / "t"), "-q")
    assert r.returncode == 2 and "no such directory" in r.stderr
    # /proc refuses new entries even to root
    r = run("record", "--guest", "pvcall", "-o", "/proc/pvscope-trace", "-q")
    assert r.returncode == 2
    assert "cannot write there" in r.stderr or "not writable" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _leaves(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    import click

    out = []
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            out += _leaves(cmd, (*path, name))
        else:
            out.append(((*path, name), cmd))
    return out


def test_every_command_accepts_json() -> None:
    from pvscope.cli import main

    leaves = _leaves(main)
    names = {" ".join(p) for p, _ in leaves}
    assert {"record", "replay", "demo", "query", "golden check", "golden update", "schema"} <= names
    missing = [
        " ".join(p)
        for p, cmd in leaves
        if not any("--json" in o.opts for o in cmd.params if hasattr(o, "opts"))
    ]
    assert missing == []


def test_golden_check_json_parses(tmp_path: Path) -> None:
    r = run("golden", "check", "pvcall", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["passed"] == 1 and doc["failed"] == 0
    assert doc["workloads"] == [{"workload": "pvcall", "ok": True, "failures": []}]
    text = run("golden", "check", "pvcall").stdout
    assert "1 golden workload: 1 passed" in text and "workloads" not in text


def test_hooks_and_guests_are_tables_that_fit() -> None:
    import os

    env = {**os.environ, "PVSCOPE_WIDTH": "80"}
    for args in (["hooks"], ["guests"], ["schema"]):
        r = subprocess.run(
            [sys.executable, "-m", "pvscope", *args], capture_output=True, text=True, env=env
        )
        assert r.returncode == 0, r.stderr
        assert all(len(line) <= 80 for line in r.stdout.splitlines()), args
        assert "…" not in r.stdout


def test_golden_update_json_says_what_changed(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pvscope.cli import main

    args = ["golden", "update", "boot", "--root", str(tmp_path), "--json"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    (first,) = json.loads(r.output)
    assert (first["workload"], first["state"]) == ("boot", "new")
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    (again,) = json.loads(r.output)
    assert again["state"] == "unchanged" and again["changed"] == [] == again["added"]
    r = CliRunner().invoke(main, args[:-1], catch_exceptions=False)
    assert r.output.strip() == "boot: unchanged"


def test_schema_prints_every_view_users_can_query() -> None:
    from pvscope import schema

    r = run("schema")
    assert r.returncode == 0, r.stderr
    for v in schema.views().values():
        assert f"\n{v.name}" in r.stdout or r.stdout.startswith(v.name), v.name
    doc = json.loads(run("schema", "--json").stdout)
    assert doc["views"]["summary"]["columns"][1]["name"] == "backend"
    assert doc["views"]["events"]["columns"][0]["name"] == "trace"
    hexed = {c["name"] for c in doc["views"]["events"]["columns"] if c["display"] == "hex"}
    assert {"site", "cr3", "arg0"} <= hexed
