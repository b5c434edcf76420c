"""Fixtures for analysis tests: the committed golden trace, small recordings and trace sets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pvscope.paths import GOLDEN_ROOT

GOLDEN = GOLDEN_ROOT / "pvcall" / "trace"


@pytest.fixture(scope="session")
def golden_trace() -> Path:
    """The committed pvcall golden trace (read it, never write into it)."""
    return GOLDEN


@pytest.fixture(scope="session")
def small_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pvcall recorded at a small scale of its own, so it differs from the golden trace."""
    from recorder.record import record

    out = tmp_path_factory.mktemp("small") / "small.trace"
    record("pvcall", out, scale=300, seed=7)
    return out


@pytest.fixture(scope="session")
def trace_set(tmp_path_factory: pytest.TempPathFactory, small_trace: Path) -> Path:
    """A trace set of two traces under plain directory names."""
    root = tmp_path_factory.mktemp("set")
    shutil.copytree(GOLDEN, root / "golden")
    shutil.copytree(small_trace, root / "small")
    return root


@pytest.fixture(scope="session")
def hive_set(tmp_path_factory: pytest.TempPathFactory, small_trace: Path) -> Path:
    """The same two traces, Hive style (trace=NAME)."""
    root = tmp_path_factory.mktemp("hive")
    shutil.copytree(GOLDEN, root / "trace=golden")
    shutil.copytree(small_trace, root / "trace=small")
    return root


def workload_traces() -> list[Path]:
    """Every committed workload trace (one per golden workload)."""
    return sorted(p / "trace" for p in GOLDEN_ROOT.iterdir() if (p / "trace").is_dir())


def _workload_names() -> list[str]:
    from recorder.guests import GUESTS

    return list(GUESTS)


@pytest.fixture(scope="session")
def workload_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every built-in workload recorded at its small scale, as one trace set."""
    from recorder.guests import GUESTS
    from recorder.record import record

    root = tmp_path_factory.mktemp("workloads")
    for name, g in GUESTS.items():
        record(name, root / name, scale=g.small_scale)
        replay(root / name)
    return root


@pytest.fixture(params=_workload_names())
def workload(request: pytest.FixtureRequest, workload_set: Path) -> Path:
    """One built-in workload's small-scale trace."""
    return workload_set / request.param


#: The replays the tests make: three backends as designed and three vmi ablations, one
#: of them broken (irq masking with no fallback).
RUNS = (
    ("native,vmi,xen-pv", None, None),
    ("vmi", "irq", "none"),
    ("vmi", "irq", "trap"),
    ("vmi", "pteupdate", "trap"),
)


def replay(trace: Path) -> None:
    """Replay ``trace`` with RUNS into ``trace/replay`` (the default results layout)."""
    from replayer import api, backends, costs

    runs = [r for spec in RUNS for r in backends.resolve(*spec)]
    api.replay_trace(trace, runs, costs.load(costs.DEFAULT_PRESET))


@pytest.fixture(scope="session")
def replayed_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden pvcall trace with real replay results beside it."""
    out = tmp_path_factory.mktemp("replayed") / "trace"
    shutil.copytree(GOLDEN, out)
    replay(out)
    return out


@pytest.fixture(scope="session")
def replayed_set(tmp_path_factory: pytest.TempPathFactory, replayed_trace: Path) -> Path:
    """A trace set of two traces, one with replay results and one without."""
    root = tmp_path_factory.mktemp("rset")
    shutil.copytree(replayed_trace, root / "a")
    shutil.copytree(GOLDEN, root / "b")
    return root
