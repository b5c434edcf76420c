"""The built-in guest workloads: each records to completion at its small scale; together
they call every hook a uniprocessor, non-PAE Linux 2.6.21 i386 kernel calls on their
paths; the kernel's own checks end a run clearly; the committed images are what the
sources build."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from elftools.elf.elffile import ELFFile

from pvscope.cli import main
from pvscope.hooks import BY_NAME, HOOKS
from recorder.guests import GUEST_DIR, GUESTS, IMAGE_DIR
from recorder.record import record

WORKLOADS = ("pvcall", "boot", "fork", "pagefault", "irqstorm", "sched", "mixed", "nanobench")
PROCESS_WORKLOADS = ("fork", "pagefault", "sched", "mixed")

#: Hooks of 2.6.21's struct paravirt_ops that no workload calls, and why.
NOT_CALLED: dict[str, str] = {
    "set_wallclock": "only sync_cmos_clock calls it, every 11 minutes once NTP has synced",
    "write_cr2": "no 2.6.21 i386 code path writes CR2",
    "read_cr4_safe": "only suspend/resume and show_regs (SysRq-P) read CR4 that way",
    "halt": "machine_halt and play_dead; the idle loop uses safe_halt and a run ends at the "
    "exit service",
    "write_msr": "sysenter is not set up (the ROM has no irq_enable_sysexit) and the machine "
    "reports no machine-check banks to enable; MTRRs are written only on secondary CPUs or resume",
    "read_pmc": "only profiling drivers (oprofile, perfctr) read performance counters",
    "store_gdt": "only suspend/resume, kexec and the double-fault handler",
    "store_idt": "only suspend/resume and kexec",
    "store_tr": "only suspend/resume and the double-fault handler",
    "apic_write_atomic": "with CONFIG_X86_GOOD_APIC (every 686-class CPU) apic_write_around is "
    "plain apic_write; only kernels for Pentium-class CPUs use the atomic form",
    "setup_secondary_clock": "needs a second CPU",
    "startup_ipi_hook": "needs a second CPU",
    "map_pt_hook": "CONFIG_HIGHPTE only: this kernel keeps its page tables in low memory",
    "set_pte_atomic": "PAE only",
    "set_pte_present": "PAE only",
    "set_pud": "PAE only",
    "pte_clear": "PAE only (non-PAE pte_clear is set_pte_at with 0)",
    "pmd_clear": "PAE only (non-PAE pmd_clear is set_pmd with 0)",
    "irq_enable_sysexit": "the machine enters the kernel by int $0x80 only (no sysenter)",
}


def q(trace: Path, sql: str) -> list[tuple]:
    rel = duckdb.sql(sql.replace("EVENTS", f"read_parquet('{trace}/events.parquet')"))
    assert rel is not None
    return rel.fetchall()


def count(trace: Path, where: str) -> int:
    return q(trace, f"select count(*) from EVENTS where {where}")[0][0]


@pytest.fixture(scope="session")
def traces(tmp_path_factory: pytest.TempPathFactory, pvcall_trace: Path) -> dict[str, Path]:
    """Every workload recorded once at its small scale (pvcall's shared with test_record)."""
    root = tmp_path_factory.mktemp("guests")
    out = {"pvcall": pvcall_trace}
    for name in WORKLOADS[1:]:
        m = record(name, root / name, scale=GUESTS[name].small_scale)
        assert m["end"]["status"] == "complete", (name, m["end"])
        assert "invariants hold" in m["console"], (name, m["console"])
        out[name] = root / name
    return out


def manifest(trace: Path) -> dict:
    return json.loads((trace / "manifest.json").read_text())


# --- the registry ---------------------------------------------------------------------------


def test_every_workload_is_registered_with_an_image_and_one_line() -> None:
    assert tuple(GUESTS) == WORKLOADS
    for g in GUESTS.values():
        assert g.image.is_file() and g.image.parent == IMAGE_DIR
        assert g.description and "\n" not in g.description
        assert 0 < g.small_scale < g.default_scale


def test_guests_command_lists_every_workload() -> None:
    *lines, pointer = CliRunner().invoke(main, ["guests"]).output.splitlines()
    rows = [line.split()[1] for line in lines if line.startswith("│")]  # the table's rows
    assert rows == list(WORKLOADS)
    assert "docs/rom-abi.md" in pointer  # where to read how to bring one's own
    rows = json.loads(CliRunner().invoke(main, ["guests", "--json"]).output)
    assert {r["name"]: r["description"] for r in rows} == {
        g.name: g.description for g in GUESTS.values()
    }


# --- each workload at small scale -------------------------------------------------------------


@pytest.mark.parametrize("name", WORKLOADS)
def test_small_scale_completes_with_tens_of_thousands_of_events(
    traces: dict[str, Path], name: str
) -> None:
    m = manifest(traces[name])
    assert m["end"]["status"] == "complete"
    assert m["scale"] == GUESTS[name].small_scale
    assert 20_000 <= m["counts"]["events"] <= 100_000


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_workload_takes_interrupts(traces: dict[str, Path], name: str) -> None:
    assert count(traces[name], "kind = 'interrupt'") > 0
    # and acknowledges each one with an EOI through apic_write
    eois = count(traces[name], "hook = 'apic_write' and arg0 = 176")
    assert eois >= count(traces[name], "kind = 'interrupt'")


@pytest.mark.parametrize("name", PROCESS_WORKLOADS)
def test_process_workloads_fault_and_run_at_cpl3(traces: dict[str, Path], name: str) -> None:
    t = traces[name]
    assert count(t, "kind = 'exception' and arg0 = 14") > 0
    assert count(t, "kind = 'softint' and arg0 = 128 and cpl = 3") > 0
    assert count(t, "kind = 'exception' and arg0 = 14 and cpl = 3") > 0
    # the kernel reads CR2 in its fault handler and returns to CPL 3 by iret
    assert count(t, "hook = 'read_cr2'") >= count(t, "kind = 'exception' and arg0 = 14")
    assert count(t, "hook = 'iret' and arg1 & 3 = 3") > 0


def test_hooks_run_at_cpl1_and_only_there(traces: dict[str, Path]) -> None:
    for name, t in traces.items():
        assert q(t, "select distinct cpl from EVENTS where kind = 'hook'") == [(1,)], name


# --- coverage across the suite ------------------------------------------------------------------


def test_the_suite_calls_every_hook_the_kernel_paths_call(traces: dict[str, Path]) -> None:
    assert set(NOT_CALLED) <= set(BY_NAME)
    seen: set[str] = set()
    for t in traces.values():
        seen |= set(manifest(t)["counts"]["by_hook"])
    missing = [h.name for h in HOOKS if h.name not in seen and h.name not in NOT_CALLED]
    assert not missing, f"no workload calls {missing}"
    # the list of exceptions stays honest: none of them is in fact called
    assert not seen & set(NOT_CALLED)
    for h in HOOKS:
        if h.pae_only:
            assert h.name in NOT_CALLED


# --- what each workload is for -------------------------------------------------------------------


def test_address_spaces_are_cloned_and_released_in_pairs(traces: dict[str, Path]) -> None:
    for name in PROCESS_WORKLOADS:
        by = manifest(traces[name])["counts"]["by_hook"]
        assert by["alloc_pd_clone"] == by["release_pd"] > 0, name
        # kernel half cloned from swapper_pg_dir: entries 768..1023
        args = q(
            traces[name], "select distinct arg2, arg3 from EVENTS where hook = 'alloc_pd_clone'"
        )
        assert args == [(768, 256)]
        assert by["release_pt"] > 0


def test_fork_write_protects_for_copy_on_write_then_reuses(traces: dict[str, Path]) -> None:
    t = traces["fork"]
    # ptep_set_wrprotect: the PTE the ROM observed after pte_update is present and read-only
    assert count(t, "hook = 'pte_update' and result & 3 = 1") > 0
    # a write to a page nobody else maps any more: pte_update_defer, then a single-page flush
    rows = q(
        t,
        "select count(*) from (select hook, lead(hook) over (order by seq) as nxt from EVENTS "
        "where kind = 'hook') where hook = 'pte_update_defer' and nxt = 'flush_tlb_single'",
    )
    assert rows[0][0] > 0
    assert count(t, "hook = 'write_cr3'") > 10


def test_lazy_modes_open_and_close_in_pairs(traces: dict[str, Path]) -> None:
    for name, t in traces.items():
        sql = "select arg0 from EVENTS where hook = 'set_lazy_mode' order by seq"
        modes = [m for (m,) in q(t, sql)]
        state = 0
        for m in modes:
            if m == 3:  # PARAVIRT_LAZY_FLUSH: flush what is queued, stay in the mode
                continue
            assert (state, m) in ((0, 1), (0, 2), (1, 0), (2, 0)), name
            state = m
        assert state == 0, name
    # PTE updates batched by copy_pte_range and zap_pte_range (mode 1) and context
    # switches between lazy CPU mode entry and exit (mode 2)
    fork = traces["fork"]
    inside = q(
        fork,
        "select count(*) from (select hook, last_value(case when hook = 'set_lazy_mode' "
        "then arg0 end ignore nulls) over (order by seq rows between unbounded preceding "
        "and 1 preceding) as mode from EVENTS where kind = 'hook') "
        "where mode = 1 and hook in ('set_pte_at', 'pte_update')",
    )[0][0]
    assert inside > 100
    assert count(fork, "hook = 'set_lazy_mode' and arg0 = 2") > 10


def test_pagefault_ages_swaps_and_flushes_single_pages(traces: dict[str, Path]) -> None:
    by = manifest(traces["pagefault"])["counts"]["by_hook"]
    assert by["pte_update_defer"] > 0 and by["flush_tlb_single"] > 50
    # swap I/O: doorbells to the device and its completions interrupting
    t = traces["pagefault"]
    assert count(t, "kind = 'interrupt' and arg1 = 11") > 0
    # a swapped-out PTE (not present, swap entry) set with set_pte_at
    assert count(t, "hook = 'set_pte_at' and arg3 & 1 = 0 and arg3 & 128 = 128") > 0


def symbolize(trace: Path) -> tuple[list[int], list[str]]:
    syms = sorted(
        (r["addr"], r["name"])
        for r in pq.read_table(trace / "symbols.parquet").to_pylist()
        if r["type"] == "func"
    )
    return [a for a, _ in syms], [n for _, n in syms]


def test_irqstorm_handles_completions_under_an_irqsave_lock(traces: dict[str, Path]) -> None:
    import bisect

    t = traces["irqstorm"]
    device = count(t, "kind = 'interrupt' and arg1 = 11")
    assert device > 50
    assert count(t, "kind = 'interrupt' and arg1 = 11 and cpl = 3") > 0
    addrs, names = symbolize(t)

    def func(site: int) -> str:
        return names[bisect.bisect_right(addrs, site) - 1]

    in_handler = [
        h
        for h, site in q(t, "select hook, site from EVENTS where kind = 'hook'")
        if func(site) == "blk_interrupt"
    ]
    assert in_handler.count("save_fl") == in_handler.count("restore_fl") >= device
    assert in_handler.count("irq_disable") >= device


def test_sched_switches_address_spaces_and_moves_cpu_state(traces: dict[str, Path]) -> None:
    by = manifest(traces["sched"])["counts"]["by_hook"]
    assert by["write_cr3"] > 100 and by["load_esp0"] > by["write_cr3"] // 2
    for hook in ("load_tls", "set_iopl_mask", "set_ldt", "set_debugreg", "clts", "get_debugreg"):
        assert by.get(hook, 0) > 1, hook
    # lazy FPU: a device-not-available fault at CPL 3, then clts
    assert count(traces["sched"], "kind = 'exception' and arg0 = 7 and cpl = 3") > 0


def test_recording_a_process_workload_is_deterministic(
    traces: dict[str, Path], tmp_path: Path
) -> None:
    again = tmp_path / "sched"
    record("sched", again, scale=GUESTS["sched"].small_scale)
    for f in ("events.parquet", "inputs.parquet", "state.parquet", "manifest.json"):
        assert (again / f).read_bytes() == (traces["sched"] / f).read_bytes(), f


# --- the kernel's own checks -----------------------------------------------------------------


def patched_image(tmp_path: Path, guest: str, symbol: str, value: int) -> Path:
    """A copy of a guest image with a 32-bit kernel variable set in its .data."""
    raw = bytearray(GUESTS[guest].image.read_bytes())
    elf = ELFFile(GUESTS[guest].image.open("rb"))
    sym = elf.get_section_by_name(".symtab").get_symbol_by_name(symbol)[0]  # type: ignore[union-attr]
    data = elf.get_section_by_name(".data")
    assert data is not None
    off = data["sh_offset"] + sym["st_value"] - data["sh_addr"]
    raw[off : off + 4] = value.to_bytes(4, "little")
    out = tmp_path / f"{guest}-crash.elf"
    out.write_bytes(raw)
    return out


def test_a_kernel_oops_ends_the_run_with_a_clear_status(tmp_path: Path) -> None:
    # SysRq-C after 40 system calls: the kernel writes through a NULL pointer, its fault
    # handler finds nothing to map there and reports the failed check
    image = patched_image(tmp_path, "fork", "sysrq_crash_after", 40)
    m = record(str(image), tmp_path / "t", scale=GUESTS["fork"].small_scale)
    assert m["end"]["status"] == "guest-check"
    assert m["end"]["reason"] == (
        "guest check failed: unable to handle kernel NULL pointer dereference (0x0)"
    )
    t = tmp_path / "t"
    assert pq.read_table(t / "events.parquet").num_rows == m["counts"]["events"]
    last = q(t, "select kind, arg0 from EVENTS order by seq desc limit 3")
    assert last[0] == ("guest", 1)
    # the fault itself: a kernel-mode write to a page not present, at address 0
    assert count(t, "kind = 'exception' and arg0 = 14 and arg1 = 2 and arg2 = 0 and cpl = 1") == 1


# --- the images are what the sources build ------------------------------------------------


def _toolchain_missing() -> str | None:
    for tool in ("gcc", "ld", "make"):
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


@pytest.mark.toolchain
def test_images_rebuild_from_source_byte_for_byte(tmp_path: Path) -> None:
    reason = _toolchain_missing()
    if reason:
        pytest.skip(f"cannot rebuild the guest images: {reason}")
    src = tmp_path / "guests"
    shutil.copytree(GUEST_DIR, src, ignore=shutil.ignore_patterns("images", "build"))
    r = subprocess.run(["make", "-s", "-C", str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    built = sorted(p.name for p in (src / "images").glob("*.elf"))
    assert built == sorted(f"{w}.elf" for w in WORKLOADS)
    for name in built:
        assert (src / "images" / name).read_bytes() == (IMAGE_DIR / name).read_bytes(), (
            f"{name} differs from its sources: rebuild with make -C recorder/guests and commit"
        )
