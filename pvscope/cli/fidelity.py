"""``pvscope fidelity``: the published results the model is meant to reproduce, checked.

Records each workload the claims need (``analysis.fidelity``) at its small scale,
replays the backends they name under each claim's cost table, and prints one row per
claim: its source, workload and table, the published figure, pvscope's prediction and
whether they agree within the tolerance stated for its kind.  Exit 0 when every row
agrees or disagrees for a stated reason, 1 otherwise.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

TOLERANCE = (
    "tolerance: per-operation cycles agree within a factor of 10 (an order of magnitude); "
    "rankings agree when the order is the published one; OS-scaled overheads within a "
    "factor of 3; ranges as stated"
)


def _predictions(work: Path, scale: int | None, quiet: bool) -> tuple[Any, Any]:
    """Record and replay what the claims need under ``work``; give the two lookups."""
    from analysis import fidelity
    from analysis.nanobench import per_operation
    from recorder.guests import GUESTS
    from recorder.record import record
    from replayer import api, backends, costs

    needs = fidelity.needs()
    summaries: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    per_op: dict[str, dict[tuple[str, str], float]] = {}
    recorded: set[str] = set()
    for (workload, table_name), wanted in sorted(needs.items()):
        trace = work / workload
        if workload not in recorded:
            if not quiet:
                click.echo(f"recording {workload} ...", err=True)
            record(workload, trace, scale=scale or GUESTS[workload].small_scale)
            recorded.add(workload)
        table = costs.load(table_name)
        runs = [r for r in backends.resolve(",".join(sorted(wanted)))]
        out = work / f"{workload}.replay-{table_name}"
        if not quiet:
            click.echo(f"replaying {workload} under {table_name} ...", err=True)
        for s in api.replay_trace(trace, runs, table, out):
            w = {**s["whole_run"], "cpi_user": table.guest["cpi_user"]}
            summaries.setdefault((workload, table_name), {})[s["backend"]] = w
        if workload == "nanobench":
            per_op[table_name] = {
                (r["phase"], r["backend"]): r["cycles_per_op"]
                for r in per_operation(trace, out)
                if r["cycles_per_op"] is not None
            }
    return (lambda t: per_op.get(t, {})), (lambda w, t: summaries.get((w, t), {}))


@click.command("fidelity")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option(
    "--scale", type=int, default=None, help="workload scale (default: each guest's small one)"
)
@click.option(
    "--keep",
    type=click.Path(path_type=Path),
    default=None,
    help="keep the traces and replay results in this new directory",
)
@click.option("-q", "--quiet", is_flag=True, help="no progress on stderr")
def fidelity_cmd(as_json: bool, scale: int | None, keep: Path | None, quiet: bool) -> None:
    """check the model against published results: nanobenchmarks, backend rankings."""
    from analysis import fidelity
    from pvscope.errors import UsageError

    if scale is not None and scale <= 0:
        raise UsageError(f"--scale must be positive, not {scale}")
    if keep is not None and keep.exists():
        raise UsageError(f"{keep}: already exists; --keep makes a new directory")
    work = Path(tempfile.mkdtemp(prefix="pvscope-fidelity."))
    try:
        per_op, whole = _predictions(work, scale, quiet or as_json)
        rows = fidelity.evaluate(per_op, whole)
        if keep is not None:
            shutil.move(str(work), str(keep))
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=1, sort_keys=True))
    else:
        _print(rows)
    bad = [r for r in rows if not r.ok]
    if bad:
        raise SystemExit(1)


def _print(rows: list[Any]) -> None:
    """The claims as a :class:`pvscope.display.Table` that fits the terminal."""
    from rich.text import Text

    from pvscope import display

    t = display.Table(
        "pvscope fidelity: published results and the model's predictions",
        note="--json for every field",
    )
    for head, priority in (
        ("claim", 9),
        ("source", 5),
        ("checked on", 4),
        ("published", 8),
        ("pvscope", 8),
        ("agree", 9),
    ):
        t.add_column(head, priority=priority)
    notes: dict[str, int] = {}
    for r in rows:
        c = r.claim
        verdict = (
            "[green]yes[/]" if r.agree else ("[yellow]no, why:[/]" if r.ok else "[red bold]no[/]")
        )
        claim = f"[bold]{c.id}[/]: {c.claim}" + (f"\n[yellow]why:[/] {c.why}" if c.why else "")
        if c.note:
            claim += f" [dim](note {notes.setdefault(c.note, len(notes) + 1)})[/]"
        t.add_row(
            Text.from_markup(claim),
            c.source,
            f"{c.workload}\n{c.table}",
            r.published_text,
            r.predicted_text,
            Text.from_markup(verdict),
        )
    console = display.stdout_console()
    t.print(console)
    for text, n in notes.items():
        console.print(f"note {n}: {text}.", markup=False)
    agree = sum(r.agree for r in rows)
    explained = sum(r.ok and not r.agree for r in rows)
    console.print(
        f"{agree} of {len(rows)} agree, {explained} disagree for a stated reason, "
        f"{len(rows) - agree - explained} unexplained.  {TOLERANCE}.",
        markup=False,
    )
