"""``pvscope export --perfetto``: a trace and its replays as a file the Perfetto UI opens.

The exporter is :mod:`analysis.perfetto`; this module is its command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from analysis.perfetto import DEFAULT_LIMIT
from pvscope import display


@click.command("export")
@click.argument("trace", type=click.Path(path_type=Path))
@click.option(
    "--perfetto",
    is_flag=True,
    help="write Perfetto's protobuf trace format (the one format so far; required)",
)
@click.option(
    "--replay",
    "replay_specs",
    multiple=True,
    metavar="BACKEND[,BACKEND…]",
    help="also a track per backend, each event that costs cycles on it a slice that long "
    "(repeatable or comma-separated; all: every backend and ablation)",
)
@click.option(
    "--costs",
    "costs_spec",
    default="p4",
    show_default=True,
    help="cost table for --replay: a preset or a TOML file",
)
@click.option("--from", "first", type=int, default=None, metavar="SEQ", help="first seq to export")
@click.option("--to", "last", type=int, default=None, metavar="SEQ", help="last seq to export")
@click.option(
    "--limit",
    type=int,
    default=DEFAULT_LIMIT,
    show_default=True,
    metavar="N",
    help="export at most N events from --from on (0: no cap; says so when it cuts)",
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="file to write (.pftrace)",
)
@click.option("--force", is_flag=True, help="replace an existing file")
@click.option("-q", "--quiet", is_flag=True, help="no progress")
@click.option(
    "--json", "as_json", is_flag=True, help="print a summary (file, events, tracks) as JSON"
)
def export_cmd(
    trace: Path,
    perfetto: bool,
    replay_specs: tuple[str, ...],
    costs_spec: str,
    first: int | None,
    last: int | None,
    limit: int,
    out: Path,
    force: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """write TRACE (and its replays) as a Perfetto trace: open it at https://ui.perfetto.dev.

    A track per CPL with every event as an instant (idle a slice); with --replay, a
    track per backend with each costed event as a slice of its cycles.  Time: the
    trace's virtual clock, vtime (guest instructions retired) at the machine's cpu_khz,
    1 instruction = 1 ns at the default 1 GHz.  A backend track's clock adds the cycles
    of the window's earlier events on that backend (1 cycle = 1 instruction's time), so
    it drifts right of the guest's by the interface overhead.
    """
    from analysis import perfetto as pf
    from pvscope.errors import UsageError
    from pvscope.progress import Steps
    from replayer import backends, costs

    if not perfetto:
        raise UsageError("give the format: --perfetto (the only one so far)")
    spec = ",".join(replay_specs)
    runs = backends.resolve(spec) if spec.strip(", ") else []
    table = costs.load(costs_spec) if runs else None
    with Steps("export", len(runs) + 1, "steps", quiet or as_json) as bar:
        done = [0]

        def progress(what: str) -> None:
            bar.update(done[0], what)
            done[0] += 1

        result = pf.export(trace, out, runs, table, first, last, limit, force, progress)
        bar.update(done[0])
    if result.cut:
        click.echo(
            f"pvscope: exported seq {result.first}..{result.last}: the first "
            f"{display.count(result.events)} of {display.plural(result.in_range, 'event')} "
            f"(--limit {limit}; "
            "use --from/--to for another window, --limit 0 for all)",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(result.summary(), indent=1))
        return
    tracks = ", ".join(f"{name} {display.count(n)}" for name, n in result.tracks.items())
    click.echo(
        f"{out}: {display.plural(result.events, 'event')} "
        f"(seq {result.first}..{result.last}), "
        f"{display.number(result.bytes / 1e6)} MB; tracks: {tracks}"
    )
