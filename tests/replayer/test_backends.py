"""Backends as data: rows complete, names resolved, ablations as the issue defines them."""

from __future__ import annotations

import pytest

from pvscope.errors import UsageError
from pvscope.hooks import HOOKS
from replayer import backends
from replayer.backends import BACKENDS, CATEGORY, EVENT_COSTS, all_runs, resolve
from replayer.costs import CostTable


def test_the_seven_backends() -> None:
    assert list(BACKENDS) == ["native", "vmi", "xen-pv", "lguest", "hvm-shadow", "hvm-npt", "bt"]
    for b in BACKENDS.values():
        assert set(b.costs) >= set(CATEGORY.values()) | set(EVENT_COSTS)
        for h in HOOKS:
            b.cost(h.name)  # every hook priced
        assert b.paravirt == bool(b.relies_on)


def test_all_is_every_backend_and_every_ablation() -> None:
    labels = [r.label for r in all_runs()]
    assert len(labels) == 7 + 2 * (5 + 4 + 3)
    assert "vmi-without-apic-none" in labels and "lguest-without-pteupdate-trap" in labels
    assert "lguest-without-ptalloc-none" not in labels  # lguest never hooked alloc_pt
    assert "xen-pv-without-apic-trap" not in labels  # Xen has event channels, no APIC


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("kvm",), "unknown backend 'kvm'"),
        (("vmi", "speed", "trap"), "unknown requirement 'speed'"),
        (("vmi", "irq", None), "--without and --fallback go together"),
        (("vmi", "irq", "maybe"), "unknown fallback 'maybe'"),
        (("hvm-npt", "irq", "trap"), "not a paravirtual backend"),
        (("lguest", "apic", "none"), "lguest does not rely on apic"),
        (("all", "irq", "none"), "already runs every backend"),
        ((",",), "no backend named"),
    ],
)
def test_bad_names_are_usage_errors(args: tuple, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve(*args)


def test_resolve_keeps_order_and_drops_repeats() -> None:
    assert [r.label for r in resolve("xen-pv,native,xen-pv")] == ["xen-pv", "native"]
    assert [r.label for r in resolve("vmi,lguest", "irq", "none")] == [
        "vmi-without-irq-none",
        "lguest-without-irq-none",
    ]


def test_costs_sum_their_primitives(p4: CostTable) -> None:
    vmi, xen, npt = BACKENDS["vmi"], BACKENDS["xen-pv"], BACKENDS["hvm-npt"]
    # a VMI SetPxE: the ROM call, and the ROM's entry to the VMM (estimates 20 + 250)
    assert vmi.cost("set_pte").cycles(p4) == 20 + 250
    # Xen's irq_disable is the inlined mask-byte store
    assert xen.cost("irq_disable").cycles(p4) == p4["mem_op"]
    # an APIC access under EPT is an MMIO exit plus decoding
    c = npt.cost("apic_write")
    assert c.cycles(p4) == p4["call_ret"] + p4["vm_exit"] + p4["emulate_mmio"] and c.exits == 1


def test_an_ablation_swaps_only_its_requirements_costs(p4: CostTable) -> None:
    run = backends.Run(BACKENDS["vmi"], "irq", "trap")
    m = run.model()
    assert m.cost("save_fl").cycles(p4) == p4["bt_translated"]
    assert m.cost("iret").cycles(p4) == BACKENDS["vmi"].cost("iret").cycles(p4)
    assert m.cost("set_pte") == BACKENDS["vmi"].cost("set_pte")
    none = backends.Run(BACKENDS["xen-pv"], "pteupdate", "none").model()
    assert none.cost("set_pte").mechanism == "native"
    assert "set_pte_at" not in none.batchable
