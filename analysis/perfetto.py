"""A trace, and its replays on some backends, as a Perfetto trace: ``pvscope export --perfetto``.

The file is Perfetto's protobuf trace format (``TracePacket``\\ s of track events), built
with the ``perfetto`` package's streaming trace builder over its bundled protos, and
opens in the Perfetto UI (https://ui.perfetto.dev).  What it shows:

* one track per privilege level the guest ran at (``CPL 1 (kernel)``, ``CPL 3 (user)``,
  under a ``guest`` group): every event of the exported window as an instant named by
  the hook (``set_pte``), the interrupt, exception or software interrupt (``interrupt
  0x20``, ``#PF``, ``int 0x80``), or the kind, with the event's columns as arguments;
  ``idle`` is a slice as long as the time it skipped;
* one track per replayed backend (under a ``replay`` group): each event that costs
  cycles on that backend as a slice as long as its cycles, with its mechanism, cycles,
  exits, hypercalls and traps as arguments.

Time: the guest tracks use the trace's own virtual clock -- ``vtime`` (guest instructions
retired, plus idle time skipped) at the machine's ``cpu_khz`` (the manifest's; one
instruction per nanosecond at the default 1 GHz).  A backend's events cannot be slices at
their vtime: a VM exit costs more cycles than the guest retires instructions between two
hooks, and slices on one track must not overlap.  So each backend track has its own clock,
the guest's plus the interface: an event starts at its vtime plus the cycles of the window's
earlier events on that backend (one cycle per tick of the same clock), and lasts its cycles.
The backend tracks start in step with the guest's and drift right by the interface cycles
they accumulate; where a backend's track ends, against the guest's, is its interface
overhead over the window; each slice's ``seq`` and ``vtime`` arguments name the guest event.

A 10 M-event trace would make a file the UI cannot load, so the export takes a window of
seqs (``first`` .. ``last``) and at most ``limit`` events of it (:data:`DEFAULT_LIMIT`).
The replays run over the whole trace (a backend's state depends on everything before the
window) and only the window is written.  The file appears atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from pvscope.errors import UsageError
from pvscope.hooks import ARG_SLOTS, HOOKS

if TYPE_CHECKING:
    from replayer.backends import Run
    from replayer.costs import CostTable
    from replayer.engine.result import RunResult
    from replayer.trace import Trace

#: Events exported when no ``limit`` is given: about 25 MB for the guest's tracks and
#: 34 MB more per backend (94 MB with two, for a ``mixed`` trace), which the Perfetto UI
#: loads in seconds.
DEFAULT_LIMIT = 500_000

#: Names of the exception vectors (the rest are ``exception N``).
EXCEPTIONS = {
    0: "#DE",
    1: "#DB",
    2: "NMI",
    3: "#BP",
    4: "#OF",
    5: "#BR",
    6: "#UD",
    7: "#NM",
    8: "#DF",
    10: "#TS",
    11: "#NP",
    12: "#SS",
    13: "#GP",
    14: "#PF",
    16: "#MF",
    17: "#AC",
    18: "#MC",
    19: "#XM",
}
#: What runs at each privilege level on the recording machine (kernel at CPL 1).
CPL_ROLE = {0: "ring 0", 1: "kernel", 2: "ring 2", 3: "user"}

#: Packets per buffered write (and per progress call).
_CHUNK = 65536
#: Track uuids: the two groups, CPL tracks, backend tracks.
_GUEST_GROUP, _REPLAY_GROUP, _CPL_BASE, _BACKEND_BASE = 1, 2, 16, 64


@dataclass
class Export:
    """What one export wrote."""

    path: Path
    first: int
    """seq of the first event written (the window)."""
    last: int
    """seq of the last event written; ``first - 1`` for an empty window."""
    events: int
    """Guest events written (``last - first + 1``)."""
    in_range: int
    """Events the ``first``..``last`` range asked for before ``limit`` cut it."""
    tracks: dict[str, int] = field(default_factory=dict)
    """Track name -> events on it (guest events on the CPL tracks, costed events on the
    backend tracks)."""
    packets: int = 0
    bytes: int = 0
    ns_per_tick: float = 1.0
    """Nanoseconds of the timeline per vtime unit (and per backend cycle)."""

    @property
    def cut(self) -> bool:
        """``limit`` left events of the asked range out."""
        return self.events < self.in_range

    def summary(self) -> dict[str, Any]:
        """The JSON summary ``pvscope export --json`` prints."""
        return {
            "file": str(self.path),
            "format": "perfetto",
            "first_seq": self.first,
            "last_seq": self.last,
            "events": self.events,
            "events_in_range": self.in_range,
            "cut": self.cut,
            "tracks": self.tracks,
            "packets": self.packets,
            "bytes": self.bytes,
            "ns_per_tick": self.ns_per_tick,
        }


def window(n: int, first: int | None, last: int | None, limit: int | None) -> tuple[int, int, int]:
    """``(first, stop, in_range)``: seqs ``first <= seq < stop`` to write, of ``in_range``
    the range asked for; ``limit`` (0 or None: no cap) caps ``stop - first``."""
    lo = 0 if first is None else first
    hi = n - 1 if last is None else min(last, n - 1)
    if lo < 0 or (last is not None and last < 0):
        raise UsageError("--from and --to are seqs: 0 or more")
    if first is not None and n and lo >= n:
        raise UsageError(f"--from {lo}: the trace has {n:,} events (seq 0..{n - 1})")
    if last is not None and last < lo:
        raise UsageError(f"--to {last} is before --from {lo}")
    if limit is not None and limit < 0:
        raise UsageError(f"--limit must be 0 (no cap) or more, not {limit}")
    in_range = max(hi - lo + 1, 0)
    count = in_range if not limit else min(in_range, limit)
    return lo, lo + count, in_range


def export(
    trace_path: Path,
    out: Path,
    runs: list[Run] | None = None,
    table: CostTable | None = None,
    first: int | None = None,
    last: int | None = None,
    limit: int | None = DEFAULT_LIMIT,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Export:
    """Write ``trace_path`` (seqs ``first``..``last``, at most ``limit`` events) with the
    replays of ``runs`` (``replayer.backends.Run``) under cost table ``table`` to ``out``.

    ``progress(what)`` is told each replay and the write as they start.  An existing
    ``out`` is refused unless ``force``.
    """
    from analysis.output import write_atomically
    from replayer import costs, engine
    from replayer.trace import load

    out = Path(out)
    if out.is_dir():
        raise UsageError(f"{out}: is a directory; give a file name")
    if out.exists() and not force:
        raise UsageError(f"{out} exists (use --force to replace it)")
    if not out.absolute().parent.is_dir():
        raise UsageError(f"{out.absolute().parent}: no such directory")
    tr = load(Path(trace_path))
    lo, hi, in_range = window(tr.n, first, last, limit)
    runs = runs or []
    priced = table if table is not None else costs.load(costs.DEFAULT_PRESET)
    replays = []
    for run in runs:
        if progress is not None:
            progress(f"replaying {run.label}")
        r = engine.replay(tr, run, priced)
        replays.append((run.label, r.cycles[lo:hi], r))
    khz = (tr.manifest.get("machine") or {}).get("cpu_khz") or 1_000_000
    result = Export(
        path=out, first=lo, last=hi - 1, events=hi - lo, in_range=in_range, ns_per_tick=1e6 / khz
    )
    if progress is not None:
        progress(f"writing {out}")

    def write(f: IO[bytes]) -> None:
        sink = _Sink(f)
        _packets(tr, lo, hi, replays, result, sink.add)
        sink.flush()
        result.packets = sink.packets

    write_atomically(out, write)
    result.bytes = out.stat().st_size
    return result


class _Sink:
    """Packets into a file, :data:`_CHUNK` at a time: each chunk is one ``Trace`` of the
    trace builder, and ``Trace`` messages written one after another read as one (the
    streaming builder writes one per packet; a chunk saves copying every packet)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.packets = 0
        self.builder: Any = None
        self.size = 0

    def add(self) -> Any:
        """A new packet in the file, to fill before the next ``add``."""
        if self.builder is None or self.size == _CHUNK:
            self.flush()
            from perfetto.trace_builder.proto_builder import TraceProtoBuilder

            self.builder = TraceProtoBuilder()
        self.size += 1
        self.packets += 1
        return self.builder.add_packet()

    def flush(self) -> None:
        """Write the packets added since the last flush."""
        if self.builder is not None and self.size:
            self.f.write(self.builder.serialize())
        self.builder, self.size = None, 0


