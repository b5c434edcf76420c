"""The KVM VMM and the calibration nanobenchmarks: encodings always, guests where
/dev/kvm works."""

from __future__ import annotations

import struct
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from pvscope.cli import main
from recorder import calibrate as cal
from recorder import kvm
from replayer import costs

needs_kvm = pytest.mark.skipif(kvm.available() is not None, reason=f"{kvm.available()}")


def test_the_loop_jumps_back_to_its_body() -> None:
    b = cal.Bench("t", "t", b"\x90\x90", setup=b"\x31\xdb", iterations=7)
    code = cal.assemble(b)
    assert code.startswith(b"\x31\xdb\xbd" + struct.pack("<I", 7))  # setup; mov ebp, 7
    body_at = code.index(b"\x90\x90")
    jnz = code.index(b"\xff\xcd\x0f\x85") + 2  # dec ebp; jnz rel32
    rel = struct.unpack_from("<i", code, jnz + 2)[0]
    assert jnz + 6 + rel == body_at


def test_absolute_operands_are_not_rip_relative() -> None:
    # mod 00 r/m 101 means [rip + disp32] in 64-bit mode: absolute needs a SIB byte
    assert cal._abs(b"\x89", 6, 0x5000) == b"\x89\x34\x25" + struct.pack("<I", 0x5000)


def test_every_primitive_a_benchmark_names_is_a_cost_table_primitive() -> None:
    for b in cal.benches():
        assert b.primitive is None or b.primitive in costs.PRIMITIVES, b.name
        assert (b.ring == 3) == (b.name in cal.USER_MODE or b.name == "empty3"), b.name


@needs_kvm
def test_a_guest_reports_its_fault_and_a_silent_one_is_stopped() -> None:
    with kvm.Machine() as m:
        m.write(kvm.CODE, b"\x31\xdb\xf7\xf3")  # xor ebx, ebx; div ebx: #DE, no handler
        m.start()
        ex = m.run()
        assert (ex.reason, ex.port, m.io_data(1)) == (kvm.EXIT_IO, kvm.FAULT_PORT, 0)
        m.write(kvm.CODE, b"\xeb\xfe")  # jmp $
        m.start_user()
        with pytest.raises(kvm.KvmError, match="no exit within"):
            m.run(timeout=0.3)


@needs_kvm
def test_an_exit_costs_more_than_an_instruction() -> None:
    r = cal.measure(repetitions=3, scale=0.05)
    assert r["empty3"].median < cal.NATIVE_LOOP  # user code runs natively
    assert not r["cpuid"].failed and not r["rdtsc"].failed
    assert r["cpuid"].median > 10 * r["rdtsc"].median > 0


@needs_kvm
def test_calibrate_writes_a_table_that_loads(tmp_path: Path) -> None:
    out = tmp_path / "host.toml"
    args = ["calibrate", "-o", str(out), "--repetitions", "3", "--scale", "0.05"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    table = costs.load(out)
    assert table.sources["vm_exit"].startswith("measured: ")
    assert "[kept from p4:" in table.sources["native_cpuid"]
    doc = tomllib.loads(out.read_text())
    lo, hi = doc["primitive"]["vm_exit"]["spread"]
    assert lo <= table["vm_exit"] <= hi
    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0 and "exists" in again.output


def test_a_table_with_two_provenances_is_refused() -> None:
    text = costs.render_measured(
        costs.load("p4"),
        {"vm_exit": costs.Measurement(1000, "timed", (900.0, 1100.0), 3)},
        "t",
        "cpu",
        [],
        {},
    )
    assert costs.parse(text.encode(), "t").sources["vm_exit"] == "measured: timed"
    bad = text.replace('measured = "timed"', 'measured = "timed"\nsource = "a paper"')
    with pytest.raises(costs.CostTableError, match="exactly one of source, measured or estimate"):
        costs.parse(bad.encode(), "t")


def test_calibrate_without_kvm_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kvm, "available", lambda: "/dev/kvm: No such file or directory")
    res = CliRunner().invoke(main, ["calibrate"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "pvscope: error: calibrate needs KVM: /dev/kvm: No such file or directory"
    ]
