"""Synthetic traces: small but realistic event streams, written as valid trace directories.

For tests and benchmarks that need a stream of a precise shape, without
running a guest.  A :class:`TraceBuilder` emits events following the
recorder's conventions exactly (``pvscope.schema`` and the recorder's ROM):

* one ordered stream, ``seq`` from 0; ``vif``/``cpl``/``cr3`` as they were when
  the event happened, *before* its effect (the ROM logs EFLAGS at entry);
* hook arguments in regparm order (``set_pte_at``: mm, addr, ptep, pteval);
  entry pointers physical before ``write_cr0`` sets PG, linear-map addresses
  (physical + ``PAGE_OFFSET``) after;
* ``pte_update``/``pte_update_defer`` log the PTE value the guest left in place
  in ``result``;
* ``apic_write``/``apic_read`` followed by the ROM's own ``mmio_write``/``mmio_read``
  of ``0xFEE00000 + reg``;
* ``irq_raise`` when a vector becomes pending; ``interrupt`` (arg2/arg3 the raise
  vtime) when delivered -- at once if the guest has IF set, else right after
  the hook that unmasks (as the ROM's unmask trap does);
* checkpoints in ``state.parquet`` with the recorder's component/key names and
  an ``mmu`` digest computed, independently of the replayer, from the
  builder's own copy of guest memory with ``pvscope.digest``.

Scenarios (:func:`boot`, :func:`fork_cycle`, :func:`irqsave_section`,
:func:`timer_tick`, :func:`reclaim`, :func:`kmap_churn`) compose into
:func:`workload`; :func:`tile` repeats a state-neutral stretch to make large
traces quickly (``bench/replay.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pvscope import __version__, schema
from pvscope.digest import mapping_digest, walk_page_directory
from pvscope.hooks import BY_NAME

PAGE_OFFSET = 0xC0000000
LAPIC_BASE = 0xFEE00000
IOAPIC_BASE = 0xFEC00000
P, RW, US, A, D, G = 0x1, 0x2, 0x4, 0x20, 0x40, 0x100
KERNPG_TABLE = P | RW | A | D  # 0x63
PAGE_TABLE = KERNPG_TABLE | US  # 0x67
PAGE_KERNEL = P | RW | A | D
EFLAGS_IF = 0x200
TIMER_VECTOR = 0xEF
DEVICE_VECTOR = 0x31
DEVICE_PIN = 1
SOURCE_TIMER = 0x100

_KIND = {k: i for i, k in enumerate(schema.EVENT_KINDS)}

#: LAPIC registers as the recorder names them in checkpoints, and their reset values.
LAPIC_RESET = {
    "id": 0,
    "version": 0x00050014,
    "tpr": 0,
    "ppr": 0,
    "ldr": 0,
    "dfr": 0xFFFFFFFF,
    "svr": 0xFF,
    "icr_lo": 0,
    "icr_hi": 0,
    "lvt_timer": 0x10000,
    "lvt_thermal": 0x10000,
    "lvt_perf": 0x10000,
    "lvt_lint0": 0x10000,
    "lvt_lint1": 0x10000,
    "lvt_error": 0x10000,
    "timer_initial": 0,
    "timer_divide": 0,
}
_LAPIC_REG = {
    0x080: "tpr",
    0x0D0: "ldr",
    0x0F0: "svr",
    0x320: "lvt_timer",
    0x350: "lvt_lint0",
    0x360: "lvt_lint1",
    0x370: "lvt_error",
    0x380: "timer_initial",
    0x3E0: "timer_divide",
}


@dataclass
class Proc:
    """A user address space: its page directory, mm pointer and mapped pages."""

    pd: int
    mm: int
    tables: dict[int, int] = field(default_factory=dict)
    """directory index -> page-table frame."""
    pages: dict[int, int] = field(default_factory=dict)
    """user virtual address -> PTE value."""


class TraceBuilder:
    """Emits events and keeps the guest state they imply (memory, IF, CR3, LAPIC)."""

    def __init__(self, seed: int = 0, mem_mib: int = 16) -> None:
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.mem_mib = mem_mib
        # the schema's columns but seq (a row's position), and whether it has a result
        self.cols: dict[str, list[int]] = {k: [] for k in (*schema.EVENTS.names[1:], "has_result")}
        self.state_rows: list[tuple[int, int, str, str, int]] = []
        self.vtime = 0
        self.vif = False
        self.cpl = 1
        self.cr3 = 0
        self.cr0 = 0x00000011
        self.cr4 = 0
        self.paging = False
        self.lazy = 0
        self.mem: dict[int, np.ndarray] = {}
        self.lapic = dict(LAPIC_RESET)
        self.isr = 0
        self.ioapic_sel = 0
        self.ioapic_lo = [0x10000] * 24
        self.ioapic_hi = [0] * 24
        self.pending: list[tuple[int, int, int]] = []
        self.free: list[int] = list(range((mem_mib << 8) - 1, 0x400, -1))
        self.swapper = 0
        self.scratch: int | None = None
        self.procs: list[Proc] = []
        self.current: Proc | None = None
        self._next_mm = 0xC0200000

    # ---------------------------------------------------------------- events

    @property
    def n(self) -> int:
        """Events emitted so far."""
        return len(self.cols["vtime"])

    def _emit(
        self,
        kind: str,
        hook: str | None = None,
        args: tuple[int, ...] = (),
        result: int | None = None,
        site: int = 0,
    ) -> int:
        c = self.cols
        self.vtime += int(self.rng.integers(4, 40))
        a = [*(x & 0xFFFFFFFF for x in args), 0, 0, 0, 0][:4]
        c["vtime"].append(self.vtime)
        c["kind"].append(_KIND[kind])
        c["hook"].append(BY_NAME[hook].id if hook else -1)
        c["arg0"].append(a[0])
        c["arg1"].append(a[1])
        c["arg2"].append(a[2])
        c["arg3"].append(a[3])
        c["result"].append(0 if result is None else result)
        c["has_result"].append(result is not None)
        c["site"].append(site or (0xC0100000 + 0x40 * (BY_NAME[hook].id if hook else 99)))
        c["cpl"].append(self.cpl)
        c["vif"].append(int(self.vif))
        c["cr3"].append(self.cr3)
        return self.n - 1

    def hook(self, name: str, *args: int, result: int | None = None) -> int:
        """Emit a hook call and apply its native effect; return its seq."""
        k = self._emit("hook", name, args, result)
        a = list(args) + [0, 0, 0, 0]
        unmask = False
        if name == "irq_disable":
            self.vif = False
        elif name in ("irq_enable", "safe_halt"):
            unmask = not self.vif
            self.vif = True
        elif name == "restore_fl":
            new = bool(a[0] & EFLAGS_IF)
            unmask = new and not self.vif
            self.vif = new
        elif name == "iret":
            self.vif = bool(a[2] & EFLAGS_IF)
            self.cpl = a[1] & 3
        elif name == "write_cr3":
            self.cr3 = a[0]
        elif name == "write_cr0":
            self.cr0 = a[0]
            self.paging = bool(a[0] & 0x80000000)
        elif name == "write_cr4":
            self.cr4 = a[0]
        elif name in ("set_pte", "set_pmd"):
            self._store(a[0], a[1])
        elif name == "set_pte_at":
            self._store(a[2], a[3])
        elif name in ("alloc_pt", "alloc_pd"):
            self.mem[a[0]] = np.zeros(1024, dtype=np.uint32)
        elif name == "alloc_pd_clone":
            page = np.zeros(1024, dtype=np.uint32)
            src = self.mem.get(a[1], np.zeros(1024, dtype=np.uint32))
            page[a[2] : a[2] + a[3]] = src[a[2] : a[2] + a[3]]
            self.mem[a[0]] = page
        elif name == "set_lazy_mode":
            self.lazy = a[0] if a[0] != 3 else self.lazy
        elif name in ("apic_write", "apic_write_atomic"):
            self._emit("mmio_write", None, (LAPIC_BASE + a[0], 4, a[1]))
            self._lapic_write(a[0], a[1])
        if unmask:
            self.deliver_pending()
        return k

    def _phys(self, ptr: int) -> int:
        return (ptr - PAGE_OFFSET) & 0xFFFFFFFF if self.paging else ptr

    def ptr(self, pfn: int, idx: int) -> int:
        """The pointer a hook would be passed for entry ``idx`` of frame ``pfn``."""
        phys = (pfn << 12) | (idx << 2)
        return phys + PAGE_OFFSET if self.paging else phys

    def _store(self, ptr: int, value: int) -> None:
        phys = self._phys(ptr)
        page = self.mem.setdefault(phys >> 12, np.zeros(1024, dtype=np.uint32))
        page[(phys & 0xFFF) >> 2] = value & 0xFFFFFFFF

    def entry(self, pfn: int, idx: int) -> int:
        """The guest's current value of an entry."""
        page = self.mem.get(pfn)
        return 0 if page is None else int(page[idx])

    def in_place(self, name: str, mm: int, addr: int, pfn: int, idx: int, value: int) -> int:
        """The guest changes a PTE in place, then tells the hypervisor (pte_update[_defer])."""
        self.mem.setdefault(pfn, np.zeros(1024, dtype=np.uint32))[idx] = value
        return self.hook(name, mm, addr, self.ptr(pfn, idx), result=value)

    def apic_read(self, reg: int) -> int:
        """apic_read with the value the LAPIC returns, and the ROM's MMIO read."""
        v = self._lapic_value(reg)
        k = self.hook("apic_read", reg, result=v)
        self._emit("mmio_read", None, (LAPIC_BASE + reg, 4, v))
        return k

    def ioapic_write(self, reg: int, value: int) -> None:
        """Program an IOAPIC register through IOREGSEL/IOWIN."""
        self._emit("mmio_write", None, (IOAPIC_BASE, 4, reg))
        self._emit("mmio_write", None, (IOAPIC_BASE + 0x10, 4, value))
        self.ioapic_sel = reg
        if 0x10 <= reg < 0x40:
            pin = (reg - 0x10) >> 1
            if reg & 1:
                self.ioapic_hi[pin] = value & 0xFF000000
            else:
                self.ioapic_lo[pin] = value & 0x0001AFFF

    def _lapic_write(self, reg: int, v: int) -> None:
        if reg == 0xB0:
            if self.isr:
                self.isr &= ~(1 << (self.isr.bit_length() - 1))
            return
        name = _LAPIC_REG.get(reg)
        if name is None:
            return
        masks = {
            "tpr": 0xFF,
            "ldr": 0xFF000000,
            "svr": 0x3FF,
            "lvt_timer": 0x300FF,
            "lvt_lint0": 0x1A7FF,
            "lvt_lint1": 0x1A7FF,
            "lvt_error": 0x100FF,
            "timer_initial": 0xFFFFFFFF,
            "timer_divide": 0xB,
        }
        self.lapic[name] = v & masks[name]

    def _lapic_value(self, reg: int) -> int:
        if reg == 0x20:
            return self.lapic["id"]
        if reg == 0x30:
            return self.lapic["version"]
        if reg == 0xA0:
            return self._ppr()
        name = _LAPIC_REG.get(reg)
        return self.lapic[name] if name else 0

    def _ppr(self) -> int:
        tpr = self.lapic["tpr"]
        isrv = self.isr.bit_length() - 1 if self.isr else 0
        return tpr if tpr >> 4 >= isrv >> 4 else isrv & 0xF0

    # ------------------------------------------------------------ interrupts

    def raise_irq(self, vector: int, source: int) -> None:
        """A source makes ``vector`` pending; delivered at once if the guest can take it."""
        coalesced = any(v == vector for v, _, _ in self.pending)
        self._emit("irq_raise", None, (vector, source, 0, int(coalesced)))
        if not coalesced:
            self.pending.append((vector, source, self.vtime))
        if self.vif:
            self.deliver_pending()

    def deliver_pending(self) -> None:
        """Deliver what is pending while the guest has interrupts enabled."""
        while self.vif and self.pending:
            vector, source, raised = self.pending.pop(0)
            self.interrupt(vector, source, raised)

    def interrupt(self, vector: int, source: int, raised: int) -> None:
        """Deliver one interrupt and run a minimal handler: EOI, iret."""
        self._emit("interrupt", None, (vector, source, raised & 0xFFFFFFFF, raised >> 32))
        back_cpl = self.cpl
        self.isr |= 1 << vector
        self.vif = False
        self.cpl = 1
        if source == DEVICE_PIN:
            self._emit("mmio_read", None, (0xFED00004, 4, 1))  # device status
        self.hook("apic_write", 0xB0, 0)
        cs = 0x73 if back_cpl == 3 else 0x61
        self.hook("iret", 0xC0101000 if back_cpl == 1 else 0x08048000, cs, 0x202)

    def exception(self, vector: int, error: int, cr2: int = 0) -> int:
        """Emit an exception taken by the code running now; the handler runs at CPL 1."""
        k = self._emit("exception", None, (vector, error, cr2))
        self.vif = False  # page faults come through an interrupt gate
        self.cpl = 1
        return k

    # ---------------------------------------------------------------- memory

    def alloc_frame(self) -> int:
        """A free physical frame (LIFO, so frames are reused soon)."""
        return self.free.pop()

    def free_frame(self, pfn: int) -> None:
        """Give a frame back."""
        self.free.append(pfn)

    # ----------------------------------------------------------- checkpoints

    def checkpoint(self) -> None:
        """Record LAPIC, IOAPIC, CPU and MMU state after the last event."""
        seq, vt = self.n - 1, self.vtime
        rows = self.state_rows
        lap = dict(self.lapic)
        lap["ppr"] = self._ppr()
        for i in range(8):
            lap[f"isr{i}"] = (self.isr >> (32 * i)) & 0xFFFFFFFF
            lap[f"irr{i}"] = 0
            lap[f"tmr{i}"] = 0
        lap["esr"] = 0
        lap["timer_current"] = 0
        rows += [(seq, vt, "lapic", k, int(v)) for k, v in sorted(lap.items())]
        io = {"id": 0, "version": 0x00170011, "arbitration": 0, "ioregsel": self.ioapic_sel}
        for p in range(24):
            io[f"redir{p}_lo"] = self.ioapic_lo[p]
            io[f"redir{p}_hi"] = self.ioapic_hi[p]
        rows += [(seq, vt, "ioapic", k, int(v)) for k, v in sorted(io.items())]
        cpu = {
            "cr0": self.cr0,
            "cr3": self.cr3,
            "cr4": self.cr4,
            "eflags_if": int(self.vif),
            "cpl": self.cpl,
        }
        rows += [(seq, vt, "cpu", k, v) for k, v in sorted(cpu.items())]
        rows.append((seq, vt, "mmu", "digest", self.mmu_digest()))

    def mmu_digest(self) -> int:
        """``pvscope.digest`` of the loaded space, from the builder's own memory."""
        if not self.paging:
            return mapping_digest([])

        def table(pfn: int) -> bytes | None:
            page = self.mem.get(pfn)
            return bytes(4096) if page is None else page.astype("<u4").tobytes()

        pd = table(self.cr3 >> 12)
        return mapping_digest(walk_page_directory(pd, table))  # type: ignore[arg-type]

    # ----------------------------------------------------------------- write

    def events(self) -> pa.Table:
        """The events table (schema ``pvscope.schema.EVENTS``)."""
        c = {k: np.asarray(v) for k, v in self.cols.items()}
        return events_table(c)

    def write(self, path: Path, guest: str = "synthetic") -> Path:
        """Write a trace directory (manifest, events, inputs, state) at ``path``."""
        return write_trace(path, self.events(), self.state_rows, self.seed, self.mem_mib, guest)


