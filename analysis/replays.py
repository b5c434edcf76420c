"""Replay results as the analysis reads them: finding them, and comparing two.

A replay results directory holds Hive-partitioned Parquet (``backend=NAME/…``); by
default it is ``TRACE/replay``, so its trace is its parent directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis import queries
from analysis.views import REPLAY_DIR, Session, pair
from pvscope.errors import UsageError


def is_replay(p: Path) -> bool:
    """A replay results directory: Parquet files under it and no trace manifest."""
    p = Path(p)
    return p.is_dir() and not (p / "manifest.json").exists() and any(p.rglob("*.parquet"))


def trace_of(results: Path) -> Path:
    """The trace a results directory replayed (its parent, in the default layout)."""
    results = Path(results).resolve()
    for cand in (results.parent, results.parent.parent):
        if (cand / "manifest.json").exists():
            return cand
    raise UsageError(
        f"{results}: cannot find the trace it replayed (expected it in TRACE/{REPLAY_DIR})"
    )


def _index(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple[Any, ...], Any]:
    return {tuple(r[k] for k in keys): r for r in rows}


def diff_replays(a: Path, b: Path) -> dict[str, Any]:
    """Compare two replay results: violations per backend and check, cycles per group."""
    src = pair(trace_of(a), trace_of(b), replays=(Path(a), Path(b)))
    with Session(source=src) as s:

        def saved(name: str) -> list[dict[str, Any]]:
            q = queries.load(name)
            if not all(v in s.views for v in q.needs):
                return []
            return s.query(q.sql).to_pylist()

        violations = saved("violations")
        costs = saved("cost_by_group")
        summary = saved("ablation_matrix")
    checks = []
    va = _index([r for r in violations if r["trace"] == "a"], ("backend", "check"))
    vb = _index([r for r in violations if r["trace"] == "b"], ("backend", "check"))
    for key in sorted(set(va) | set(vb)):
        na = va[key]["violations"] if key in va else 0
        nb = vb[key]["violations"] if key in vb else 0
        fa = va[key]["first_seq"] if key in va else None
        fb = vb[key]["first_seq"] if key in vb else None
        if (na, fa) != (nb, fb):
            checks.append(
                {
                    "backend": key[0],
                    "check": key[1],
                    "a": na,
                    "b": nb,
                    "delta": nb - na,
                    "first_seq_a": fa,
                    "first_seq_b": fb,
                }
            )
    groups = []
    ca = _index([r for r in costs if r["trace"] == "a"], ("backend", "group"))
    cb = _index([r for r in costs if r["trace"] == "b"], ("backend", "group"))
    for key in sorted(set(ca) | set(cb)):
        xa = ca[key]["cycles"] if key in ca else 0.0
        xb = cb[key]["cycles"] if key in cb else 0.0
        if xa != xb:
            groups.append(
                {
                    "backend": key[0],
                    "group": key[1],
                    "a": xa,
                    "b": xb,
                    "delta": xb - xa,
                    "ratio": xb / xa if xa else None,
                }
            )
    backends_a = {r["backend"] for r in costs if r["trace"] == "a"}
    backends_b = {r["backend"] for r in costs if r["trace"] == "b"}
    sa = _index([r for r in summary if r["trace"] == "a"], ("backend", "without", "fallback"))
    sb = _index([r for r in summary if r["trace"] == "b"], ("backend", "without", "fallback"))
    correctness = [
        {
            "backend": k[0],
            "without": k[1],
            "fallback": k[2],
            "a": sa[k]["correct"] if k in sa else None,
            "b": sb[k]["correct"] if k in sb else None,
        }
        for k in sorted(set(sa) | set(sb), key=lambda k: tuple(str(x) for x in k))
        if (sa.get(k) or {}).get("correct") != (sb.get(k) or {}).get("correct")
    ]
    return {
        "kind": "replays",
        "a": str(a),
        "b": str(b),
        "equal": not checks and not groups and not correctness and backends_a == backends_b,
        "backends_only_in_a": sorted(backends_a - backends_b),
        "backends_only_in_b": sorted(backends_b - backends_a),
        "correctness": correctness,
        "checks": checks,
        "groups": groups,
    }


def render_replay_diff(result: dict[str, Any]) -> list[str]:
    """Lines for the terminal."""
    if result["equal"]:
        return ["replay results are equal"]
    out = ["replay results differ"]
    for side in ("a", "b"):
        only = result[f"backends_only_in_{side}"]
        if only:
            out.append(f"  backends only in {side.upper()}: {', '.join(only)}")
    for c in result["correctness"]:
        label = c["backend"] + (
            f" without {c['without']} ({c['fallback']})" if c["without"] else ""
        )
        out.append(f"  {label}: correct {c['a']} in A, {c['b']} in B")
    if result["checks"]:
        out.append(f"{'backend':<28} {'check':<20} {'A':>8} {'B':>8} {'delta':>8}  first seq A/B")
        for c in result["checks"]:
            out.append(
                f"{c['backend']:<28} {c['check']:<20} {c['a']:>8} {c['b']:>8} {c['delta']:>+8}"
                f"  {c['first_seq_a']}/{c['first_seq_b']}"
            )
    if result["groups"]:
        out.append(f"{'backend':<28} {'group':<14} {'cycles A':>14} {'cycles B':>14} {'B/A':>7}")
        for g in result["groups"]:
            ratio = f"{g['ratio']:.3f}" if g["ratio"] is not None else "-"
            out.append(
                f"{g['backend']:<28} {g['group']:<14} {g['a']:>14,.0f} {g['b']:>14,.0f} {ratio:>7}"
            )
    return out


def replayer_available() -> bool:
    """True once the replayer package provides its API."""
    try:
        import replayer.api  # noqa: F401
    except ImportError:
        return False
    return True


def replay_all(trace: Path, out: Path, quiet: bool = False) -> None:
    """Replay ``trace`` with every backend and ablation into the results directory ``out``
    (progress on a terminal unless ``quiet``)."""
    from pvscope.progress import Steps
    from replayer.api import golden_summaries
    from replayer.backends import all_runs
    from replayer.trace import load

    n = load(trace).n
    with Steps("replay", len(all_runs()), "runs", quiet) as bar:
        done: set[str] = set()

        def progress(label: str, k: int) -> None:
            if k >= n:
                done.add(label)
            bar.update(len(done), f"{label}: {k:,} of {n:,} events")

        golden_summaries(trace, out, progress)
