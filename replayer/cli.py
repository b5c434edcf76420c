"""``pvscope replay`` and ``pvscope backends``: plain click commands the main group attaches.

Errors are raised as ``pvscope.errors.PvscopeError`` subclasses (the main group
prints the one line and exits with its code); a replay that finds correctness
violations its design does not predict exits with :data:`EXIT_VIOLATIONS` (a backend as
designed or a trap fallback must be correct; a ``--fallback none`` ablation may break its
own requirement's checks and no others).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pvscope import display
from pvscope.errors import UsageError
from pvscope.progress import Steps
from replayer import api, backends, costs, exitstat
from replayer.trace import Trace

EXIT_VIOLATIONS = 3


#: The summary table's columns: header, a number, priority (the lowest is left out first
#: when the terminal is too narrow).
COLUMNS = (
    ("backend", False, 10),
    ("whole-run", True, 9),
    ("est.", True, 6),
    ("interface", True, 8),
    ("exits", True, 5),
    ("hypercalls", True, 5),
    ("traps", True, 5),
    ("flushes", True, 3),
    ("violations", True, 7),
    ("first divergence", False, 4),
)


def _table(summaries: list[dict[str, Any]]) -> list[str]:
    """The runs as lines of a :class:`pvscope.display.Table` (no rules) fitted to the
    terminal."""
    t = display.Table(plain=True, note="--json for every field")
    t.add_columns(*COLUMNS)
    for s in summaries:
        first = s["first_divergence"]
        t.add_row(
            s["backend"],
            display.ratio(s["whole_run"]["slowdown"]),
            display.share(s["whole_run"].get("estimate_share"), 0),
            display.ratio(s["interface_ratio"]),
            *(display.count(s[k]) for k in ("exits", "hypercalls", "traps", "batch_flushes")),
            display.count(s["violations"]),
            None if first is None else display.divergence(first["check"], first["seq"]),
        )
    return t.render().rstrip("\n").splitlines()


#: A run whose whole-run cycles rest this much or more on estimates gets a footer line.
ESTIMATE_WARN = 0.5


def _estimate_footer(summaries: list[dict[str, Any]], spec: str) -> str | None:
    """One line naming the run whose whole-run total rests most on estimates, if it is at
    least :data:`ESTIMATE_WARN` (and how many more are); ``spec`` is ``--costs`` as given."""
    heavy = sorted(
        (
            (s["whole_run"]["estimate_share"], s["backend"])
            for s in summaries
            if (s["whole_run"].get("estimate_share") or 0) >= ESTIMATE_WARN
        ),
        key=lambda x: (-x[0], x[1]),
    )
    if not heavy:
        return None
    share, label = heavy[0]
    more = len(heavy) - 1
    also = f" (and {display.plural(more, 'more run')} at {display.share(ESTIMATE_WARN, 0)} or more)"
    return (
        f"{display.share(share, 0)} of {label}'s whole-run cycles rest on estimates"
        f"{also if more else ''}: see pvscope costs show {spec}"
    )


def _expectation_lines(summaries: list[dict[str, Any]]) -> list[str]:
    """What the runs showed against their design: ablations expected to fail that did
    (or did not, on this trace), and anything unexpected."""
    failed = [s["backend"] for s in summaries if s["expected_families"] and s["violations"]]
    quiet = [s["backend"] for s in summaries if s["expected_families"] and not s["violations"]]
    wrong = [s for s in summaries if not s["as_expected"]]
    out = []
    if failed:
        out.append(
            f"expected to fail and did: {display.plural(len(failed), 'ablation')} "
            "with no fallback (each breaks only its requirement's checks)"
        )
    if quiet:
        out.append(f"expected to fail, but this trace never shows it: {', '.join(quiet)}")
    for s in wrong:
        fams = ", ".join(f for f, n in s["families"].items() if n)
        want = ", ".join(s["expected_families"]) or "none"
        out.append(
            f"UNEXPECTED: {s['backend']} has {display.plural(s['violations'], 'violation')} "
            f"({fams}); "
            f"its design allows {want}"
        )
    return out


def _reasons(where: Path, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Each run's exit reasons (:mod:`replayer.exitstat`), by label, from its written results."""
    return {
        s["backend"]: exitstat.from_run_dir(where / f"backend={s['backend']}") for s in summaries
    }


