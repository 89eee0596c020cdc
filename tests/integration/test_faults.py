"""Exchange-side faults, produced on demand by the simulator: the feed keeps running,
counts and skips what it cannot use, and never leaves an untrustworthy row LIVE."""
from __future__ import annotations

import math
import time

import pytest

from pipeline.board import RowStatus, SkipReason
from tests.conftest import run
from tests.integration.harness import FeedHarness

pytestmark = pytest.mark.integration


def skipped(h: FeedHarness, reason: SkipReason) -> int:
    return h.feed.stats.skipped(reason)


@pytest.mark.parametrize("mode", ["close", "abort"])
def test_dropped_connection_marks_rows_disconnected_then_recovers(mode):
    async def scenario():
        async with FeedHarness("bybit") as h:
            await h.all_live()
            h.server.faults.refuse_until = time.monotonic() + 60      # and stay down until let back in
            tried = len(h.server.handshakes)
            await h.server.drop_connections(mode)
            await h.until(lambda: all(h.status(i) == RowStatus.DISCONNECTED for i in h.instruments), 5,
                          "rows disconnected")
            await h.until(lambda: len(h.server.handshakes) >= tried + 2, 5, "two refused reconnects")
            assert all(h.status(i) == RowStatus.DISCONNECTED for i in h.instruments), "refused: still down"
            h.server.faults.refuse_until = 0.0
            await h.all_live(10)
            assert h.stat("reconnects") >= 1
    run(scenario())


def test_handshake_that_hangs_times_out_and_retries():
    async def scenario():
        async with FeedHarness("binance", open_timeout_s=0.3) as h:
            await h.all_live()
            h.server.faults.hang_handshake = True
            tried = len(h.server.handshakes)
            await h.server.drop_connections("abort")
            await h.until(lambda: h.status("BTC/USDT") == RowStatus.DISCONNECTED, 5, "disconnected")
            # a second handshake: the first timed out (0.3 s) and was retried
            await h.until(lambda: len(h.server.handshakes) >= tried + 2, 10, "a timed-out attempt retried")
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
            marks = {i: h.writes(i) for i in h.instruments}
            h.server.faults.inject_next.append(frame)
            await h.until(lambda: skipped(h, reason) > before, 5, f"{reason.name} counted")
            assert h.stat("parse_errors") >= 1
            messages = h.stat("messages")
            await h.until(lambda: h.stat("messages") > messages + 10, 5, "the frames after the garbage")
            for instrument in h.instruments:                            # skipped: the rows never left LIVE
                assert set(h.statuses(instrument, marks[instrument])) == {RowStatus.LIVE}, instrument
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
            mark, resyncs = h.writes("BTC/USDT"), h.stat("resyncs")
            h.server.faults.bad_book_next[symbol] = ([(bad, 1.0)] + bids[1:], asks)
            before = skipped(h, SkipReason.BAD_NUMBER)
            await h.until(lambda: skipped(h, SkipReason.BAD_NUMBER) > before, 5, "bad number counted")
            await h.all_live()
            # invalidated: the row left LIVE (the book discarded) and came back only from a rebuilt book
            written = h.statuses("BTC/USDT", mark)
            assert RowStatus.RESYNCING in written and written[-1] == RowStatus.LIVE, written
            assert h.stat("resyncs") > resyncs
            assert all(math.isfinite(p) and p > 0 for p, _ in h.row("BTC/USDT")["bids"])
    run(scenario())


def test_crossed_book_is_flagged_not_live():
    async def scenario():
        async with FeedHarness("binance") as h:
            await h.all_live()
            symbol = h.symbols["BTC/USDT"]
            bids, asks = h.server.last_books[symbol]
            crossed_bids = [(asks[0][0] + 10, 1.0)] + bids[1:]
            h.server.faults.silent_symbols.add(h.symbols["ETH/USDT"])
            mark = h.writes("BTC/USDT")
            for _ in range(3):
                h.server.faults.bad_book_next[symbol] = (crossed_bids, asks)
                await h.until(lambda: symbol not in h.server.faults.bad_book_next, 5, "the crossed book sent")
            await h.until(lambda: skipped(h, SkipReason.CROSSED_BOOK) >= 1, 5, "crossed book counted")
            await h.until(lambda: RowStatus.CROSSED in h.statuses("BTC/USDT", mark), 5, "the row flagged crossed")
            h.server.faults.silent_symbols.clear()
            await h.all_live()
    run(scenario())


def test_duplicated_update_is_ignored():
    async def scenario():
        async with FeedHarness("bybit") as h:
            await h.all_live()
            symbol = h.symbols["BTC/USDT"]
            mark = h.writes("BTC/USDT")
            h.server.faults.duplicate_next_depth.add(symbol)
            await h.until(lambda: symbol not in h.server.faults.duplicate_next_depth, 5, "the update sent twice")
            messages = h.stat("messages")
            await h.until(lambda: h.stat("messages") > messages + 20, 5, "the frames after the duplicate")
            assert h.stat("gaps") == 0 and h.stat("resyncs") == 0
            assert set(h.statuses("BTC/USDT", mark)) == {RowStatus.LIVE}
    run(scenario())


def test_burst_keeps_only_the_latest_state():
    async def scenario():
        async with FeedHarness("bybit") as h:
            await h.all_live()
            messages = h.stat("messages")
            h.server.faults.burst = 2000
            await h.until(lambda: h.stat("messages") > messages + 4000, 20, "the burst to be consumed")
            h.server.faults.silent = True
            symbol = h.symbols["BTC/USDT"]
            bids, asks = h.server.last_books[symbol]

            def latest():
                row = h.row("BTC/USDT")
                return row["bids"][0][0] == pytest.approx(bids[0][0]) and row["asks"][0][0] == pytest.approx(asks[0][0])
            await h.until(latest, 5, "the row to show the last book sent")
            assert h.stat("gaps") == 0
    run(scenario())
