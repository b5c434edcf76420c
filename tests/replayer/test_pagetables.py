"""Guest page tables rebuilt from hooks: addressing, walks, and the native-TLB leeway."""

from __future__ import annotations

import numpy as np

from pvscope.digest import mapping_digest, walk_page_directory
from replayer.mechanisms.pagetables import (
    GLOBAL,
    Frames,
    GuestMMU,
    cloned,
    present_mappings,
    translations,
)


def test_entry_pointers_are_physical_before_paging_and_linear_after() -> None:
    g = GuestMMU(64)
    assert g.locate(0x00203008) == (0x203, 2)
    g.paging = True
    assert g.locate(0xC0203008) == (0x203, 2)


def test_translation_is_as_permissive_as_both_levels() -> None:
    t = np.zeros(1024, dtype=np.uint32)
    t[0] = 0x5000 | 0x7  # user, writable
    t[1] = 0x6000 | 0x2  # not present
    t[2] = 0x7000 | 0x1 | 0x40  # present, read-only, dirty (dropped)
    out = translations(0x1000 | 0x3, t)  # directory: kernel-only, writable
    assert out[0] == 0x5000 | 0x3
    assert out[1] == 0
    assert out[2] == 0x7000 | 0x1
    assert not translations(0x1000, t).any()  # directory entry not present
    big = translations(0x00C00000 | 0x80 | 0x5, None)  # PSE 4 MiB page at 12 MiB
    assert big[0] == 0x00C00000 | 0x5 and big[1023] == 0x00FFF000 | 0x5


def test_walk_agrees_with_the_shared_digest_walk() -> None:
    rng = np.random.default_rng(7)
    f = Frames(256)
    pd = 10
    for i in rng.choice(1024, 20, replace=False).tolist():
        if i % 5 == 0:
            f.page(pd)[i] = ((i % 64) << 22) | 0x80 | int(rng.integers(0, 8)) | 1
            continue
        t = 20 + i % 200
        f.page(pd)[i] = (t << 12) | int(rng.integers(0, 8))
        f.page(t)[:] = rng.integers(0, 1 << 32, 1024, dtype=np.uint64).astype(np.uint32)

    def table(pfn: int) -> bytes:
        return f.page(pfn).tobytes()

    ref = walk_page_directory(table(pd), table)
    mine = present_mappings(f, pd)
    assert mapping_digest(mine) == mapping_digest(ref)
    assert len(mine) == len(ref)


def test_only_present_values_become_unflushed() -> None:
    g = GuestMMU(64)
    g.write(3, 0, 0x5001)  # not present -> present: a TLB never held the old one
    assert g.old_values(3, 0) == ()
    g.write(3, 0, 0x6001)  # present -> present: the old may be cached
    g.write(3, 0, 0x5001)  # back: the 0x6001 may be cached too
    assert set(g.old_values(3, 0)) == {0x5001, 0x6001}
    g.flush_all(include_global=False)
    assert g.old_values(3, 0) == ()


def test_global_entries_survive_a_user_flush_only_with_pge() -> None:
    g = GuestMMU(64)
    g.write(3, 0, 0x5001 | GLOBAL)
    g.write(3, 0, 0)
    g.flush_all(include_global=False)
    assert g.old_values(3, 0) == ()  # without CR4.PGE nothing is global
    g.pge = True
    g.write(3, 0, 0x5001 | GLOBAL)
    g.write(3, 0, 0)
    g.flush_all(include_global=False)
    assert g.old_values(3, 0) == (0x5001 | GLOBAL,)
    g.flush_all(include_global=True)
    assert g.old_values(3, 0) == ()


def test_invlpg_flushes_the_walk_to_one_address() -> None:
    g = GuestMMU(64)
    g.cr3 = 2 << 12
    g.write(2, 1, (7 << 12) | 1)  # va 0x00400000 -> table 7
    g.write(7, 5, 0x9001)
    g.write(7, 5, 0xA001)
    g.write(7, 6, 0x9001)
    g.write(7, 6, 0)
    g.flush_addr(0x00405000)
    assert g.old_values(7, 5) == ()
    assert g.old_values(7, 6) == (0x9001,)


def test_invlpg_flushes_the_address_under_the_tables_its_directory_entry_named_before() -> None:
    """A native TLB may hold an address's translation from a table its directory entry
    named before it was changed; ``invlpg`` of the address drops that too (and the entry's
    older value), and nothing else."""
    g = GuestMMU(64)
    g.cr3 = 2 << 12
    g.write(2, 1, (7 << 12) | 1)  # va 0x00400000 -> table 7
    g.write(7, 5, 0x9001)
    g.write(7, 5, 0xA001)  # 7[5]'s older value: 0x9001
    g.write(7, 4, 0x9001)
    g.write(7, 4, 0xB001)
    g.write(2, 1, (8 << 12) | 1)  # now table 8: 7 is named by the older value only
    g.write(8, 5, 0x9001)
    g.write(8, 5, 0xC001)
    g.flush_addr(0x00405000)
    assert g.old_values(2, 1) == ()
    assert g.old_values(7, 5) == () and g.old_values(8, 5) == ()
    assert g.old_values(7, 4) == (0x9001,)


def test_a_user_flush_keeps_what_it_kept_before() -> None:
    # frames left with global values only are skipped by later user flushes; new values
    # written there must still be dropped by the next one
    from replayer.mechanisms.pagetables import GLOBAL

    g = GuestMMU(16)
    g.pge = True
    g.write(3, 0, 0x1000 | GLOBAL | 1)
    g.write(3, 0, 0x2000 | GLOBAL | 1)  # the global one is unflushed
    g.flush_all(include_global=False)
    assert g.unflushed == {3: {0: (0x1000 | GLOBAL | 1,)}}
    g.write(3, 1, 0x3001)
    g.write(3, 1, 0x4001)  # a non-global one on the same frame
    g.write_many([(3 << 10) | 2, (3 << 10) | 2], [0x5001, 0x6001])
    g.flush_all(include_global=False)
    assert g.unflushed == {3: {0: (0x1000 | GLOBAL | 1,)}}
    g.flush_all(include_global=True)
    assert g.unflushed == {}


