"""Deterministic interrupt sources on IOAPIC pins, in virtual time.

* :class:`PeriodicTimer` — an edge on its pin every ``period`` vtime units
  (the PC's PIT on pin 2 by default).
* :class:`IoDevice` — an I/O device with a doorbell whose requests complete
  after a delay drawn from a seeded PRNG (:class:`SplitMix64`); its line is
  level-triggered and stays asserted while completions await acknowledgement.
  Every drawn delay is reported to ``record_input`` so the trace holds it.

Like the APIC models, devices know nothing of unicorn: the machine maps
:data:`MMIO_REGIONS`, forwards MMIO accesses and calls ``advance(vtime)`` at
quantum boundaries, sizing quanta with ``next_deadline()``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

from recorder.ioapic import IOAPIC_BASE, IOAPIC_SIZE, Ioapic
from recorder.lapic import LAPIC_BASE, LAPIC_SIZE

__all__ = [
    "DEVICE_BASE",
    "DEVICE_SIZE",
    "MMIO_REGIONS",
    "IoDevice",
    "PeriodicTimer",
    "SplitMix64",
]

DEVICE_BASE = 0xFEB00000
"""Physical base address of the I/O device's MMIO page."""
DEVICE_SIZE = 0x1000
"""Size of the I/O device's MMIO page."""

MMIO_REGIONS: tuple[tuple[int, int, str], ...] = (
    (LAPIC_BASE, LAPIC_SIZE, "lapic"),
    (IOAPIC_BASE, IOAPIC_SIZE, "ioapic"),
    (DEVICE_BASE, DEVICE_SIZE, "device"),
)
"""``(base, size, name)`` of every MMIO page the machine maps, whole 4 KiB pages."""

_MASK64 = (1 << 64) - 1
_MASK32 = 0xFFFFFFFF


class SplitMix64:
    """SplitMix64 (Steele, Lea and Flood, 2014): a tiny, fully deterministic PRNG."""

    def __init__(self, seed: int) -> None:
        self.state: int = seed & _MASK64
        """The 64-bit generator state."""

    def next(self) -> int:
        """The next 64-bit output."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def uniform(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``, without modulo bias (rejection sampling)."""
        if high < low:
            raise ValueError(f"empty range [{low}, {high}]")
        span = high - low + 1
        limit = (1 << 64) - (1 << 64) % span
        while True:
            value = self.next()
            if value < limit:
                return low + value % span


class PeriodicTimer:
    """An edge on ``pin`` every ``period`` vtime units: ticks at ``start + k * period``, k ≥ 1.

    Ticks that fall within one :meth:`advance` step raise a single edge (at
    the first of them); all are counted in ``ticks``, the extra ones in
    ``coalesced``.
    """

    def __init__(
        self, ioapic: Ioapic, pin: int = 2, period: int = 1_000_000, start: int = 0
    ) -> None:
        if period <= 0:
            raise ValueError(f"period must be positive, got {period}")
        self.ioapic: Ioapic = ioapic
        """The IOAPIC the timer's line is wired to."""
        self.pin: int = pin
        """The IOAPIC pin."""
        self.period: int = period
        """Vtime units between ticks."""
        self.now: int = start
        """Virtual time of the most recent :meth:`advance` (``start`` initially)."""
        self.ticks: int = 0
        """Ticks so far, coalesced ones included."""
        self.coalesced: int = 0
        """Ticks merged into an earlier tick's edge within one advance."""
        self._next = start + period

    def next_deadline(self) -> int:
        """Vtime of the next tick."""
        return self._next

    def advance(self, vtime: int) -> None:
        """Move to ``vtime``; if ticks are due, assert then deassert the line once.

        Raises ``ValueError`` if ``vtime`` is before ``now``.
        """
        if vtime < self.now:
            raise ValueError(f"virtual time goes backward: {vtime} < {self.now}")
        self.now = vtime
        if self._next > vtime:
            return
        first = self._next
        count = (vtime - first) // self.period + 1
        self._next = first + count * self.period
        self.ticks += count
        self.coalesced += count - 1
        self.ioapic.set_pin(self.pin, True, first)
        self.ioapic.set_pin(self.pin, False, first)


