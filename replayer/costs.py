"""Cost tables: cycles per primitive operation, one TOML file per CPU generation.

A cost table prices the *primitives* the backend models are built from (a
native ``cli``, a ROM call, a hypercall round trip, a VM exit, a write-protect
fault on a shadowed page table, ...); a backend's per-hook cost is a sum of
primitives (see ``replayer.backends``).  Every number carries where it comes
from: a ``source`` (paper, vendor manual, kernel commit, measurement) or an
``estimate`` with its reasoning.  Users pass their own table with
``--costs FILE``; the presets ship in ``replayer/costs/``.

Format::

    [table]
    name = "p4"
    cpu = "..."

    [primitive.call_ret]
    cycles = 11
    source = "Adams & Agesen, ASPLOS 2006: call/ret pair, native"
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pvscope.errors import PvscopeError, UsageError

PRESET_DIR = Path(__file__).parent / "costs"
#: Where a number comes from: exactly one per primitive.
PROVENANCE = ("source", "measured", "estimate")
DEFAULT_PRESET = "p4"

#: Every primitive a cost table must price, with what it is.
PRIMITIVES: dict[str, str] = {
    "call_ret": "an indirect call through paravirt_ops and its return",
    "native_irq_op": "cli, sti, pushf or popf executed natively",
    "native_iret": "iret executed natively",
    "native_cr_read": "mov from a control register",
    "native_cr_write": "mov to CR0/CR2/CR4, or clts",
    "native_cr3_load": "mov to CR3, with the TLB flush it implies",
    "native_invlpg": "invlpg of one address",
    "native_privileged": "a serialising privileged instruction (lgdt, lidt, ltr, lldt, mov dr, "
    "rdmsr, wrmsr, rdpmc)",
    "native_cpuid": "cpuid",
    "native_wbinvd": "wbinvd",
    "native_rdtsc": "rdtsc",
    "native_store": "a plain store to memory (a PTE, a descriptor, a TSS field)",
    "native_mmio": "one uncached access to the local APIC or IOAPIC",
    "native_io": "one port I/O instruction to a chipset device (out $0x80, CMOS)",
    "native_exception": "an exception delivered through the IDT and returned from with iret",
    "native_pagefault": "a true page fault: delivery, handler entry, iret",
    "native_interrupt": "an external interrupt delivered through the IDT and returned from",
    "native_halt": "hlt (idle time itself is not charged)",
    "mem_op": "a load or store to a page shared with the hypervisor (a mask byte, a flag)",
    "rom_call": "a VMI ROM call that completes inside the ROM",
    "rom_vmm": "a VMI ROM call that enters the VMM and returns",
    "hypercall": "a synchronous paravirtual hypercall round trip (trap to ring 0 and back)",
    "pv_fault": "a fault taken by a paravirtual hypervisor and returned from",
    "pv_bounce": "a paravirtual hypervisor reflecting an interrupt or exception to the guest",
    "emulate_insn": "a hypervisor decoding and emulating one privileged instruction",
    "emulate_write": "a hypervisor decoding and applying one faulting page-table write",
    "emulate_mmio": "a hypervisor decoding one MMIO access and running its device model",
    "validate_entry": "a hypervisor validating one page-table entry (Xen type/reference checks)",
    "queue_entry": "appending one entry to a multicall buffer, async ring or ROM queue",
    "batch_entry": "the hypervisor's work for one entry of a flushed batch",
    "scan_table": "scanning and validating one 1024-entry page table or directory",
    "vm_exit": "a VM exit, the VMM's handling of a simple event, and the VM entry",
    "hw_ptemod": "a write to a write-protected, shadowed page table under a hardware VMM",
    "hw_pagefault": "a guest page fault under a hardware VMM with shadow paging",
    "hw_io": "a port I/O instruction under a hardware VMM",
    "hw_exception": "a guest exception under a hardware VMM that does not exit",
    "shadow_fill": "a hidden page fault that builds the shadow of one guest page table",
    "bt_translated": "a privileged instruction translated in place by binary translation",
    "bt_call_overhead": "extra cost of a call/ret pair in binary-translated code",
    "bt_callout": "translated code calling out to the VMM (no world switch)",
    "bt_ptemod": "a write to a traced page table under binary translation",
    "bt_pagefault": "a guest page fault under binary translation",
    "bt_exception": "a guest exception or interrupt delivered under binary translation",
    "bt_syscall_overhead": "extra cost of a system call (int $0x80) under binary translation",
}


class CostTableError(PvscopeError):
    """A cost table that cannot be used (bad TOML, missing primitive, negative cost, ...)."""


@dataclass(frozen=True)
class CostTable:
    """A validated cost table."""

    name: str
    """The table's own name (``[table] name``)."""
    cpu: str
    """The CPU generation it describes."""
    origin: str
    """``preset:NAME`` or the file name it was read from."""
    sha256: str
    """sha256 of the TOML bytes: results name the exact table they used."""
    cycles: dict[str, int]
    """Primitive -> cycles."""
    sources: dict[str, str]
    """Primitive -> ``source: ...`` or ``estimate: ...``."""

    def __getitem__(self, primitive: str) -> int:
        return self.cycles[primitive]


