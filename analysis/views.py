"""SQL views over a trace or a trace set, built from the schema, in a read-only DuckDB session.

A *trace* is a directory with a ``manifest.json``; a *trace set* is a directory whose
subdirectories are traces; a *results directory* (the replayer's, kept anywhere) is read
with the trace its index names, found and checked by hash (:func:`find_trace`).  Every
view has a ``trace`` column first: the trace's directory name (or ``NAME`` for a
Hive-style ``trace=NAME`` directory), constant for a single trace, so one query runs
unchanged on a trace and on a set of them.

Views:

* ``events``, ``inputs``, ``state``, ``symbols`` -- the trace tables, columns as
  ``pvscope.schema`` declares them;
* ``hooks`` -- the hook catalogue, one row per ``paravirt_ops`` member
  (``pvscope.hooks``);
* ``traces`` -- one row per trace from its manifest: guest, scale, seed, instructions,
  end status;
* from each trace's ``replay/`` directory, when it has one (the replayer's results,
  Hive-partitioned ``backend=LABEL``; ``trace`` and ``backend`` lead every view):
  ``replay`` (per event: cycles, native_cycles, mechanism, exits, hypercalls, traps,
  batch flushes), ``summary`` (one row per run), ``violations``, ``interrupts`` (per
  recorded interrupt as each backend delivers it), ``groups`` (per hook group),
  ``reasons`` (per exit reason) and ``costs`` (the cost table each run used, every
  number with its source); results replayed under several cost tables add a ``costs``
  column (the ``costs=TABLE`` directory).

Once the views exist the session is locked: DuckDB's external access is off except for
exactly the Parquet files the views read, the configuration is locked, and statements
that could write a file (``COPY``, ``EXPORT``, ``ATTACH``, ``INSTALL``/``LOAD``,
prepared statements) are refused before DuckDB sees them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pvscope import schema
from pvscope.errors import PvscopeError, TraceError
from pvscope.hooks import HOOKS, REQUIREMENTS, Hook

#: Directory of a trace's replay results.
REPLAY_DIR = "replay"
#: Replay result files whose view is not named by their stem (``X.parquet`` is view X),
#: as ``pvscope.schema.RESULT_TABLES`` declares them.
REPLAY_VIEWS: dict[str, str] = {
    t.file.removesuffix(".parquet"): t.name
    for t in schema.RESULT_TABLES.values()
    if t.file.removesuffix(".parquet") != t.name
}
#: Views that come from replay results (for the hint when one is missing).
REPLAY_VIEW_NAMES = tuple(schema.RESULT_TABLES)
#: Where the ``traces`` view's facts are in a manifest; their types and order are
#: ``pvscope.schema.TRACES_VIEW``'s.
_FACT_PATHS = {
    "guest": "guest.name",
    "scale": "scale",
    "seed": "seed",
    "instructions": "counts.instructions",
    "vtime": "counts.vtime",
    "events": "counts.events",
    "status": "end.status",
    "reason": "end.reason",
}
#: Manifest facts served in the ``traces`` view: column, type, how to read it.
TRACE_FACTS: tuple[tuple[str, pa.DataType, str], ...] = tuple(
    (c.name, c.type, _FACT_PATHS[c.name]) for c in schema.TRACES_VIEW.columns
)


class QueryError(PvscopeError):
    """SQL that DuckDB (or the read-only guard) refused; the message is one line."""


@dataclass
class Trace:
    """One trace directory and the name its rows carry in the ``trace`` column."""

    name: str
    path: Path
    manifest: dict[str, Any]
    replay: Path | None = None
    """Where its replay results are (default: ``path/replay``)."""
    found: bool = True
    """The trace itself is here (False: only its replay results, whose trace was not
    found; ``path`` is then the results directory and no trace view is served)."""


@dataclass
class Source:
    """What a query runs over: one trace, or a trace set."""

    path: Path
    traces: list[Trace]
    is_set: bool
    hive: bool = False
    """The set's traces are named ``trace=NAME`` (Hive style)."""
    files: list[Path] = field(default_factory=list)
    """Every file a view reads (the only files the locked session may open)."""


def _trace_name(p: Path) -> str:
    return p.name.split("=", 1)[1] if p.name.startswith("trace=") else p.name


