"""Per-operation costs of a ``nanobench`` trace: each phase's cycles per backend over N.

The guest brackets every phase's loop with phase markers (``recorder/nanobench.py``);
an event belongs to the phase of the last marker at or before it (phase 0, "no phase",
before the first and after an end marker).  The trace side -- events of each kind per
phase -- is the saved query ``analysis/queries/nanobench.sql``; this module adds the
replay side: from a results directory (``pvscope replay T --backend all -o R``, one
``backend=LABEL/events.parquet`` per run with each event's ``cycles``), the cycles
each backend spends on a phase's events, and per operation.

Cycles are the replay's (hypervisor-interface cycles: what the cost table charges for
each event), not a whole-run time: the guest's own instructions between events cost
nothing here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis import queries
from analysis.views import Session, open_source
from recorder.nanobench import BY_ID, SERVICE_PHASE

#: Every event tagged with its phase (markers left out), per trace.
_TAGGED = f"""
WITH markers AS (
    SELECT trace, seq, arg1 AS phase_id
    FROM events
    WHERE kind = 'guest' AND arg0 = {SERVICE_PHASE}
)
SELECT e.trace, e.seq, coalesce(m.phase_id, 0) AS phase_id
FROM events AS e
ASOF LEFT JOIN markers AS m ON e.trace = m.trace AND e.seq >= m.seq
WHERE NOT (e.kind = 'guest' AND e.arg0 = {SERVICE_PHASE})
"""

_PER_BACKEND = f"""
WITH tagged AS ({_TAGGED})
SELECT
    r.backend,
    t.phase_id,
    sum(r.cycles)::BIGINT AS cycles,
    sum(r.native_cycles)::BIGINT AS native_cycles,
    count(*) AS events
FROM replay AS r
JOIN tagged AS t ON r.trace = t.trace AND r.seq = t.seq
WHERE t.phase_id <> 0
GROUP BY r.backend, t.phase_id
ORDER BY r.backend, t.phase_id
"""


def phases(session: Session) -> list[dict[str, Any]]:
    """Per phase with operations (phase 0 left out): id, name, operations, events.

    From the saved query ``nanobench``: its per-kind rows summed over kinds.
    """
    rows = session.query(queries.load("nanobench").sql).to_pylist()
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        if not r["phase_id"] or r["operations"] is None:
            continue
        p = out.setdefault(
            r["phase_id"],
            {
                "phase_id": r["phase_id"],
                "phase": r["phase"],
                "operations": int(r["operations"]),
                "events": 0,
                "by_kind": {},
            },
        )
        p["events"] += r["events"]
        p["by_kind"][r["kind"]] = r["events"]
    return [out[k] for k in sorted(out)]


def per_operation(trace_path: Path, results_dir: Path | None = None) -> list[dict[str, Any]]:
    """Rows of (phase, operations, backend, cycles, cycles_per_op, events_per_op).

    One row per marked phase and replayed backend, in phase order then backend order,
    read from the trace at ``trace_path`` and the replay results under ``results_dir``
    (default: the trace's own ``replay/``).  Without replay results there is one row per
    phase with ``backend``, ``cycles`` and ``cycles_per_op`` None.  Each row also
    carries ``phase_id``, ``source`` (``adams-agesen-2006`` or ``lmbench``, None for a
    phase id the guest data does not know), ``events`` and ``native_cycles``.
    ``cycles_per_op`` is None for a phase whose events cost nothing on that backend
    (no costed events) as well as without results.
    """
    source = open_source(Path(trace_path))
    if source.is_set:
        raise ValueError(f"{trace_path}: per_operation reads one trace, not a trace set")
    if results_dir is not None:
        source.traces[0].replay = Path(results_dir)
    with Session(source=source) as s:
        found = phases(s)
        costed: dict[tuple[str, int], dict[str, Any]] = {}
        backends: list[str] = []
        if "replay" in s.views:
            for r in s.query(_PER_BACKEND).to_pylist():
                costed[r["backend"], r["phase_id"]] = r
                if r["backend"] not in backends:
                    backends.append(r["backend"])
    rows = []
    for p in found:
        ops = p["operations"]
        known = BY_ID.get(p["phase_id"])
        base = {
            "phase": p["phase"],
            "phase_id": p["phase_id"],
            "source": known.source if known else None,
            "operations": ops,
            "events": p["events"],
            "events_per_op": p["events"] / ops if ops else None,
        }
        names: list[str | None] = list(backends) or [None]
        for b in names:
            c = costed.get((b, p["phase_id"])) if b is not None else None
            cycles = c["cycles"] if c else None
            rows.append(
                {
                    **base,
                    "backend": b,
                    "cycles": cycles,
                    "native_cycles": c["native_cycles"] if c else None,
                    "cycles_per_op": cycles / ops if cycles and ops else None,
                }
            )
    return rows
