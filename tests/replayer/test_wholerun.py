"""The whole-run estimate: guest instructions by privilege level, measured TLB refills, and
how a cost table's guest parameters price them."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from replayer import costs
from replayer.backends import resolve
from replayer.engine import replay
from replayer.engine.wholerun import guest_instructions, tlb_refills
from replayer.trace import load


@pytest.fixture(scope="module")
def fork_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recorder.record import record

    out = tmp_path_factory.mktemp("wholerun") / "fork"
    record("fork", out, scale=20)
    return out


def _sql(trace: Path, sql: str) -> list[tuple]:
    rel = duckdb.sql(
        sql.replace("TLB", f"read_parquet('{trace}/tlb.parquet')").replace(
            "EVENTS", f"read_parquet('{trace}/events.parquet')"
        )
    )
    assert rel is not None
    return rel.fetchall()


def test_the_recorder_samples_the_tlb_at_every_full_flush(fork_trace: Path) -> None:
    """One sample per CR3 load or full flush once paging is on, and one at the end; each
    names the flushing call; a fork workload walks user pages."""
    rows = _sql(
        fork_trace,
        "select e.kind, e.hook, t.user_pages from TLB t join EVENTS e using (seq) order by seq",
    )
    last = _sql(fork_trace, "select max(seq) from EVENTS")[0][0]
    flushing = {"write_cr3", "flush_tlb_user", "flush_tlb_kernel"}
    assert all(h in flushing for _k, h, _u in rows[:-1])
    n_flush = _sql(
        fork_trace,
        "select count(*) from EVENTS where hook in ('write_cr3','flush_tlb_user',"
        "'flush_tlb_kernel')",
    )[0][0]
    assert n_flush - 3 <= len(rows) - 1 <= n_flush  # the first loads precede paging
    assert _sql(fork_trace, "select max(seq) from TLB")[0][0] == last
    assert sum(u for _k, _h, u in rows) > 0


def test_guest_instructions_cover_the_run_less_idle(fork_trace: Path) -> None:
    tr = load(fork_trace)
    ins = guest_instructions(tr)
    assert ins["kernel"] > 0 and ins["user"] > 0
    total = tr.manifest["counts"]["instructions"]
    assert ins["kernel"] + ins["user"] == total
    # user time is where user code caused the next event
    assert ins["user"] < total // 2


def test_whole_run_adds_guest_and_tlb_to_the_interface(fork_trace: Path) -> None:
    tr = load(fork_trace)
    table = costs.load("p4")
    runs = {r.label: r for r in resolve("native,xen-pv,hvm-npt", None, None)}
    refills = tlb_refills(tr)
    ins = guest_instructions(tr)
    guest = ins["kernel"] * table.guest["cpi_kernel"] + ins["user"] * table.guest["cpi_user"]
    native = replay(tr, runs["native"], table).summary["whole_run"]
    assert native["slowdown"] == 1.0
    assert native["cycles"] == round(
        native["interface_cycles"] + guest + refills * table.guest["tlb_walk_native"]
    )
    xen = replay(tr, runs["xen-pv"], table).summary
    npt = replay(tr, runs["hvm-npt"], table).summary
    assert xen["whole_run"]["tlb_cycles"] == round(refills * table.guest["tlb_walk_native"])
    assert npt["whole_run"]["tlb_cycles"] == round(refills * table.guest["tlb_walk_nested"])
    # the guest's own work dilutes the interface ratio: 1 < whole-run < interface
    assert 1 < xen["whole_run"]["slowdown"] < xen["interface_ratio"]
    assert xen["whole_run"]["native_cycles"] == native["cycles"]


def test_a_dearer_kernel_cpi_costs_exactly_its_kernel_instructions(
    fork_trace: Path, tmp_path: Path
) -> None:
    tr = load(fork_trace)
    text = (costs.PRESET_DIR / "p4.toml").read_text()
    base = costs.load("p4")
    old = base.guest["cpi_kernel"]
    marker = "[guest.cpi_kernel]\ncycles = "
    assert marker in text
    head, rest = text.split(marker, 1)
    rest = rest.split("\n", 1)[1]
    (tmp_path / "t.toml").write_text(f"{head}{marker}{old + 1}\n{rest}")
    dear = costs.load(tmp_path / "t.toml")
    run = next(iter(resolve("native", None, None)))
    a = replay(tr, run, base).summary["whole_run"]
    b = replay(tr, run, dear).summary["whole_run"]
    assert b["guest_cycles"] - a["guest_cycles"] == pytest.approx(
        guest_instructions(tr)["kernel"], abs=1
    )
    assert np.isclose(b["slowdown"], 1.0)