def is_results(p: Path) -> bool:
    """A replay results directory: no trace manifest, and an index or runs in it."""
    from replayer.results import INDEX, TABLE_PREFIX

    p = Path(p)
    if not p.is_dir() or (p / "manifest.json").exists():
        return False
    return (p / INDEX).is_file() or any(
        d.is_dir() for pat in ("backend=*", f"{TABLE_PREFIX}*") for d in p.glob(pat)
    )


def _recorded_trace(results: Path) -> tuple[str, dict[str, Any]]:
    """The events sha256 a results directory replayed, and what its index says of the
    trace (empty for results from before the index named it)."""
    from replayer.results import read_index, table_dirs

    index = read_index(results) or {}
    about: dict[str, Any] = index["trace"] if isinstance(index.get("trace"), dict) else {}
    want = index.get("events_sha256")
    if not want:
        runs = [d for t in [results, *table_dirs(results)] for d in sorted(t.glob("backend=*"))]
        for d in runs:
            m = load_json(d / "manifest.json")
            want = m.get("trace", {}).get("events_sha256") if isinstance(m, dict) else None
            if want:
                break
    return str(want or ""), about


def _trace_hashes(p: Path) -> tuple[str, str] | None:
    """A trace directory's events sha256 (as its manifest records it) and its manifest's
    sha256; None for a directory that is not a trace."""
    m = p / "manifest.json"
    try:
        data = m.read_bytes()
        manifest = json.loads(data)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    files = manifest.get("files")
    events = files.get(schema.EVENTS.file, {}) if isinstance(files, dict) else {}
    sha = events.get("sha256") if isinstance(events, dict) else None
    if not sha:
        ev = p / schema.EVENTS.file
        if not ev.is_file():
            return None
        sha = schema.sha256_of(ev)
    import hashlib

    return str(sha), hashlib.sha256(data).hexdigest()


def find_trace(
    results: Path, given: list[Path] | None = None, required: bool = True
) -> Path | None:
    """The trace a results directory replayed, wherever the results are kept: one of
    ``given`` (``--trace``), the path its index records (resolved, then as given), the
    directories above it, or a trace beside it or beside its parent; the one whose
    events (and, where recorded, manifest) sha256 are the ones the results name.

    A trace given, or at the recorded path, that is another trace is refused in one line;
    so is a trace not found (with ``required``; otherwise None)."""
    results = Path(results).absolute()
    want, about = _recorded_trace(results)
    if not want:
        raise TraceError(f"{results}: its index names no trace and it holds no runs")
    want_manifest = about.get("manifest_sha256")
    where = about.get("resolved") or about.get("path")
    need = f"events sha256 {want[:12]}" + (f", recorded at {where}" if where else "")

    def matches(p: Path) -> bool | None:
        h = _trace_hashes(p)
        if h is None:
            return None
        return h[0] == want and (not want_manifest or h[1] == want_manifest)

    def other(p: Path) -> TraceError:
        h = _trace_hashes(p)
        got = h[0][:12] if h else "?"
        return TraceError(
            f"{p}: another trace (events sha256 {got}) than {results} replayed ({need}); "
            "replay it again, or give that trace with --trace"
        )

    for p in given or []:
        if not (Path(p) / "manifest.json").is_file():
            raise TraceError(f"{p}: not a trace (no manifest.json)")
    for p in given or []:
        if matches(Path(p)):
            return Path(p).absolute()
    if given:
        raise other(Path(given[0]))
    recorded = [Path(x) for x in (about.get("resolved"), about.get("path")) if x]
    above = [results.parent, results.parent.parent, results.parent.parent.parent]
    beside = [
        d
        for parent in (results.parent, results.parent.parent)
        for d in _traces_in(parent)
        if d != results
    ]
    replaced: Path | None = None
    seen: set[Path] = set()
    for i, p in enumerate([*recorded, *above, *beside]):
        p = p.absolute()
        if p in seen:
            continue
        seen.add(p)
        ok = matches(p)
        if ok:
            return p
        if ok is False and i < len(recorded) and replaced is None:
            replaced = p
    if replaced is not None:
        raise other(replaced)
    if not required:
        return None
    raise TraceError(
        f"{results}: cannot find the trace these results replayed ({need}); "
        "give it with --trace TRACE"
    )


