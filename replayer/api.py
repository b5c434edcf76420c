"""The replayer's entry points for other parts of pvscope (CLI, golden traces, analysis)."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pvscope import schema
from pvscope.errors import PvscopeError, UsageError
from replayer import backends, costs, engine, results, workers
from replayer.engine import provenance
from replayer.engine.state import _modes
from replayer.engine.untold import untold
from replayer.trace import Trace, load

REPLAY_DIR = "replay"

#: What forked workers replay: (trace, runs, table, root, the keys of the trace's cache
#: once prepared), set in the parent before the pool starts so the children inherit it
#: (the decoded trace, and the runs as they are) instead of receiving copies; a worker is
#: told only the index of a run.
_SHARED: tuple[Trace, list[backends.Run], costs.CostTable, Path, frozenset[str]] | None = None


def default_out(trace: Path) -> Path:
    """Where a trace's replay results go by default."""
    return Path(trace) / REPLAY_DIR


def _group(ids: list[int]) -> tuple[list[int], list[dict[str, Any]]]:
    """A worker: replay these shared runs of the shared trace, write their results; return
    the runs and their summaries."""
    assert _SHARED is not None
    tr, runs, table, root, prepared = _SHARED
    _as_prepared(tr, prepared)
    return ids, [_replay_one(tr, runs, ids, j, table, root) for j in range(len(ids))]


def _as_prepared(tr: Trace, prepared: frozenset[str]) -> None:
    """Start a group from the trace as prepared: what an earlier group in this process left
    on it (its sequential pass, proofs, judged checks: hundreds of MiB) no later group
    reuses."""
    for key in set(tr.cache) - prepared:
        del tr.cache[key]
    _give_back_freed_memory()