def events_table(c: dict[str, np.ndarray]) -> pa.Table:
    """Columns (vtime, kind, hook, arg0-3, result, has_result, site, cpl, vif, cr3) to a table."""
    n = len(c["vtime"])
    kinds = list(schema.EVENT_KINDS)
    hooks = [h for h in BY_NAME]
    hook_codes = np.asarray(c["hook"], dtype=np.int64)
    is_hook = hook_codes >= 0
    cols = [
        pa.array(np.arange(n, dtype=np.uint64)),
        pa.array(np.asarray(c["vtime"], dtype=np.uint64)),
        pa.DictionaryArray.from_arrays(
            pa.array(np.asarray(c["kind"], dtype=np.int8)), pa.array(kinds)
        ),
        pa.DictionaryArray.from_arrays(
            pa.array(np.where(is_hook, hook_codes, 0).astype(np.int8), mask=~is_hook),
            pa.array(hooks),
        ),
        *(pa.array(np.asarray(c[f"arg{i}"], dtype=np.uint32)) for i in range(4)),
        pa.array(
            np.asarray(c["result"], dtype=np.uint64),
            mask=~np.asarray(c["has_result"], dtype=bool),
        ),
        pa.array(np.asarray(c["site"], dtype=np.uint32)),
        pa.array(np.asarray(c["cpl"], dtype=np.uint8)),
        pa.array(np.asarray(c["vif"], dtype=bool)),
        pa.array(np.asarray(c["cr3"], dtype=np.uint32)),
    ]
    return pa.Table.from_arrays(cols, schema=schema.EVENTS.arrow_schema())