def _traces_in(parent: Path) -> list[Path]:
    """The trace directories directly in ``parent`` (none where it cannot be listed)."""
    try:
        return [d for d in sorted(parent.iterdir()) if (d / "manifest.json").is_file()]
    except OSError:
        return []


def results_source(results: Path, given: list[Path] | None = None, required: bool = True) -> Source:
    """A replay results directory, kept anywhere, with its trace (:func:`find_trace`); with
    ``required`` False a results directory whose trace is not found serves only its
    replay views."""
    results = Path(results).absolute()
    trace = find_trace(results, given, required)
    if trace is None:
        _, about = _recorded_trace(results)
        name = str(about.get("name") or results.name)
        return Source(results, [Trace(name, results, {}, results, found=False)], False)
    t = Trace(_trace_name(trace), trace, schema.read_manifest(trace), results)
    return Source(results, [t], False)


def open_source(path: Path, trace: list[Path] | None = None, required: bool = True) -> Source:
    """Resolve a trace, trace-set or replay results directory (:func:`results_source`,
    ``trace`` and ``required`` as there); raise TraceError naming what is wrong."""
    if not Path(path).is_dir():
        raise TraceError(f"{path}: no such trace or trace set")
    if is_results(Path(path)):
        return results_source(Path(path), trace, required)
    path = Path(path).absolute()
    if (path / "manifest.json").exists():
        return Source(path, [Trace(_trace_name(path), path, schema.read_manifest(path))], False)
    children = sorted(p for p in path.iterdir() if p.is_dir() and (p / "manifest.json").exists())
    if not children:
        raise TraceError(
            f"{path}: not a trace (no manifest.json) nor a trace set (no trace directories in it)"
        )
    traces = [Trace(_trace_name(p), p, schema.read_manifest(p)) for p in children]
    names = [t.name for t in traces]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TraceError(f"{path}: two traces named {dup[0]!r}")
    hive = all(t.path.name.startswith("trace=") for t in traces)
    return Source(path, traces, True, hive)


def pair(
    a: Path,
    b: Path,
    names: tuple[str, str] = ("a", "b"),
    replays: tuple[Path | None, Path | None] = (None, None),
) -> Source:
    """Two traces side by side as a trace set whose traces are named ``names``.

    ``replays`` optionally names each one's replay results directory.
    """
    traces = []
    a, b = Path(a).absolute(), Path(b).absolute()
    replays = tuple(None if r is None else Path(r).absolute() for r in replays)  # type: ignore[assignment]
    for name, p, r in zip(names, (a, b), replays, strict=True):
        if not (p / "manifest.json").exists():
            raise TraceError(f"{p}: not a trace (no manifest.json)")
        traces.append(Trace(name, p, schema.read_manifest(p), r))
    return Source(Path(a), traces, True)


def _sql_str(s: str | Path) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join(_sql_str(p) for p in paths) + "]"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _scan(source: Source, files: list[tuple[Trace, Path]], columns: list[str] | None) -> str:
    """SQL reading ``files`` (one per trace) with a leading ``trace`` column."""
    cols = ", ".join(_ident(c) for c in columns) if columns else "* EXCLUDE (trace)"
    if source.hive and source.is_set:
        paths = [p for _, p in files]
        return (
            f"SELECT trace, {cols} FROM read_parquet({_sql_list(paths)}, "
            "hive_partitioning = true, hive_types = {'trace': 'VARCHAR'})"
        )
    parts = []
    for t, p in files:
        star = cols if columns else "*"
        parts.append(f"SELECT {_sql_str(t.name)} AS trace, {star} FROM read_parquet({_sql_str(p)})")
    return " UNION ALL ".join(parts)


