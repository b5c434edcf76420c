"""Fingerprint every run's results on a set of traces: proof that a change kept behaviour.

    python bench/fingerprint.py traces/golden/*/trace          # recorded traces
    python bench/fingerprint.py --synthetic 1000000            # ... and the bench trace
    python bench/fingerprint.py --json DIR... > before.json    # save, then compare:
    python bench/fingerprint.py --compare before.json DIR...   # exit 1 on any difference

For each trace and each of the 31 runs (every backend and ablation), one sha256 over
every per-event column (cycles, mechanism, exits, hypercalls, traps, batch flushes,
batched), every interrupt column, every violation row and the summary.  A refactoring
of the replayer must leave every fingerprint as it was; a change meant to alter results
shows exactly which runs it altered.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replayer import backends, costs, engine  # noqa: E402
from replayer.trace import Trace, load  # noqa: E402
from tests.support import synth  # noqa: E402

COLUMNS = ("cycles", "native_cycles", "mechanism", "exits", "hypercalls", "traps")
COLUMNS += ("batch_flushes", "batched")


def fingerprint(r: engine.RunResult) -> str:
    """sha256 over every per-event column, interrupt column, violation row and summary."""
    h = hashlib.sha256()
    for col in COLUMNS:
        a = np.asarray(getattr(r, col))
        h.update(f"{col} {a.dtype} {a.shape}".encode())
        h.update(a.tobytes())
    for k in sorted(r.interrupts):
        a = r.interrupts[k]
        h.update(f"interrupt {k} {a.dtype} {a.shape}".encode())
        h.update(a.tobytes())
    for v in r.violations:
        h.update(repr(v).encode())
    h.update(json.dumps(r.summary, sort_keys=True, default=str).encode())
    return h.hexdigest()


def trace_prints(tr: Trace, table: costs.CostTable) -> dict[str, str]:
    """Run label -> fingerprint, every run replayed alone (no shared sequential pass)."""
    out = {}
    for run in backends.all_runs():
        tr.cache.pop("sequential", None)
        out[run.label] = fingerprint(engine.replay(tr, run, table))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="*", type=Path)
    ap.add_argument("--synthetic", type=int, default=0, help="also the bench trace of N events")
    ap.add_argument("--costs", default=costs.DEFAULT_PRESET)
    ap.add_argument("--json", action="store_true", help="print the fingerprints as JSON")
    ap.add_argument("--compare", type=Path, help="a saved --json output to compare against")
    args = ap.parse_args()
    table = costs.load(args.costs)
    prints: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="pvscope-fp-") as tmp:
        paths = list(args.traces)
        if args.synthetic:
            paths.append(synth.large_trace(Path(tmp) / "synthetic", args.synthetic))
        for p in paths:
            tr = load(p)
            key = "synthetic" if p.name == "synthetic" else str(p)
            prints[key] = trace_prints(tr, table)
            print(f"{key}: {tr.n:,} events, {len(prints[key])} runs", file=sys.stderr)
    if args.json:
        print(json.dumps(prints, indent=1, sort_keys=True))
    if args.compare:
        old = json.loads(args.compare.read_text())
        diff = [
            (t, run)
            for t in prints
            for run in prints[t]
            if old.get(t, {}).get(run) != prints[t][run]
        ]
        n = sum(len(v) for v in prints.values())
        for t, run in diff:
            print(f"DIFFERENT {t} {run}")
        print(f"{n - len(diff)} of {n} runs identical", file=sys.stderr)
        sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