def write_trace(
    path: Path,
    events: pa.Table,
    state_rows: list[tuple[int, int, str, str, int]],
    seed: int = 0,
    mem_mib: int = 16,
    guest: str = "synthetic",
) -> Path:
    """Write a valid trace directory from an events table and checkpoint rows."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    opts = {"compression": "zstd", "use_dictionary": ["kind", "hook", "source", "component", "key"]}
    pq.write_table(events, path / schema.EVENTS.file, row_group_size=1 << 20, **opts)
    inputs = pa.Table.from_pydict(
        {"seq": [0], "vtime": [0], "source": ["seed"], "value": [seed]},
        schema=pa.schema(
            [
                pa.field("seq", pa.uint64(), False),
                pa.field("vtime", pa.uint64(), False),
                pa.field("source", schema.NAME, False),
                pa.field("value", pa.uint64(), False),
            ]
        ),
    )
    pq.write_table(inputs.cast(schema.INPUTS.arrow_schema()), path / schema.INPUTS.file, **opts)
    st: list[tuple[Any, ...]] = (
        list(zip(*state_rows, strict=True)) if state_rows else [(), (), (), (), ()]
    )
    state = pa.Table.from_arrays(
        [
            pa.array(st[0], pa.uint64()),
            pa.array(st[1], pa.uint64()),
            pa.array(st[2], pa.string()).dictionary_encode().cast(schema.NAME),
            pa.array(st[3], pa.string()).dictionary_encode().cast(schema.NAME),
            pa.array(st[4], pa.uint64()),
        ],
        schema=schema.STATE.arrow_schema(),
    )
    pq.write_table(state, path / schema.STATE.file, **opts)
    for t in schema.TABLES.values():
        if not (path / t.file).exists():  # tables a synthetic guest has nothing for
            pq.write_table(t.arrow_schema().empty_table(), path / t.file, **opts)
    n = events.num_rows
    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "min_reader_version": schema.MIN_READER_VERSION,
        "pvscope_version": __version__,
        "abi": "linux-2.6.21-i386-paravirt_ops",
        "guest": {"name": guest, "sha256": None, "entry": None},
        "machine": {"mem_mib": mem_mib, "page_offset": PAGE_OFFSET},
        "seed": seed,
        "counts": {"events": n, "state": len(state_rows)},
        "end": {"status": "complete", "reason": "synthetic trace"},
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


# --------------------------------------------------------------------- scenarios


def boot(b: TraceBuilder, linear_mib: int = 8) -> None:
    """Build swapper_pg_dir and the kernel linear map, turn paging on, set up the APICs."""
    b.hook("write_cr4", b.cr4 | 0x80)  # PGE, as 2.6.21's pagetable_init turns on
    pd = b.alloc_frame()
    b.swapper = pd
    b.hook("alloc_pd", pd)
    tables = []
    for t in range(linear_mib // 4):
        pt = b.alloc_frame()
        tables.append(pt)
        b.hook("alloc_pt", pt)
        for j in range(1024):
            b.hook("set_pte", b.ptr(pt, j), ((t * 1024 + j) << 12) | PAGE_KERNEL | G)
        b.hook("set_pmd", b.ptr(pd, 768 + t), (pt << 12) | KERNPG_TABLE)
    b.hook("set_pmd", b.ptr(pd, 0), (tables[0] << 12) | KERNPG_TABLE)  # identity, for now
    # the local APIC and IOAPIC, uncached
    apic = b.alloc_frame()
    b.hook("alloc_pt", apic)
    b.hook("set_pte", b.ptr(apic, (LAPIC_BASE >> 12) & 1023), LAPIC_BASE | PAGE_KERNEL | 0x18)
    b.hook("set_pte", b.ptr(apic, (IOAPIC_BASE >> 12) & 1023), IOAPIC_BASE | PAGE_KERNEL | 0x18)
    b.hook("set_pmd", b.ptr(pd, LAPIC_BASE >> 22), (apic << 12) | KERNPG_TABLE)
    b.hook("write_cr3", pd << 12)
    b.hook("write_cr0", b.cr0 | 0x80010000)
    b.hook("set_pmd", b.ptr(pd, 0), 0)  # zap_low_mappings
    b.hook("flush_tlb_kernel")
    b.hook("load_gdt", 0xC0300000)
    b.hook("load_idt", 0xC0300010)
    b.hook("load_tr_desc")
    b.hook("load_esp0", 0xC0300020, 0xC0300040)
    apic_setup(b)
    b.hook("irq_enable")
    b.checkpoint()


def apic_setup(b: TraceBuilder) -> None:
    """Enable the local APIC, start its periodic timer, route the device's IOAPIC pin."""
    b.apic_read(0x20)
    b.apic_read(0x30)
    b.hook("apic_write", 0xF0, 0x1FF)
    b.hook("apic_write", 0x3E0, 0xB)
    b.hook("apic_write", 0x320, 0x20000 | TIMER_VECTOR)
    b.hook("apic_write", 0x380, 100000)
    b.ioapic_write(0x10 + 2 * DEVICE_PIN, DEVICE_VECTOR)
    b.ioapic_write(0x11 + 2 * DEVICE_PIN, 0)