def _replay_scan(
    con: duckdb.DuckDBPyConnection, source: Source, files: list[tuple[Trace, Path]]
) -> str:
    """SQL reading replay result files, Hive-partitioned under each trace's ``replay/``.

    Columns: ``trace``, ``backend`` (the ``backend=LABEL`` directory), then the file's own
    columns but any ``trace`` it carries (the view's trace column names it already).
    """
    parts = []
    by_trace: dict[str, list[Path]] = {}
    for t, p in files:
        by_trace.setdefault(t.name, []).append(p)
    hive = source.hive and source.is_set
    # in a Hive-style set the trace=NAME directory supplies the trace column itself
    types = ", hive_types = {'trace': 'VARCHAR'}" if hive else ""
    # every results file of one kind has the same columns (one writer, one results
    # version): read them from the first, not from every trace's
    first = next(iter(by_trace.values()))
    probe = f"read_parquet({_sql_list(first[:1])}, hive_partitioning = true{types})"
    names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {probe}").fetchall()]
    rest = [_ident(n) for n in names if n not in ("trace", "backend")]
    if hive:
        every = [p for paths in by_trace.values() for p in paths]
        scan = f"read_parquet({_sql_list(every)}, hive_partitioning = true{types})"
        return f"SELECT {', '.join(['trace', 'backend', *rest])} FROM {scan}"
    for name, paths in by_trace.items():
        scan = f"read_parquet({_sql_list(paths)}, hive_partitioning = true)"
        cols = [f"{_sql_str(name)} AS trace", "backend", *rest]
        parts.append(f"SELECT {', '.join(cols)} FROM {scan}")
    return " UNION ALL ".join(parts)


def _hooks_table() -> pa.Table:
    """The hook catalogue as an Arrow table: every Hook field, plus derived columns."""
    rows = []
    for h in HOOKS:
        row: dict[str, Any] = {}
        for f in dataclasses.fields(Hook):
            v = getattr(h, f.name)
            if f.name == "args":
                v = [{"name": n, "type": t} for n, t in v]
            row[f.name] = v
        row["requirement_number"] = REQUIREMENTS.get(h.requirement) if h.requirement else None
        row["slots"] = h.slots
        rows.append(row)
    first = ["id", "name", "group", "requirement", "requirement_number"]
    order = first + [k for k in rows[0] if k not in first]
    return pa.Table.from_pylist([{k: r[k] for k in order} for r in rows])


def _fact(manifest: dict[str, Any], dotted: str) -> Any:
    v: Any = manifest
    for k in dotted.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v


def _traces_table(source: Source) -> pa.Table:
    cols: dict[str, pa.Array] = {"trace": pa.array([t.name for t in source.traces], pa.string())}
    for name, typ, dotted in TRACE_FACTS:
        cols[name] = pa.array([_fact(t.manifest, dotted) for t in source.traces], typ)
    return pa.table(cols)


def replay_files(trace: Trace) -> dict[str, list[Path]]:
    """A trace's replay result files, by view name (the directory verified first: whole,
    one trace, one cost table)."""
    from replayer.results import verify

    root = trace.replay or trace.path / REPLAY_DIR
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return found
    verify(root)
    if trace.found:
        want, _ = _recorded_trace(root)
        h = _trace_hashes(trace.path)
        if want and h is not None and h[0] != want:
            raise TraceError(
                f"{root}: replay results of another trace (events sha256 {want[:12]}) than "
                f"{trace.path} ({h[0][:12]}); replay it again"
            )
    for p in sorted(root.rglob("*.parquet")):
        if any(part.startswith(".") for part in p.relative_to(root).parts):
            continue  # a replay's temporaries (being written, or left by a killed one)
        stem = re.sub(r"[-_]\d+$", "", p.stem)
        view = REPLAY_VIEWS.get(stem, stem)
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", view) or view in schema.TABLES:
            continue
        found.setdefault(view, []).append(p)
    return found


def _refuse_links(path: Path, root: Path) -> None:
    """A file the session may read must be the trace's own: neither it nor a directory
    between it and the source root may be a symbolic link (one planted in a trace could
    point anywhere, and the sandbox allows exactly these paths)."""
    p = path
    while True:
        if p.is_symlink():
            raise TraceError(
                f"{p}: a symbolic link; pvscope reads only the trace's own files, not links"
            )
        if p == root or p.parent == p:
            return
        p = p.parent


def _check_parquet(path: Path) -> None:
    """Refuse a Parquet file that is corrupt, foreign or of a version this reader cannot read.

    Done for a single trace; in a trace set only the manifests are version-checked, since
    reading every footer would cost more than a fast query over the whole set.
    """
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError) as e:
        raise TraceError(f"{path}: not a readable Parquet file ({_one_line(e)})") from None
    if schema.META_KEY not in meta:
        raise TraceError(f"{path}: no pvscope schema metadata; not a pvscope trace table")
    try:
        v = json.loads(meta[schema.META_KEY])
    except json.JSONDecodeError:
        raise TraceError(f"{path}: corrupt pvscope schema metadata") from None
    schema.check_versions(v.get("schema_version"), v.get("min_reader_version"), str(path))


