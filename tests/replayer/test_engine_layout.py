"""The engine stays readable: one module per stage, each saying what it takes and gives,
no module over 600 lines and no function over 80 without a reason written at its head."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "replayer" / "engine"
MODULES = sorted(ENGINE.glob("*.py"))
MAX_MODULE, MAX_FUNCTION = 600, 80
#: A function longer than MAX_FUNCTION must carry this, with its reason, in its first lines.
REASON = "# long:"


def test_the_engine_is_a_package_of_stages() -> None:
    names = {p.stem for p in MODULES}
    for stage in ("derived", "static", "lean", "proofs", "sequential", "cpu", "checks"):
        assert stage in names, stage
    assert "summary" in names and "result" in names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_a_stage_module_says_what_it_takes_and_gives(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "takes" in doc.lower() and "gives" in doc.lower(), path.name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_module_or_function_is_too_long(path: Path) -> None:
    text = path.read_text()
    lines = text.splitlines()
    assert len(lines) <= MAX_MODULE, f"{path.name}: {len(lines)} lines"
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assert node.end_lineno is not None
        length = node.end_lineno - node.lineno + 1
        head = "\n".join(lines[node.lineno - 1 : node.lineno + 5])
        assert length <= MAX_FUNCTION or REASON in head, (
            f"{path.name}:{node.lineno} {node.name} is {length} lines with no '{REASON}' reason"
        )


def test_the_length_check_can_fail(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION + 1))
    f = tmp_path / "long.py"
    f.write_text('"""Takes nothing; gives nothing."""\n\n\ndef f() -> None:\n' + body + "\n")
    with pytest.raises(AssertionError, match="no '# long:' reason"):
        test_no_module_or_function_is_too_long(f)


def test_numba_is_imported_only_by_a_process_that_walks_compiled() -> None:
    """The compiled walks import numba (about 100 MiB and 0.3 s a process): the command
    line, the engine and the replay API import them only where a run needs one, so that
    ``pvscope record`` or a replay of other runs does not pay for it."""
    code = (
        "import sys, pvscope.cli, replayer.api, replayer.engine, replayer.engine.lean; "
        "assert 'numba' not in sys.modules, sorted(m for m in sys.modules if 'walk' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ENGINE.parents[1])