def spawn(b: TraceBuilder, pages: int = 8, base: int = 0x08048000) -> Proc:
    """A new address space with ``pages`` writable user pages (not yet loaded)."""
    pd = b.alloc_frame()
    b.hook("alloc_pd_clone", pd, b.swapper, 768, 256)
    proc = Proc(pd=pd, mm=b._next_mm)
    b._next_mm += 0x100
    b.procs.append(proc)
    for i in range(pages):
        addr = base + (i << 12)
        pt = _table_for(b, proc, addr)
        pte = (b.alloc_frame() << 12) | P | RW | US | A | D
        b.hook("set_pte_at", proc.mm, addr, b.ptr(pt, (addr >> 12) & 1023), pte)
        proc.pages[addr] = pte
    return proc


def _table_for(b: TraceBuilder, proc: Proc, addr: int) -> int:
    i = addr >> 22
    if i not in proc.tables:
        pt = b.alloc_frame()
        b.hook("alloc_pt", pt)
        b.hook("set_pmd", b.ptr(proc.pd, i), (pt << 12) | PAGE_TABLE)
        proc.tables[i] = pt
    return proc.tables[i]


def switch_to(b: TraceBuilder, proc: Proc) -> None:
    """context_switch: lazy CPU mode around the CR3 load and the kernel stack switch."""
    b.hook("set_lazy_mode", 2)
    b.hook("write_cr3", proc.pd << 12)
    b.hook("load_esp0", 0xC0300020, 0xC0400000 + proc.mm)
    b.hook("load_tls", 0xC0400100 + proc.mm, 0)
    b.hook("set_lazy_mode", 0)
    b.current = proc


