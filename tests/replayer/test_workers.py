"""How many workers a replay starts: CPUs, groups of runs, and the memory available."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from replayer import workers
from replayer.cli import replay

GIB = 1 << 30
EVENTS = 10_000_000


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "usable_cpus", lambda: 4)


def _free_for(jobs: int, events: int = EVENTS) -> int:
    """Available memory that holds the parent and exactly ``jobs`` workers."""
    return workers.parent_need(events) + jobs * workers.worker_need(events)


@pytest.mark.usefixtures("four_cpus")
def test_plenty_of_memory_gives_a_worker_per_cpu_but_no_more_than_groups() -> None:
    p = workers.plan(EVENTS, groups=20, free=100 * GIB)
    assert (p.jobs, p.capped, p.note()) == (4, False, None)
    assert workers.plan(EVENTS, groups=3, free=100 * GIB).jobs == 3


@pytest.mark.usefixtures("four_cpus")
def test_memory_caps_the_workers_and_says_so() -> None:
    for fits in (1, 2, 3):
        p = workers.plan(EVENTS, groups=20, free=_free_for(fits))
        assert p.jobs == fits and p.capped
        note = p.note()
        assert note is not None and f"{fits} worker(s), not 4" in note
    # a byte short of the third worker: two
    assert workers.plan(EVENTS, groups=20, free=_free_for(3) - 1).jobs == 2


@pytest.mark.usefixtures("four_cpus")
def test_what_the_parent_holds_already_is_not_counted_twice() -> None:
    held = workers.parent_need(EVENTS)
    free = 2 * workers.worker_need(EVENTS)
    assert workers.plan(EVENTS, groups=20, free=free).jobs == 1
    assert workers.plan(EVENTS, groups=20, free=free, held=held).jobs == 2


@pytest.mark.usefixtures("four_cpus")
def test_too_little_memory_for_one_still_replays_and_warns() -> None:
    p = workers.plan(EVENTS, groups=20, free=GIB // 4)
    assert p.jobs == 1
    note = p.note()
    assert note is not None and "may swap" in note


@pytest.mark.usefixtures("four_cpus")
def test_an_explicit_count_is_taken_as_given_with_a_warning_where_it_may_not_fit() -> None:
    p = workers.plan(EVENTS, groups=20, jobs=3, free=_free_for(1))
    assert p.jobs == 3 and not p.capped
    note = p.note()
    assert note is not None and "may swap" in note
    assert workers.plan(EVENTS, groups=20, jobs=3, free=100 * GIB).note() is None
    assert workers.plan(EVENTS, groups=2, jobs=3, free=100 * GIB).jobs == 2


@pytest.mark.usefixtures("four_cpus")
def test_unknown_memory_leaves_the_cpus_to_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "available", lambda: None)
    p = workers.plan(EVENTS, groups=20)
    assert (p.jobs, p.free, p.note()) == (4, None, None)


def test_available_memory_is_read_from_meminfo(tmp_path: Path) -> None:
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       24000000 kB\nMemFree: 100 kB\nMemAvailable:   2048 kB\n")
    none = tmp_path / "no-cgroup"
    assert workers.available(f, none) == 2048 * 1024
    f.write_text("MemTotal:       24000000 kB\n")
    assert workers.available(f, none) is None
    f.write_text("MemAvailable: lots\n")
    assert workers.available(f, none) is None
    assert workers.available(tmp_path / "absent", none) is None
    assert workers.available() is None or workers.available() > 0
    assert workers.resident() > 0


def _v2(root: Path, path: str, limit: str, current: int, inactive: int = 0) -> Path:
    d = root / path.lstrip("/")
    d.mkdir(parents=True, exist_ok=True)
    (d / "memory.max").write_text(f"{limit}\n")
    (d / "memory.current").write_text(f"{current}\n")
    (d / "memory.stat").write_text(f"anon 5\ninactive_file {inactive}\nactive_file 9\n")
    return d


def test_a_container_limit_caps_what_is_available(tmp_path: Path) -> None:
    """MemAvailable is the host's; a control group's limit (a container's) is tighter."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemAvailable: {64 * GIB // 1024} kB\n")
    of, fs = tmp_path / "cgroup", tmp_path / "fs"
    of.write_text("0::/box/job\n")
    _v2(fs, "/box", str(4 * GIB), 3 * GIB)  # the parent group: 1 GiB left
    _v2(fs, "/box/job", "max", 2 * GIB, inactive=GIB // 2)
    assert workers.cgroup_headroom(of, fs) == GIB
    assert workers.available(meminfo, of, fs) == GIB
    # the group's page cache not yet active counts as free
    _v2(fs, "/box/job", str(3 * GIB), 2 * GIB, inactive=GIB // 2)
    _v2(fs, "/box", "max", 0)
    assert workers.cgroup_headroom(of, fs) == GIB + GIB // 2
    # no limit anywhere: the system's figure
    _v2(fs, "/box/job", "max", 0)
    assert workers.cgroup_headroom(of, fs) is None
    assert workers.available(meminfo, of, fs) == 64 * GIB


def test_a_cgroup_v1_memory_limit_is_read_too(tmp_path: Path) -> None:
    of, fs = tmp_path / "cgroup", tmp_path / "fs"
    of.write_text("5:cpu,cpuacct:/x\n4:memory:/lxc/c1\n0::/\n")
    d = fs / "memory" / "lxc" / "c1"
    d.mkdir(parents=True)
    (d / "memory.limit_in_bytes").write_text(f"{2 * GIB}\n")
    (d / "memory.usage_in_bytes").write_text(f"{GIB}\n")
    (d / "memory.stat").write_text(f"cache 1\ntotal_inactive_file {GIB // 4}\n")
    (fs / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert workers.cgroup_headroom(of, fs) == GIB + GIB // 4
    # a limit already passed leaves nothing, not a negative figure
    (d / "memory.usage_in_bytes").write_text(f"{3 * GIB}\n")
    (d / "memory.stat").write_text("")
    assert workers.cgroup_headroom(of, fs) == 0
    assert workers.cgroup_headroom(tmp_path / "absent", fs) is None


def test_the_model_grows_with_the_trace() -> None:
    assert workers.worker_need(2 * EVENTS) - workers.worker_need(EVENTS) == (
        workers.WORKER_BYTES_PER_EVENT * EVENTS
    )
    assert workers.parent_need(0) == workers.worker_need(0) == workers.BASE


def _manifests(out: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(out.glob("backend=*/manifest.json"))}


def test_a_replay_capped_by_memory_runs_in_this_process_with_the_same_results(
    synth_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [str(synth_path), "-b", "native,vmi,lguest", "-q"]
    r = CliRunner().invoke(replay, [*args, "-j", "2", "-o", str(tmp_path / "two")])
    assert r.exit_code == 0, r.output
    monkeypatch.setattr(workers, "available", lambda: 1 << 20)
    r = CliRunner().invoke(replay, [*args, "-o", str(tmp_path / "one")])
    assert r.exit_code == 0, r.output
    assert "replay: " in r.output and "may swap" in r.output
    two, one = _manifests(tmp_path / "two"), _manifests(tmp_path / "one")
    assert len(two) == 3 and one == two


def test_a_job_count_below_one_is_a_usage_error(synth_path: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(replay, [str(synth_path), "-b", "native", "-j", "0", "-q"])
    assert r.exit_code == 2 and "--jobs" in r.output
