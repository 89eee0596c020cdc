"""Exchange-side faults, produced on demand by the simulator: the feed keeps running,
counts and skips what it cannot use, and never leaves an untrustworthy row LIVE."""
from __future__ import annotations

import asyncio
import math
import time

import pytest

from pipeline.board import RowStatus, SkipReason
from tests.integration.harness import FeedHarness

pytestmark = pytest.mark.integration


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def skipped(h: FeedHarness, reason: SkipReason) -> int:
    return h.feed.stats.skipped(reason)


@pytest.mark.parametrize("mode", ["close", "abort"])
def test_dropped_connection_marks_rows_disconnected_then_recovers(mode):
    async def scenario():
        async with FeedHarness("bybit") as h:
            await h.all_live()
            h.server.faults.refuse_until = time.monotonic() + 0.6     # and stay down for a while
            await h.server.drop_connections(mode)
            await h.until(lambda: all(h.status(i) == RowStatus.DISCONNECTED for i in h.instruments), 5,
                          "rows disconnected")
            await asyncio.sleep(0.3)
            assert all(h.status(i) == RowStatus.DISCONNECTED for i in h.instruments), "refused: still down"
            await h.all_live(10)
            assert h.stat("reconnects") >= 1
    run(scenario())


def test_handshake_that_hangs_times_out_and_retries():
    async def scenario():
        async with FeedHarness("binance", open_timeout_s=0.3) as h:
            await h.all_live()
            h.server.faults.hang_handshake = True
            await h.server.drop_connections("abort")
            await h.until(lambda: h.status("BTC/USDT") == RowStatus.DISCONNECTED, 5, "disconnected")
            await asyncio.sleep(1.0)                                   # several timed-out attempts
            assert h.status("BTC/USDT") == RowStatus.DISCONNECTED
            h.server.faults.hang_handshake = False
            await h.all_live(10)
    run(scenario())


def test_one_quiet_instrument_goes_stale_while_the_others_flow():
    async def scenario():
        async with FeedHarness("bybit", staleness_ms=300) as h:
            await h.all_live()
            h.server.faults.silent_symbols.add(h.symbols["ETH/USDT"])
            await h.until(lambda: h.status("ETH/USDT") == RowStatus.STALE, 5, "ETH stale")
            assert h.status("BTC/USDT") == RowStatus.LIVE
            h.server.faults.silent_symbols.clear()
            await h.all_live()
    run(scenario())


@pytest.mark.parametrize("frame, reason", [
    ('{"topic":"orderbook.1.BTCUSDT","ts":1,"ty', SkipReason.INVALID_JSON),           # truncated
    ("not json at all", SkipReason.INVALID_JSON),
    (b"\x00\x01binary where text is expected", SkipReason.INVALID_JSON),
    ('{"topic":"kline.1.BTCUSDT","data":[]}', SkipReason.UNKNOWN_MESSAGE),
    ('{"hello":"world"}', SkipReason.UNKNOWN_MESSAGE),
    ('{"topic":"orderbook.1.BTCUSDT","ts":1,"type":"snapshot","data":{"s":"BTCUSDT","b":[["x","1"]],"a":[],"u":5}}',
     SkipReason.UNKNOWN_MESSAGE),
])
def test_garbage_frames_are_counted_and_skipped(frame, reason):
    async def scenario():
        async with FeedHarness("bybit") as h:
            await h.all_live()
            before = skipped(h, reason)
            h.server.faults.inject_next.append(frame)
            await h.until(lambda: skipped(h, reason) > before, 5, f"{reason.name} counted")
            assert h.stat("parse_errors") >= 1
            await asyncio.sleep(0.1)
            assert all(h.status(i) == RowStatus.LIVE for i in h.instruments)
            assert h.stat("reconnects") == 0
    run(scenario())


def test_a_frame_far_larger_than_any_real_one_is_not_fatal():
    async def scenario():
        async with FeedHarness("binance") as h:
            await h.all_live()
            h.server.faults.inject_next.append('{"stream":"x@trade","data":"' + "A" * 8_000_000 + '"}')
            await h.until(lambda: h.stat("parse_errors") >= 1, 10, "the huge frame skipped")
            await h.all_live()
    run(scenario())


def test_error_reply_to_a_subscription_marks_only_that_instrument():
    async def scenario():
        async with FeedHarness("bybit", instruments=["BTC/USDT", "ZZZ/USDT"]) as h:
            del h.server.instrument_of[h.symbols["ZZZ/USDT"]]        # the exchange does not list ZZZ
            await h.until(lambda: h.status("BTC/USDT") == RowStatus.LIVE, 10, "BTC live")
            assert h.status("ZZZ/USDT") != RowStatus.LIVE
    run(scenario())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -5.0, 0.0])
def test_bad_numbers_invalidate_the_book_until_rebuilt(bad):
    async def scenario():
        async with FeedHarness("bybit") as h:
            await h.all_live()
            symbol = h.symbols["BTC/USDT"]
            bids, asks = h.server.last_books[symbol]
            h.server.faults.bad_book_next[symbol] = ([(bad, 1.0)] + bids[1:], asks)
            before = skipped(h, SkipReason.BAD_NUMBER)
            await h.until(lambda: skipped(h, SkipReason.BAD_NUMBER) > before, 5, "bad number counted")
            await h.all_live()
    run(scenario())


def test_crossed_book_is_flagged_not_live():
    async def scenario():
        async with FeedHarness("binance") as h:
            await h.all_live()
            symbol = h.symbols["BTC/USDT"]
            bids, asks = h.server.last_books[symbol]
            crossed_bids = [(asks[0][0] + 10, 1.0)] + bids[1:]
            h.server.faults.silent_symbols.add(h.symbols["ETH/USDT"])
            for _ in range(3):
                h.server.faults.bad_book_next[symbol] = (crossed_bids, asks)
                await asyncio.sleep(0.02)
            await h.until(lambda: skipped(h, SkipReason.CROSSED_BOOK) >= 1, 5, "crossed book counted")
            h.server.faults.silent_symbols.clear()
            await h.all_live()
    run(scenario())


def test_duplicated_update_is_ignored():
    async def scenario():
        async with FeedHarness("bybit") as h:
            await h.all_live()
            h.server.faults.duplicate_next_depth.add(h.symbols["BTC/USDT"])
            await asyncio.sleep(0.3)
            assert h.stat("gaps") == 0 and h.stat("resyncs") == 0
            assert h.status("BTC/USDT") == RowStatus.LIVE
    run(scenario())


def test_burst_keeps_only_the_latest_state():
    async def scenario():
        async with FeedHarness("bybit") as h:
            await h.all_live()
            messages = h.stat("messages")
            h.server.faults.burst = 2000
            await h.until(lambda: h.stat("messages") > messages + 4000, 20, "the burst to be consumed")
            h.server.faults.silent = True
            await asyncio.sleep(0.2)
            symbol = h.symbols["BTC/USDT"]
            bids, asks = h.server.last_books[symbol]
            row = h.row("BTC/USDT")
            assert row["bids"][0][0] == pytest.approx(bids[0][0]) and row["asks"][0][0] == pytest.approx(asks[0][0])
            assert h.stat("gaps") == 0
    run(scenario())
