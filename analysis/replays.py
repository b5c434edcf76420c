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
from pvscope import display
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
        a, b = (display.yes_no(c[k]) for k in ("a", "b"))
        out.append(f"  {c['backend']}: correct {a} in A, {b} in B")
    if result["checks"]:
        t = display.Table("violations that differ", note="--json for every column")
        t.add_columns(
            ("backend", False, 9),
            ("check", False, 8),
            ("A", True, 7),
            ("B", True, 7),
            ("change", True, 6),
            ("first seq A", True, 2),
            ("first seq B", True, 2),
        )
        for c in result["checks"]:
            t.add_row(
                c["backend"],
                c["check"],
                display.count(c["a"]),
                display.count(c["b"]),
                _signed(c["delta"]),
                display.value(c["first_seq_a"], "id"),
                display.value(c["first_seq_b"], "id"),
            )
        out += _lines(t)
    out += render_relative(result)
    if result["groups"]:
        t = display.Table("cycles per hook group that differ", note="--json for every column")
        t.add_columns(
            ("backend", False, 9),
            ("group", False, 8),
            ("cycles A", True, 6),
            ("cycles B", True, 6),
            ("B/A", True, 7),
        )
        for g in result["groups"]:
            t.add_row(
                g["backend"],
                g["group"],
                display.number(g["a"]),
                display.number(g["b"]),
                display.ratio(g["ratio"], 3),
            )
        out += _lines(t)
    return out


def _lines(t: display.Table) -> list[str]:
    return t.render().rstrip("\n").splitlines()


def _signed(v: float | None) -> str:
    """A change with its sign: ``+7``, ``-0.25``; ``-`` for None."""
    if v is None:
        return display.NULL
    return ("+" if v > 0 else "") + display.number(v)


def render_relative(result: dict[str, Any]) -> list[str]:
    """The cost-table comparison of a replay diff: per run, whole-run slowdown and
    interface ratio over native under A's table and B's, and the change."""
    rows = result.get("relative") or []
    if not rows:
        return []
    ta, tb = result["cost_tables"]["a"]["name"], result["cost_tables"]["b"]["name"]
    t = display.Table(
        f"cost tables differ: A {ta}, B {tb}; cost relative to native under each",
        note="--json for every column",
    )
    for head, priority in (
        ("backend", 9),
        ("whole-run A", 8),
        ("whole-run B", 8),
        ("whole-run change", 5),
        ("interface A", 7),
        ("interface B", 7),
        ("interface change", 4),
    ):
        t.add_column(head, numeric=head != "backend", priority=priority)
    by = {(r["backend"], r["side"]): r for r in rows}
    for label in sorted({r["backend"] for r in rows}):
        ra, rb = by.get((label, "a"), {}), by.get((label, "b"), {})
        t.add_row(
            label,
            display.ratio(ra.get("whole_run_slowdown")),
            display.ratio(rb.get("whole_run_slowdown")),
            _signed(_round(rb.get("slowdown_change"))),
            display.ratio(ra.get("interface_ratio")),
            display.ratio(rb.get("interface_ratio")),
            _signed(_round(rb.get("interface_ratio_change"))),
        )
    return _lines(t)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


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