def presets() -> list[str]:
    """Names of the shipped cost tables."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load(spec: str | Path) -> CostTable:
    """A preset by name, or a TOML file by path."""
    spec_s = str(spec)
    preset = PRESET_DIR / f"{spec_s}.toml"
    if "/" not in spec_s and not spec_s.endswith(".toml") and preset.is_file():
        return parse(preset.read_bytes(), f"preset:{spec_s}", where=spec_s)
    path = Path(spec)
    if not path.is_file():
        raise UsageError(
            f"unknown cost table {spec_s!r}: not a preset ({', '.join(presets())}) and no such file"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CostTableError(f"{path}: cannot read cost table ({e.strerror})") from None
    return parse(data, path.name, where=str(path))


def parse(data: bytes, origin: str, where: str = "cost table") -> CostTable:
    """Validate TOML bytes as a cost table; one-line :class:`CostTableError` otherwise."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CostTableError(f"{where}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise CostTableError(f"{where}: bad TOML ({e})") from None
    meta = doc.get("table")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise CostTableError(f"{where}: missing [table] name")
    prims = doc.get("primitive")
    if not isinstance(prims, dict):
        raise CostTableError(f"{where}: no [primitive.*] entries")
    unknown = sorted(set(prims) - set(PRIMITIVES))
    if unknown:
        raise CostTableError(f"{where}: unknown primitive {unknown[0]!r}")
    missing = [p for p in PRIMITIVES if p not in prims]
    if missing:
        raise CostTableError(f"{where}: missing primitive {missing[0]!r}")
    cycles: dict[str, int] = {}
    sources: dict[str, str] = {}
    for name in PRIMITIVES:
        entry = prims[name]
        if not isinstance(entry, dict):
            raise CostTableError(f"{where}: primitive {name!r} is not a table")
        c = entry.get("cycles")
        if isinstance(c, bool) or not isinstance(c, int):
            raise CostTableError(f"{where}: primitive {name!r}: cycles must be an integer")
        if c < 0:
            raise CostTableError(f"{where}: primitive {name!r}: negative cost {c}")
        given = [k for k in PROVENANCE if entry.get(k) is not None]
        if len(given) != 1:
            raise CostTableError(
                f"{where}: primitive {name!r} needs exactly one of source, measured or estimate"
            )
        text = entry[given[0]]
        if not isinstance(text, str) or not text.strip():
            raise CostTableError(f"{where}: primitive {name!r}: empty {given[0]}")
        cycles[name] = c
        sources[name] = f"{given[0]}: {text.strip()}"
    return CostTable(
        name=meta["name"],
        cpu=str(meta.get("cpu", "")),
        origin=origin,
        sha256=hashlib.sha256(data).hexdigest(),
        cycles=cycles,
        sources=sources,
    )


@dataclass
class Measurement:
    """A primitive measured on this host, for :func:`render_measured`."""

    cycles: int
    how: str
    """What was timed, how, and where (host CPU, kernel, nesting)."""
    spread: tuple[float, float]
    """10th and 90th percentile over the repetitions."""
    repetitions: int


def render_measured(
    base: CostTable,
    measured: dict[str, Measurement],
    name: str,
    cpu: str,
    header: list[str],
    unmeasured: dict[str, str],
) -> str:
    """A cost table in the project's TOML format: the ``measured`` primitives with how
    and their spread, every other primitive kept from ``base`` with its source or
    estimate and, from ``unmeasured``, why it was not measured here."""
    lines = [f"# {h}" if h else "#" for h in header]
    lines += ["", "[table]", f"name = {json.dumps(name)}", f"cpu = {json.dumps(cpu)}"]
    for prim in PRIMITIVES:
        lines += ["", f"[primitive.{prim}]"]
        m = measured.get(prim)
        if m is not None:
            lines.append(f"cycles = {m.cycles}")
            lines.append(f"measured = {json.dumps(m.how)}")
            lines.append(f"spread = [{m.spread[0]:.1f}, {m.spread[1]:.1f}]")
            lines.append(f"repetitions = {m.repetitions}")
            continue
        kind, _, text = base.sources[prim].partition(": ")
        why = unmeasured.get(prim, "not among the primitives pvscope calibrate measures")
        lines.append(f"cycles = {base.cycles[prim]}")
        lines.append(f"{kind} = {json.dumps(f'{text} [kept from {base.name}: {why}]')}")
    return "\n".join(lines) + "\n"
