"""Golden traces: committed small recordings, and the replay summaries expected of them.

``traces/golden/<workload>/`` holds:

* ``trace/`` -- the workload recorded at its small scale (manifest and Parquet files);
* ``expected/<backend>.json`` -- the replay summary of every backend and ablation;
* ``PROVENANCE.json`` -- guest image sha256, seed, scale, the pvscope and unicorn
  versions and the command that made it.

``check`` re-records each workload and compares the result byte for byte (naming
the first differing event), then replays the golden trace and compares every
summary.  ``update`` regenerates, on purpose only, and says what changed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pvscope import display, schema
from pvscope.errors import PvscopeError, TraceError, UsageError
from pvscope.paths import GOLDEN_ROOT

TRACE_FILES = (
    "manifest.json",
    "events.parquet",
    "inputs.parquet",
    "state.parquet",
    "symbols.parquet",
)


@dataclass
class Outcome:
    """The result of checking one workload."""

    workload: str
    failures: list[str] = field(default_factory=list)
    """One message per failed comparison, each naming what differs."""
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing differed."""
        return not self.failures


def workloads(root: Path = GOLDEN_ROOT) -> list[str]:
    """Workloads with a golden directory, sorted."""
    return (
        sorted(p.name for p in root.iterdir() if (p / "PROVENANCE.json").exists())
        if root.is_dir()
        else []
    )


def _provenance(root: Path, workload: str) -> dict[str, Any]:
    path = root / workload / "PROVENANCE.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TraceError(f"{path}: missing (no golden trace for {workload!r})") from None
    except json.JSONDecodeError as e:
        raise TraceError(f"{path}: corrupt ({e.msg})") from None
    if not isinstance(data, dict) or not {"seed", "scale", "guest"} <= data.keys():
        raise TraceError(f"{path}: corrupt (needs guest, seed and scale)")
    return data


def record_command(workload: str, prov: dict[str, Any], out: str) -> str:
    """The command line that re-records a golden workload."""
    return (
        f"pvscope record --guest {workload} --scale {prov['scale']} --seed {prov['seed']} "
        f"-o {out} --force"
    )


def first_difference(golden: Path, fresh: Path) -> str:
    """Where two traces' event streams first differ: seq and both rows."""
    a = schema.read_table(golden, "events")
    b = schema.read_table(fresh, "events")
    n = min(a.num_rows, b.num_rows)
    step = 1 << 16
    for start in range(0, n, step):
        sa, sb = a.slice(start, step), b.slice(start, step)
        if sa.equals(sb):
            continue
        ra, rb = sa.to_pylist(), sb.to_pylist()
        for i, (x, y) in enumerate(zip(ra, rb, strict=False)):
            if x != y:
                return (
                    f"first differing event at seq {start + i}:\n"
                    f"    golden: {_row(x)}\n    now:    {_row(y)}"
                )
    if a.num_rows != b.num_rows:
        return (
            f"event streams agree for {n} events, then the golden trace has "
            f"{a.num_rows} and the new recording {b.num_rows}"
        )
    return "events are equal; another file differs"


def _row(r: dict[str, Any]) -> str:
    return display.fields({k: r.get(k) for k in schema.EVENTS.names})


def check_trace(root: Path, workload: str, work: Path) -> list[str]:
    """Re-record a golden workload into ``work``; messages for every difference."""
    from recorder.record import record

    prov = _provenance(root, workload)
    golden = root / workload / "trace"
    for f in TRACE_FILES:
        if not (golden / f).exists():
            return [f"{workload}: golden file {golden / f} is missing"]
    try:
        schema.read_manifest(golden)
        for t in ("events", "inputs", "state"):
            schema.read_table(golden, t)
    except PvscopeError as e:
        return [f"{workload}: golden trace is corrupt: {e}"]
    fresh = work / workload
    record(workload, fresh, scale=int(prov["scale"]), seed=int(prov["seed"]), force=True)
    differing = [f for f in TRACE_FILES if (golden / f).read_bytes() != (fresh / f).read_bytes()]
    if not differing:
        return []
    detail = first_difference(golden, fresh) if "events.parquet" in differing else ""
    return [
        f"{workload}: re-recording differs from the golden trace in "
        f"{', '.join(differing)}" + (f"; {detail}" if detail else "")
    ]


