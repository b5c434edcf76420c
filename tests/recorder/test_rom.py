"""The ROM: its committed image is what the generator builds, and the guest headers agree."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pvscope.hooks import HOOKS
from recorder import rom as R

GUESTS = Path(R.__file__).parent / "guests"


@pytest.mark.toolchain
@pytest.mark.skipif(
    not (shutil.which("as") and shutil.which("objcopy") and shutil.which("nm")),
    reason="GNU binutils (as, objcopy, nm) not installed",
)
def test_committed_rom_is_what_the_generator_builds(tmp_path: Path) -> None:
    R.build(tmp_path)
    assert (tmp_path / "rom.bin").read_bytes() == (R.ROM_DIR / "rom.bin").read_bytes()
    assert (tmp_path / "rom.json").read_text() == (R.ROM_DIR / "rom.json").read_text()


def test_rom_header_and_entry_table() -> None:
    rom = R.load()
    img = rom.image
    assert img[: len(R.SIGNATURE)] == R.SIGNATURE
    assert int.from_bytes(img[R.H_ENTRY_COUNT : R.H_ENTRY_COUNT + 4], "little") == len(HOOKS)
    assert int.from_bytes(img[R.H_ENTRY_TABLE : R.H_ENTRY_TABLE + 4], "little") == R.ENTRY_TABLE
    assert rom.entries == tuple(R.ENTRY_TABLE + 8 * i for i in range(len(HOOKS)))
    # every trap-kind hook has a trap site; native ones have none
    trapping = {hid for action, hid in rom.traps.values() if action == R.TRAP_HOOK}
    assert trapping == {h.id for h in HOOKS if h.rom in ("trap", "unsupported")}


def test_guest_header_constants_match_the_rom() -> None:
    text = (GUESTS / "include/pvscope.h").read_text()
    assert int(re.search(r"PV_HV_BASE (0x[0-9A-Fa-f]+)u", text)[1], 16) == R.HV_BASE
    assert int(re.search(r"PV_ROM_ABI (\d+)", text)[1]) == R.ABI_VERSION
    fields = re.findall(
        r"^\s+(?:char|u32) (\w+)(?:\[8\])?;",
        text.split("struct pv_rom_header")[1].split("};")[0],
        re.M,
    )
    offsets = [
        R.H_SIGNATURE,
        R.H_ABI,
        R.H_ENTRY_COUNT,
        R.H_ENTRY_TABLE,
        R.H_KERNEL_RPL,
        R.H_SCALE,
        R.H_SEED,
        R.H_MEM_BYTES,
        R.H_SERVICE,
        R.H_NAME,
        R.H_RESERVED_GDT,
        R.H_USER_PAGE,
        R.H_DATA,
        R.H_RING,
        R.H_RING_SIZE,
        R.H_HV_BASE,
    ]
    assert len(fields) == len(offsets) == 16
    assert offsets == [0] + [8 + 4 * i for i in range(15)]


def test_entries_returning_through_their_record_keep_it_open_while_anything_can_nest() -> None:
    """An entry that pops its return address into its ring record (and returns with
    ``jmp *28(%ecx)``) must not let a handler run inside it while that record is complete:
    the recorder frees complete records' slots.  So such an entry never traps, and one
    whose body touches memory through a pointer writes its code after the body."""
    asm = R.generate_asm()
    for h in HOOKS:
        start = asm.index(f"body_{h.name}:")
        entry = asm[start : asm.find("body_", start + 5) % len(asm)]
        if "jmp *28(%ecx)" not in entry:
            continue
        assert "int $0x82" not in entry, h.name
        code_store = f"movw ${R.record_code(h)}, (%ecx)"
        after_code = entry.split(code_store)[1].replace("jmp *28(%ecx)", "")
        assert "(" not in after_code, h.name  # no memory access once the record is complete