def fork_cycle(b: TraceBuilder, parent: Proc, faults: int = 3) -> None:
    """fork, COW faults in the child, exit, back to the parent, parent takes its pages back.

    Leaves the parent as it found it (same frames, same PTEs, same free list).
    """
    assert b.current is parent
    child = Proc(pd=b.alloc_frame(), mm=b._next_mm)
    b._next_mm += 0x100
    b.hook("alloc_pd_clone", child.pd, b.swapper, 768, 256)
    # copy_page_range: per table, the child's table first, then the entries in lazy MMU mode
    by_table: dict[int, list[int]] = {}
    for addr in sorted(parent.pages):
        by_table.setdefault(addr >> 22, []).append(addr)
    for i, addrs in sorted(by_table.items()):
        _table_for(b, child, addrs[0])
        b.hook("set_lazy_mode", 1)
        src_pt = parent.tables[i]
        for addr in addrs:
            pte = parent.pages[addr]
            if pte & RW:
                pte &= ~RW
                b.in_place("pte_update", parent.mm, addr, src_pt, (addr >> 12) & 1023, pte)
                parent.pages[addr] = pte
            child.pages[addr] = pte & ~A
            b.hook(
                "set_pte_at",
                child.mm,
                addr,
                b.ptr(child.tables[i], (addr >> 12) & 1023),
                child.pages[addr],
            )
        b.hook("set_lazy_mode", 0)
    b.hook("flush_tlb_user")  # flush_tlb_mm(parent)
    switch_to(b, child)
    b.hook("iret", 0x08048000, 0x73, 0x202)
    # copy-on-write faults in the child
    new_frames = []
    for addr in sorted(child.pages)[:faults]:
        pt, j = child.tables[addr >> 22], (addr >> 12) & 1023
        b.exception(14, 7, addr)
        b.hook("read_cr2", result=addr)
        b.hook("irq_enable")
        b.in_place("pte_update", child.mm, addr, pt, j, 0)  # ptep_clear_flush
        b.hook("flush_tlb_single", addr)
        frame = b.alloc_frame()
        new_frames.append(frame)
        child.pages[addr] = (frame << 12) | P | RW | US | A | D
        b.hook("set_pte_at", child.mm, addr, b.ptr(pt, j), child.pages[addr])
        b.hook("irq_disable")
        b.hook("iret", addr, 0x73, 0x202)
    # exit: a system call, zap in lazy MMU mode, free the tables, back to the parent
    b.cpl = 3
    b._emit("softint", None, (0x80,))
    b.cpl = 1
    b.vif = True
    b.hook("set_lazy_mode", 1)
    for addr in sorted(child.pages):
        pt, j = child.tables[addr >> 22], (addr >> 12) & 1023
        b.hook("set_pte_at", child.mm, addr, b.ptr(pt, j), 0)  # pte_clear (full mm)
    b.hook("set_lazy_mode", 0)
    for i, pt in sorted(child.tables.items()):
        b.hook("set_pmd", b.ptr(child.pd, i), 0)
        b.hook("release_pt", pt)
    b.hook("flush_tlb_user")
    switch_to(b, parent)
    for pt in sorted(child.tables.values(), reverse=True):
        b.free_frame(pt)
    b.hook("release_pd", child.pd)
    b.free_frame(child.pd)
    for f in reversed(new_frames):
        b.free_frame(f)
    b.hook("iret", 0x08048000, 0x73, 0x202)
    # the parent writes its pages again: each a write fault, made writable in place
    for addr in sorted(parent.pages):
        pte = parent.pages[addr]
        if pte & RW:
            continue
        pt, j = parent.tables[addr >> 22], (addr >> 12) & 1023
        b.exception(14, 7, addr)
        b.hook("read_cr2", result=addr)
        pte |= RW | D | A
        parent.pages[addr] = pte
        b.in_place("pte_update_defer", parent.mm, addr, pt, j, pte)  # ptep_set_access_flags
        b.hook("flush_tlb_single", addr)
        b.hook("iret", addr, 0x73, 0x202)


