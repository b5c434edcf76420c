"""Replay throughput per backend, and what each trap fallback costs against its parent.

    python bench/replay.py                          # a synthetic trace of 2 M events
    python bench/replay.py --events 10000000        # ... of 10 M events
    python bench/replay.py --trace DIR              # a recorded trace
    python bench/replay.py --backends native,vmi    # some backends (default: every run)
    python bench/replay.py --write                  # also time writing the results
    python bench/replay.py --repeat 3               # best of three timings per run
    python bench/replay.py --wall                   # also: every run, results written,
                                                    # in worker processes, wall time

Prints the work every run of a trace shares (done once per trace, before the runs) and
the compiled pass that judges the checks of the four runs whose copy stays empty in one
go (what ``--backend all`` pays once a worker; the first in a process also loads the
compiled code, or compiles it where numba's cache has none); then, per run on one core
(each whole: no run reuses another's sequential pass, proof or judged checks):
replay seconds, events per second, cycles relative to native and violations found; then,
for every trap fallback, its cycles over its parent's.  Ratios are measured in the same
run, on the same trace.  ``--wall`` then times what ``pvscope replay TRACE --backend all``
does: load the trace, replay every run in ``--jobs`` worker processes (default: one per
usable CPU) and write the results; then does it again, sampling the summed PSS and RSS of
the process and its workers every 50 ms for the peak memory (apart: sampling slows what it
watches), and holds the peaks to the memory model's bounds (``replayer/workers.py``).
The synthetic trace is ``tests.support.synth.large_trace``: boot, then a state-neutral
epoch (a fork with copy-on-write faults and exit, irqsave sections with device
interrupts, a timer tick, kernel remaps) repeated.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replayer import api, backends, costs, engine, results, workers  # noqa: E402
from replayer.engine.empty import JUDGED  # noqa: E402
from replayer.engine.lean import LEAN_PROOF  # noqa: E402
from replayer.trace import Trace  # noqa: E402
from tests.support import synth  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, help="a recorded trace (default: synthetic)")
    ap.add_argument("--events", type=int, default=2_000_000, help="synthetic trace size")
    ap.add_argument("--backends", default="all", help="comma-separated labels, or all")
    ap.add_argument("--costs", default=costs.DEFAULT_PRESET, help="cost table")
    ap.add_argument("--write", action="store_true", help="also time writing results")
    ap.add_argument("--wall", action="store_true", help="also time every run in workers")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes for --wall")
    ap.add_argument("--no-single", action="store_true", help="skip the per-run timings")
    ap.add_argument(
        "--repeat", type=int, default=1, help="time each run this many times, keep the best"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="pvscope-bench-") as tmp:
        if args.trace is None:
            t0 = time.perf_counter()
            path = synth.large_trace(Path(tmp) / "trace", args.events)
            print(f"synthetic trace: {time.perf_counter() - t0:.1f} s to build", flush=True)
        else:
            path = args.trace
        t0 = time.perf_counter()
        tr = api.load_trace(path)  # as `pvscope replay` loads it
        print(f"{tr.name}: {tr.n:,} events, loaded in {time.perf_counter() - t0:.2f} s")
        table = costs.load(args.costs)
        runs = backends.all_runs()
        if args.backends != "all":
            want = set(args.backends.split(","))
            runs = [r for r in runs if r.label in want]
        if not args.no_single:
            t0 = time.perf_counter()
            engine.prepare(tr)
            print(f"shared by every run (once per trace): {time.perf_counter() - t0:.2f} s")
            if any(engine.copy_stays_empty(r) for r in runs):
                t0 = time.perf_counter()
                engine.judge_empty_copies(tr, table)
                print(
                    "checks of the four runs whose copy stays empty, judged in one pass "
                    f"(once per trace in --backend all): {time.perf_counter() - t0:.2f} s"
                )
            single(tr, runs, table, args.write, Path(tmp), max(args.repeat, 1))
        if args.wall:
            # as `pvscope replay` does: the trace loaded by the replay alone (this one, kept,
            # would be resident in every worker too: 0.4 GiB more in each on sched)
            n = tr.n
            del tr
            gc.collect()
            jobs = args.jobs or workers.usable_cpus()
            t0 = time.perf_counter()
            api.replay_trace(Path(path), runs, table, Path(tmp) / "wall", jobs=jobs)
            dt = time.perf_counter() - t0
            # the workers have been joined: the largest one's peak, as the bar reads
            # it (a worker's resident size counts the pages it shares with the parent)
            worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
            mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(
                f"\n{len(runs)} runs, loaded, replayed and written with {jobs} worker "
                f"process(es): {dt:.1f} s wall; peak RSS of the largest worker {worker:.2f} "
                f"GiB, of this process {mine:.2f} GiB"
                + ("" if args.no_single else " (with the single-core timings before)"),
                flush=True,
            )
            # memory in a second, sampled run: reading smaps costs the kernel enough to
            # slow the run it watches, so the time above is taken unwatched
            with Footprint() as fp:
                api.replay_trace(Path(path), runs, table, Path(tmp) / "mem", jobs=jobs)
            print(
                f"peak memory of the process and its workers together (a second run, sampled "
                f"every 50 ms): {fp.peak_pss / 2**30:.2f} GiB PSS "
                f"({fp.peak_rss / 2**30:.2f} GiB RSS, counting pages the workers share with "
                "the parent once per process)"
            )
            if not held(fp, n, jobs):
                sys.exit(1)


def held(fp: Footprint, events: int, jobs: int) -> bool:
    """Print the memory model's bounds (``replayer.workers``) beside what the sampled run
    took; whether both held.  The parent's peak includes the load of the trace (this
    process held nothing of it before); with one job it replays the runs itself, so it
    holds a worker's own share too."""
    ok = True
    gib = 2**30
    parent = workers.parent_need(events)
    if jobs > 1:
        rows = [("the parent", fp.peak_self, parent)]
        rows.append(("the largest worker's own", fp.peak_own, workers.worker_need(events)))
    else:
        one = parent + workers.worker_need(events) - workers.BASE  # one interpreter
        rows = [("this process's", fp.peak_self, one)]
    for what, got, bound in rows:
        over = got > bound
        ok &= not over
        print(
            f"{what} memory at its peak: {got / gib:.2f} GiB, the model's bound "
            f"{bound / gib:.2f} GiB ({got / bound:.0%})" + ("  OVER THE BOUND" if over else "")
        )
    return ok