def check_replays(root: Path, workload: str, work: Path) -> list[str]:
    """Replay a golden trace with every backend; messages for every summary that differs."""
    expected_dir = root / workload / "expected"
    if not expected_dir.is_dir():
        return []
    failures = []
    actual = replay_summaries(root / workload / "trace", work / f"{workload}-replay")
    expected = {}
    for p in sorted(expected_dir.glob("*.json")):
        try:
            expected[p.stem] = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            failures.append(f"{workload}: expected summary {p} is corrupt ({e.msg})")
    for backend in sorted(set(expected) | set(actual)):
        if backend not in actual:
            failures.append(f"{workload}/{backend}: expected a summary, the replay made none")
        elif backend not in expected:
            failures.append(f"{workload}/{backend}: no expected summary for this backend")
        elif expected[backend] != actual[backend]:
            diffs = dict_diff(expected[backend], actual[backend])
            shown = "; ".join(diffs[:_SHOWN_DIFFS])
            more = len(diffs) - _SHOWN_DIFFS
            failures.append(
                f"{workload}/{backend}: summary differs: {shown}"
                + (f"; and {more} more" if more > 0 else "")
                + f"\n    reproduce:  {replay_command(root, workload, actual[backend])}"
            )
    return failures


_SHOWN_DIFFS = 6


def replay_command(root: Path, workload: str, summary: dict[str, Any]) -> str:
    """The command line that replays one golden run (a summary names its backend and ablation)."""
    cmd = f"pvscope replay {root / workload / 'trace'} --backend {summary.get('base', '?')}"
    if summary.get("without"):
        cmd += f" --without {summary['without']} --fallback {summary.get('fallback')}"
    return cmd + f" -o /tmp/{workload}-replay --json"


def dict_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Every leaf where two JSON values differ, as ``path: expected A, got B``, in key order."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                out += dict_diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [f"{path or 'value'}: expected {_short(a)}, got {_short(b)}"]


def _short(v: Any) -> str:
    """A value for a one-line message: long strings (hashes) cut to their first 12 characters."""
    return repr(v[:12] + "…") if isinstance(v, str) and len(v) > 24 else repr(v)


