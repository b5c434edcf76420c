"""The analysis commands: ``pvscope query``, ``report``, ``diff`` and ``demo``.

Plain click commands; ``pvscope.cli`` attaches them to the main group.  Each turns
pvscope's typed errors into one line on stderr and their exit code by itself too, so
it behaves the same when run on its own (tests use click's runner on them directly).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pvscope.errors import PvscopeError, UsageError

#: ``pvscope diff`` exit status when the two inputs differ.
EXIT_DIFFERS = 4

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(f: F) -> F:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except PvscopeError as e:
            click.echo(f"pvscope: error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper  # type: ignore[return-value]


def _stdout_console() -> Any:
    """A rich console on stdout at :func:`pvscope.display.width`: the terminal's, or
    unlimited when piped."""
    from pvscope import display

    return display.stdout_console()


@click.command()
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.argument("sql", required=False)
@click.option("--saved", "saved_name", metavar="NAME", help="run a saved query by name")
@click.option("--list", "list_saved", is_flag=True, help="list the saved queries")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default=None,
    help="output format (default: table, or from -o's suffix)",
)
@click.option("--json", "as_json", is_flag=True, help="same as --format json")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="write the result to a file")
@click.option("-q", "--quiet", is_flag=True, help="no progress")
@click.option(
    "--trace",
    "traces",
    multiple=True,
    type=click.Path(path_type=Path),
    help="the trace replay results were replayed from, where it is not found by itself",
)
@_one_line_errors
def query(
    source: Path | None,
    sql: str | None,
    saved_name: str | None,
    list_saved: bool,
    fmt: str | None,
    as_json: bool,
    out: Path | None,
    quiet: bool,
    traces: tuple[Path, ...],
) -> None:
    """run sql over a trace, trace set or replay results directory (read-only duckdb).

    views: events, inputs, state, symbols, tlb, hooks, traces, and from replay results
    replay, summary, violations, interrupts, groups, reasons, costs ('pvscope schema'
    lists every column).  every view has a trace column; every replay view a backend column.  a
    results directory kept away from its trace serves the trace views too when its trace
    is found (--trace).
    """
    from analysis import output, queries

    if list_saved:
        rows = [
            {
                "name": q.name,
                "answers": q.title,
                "needs": list(q.needs),
                "needs_replay": q.needs_replay,
                "doc": q.doc,
            }
            for q in queries.saved()
        ]
        if as_json or fmt == "json":
            click.echo(json.dumps(rows, indent=1))
        else:
            from pvscope import display

            t = display.Table(note="--json for every field")
            t.add_column("name", priority=9)
            t.add_column("answers", priority=8)
            t.add_column("needs a replay", priority=5)
            for r in rows:
                t.add_row(r["name"], r["answers"], display.yes_no(bool(r["needs_replay"])))
            t.print()
        return
    if source is None:
        raise UsageError("give a trace or trace set (or --list)")
    if saved_name and sql:
        raise UsageError("give either SQL or --saved NAME, not both")
    if saved_name:
        sql = queries.load(saved_name).sql
    if not sql:
        raise UsageError("give SQL to run, or --saved NAME (see 'pvscope query --list')")
    if as_json:
        fmt = "json"
    if fmt is None:
        suffix = out.suffix.lstrip(".") if out else ""
        fmt = suffix if suffix in output.FORMATS and suffix != "table" else "table"
    from rich.console import Console

    from analysis.views import Session, open_source

    src = open_source(source, list(traces), required=False)
    if not all(t.found for t in src.traces):
        click.echo(
            f"pvscope: note: {source}: the trace these results replayed was not found; "
            "only the replay views are served (give it with --trace)",
            err=True,
        )
    with (
        Console(stderr=True, quiet=quiet).status(f"querying {source}"),
        Session(source=src) as s,
    ):
        result = s.query(sql)
    output.emit(result, fmt, out, title=saved_name)


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="html file to write (default: SOURCE/report.html)",
)
@click.option("--no-html", is_flag=True, help="print the terminal summary only")
@click.option("-q", "--quiet", is_flag=True, help="no terminal summary, only the file")
@click.option("--json", "as_json", is_flag=True, help="print the report's data as JSON")
@click.option(
    "--trace",
    "traces",
    multiple=True,
    type=click.Path(path_type=Path),
    help="the trace replay results were replayed from, where it is not found by itself",
)
@_one_line_errors
def report(
    source: Path,
    out: Path | None,
    no_html: bool,
    quiet: bool,
    as_json: bool,
    traces: tuple[Path, ...],
) -> None:
    """summarize a trace, trace set or replay results directory in the terminal and one
    html file."""

    from analysis import output, queries
    from analysis import report as rep
    from pvscope.progress import Steps

    planned = 2 + len(rep.TRACE_QUERIES) + sum(q.needs_replay for q in queries.saved())
    with Steps(f"report {source.name}", planned, "queries", quiet or as_json) as bar:
        data = rep.collect(
            source, lambda done, _n, name: bar.update(done, name), trace_paths=list(traces)
        )
    if as_json:
        import dataclasses

        click.echo(json.dumps(dataclasses.asdict(data), default=output._json_default, indent=1))
    elif not quiet:
        rep.terminal(data, _stdout_console())
    if no_html:
        return
    path = out or Path(source) / "report.html"
    text = rep.html(data)
    output.write_atomically(path, lambda f: f.write(text.encode()))
    if not quiet:
        click.echo(f"wrote {path}", err=True)


@click.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option(
    "--trace",
    "traces",
    multiple=True,
    type=click.Path(path_type=Path),
    help="the trace replay results were replayed from, where it is not found by itself",
)
@_one_line_errors
def diff(a: Path, b: Path, as_json: bool, traces: tuple[Path, ...]) -> None:
    """compare two traces or two replay results (exit 4 when they differ); replays under
    two cost tables are compared by cost relative to native."""
    from analysis import diff as d
    from analysis import output

    result = d.diff(a, b, list(traces))
    if as_json:
        click.echo(json.dumps(result, default=output._json_default, indent=1))
    else:
        for line in d.render(result):
            click.echo(line)
    if not result["equal"]:
        sys.exit(EXIT_DIFFERS)


@click.command()
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=Path("pvscope-demo"),
    show_default=True,
    help="directory for the trace, its replays and the report",
)
@click.option("--guest", default=None, help="guest to record (default: mixed, else pvcall)")
@click.option(
    "--scale", type=int, default=None, help="workload scale (default: a fiftieth of the guest's)"
)
@click.option("--force", is_flag=True, help="replace an existing demo directory")
@click.option("-q", "--quiet", is_flag=True, help="no progress")
@click.option("--json", "as_json", is_flag=True, help="print the comparison as JSON")
@_one_line_errors
def demo(
    out: Path, guest: str | None, scale: int | None, force: bool, quiet: bool, as_json: bool
) -> None:
    """record a guest, replay every backend and ablation, compare them, write the report."""
    from rich.console import Console

    from analysis import output, replays
    from analysis import report as rep
    from pvscope import display
    from recorder.guests import GUESTS
    from recorder.record import record

    name = guest or ("mixed" if "mixed" in GUESTS else "pvcall")
    if name not in GUESTS:
        raise UsageError(f"unknown guest {name!r} (built-in: {', '.join(GUESTS)})")
    if scale is None:
        scale = max(GUESTS[name].default_scale // 50, GUESTS[name].small_scale)
    out = Path(out)
    if out.exists() and not force and any(out.iterdir()):
        raise UsageError(f"{out}: already exists (use --force to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    err = Console(stderr=True, quiet=quiet or as_json, soft_wrap=True)
    trace = out / f"{name}.trace"
    with err.status(f"recording {name} at scale {scale}"):
        manifest = record(name, trace, scale=scale, force=True)
    counts = manifest["counts"]
    err.print(
        f"recorded {trace}: {display.plural(counts['events'], 'event')}, "
        f"{display.plural(counts['instructions'], 'instruction')} ({manifest['end']['status']})",
        markup=False,
        highlight=False,
    )
    if replays.replayer_available():
        replays.replay_all(trace, trace / "replay", quiet=quiet or as_json)
        err.print(f"replayed into {trace / 'replay'}")
    else:
        err.print("[yellow]the replayer is not available yet: the report covers the trace only[/]")
    data = rep.collect(trace)
    html_path = out / "report.html"
    text = rep.html(data)
    output.write_atomically(html_path, lambda f: f.write(text.encode()))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "trace": str(trace),
                    "report": str(html_path),
                    "ablation_matrix": data.replay.get("ablation_matrix", []),
                    "cost_by_group": data.replay.get("cost_by_group", []),
                },
                default=output._json_default,
                indent=1,
            )
        )
        return
    rep.comparison(data, _stdout_console())
    err.print(f"wrote {html_path}  (open it in a browser; no network needed)")
