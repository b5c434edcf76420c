"""The README's promise: CI runs exactly its install and test commands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def _first_sh_block(text: str, heading: str) -> str:
    section = text[text.index(heading) :]
    m = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert m, heading
    return m.group(1).strip()


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install = _first_sh_block(readme, "## Install")
    tests = _first_sh_block(readme, "## Run the tests")
    assert install in ci, install
    assert tests in ci, tests
    assert ci.index(install) < ci.index(tests)