def replay_summaries(trace: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Replay a trace with every backend and ablation; each one's summary, by backend label.

    Empty until the replayer exists, so golden traces can be kept before it does.
    """
    try:
        import replayer.api  # noqa: F401
    except ImportError:
        return {}
    from replayer.api import golden_summaries

    return golden_summaries(trace, out)


def check(
    names: Iterable[str] | None = None,
    root: Path = GOLDEN_ROOT,
    report: Callable[[str], None] = print,
) -> list[Outcome]:
    """Check golden workloads, printing test-runner style lines through ``report``."""
    names = list(names) if names else workloads(root)
    if not names:
        raise UsageError(f"{root}: no golden traces (make them with 'pvscope golden update')")
    unknown = [n for n in names if not (root / n).is_dir()]
    if unknown:
        raise UsageError(f"no golden trace for {', '.join(unknown)} under {root}")
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="pvscope-golden-") as tmp:
        for name in names:
            report(f"[ RUN      ] {name}")
            out = Outcome(name)
            trace_failed = True
            try:
                out.failures += check_trace(root, name, Path(tmp))
                trace_failed = not out.ok
                out.failures += check_replays(root, name, Path(tmp))
            except PvscopeError as e:
                out.failures.append(f"{name}: {e}")
            if out.ok:
                report(f"[       OK ] {name}")
            else:
                prov = (
                    _provenance(root, name)
                    if (root / name / "PROVENANCE.json").exists()
                    else {"scale": "?", "seed": 0}
                )
                for f in out.failures:
                    report(f"  {f}")
                if trace_failed:
                    report(
                        f"  reproduce:  {record_command(name, prov, '/tmp/' + name)} && "
                        f"pvscope diff {root / name / 'trace'} /tmp/{name}"
                    )
                report(f"  regenerate: pvscope golden update {name}   (on purpose only)")
                report(f"[  FAILED  ] {name}")
            outcomes.append(out)
    passed = sum(o.ok for o in outcomes)
    report(
        f"[==========] {display.plural(len(outcomes), 'golden workload')}: {passed} passed, "
        f"{len(outcomes) - passed} failed"
    )
    return outcomes


def update(
    names: Iterable[str],
    scales: dict[str, int],
    root: Path = GOLDEN_ROOT,
    seed: int = 0,
    report: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Regenerate golden workloads (trace, expected summaries, provenance); say what
    changed, and return it (:func:`changes`, one per workload)."""
    import unicorn

    from pvscope import __version__
    from recorder.record import record

    root.mkdir(parents=True, exist_ok=True)
    done = []
    for name in names:
        target = root / name
        with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=root) as tmp:
            staging = Path(tmp) / name
            staging.mkdir()
            manifest = record(name, staging / "trace", scale=scales[name], seed=seed)
            summaries = replay_summaries(staging / "trace", Path(tmp) / "replay")
            if summaries:
                (staging / "expected").mkdir()
                for backend, summary in sorted(summaries.items()):
                    (staging / "expected" / f"{backend}.json").write_text(
                        json.dumps(summary, indent=1, sort_keys=True) + "\n"
                    )
            prov = {
                "guest": manifest["guest"],
                "seed": seed,
                "scale": scales[name],
                "pvscope_version": __version__,
                "unicorn_version": unicorn.__version__,
                "command": record_command(
                    name, {"scale": scales[name], "seed": seed}, f"traces/golden/{name}/trace"
                ),
            }
            (staging / "PROVENANCE.json").write_text(
                json.dumps(prov, indent=1, sort_keys=True) + "\n"
            )
            change = changes(target, staging, name)
            report(render_changes(change))
            done.append(change)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(staging), str(target))
    return done


def changes(old: Path, new: Path, name: str) -> dict[str, Any]:
    """What regenerating a workload changed: ``state`` (new, unchanged or changed), the
    files ``added``, ``changed`` and ``removed``, and where the events first differ."""
    out: dict[str, Any] = {
        "workload": name,
        "state": "new",
        "added": [],
        "changed": [],
        "removed": [],
        "first_difference": None,
    }
    if not old.exists():
        return out
    for p in sorted(q.relative_to(new) for q in new.rglob("*") if q.is_file()):
        before = old / p
        if not before.exists():
            out["added"].append(str(p))
        elif before.read_bytes() != (new / p).read_bytes():
            out["changed"].append(str(p))
    for p in sorted(q.relative_to(old) for q in old.rglob("*") if q.is_file()):
        if not (new / p).exists():
            out["removed"].append(str(p))
    old_events, new_events = old / "trace" / "events.parquet", new / "trace" / "events.parquet"
    if old_events.exists() and old_events.read_bytes() != new_events.read_bytes():
        with contextlib.suppress(PvscopeError, pa.ArrowException):
            out["first_difference"] = first_difference(old / "trace", new / "trace").splitlines()[0]
    changed = out["added"] or out["changed"] or out["removed"]
    out["state"] = "changed" if changed else "unchanged"
    return out


def render_changes(c: dict[str, Any]) -> str:
    """:func:`changes` for the terminal: ``+``, ``~`` and ``-`` per file."""
    name = c["workload"]
    if c["state"] == "new":
        return f"{name}: new golden workload"
    if c["state"] == "unchanged":
        return f"{name}: unchanged"
    lines = [f"{name}:"]
    lines += [f"  + {p}" for p in c["added"]]
    lines += [f"  ~ {p}" for p in c["changed"]]
    lines += [f"  - {p}" for p in c["removed"]]
    if c["first_difference"]:
        lines.append("  " + c["first_difference"])
    return "\n".join(lines)
