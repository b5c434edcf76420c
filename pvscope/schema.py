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


@dataclass(frozen=True)
class Column:
    """One column of a trace table."""

    name: str
    type: pa.DataType
    doc: str
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    """One Parquet file of a trace."""

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
        Column("seq", pa.uint64(), "position in the single ordered event stream, from 0"),
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
        Column("arg0", pa.uint32(), "first argument slot (eax for hooks); see kind"),
        Column("arg1", pa.uint32(), "second argument slot (edx for hooks); see kind"),
        Column("arg2", pa.uint32(), "third argument slot (ecx for hooks); see kind"),
        Column("arg3", pa.uint32(), "fourth argument slot (first stack word for hooks)"),
        Column(
            "result",
            pa.uint64(),
            "hook result (edx:eax for 64-bit results); null for void hooks and other kinds",
            nullable=True,
        ),
        Column(
            "site",
            pa.uint32(),
            "call site (return address) for hooks, interrupted or faulting EIP otherwise",
        ),
        Column("cpl", pa.uint8(), "privilege level of the code that caused the event"),
        Column("vif", pa.bool_(), "the guest's interrupt flag (EFLAGS.IF) when it happened"),
        Column("cr3", pa.uint32(), "page-directory base (CR3) when it happened"),
    ),
)

INPUTS = Table(
    "inputs",
    "inputs.parquet",
    "one row per nondeterministic input, everything a replay of the guest needs",
    (
        Column("seq", pa.uint64(), "seq of the event at or after which the input took effect"),
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
        Column("seq", pa.uint64(), "the checkpoint was taken after this event"),
        Column("vtime", pa.uint64(), "virtual time of the checkpoint"),
        Column("component", NAME, "lapic, ioapic, mmu or cpu"),
        Column("key", NAME, "register name, or digest name for mmu"),
        Column("value", pa.uint64(), "register value or 64-bit digest"),
    ),
)

SYMBOLS = Table(
    "symbols",
    "symbols.parquet",
    "the guest image's symbol table, so call sites can be named without the ELF",
    (
        Column("name", pa.string(), "symbol name"),
        Column("addr", pa.uint32(), "address (virtual, as linked)"),
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

END_STATUSES = (
    "complete",
    "budget",
    "guest-fault",
    "guest-check",
    "triple-fault",
    "interrupted",
    "halted-forever",
    "ring-overflow",
)


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
    try:
        return pf.read()
    except (pa.ArrowException, OSError) as e:
        raise TraceError(f"{path}: corrupt Parquet data ({_first_line(e)})") from None


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
