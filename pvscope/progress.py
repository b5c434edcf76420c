"""Progress on stderr for long work: steps done out of steps planned, and what runs now.

Shown only on a terminal and never with ``-q`` (or when a command prints JSON), so
programs and pipes see nothing; every command that takes long uses :class:`Steps`.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any


def wanted(quiet: bool) -> bool:
    """Whether to draw progress: not asked to be quiet, and stderr is a terminal."""
    return not quiet and sys.stderr.isatty()


class Steps:
    """A bar of ``total`` steps (``unit``: runs, queries), with a line for the step now
    running (``now``), the elapsed time, and nothing at all when not :func:`wanted`."""

    def __init__(self, what: str, total: int, unit: str, quiet: bool = False) -> None:
        self.total = total
        self._bar: Any = None
        if not wanted(quiet):
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn(what),
            BarColumn(),
            TextColumn(f"{{task.completed:,.0f}} of {{task.total:,.0f}} {unit}"),
            TextColumn("{task.fields[now]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._bar.add_task(what, total=total, now="")

    def __enter__(self) -> Steps:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, done: int, now: str = "") -> None:
        """``done`` steps finished; ``now`` says what runs."""
        if self._bar is not None:
            self._bar.update(self._task, completed=done, now=now)
