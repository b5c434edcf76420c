"""The virtual CPU: when each backend delivers a pending interrupt."""

from __future__ import annotations

import numpy as np

from replayer.mechanisms.vcpu import backend_if, delivery_points, unmask_events

# guest IF at boundaries 0..9:       0  1  2  3  4  5  6  7  8  9
VIF = np.array([1, 1, 0, 0, 0, 1, 1, 0, 1, 1], dtype=bool)


def test_delivered_at_once_when_unmasked_else_at_the_unmask() -> None:
    earliest = np.array([1, 3, 7])  # raised by events 0, 2 and 6
    got = delivery_points(VIF, earliest, None)
    assert got.tolist() == [1, 5, 8]


def test_a_backend_that_does_not_check_on_unmask_waits_for_its_next_host_entry() -> None:
    # lguest: the unmask at event 4 is not noticed; a hypercall at event 6 is
    notices = np.zeros(10, dtype=bool)
    notices[7] = True  # boundary after the hypercall (event 6)...
    notices[9] = True  # ...and after another at event 8
    got = delivery_points(VIF, np.array([1, 3]), notices)
    assert got.tolist() == [1, 9]  # boundary 7 has IF clear, so the next one


def test_never_unmasked_means_never_delivered() -> None:
    vif = np.array([1, 0, 0, 0], dtype=bool)
    assert delivery_points(vif, np.array([2]), None).tolist() == [-1]


def test_stuck_if_delivers_as_soon_as_raised() -> None:
    stuck = backend_if(VIF, tracks_guest=False)
    assert delivery_points(stuck, np.array([3]), None).tolist() == [3]
    assert backend_if(VIF, tracks_guest=True).tolist() == VIF.tolist()


def test_only_deferred_deliveries_charge_the_unmasking_hook() -> None:
    unmaskers = np.zeros(10, dtype=bool)
    unmaskers[[4, 7]] = True
    delivered = np.array([1, 5, 8])
    earliest = np.array([1, 3, 7])
    # delivery 5 follows event 4 (an unmasker); 8 follows event 7 (an unmasker)
    assert unmask_events(delivered, earliest, unmaskers).tolist() == [4, 7]
    unmaskers[7] = False  # an iret, say: it has its own cost
    assert unmask_events(delivered, earliest, unmaskers).tolist() == [4]
