"""docs/rom-abi.md is enough to bring one's own guest.

The minimal guest written against it (``abi_guest/minimal.S``, no header of the
project's guests) builds with the host toolchain, records to completion through
``pvscope record --guest PATH``, replays on ``native`` with no violation and makes the
hook calls, takes the interrupts and uses the services it means to.  The document's
tables are held to the recorder's code, so the page cannot drift from the ABI unnoticed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from pvscope.cli import main
from pvscope.hooks import HOOKS, Hook
from recorder import rom as R
from recorder.devices import IoDevice
from recorder.ioapic import IOAPIC_BASE
from recorder.lapic import LAPIC_BASE
from recorder.machine import (
    BOOT_GDT,
    ERROR_CODE_VECTORS,
    SEL_R1_CODE,
    SEL_R1_DATA,
    SEL_TSS,
    MachineConfig,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "rom-abi.md"
GUEST_SRC = Path(__file__).parent / "abi_guest"

#: Every hook the minimal guest calls, and how often.
EXPECTED_HOOKS: dict[str, int] = {
    "write_idt_entry": 35,  # vectors 0-31, the two timers, the spurious vector
    "load_idt": 1,
    "alloc_pd": 1,
    "alloc_pt": 4,  # low memory, the hypervisor region, the APIC page, a spare table
    "set_pte": 1024 + 1024 + 2 + 2,  # two full tables, the two APICs, a PTE off and on
    "set_pmd": 3,
    "write_cr3": 1,
    "read_cr3": 1,
    "read_cr0": 1,
    "write_cr0": 1,
    "flush_tlb_single": 1,
    "pte_update": 1,
    "flush_tlb_user": 1,
    "release_pt": 1,
    "save_fl": 1,
    "irq_disable": 4,
    "irq_enable": 1,
    "safe_halt": 2,
    "apic_write": 6,  # SVR, the APIC timer's three registers, two EOIs
    "apic_read": 1,
    "iret": 2,
    "restore_fl": 1,
    "read_tsc": 1,
}


def _toolchain_missing() -> str | None:
    for tool in ("gcc", "ld"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    probe = subprocess.run(
        ["gcc", "-m32", "-ffreestanding", "-c", "-x", "c", "-", "-o", "/dev/null"],
        input=b"int x;\n",
        capture_output=True,
    )
    if probe.returncode:
        return "gcc cannot build 32-bit objects (-m32)"
    return None


@pytest.fixture(scope="module")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The minimal guest, built as the document says."""
    reason = _toolchain_missing()
    if reason:
        pytest.skip(f"cannot build the minimal guest: {reason}")
    out = tmp_path_factory.mktemp("abi_guest")
    obj, elf = out / "minimal.o", out / "minimal.elf"
    for cmd in (
        ["gcc", "-m32", "-ffreestanding", "-nostdlib", "-c", str(GUEST_SRC / "minimal.S")]
        + ["-o", str(obj)],
        ["ld", "-m", "elf_i386", "-nostdlib", "--build-id=none", "-T"]
        + [str(GUEST_SRC / "minimal.ld"), "-o", str(elf), str(obj)],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return elf


@pytest.fixture(scope="module")
def recorded(guest_image: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The guest recorded with ``pvscope record --guest PATH``; the trace and the output."""
    trace = tmp_path_factory.mktemp("abi_trace") / "trace"
    r = CliRunner().invoke(main, ["record", "--guest", str(guest_image), "-o", str(trace)])
    assert r.exit_code == 0, r.output
    return trace, r.output


def _q(trace: Path, sql: str) -> list[tuple]:
    rel = duckdb.sql(sql.replace("EVENTS", f"read_parquet('{trace}/events.parquet')"))
    assert rel is not None
    return rel.fetchall()


# --- the guest ------------------------------------------------------------------------------


def test_the_guest_uses_nothing_of_the_built_in_guests() -> None:
    src = (GUEST_SRC / "minimal.S").read_text()
    assert not re.search(r"^\s*[#.]include", src, re.M)


@pytest.mark.toolchain
def test_the_guest_records_to_completion(recorded: tuple[Path, str]) -> None:
    trace, output = recorded
    m = json.loads((trace / "manifest.json").read_text())
    assert m["end"]["status"] == "complete", m["end"]
    assert m["guest"]["name"] == "minimal"
    assert "abi guest: done" in output  # the console service, echoed by record


@pytest.mark.toolchain
def test_the_guest_makes_the_hook_calls_it_means_to(recorded: tuple[Path, str]) -> None:
    trace, _ = recorded
    calls = dict(_q(trace, "select hook, count(*) from EVENTS where kind = 'hook' group by hook"))
    assert calls == EXPECTED_HOOKS
    # every call from CPL 1, and the shadows answer what was written
    assert _q(trace, "select distinct cpl from EVENTS where kind = 'hook'") == [(1,)]
    (cr3,) = _q(trace, "select arg0 from EVENTS where hook = 'write_cr3'")
    assert _q(trace, "select result from EVENTS where hook = 'read_cr3'") == [cr3]
    (cr0,) = _q(trace, "select arg0 from EVENTS where hook = 'write_cr0'")
    assert cr0[0] & 0x80010001 == 0x80010001  # PG and WP on the boot CR0 (PE)
    assert _q(trace, "select result from EVENTS where hook = 'apic_read'") == [(0x1FF,)]


@pytest.mark.toolchain
def test_the_guest_takes_both_timers_interrupts(recorded: tuple[Path, str]) -> None:
    trace, _ = recorded
    rows = _q(
        trace,
        "select seq, arg0, arg1 from EVENTS where kind = 'interrupt' order by seq",
    )
    # the periodic timer on IOAPIC pin 2 (vector 0x30), then the LAPIC timer (0x31)
    assert [(v, src) for _, v, src in rows] == [(0x30, 2), (0x31, 0x100)]
    for seq, _, _ in rows:
        after = _q(
            trace,
            f"select hook, arg0 from EVENTS where seq > {seq} and kind = 'hook' "
            "order by seq limit 2",
        )
        assert after == [("apic_write", 0xB0), ("iret", after[1][1])]
    # each was waited for in safe_halt: the CPU idled until the interrupt
    assert _q(trace, "select count(*) from EVENTS where kind = 'idle'") == [(2,)]


@pytest.mark.toolchain
def test_the_guest_uses_the_services(recorded: tuple[Path, str]) -> None:
    trace, _ = recorded
    rows = _q(trace, "select arg0, arg1, arg2 from EVENTS where kind = 'guest' order by seq")
    codes = [r[0] for r in rows]
    assert codes == [4, 4, 3, 0]  # a phase opened and closed, the console, exit
    assert rows[0][1:] == (1, 0) and rows[1][1:] == (0, 0)


@pytest.mark.toolchain
def test_the_trace_replays_on_native_with_no_violation(
    recorded: tuple[Path, str], tmp_path: Path
) -> None:
    trace, _ = recorded
    r = CliRunner().invoke(
        main, ["replay", str(trace), "--backend", "native", "--json", "-q", "-o", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    (summary,) = json.loads(r.output)
    assert summary["violations"] == 0 and summary["families"] == {}
    assert summary["interrupts"]["delivered"] == 2 and summary["interrupts"]["lost"] == 0


# --- the document holds to the code -------------------------------------------------------------


def _doc() -> str:
    return DOC.read_text()


def _prose() -> str:
    """The document with every run of white space one space (phrases wrap across lines)."""
    return " ".join(_doc().split())


def _hex(v: int) -> str:
    return f"`0x{v:08X}`"


def _arg_cells(h: Hook) -> tuple[str, str]:
    """The 'arguments' and 'result' cells the entry table gives a hook, from the catalogue."""
    if h.jump:
        args = "frame at `(%esp)`: EIP, CS, EFLAGS[, ESP, SS]"
    else:
        regs = ["eax", "edx", "ecx"]

        def where(s: int) -> str:
            return regs[s] if s < 3 else f"{4 * (s - 2)}(%esp)"

        cells, slot = [], 0
        for name, t in h.args:
            if t == "u64":
                cells.append(f"`{name}` {where(slot)}:{where(slot + 1)} (low:high)")
                slot += 2
            else:
                cells.append(f"`{name}` {where(slot)}")
                slot += 1
        args = ", ".join(cells) or "—"
    result = "—" if h.result is None else ("edx:eax" if h.result_slots == 2 else "eax")
    return args, result


def test_the_entry_table_is_the_catalogue_in_struct_order() -> None:
    rows = re.findall(
        r"^\| (\d+) \| (0x[0-9a-f]{3}) \| `(\w+)` \| (.*?) \| (.*?) \| (.*) \|$", _doc(), re.M
    )
    count = int.from_bytes(R.load().image[R.H_ENTRY_COUNT : R.H_ENTRY_COUNT + 4], "little")
    assert len(rows) == len(HOOKS) == count
    for (idx, off, name, args, result, what), h in zip(rows, HOOKS, strict=True):
        assert (int(idx), int(off, 16), name) == (h.id, R.ENTRY_SIZE * h.id, h.name)
        assert (args, result) == _arg_cells(h), h.name
        if h.rom == "unsupported":
            assert "unsupported" in what, h.name
        else:
            assert ("traps" in what) == (h.rom == "trap"), h.name


def test_the_header_table_gives_every_field_at_its_offset() -> None:
    doc = _prose()
    fields = {
        R.H_SIGNATURE: "signature",
        R.H_ABI: "ABI version",
        R.H_ENTRY_COUNT: "entry count",
        R.H_ENTRY_TABLE: "entry table",
        R.H_KERNEL_RPL: "kernel RPL",
        R.H_SCALE: "scale",
        R.H_SEED: "seed",
        R.H_MEM_BYTES: "memory bytes",
        R.H_SERVICE: "service",
        R.H_NAME: "name",
        R.H_RESERVED_GDT: "reserved GDT",
        R.H_USER_PAGE: "user page",
        R.H_DATA: "data page",
        R.H_RING: "ring",
        R.H_RING_SIZE: "ring size",
        R.H_HV_BASE: "`hv_base`",
    }
    for off, name in fields.items():
        assert f"| `0x{off:02X}` | {name}" in doc, name
    sig = R.SIGNATURE
    assert f"`0x{int.from_bytes(sig[:4], 'little'):08X}`" in doc
    assert f"`0x{int.from_bytes(sig[4:], 'little'):08X}`" in doc
    for v in (R.HV_BASE, R.ENTRY_TABLE, R.DATA, R.TSS, R.USER_PAGE, R.RING, BOOT_GDT):
        assert _hex(v) in doc, hex(v)
    assert f"`{R.RING_SIZE:#x}`" in doc and f"| {R.ABI_VERSION} |" in doc
    assert f"{R.RING_SIZE // R.RECORD_SIZE:,}".replace(",", " ") in doc
    assert f"entries {R.RESERVED_GDT}–{R.RESERVED_GDT + 3}" in doc
    assert "int $0x82" in R.generate_asm() and "`int $0x82`" in doc  # how entries trap


def test_the_machine_facts_are_the_recorder_s() -> None:
    doc = _prose()
    cfg = MachineConfig()
    for base in (LAPIC_BASE, IOAPIC_BASE, IoDevice.BASE):
        assert _hex(base) in doc
    assert f"CS = `{SEL_R1_CODE:#x}`" in doc and f"SS = `{SEL_R1_DATA:#x}`" in doc
    assert f"TR | `{SEL_TSS:#X}`".replace("0X", "0x") in doc
    assert f"IOAPIC pin {cfg.timer_pin}" in doc and f"IOAPIC pin {cfg.device_pin}" in doc
    assert f"{cfg.timer_period:,}".replace(",", " ") in doc
    assert f"{cfg.device_min_delay:,}–{cfg.device_max_delay:,}".replace(",", " ") in doc
    assert f"`get_wallclock` says {cfg.wallclock}" in doc
    assert f"`get_cpu_khz` says {cfg.cpu_khz:,}".replace(",", " ") in doc
    vectors = ", ".join(str(v) for v in sorted(ERROR_CODE_VECTORS))
    assert f"vectors {vectors.replace(', 17', ' and 17')}" in doc
    assert f"up to {IoDevice.MAX_IN_FLIGHT}" in doc or f"at most {IoDevice.MAX_IN_FLIGHT}" in doc


def test_the_document_stands_on_its_own_and_is_pointed_to() -> None:
    doc = _doc()
    assert "../shared" not in doc and "paravirt-facts" not in doc
    for path in re.findall(r"`((?:recorder|tests|docs)/[\w/.-]+)`", doc):
        assert (ROOT / path).exists(), path
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", doc, re.M)
    }
    assert set(re.findall(r"\]\(#([\w-]+)\)", doc)) <= headings
    assert "docs/rom-abi.md" in (ROOT / "README.md").read_text()
    r = CliRunner().invoke(main, ["guests"])
    assert r.exit_code == 0 and "docs/rom-abi.md" in r.output
    rows = json.loads(CliRunner().invoke(main, ["guests", "--json"]).output)
    assert rows and all(row["abi_doc"] == "docs/rom-abi.md" for row in rows)
