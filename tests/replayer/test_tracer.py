"""Write-protected shadows and KVM's write-flood heuristic (commit 86a5ba02)."""

from __future__ import annotations

from replayer.mechanisms.tracer import WriteTracer


def test_untraced_frames_do_not_fault() -> None:
    t = WriteTracer(3)
    assert t.write(5) == 0
    assert t.discover([5, 6]) == 2
    assert t.discover([6, 7]) == 1


def test_the_third_consecutive_write_zaps_the_shadow() -> None:
    t = WriteTracer(3)
    t.discover([5])
    assert [t.write(5) for _ in range(4)] == [1, 1, 1, 0]
    assert 5 not in t.traced and t.zapped == 1


def test_a_write_elsewhere_restarts_the_count() -> None:
    t = WriteTracer(3)
    t.discover([5, 6])
    assert [t.write(5), t.write(5), t.write(6), t.write(5), t.write(5)] == [1, 1, 1, 1, 1]
    assert 5 in t.traced
    assert t.write(5) == 1 and 5 not in t.traced


def test_a_memset_faults_three_times_then_runs_free() -> None:
    t = WriteTracer(3)
    t.discover([9])
    assert t.write(9, 1024) == 3
    assert 9 not in t.traced


def test_without_the_heuristic_every_write_faults() -> None:
    t = WriteTracer(None)
    t.discover([5])
    assert sum(t.write(5) for _ in range(10)) == 10
    assert t.write(5, 1024) == 1024


def test_writes_equals_one_write_at_a_time() -> None:
    import random

    rng = random.Random(7)
    for thr in (3, 1, None):
        for _ in range(50):
            a, b = WriteTracer(thr), WriteTracer(thr)
            for t in (a, b):
                t.discover([1, 2, 3])
            for _ in range(5):
                pfns = [rng.choice([1, 2, 3, 4]) for _ in range(rng.randrange(30))]
                one = [i for i, p in enumerate(pfns) if a.write(p)]
                assert b.writes(pfns) == one
                assert (a.traced, a.zapped, a._last, a._run) == (
                    b.traced,
                    b.zapped,
                    b._last,
                    b._run,
                )
                extra = [rng.choice([1, 2, 3, 5]) for _ in range(2)]
                a.discover(extra)
                b.discover(extra)
