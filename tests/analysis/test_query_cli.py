"""The analysis commands run through click: formats, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from analysis.cli import EXIT_DIFFERS, diff, query
from tests.support.reseal import reseal


def invoke(cmd, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cmd, [str(a) for a in args], catch_exceptions=False)


def test_query_prints_a_table(golden_trace: Path) -> None:
    r = invoke(query, golden_trace, "SELECT kind, count(*) AS n FROM events GROUP BY kind")
    assert r.exit_code == 0
    assert "hook" in r.output and "kind" in r.output


def test_query_formats(golden_trace: Path, tmp_path: Path) -> None:
    sql = "SELECT hook, count(*) AS n FROM events WHERE kind = 'hook' GROUP BY hook ORDER BY hook"
    rows = json.loads(invoke(query, golden_trace, sql, "--format", "json").output)
    assert rows == json.loads(invoke(query, golden_trace, sql, "--json").output)
    manifest = json.loads((golden_trace / "manifest.json").read_text())
    assert {r["hook"]: r["n"] for r in rows} == manifest["counts"]["by_hook"]
    csv = invoke(query, golden_trace, sql, "--format", "csv").output.splitlines()
    assert csv[0].replace('"', "") == "hook,n" and len(csv) == len(rows) + 1
    out = tmp_path / "r.parquet"
    assert invoke(query, golden_trace, sql, "-o", out).exit_code == 0
    assert pq.read_table(out).to_pylist() == rows
    r = invoke(query, golden_trace, sql, "--format", "parquet")
    assert r.exit_code == 2 and "needs -o" in r.output


def test_nested_columns_survive_csv(golden_trace: Path) -> None:
    r = invoke(
        query,
        golden_trace,
        "SELECT name, args FROM hooks WHERE name = 'set_pte'",
        "--format",
        "csv",
    )
    assert r.exit_code == 0 and "ptep" in r.output


def test_saved_and_list(golden_trace: Path) -> None:
    r = invoke(query, "--list")
    assert r.exit_code == 0 and "hook_counts" in r.output
    listed = json.loads(invoke(query, "--list", "--json").output)
    assert all(q["answers"] for q in listed)
    r = invoke(query, golden_trace, "--saved", "hook_counts", "--json")
    assert r.exit_code == 0 and json.loads(r.output)[0]["calls"] > 0
    r = invoke(query, golden_trace, "--saved", "nope")
    assert r.exit_code == 2 and "no saved query 'nope'" in r.output


def test_bad_sql_is_one_line_exit_1(golden_trace: Path) -> None:
    r = invoke(query, golden_trace, "SELEC 1")
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pvscope: error: Parser Error")


def test_copy_and_read_csv_refused_on_the_command_line(golden_trace: Path, tmp_path: Path) -> None:
    r = invoke(query, golden_trace, f"COPY (SELECT 1) TO '{tmp_path}/x.csv'")
    assert r.exit_code == 1 and "read-only" in r.output and not (tmp_path / "x.csv").exists()
    r = invoke(query, golden_trace, "SELECT * FROM read_csv('/etc/passwd')")
    assert r.exit_code == 1 and "read-only" in r.output and "root" not in r.output


def test_not_a_trace(tmp_path: Path) -> None:
    r = invoke(query, tmp_path / "nope", "SELECT 1")
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "no such trace" in r.output


def test_diff_equal_traces(golden_trace: Path, tmp_path: Path) -> None:
    shutil.copytree(golden_trace, tmp_path / "copy")
    r = invoke(diff, golden_trace, tmp_path / "copy")
    assert r.exit_code == 0 and "equal" in r.output


def test_diff_different_traces(golden_trace: Path, small_trace: Path) -> None:
    r = invoke(diff, golden_trace, small_trace, "--json")
    assert r.exit_code == EXIT_DIFFERS
    d = json.loads(r.output)
    assert not d["equal"] and "seed" in d["manifest_changes"]
    a = pq.read_table(golden_trace / "events.parquet").to_pylist()
    b = pq.read_table(small_trace / "events.parquet").to_pylist()
    first = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert d["first_divergence"]["seq"] == first
    assert d["first_divergence"]["a"] == a[first] and d["first_divergence"]["b"] == b[first]
    from collections import Counter

    ca = Counter(e["hook"] or e["kind"] for e in a)
    cb = Counter(e["hook"] or e["kind"] for e in b)
    got = {h["name"]: h for h in d["hooks"]}
    for name in set(ca) | set(cb):
        if ca[name] != cb[name]:
            assert got[name]["delta"] == cb[name] - ca[name]


def test_diff_one_changed_argument(golden_trace: Path, tmp_path: Path) -> None:
    t = pq.read_table(golden_trace / "events.parquet")
    rows = t.to_pylist()
    i = next(k for k, e in enumerate(rows) if e["hook"] == "set_pte" and k > 100)
    rows[i]["arg1"] ^= 1
    shutil.copytree(golden_trace, tmp_path / "b")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), tmp_path / "b" / "events.parquet")
    reseal(tmp_path / "b")
    r = invoke(diff, golden_trace, tmp_path / "b", "--json")
    assert r.exit_code == EXIT_DIFFERS
    d = json.loads(r.output)
    assert d["first_divergence"]["seq"] == i
    (h,) = d["hooks"]
    assert (h["name"], h["delta"], h["args_only_in_a"], h["args_only_in_b"]) == ("set_pte", 0, 1, 1)
    text = invoke(diff, golden_trace, tmp_path / "b").output
    assert f"first divergence at seq {i}" in text


def test_diff_bad_input(golden_trace: Path, tmp_path: Path) -> None:
    r = invoke(diff, golden_trace, tmp_path / "nope")
    assert r.exit_code == 2 and "no such" in r.output


def test_report_to_a_directory_is_one_line(tmp_path: Path, small_trace: Path) -> None:
    from pvscope.cli import main as cli

    r = CliRunner().invoke(cli, ["report", str(small_trace), "-o", str(tmp_path), "-q"])
    assert r.exit_code == 2
    assert "is a directory; give a file name" in r.output and "Traceback" not in r.output


def test_several_statements_give_the_last_ones_result(small_trace: Path) -> None:
    for sql, want in (
        ("select 1 a; select 2 b", [{"b": 2}]),
        ("select count(*) n from events; select 3 c", [{"c": 3}]),
        ("create temp view v as select 7 x; select x from v", [{"x": 7}]),
    ):
        r = CliRunner().invoke(query, [str(small_trace), sql, "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout) == want


def test_json_output_streams_one_row_per_line() -> None:
    """Streamed in pieces so a 10 M-row result is never all Python objects at once: a
    JSON array, one object per line, the same whatever the piece size."""
    import pyarrow as pa

    from analysis.output import json_chunks, to_json

    for t in (
        pa.table({"a": [1, 2, None], "b": ["x", "y", "z"]}),
        pa.table({"a": pa.array([], pa.int64())}),
        pa.table({"s": [{"k": 1}], "l": [[1, 2]]}),
        pa.table({"n": list(range(5000))}),
    ):
        text = to_json(t)
        assert json.loads(text) == t.to_pylist()
        assert "".join(json_chunks(t, rows=7)) == text
        assert len(text.splitlines()) == (t.num_rows + 2 if t.num_rows else 1)


def test_diff_refuses_a_damaged_trace_rather_than_report_its_damage(
    golden_trace: Path, tmp_path: Path
) -> None:
    b = tmp_path / "b"
    shutil.copytree(golden_trace, b)
    data = bytearray((b / "events.parquet").read_bytes())
    data[len(data) * 2 // 5] ^= 0x5A
    (b / "events.parquet").write_bytes(bytes(data))
    r = invoke(diff, golden_trace, b)
    assert r.exit_code == 1
    assert "events.parquet: its sha256 is not the manifest's" in r.output


def test_query_table_speaks_with_one_voice(golden_trace: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sql = (
        "SELECT seq, vtime, arg0 AS vector, site, cr3, vif, NULL AS nothing, "
        "7.23841e-06 AS tiny, 2.0671::DOUBLE AS interface_ratio, count(*) OVER () AS n "
        "FROM events WHERE kind = 'interrupt' ORDER BY seq LIMIT 2"
    )
    rows = json.loads(invoke(query, golden_trace, sql, "--json").output)
    text = invoke(query, golden_trace, sql).output
    r = rows[0]
    assert f"{r['site']:#x}" in text and f"{r['cr3']:#x}" in text and f"{r['vector']:#x}" in text
    assert f"{r['vtime']:,}" in text and f" {r['seq']} " in text  # a seq is a position
    assert "yes" in text and "NULL" not in text and "True" not in text
    assert "0.000007238" in text and "e-06" not in text and "2.07×" in text
    assert isinstance(r["tiny"], float) and r["vif"] is True and r["nothing"] is None
    for width in (80, 120):
        monkeypatch.setenv("PVSCOPE_WIDTH", str(width))
        text = invoke(query, golden_trace, sql).output
        assert all(len(line) <= width for line in text.splitlines())
        assert "…" not in text and f"{r['site']:#x}" in text
        if width == 80:
            assert "left out to fit 80 columns" in text and "--format csv or json" in text
