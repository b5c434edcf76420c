"""Synthetic traces follow the recorder's conventions and read as valid traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pvscope import schema
from pvscope.hooks import BY_NAME
from replayer import backends, costs, engine
from replayer.trace import K_HOOK, K_INTERRUPT, K_MMIO_READ, K_MMIO_WRITE, Trace, load
from tests.support import synth


def test_a_synthetic_trace_is_a_valid_trace(synth_path: Path) -> None:
    assert schema.read_manifest(synth_path)["schema_version"] == schema.SCHEMA_VERSION
    for t in schema.TABLES:
        schema.read_table(synth_path, t)


def test_apic_hooks_are_followed_by_their_mmio(synth_trace: Trace) -> None:
    tr = synth_trace
    for k in np.nonzero(np.isin(tr.hook, [BY_NAME["apic_write"].id, BY_NAME["apic_read"].id]))[0]:
        assert tr.kind[k + 1] in (K_MMIO_WRITE, K_MMIO_READ)
        assert tr.arg0[k + 1] == 0xFEE00000 + tr.arg0[k]


def test_interrupts_arrive_only_with_if_set(synth_trace: Trace) -> None:
    tr = synth_trace
    ints = np.nonzero(tr.kind == K_INTERRUPT)[0]
    assert len(ints) > 5 and tr.vif[ints].all()
    # at least one waited for an unmask: the event before it is a hook that set IF
    waited = [k for k in ints if tr.kind[k - 1] == K_HOOK and not tr.vif[k - 1]]
    assert waited


def test_pointers_switch_to_the_linear_map_when_paging_starts(synth_trace: Trace) -> None:
    tr = synth_trace
    on = int(np.nonzero(tr.hook == BY_NAME["write_cr0"].id)[0][0])
    ptes = np.nonzero(tr.hook == BY_NAME["set_pte"].id)[0]
    assert (tr.arg0[ptes[ptes < on]] < 0xC0000000).all()
    assert (tr.arg0[ptes[ptes > on]] >= 0xC0000000).all()


def test_the_same_seed_gives_the_same_trace(tmp_path: Path) -> None:
    a = synth.small_trace(tmp_path / "a", seed=5, rounds=2)
    b = synth.small_trace(tmp_path / "b", seed=5, rounds=2)
    for f in ("events.parquet", "state.parquet", "manifest.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_a_tiled_trace_replays_clean_and_scales(tmp_path: Path) -> None:
    p = synth.large_trace(tmp_path / "big", 20_000)
    tr = load(p)
    assert 15_000 <= tr.n <= 25_000
    b, start = synth.bench_builder()
    assert tr.n == start + (tr.n - start) // (b.n - start) * (b.n - start)
    for label in ("native", "vmi", "lguest", "hvm-shadow"):
        r = engine.replay(tr, backends.resolve(label)[0], costs.load("p4"))
        assert r.violations == [], (label, r.violations[:2])
