"""The recorder end to end on the pvcall guest: trace format, determinism, delivery semantics."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from unicorn import UC_HOOK_CODE, Uc

from pvscope import schema
from pvscope.errors import GuestError, UsageError
from pvscope.hooks import BY_NAME
from recorder import rom as R
from recorder.elf import load_image
from recorder.guests import GUESTS
from recorder.machine import Machine, MachineConfig
from recorder.record import record
from recorder.writer import TraceWriter
from tests.recorder.conftest import SMALL, make_elf32

TRACE_FILES = tuple(t.file for t in schema.TABLES.values())


def q(trace: Path, sql: str) -> list[tuple]:
    """Plain DuckDB over the trace's Parquet files, no pvscope in between."""
    sql = sql.replace("EVENTS", f"read_parquet('{trace}/events.parquet')")
    return duckdb.sql(sql).fetchall()


def test_trace_is_plain_parquet_and_complete(pvcall_trace: Path) -> None:
    manifest = json.loads((pvcall_trace / "manifest.json").read_text())
    assert manifest["end"]["status"] == "complete"
    assert manifest["schema_version"] == schema.SCHEMA_VERSION
    (n,) = q(pvcall_trace, "select count(*) from EVENTS")[0]
    assert n == manifest["counts"]["events"] > 20_000
    for f in TRACE_FILES:
        meta = pq.ParquetFile(pvcall_trace / f).schema_arrow.metadata
        assert json.loads(meta[schema.META_KEY])["schema_version"] == schema.SCHEMA_VERSION
    # the columns are the schema's, in its order, typed narrowly
    assert pq.read_schema(pvcall_trace / "events.parquet").names == schema.EVENTS.names


def test_every_kernel_hook_call_is_at_cpl1(pvcall_trace: Path) -> None:
    rows = q(pvcall_trace, "select cpl, count(*) from EVENTS where kind = 'hook' group by cpl")
    assert rows == [(1, rows[0][1])]


def test_seq_is_dense_and_vtime_monotonic(pvcall_trace: Path) -> None:
    ((n, lo, hi, bad),) = q(
        pvcall_trace,
        "select count(*), min(seq), max(seq), count(*) filter (where vt < prev) from "
        "(select seq, vtime as vt, lag(vtime) over (order by seq) as prev from EVENTS)",
    )
    assert (lo, hi, bad) == (0, n - 1, 0)


def test_cr3_follows_write_cr3(pvcall_trace: Path) -> None:
    # before the first write_cr3 the CR3 column is 0 (paging off); after it, the value loaded
    rows = q(
        pvcall_trace,
        "select seq, arg0 from EVENTS where hook = 'write_cr3' order by seq limit 1",
    )
    seq, value = rows[0]
    before, after = q(
        pvcall_trace,
        f"select (select max(cr3) from EVENTS where seq <= {seq}),"
        f" (select min(cr3) from EVENTS where seq > {seq})",
    )[0]
    assert (before, after) == (0, value)


def test_page_fault_delivery_carries_cr2_and_error_code(pvcall_trace: Path) -> None:
    faults = q(
        pvcall_trace,
        "select seq, arg1, arg2, cpl from EVENTS where kind = 'exception' and arg0 = 14 "
        "order by seq",
    )
    kernel = [f for f in faults if f[3] == 1]
    user = [f for f in faults if f[3] == 3]
    # pvcall's self-test touches 16 kernel demand pages: odd ones by a write, even by a read
    zone = [f for f in kernel if 0xD0000000 <= f[2] < 0xD0010000]
    assert len(zone) == 16
    for _seq, err, cr2, _cpl in zone:
        page = (cr2 - 0xD0000000) >> 12
        assert err == (2 if page & 1 else 0), (hex(cr2), err)  # not present, W/R, supervisor
    # its CPL 3 task writes its unmapped page: not present, write, user
    assert [(err, cr2) for _s, err, cr2, _c in user] == [(6, 0x40000000)]
    # the handler reads CR2 through the hook and sees the faulting address
    for seq, _err, cr2, _cpl in zone:
        (res,) = q(
            pvcall_trace,
            f"select result from EVENTS where hook = 'read_cr2' and seq > {seq} "
            "order by seq limit 1",
        )[0]
        assert res == cr2


