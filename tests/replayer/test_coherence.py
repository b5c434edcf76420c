"""The coherence check: classification, leeway, and incremental == full comparison."""

from __future__ import annotations

import numpy as np
import pytest

from replayer.mechanisms.coherence import ViewPair
from replayer.mechanisms.pagetables import PRESENT, GuestMMU, translations

PD, T1, T2 = 2, 7, 8


def _pair(demand: bool = False) -> ViewPair:
    g = GuestMMU(64)
    g.cr3 = PD << 12
    p = ViewPair(g, demand_fill=demand)
    p.set_cr3(PD << 12)
    for pfn, idx, v in ((PD, 1, (T1 << 12) | 0x7), (T1, 0, 0x10007), (T1, 1, 0x11007)):
        p.write_both(pfn, idx, v)
    return p


def test_kinds_are_counted_separately_with_the_lowest_page_as_example() -> None:
    p = _pair()
    p.guest_write(T1, 2, 0x12007)  # the backend never hears: missing
    p.guest_write(T1, 0, 0x20007)  # new frame, not told: the backend's is stale
    p.guest_write(T1, 1, 0x11005)  # read-only now, not told: wrong permissions
    p.guest_flushed(p.guest.flush_all(include_global=True))  # no leeway left
    got = {f.kind: (f.pages, f.vpn, f.expected, f.actual) for f in p.check().findings}
    assert got == {
        "missing": (1, (1 << 10) | 2, 0x12007, 0),
        "stale": (1, 1 << 10, 0x20007, 0x10007),
        "perm": (1, (1 << 10) | 1, 0x11005, 0x11007),
    }


def test_an_unflushed_change_is_not_yet_wrong() -> None:
    p = _pair()
    p.guest_write(T1, 1, 0x11005)  # P -> P without telling: a native TLB may hold it too
    # the change came from a present value, so before the flush the old one is allowed
    assert p.check().ok
    p.guest_flushed(p.guest.flush_all(include_global=False))
    assert [f.kind for f in p.check().findings] == ["perm"]


def test_a_demand_filled_view_only_errs_where_it_maps() -> None:
    p = _pair(demand=True)
    p.guest_write(T1, 2, 0x12007)  # new mapping: filled on first touch
    p.guest.flush_all(include_global=True)
    assert p.check().ok
    p.guest_write(T1, 0, 0)  # unmapped, not told, flushed: the shadow still maps it
    p.guest_flushed(p.guest.flush_all(include_global=True))
    assert [f.kind for f in p.check().findings] == ["stale"]


def test_updates_to_frames_the_backend_was_not_told_of_are_lost() -> None:
    p = _pair()
    p.registered = {PD}
    p.write_both(T2, 0, 0x30007)
    p.write_both(PD, 2, (T2 << 12) | 0x7)
    p.guest_flushed(p.guest.flush_all(True))
    assert [(f.kind, f.pages) for f in p.check().findings] == [("missing", 1)]
    p.learn_fill(T2, 0, 1024)  # alloc_pt: now it is a table to the backend
    p.learn_write(T2, 0, 0x30007)
    assert p.check().ok