def _tables(spec: str) -> list[tuple[costs.CostTable, Path | None]]:
    """``--costs`` as given: one table or several, comma-separated, each a preset or a
    file; each with the file it was read from (None for a preset)."""
    parts = [p.strip() for p in spec.split(",")]
    if not all(parts):
        raise UsageError(f"--costs {spec!r}: an empty table name")
    if len(set(parts)) < len(parts):
        raise UsageError(f"--costs {spec!r}: a table given twice")
    out = []
    for p in parts:
        t = costs.load(p)
        out.append((t, None if t.origin.startswith("preset:") else Path(p)))
    return out


def _table_header(table: costs.CostTable) -> str:
    return f"cost table {table.name} ({table.origin}, sha256 {table.sha256[:12]})"


def _replay_tables(
    ctx: click.Context,
    tr: Trace,
    runs: list[backends.Run],
    tables: list[tuple[costs.CostTable, Path | None]],
    out: Path | None,
    as_json: bool,
    quiet: bool,
    reasons: int | None,
    jobs: int,
) -> None:
    """``replay --costs A,B…``: every run under each table, into ``costs=NAME``
    directories; each table's rows (and with ``reasons``, its runs' exit reasons) under
    its name."""
    with Steps("replay", len(runs) * len(tables), "runs", quiet or as_json) as bar:
        done: set[tuple[str, str]] = set()

        def progress(name: str, label: str, k: int) -> None:
            if k >= tr.n:
                done.add((name, label))
            bar.update(len(done), f"{name} {label}: {k:,} of {tr.n:,} events")

        by_table = api.replay_tables(tr, runs, tables, out, progress=progress, jobs=jobs)
    every = [s for sums in by_table.values() for s in sums]
    where = out if out is not None else api.default_out(tr.path)
    if as_json:
        shown = []
        for t, _ in tables:
            by_run = _reasons(api.table_dir(where, t), by_table[t.name])
            shown += [s | {"exit_reasons": by_run[s["backend"]]} for s in by_table[t.name]]
        click.echo(json.dumps(shown, indent=1, sort_keys=True))
    else:
        for t, path in tables:
            click.echo(_table_header(t))
            for line in _table(by_table[t.name]):
                click.echo("  " + line)
            for line in _expectation_lines(by_table[t.name]):
                click.echo("  " + line)
            footer = _estimate_footer(by_table[t.name], str(path or t.name))
            if footer:
                click.echo("  " + footer)
            if reasons:
                for label, rows in _reasons(api.table_dir(where, t), by_table[t.name]).items():
                    click.echo("")
                    click.echo("\n".join("  " + x for x in exitstat.lines(label, rows, reasons)))
                click.echo("")
        click.echo(
            display.paragraph(
                "whole-run: estimated slowdown over native on the same work; interface: the "
                "events' cycles over native's; est.: the share priced by estimates"
            )
        )
        click.echo(
            f"results in {where}  (one directory per cost table: "
            f"{', '.join(str(api.table_dir(where, t)) for t, _ in tables)}; "
            f"compare them with pvscope diff)"
        )
    if not all(s["as_expected"] for s in every):
        ctx.exit(EXIT_VIOLATIONS)


