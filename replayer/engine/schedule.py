"""Where each MMU check of a run falls, and what it was made at.

Takes the trace, the events the sequential pass takes, the queue's plan and the events
after which a check is made; gives :class:`Schedule`: per check, in the order the
simulation makes them, the event it is reported at, the last event whose effect on the
tables it sees, and what it was made at (a CR3 load, a TLB flush, a checkpoint).

A check falls after its event, unless the backend's queue holds calls then; a check made
while calls are queued waits for the queue's next flush and sees the tables as they are
when it is applied (before the event that applies it, or after the last event).  Used by
the runs whose checks are worked out from a walk of the page-table events alone
(:mod:`replayer.engine.empty`, :mod:`replayer.engine.untold`).
"""

from __future__ import annotations

import numpy as np

from replayer.engine.common import FL_KERN, FL_ONE, FL_USER, WCR3, _hex
from replayer.engine.violations import ViolationBlock
from replayer.mechanisms.batch import QueuePlan
from replayer.trace import Trace, hooks_in

#: A check's place among the checks of one event: a flush of the queue (before the event's
#: handler), the event's own, a checkpoint after it, the queue's flush after the last event.
_AT_FLUSH, _OWN, _CHECKPOINT, _AT_END = 0, 1, 2, 3
#: A check's code when it alone waited for a flush of the queue: this plus the hook it was
#: made after (-1: a checkpoint).  Hooks number fewer.
_QUEUED_ONE = 1 << 12
#: What every check applied at a flush of the queue was made at, after what it was made at.
_AT_BATCH = " (applied at the batch flush)"


def _reason(h: int, a0: int) -> str:
    """What a check after hook ``h`` (first argument ``a0``) is made at."""
    if h == WCR3:
        return "CR3 load"
    if h == FL_ONE:
        return f"flush_tlb_single({a0:#x})"
    return "flush_tlb_kernel" if h == FL_KERN else "flush_tlb_user"


class Schedule:
    """Where each check is judged, in the order the simulation makes them (:func:`schedule`):
    ``seqs`` the event each is reported at, ``states`` the last event whose effect on the
    tables it sees, and :meth:`reason`, what it was made at (worked out only for the
    checks that find something: most find nothing)."""

    def __init__(
        self,
        seqs: np.ndarray,
        states: np.ndarray,
        code: np.ndarray,
        arg: np.ndarray,
        queued: tuple[list[int], list[int], np.ndarray],
    ) -> None:
        self.seqs: list[int] = seqs.tolist()
        self.states: list[int] = states.tolist()
        self._code, self._arg = code, arg
        """Per check: the hook it was made after (-1: a checkpoint; -2: checks applied at
        a flush of the queue, ``arg`` their group; :data:`_QUEUED_ONE` and up: the one
        check applied at a flush, as its hook or checkpoint) and its first argument (of
        a checkpoint, 0)."""
        self._queued = queued
        """The checks waiting for a flush: their hooks and arguments, in order, and where
        each flush's group of them starts."""
        self._said: dict[tuple[int, int], str] = {}
        """Reasons said so far, by (code, argument): most repeat."""
        self._one: dict[tuple[int, int], str] = {}
        """What one check waiting in the queue was made at, by (hook, argument)."""

    def __len__(self) -> int:
        return len(self.seqs)

    def reason(self, i: int) -> str:
        """What check ``i`` was made at."""
        return self._said_of(int(self._code[i]), int(self._arg[i]))

    def reasons(self, rows: list[int]) -> list[str]:
        """What each of checks ``rows`` was made at (one lookup per row, no numpy scalar)."""
        if not rows:
            return []
        keys, which = np.unique(self.reason_keys(rows), return_inverse=True)
        said = [self.said(k) for k in keys.tolist()]
        return [said[k] for k in which.tolist()]

    def reason_keys(self, rows: list[int] | np.ndarray) -> np.ndarray:
        """A key per check of ``rows`` for what it was made at (:meth:`said`): one per
        (code, argument), codes from -2, arguments below 2^33 (a uint32 argument, or a
        flush group's index)."""
        at = np.asarray(rows, dtype=np.int64)
        return (self._code[at] + 2) << 33 | self._arg[at]

    def said(self, key: int) -> str:
        """What the checks of :meth:`reason_keys` ``key`` were made at."""
        return self._said_of((key >> 33) - 2, key & ((1 << 33) - 1))

    def block(
        self,
        check: str,
        hit: np.ndarray,
        vpn: np.ndarray,
        exp: np.ndarray,
        act: np.ndarray,
        pages: np.ndarray,
    ) -> ViolationBlock:
        """The rows of ``check`` at checks ``hit`` (ascending), one each: the lowest page
        wrong (``vpn``), the guest's translation of it and the backend's, and how many
        pages at what.

        Most rows repeat a page, its translations and a detail: the strings are made once
        per (page, translations, pages, what the check was made at), and the rows (half a
        million on fork) are codes into them."""
        # numbered as distinct by a sort of the five columns (np.unique of the rows took a
        # second a run on fork)
        key = np.stack([vpn, exp, act, pages, self.reason_keys(hit)])
        o = np.lexsort(key[::-1])
        ordered = key[:, o]
        new = np.ones(len(hit), dtype=bool)
        new[1:] = (ordered[:, 1:] != ordered[:, :-1]).any(axis=0)
        code = np.empty(len(hit), dtype=np.int64)
        code[o] = np.cumsum(new) - 1
        s_vpn, s_exp, s_act, s_pages, s_why = (c.tolist() for c in ordered[:, new])
        why = [f"{n} page(s) wrong at {self.said(k)}" for n, k in zip(s_pages, s_why, strict=True)]
        return ViolationBlock.of(
            check,
            np.asarray(self.seqs, dtype=np.int64)[hit],
            field=(code, [f"va {v << 12:#010x}" for v in s_vpn]),
            expected=(code, [_hex(e) for e in s_exp]),
            actual=(code, [_hex(a) for a in s_act]),
            detail=(code, why),
        )

    def _said_of(self, code: int, arg: int) -> str:
        key = (code, arg)
        said = self._said.get(key)
        if said is None:
            said = self._said[key] = self._reason(code, arg)
        return said

    def _reason(self, code: int, arg: int) -> str:
        if code == -1:
            return "checkpoint"
        if code >= _QUEUED_ONE - 1:
            return self._made_at(code - _QUEUED_ONE, arg) + _AT_BATCH
        if code >= 0:
            return _reason(code, arg)
        hs, a0s, starts = self._queued
        lo, hi = int(starts[arg]), int(starts[arg + 1])
        made = [self._made_at(*key) for key in zip(hs[lo:hi], a0s[lo:hi], strict=True)]
        return ", ".join(dict.fromkeys(made)) + _AT_BATCH

    def _made_at(self, hook: int, a0: int) -> str:
        """What one check waiting in the queue was made at (hook -1: a checkpoint)."""
        key = (hook, a0)
        r = self._one.get(key)
        if r is None:
            r = self._one[key] = _reason(hook, a0) if hook >= 0 else "checkpoint"
        return r


