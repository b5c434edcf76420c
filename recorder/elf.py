"""Loading a guest image: an ELF32 i386 executable, placed by its program headers."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from pvscope.errors import GuestError


@dataclass(frozen=True)
class Segment:
    """A PT_LOAD segment: where it goes in physical memory, its bytes, its full size."""

    paddr: int
    data: bytes
    memsz: int


@dataclass(frozen=True)
class Symbol:
    """A function or object symbol of the guest."""

    name: str
    addr: int
    size: int
    type: str


@dataclass(frozen=True)
class GuestImage:
    """A loadable guest: entry point, segments, symbols and the image's digest."""

    name: str
    sha256: str
    entry: int
    segments: tuple[Segment, ...]
    symbols: tuple[Symbol, ...]


def load_image(path: Path, name: str | None = None) -> GuestImage:
    """Read and check a guest ELF; raise GuestError with a one-line reason if unusable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GuestError(f"{path}: no such guest image") from None
    except IsADirectoryError:
        raise GuestError(f"{path}: is a directory, not a guest image") from None
    except OSError as e:
        raise GuestError(f"{path}: cannot read guest image ({e.strerror})") from None
    if raw[:4] != b"\x7fELF":
        raise GuestError(f"{path}: not an ELF file")
    if raw[4] != 1:
        raise GuestError(f"{path}: a 64-bit ELF; pvscope guests are 32-bit i386 (ELFCLASS32)")
    try:
        elf = ELFFile(io.BytesIO(raw))
        if elf["e_machine"] != "EM_386":
            raise GuestError(f"{path}: ELF for {elf['e_machine']}, not i386")
        if elf["e_type"] != "ET_EXEC":
            raise GuestError(f"{path}: not an executable ELF ({elf['e_type']})")
        segments = tuple(
            Segment(int(s["p_paddr"]), bytes(s.data()), int(s["p_memsz"]))
            for s in elf.iter_segments()
            if s["p_type"] == "PT_LOAD" and s["p_memsz"] > 0
        )
        symbols: list[Symbol] = []
        symtab = elf.get_section_by_name(".symtab")
        if symtab is not None:
            for sym in symtab.iter_symbols():  # type: ignore[attr-defined]
                kind = sym["st_info"]["type"]
                if kind in ("STT_FUNC", "STT_OBJECT") and sym.name:
                    symbols.append(
                        Symbol(
                            sym.name,
                            int(sym["st_value"]),
                            int(sym["st_size"]),
                            "func" if kind == "STT_FUNC" else "object",
                        )
                    )
        entry = int(elf["e_entry"])
    except ELFError as e:
        raise GuestError(f"{path}: corrupt ELF ({e})") from None
    if not segments:
        raise GuestError(f"{path}: no loadable segments")
    if not any(s.paddr <= entry < s.paddr + s.memsz for s in segments):
        raise GuestError(
            f"{path}: entry point {entry:#x} is not in a loaded segment's physical range "
            "(the guest starts with paging off)"
        )
    symbols.sort(key=lambda s: (s.addr, s.name))
    return GuestImage(
        name=name or path.stem,
        sha256=hashlib.sha256(raw).hexdigest(),
        entry=entry,
        segments=segments,
        symbols=tuple(symbols),
    )