class Footprint:
    """Samples this process and its children every 50 ms: the peak of their summed PSS
    (shared pages split between the processes sharing them: the memory the work holds)
    and of their summed RSS."""

    def __init__(self) -> None:
        self.peak_pss = self.peak_rss = 0
        self.peak_self = 0
        """This process's peak RSS."""
        self.peak_own = 0
        """The largest peak of a child's own (private) pages."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Footprint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            pss = rss = 0
            me = os.getpid()
            for pid in _tree(me):
                got = _rollup(pid)
                pss, rss = pss + got[0], rss + got[1]
                if pid == me:
                    self.peak_self = max(self.peak_self, got[1])
                else:
                    self.peak_own = max(self.peak_own, got[2])
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _rollup(pid: int) -> tuple[int, int, int]:
    """(PSS, RSS, private pages) of one process in bytes (0 if it is gone)."""
    pss = rss = own = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                    own += int(line.split()[1]) * 1024
    except OSError:
        pass
    return pss, rss, own


def single(
    tr: Trace,
    runs: list[backends.Run],
    table: costs.CostTable,
    write: bool,
    tmp: Path,
    repeat: int = 1,
) -> None:
    """Each run in turn, in this process: seconds (the best of ``repeat``) and events/s
    per run, trap ratios."""
    print(
        f"{'run':<32} {'seconds':>8} {'events/s':>11} {'vs native':>10} {'violations':>10}"
        + (f" {'write s':>8}" if write else "")
    )
    cycles: dict[str, int] = {}
    for run in runs:
        dt = float("inf")
        for _ in range(repeat):
            # each run timed whole, reusing neither a pass nor a proof
            tr.cache.pop("sequential", None)
            tr.cache.pop(LEAN_PROOF, None)
            tr.cache.pop(JUDGED, None)  # an empty copy judges its own checks, whole
            for key in [k for k in tr.cache if k.startswith("traced walk")]:
                tr.cache.pop(key)  # hvm-shadow and bt each walk their tracer, timed whole
            t0 = time.perf_counter()
            r = engine.replay(tr, run, table)
            dt = min(dt, time.perf_counter() - t0)
        s = r.summary
        cycles[run.label] = s["cycles"]
        line = (
            f"{run.label:<32} {dt:8.2f} {tr.n / dt:11,.0f} "
            f"{s['interface_ratio']:10.3f} {s['violations']:10,}"
        )
        if write:
            t0 = time.perf_counter()
            results.write(r, tmp / "replay")
            line += f" {time.perf_counter() - t0:8.2f}"
        print(line, flush=True)
    traps = [t for t in runs if t.fallback == "trap" and t.backend.name in cycles]
    if traps:
        print("\ntrap fallback / parent, cycles:")
        for t in traps:
            ratio = cycles[t.label] / cycles[t.backend.name]
            print(f"  {t.label:<32} {ratio:8.3f}")


if __name__ == "__main__":
    main()
