"""pvscope verify, and the cheap checks every read makes: a trace's and a replay's files
are the ones their manifests name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pvscope.cli import main
from recorder.record import record
from replayer import api, backends, costs


@pytest.fixture()
def replayed(tmp_path: Path) -> Path:
    t = tmp_path / "t"
    record("pvcall", t, scale=300)
    api.replay_trace(t, backends.resolve("native,vmi"), costs.load("p4"))
    return t


def _flip(p: Path, at: float = 0.5) -> None:
    b = bytearray(p.read_bytes())
    b[int(len(b) * at)] ^= 0x5A
    p.write_bytes(bytes(b))


def test_a_whole_trace_and_its_results_verify(replayed: Path) -> None:
    r = CliRunner().invoke(main, ["verify", str(replayed), "--json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert row["checked"] == ["trace (5 files)", "replay results (2 runs)"]
    m = json.loads((replayed / "manifest.json").read_text())
    assert set(m["files"]) == {
        "events.parquet",
        "inputs.parquet",
        "state.parquet",
        "symbols.parquet",
        "tlb.parquet",
    }


@pytest.mark.parametrize(
    "file", ["inputs.parquet", "symbols.parquet", "replay/backend=vmi/summary.parquet"]
)
def test_a_flipped_byte_anywhere_fails_verify_in_one_line(replayed: Path, file: str) -> None:
    _flip(replayed / file)
    r = CliRunner().invoke(main, ["verify", str(replayed)])
    assert r.exit_code == 1
    assert "sha256 is not the manifest's" in r.output and len(r.output.splitlines()) == 1


def test_a_truncated_or_replaced_file_fails_every_read(replayed: Path) -> None:
    (replayed / "symbols.parquet").write_bytes(b"name,addr\nx,1\n")  # a CSV in its place
    for args in (["query", str(replayed), "select 1"], ["replay", str(replayed), "-b", "native"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1, args
        assert "truncated or replaced" in r.output and "Traceback" not in r.output
    (replayed / "inputs.parquet").unlink()
    r = CliRunner().invoke(main, ["query", str(replayed), "select 1"])
    assert r.exit_code == 1 and "inputs.parquet: missing" in r.output


def test_a_flipped_data_page_is_caught_on_every_read(replayed: Path) -> None:
    _flip(replayed / "events.parquet", 0.3)
    for args in (
        ["replay", str(replayed), "-b", "native", "-q"],
        ["query", str(replayed), "select count(*), sum(arg0) from events"],
        ["report", str(replayed), "--no-html", "-q"],
    ):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1, args
        assert "events.parquet: its sha256 is not the manifest's" in r.output, args
        assert "Traceback" not in r.output
    # without the manifest's hashes (a trace from before them) the page CRCs still catch it
    m = json.loads((replayed / "manifest.json").read_text())
    del m["files"]
    (replayed / "manifest.json").write_text(json.dumps(m))
    r = CliRunner().invoke(main, ["replay", str(replayed), "-b", "native", "-q"])
    assert r.exit_code == 1 and "events.parquet: corrupt Parquet data" in r.output


def test_a_verified_file_is_hashed_once_per_version(replayed: Path) -> None:
    from pvscope import schema

    calls: list[Path] = []
    real = schema.sha256_of

    def counting(p: Path) -> str:
        calls.append(p)
        return real(p)

    schema._VERIFIED._seen = {}
    try:
        schema.sha256_of = counting  # type: ignore[assignment]
        m = schema.read_manifest(replayed)
        schema.read_manifest(replayed)
        assert len(calls) == len(m["files"])  # the second read hashed nothing
        _flip(replayed / "inputs.parquet")
        with pytest.raises(schema.TraceError, match="inputs.parquet: its sha256"):
            schema.read_manifest(replayed)
    finally:
        schema.sha256_of = real  # type: ignore[assignment]


def test_results_under_several_cost_tables_verify_table_by_table(tmp_path: Path) -> None:
    t = tmp_path / "t"
    record("pvcall", t, scale=300)
    out = tmp_path / "r"
    r = CliRunner().invoke(
        main, ["replay", str(t), "-b", "native", "--costs", "p4,nehalem", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["verify", str(out), "--json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert row["checked"] == ["replay results (2 runs under 2 cost tables)"]
    _flip(next(out.glob("costs=nehalem/backend=native")) / "summary.parquet")
    r = CliRunner().invoke(main, ["verify", str(out)])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
