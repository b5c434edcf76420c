"""The built-in guests: prebuilt images under ``recorder/guests/images``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pvscope.errors import GuestError

GUEST_DIR = Path(__file__).parent / "guests"
IMAGE_DIR = GUEST_DIR / "images"


@dataclass(frozen=True)
class Guest:
    """A built-in workload."""

    name: str
    description: str
    default_scale: int
    small_scale: int
    """A scale that records in seconds (tests, golden traces)."""

    @property
    def image(self) -> Path:
        """Path of the prebuilt ELF image."""
        return IMAGE_DIR / f"{self.name}.elf"


GUESTS: dict[str, Guest] = {
    g.name: g
    for g in (
        Guest(
            "pvcall",
            "boot, a machine self-test (demand fault, CPL 3 task, I/O device), then a loop "
            "calling hooks of every group under timer interrupts",
            150_000,
            2_000,
        ),
        Guest(
            "boot",
            "the boot path alone (page tables, descriptors, PIC, PIT, CPU, APIC, IOAPIC), "
            "repeated scale times",
            620,
            1,
        ),
        Guest(
            "fork",
            "address-space churn: rounds of fork, copy-on-write, exec and exit (scale = rounds)",
            12_500,
            20,
        ),
        Guest(
            "pagefault",
            "demand paging, swap under memory pressure, mmap/mprotect/mremap/munmap "
            "(scale = rounds)",
            4_500,
            10,
        ),
        Guest(
            "irqstorm",
            "I/O device completions at a high rate, handled under irqsave spinlocks "
            "(scale = I/O calls)",
            7_600,
            5,
        ),
        Guest(
            "sched",
            "20 CPL 3 tasks, timer ticks, context switches with system calls (scale = loops)",
            66_000,
            100,
        ),
        Guest(
            "mixed",
            "a kernel-build-like blend: make, cc | as, ld, disk I/O, swap (scale = jobs)",
            11_000,
            16,
        ),
        Guest(
            "nanobench",
            "Adams & Agesen's nanobenchmarks and lmbench-style operations, each N = 100 x scale "
            "times in a marked phase (recorder/nanobench.py)",
            10,
            1,
        ),
    )
}


def resolve(name_or_path: str) -> tuple[str, Path]:
    """A built-in guest's name and image, or a path to an ELF given by the user."""
    if name_or_path in GUESTS:
        g = GUESTS[name_or_path]
        return g.name, g.image
    p = Path(name_or_path)
    if p.exists() or "/" in name_or_path or name_or_path.endswith(".elf"):
        return p.stem, p
    raise GuestError(
        f"unknown guest {name_or_path!r}: not a built-in ({', '.join(GUESTS)}) nor a file"
    )