def test_user_mode_system_calls_enter_at_cpl3_and_return_by_iret(pvcall_trace: Path) -> None:
    rows = q(
        pvcall_trace,
        "select cpl, count(*) from EVENTS where kind = 'softint' and arg0 = 128 group by cpl",
    )
    assert rows == [(3, 65)]  # 64 system calls and the exit
    irets = q(pvcall_trace, "select arg1, cpl from EVENTS where hook = 'iret' and arg1 & 3 = 3")
    assert len(irets) >= 64
    assert {cpl for _cs, cpl in irets} == {1}


def test_interrupts_only_when_unmasked_and_unmask_delivers_at_once(pvcall_trace: Path) -> None:
    ((masked,),) = q(
        pvcall_trace, "select count(*) from EVENTS where kind = 'interrupt' and not vif"
    )
    assert masked == 0
    (n,) = q(pvcall_trace, "select count(*) from EVENTS where kind = 'interrupt'")[0]
    assert n > 0
    # an interrupt raised while masked is delivered right after the unmasking hook
    after_unmask = q(
        pvcall_trace,
        "select count(*) from (select kind, lag(hook) over (order by seq) as prev from EVENTS) "
        "where kind = 'interrupt' and prev in ('irq_enable', 'restore_fl', 'safe_halt')",
    )[0][0]
    assert after_unmask > 0


def test_every_interrupt_is_raised_then_delivered_then_eoied(pvcall_trace: Path) -> None:
    raised = q(pvcall_trace, "select count(*) from EVENTS where kind = 'irq_raise' and arg3 = 0")[
        0
    ][0]
    delivered = q(pvcall_trace, "select count(*) from EVENTS where kind = 'interrupt'")[0][0]
    eois = q(pvcall_trace, "select count(*) from EVENTS where hook = 'apic_write' and arg0 = 176")
    assert raised == delivered > 0
    assert eois[0][0] == delivered  # pvcall's handler EOIs every vector it takes


def test_device_delays_are_inputs(pvcall_trace: Path) -> None:
    inputs = pq.read_table(pvcall_trace / "inputs.parquet").to_pylist()
    doorbells = q(
        pvcall_trace,
        "select seq from EVENTS where kind = 'mmio_write' and arg0 = 4272947200 order by seq",
    )
    assert [i["seq"] for i in inputs] == [s for (s,) in doorbells]
    assert all(i["source"] == "device.delay" and 20_000 <= i["value"] <= 200_000 for i in inputs)


def test_checkpoints_name_lapic_ioapic_cpu_and_mmu(pvcall_trace: Path) -> None:
    state = pq.read_table(pvcall_trace / "state.parquet")
    comps = set(state.column("component").to_pylist())
    assert comps == {"lapic", "ioapic", "cpu", "mmu"}
    rows = state.to_pylist()
    last = max(r["seq"] for r in rows)
    final = {(r["component"], r["key"]): r["value"] for r in rows if r["seq"] == last}
    assert final[("cpu", "cpl")] == 1
    assert final[("lapic", "svr")] & 0x100  # software-enabled by the guest
    assert final[("lapic", "lvt_timer")] == 0xEF | (1 << 17)  # periodic, vector 0xEF


