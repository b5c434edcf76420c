"""``pvscope export --perfetto``: the file parses with Perfetto's own protos, and what is on
each track is what the trace (read here from its Parquet file) and the replays hold."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from pvscope.cli import main

BACKENDS = ("xen-pv", "hvm-npt")
BEGIN, END, INSTANT = (
    pb.TrackEvent.TYPE_SLICE_BEGIN,
    pb.TrackEvent.TYPE_SLICE_END,
    pb.TrackEvent.TYPE_INSTANT,
)


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, ["export", "--perfetto", *(str(a) for a in args)])


def events(trace: Path) -> dict[str, np.ndarray]:
    """The events table's columns, straight from the file (not through the replayer)."""
    t = pq.read_table(trace / "events.parquet", columns=["seq", "vtime", "kind", "cpl"])
    kind = t.column("kind").cast("string").to_numpy(zero_copy_only=False)
    return {
        "seq": t.column("seq").to_numpy(),
        "vtime": t.column("vtime").to_numpy(),
        "kind": kind,
        "cpl": t.column("cpl").to_numpy(),
    }


class Parsed:
    """A written file, read back: tracks by uuid, and per track its events in order."""

    def __init__(self, path: Path) -> None:
        trace = pb.Trace.FromString(path.read_bytes())
        self.tracks: dict[int, str] = {}
        self.parents: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.cats: dict[int, str] = {}
        self.args: dict[int, str] = {}
        self.events: dict[str, list[Any]] = {}
        last = -1
        for p in trace.packet:
            if p.HasField("interned_data"):
                self.names.update((e.iid, e.name) for e in p.interned_data.event_names)
                self.cats.update((e.iid, e.name) for e in p.interned_data.event_categories)
                self.args.update((e.iid, e.name) for e in p.interned_data.debug_annotation_names)
            if p.HasField("track_descriptor"):
                d = p.track_descriptor
                self.tracks[d.uuid] = d.name
                if d.HasField("parent_uuid"):
                    self.parents[d.uuid] = d.parent_uuid
            if p.HasField("track_event"):
                assert p.timestamp >= last, "packets out of time order"
                last = p.timestamp
                track = self.tracks[p.track_event.track_uuid]
                self.events.setdefault(track, []).append((p.timestamp, p.track_event))

    def leaves(self) -> list[str]:
        """Names of the tracks that hold events (not the groups)."""
        return [n for u, n in self.tracks.items() if u in self.parents]

    def category_counts(self, track: str) -> Counter[str]:
        """Events (instants and slice begins) on a track per category."""
        return Counter(
            self.cats[e.category_iids[0]]
            for _t, e in self.events.get(track, [])
            if e.type in (INSTANT, BEGIN)
        )

    def arg(self, e: Any, name: str) -> int:
        for a in e.debug_annotations:
            if self.args[a.name_iid] == name:
                return int(a.uint_value or a.pointer_value)
        raise KeyError(name)


