"""``pvscope replay`` and ``pvscope backends`` as commands: output, exit codes, errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pvscope.errors import PvscopeError
from replayer.cli import EXIT_VIOLATIONS, backends_cmd, replay


def _invoke(args: list[str]) -> tuple[int, str, BaseException | None]:
    r = CliRunner().invoke(replay, args)
    exc = r.exception if not isinstance(r.exception, SystemExit) else None
    return r.exit_code, r.output, exc


def test_backends_lists_every_backend_with_its_mechanisms() -> None:
    r = CliRunner().invoke(backends_cmd, [])
    assert r.exit_code == 0
    for name in ("native", "vmi", "xen-pv", "lguest", "hvm-shadow", "hvm-npt", "bt"):
        assert f"{name}: " in r.output
    rows = json.loads(CliRunner().invoke(backends_cmd, ["--json"]).output)
    xen = next(x for x in rows if x["name"] == "xen-pv")
    assert xen["batching"]["capacity"] == 32 and "apic" not in xen["relies_on"]
    assert set(xen["mechanisms"]) == {
        "irq masking",
        "PTE updates",
        "PT alloc/release",
        "CR3/TLB",
        "APIC",
        "batching",
    }


def test_a_clean_replay_exits_0_and_an_expected_ablation_failure_too(
    synth_path: Path, tmp_path: Path
) -> None:
    code, out, exc = _invoke([str(synth_path), "-b", "native,hvm-npt", "-o", str(tmp_path), "-q"])
    assert (code, exc) == (0, None)
    assert "native" in out and "hvm-npt" in out
    code, out, exc = _invoke(
        [str(synth_path), "-b", "xen-pv", "--without", "pteupdate", "--fallback", "none"]
        + ["-o", str(tmp_path), "-q", "--json"]
    )
    # with no fallback, page-table updates go unnoticed: mmu violations, as designed
    assert code == 0 and exc is None
    s = json.loads(out)[0]
    assert s["backend"] == "xen-pv-without-pteupdate-none" and s["families"]["mmu"] > 0
    assert s["expected_families"] == ["mmu"] and s["as_expected"]
    code, out, _ = _invoke(
        [str(synth_path), "-b", "xen-pv", "--without", "pteupdate", "--fallback", "none"]
        + ["-o", str(tmp_path), "-q"]
    )
    assert "expected to fail and did: 1 ablation" in out and "UNEXPECTED" not in out


def test_a_violation_the_design_does_not_predict_exits_3(synth_path: Path, tmp_path: Path) -> None:
    """A read_cr0 result no backend would give: every run, designed or not, is wrong in a
    way it does not predict."""
    trace = tmp_path / "t"
    shutil.copytree(synth_path, trace)
    events = pq.read_table(trace / "events.parquet")
    hook = events.column("hook").to_pylist()
    first = hook.index("read_cr0")
    result = events.column("result").to_pylist()
    result[first] = (result[first] or 0) ^ 0x4  # flip CR0.EM
    i = events.schema.get_field_index("result")
    events = events.set_column(i, events.schema.field(i), pa.array(result, pa.uint64()))
    pq.write_table(events, trace / "events.parquet")
    code, out, exc = _invoke(
        [str(trace), "-b", "xen-pv", "--without", "cpl", "--fallback", "none"]
        + ["-q", "-o", str(tmp_path / "r"), "--json"]
    )
    # the cpl ablation may break privilege checks, not what the guest reads
    assert code == EXIT_VIOLATIONS and exc is None
    s = json.loads(out)[0]
    assert s["families"]["result"] > 0 and not s["as_expected"]
    code, out, _ = _invoke([str(trace), "-b", "native", "-q", "-o", str(tmp_path / "r2")])
    assert code == EXIT_VIOLATIONS
    assert "UNEXPECTED: native has" in out and "its design allows none" in out


def test_results_default_to_the_trace_directory(synth_path: Path, tmp_path: Path) -> None:
    trace = tmp_path / "t"
    shutil.copytree(synth_path, trace)
    code, _, _ = _invoke([str(trace), "-b", "native", "-q"])
    assert code == 0
    assert (trace / "replay" / "backend=native" / "summary.parquet").exists()


def _assert_error(args: list[str], message: str, code: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, _, exc = _invoke(args + ["-o", str(out), "-q"])
    assert isinstance(exc, PvscopeError), exc
    assert message in str(exc) and "\n" not in str(exc)
    assert exc.exit_code == code
    assert not out.exists()  # nothing written


def test_bad_input_is_one_line_and_writes_nothing(synth_path: Path, tmp_path: Path) -> None:
    t = str(synth_path)
    _assert_error([str(tmp_path / "nope"), "-b", "native"], "no such trace directory", 1, tmp_path)
    _assert_error([t, "-b", "kvm"], "unknown backend 'kvm'", 2, tmp_path)
    _assert_error(
        [t, "-b", "vmi", "--without", "fpu", "--fallback", "trap"],
        "unknown requirement",
        2,
        tmp_path,
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[table]\nname = 'x'\n[primitive.call_ret]\ncycles = 1\nsource = 'x'\n")
    _assert_error([t, "-b", "native", "--costs", str(bad)], "missing primitive", 1, tmp_path)
    bad.write_text("this is not toml = = =")
    _assert_error([t, "-b", "native", "--costs", str(bad)], "bad TOML", 1, tmp_path)


@pytest.mark.parametrize("damage", ["corrupt", "version", "missing"])
def test_a_damaged_trace_is_refused(synth_path: Path, tmp_path: Path, damage: str) -> None:
    trace = tmp_path / "t"
    shutil.copytree(synth_path, trace)
    if damage == "corrupt":
        p = trace / "events.parquet"
        p.write_bytes(p.read_bytes()[:500])
        msg = "events.parquet"
    elif damage == "version":
        m = json.loads((trace / "manifest.json").read_text())
        m["schema_version"] = m["min_reader_version"] = 99
        (trace / "manifest.json").write_text(json.dumps(m))
        msg = "version 99"
    else:
        (trace / "state.parquet").unlink()
        msg = "state.parquet: missing"
    _assert_error([str(trace), "-b", "native"], msg, 1, tmp_path)
    assert not (trace / "replay").exists()


def test_json_summary_has_groups_and_first_divergence(synth_path: Path, tmp_path: Path) -> None:
    code, out, _ = _invoke(
        [str(synth_path), "-b", "lguest", "--without", "irq", "--fallback", "none"]
        + ["-o", str(tmp_path), "-q", "--json"]
    )
    s = json.loads(out)[0]
    assert code == 0 and s["as_expected"]  # the violations an irq ablation is expected to show
    assert s["first_divergence"]["check"] in ("irq.masked", "result")
    assert {"irq", "mmu", "interrupt"} <= set(s["groups"])
    v = pq.read_table(tmp_path / "backend=lguest-without-irq-none" / "violations.parquet")
    assert v.num_rows == s["violations"]


def test_an_output_path_that_cannot_be_a_results_directory_is_one_line(
    synth_path: Path, tmp_path: Path
) -> None:
    deep = tmp_path / "no" / "such" / "dir"
    rc, _, exc = _invoke([str(synth_path), "-b", "native", "-q", "-o", str(deep)])
    assert isinstance(exc, PvscopeError) and exc.exit_code == 2 and "no such directory" in str(exc)
    assert not (tmp_path / "no").exists()  # no directories made on the way
    f = tmp_path / "file"
    f.write_text("x")
    rc, _, exc = _invoke([str(synth_path), "-b", "native", "-q", "-o", str(f)])
    assert isinstance(exc, PvscopeError) and "not a directory" in str(exc)
    assert f.read_text() == "x"


def test_a_second_replay_into_the_same_results_fails_in_one_line(
    synth_path: Path, tmp_path: Path
) -> None:
    import fcntl

    out = tmp_path / "r"
    out.mkdir()
    held = os.open(out, os.O_RDONLY)  # another replay is writing here
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, _, exc = _invoke([str(synth_path), "-b", "native", "-q", "-o", str(out)])
        assert isinstance(exc, PvscopeError) and "another replay is writing" in str(exc)
        assert exc.exit_code == 1 and not list(out.glob("backend=*"))
    finally:
        os.close(held)
    rc, _, exc = _invoke([str(synth_path), "-b", "native", "-q", "-o", str(out)])
    assert rc == 0 and exc is None and (out / "backend=native" / "summary.parquet").is_file()


def test_temporaries_a_killed_replay_left_are_ignored_by_readers(
    synth_path: Path, tmp_path: Path
) -> None:
    from analysis.views import Session

    trace = tmp_path / "t"
    shutil.copytree(synth_path, trace)
    assert _invoke([str(trace), "-b", "native,vmi", "-q"])[0] == 0
    stale = trace / "replay" / ".tmp-backend=vmi.abc123"
    shutil.copytree(trace / "replay" / "backend=vmi", stale)
    (stale / "summary.parquet").write_bytes(b"half-written")
    with Session(trace) as s:
        rows = s.query("select backend from summary order by backend").to_pylist()
    assert [r["backend"] for r in rows] == ["native", "vmi"]


def test_killing_a_replay_kills_its_workers(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from recorder.record import record

    trace = tmp_path / "t"
    record("fork", trace, scale=600)  # long enough to be killed mid-way, even under load
    p = subprocess.Popen(
        [sys.executable, "-m", "pvscope", "replay", str(trace), "-b", "all", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    children: list[int] = []
    deadline = time.monotonic() + 60
    while not children and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            text = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text()
        except FileNotFoundError:
            break
        children = [int(c) for c in text.split()]
    assert children, f"the replay started no workers (exit {p.poll()})"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [
        c
        for c in children
        if Path(f"/proc/{c}/status").exists()
        and "zombie" not in Path(f"/proc/{c}/status").read_text()
    ]
    assert not alive, alive
    err = p.stderr.read() if p.stderr else ""
    assert "Traceback" not in err, err


def test_a_replay_with_workers_prints_nothing_but_its_table(tmp_path: Path) -> None:
    """The pool ends its workers with SIGTERM; they leave quietly."""
    import subprocess
    import sys

    from recorder.record import record

    trace = tmp_path / "t"
    record("pvcall", trace, scale=300)
    p = subprocess.run(
        [sys.executable, "-m", "pvscope", "replay", str(trace), "-b", "all", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and "terminated" not in p.stderr, p.stderr


def test_several_cost_tables_in_one_go_each_labelled(synth_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    code, text, exc = _invoke(
        [str(synth_path), "-b", "native,vmi", "--costs", "p4,nehalem", "-o", str(out)]
    )
    assert exc is None and code == 0, text
    p4_at, neh_at = text.index("cost table p4 ("), text.index("cost table nehalem (")
    assert p4_at < neh_at and text.count("  vmi ") == 2
    assert sorted(d.name for d in out.glob("costs=*")) == ["costs=nehalem", "costs=p4"]
    code, text, exc = _invoke(
        [str(synth_path), "-b", "vmi", "--costs", "nehalem,p4", "-o", str(out), "--json", "-q"]
    )
    assert [s["cost_table"] for s in json.loads(text)] == ["nehalem", "p4"]
    for spec, match in (("p4,p4", "a table given twice"), ("p4,", "an empty table name")):
        code, _, exc = _invoke(
            [str(synth_path), "-b", "vmi", "--costs", spec, "-o", str(tmp_path / "x")]
        )
        assert isinstance(exc, PvscopeError) and match in str(exc)
        assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("width", [80, 120])
def test_the_summary_fits_the_terminal_and_keeps_numbers_whole(
    synth_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    args = [str(synth_path), "-b", "native,xen-pv,hvm-npt"]
    code, out, _ = _invoke([*args, "-o", str(tmp_path), "-q", "--json"])
    runs = json.loads(out)
    monkeypatch.setenv("PVSCOPE_WIDTH", str(width))
    code, out, exc = _invoke([*args, "-o", str(tmp_path), "-q"])
    assert exc is None
    table = out.split("\nwhole-run: ")[0].splitlines()
    assert all(len(line) <= width for line in table) and "…" not in out
    for s in runs:
        row = next(line for line in table if line.startswith(s["backend"]))
        assert f"{s['whole_run']['slowdown']:.2f}×" in row.split()
        assert f"{s['interface_ratio']:.2f}×" in row.split() or width < 100
    if width == 80:
        assert "left out to fit 80 columns" in out


def test_the_command_fixes_the_mmap_threshold_before_it_loads_the_trace(
    synth_path: Path, tmp_path: Path, load_order: list[str]
) -> None:
    # as api.replay_trace does (test_results.py): the command loads the trace itself, and
    # what that load frees must leave the process before the workers fork
    code, _, exc = _invoke([str(synth_path), "-b", "native", "-o", str(tmp_path / "r"), "-q"])
    assert code == 0 and exc is None
    assert load_order[:2] == ["threshold", "load"] and load_order.count("load") == 1