class IoDevice:
    """An I/O device with a doorbell; completions interrupt after a seeded delay.

    MMIO registers (32-bit, in the page at :attr:`BASE`):

    ========  ======  ===========================================================
    DOORBELL  0x00    write: submit a request with tag = value
    STATUS    0x04    read: completed, unacknowledged requests; bit 31 ERROR
                      (a doorbell was dropped because 64 were in flight);
                      write 1 to bit 31 clears ERROR
    TAG       0x08    read: tag of the oldest completed, unacknowledged request,
                      0xFFFFFFFF if none
    ACK       0x0C    write: acknowledge the oldest completed request
    QUEUE     0x10    read: requests in flight (submitted, not completed)
    ========  ======  ===========================================================

    A request submitted at ``now`` completes at ``now + delay`` with ``delay``
    drawn uniformly from ``[min_delay, max_delay]``; each drawn delay is passed
    to ``record_input("device.delay", delay)``.  A dropped doorbell draws
    nothing.  The line (level-triggered) is asserted while completed,
    unacknowledged requests remain.
    """

    BASE = DEVICE_BASE
    SIZE = DEVICE_SIZE
    MAX_IN_FLIGHT = 64

    DOORBELL = 0x00
    STATUS = 0x04
    TAG = 0x08
    ACK = 0x0C
    QUEUE = 0x10
    STATUS_ERROR = 1 << 31
    NO_TAG = 0xFFFFFFFF

    def __init__(
        self,
        ioapic: Ioapic,
        pin: int = 11,
        *,
        seed: int,
        min_delay: int,
        max_delay: int,
        record_input: Callable[[str, int], None],
    ) -> None:
        if not 0 <= min_delay <= max_delay:
            raise ValueError(f"need 0 <= min_delay <= max_delay, got {min_delay}, {max_delay}")
        self.ioapic: Ioapic = ioapic
        """The IOAPIC the device's line is wired to."""
        self.pin: int = pin
        """The IOAPIC pin."""
        self.min_delay: int = min_delay
        """Shortest completion delay, in vtime units."""
        self.max_delay: int = max_delay
        """Longest completion delay, in vtime units."""
        self.record_input: Callable[[str, int], None] = record_input
        """Sink for nondeterministic inputs (the trace's inputs table)."""
        self.now: int = 0
        """Virtual time of the most recent :meth:`advance`."""
        self.submitted: int = 0
        """Requests accepted by the doorbell."""
        self.completed: int = 0
        """Requests completed."""
        self.dropped: int = 0
        """Doorbells dropped because :attr:`MAX_IN_FLIGHT` requests were in flight."""
        self.unknown_accesses: int = 0
        """Accesses to other offsets or of another size than 32 bits."""
        self.line: bool = False
        """Logical state of the interrupt line."""
        self._rng = SplitMix64(seed)
        self._error = False
        self._seq = 0
        self._in_flight: list[tuple[int, int, int]] = []  # heap of (deadline, seq, tag)
        self._done: deque[int] = deque()  # tags, oldest completion first

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet completed."""
        return len(self._in_flight)

    @property
    def pending(self) -> int:
        """Requests completed and not yet acknowledged."""
        return len(self._done)

    def next_deadline(self) -> int | None:
        """Vtime of the next completion, ``None`` with nothing in flight."""
        return self._in_flight[0][0] if self._in_flight else None

    def advance(self, vtime: int) -> None:
        """Move to ``vtime``, completing every request due by then.

        Requests complete in deadline order, ties in submission order.  If the
        line was deasserted it is asserted at the first completion's deadline.
        Raises ``ValueError`` if ``vtime`` is before ``now``.
        """
        if vtime < self.now:
            raise ValueError(f"virtual time goes backward: {vtime} < {self.now}")
        self.now = vtime
        first: int | None = None
        while self._in_flight and self._in_flight[0][0] <= vtime:
            deadline, _, tag = heapq.heappop(self._in_flight)
            if first is None:
                first = deadline
            self._done.append(tag)
            self.completed += 1
        if first is not None:
            self._set_line(True, first)

    def _set_line(self, asserted: bool, vtime: int) -> None:
        if asserted != self.line:
            self.line = asserted
            self.ioapic.set_pin(self.pin, asserted, vtime)

    def _doorbell(self, tag: int) -> None:
        if len(self._in_flight) >= self.MAX_IN_FLIGHT:
            self._error = True
            self.dropped += 1
            return
        delay = self._rng.uniform(self.min_delay, self.max_delay)
        self.record_input("device.delay", delay)
        heapq.heappush(self._in_flight, (self.now + delay, self._seq, tag))
        self._seq += 1
        self.submitted += 1

    def read(self, offset: int, size: int) -> int:
        """Read a device register (MMIO callback); other offsets read 0."""
        if size != 4:
            self.unknown_accesses += 1
            return 0
        if offset == self.STATUS:
            return (len(self._done) & 0x7FFFFFFF) | (self.STATUS_ERROR if self._error else 0)
        if offset == self.TAG:
            return self._done[0] if self._done else self.NO_TAG
        if offset == self.QUEUE:
            return len(self._in_flight)
        if offset in (self.DOORBELL, self.ACK):
            return 0  # write-only
        self.unknown_accesses += 1
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """Write a device register (MMIO callback); other offsets are ignored."""
        if size != 4:
            self.unknown_accesses += 1
            return
        value &= _MASK32
        if offset == self.DOORBELL:
            self._doorbell(value)
        elif offset == self.ACK:
            if self._done:
                self._done.popleft()
                if not self._done:
                    self._set_line(False, self.now)
        elif offset == self.STATUS:
            if value & self.STATUS_ERROR:
                self._error = False
        elif offset not in (self.TAG, self.QUEUE):
            self.unknown_accesses += 1