def _reference(p: ViewPair) -> dict[str, int]:
    """Independent full comparison: every page, in plain Python terms."""
    g, v = p.guest, p.view
    out = {"missing": 0, "stale": 0, "perm": 0}
    pd = g.pd
    assert pd is not None
    for i in range(1024):
        gpde, vpde = g.frames.get(pd, i), v.get(pd, i)
        if not (gpde | vpde) & PRESENT:
            continue
        gt = translations(gpde, g.frames.page(gpde >> 12) if gpde & 1 else None)
        bt = translations(vpde, v.page(vpde >> 12) if vpde & 1 else None)
        olds = [gpde, *g.old_values(pd, i)]
        allowed = [gt]
        for o in olds:
            if o & PRESENT:
                tabs = [g.frames.page(o >> 12), *g.stale_tables(o >> 12)]
                allowed += [translations(o, t) for t in tabs]
        bb = np.where(bt & 1, bt, gt) if p.demand_fill else bt
        ok = np.zeros(1024, dtype=bool)
        for a in allowed:
            ok |= bb == a
        gp, bp = (gt & 1) == 1, (bb & 1) == 1
        out["missing"] += int((~ok & gp & ~bp).sum())
        out["stale"] += int((~ok & bp & (~gp | (((gt ^ bb) & 0xFFFFF000) != 0))).sum())
        out["perm"] += int((~ok & gp & bp & (((gt ^ bb) & 0xFFFFF000) == 0)).sum())
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("demand", [False, True])
def test_incremental_check_equals_full_comparison(seed: int, demand: bool) -> None:
    rng = np.random.default_rng(seed)
    g = GuestMMU(64)
    pds = [2, 3]
    tables = list(range(10, 18))
    g.cr3 = pds[0] << 12
    g.pge = seed % 2 == 0
    p = ViewPair(g, demand_fill=demand)
    p.set_cr3(g.cr3)
    checks = 0
    for step in range(300):
        op = rng.integers(0, 10)
        pfn = int(rng.choice(tables)) if op < 6 else int(rng.choice(pds))
        idx = int(rng.integers(0, 8)) if op < 6 else int(rng.integers(0, 6))
        if op < 6:
            val = (
                0
                if rng.random() < 0.2
                else (int(rng.integers(0x100, 0x140)) << 12) | int(rng.integers(0, 8))
            )
        elif rng.random() < 0.1:  # a 4 MiB page
            val = (int(rng.integers(0, 64)) << 22) | 0x80 | int(rng.integers(0, 8))
        else:
            t = int(rng.choice(tables))
            val = 0 if rng.random() < 0.2 else (t << 12) | int(rng.integers(0, 8))
        if rng.random() < 0.1:
            val |= 0x100  # global
        how = rng.random()
        if how < 0.6:
            p.write_both(pfn, idx, val)
        elif how < 0.85:
            p.guest_write(pfn, idx, val)  # the backend misses it
        else:
            p.learn_write(pfn, idx, val)  # the backend believes something the guest never did
        r = rng.random()
        if r < 0.05:
            g.cr3 = int(rng.choice(pds)) << 12
            p.set_cr3(g.cr3)
            p.guest_flushed(g.flush_all(False))
        elif r < 0.1:
            p.guest_flushed(
                g.flush_addr(int(rng.integers(0, 6)) << 22 | int(rng.integers(0, 8)) << 12)
            )
        elif r < 0.13 and demand:
            p.resync_space()
        elif r < 0.16:
            # an allocation's memset, often of a table already clear
            p.guest_fill(int(rng.choice(tables)), 0, 1024)
        if step % 7 == 0:
            inc, full = p.check(), p.check_full()
            assert inc.key() == full.key(), step
            d = p._dirs.get(g.cr3 >> 12)
            if d is not None:  # brought up to date from the entries changed since
                refs = p._references(g.cr3 >> 12, d)
                assert _as_sets(refs) == _references_afresh(p, g.cr3 >> 12), step
            ref = _reference(p)
            assert {f.kind: f.pages for f in full.findings} == {
                k: v for k, v in ref.items() if v
            }, step
            checks += 1
    assert checks > 40


def _as_sets(refs: dict[int, list[int]]) -> dict[int, set[int]]:
    assert all(len(set(v)) == len(v) for v in refs.values())  # no index twice
    return {t: set(v) for t, v in refs.items()}


def _references_afresh(p: ViewPair, pd: int) -> dict[int, set[int]]:
    """Table frame -> directory indices naming it on either side, from both copies."""
    out: dict[int, set[int]] = {}
    for frames in (p.guest.frames, p.view):
        for i in range(1024):
            pde = frames.get(pd, i)
            if pde & PRESENT and not pde & 0x80:
                out.setdefault(pde >> 12, set()).add(i)
    return out


def _state(p: ViewPair) -> tuple:
    return (
        p.guest.frames.np.tobytes(),
        p.view.np[: len(p.guest.frames.np)].tobytes(),
        {k: sorted(v) for k, v in p.diff.items()},
        p.guest.unflushed,
        sorted(p.ver),
        sorted(p.pver),
    )


