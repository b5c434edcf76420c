"""``pvscope nanobench``: cycles per operation per backend, from the nanobench guest.

Records the ``nanobench`` guest (unless given a trace of it), replays the backends
under a cost table and prints one row per phase -- Adams & Agesen's nanobenchmarks
and the lmbench-style operations -- and one column per backend: the events' cycles
per operation (the interface's; the guest's own instructions in the loop are not
charged).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import click

DEFAULT_BACKENDS = "native,vmi,xen-pv,lguest,hvm-shadow,hvm-npt,bt"


@click.command("nanobench")
@click.argument("trace", required=False, type=click.Path(path_type=Path))
@click.option(
    "--backend",
    "-b",
    "backend",
    default=DEFAULT_BACKENDS,
    show_default=True,
    help="backends, comma-separated, or all",
)
@click.option(
    "--costs",
    "costs_spec",
    default="p4",
    show_default=True,
    help="cost table: a preset name or a TOML file",
)
@click.option(
    "--scale",
    type=int,
    default=None,
    help="record at this scale (default: the guest's small one: 100 per phase)",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def nanobench_cmd(
    trace: Path | None, backend: str, costs_spec: str, scale: int | None, as_json: bool
) -> None:
    """cycles per operation of each nanobenchmark on each backend."""
    from analysis.nanobench import per_operation
    from pvscope.errors import UsageError
    from recorder.guests import GUESTS
    from recorder.record import record
    from replayer import api, backends, costs

    if scale is not None and scale <= 0:
        raise UsageError(f"--scale must be positive, not {scale}")
    table = costs.load(costs_spec)
    runs = backends.resolve(backend)
    work = Path(tempfile.mkdtemp(prefix="pvscope-nanobench."))
    try:
        if trace is None:
            trace = work / "nanobench"
            record("nanobench", trace, scale=scale or GUESTS["nanobench"].small_scale)
        out = work / "replay"
        api.replay_trace(trace, runs, table, out)
        rows = per_operation(trace, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not rows:
        raise UsageError(f"{trace}: no nanobench phases in this trace")
    if as_json:
        click.echo(json.dumps(rows, indent=1, sort_keys=True))
        return
    _print(rows, [r.label for r in runs], table.name)


def _whole(v: float | None) -> int | None:
    """Cycles per operation to the cycle (``None`` stays)."""
    return None if v is None else round(v)


def _print(rows: list[dict], labels: list[str], table: str) -> None:
    """Phases down, backends across; backends that do not fit the terminal go to a
    second table (numbers are never cut)."""
    from rich.table import Table

    from pvscope import display

    phases: dict[int, dict] = {}
    for r in rows:
        p = phases.setdefault(r["phase_id"], {"row": r, "cells": {}})
        p["cells"][r["backend"]] = r["cycles_per_op"]
    body = []
    for p in phases.values():
        r = p["row"]
        cells = [display.count(_whole(p["cells"].get(b))) for b in labels]
        src = "A&A 2006" if r["source"] == "adams-agesen-2006" else (r["source"] or "?")
        body.append([r["phase"], src, display.count(r["operations"]), *cells])
    heads = ["phase", "from", "ops", *labels]
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(heads)]
    console = display.stdout_console()
    lead = [0, 1, 2] if sum(w + 3 for w in widths) + 1 <= console.width else [0, 2]
    room = console.width - 1 - sum(widths[i] + 3 for i in lead)
    chunks: list[list[int]] = [[]]
    for i in range(3, len(heads)):
        if chunks[-1] and sum(widths[j] + 3 for j in chunks[-1]) + widths[i] + 3 > room:
            chunks.append([])
        chunks[-1].append(i)
    for n, chunk in enumerate(chunks):
        title = f"cycles per operation (events only; cost table {table})"
        t = Table(title=title if n == 0 else None, title_justify="left", header_style="bold")
        for i in lead + chunk:
            t.add_column(
                heads[i], justify="left" if i < 2 else "right", no_wrap=True, min_width=widths[i]
            )
        for row in body:
            t.add_row(*(row[i] for i in lead + chunk))
        console.print(t)
