"""One voice for every command's human output: how numbers, flags and tables look.

Every command's terminal output goes through here (``--json`` never does: JSON values
stay numbers and plain strings).  The rules:

* counts have thousands separators: ``229,002 events``; positions (``seq``) do not;
* ratios are ``2.07×``, shares ``34.5%``;
* addresses, vectors, frames and register values are hex (``0xc0101234``) wherever
  they appear: which columns those are is declared once, in :mod:`pvscope.schema`;
* booleans are ``yes``/``no``, a missing value is ``-``;
* other floats keep four significant digits, never exponent notation for ordinary
  magnitudes (``0.000007238``, not ``7.23841e-06``);
* ``N thing(s)`` is one line: :func:`plural`;
* tables fit the terminal (:class:`Table`): text columns wrap, then the columns of
  lowest priority are left out with a one-line note naming them; a number is never cut.
"""

from __future__ import annotations

import decimal
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from pvscope import schema

#: A missing value (SQL NULL, a figure not computed).
NULL = "-"
#: The times sign of a ratio.
TIMES = "×"
#: Significant digits a float keeps.
DIGITS = 4
#: Width used when stdout is not a terminal (and ``PVSCOPE_WIDTH`` is not set): no fitting.
UNLIMITED = 1000
#: Environment variable that sets the width tables are laid out for (any output).
WIDTH_ENV = "PVSCOPE_WIDTH"
#: Narrowest a wrapped text column is made before columns are left out.
TEXT_MIN = 8
#: A word longer than this may fold rather than keep its column wide.
WORD_MAX = 24

#: Display kinds: how a value of a column is shown.
KINDS = ("text", "count", "id", "hex", "ratio", "share", "float", "bool")


# -- values ----------------------------------------------------------------------------


def count(n: int | None) -> str:
    """An integer with thousands separators (``2,729,000``); ``-`` for None."""
    return NULL if n is None else f"{int(n):,}"


def ratio(v: float | None, digits: int = 2) -> str:
    """A ratio with a times sign (``2.07×``); ``-`` for None (or NaN: not computed)."""
    return NULL if v is None or v != v else f"{v:,.{digits}f}{TIMES}"


def share(v: float | None, digits: int = 1) -> str:
    """A fraction as a percentage (``0.345`` is ``34.5%``); ``-`` for None (or NaN)."""
    return NULL if v is None or v != v else f"{100 * v:.{digits}f}%"


def hexa(v: int | None, width: int = 0) -> str:
    """An address, vector, frame or register value in hex (``0xc0101234``); ``width``
    pads the digits (``hexa(0x20, 2)`` is ``0x20``)."""
    return NULL if v is None else f"{int(v):#0{width + 2 if width else 0}x}"


def yes_no(v: bool | None) -> str:
    """``yes`` or ``no``; ``-`` for None."""
    return NULL if v is None else ("yes" if v else "no")


def number(v: float | int | decimal.Decimal | None, digits: int = DIGITS) -> str:
    """A number for reading: integers whole with separators; floats to ``digits``
    significant digits (whole part always kept, trailing zeros dropped), in fixed
    notation from 1e-9 up; exponent notation only beyond that."""
    if v is None:
        return NULL
    if isinstance(v, bool):
        return yes_no(v)
    if isinstance(v, decimal.Decimal):
        v = int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, int):
        return count(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(v)))
    if magnitude >= DIGITS - 1 or magnitude >= 15:
        return f"{v:,.0f}"
    if magnitude < -9:
        return f"{v:.{digits - 1}e}"
    decimals = digits - 1 - magnitude
    text = f"{v:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text if text not in ("-0", "0") else f"{v:.{digits - 1}e}"


def divergence(check: str | None, seq: int | None) -> str:
    """Where a run first went wrong, said the same everywhere: ``result at seq 17543``."""
    if check is None and seq is None:
        return NULL
    return f"{check or '?'} at seq {NULL if seq is None else seq}"


def plural(n: int, thing: str, things: str | None = None) -> str:
    """``1 golden workload``, ``3 golden workloads``, ``1,024 entries``."""
    word = thing if n == 1 else (things or thing + "s")
    return f"{count(n)} {word}"


