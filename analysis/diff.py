"""``pvscope diff A B``: where two traces, or two replay results, part ways.

Two traces: the first event (by ``seq``) that differs in any column, the change in call
counts per hook (and per event kind for other events), and per hook how many calls'
arguments have no counterpart on the other side (a multiset difference of
``(arg0, arg1, arg2, arg3, result)``, so one inserted call does not count as every later
call changing).  Two replay results: per backend and check, the change in violations,
and per backend and hook group, the change in cycles; for replays under two cost tables,
each run's whole-run slowdown and interface ratio over native under each, and the change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.views import Session, pair
from pvscope import display, schema
from pvscope.errors import UsageError

#: Columns compared to find the first divergence: every event column but ``seq``.
COMPARED = [c for c in schema.EVENTS.names if c != "seq"]
ARGS = ["arg0", "arg1", "arg2", "arg3", "result"]


def _manifest_changes(a: dict[str, Any], b: dict[str, Any], path: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        key = f"{path}.{k}" if path else k
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _manifest_changes(va, vb, key)
        elif va != vb:
            out.append(key)
    return out


def diff_traces(a: Path, b: Path) -> dict[str, Any]:
    """Compare two traces; the result's ``equal`` is False when anything differs."""
    src = pair(a, b)
    cols = ", ".join(f'"{c}"' for c in COMPARED)
    with Session(source=src) as s:
        s.ensure({"events", "inputs", "state"})
        first = s.query(
            f"""
            WITH a AS (SELECT seq, struct_pack({cols}) AS r FROM events WHERE trace = 'a'),
                 b AS (SELECT seq, struct_pack({cols}) AS r FROM events WHERE trace = 'b')
            SELECT seq, a.r AS a, b.r AS b
            FROM a FULL JOIN b USING (seq)
            WHERE a.r IS DISTINCT FROM b.r
            ORDER BY seq
            LIMIT 1
            """
        ).to_pylist()
        args = ", ".join(ARGS)
        hooks = s.query(
            f"""
            WITH c AS (
                SELECT trace, coalesce(hook, kind) AS name, kind, {args}, count(*) AS n
                FROM events GROUP BY ALL
            ),
            p AS (
                SELECT name, kind, {args},
                       coalesce(sum(n) FILTER (WHERE trace = 'a'), 0) AS na,
                       coalesce(sum(n) FILTER (WHERE trace = 'b'), 0) AS nb
                FROM c GROUP BY ALL
            )
            SELECT name, kind,
                   sum(na)::BIGINT AS a, sum(nb)::BIGINT AS b, (sum(nb) - sum(na))::BIGINT AS delta,
                   sum(greatest(na - nb, 0))::BIGINT AS args_only_in_a,
                   sum(greatest(nb - na, 0))::BIGINT AS args_only_in_b
            FROM p GROUP BY name, kind
            HAVING sum(na) <> sum(nb) OR sum(greatest(na - nb, 0)) > 0
                OR sum(greatest(nb - na, 0)) > 0
            ORDER BY abs(sum(nb) - sum(na)) DESC, name
            """
        ).to_pylist()
        counts = dict(s.con.execute("SELECT trace, count(*) FROM events GROUP BY trace").fetchall())
        tables = {}
        for t in ("inputs", "state"):
            names = ", ".join(f'"{c}"' for c in schema.TABLES[t].names)
            n = s.con.execute(
                f"""SELECT count(*) FROM (
                    (SELECT {names} FROM {t} WHERE trace = 'a'
                     EXCEPT ALL SELECT {names} FROM {t} WHERE trace = 'b')
                    UNION ALL
                    (SELECT {names} FROM {t} WHERE trace = 'b'
                     EXCEPT ALL SELECT {names} FROM {t} WHERE trace = 'a'))"""
            ).fetchone()
            tables[t] = int(n[0]) if n else 0
    divergence = None
    if first:
        r = first[0]
        divergence = {"seq": r["seq"], "a": _row(r["seq"], r["a"]), "b": _row(r["seq"], r["b"])}
    manifest = sorted(
        {
            ".".join(k.split(".")[:2])
            for k in _manifest_changes(src.traces[0].manifest, src.traces[1].manifest)
        }
    )
    equal = divergence is None and not hooks and not any(tables.values())
    return {
        "kind": "traces",
        "a": str(a),
        "b": str(b),
        "equal": equal,
        "events": {"a": counts.get("a", 0), "b": counts.get("b", 0)},
        "first_divergence": divergence,
        "hooks": hooks,
        "rows_differing": tables,
        "manifest_changes": manifest,
    }


def _row(seq: int, r: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if r is None else {"seq": seq, **r}


def is_trace(p: Path) -> bool:
    """A trace directory (it has a manifest)."""
    return (Path(p) / "manifest.json").is_file()


def diff(a: Path, b: Path, traces: list[Path] | None = None) -> dict[str, Any]:
    """Compare two traces or two replay results (kept anywhere: their traces are found
    by the hashes their indexes name, or among ``traces``)."""
    a, b = Path(a), Path(b)
    for p in (a, b):
        if not p.exists():
            raise UsageError(f"{p}: no such trace or replay result")
    if is_trace(a) and is_trace(b):
        for p in (a, b):  # a difference must be one of content, not of a damaged file
            schema.check_files(p, schema.read_manifest(p), full=True)
        return diff_traces(a, b)
    from analysis.replays import diff_replays, is_replay
    from replayer.results import verify

    if is_replay(a) and is_replay(b):
        for p in (a, b):
            verify(p, full=True)
        return diff_replays(a, b, traces)
    raise UsageError(f"cannot compare {a} with {b}: give two traces or two replay results")


def describe_row(r: dict[str, Any] | None) -> str:
    """An event on one line, absent columns left out, each column shown as the schema
    declares it (addresses, vectors and registers in hex)."""
    return "(no event)" if r is None else display.fields(r)


def render(result: dict[str, Any]) -> list[str]:
    """Lines for the terminal."""
    if result["kind"] != "traces":
        from analysis.replays import render_replay_diff

        return render_replay_diff(result)
    out = []
    if result["equal"]:
        out.append(f"traces are equal ({display.plural(result['events']['a'], 'event')})")
        if result["manifest_changes"]:
            out.append("  manifests differ in: " + ", ".join(result["manifest_changes"]))
        return out
    ev = result["events"]
    out.append(
        f"traces differ: {display.plural(ev['a'], 'event')} in A, {display.count(ev['b'])} in B"
    )
    d = result["first_divergence"]
    if d:
        out.append(f"first divergence at seq {d['seq']}:")
        out.append(f"  A: {describe_row(d['a'])}")
        out.append(f"  B: {describe_row(d['b'])}")
    if result["hooks"]:
        t = display.Table("calls per hook (events per kind) that differ", note="--json for all")
        t.add_columns(
            ("hook/kind", False, 9),
            ("A", True, 8),
            ("B", True, 8),
            ("change", True, 7),
            ("args only A", True, 5),
            ("args only B", True, 5),
        )
        for h in result["hooks"]:
            t.add_row(
                h["name"],
                display.count(h["a"]),
                display.count(h["b"]),
                ("+" if h["delta"] > 0 else "") + display.count(h["delta"]),
                display.count(h["args_only_in_a"]),
                display.count(h["args_only_in_b"]),
            )
        out += t.render().rstrip("\n").splitlines()
    for name, n in result["rows_differing"].items():
        if n:
            out.append(f"{name}: {display.plural(n, 'row')} differ" + ("s" if n == 1 else ""))
    if result["manifest_changes"]:
        out.append("manifests differ in: " + ", ".join(result["manifest_changes"]))
    return out
