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

    [guest.cpi_kernel]
    cycles = 4.0
    estimate = "..."

Every primitive in :data:`PRIMITIVES` and every guest parameter in :data:`GUEST` must be
present, each with ``cycles`` (a non-negative integer for a primitive; any non-negative
number for a guest parameter, CPI being fractional) and exactly one of ``source``,
``measured`` or ``estimate``.  The guest parameters price what the interface does not
see: the guest's own instructions (cycles per retired instruction at CPL 0 and CPL 3)
and a TLB miss (a native 2-level i386 walk, and nested paging's two-dimensional walk).
Entries may also carry ``spread`` and ``repetitions`` (written by ``pvscope
calibrate``); any other key, and any top-level section but ``[table]``,
``[primitive.*]`` and ``[guest.*]``, is an error.

Costs are linear in the table, so :meth:`CostTable.masked` (the table with every number
not of the given provenance kinds set to 0) gives the share of a total that rests on,
say, estimates: ``total(t.masked({"estimate"})) / total(t)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pvscope.errors import PvscopeError, UsageError

PRESET_DIR = Path(__file__).parent / "costs"
#: No primitive or guest parameter costs more than this: it keeps every sum a replay
#: makes (events x cycles) well inside 64 bits.
MAX_CYCLES = 1_000_000_000
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


#: Guest-time parameters every table must carry, each with its own provenance.
GUEST: dict[str, str] = {
    "cpi_kernel": "cycles per retired guest instruction at CPL 0 (the guest kernel)",
    "cpi_user": "cycles per retired guest instruction at CPL 3 (guest user code)",
    "tlb_walk_native": "cycles per TLB miss: a native 2-level i386 page walk (2 references)",
    "tlb_walk_nested": "cycles per TLB miss: nested paging's two-dimensional walk, a 2-level "
    "guest on 4-level nested tables (up to (2+1)(4+1)-1 = 14 references)",
}

#: Keys an entry (primitive or guest parameter) may have.
ENTRY_KEYS = ("cycles", *PROVENANCE, "spread", "repetitions")
#: Top-level sections a table may have.
SECTIONS = ("table", "primitive", "guest")

#: Primitives by the mechanism they price, for display; every primitive is in one group.
GROUPS: dict[str, tuple[str, ...]] = {
    "native": tuple(p for p in PRIMITIVES if p == "call_ret" or p.startswith("native_")),
    "paravirtual": (
        "mem_op",
        "rom_call",
        "rom_vmm",
        "hypercall",
        "pv_fault",
        "pv_bounce",
        "queue_entry",
        "batch_entry",
        "validate_entry",
        "scan_table",
    ),
    "emulation": ("emulate_insn", "emulate_write", "emulate_mmio"),
    "hardware VMM": (
        "vm_exit",
        "hw_ptemod",
        "hw_pagefault",
        "hw_io",
        "hw_exception",
        "shadow_fill",
    ),
    "binary translation": tuple(p for p in PRIMITIVES if p.startswith("bt_")),
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
    """Primitive -> ``source: ...``, ``measured: ...`` or ``estimate: ...``."""
    guest: dict[str, float]
    """Guest parameter (:data:`GUEST`) -> cycles (per instruction for CPI, per TLB miss)."""
    guest_sources: dict[str, str]
    """Guest parameter -> ``source: ...``, ``measured: ...`` or ``estimate: ...``."""

    def __getitem__(self, primitive: str) -> int:
        return self.cycles[primitive]

    def provenance(self, name: str) -> str:
        """``"source"``, ``"measured"`` or ``"estimate"`` for a primitive or guest parameter."""
        text = self.sources.get(name) or self.guest_sources.get(name)
        if text is None:
            raise KeyError(f"{name!r} is neither a primitive nor a guest parameter")
        return text.partition(": ")[0]

    def counts(self, which: str = "primitive") -> dict[str, int]:
        """How many primitives (``which="primitive"``) or guest parameters
        (``"guest"``) rest on each provenance kind, every kind present."""
        if which not in ("primitive", "guest"):
            raise ValueError(f"which must be 'primitive' or 'guest', not {which!r}")
        names = self.sources if which == "primitive" else self.guest_sources
        out = dict.fromkeys(PROVENANCE, 0)
        for n in names:
            out[self.provenance(n)] += 1
        return out

    def masked(self, kinds: set[str] | frozenset[str]) -> CostTable:
        """This table with every primitive and guest parameter whose provenance is not in
        ``kinds`` set to 0 cycles.  Costs are linear in the table, so a total under
        ``masked({"estimate"})`` over the total under this table is the share of that total
        resting on estimates.  Sources are kept; name, origin and sha256 say it is masked."""
        bad = sorted(set(kinds) - set(PROVENANCE))
        if bad:
            raise ValueError(f"unknown provenance kind {bad[0]!r} (one of {', '.join(PROVENANCE)})")
        tag = "+".join(k for k in PROVENANCE if k in kinds) or "nothing"
        return CostTable(
            name=f"{self.name}.only-{tag}",
            cpu=self.cpu,
            origin=f"{self.origin} masked to {tag}",
            sha256=hashlib.sha256(f"{self.sha256} masked to {tag}".encode()).hexdigest(),
            cycles={p: c if self.provenance(p) in kinds else 0 for p, c in self.cycles.items()},
            sources=dict(self.sources),
            guest={g: v if self.provenance(g) in kinds else 0.0 for g, v in self.guest.items()},
            guest_sources=dict(self.guest_sources),
        )


def presets() -> list[str]:
    """Names of the shipped cost tables."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load(spec: str | Path) -> CostTable:
    """A preset by name, or a TOML file by path."""
    spec_s = str(spec)
    preset = PRESET_DIR / f"{spec_s}.toml"
    if "/" not in spec_s and not spec_s.endswith(".toml") and preset.is_file():
        return parse(preset.read_bytes(), f"preset:{spec_s}", where=preset.name)
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
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise CostTableError(
            f"{where}: unknown section [{unknown[0]}] (a table has {', '.join(SECTIONS)})"
        )
    prims = doc.get("primitive")
    if not isinstance(prims, dict):
        raise CostTableError(f"{where}: no [primitive.*] entries")
    cycles, sources = _entries(prims, PRIMITIVES, "primitive", where)
    guest_doc = doc.get("guest")
    if not isinstance(guest_doc, dict):
        raise CostTableError(
            f"{where}: missing [guest.*] section (guest parameters {', '.join(GUEST)})"
        )
    guest, guest_sources = _entries(guest_doc, GUEST, "guest parameter", where)
    return CostTable(
        name=meta["name"],
        cpu=str(meta.get("cpu", "")),
        origin=origin,
        sha256=hashlib.sha256(data).hexdigest(),
        cycles={k: int(v) for k, v in cycles.items()},
        sources=sources,
        guest={k: float(v) for k, v in guest.items()},
        guest_sources=guest_sources,
    )


def _entries(
    section: dict[str, object], names: dict[str, str], what: str, where: str
) -> tuple[dict[str, int | float], dict[str, str]]:
    """Validate one section's entries: every name present, nothing else, each with a
    non-negative ``cycles`` (an integer for primitives) and exactly one provenance."""
    unknown = sorted(set(section) - set(names))
    if unknown:
        raise CostTableError(f"{where}: unknown {what} {unknown[0]!r}")
    missing = [n for n in names if n not in section]
    if missing:
        raise CostTableError(f"{where}: missing {what} {missing[0]!r}")
    integral = what == "primitive"
    cycles: dict[str, int | float] = {}
    sources: dict[str, str] = {}
    for name in names:
        entry = section[name]
        if not isinstance(entry, dict):
            raise CostTableError(f"{where}: {what} {name!r} is not a table")
        extra = sorted(set(entry) - set(ENTRY_KEYS))
        if extra:
            raise CostTableError(
                f"{where}: {what} {name!r}: unknown key {extra[0]!r} "
                f"(allowed: {', '.join(ENTRY_KEYS)})"
            )
        c = entry.get("cycles")
        if integral and (isinstance(c, bool) or not isinstance(c, int)):
            raise CostTableError(f"{where}: {what} {name!r}: cycles must be an integer")
        if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c):
            raise CostTableError(f"{where}: {what} {name!r}: cycles must be a number")
        if c < 0:
            raise CostTableError(f"{where}: {what} {name!r}: negative cost {c}")
        if c > MAX_CYCLES:
            raise CostTableError(
                f"{where}: {what} {name!r}: {c:g} cycles is beyond any plausible cost "
                f"(at most {MAX_CYCLES:,}: a second of a 1 GHz CPU)"
            )
        given = [k for k in PROVENANCE if entry.get(k) is not None]
        if len(given) != 1:
            raise CostTableError(
                f"{where}: {what} {name!r} needs exactly one of source, measured or estimate"
            )
        text = entry[given[0]]
        if not isinstance(text, str) or not text.strip():
            raise CostTableError(f"{where}: {what} {name!r}: empty {given[0]}")
        cycles[name] = c
        sources[name] = f"{given[0]}: {text.strip()}"
    return cycles, sources


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
    for param in GUEST:
        kind, _, text = base.guest_sources[param].partition(": ")
        why = unmeasured.get(param, "pvscope calibrate does not measure guest parameters")
        lines += ["", f"[guest.{param}]", f"cycles = {_number(base.guest[param])}"]
        lines.append(f"{kind} = {json.dumps(f'{text} [kept from {base.name}: {why}]')}")
    return "\n".join(lines) + "\n"


def _number(v: float) -> str:
    """A number as TOML: an integer when it is one, else the shortest float."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))