class _Interner:
    """Interned strings of one kind (event names, categories, argument names): iid by name."""

    def __init__(self) -> None:
        self.iids: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        iid = self.iids.get(name)
        if iid is None:
            iid = self.iids[name] = len(self.iids) + 1
        return iid


def _event_names(tr: Trace, lo: int, hi: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Per event of the window, an index into the names (and their kinds) it shows as."""
    from replayer.trace import KINDS

    kind = tr.kind[lo:hi].astype(np.int64)
    vector = tr.arg0[lo:hi].astype(np.int64) & 0xFF
    hook = tr.hook[lo:hi].astype(np.int64)
    vectored = {KINDS.index(k) for k in ("interrupt", "exception", "softint", "irq_raise")}
    sub = np.where(kind == KINDS.index("hook"), hook, 0)
    sub = np.where(np.isin(kind, list(vectored)), vector, sub)
    code = (kind + 2) << 16 | (sub & 0xFFFF)
    uniq, inverse = np.unique(code, return_inverse=True)
    names, kinds = [], []
    for c in uniq.tolist():
        k, s = (c >> 16) - 2, c & 0xFFFF
        kname = KINDS[k] if 0 <= k < len(KINDS) else "unknown"
        if kname == "hook":
            name = HOOKS[s].name
        elif kname == "exception":
            name = EXCEPTIONS.get(s, f"exception {s}")
        elif kname == "softint":
            name = f"int {s:#x}"
        elif kname in ("interrupt", "irq_raise"):
            name = f"{kname} {s:#x}"
        else:
            name = kname
        names.append(name)
        kinds.append(kname)
    return inverse.reshape(-1), names, kinds


#: Argument columns each kind shows: (argument name, column, how): ``u`` unsigned,
#: ``p`` an address (shown in hex), ``64`` two slots as one 64-bit value.
_KIND_ARGS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "interrupt": (("vector", "arg0", "u"), ("source", "arg1", "u")),
    "irq_raise": (
        ("vector", "arg0", "u"),
        ("source", "arg1", "u"),
        ("level", "arg2", "u"),
        ("coalesced", "arg3", "u"),
    ),
    "softint": (("vector", "arg0", "u"),),
    "exception": (("vector", "arg0", "u"), ("error_code", "arg1", "u"), ("cr2", "arg2", "p")),
    "mmio_read": (("addr", "arg0", "p"), ("size", "arg1", "u"), ("value", "arg2", "p")),
    "mmio_write": (("addr", "arg0", "p"), ("size", "arg1", "u"), ("value", "arg2", "p")),
    "idle": (("skipped", "arg0", "64"),),
    "guest": (
        ("code", "arg0", "u"),
        ("arg1", "arg1", "u"),
        ("arg2", "arg2", "u"),
        ("arg3", "arg3", "u"),
    ),
}
_SLOTS = ("arg0", "arg1", "arg2", "arg3")


def _hook_args(hook_name: str) -> tuple[tuple[str, str, str], ...]:
    """A hook's arguments over the four slots the trace keeps (regparm(3) order)."""
    from pvscope.hooks import BY_NAME

    out: list[tuple[str, str, str]] = []
    slot = 0
    for name, ctype in BY_NAME[hook_name].args:
        width = ARG_SLOTS[ctype]
        if slot + width > len(_SLOTS):
            break
        how = "64" if width == 2 else ("p" if ctype == "ptr" else "u")
        out.append((name, _SLOTS[slot], how))
        slot += width
    return tuple(out)


def _column(trace: Path, name: str, lo: int, hi: int) -> np.ndarray:
    """One events column the decoded trace does not keep, for seqs ``lo`` to ``hi``."""
    import pyarrow.parquet as pq

    from pvscope import schema

    col = pq.read_table(Path(trace) / schema.EVENTS.file, columns=[name]).column(name)
    return np.asarray(col.slice(lo, hi - lo).fill_null(0).to_numpy())


def _packets(
    tr: Trace,
    lo: int,
    hi: int,
    replays: list[tuple[str, np.ndarray, RunResult]],
    result: Export,
    new: Callable[[], Any],
) -> None:
    """Fill ``new()`` packets with the whole file, in timestamp order: interned names and
    track descriptors first, then the guest's and the backends' events merged by time."""
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    from replayer.backends import MECHANISMS

    SLICE_BEGIN, SLICE_END, INSTANT = (
        pb.TrackEvent.TYPE_SLICE_BEGIN,
        pb.TrackEvent.TYPE_SLICE_END,
        pb.TrackEvent.TYPE_INSTANT,
    )
    needs_state = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
    name_of, names, kinds = _event_names(tr, lo, hi)
    cats, ann = _Interner(), _Interner()
    cat_iid = [cats(k) for k in kinds]
    mech_cat = [cats(m) for m in MECHANISMS]
    specs: list[list[tuple[int, int, str]]] = []  # per name: (annotation iid, slot, how)
    for name, kind in zip(names, kinds, strict=True):
        args = _hook_args(name) if kind == "hook" else _KIND_ARGS.get(kind, ())
        specs.append([(ann(a), _SLOTS.index(col), how) for a, col, how in args])
    a_seq, a_site, a_result, a_vtime = ann("seq"), ann("site"), ann("result"), ann("vtime")
    a_cycles, a_mech = ann("cycles"), ann("mechanism")
    a_counts = [ann(k) for k in _COUNTS]

    first = new()
    first.trusted_packet_sequence_id = 1
    first.sequence_flags = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
    interned = first.interned_data
    for i, name in enumerate(names):
        interned.event_names.add(iid=i + 1, name=name)
    for name, iid in cats.iids.items():
        interned.event_categories.add(iid=iid, name=name)
    for name, iid in ann.iids.items():
        interned.debug_annotation_names.add(iid=iid, name=name)
    for i, m in enumerate(MECHANISMS):
        interned.debug_annotation_string_values.add(iid=i + 1, str=m.encode())

    def track(uuid: int, name: str, parent: int | None = None, rank: int = 0) -> None:
        d = new().track_descriptor
        d.uuid = uuid
        d.name = name
        if parent is None:
            d.child_ordering = pb.TrackDescriptor.EXPLICIT
        else:
            d.parent_uuid = parent
            d.sibling_order_rank = rank

    cpl = tr.cpl[lo:hi]
    guest = (tr.manifest.get("guest") or {}).get("name")
    track(_GUEST_GROUP, f"guest: {guest} ({tr.name})" if guest else f"guest: {tr.name}")
    for c in np.unique(cpl).tolist():
        name = f"CPL {c} ({CPL_ROLE.get(c, '?')})"
        result.tracks[name] = int(np.count_nonzero(cpl == c))
        track(_CPL_BASE + c, name, _GUEST_GROUP, c)
    if replays:
        track(_REPLAY_GROUP, f"replay: {replays[0][2].costs.name} cycles")
    for b, (label, cycles, _r) in enumerate(replays):
        result.tracks[label] = int(np.count_nonzero(cycles > 0))
        track(_BACKEND_BASE + b, label, _REPLAY_GROUP, b)

    ts, src, idx = _timeline(tr, lo, hi, [c for _l, c, _r in replays], kinds, name_of)
    ts = np.rint(ts * result.ns_per_tick).astype(np.int64)
    is_idle = [k == "idle" for k in kinds]
    slots = [getattr(tr, c)[lo:hi] for c in _SLOTS]
    site = _column(tr.path, "site", lo, hi)
    columns = [name_of, cpl, tr.vtime[lo:hi], site, tr.result[lo:hi], tr.has_result[lo:hi]]
    columns += slots
    per_run = [
        [c, r.mechanism[lo:hi], *(getattr(r, k)[lo:hi] for k in _COUNTS)] for _l, c, r in replays
    ]
    for start in range(0, len(ts), _CHUNK):
        part = slice(start, start + _CHUNK)
        e = idx[part]
        at = np.where(e < 0, -1 - e, e)
        nm_, cpl_, vt_, site_, res_, has_, *args_ = (c[at].tolist() for c in columns)
        runs_ = [[c[at].tolist() for c in cols] for cols in per_run]
        for j, (t, s, i) in enumerate(
            zip(ts[part].tolist(), src[part].tolist(), e.tolist(), strict=True)
        ):
            p = new()
            p.timestamp = t
            p.trusted_packet_sequence_id = 1
            p.sequence_flags = needs_state
            ev = p.track_event
            if s == 0:  # the guest
                ev.track_uuid = _CPL_BASE + cpl_[j]
                if i < 0:
                    ev.type = SLICE_END
                    continue
                nm = nm_[j]
                ev.type = SLICE_BEGIN if is_idle[nm] else INSTANT
                ev.name_iid = nm + 1
                ev.category_iids.append(cat_iid[nm])
                das = ev.debug_annotations
                das.add(name_iid=a_seq, uint_value=lo + i)
                das.add(name_iid=a_site, pointer_value=site_[j])
                for aid, slot, how in specs[nm]:
                    v = args_[slot][j]
                    if how == "64":
                        das.add(name_iid=aid, uint_value=v | args_[slot + 1][j] << 32)
                    elif how == "p":
                        das.add(name_iid=aid, pointer_value=v)
                    else:
                        das.add(name_iid=aid, uint_value=v)
                if has_[j] and kinds[nm] == "hook":
                    das.add(name_iid=a_result, pointer_value=res_[j])
                continue
            ev.track_uuid = _BACKEND_BASE + s - 1
            if i < 0:
                ev.type = SLICE_END
                continue
            cyc, mech, *counts = runs_[s - 1]
            nm = nm_[j]
            ev.type = SLICE_BEGIN
            ev.name_iid = nm + 1
            ev.category_iids.append(mech_cat[mech[j]])
            das = ev.debug_annotations
            das.add(name_iid=a_seq, uint_value=lo + i)
            das.add(name_iid=a_vtime, uint_value=vt_[j])
            das.add(name_iid=a_cycles, uint_value=cyc[j])
            das.add(name_iid=a_mech, string_value_iid=mech[j] + 1)
            for aid, col in zip(a_counts, counts, strict=True):
                if col[j]:
                    das.add(name_iid=aid, uint_value=col[j])


#: The per-event counters a backend slice shows when not zero.
_COUNTS = ("exits", "hypercalls", "traps")


def _timeline(
    tr: Trace, lo: int, hi: int, cycles: list[np.ndarray], kinds: list[str], name_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every packet's time in vtime units, its source (0 the guest, 1 + b backend ``b``)
    and its event (window index; ``-1 - index`` for the end of that event's slice), in
    time order.  At equal times a slice's end goes before what begins (an empty slice's
    end after its own begin)."""
    n = hi - lo
    ticks = tr.vtime[lo:hi].astype(np.float64)
    times, sources, index, order = [ticks], [np.zeros(n, np.int8)], [np.arange(n)], [np.ones(n)]
    idle = np.flatnonzero(np.isin(name_of, [i for i, k in enumerate(kinds) if k == "idle"]))
    if len(idle):
        skip = tr.arg0[lo:hi][idle] + tr.arg1[lo:hi][idle].astype(np.float64) * 2.0**32
        times.append(ticks[idle] + skip)
        sources.append(np.zeros(len(idle), np.int8))
        index.append(-1 - idle)
        order.append(np.where(skip > 0, 0.0, 2.0))
    for b, c in enumerate(cycles):
        costed = np.flatnonzero(c > 0)
        cf = c.astype(np.float64)
        start = ticks + (np.cumsum(cf) - cf)  # the window's earlier cycles on this backend
        for end in (False, True):
            times.append(start[costed] + (cf[costed] if end else 0.0))
            sources.append(np.full(len(costed), 1 + b, np.int8))
            index.append(-1 - costed if end else costed)
            order.append(np.full(len(costed), 0.0 if end else 1.0))
    t = np.concatenate(times)
    sort = np.lexsort((np.concatenate(order), t))
    return t[sort], np.concatenate(sources)[sort], np.concatenate(index)[sort]
