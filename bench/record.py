"""Recorder speed: hook calls logged per second, ring path vs Python-callback path.

Both paths record the same guest at the same scale in one run, each in its own
process (so peak memory is per recording), timed around ``record()`` alone.
Then a >= 10 M-event recording checks that memory stays flat.  With
``--workloads``, instead takes every built-in workload at its default scale, each in
three processes one after the other:

- the recording, timed around ``record()`` alone (ring path);
- the same guest *bare*: the same machine run for the same instructions (checked) with
  nothing recorded -- ring records dropped, no state checkpoints, no TLB samples -- so
  what is left is unicorn and what the guest needs to run at all (the instruction
  clock, interrupt delivery, the hypervisor's services, MMIO).  The recording's
  instructions per second over the bare run's is the recording's overhead;
  the bare run's time inside ``emu_start`` (the emulation and the Python callbacks it
  makes: traps, MMIO) shows how close the bare run is to unicorn alone;
- the whole ``pvscope record -g NAME`` process (start-up, recording, writing), timed
  from outside, over ``record()`` alone.

    python bench/record.py [--scale N] [--big-scale N] [--json]
    python bench/record.py --workloads [NAME ...] [--no-process] [--json]
    python bench/record.py --against REV [--guest G] [--scale N] [--rounds K] [--json]

``--against REV`` records the same guest with this tree and with git revision REV
(checked out into a temporary worktree), alternating K rounds so both see the same
machine load, and prints the ratios of guest instructions and of events per second: what a
change to the recorder costs.  (Exact per-event virtual time cost is measured this way
against the last revision with quantum-granular vtime.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class _NullWriter:
    """What a :class:`~recorder.machine.Machine` writes to, keeping nothing."""

    def __init__(self) -> None:
        import numpy as np

        from recorder import rom
        from recorder.writer import KIND_NAMES, RECORD_DTYPE

        self.kind_counts = np.zeros(len(KIND_NAMES), dtype=np.int64)
        # resolved once: submit_records runs at every drain of the bare run being timed
        self._np, self._dtype, self._first_event = np, RECORD_DTYPE, rom.CODE_EVENT_BASE

    def submit_records(self, raw: bytes) -> None:
        # hook calls counted (the run's result reports them), nothing decoded or kept
        codes = self._np.frombuffer(raw, dtype=self._dtype)["code"]
        self.kind_counts[0] += int(self._np.count_nonzero(codes < self._first_event))

    def add_state(self, rows: list) -> None:
        pass

    def wait(self) -> None:
        pass

    def add_inputs(self, rows: list) -> None:
        pass

    def add_tlb(self, rows: list) -> None:
        pass


def bare(guest: str, scale: int) -> dict[str, Any]:
    """The same guest on the same machine with nothing recorded: ``Machine.run`` with the
    ring drained into a writer that drops the records, and no state checkpoints or TLB
    rows.

    What is left is what the guest needs to run at all: unicorn, the instruction clock
    (quanta, the devices' virtual time), interrupt delivery, the hypervisor's services
    and MMIO -- and the clearing of Accessed bits at TLB flushes, which the guest can
    see (without it, pagefault's page aging takes another path: 803.8 M instructions
    instead of 799.9 M).  Its instruction count equals the recording's (checked by the
    caller), so the guest took the same path."""
    from recorder.elf import load_image
    from recorder.guests import GUESTS, resolve
    from recorder.machine import Machine, MachineConfig

    class Bare(Machine):
        def checkpoint(self, final: bool = False) -> bool:
            return True

        def _tlb_sample(self) -> None:
            # no row, but the Accessed bits cleared all the same: a guest that reads them
            # (pagefault's page aging) takes another path without
            if self._paging:
                self._tlb_walked()

    name, path = resolve(guest)
    cfg = MachineConfig(scale=scale or GUESTS[name].default_scale)
    m = Bare(load_image(path, name), cfg, _NullWriter())  # type: ignore[arg-type]
    try:
        return {"result": m.run(), "machine": m}
    finally:
        m.close()


def child(guest: str, scale: int, log_path: str, out: str) -> None:
    import unicorn

    from recorder.record import record

    # time inside unicorn's emu_start (the CPU emulation alone, with the hooks it runs):
    # the ceiling a recording of this guest could reach
    emu = [0.0]
    real = unicorn.Uc.emu_start

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return real(self, *args, **kwargs)
        finally:
            emu[0] += time.perf_counter() - t

    unicorn.Uc.emu_start = timed  # type: ignore[method-assign]
    t0 = time.perf_counter()
    c0 = time.process_time()
    if log_path == "bare":
        got = bare(guest, scale)
        r = got["result"]
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
        counts = {"hook": r.hook_calls, "events": got["machine"].drained_events}
        counts["instructions"], status = r.instructions, r.status
    else:
        m = record(guest, Path(out), scale=scale or None, log_path=log_path, force=True)
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
        counts = {
            "hook": m["counts"]["by_kind"].get("hook", 0),
            "events": m["counts"]["events"],
            "instructions": m["counts"]["instructions"],
        }
        status = m["end"]["status"]
    print(
        json.dumps(
            {
                "log_path": log_path,
                "scale": scale,
                "seconds": dt,
                "cpu_seconds": cpu,
                "emu_seconds": emu[0],
                "hook_calls": counts["hook"],
                "events": counts["events"],
                "instructions": counts["instructions"],
                "status": status,
                "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def run(guest: str, scale: int, log_path: str, tmp: str, tree: Path | None = None) -> dict:
    """One recording in a child process, with this tree's code or ``tree``'s."""
    script = Path(__file__) if tree is None else tree / "bench" / "record.py"
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    r = subprocess.run(
        [sys.executable, str(script), "--child", guest, str(scale), log_path, f"{tmp}/{log_path}"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tree,
    )
    return json.loads(r.stdout)


def against(rev: str, guest: str, scale: int, rounds: int, as_json: bool) -> None:
    """This tree and ``rev``, alternating, on the same guest and scale."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "rev"
        subprocess.run(
            ["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(tree), rev],
            check=True,
        )
        try:
            runs: dict[str, list[dict]] = {"this": [], rev: []}
            for _ in range(rounds):
                runs["this"].append(run(guest, scale, "ring", tmp))
                runs[rev].append(run(guest, scale, "ring", tmp, tree))
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)])
    rate = {
        k: sorted(r["instructions"] / r["seconds"] for r in v)[len(v) // 2] for k, v in runs.items()
    }
    erate = {k: sorted(r["events"] / r["seconds"] for r in v)[len(v) // 2] for k, v in runs.items()}
    result = {
        "guest": guest,
        "scale": scale,
        "rounds": rounds,
        "median_insns_per_s": rate,
        "median_events_per_s": erate,
        "events_ratio_this_over_rev": erate["this"] / erate[rev],
        "events": {k: v[0]["events"] for k, v in runs.items()},
        "ratio_this_over_rev": rate["this"] / rate[rev],
        "runs": runs,
    }
    if as_json:
        print(json.dumps(result, indent=1))
        return
    for k, v in runs.items():
        secs = ", ".join(f"{r['seconds']:.2f}" for r in v)
        print(
            f"{k:<12} {v[0]['events']:>11,} events {v[0]['instructions']:>14,} insns  "
            f"median {rate[k] / 1e6:6.2f} M insns/s over {len(v)} runs "
            f"({secs} s)"
        )
    print(
        f"this tree / {rev}: {result['ratio_this_over_rev']:.3f}x instructions per second, "
        f"{result['events_ratio_this_over_rev']:.3f}x events per second (the two differ when "
        "the same work retires a different number of instructions)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guest", default="pvcall")
    ap.add_argument("--scale", type=int, default=150_000)
    ap.add_argument(
        "--big-scale",
        type=int,
        default=620_000,
        help="scale of the memory check (pvcall: about 10 M events)",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--workloads",
        nargs="*",
        metavar="NAME",
        help="record these built-in workloads (default: all) at their default scale instead",
    )
    ap.add_argument(
        "--no-process",
        action="store_true",
        help="with --workloads: skip timing the whole pvscope record process",
    )
    ap.add_argument("--against", metavar="REV", help="compare with git revision REV")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds for --against")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), a.child[2], a.child[3])
        return
    if a.against:
        against(a.against, a.guest, a.scale, a.rounds, a.json)
        return
    if a.workloads is not None:
        workloads(a.workloads, a.json, cli=not a.no_process)
        return
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        ring = run(a.guest, a.scale, "ring", tmp)
        python = run(a.guest, a.scale, "python", tmp)
        same = all(
            Path(f"{tmp}/ring/{f}").read_bytes() == Path(f"{tmp}/python/{f}").read_bytes()
            for f in ("events.parquet", "inputs.parquet", "state.parquet", "manifest.json")
        )
        big = run(a.guest, a.big_scale, "ring", tmp) if a.big_scale else None
    rate = {r["log_path"]: r["hook_calls"] / r["seconds"] for r in (ring, python)}
    result = {
        "guest": a.guest,
        "ring": ring,
        "python": python,
        "ring_calls_per_s": rate["ring"],
        "python_calls_per_s": rate["python"],
        "ratio": rate["ring"] / rate["python"],
        "identical_traces": same,
        "big": big,
        "loadavg_1min": [load_before, os.getloadavg()[0]],
        "cpus": os.cpu_count(),
    }
    if a.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"{a.guest} at scale {a.scale}: {ring['hook_calls']:,} hook calls, "
        f"{ring['instructions']:,} instructions"
    )
    for r in (ring, python):
        print(
            f"  {r['log_path']:<6} {r['seconds']:7.2f} s  "
            f"{r['hook_calls'] / r['seconds'] / 1e6:6.2f} M calls/s  "
            f"(cpu {r['cpu_seconds']:.2f} s)  peak {r['maxrss_mib']:.0f} MiB"
        )
    print(f"  ratio ring/python: {result['ratio']:.1f}x; traces byte-identical: {same}")
    print(
        f"  1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, "
        f"on {os.cpu_count()} CPUs (wall times above assume the recorder had them)"
    )
    if big:
        print(
            f"  {big['events']:,}-event recording: {big['seconds']:.1f} s, "
            f"{big['events'] / big['seconds'] / 1e6:.2f} M events/s, "
            f"peak {big['maxrss_mib']:.0f} MiB"
        )


def workloads(names: list[str], as_json: bool, cli: bool = True) -> None:
    """Each workload at its default scale, one process each, one after the other: the
    recording (``record()`` alone), the same guest bare (:func:`bare`), and the whole
    ``pvscope record`` process."""
    from recorder.guests import GUESTS

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or list(GUESTS):
            r = run(name, 0, "ring", tmp)
            b = run(name, 0, "bare", tmp)
            r["same_path"] = (b["instructions"], b["events"]) == (r["instructions"], r["events"])
            r["guest"] = name
            r["bare"] = b
            # instructions per second, recording over bare (the same count of both)
            r["over_bare"] = b["seconds"] / r["seconds"]
            if cli:
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "pvscope", "record", "-g", name, "-q", "--force"]
                    + ["-o", f"{tmp}/cli"],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                r["process_seconds"] = time.perf_counter() - t0
                r["process_over_record"] = r["process_seconds"] / r["seconds"]
            rows.append(r)
            if not as_json:
                line = (
                    f"{name:<10} {r['events']:>11,} events {r['instructions']:>14,} insns  "
                    f"record() {r['seconds']:6.1f} s  bare {b['seconds']:6.1f} s "
                    f"(in emu_start {b['emu_seconds']:6.1f} s)  "
                    f"recording at {r['over_bare']:.2f}x bare insns/s"
                )
                if not r["same_path"]:
                    line += f"  (NOT COMPARABLE: the bare run retired {b['instructions']:,})"
                if cli:
                    line += (
                        f"  pvscope record {r['process_seconds']:6.1f} s "
                        f"= {r['process_over_record']:.2f}x record()"
                    )
                print(line, flush=True)
    if as_json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