def irqsave_section(b: TraceBuilder, work: int = 3, raise_irq: bool = True) -> None:
    """spin_lock_irqsave / work / spin_unlock_irqrestore, an interrupt arriving inside."""
    flags = 0x202 if b.vif else 0x002
    b.hook("save_fl", result=flags | 0x44)
    b.hook("irq_disable")
    for w in range(work):
        b.hook("read_cr0", result=b.cr0)
        if raise_irq and w == work // 2:
            b.raise_irq(DEVICE_VECTOR, DEVICE_PIN)
    b.hook("restore_fl", flags | 0x44)  # the pending interrupt is delivered right after


def timer_tick(b: TraceBuilder) -> None:
    """The LAPIC timer fires while the guest runs with interrupts on."""
    b.raise_irq(TIMER_VECTOR, SOURCE_TIMER)


def kmap_churn(b: TraceBuilder, slots: int = 4) -> None:
    """Kernel mappings remapped: set_pte on a scratch table, cleared and flushed singly."""
    if b.scratch is None:
        b.scratch = b.alloc_frame()
        b.hook("alloc_pt", b.scratch)
        b.hook("set_pmd", b.ptr(b.swapper, 0x3F0), (b.scratch << 12) | KERNPG_TABLE)
    pt = b.scratch
    for s in range(slots):
        b.hook("set_pte", b.ptr(pt, s), ((0x100 + s) << 12) | PAGE_KERNEL | G)
    for s in range(slots):
        b.hook("set_pte", b.ptr(pt, s), 0)
        b.hook("flush_tlb_single", (0x3F0 << 22) | (s << 12))


