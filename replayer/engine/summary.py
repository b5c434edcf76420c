"""The summary of one replay: totals, per-group sums, checks and interrupts, as JSON.

Takes a :class:`~replayer.engine.result.RunResult`; gives the deterministic dict
that ``summary.parquet``, the command line and golden summaries show.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pvscope.hooks import HOOKS
from replayer.backends import (
    MECHANISMS,
)
from replayer.engine.common import _cached
from replayer.engine.result import CHECKS, FAMILIES, FAMILY, RunResult
from replayer.engine.wholerun import whole_run
from replayer.trace import (
    Trace,
)


def group_codes(trace: Trace) -> tuple[np.ndarray, list[str]]:
    """Per event: an index into the returned names (hook group, or kind for other events)."""
    from replayer.trace import KINDS

    names = sorted({h.group for h in HOOKS} | set(KINDS) | {"other"})
    code = {g: i for i, g in enumerate(names)}
    by_hook = np.array([code[h.group] for h in HOOKS], dtype=np.int64)
    by_kind = np.array([code[k] for k in KINDS] + [code["other"]], dtype=np.int64)
    kd = np.where(trace.kind >= 0, trace.kind, len(KINDS)).astype(np.int64)
    hk = np.maximum(trace.hook, 0).astype(np.int64)
    return np.where(trace.hook >= 0, by_hook[hk], by_kind[kd]), names


def as_expected(expected: tuple[str, ...], families: dict[str, int]) -> bool:
    """Whether a run's violations (per family) are what its design predicts: none for a
    backend as designed or a trap fallback, only its requirement's families otherwise."""
    broke = {f for f, n in families.items() if n}
    return broke <= set(expected)


def summarize(r: RunResult) -> dict[str, Any]:
    """The JSON-able summary of one replay (deterministic)."""
    run = r.run
    counts = dict.fromkeys(CHECKS, 0)
    for v in r.violations:
        counts[v.check] += 1
    fam = dict.fromkeys(FAMILIES, 0)
    for name, count in counts.items():
        fam[FAMILY[name]] += count
    first = r.violations[0] if r.violations else None
    cyc = int(r.cycles.sum())
    nat = int(r.native_cycles.sum())
    groups: dict[str, dict[str, int]] = {}
    gc, names = _cached(r.trace, "group_codes", group_codes)
    m = len(names)
    events = _cached(r.trace, "group events", lambda t: np.bincount(gc, minlength=m))
    sums = {
        # native's are the same for every run under one table
        k: _cached(
            r.trace,
            f"native group sums {r.costs.sha256}",
            lambda t: _group_sums(gc, r.native_cycles, m),
        )
        if k == "native_cycles"
        else _group_sums(gc, getattr(r, k), m)
        for k in ("cycles", "native_cycles", "exits", "hypercalls", "traps", "batch_flushes")
    }
    for i, g in enumerate(names):
        if events[i]:
            groups[g] = {"events": int(events[i])} | {k: int(v[i]) for k, v in sums.items()}
    return {
        "backend": run.label,
        "base": run.backend.name,
        "without": run.without,
        "fallback": run.fallback,
        "trace": r.trace.name,
        "events": r.trace.n,
        "cost_table": r.costs.name,
        "cost_sha256": r.costs.sha256,
        "cycles": cyc,
        "native_cycles": nat,
        "interface_ratio": round(cyc / nat, 6) if nat else None,
        # filled by replayer.engine.provenance after the replay (null where not computed)
        "estimate_share": None,
        "whole_run": whole_run(r) | {"estimate_share": None},
        "exits": int(r.exits.sum()),
        "hypercalls": int(r.hypercalls.sum()),
        "traps": int(r.traps.sum()),
        "batch_flushes": int(r.batch_flushes.sum()),
        "batched": int(r.batched.sum()),
        "violations": len(r.violations),
        "expected_families": list(run.expected_families),
        "as_expected": as_expected(run.expected_families, fam),
        "checks": {k: v for k, v in counts.items() if v},
        "families": {k: v for k, v in fam.items() if v},
        "first_divergence": None
        if first is None
        else {
            "seq": first.seq,
            "check": first.check,
            "field": first.field,
            "expected": first.expected,
            "actual": first.actual,
            "detail": first.detail,
        },
        "interrupts": _interrupts(r),
        "groups": groups,
        "mechanisms": {
            MECHANISMS[i]: int(n)
            for i, n in enumerate(
                _group_sums(r.mechanism, np.ones(1, dtype=np.int8), len(MECHANISMS))
            )
            if n
        },
    }


#: Events summed at a time (what a float64 copy of a column costs stays small).
_CHUNK = 1 << 20


def _group_sums(codes: np.ndarray, values: np.ndarray, m: int) -> np.ndarray:
    """Per code in ``range(m)``, the sum of ``values`` (one value for all: counts), exact
    in int64 (each chunk's float64 sums are whole numbers well below 2**53)."""
    out = np.zeros(m, dtype=np.int64)
    # most events of most runs add nothing to a counter: sum over those that do
    if len(values) != 1 and np.count_nonzero(values) < len(values) // 2:
        nz = np.flatnonzero(values)
        codes, values = codes[nz], values[nz]
    for a in range(0, len(codes), _CHUNK):
        c = codes[a : a + _CHUNK]
        w = None if len(values) == 1 else values[a : a + _CHUNK].astype(np.float64)
        out += np.rint(np.bincount(c, weights=w, minlength=m)).astype(np.int64)
    return out


def _interrupts(r: RunResult) -> dict[str, Any]:
    """Interrupts recorded, delivered, masked and lost, and their latency."""
    st = r.interrupts["status"]
    lat = r.interrupts["latency_events"][st != 2]
    latv = r.interrupts["latency_vtime"][st != 2]
    return {
        "recorded": int(len(st)),
        "delivered": int((st == 0).sum()),
        "masked": int((st == 1).sum()),
        "lost": int((st == 2).sum()),
        "latency_events_mean": round(float(lat.mean()), 6) if len(lat) else None,
        "latency_events_max": int(lat.max()) if len(lat) else None,
        "latency_vtime_mean": round(float(latv.mean()), 6) if len(latv) else None,
        "latency_vtime_max": int(latv.max()) if len(latv) else None,
        "native_latency_events_mean": round(float(r.interrupts["native_latency_events"].mean()), 6)
        if len(st)
        else None,
    }
