"""The one backoff: how long to wait before attempt n+1 after n failures.

Used by every retry in the pipeline: a feed's reconnects, the bridge's NATS
connection, the HTTP sink's retries and the supervisor's restarts of a child
that died. Exponential with jitter and a cap: the ceiling of delay ``n``
(counted from 0) is ``min(cap_s, base_s * 2**n)`` and the delay is drawn
uniformly from the upper ``jitter`` share of it, ``[ceiling * (1 - jitter),
ceiling]`` (``jitter=0.5``, the default: between half and all of it; 1.0: from
0). Many clients failing together therefore do not retry together, and none
waits longer than ``cap_s``.

Pure: no clock and no sleeping. The caller reports how long the last attempt
stayed healthy (:meth:`Backoff.connected_for`, seconds it measured); one that
stayed up ``reset_after_s`` or longer starts the sequence again from ``base_s``.
The random source can be passed in (a seeded ``random.Random``) for tests.
"""
from __future__ import annotations

import random

MAX_EXPONENT = 60           # 2**60 * any positive base is past every cap: keeps the float finite


class Backoff:
    """Exponential backoff with jitter, a cap, and a reset after a healthy period."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 10.0, reset_after_s: float = 30.0,
                 rng: random.Random | None = None, jitter: float = 0.5):
        if base_s < 0 or cap_s < 0:
            raise ValueError(f"backoff base_s and cap_s must be >= 0, got {base_s!r} and {cap_s!r}")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"backoff jitter must be within [0, 1], got {jitter!r}")
        self.base_s = float(base_s)
        self.cap_s = float(cap_s)
        self.reset_after_s = float(reset_after_s)
        self.jitter = float(jitter)
        self.attempt = 0                 # failures since the last reset: the exponent of the next delay
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        """The largest delay number ``attempt`` (from 0) can be: ``min(cap_s, base_s * 2**attempt)``."""
        return min(self.cap_s, self.base_s * (2 ** min(max(attempt, 0), MAX_EXPONENT)))

    def delay(self, attempt: int) -> float:
        """Delay number ``attempt`` (from 0), drawn afresh; does not advance the sequence."""
        ceiling = self.ceiling(attempt)
        return self._rng.uniform(ceiling * (1.0 - self.jitter), ceiling)

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        delay = self.delay(self.attempt)
        self.attempt += 1
        return delay

    def connected_for(self, seconds: float) -> None:
        """Report how long the last attempt stayed healthy; ``reset_after_s`` or more resets the backoff."""
        if seconds >= self.reset_after_s:
            self.reset()

    def reset(self) -> None:
        self.attempt = 0