def test_zeroing_a_clear_frame_says_it_changed_nothing() -> None:
    g = GuestMMU(16)
    assert g.fill(3, 0, 1024, None) is False
    g.write(3, 5, 0x7001)
    assert g.fill(3, 0, 1024, None) is True
    assert g.old_values(3, 5) == (0x7001,)
    assert g.fill(3, 0, 1024, None) is False
    assert g.fill(4, 0, 2, np.array([0x1001, 0], dtype=np.uint32)) is True


def test_a_user_flush_drops_a_frame_of_non_global_values_whole_and_keeps_global_ones() -> None:
    from replayer.mechanisms.pagetables import GLOBAL

    g = GuestMMU(16)
    g.pge = True
    g.write(3, 0, 0x1001)
    g.write(3, 0, 0x2001)  # non-global
    g.write(4, 0, 0x1001 | GLOBAL)
    g.write(4, 0, 0x2001)  # global
    g.write(4, 1, 0x3001)
    g.write(4, 1, 0)  # non-global, beside it
    assert sorted(g.flush_all(include_global=False)) == [3, 4]
    assert g.unflushed == {4: {0: (0x1001 | GLOBAL,)}}
    g.flush_all(include_global=True)
    # a frame that held a global value before the full flush holds none now
    g.write(4, 2, 0x5001)
    g.write(4, 2, 0x6001)
    g.flush_all(include_global=False)
    assert g.unflushed == {}


def test_a_clone_zeroes_the_rest_of_the_frame_and_leaves_an_entry_given_back_unchanged() -> None:
    """``alloc_pd_clone`` as one fill: the entries outside the range copied are zeroed
    (their present values left for the native TLB), an entry copied in with the value it
    held is no change, and a frame may be its own source."""
    g = GuestMMU(16)
    g.write(2, 768, 0x5063)  # the source: a kernel entry
    g.write(2, 1, 0x9067)  # and a user one, not copied
    g.write(3, 0, 0x7067)  # the frame cloned into: a stale user entry
    g.write(3, 768, 0x5063)  # and the kernel entry it already holds
    vals = cloned(g.frames, 2, 768, 256)
    assert vals[768] == 0x5063 and vals[1] == 0 and np.count_nonzero(vals) == 1
    assert g.fill(3, 0, 1024, vals) is True
    assert g.frames.get(3, 0) == 0 and g.frames.get(3, 768) == 0x5063
    assert g.old_values(3, 0) == (0x7067,)
    assert g.old_values(3, 768) == ()
    own = cloned(g.frames, 2, 0, 4)  # its own source, taken before it is written
    assert g.fill(2, 0, 1024, own) is True
    assert g.frames.get(2, 1) == 0x9067 and g.frames.get(2, 768) == 0
    assert g.old_values(2, 768) == (0x5063,)


def test_a_clone_is_one_fill() -> None:
    """``alloc_pd_clone`` as the walks apply it, one fill of what :func:`cloned` says:
    the frame as cloned, with the values it zeroed left for the native TLB."""
    g = GuestMMU(16)
    g.write(2, 768, 0x5063)
    g.write(3, 0, 0x7067)
    assert g.fill(3, 0, 1024, cloned(g.frames, 2, 768, 256)) is True
    assert g.frames.page(3)[768] == 0x5063 and g.frames.page(3)[:768].sum() == 0
    assert g.frames.get(3, 0) == 0 and g.old_values(3, 0) == (0x7067,)


def test_a_fill_leaves_the_older_values_its_entries_stored_one_at_a_time_would() -> None:
    """A fill over a frame whose stores left older values keeps those first and the
    values it overwrote after, as the same values stored one at a time do, before and
    after a user flush (zeroing, cloning, a fill of part of a frame, and a second fill
    over the first)."""
    rng = np.random.default_rng(11)
    for case in range(40):
        fill, stores = GuestMMU(16), GuestMMU(16)
        fill.pge = stores.pge = bool(case & 1)
        # the same stores before on both: older values in a dictionary
        e = ((3 << 10) + rng.integers(0, 64, 48)).tolist()
        v = (rng.integers(1, 9, 48) << 12) | 1 | np.where(rng.random(48) < 0.3, GLOBAL, 0)
        for g in (fill, stores):
            g.write_many(e, v.tolist())
        for k in range(2):
            lo, hi = (0, 1024) if k == 0 or case % 3 else (8, 40)
            if (case + k) % 2:
                want = np.zeros(hi - lo, dtype=np.uint32)
            else:  # a clone's values: some entries given back as they are, some not
                want = cloned(fill.frames, 3, 0, 64)[lo:hi]
                want ^= np.where(rng.random(hi - lo) < 0.5, 0x1000, 0).astype(np.uint32)
            fill.fill(3, lo, hi, None if (case + k) % 2 else want)
            stores.write_many(list(range((3 << 10) + lo, (3 << 10) + hi)), want.tolist())
            olds = [fill.old_values(3, i) for i in range(1024)]
            assert olds == [stores.old_values(3, i) for i in range(1024)], case
            assert any(len(o) > 1 for o in olds), case  # a dictionary's entry met a fill
        assert sorted(fill.flush_all(False)) == sorted(stores.flush_all(False))
        assert dict(fill.unflushed.get(3, {})) == dict(stores.unflushed.get(3, {})), case