def enter_kernel(b: TraceBuilder) -> None:
    """A system call from CPL 3 (int $0x80 through a trap gate: IF stays set)."""
    b.cpl = 3
    b._emit("softint", None, (0x80,))
    b.cpl = 1


def leave_kernel(b: TraceBuilder) -> None:
    """Back to CPL 3 with iret."""
    b.hook("iret", 0x08048000, 0x73, 0x202)


def reclaim(b: TraceBuilder, victim: Proc) -> None:
    """Page reclaim takes a page from a process that is not running, as try_to_unmap does:
    ptep_get_and_clear (told with pte_update), no flush (flush_tlb_page flushes only the
    loaded mm; the CR3 load back to ``victim`` will), then the swap entry with set_pte_at."""
    assert b.current is not victim
    addr = max(victim.pages)
    pt, j = victim.tables[addr >> 22], (addr >> 12) & 1023
    b.in_place("pte_update", victim.mm, addr, pt, j, 0)
    b.hook("set_pte_at", victim.mm, addr, b.ptr(pt, j), 0x5A00 << 1)  # not present
    del victim.pages[addr]


def workload(seed: int = 0, rounds: int = 4, mem_mib: int = 16) -> TraceBuilder:
    """A small kernel-like run: boot, two processes, forks with copy-on-write, irqsave
    sections with interrupts arriving, timer ticks, kernel remaps, a reclaim from a
    sleeping process, and checkpoints along the way."""
    b = TraceBuilder(seed, mem_mib)
    boot(b)
    a = spawn(b, pages=6)
    c = spawn(b, pages=4, base=0x08100000)
    switch_to(b, a)
    leave_kernel(b)
    for r in range(rounds):
        enter_kernel(b)
        fork_cycle(b, a, faults=2 + r % 2)
        enter_kernel(b)
        irqsave_section(b)
        timer_tick(b)
        kmap_churn(b)
        irqsave_section(b, raise_irq=r % 2 == 0)
        if r == rounds // 2:
            reclaim(b, c)
        switch_to(b, c)
        timer_tick(b)
        switch_to(b, a)
        b.checkpoint()
        leave_kernel(b)
    return b