def value(v: Any, kind: str = "") -> str:
    """Any value as a table cell: as ``kind`` says (one of :data:`KINDS`), else by its
    Python type."""
    if v is None:
        return NULL
    if isinstance(v, bool) or kind == "bool":
        return yes_no(bool(v))
    if isinstance(v, list | dict):
        return json.dumps(v, default=str)
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, int | float | decimal.Decimal):
        if kind == "hex" and isinstance(v, int):
            return hexa(v)
        if kind == "id" and isinstance(v, int):
            return str(v)
        if kind == "ratio":
            return ratio(float(v))
        if kind == "share":
            return share(float(v))
        return number(v)
    return str(v)


def fields(row: dict[str, Any], columns: tuple[schema.Column, ...] | None = None) -> str:
    """A row on one line as ``name=value`` pairs, absent (None) values left out, each
    shown as its column is declared (``columns``: default the events table's)."""
    kinds = {c.name: c.display for c in columns or schema.EVENTS.columns}
    return " ".join(
        f"{k}={value(v, kinds.get(k) or kind_of(k))}" for k, v in row.items() if v is not None
    )


def paragraph(text: str) -> str:
    """Prose for the terminal: wrapped at :func:`width` (whole when piped)."""
    room = width()
    if room >= UNLIMITED:
        return text
    import textwrap

    return textwrap.fill(text, room, break_on_hyphens=False, break_long_words=False)


# -- which columns are which -----------------------------------------------------------


def _declared() -> dict[str, str]:
    """Column name -> display kind, for the names of numeric columns every declaration
    of a numeric column of that name agrees on."""
    import pyarrow as pa

    seen: dict[str, set[str]] = {}
    for table in schema.every_table():
        for c in table.columns:
            if pa.types.is_integer(c.type) or pa.types.is_floating(c.type):
                seen.setdefault(c.name, set()).add(c.display)
    return {name: kinds.pop() for name, kinds in seen.items() if len(kinds) == 1}


DECLARED: dict[str, str] = _declared()


def kind_of(name: str, numeric: bool = True, boolean: bool = False) -> str:
    """How a column is shown, from its name and type: as the schema declares a column
    of that name (when every declaration of it agrees), else by name (``*_seq`` a
    position, ``*_ratio`` and ``*slowdown`` ratios, ``*share`` shares, ``*addr`` hex),
    else by type."""
    if boolean:
        return "bool"
    if not numeric:
        return "text"
    declared = DECLARED.get(name, "")
    if declared and declared != "text":
        return declared
    if name == "seq" or name.endswith("_seq") or name.endswith("_id") or name == "id":
        return "id"
    if name.endswith("_ratio") or name.endswith("slowdown"):
        return "ratio"
    if name.endswith("share"):
        return "share"
    if name.endswith("addr") or name.endswith("vector"):
        return "hex"
    return "count"


# -- tables ----------------------------------------------------------------------------


def width() -> int:
    """The width to lay tables out for: ``PVSCOPE_WIDTH`` when set; else the terminal's
    (``COLUMNS`` when set) when stdout is one; else :data:`UNLIMITED`: output piped or
    redirected is never cut to fit."""
    env = os.environ.get(WIDTH_ENV, "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        if sys.stdout.isatty():
            import shutil

            return max(40, shutil.get_terminal_size((100, 24)).columns)
    except (AttributeError, ValueError):
        pass
    return UNLIMITED


@dataclass
class Column:
    """One column of a :class:`Table`."""

    header: str
    numeric: bool = False
    """Right-aligned and never wrapped or cut (numbers, short codes)."""
    priority: int = 0
    """Higher stays longer when the table must lose columns; among equals the rightmost
    goes first."""
    cells: list[Any] = field(default_factory=list)

    def natural(self) -> int:
        """The width it takes unwrapped."""
        return max([_len(self.header)] + [_len(c) for c in self.cells])

    def narrowest(self) -> int:
        """The narrowest it can be: a number column its widest cell (and header); a text
        column its longest word (up to :data:`WORD_MAX`: longer ones fold), at least
        :data:`TEXT_MIN`, never more than it takes unwrapped."""
        if self.numeric:
            return self.natural()
        words = [len(w) for c in [self.header, *self.cells] for w in _plain(c).split()]
        return min(self.natural(), max(TEXT_MIN, min(max(words, default=0), WORD_MAX)))


def _plain(cell: Any) -> str:
    from rich.text import Text

    return cell.plain if isinstance(cell, Text) else str(cell)


def _len(cell: Any) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in _plain(cell).splitlines()), default=0)


