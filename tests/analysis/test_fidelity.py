"""pvscope fidelity: the claims are data with sources, the tolerances decide, and every
row holds to what it is expected to show today."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from analysis import fidelity
from analysis.fidelity import CLAIMS, PER_OP_FACTOR, Claim, evaluate
from pvscope.cli import main
from recorder.guests import GUESTS
from replayer import costs
from replayer.backends import resolve


def test_every_claim_names_its_source_workload_table_and_backends() -> None:
    for c in CLAIMS:
        assert c.source and c.claim, c.id
        assert c.workload in GUESTS, c.id
        assert c.table in costs.presets(), c.id
        assert c.kind in ("per_op", "ranking", "range", "os_scaled"), c.id
        if c.kind == "os_scaled":
            assert 0 < c.os_share < 1 and c.low < c.published < c.high, c.id
        for b in (c.backend, *c.order, *c.ratio):
            if b:
                assert resolve(b), (c.id, b)
        if not c.expect:
            assert len(c.why) > 40, c.id  # a claim expected to disagree says why
        if c.kind == "per_op":
            assert c.published > 0 and c.phase, c.id
        if c.kind == "range":
            assert 0 < c.low < c.high, c.id


def _one(claim: Claim, per_op: dict, slow: dict) -> fidelity.Row:
    saved = fidelity.CLAIMS
    fidelity.CLAIMS = (claim,)
    try:
        whole = {b: v if isinstance(v, dict) else {"slowdown": v} for b, v in slow.items()}
        return evaluate(lambda t: per_op, lambda w, t: whole)[0]
    finally:
        fidelity.CLAIMS = saved


def test_per_operation_agrees_within_an_order_of_magnitude_either_way() -> None:
    c = Claim("x", "c", "s", "nanobench", "p4", "per_op", backend="bt", phase="in", published=100)
    for got, ok in (
        (100, True),
        (100 * PER_OP_FACTOR, True),
        (100 * PER_OP_FACTOR + 1, False),
        (100 / PER_OP_FACTOR, True),
        (9.9, False),
    ):
        assert _one(c, {("in", "bt"): got}, {}).agree is ok, got
    assert not _one(c, {}, {}).agree  # no prediction is no agreement
    extra = Claim(
        "y",
        "c",
        "s",
        "nanobench",
        "p4",
        "per_op",
        backend="bt",
        phase="syscall",
        published=2000,
        minus_native=True,
    )
    row = _one(extra, {("syscall", "bt"): 3000, ("syscall", "native"): 1000}, {})
    assert row.predicted == 2000 and row.agree


def test_a_ranking_agrees_only_in_the_published_order() -> None:
    c = Claim("r", "c", "s", "fork", "p4", "ranking", order=("native", "xen-pv", "bt"))
    assert _one(c, {}, {"native": 1.0, "xen-pv": 1.2, "bt": 1.5}).agree
    assert not _one(c, {}, {"native": 1.0, "xen-pv": 1.6, "bt": 1.5}).agree


def test_an_unexplained_disagreement_is_not_ok() -> None:
    c = Claim("r", "c", "s", "fork", "p4", "range", ratio=("a", "b"), low=1, high=2)
    row = _one(c, {}, {"a": 3.0, "b": 1.0})
    assert not row.agree and not row.ok
    why = Claim(
        "r",
        "c",
        "s",
        "fork",
        "p4",
        "range",
        ratio=("a", "b"),
        low=1,
        high=2,
        expect=False,
        why="because",
    )
    assert _one(why, {}, {"a": 3.0, "b": 1.0}).ok


def test_an_os_scaled_overhead_scales_by_the_two_os_shares() -> None:
    """A workload that is half user time and 20% slower predicts 2.8% for a run that is 7%
    OS: (0.2) * 0.07 / 0.5."""
    c = Claim(
        "k",
        "c",
        "s",
        "mixed",
        "p4",
        "os_scaled",
        backend="xen-pv",
        published=0.03,
        low=0.01,
        high=0.09,
        os_share=0.07,
    )
    native = {
        "slowdown": 1.0,
        "cycles": 1000,
        "cpi_user": 1.0,
        "guest_instructions": {"user": 500, "kernel": 400},
    }
    row = _one(c, {}, {"native": native, "xen-pv": {"slowdown": 1.2}})
    assert row.predicted == pytest.approx(0.028) and row.agree
    assert not _one(c, {}, {"native": native, "xen-pv": {"slowdown": 2.0}}).agree


@pytest.fixture(scope="module")
def report() -> list[dict]:
    r = CliRunner().invoke(main, ["fidelity", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_fidelity_holds_every_row_to_its_expectation(report: list[dict]) -> None:
    """A change that makes a claim agree or disagree unexpectedly shows here: update the
    claim's expectation (and its why) on purpose."""
    assert [r["id"] for r in report] == [c.id for c in CLAIMS]
    for r in report:
        assert r["agree"] is fidelity.BY_ID[r["id"]].expect, (r["id"], r["predicted_text"])
        assert r["ok"]


def test_the_nanobenchmarks_are_predicted_for_the_papers_three_columns(
    report: list[dict],
) -> None:
    per_op = [r for r in report if r["kind"] == "per_op"]
    assert {r["backend"] for r in per_op} == {"native", "bt", "hvm-shadow"}
    assert all(r["predicted"] and r["predicted"] > 0 for r in per_op)
