"""The ``pvscope`` command line.

The top floor: it stands above every stage (recorder, replayer, analysis) and drives
them, with ``golden`` beside it.  The rest of the ``pvscope`` package is the contract
the stages share, and imports nothing from here or from any stage.
"""

from __future__ import annotations

import signal
import sys


def _interrupted(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM outside a recording's run: leave quietly with 128 + the signal
    number, no traceback; cleanups (temporaries of half-written outputs) still run."""
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    print(f"pvscope: {what}", file=sys.stderr)
    raise SystemExit(128 + signum)


# before the heavy imports below: a Ctrl-C while they load would print a traceback
signal.signal(signal.SIGINT, _interrupted)
signal.signal(signal.SIGTERM, _interrupted)

import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from pvscope import __version__, display  # noqa: E402
from pvscope.errors import PvscopeError  # noqa: E402

EXIT_VIOLATIONS = 3


class Group(click.Group):
    """Turns pvscope's typed errors into one line on stderr and their exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PvscopeError as e:
            click.echo(f"pvscope: error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("pvscope: interrupted", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pvscope")
def main() -> None:
    """record, replay and query paravirt_ops hook traces."""


@main.command()
@click.option("--guest", "-g", required=True, help="built-in guest name or path to an ELF32 image")
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="trace directory to create",
)
@click.option("--scale", type=int, default=None, help="workload scale (default: the guest's)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed for device timing")
@click.option("--budget", type=int, default=None, help="instruction budget (default: 4e9)")
@click.option("--mem", "mem_mib", type=int, default=64, show_default=True, help="guest RAM in MiB")
@click.option(
    "--quantum",
    type=int,
    default=10_000,
    show_default=True,
    help="instructions per recorder quantum",
)
@click.option(
    "--log-path",
    type=click.Choice(["ring", "python"]),
    default="ring",
    show_default=True,
    help="log in guest memory (ring) or per call in Python",
)
@click.option("--force", is_flag=True, help="replace an existing trace")
@click.option("-q", "--quiet", is_flag=True, help="no progress")
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def record(
    guest: str,
    out: Path,
    scale: int | None,
    seed: int,
    budget: int | None,
    mem_mib: int,
    quantum: int,
    log_path: str,
    force: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """run a guest on the emulated pc and record every hook call."""
    from pvscope.progress import wanted
    from recorder.record import record as do_record

    progress = None
    if wanted(quiet or as_json):
        progress = _progress_bar(f"recording {guest}")
    try:
        manifest = do_record(
            guest,
            out,
            scale=scale,
            seed=seed,
            budget=budget,
            mem_mib=mem_mib,
            quantum=quantum,
            log_path=log_path,
            force=force,
            on_progress=progress.update if progress else None,
        )
    finally:
        if progress:
            progress.close()
    console = manifest.pop("console", "")
    if as_json:
        click.echo(json.dumps(manifest, indent=1, sort_keys=True))
    else:
        end = manifest["end"]
        counts = manifest["counts"]
        if console and not quiet:
            click.echo(console.rstrip(), err=True)
        hooks = counts["by_kind"].get("hook", 0)
        click.echo(
            f"{out}: {display.plural(counts['events'], 'event')} "
            f"({display.plural(hooks, 'hook call')}), "
            f"{display.plural(counts['instructions'], 'instruction')}; "
            f"{end['status']}: {end['reason']}"
        )
    if manifest["end"]["status"] != "complete":
        sys.exit(1)


class _progress_bar:
    """A rich progress line on stderr: instructions retired and events logged, and how
    fast (a terminal only)."""

    def __init__(self, what: str) -> None:
        import time

        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.clock = time.monotonic
        self.start = self.clock()
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn(
                "{task.fields[events]:>11,} events {task.fields[erate]:>5,.0f} k/s  "
                "{task.fields[rate]:>5.1f} M insns/s"
            ),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task(what, insns=0, events=0, rate=0.0, erate=0.0)
        self.progress.start()

    def update(self, insns: int, events: int) -> None:
        dt = max(self.clock() - self.start, 1e-9)
        self.progress.update(
            self.task, insns=insns, events=events, rate=insns / dt / 1e6, erate=events / dt / 1e3
        )

    def close(self) -> None:
        self.progress.stop()


@main.command()
@click.option("-o", "--out", type=click.Path(path_type=Path), help="write the cost table here")
@click.option("--force", is_flag=True, help="replace an existing table")
@click.option(
    "--base", default="p4", show_default=True, help="table the unmeasured primitives keep"
)
@click.option("--name", default="host", show_default=True, help="the written table's name")
@click.option("--repetitions", type=click.IntRange(3, 1001), default=21, show_default=True)
@click.option(
    "--scale",
    type=click.FloatRange(0.01, 100.0),
    default=1.0,
    show_default=True,
    help="multiply every benchmark's iterations",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def calibrate(
    out: Path | None,
    force: bool,
    base: str,
    name: str,
    repetitions: int,
    scale: float,
    as_json: bool,
) -> None:
    """time this host's virtualization primitives in KVM guests; write a cost table."""
    import os
    import tempfile

    from recorder import calibrate as cal
    from recorder.kvm import available
    from replayer import costs

    why_not = available()
    if why_not is not None:
        raise PvscopeError(f"calibrate needs KVM: {why_not}")
    if out is not None and out.exists() and not force:
        raise PvscopeError(f"{out} exists (use --force to replace it)")
    table = costs.load(base)
    host = cal.host()
    results = cal.measure(repetitions, scale)
    got, why = cal.table_entries(results, host)
    rows = [
        {
            "benchmark": k,
            "what": m.bench.what,
            "cpl": m.bench.ring,
            "primitive": m.bench.primitive,
            "cycles_median": None if m.failed else round(m.median, 1),
            "cycles_p10": None if m.failed else round(m.p10, 1),
            "cycles_p90": None if m.failed else round(m.p90, 1),
            "failed": m.failed,
        }
        for k, m in results.items()
    ]
    if out is not None:
        measured = {
            p: costs.Measurement(c, how, spread, reps) for p, (c, how, spread, reps) in got.items()
        }
        header = [
            f"Measured by 'pvscope calibrate' on {host.date}: {host.describe()}.",
            "Cycles are TSC cycles (the TSC's nominal rate), not core cycles.  Primitives",
            f"not measured keep the {base} table's figure, which describes that table's CPU,",
            "not this host; each says why it was not measured.",
        ]
        text = costs.render_measured(
            table, measured, name, f"{host.cpu} ({host.hypervisor})", header, why
        )
        costs.parse(text.encode(), str(out), where=str(out))  # what it writes it can read
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out)
    if as_json:
        doc = {
            "host": host.__dict__,
            "benchmarks": rows,
            "measured": sorted(got),
            "not_measured": why,
            "table": str(out) if out else None,
        }
        click.echo(json.dumps(doc, indent=1))
        return
    click.echo(f"host: {host.describe()}")
    t = display.Table("TSC cycles per operation", note="--json for every column")
    t.add_columns(
        ("benchmark", False, 9),
        ("primitive", False, 5),
        ("median", True, 8),
        ("10th pct", True, 4),
        ("90th pct", True, 4),
        ("not measured because", False, 7),
    )
    said: set[str] = set()
    for r in rows:
        failed = str(r["failed"] or "")
        reason = (failed if failed not in said else "(as above)") if failed else None
        said.add(failed)
        cycles = [r["cycles_median"], r["cycles_p10"], r["cycles_p90"]]
        t.add_row(
            r["benchmark"],
            r["primitive"],
            *(display.number(c if isinstance(c, float | int) else None) for c in cycles),
            reason,
        )
    t.print()
    if out is not None:
        click.echo(
            f"{out}: {display.plural(len(got), 'primitive')} measured, "
            f"the rest kept from {table.name}"
        )


#: The ROM ABI a guest of one's own is written to, relative to the repository.
ROM_ABI_DOC = "docs/rom-abi.md"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def guests(as_json: bool) -> None:
    """list the built-in guests (and where the rom abi for one's own is documented)."""
    from recorder.guests import GUESTS

    rows = [
        {
            "name": g.name,
            "default_scale": g.default_scale,
            "small_scale": g.small_scale,
            "description": g.description,
            "abi_doc": ROM_ABI_DOC,
        }
        for g in GUESTS.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    t = display.Table()
    t.add_column("guest", priority=9)
    t.add_column("scale", numeric=True, priority=1)
    t.add_column("small", numeric=True, priority=0)
    t.add_column("what it runs", priority=8)
    for g in GUESTS.values():
        t.add_row(
            g.name, display.count(g.default_scale), display.count(g.small_scale), g.description
        )
    t.print()
    click.echo(f"(your own guest: see {ROM_ABI_DOC}, then pvscope record --guest PATH.elf)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--group", help="only hooks of this group")
def hooks(as_json: bool, group: str | None) -> None:
    """print the hook catalogue (linux 2.6.21 paravirt_ops)."""
    from pvscope.hooks import HOOKS, REQUIREMENTS

    rows = [
        {
            "id": h.id,
            "name": h.name,
            "group": h.group,
            "args": [f"{n}:{t}" for n, t in h.args],
            "result": h.result,
            "requirement": h.requirement,
            "requirement_number": REQUIREMENTS.get(h.requirement) if h.requirement else None,
            "rom": h.rom,
            "doc": h.doc,
        }
        for h in HOOKS
        if group is None or h.group == group
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    t = display.Table(note="--json for every field")
    t.add_columns(
        ("id", True, 5),
        ("group", False, 7),
        ("requirement", False, 6),
        ("rom", False, 4),
        ("hook", False, 9),
    )
    for h in HOOKS:
        if group is not None and h.group != group:
            continue
        args = ", ".join(f"{n}:{t}" for n, t in h.args)
        sig = f"{h.name}({args})" + (f" -> {h.result}" if h.result else "")
        t.add_row(str(h.id), h.group, h.requirement, h.rom, sig)
    t.print()


@main.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def verify_cmd(paths: tuple[Path, ...], as_json: bool) -> None:
    """check traces and replay results byte for byte against their manifests."""
    from pvscope import schema
    from pvscope.errors import TraceError
    from replayer import results

    rows = []
    for path in paths:
        checked = []
        if (path / "manifest.json").is_file() and not _is_results(path):
            manifest = schema.read_manifest(path)
            schema.check_files(path, manifest, full=True)
            checked.append(f"trace ({display.plural(len(manifest.get('files', {})), 'file')})")
            if "files" not in manifest:
                checked[-1] = "trace (recorded before pvscope kept file hashes: versions only)"
            path_results = path / "replay"
        else:
            path_results = path
        if path_results.is_dir() and _is_results(path_results):
            results.verify(path_results, full=True)
            tables = results.table_dirs(path_results) or [path_results]
            runs = sum(len(list(t.glob("backend=*"))) for t in tables)
            what = f"replay results ({display.plural(runs, 'run')}"
            if results.table_dirs(path_results):
                what += f" under {display.plural(len(tables), 'cost table')}"
            checked.append(what + ")")
        if not checked:
            raise TraceError(f"{path}: neither a trace nor replay results")
        rows.append({"path": str(path), "ok": True, "checked": checked})
        if not as_json:
            click.echo(f"{path}: ok: {', '.join(checked)}")
    if as_json:
        click.echo(json.dumps(rows, indent=1))


def _is_results(path: Path) -> bool:
    """Whether a directory holds replay results (under one cost table or several)."""
    from replayer import results

    return bool(list(path.glob("backend=*")) or results.table_dirs(path))


def _type_name(t: Any) -> str:
    """An Arrow type as ``pvscope schema`` prints it (a dictionary is its values' type)."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return f"{t.value_type} (dictionary)"
    return str(t)


#: How ``pvscope schema`` introduces each source of views.
VIEW_SOURCES = {
    "trace": "trace tables: one Parquet file each in a trace directory",
    "catalogue": "built in",
    "replay": "replay results: one Parquet file each in RESULTS/backend=LABEL/ "
    "(RESULTS: TRACE/replay by default)",
}


@main.command("schema")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def schema_cmd(as_json: bool) -> None:
    """print the trace schema and every view pvscope query serves, column by column."""
    import textwrap

    from pvscope import schema

    def columns(cols: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": c.name,
                "type": str(c.type),
                "nullable": c.nullable,
                "display": c.display or None,
                "doc": c.doc,
            }
            for c in cols
        ]

    tables = {t.name: columns(t.columns) for t in schema.TABLES.values()}
    files = {
        **{t.name: t.file for t in schema.TABLES.values()},
        **{t.name: t.file for t in schema.RESULT_TABLES.values()},
    }
    views = {
        v.name: {"source": v.source, "file": files.get(v.name), "doc": v.doc}
        | {"columns": columns(v.columns)}
        for v in schema.views().values()
    }
    if as_json:
        click.echo(
            json.dumps(
                {
                    "schema_version": schema.SCHEMA_VERSION,
                    "tables": tables,
                    "views": views,
                    "event_kinds": schema.EVENT_KINDS,
                    "manifest": schema.MANIFEST_FIELDS,
                },
                indent=1,
            )
        )
        return
    click.echo(f"pvscope trace schema v{schema.SCHEMA_VERSION}: the views pvscope query serves")
    for source, about in VIEW_SOURCES.items():
        click.echo("")
        click.echo(textwrap.fill(f"== {about}", min(display.width(), 100)))
        for v in schema.views().values():
            if v.source != source:
                continue
            where = f" ({files[v.name]})" if v.name in files else ""
            t = display.Table(f"{v.name}{where}: {v.doc}")
            t.add_column("column", priority=9)
            t.add_column("type", priority=5)
            t.add_column("shown as", priority=1)
            t.add_column("what it holds", priority=8)
            for c in v.columns:
                t.add_row(c.name, _type_name(c.type), c.display, c.doc)
            t.print()
    kinds = display.Table("event kinds (events.kind)")
    kinds.add_column("kind", priority=9)
    kinds.add_column("what the generic columns hold", priority=8)
    for kind, doc in schema.EVENT_KINDS.items():
        kinds.add_row(kind, doc)
    click.echo("")
    kinds.print()


# Not named ``golden``: in this package that name is the module ``pvscope.cli.golden``.
_golden_root = click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=None,
    help="golden directory (default: traces/golden)",
)


@main.group("golden")
def golden_group() -> None:
    """check or regenerate the golden traces in traces/golden."""


@golden_group.command("check")
@click.argument("workloads", nargs=-1)
@_golden_root
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def golden_check(workloads: tuple[str, ...], root: Path | None, as_json: bool) -> None:
    """re-record and replay each golden workload and compare (exit 1 if one differs)."""
    from pvscope.cli import golden as g

    outcomes = g.check(
        workloads or None,
        root or g.GOLDEN_ROOT,
        report=(lambda _line: None) if as_json else click.echo,
    )
    if as_json:
        rows = [{"workload": o.workload, "ok": o.ok, "failures": o.failures} for o in outcomes]
        passed = sum(o.ok for o in outcomes)
        doc = {"workloads": rows, "passed": passed, "failed": len(outcomes) - passed}
        click.echo(json.dumps(doc, indent=1))
    if not all(o.ok for o in outcomes):
        sys.exit(1)


@golden_group.command("update")
@click.argument("workloads", nargs=-1)
@_golden_root
@click.option("--json", "as_json", is_flag=True, help="say what changed as JSON")
def golden_update(workloads: tuple[str, ...], root: Path | None, as_json: bool) -> None:
    """regenerate golden workloads, on purpose only, and say what changed."""
    from pvscope.cli import golden as g
    from pvscope.errors import UsageError
    from recorder.guests import GUESTS

    names = list(workloads) or list(GUESTS)
    unknown = [n for n in names if n not in GUESTS]
    if unknown:
        raise UsageError(f"unknown workload {', '.join(unknown)} (built-in: {', '.join(GUESTS)})")
    done = g.update(
        names,
        {n: GUESTS[n].small_scale for n in names},
        root or g.GOLDEN_ROOT,
        report=(lambda _line: None) if as_json else click.echo,
    )
    if as_json:
        click.echo(json.dumps(done, indent=1))


def _attach(module: str, names: tuple[str, ...]) -> None:
    """Attach the commands another stage defines (they import lazily when run)."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:  # a stage not yet installed
        return
    for name in names:
        main.add_command(getattr(mod, name))


_attach("analysis.cli", ("query", "report", "diff", "demo"))
_attach("replayer.cli", ("replay", "backends_cmd"))
_attach("pvscope.cli.costs", ("costs_group",))
_attach("pvscope.cli.fidelity", ("fidelity_cmd",))
_attach("pvscope.cli.nanobench", ("nanobench_cmd",))
_attach("pvscope.cli.export", ("export_cmd",))
