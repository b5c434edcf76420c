"""Fixtures for replayer tests: synthetic traces built in code, small real recordings."""

from __future__ import annotations

from pathlib import Path

import pytest

from replayer import costs
from replayer.trace import Trace, load
from tests.support import synth


@pytest.fixture(scope="session")
def p4() -> costs.CostTable:
    """The default cost table."""
    return costs.load("p4")


@pytest.fixture(scope="session")
def synth_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic workload (boot, forks, irqsave, timer, remaps, a reclaim)."""
    return synth.small_trace(tmp_path_factory.mktemp("synth") / "trace", seed=1, rounds=4)


@pytest.fixture(scope="session")
def synth_trace(synth_path: Path) -> Trace:
    """The synthetic workload, decoded."""
    return load(synth_path)


@pytest.fixture
def load_order(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What a replay does, in order, of fixing glibc's mmap threshold ("threshold") and
    loading the trace ("load"), as it does them."""
    from replayer import api

    order: list[str] = []
    fix, load_ = api._large_frees_go_back, api.load

    def fixed() -> bool:
        order.append("threshold")
        return fix()

    def loaded(path: Path) -> Trace:
        order.append("load")
        return load_(path)

    monkeypatch.setattr(api, "_large_frees_go_back", fixed)
    monkeypatch.setattr(api, "load", loaded)
    return order


def _record(tmp_path_factory: pytest.TempPathFactory, guest: str, scale: int) -> Path:
    from recorder.record import record

    out = tmp_path_factory.mktemp(guest) / "trace"
    record(guest, out, scale=scale)
    return out


@pytest.fixture(scope="session")
def pvcall_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real recording of the pvcall guest at a small scale."""
    return _record(tmp_path_factory, "pvcall", 1000)


@pytest.fixture(scope="session")
def fork_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real recording of the fork guest at a small scale."""
    return _record(tmp_path_factory, "fork", 60)
