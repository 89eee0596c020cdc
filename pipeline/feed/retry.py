"""Reconnect policy: a pure classifier, the backoff (:mod:`pipeline.backoff`) and the venue's connection-rate limits.

A parse error is not a network error: it is counted and skipped and never
causes a reconnect. Network errors, closed connections, handshake failures
and timeouts reconnect with the pipeline's one :class:`~pipeline.backoff.Backoff`
(exponential, jittered, capped; reset once a connection has stayed healthy for
``reset_after_s``), re-exported here for the feed.
"""
from __future__ import annotations

import collections

from pipeline.backoff import Backoff
from pipeline.errors import FeedError, ParseError

__all__ = ["CONNECTION_LIMIT_WINDOWS", "Backoff", "ConnectionRateLimit", "should_reconnect"]


def should_reconnect(exc: BaseException) -> bool:
    """True for failures of the connection; False for bugs and bad frames."""
    if isinstance(exc, ParseError):
        return False
    if isinstance(exc, (OSError, TimeoutError, FeedError, EOFError)):
        return True
    module = type(exc).__module__ or ""
    return module.startswith("websockets") or module.startswith("picows")


# the venues' documented connection limits (``Venue.limits``), as (attempts, window in seconds)
CONNECTION_LIMIT_WINDOWS = {"connections_per_s": 1.0, "connections_per_5_min": 300.0,
                            "connection_attempts_per_10_min": 600.0}


class ConnectionRateLimit:
    """Never more connection attempts than the venue allows, whatever asks for them.

    Backoff spaces the reconnects of one connection; this bounds all of a venue's attempts together
    (reconnects, replacements for a planned disconnect, redundant connections), so a broken or hostile
    server that drops us, or keeps announcing disconnects, cannot make us hammer it. ``windows`` are
    (attempts, seconds) pairs; :meth:`wait_s` is how long until one more attempt keeps to all of them.
    The venue counts attempts as they reach it, we note them as we start them, and the handshakes
    between take as long as the network and the server make them: each window is kept ``MARGIN`` wider
    (a tenth), so two attempts a window apart here never look closer there. Pure: the caller passes the
    time (monotonic seconds).
    """

    MARGIN = 0.1

    def __init__(self, windows):
        self.windows = tuple((int(n), float(span)) for n, span in windows if n and n > 0)
        most = max((n for n, _ in self.windows), default=0)
        self.attempts: collections.deque = collections.deque(maxlen=most or 1)

    @classmethod
    def of(cls, venue) -> ConnectionRateLimit:
        """The limits a venue record (``Venue``) documents."""
        return cls([(venue.limit(name), span) for name, span in CONNECTION_LIMIT_WINDOWS.items()
                    if venue.limit(name)])

    def wait_s(self, now: float) -> float:
        wait = 0.0
        attempts = self.attempts
        for n, span in self.windows:
            if len(attempts) >= n:
                oldest = attempts[-n]            # the n-th latest attempt must have left the window
                wait = max(wait, oldest + span * (1.0 + self.MARGIN) - now)
        return wait

    def note(self, now: float) -> None:
        self.attempts.append(now)
