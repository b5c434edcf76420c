"""The decoded trace's helpers."""

from __future__ import annotations

import numpy as np

from pvscope.hooks import HOOKS
from replayer.trace import hooks_in


def test_hooks_in_answers_as_isin_does() -> None:
    """The lookup's answer is ``np.isin``'s, for every hook id and for events that are
    no hook call (-1), on the whole column, on part of it and on another dtype."""
    rng = np.random.default_rng(3)
    hook = rng.integers(-1, len(HOOKS), 50_000).astype(np.int16)
    for ids in ([], [0], [h.id for h in HOOKS[::3]], [len(HOOKS) - 1, 2, 2]):
        want = np.isin(hook, ids)
        assert (hooks_in(hook, ids) == want).all()
        assert (hooks_in(hook[::7], ids) == want[::7]).all()
        assert (hooks_in(hook.astype(np.int64), ids) == want).all()
    assert not hooks_in(hook, [0])[hook == -1].any()
