"""Fixtures for recorder tests: traces recorded once per session, small ELF images built in code."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from recorder.record import record

SMALL = 2000


@pytest.fixture(scope="session")
def pvcall_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pvcall at small scale, ring logging path."""
    out = tmp_path_factory.mktemp("pvcall") / "trace"
    record("pvcall", out, scale=SMALL)
    return out


def make_elf32(code: bytes, *, entry: int = 0x100000, machine: int = 3, elfclass: int = 1) -> bytes:
    """A minimal ELF executable with one PT_LOAD segment holding ``code`` at ``entry``."""
    if elfclass == 2:
        ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
        hdr = struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, 64, 0, 0, 64, 56, 1, 64, 0, 0)
        ph = struct.pack("<IIQQQQQQ", 1, 5, 0x1000, entry, entry, len(code), len(code), 0x1000)
        return (ident + hdr + ph).ljust(0x1000, b"\0") + code
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    hdr = struct.pack("<HHIIIIIHHHHHH", 2, machine, 1, entry, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    ph = struct.pack("<IIIIIIII", 1, 0x1000, entry, entry, len(code), len(code), 5, 0x1000)
    return (ident + hdr + ph).ljust(0x1000, b"\0") + code
