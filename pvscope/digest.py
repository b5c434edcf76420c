"""Digests shared by the recorder (from guest memory) and the replayer (from its models).

A checkpoint's ``mmu`` digest names the translation the guest asked for, so the
recorder computes it from the page tables in guest memory and the replayer
from the tables it rebuilt from the hook stream; equal digests mean equal
mappings.  Accessed and dirty bits are left out: the CPU sets them behind the
kernel's back, and no hook reports them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

#: PTE bits that make up a mapping's meaning: present, writable, user.
PTE_MEANING_MASK = 0x7
PAGE_MASK = 0xFFFFF000
PSE = 0x80


def mapping_digest(mappings: Iterable[tuple[int, int]]) -> int:
    """64-bit digest of (virtual page number, masked PTE) pairs; order does not matter.

    Each pair is a present 4 KiB translation: ``vpn = va >> 12`` and
    ``pte & (PAGE_MASK | PTE_MEANING_MASK)``.
    """
    arr = np.array(sorted(mappings), dtype="<u4").reshape(-1, 2)
    return int.from_bytes(hashlib.sha256(arr.tobytes()).digest()[:8], "little")


def walk_page_directory(
    pd: bytes | np.ndarray, read_table: object, *, user_only: bool = False
) -> list[tuple[int, int]]:
    """Present 4 KiB translations of a non-PAE page directory.

    ``pd`` is the 4 KiB directory; ``read_table(pfn)`` returns the 4 KiB page
    table at that frame (as bytes) or None when the frame is not readable.
    4 MiB (PSE) entries are expanded into their 1024 pages.
    """
    pdes = np.frombuffer(bytes(pd), dtype="<u4")
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(start, 1024):
        pde = int(pdes[i])
        if not pde & 1:
            continue
        if user_only and not pde & 4:
            continue
        if pde & PSE:
            base = pde & 0xFFC00000
            meaning = pde & PTE_MEANING_MASK
            out.extend(((i << 10) | j, (base + (j << 12)) | meaning) for j in range(1024))
            continue
        table = read_table(pde >> 12)  # type: ignore[operator]
        if table is None:
            continue
        ptes = np.frombuffer(bytes(table), dtype="<u4")
        idx = np.nonzero(ptes & 1)[0]
        # a translation is only as permissive as both levels allow
        pde_bits = pde & PTE_MEANING_MASK
        for j in idx.tolist():
            pte = int(ptes[j])
            out.append(((i << 10) | j, (pte & PAGE_MASK) | (pte & pde_bits & PTE_MEANING_MASK)))
    return out
