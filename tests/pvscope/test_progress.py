"""Progress is drawn on a terminal only, and never with -q."""

from __future__ import annotations

import io
import sys

import pytest

from pvscope import progress
from pvscope.progress import Steps, wanted


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_wants_a_terminal_and_no_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not wanted(False)
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert wanted(False) and not wanted(True)


def test_steps_draw_nothing_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with Steps("replay", 3, "runs") as bar:
        for i in range(3):
            bar.update(i + 1, f"run {i}")
    assert err.getvalue() == ""
    assert progress.Steps("x", 1, "y", quiet=True)._bar is None
