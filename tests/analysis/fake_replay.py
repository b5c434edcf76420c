"""Replay results written in code, in the layout the analysis reads, for tests.

``TRACE/replay/backend=NAME/{events,summary,violations}.parquet``: per-event cycles and
exit counts from a small made-up model, a one-row summary, and violation rows.  The
numbers only need to be deterministic and varied; the tests compute what the queries
should return from these same files, independently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pvscope.hooks import BY_NAME

#: (label, base backend, requirement removed, fallback, cycles per hook call, broken checks)
BACKENDS = (
    ("native", "native", None, None, 1, ()),
    ("vmi", "vmi", None, None, 3, ()),
    ("xen-pv", "xen-pv", None, None, 5, ()),
    ("vmi-without-irq-none", "vmi", "irq", "none", 2, ("irq.masked", "result")),
    ("vmi-without-pteupdate-trap", "vmi", "pteupdate", "trap", 9, ()),
)


def write(trace: Path) -> None:
    """Add replay results for every BACKENDS entry under ``trace/replay``."""
    ev = pq.read_table(trace / "events.parquet", columns=["seq", "kind", "hook"]).to_pylist()
    seq = np.array([e["seq"] for e in ev], dtype=np.uint64)
    is_hook = np.array([e["kind"] == "hook" for e in ev])
    trap = np.array([e["kind"] == "hook" and BY_NAME[e["hook"]].rom == "trap" for e in ev])
    mmu = np.array([e["kind"] == "hook" and BY_NAME[e["hook"]].group == "mmu" for e in ev])
    for label, base, without, fallback, per_hook, broken in BACKENDS:
        d = trace / "replay" / f"backend={label}"
        d.mkdir(parents=True)
        cycles = np.where(is_hook, per_hook * (1 + (seq % 5)), 40 + per_hook).astype(np.uint64)
        virt = label != "native"
        exits = (trap & virt).astype(np.uint32)
        hypercalls = (mmu & virt & (seq % 3 == 0)).astype(np.uint32)
        traps = (trap & (without is not None)).astype(np.uint32)
        pq.write_table(
            pa.table(
                {
                    "seq": seq,
                    "cycles": cycles,
                    "exits": exits,
                    "hypercalls": hypercalls,
                    "traps": traps,
                }
            ),
            d / "events.parquet",
        )
        rows = []
        for i, check in enumerate(broken):
            for s in range(1000 + 37 * i, len(ev), 997 + 101 * i):
                rows.append(
                    {
                        "seq": s,
                        "check": check,
                        "field": "if" if check.startswith("irq") else "value",
                        "expected": "0",
                        "actual": "1",
                    }
                )
        pq.write_table(
            pa.Table.from_pylist(
                rows,
                schema=pa.schema(
                    [
                        ("seq", pa.uint64()),
                        ("check", pa.string()),
                        ("field", pa.string()),
                        ("expected", pa.string()),
                        ("actual", pa.string()),
                    ]
                ),
            ),
            d / "violations.parquet",
        )
        pq.write_table(
            pa.table(
                {
                    "base": [base],
                    "without": pa.array([without], pa.string()),
                    "fallback": pa.array([fallback], pa.string()),
                    "violations": pa.array([len(rows)], pa.uint64()),
                    "cycles": pa.array([int(cycles.sum())], pa.uint64()),
                    "exits": pa.array([int(exits.sum())], pa.uint64()),
                    "hypercalls": pa.array([int(hypercalls.sum())], pa.uint64()),
                    "traps": pa.array([int(traps.sum())], pa.uint64()),
                }
            ),
            d / "summary.parquet",
        )
