"""The layering, checked on the source: every import of every shipped module, parsed.

Floors, bottom up:

* the contract -- the ``pvscope`` package except ``pvscope.cli`` and ``__main__``
  (schema, hooks, errors, digest, paths, progress, display, the version): imports no stage;
* the stages -- ``recorder`` and ``replayer`` stand side by side on the contract and
  import neither each other nor ``analysis``; ``analysis`` may use both;
* the command line -- ``pvscope.cli`` (with ``golden``) and ``pvscope.__main__``:
  above every stage, imported by none.

Nothing shipped imports ``tests`` (test and bench support such as ``synth`` lives there).
Imports are read with :mod:`ast`, so lazy ones inside functions count too, as do
relative imports (resolved against the importing module) and
``importlib.import_module`` with a literal name.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SHIPPED = ("pvscope", "recorder", "replayer", "analysis")
CONTRACT_MODULES = {
    "pvscope",
    "pvscope.schema",
    "pvscope.hooks",
    "pvscope.errors",
    "pvscope.digest",
    "pvscope.paths",
    "pvscope.progress",
    "pvscope.display",
}

#: Which floors each floor may not import (beyond itself, anything else is allowed).
FORBIDDEN = {
    "contract": {"recorder", "replayer", "analysis", "cli", "tests"},
    "recorder": {"replayer", "analysis", "cli", "tests"},
    "replayer": {"recorder", "analysis", "cli", "tests"},
    "analysis": {"cli", "tests"},
    "cli": {"tests"},
}


def floor(module: str) -> str | None:
    """The floor a dotted module name belongs to; None for the stdlib and third parties."""
    top = module.split(".")[0]
    if top == "pvscope":
        cli = module == "pvscope.__main__" or module.split(".")[:2] == ["pvscope", "cli"]
        return "cli" if cli else "contract"
    return top if top in ("recorder", "replayer", "analysis", "tests") else None


def module_name(path: Path) -> tuple[str, bool]:
    """The dotted name of a source file, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name ``tree`` imports, anywhere in it, as absolute dotted names.

    ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a submodule).
    """
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                if node.level > 1:
                    anchor = anchor[: -(node.level - 1)]
                assert anchor, f"{module}: relative import above the top package"
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


@cache
def graph() -> dict[str, set[str]]:
    """Every shipped module and the modules it imports."""
    out = {}
    for pkg in SHIPPED:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name, is_package = module_name(path)
            out[name] = imported(ast.parse(path.read_text(), str(path)), name, is_package)
    return out


def violations(g: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every import that breaks the layering."""
    bad = []
    for module, names in sorted(g.items()):
        here = floor(module)
        assert here is not None, module
        for name in sorted(names):
            there = floor(name)
            if there is not None and there != here and there in FORBIDDEN[here]:
                bad.append(f"{module} ({here}) imports {name} ({there})")
    return bad


def test_the_scan_sees_every_floor_and_lazy_imports() -> None:
    g = graph()
    assert {floor(m) for m in g} == {"contract", "recorder", "replayer", "analysis", "cli"}
    # pvscope.cli imports the recorder only inside its commands: a lazy import is seen.
    assert "recorder.record" in g["pvscope.cli"]
    assert "pvscope.cli" in g["pvscope.__main__"]


def test_the_contract_is_exactly_the_named_modules() -> None:
    # A new module in pvscope/ joins the contract on purpose (add it here) or goes in cli/.
    assert {m for m in graph() if floor(m) == "contract"} == CONTRACT_MODULES


def test_no_import_crosses_the_layering() -> None:
    assert violations(graph()) == []


@pytest.mark.parametrize(
    ("module", "source", "is_package", "expected"),
    [
        ("pvscope.schema", "def f():\n    import recorder.record\n", False, "recorder.record"),
        ("replayer.mechanisms.registers", "from ..trace import K_HOOK\n", False, "replayer.trace"),
        ("replayer.engine", "from .. import synth\n", True, "replayer.synth"),
        ("analysis.views", "from pvscope.cli import main\n", False, "pvscope.cli.main"),
        (
            "recorder.rom",
            "import importlib\nimportlib.import_module('tests.support')",
            False,
            "tests.support",
        ),
    ],
)
def test_the_scan_resolves_imports(
    module: str, source: str, is_package: bool, expected: str
) -> None:
    assert expected in imported(ast.parse(source), module, is_package)


def test_a_bad_import_is_caught() -> None:
    g = {m: set(names) for m, names in graph().items()}
    g["pvscope.hooks"].add("replayer.trace")
    g["recorder.rom"].add("tests.support.synth")
    assert violations(g) == [
        "pvscope.hooks (contract) imports replayer.trace (replayer)",
        "recorder.rom (recorder) imports tests.support.synth (tests)",
    ]
