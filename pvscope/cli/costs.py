"""``pvscope costs``: the cost tables, every number with where it comes from.

``list`` names the presets with how many of their primitives rest on a source, a
measurement or an estimate; ``show TABLE`` prints every primitive and guest parameter of
a preset or a TOML file with its cycles, its provenance and the citation or reasoning,
grouped, and the share of primitives by provenance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pvscope import display

if TYPE_CHECKING:
    from replayer.costs import CostTable

#: Narrowest width the show table is laid out for (the citation column wraps, numbers never).
MIN_WIDTH = 60


@click.group("costs")
def costs_group() -> None:
    """list the cost tables or show one, every number with its provenance."""


@costs_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_cmd(as_json: bool) -> None:
    """the preset cost tables: CPU and how many primitives are source, measured, estimate."""
    import pyarrow as pa

    from analysis.output import emit
    from replayer import costs

    rows = []
    for name in costs.presets():
        t = costs.load(name)
        rows.append({"table": t.name, "cpu": t.cpu, **t.counts()})
    emit(pa.Table.from_pylist(rows), "json" if as_json else "table", None)


@costs_group.command("show")
@click.argument("table")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option(
    "--replay",
    "replay_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="a replay results directory: also the share of each run's cycles priced by "
    "this table's estimates",
)
def show_cmd(table: str, as_json: bool, replay_dir: Path | None) -> None:
    """every primitive and guest parameter of TABLE (a preset or a TOML file) with its
    cycles, provenance and citation or reasoning."""
    from replayer import costs

    t = costs.load(table)
    shares = None if replay_dir is None else replay_shares(t, replay_dir)
    if as_json:
        doc = document(t)
        if shares is not None:
            doc["replay_shares"] = shares
        click.echo(json.dumps(doc, indent=1))
        return
    click.echo(render(t, _width()), nl=False)
    if shares is not None:
        grid = display.Table(
            "share of each run's cycles priced by estimates: of its whole-run estimate, of "
            f"its interface (events') cycles ({replay_dir})"
        )
        grid.add_column("backend", priority=9)
        grid.add_column("whole-run", numeric=True, priority=8)
        grid.add_column("interface", numeric=True, priority=7)
        grid.add_column("why not", priority=5)
        for r in shares:
            whole, iface = r["whole_run_estimate_share"], r["estimate_share"]
            why = None
            if whole is None:
                why = "an ablation: not computed" if r["ablation"] else "not in these results"
            grid.add_row(r["backend"], display.share(whole), display.share(iface), why)
        click.echo(grid.render(max(MIN_WIDTH, _width())), nl=False)


def replay_shares(t: CostTable, results: Path) -> list[dict[str, Any]]:
    """Per run of a results directory replayed under ``t``: the estimate shares its
    summary holds.  A directory replayed under another table is a usage error."""
    import pyarrow.parquet as pq

    from pvscope.errors import UsageError

    if not results.is_dir():
        raise UsageError(f"{results}: no such replay results directory")
    rows = []
    for d in sorted(results.glob("backend=*")):
        f = d / "summary.parquet"
        if not f.is_file():
            continue
        s = pq.read_table(f).to_pylist()[0]
        if s["cost_sha256"] != t.sha256:
            raise UsageError(
                f"{results}: {d.name} was replayed under cost table {s['cost_table']!r} "
                f"({s['cost_sha256'][:12]}), not {t.name!r} ({t.sha256[:12]})"
            )
        rows.append(
            {
                "backend": d.name.removeprefix("backend="),
                "ablation": s.get("without") is not None,
                "estimate_share": s.get("estimate_share"),
                "whole_run_estimate_share": s.get("whole_run_estimate_share"),
            }
        )
    if not rows:
        raise UsageError(f"{results}: no replay results in this directory")
    return rows


def document(t: CostTable) -> dict[str, Any]:
    """The table as JSON: enough to write it back as TOML (the test round-trips it)."""
    from replayer import costs

    def entry(name: str, group: str, what: str, cycles: float, text: str) -> dict[str, Any]:
        kind, _, why = text.partition(": ")
        return {
            "name": name,
            "group": group,
            "what": what,
            "cycles": cycles,
            "provenance": kind,
            "text": why,
        }

    prims = [
        entry(p, group, costs.PRIMITIVES[p], t.cycles[p], t.sources[p])
        for group, names in costs.GROUPS.items()
        for p in names
    ]
    guest = [entry(g, "guest", costs.GUEST[g], t.guest[g], t.guest_sources[g]) for g in costs.GUEST]
    counts = t.counts()
    return {
        "name": t.name,
        "cpu": t.cpu,
        "origin": t.origin,
        "sha256": t.sha256,
        "primitives": prims,
        "guest": guest,
        "counts": {"primitives": counts, "guest": t.counts("guest")},
        "shares": {"primitives": {k: round(n / len(prims), 6) for k, n in counts.items()}},
    }


def render(t: CostTable, width: int) -> str:
    """The terminal view: one row per number, grouped, the citation column wrapped."""
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from replayer import costs

    out = io.StringIO()
    console = Console(file=out, width=max(MIN_WIDTH, width), force_terminal=False)
    console.print(f"{t.name}: {t.cpu}", highlight=False, markup=False)
    console.print(f"{t.origin}, sha256 {t.sha256[:16]}", highlight=False, markup=False)
    grid = Table(header_style="bold")
    grid.add_column("name", no_wrap=True)
    grid.add_column("cycles", justify="right", no_wrap=True)
    grid.add_column("kind", no_wrap=True)
    grid.add_column("source, measurement or reasoning", overflow="fold", ratio=1, min_width=20)
    sections: list[tuple[str, list[tuple[str, float, str]]]] = [
        (group, [(p, t.cycles[p], t.sources[p]) for p in names])
        for group, names in costs.GROUPS.items()
    ]
    guest = [(g, t.guest[g], t.guest_sources[g]) for g in costs.GUEST]
    sections.append(("guest", guest))
    for group, rows in sections:
        grid.add_row(Text(group, style="bold"))
        for j, (name, cycles, text) in enumerate(rows):
            kind, _, why = text.partition(": ")
            cells = (Text(name), Text(display.number(cycles)), Text(kind), Text(why))
            grid.add_row(*cells, end_section=j == len(rows) - 1)
    console.print(grid)
    console.print(footer(t), highlight=False, markup=False)
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


def footer(t: CostTable) -> str:
    """``primitives: 15 source (34%), 0 measured (0%), 29 estimate (66%); guest ...``."""
    counts = t.counts()
    total = sum(counts.values())
    prim = ", ".join(
        f"{display.count(n)} {k} ({display.share(n / total, 0)})" for k, n in counts.items()
    )
    guest = ", ".join(f"{display.count(n)} {k}" for k, n in t.counts("guest").items())
    return f"primitives: {prim}; guest parameters: {guest}"


def _width() -> int:
    """The terminal's width (COLUMNS when set), 100 when there is none to ask."""
    import shutil

    return shutil.get_terminal_size((100, 24)).columns
