"""A server that keeps refusing or dropping us is never hammered: every venue's documented connection limit
holds for all of a feed's attempts together (reconnects, replacements), not only the backoff of one."""
from __future__ import annotations

import asyncio
import time

import pytest

from pipeline.feed.retry import ConnectionRateLimit
from pipeline.venues import load_venue
from tests.integration.harness import FeedHarness


def test_the_limit_waits_until_the_oldest_attempt_in_each_window_has_left_it():
    limit = ConnectionRateLimit([(3, 1.0), (5, 10.0)])
    for t in (0.0, 0.1, 0.2):
        assert limit.wait_s(t) == 0.0
        limit.note(t)
    assert limit.wait_s(0.3) == pytest.approx(0.8)         # 3 in the last second: wait for 0.0 to leave it (+ margin)
    limit.note(1.1)
    limit.note(1.2)
    assert limit.wait_s(1.3) == pytest.approx(9.7)         # 5 in ten seconds: wait for 0.0 + 10 (+ 1 margin)
    assert limit.wait_s(11.0) == 0.0


def test_each_venue_takes_its_documented_limits():
    assert ConnectionRateLimit.of(load_venue("okx")).windows == ((3, 1.0),)
    assert ConnectionRateLimit.of(load_venue("coinbase")).windows == ((8, 1.0),)
    assert ConnectionRateLimit.of(load_venue("binance")).windows == ((300, 300.0),)
    assert ConnectionRateLimit.of(load_venue("bybit")).windows == ((500, 300.0),)
    assert ConnectionRateLimit.of(load_venue("kraken")).windows == ((150, 600.0),)


@pytest.mark.integration
def test_an_okx_feed_refused_again_and_again_keeps_to_three_connections_a_second():
    async def scenario():
        async with FeedHarness("okx") as h:                 # backoff 0.05 s doubling to 0.5 s: ~6 tries a second
            await h.all_live()
            h.server.faults.refuse_until = time.monotonic() + 60
            start = time.monotonic()
            await h.server.drop_connections("abort")

            def tries():
                return [t for t in h.server.handshakes if t >= start]
            # seven tries: more than twice the limit, which the backoff alone would make in about a second
            await h.until(lambda: len(tries()) >= 7, 10, "seven refused tries")
            worst = max(sum(1 for u in tries() if t <= u < t + 1.0) for t in tries())
            assert worst <= 3, [round(t - start, 3) for t in tries()]
            h.server.faults.refuse_until = 0.0
            await h.all_live(10)
            # every refused attempt is counted as what it is (it never opened, so it is no reconnect)
            assert h.stat("connect_failures") >= len(tries()) - 1
    asyncio.run(asyncio.wait_for(scenario(), 60))