def test_recording_is_deterministic_and_paths_agree(tmp_path: Path) -> None:
    # an odd quantum puts many quantum boundaries inside ROM entries
    outs = []
    # and both ways of stamping ROM entries with their exact vtime give the same trace
    runs = (("ring", "auto"), ("ring", "auto"), ("python", "auto"), ("ring", "python"))
    for i, (path, stamp) in enumerate(runs):
        out = tmp_path / f"t{i}"
        record("pvcall", out, scale=300, quantum=137, log_path=path, stamp=stamp)
        outs.append(out)
    for f in (*TRACE_FILES, "manifest.json"):
        blobs = {(o / f).read_bytes() for o in outs}
        assert len(blobs) == 1, f
    text = (outs[0] / "manifest.json").read_text()
    assert str(tmp_path) not in text and "/tmp" not in text


def test_a_different_seed_changes_device_timing(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    record("pvcall", a, scale=300, seed=1)
    record("pvcall", b, scale=300, seed=2)
    va = pq.read_table(a / "inputs.parquet").column("value").to_pylist()
    vb = pq.read_table(b / "inputs.parquet").column("value").to_pylist()
    assert len(va) == len(vb) > 0 and va != vb


def test_budget_ends_cleanly_with_a_readable_trace(tmp_path: Path) -> None:
    out = tmp_path / "t"
    m = record("pvcall", out, scale=SMALL, budget=200_000)
    assert m["end"]["status"] == "budget"
    assert pq.read_table(out / "events.parquet").num_rows == m["counts"]["events"] > 0


def test_interrupted_recording_still_leaves_a_trace(tmp_path: Path) -> None:
    out = tmp_path / "t"

    def interrupt(insns: int, events: int) -> None:
        raise KeyboardInterrupt

    m = record("pvcall", out, scale=SMALL, on_progress=interrupt)
    assert m["end"]["status"] == "interrupted"
    assert json.loads((out / "manifest.json").read_text())["end"]["status"] == "interrupted"
    assert pq.read_table(out / "events.parquet").num_rows > 0


def test_stack_switch_from_cpl3_uses_the_tss_stack(tmp_path: Path) -> None:
    """The CPL 3 -> 1 entry lands on TSS.esp1 with SS, ESP, EFLAGS, CS, EIP of the user.

    Probed where the ROM's gate stub, the frame complete, jumps to the handler.
    """
    seen: list[tuple[int, tuple[int, ...], int]] = []

    class Probe(Machine):
        def _setup_hooks(self) -> None:
            super()._setup_hooks()
            self.uc.hook_add(
                UC_HOOK_CODE,
                self._at_gate_enter,
                begin=self.rom.gate_enter,
                end=self.rom.gate_enter,
            )

        def _at_gate_enter(self, uc: Uc, address: int, size: int, _ud: object) -> None:
            from unicorn import x86_const as X

            tss_esp1 = struct.unpack("<I", self.uc.mem_read(R.TSS + 0x0C, 4))[0]
            esp = self._reg(X.UC_X86_REG_ESP)
            frame = struct.unpack("<6I", self.vread(esp, 24))
            seen.append((tss_esp1, frame, esp))

    image = load_image(GUESTS["pvcall"].image, "pvcall")
    writer = TraceWriter(tmp_path)
    Probe(image, MachineConfig(scale=50), writer).run()
    assert seen
    for esp1, frame, esp in seen:
        with_error = esp == esp1 - 24
        assert with_error or esp == esp1 - 20
        words = frame if with_error else (None, *frame[:5])
        _err, eip, cs, eflags, uesp, uss = words
        assert cs == 0x73 and uss == 0x7B  # the user's code and stack selectors
        assert 0x08048000 <= eip < 0x08049000 and 0xBFFFE000 <= uesp <= 0xBFFFF000
        assert eflags & 0x200


def test_mmu_digest_matches_the_shared_digest_of_the_page_walk(tmp_path: Path) -> None:
    """The recorder's fast path hashes the walk as pvscope.digest.mapping_digest would."""
    from pvscope.digest import mapping_digest, walk_page_directory

    image = load_image(GUESTS["fork"].image, "fork")
    m = Machine(image, MachineConfig(scale=5, budget=2_000_000), TraceWriter(tmp_path))
    m.run()
    cr3 = m.cr3 & 0xFFFFF000

    def table(pfn: int) -> bytes | None:
        pa = pfn << 12
        return bytes(m.uc.mem_read(pa, 4096)) if pa + 4096 <= m.mem_bytes else None

    pd = table(cr3 >> 12)
    assert pd is not None
    assert m._mmu_digest() == mapping_digest(walk_page_directory(pd, table))


# --- bad input: one line, non-zero, nothing written --------------------------------------


def _elf(tmp_path: Path, data: bytes, name: str = "g.elf") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t / "missing.elf", "no such guest image"),
        (lambda t: _elf(t, b"#!/bin/sh\necho hi\n"), "not an ELF file"),
        (lambda t: _elf(t, make_elf32(b"\x90", elfclass=2)), "64-bit ELF"),
        (lambda t: _elf(t, make_elf32(b"\x90", machine=40)), "not i386"),
        (lambda t: _elf(t, make_elf32(b"\x0f\x0b")), "never found the ROM"),
    ],
)
def test_unusable_guests_are_refused(tmp_path: Path, make, message: str) -> None:
    guest = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(GuestError, match=message):
        record(str(guest), out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_existing_output_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "t"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(UsageError, match="already exists"):
        record("pvcall", out, scale=10)
    assert (out / "keep").read_text() == "x"
    record("pvcall", out, scale=10, force=True)
    assert not (out / "keep").exists() and (out / "manifest.json").exists()


@pytest.mark.parametrize("budget", [0, -5])
def test_nonpositive_budget_is_a_usage_error(tmp_path: Path, budget: int) -> None:
    with pytest.raises(UsageError, match="budget"):
        record("pvcall", tmp_path / "t", budget=budget)
    assert not (tmp_path / "t").exists()


def test_unwritable_parent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        record("pvcall", tmp_path / "nope" / "t")


def test_unknown_guest_name(tmp_path: Path) -> None:
    with pytest.raises(GuestError, match="unknown guest"):
        record("nosuchguest", tmp_path / "t")


def test_hook_catalogue_matches_the_guest_header_and_rom() -> None:
    header = (Path(R.__file__).parent / "guests/include/paravirt.h").read_text()
    body = header[header.index("struct paravirt_ops {") : header.index("};")]
    import re

    names = re.findall(r"\(\*(\w+)\)", body)
    assert names == [h.name for h in BY_NAME.values()]
    rom = R.load()
    assert len(rom.entries) == len(names) == 76


def _micro_guest(body: bytes, hook: str = "read_cr0") -> bytes:
    """A guest that calls a hook through the ROM's entry table, then runs ``body``."""
    entry = R.ENTRY_TABLE + 8 * BY_NAME[hook].id
    code = b"\xb8" + struct.pack("<I", entry) + b"\xff\xd0"  # mov $entry, %eax; call *%eax
    code = b"\xbc" + struct.pack("<I", 0x90000) + code  # mov $0x90000, %esp
    return make_elf32(code + body)


def test_privileged_instruction_faults_and_is_recorded(tmp_path: Path) -> None:
    guest = tmp_path / "hlt.elf"
    guest.write_bytes(_micro_guest(b"\xf4"))  # hlt at CPL 1
    m = record(str(guest), tmp_path / "t")
    assert m["end"]["status"] == "guest-fault"
    assert "no IDT" in m["end"]["reason"]
    rows = q(tmp_path / "t", "select kind, hook, arg0, arg1, site, cpl from EVENTS order by seq")
    assert rows[0][:2] == ("hook", "read_cr0")
    kind, _hook, vector, error, site, cpl = rows[1]
    assert (kind, vector, error, cpl) == ("exception", 13, 0, 1)
    assert site == 0x100000 + 12  # the hlt


def test_guest_check_failure_ends_the_run_with_its_message(tmp_path: Path) -> None:
    msg_addr = 0x100000 + 0x40
    call_service = (
        b"\x8b\x1d"
        + struct.pack("<I", R.ROM_BASE + R.H_SERVICE)  # mov service, %ebx
        + b"\xb8\x01\x00\x00\x00"  # mov $1, %eax (check failed)
        + b"\xba"
        + struct.pack("<I", msg_addr)  # mov $msg, %edx
        + b"\xb9\x2a\x00\x00\x00"  # mov $42, %ecx
        + b"\xff\xd3"  # call *%ebx
        + b"\x0f\x0b"  # ud2: not reached
    )
    image = _micro_guest(call_service)
    code_start = 0x1000
    image = image.ljust(code_start + 0x40, b"\0") + b"free list corrupt\0"
    guest = tmp_path / "check.elf"
    # grow the segment to cover the message
    size = len(image) - code_start
    image = image[: 0x34 + 16] + struct.pack("<II", size, size) + image[0x34 + 24 :]
    guest.write_bytes(image)
    m = record(str(guest), tmp_path / "t")
    assert m["end"] == {
        "status": "guest-check",
        "reason": "guest check failed: free list corrupt (0x2a)",
    }
    rows = q(tmp_path / "t", "select kind, arg0, arg2 from EVENTS where kind = 'guest'")
    assert rows == [("guest", 1, 42)]


@pytest.mark.parametrize("log_path", ["ring", "python"])
def test_hook_zero_is_logged_on_both_paths(tmp_path: Path, log_path: str) -> None:
    """patch is hook 0: its record must not look like one still being written."""
    guest = tmp_path / "patch.elf"
    guest.write_bytes(_micro_guest(b"\xf4", hook="patch"))  # then hlt: a #GP ends the run
    record(str(guest), tmp_path / "t", log_path=log_path)
    rows = q(tmp_path / "t", "select kind, hook, arg0 from EVENTS order by seq")
    assert rows[0][:2] == ("hook", "patch") and rows[1][0] == "exception"


def test_writer_completes_each_records_vtime_from_the_nearest_marker(tmp_path: Path) -> None:
    """A record carries its vtime's low 32 bits; the latest marker before it (across
    batches too) gives the rest, on either side of the marker and across a 2**32 carry."""
    from recorder.writer import RECORD_DTYPE

    def batch(rows: list[tuple[int, int]]) -> bytes:
        """(code, vtime): a marker's vtime in a0/a1, a record's low half in vtime_lo."""
        rec = np.zeros(len(rows), dtype=RECORD_DTYPE)
        for i, (code, vt) in enumerate(rows):
            rec[i]["code"] = code
            if code == R.CODE_MARKER:
                rec[i]["a0"], rec[i]["a1"] = vt & 0xFFFFFFFF, vt >> 32
            else:
                rec[i]["vtime_lo"] = vt & 0xFFFFFFFF
        return rec.tobytes()

    hook, m = R.record_code(BY_NAME["irq_disable"]), R.CODE_MARKER
    w4 = 1 << 32
    w = TraceWriter(tmp_path)
    w.add_records(batch([(hook, 3), (m, 5), (hook, 6), (hook, 9), (m, w4 - 2)]))
    # before the batch's first marker, after the previous batch's last: past the carry
    w.add_records(batch([(hook, w4 + 1), (m, w4 + 9), (hook, w4 + 8), (m, 2 * w4 + 11)]))
    w.add_records(batch([(hook, 2 * w4 + 10), (hook, 2 * w4 + 12)]))
    w.close({})
    vtime = pq.read_table(tmp_path / "events.parquet").column("vtime").to_pylist()
    assert vtime == [3, 6, 9, w4 + 1, w4 + 8, 2 * w4 + 10, 2 * w4 + 12]


def _exact_latency_guest(delay: int, spin: int) -> bytes:
    """A guest that masks interrupts, arms the LAPIC timer one-shot ``delay`` instructions
    ahead (divide by 1), spins ``2 * spin + 1`` instructions, then unmasks: the timer's
    interrupt is raised in the spin and must be delivered at the unmask.  Its handler
    EOIs and ends the run."""

    def entry(hook: str) -> int:
        return R.ENTRY_TABLE + 8 * BY_NAME[hook].id

    def call(hook: str) -> bytes:
        return b"\xbb" + struct.pack("<I", entry(hook)) + b"\xff\xd3"  # mov $e, %ebx; call *%ebx

    def movl(addr: int, value: int) -> bytes:
        return b"\xc7\x05" + struct.pack("<II", addr, value)

    def movw(addr: int, value: int) -> bytes:
        return b"\x66\xc7\x05" + struct.pack("<IH", addr, value)

    idt, desc, vector, lapic = 0x80000, 0x7F000, 0x40, 0xFEE00000
    base = 0x100000 + 12  # where _micro_guest puts the body
    gate = idt + vector * 8

    def body(handler: int) -> bytes:
        return (
            movw(gate, handler & 0xFFFF)
            + movw(gate + 2, 0x19)  # the kernel's CPL 1 code selector
            + movw(gate + 4, 0x8E00)  # present 32-bit interrupt gate
            + movw(gate + 6, handler >> 16)
            + movw(desc, 0x7FF)
            + movl(desc + 2, idt)
            + b"\xb8"
            + struct.pack("<I", desc)  # mov $desc, %eax
            + call("load_idt")
            + call("irq_disable")
            + movl(lapic + 0xF0, 0x1FF)  # SVR: software-enabled
            + movl(lapic + 0x3E0, 0xB)  # divide by 1
            + movl(lapic + 0x320, vector)  # LVT timer: one-shot, unmasked
            + movl(lapic + 0x380, delay)  # initial count: raised delay instructions on
            + b"\xb9"
            + struct.pack("<I", spin)  # mov $spin, %ecx
            + b"\x49\x75\xfd"  # 1: dec %ecx; jnz 1b
            + call("irq_enable")
            + b"\x0f\x0b"  # ud2: not reached
        )

    handler = base + len(body(0))
    tail = (
        movl(lapic + 0xB0, 0)  # EOI
        + b"\x8b\x1d"
        + struct.pack("<I", R.ROM_BASE + R.H_SERVICE)  # mov service, %ebx
        + b"\x31\xc0\xff\xd3"  # xor %eax, %eax; call *%ebx: exit
    )
    return _micro_guest(body(handler) + tail)


@pytest.mark.parametrize("log_path", ["ring", "python"])
def test_interrupt_raised_k_before_an_unmask_is_delivered_there_with_latency_k(
    tmp_path: Path, log_path: str
) -> None:
    """Exact virtual time: the raise is at its exact instruction and the delivery at the
    unmask's, so the latency is the distance between them, not a multiple of a quantum."""
    delay, spin = 1234, 3001
    guest = tmp_path / "irq.elf"
    guest.write_bytes(_exact_latency_guest(delay, spin))
    m = record(str(guest), tmp_path / "t", log_path=log_path)
    assert m["end"]["status"] == "complete", m["end"]
    rows = q(
        tmp_path / "t",
        "select kind, hook, arg0, arg1, arg2, arg3, vtime from EVENTS order by seq",
    )
    arm = next(r for r in rows if r[0] == "mmio_write" and r[2] == 0xFEE00380)
    raise_ = next(r for r in rows if r[0] == "irq_raise")
    unmask = next(r for r in rows if r[1] == "irq_enable")
    irq = next(r for r in rows if r[0] == "interrupt")
    # raised exactly delay instructions after the instruction that armed the timer
    assert raise_[6] == arm[6] + delay
    # the spin (dec/jnz pairs) and the call to the entry separate the arming from the
    # unmask: the entry's record is reserved within a few instructions of its call
    assert 2 * spin + 1 < unmask[6] - arm[6] < 2 * spin + 12
    # delivered inside the irq_enable entry, at its unmask trap (the entry fills its
    # record, then sti, then checks the pending flag: about a dozen instructions)
    assert unmask[6] < irq[6] < unmask[6] + 16
    assert irq[4] | irq[5] << 32 == raise_[6]  # the interrupt names its exact raise
    k = irq[6] - raise_[6]
    assert k == irq[6] - (arm[6] + delay) and k % 10_000 != 0 and k > 2 * spin + 1 - delay


@pytest.mark.parametrize("seed", [-1, 1 << 32, 1 << 64])
def test_a_seed_beyond_the_roms_32_bit_word_is_refused(tmp_path: Path, seed: int) -> None:
    from pvscope.errors import UsageError

    with pytest.raises(UsageError, match="--seed must be between 0 and 2\\*\\*32 - 1"):
        record("pvcall", tmp_path / "t", scale=10, seed=seed)
    assert not (tmp_path / "t").exists()


def test_a_trace_that_appears_while_recording_is_not_replaced(tmp_path: Path) -> None:
    """Two records to one place without --force: the second neither replaces the first nor
    loses its own trace."""
    from pvscope.errors import PvscopeError

    out = tmp_path / "t"

    def other_record_lands(insns: int, events: int) -> None:
        if not out.exists():
            out.mkdir()
            (out / "manifest.json").write_text("{}")

    with pytest.raises(PvscopeError, match="appeared while recording") as e:
        record("pvcall", out, scale=300, on_progress=other_record_lands)
    assert (out / "manifest.json").read_text() == "{}"
    kept = Path(str(e.value).rsplit("kept as ", 1)[1])
    assert (kept / "events.parquet").is_file() and json.loads((kept / "manifest.json").read_text())


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_recording_with_a_whole_interrupted_trace(
    tmp_path: Path, sig: str
) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "t"
    p = subprocess.Popen(
        [sys.executable, "-m", "pvscope", "record", "-g", "fork", "-o", str(out), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not any(tmp_path.glob(".t.*.tmp/*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # well into the run
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "Traceback" not in err, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["end"]["status"] == "interrupted"
    assert ("SIGTERM" if sig == "SIGTERM" else "Ctrl-C") in m["end"]["reason"]
    assert pq.read_table(out / "events.parquet").num_rows == m["counts"]["events"] > 0
    assert [x.name for x in tmp_path.iterdir()] == ["t"]  # no temporary left behind


def test_a_guest_that_runs_into_zeroed_memory_is_stopped_at_once(tmp_path: Path) -> None:
    """00 00 decodes as an add: without the check such a guest crawls on to its budget."""
    guest = tmp_path / "runaway.elf"
    guest.write_bytes(_micro_guest(b"\xb8" + struct.pack("<I", 0x200000) + b"\xff\xe0"))
    m = record(str(guest), tmp_path / "t")  # mov $0x200000, %eax; jmp *%eax: zeroed RAM
    assert m["end"]["status"] == "guest-fault"
    assert "executing zeroed memory at EIP" in m["end"]["reason"]
    assert m["counts"]["instructions"] < 100_000


def test_a_recording_killed_outright_leaves_nothing_the_next_one_keeps(tmp_path: Path) -> None:
    """SIGKILL cannot be caught: its temporary stays, named for its process, and the next
    recording to the same place clears it (a live one's is left alone)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    p = subprocess.Popen(
        [sys.executable, "-m", "pvscope", "record", "-g", "fork", "-o", str(tmp_path / "t"), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".t.*.tmp/*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert [d.name.split(".")[2] for d in tmp_path.glob(".t.*.tmp")] == [str(p.pid)]
    live = tmp_path / f".t.{os.getpid()}.abc.tmp"  # a live process's: not ours to clear
    live.mkdir()
    record("pvcall", tmp_path / "t", scale=10)
    assert sorted(d.name for d in tmp_path.iterdir()) == sorted(["t", live.name])
