"""Saved queries: ``.sql`` files in ``analysis/queries/``, each headed by what it answers.

A saved query's header is its leading ``--`` comment block: the first line is the
question it answers, the following lines say how to read the result, and an optional
``-- needs: view, view`` line names the views it reads (``replay``, ``summary`` and
``costs`` come from replay results, so such a query needs ``pvscope replay`` first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pvscope import schema
from pvscope.errors import UsageError

QUERY_DIR = Path(__file__).resolve().parent / "queries"
#: Views that only replay results supply.
REPLAY_ONLY = frozenset(schema.RESULT_TABLES)


@dataclass(frozen=True)
class SavedQuery:
    """One ``.sql`` file."""

    name: str
    title: str
    """The question it answers (the header's first line)."""
    doc: str
    """The rest of the header: how to read the result."""
    needs: tuple[str, ...]
    """Views it reads."""
    sql: str
    path: Path

    @property
    def needs_replay(self) -> bool:
        """True when it reads replay results."""
        return bool(REPLAY_ONLY & set(self.needs))


def parse(path: Path) -> SavedQuery:
    """Read a saved query and its header."""
    text = path.read_text()
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        header.append(line[2:].strip())
    needs: tuple[str, ...] = ()
    doc_lines = []
    for line in header[1:]:
        if line.lower().startswith("needs:"):
            needs = tuple(v.strip() for v in line.split(":", 1)[1].split(",") if v.strip())
        else:
            doc_lines.append(line)
    title = header[0] if header else ""
    return SavedQuery(path.stem, title, " ".join(doc_lines), needs, text, path)


def saved(directory: Path = QUERY_DIR) -> list[SavedQuery]:
    """Every saved query, by name."""
    return [parse(p) for p in sorted(directory.glob("*.sql"))]


def load(name: str, directory: Path = QUERY_DIR) -> SavedQuery:
    """A saved query by name; UsageError listing the names for an unknown one."""
    path = directory / f"{name}.sql"
    if "/" in name or not path.is_file():
        names = ", ".join(q.name for q in saved(directory))
        raise UsageError(f"no saved query {name!r} (saved queries: {names})")
    return parse(path)