def _replay_one(
    tr: Trace,
    runs: list[backends.Run],
    ids: list[int],
    j: int,
    table: costs.CostTable,
    root: Path,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Replay run ``ids[j]`` of a group (its estimate share too) and write its results;
    let go of it, and (once its pass is done) of what no later run of the group reuses;
    return its summary."""
    later = [runs[k] for k in ids[j + 1 :]]
    r = provenance.replay_with_share(tr, runs[ids[j]], table, progress=progress, later=later)
    results.write(r, root)
    summary = r.summary
    del r
    return summary


def _groups(runs: list[backends.Run], table: costs.CostTable) -> list[list[int]]:
    """Run indices grouped by what their sequential pass depends on, so that one worker
    replays a group in turn and the later runs reuse the first's pass (the runs whose copy
    stays empty, the checks judged in one compiled pass; hvm-shadow and bt, their tracer's
    walk).  Groups likely to take
    longest go first (those that simulate both copies of the page tables, then the
    larger), so that the workers finish together."""
    by_key: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        # runs whose copy stays empty share the one pass that judges all their checks, and
        # write-protecting VMMs with one flood threshold the walk of their tracer
        m = run.model()
        if engine.copy_stays_empty(run) or untold(run):
            # lguest told of no store has its checks from a compiled walk too: numba's
            # import (about 100 MiB) paid by one worker
            key = "empty copy"
        elif m.mmu == "traced":
            key = f"traced walk {m.flood_threshold}"
        else:
            key = engine.sequential_key(run, table)
        by_key.setdefault(key, []).append(i)

    def weight(ids: list[int]) -> tuple[bool, int, int]:
        run = runs[ids[0]]
        full = run.backend.paravirt and not engine.may_be_lean(run)
        return full, len(ids), _proof_weight(run)

    return sorted(by_key.values(), key=weight, reverse=True)


def _proof_weight(run: backends.Run) -> int:
    """How much a run's page-table pass is likely to take, for the order its group goes
    out in (the longest last leaves one worker idle: on fork, lguest-without-pteupdate-
    trap's 4 s alone at the end): 2 where its copy is proven against what it discovers
    or traps (a notified backend not told of allocations, lguest trapping every store),
    0 where hardware walks the guest's own tables (nothing to prove), else 1."""
    m = run.model()
    pte_mode, alloc_mode, _, _ = _modes(run)
    if m.mmu == "direct":
        return 0
    if (m.mmu == "notified" and alloc_mode == "trap") or (m.mmu == "demand" and pte_mode == "trap"):
        return 2
    return 1


def replay_trace(
    trace: Trace | Path,
    runs: list[backends.Run],
    table: costs.CostTable,
    out: Path | None = None,
    progress: Callable[[str, int], None] | None = None,
    jobs: int | None = None,
    table_path: Path | None = None,
) -> list[dict[str, Any]]:
    """Replay every run and write its results; return the summaries in run order.

    Several runs go to ``jobs`` worker processes (default: one per usable CPU, fewer
    where the memory available would not hold them: :func:`job_plan`), each
    run whole in one worker, runs sharing their sequential pass in the same one (in turn,
    the later ones reusing it): a run's results do not depend on where it ran.
    ``progress(label, events_done)`` is called as each run goes (in worker processes,
    only when a run is done).

    Each run as designed is replayed a second time under the table masked to its
    estimates, for the share of its cycles that rests on them (``estimate_share``, and
    ``whole_run.estimate_share``; :mod:`replayer.engine.provenance`; null for ablations).

    The results' index names the trace and the table (``table_path``: the file a table
    not a preset was read from), so that they can be read wherever they are kept.
    """
    tr = _as_trace(trace)
    root = Path(out) if out is not None else default_out(tr.path)
    with _exclusive(root):
        about = {"trace": trace_about(tr), "cost_table": table_about(table, table_path)}
        results.plan(root, [r.label for r in runs], tr.events_sha256, table.sha256, about)
        return _replay_runs(tr, runs, table, root, progress, jobs)


def load_trace(path: Path) -> Trace:
    """A trace loaded for replay: glibc's mmap threshold fixed first
    (:func:`_large_frees_go_back`), so that what the load frees leaves the process before
    the workers fork and start with it resident (``pvscope replay`` on irqstorm, loading
    before the fix: every worker 0.12 GiB more, the largest at 1.94 GiB)."""
    _large_frees_go_back()
    return load(path)


def _as_trace(trace: Trace | Path) -> Trace:
    """The trace to replay: loaded (:func:`load_trace`), or as given with the threshold
    fixed for what the replay frees."""
    if isinstance(trace, Trace):
        _large_frees_go_back()
        return trace
    return load_trace(Path(trace))


def trace_about(tr: Trace) -> dict[str, Any]:
    """What a results index says of its trace: name, path as given and resolved, and
    the sha256 of its events and of its manifest (which names every file's)."""
    return {
        "name": tr.name,
        "path": str(tr.path),
        "resolved": str(tr.path.resolve()),
        "events_sha256": tr.events_sha256,
        "manifest_sha256": schema.sha256_of(tr.path / "manifest.json"),
    }


def table_about(table: costs.CostTable, path: Path | None = None) -> dict[str, Any]:
    """What a results index says of its cost table: name, sha256, origin, and the
    resolved path of a table read from a file."""
    return {
        "name": table.name,
        "sha256": table.sha256,
        "origin": table.origin,
        "path": None if path is None else str(Path(path).resolve()),
    }


def table_dir(out: Path, table: costs.CostTable) -> Path:
    """Where the runs under ``table`` go in a results directory of several tables."""
    return Path(out) / f"{results.TABLE_PREFIX}{table.name}"


def replay_tables(
    trace: Trace | Path,
    runs: list[backends.Run],
    tables: list[tuple[costs.CostTable, Path | None]],
    out: Path | None = None,
    progress: Callable[[str, str, int], None] | None = None,
    jobs: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Replay every run under each cost table (with the file it was read from, None for a
    preset) into ``out/costs=NAME`` (:func:`table_dir`), each a results directory of its
    own, under one lock on ``out``; return the summaries by table name, in the order given.
    ``progress(table, label, events_done)`` as each run goes.  Tables must have distinct
    names."""
    names = [t.name for t, _ in tables]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"two cost tables named {dup[0]!r}: each table needs its own name")
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", n)]
    if bad:
        raise UsageError(
            f"cost table name {bad[0]!r}: not usable as a directory name (letters, digits, "
            "'.', '_', '+', '-')"
        )
    tr = _as_trace(trace)
    root = Path(out) if out is not None else default_out(tr.path)
    done: dict[str, list[dict[str, Any]]] = {}
    with _exclusive(root):
        listed = {t.name: table_about(t, p) for t, p in tables}
        results.plan_tables(root, tr.events_sha256, listed, {"trace": trace_about(tr)})
        for t, p in tables:
            cb = None
            if progress is not None:

                def cb(label: str, k: int, _name: str = t.name) -> None:
                    progress(_name, label, k)

            done[t.name] = replay_trace(tr, runs, t, table_dir(root, t), cb, jobs, p)
    return done


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold the results directory for one replay at a time (a lock on the directory
    itself: no file left in it): a second writer fails in one line instead of mixing its
    runs, or its cost table, into the first's."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PvscopeError(
                f"{root}: another replay is writing these results; wait for it or give another -o"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _die_with_parent() -> None:
    """In a worker: be killed when the replaying process dies (Linux ``PR_SET_PDEATHSIG``),
    so that a killed replay leaves no worker writing on after it; leave signals to the
    parent."""
    import signal

    # the parent answers Ctrl-C and SIGTERM; a worker just goes when told (the pool
    # terminates workers with SIGTERM: the command line's handler would print for each)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)


#: The trace a helper works out the loaded spaces of (:func:`_prepare`), inherited.
_SPACES_OF: Trace | None = None


def _spaces() -> dict[str, Any]:
    """In a helper: :func:`replayer.engine.spaced` of the shared trace."""
    assert _SPACES_OF is not None
    return engine.spaced(_SPACES_OF)


def _prepare(tr: Trace) -> None:
    """:func:`replayer.engine.prepare` on two cores: the tables the loaded directory names
    over the trace and what reads them (its longest part) worked out in a forked helper
    meanwhile."""
    global _SPACES_OF
    _SPACES_OF = tr
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1, initializer=_die_with_parent) as pool:
            got = pool.apply_async(_spaces)
            engine.prepare(tr, spaces=got.get)
    finally:
        _SPACES_OF = None


#: Blocks from this size up are mappings of their own (glibc's ``M_MMAP_THRESHOLD``).
MMAP_FROM = 4 << 20


def _large_frees_go_back() -> bool:
    """Fix the size from which glibc gives a block a mapping of its own at
    :data:`MMAP_FROM`, so that a freed per-event array leaves the process at once; return
    whether it was set (False where the C library is not glibc).

    Left alone, glibc raises that threshold to the largest block freed so far (up to 32
    MiB): on a 10 M-event trace the one-byte columns (10 MiB) then come from the heap, whose
    freed pages stay resident and count in every later peak.  On sched (10.36 M events)
    ``replay -b all``'s largest process went from 2.00 to 1.92 GiB, in the same time."""
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_FROM))  # -3: M_MMAP_THRESHOLD
    return False


