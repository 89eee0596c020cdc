"""Reconnect policy: a pure classifier plus a backoff generator.

A parse error is not a network error: it is counted and skipped and never
causes a reconnect. Network errors, closed connections, handshake failures
and timeouts reconnect with exponential backoff, full jitter and a cap; the
backoff resets once a connection has stayed healthy for ``reset_after_s``.
"""
from __future__ import annotations

import random

from pipeline.errors import FeedError, ParseError


def should_reconnect(exc: BaseException) -> bool:
    """True for failures of the connection; False for bugs and bad frames."""
    if isinstance(exc, ParseError):
        return False
    if isinstance(exc, (OSError, TimeoutError, FeedError, EOFError)):
        return True
    module = type(exc).__module__ or ""
    return module.startswith("websockets") or module.startswith("picows")


class Backoff:
    """Exponential backoff with full jitter: delay n is uniform in [base*2^n/2, base*2^n], capped."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 10.0, reset_after_s: float = 30.0,
                 rng: random.Random | None = None):
        self.base_s = base_s
        self.cap_s = cap_s
        self.reset_after_s = reset_after_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** self.attempt))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def connected_for(self, seconds: float) -> None:
        """Report how long the last connection stayed up; a healthy one resets the backoff."""
        if seconds >= self.reset_after_s:
            self.attempt = 0
