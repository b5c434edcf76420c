"""``pvscope schema`` documents every view ``pvscope query`` serves, as DuckDB sees it, and
the replay results the writer makes are the tables ``pvscope.schema`` declares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from analysis.views import Session
from pvscope import schema
from pvscope.cli import main

#: Arrow types as DuckDB names them in DESCRIBE.
DUCKDB = {
    "uint8": "UTINYINT",
    "uint16": "USMALLINT",
    "uint32": "UINTEGER",
    "uint64": "UBIGINT",
    "int64": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "string": "VARCHAR",
}


def duckdb_type(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return "VARCHAR"
    if pa.types.is_list(t):
        fields = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in t.value_type)
        return f"STRUCT({fields})[]"
    return DUCKDB[str(t)]


def documented() -> dict[str, Any]:
    r = CliRunner().invoke(main, ["schema", "--json"], catch_exceptions=False)
    assert r.exit_code == 0
    return json.loads(r.output)["views"]


def test_schema_json_lists_every_view_with_duckdbs_columns(replayed_trace: Path) -> None:
    views = documented()
    with Session(replayed_trace) as s:
        s.ensure()
        served = set(s.views)
        described = {
            v: [(r[0], r[1]) for r in s.con.execute(f'DESCRIBE "{v}"').fetchall()] for v in served
        }
    assert served == set(views), "a view pvscope query serves is not in pvscope schema"
    for name, v in views.items():
        declared = [
            (c["name"], duckdb_type(c2.type))
            for c, c2 in zip(v["columns"], schema.views()[name].columns, strict=True)
        ]
        assert described[name] == declared, name
        assert all(c["doc"] for c in v["columns"]), name


def test_the_writer_writes_the_declared_results_tables(replayed_trace: Path) -> None:
    runs = sorted((replayed_trace / "replay").glob("backend=*"))
    assert runs
    for run in runs:
        for t in schema.RESULT_TABLES.values():
            got = pq.read_schema(run / t.file)
            # a file's own trace column (summary's) is the view's leading one
            assert [n for n in got.names if n != "trace"] == t.names, (run.name, t.name)
            for c in t.columns:
                assert got.field(c.name).type == c.type, (run.name, t.name, c.name)


def test_the_run_label_is_backend_in_every_replay_view_and_saved_query(
    replayed_trace: Path,
) -> None:
    from analysis import queries

    for v in schema.views().values():
        if v.source == "replay":
            assert [c.name for c in v.columns[:2]] == ["trace", "backend"]
    with Session(replayed_trace) as s:
        for q in queries.saved():
            if not q.needs_replay:
                continue
            cols = s.query(q.sql).column_names
            assert "run" not in cols, q.name
            if "base" in cols:
                assert "backend" in cols, q.name