@click.command("replay")
@click.argument("trace", type=click.Path(path_type=Path))
@click.option(
    "--backend",
    "-b",
    "backend",
    required=True,
    help="backend name(s), comma-separated, or all (every backend and ablation)",
)
@click.option("--without", help="take away one requirement: cpl, irq, ptalloc, pteupdate, apic")
@click.option("--fallback", help="with --without: trap (detect it, at a cost) or none")
@click.option(
    "--costs",
    "costs_spec",
    default=costs.DEFAULT_PRESET,
    show_default=True,
    help=f"cost table: a preset ({', '.join(costs.presets())}) or a TOML file; several, "
    "comma-separated, replay under each (into DIR/costs=NAME)",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    help="results directory (default: TRACE/replay)",
)
@click.option("--json", "as_json", is_flag=True, help="print the summaries as JSON")
@click.option(
    "--reasons",
    type=click.IntRange(min=1),
    is_flag=False,
    flag_value=exitstat.TOP,
    default=None,
    metavar="[N]",
    help=f"after the summary, each run's top N exit reasons by cycles (N: {exitstat.TOP}), "
    "perf kvm stat report style; --json always carries every reason",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="worker processes for several runs (default: one per usable CPU, fewer where the "
    "memory available would not hold them)",
)
@click.option("-q", "--quiet", is_flag=True, help="no progress")
@click.pass_context
def replay(
    ctx: click.Context,
    trace: Path,
    backend: str,
    without: str | None,
    fallback: str | None,
    costs_spec: str,
    out: Path | None,
    as_json: bool,
    reasons: int | None,
    jobs: int | None,
    quiet: bool,
) -> None:
    """re-drive backend models from a recorded trace; exit 3 if a run is wrong in a way its
    design does not predict (an ablation with no fallback is expected to break its own
    requirement's checks)."""
    runs = backends.resolve(backend, without, fallback)
    tables = _tables(costs_spec)
    table, table_path = tables[0]
    if out is not None:
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out}: exists and is not a directory")
        if not out.absolute().parent.is_dir():
            raise UsageError(f"{out.absolute().parent}: no such directory")
    tr = api.load_trace(trace)
    plan = api.job_plan(tr, runs, table, jobs)
    note = plan.note()
    if note is not None:
        click.echo(f"replay: {note}", err=True)
    if len(tables) > 1:
        _replay_tables(ctx, tr, runs, tables, out, as_json, quiet, reasons, plan.jobs)
        return
    with Steps("replay", len(runs), "runs", quiet or as_json) as bar:
        done: set[str] = set()

        def progress(label: str, k: int) -> None:
            if k >= tr.n:
                done.add(label)
            bar.update(len(done), f"{label}: {k:,} of {tr.n:,} events")

        summaries = api.replay_trace(
            tr, runs, table, out, progress=progress, jobs=plan.jobs, table_path=table_path
        )
    where = out if out is not None else api.default_out(tr.path)
    if as_json:
        by_run = _reasons(where, summaries)
        shown = [s | {"exit_reasons": by_run[s["backend"]]} for s in summaries]
        click.echo(json.dumps(shown, indent=1, sort_keys=True))
    else:
        for line in _table(summaries):
            click.echo(line)
        click.echo(
            display.paragraph(
                "whole-run: estimated slowdown over native on the same work (the guest's own "
                "instructions at the table's CPI, measured TLB refills); interface: the "
                "events' cycles over native's; est.: the share of the whole-run cycles "
                "priced by estimates in the cost table (- for ablations: read the parent's)"
            )
        )
        for line in _expectation_lines(summaries):
            click.echo(line)
        footer = _estimate_footer(summaries, costs_spec)
        if footer:
            click.echo(footer)
        if reasons:
            for label, rows in _reasons(where, summaries).items():
                click.echo("")
                click.echo("\n".join(exitstat.lines(label, rows, reasons)))
            click.echo("")
        click.echo(f"results in {where}  (cost table {table.name}, sha256 {table.sha256[:12]})")
    if not all(s["as_expected"] for s in summaries):
        ctx.exit(EXIT_VIOLATIONS)


@click.command("backends")
@click.option("--json", "as_json", is_flag=True, help="print the table as JSON")
def backends_cmd(as_json: bool) -> None:
    """list the backend models and the mechanism each uses per hook group."""
    rows: list[dict[str, Any]] = []
    for b in backends.BACKENDS.values():
        rows.append(
            {
                "name": b.name,
                "paravirt": b.paravirt,
                "relies_on": list(b.relies_on),
                "ablations": [r.label for r in backends.ablations(b)],
                "summary": b.summary,
                "mechanisms": dict(b.table),
                "batching": None
                if b.batching is None
                else {"kind": b.batching, "capacity": b.batch_capacity, "source": b.batch_source},
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=1, sort_keys=True))
        return
    cols = list(backends.NATIVE.table)
    for r in rows:
        click.echo(f"{r['name']}: {r['summary']}")
        relies = ", ".join(r["relies_on"]) or "-"
        click.echo(f"  {'relies on':<18} {relies}")
        for c in cols:
            click.echo(f"  {c:<18} {r['mechanisms'][c]}")
    click.echo(
        "ablations: any paravirtual backend --without one requirement it relies on, "
        "--fallback trap|none"
    )
