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
from replayer.engine.derived import _SLICE
from replayer.engine.result import (
    FAMILIES,
    FAMILY,
    NAMES,
    LazyColumn,
    ReasonSums,
    RunResult,
)
from replayer.engine.wholerun import whole_run
from replayer.trace import (
    KINDS,
    Trace,
)


def group_names() -> list[str]:
    """The groups events are summed by: hook groups, kinds, ``other``."""
    return sorted({h.group for h in HOOKS} | set(KINDS) | {"other"})


def group_codes(trace: Trace) -> tuple[np.ndarray, list[str]]:
    """Per event: an index into the returned names (hook group, or kind for other events)."""
    names = group_names()
    code = {g: i for i, g in enumerate(names)}
    assert len(names) < 128
    by_hook = np.array([code[h.group] for h in HOOKS], dtype=np.int8)
    # a kind this reader does not model (-1) takes the last slot, "other"
    by_kind = np.array([code[k] for k in KINDS] + [code["other"]], dtype=np.int8)
    out = by_kind[trace.kind]
    hooked = np.flatnonzero(trace.hook >= 0)
    out[hooked] = by_hook[trace.hook[hooked]]
    return out, names


def as_expected(expected: tuple[str, ...], families: dict[str, int]) -> bool:
    """Whether a run's violations (per family) are what its design predicts: none for a
    backend as designed or a trap fallback, only its requirement's families otherwise."""
    broke = {f for f, n in families.items() if n}
    return broke <= set(expected)


def summarize(r: RunResult) -> dict[str, Any]:
    """The JSON-able summary of one replay (deterministic)."""
    run = r.run
    counts = r.violations.counts()
    fam = dict.fromkeys(FAMILIES, 0)
    for name, count in counts.items():
        fam[FAMILY[name]] += count
    first = r.violations[0] if r.violations else None
    cyc = int(r.cycles.sum())
    nat = int(r.native_cycles.sum())
    groups: dict[str, dict[str, int]] = {}
    gc, names = _cached(r.trace, "group_codes", group_codes)
    m = len(names)
    # every reason's name is of one group: the groups' sums are the reasons' summed
    by = r.by_reason = reason_sums(r)
    code = {g: i for i, g in enumerate(names)}
    of_name = [code[h.group] for h in HOOKS] + [code[k] for k in KINDS] + [code["other"]]
    of_reason = np.tile(np.array(of_name, dtype=np.intp), len(MECHANISMS))
    events = _regroup(of_reason, by.events, m)
    sums = {
        # native's are the same for every run under one table
        k: _cached(
            r.trace,
            f"native group sums {r.costs.sha256}",
            lambda t: _group_sums(gc, r.native_cycles, m),
        )
        if k == "native_cycles"
        else _regroup(of_reason, by.sums[k], m)
        for k in ("cycles", "native_cycles", "exits", "hypercalls", "traps", "batch_flushes")
    }
    for i, g in enumerate(names):
        if events[i]:
            groups[g] = {"events": int(events[i])} | {k: int(v[i]) for k, v in sums.items()}
    per_mechanism = by.events.reshape(len(MECHANISMS), len(NAMES)).sum(axis=1)
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
        "mechanisms": {MECHANISMS[i]: int(n) for i, n in enumerate(per_mechanism) if n},
    }


#: Events summed at a time (what a float64 copy of a column costs stays small).
_CHUNK = 1 << 20


def _nonzero(v: np.ndarray | LazyColumn) -> int:
    """Events where a column is not 0 (a lazy one's without making it whole)."""
    return v.count_nonzero() if isinstance(v, LazyColumn) else int(np.count_nonzero(v))


def _group_sums(codes: np.ndarray, values: np.ndarray | LazyColumn, m: int) -> np.ndarray:
    """Per code in ``range(m)``, the sum of ``values``, exact in int64 (each chunk's
    float64 sums are whole numbers well below 2**53)."""
    out = np.zeros(m, dtype=np.int64)
    for a in range(0, len(codes), _CHUNK):
        w = values[a : a + _CHUNK].astype(np.float64)
        out += np.rint(np.bincount(codes[a : a + _CHUNK], weights=w, minlength=m)).astype(np.int64)
    return out


def _regroup(of: np.ndarray, sums: np.ndarray, m: int) -> np.ndarray:
    """Sums per reason code added up per group (``of[code]``), exactly."""
    out = np.zeros(m, dtype=np.int64)
    np.add.at(out, of, sums)
    return out


def name_codes(trace: Trace) -> np.ndarray:
    """Per event: an index into :data:`NAMES` (its hook, else its kind); int16, kept in
    the trace's cache (every run's results need it)."""

    def codes(t: Trace) -> np.ndarray:
        out = np.empty(t.n, dtype=np.int16)
        for a in range(0, t.n, _SLICE):  # a slice at a time: temporaries stay small
            k, h = t.kind[a : a + _SLICE], t.hook[a : a + _SLICE]
            kind = np.where(k >= 0, k, len(KINDS)).astype(np.int16) + len(HOOKS)
            out[a : a + _SLICE] = np.where(h >= 0, h, kind)
        return out

    got: np.ndarray = _cached(trace, "exit reason names", codes)
    return got


#: The per-event columns summed per reason.
REASON_COLUMNS = ("cycles", "exits", "hypercalls", "traps", "batch_flushes")


def reason_sums(r: RunResult) -> ReasonSums:
    """Events and the sums of :data:`REASON_COLUMNS` per reason code (:class:`ReasonSums`)."""
    cols = {k: getattr(r, k) for k in REASON_COLUMNS}
    events, sums = sum_by_code(name_codes(r.trace), r.mechanism, cols)
    return ReasonSums(events, sums)


def sum_by_code(
    names: np.ndarray, mechanism: np.ndarray, cols: dict[str, np.ndarray | LazyColumn]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Events and each column's sum per reason code ``mechanism * len(NAMES) + name``, a
    chunk of events at a time (the temporaries stay small; each chunk's float64 sums are
    whole numbers well below 2**53, so exact); columns most of whose events are 0 are
    summed over the others."""
    m = len(NAMES)
    size = len(MECHANISMS) * m
    events = np.zeros(size, dtype=np.int64)
    sums = {k: np.zeros(size, dtype=np.int64) for k in cols}
    sparse = [k for k, v in cols.items() if _nonzero(v) < len(v) // 2]
    for a in range(0, len(names), _CHUNK):
        code = mechanism[a : a + _CHUNK].astype(np.intp) * m + names[a : a + _CHUNK]
        events += np.bincount(code, minlength=size)
        nz = np.zeros(len(code), dtype=bool)
        for k in sparse:
            nz |= cols[k][a : a + _CHUNK] != 0
        at = np.flatnonzero(nz)  # events where a sparse column is not 0
        for k, v in cols.items():
            w = v[a : a + _CHUNK]
            if k in sparse:
                if not len(at):
                    continue
                c = np.bincount(code[at], weights=w[at].astype(np.float64), minlength=size)
            else:
                c = np.bincount(code, weights=w.astype(np.float64), minlength=size)
            sums[k] += np.rint(c).astype(np.int64)
    return events, sums


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
