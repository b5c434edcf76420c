"""How many worker processes a replay of several runs can afford: its memory model.

A replay of several runs (``--backend all``) holds, by design:

* **the parent**: the decoded trace and what every run derives from it alike
  (``engine.prepare``), at most :data:`PARENT_BYTES_PER_EVENT` per event and
  :data:`BASE` more;
* **each worker**: forked from the parent, it shares the parent's pages and adds its
  own (copied on write, or new): one group of runs at a time, of which one run's
  per-event columns, pass and proofs at a time (``engine.release`` lets go of the rest),
  at most :data:`WORKER_BYTES_PER_EVENT` per event and :data:`BASE` more.

Both bounds are measured, not derived: the largest figure seen on the seven built-in
guests at their default scale (2.7-17.1 M events), with a margin of 6-7 %.  ``bench/replay.py
--wall`` measures both again on a trace (sampling each process's private memory) and
fails where a bound is exceeded.  What the model bounds is linear in the trace's events:
a worker's columns are whole-trace arrays, not slices.

By default a replay starts one worker per usable CPU, or fewer: as many as the memory
the system says is available (``MemAvailable``) holds once the parent's share is taken
out, and at least one.  An explicit job count (``--jobs``) is taken as given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: A worker's own memory at its peak, per trace event: at most 128 bytes measured (boot,
#: 10.46 M events, 1.20-1.25 GiB of private pages), with about 6 % margin.
WORKER_BYTES_PER_EVENT = 136
#: The parent's memory at its peak (the loaded trace, then ``engine.prepare``), per
#: trace event: at most 108 bytes measured (irqstorm, 17.09 M events, 1.66-1.72 GiB),
#: with about 7 % margin.
PARENT_BYTES_PER_EVENT = 116
#: What a process holds whatever the trace (the interpreter, numpy, pyarrow, duckdb).
BASE = 128 << 20
#: Where the system says how much memory is available.
MEMINFO = Path("/proc/meminfo")


def worker_need(events: int) -> int:
    """Bytes one worker is expected to need at its peak, over what it shares."""
    return BASE + WORKER_BYTES_PER_EVENT * events


def parent_need(events: int) -> int:
    """Bytes the parent is expected to hold at its peak."""
    return BASE + PARENT_BYTES_PER_EVENT * events


def available(meminfo: Path = MEMINFO) -> int | None:
    """The memory the system says is available for new work (``MemAvailable``, bytes);
    None where it does not say."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def resident() -> int:
    """This process's resident size now (bytes; 0 where the system does not say)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def usable_cpus() -> int:
    """The CPUs this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


@dataclass(frozen=True)
class JobPlan:
    """How many workers a replay starts, and why."""

    jobs: int
    """Worker processes (1: the runs are replayed in this process)."""
    wanted: int
    """What the CPUs (or ``--jobs``) and the groups of runs would have started."""
    need: int
    """Bytes each worker is expected to need (:func:`worker_need`)."""
    free: int | None
    """Bytes available for the workers when planned (None: not known)."""

    @property
    def capped(self) -> bool:
        """Whether memory, not CPUs, set the count."""
        return self.jobs < self.wanted

    def note(self) -> str | None:
        """One line for the user where memory set the count or may not suffice."""
        if self.free is None:
            return None
        gib = 2**30
        free = f"{max(self.free, 0) / gib:.1f} GiB"
        if self.jobs * self.need > self.free:
            who = "its runs are" if self.jobs == 1 else f"{self.jobs} workers are"
            return (
                f"{free} of memory available beside the trace, and {who} expected to need "
                f"{self.jobs * self.need / gib:.1f} GiB: the replay may swap"
            )
        if self.capped:
            return (
                f"{self.jobs} worker(s), not {self.wanted}: each is expected to need "
                f"{self.need / gib:.1f} GiB, and {free} is available for them (--jobs to "
                "choose)"
            )
        return None


def plan(
    events: int,
    groups: int,
    jobs: int | None = None,
    free: int | None = None,
    held: int = 0,
) -> JobPlan:
    """Workers for a replay of ``groups`` groups of runs over a trace of ``events``:
    ``jobs`` as given, else one per usable CPU, no more than there are groups, and no more
    than ``free`` bytes of available memory (default: :func:`available`) hold, after the
    parent's expected peak less ``held``, what it holds already."""
    wanted = max(1, min(jobs if jobs is not None else usable_cpus(), groups))
    need = worker_need(events)
    if free is None:
        free = available()
    if free is None:
        return JobPlan(wanted, wanted, need, None)
    left = free - max(parent_need(events) - held, 0)
    if jobs is not None:
        return JobPlan(wanted, wanted, need, left)
    fits = max(left, 0) // need
    return JobPlan(max(1, min(wanted, fits)), wanted, need, left)
