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
guests at their default scale (2.7-17.1 M events), with a margin of 6-10 %.  ``bench/replay.py
--wall`` measures both again on a trace (sampling each process's private memory) and
fails where a bound is exceeded.  What the model bounds is linear in the trace's events:
a worker's columns are whole-trace arrays, not slices.

By default a replay starts one worker per usable CPU, or fewer: as many as the memory
available (the system's ``MemAvailable``, or less where the process's control group has
a memory limit, as in a container) holds once the parent's share is taken out, and at
least one.  An explicit job count (``--jobs``) is taken as given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: A worker's own memory at its peak, per trace event: at most 102 bytes measured (boot,
#: 10.46 M events, 0.98-0.99 GiB of private pages), with about 10 % margin.
WORKER_BYTES_PER_EVENT = 112
#: The parent's memory at its peak (the loaded trace, then ``engine.prepare``), per
#: trace event: at most 102 bytes measured (irqstorm, 17.09 M events, 1.59-1.62 GiB,
#: with the hook results kept sparse; 109 bytes, 1.66-1.73 GiB, before), with about 6 %
#: margin.
PARENT_BYTES_PER_EVENT = 108
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


#: This process's control groups, and where their hierarchies are mounted.
CGROUP_OF, CGROUP_FS = Path("/proc/self/cgroup"), Path("/sys/fs/cgroup")
#: A memory limit at or above this is no limit (cgroup v1 writes 2^63 rounded to pages).
_UNLIMITED = 1 << 62


def available(
    meminfo: Path = MEMINFO, cgroup_of: Path = CGROUP_OF, cgroup_fs: Path = CGROUP_FS
) -> int | None:
    """The memory available for new work, in bytes: what the system says
    (``MemAvailable``), or less where this process's control group is limited
    (:func:`cgroup_headroom`: a container's limit, which ``MemAvailable`` does not see);
    None where neither says."""
    sys_free = _meminfo_available(meminfo)
    group = cgroup_headroom(cgroup_of, cgroup_fs)
    known = [x for x in (sys_free, group) if x is not None]
    return min(known) if known else None


def _meminfo_available(meminfo: Path) -> int | None:
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


def _number(path: Path) -> int | None:
    """A file's one integer (None: absent, ``max`` or not a number)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat(path: Path, key: str) -> int:
    """One key of a ``memory.stat`` file (0 where absent)."""
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key and v.strip().isdigit():
                return int(v)
    except OSError:
        pass
    return 0


def cgroup_headroom(cgroup_of: Path = CGROUP_OF, cgroup_fs: Path = CGROUP_FS) -> int | None:
    """How much more this process's control group may use before its memory limit, in
    bytes: the tightest limit from its group up to the root, less what each group uses
    (its page cache not yet active counted as free); None where no group is limited.
    cgroup v2 (``memory.max``, ``memory.current``) and v1 (``memory.limit_in_bytes``,
    ``memory.usage_in_bytes``)."""
    try:
        lines = cgroup_of.read_text().splitlines()
    except OSError:
        return None
    best: int | None = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one hierarchy
            base, limit_f, usage_f = cgroup_fs, "memory.max", "memory.current"
            cache_key = "inactive_file"
        elif "memory" in controllers.split(","):
            base = cgroup_fs / "memory"
            limit_f, usage_f = "memory.limit_in_bytes", "memory.usage_in_bytes"
            cache_key = "total_inactive_file"
        else:
            continue
        rel = Path(path.strip().lstrip("/"))
        # from the group up to the hierarchy's root (a namespaced view mounts the group
        # itself as the root: what is not there is skipped)
        for d in [base / rel, *[base / p for p in rel.parents]]:
            limit = _number(d / limit_f)
            if limit is None or limit >= _UNLIMITED:
                continue
            used = (_number(d / usage_f) or 0) - _stat(d / "memory.stat", cache_key)
            room = max(limit - max(used, 0), 0)
            best = room if best is None else min(best, room)
    return best


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
