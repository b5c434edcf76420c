"""The query session: views built from the schema, trace sets, and the read-only lock."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analysis.views import QueryError, Session
from pvscope import schema
from pvscope.errors import TraceError
from pvscope.hooks import HOOKS, Hook
from tests.support.reseal import reseal


def test_every_trace_table_is_a_view_with_the_schema_columns(golden_trace: Path) -> None:
    with Session(golden_trace) as s:
        s.ensure()
        for table in schema.TABLES.values():
            cols = [r[0] for r in s.con.execute(f"DESCRIBE {table.name}").fetchall()]
            assert cols == ["trace", *table.names]
            n = s.query(f"SELECT count(*) AS n FROM {table.name}").column("n")[0].as_py()
            assert n == pq.ParquetFile(golden_trace / table.file).metadata.num_rows


def test_hooks_view_is_the_catalogue(golden_trace: Path) -> None:
    with Session(golden_trace) as s:
        rows = s.query("SELECT * FROM hooks ORDER BY id").to_pylist()
    assert [r["name"] for r in rows] == [h.name for h in HOOKS]
    for f in dataclasses.fields(Hook):
        assert f.name in rows[0]
    by = {r["name"]: r for r in rows}
    assert by["set_pte"]["group"] == "mmu" and by["set_pte"]["requirement"] == "pteupdate"
    assert by["set_pte"]["requirement_number"] == 4
    assert by["apic_write"]["requirement_number"] is None
    assert by["set_pte"]["args"] == [
        {"name": "ptep", "type": "ptr"},
        {"name": "pteval", "type": "pte_t"},
    ]


def test_traces_view_reads_the_manifest(golden_trace: Path) -> None:
    manifest = json.loads((golden_trace / "manifest.json").read_text())
    with Session(golden_trace) as s:
        (row,) = s.query("SELECT * FROM traces").to_pylist()
    assert row["trace"] == "trace"
    assert row["guest"] == manifest["guest"]["name"]
    assert row["instructions"] == manifest["counts"]["instructions"]
    assert row["status"] == manifest["end"]["status"]


@pytest.mark.parametrize("which", ["trace_set", "hive_set"])
def test_a_trace_set_gains_a_trace_column(
    which: str, request: pytest.FixtureRequest, golden_trace: Path, small_trace: Path
) -> None:
    root = request.getfixturevalue(which)
    with Session(root) as s:
        s.ensure()
        got = dict(s.con.execute("SELECT trace, count(*) FROM events GROUP BY trace").fetchall())
        sym = dict(s.con.execute("SELECT trace, count(*) FROM symbols GROUP BY trace").fetchall())
        traces = [r[0] for r in s.con.execute("SELECT trace FROM traces ORDER BY 1").fetchall()]
    expect = {
        "golden": pq.ParquetFile(golden_trace / "events.parquet").metadata.num_rows,
        "small": pq.ParquetFile(small_trace / "events.parquet").metadata.num_rows,
    }
    assert got == expect
    assert set(sym) == {"golden", "small"}
    assert traces == ["golden", "small"]


def test_not_a_trace_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such trace"):
        Session(tmp_path / "nope")
    with pytest.raises(TraceError, match="not a trace"):
        Session(tmp_path)


def test_a_missing_table_is_named(tmp_path: Path, golden_trace: Path) -> None:
    t = tmp_path / "t"
    shutil.copytree(golden_trace, t)
    (t / "state.parquet").unlink()
    with pytest.raises(TraceError, match="state.parquet"):
        Session(t)


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("COPY (SELECT 1) TO '{tmp}/out.csv'", "COPY refused: pvscope query is read-only"),
        ("COPY events TO '{trace}/events.parquet' (USE_TMP_FILE false)", "COPY refused"),
        ("EXPLAIN ANALYZE COPY events TO '{tmp}/x.csv'", "COPY refused"),
        ("EXPORT DATABASE '{tmp}/db'", "EXPORT refused"),
        ("ATTACH '{tmp}/x.duckdb'", "ATTACH refused"),
        ("INSTALL httpfs", "INSTALL refused"),
        ("SELECT * FROM read_csv('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
        ("SELECT * FROM read_text('{tmp}/secret')", "read-only"),
        ("SELECT * FROM glob('/*')", "read-only"),
        ("SET enable_external_access = true", "configuration has been locked"),
        ("SET allowed_paths = ['/etc/passwd']", "configuration has been locked"),
        ("PREPARE p AS SELECT 1", "PREPARE refused"),
    ],
)
def test_the_session_cannot_write_or_read_other_files(
    tmp_path: Path, golden_trace: Path, sql: str, needle: str
) -> None:
    trace = tmp_path / "trace"
    shutil.copytree(golden_trace, trace)
    (tmp_path / "secret").write_text("x")
    before = _digest(trace)
    with Session(trace) as s, pytest.raises(QueryError) as e:
        s.query(sql.format(tmp=tmp_path, trace=trace))
    assert needle in str(e.value)
    assert "\n" not in str(e.value)
    assert _digest(trace) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret", "trace"]


def test_in_memory_work_is_allowed(golden_trace: Path) -> None:
    with Session(golden_trace) as s:
        t = s.query(
            "CREATE MACRO hi32(x) AS x >> 32; CREATE TEMP TABLE k AS SELECT kind FROM events;"
            "SELECT count(*) AS n, hi32(1::UBIGINT << 40) AS h FROM k"
        )
    assert t.to_pylist()[0]["h"] == 256


def test_bad_sql_is_duckdbs_message_on_one_line(golden_trace: Path) -> None:
    with Session(golden_trace) as s, pytest.raises(QueryError) as e:
        s.query("SELECT nope FROM events")
    msg = str(e.value)
    assert "nope" in msg and "\n" not in msg and "Binder Error" in msg


def test_a_missing_replay_view_says_how_to_make_it(golden_trace: Path) -> None:
    with Session(golden_trace) as s, pytest.raises(QueryError, match="pvscope replay"):
        s.query("SELECT * FROM summary")


def test_corrupt_foreign_and_future_tables_are_refused(tmp_path: Path, golden_trace: Path) -> None:
    import pyarrow as pa

    t = tmp_path / "t"
    shutil.copytree(golden_trace, t)
    (t / "inputs.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(TraceError, match="inputs.parquet: 18 bytes.*truncated or replaced"):
        Session(t)  # the manifest's size check comes first
    reseal(t)  # as if the manifest had been written for it: the file's own checks
    with pytest.raises(TraceError, match="inputs.parquet: not a readable Parquet file"):
        Session(t)
    pq.write_table(pa.table({"x": [1]}), t / "inputs.parquet")
    reseal(t)
    with pytest.raises(TraceError, match="not a pvscope trace table"):
        Session(t)
    table = pq.read_table(golden_trace / "inputs.parquet")
    meta = {schema.META_KEY: json.dumps({"schema_version": 9, "min_reader_version": 9})}
    pq.write_table(table.replace_schema_metadata(meta), t / "inputs.parquet")
    reseal(t)
    with pytest.raises(TraceError, match="version 9 needs a reader of version >= 9"):
        Session(t)


def test_views_are_made_only_when_named(replayed_trace: Path) -> None:
    with Session(replayed_trace) as s:
        assert {"events", "hooks", "summary", "replay"} <= set(s.views)
        s.query("SELECT count(*) FROM events")
        made = {
            r[0]
            for r in s.con.execute(
                "SELECT table_name FROM duckdb_tables() "
                "UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
        assert "events" in made and "summary" not in made and "hooks" not in made
        names = set(s.query("SHOW TABLES").column(0).to_pylist())
        assert names >= set(s.views)


def test_a_symbolic_link_planted_in_a_trace_is_refused(tmp_path: Path, small_trace: Path) -> None:
    """The sandbox allows exactly the trace's files: a link among them could point
    anywhere, so a session refuses it in one line rather than read through it."""
    from pvscope.errors import TraceError

    trace = tmp_path / "t"
    shutil.copytree(small_trace, trace)
    secret = tmp_path / "secret.parquet"
    secret.write_bytes((trace / "symbols.parquet").read_bytes())
    (trace / "symbols.parquet").unlink()
    (trace / "symbols.parquet").symlink_to(secret)
    with pytest.raises(TraceError, match="a symbolic link") as e, Session(trace) as s:
        s.query("select count(*) from symbols")
    assert "\n" not in str(e.value)


def test_the_working_directorys_tmp_is_not_readable(
    tmp_path: Path, small_trace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB spills to ./.tmp by default, and a query could read what is there; a session
    spills to a directory of its own, removed on close."""
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "secret.txt").write_text("secret")
    monkeypatch.chdir(tmp_path)
    with Session(small_trace) as s:
        spill = s._spill
        with pytest.raises(QueryError):
            s.query("SELECT * FROM read_text('.tmp/secret.txt')")
    assert not Path(spill).exists()
