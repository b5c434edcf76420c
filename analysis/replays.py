"""Replay results as the analysis reads them: finding them, and comparing two.

A replay results directory holds Hive-partitioned Parquet (``backend=NAME/…``, or
``costs=TABLE/backend=NAME/…`` when replayed under several cost tables); by default it is
``TRACE/replay``, but it may be kept anywhere: its index names its trace, which
:func:`analysis.views.find_trace` finds and checks by hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis import queries
from analysis.views import REPLAY_DIR, Session, Source, find_trace, load_json, pair
from pvscope.errors import UsageError


def is_replay(p: Path) -> bool:
    """A replay results directory: Parquet files under it and no trace manifest."""
    p = Path(p)
    return p.is_dir() and not (p / "manifest.json").exists() and any(p.rglob("*.parquet"))


def trace_of(results: Path, given: list[Path] | None = None) -> Path:
    """The trace a results directory replayed (:func:`analysis.views.find_trace`)."""
    trace = find_trace(results, given)
    assert trace is not None
    return trace


def single_table(results: Path) -> Path:
    """``results`` itself, refused in one line when it holds runs under several cost
    tables (compare those with ``pvscope report``, or give one ``costs=NAME`` of them)."""
    from replayer.results import table_dirs

    tables = table_dirs(results)
    if tables:
        names = ", ".join(d.name for d in tables)
        raise UsageError(
            f"{results}: replays under several cost tables ({names}); give one of them, "
            f"e.g. {tables[0]}"
        )
    return Path(results)


def cost_table_of(results: Path) -> dict[str, Any]:
    """The cost table a one-table results directory's runs used (name and sha256)."""
    from replayer.results import read_index

    index = read_index(results) or {}
    about = index.get("cost_table")
    if isinstance(about, dict):
        return {"name": about.get("name"), "sha256": about.get("sha256")}
    for d in sorted(Path(results).glob("backend=*")):
        m = load_json(d / "manifest.json")
        t = m.get("cost_table", {}) if isinstance(m, dict) else {}
        return {"name": t.get("name"), "sha256": t.get("sha256")}
    return {"name": None, "sha256": index.get("cost_sha256")}


def _summaries(results: Path) -> dict[str, dict[str, Any]]:
    """Each run's one-row summary by label, from a verified one-table results directory."""
    import pyarrow.parquet as pq

    out = {}
    for d in sorted(Path(results).glob("backend=*")):
        out[d.name.removeprefix("backend=")] = pq.read_table(d / "summary.parquet").to_pylist()[0]
    return out


