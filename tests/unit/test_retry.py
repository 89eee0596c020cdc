"""Reconnect policy: classifier and backoff."""
from __future__ import annotations

import random

from websockets.exceptions import ConnectionClosedError

from pipeline.errors import FeedError, ParseError
from pipeline.feed.retry import Backoff, should_reconnect


def test_parse_errors_never_cause_a_reconnect():
    assert not should_reconnect(ParseError("invalid_json"))
    assert not should_reconnect(ValueError("bug"))
    assert should_reconnect(ConnectionRefusedError())
    assert should_reconnect(TimeoutError())
    assert should_reconnect(FeedError("stale"))
    assert should_reconnect(ConnectionClosedError(None, None))


def test_backoff_grows_with_jitter_is_capped_and_resets_after_a_healthy_period():
    backoff = Backoff(base_s=0.1, cap_s=2.0, reset_after_s=30.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    for n, delay in enumerate(delays):
        ceiling = min(2.0, 0.1 * 2 ** n)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 2.0
    backoff.connected_for(5.0)
    assert backoff.next_delay() >= 1.0          # a short-lived connection does not reset
    backoff.connected_for(31.0)
    assert backoff.next_delay() <= 0.1
