"""Writing query results: a terminal table, CSV, JSON or Parquet, to stdout or a file.

Files appear atomically: written beside the target under a temporary name and renamed.
"""

from __future__ import annotations

import decimal
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import click
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pvscope.errors import UsageError

FORMATS = ("table", "csv", "json", "parquet")
#: Rows a terminal table shows before it says how many more there are.
TABLE_ROWS = 1000


def _json_default(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def to_json(table: pa.Table) -> str:
    """Rows as a JSON array of objects."""
    return "".join(json_chunks(table))


def json_chunks(table: pa.Table, rows: int = 65536) -> Iterator[str]:
    """:func:`to_json`'s text in pieces of ``rows`` rows, so a large result is never held
    as Python objects all at once: a JSON array with one object per line (each row
    encoded by the C encoder; an indented dump of 10 M rows took minutes)."""
    if table.num_rows == 0:
        yield "[]\n"
        return
    first = True
    for batch in table.to_batches(max_chunksize=rows):
        parts = [json.dumps(r, default=_json_default) for r in batch.to_pylist()]
        if not parts:
            continue
        yield ("[\n" if first else ",\n") + ",\n".join(parts)
        first = False
    yield "\n]\n"


def _flat(table: pa.Table) -> pa.Table:
    """Nested columns (lists, structs, maps) as JSON text, which CSV can hold."""
    cols = []
    for col in table.columns:
        if pa.types.is_nested(col.type):
            col = pa.array(
                [
                    None if v is None else json.dumps(v, default=_json_default)
                    for v in col.to_pylist()
                ],
                pa.string(),
            )
        elif pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def to_csv(table: pa.Table) -> bytes:
    """Rows as CSV with a header line."""
    buf = io.BytesIO()
    pacsv.write_csv(_flat(table), buf, pacsv.WriteOptions(quoting_style="needed"))
    return buf.getvalue()


def cell(v: Any) -> str:
    """A value as a terminal table shows it."""
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, decimal.Decimal):
        return f"{_json_default(v)}"
    if isinstance(v, list | dict):
        return json.dumps(v, default=_json_default)
    return str(v)


def rich_table(table: pa.Table, title: str | None = None, limit: int = TABLE_ROWS) -> Any:
    """A rich Table of the first ``limit`` rows."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for name, col in zip(table.column_names, table.columns, strict=True):
        numeric = (
            pa.types.is_integer(col.type)
            or pa.types.is_floating(col.type)
            or pa.types.is_decimal(col.type)
        )
        t.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in table.slice(0, limit).to_pylist():
        t.add_row(*(cell(v) for v in row.values()))
    return t


def write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through a temporary sibling and rename it into place."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; give a file name")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"{parent}: no such directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise UsageError(f"{parent}: cannot write there ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write it ({e.strerror})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def emit(table: pa.Table, fmt: str, out: Path | None, title: str | None = None) -> None:
    """Write a result in ``fmt`` to ``out`` (a file) or stdout."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if fmt == "parquet":
        if out is None:
            raise UsageError("--format parquet needs -o FILE")
        write_atomically(out, lambda f: pq.write_table(table, f, compression="zstd"))
        return
    if fmt == "json":  # streamed: a 10 M-row result is never all Python objects at once
        if out is None:
            for chunk in json_chunks(table):
                click.echo(chunk, nl=False)
        else:
            write_atomically(
                out, lambda f: [f.write(chunk.encode()) for chunk in json_chunks(table)]
            )
        return
    if fmt == "csv":
        data = to_csv(table)
    else:
        from rich.console import Console

        buf = io.StringIO()
        console = Console(file=buf, width=None if out is None else 200, force_terminal=False)
        if out is None:
            console = Console(file=buf, width=_width(), force_terminal=False)
        console.print(rich_table(table, title))
        if table.num_rows > TABLE_ROWS:
            console.print(
                f"… {table.num_rows - TABLE_ROWS} more rows (use --format csv or json for all)"
            )
        data = "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines()).encode()
    if out is None:
        click.echo(data, nl=False)
    else:
        write_atomically(out, lambda f: f.write(data))


def _width() -> int:
    """The terminal's width; wide enough never to wrap when stdout is not a terminal."""
    import shutil

    if not sys.stdout.isatty():
        return 1000
    return max(80, shutil.get_terminal_size((160, 24)).columns)
