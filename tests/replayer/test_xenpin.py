"""Xen's lazy pinning: stores into a tree not yet pinned are plain, the first load of a
directory pays its pin, and the kernel's shared tables are validated once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from replayer import costs
from replayer.backends import MECH_CODE, resolve
from replayer.engine import replay
from replayer.engine.common import _H
from replayer.engine.derived import _pte_entries
from replayer.engine.xenpin import pin_loads, pinned_stores
from replayer.trace import load


@pytest.fixture(scope="module")
def fork(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recorder.record import record

    out = tmp_path_factory.mktemp("xenpin") / "fork"
    record("fork", out, scale=20)
    return out


def test_each_new_directory_is_pinned_at_its_first_load_and_kernel_tables_once(
    fork: Path,
) -> None:
    tr = load(fork)
    pins = pin_loads(tr)
    assert all(tr.hook[k] == _H["write_cr3"] for k in pins)
    first, *later = [pins[k] for k in sorted(pins)]
    assert first > 10  # init_mm: the kernel's direct-map tables with it
    assert later and max(later) < first  # later trees share them, validated already
    # every directory the trace allocates and loads is pinned once per allocation
    cr3 = tr.arg0[tr.hook == _H["write_cr3"]] >> 12
    assert len(pins) <= len(set(cr3.tolist())) + int(
        np.isin(tr.hook, [_H["alloc_pd"], _H["alloc_pd_clone"]]).sum()
    )


def test_stores_before_the_pin_cost_what_they_cost_natively(fork: Path) -> None:
    tr = load(fork)
    table = costs.load("p4")
    runs = {r.label: r for r in resolve("native,xen-pv")}
    nat = replay(tr, runs["native"], table)
    xen = replay(tr, runs["xen-pv"], table)
    ent, _ = _pte_entries(tr)
    pinned = pinned_stores(tr)
    stores = ent >= 0
    # boot builds the kernel's tables before the first CR3 load: none is pinned then
    first_load = int(np.nonzero(tr.hook == _H["write_cr3"])[0][0])
    assert stores[:first_load].any() and not pinned[:first_load].any()
    unpinned = stores & ~pinned & (xen.mechanism == MECH_CODE["native"])
    assert unpinned.sum() > 1000
    assert (xen.cycles[unpinned] == nat.cycles[unpinned]).all()
    # once pinned, a plain store faults into Xen's emulation
    trapped = stores & (xen.mechanism == MECH_CODE["wp_fault"])
    assert trapped.any() and pinned[trapped].all()
    assert xen.summary["hypercalls"] >= len(pin_loads(tr))