@pytest.fixture(scope="module")
def exported(golden_trace: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("perfetto") / "pvcall.pftrace"
    r = run(golden_trace, "--replay", ",".join(BACKENDS), "-o", out, "--limit", "0", "--json")
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


def test_guest_tracks_hold_every_event_by_kind_and_cpl(golden_trace: Path, exported: Any) -> None:
    out, summary = exported
    ev = events(golden_trace)
    parsed = Parsed(out)
    cpl_tracks = {c: f"CPL {c} " for c in np.unique(ev["cpl"]).tolist()}
    got_cpl = [n for n in parsed.leaves() if n.startswith("CPL ")]
    assert sorted(n.split()[1] for n in got_cpl) == sorted(str(c) for c in cpl_tracks)
    for c, prefix in cpl_tracks.items():
        (track,) = [n for n in got_cpl if n.startswith(prefix)]
        want = Counter(ev["kind"][ev["cpl"] == c].tolist())
        assert parsed.category_counts(track) == want
        assert summary["tracks"][track] == sum(want.values())
    assert summary["events"] == len(ev["seq"]) and not summary["cut"]
    assert summary["file"] == str(out) and summary["bytes"] == out.stat().st_size


def test_guest_instants_sit_at_their_vtime(golden_trace: Path, exported: Any) -> None:
    out, _ = exported
    ev = events(golden_trace)
    parsed = Parsed(out)
    for track in (n for n in parsed.leaves() if n.startswith("CPL ")):
        for ts, e in parsed.events[track]:
            if e.type == END:
                continue
            seq = parsed.arg(e, "seq")
            assert ts == int(ev["vtime"][seq])  # 1 instruction = 1 ns at 1 GHz
            assert parsed.cats[e.category_iids[0]] == ev["kind"][seq]


def test_backend_tracks_hold_each_costed_event_as_a_slice(
    golden_trace: Path, exported: Any
) -> None:
    from replayer import backends, costs, engine
    from replayer.backends import MECHANISMS
    from replayer.trace import load

    out, summary = exported
    parsed = Parsed(out)
    tr = load(golden_trace)
    table = costs.load("p4")
    backend_tracks = [n for n in parsed.leaves() if not n.startswith("CPL ")]
    assert backend_tracks == list(BACKENDS)
    for run in backends.resolve(",".join(BACKENDS)):
        r = engine.replay(tr, run, table)
        costed = r.cycles > 0
        want = Counter(MECHANISMS[m] for m in r.mechanism[costed].tolist())
        assert parsed.category_counts(run.label) == want
        assert summary["tracks"][run.label] == int(costed.sum())
        # properly nested (never overlapping), each slice as long as its cycles
        open_at, total = None, 0
        for ts, e in parsed.events[run.label]:
            if e.type == BEGIN:
                assert open_at is None, "overlapping slices"
                open_at = ts
                assert parsed.arg(e, "cycles") == int(r.cycles[parsed.arg(e, "seq")])
            else:
                assert e.type == END and open_at is not None
                total += ts - open_at
                open_at = None
        assert open_at is None
        assert total == int(r.cycles.sum())


def test_a_window_and_the_cap(golden_trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.pftrace"
    r = run(golden_trace, "--from", 100, "--to", 5099, "--limit", 1000, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (s["first_seq"], s["last_seq"], s["events"], s["events_in_range"]) == (
        100,
        1099,
        1000,
        5000,
    )
    assert s["cut"] and "the first 1,000 of 5,000 events" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    parsed = Parsed(out)
    seqs = sorted(
        parsed.arg(e, "seq") for n in parsed.leaves() for _t, e in parsed.events[n] if e.type != END
    )
    assert seqs == list(range(100, 1100))
    r = run(golden_trace, "--from", 100, "--to", 199, "-o", out, "--force")
    assert r.exit_code == 0 and r.stderr == "", r.output


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--replay", "nope"], 2, "unknown backend 'nope'"),
        (["--from", "10", "--to", "5"], 2, "--to 5 is before --from 10"),
        (["--limit", "-1"], 2, "--limit must be"),
        ([], 2, "exists (use --force"),
    ],
)
def test_bad_input_is_one_line(
    golden_trace: Path, tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    out = tmp_path / "x.pftrace"
    out.write_bytes(b"kept")
    r = run(golden_trace, "-o", out, *args, *([] if says.startswith("exists") else ["--force"]))
    assert r.exit_code == code
    assert r.stderr.startswith("pvscope: error: ") and says in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.output
    assert out.read_bytes() == b"kept" and sorted(tmp_path.iterdir()) == [out]


def test_not_a_trace(tmp_path: Path) -> None:
    r = run(tmp_path, "-o", tmp_path / "x.pftrace")
    assert r.exit_code == 1 and "not a trace" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    r = CliRunner().invoke(main, ["export", str(tmp_path), "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--perfetto" in r.stderr
