"""The replayer's entry points for other parts of pvscope (CLI, golden traces, analysis)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from replayer import backends, costs, engine, results
from replayer.trace import Trace, load

REPLAY_DIR = "replay"


def default_out(trace: Path) -> Path:
    """Where a trace's replay results go by default."""
    return Path(trace) / REPLAY_DIR


def replay_trace(
    trace: Trace | Path,
    runs: list[backends.Run],
    table: costs.CostTable,
    out: Path | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Replay every run and write its results; return the summaries in run order.

    ``progress(label, events_done)`` is called as each run goes.
    """
    tr = trace if isinstance(trace, Trace) else load(Path(trace))
    root = Path(out) if out is not None else default_out(tr.path)
    summaries = []
    for run in runs:
        cb = None
        if progress is not None:

            def cb(k: int, _label: str = run.label) -> None:
                progress(_label, k)

        r = engine.replay(tr, run, table, progress=cb)
        results.write(r, root)
        summaries.append(r.summary)
    return summaries


def golden_summaries(trace: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Replay a trace with every backend and ablation (default cost table) into ``out``;
    each one's summary by backend label (what ``pvscope golden`` keeps)."""
    table = costs.load(costs.DEFAULT_PRESET)
    sums = replay_trace(Path(trace), backends.all_runs(), table, out)
    return {s["backend"]: s for s in sums}
