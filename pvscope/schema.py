"""The trace schema: the one contract between recorder, replayer and analysis.

Declared once, as data: each table is a list of columns with an Arrow type and
a one-line doc.  The recorder writes from it, the replayer validates against
it, the analysis builds its SQL views from it, and ``pvscope schema`` prints it.

Versioning follows rr's rule: ``SCHEMA_VERSION`` changes whenever the format
changes; ``MIN_READER_VERSION`` is the oldest reader that can still read what
this writer writes.  Both live in the manifest and in each Parquet file's
schema-level key-value metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pvscope.errors import TraceError

SCHEMA_VERSION = 2  # 2: vtime exact per event (was the quantum's start)
MIN_READER_VERSION = 2
#: Key of the Parquet schema-level metadata entry holding the versions.
META_KEY = b"pvscope"

NAME = pa.dictionary(pa.int8(), pa.string())
#: ``Column.display`` of addresses, vectors, frames and register values.
HEX = "hex"


@dataclass(frozen=True)
class Column:
    """One column of a trace table."""

    name: str
    type: pa.DataType
    doc: str
    nullable: bool = False
    display: str = ""
    """How terminal output shows it (``pvscope.display.KINDS``): ``hex`` for addresses,
    vectors, frames and register values, ``id`` for positions (no thousands separators),
    ``ratio``, ``share``; empty: by its type."""


@dataclass(frozen=True)
class Table:
    """One Parquet file of a trace (or, in :data:`RESULT_TABLES`, of a replay's results)."""

    name: str
    file: str
    doc: str
    columns: tuple[Column, ...]
    sort_key: str = "seq"

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema, with the version metadata attached."""
        fields = [pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns]
        return pa.schema(fields, metadata={META_KEY: version_metadata()})

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return [c.name for c in self.columns]


END_STATUSES_TEXT = (
    "complete",
    "budget",
    "guest-fault",
    "guest-check",
    "triple-fault",
    "interrupted",
    "halted-forever",
    "ring-overflow",
)

#: Event kinds of the ``events`` table and what their generic columns mean.
EVENT_KINDS: dict[str, str] = {
    "hook": "a paravirt_ops hook call: arg0..arg3 are its argument slots, result its result",
    "interrupt": "an external interrupt delivered through the IDT: arg0 vector, arg1 source "
    "(IOAPIC pin, 0x100 LAPIC timer, 0x101 LAPIC self-IPI), arg2 and arg3 the vtime it "
    "was raised (low and high 32 bits)",
    "irq_raise": "an interrupt became pending in the local APIC (IRR set): arg0 vector, "
    "arg1 source (IOAPIC pin, 0x100 LAPIC timer, 0x101 self-IPI, 0x102 LAPIC error), "
    "arg2 1 if level-triggered, arg3 1 if the vector was already pending (coalesced)",
    "softint": "a software interrupt (int n) delivered through the IDT: arg0 vector, "
    "site the EIP after the instruction; system calls are int $0x80",
    "exception": "an exception delivered through the IDT: arg0 vector, arg1 error code, "
    "arg2 CR2 (page faults), site the faulting EIP",
    "mmio_read": "a LAPIC/IOAPIC/device MMIO read: arg0 physical address, arg1 size, "
    "arg2 value read",
    "mmio_write": "a LAPIC/IOAPIC/device MMIO write: arg0 physical address, arg1 size, "
    "arg2 value written",
    "idle": "the CPU halted with nothing pending; arg0 (low) and arg1 (high) give the "
    "virtual time skipped to the next device deadline",
    "guest": "a report from the guest through the ROM's service entry: arg0 code "
    "(0 ok exit, 1 check failed, 2 panic, 3 console, 4 a workload phase begins with arg1 "
    "its phase id and arg2 its operation count), arg1..arg3 guest-defined",
}

EVENTS = Table(
    "events",
    "events.parquet",
    "one row per hook call, interrupt, exception, MMIO access and guest report, in order",
    (
        Column(
            "seq",
            pa.uint64(),
            "position in the single ordered event stream, from 0",
            display="id",
        ),
        Column(
            "vtime",
            pa.uint64(),
            "virtual time, exact: guest instructions retired before the instruction that "
            "caused the event (a hook's first ROM instruction, the faulting or accessing "
            "instruction, the instruction an interrupt is delivered before), plus idle time "
            "skipped while halted",
        ),
        Column("kind", NAME, "event kind: " + ", ".join(EVENT_KINDS)),
        Column("hook", NAME, "paravirt_ops member name for hook events", nullable=True),
        Column("arg0", pa.uint32(), "first argument slot (eax for hooks); see kind", display=HEX),
        Column("arg1", pa.uint32(), "second argument slot (edx for hooks); see kind", display=HEX),
        Column("arg2", pa.uint32(), "third argument slot (ecx for hooks); see kind", display=HEX),
        Column(
            "arg3", pa.uint32(), "fourth argument slot (first stack word for hooks)", display=HEX
        ),
        Column(
            "result",
            pa.uint64(),
            "hook result (edx:eax for 64-bit results); null for void hooks and other kinds",
            nullable=True,
            display=HEX,
        ),
        Column(
            "site",
            pa.uint32(),
            "call site (return address) for hooks, interrupted or faulting EIP otherwise",
            display=HEX,
        ),
        Column("cpl", pa.uint8(), "privilege level of the code that caused the event"),
        Column("vif", pa.bool_(), "the guest's interrupt flag (EFLAGS.IF) when it happened"),
        Column("cr3", pa.uint32(), "page-directory base (CR3) when it happened", display=HEX),
    ),
)

INPUTS = Table(
    "inputs",
    "inputs.parquet",
    "one row per nondeterministic input, everything a replay of the guest needs",
    (
        Column(
            "seq",
            pa.uint64(),
            "seq of the event at or after which the input took effect",
            display="id",
        ),
        Column("vtime", pa.uint64(), "virtual time at which it took effect"),
        Column("source", NAME, "what produced it: seed, device.delay, device.status"),
        Column("value", pa.uint64(), "the value"),
    ),
)

STATE = Table(
    "state",
    "state.parquet",
    "checkpoints of machine state, one row per register or digest, so a replay can check itself",
    (
        Column("seq", pa.uint64(), "the checkpoint was taken after this event", display="id"),
        Column("vtime", pa.uint64(), "virtual time of the checkpoint"),
        Column("component", NAME, "lapic, ioapic, mmu or cpu"),
        Column("key", NAME, "register name, or digest name for mmu"),
        Column("value", pa.uint64(), "register value or 64-bit digest", display=HEX),
    ),
)

SYMBOLS = Table(
    "symbols",
    "symbols.parquet",
    "the guest image's symbol table, so call sites can be named without the ELF",
    (
        Column("name", pa.string(), "symbol name"),
        Column("addr", pa.uint32(), "address (virtual, as linked)", display=HEX),
        Column("size", pa.uint32(), "size in bytes (0 if unknown)"),
        Column("type", NAME, "func or object"),
    ),
    sort_key="addr",
)

TLB = Table(
    "tlb",
    "tlb.parquet",
    "TLB refills the recorder measured: at each full TLB flush (a CR3 load, flush_tlb_user, "
    "flush_tlb_kernel) and at the end, the page-table entries the CPU marked Accessed since "
    "the previous sample -- the translations it walked -- which the recorder then clears",
    (
        Column(
            "seq",
            uint64 := pa.uint64(),
            "seq of the flushing hook call (the last event at the end of the run)",
            display="id",
        ),
        Column("vtime", uint64, "virtual time of the sample"),
        Column("user_pages", pa.uint32(), "user pages (PTE U set) walked since the last sample"),
        Column("kernel_pages", pa.uint32(), "non-global kernel pages walked since the last sample"),
        Column(
            "global_pages",
            pa.uint32(),
            "global kernel pages (PTE G set) walked since the last sample: a CPU with CR4.PGE "
            "keeps them across CR3 loads",
        ),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (EVENTS, INPUTS, STATE, SYMBOLS, TLB)}

# -- replay results -------------------------------------------------------------------
# What ``replayer.results`` writes under ``RESULTS/backend=LABEL/``, one Parquet file per
# table, and ``pvscope query`` serves as a view of the same name (``events.parquet`` as
# ``replay``).  Declared here so that ``pvscope schema`` documents every view; the tests
# hold the writer's files and the views to it.

U64 = pa.uint64()
#: Violation families: each has a ``FAMILY_violations`` column in ``summary``.
VIOLATION_FAMILIES = ("interrupt", "mmu", "device", "result", "privilege", "trace")


def _counts(doc: str, *names: str, typ: pa.DataType = U64) -> tuple[Column, ...]:
    return tuple(Column(n, typ, doc.format(n.replace("_", " "))) for n in names)


REPLAY = Table(
    "replay",
    "events.parquet",
    "per recorded event and run: what the backend did for it and what it cost",
    (
        Column(
            "seq", U64, "the event's seq in the trace (join events on trace, seq)", display="id"
        ),
        Column("cycles", U64, "cycles the backend spends on the event (the cost table's prices)"),
        Column("native_cycles", U64, "cycles native spends on the same event"),
        Column("mechanism", NAME, "how the backend handled it: vm_exit, hypercall, trap, ..."),
        *_counts("{} the event caused", "exits", "hypercalls", "traps", typ=pa.uint32()),
        Column("batch_flushes", pa.uint32(), "lazy-MMU batches the event flushed"),
        Column("batched", pa.uint32(), "1 when the event's update was queued in a batch"),
    ),
)

VIOLATIONS = Table(
    "violations",
    "violations.parquet",
    "one row per correctness violation a run found",
    (
        Column("seq", U64, "the event at which the check failed", display="id"),
        Column("check", pa.string(), "the check that failed"),
        Column("field", pa.string(), "what it compared"),
        Column("expected", pa.string(), "the recorded value"),
        Column("actual", pa.string(), "the value the backend model gave"),
        Column("detail", pa.string(), "one line: what went wrong"),
    ),
)

INTERRUPTS = Table(
    "interrupts",
    "interrupts.parquet",
    "per recorded interrupt and run: when it was raised, when native and the backend "
    "deliver it, the latency",
    (
        Column("seq", U64, "seq of the recorded delivery", display="id"),
        Column("vector", pa.uint16(), "the interrupt vector", display=HEX),
        Column(
            "source",
            pa.uint16(),
            "IOAPIC pin, or 256 (0x100) LAPIC timer, 257 self-IPI, 258 LAPIC error",
        ),
        Column("raised_seq", U64, "seq at which it became pending", display="id"),
        Column(
            "delivered_seq",
            U64,
            "seq at which the backend delivers it; null when it does not",
            nullable=True,
            display="id",
        ),
        Column("latency_events", pa.int64(), "events from raise to the backend's delivery", True),
        Column(
            "latency_vtime", pa.int64(), "virtual time from raise to the backend's delivery", True
        ),
        Column("native_latency_events", pa.int64(), "events from raise to native delivery"),
        Column("native_latency_vtime", pa.int64(), "virtual time from raise to native delivery"),
        Column("status", NAME, "ok, masked (held too long) or lost"),
    ),
)

GROUPS = Table(
    "groups",
    "groups.parquet",
    "per run and hook group (other events by kind): totals",
    (
        Column("group", pa.string(), "hook group, or event kind for other events"),
        Column("events", U64, "events in the group"),
        Column("cycles", U64, "the backend's cycles on them"),
        Column("native_cycles", U64, "native's cycles on them"),
        *_counts("{} they caused", "exits", "hypercalls", "traps", "batch_flushes"),
    ),
)

REASONS = Table(
    "reasons",
    "reasons.parquet",
    "per run and exit reason (mechanism and event, perf kvm stat style): totals",
    (
        Column("mechanism", pa.string(), "the mechanism the backend used for the events"),
        Column("name", pa.string(), "what the events were: the hook, else the event kind"),
        Column("events", U64, "events with this reason"),
        *_counts("{} they caused", "exits", "hypercalls", "traps"),
        Column("cycles", U64, "the backend's cycles on them"),
    ),
)

SUMMARY = Table(
    "summary",
    "summary.parquet",
    "one row per run: totals, the whole-run estimate, violations, interrupt delivery",
    (
        Column(
            "base", pa.string(), "the backend the run replays (the ablated one, for an ablation)"
        ),
        Column(
            "without", pa.string(), "the requirement an ablation takes away; null otherwise", True
        ),
        Column(
            "fallback", pa.string(), "an ablation's fallback: trap or none; null otherwise", True
        ),
        Column("events", U64, "events replayed"),
        Column("cost_table", pa.string(), "the cost table's name"),
        Column("cost_sha256", pa.string(), "the cost table's sha256"),
        Column("cycles", U64, "the events' cycles on the backend (the interface's)"),
        Column("native_cycles", U64, "native's cycles on the same events"),
        Column("interface_ratio", pa.float64(), "cycles over native_cycles", True, "ratio"),
        Column(
            "estimate_share",
            pa.float64(),
            "share of the interface cycles priced by estimates; null for ablations",
            True,
            "share",
        ),
        Column(
            "whole_run_slowdown",
            pa.float64(),
            "estimated whole-run slowdown over native on the same work",
            True,
            "ratio",
        ),
        Column(
            "whole_run_estimate_share",
            pa.float64(),
            "share of the whole-run cycles priced by estimates; null for ablations",
            True,
            "share",
        ),
        Column("whole_run_cycles", U64, "interface + guest + TLB cycles (an estimate)"),
        Column("native_whole_run_cycles", U64, "native's whole-run cycles on the same work"),
        Column("guest_cycles", U64, "the guest's own instructions at the table's CPI"),
        Column("tlb_cycles", U64, "the measured TLB refills at the table's walk cost"),
        Column("tlb_refills", U64, "TLB refills the recorder measured"),
        *_counts("{} in the run", "exits", "hypercalls", "traps", "batch_flushes", "batched"),
        Column("violations", U64, "correctness violations found"),
        *(
            Column(f"{f}_violations", U64, f"violations of the {f} family")
            for f in VIOLATION_FAMILIES
        ),
        Column("first_seq", U64, "seq of the first violation", True, "id"),
        Column("first_check", pa.string(), "the first violation's check", True),
        Column("first_detail", pa.string(), "the first violation's detail", True),
        *_counts(
            "{}",
            "interrupts_recorded",
            "interrupts_delivered",
            "interrupts_masked",
            "interrupts_lost",
        ),
        Column("latency_events_mean", pa.float64(), "mean delivery latency in events", True),
        Column("latency_events_max", U64, "longest delivery latency in events"),
        Column("latency_vtime_mean", pa.float64(), "mean delivery latency in virtual time", True),
        Column("latency_vtime_max", U64, "longest delivery latency in virtual time"),
    ),
)

COSTS = Table(
    "costs",
    "costs.parquet",
    "the cost table each run used: every number with its source",
    (
        Column("table", pa.string(), "the cost table's name"),
        Column("primitive", pa.string(), "the priced primitive"),
        Column("cycles", U64, "its price in cycles"),
        Column("source", pa.string(), "where the number comes from (source, measured, estimate)"),
    ),
)

#: The replay results tables, by the view that serves each.
RESULT_TABLES: dict[str, Table] = {
    t.name: t for t in (REPLAY, VIOLATIONS, INTERRUPTS, GROUPS, REASONS, SUMMARY, COSTS)
}

# -- the views pvscope query serves ---------------------------------------------------

TRACE = Column(
    "trace",
    pa.string(),
    "the trace's directory name (NAME for a trace=NAME directory); constant for one trace",
)
BACKEND = Column(
    "backend",
    pa.string(),
    "the run's label: the backend's name, or BACKEND-without-REQUIREMENT-FALLBACK for an "
    "ablation (its backend=LABEL directory)",
)

HOOKS_VIEW = Table(
    "hooks",
    "",
    "the hook catalogue (linux 2.6.21 paravirt_ops), one row per member",
    (
        Column("id", pa.int64(), "index in struct order: the ROM entry number", display="id"),
        Column("name", pa.string(), "the paravirt_ops member"),
        Column("group", pa.string(), "cpu, irq, mmu, apic, time or init"),
        Column("requirement", pa.string(), "the 2007 requirement it serves", True),
        Column("requirement_number", pa.int64(), "that requirement's number", True, "id"),
        Column(
            "args",
            pa.list_(pa.struct([("name", pa.string()), ("type", pa.string())])),
            "arguments (name, C type) in call order",
        ),
        Column("result", pa.string(), "C type of the result; null for void", True),
        Column("rom", pa.string(), "how the recording ROM implements it"),
        Column("doc", pa.string(), "what the hook does"),
        Column("jump", pa.bool_(), "reached by jmp, not call"),
        Column("pae_only", pa.bool_(), "present only with CONFIG_X86_PAE"),
        Column("observes", pa.string(), "what a void hook logs in result", True),
        Column("slots", pa.int64(), "32-bit argument slots its arguments take"),
    ),
)

TRACES_VIEW = Table(
    "traces",
    "manifest.json",
    "one row per trace, from its manifest",
    (
        Column("guest", pa.string(), "the guest's name"),
        Column("scale", pa.int64(), "workload scale"),
        Column("seed", pa.int64(), "seed of every nondeterministic input"),
        Column("instructions", pa.int64(), "guest instructions retired"),
        Column("vtime", pa.int64(), "virtual time at the end"),
        Column("events", pa.int64(), "events recorded"),
        Column("status", pa.string(), "how the run ended: " + ", ".join(END_STATUSES_TEXT)),
        Column("reason", pa.string(), "why, in words"),
    ),
)


@dataclass(frozen=True)
class View:
    """A view ``pvscope query`` serves: its columns as a query sees them."""

    name: str
    doc: str
    source: str
    """``trace`` (a trace table), ``catalogue`` (built in) or ``replay`` (replay results)."""
    columns: tuple[Column, ...]


def views() -> dict[str, View]:
    """Every view ``pvscope query`` can serve, with its columns in order: the trace tables
    and ``traces`` lead with ``trace``, the replay results with ``trace`` and ``backend``."""
    out = {t.name: View(t.name, t.doc, "trace", (TRACE, *t.columns)) for t in TABLES.values()}
    out["hooks"] = View("hooks", HOOKS_VIEW.doc, "catalogue", HOOKS_VIEW.columns)
    out["traces"] = View("traces", TRACES_VIEW.doc, "trace", (TRACE, *TRACES_VIEW.columns))
    for t in RESULT_TABLES.values():
        out[t.name] = View(t.name, t.doc, "replay", (TRACE, BACKEND, *t.columns))
    return out


def every_table() -> list[Table]:
    """Every declared table: the trace's, the replay results', the catalogue views'."""
    return [*TABLES.values(), *RESULT_TABLES.values(), HOOKS_VIEW, TRACES_VIEW]


#: Manifest fields and their meaning (the manifest is JSON, keys sorted).
MANIFEST_FIELDS: dict[str, str] = {
    "schema_version": "trace format version (see SCHEMA_VERSION)",
    "min_reader_version": "oldest reader version that can read this trace",
    "pvscope_version": "version of pvscope that wrote the trace",
    "abi": "the paravirt_ops ABI the ROM implements",
    "guest": "name, sha256 and entry point of the guest image",
    "machine": "memory size, quantum, clock and device configuration",
    "seed": "seed for every nondeterministic input",
    "scale": "workload scale passed to the guest",
    "budget": "instruction budget",
    "counts": "row counts of each table, events per kind, instructions retired",
    "end": "status (complete, budget, guest-fault, guest-check, triple-fault, interrupted, "
    "halted-forever, ring-overflow) and reason",
}

END_STATUSES = END_STATUSES_TEXT


def version_metadata() -> bytes:
    """The JSON stored under ``META_KEY`` in every Parquet file's schema metadata."""
    return json.dumps(
        {"schema_version": SCHEMA_VERSION, "min_reader_version": MIN_READER_VERSION},
        sort_keys=True,
    ).encode()


def check_versions(schema_version: Any, min_reader_version: Any, where: str) -> None:
    """Refuse a trace this reader cannot read, naming both versions."""
    if not isinstance(schema_version, int) or not isinstance(min_reader_version, int):
        raise TraceError(f"{where}: no pvscope schema version; not a pvscope trace")
    if min_reader_version > SCHEMA_VERSION:
        raise TraceError(
            f"{where}: trace schema version {schema_version} needs a reader of version "
            f">= {min_reader_version}; this pvscope reads version {SCHEMA_VERSION}"
        )
    if schema_version < MIN_READER_VERSION:
        raise TraceError(
            f"{where}: trace schema version {schema_version} is older than the oldest this "
            f"pvscope reads ({MIN_READER_VERSION})"
        )


def read_manifest(trace: Path) -> dict[str, Any]:
    """Read and version-check a trace's manifest."""
    path = Path(trace) / "manifest.json"
    if not Path(trace).is_dir():
        raise TraceError(f"{trace}: no such trace directory")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise TraceError(f"{trace}: not a trace (no manifest.json)") from None
    except json.JSONDecodeError as e:
        raise TraceError(f"{path}: corrupt manifest ({e.msg})") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: corrupt manifest (not UTF-8 text)") from None
    if not isinstance(manifest, dict):
        raise TraceError(f"{path}: corrupt manifest (not an object)")
    check_versions(manifest.get("schema_version"), manifest.get("min_reader_version"), str(path))
    check_files(Path(trace), manifest)
    return manifest


def read_table(trace: Path, name: str) -> pa.Table:
    """Read one table of a trace, checking its version metadata and columns."""
    pf = open_table(trace, name)
    return read_columns(pf, Path(trace) / TABLES[name].file)


def read_columns(pf: pq.ParquetFile, path: Path, columns: list[str] | None = None) -> pa.Table:
    """Columns of an opened table (all by default); a one-line :class:`TraceError` if its
    data are corrupt."""
    try:
        return pf.read(columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise TraceError(f"{path}: corrupt Parquet data ({_first_line(e)})") from None


def open_table(trace: Path, name: str) -> pq.ParquetFile:
    """Open one table of a trace, checking its version metadata and columns (to read a
    column at a time: :func:`read_columns`)."""
    table = TABLES[name]
    path = Path(trace) / table.file
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
    except FileNotFoundError:
        raise TraceError(f"{path}: missing") from None
    except (pa.ArrowException, OSError) as e:
        raise TraceError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    meta = pf.schema_arrow.metadata or {}
    if META_KEY not in meta:
        raise TraceError(f"{path}: no pvscope schema metadata; not a pvscope trace table")
    try:
        versions = json.loads(meta[META_KEY])
    except json.JSONDecodeError:
        raise TraceError(f"{path}: corrupt pvscope schema metadata") from None
    check_versions(versions.get("schema_version"), versions.get("min_reader_version"), str(path))
    missing = [c for c in table.names if c not in pf.schema_arrow.names]
    if missing:
        raise TraceError(f"{path}: missing columns {', '.join(missing)}")
    return pf


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def file_digests(directory: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of each table file of a trace directory (for its manifest)."""
    out: dict[str, dict[str, Any]] = {}
    for t in TABLES.values():
        p = Path(directory) / t.file
        if p.is_file():
            out[t.file] = {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
    return out


def sha256_of(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_files(trace: Path, manifest: dict[str, Any], full: bool = False) -> None:
    """Refuse a trace whose table files are not the ones its manifest names: missing,
    another size (truncated, replaced) or other bytes.  Every read checks sizes and
    hashes; a file's hash is computed once per version of the file (path, size,
    modification time, inode) and remembered in the user's cache, so that reading an
    unchanged trace again costs a ``stat``.  ``full`` ignores what is remembered
    (``pvscope verify``).  A manifest from before the check (no ``files``) is let
    through."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        return
    for name, want in sorted(files.items()):
        check_file(Path(trace) / name, want, full)


def check_file(p: Path, want: dict[str, Any], full: bool = False) -> None:
    """One file against its manifest entry (``bytes``, ``sha256``); see :func:`check_files`."""
    try:
        st = p.stat()
    except FileNotFoundError:
        raise TraceError(f"{p}: missing (the manifest names it)") from None
    if st.st_size != want.get("bytes"):
        raise TraceError(
            f"{p}: {st.st_size:,} bytes, the manifest says {want.get('bytes'):,}: "
            "truncated or replaced"
        )
    key = f"{p.absolute()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"
    if not full and _VERIFIED.get(key) == want.get("sha256"):
        return
    if sha256_of(p) != want.get("sha256"):
        raise TraceError(f"{p}: its sha256 is not the manifest's: corrupt or replaced")
    _VERIFIED.put(key, str(want.get("sha256")))


class _Verified:
    """File versions whose hash matched their manifest: in memory, and in
    ``$XDG_CACHE_HOME/pvscope/verified.json`` across processes (best effort: a cache that
    cannot be read or written only means hashing again)."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._seen: dict[str, str] | None = None

    def _path(self) -> Path:
        import os

        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "pvscope" / "verified.json"

    def _load(self) -> dict[str, str]:
        if self._seen is None:
            try:
                data = json.loads(self._path().read_text())
                self._seen = (
                    {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
                )
            except (OSError, ValueError):
                self._seen = {}
        return self._seen

    def get(self, key: str) -> str | None:
        return self._load().get(key)

    def put(self, key: str, sha: str) -> None:
        import os
        import tempfile

        seen = self._load()
        seen[key] = sha
        while len(seen) > self.LIMIT:
            seen.pop(next(iter(seen)))
        try:
            path = self._path()
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".verified.", dir=path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(seen, f)
            os.replace(tmp, path)
        except OSError:
            pass


_VERIFIED = _Verified()
