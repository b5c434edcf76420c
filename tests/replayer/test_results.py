"""Results on disk: layout, atomicity, and byte-identical output for identical inputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from pvscope import schema
from replayer import api, backends, costs, results
from replayer.trace import Trace, load

FILES = {
    "events.parquet",
    "violations.parquet",
    "interrupts.parquet",
    "groups.parquet",
    "reasons.parquet",
    "summary.parquet",
    "costs.parquet",
    "manifest.json",
}


def test_layout_is_hive_partitioned_by_backend(synth_trace: Trace, tmp_path: Path) -> None:
    runs = backends.resolve("native,vmi") + backends.resolve("vmi", "irq", "none")
    api.replay_trace(synth_trace, runs, costs.load("p4"), tmp_path / "res")
    names = sorted(p.name for p in (tmp_path / "res").iterdir())
    assert names == [
        "backend=native",
        "backend=vmi",
        "backend=vmi-without-irq-none",
        results.INDEX,
    ]
    dirs = names[:3]
    index = json.loads((tmp_path / "res" / results.INDEX).read_text())
    assert index["planned"] == [d[8:] for d in dirs]
    assert index["events_sha256"] == synth_trace.events_sha256
    for d in dirs:
        assert {p.name for p in (tmp_path / "res" / d).iterdir()} == FILES
    ev = pq.read_table(tmp_path / "res" / "backend=vmi" / "events.parquet")
    assert ev.num_rows == synth_trace.n
    assert ev.column_names[:4] == ["seq", "cycles", "native_cycles", "mechanism"]
    # the columns as pvscope.schema.REPLAY declares them, required where not nullable
    declared = schema.REPLAY.columns
    assert [(f.name, f.type, f.nullable) for f in ev.schema] == [
        (c.name, c.type, c.nullable) for c in declared
    ]
    parquet = pq.ParquetFile(tmp_path / "res" / "backend=vmi" / "events.parquet").schema
    assert all(parquet.column(i).max_definition_level == 0 for i in range(len(declared)))
    summary = pq.read_table(tmp_path / "res" / "backend=vmi-without-irq-none" / "summary.parquet")
    row = summary.to_pylist()[0]
    assert (row["base"], row["without"], row["fallback"]) == ("vmi", "irq", "none")
    assert row["violations"] > 0 and row["interrupt_violations"] > 0
    m = json.loads((tmp_path / "res" / "backend=vmi" / "manifest.json").read_text())
    assert m["cost_table"]["sha256"] == costs.load("p4").sha256
    assert m["trace"]["events_sha256"] == synth_trace.events_sha256
    assert m["ablation"] is None and m["backend"] == "vmi"


def _bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_trace_backend_and_table_give_identical_bytes(
    synth_trace: Trace, tmp_path: Path
) -> None:
    runs = backends.resolve("xen-pv,lguest") + backends.resolve("lguest", "pteupdate", "none")
    a, b = tmp_path / "a", tmp_path / "b"
    api.replay_trace(synth_trace, runs, costs.load("p4"), a)
    api.replay_trace(synth_trace, runs, costs.load("p4"), b)
    assert _bytes(a) == _bytes(b)
    api.replay_trace(synth_trace, runs, costs.load("p4"), a)  # replacing in place
    assert _bytes(a) == _bytes(b)
    assert not [p for p in a.iterdir() if p.name.startswith(".")]
    # another cost table: other numbers, other hash
    api.replay_trace(synth_trace, runs[:1], costs.load("nehalem"), b)
    assert _bytes(a)["backend=xen-pv/events.parquet"] != _bytes(b)["backend=xen-pv/events.parquet"]


def test_golden_summaries_cover_every_run(synth_path: Path, tmp_path: Path) -> None:
    got = api.golden_summaries(synth_path, tmp_path / "g")
    assert list(got) == [r.label for r in backends.all_runs()]
    json.dumps(got, sort_keys=True)  # JSON-able
    assert got["native"]["violations"] == 0


def test_runs_in_worker_processes_give_the_same_bytes_as_in_turn(
    synth_trace: Trace, tmp_path: Path
) -> None:
    runs = backends.all_runs()
    a, b = tmp_path / "a", tmp_path / "b"
    one = api.replay_trace(synth_trace, runs, costs.load("p4"), a, jobs=1)
    two = api.replay_trace(synth_trace, runs, costs.load("p4"), b, jobs=2)
    assert one == two
    assert _bytes(a) == _bytes(b)


def _spaces_signed() -> Any:
    """api._spaces, signed with the process that worked them out."""
    assert api._SPACES_OF is not None
    got = api.engine.spaced(api._SPACES_OF)
    got["worked out in"] = os.getpid()
    return got


def test_the_loaded_spaces_a_helper_works_out_are_those_worked_out_here(
    fork_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "_spaces", _spaces_signed)
    tr = load(fork_path)
    api._prepare(tr)
    here = load(fork_path)
    want = api.engine.spaced(here)
    assert tr.cache.pop("worked out in") != os.getpid()  # in the helper, sent back
    got = {k: tr.cache[k] for k in api.engine.SPACED}
    assert len(want["loaded_spaces"].spells) and want["loaded_spaces"].at_cr3
    assert np.array_equal(got["loaded_spaces"].spells, want["loaded_spaces"].spells)
    g, w = got["loaded_spaces"], want["loaded_spaces"]
    assert g.at_cr3 == w.at_cr3 and g.at_invlpg == w.at_invlpg
    for k in ("loaded_table_stores", "xen_pinned_stores"):
        assert np.array_equal(got[k], want[k]) and got[k].any(), k
    assert got["xen_pin_loads"].keys() == want["xen_pin_loads"].keys()
    for k, v in want["xen_pin_loads"].items():
        assert np.array_equal(np.asarray(got["xen_pin_loads"][k]), np.asarray(v))


def test_a_run_copied_to_another_process_is_the_same_model() -> None:
    import pickle

    for run in backends.all_runs():
        assert pickle.loads(pickle.dumps(run)).model() == run.model(), run.label


def _verify_fails(root: Path, match: str) -> None:
    from pvscope.errors import TraceError

    with pytest.raises(TraceError, match=match) as e:
        results.verify(root)
    assert "\n" not in str(e.value)


def test_readers_refuse_results_that_are_not_what_they_say(
    synth_trace: Trace, tmp_path: Path
) -> None:
    root = tmp_path / "res"
    runs = backends.resolve("native,vmi,xen-pv")
    api.replay_trace(synth_trace, runs, costs.load("p4"), root)
    results.verify(root)  # whole
    # a replay cut short: planned, never written
    shutil.rmtree(root / "backend=xen-pv")
    _verify_fails(root, "incomplete: 1 of 3 planned runs missing")
    api.replay_trace(synth_trace, backends.resolve("xen-pv"), costs.load("p4"), root)
    results.verify(root)
    m = root / "backend=vmi" / "manifest.json"
    good = m.read_text()
    for text, match in (
        ("not json", "not readable JSON"),
        (good.replace('"results_version": 2', '"results_version": 999'), "results version 999"),
        (good.replace('"backend": "vmi"', '"backend": "native"'), "names backend 'native'"),
    ):
        m.write_text(text)
        _verify_fails(root, match)
    m.unlink()
    _verify_fails(root, "manifest.json: missing")
    m.write_text(good)
    (root / "backend=vmi" / "summary.parquet").unlink()
    _verify_fails(root, "summary.parquet: missing")


def test_a_replay_under_another_table_replaces_the_directory_not_mixes_in(
    synth_trace: Trace, tmp_path: Path
) -> None:
    root = tmp_path / "res"
    api.replay_trace(synth_trace, backends.resolve("native,vmi"), costs.load("nehalem"), root)
    api.replay_trace(synth_trace, backends.resolve("xen-pv"), costs.load("p4"), root)
    assert sorted(d.name for d in root.glob("backend=*")) == ["backend=xen-pv"]
    results.verify(root)
    # one planted by hand from another table is caught
    other = tmp_path / "other"
    api.replay_trace(synth_trace, backends.resolve("vmi"), costs.load("nehalem"), other)
    shutil.copytree(other / "backend=vmi", root / "backend=vmi")
    _verify_fails(root, "runs of different cost tables")


def test_several_tables_kept_apart_each_a_results_directory(
    synth_trace: Trace, tmp_path: Path
) -> None:
    root = tmp_path / "res"
    runs = backends.resolve("native,vmi")
    p4, neh = costs.load("p4"), costs.load("nehalem")
    got = api.replay_tables(synth_trace, runs, [(neh, None), (p4, None)], root)
    assert list(got) == ["nehalem", "p4"]
    assert sorted(p.name for p in root.iterdir()) == ["costs=nehalem", "costs=p4", results.INDEX]
    index = json.loads((root / results.INDEX).read_text())
    assert index["order"] == ["nehalem", "p4"]
    assert index["tables"]["p4"]["sha256"] == p4.sha256
    assert index["trace"]["events_sha256"] == synth_trace.events_sha256
    results.verify(root)
    # each table's runs are what a replay under that table alone writes
    api.replay_trace(synth_trace, runs, p4, tmp_path / "alone")
    assert _bytes(root / "costs=p4") == _bytes(tmp_path / "alone")
    # another table later joins; the others stay
    api.replay_tables(synth_trace, runs[:1], [(costs.load("icelake"), None)], root)
    assert len(results.table_dirs(root)) == 3
    results.verify(root)
    # a table cut short, or missing, is refused
    shutil.rmtree(root / "costs=p4" / "backend=vmi")
    _verify_fails(root, "incomplete: 1 of 2 planned runs missing")
    shutil.rmtree(root / "costs=p4")
    _verify_fails(root, "the runs under cost table p4 are missing")
    # one table at the top replaces them whole
    api.replay_trace(synth_trace, runs, p4, root)
    assert results.table_dirs(root) == []
    assert "tables" not in json.loads((root / results.INDEX).read_text())
    assert _bytes(root) == _bytes(tmp_path / "alone")
    # and several replace one
    api.replay_tables(synth_trace, runs, [(p4, None), (neh, None)], root)
    assert not list(root.glob("backend=*"))
    results.verify(root)


def test_tables_of_one_name_are_refused(synth_trace: Trace, tmp_path: Path) -> None:
    from pvscope.errors import UsageError

    p4 = costs.load("p4")
    toml = tmp_path / "mine.toml"
    toml.write_bytes((costs.PRESET_DIR / "p4.toml").read_bytes())
    with pytest.raises(UsageError, match="two cost tables named 'p4'"):
        api.replay_tables(synth_trace, [], [(p4, None), (costs.load(toml), toml)], tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_the_index_names_the_trace_and_a_file_tables_path(
    synth_trace: Trace, tmp_path: Path
) -> None:
    toml = tmp_path / "mine.toml"
    toml.write_bytes((costs.PRESET_DIR / "nehalem.toml").read_bytes())
    table = costs.load(toml)
    api.replay_trace(
        synth_trace, backends.resolve("native"), table, tmp_path / "r", table_path=toml
    )
    index = json.loads((tmp_path / "r" / results.INDEX).read_text())
    assert index["cost_table"] == {
        "name": "nehalem",
        "sha256": table.sha256,
        "origin": "mine.toml",
        "path": str(toml.resolve()),
    }
    assert index["trace"]["resolved"] == str(synth_trace.path.resolve())
    assert index["trace"]["events_sha256"] == synth_trace.events_sha256


def test_a_workers_group_starts_from_the_trace_as_prepared(
    synth_trace: Trace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what an earlier group left on the trace in the same worker is let go (it took
    # hundreds of MiB a group on a 10 M-event trace); what prepare derived stays
    runs = backends.all_runs()
    table = costs.load("p4")
    api.engine.prepare(synth_trace)
    prepared = frozenset(synth_trace.cache)
    shared = (synth_trace, runs, table, tmp_path, prepared)
    monkeypatch.setattr(api, "_SHARED", shared)
    synth_trace.cache["left by an earlier group"] = np.zeros(8)
    ids, (summary,) = api._group([0])
    assert ids == [0]
    assert "left by an earlier group" not in synth_trace.cache
    assert prepared <= set(synth_trace.cache)
    assert summary == api.replay_trace(synth_trace, runs[:1], table, tmp_path / "b", jobs=1)[0]


def test_groups_replayed_in_this_process_each_start_from_the_trace_as_prepared(
    synth_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as a worker takes its groups (the replay capped to one process by memory, or -j 1)
    tr = api.load(synth_path)
    runs = backends.resolve("vmi,xen-pv,lguest")
    table = costs.load("p4")
    seen: list[set[str]] = []
    replay_one = api._replay_one

    def spy(*a: Any, **k: Any) -> dict[str, Any]:
        if a[3] == 0:  # a group's first run
            seen.append(set(tr.cache))
            tr.cache["left by an earlier group"] = np.zeros(8)
        return replay_one(*a, **k)

    monkeypatch.setattr(api, "_replay_one", spy)
    got = api.replay_trace(tr, runs, table, tmp_path / "a", jobs=1)
    assert len(seen) == len(api._groups(runs, table)) == 3
    assert seen[0] == seen[1] == seen[2] and "left by an earlier group" not in seen[2]
    monkeypatch.setattr(api, "_replay_one", replay_one)
    assert got == api.replay_trace(synth_path, runs, table, tmp_path / "b", jobs=2)


def test_a_replay_fixes_the_mmap_threshold_before_it_loads_the_trace(
    synth_trace: Trace, tmp_path: Path, load_order: list[str]
) -> None:
    # freed per-event arrays leave the process at once (glibc's M_MMAP_THRESHOLD fixed
    # instead of growing): set before anything of the trace's size is made
    import platform
    import sys

    native = backends.resolve("native")
    api.replay_trace(synth_trace.path, native, costs.load("p4"), tmp_path / "r", jobs=1)
    assert load_order == ["threshold", "load"]
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        assert api._large_frees_go_back()


@pytest.mark.parametrize("rows", [1000, 1353, 1 << 20])  # the synthetic trace: 2706 events
def test_events_written_a_row_group_at_a_time_are_the_bytes_of_the_whole_table(
    synth_trace: Trace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    monkeypatch.setattr(results, "ROW_GROUP", rows)
    r = api.engine.replay(synth_trace, backends.Run(backends.BACKENDS["xen-pv"]), costs.load("p4"))
    whole, parts = tmp_path / "whole.parquet", tmp_path / "parts.parquet"
    results._write(results.events_table(r), whole, results._EVENTS_OPTS)
    results._write_events(r, parts)
    assert pq.ParquetFile(parts).metadata.num_row_groups == -(-synth_trace.n // rows)
    assert whole.read_bytes() == parts.read_bytes()


def test_violations_written_a_row_group_at_a_time_are_the_bytes_of_the_whole_table(
    synth_trace: Trace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # single rows (the devices' checks) and a block (save_fl's results)
    run = backends.resolve("vmi", "apic", "none")[0]
    r = api.engine.replay(synth_trace, run, costs.load("p4"))
    n = len(r.violations)
    assert n > 20 and len(r.violations._blocks) and (r.violations._chunk < 0).any()
    whole = tmp_path / "whole.parquet"
    results._write(results.violations_table(r), whole)
    for rows in (7, n // 2, n, n + 1):
        monkeypatch.setattr(results, "ROW_GROUP", rows)
        parts = tmp_path / f"parts{rows}.parquet"
        results._write_violations(r, parts)
        assert pq.ParquetFile(parts).metadata.num_row_groups == -(-n // rows)
        assert pq.read_table(parts).equals(pq.read_table(whole))
        if rows >= n:
            assert parts.read_bytes() == whole.read_bytes()


def test_the_groups_likely_longest_go_out_first() -> None:
    runs = backends.all_runs()
    order = [[runs[i].label for i in g] for g in api._groups(runs, costs.load("p4"))]
    singles = [g[0] for g in order if len(g) == 1]
    # runs that prove their copy against what they discover or trap, before the others;
    # those whose hardware walks the guest's tables last
    heavy = {"vmi-without-ptalloc-trap", "xen-pv-without-ptalloc-trap"}
    heavy.add("lguest-without-pteupdate-trap")
    first = [s for s in singles if s != "lguest-without-pteupdate-none"][: len(heavy)]
    assert set(first) == heavy
    assert singles[-2:] == ["native", "hvm-npt"]
    assert all(len(a) >= len(b) for a, b in zip(order[2:], order[3:], strict=False))