class Table:
    """A table that fits the width it is given.

    Text columns wrap (a word too long for its column folds); when the table is still
    too wide the column of lowest priority is left out, then the next, and one line
    under the table names them.  Number columns are never wrapped, cut or ellipsized.
    """

    PADDING = 2

    def __init__(self, title: str | None = None, note: str = "", plain: bool = False) -> None:
        self.title = title
        self.plain = plain
        """No rules: columns two spaces apart, the first flush left (compact summaries)."""
        self.note = note
        """What to say when columns are left out, after their names (e.g. how to see
        them all)."""
        self.columns: list[Column] = []
        self.rows = 0

    def add_column(self, header: str, *, numeric: bool = False, priority: int = 0) -> None:
        """Add a column (before any row)."""
        self.columns.append(Column(header, numeric, priority))

    def add_columns(self, *spec: tuple[str, bool, int]) -> None:
        """:meth:`add_column` for each ``(header, numeric, priority)``."""
        for header, numeric, priority in spec:
            self.add_column(header, numeric=numeric, priority=priority)

    def add_row(self, *cells: Any) -> None:
        """Add a row: strings (printed as they are, no markup) or rich ``Text``."""
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        for c, v in zip(self.columns, cells, strict=True):
            c.cells.append(NULL if v is None else v)
        self.rows += 1

    def _needs(self, cols: list[Column]) -> int:
        if self.plain:
            return sum(c.narrowest() for c in cols) + self.PADDING * (len(cols) - 1)
        return sum(c.narrowest() + self.PADDING for c in cols) + len(cols) + 1

    def fit(self, room: int) -> tuple[list[Column], list[Column]]:
        """The columns kept at ``room`` characters, and those left out."""
        kept = list(self.columns)
        dropped: list[Column] = []
        while len(kept) > 1 and self._needs(kept) > room:
            order = sorted(range(len(kept)), key=lambda i: (kept[i].priority, -i))
            dropped.append(kept.pop(order[0]))
        return kept, [c for c in self.columns if c in dropped]

    def renderables(self, room: int) -> list[Any]:
        """The rich table laid out for ``room`` characters, and the note when columns were
        left out."""
        from rich.box import HEAVY_HEAD
        from rich.table import Table as RichTable
        from rich.text import Text

        kept, dropped = self.fit(room)
        t = RichTable(
            title=self.title,
            title_justify="left",
            title_style="bold",
            header_style="bold",
            box=None if self.plain else HEAVY_HEAD,
            pad_edge=not self.plain,
        )
        for c in kept:
            if c.numeric:
                t.add_column(
                    c.header, justify="right", no_wrap=True, overflow="fold", min_width=c.natural()
                )
            else:
                t.add_column(c.header, justify="left", overflow="fold")
        for i in range(self.rows):
            t.add_row(
                *(
                    c.cells[i] if isinstance(c.cells[i], Text) else Text(str(c.cells[i]))
                    for c in kept
                )
            )
        out: list[Any] = [t]
        if dropped:
            names = ", ".join(c.header for c in dropped)
            more = f"; {self.note}" if self.note else ""
            out.append(Text(f"(left out to fit {room} columns: {names}{more})", style="dim"))
        return out

    def print(self, console: Any = None) -> None:
        """Print to ``console``, or as plain text to stdout at :func:`width`."""
        if console is None:
            sys.stdout.write(self.render())
            sys.stdout.flush()
            return
        for r in self.renderables(console.width):
            console.print(r)

    def render(self, room: int | None = None) -> str:
        """The table as plain text at ``room`` characters (default :func:`width`)."""
        return render(*self.renderables(room or width()), room=room)


def stdout_console(room: int | None = None) -> Any:
    """A rich console on stdout at :func:`width` (no highlighting of numbers)."""
    from rich.console import Console

    return Console(width=room or width(), highlight=False, soft_wrap=False)


def render(*renderables: Any, room: int | None = None) -> str:
    """Rich renderables as plain text (trailing spaces stripped) at ``room`` characters
    (default :func:`width`)."""
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=room or width(), force_terminal=False, highlight=False)
    for r in renderables:
        console.print(r)
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())
