"""The one output layer: how values look, and tables that fit without cutting a number."""

from __future__ import annotations

import decimal
import re

import pyarrow as pa
import pytest
from rich.text import Text

from pvscope import display as d
from pvscope import schema


def test_counts_ratios_shares_flags_and_null() -> None:
    assert d.count(2729000) == "2,729,000"
    assert d.count(None) == "-" == d.NULL
    assert d.ratio(2.0671) == "2.07×"
    assert d.ratio(1234.5) == "1,234.50×"
    assert d.share(0.345) == "34.5%"
    assert d.share(None) == "-" and d.ratio(float("nan")) == "-"
    assert d.yes_no(True) == "yes" and d.yes_no(False) == "no" and d.yes_no(None) == "-"
    assert d.hexa(0xC0101234) == "0xc0101234" and d.hexa(0x20, 2) == "0x20"
    assert d.hexa(5, 8) == "0x00000005"


@pytest.mark.parametrize(
    ("v", "shown"),
    [
        (7.23841e-06, "0.000007238"),
        (2.0671, "2.067"),
        (0.5, "0.5"),
        (12.0, "12"),
        (1234.5678, "1,235"),
        (123456789.123, "123,456,789"),
        (-0.0042, "-0.0042"),
        (0.0, "0"),
        (17543, "17,543"),
        (decimal.Decimal("12"), "12"),
        (decimal.Decimal("0.25"), "0.25"),
        (float("nan"), "NaN"),
        (None, "-"),
    ],
)
def test_numbers_keep_four_significant_digits_without_exponents(v: object, shown: str) -> None:
    assert d.number(v) == shown  # type: ignore[arg-type]


def test_exponents_only_beyond_ordinary_magnitudes() -> None:
    for v in (1e-9 * 1.5, 3.3e-5, 0.1, 9.99, 1e6, 1e14):
        assert "e" not in d.number(v), v
    assert "e" in d.number(1e-12)


def test_plural_is_one_line() -> None:
    assert d.plural(1, "golden workload") == "1 golden workload"
    assert d.plural(3, "golden workload") == "3 golden workloads"
    assert d.plural(0, "event") == "0 events"
    assert d.plural(229002, "event") == "229,002 events"
    assert d.plural(2, "entry", "entries") == "2 entries"


def test_the_schema_says_which_columns_are_hex() -> None:
    for name in ("arg0", "arg1", "arg2", "arg3", "site", "cr3", "addr", "vector"):
        assert d.kind_of(name) == "hex", name
    # result is a hex value in events and a C type in hooks: a numeric result is hex
    assert d.kind_of("result") == "hex" and d.kind_of("result", numeric=False) == "text"
    assert d.kind_of("seq") == "id" and d.kind_of("first_seq") == "id"
    assert d.kind_of("calls") == "count" and d.kind_of("cycles") == "count"
    assert d.kind_of("interface_ratio") == "ratio" and d.kind_of("whole_run_slowdown") == "ratio"
    assert d.kind_of("share") == "share" and d.kind_of("estimate_share") == "share"
    assert d.kind_of("vif", boolean=True) == "bool"
    # a name declared hex in one table and plain in another (state.value, inputs.value)
    # is shown by its type
    assert d.kind_of("value") == "count"
    # generic names stay counts: costs list's source/measured/estimate counts, say
    for name in ("source", "measured", "estimate", "events", "calls", "n"):
        assert d.kind_of(name) == "count", name
    declared = {c.name for t in schema.every_table() for c in t.columns if c.display == "hex"}
    assert {"arg0", "site", "cr3", "addr", "vector"} <= declared


def test_values_by_kind() -> None:
    assert d.value(0xC0101234, "hex") == "0xc0101234"
    assert d.value(17543, "id") == "17543"
    assert d.value(17543, "count") == "17,543"
    assert d.value(2.0671, "ratio") == "2.07×"
    assert d.value(0.5, "share") == "50.0%"
    assert d.value(True) == "yes" and d.value(None) == "-"
    assert d.value(7.23841e-06) == "0.000007238"
    assert d.value([1, 2]) == "[1, 2]"