def _sub(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else x - y


def relative_costs(sides: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    """Cost relative to native under each of several cost tables, side by side: for each
    run (by label, in sorted order) and each side (a name and a one-table results
    directory, verified), the whole-run slowdown and the interface ratio over native,
    and their change from the first side's (null on the first side, or where a side
    lacks the run)."""
    sums = [(name, _summaries(root)) for name, root in sides]
    labels = sorted({label for _, s in sums for label in s})
    rows = []
    for label in labels:
        base = sums[0][1].get(label)
        for i, (name, s) in enumerate(sums):
            r = s.get(label)
            slow = None if r is None else r["whole_run_slowdown"]
            ratio = None if r is None else r["interface_ratio"]
            first = i == 0 or base is None
            rows.append(
                {
                    "backend": label,
                    "side": name,
                    "cost_table": None if r is None else r["cost_table"],
                    "whole_run_slowdown": slow,
                    "interface_ratio": ratio,
                    "slowdown_change": None
                    if first
                    else _sub(slow, base["whole_run_slowdown"] if base else None),
                    "interface_ratio_change": None
                    if first
                    else _sub(ratio, base["interface_ratio"] if base else None),
                }
            )
    return rows


def _index(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple[Any, ...], Any]:
    return {tuple(r[k] for k in keys): r for r in rows}


def compare_tables(source: Source) -> list[dict[str, Any]]:
    """For each trace of ``source`` replayed under several cost tables: the runs' cost
    relative to native under each table, side by side (:func:`relative_costs`, ``side``
    naming the table, changes from the first table given), each row with its trace.
    Such a trace's replay views are then narrowed to its first table's runs, so that
    the rest of a report shows one table.  Empty when no trace has several."""
    from replayer.results import TABLE_PREFIX, read_index, table_dirs, verify

    rows: list[dict[str, Any]] = []
    for t in source.traces:
        root = t.replay or t.path / REPLAY_DIR
        if not root.is_dir() or not table_dirs(root):
            continue
        verify(root)
        order = (read_index(root) or {}).get("order") or []
        names = [n for n in order if (root / f"{TABLE_PREFIX}{n}").is_dir()]
        names += [d.name.removeprefix(TABLE_PREFIX) for d in table_dirs(root)]
        names = list(dict.fromkeys(names))
        sides = [(n, root / f"{TABLE_PREFIX}{n}") for n in names]
        rows += [{"trace": t.name, **r} for r in relative_costs(sides)]
        t.replay = sides[0][1]
    return rows


def diff_replays(a: Path, b: Path, traces: list[Path] | None = None) -> dict[str, Any]:
    """Compare two replay results, kept anywhere (their traces found as
    :func:`trace_of` does, ``traces`` given with ``--trace``): violations per backend and
    check, and cycles per group -- or, for replays under two cost tables, each run's
    cost relative to native under each, side by side (:func:`relative_costs`)."""
    a, b = single_table(Path(a)), single_table(Path(b))
    src = pair(trace_of(a, traces), trace_of(b, traces), replays=(a, b))
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
    tables = {"a": cost_table_of(a), "b": cost_table_of(b)}
    relative: list[dict[str, Any]] = []
    if tables["a"]["sha256"] != tables["b"]["sha256"]:
        # other prices: absolute cycles differ everywhere; the question is the cost relative
        # to native under each
        groups = []
        relative = relative_costs([("a", a), ("b", b)])
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
        "equal": not checks
        and not groups
        and not correctness
        and backends_a == backends_b
        and not relative,
        "cost_tables": tables,
        "relative": relative,
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
    out += render_relative(result)
    if result["groups"]:
        out.append(f"{'backend':<28} {'group':<14} {'cycles A':>14} {'cycles B':>14} {'B/A':>7}")
        for g in result["groups"]:
            ratio = f"{g['ratio']:.3f}" if g["ratio"] is not None else "-"
            out.append(
                f"{g['backend']:<28} {g['group']:<14} {g['a']:>14,.0f} {g['b']:>14,.0f} {ratio:>7}"
            )
    return out


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}×"


def _d(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def render_relative(result: dict[str, Any]) -> list[str]:
    """The cost-table comparison of a replay diff: per run, whole-run slowdown and
    interface ratio over native under A's table and B's, and the change."""
    rows = result.get("relative") or []
    if not rows:
        return []
    ta, tb = result["cost_tables"]["a"]["name"], result["cost_tables"]["b"]["name"]
    out = [
        f"cost tables differ: A {ta}, B {tb}; cost relative to native under each "
        "(whole-run slowdown, interface ratio)",
        f"{'backend':<28} {'slowdown A':>10} {'B':>8} {'change':>7}  "
        f"{'interface A':>11} {'B':>8} {'change':>7}",
    ]
    by = {(r["backend"], r["side"]): r for r in rows}
    for label in sorted({r["backend"] for r in rows}):
        ra, rb = by.get((label, "a"), {}), by.get((label, "b"), {})
        out.append(
            f"{label:<28} {_x(ra.get('whole_run_slowdown')):>10} "
            f"{_x(rb.get('whole_run_slowdown')):>8} {_d(rb.get('slowdown_change')):>7}  "
            f"{_x(ra.get('interface_ratio')):>11} {_x(rb.get('interface_ratio')):>8} "
            f"{_d(rb.get('interface_ratio_change')):>7}"
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
