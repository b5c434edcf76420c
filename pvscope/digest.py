"""Digests shared by the recorder (from guest memory) and the replayer (from its models).

A checkpoint's ``mmu`` digest names the translation the guest asked for, so the
recorder computes it from the page tables in guest memory and the replayer
from the tables it rebuilt from the hook stream; equal digests mean equal
mappings.  Accessed and dirty bits are left out: the CPU sets them behind the
kernel's back, and no hook reports them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import numpy as np

#: PTE bits that make up a mapping's meaning: present, writable, user.
PTE_MEANING_MASK = 0x7
PAGE_MASK = 0xFFFFF000
PSE = 0x80


def mapping_digest(mappings: Iterable[tuple[int, int]] | np.ndarray) -> int:
    """64-bit digest of (virtual page number, masked PTE) pairs; order does not matter.

    Each pair is a present 4 KiB translation: ``vpn = va >> 12`` and
    ``pte & (PAGE_MASK | PTE_MEANING_MASK)``.  Accepts pairs or an (N, 2) array.
    """
    arr = np.asarray(
        mappings if isinstance(mappings, np.ndarray) else list(mappings), dtype="<u4"
    ).reshape(-1, 2)
    arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
    return int.from_bytes(hashlib.sha256(arr.tobytes()).digest()[:8], "little")


def walk_page_directory(
    pd: bytes | np.ndarray, read_table: Callable[[int], bytes | None], *, user_only: bool = False
) -> np.ndarray:
    """Present 4 KiB translations of a non-PAE page directory, as an (N, 2) uint32 array.

    ``pd`` is the 4 KiB directory; ``read_table(pfn)`` returns the 4 KiB page
    table at that frame (as bytes) or None when the frame is not readable.
    4 MiB (PSE) entries are expanded into their 1024 pages.  A translation is
    only as permissive as both levels allow.
    """
    pdes = np.frombuffer(bytes(pd), dtype="<u4")
    parts: list[np.ndarray] = []
    j = np.arange(1024, dtype=np.uint32)
    for i in np.nonzero(pdes & 1)[0].tolist():
        pde = int(pdes[i])
        if user_only and not pde & 4:
            continue
        if pde & PSE:
            vpn = (i << 10) | j
            pte = (pde & 0xFFC00000) + (j << 12) | (pde & PTE_MEANING_MASK)
            parts.append(np.stack([vpn, pte.astype(np.uint32)], axis=1))
            continue
        table = read_table(pde >> 12)
        if table is None:
            continue
        ptes = np.frombuffer(bytes(table), dtype="<u4")
        idx = np.nonzero(ptes & 1)[0].astype(np.uint32)
        if len(idx) == 0:
            continue
        vals = ptes[idx]
        meaning = vals & np.uint32(pde & PTE_MEANING_MASK)
        parts.append(np.stack([(np.uint32(i << 10) | idx), (vals & PAGE_MASK) | meaning], axis=1))
    if not parts:
        return np.zeros((0, 2), dtype=np.uint32)
    return np.concatenate(parts).astype(np.uint32)
