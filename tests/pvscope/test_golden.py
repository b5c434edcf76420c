"""Golden traces: the committed ones still hold, and the check fails when it should."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pvscope.cli import golden as g
from tests.support.reseal import reseal


def _check(root: Path, names: list[str] | None = None) -> tuple[list[g.Outcome], str]:
    lines: list[str] = []
    outcomes = g.check(names, root, report=lines.append)
    return outcomes, "\n".join(lines)


@pytest.mark.parametrize("workload", g.workloads())
def test_golden_workload_holds(workload: str) -> None:
    outcomes, text = _check(g.GOLDEN_ROOT, [workload])
    assert outcomes[0].ok, text


@pytest.fixture
def golden_copy(tmp_path: Path) -> Path:
    root = tmp_path / "golden"
    shutil.copytree(g.GOLDEN_ROOT / "pvcall", root / "pvcall")
    return root


def test_a_changed_event_fails_with_the_first_differing_row(golden_copy: Path) -> None:
    events = golden_copy / "pvcall" / "trace" / "events.parquet"
    t = pq.read_table(events)
    # drop one hook call from the golden stream: as if the guest path had changed
    victim = t.column("hook").to_pylist().index("write_cr3")
    t = pa.concat_tables([t.slice(0, victim), t.slice(victim + 1)])
    pq.write_table(t.cast(pq.read_schema(events)), events)
    reseal(events.parent)
    outcomes, text = _check(golden_copy)
    assert not outcomes[0].ok
    assert "[  FAILED  ] pvcall" in text
    assert f"first differing event at seq {victim}" in text
    assert "hook=write_cr3" in text
    assert "reproduce:  pvscope record --guest pvcall" in text
    assert "regenerate: pvscope golden update pvcall" in text


def test_a_truncated_golden_file_is_reported_as_corrupt(golden_copy: Path) -> None:
    events = golden_copy / "pvcall" / "trace" / "events.parquet"
    events.write_bytes(events.read_bytes()[:1000])
    outcomes, text = _check(golden_copy)
    assert not outcomes[0].ok
    assert "golden trace is corrupt" in text and "events.parquet" in text


def test_a_missing_golden_file_is_reported(golden_copy: Path) -> None:
    (golden_copy / "pvcall" / "trace" / "state.parquet").unlink()
    outcomes, text = _check(golden_copy)
    assert "state.parquet is missing" in text and not outcomes[0].ok


def test_golden_traces_stay_small() -> None:
    size = sum(p.stat().st_size for p in g.GOLDEN_ROOT.rglob("*") if p.is_file())
    assert size < 5 * 1024 * 1024


# --- mutations of the code and data behind a golden trace, each in a temporary copy of
# the source tree, checked by the real command line in a subprocess -----------------

_PACKAGES = ("pvscope", "recorder", "replayer", "analysis")


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The packages and the pvcall golden workload, copied; the copy is what runs."""
    here = g.GOLDEN_ROOT.parent.parent
    tree = tmp_path / "tree"
    for pkg in _PACKAGES:
        shutil.copytree(here / pkg, tree / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(g.GOLDEN_ROOT / "pvcall", tree / "traces" / "golden" / "pvcall")
    return tree


def _check_copy(tree: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    probe = subprocess.run(
        [sys.executable, "-c", "import pvscope as p, replayer as r; print(p.__file__, r.__file__)"],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.count(str(tree)) == 2, probe.stdout  # the copy runs, not the tree
    root = tree / "traces" / "golden"
    r = subprocess.run(
        [sys.executable, "-m", "pvscope", "golden", "check", "pvcall", "--root", str(root)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
    )
    return r.returncode, r.stdout + r.stderr


def test_an_unmutated_copy_passes(tree_copy: Path) -> None:
    code, out = _check_copy(tree_copy)
    assert code == 0, out
    assert "[       OK ] pvcall" in out


def test_a_changed_cost_number_fails_naming_backend_and_field(tree_copy: Path) -> None:
    table = tree_copy / "replayer" / "costs" / "p4.toml"
    text = table.read_text()
    old = "[primitive.native_cpuid]\ncycles = 150\n"
    assert old in text
    table.write_text(text.replace(old, "[primitive.native_cpuid]\ncycles = 151\n"))
    code, out = _check_copy(tree_copy)
    assert code != 0 and "[  FAILED  ] pvcall" in out
    # pvcall calls cpuid 4 times; every backend that runs it natively moves by 4 cycles
    assert "pvcall/native: summary differs:" in out
    assert "cost_sha256: expected" in out
    assert "cycles: expected" in out and "groups.cpu.cycles: expected" in out
    assert "reproduce:  pvscope replay" in out and "--backend native" in out
    assert "pvscope record" not in out  # the trace itself still holds


def test_a_flipped_backend_mechanism_fails_naming_that_backend(tree_copy: Path) -> None:
    src = tree_copy / "replayer" / "backends.py"
    text = src.read_text()
    start = text.index("HVM_SHADOW = Backend(")
    at = text.index('mmu="traced"', start)
    assert at < text.index("\n)\n", start)  # inside the hvm-shadow row
    src.write_text(text[:at] + 'mmu="direct"' + text[at + len('mmu="traced"') :])
    code, out = _check_copy(tree_copy)
    assert code != 0 and "[  FAILED  ] pvcall" in out
    assert "pvcall/hvm-shadow: summary differs:" in out
    assert "--backend hvm-shadow" in out
    failed = {line.split(":")[0].strip() for line in out.splitlines() if "summary differs" in line}
    assert failed == {"pvcall/hvm-shadow"}, failed  # no other backend uses that row


def test_a_hook_call_dropped_from_a_guest_path_fails_at_that_event(tree_copy: Path) -> None:
    from elftools.elf.elffile import ELFFile

    events = pq.read_table(g.GOLDEN_ROOT / "pvcall" / "trace" / "events.parquet")
    hooks = events.column("hook").to_pylist()
    victim = hooks.index("io_delay")  # void, native semantics: the guest runs on without it
    site = events.column("site")[victim].as_py()
    image = tree_copy / "recorder" / "guests" / "images" / "pvcall.elf"
    data = bytearray(image.read_bytes())
    with image.open("rb") as f:
        offset = next(
            s["p_offset"] + site - s["p_vaddr"]
            for s in ELFFile(f).iter_segments()
            if s["p_type"] == "PT_LOAD" and s["p_vaddr"] <= site < s["p_vaddr"] + s["p_filesz"]
        )
    # the indirect call that returns to `site`: call *abs32, call *disp8(%reg) or call *%reg
    if data[offset - 6 : offset - 4] == b"\xff\x15":
        length = 6
    elif data[offset - 3] == 0xFF and 0x50 <= data[offset - 2] <= 0x57:
        length = 3
    else:
        assert data[offset - 2] == 0xFF and 0xD0 <= data[offset - 1] <= 0xD7
        length = 2
    data[offset - length : offset] = b"\x90" * length
    image.write_bytes(bytes(data))
    code, out = _check_copy(tree_copy)
    assert code != 0 and "[  FAILED  ] pvcall" in out
    assert f"first differing event at seq {victim}" in out
    assert "golden: " in out and "hook=io_delay" in out
    assert "reproduce:  pvscope record --guest pvcall" in out
