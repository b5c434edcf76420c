"""The engine on hand-made streams (hand-derived costs) and on the synthetic workload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pvscope.hooks import BY_NAME
from replayer import backends, engine
from replayer.backends import BACKENDS, all_runs, resolve
from replayer.costs import CostTable
from replayer.engine import _H as H
from replayer.engine import FAMILY
from replayer.mechanisms.pagetables import GuestMMU
from replayer.trace import Trace, load
from tests.support import synth

MATCHING = {
    "cpl": "privilege",
    "irq": "interrupt",
    "ptalloc": "mmu",
    "pteupdate": "mmu",
    "apic": "device",
}


def _trace(tmp_path: Path, build: Callable[[synth.TraceBuilder], None]) -> Trace:
    b = synth.TraceBuilder(seed=3)
    build(b)
    return load(b.write(tmp_path / "t"))


def _run(tr: Trace, p4: CostTable, label: str, *ab: str) -> engine.RunResult:
    return engine.replay(tr, resolve(label, *ab)[0], p4)


def test_irq_ops_cost_what_each_mechanism_costs(tmp_path: Path, p4: CostTable) -> None:
    def build(b: synth.TraceBuilder) -> None:
        b.hook("irq_enable")
        b.hook("save_fl", result=0x246)
        b.hook("irq_disable")
        b.hook("restore_fl", 0x246)

    tr = _trace(tmp_path, build)
    nat = _run(tr, p4, "native")
    assert nat.cycles.tolist() == [p4["native_irq_op"]] * 4
    xen = _run(tr, p4, "xen-pv")
    mem, call = p4["mem_op"], p4["call_ret"]
    assert xen.cycles.tolist() == [call + mem, call + mem, mem, call + mem]
    assert xen.summary["interface_ratio"] == round(xen.cycles.sum() / nat.cycles.sum(), 6)
    assert nat.violations == [] and xen.violations == []


def test_unmasking_with_an_interrupt_pending_costs_per_mechanism(
    tmp_path: Path, p4: CostTable
) -> None:
    def build(b: synth.TraceBuilder) -> None:
        synth.apic_setup(b)
        b.hook("irq_disable")
        b.raise_irq(synth.DEVICE_VECTOR, synth.DEVICE_PIN)  # pending while masked
        b.hook("read_cr0", result=b.cr0)
        b.hook("irq_enable")  # the ROM traps, the interrupt is delivered right after

    tr = _trace(tmp_path, build)
    unmask = int(next(k for k in range(tr.n) if tr.hook[k] == 24))  # irq_enable
    assert tr.kind[unmask + 1] == 1  # the interrupt follows the unmask
    xen = _run(tr, p4, "xen-pv")
    assert xen.cycles[unmask] == p4["call_ret"] + p4["mem_op"] + p4["hypercall"]
    assert xen.hypercalls[unmask] == 1
    shadow = _run(tr, p4, "hvm-shadow")
    assert shadow.cycles[unmask] == p4["native_irq_op"] + p4["vm_exit"]  # interrupt window
    lg = _run(tr, p4, "lguest")
    assert lg.cycles[unmask] == p4["mem_op"]  # lguest does not check
    # nobody delivers while masked; lguest would wait for a host entry: none comes, but
    # the recorded interrupt itself is one (it enters the host) -- never earlier than native
    for r in (xen, shadow, lg):
        assert r.summary["interrupts"]["masked"] == 0


def test_xen_batches_page_table_updates_in_multicalls_of_32(tmp_path: Path, p4: CostTable) -> None:
    pt = 0x300

    def build(b: synth.TraceBuilder) -> None:
        pd = b.alloc_frame()
        b.hook("alloc_pd", pd)
        b.hook("alloc_pt", pt)
        b.hook("set_pmd", b.ptr(pd, 0), (pt << 12) | 0x67)
        b.hook("write_cr3", pd << 12)
        b.hook("set_lazy_mode", 1)
        for j in range(40):
            b.hook("set_pte_at", 0xC0200000, j << 12, b.ptr(pt, j), ((0x400 + j) << 12) | 0x67)
        b.hook("set_lazy_mode", 0)
        b.hook("flush_tlb_user")

    tr = _trace(tmp_path, build)
    xen = _run(tr, p4, "xen-pv")
    s = xen.summary
    assert s["batch_flushes"] == 2 and s["batched"] == 40  # 32 when full, 8 at leave
    first = 5 + 32  # the 33rd update finds the buffer full
    assert xen.batch_flushes[first] == 1 and xen.batched[first] == 32
    queued = p4["call_ret"] + p4["queue_entry"]
    assert xen.cycles[first] == p4["hypercall"] + 32 * p4["batch_entry"] + queued
    assert xen.cycles[6] == queued
    assert s["violations"] == 0
    # the same stream without the notification: the updates never reach Xen's tables
    broken = _run(tr, p4, "xen-pv", "pteupdate", "none")
    found = {f.check: f for f in broken.violations}
    assert found["mmu.missing"].field == "va 0x00000000"
    assert "40 page(s)" in found["mmu.missing"].detail


def test_popf_that_keeps_if_breaks_interrupt_safety_and_results(
    tmp_path: Path, p4: CostTable
) -> None:
    def build(b: synth.TraceBuilder) -> None:
        synth.apic_setup(b)
        b.hook("irq_enable")
        synth.irqsave_section(b, work=3, raise_irq=True)
        b.hook("irq_disable")
        b.hook("save_fl", result=0x046)

    tr = _trace(tmp_path, build)
    r = _run(tr, p4, "vmi", "irq", "none")
    checks = [v.check for v in r.violations]
    assert checks.count("irq.masked") == 1 and checks.count("result") == 1
    masked = next(v for v in r.violations if v.check == "irq.masked")
    raise_seq = int(next(k for k in range(tr.n) if tr.kind[k] == 2))
    assert masked.seq == raise_seq + 1  # delivered right after it was raised
    assert _run(tr, p4, "vmi", "irq", "trap").violations == []


def test_apic_without_hooks_and_no_fallback_loses_the_device(tmp_path: Path, p4: CostTable) -> None:
    def build(b: synth.TraceBuilder) -> None:
        b.hook("apic_write", 0xF0, 0x1FF)
        b.hook("apic_write", 0x320, 0x200EF)
        b.hook("irq_enable")
        b.raise_irq(0xEF, 0x100)
        b.apic_read(0x80)
        b.checkpoint()

    tr = _trace(tmp_path, build)
    assert _run(tr, p4, "vmi").violations == []
    r = _run(tr, p4, "vmi", "apic", "none")
    got = {(v.check, v.field) for v in r.violations}
    assert ("irq.lost", "vector") in got  # the timer's LVT was never unmasked
    assert ("result", "apic 0x080") in got  # the read hit nothing: all ones
    assert ("device.lapic", "svr") in got and ("device.lapic", "lvt_timer") in got


def test_the_kernel_at_cpl0_is_a_privilege_violation(tmp_path: Path, p4: CostTable) -> None:
    def build(b: synth.TraceBuilder) -> None:
        b.hook("load_idt", 0xC0300010)
        b.hook("save_fl", result=0x46)
        b.hook("write_cr3", 0x200000)

    tr = _trace(tmp_path, build)
    r = _run(tr, p4, "lguest", "cpl", "none")
    assert [(v.seq, v.check, v.field) for v in r.violations] == [
        (0, "privilege", "load_idt"),
        (2, "privilege", "write_cr3"),
    ]
    trap = _run(tr, p4, "lguest", "cpl", "trap")
    assert trap.violations == []
    assert trap.cycles.sum() == _run(tr, p4, "lguest").cycles.sum() + 3 * p4["bt_call_overhead"]


def test_native_replayed_against_its_own_trace_is_clean(synth_trace: Trace, p4: CostTable) -> None:
    r = engine.replay(synth_trace, resolve("native")[0], p4)
    assert r.violations == []
    assert r.summary["interface_ratio"] == 1.0
    assert r.summary["interrupts"]["delivered"] == r.summary["interrupts"]["recorded"] > 0


@pytest.mark.parametrize("run", all_runs(), ids=lambda r: r.label)
def test_every_run_on_the_synthetic_workload(
    run: backends.Run, synth_trace: Trace, p4: CostTable
) -> None:
    r = engine.replay(synth_trace, run, p4)
    fams = {FAMILY[v.check] for v in r.violations}
    if run.fallback == "none":
        assert run.without is not None
        assert MATCHING[run.without] in fams, r.summary["checks"]
        assert "trace" not in fams
        return
    assert r.violations == [], r.violations[:3]
    if run.fallback == "trap":
        parent = engine.replay(synth_trace, backends.Run(run.backend), p4)
        assert r.summary["cycles"] > parent.summary["cycles"]


def test_full_and_incremental_checks_agree_on_a_whole_replay(
    synth_trace: Trace, p4: CostTable
) -> None:
    for label, ab in (("lguest", ("pteupdate", "none")), ("vmi", ("ptalloc", "none"))):
        run = resolve(label, *ab)[0]
        inc = engine.replay(synth_trace, run, p4)
        full = engine.replay(synth_trace, run, p4, full_check=True)
        assert [(v.seq, v.check, v.detail) for v in inc.violations] == [
            (v.seq, v.check, v.detail) for v in full.violations
        ]
        assert inc.violations


def test_every_backend_row_is_used(synth_trace: Trace, p4: CostTable) -> None:
    totals = {n: engine.replay(synth_trace, resolve(n)[0], p4).summary for n in BACKENDS}
    assert totals["native"]["exits"] == totals["native"]["hypercalls"] == 0
    assert totals["hvm-npt"]["exits"] > 0 and totals["hvm-npt"]["hypercalls"] == 0
    assert totals["xen-pv"]["hypercalls"] > 0 and totals["xen-pv"]["batch_flushes"] > 0
    assert totals["hvm-shadow"]["cycles"] > totals["hvm-npt"]["cycles"]


def _in_place_store(b: synth.TraceBuilder) -> tuple[synth.Proc, list[int], int, int, int]:
    """Boot, run a process with three pages, and write-protect its first page's entry in
    place, unreported yet: (the process, its page addresses, the table, the entry's index,
    the new value)."""
    synth.boot(b)
    a = synth.spawn(b, pages=3)
    synth.switch_to(b, a)
    addrs = sorted(a.pages)
    pt = a.tables[addrs[0] >> 22]
    j0 = (addrs[0] >> 12) & 1023
    new = a.pages[addrs[0]] & ~synth.RW
    b.mem[pt][j0] = new
    return a, addrs, pt, j0, new


def test_a_checkpoint_between_an_in_place_store_and_its_report(
    tmp_path: Path, p4: CostTable
) -> None:
    def build(b: synth.TraceBuilder) -> None:
        a, addrs, pt, j0, new = _in_place_store(b)  # the guest's in-place store...
        b.checkpoint()  # ...the recorder checkpoints here...
        b.hook("pte_update", a.mm, addrs[0], b.ptr(pt, j0), result=new)  # ...then it reports
        j1 = (addrs[1] >> 12) & 1023
        b.in_place("pte_update", a.mm, addrs[1], pt, j1, 0)  # a later change, not yet made

    tr = _trace(tmp_path, build)
    assert _run(tr, p4, "native").violations == []


def test_a_checkpoint_at_a_handler_entry_between_an_in_place_store_and_its_report(
    tmp_path: Path, p4: CostTable
) -> None:
    # as on the default-scale pagefault trace: the store, then a checkpoint at the entry
    # of a handler that runs longer than the interrupted code's next few events and
    # makes MMU calls of its own, then the report when the interrupted code goes on
    def build(b: synth.TraceBuilder) -> None:
        a, addrs, pt, j0, new = _in_place_store(b)  # the guest's in-place store...
        b.exception(14, 0, addrs[2])  # ...a fault (in kernel code) enters its handler...
        b.checkpoint()  # ...the recorder checkpoints at the entry...
        b.hook("read_cr2")  # ...the handler's own MMU call, and a long body...
        for _ in range(40):
            b.hook("save_fl")
            b.hook("restore_fl", 0)
        b.hook("iret", 0xC0101000, 0x61, 0x202)
        b.hook("pte_update", a.mm, addrs[0], b.ptr(pt, j0), result=new)  # ...the report
        b.hook("flush_tlb_single", addrs[0])

    tr = _trace(tmp_path, build)
    assert _run(tr, p4, "native").violations == []


def test_lguest_does_not_mistake_a_reused_directory_frame(tmp_path: Path, p4: CostTable) -> None:
    def build(b: synth.TraceBuilder) -> None:
        synth.boot(b)
        base = synth.spawn(b, pages=1, base=0x08000000)
        synth.switch_to(b, base)
        x = b.alloc_frame()  # a directory for a while...
        b.hook("alloc_pd_clone", x, b.swapper, 768, 256)
        first = synth.Proc(pd=x, mm=0xC0280000)
        synth.switch_to(b, first)
        synth.switch_to(b, base)
        b.hook("release_pd", x)
        b.hook("alloc_pt", x)  # ...then a page table of the running process
        b.hook("set_pmd", b.ptr(base.pd, 8), (x << 12) | synth.PAGE_TABLE)
        # a page that is also a page table frame (any frame is data to the guest)
        data = base.tables[0x08000000 >> 22]
        b.hook("set_pte_at", base.mm, 8 << 22, b.ptr(x, 0), (data << 12) | 0x67)
        b.hook("flush_tlb_user")
        # munmap: ptep_get_and_clear (lguest is not told), the table unhooked, no flush yet
        b.in_place("pte_update", base.mm, 8 << 22, x, 0, 0)
        b.hook("set_pmd", b.ptr(base.pd, 8), 0)
        b.hook("release_pt", x)
        b.hook("alloc_pd_clone", x, b.swapper, 768, 256)  # ...and a directory again
        b.hook("flush_tlb_user")
        synth.switch_to(b, synth.Proc(pd=x, mm=0xC0290000))

    tr = _trace(tmp_path, build)
    assert _run(tr, p4, "lguest").violations == []


def test_binary_translating_the_kernel_charges_every_kernel_call(
    synth_trace: Trace, p4: CostTable
) -> None:
    kernel = int(((synth_trace.kind == 0) & (synth_trace.cpl == 1)).sum())
    for label in ("vmi", "xen-pv", "lguest"):
        parent = _run(synth_trace, p4, label).summary["cycles"]
        trap = _run(synth_trace, p4, label, "cpl", "trap").summary["cycles"]
        assert trap - parent == kernel * p4["bt_call_overhead"], label


def _same(a: engine.RunResult, b: engine.RunResult) -> None:
    for col in ("cycles", "mechanism", "exits", "hypercalls", "traps", "batch_flushes", "batched"):
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
    assert a.violations == b.violations
    assert sorted(a.interrupts) == sorted(b.interrupts)
    for k in a.interrupts:
        assert np.array_equal(a.interrupts[k], b.interrupts[k]), k
    assert a.summary == b.summary


def _alone(tr: Trace, run: backends.Run, p4: CostTable, exact: bool = False) -> engine.RunResult:
    tr.cache.pop("sequential", None)
    return engine.replay(tr, run, p4, exact=exact)


LEAN = (
    "vmi",
    "xen-pv",
    "vmi-without-pteupdate-trap",
    "xen-pv-without-irq-trap",
    "vmi-without-ptalloc-trap",
    "xen-pv-without-ptalloc-trap",
    "lguest",
    "lguest-without-irq-none",
    "lguest-without-pteupdate-trap",
)


@pytest.mark.parametrize("label", LEAN)
def test_the_lean_pass_gives_what_simulating_both_copies_gives(
    label: str, synth_trace: Trace, fork_path: Path, pvcall_path: Path, p4: CostTable
) -> None:
    run = next(r for r in all_runs() if r.label == label)
    for tr in (synth_trace, load(fork_path), load(pvcall_path)):
        lean, exact = _alone(tr, run, p4), _alone(tr, run, p4, exact=True)
        assert exact.sequential == "exact"
        if tr is not synth_trace:
            assert lean.sequential == "lean"  # the guests announce every table they use
        _same(lean, exact)


def test_every_run_on_a_trace_with_checks_but_no_address_space(
    tmp_path: Path, p4: CostTable
) -> None:
    def build(b: synth.TraceBuilder) -> None:
        b.hook("irq_disable")
        b.hook("irq_enable")
        b.checkpoint()
        b.hook("flush_tlb_single", 0x1000)
        b.hook("flush_tlb_user")
        b.checkpoint()

    tr = _trace(tmp_path, build)
    for run in all_runs():
        lean, exact = _alone(tr, run, p4), _alone(tr, run, p4, exact=True)
        _same(lean, exact)


def test_the_lean_pass_agrees_with_the_simulation_on_damaged_traces(
    tmp_path: Path, p4: CostTable
) -> None:
    # page-table hook calls knocked out of synthetic traces (each turned into an io_delay
    # at its seq): the guest's tables and the backend's part ways in many ways; wherever
    # the lean pass accepts a run it must give what simulating both copies gives
    rng = np.random.default_rng(11)
    runs = [r for r in all_runs() if engine.may_be_lean(r)]
    how: list[str] = []
    for seed in range(8):
        b = synth.workload(seed=seed, rounds=2)
        synth.knock_out(b, rng, synth.MMU_HOOKS)
        tr = load(b.write(tmp_path / f"t{seed}"))
        for run in runs:
            lean, exact = _alone(tr, run, p4), _alone(tr, run, p4, exact=True)
            _same(lean, exact)
            how.append(lean.sequential)
    assert how.count("lean") > len(how) // 2 and "exact" in how


def test_the_lean_pass_refuses_a_store_the_backend_may_have_missed(
    tmp_path: Path, p4: CostTable
) -> None:
    def build(b: synth.TraceBuilder) -> None:
        synth.boot(b)
        a = synth.spawn(b, pages=2)
        synth.switch_to(b, a)
        addr = sorted(a.pages)[0]
        pt = a.tables[addr >> 22]
        b.hook("release_pt", pt)  # the kernel says the table is gone...
        b.hook("set_pte_at", a.mm, addr, b.ptr(pt, (addr >> 12) & 1023), 0)  # ...and stores
        b.hook("flush_tlb_single", addr)

    tr = _trace(tmp_path, build)
    for label in ("vmi", "xen-pv"):
        r = _run(tr, p4, label)
        assert r.sequential == "exact"
        assert [v.check for v in r.violations] == ["mmu.stale"]


def test_the_lean_pass_refuses_a_table_reused_while_mapped(tmp_path: Path, p4: CostTable) -> None:
    def build(b: synth.TraceBuilder) -> None:
        synth.boot(b)
        a = synth.spawn(b, pages=2)
        synth.switch_to(b, a)  # the VMM discovers a's tables here...
        pt = a.tables[sorted(a.pages)[0] >> 22]
        b.hook("alloc_pt", pt)  # ...then the kernel zeroes one still mapped
        b.hook("flush_tlb_user")

    tr = _trace(tmp_path, build)
    for label in ("vmi", "xen-pv"):
        r = _run(tr, p4, label, "ptalloc", "trap")
        assert r.sequential == "exact"
        assert {v.check for v in r.violations} == {"mmu.stale"}


def test_the_lean_pass_refuses_a_cached_directory_changed_behind_lguest(
    tmp_path: Path, p4: CostTable
) -> None:
    def build(b: synth.TraceBuilder) -> None:
        synth.boot(b)
        a, other = synth.spawn(b, pages=2), synth.spawn(b, pages=2)
        synth.switch_to(b, a)
        synth.switch_to(b, other)  # lguest keeps a's shadow directory...
        addr = sorted(a.pages)[0]
        pt = a.tables[addr >> 22]
        b.in_place("pte_update", a.mm, addr, pt, (addr >> 12) & 1023, 0)  # ...not told
        synth.switch_to(b, a)  # a cached directory: no re-read, and the CR3 load flushed

    tr = _trace(tmp_path, build)
    r = _run(tr, p4, "lguest")
    assert r.sequential == "exact"
    assert {v.check for v in r.violations} == {"mmu.stale"}


@pytest.mark.parametrize(("behind", "cached"), [(0, True), (1, False), (2, True)])
def test_the_lean_pass_keeps_lguest_s_shadow_directories_as_the_simulation_does(
    tmp_path: Path, p4: CostTable, behind: int, cached: bool
) -> None:
    """lguest's proof keeps the cache the simulation keeps: four shadow directories, the
    least recently loaded out.  A directory changed behind lguest while cached refuses
    the proof; changed after it left the cache, it is re-read and the proof holds."""

    def build(b: synth.TraceBuilder) -> None:
        synth.boot(b)
        procs = [synth.spawn(b, pages=1) for _ in range(5)]
        for p in procs[:4]:
            synth.switch_to(b, p)  # 0 1 2 3
        synth.switch_to(b, procs[0])  # 1 2 3 0
        synth.switch_to(b, procs[4])  # 2 3 0 4: 1 left (first in, 0 would have)
        p = procs[behind]
        addr = next(iter(p.pages))
        pt = p.tables[addr >> 22]
        b.in_place("pte_update", p.mm, addr, pt, (addr >> 12) & 1023, 0)  # not told
        synth.switch_to(b, p)

    tr = _trace(tmp_path, build)
    r = _run(tr, p4, "lguest")
    assert r.sequential == ("exact" if cached else "lean")
    assert {v.check for v in r.violations} == ({"mmu.stale"} if cached else set())


def test_the_lean_pass_refuses_a_clone_of_a_directory_with_an_update_in_flight(
    tmp_path: Path, p4: CostTable
) -> None:
    # the proof takes only the clone sources' stores and hooks into its last rule; a
    # clone made while an update of its source waits in VMI's queue must still be refused
    def build(b: synth.TraceBuilder) -> None:
        synth.boot(b)
        pt = b.alloc_frame()
        b.hook("alloc_pt", pt)
        b.hook("set_pte", b.ptr(pt, 0), (0x123 << 12) | synth.PAGE_KERNEL)
        b.hook("set_lazy_mode", 1)
        b.hook("set_pmd", b.ptr(b.swapper, 0x3F1), (pt << 12) | synth.KERNPG_TABLE)  # queued
        a = synth.spawn(b, pages=1)  # clones swapper_pg_dir meanwhile
        b.hook("set_lazy_mode", 0)
        synth.switch_to(b, a)

    tr = _trace(tmp_path, build)
    vmi = next(x for x in all_runs() if x.label == "vmi")
    r = _run(tr, p4, "vmi")
    assert r.sequential == "exact"
    _same(r, _alone(tr, vmi, p4, exact=True))


def test_lguest_trapping_stores_is_not_resynced_by_a_set_pte(tmp_path: Path, p4: CostTable) -> None:
    def build(b: synth.TraceBuilder) -> None:
        synth.boot(b)
        a = synth.spawn(b, pages=2)
        synth.kmap_churn(b, slots=1)
        synth.switch_to(b, a)
        pt = a.tables[sorted(a.pages)[0] >> 22]
        b.hook("alloc_pt", pt)  # the memset lguest never sees, of a table still mapped
        b.hook("set_pte", b.ptr(b.scratch, 0), (0x100 << 12) | 0x163)
        synth.switch_to(b, a)  # a cached directory: no re-read, and the CR3 load flushed

    tr = _trace(tmp_path, build)
    # told of set_pte, lguest drops every shadow (FLUSH_TLB(1)); trapping it, only learns it
    told = _run(tr, p4, "lguest")
    assert told.sequential == "lean" and not told.violations
    trapped = _run(tr, p4, "lguest", "pteupdate", "trap")
    assert trapped.sequential == "exact"
    assert {v.check for v in trapped.violations} == {"mmu.stale"}


def test_runs_sharing_a_sequential_pass_get_what_each_would_alone(
    fork_path: Path, p4: CostTable
) -> None:
    tr = load(fork_path)
    for name, req, fb in (
        ("lguest", "cpl", "trap"),
        ("lguest", "irq", "none"),
        ("vmi", "cpl", "none"),
    ):
        parent, ab = backends.Run(BACKENDS[name]), backends.Run(BACKENDS[name], req, fb)
        assert engine.sequential_key(parent, p4) == engine.sequential_key(ab, p4)
        _alone(tr, parent, p4)
        shared = engine.replay(tr, ab, p4)
        assert shared.sequential == "shared"
        _same(shared, _alone(tr, ab, p4))
    # PTE hooks change what the backend learns, APIC hooks what its devices see
    for name, req in (("lguest", "pteupdate"), ("vmi", "apic")):
        ab = backends.Run(BACKENDS[name], req, "none")
        assert engine.sequential_key(ab, p4) != engine.sequential_key(backends.Run(ab.backend), p4)


def test_a_run_lets_go_of_another_runs_pass_and_proof_before_making_its_own(
    synth_trace: Trace, p4: CostTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another run's sequential pass and lean proof, kept on the trace, are replaced by
    # this run's: held while this run makes its own, they took hundreds of MiB more
    from replayer.engine import lean

    held: list[tuple[bool, bool]] = []
    prove = lean.LeanPass._prove

    def watched(self: lean.LeanPass) -> object:
        cache = self.trace.cache
        held.append((lean.LEAN_PROOF in cache, "sequential" in cache))
        return prove(self)

    monkeypatch.setattr(lean.LeanPass, "_prove", watched)
    engine.replay(synth_trace, backends.Run(BACKENDS["vmi"]), p4)
    assert held == [(False, False)]
    assert lean.LEAN_PROOF in synth_trace.cache and "sequential" in synth_trace.cache
    engine.replay(synth_trace, backends.Run(BACKENDS["xen-pv"]), p4)
    assert held == [(False, False), (False, False)]


@pytest.mark.parametrize(
    "run",
    [
        ("vmi", None),
        ("lguest", None),
        ("vmi", "ptalloc"),
        ("lguest", "pteupdate"),
        ("native", None),
    ],
    ids=lambda r: "-".join(x for x in r if x),
)
def test_a_runs_columns_are_made_after_its_pass(
    synth_trace: Trace, p4: CostTable, run: tuple[str, str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the per-event columns (hundreds of MiB on a 10 M-event trace) and the pass's
    # whole-trace temporaries (a proof, the empty copies' judge, lguest's walk) are never
    # held at once: the columns are made once the pass is done
    import replayer.engine as eng
    from replayer.engine import lean

    order: list[str] = []
    static, pass_ = eng._static, lean.LeanPass._lean

    def columns(*a: object, **k: object) -> object:
        order.append("columns")
        return static(*a, **k)  # type: ignore[arg-type]

    def the_pass(self: lean.LeanPass, absorbed: object) -> object:
        order.append("pass")
        return pass_(self, absorbed)  # type: ignore[arg-type]

    monkeypatch.setattr(eng, "_static", columns)
    monkeypatch.setattr(lean.LeanPass, "_lean", the_pass)
    backend, without = run
    r = (
        backends.Run(BACKENDS[backend], without, "none")
        if without
        else backends.Run(BACKENDS[backend])
    )
    engine.replay(synth_trace, r, p4)
    assert order == ["pass", "columns"]


def test_release_keeps_what_a_later_run_reuses_and_lets_go_of_the_rest(
    synth_trace: Trace, p4: CostTable
) -> None:
    from replayer.engine.empty import JUDGED
    from replayer.engine.lean import LEAN_PROOF

    cache = synth_trace.cache
    empty = [backends.Run(BACKENDS[b], "ptalloc", "none") for b in ("vmi", "xen-pv")]
    engine.replay(synth_trace, empty[0], p4)
    kept = {k: cache[k] for k in ("sequential", LEAN_PROOF, JUDGED)}
    engine.release(synth_trace, p4, [empty[1]])  # judged checks reused, the rest not
    assert JUDGED in cache and "sequential" not in cache and LEAN_PROOF not in cache
    cache.update(kept)
    engine.release(synth_trace, p4, [empty[0]])  # all of it reused
    assert all(cache[k] is v for k, v in kept.items())
    engine.release(synth_trace, p4, [])
    assert not {"sequential", LEAN_PROOF, JUDGED} & set(cache)
    # a run sharing the pass (cpl's ablation) keeps it
    vmi = backends.Run(BACKENDS["vmi"])
    engine.replay(synth_trace, vmi, p4)
    engine.release(synth_trace, p4, [backends.Run(BACKENDS["vmi"], "cpl", "none")])
    assert "sequential" in cache


@pytest.mark.parametrize("later", [[], ["vmi-without-ptalloc-none"]], ids=["last", "judge reused"])
def test_a_run_told_what_comes_later_lets_go_before_its_columns(
    synth_trace: Trace, p4: CostTable, later: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # with no later run reusing them, the pass, the proof and the empty copies' judged
    # checks are gone before the per-event columns are made, not after the run
    import replayer.engine as eng
    from replayer.engine.empty import JUDGED
    from replayer.engine.lean import LEAN_PROOF

    held: list[set[str]] = []
    static = eng._static

    def columns(*a: object, **k: object) -> object:
        held.append({"sequential", LEAN_PROOF, JUDGED} & set(synth_trace.cache))
        return static(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(eng, "_static", columns)
    runs = {r.label: r for r in backends.all_runs()}
    first = backends.Run(BACKENDS["xen-pv"], "ptalloc", "none")
    alone = engine.replay(synth_trace, first, p4)
    synth_trace.cache.clear()
    told = engine.replay(synth_trace, first, p4, later=[runs[x] for x in later])
    assert held[-1] == ({JUDGED} if later else set())
    assert told.summary == alone.summary and told.violations == alone.violations


def test_loaded_table_stores_follow_the_guest_tables(fork_path: Path) -> None:
    tr = load(fork_path)
    ent, val = engine.pte_entries(tr)
    guest = GuestMMU(nframes=1 << 14)
    want = np.zeros(tr.n, dtype=bool)
    fills = {H[x] for x in ("alloc_pt", "alloc_pd", "alloc_pd_clone")}
    for k in range(tr.n):
        h, e = int(tr.hook[k]), int(ent[k])
        if e >= 0:
            if guest.pd is not None:
                # the tables the loaded directory names (a present entry, not a large page)
                pdes = guest.frames.page(guest.pd)
                named = pdes[((pdes & 1) != 0) & ((pdes & 0x80) == 0)] >> 12
                want[k] = (e >> 10) in set(named.tolist())
            guest.write(e >> 10, e & 1023, int(val[k]))
        elif h == H["write_cr3"]:
            guest.cr3 = int(tr.arg0[k])
        elif h in fills:
            clone = None
            if h == H["alloc_pd_clone"]:
                clone = (int(tr.arg1[k]), int(tr.arg2[k]), int(tr.arg3[k]))
            guest.frames.grow(int(tr.arg0[k]))
            engine._fill_table(guest.frames, int(tr.arg0[k]), clone)
    got = engine.loaded_table_stores(tr)
    assert want.any() and (~want & (ent >= 0)).any()
    assert np.array_equal(got, want)


@pytest.mark.parametrize("label", ["hvm-shadow", "bt"])
def test_a_checkpoint_on_a_page_table_hook_changes_nothing_a_tracing_vmm_pays(
    label: str, tmp_path: Path, p4: CostTable
) -> None:
    # a checkpoint observes the machine: where it falls on a CR3 load or a PTE store, the
    # write-protecting VMM pays what it pays without it (the simulation once charged that
    # event again, with a tracer of its own that had seen nothing)
    def build(b: synth.TraceBuilder, observe: bool) -> None:
        synth.boot(b)
        a, c = synth.spawn(b, pages=2), synth.spawn(b, pages=2, base=0x0804C000)
        for i, p in enumerate((a, c, a, c)):
            # switch_to, with the machine observed just after its CR3 load back to a space
            # the VMM has seen before
            b.hook("set_lazy_mode", 2)
            b.hook("write_cr3", p.pd << 12)
            if observe and i >= 2:
                b.checkpoint()
            b.hook("load_esp0", 0xC0300020, 0xC0400000 + p.mm)
            b.hook("set_lazy_mode", 0)
            b.current = p
            synth.fork_cycle(b, p, faults=2)

    run = next(r for r in all_runs() if r.label == label)
    plain = _trace(tmp_path / "plain", lambda b: build(b, False))
    seen = _trace(tmp_path / "seen", lambda b: build(b, True))
    at = sorted(seen.checkpoints)
    assert int((seen.hook[at] == BY_NAME["write_cr3"].id).sum()) == 2
    for exact in (False, True):
        got, want = _alone(seen, run, p4, exact), _alone(plain, run, p4, exact)
        for col in ("cycles", "mechanism", "exits", "traps"):
            assert np.array_equal(getattr(got, col), getattr(want, col)), (exact, col)
        assert got.violations == []


def test_native_cycles_by_class_read_as_the_whole_column_would(
    synth_trace: Trace, p4: CostTable
) -> None:
    # a run's native cycles are kept per cost class, never made whole: every way the
    # results read them (slices, masks, the sum, the whole) gives the gathered column's
    from replayer.backends import NATIVE
    from replayer.engine.derived import absorbed_mmio
    from replayer.engine.static import _static, native_cycles

    nat = native_cycles(synth_trace, p4)
    whole = _static(synth_trace, NATIVE, p4, absorbed_mmio(synth_trace))[1].view(np.uint64)
    assert len(np.unique(whole)) > 3, "too few distinct costs to tell classes apart"
    assert nat.dtype == np.uint64 and nat.shape == whole.shape and len(nat) == len(whole)
    assert np.array_equal(np.asarray(nat), whole)
    assert np.array_equal(nat.astype(np.int64), whole.astype(np.int64))
    assert nat.sum() == int(whole.sum())
    assert nat.count_nonzero() == np.count_nonzero(whole)
    for part in (slice(0, 7), slice(100, None), slice(len(whole) - 3, len(whole) + 5)):
        assert np.array_equal(nat[part], whole[part])
    mask = synth_trace.hook >= 0
    assert np.array_equal(nat[mask], whole[mask])


def test_a_sparse_column_reads_as_the_whole_column_would() -> None:
    from replayer.engine.result import Sparse

    rng = np.random.default_rng(5)
    n = 1000
    at = rng.choice(n, 40, replace=False)
    vals = rng.integers(0, 4, 40).astype(np.uint32)  # some zeros among them
    whole = np.zeros(n, dtype=np.uint32)
    whole[at] = vals
    col = Sparse(n, at, vals)  # events in any order
    assert col.dtype == np.uint32 and col.shape == (n,) and len(col) == n
    assert np.array_equal(np.asarray(col), whole) and np.asarray(col).dtype == np.uint32
    assert col.sum() == int(whole.sum()) and col.count_nonzero() == np.count_nonzero(whole)
    assert np.array_equal(col > 0, whole > 0)
    for part in (slice(0, 0), slice(0, 7), slice(13, 600), slice(990, 1200), slice(None)):
        assert np.array_equal(col[part], whole[part]) and col[part].dtype == np.uint32
    k = int(at[3])
    assert col[k] == whole[k] and np.array_equal(col[at], whole[at])
    assert np.array_equal(col.astype(np.int64), whole.astype(np.int64))
    empty = Sparse(n, np.zeros(0, np.int64), np.zeros(0, np.uint32))
    assert not empty.sum() and not np.asarray(empty).any()
    # an event given twice keeps its later value, as an assignment would (a 0 included)
    twice = Sparse(n, np.array([9, 4, 9, 4, 2]), np.array([5, 1, 0, 3, 0], dtype=np.uint32))
    want = np.zeros(n, dtype=np.uint32)
    want[[9, 4, 9, 4, 2]] = [5, 1, 0, 3, 0]
    assert np.array_equal(np.asarray(twice), want) and twice.sum() == 3
    assert twice.count_nonzero() == 1