def _give_back_freed_memory() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``), so that
    the workers forked next do not start with them counted in their resident size."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def job_plan(
    tr: Trace, runs: list[backends.Run], table: costs.CostTable, jobs: int | None = None
) -> workers.JobPlan:
    """How many worker processes a replay of ``runs`` starts (:func:`workers.plan`):
    ``jobs`` as given, else one per usable CPU and no more than its groups of runs and the
    available memory hold; one inside a pool's worker, which may not start workers."""
    return _job_plan(tr.n, len(_groups(runs, table)), jobs)


def _job_plan(events: int, groups: int, jobs: int | None) -> workers.JobPlan:
    if multiprocessing.current_process().daemon:
        return workers.JobPlan(1, 1, workers.worker_need(events), None)
    return workers.plan(events, groups, jobs, held=workers.resident())


def _replay_runs(
    tr: Trace,
    runs: list[backends.Run],
    table: costs.CostTable,
    root: Path,
    progress: Callable[[str, int], None] | None,
    jobs: int | None,
) -> list[dict[str, Any]]:
    """:func:`replay_trace` under the results directory's lock."""
    global _SHARED
    groups = _groups(runs, table)
    jobs = _job_plan(tr.n, len(groups), jobs).jobs
    done: dict[int, dict[str, Any]] = {}
    if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
        # what every run derives from the trace alike, once, before the workers fork
        _prepare(tr)
        root.mkdir(parents=True, exist_ok=True)
        _SHARED = (tr, runs, table, root, frozenset(tr.cache))
        # the workers must not collect the parent's objects: garbage left by earlier work
        # (an emulator, say) would be finalized in a process it does not belong to, and
        # walking the rest would copy every page of it; so collect, and freeze what stays
        gc.collect()
        gc.freeze()
        try:
            ctx = multiprocessing.get_context("fork")
            _give_back_freed_memory()
            with ctx.Pool(jobs, initializer=_die_with_parent) as pool:
                # the groups go out in order (the longest first), and each is reported
                # as it is done, whichever worker finishes first
                for ids, summaries in pool.imap_unordered(_group, groups):
                    for i, summary in zip(ids, summaries, strict=True):
                        done[i] = summary
                        if progress is not None:
                            progress(runs[i].label, tr.n)
        finally:
            _SHARED = None
            gc.unfreeze()
        return [done[i] for i in range(len(runs))]
    # several groups in this process, as one worker takes them: what every run derives
    # alike made first, and each group started from the trace as prepared (on fork's 31
    # runs the process's peak 2.09 -> 1.94 GiB)
    prepared = None
    if len(groups) > 1:
        engine.prepare(tr)
        prepared = frozenset(tr.cache)
    for ids in groups:
        if prepared is not None:
            _as_prepared(tr, prepared)
        for j, i in enumerate(ids):
            cb = None
            if progress is not None:

                def cb(k: int, _label: str = runs[i].label) -> None:
                    progress(_label, k)

            done[i] = _replay_one(tr, runs, ids, j, table, root, cb)
    return [done[i] for i in range(len(runs))]


def golden_summaries(
    trace: Path, out: Path, progress: Callable[[str, int], None] | None = None
) -> dict[str, dict[str, Any]]:
    """Replay a trace with every backend and ablation (default cost table) into ``out``;
    each one's summary by backend label (what ``pvscope golden`` keeps)."""
    table = costs.load(costs.DEFAULT_PRESET)
    sums = replay_trace(Path(trace), backends.all_runs(), table, out, progress=progress)
    return {s["backend"]: s for s in sums}