def schedule(
    trace: Trace,
    in_loop: np.ndarray,
    ev: np.ndarray,
    qp: QueuePlan,
    checks: np.ndarray,
) -> Schedule:
    """Where each check is judged, in the order the simulation makes them: the event it
    is reported at, the last event whose effect on the tables it sees, and what it was
    made at.

    ``in_loop``: events the sequential pass takes; ``ev``, ``qp``: the queue's plan over
    the queued and draining events (:func:`replayer.mechanisms.batch.plan`); ``checks``:
    events after which a check is made (a hook's, a checkpoint's, or both).
    """
    n, h, a0 = trace.n, trace.hook, trace.arg0
    cps = trace.checkpoints
    own = in_loop[checks] & hooks_in(h[checks], (WCR3, FL_USER, FL_KERN, FL_ONE))
    is_cp = np.zeros(len(checks), dtype=bool)
    if cps:
        is_cp = np.isin(checks, np.fromiter(cps, dtype=np.int64, count=len(cps)))
    # what the queue holds after each check's event: the calls added since its last flush
    # (a flush at a queued call applies the queue before that call joins it)
    flushes = qp.flushes
    pushes = np.concatenate(([0], np.cumsum(qp.pushes, dtype=np.int64)))
    q = np.searchsorted(ev, checks, side="right") - 1
    fi = np.searchsorted(flushes, q, side="right") - 1
    start = np.zeros(len(checks), dtype=np.int64)
    start[fi >= 0] = flushes[fi[fi >= 0]]
    held = np.where(q >= 0, pushes[q + 1] - pushes[start], 0) > 0
    # a check made while calls are queued waits for the next flush (or the end's)
    nxt = fi + 1
    later = nxt < len(flushes)
    at_flush = np.full(len(checks), n, dtype=np.int64)
    at_flush[later] = ev[flushes[nxt[later]]]
    hook = h[checks].astype(np.int64)
    arg = a0[checks].astype(np.int64)
    # the checks made with nothing queued: the event's own, then a checkpoint's, each
    # after its event; those made with calls queued, by flush, in the order made
    now_o, now_c = own & ~held, is_cp & ~held
    w_o, w_c = np.flatnonzero(own & held), np.flatnonzero(is_cp & held)
    w = np.concatenate([w_o, w_c])
    w_hook = np.concatenate([hook[w_o], np.full(len(w_c), -1, dtype=np.int64)])
    o = np.lexsort((np.repeat([0, 1], [len(w_o), len(w_c)]), w))  # by check, own first
    w, w_hook, w_arg = w[o], w_hook[o], arg[w[o]]
    w_at = at_flush[w]  # ascending: the checks are
    starts = np.flatnonzero(np.diff(w_at, prepend=-1)) if len(w_at) else np.zeros(0, np.int64)
    d = w_at[starts]
    end = d >= n
    seq = np.concatenate([checks[now_o], checks[now_c], np.where(end, n - 1, d)])
    state = np.concatenate([checks[now_o], checks[now_c], np.where(end, n - 1, d - 1)])
    place = np.concatenate(
        [
            np.full(int(now_o.sum()), _OWN),
            np.full(int(now_c.sum()), _CHECKPOINT),
            np.where(end, _AT_END, _AT_FLUSH),
        ]
    )
    # a flush's checks by group, or (most groups) the one check's hook and argument: alike
    # for all such checks after the same hook, so made into words once for them all
    alone = np.diff(np.append(starts, len(w))) == 1
    first_h, first_a = w_hook[starts], np.where(w_hook[starts] >= 0, w_arg[starts], 0)
    code = np.concatenate(
        [
            hook[now_o],
            np.full(int(now_c.sum()), -1, dtype=np.int64),
            np.where(alone, _QUEUED_ONE + first_h, -2),
        ]
    )
    r_arg = np.concatenate(
        [
            arg[now_o],
            np.zeros(int(now_c.sum()), np.int64),
            np.where(alone, first_a, np.arange(len(d))),
        ]
    )
    o = np.lexsort((place, seq))
    queued = (w_hook.tolist(), w_arg.tolist(), np.append(starts, len(w)))
    return Schedule(seq[o], state[o], code[o], r_arg[o], queued)
