"""pvscope report: terminal tables and one self-contained HTML file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html import escape
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from analysis import report as rep
from analysis import svg
from analysis.cli import report


def test_report_writes_one_self_contained_html(golden_trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    r = CliRunner().invoke(report, [str(golden_trace), "-o", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "hook calls by group" in r.output and "hottest call sites" in r.output
    html = out.read_text()
    assert html.startswith("<!doctype html>")
    # nothing loads from anywhere: no scripts, no links, no remote or file URLs
    assert "<script" not in html and "<link" not in html and "<img" not in html
    urls = set(re.findall(r"(?:https?|file)://[^\s\"'<>)]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}
    assert html.count("<svg") >= 2  # latency histogram and hook rate
    for heading in (
        "Cost per backend",
        "Requirement ablations",
        "Interrupt latency",
        "Hook rate over virtual time",
        "Hottest call sites",
    ):
        assert heading in html
    assert "workload_main+0x" in html


def test_report_on_a_trace_set(trace_set: Path, tmp_path: Path) -> None:
    data = rep.collect(trace_set)
    assert {t["trace"] for t in data.traces} == {"golden", "small"}
    assert set(data.rate) == {"golden", "small"}
    html = rep.html(data)
    assert "<h3>golden</h3>" in html and "<h3>small</h3>" in html


def test_hook_rate_adds_up_to_the_hook_calls(golden_trace: Path) -> None:
    data = rep.collect(golden_trace)
    xs, series = data.rate["trace"]
    width = xs[1] - xs[0]
    total = sum(v * width / 1000 for ys in series.values() for v in ys)
    assert total == pytest.approx(sum(r["calls"] for r in data.hook_counts))


def test_svg_charts_are_well_formed() -> None:
    import xml.etree.ElementTree as ET

    for s in (
        svg.stacked_bars(["native", "vmi"], {"irq": [1, 2], "mmu": [3, 0]}, unit="cycles"),
        svg.columns(["0", "1-2"], [3, 4]),
        svg.lines([0, 1, 2], {"irq": [0, 1, 0]}),
        svg.columns([], []),
    ):
        ET.fromstring(s)
    assert svg.nice_ticks(97)[-1] >= 97
    assert svg.fmt(1_500_000) == "1.5M"


def test_one_number_format_for_every_chart_label() -> None:
    cases = {
        0: "0",
        0.879: "0.879",
        12: "12",
        999: "999",
        1150.4: "1.15k",
        18_200: "18.2k",
        999.96: "1k",
        999_600: "1M",
        1_500_000: "1.5M",
        0.00012: "0.00012",
    }
    assert {v: svg.fmt(v) for v in cases} == cases
    assert all("e" not in svg.fmt(10.0**k * 1.2345) for k in range(-5, 12))
    assert svg.plain(0.000012) == "0.000012" and rep._cell(0.000012) == "0.000012"


def test_the_latency_histogram_keeps_empty_buckets(golden_trace: Path) -> None:
    assert rep.latency_buckets({0: 4, 2: 2, 16: 1}) == [0, 1, 2, 4, 8, 16]
    assert rep.latency_buckets({4: 1, 16: 1}) == [4, 8, 16]
    assert rep.latency_buckets({}) == []
    section = rep._latency_section(rep.collect(golden_trace))
    # pvcall's interrupts wait 0, 2..64 and 65.5k..131k instructions: the gap is drawn
    for label in ("1–2", "128–256", "32.8k–65.5k"):
        assert f"<title>{label}: 0</title>" in section


def test_a_burst_clips_the_hook_rate_axis_and_says_so() -> None:
    flat = [[10.0 + i % 3 for i in range(100)]]
    assert rep.rate_clip(flat) is None
    burst = [[400.0] * 3 + [10.0 + i % 3 for i in range(97)]]
    clip = rep.rate_clip(burst)
    assert clip is not None and clip < 100
    chart = svg.lines(list(range(100)), {"mmu": burst[0]}, clip=clip)
    assert "axis clipped at 25 (" in chart and "peak 400)" in chart
    assert chart.count("(above the axis)") == 3
    assert "axis clipped" not in svg.lines(list(range(100)), {"mmu": flat[0]})


def test_every_plotted_category_is_explained(replayed_trace: Path) -> None:
    data = rep.collect(replayed_trace)
    plotted = {rep._series_of(r["group"]) for r in data.replay["cost_by_group"] if r["cycles"]}
    assert {"interrupts & exceptions", "MMIO"} <= plotted and "other events" not in plotted
    assert plotted <= set(rep.CATEGORIES) and set(svg.GROUP_COLOURS) <= set(rep.CATEGORIES)
    html = rep.html(data)
    for name in plotted | {"events", "guest code", "TLB refills"}:
        assert f"{escape(name)}</dt><dd>{escape(rep.CATEGORIES[name])}</dd>" in html, name


def test_long_violation_details_are_cut_and_the_full_text_named(replayed_trace: Path) -> None:
    data = rep.collect(replayed_trace)
    rows = data.replay["violations"]
    long = "\n".join(f"line {i}: " + "x" * 30 for i in range(25))
    rows[0]["first_detail"] = long
    html = rep.html(data)
    assert "line 0: " + "x" * 30 + " …" in html and "line 1:" not in html
    assert "the full text is first_detail in <code>pvscope query TRACE --saved violations" in html
    assert rep.short("y" * 500) == ("y" * (rep.DETAIL - 1) + " …", True)
    assert rep.short("short") == ("short", False)


def test_titles_name_the_guest_or_the_traces(golden_trace: Path, trace_set: Path) -> None:
    one = rep.collect(golden_trace)
    assert rep.title(one) == "pvscope report: pvcall"
    many = rep.collect(trace_set)
    t = rep.title(many)
    assert t == f"pvscope report: 2 traces of pvcall in {trace_set.name}"
    assert f"<h1>{t}</h1>" in rep.html(many) and f"<title>{t}</title>" in rep.html(many)


def test_the_report_shows_exit_reasons_per_backend(replayed_trace: Path) -> None:
    html = rep.html(rep.collect(replayed_trace))
    section = html[html.index("<h2>Exit reasons per backend</h2>") :]
    section = section[: section.index("</section>")]
    assert "<h3>xen-pv</h3>" in section and "<h3>vmi-without-irq-none</h3>" not in section
    assert "wp_fault set_pte" in section and "--saved exit_reasons" in section


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed")
def test_report_renders_in_a_real_browser(golden_trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    data = rep.collect(golden_trace)
    out.write_text(rep.html(data))
    png = tmp_path / "r.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                str(_chromium()),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={png}",
                "--window-size=1200,2000",
                out.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, "HOME": profile},
        )
    data_png = png.read_bytes()
    assert data_png[:8] == b"\x89PNG\r\n\x1a\n"
    import struct
    import zlib

    # decode the PNG well enough to see it is not blank: count distinct colours of a stripe
    width, height = struct.unpack(">II", data_png[16:24])
    assert (width, height) == (1200, 2000)
    chunks = []
    i = 8
    while i < len(data_png):
        n = struct.unpack(">I", data_png[i : i + 4])[0]
        kind = data_png[i + 4 : i + 8]
        if kind == b"IDAT":
            chunks.append(data_png[i + 8 : i + 8 + n])
        i += 12 + n
    raw = zlib.decompress(b"".join(chunks))
    assert len(set(raw[: len(raw) // 2])) > 20, "the screenshot looks blank"


#: Width the layout test renders at (a laptop browser window).
LAYOUT_WIDTH = 1400

#: Injected into a copy of the report (the report itself has no scripts): lists every card
#: (section or summary card) wider inside than it is, and every number a table cell wraps.
_LAYOUT_JS = """
<script>
addEventListener('load', () => {
  const out = {overflow: [], wrapped: [], cards: 0, cells: 0};
  // a card, or a box inside one that would scroll (a table's): wider inside than it is
  for (const el of document.querySelectorAll('section, .card, section *')) {
    const card = el.matches('section, .card');
    if (card) out.cards++;
    else if (getComputedStyle(el).overflowX === 'visible') continue;
    if (el.scrollWidth > el.clientWidth + 1) {
      const h = (el.closest('section') || el).querySelector('h2, span');
      out.overflow.push((h ? h.textContent : el.tagName) + ': ' + el.scrollWidth + ' > '
                        + el.clientWidth);
    }
  }
  for (const cell of document.querySelectorAll('td, th, .card b')) {
    out.cells++;
    const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      for (const m of n.textContent.matchAll(/[^\\s]*[0-9][^\\s]*/g)) {
        const r = document.createRange();
        r.setStart(n, m.index);
        r.setEnd(n, m.index + m[0].length);
        const tops = new Set([...r.getClientRects()].map(x => Math.round(x.top)));
        if (tops.size > 1) out.wrapped.push(m[0]);
      }
    }
  }
  const pre = document.createElement('pre');
  pre.id = 'layout-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def _chrome(args: list[str]) -> str:
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run(
            [
                str(_chromium()),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, "HOME": profile},
            text=True,
        )
    return r.stdout


def _layout(html: str, name: str, tmp_path: Path) -> dict[str, Any]:
    """Render at LAYOUT_WIDTH: a screenshot (kept in $PVSCOPE_SCREENSHOTS when set) and the
    layout check's findings."""
    import json

    page = tmp_path / f"{name}.html"
    page.write_text(html)
    shots = Path(os.environ.get("PVSCOPE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    _chrome(
        [
            f"--screenshot={shots / f'{name}.png'}",
            f"--window-size={LAYOUT_WIDTH},4000",
            page.as_uri(),
        ]
    )
    assert (shots / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    checked = tmp_path / f"{name}-check.html"
    checked.write_text(html.replace("</body>", _LAYOUT_JS + "</body>"))
    dom = _chrome(
        [
            "--dump-dom",
            "--virtual-time-budget=5000",
            f"--window-size={LAYOUT_WIDTH},4000",
            checked.as_uri(),
        ]
    )
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', dom, re.S)
    assert found, "the layout check did not run"
    import html as h

    return dict(json.loads(h.unescape(found.group(1))))


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed")
@pytest.mark.parametrize("which", ["single", "multi"])
def test_nothing_overflows_its_card_at_1400px(
    which: str, replayed_trace: Path, replayed_set: Path, tmp_path: Path
) -> None:
    data = rep.collect(replayed_trace if which == "single" else replayed_set)
    found = _layout(rep.html(data), f"report-{which}", tmp_path)
    assert found["cards"] > 5 and found["cells"] > 50
    assert found["overflow"] == [], f"wider than their card: {found['overflow']}"
    assert found["wrapped"] == [], f"numbers wrapped mid-number: {found['wrapped'][:20]}"