class Session:
    """A DuckDB connection with the views of one source, locked read-only."""

    def __init__(
        self, path: Path | None = None, *, threads: int | None = None, source: Source | None = None
    ) -> None:
        if source is None:
            if path is None:
                raise TypeError("Session needs a path or a source")
            source = open_source(path)
        self.source = source
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET enable_progress_bar = false")
        # spill to a directory of our own: DuckDB's default (./.tmp) is readable by
        # queries, and would expose whatever the working directory holds there
        self._spill = tempfile.mkdtemp(prefix="pvscope-duckdb.")
        self.con.execute(f"SET temp_directory = {_sql_str(self._spill)}")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.views: dict[str, str] = {}
        """Every view this session serves, with what it is (made when first used)."""
        self._build: dict[str, Callable[[], None]] = {}
        self._discover()
        self._lock()

    # -- building -------------------------------------------------------------------
    # Views are found when the session opens (so the lock can name every file they
    # read) but made only when a statement first names them: binding a view reads the
    # footers of its files, which for a large trace set costs more than a fast query.

    def _discover(self) -> None:
        src = self.source
        for table in schema.TABLES.values() if all(t.found for t in src.traces) else ():
            files = []
            for t in src.traces:
                p = t.path / table.file
                if not p.exists():
                    raise TraceError(f"{p}: missing")
                if not src.is_set:
                    _check_parquet(p)
                files.append((t, p))
            self._offer(
                table.name,
                table.doc,
                functools.partial(self._view_of_table, table, files),
            )
            src.files += [p for _, p in files]
        self._offer(
            "hooks",
            "the hook catalogue (linux 2.6.21 paravirt_ops)",
            lambda: self._table("hooks", _hooks_table()),
        )
        if all(t.found for t in src.traces):
            self._offer(
                "traces",
                "one row per trace, from its manifest",
                lambda: self._table("traces", _traces_table(src)),
            )
        replay: dict[str, list[tuple[Trace, Path]]] = {}
        for t in src.traces:
            for view, paths in replay_files(t).items():
                replay.setdefault(view, []).extend((t, p) for p in paths)
        for view, files in sorted(replay.items()):
            self._offer(view, "replay results", functools.partial(self._replay_view, view, files))
            src.files += [p for _, p in files]

    def _offer(self, name: str, doc: str, build: Callable[[], None]) -> None:
        self.views[name] = doc
        self._build[name] = build

    def ensure(self, names: set[str] | None = None) -> None:
        """Make the named views (every one when ``names`` is None) if not made yet."""
        for name in sorted(self._build if names is None else names & set(self._build)):
            self._build.pop(name)()

    def _view_of_table(self, table: schema.Table, files: list[tuple[Trace, Path]]) -> None:
        self._view(table.name, _scan(self.source, files, table.names))

    def _replay_view(self, view: str, files: list[tuple[Trace, Path]]) -> None:
        try:
            sql = _replay_scan(self.con, self.source, files)
        except duckdb.Error as e:
            raise TraceError(
                f"{self.source.path}: cannot read the replay results' {view} table: {_one_line(e)}"
            ) from None
        self._view(view, sql)

    def _view(self, name: str, sql: str) -> None:
        try:
            self.con.execute(f"CREATE VIEW {_ident(name)} AS {sql}")
        except duckdb.Error as e:
            raise TraceError(
                f"{self.source.path}: cannot read the {name} table: {_one_line(e)}"
            ) from None

    def _table(self, name: str, table: pa.Table) -> None:
        self.con.register("_arrow", table)
        self.con.execute(f"CREATE TABLE {_ident(name)} AS SELECT * FROM _arrow")
        self.con.unregister("_arrow")

    def _lock(self) -> None:
        # a file is checked up to the directory it belongs to: the source, or a trace or
        # results directory kept elsewhere
        roots = [Path(self.source.path)]
        roots += [r for t in self.source.traces for r in (t.path, t.replay) if r is not None]
        for f in self.source.files:
            within = [r for r in roots if Path(f).is_relative_to(r)]
            _refuse_links(Path(f), min(within, key=lambda r: len(r.parts), default=roots[0]))
        allowed = sorted({str(p) for p in self.source.files})
        self.con.execute(f"SET allowed_paths = {_sql_list([Path(a) for a in allowed])}")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def _needed(self, statements: list[Any]) -> set[str] | None:
        """Views the statements name; None (all of them) when that cannot be told."""
        names: set[str] = set()
        for st in statements:
            try:
                found = duckdb.get_table_names(st.query)
            except duckdb.Error:
                return None
            if not found:
                return None  # SHOW TABLES, SELECT 1, ...: make everything
            names |= {n.rsplit(".", 1)[-1] for n in found}
        return names

    # -- running --------------------------------------------------------------------
    def execute(self, sql: str) -> duckdb.DuckDBPyRelation | None:
        """Run SQL (several statements allowed); the last statement's result is returned."""
        try:
            statements = self.con.extract_statements(sql)
        except duckdb.Error as e:
            raise QueryError(_one_line(e)) from None
        if not statements:
            raise QueryError("no SQL statement given")
        for st in statements:
            _check_statement(self.con, st)
        self.ensure(self._needed(statements))
        try:
            for st in statements[:-1]:
                self.con.execute(st)
                self.con.abort()  # its result is not wanted: only the last statement's is
            return self.con.sql(statements[-1].query)
        except duckdb.Error as e:
            raise QueryError(self._explain(e)) from None

    def query(self, sql: str) -> pa.Table:
        """Run SQL and fetch its result as an Arrow table (empty for a statement without one)."""
        rel = self.execute(sql)
        if rel is None:
            return pa.table({})
        try:
            return rel.to_arrow_table()
        except duckdb.Error as e:
            raise QueryError(self._explain(e)) from None

    def _explain(self, e: duckdb.Error) -> str:
        msg = _one_line(e)
        if isinstance(e, duckdb.PermissionException):
            return (
                f"{msg} (pvscope query is read-only: it reads only the trace's own tables; "
                "use --format and -o to save a result)"
            )
        m = re.search(r"Table with name (\w+) does not exist", msg)
        lost = [t for t in self.source.traces if not t.found]
        if m and lost and (m.group(1) in schema.TABLES or m.group(1) == "traces"):
            return (
                f"{msg} (the trace these results replayed was not found, so only the replay "
                f"views are served: give it with --trace TRACE)"
            )
        if m and m.group(1) in REPLAY_VIEW_NAMES:
            where = self.source.traces[0].path if len(self.source.traces) == 1 else None
            return (
                f"{msg} (no replay results with a {m.group(1)} table under "
                f"{self.source.path}: run 'pvscope replay {where or self.source.path} "
                "--backend all')"
            )
        return msg

    def close(self) -> None:
        """Close the connection (and remove its spill directory)."""
        self.con.close()
        shutil.rmtree(self._spill, ignore_errors=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Statement types a read-only session runs; everything else could touch a file.
ALLOWED_STATEMENTS = {
    "SELECT",
    "EXPLAIN",
    "PRAGMA",
    "SET",
    "CREATE",
    "DROP",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MULTI",
    "CALL",
}


def _check_statement(con: duckdb.DuckDBPyConnection, st: Any) -> None:
    kind = str(st.type).rsplit(".", 1)[-1]
    query = st.query.strip()
    if kind == "EXPLAIN":
        inner = re.sub(r"^\s*explain\s+(analyze\s+)?", "", query, flags=re.I)
        inner = re.sub(r"^\(\s*[^)]*\)\s*", "", inner) if inner.startswith("(") else inner
        for s in con.extract_statements(inner) if inner and inner != query else []:
            _check_statement(con, s)
        return
    if kind not in ALLOWED_STATEMENTS:
        word = query.split(None, 1)[0].upper() if query else kind
        raise QueryError(
            f"{word} refused: pvscope query is read-only and cannot write or read other files "
            "(use --format and -o to save a result)"
        )


def _one_line(e: BaseException) -> str:
    """DuckDB's message on one line, without the caret diagram."""
    lines = [ln for ln in str(e).splitlines() if ln.strip() and not set(ln.strip()) <= {"^"}]
    return " ".join(ln.strip() for ln in lines)


def load_json(path: Path) -> Any:
    """Read a JSON file, raising TraceError for a missing or corrupt one."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TraceError(f"{path}: missing") from None
    except json.JSONDecodeError as e:
        raise TraceError(f"{path}: corrupt JSON ({e.msg})") from None