#: The page-table and TLB hooks damaged-trace tests knock out (:func:`knock_out`).
MMU_HOOKS = (
    "set_pte",
    "set_pte_at",
    "set_pmd",
    "pte_update",
    "alloc_pt",
    "alloc_pd_clone",
    "release_pt",
    "release_pd",
    "flush_tlb_user",
    "flush_tlb_single",
    "set_lazy_mode",
)


def knock_out(b: TraceBuilder, rng: np.random.Generator, hooks: tuple[str, ...]) -> None:
    """Turn one to five of the builder's calls of ``hooks`` (chosen by ``rng``) into
    ``io_delay`` at the same seq, arguments and result cleared: a trace whose tables the
    guest and a backend see part ways in odd places."""
    ids = {BY_NAME[x].id for x in hooks}
    cand = [i for i, x in enumerate(b.cols["hook"]) if x in ids]
    for i in rng.choice(cand, size=int(rng.integers(1, 6)), replace=False).tolist():
        b.cols["hook"][i] = BY_NAME["io_delay"].id
        for col in ("arg0", "arg1", "arg2", "arg3", "result"):
            b.cols[col][i] = 0
        b.cols["has_result"][i] = False


def bench_builder(seed: int = 0) -> tuple[TraceBuilder, int]:
    """Boot and one process, then one state-neutral epoch; (builder, epoch start) for
    :func:`tile`.  The epoch: a fork with copy-on-write faults and exit, irqsave
    sections with device interrupts, a timer tick, kernel remaps."""
    b = TraceBuilder(seed)
    boot(b)
    a = spawn(b, pages=12)
    kmap_churn(b)
    switch_to(b, a)
    leave_kernel(b)
    start = b.n
    enter_kernel(b)
    fork_cycle(b, a, faults=4)
    enter_kernel(b)
    for _ in range(6):
        irqsave_section(b)
    timer_tick(b)
    kmap_churn(b)
    for _ in range(20):
        irqsave_section(b, work=2, raise_irq=False)
    leave_kernel(b)
    return b, start


def tile(b: TraceBuilder, start: int, copies: int) -> pa.Table:
    """Events of ``b`` with the stretch from ``start`` to the end repeated ``copies`` times.

    The stretch must leave the guest as it found it (as :func:`fork_cycle` does);
    seq, vtime and the raise times of interrupts are shifted for each copy.
    """
    c = {k: np.asarray(v) for k, v in b.cols.items()}
    n = len(c["vtime"])
    span = n - start
    dv = int(c["vtime"][-1] - c["vtime"][start - 1]) if start else int(c["vtime"][-1])
    reps = np.repeat(np.arange(copies, dtype=np.int64), span)
    out = {}
    for k, v in c.items():
        head, body = v[:start], v[start:]
        out[k] = np.concatenate([head, np.tile(body, copies)])
    out["vtime"] = out["vtime"].astype(np.int64)
    out["vtime"][start:] += reps * dv
    is_int = out["kind"][start:] == _KIND["interrupt"]
    raised = out["arg2"][start:].astype(np.int64) | (out["arg3"][start:].astype(np.int64) << 32)
    raised = np.where(is_int, raised + reps * dv, raised)
    out["arg2"][start:] = np.where(is_int, raised & 0xFFFFFFFF, out["arg2"][start:])
    out["arg3"][start:] = np.where(is_int, raised >> 32, out["arg3"][start:])
    return events_table(out)


def small_trace(path: Path, seed: int = 0, rounds: int = 4) -> Path:
    """Write :func:`workload` as a trace directory; return its path."""
    return workload(seed, rounds).write(path)


def large_trace(path: Path, events: int, seed: int = 0) -> Path:
    """Write a trace of about ``events`` events: :func:`bench_builder`'s epoch tiled."""
    b, start = bench_builder(seed)
    copies = max(1, (events - start) // max(b.n - start, 1))
    return write_trace(path, tile(b, start, copies), b.state_rows, seed, b.mem_mib, "synthetic")