@pytest.mark.parametrize(
    "method", ["guest_write", "guest_write_queued", "write_both", "learn_write"]
)
def test_a_run_of_writes_at_once_equals_one_at_a_time(method: str) -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        a, b = _pair(), _pair()
        told = rng.random() < 0.5
        for p in (a, b):
            p.registered = {PD, T1} if told else None
        for _ in range(4):
            n = int(rng.integers(1, 40))
            pfns = rng.choice([PD, T1, T2], size=n).tolist()
            idxs = rng.integers(0, 4, size=n).tolist()
            vals = [int(v) for v in rng.choice([0, 0x10007, 0x11005, 0x30007, T2 << 12 | 7], n)]
            for pfn, i, v in zip(pfns, idxs, vals, strict=True):
                getattr(a, method)(pfn, i, v)
            getattr(b, method + "_many")(
                [(pfn << 10) | i for pfn, i in zip(pfns, idxs, strict=True)], vals
            )
            assert _state(a) == _state(b)
            if rng.random() < 0.5:
                for p in (a, b):
                    p.guest_flushed(p.guest.flush_all(include_global=False))
            assert a.check().key() == b.check().key()


def _kinds_page_by_page(g: np.ndarray, b: np.ndarray, i: int) -> tuple:
    """What ``_compare`` reports, one page at a time in plain Python."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for j in range(1024):
        e, a = int(g[j]), int(b[j])
        if e == a:
            continue
        gp, bp = bool(e & PRESENT), bool(a & PRESENT)
        same = (e ^ a) >> 12 == 0
        kind = "missing" if gp and not bp else "stale" if bp and (not gp or not same) else "perm"
        counts[kind] = counts.get(kind, 0) + 1
        first.setdefault(kind, j)
    return tuple(
        (k, counts[k], (i << 10) | first[k], int(g[first[k]]), int(b[first[k]]))
        for k in ("missing", "stale", "perm")
        if k in counts
    )


@pytest.mark.parametrize("seed", range(4))
def test_compare_classifies_like_a_page_by_page_walk(seed: int) -> None:
    # one kind or several, few pages wrong or many, the pde's own meaning bits varied
    rng = np.random.default_rng(seed)
    for trial in range(150):
        p = _pair()
        gt, vt = p.guest.frames.page(T1), p.view.page(T2)
        gt[:] = rng.integers(0, 1 << 32, 1024, dtype=np.uint64).astype(np.uint32)
        vt[:] = gt
        for j in rng.integers(0, 1024, int(rng.integers(0, 60 if trial % 2 else 3))):
            vt[j] ^= np.uint32(int(rng.choice([1, 2, 4, 6, 1 << 12, 5 << 13, 1 << 31])))
        gpde = (T1 << 12) | int(rng.integers(0, 8)) | PRESENT
        vpde = (T2 << 12) | (gpde & 7 if trial % 3 else int(rng.integers(0, 8)))
        want = _kinds_page_by_page(translations(gpde, gt), translations(vpde, vt), 5)
        assert p._compare(5, gpde, vpde, ()) == want


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("demand", [False, True])
def test_compare_of_one_shared_table_or_an_unmapped_one_is_a_page_by_page_walk(
    seed: int, demand: bool
) -> None:
    # the quick paths: both sides' entry names one table (only entries in diff compared),
    # or the backend's maps nothing (every page the guest's maps is missing)
    rng = np.random.default_rng(100 + seed)
    for trial in range(120):
        p = _pair(demand)
        start = rng.integers(0, 1 << 32, 1024, dtype=np.uint64).astype(np.uint32)
        for pfn, idx, v in zip([T1] * 1024, range(1024), start.tolist(), strict=True):
            p.write_both(pfn, idx, v)
        n = int(rng.integers(0, 80 if trial % 2 else 4))
        for j in rng.integers(0, 1024, n).tolist():
            v = int(rng.integers(0, 1 << 32))
            (p.guest_write if rng.random() < 0.6 else p.learn_write)(T1, j, v)
        p.guest_flushed(p.guest.flush_all(True))  # no native-TLB leeway: a plain walk
        gpde = (T1 << 12) | int(rng.integers(0, 8)) | PRESENT
        vpde = gpde if trial % 3 else int(rng.integers(0, 1 << 31)) & ~PRESENT
        g = translations(gpde, p.guest.frames.page(T1))
        b = translations(vpde, p.view.page(T1))
        if demand:
            b = np.where(b & 1, b, g)
        assert p._compare(5, gpde, vpde, ()) == _kinds_page_by_page(g, b, 5), trial
