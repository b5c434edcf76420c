"""Writing query results: a terminal table, CSV, JSON or Parquet, to stdout or a file.

Files appear atomically: written beside the target under a temporary name and renamed.
"""

from __future__ import annotations

import decimal
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import click
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pvscope import display
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


def column_kind(name: str, typ: pa.DataType) -> str:
    """How a result column is shown (:func:`pvscope.display.kind_of`): by the schema's
    declaration of a column of that name, by its name, by its type."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    numeric = pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)
    kind = display.kind_of(name, numeric=numeric, boolean=pa.types.is_boolean(typ))
    if kind in ("hex", "id") and not pa.types.is_integer(typ):
        return "count"
    return kind


def cell(v: Any, kind: str = "") -> str:
    """A value as a terminal table shows it (:func:`pvscope.display.value`)."""
    return display.value(v, kind)


def table_of(table: pa.Table, title: str | None = None, limit: int = TABLE_ROWS) -> display.Table:
    """The first ``limit`` rows as a :class:`pvscope.display.Table`: numbers right-aligned
    and never cut, addresses and vectors in hex, the leftmost columns kept longest."""
    t = display.Table(title, note="--format csv or json for every column")
    kinds = []
    for i, (name, col) in enumerate(zip(table.column_names, table.columns, strict=True)):
        kind = column_kind(name, col.type)
        kinds.append(kind)
        t.add_column(name, numeric=kind not in ("text", "bool"), priority=-i)
    for row in table.slice(0, limit).to_pylist():
        t.add_row(*(cell(v, k) for v, k in zip(row.values(), kinds, strict=True)))
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
        room = display.width() if out is None else display.UNLIMITED
        parts = [*table_of(table, title).renderables(room)]
        if table.num_rows > TABLE_ROWS:
            parts.append(
                f"… {display.plural(table.num_rows - TABLE_ROWS, 'more row')} "
                "(use --format csv or json for all)"
            )
        data = display.render(*parts, room=room).encode()
    if out is None:
        click.echo(data, nl=False)
    else:
        write_atomically(out, lambda f: f.write(data))
