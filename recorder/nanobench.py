"""The ``nanobench`` guest's phases, declared once as data.

``recorder/guests/workloads/nanobench.c`` performs each of Adams & Agesen's
nanobenchmarks (ASPLOS 2006, "A Comparison of Software and Hardware Techniques for
x86 Virtualization", section 6.2) and a few lmbench-style operations ``N`` times in a
phase of its own.  Right before a phase's loop the guest reports
``service(PV_SERVICE_PHASE, id, N)`` (a ``guest`` event with ``arg0 = 4``,
``arg1 = id``, ``arg2 = N``) and right after it ``service(PV_SERVICE_PHASE, 0, 0)``:
:data:`END`, "no phase", so what runs between two phases (a process started or
reaped) belongs to none.  The C enum ``nb_phase`` must match :data:`PHASES` (a test
parses it), as must the id-to-name list in ``analysis/queries/nanobench.sql``.

Each phase names the event that *is* its operation (``kind`` plus a hook name or a
vector, and how many of them one operation makes): a phase of ``N`` operations holds
at least ``per_op * N`` of them.  The workload's header comment says, phase by phase,
how this i386 CPL 1 paravirt kernel does what the paper measured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recorder.devices import IoDevice

#: The guest's name.
GUEST = "nanobench"
#: ``service`` code of a phase marker (``PV_SERVICE_PHASE`` in ``include/pvscope.h``).
SERVICE_PHASE = 4
#: The phase id that ends the current phase (no phase until the next marker).
END = 0
#: Operations per phase per unit of scale: ``N = OPS_PER_SCALE * scale``.
OPS_PER_SCALE = 100


@dataclass(frozen=True)
class Phase:
    """One phase of the nanobench guest."""

    id: int
    """Marker id (``arg1`` of the phase's guest event); stable, 1..12."""
    name: str
    """Short name, the paper's for a nanobenchmark (``call/ret``)."""
    source: str
    """``adams-agesen-2006`` or ``lmbench``."""
    measures: str
    """What one operation is on this machine."""
    paper: str
    """The definition it follows (the paper's, or the lmbench program's)."""
    kind: str
    """Event kind of the operation's defining event."""
    match: str | int
    """Hook name (``kind == 'hook'``), vector (``softint``, ``exception``) or physical
    address (``mmio_read``, ``mmio_write``)."""
    per_op: int = 1
    """Defining events one operation makes at least."""
    cpl: int | None = None
    """Privilege level the defining event must have, if it matters."""

    @property
    def c_name(self) -> str:
        """The enumerator in ``nanobench.c`` (``NB_CALL_RET``)."""
        return "NB_" + re.sub(r"\W", "_", self.name).upper()

    def where(self) -> str:
        """SQL condition selecting the defining events (columns of ``events``)."""
        cond = [f"kind = '{self.kind}'"]
        if self.kind == "hook":
            cond.append(f"hook = '{self.match}'")
        else:
            cond.append(f"arg0 = {int(self.match)}")
        if self.cpl is not None:
            cond.append(f"cpl = {self.cpl}")
        return " AND ".join(cond)


AA = "adams-agesen-2006"
LM = "lmbench"

PHASES: tuple[Phase, ...] = (
    Phase(
        1,
        "syscall",
        AA,
        "a null int $0x80 from CPL 3 (a number the kernel answers -ENOSYS) and its iret",
        "round trip user to supervisor level by syscall/sysret",
        "softint",
        0x80,
        cpl=3,
    ),
    Phase(
        2,
        "in",
        AA,
        "a 32-bit MMIO read of the I/O device's STATUS register, which a backend intercepts",
        "in from port 0x80, an off-CPU chipset register",
        "mmio_read",
        IoDevice.BASE + IoDevice.STATUS,
    ),
    Phase(
        3,
        "cr8wr",
        AA,
        "apic_write(APIC_TASKPRI, 0): the local APIC TPR, i386's equivalent of CR8",
        "a write of %cr8, the task priority register",
        "hook",
        "apic_write",
    ),
    Phase(
        4,
        "call/ret",
        AA,
        "set_lazy_mode(PARAVIRT_LAZY_FLUSH) outside a lazy mode: a hook call whose native "
        "body is empty (paravirt_nop)",
        "a call/return pair (indirect control flow under binary translation)",
        "hook",
        "set_lazy_mode",
    ),
    Phase(
        5,
        "pgfault",
        AA,
        "a CPL 1 load from an address the page tables do not map, resolved by "
        "do_page_fault's exception-table fixup without a mapping change",
        "a true page fault, delivered to the guest's handler",
        "exception",
        14,
        cpl=1,
    ),
    Phase(
        6,
        "divzero",
        AA,
        "a divl by zero at CPL 3 taken by a null vector-0 handler that steps over it and irets",
        "a divide-by-zero fault and its handler's return",
        "exception",
        0,
        cpl=3,
    ),
    Phase(
        7,
        "ptemod",
        AA,
        "set_pte_at rewriting a live kernel PTE (its dirty bit toggled) in the loaded "
        "page directory",
        "a store to a PTE of a live, traced page table",
        "hook",
        "set_pte_at",
    ),
    Phase(
        8,
        "null_syscall",
        LM,
        "getpid from CPL 3",
        "lat_syscall null (getppid)",
        "softint",
        0x80,
        cpl=3,
    ),
    Phase(
        9,
        "fork_exit",
        LM,
        "fork, the child's immediate exit, the parent's waitpid",
        "lat_proc fork",
        "hook",
        "alloc_pd_clone",
    ),
    Phase(
        10,
        "ctxsw",
        LM,
        "one switch between two processes alternating by sched_yield",
        "lat_ctx (two processes passing a token through pipes)",
        "hook",
        "load_esp0",
    ),
    Phase(
        11,
        "page_fault",
        LM,
        "a CPL 3 read of a new page of an anonymous mapping: a demand fault mapping the zero page",
        "lat_pagefault (faulting in a file's cached pages)",
        "exception",
        14,
        cpl=3,
    ),
    Phase(
        12,
        "mmap_munmap",
        LM,
        "mmap of 4 anonymous pages, a write to the first, munmap",
        "lat_mmap",
        "softint",
        0x80,
        per_op=2,
        cpl=3,
    ),
)

BY_ID: dict[int, Phase] = {p.id: p for p in PHASES}
BY_NAME: dict[str, Phase] = {p.name: p for p in PHASES}

assert [p.id for p in PHASES] == list(range(1, len(PHASES) + 1))
assert len(BY_NAME) == len(PHASES)


def operations(scale: int) -> int:
    """``N``: how many times the guest performs each phase's operation at ``scale``."""
    return OPS_PER_SCALE * scale
