"""The share of a run's cycles that rests on estimates.

Takes a run, its trace and table; replays the run under ``table.masked({"estimate"})``
(every primitive and guest parameter whose provenance is not ``estimate`` priced at 0),
before the run's own replay (:func:`replay_with_share`), and fills two fields of the
run's summary:

* ``estimate_share``: the estimate-priced interface cycles over the interface cycles
  (``cycles``);
* ``whole_run.estimate_share``: the same of the whole-run cycles (the guest's CPI and the
  TLB walk costs carry provenance too).

Every cost is a sum of primitives times counts, so it is linear in the table and
``masked(source) + masked(measured) + masked(estimate)`` gives back the full cycles, event
by event (``tests/replayer/test_estimate_share.py`` holds it, ablations included).  A
share is ``None`` where the run costs no cycles at all.

Which runs get a share: :func:`computes` -- every run as designed (the backends
themselves), not the ablations (``--without``).  A second replay doubles a run's cost, and
the ``--fallback none`` ablations of the page-table requirements run the whole sequential
simulation (most of ``replay --backend all``'s time).  Measured on a 1 M-event ``fork``
trace (``pvscope record -g fork --scale 1250``), ``replay --backend all`` with 2 workers,
best of two alternating rounds: 22.4 s without shares, 21.6 s with them for the 7
backends (within noise: their second replays are short and fill the workers' idle
tail), 42.2 s with them for all 31 runs (+88%).  An ablation's summary keeps
``estimate_share`` and ``whole_run.estimate_share`` null; an ablation swaps trap or
nothing costs into its parent's row, so its parent's share is the one to read.

The masked replay keeps its own copy of the sequential pass the engine shares between
runs of one trace (``trace.cache["sequential"]``), so that the runs after it still reuse
theirs, and the masked replays of a group reuse each other's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from replayer import engine
from replayer.backends import Run
from replayer.costs import CostTable
from replayer.engine.lean import LEAN_PROOF
from replayer.engine.result import RunResult
from replayer.engine.wholerun import whole_run
from replayer.trace import Trace

#: The provenance kinds whose share is shown.
ESTIMATE = frozenset({"estimate"})
#: Where the engine keeps the last sequential pass (``replayer.engine._Replay.run``).
_SEQUENTIAL = "sequential"
#: Where this module keeps the last masked replay's.
_MASKED_SEQUENTIAL = "sequential masked"

#: Why an ablation's summary has no share (said where a share is shown as absent).
NOT_FOR_ABLATIONS = (
    "not computed for ablations (a second replay of each would add most of "
    "replay --backend all's time); read the parent backend's"
)


def computes(run: Run) -> bool:
    """Whether a run's summary gets its estimate share: the backends as designed."""
    return run.without is None


def masked_replay(
    trace: Trace,
    run: Run,
    table: CostTable,
    kinds: frozenset[str] | set[str],
    summary: bool = True,
) -> RunResult:
    """``run`` replayed under ``table.masked(kinds)``, leaving the trace's shared
    sequential pass as it was (the masked replays share their own); ``summary=False``:
    without its summary (:func:`replayer.engine.replay`)."""
    cache = trace.cache
    theirs = cache.pop(_SEQUENTIAL, None)
    mine = cache.pop(_MASKED_SEQUENTIAL, None)
    if mine is not None:
        cache[_SEQUENTIAL] = mine
    masked = table.masked(kinds)
    try:
        return engine.replay(trace, run, masked, summary=summary)
    finally:
        # native cycles under the masked table: no other run prices by it
        cache.pop(engine.native_key(masked), None)
        mine = cache.pop(_SEQUENTIAL, None)
        if mine is not None:
            cache[_MASKED_SEQUENTIAL] = mine
        if theirs is not None:
            cache[_SEQUENTIAL] = theirs


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def shares(full: dict[str, Any], masked: dict[str, Any]) -> tuple[float | None, float | None]:
    """(interface, whole-run) share of ``full``'s cycles that ``masked``'s summary keeps."""
    return (
        _share(masked["cycles"], full["cycles"]),
        _share(masked["whole_run"]["cycles"], full["whole_run"]["cycles"]),
    )


def estimate_sums(trace: Trace, run: Run, table: CostTable) -> dict[str, Any] | None:
    """What :func:`shares` reads of ``run``'s replay under ``table`` masked to its
    estimates (None if :func:`computes` says the run gets no share).

    Taken before the run's own replay (:func:`replay_with_share`), so that the masked
    replay's per-event columns are let go before the run's are made: a run then holds one
    set of them at a time, not two (on a 10 M-event trace, about 0.4 GiB fewer at its
    peak)."""
    if not computes(run):
        return None
    m = masked_replay(trace, run, table, ESTIMATE, summary=False)
    return {"cycles": int(m.cycles.sum()), "whole_run": {"cycles": whole_run(m)["cycles"]}}


def add_estimate_share(r: RunResult, kept: dict[str, Any] | None = None) -> None:
    """Fill ``r.summary``'s ``estimate_share`` and ``whole_run.estimate_share`` (if
    :func:`computes` says this run gets them; otherwise they stay null), from ``kept``
    (:func:`estimate_sums`, taken before ``r``) or from a masked replay made now."""
    if not computes(r.run):
        return
    if kept is None:
        kept = estimate_sums(r.trace, r.run, r.costs)
        assert kept is not None
    r.trace.cache.pop(LEAN_PROOF, None)  # it served both replays: what it holds is let go
    iface, whole = shares(r.summary, kept)
    r.summary["estimate_share"] = iface
    r.summary["whole_run"]["estimate_share"] = whole


def replay_with_share(
    trace: Trace,
    run: Run,
    table: CostTable,
    progress: Callable[[int], None] | None = None,
    later: Sequence[Run] | None = None,
) -> RunResult:
    """``engine.replay`` with the summary's estimate shares filled, the masked replay
    made first (:func:`estimate_sums`); ``later`` as for ``engine.replay``."""
    kept = estimate_sums(trace, run, table)
    r = engine.replay(trace, run, table, progress=progress, later=later)
    add_estimate_share(r, kept)
    return r
