"""Per-backend exit reasons, ``perf kvm stat report`` style: where each backend's cycles go.

A *reason* is the mechanism the backend used for an event (``replayer.backends.MECHANISMS``:
``vm_exit``, ``hypercall``, ``trap``, ``wp_fault``, ``rom_call``, ``queued``, ...) and what
the event was: its ``paravirt_ops`` hook for a hook call, else its kind (``interrupt``,
``exception``, ``mmio_write``, ...).  So ``vm_exit read_cr3`` is hvm-shadow exiting on
``read_cr3``, ``hypercall set_pmd`` a Xen mmu_update, ``wp_fault set_pte`` a write to a
write-protected page table, ``delivery interrupt`` the cost of delivering an interrupt.

Per reason: events, the VM exits, hypercalls and traps those events caused (one event
may cause several, or none: a queued PTE update costs its hypercall at the flush), total
cycles, mean cycles per event and the share of the backend's cycles.  Every event has
exactly one reason, so the shares of a backend sum to 1.  The saved query
``analysis/queries/exit_reasons.sql`` gives the same rows from the results' Parquet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from replayer.backends import MECHANISMS
from replayer.engine import summary
from replayer.engine.result import NAMES, RunResult

#: Reasons a ``pvscope replay --reasons`` table shows per backend unless told otherwise.
TOP = 8
#: Counters summed per reason, in output order.
COUNTERS = ("exits", "hypercalls", "traps")


def _rows(events: np.ndarray, sums: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Rows from the events and sums per reason code (:func:`summary.sum_by_code`)."""
    m = len(NAMES)
    total = int(sums["cycles"].sum())
    rows = [
        _row(
            MECHANISMS[c // m],
            NAMES[c % m],
            int(events[c]),
            {k: int(sums[k][c]) for k in ("cycles", *COUNTERS)},
            total,
        )
        for c in np.flatnonzero(events)
    ]
    rows.sort(key=lambda r: (-r["cycles"], r["reason"]))
    return rows


def _row(mech: str, name: str, events: int, sums: dict[str, int], total: int) -> dict[str, Any]:
    """One reason's row: its totals, mean cycles and share of the run's ``total``."""
    return {
        "reason": f"{mech} {name}",
        "mechanism": mech,
        "name": name,
        "events": events,
        **{k: sums[k] for k in COUNTERS},
        "cycles": sums["cycles"],
        "mean_cycles": sums["cycles"] / events,
        "share": sums["cycles"] / total if total else None,
    }


def from_result(r: RunResult) -> list[dict[str, Any]]:
    """The reasons of one replay, from its per-event arrays (summed with its summary)."""
    by = r.by_reason if r.by_reason is not None else summary.reason_sums(r)
    return _rows(by.events, by.sums)


def from_run_dir(run_dir: Path) -> list[dict[str, Any]]:
    """The reasons of one written replay (``RESULTS/backend=LABEL``): its
    ``reasons.parquet``, which the replay wrote from :func:`from_result`."""
    t = pq.read_table(Path(run_dir) / "reasons.parquet").to_pylist()
    total = sum(r["cycles"] for r in t)  # every event has one reason
    rows = [
        _row(
            r["mechanism"], r["name"], r["events"], {k: r[k] for k in ("cycles", *COUNTERS)}, total
        )
        for r in t
    ]
    rows.sort(key=lambda r: (-r["cycles"], r["reason"]))
    return rows


def lines(label: str, rows: list[dict[str, Any]], top: int = TOP) -> list[str]:
    """A text table of one backend's ``top`` reasons by cycles (reasons costing nothing
    left out), and a line for the rest: a title line, the header, the rows."""
    from pvscope import display

    shown = [r for r in rows if r["cycles"]][:top]
    t = display.Table(plain=True, note="--json for every reason")
    t.add_columns(
        ("reason", False, 9),
        ("events", True, 6),
        ("exits", True, 5),
        ("hcalls", True, 5),
        ("traps", True, 5),
        ("cycles", True, 8),
        ("mean", True, 4),
        ("share", True, 7),
    )
    for r in shown:
        t.add_row(
            r["reason"],
            *(display.count(r[k]) for k in ("events", "exits", "hypercalls", "traps", "cycles")),
            display.number(r["mean_cycles"]),
            display.share(r["share"] or 0),
        )
    rest = rows[len(shown) :]
    if rest:
        t.add_row(
            f"({len(rest)} more)",
            *(
                display.count(sum(r[k] for r in rest))
                for k in ("events", "exits", "hypercalls", "traps", "cycles")
            ),
            "",
            display.share(sum(r["share"] or 0 for r in rest)),
        )
    title = f"{label}: top {len(shown)} of {len(rows)} reasons by cycles"
    return [title, *t.render().rstrip("\n").splitlines()]
