"""``pvscope report``: terminal tables and one self-contained HTML file.

Everything shown comes from the saved queries (``analysis/queries/``) run in the same
read-only session ``pvscope query`` uses, so a number in the report can be reproduced
with ``pvscope query TRACE --saved NAME``.  The HTML has no scripts and loads nothing:
styles are inline and plots are SVG drawn by ``analysis.svg``.  Every category a chart
plots is explained beside it (:data:`CATEGORIES`); tables keep numbers on one line and
scroll inside their own box when a window is too narrow for them.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from analysis import queries, svg
from analysis.views import QueryError, Session, Source, open_source
from pvscope import __version__, display
from pvscope.hooks import HOOKS

#: Bins of virtual time in the hook-rate plot.
RATE_BINS = 120
#: Call sites shown.
HOT_SITES = 15
#: Above this many traces, per-trace plots and tables are merged into one.
MANY = 4
#: The name a merged plot goes by.
ALL = "all traces"
#: Ablation columns in the order of the 2007 argument.
ABLATION_ORDER = ("cpl", "irq", "ptalloc", "pteupdate", "apic")
#: Exit reasons shown per backend (the saved query exit_reasons has every one).
REASONS = 8
#: Violation details longer than this (or of several lines) are cut in the report.
DETAIL = 120
#: The hook-rate axis is clipped when its peak is more than this many times the 95th
#: percentile of the plotted rates (a boot burst would flatten everything else).
CLIP_RATIO = 4.0

#: Event kinds (events that are not hook calls) by the category the cost chart puts them in.
KIND_CATEGORY = {
    "interrupt": "interrupts & exceptions",
    "softint": "interrupts & exceptions",
    "exception": "interrupts & exceptions",
    "irq_raise": "interrupts & exceptions",
    "mmio_read": "MMIO",
    "mmio_write": "MMIO",
}


def _hooks_of(group: str, n: int = 6) -> str:
    names = [h.name for h in HOOKS if h.group == group]
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


#: What each category a chart plots covers: hook groups (``pvscope.hooks``), the event
#: kinds that are not hook calls, and the parts of a whole-run estimate.
CATEGORIES: dict[str, str] = {
    "irq": "hook calls that mask, unmask or test the interrupt flag, halt, and return from "
    f"interrupts ({_hooks_of('irq', 8)})",
    "mmu": "hook calls on page tables and the TLB: PTE and PMD writes, page-table "
    f"allocation and release, CR2/CR3, TLB flushes ({_hooks_of('mmu')})",
    "cpu": "hook calls on other privileged CPU state: control, debug and model-specific "
    f"registers, descriptor tables, cpuid, I/O delay, lazy-mode switches ({_hooks_of('cpu')})",
    "apic": f"hook calls on the local APIC ({_hooks_of('apic')})",
    "time": f"hook calls on clocks ({_hooks_of('time')})",
    "init": f"boot-time setup hook calls ({_hooks_of('init')})",
    "interrupts & exceptions": "events that are not hook calls: delivering external "
    "interrupts, exceptions (page faults, ...) and software interrupts (system calls) "
    "through the guest's IDT, and raising interrupt lines",
    "MMIO": "device-register reads and writes the guest makes directly, not through a hook "
    "(I/O APIC, timer, serial)",
    "other events": "every other event kind: idle stretches and the guest's own markers "
    "(these normally cost nothing)",
    "events": "the trace's events (hook calls, interrupts, exceptions, MMIO) priced by the "
    "cost table: the next chart splits them by category",
    "guest code": "the guest's own instructions between events, at the cost table's CPI "
    "(kernel and user)",
    "TLB refills": "the TLB refills the recorder measured, at the cost table's page-walk "
    "cost (two-dimensional on nested paging)",
}

Rows = list[dict[str, Any]]


@dataclass
class ReportData:
    """Everything a report shows, as rows of saved-query results."""

    source: Path
    traces: Rows
    hook_counts: Rows
    hot_sites: Rows
    irq_latency: Rows
    irq_latency_summary: Rows
    lazy_batching: Rows
    rate: dict[str, tuple[list[float], dict[str, list[float]]]]
    """Per trace: bin centres (vtime) and hook calls per 1000 instructions by group."""
    replay: dict[str, Rows] = field(default_factory=dict)
    """Replay-side saved-query results by query name; empty without replay results."""
    missing: list[str] = field(default_factory=list)
    """Saved queries that could not run (no replay results), with why."""
    cost_tables: Rows = field(default_factory=list)
    """Cost relative to native under each cost table, for a trace replayed under several
    (:func:`analysis.replays.compare_tables`; the other replay rows are the first
    table's); empty otherwise."""


RATE_SQL = """
WITH span AS (
    SELECT trace, greatest(max(vtime), 1) AS top FROM events GROUP BY trace
),
binned AS (
    SELECT e.trace, h."group",
           least(floor(e.vtime * {bins} / s.top), {bins} - 1)::INTEGER AS bin,
           count(*) AS calls
    FROM events e JOIN hooks h ON h.name = e.hook JOIN span s USING (trace)
    WHERE e.kind = 'hook'
    GROUP BY ALL
)
SELECT b.trace, b."group", b.bin, b.calls, s.top FROM binned b JOIN span s USING (trace)
ORDER BY b.trace, b."group", b.bin
"""


#: The report's own trace queries (the replay ones are every saved query that needs one).
TRACE_QUERIES = ("hook_counts", "hot_sites", "irq_latency", "irq_latency_summary", "lazy_batching")


def collect(
    path: Path,
    progress: Callable[[int, int, str], None] | None = None,
    trace_paths: list[Path] | None = None,
) -> ReportData:
    """Run the report's queries over a trace, trace set or replay results directory (its
    trace found as :func:`analysis.views.find_trace` does, ``trace_paths`` given with
    ``--trace``); ``progress(done, planned, name)`` is called as each starts."""
    source, tables = _source(path, trace_paths)
    replay_qs = [q for q in queries.saved() if q.needs_replay]
    planned = 2 + len(TRACE_QUERIES) + len(replay_qs)
    done = 0

    def step(name: str) -> None:
        nonlocal done
        if progress is not None:
            progress(done, planned, name)
        done += 1

    with Session(source=source) as s:

        def saved(name: str) -> Rows:
            step(name)
            return s.query(queries.load(name).sql).to_pylist()

        step("traces")

        traces = s.query("SELECT * FROM traces ORDER BY trace").to_pylist()
        data = ReportData(
            source=Path(path),
            traces=traces,
            hook_counts=saved("hook_counts"),
            hot_sites=saved("hot_sites"),
            irq_latency=saved("irq_latency"),
            irq_latency_summary=saved("irq_latency_summary"),
            lazy_batching=saved("lazy_batching"),
            rate=_rate(_rate_rows(s, step)),
            cost_tables=tables,
        )
        for q in replay_qs:
            step(q.name)
            if not all(v in s.views for v in q.needs):
                data.missing.append(q.name)
                continue
            try:
                data.replay[q.name] = s.query(q.sql).to_pylist()
            except QueryError as e:
                data.missing.append(f"{q.name}: {e}")
    return data


def _source(path: Path, traces: list[Path] | None) -> tuple[Source, Rows]:
    """What a report reads, and its cost-table comparison (replays under several tables
    narrowed to the first's for the rest of the report)."""
    from analysis.replays import compare_tables

    source = open_source(path, traces)
    return source, compare_tables(source)


# -- cost tables compared (cost relative to native under each) -----------------------


def cost_tables_table(data: ReportData) -> tuple[list[str], list[list[Any]]]:
    """The cost-table comparison as columns and rows: per run, the whole-run slowdown
    and interface ratio over native under each table, then each later table's change
    from the first's."""
    rows = data.cost_tables
    names = list(dict.fromkeys(r["side"] for r in rows))
    many = len({r["trace"] for r in rows}) > 1
    cols = (["trace"] if many else []) + ["backend"]
    cols += [f"{k} {n}" for n in names for k in ("slowdown", "interface")]
    cols += [f"Δ{k} {n}" for n in names[1:] for k in ("slowdown", "interface")]
    by = {(r["trace"], r["backend"], r["side"]): r for r in rows}
    out = []
    for trace, label in dict.fromkeys((r["trace"], r["backend"]) for r in rows):
        got = [by.get((trace, label, n), {}) for n in names]
        line: list[Any] = ([trace] if many else []) + [label]
        line += [_ratio(g.get(k)) for g in got for k in ("whole_run_slowdown", "interface_ratio")]
        line += [
            "-" if g.get(k) is None else f"{g[k]:+.2f}"
            for g in got[1:]
            for k in ("slowdown_change", "interface_ratio_change")
        ]
        out.append(line)
    return cols, out


def _cost_tables_section(data: ReportData) -> str:
    if not data.cost_tables:
        return ""
    cols, rows = cost_tables_table(data)
    names = ", ".join(dict.fromkeys(r["side"] for r in data.cost_tables))
    return _section(
        "Cost tables compared: cost relative to native",
        None,
        _table(cols, rows),
        f"Replayed under {names}: each run's estimated whole-run slowdown and interface "
        "ratio over native under each table, and the change from the first table's. "
        "The other replay sections show the first table's runs.",
    )


def _rate_rows(s: Session, step: Callable[[str], None]) -> Rows:
    step("hook rate")
    return s.query(RATE_SQL.format(bins=RATE_BINS)).to_pylist()


def _rate(rows: Rows) -> dict[str, tuple[list[float], dict[str, list[float]]]]:
    out: dict[str, tuple[list[float], dict[str, list[float]]]] = {}
    for r in rows:
        width = r["top"] / RATE_BINS
        xs, series = out.setdefault(r["trace"], ([(i + 0.5) * width for i in range(RATE_BINS)], {}))
        ys = series.setdefault(r["group"], [0.0] * RATE_BINS)
        ys[r["bin"]] = r["calls"] * 1000 / width
    return out


# -- terminal -------------------------------------------------------------------------


def terminal(data: ReportData, console: Any) -> None:
    """Print the summary tables with rich."""

    def table(title: str, cols: list[str], rows: list[list[Any]]) -> None:
        t = display.Table(title, note="pvscope report --json for every column")
        for i, c in enumerate(cols):
            t.add_column(c, numeric=c not in _LEFT, priority=-i)
        for r in rows:
            t.add_row(
                *(
                    v if isinstance(v, str) else display.value(v, display.kind_of(c))
                    for c, v in zip(cols, r, strict=True)
                )
            )
        t.print(console)

    table(
        "traces",
        ["trace", "guest", "scale", "instructions", "events", "status"],
        [
            [t["trace"], t["guest"], t["scale"], t["instructions"], t["events"], t["status"]]
            for t in data.traces
        ],
    )
    table(
        "hook calls by group and requirement",
        ["trace", "group", "requirement", "calls", "share"],
        [
            [r["trace"], r["group"], r["requirement"] or "-", r["calls"], _pct(r["share"])]
            for r in data.hook_counts
        ],
    )
    if "ablation_matrix" in data.replay:
        comparison(data, console)
    if data.cost_tables:
        table("cost relative to native under each cost table", *cost_tables_table(data))
    table(
        "interrupt latency (retired instructions from raise to delivery)",
        ["trace", "vector", "interrupts", "p50", "p90", "p99", "max"],
        [
            [r["trace"], r["vector"], r["interrupts"], r["p50"], r["p90"], r["p99"], r["max"]]
            for r in data.irq_latency_summary
        ],
    )
    table(
        "lazy mmu batching",
        ["trace", "flushes", "batched", "unbatched", "per flush", "max"],
        [
            [
                r["trace"],
                r["flushes"],
                r["batched_updates"],
                r["unbatched_updates"],
                r["updates_per_flush"],
                r["max_updates_per_flush"],
            ]
            for r in data.lazy_batching
        ],
    )
    table(
        "hottest call sites",
        ["trace", "site", "function", "hook", "calls", "share"],
        [
            [r["trace"], f"{r['site']:#010x}", _func(r), r["hook"], r["calls"], _pct(r["share"])]
            for r in data.hot_sites[:HOT_SITES]
        ],
    )
    if data.missing:
        console.print(
            f"[yellow]no replay results for {', '.join(m.split(':')[0] for m in data.missing)}"
            f": run 'pvscope replay {data.source} --backend all'[/]"
        )


_LEFT = {"trace", "guest", "status", "group", "requirement", "backend", "without", "fallback"}
_LEFT |= {"function", "hook", "site", "correct", "check", "first_detail", "base", "reason"}


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else svg.plain(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _pct(v: float | None) -> str:
    return display.share(v)


def _ratio(v: float | None) -> str:
    return display.ratio(v)


def _func(r: dict[str, Any]) -> str:
    return f"{r['function']}+{r['offset']:#x}" if r.get("function") else "?"


def _backend_totals(rows: Rows) -> dict[tuple[str, str], tuple[int, float | None]]:
    """(trace, backend) -> (cycles, cycles over native's on the same events), from
    cost_by_group rows."""
    cycles: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        acc = cycles.setdefault((r["trace"], r["backend"]), [0, 0])
        acc[0] += int(r["cycles"] or 0)
        acc[1] += int(r["native_cycles"] or 0)
    return {k: (c, c / n if n else None) for k, (c, n) in cycles.items()}


def _designed(data: ReportData) -> set[str] | None:
    """Labels of the runs that are backends as designed (not ablations), when known."""
    rows = data.replay.get("ablation_matrix")
    if not rows:
        return None
    return {r["backend"] for r in rows if not r.get("without")}


def comparison(data: ReportData, console: Any) -> None:
    """The demo's comparison: each backend and ablation, correct or not, and its cost, as
    a :class:`pvscope.display.Table` that fits the console (the least telling columns
    left out first)."""
    from rich.text import Text

    rows = data.replay.get("ablation_matrix")
    if not rows:
        terminal(data, console)
        return
    exits = {(r["trace"], r["backend"]): r for r in data.replay.get("exits_per_kinsn", [])}
    many = len({r["trace"] for r in rows}) > 1
    t = display.Table(
        "backends and ablations compared (whole-run: estimated slowdown over native on "
        "the same work; on est.: its share priced by estimated numbers; interface: the "
        "events' cycles over native's)",
        note="pvscope demo --json, or pvscope query DIR --saved ablation_matrix, for all",
    )
    cols: list[tuple[str, bool, int]] = [("trace", False, 10)] if many else []
    cols += [
        ("backend", False, 10),
        ("without", False, 7),
        ("fallback", False, 7),
        ("correct", False, 9),
        ("violations", True, 6),
        ("first violation", False, 3),
        ("whole-run", True, 9),
        ("on est.", True, 5),
        ("interface", True, 8),
        ("exits/kinsn", True, 4),
        ("hcalls/kinsn", True, 2),
        ("traps/kinsn", True, 2),
    ]
    t.add_columns(*cols)
    order = _backend_order(rows)
    ranked = sorted(
        rows,
        key=lambda r: (
            r["trace"],
            order.index(_base(r)),
            r.get("without") is not None,
            ABLATION_ORDER.index(r["without"]) if r.get("without") in ABLATION_ORDER else 9,
            r.get("fallback") or "",
        ),
    )
    for r in ranked:
        e = exits.get((r["trace"], r["backend"]))
        first = (
            None if r["correct"] else display.divergence(r.get("first_check"), r.get("first_seq"))
        )
        t.add_row(
            *([r["trace"]] if many else []),
            _base(r),
            r.get("without"),
            r.get("fallback"),
            Text("yes", style="green") if r["correct"] else Text("no", style="red bold"),
            display.count(r.get("violations")),
            first,
            display.ratio(r.get("whole_run_slowdown")),
            display.share(r.get("whole_run_estimate_share")),
            display.ratio(r.get("interface_ratio")),
            *(display.number(e[k]) if e else None for k in _KINSN),
        )
    t.print(console)


_KINSN = ("exits_per_kinsn", "hypercalls_per_kinsn", "traps_per_kinsn")
_LEFT.add("first")


# -- html -----------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 0; color: #1d1d1f; background: #f6f6f4; }
header { background: #1f2a37; color: #f3f4f6; padding: 28px 40px 22px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; letter-spacing: -0.01em; }
header p { margin: 0; color: #c5cbd3; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 40px 48px; }
section { background: #fff; border: 1px solid #e3e3df; border-radius: 10px; overflow-x: auto;
          padding: 18px 24px 20px; margin: 22px 0; }
h2 { font-size: 18px; margin: 0 0 2px; }
h3 { font-size: 15px; margin: 16px 0 2px; }
p.q { margin: 0 0 12px; color: #5b6470; font-size: 13.5px; }
p.q code { background: #f0f0ec; padding: 1px 5px; border-radius: 4px; font-size: 12.5px; }
table { border-collapse: collapse; font-size: 13.5px; margin: 6px 0 4px; }
th, td { padding: 5px 12px; border-bottom: 1px solid #ececea; text-align: right;
         font-variant-numeric: tabular-nums; }
td { white-space: nowrap; }
td.w { white-space: normal; min-width: 18em; }
th { background: #f3f3f0; font-weight: 600; vertical-align: bottom; }
td.l, th.l { text-align: left; }
td.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
          font-size: 12.5px; }
.cards { display: flex; flex-wrap: wrap; gap: 14px; margin: 18px 0 0; }
.card { background: #fff; border: 1px solid #e3e3df; border-radius: 10px; padding: 12px 18px;
        min-width: 150px; }
.card b { display: block; font-size: 22px; font-weight: 650; }
.card span { color: #5b6470; font-size: 13px; }
.note { color: #8a5a00; background: #fff7e6; border: 1px solid #f5dfb0; border-radius: 8px;
        padding: 10px 14px; font-size: 14px; }
.ok { background: #dff3e4; } .bad { background: #fbdad7; color: #7a1411; font-weight: 600; }
.matrix td { text-align: center; min-width: 84px; padding: 4px 8px; white-space: normal; }
.matrix td.none { background: #fafaf8; color: #bbb; }
.matrix td.l { white-space: nowrap; }
.matrix tbody tr { border-top: 1px solid #e3e3df; }
.wide { overflow-x: auto; max-width: 100%; }
dl.legend { display: grid; grid-template-columns: max-content 1fr; gap: 3px 12px;
            margin: 8px 0 12px; font-size: 13px; color: #3d4550; }
dl.legend dt { font-weight: 600; white-space: nowrap; }
dl.legend dt i { display: inline-block; width: 11px; height: 11px; border-radius: 2px;
                 margin-right: 6px; vertical-align: -1px; }
dl.legend dd { margin: 0; }
.reasons { display: grid; grid-template-columns: repeat(auto-fit, minmax(540px, 1fr));
           gap: 4px 28px; }
.reasons table th, .reasons table td { padding: 4px 8px; }
.cut { color: #8a5a00; font-size: 13px; }
.matrix td small { display: block; color: #555; font-weight: 400; }
svg { width: 100%; height: auto; display: block; margin-top: 6px; }
footer { color: #777; font-size: 12.5px; text-align: center; padding: 0 0 30px; }
"""


def _table(
    cols: list[str],
    rows: list[list[Any]],
    *,
    mono: set[str] | None = None,
    wrap: set[str] | None = None,
    heads: dict[str, str] | None = None,
) -> str:
    """A table in a box that scrolls when the window is too narrow.  Cells never wrap
    (a number stays on one line) except in the ``wrap`` columns (free text); ``heads``
    renames columns for display."""
    mono = mono or set()
    wrap = wrap or set()
    heads = heads or {}
    head = "".join(
        f'<th class="{"l" if c in _LEFT else ""}">{escape(heads.get(c, c))}</th>' for c in cols
    )
    body = []
    for r in rows:
        cells = []
        for c, v in zip(cols, r, strict=True):
            flags = ("l" if c in _LEFT else "", "mono" if c in mono else "")
            cls = " ".join(x for x in (*flags, "w" if c in wrap else "") if x)
            cells.append(f'<td class="{cls}">{escape(_cell(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<div class='wide'><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _legend(names: Sequence[str]) -> str:
    """What each plotted category covers (:data:`CATEGORIES`), with its colour."""
    items = "".join(
        f'<dt><i style="background:{svg.colour(n, i)}"></i>{escape(n)}</dt>'
        f"<dd>{escape(CATEGORIES[n])}</dd>"
        for i, n in enumerate(names)
        if n in CATEGORIES
    )
    return f'<dl class="legend">{items}</dl>' if items else ""


def _section(title: str, query: str | None, content: str, note: str = "") -> str:
    q = ""
    if query:
        cmd = f"pvscope query TRACE --saved {query}"
        q = f'<p class="q">{escape(note)} From <code>{cmd}</code>.</p>'
    elif note:
        q = f'<p class="q">{escape(note)}</p>'
    return f"<section><h2>{escape(title)}</h2>{q}{content}</section>"


def _no_replay(data: ReportData) -> str:
    return (
        '<p class="note">No replay results for this trace yet: run '
        f"<code>pvscope replay {escape(str(data.source))} --backend all</code> "
        "and report again.</p>"
    )


def _series_of(group: str) -> str:
    """Hook groups plot as themselves; other event kinds as interrupts & exceptions, MMIO
    or other events (:data:`KIND_CATEGORY`)."""
    if group in KIND_CATEGORY:
        return KIND_CATEGORY[group]
    return group if group in svg.GROUP_COLOURS else "other events"


def _whole_run_section(data: ReportData) -> str:
    """The first chart: each backend's estimated whole-run cycles, by what they pay for."""
    rows = data.replay.get("whole_run")
    title = "Whole-run estimate per backend"
    if not rows:
        return _section(title, None, _no_replay(data))
    rows = [r for r in rows if not r.get("without")]
    parts = []
    for trace in sorted({r["trace"] for r in rows}):
        mine = sorted(
            (r for r in rows if r["trace"] == trace),
            key=lambda r: (r["backend"] != "native", r["whole_run_slowdown"] or 0, r["backend"]),
        )
        series: dict[str, Sequence[float]] = {
            "events": [float(r["interface_cycles"] or 0) / 1e6 for r in mine],
            "guest code": [float(r["guest_cycles"] or 0) / 1e6 for r in mine],
            "TLB refills": [float(r["tlb_cycles"] or 0) / 1e6 for r in mine],
        }
        head = f"<h3>{escape(trace)}</h3>" if len(data.traces) > 1 else ""
        labels = [
            f"{r['backend']} {_ratio(r['whole_run_slowdown'])} (interface "
            f"{_ratio(r['interface_ratio'])})"
            for r in mine
        ]
        parts.append(
            head
            + svg.stacked_bars(
                labels, series, unit="million cycles (estimate)", label=f"whole run, {trace}"
            )
        )
    table = _table(
        [
            "trace",
            "backend",
            "whole-run (est.)",
            "on estimates",
            "interface",
            "guest cycles",
            "TLB refills",
            "table",
        ],
        [
            [
                r["trace"],
                r["backend"],
                _ratio(r["whole_run_slowdown"]),
                _pct(r.get("whole_run_estimate_share")),
                _ratio(r["interface_ratio"]),
                r["guest_cycles"],
                r["tlb_refills"],
                r["cost_table"],
            ]
            for r in rows
        ],
    )
    heavy = sorted(
        (r for r in rows if (r.get("whole_run_estimate_share") or 0) >= 0.5),
        key=lambda r: (-r["whole_run_estimate_share"], r["trace"], r["backend"]),
    )
    many = len({r["trace"] for r in rows}) > 1

    def _heavy(r: dict[str, Any]) -> str:
        where = f" on {r['trace']}" if many else ""
        return f"{_pct(r['whole_run_estimate_share'])} of {r['backend']}'s{where}"

    mostly = ""
    if heavy and len(heavy) == len(rows):
        lo, hi = (_pct(heavy[i]["whole_run_estimate_share"]) for i in (-1, 0))
        span = hi if lo == hi else f"{lo} to {hi}"
        mostly = f" Every backend's whole-run cycles rest mostly on estimates ({span})"
    elif heavy:
        mostly = (
            f" Resting mostly on estimates: {', '.join(_heavy(r) for r in heavy)} whole-run cycles"
        )
    if heavy:
        mostly += f": see pvscope costs show {heavy[0]['cost_table']}."
    return _section(
        title,
        "whole_run",
        "".join(parts) + _legend(["events", "guest code", "TLB refills"]) + table,
        "An estimate: the events' cycles from the cost table, plus the guest's own "
        "instructions (from virtual time, split by privilege level) at the table's CPI, plus "
        "the TLB refills the recorder measured at the table's page-walk cost (two-dimensional "
        "on nested paging). The interface ratio beside it counts the events alone. Not "
        "charged: TLB flushes from a VMM's own world switches, cache effects. \"On "
        'estimates" is the share of the whole-run cycles priced by numbers the cost table '
        "marks as estimates rather than sourced or measured." + mostly,
    )


def _cost_section(data: ReportData) -> str:
    rows = data.replay.get("cost_by_group")
    if not rows:
        return _section("Cost per backend, by hook group", None, _no_replay(data))
    designed = _designed(data)
    if designed is not None:
        rows = [r for r in rows if r["backend"] in designed]
    totals = _backend_totals(rows)
    parts = []
    plotted = {_series_of(r["group"]) for r in rows if r["cycles"]}
    for trace in sorted({r["trace"] for r in rows}):
        mine = [r for r in rows if r["trace"] == trace]
        backends = sorted(
            {r["backend"] for r in mine},
            key=lambda b, t=trace: (b != "native", totals[t, b][0], b),  # type: ignore[misc]
        )
        present = {_series_of(r["group"]) for r in mine if r["cycles"]}
        series: dict[str, Sequence[float]] = {
            g: [
                sum(
                    float(r["cycles"] or 0)
                    for r in mine
                    if r["backend"] == b and _series_of(r["group"]) == g
                )
                / 1e6
                for b in backends
            ]
            for g in svg.GROUP_COLOURS
            if g in present
        }
        title = f"<h3>{escape(trace)}</h3>" if len(data.traces) > 1 else ""
        parts.append(
            title
            + svg.stacked_bars(
                backends, series, unit="million cycles", label=f"cost per backend, {trace}"
            )
        )
    table = _table(
        ["trace", "backend", "cycles", "interface ratio"],
        [
            [t, b, c, _ratio(r)]
            for (t, b), (c, r) in sorted(totals.items(), key=lambda kv: (kv[0][0], kv[1][0]))
        ],
    )
    legend = _legend([g for g in svg.GROUP_COLOURS if g in plotted])
    return _section(
        "Cost per backend, by hook group",
        "cost_by_group",
        "".join(parts) + legend + table,
        "Cycles each backend, as designed, spends on the trace's events, stacked by hook "
        "group; events that are not hook calls are stacked by what they are (the ablations "
        "are in the matrix below).",
    )


def _matrix_cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "<td class='none'>·</td>"
    ok = bool(r["correct"])
    first = (
        ""
        if ok
        else f"<small>{_cell(r.get('violations') or 0)} violations, first "
        f"{r.get('first_check')}</small>"
    )
    return (
        f"<td class='{'ok' if ok else 'bad'}'>{'correct' if ok else 'WRONG'}"
        f"<small>{_ratio(r.get('whole_run_slowdown'))} whole-run (est.)</small>"
        f"<small>{_ratio(r.get('interface_ratio'))} interface</small>{first}</td>"
    )


def _base(r: dict[str, Any]) -> str:
    """The backend a row's run replays (its label's base for an ablation)."""
    return str(r.get("base") or r["backend"])


def _backend_order(rows: Rows) -> list[str]:
    """Backends: native first, then by the cost of the backend as designed."""
    cost = {_base(r): r.get("whole_run_slowdown") or 0 for r in rows if not r.get("without")}
    return sorted({_base(r) for r in rows}, key=lambda b: (b != "native", cost.get(b, 0), b))


def _ablation_section(data: ReportData) -> str:
    rows = data.replay.get("ablation_matrix")
    if not rows:
        return _section("Requirement ablations", None, _no_replay(data))
    out = []
    for trace in sorted({r["trace"] for r in rows}):
        mine = [r for r in rows if r["trace"] == trace]
        ablated = [a for a in ABLATION_ORDER if any(r.get("without") == a for r in mine)]
        fallbacks = sorted({r["fallback"] for r in mine if r.get("without") and r.get("fallback")})
        head = (
            "<th class='l'>backend</th><th>as designed</th><th class='l'>fallback</th>"
            + "".join(f"<th>without {escape(a)}</th>" for a in ablated)
        )
        body = []
        for b in _backend_order(mine):
            designed = next((r for r in mine if _base(r) == b and not r.get("without")), None)
            has = [
                f for f in fallbacks if any(_base(r) == b and r.get("fallback") == f for r in mine)
            ]
            span = max(len(has), 1)
            lead = f"<td class='l' rowspan='{span}'><b>{escape(b)}</b></td>"
            lead += _matrix_cell(designed).replace("<td ", f"<td rowspan='{span}' ", 1)
            if not has:
                cells = "<td class='l'>–</td>" + "<td class='none'></td>" * len(ablated)
                body.append(f"<tr>{lead}{cells}</tr>")
                continue
            for i, f in enumerate(has):
                cells = f"<td class='l'>{escape(f)}</td>" + "".join(
                    _matrix_cell(
                        next(
                            (
                                r
                                for r in mine
                                if _base(r) == b
                                and r.get("without") == a
                                and r.get("fallback") == f
                            ),
                            None,
                        )
                    )
                    for a in ablated
                )
                body.append(f"<tr>{lead if i == 0 else ''}{cells}</tr>")
        title = f"<h3>{escape(trace)}</h3>" if len(data.traces) > 1 else ""
        out.append(
            f"{title}<div class='wide'><table class='matrix'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )
    return _section(
        "Requirement ablations",
        "ablation_matrix",
        "".join(out),
        "Each paravirtual backend with one of the 2007 requirements taken away, falling back "
        "to trapping (trap) or to nothing (none): does the guest still run correctly, and at "
        "what cost relative to native? Costs are cycles over cycles native spends on the "
        "same events.",
    )


def _latency_section(data: ReportData) -> str:
    if not data.irq_latency:
        return _section("Interrupt latency", None, "<p>No interrupts in this trace.</p>")
    parts = []
    groups = sorted({r["trace"] for r in data.irq_latency})
    if len(groups) > MANY:
        groups = [ALL]
    for trace in groups:
        buckets: dict[int, int] = {}
        for r in data.irq_latency:
            if trace in (ALL, r["trace"]):
                buckets[r["bucket_lo"]] = buckets.get(r["bucket_lo"], 0) + r["interrupts"]
        los = latency_buckets(buckets)
        labels = ["0" if lo == 0 else f"{svg.fmt(lo)}–{svg.fmt(2 * lo)}" for lo in los]
        title = f"<h3>{escape(trace)}</h3>" if len(data.traces) > 1 else ""
        parts.append(
            title
            + svg.columns(
                labels,
                [buckets.get(lo, 0) for lo in los],
                xlabel="latency, retired instructions (power-of-two buckets)",
                ylabel="interrupts",
                label=f"interrupt latency, {trace}",
            )
        )
    table = _table(
        ["trace", "vector", "interrupts", "min", "p50", "p90", "p99", "max"],
        [
            [
                r["trace"],
                r["vector"],
                r["interrupts"],
                r["min"],
                r["p50"],
                r["p90"],
                r["p99"],
                r["max"],
            ]
            for r in data.irq_latency_summary
        ],
    )
    return _section(
        "Interrupt latency",
        "irq_latency",
        "".join(parts) + table,
        "Virtual time from an interrupt becoming pending to its delivery, all vectors; "
        "empty buckets between the shortest and the longest are kept.",
    )


def latency_buckets(counts: dict[int, int]) -> list[int]:
    """Every power-of-two bucket (its lower bound; 0 for no wait) from the lowest holding
    an interrupt to the highest, the empty ones between included."""
    if not counts:
        return []
    lo, hi = min(counts), max(counts)
    out = [0] if lo == 0 else []
    b = max(lo, 1)
    while b <= hi:
        out.append(b)
        b *= 2
    return out


def rate_clip(series: Sequence[Sequence[float]]) -> float | None:
    """Where the hook-rate axis is clipped: None unless the peak is more than
    :data:`CLIP_RATIO` times the 95th percentile of the nonzero rates plotted (then twice
    that percentile, so the typical rates fill the plot and the spike is marked)."""
    values = sorted(v for ys in series for v in ys if v > 0)
    if len(values) < 10:
        return None
    p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
    return 2 * p95 if values[-1] > CLIP_RATIO * p95 else None


def _rate_section(data: ReportData) -> str:
    parts = []
    if len(data.rate) > MANY:
        # one line per trace, every group summed, on a shared axis of fractions of the run
        xs = [(i + 0.5) / RATE_BINS for i in range(RATE_BINS)]
        totals = {
            t: [sum(ys[i] for ys in series.values()) for i in range(RATE_BINS)]
            for t, (_, series) in sorted(data.rate.items())
        }
        chart = svg.lines(
            xs,
            totals,
            xlabel="fraction of the run (virtual time)",
            ylabel="hook calls per 1000 instructions",
            label="hook rate over virtual time, every trace",
            clip=rate_clip(list(totals.values())),
        )
        return _section(
            "Hook rate over virtual time",
            None,
            chart,
            f"Hook calls per thousand retired instructions, all groups, per trace, in "
            f"{RATE_BINS} bins of each trace's run." + _CLIP_NOTE,
        )
    for trace, (xs, series) in sorted(data.rate.items()):
        order = sorted(series, key=lambda g: -sum(series[g]))
        title = f"<h3>{escape(trace)}</h3>" if len(data.rate) > 1 else ""
        parts.append(
            title
            + svg.lines(
                xs,
                {g: series[g] for g in order},
                xlabel="virtual time (retired instructions)",
                ylabel="hook calls per 1000 instructions",
                label=f"hook rate over virtual time, {trace}",
                clip=rate_clip(list(series.values())),
            )
        )
    groups = {g for _, series in data.rate.values() for g in series}
    return _section(
        "Hook rate over virtual time",
        None,
        "".join(parts) + _legend([g for g in svg.GROUP_COLOURS if g in groups]),
        f"Hook calls per thousand retired instructions, by group, in {RATE_BINS} bins."
        + _CLIP_NOTE,
    )


_CLIP_NOTE = (
    f" Where one burst (a boot) peaks above {CLIP_RATIO:g} times the 95th percentile of the "
    "rates, the axis is clipped at twice that percentile (up to the next tick): points above "
    "it are marked \u25b2 "
    "and the chart gives the peak."
)


def _hot_section(data: ReportData) -> str:
    parts = []
    traces = sorted({r["trace"] for r in data.hot_sites})
    if len(traces) > MANY:
        top = sorted(data.hot_sites, key=lambda r: -r["calls"])[:HOT_SITES]
        table = _table(
            ["trace", "site", "function", "hook", "calls", "share"],
            [
                [
                    r["trace"],
                    f"{r['site']:#010x}",
                    _func(r),
                    r["hook"],
                    r["calls"],
                    _pct(r["share"]),
                ]
                for r in top
            ],
            mono={"site", "function"},
        )
        return _section(
            "Hottest call sites",
            "hot_sites",
            table,
            "The busiest call sites over every trace, named by the guest function holding them.",
        )
    for trace in traces:
        mine = [r for r in data.hot_sites if r["trace"] == trace][:HOT_SITES]
        title = f"<h3>{escape(trace)}</h3>" if len(data.traces) > 1 else ""
        parts.append(
            title
            + _table(
                ["site", "function", "hook", "calls", "share"],
                [
                    [f"{r['site']:#010x}", _func(r), r["hook"], r["calls"], _pct(r["share"])]
                    for r in mine
                ],
                mono={"site", "function"},
            )
        )
    return _section(
        "Hottest call sites",
        "hot_sites",
        "".join(parts),
        "Where the guest calls hooks from, named by the guest function holding the call site.",
    )


def short(text: str | None, limit: int = DETAIL) -> tuple[str, bool]:
    """A detail cut to its first line and ``limit`` characters; whether it was cut."""
    if not text:
        return "", False
    first = text.strip().splitlines()[0] if text.strip() else ""
    cut = first != text.strip() or len(first) > limit
    if len(first) > limit:
        first = first[: limit - 1].rstrip()
    return (first + " …" if cut else first), cut


def _heads(cols: list[str]) -> dict[str, str]:
    """Query column names as table heads: words, and "per kinsn" as "/ kinsn"."""
    return {c: c.replace("_per_", " / ").replace("_", " ") for c in cols}


def _replay_tables(data: ReportData) -> str:
    out = []
    many = len(data.traces) > 1
    for name in ("violations", "exits_per_kinsn"):
        rows = data.replay.get(name)
        if not rows:
            continue
        cols = [c for c in rows[0] if many or c != "trace"]
        table = [[r[c] for c in cols] for r in rows]
        note = ""
        if "first_detail" in cols:
            i = cols.index("first_detail")
            cut = 0
            for line in table:
                line[i], was = short(line[i])
                cut += was
            if cut:
                note = (
                    f'<p class="cut">{cut} detail{"s" if cut > 1 else ""} cut to '
                    f"{DETAIL} characters of the first line (…): the full text is "
                    f"first_detail in <code>pvscope query TRACE --saved {name}</code>, every "
                    "violation's in <code>SELECT * FROM violations</code>.</p>"
                )
        out.append(
            _section(
                queries.load(name).title.rstrip("?"),
                name,
                _table(cols, table, wrap={"first_detail"}, heads=_heads(cols)) + note,
            )
        )
    return "".join(out)


def _reasons_section(data: ReportData) -> str:
    """Per backend as designed, its top :data:`REASONS` exit reasons by cycles."""
    rows = data.replay.get("exit_reasons")
    title = "Exit reasons per backend"
    if not rows:
        return _section(title, None, _no_replay(data)) if not data.replay else ""
    designed = _designed(data)
    if designed is not None:
        rows = [r for r in rows if r["backend"] in designed]
    order = _backend_order(data.replay.get("ablation_matrix") or rows)
    parts = []
    cols = ["reason", "events", "exits+hcalls+traps", "cycles", "mean", "share"]
    for trace in sorted({r["trace"] for r in rows}):
        mine = [r for r in rows if r["trace"] == trace]
        boxes = []
        for b in sorted({r["backend"] for r in mine}, key=lambda b: (order + [b]).index(b)):
            ranked = [r for r in mine if r["backend"] == b]  # the query's order: cycles first
            top = [r for r in ranked if r["cycles"]][:REASONS]
            table = [
                [
                    r["reason"],
                    r["events"],
                    r["exits"] + r["hypercalls"] + r["traps"],
                    r["cycles"],
                    _mean(r["mean_cycles"]),
                    _pct(r["share"]),
                ]
                for r in top
            ]
            rest = ranked[len(top) :]
            if rest:
                table.append(
                    [
                        f"({len(rest)} more)",
                        sum(r["events"] for r in rest),
                        sum(r["exits"] + r["hypercalls"] + r["traps"] for r in rest),
                        sum(r["cycles"] for r in rest),
                        "",
                        _pct(sum(r["share"] or 0 for r in rest)),
                    ]
                )
            heads = {"exits+hcalls+traps": "exits + hcalls + traps"}
            boxes.append(f"<div><h3>{escape(b)}</h3>{_table(cols, table, heads=heads)}</div>")
        head = f"<h3>{escape(trace)}</h3>" if len(data.traces) > 1 else ""
        parts.append(f"{head}<div class='reasons'>{''.join(boxes)}</div>")
    return _section(
        title,
        "exit_reasons",
        "".join(parts),
        "Where each backend, as designed, spends its cycles, perf kvm stat style: a reason is "
        "the mechanism the backend used for an event (vm_exit, hypercall, trap, wp_fault, "
        "rom_call, queued, delivery, native, ...) and the event's hook, or its kind for events "
        f"that are not hook calls. The top {REASONS} by cycles per backend, the rest summed; "
        "mean is cycles per event, share the backend's cycles; exits+hcalls+traps counts the "
        "times the events left the guest. Every reason and the ablations: pvscope replay "
        "--reasons, or the saved query.",
    )


def _mean(v: float) -> float | int:
    """A mean in a table: whole from 100 up (shown with separators), else as it is."""
    return round(v) if v >= 100 else v


def title(data: ReportData) -> str:
    """The report's title: the guest and trace for one trace, the count and the set's
    directory for several."""
    name = data.source.resolve().name
    if len(data.traces) == 1:
        t = data.traces[0]
        guest = t.get("guest") or t["trace"]
        where = t["trace"]
        if where == "trace":  # a workload/trace layout: the directory above names it
            where = data.source.resolve().parent.name
        return f"pvscope report: {guest}" + (f" ({where})" if where not in ("", guest) else "")
    guests = sorted({str(t.get("guest")) for t in data.traces if t.get("guest")})
    of = f" of {', '.join(guests)}" if 0 < len(guests) <= 3 else ""
    return f"pvscope report: {len(data.traces)} traces{of}" + (f" in {name}" if name else "")


def html(data: ReportData) -> str:
    """The whole report as one HTML document."""
    t0 = data.traces[0]
    what = (
        f"{t0['guest']} at scale {t0['scale']}, seed {t0['seed']}"
        if len(data.traces) == 1
        else f"{len(data.traces)} traces: " + ", ".join(t["trace"] for t in data.traces)
    )
    instructions = sum(t["instructions"] or 0 for t in data.traces)
    events = sum(t["events"] or 0 for t in data.traces)
    calls = sum(r["calls"] for r in data.hook_counts)
    backends = {r["backend"] for r in data.replay.get("cost_by_group", [])}
    cards = [
        (svg.fmt(events), "events"),
        (svg.fmt(calls), "hook calls"),
        (svg.fmt(instructions), "guest instructions"),
        (f"{1000 * calls / instructions:.1f}" if instructions else "-", "hooks / 1000 insns"),
        (str(len(backends)) if backends else "–", "backends replayed"),
    ]
    card_html = "".join(f'<div class="card"><b>{v}</b><span>{k}</span></div>' for v, k in cards)
    status = ", ".join(sorted({t["status"] for t in data.traces}))
    hooks_table = (
        _table(
            ["trace", "group", "requirement", "calls", "share"],
            [
                [r["trace"], r["group"], r["requirement"] or "-", r["calls"], _pct(r["share"])]
                for r in data.hook_counts
            ],
        )
        if len(data.traces) > 1
        else _table(
            ["group", "requirement", "calls", "share"],
            [
                [r["group"], r["requirement"] or "-", r["calls"], _pct(r["share"])]
                for r in data.hook_counts
            ],
        )
    )
    lazy_table = _table(
        [
            "trace",
            "flushes",
            "batched_updates",
            "unbatched_updates",
            "updates_per_flush",
            "max_updates_per_flush",
        ],
        [
            [
                r["trace"],
                r["flushes"],
                r["batched_updates"],
                r["unbatched_updates"],
                r["updates_per_flush"],
                r["max_updates_per_flush"],
            ]
            for r in data.lazy_batching
        ],
    )
    body = [
        _whole_run_section(data),
        _cost_section(data),
        _cost_tables_section(data),
        _ablation_section(data),
        _reasons_section(data),
        _latency_section(data),
        _rate_section(data),
        _hot_section(data),
        _section("Hook calls by group and requirement", "hook_counts", hooks_table),
        _section(
            "Lazy MMU batching",
            "lazy_batching",
            lazy_table,
            "PTE updates made between set_lazy_mode(1) and the next leave or flush.",
        ),
        _replay_tables(data),
    ]

    generated = _dt.date.today().isoformat()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title(data))}</title>
<style>{CSS}</style></head>
<body>
<header><h1>{escape(title(data))}</h1>
<p>{escape(what)} · {escape(status)}</p></header>
<main><div class="cards">{card_html}</div>
{"".join(body)}
</main>
<footer>pvscope {__version__} · {generated} · every table above is a saved query:
<code>pvscope query --list</code></footer>
</body></html>
"""