def _demo_like() -> d.Table:
    t = d.Table("backends and ablations compared", note="--json for every column")
    cols = [
        ("backend", False, 9),
        ("without", False, 6),
        ("fallback", False, 5),
        ("correct", False, 8),
        ("violations", True, 7),
        ("first divergence", False, 1),
        ("whole-run", True, 8),
        ("cost", True, 8),
        ("interface", True, 7),
        ("exits/kinsn", True, 2),
        ("hcalls/kinsn", True, 2),
        ("traps/kinsn", True, 3),
    ]
    for h, numeric, p in cols:
        t.add_column(h, numeric=numeric, priority=p)
    for i in range(4):
        t.add_row(
            "vmi-without-irq-none" if i else "hvm-shadow",
            "irq" if i else None,
            "none" if i else None,
            "no" if i else "yes",
            d.count(123456 * i),
            "interrupt_masked @ 17543" if i else None,
            d.ratio(2.0671 + i),
            d.number(2.2345678 * 10**i),
            d.ratio(9.134 * i),
            d.number(12.345 * i),
            d.number(1234.5),
            d.count(98765432),
        )
    return t


NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?[×%]?$|^0x[0-9a-f]+$")


@pytest.mark.parametrize("room", [80, 120])
def test_a_table_fits_and_never_cuts_a_number(room: int) -> None:
    t = _demo_like()
    text = t.render(room)
    lines = text.splitlines()
    assert all(len(line) <= room for line in lines), text
    assert "…" not in text
    kept, dropped = t.fit(room)
    for c in kept:
        if c.numeric:
            for cell in c.cells:
                assert str(cell) in text, (c.header, cell)
    # every number column kept shows each of its numbers whole, on one line
    numbers = {str(cell) for c in kept if c.numeric for cell in c.cells if str(cell) != "-"}
    shown = {tok for line in lines for tok in re.split(r"[│ ]+", line) if NUMBER.match(tok)}
    assert numbers <= shown
    if dropped:
        note = lines[-1] if lines[-1].endswith(")") else " ".join(lines[-2:])
        assert f"left out to fit {room} columns" in text
        assert all(c.header in text.split("left out")[1] for c in dropped), note


def test_columns_are_dropped_lowest_priority_first() -> None:
    t = _demo_like()
    _, at80 = t.fit(80)
    _, at120 = t.fit(120)
    assert at80 and {c.header for c in at120} < {c.header for c in at80}
    priorities = {c.header: c.priority for c in t.columns}
    kept80 = [c for c in t.columns if c not in at80]
    assert max(priorities[c.header] for c in at80) <= min(c.priority for c in kept80)
    # priority 1 first, then the two of priority 2 (the rightmost first), then none more
    assert [c.header for c in at120] == ["first divergence", "exits/kinsn", "hcalls/kinsn"]
    assert "backend" not in {c.header for c in at80}
    assert t.fit(1000)[1] == []


def test_text_wraps_before_any_column_is_dropped() -> None:
    t = d.Table()
    t.add_column("name")
    t.add_column("what it does", priority=-1)
    t.add_column("cycles", numeric=True)
    t.add_row("set_pte", "writes a page-table entry " * 6, d.count(1234567))
    kept, dropped = t.fit(80)
    assert not dropped
    text = t.render(80)
    assert "1,234,567" in text and all(len(x) <= 80 for x in text.splitlines())
    assert len(text.splitlines()) > 5  # the description wrapped


def test_a_wide_number_column_is_dropped_not_cut() -> None:
    t = d.Table()
    t.add_column("name", priority=9)
    for i in range(12):
        t.add_column(f"counter_{i}", numeric=True)
    t.add_row("x", *(d.count(10**12 + i) for i in range(12)))
    text = t.render(80)
    assert "…" not in text and all(len(x) <= 80 for x in text.splitlines())
    kept, dropped = t.fit(80)
    assert dropped and all(f"1,000,000,000,00{i}" in text for i in range(len(kept) - 1))
    assert "counter_11" in text.split("left out")[1]


def test_cells_are_plain_text_or_rich_text() -> None:
    t = d.Table()
    t.add_column("ok")
    t.add_column("n", numeric=True)
    t.add_row("[red]no[/]", "1")
    t.add_row(Text("yes", style="green"), "2")
    text = t.render(40)
    assert "[red]no[/]" in text and "yes" in text


def test_widths_are_asked_for_or_unlimited_when_piped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PVSCOPE_WIDTH", "91")
    assert d.width() == 91
    monkeypatch.delenv("PVSCOPE_WIDTH")
    monkeypatch.setenv("COLUMNS", "80")
    assert d.width() == d.UNLIMITED  # pytest's stdout is not a terminal: nothing is cut


def test_every_declared_view_column_has_a_doc_and_a_known_display() -> None:
    for v in schema.views().values():
        assert v.doc and v.columns[0].name in ("trace", "id")
        for c in v.columns:
            assert c.doc, (v.name, c.name)
            assert c.display in ("", *d.KINDS), (v.name, c.name)
            assert isinstance(c.type, pa.DataType)
