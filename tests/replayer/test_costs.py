"""Cost tables: the presets are complete and sourced; malformed tables fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvscope.errors import UsageError
from replayer import costs
from replayer.costs import PRIMITIVES, CostTableError


def _table(prims: dict[str, str], name: str = "t") -> bytes:
    lines = ["[table]", f'name = "{name}"']
    for p, body in prims.items():
        lines += [f"[primitive.{p}]", body]
    return "\n".join(lines).encode()


def _full(**override: str) -> dict[str, str]:
    base = {p: 'cycles = 1\nsource = "a test"' for p in PRIMITIVES}
    base.update(override)
    return base


@pytest.mark.parametrize("name", ["p4", "nehalem"])
def test_presets_price_every_primitive_with_a_source_or_estimate(name: str) -> None:
    t = costs.load(name)
    assert set(t.cycles) == set(PRIMITIVES)
    for p, src in t.sources.items():
        assert src.startswith(("source: ", "estimate: ")), p
        assert len(src) > len("estimate: ") + 10, p


def test_p4_carries_the_adams_agesen_numbers() -> None:
    t = costs.load("p4")
    # ASPLOS 2006 nanobenchmarks, as quoted in the reference
    assert (t["hw_ptemod"], t["bt_ptemod"], t["native_store"]) == (12733, 391, 1)
    assert (t["hw_pagefault"], t["bt_pagefault"], t["native_pagefault"]) == (11242, 3927, 1093)
    assert (t["call_ret"], t["bt_call_overhead"]) == (11, 40)
    assert t.sources["hw_ptemod"].startswith("source: Adams & Agesen")


def test_nehalem_exit_is_the_splitx_measurement() -> None:
    t = costs.load("nehalem")
    assert t["vm_exit"] == 2000
    assert "SplitX" in t.sources["vm_exit"]


def test_a_user_file_loads_and_is_hashed(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_bytes(_table(_full()))
    t = costs.load(f)
    assert t.origin == "mine.toml" and t.name == "t"
    f.write_bytes(_table(_full(), name="u"))
    assert costs.load(f).sha256 != t.sha256


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[table\nname = 1", "bad TOML"),
        (
            _table({k: v for k, v in _full().items() if k != "vm_exit"}),
            "missing primitive 'vm_exit'",
        ),
        (_table(_full(hypercall='cycles = -5\nsource = "x"')), "negative cost -5"),
        (_table(_full(hypercall='cycles = 1.5\nsource = "x"')), "must be an integer"),
        (_table(_full(hypercall="cycles = 3")), "exactly one of source, measured or estimate"),
        (_table(_full(hypercall='cycles = 3\nsource = "x"\nestimate = "y"')), "exactly one"),
        (_table({**_full(), "warp_drive": 'cycles = 1\nsource = "x"'}), "unknown primitive"),
        (b'[primitive.call_ret]\ncycles = 1\nsource = "x"', "missing [table] name"),
    ],
)
def test_malformed_tables_fail_naming_the_problem(
    tmp_path: Path, data: bytes, message: str
) -> None:
    f = tmp_path / "bad.toml"
    f.write_bytes(data)
    with pytest.raises(CostTableError) as e:
        costs.load(f)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 1


def test_an_unknown_table_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown cost table 'pentium9'"):
        costs.load("pentium9")
