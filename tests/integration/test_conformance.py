"""One conformance suite every venue passes against the simulator.

Each test runs the real feed code against the simulated exchange over a
loopback WebSocket and a real shared-memory board.
"""
from __future__ import annotations

import asyncio

import pytest

from pipeline.board import RowStatus
from pipeline.sim.market import price_decimals
from pipeline.venues import VENUES as ALL_VENUES, load_venue, venues_with
from pipeline.feed.transport import TRANSPORTS, available
from tests.integration import harness
from tests.integration.harness import FeedHarness

pytestmark = pytest.mark.integration


@pytest.fixture(params=TRANSPORTS, autouse=True)
def run_on(request, monkeypatch):
    """Every conformance test runs over each WebSocket transport: the rows must be the same."""
    transport = request.param
    if not available(transport):
        pytest.skip(f"{transport} is not installed (pip install -e '.[fast]')")
    monkeypatch.setattr(harness, "DEFAULT_TRANSPORT", transport)
    return transport


VENUES = list(ALL_VENUES)
# venues whose depth channel is a stream of deltas with a continuity check (a lost frame is a gap);
# binance depth5 and htx mbp.refresh.5 are full snapshots every push: a lost frame loses nothing
DELTA_VENUES = list(venues_with(lambda v: v.depth_is_delta))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def expected_top(harness: FeedHarness, instrument: str, depth: int = 5):
    symbol = harness.symbols[instrument]
    bids, asks = harness.server.last_books[symbol]
    decimals = price_decimals(harness.market.mid[instrument])
    rnd = lambda levels: [(round(p, decimals), round(q, 6)) for p, q in levels[:depth]]
    return rnd(bids), rnd(asks)


async def settled_books_match(h: FeedHarness) -> None:
    """Freeze the market, then the board must show exactly the last rendered top 5."""
    h.server.faults.silent = True

    def matches() -> bool:
        for instrument in h.instruments:
            row = h.row(instrument)
            bids, asks = expected_top(h, instrument)
            if [(round(p, 8), round(q, 6)) for p, q in row["bids"]] != bids:
                return False
            if [(round(p, 8), round(q, 6)) for p, q in row["asks"]] != asks:
                return False
        return True

    await asyncio.sleep(0.05)
    try:
        await h.until(matches, 5, f"{h.venue} rows to equal the last rendered books")
    finally:
        h.server.faults.silent = False


@pytest.mark.parametrize("venue", VENUES)
def test_subscribe_acked_and_snapshot_then_deltas_give_the_right_top_n(venue, run_on):
    async def scenario():
        async with FeedHarness(venue) as h:
            assert h.feed.transport == run_on
            await h.all_live()
            assert any(h.server.received), "the feed subscribed"
            assert h.stat("parse_errors") == 0
            await asyncio.sleep(0.3)                     # many deltas on top of the snapshot
            await settled_books_match(h)
            assert h.stat("gaps") == 0 and h.stat("resyncs") == 0
    run(scenario())


@pytest.mark.parametrize("venue", DELTA_VENUES)
def test_gap_is_detected_and_the_book_rebuilt(venue):
    async def scenario():
        async with FeedHarness(venue) as h:
            await h.all_live()
            symbol = h.symbols[h.instruments[0]]
            before = h.stat("gaps") + h.stat("checksum_failures")
            h.server.faults.drop_next_depth.add(symbol)
            await h.until(lambda: h.stat("gaps") + h.stat("checksum_failures") > before, 10, "gap detection")
            await h.all_live()
            await settled_books_match(h)
    run(scenario())


def test_kraken_checksum_mismatch_is_detected():
    async def scenario():
        async with FeedHarness("kraken") as h:
            await h.all_live()
            symbol = h.symbols["BTC/USD"]
            h.server.faults.corrupt_checksum_next.add(symbol)
            await h.until(lambda: h.stat("checksum_failures") >= 1, 10, "checksum failure")
            await h.all_live()
            assert h.row("BTC/USD")["checksum_failures"] >= 1
            await settled_books_match(h)
    run(scenario())


@pytest.mark.parametrize("venue", VENUES)
def test_reconnect_resubscribes(venue):
    async def scenario():
        async with FeedHarness(venue) as h:
            await h.all_live()
            opened = h.server.connections_opened
            await h.server.drop_connections("abort")
            await h.until(lambda: h.server.connections_opened > opened, 10, "a new connection")
            await h.all_live()
            assert h.stat("reconnects") >= 1
            await settled_books_match(h)
    run(scenario())


@pytest.mark.parametrize("venue", VENUES)
def test_silence_is_flagged_stale(venue):
    async def scenario():
        async with FeedHarness(venue, staleness_ms=300) as h:
            await h.all_live()
            h.server.faults.silent = True
            await h.until(lambda: all(h.status(i) == RowStatus.STALE for i in h.instruments), 5, "stale rows")
            h.server.faults.silent = False
            await h.all_live()
    run(scenario())


@pytest.mark.parametrize("venue", VENUES)
def test_keepalive_is_sent_on_time(venue):
    module = load_venue(venue)

    async def scenario():
        async with FeedHarness(venue, keepalive_s=0.2) as h:
            h.server.keepalive_s = 0.2                      # server-driven keepalives (HTX pings) every 0.2 s
            await h.all_live()
            start = len(h.server.received)
            if venue == "binance":
                # Binance pings with WebSocket control frames; the feed must answer each in time
                for websocket in list(h.server.connections):
                    pong = await websocket.ping()
                    await asyncio.wait_for(pong, 1.0)
            await asyncio.sleep(1.1)
            frames = [f for _, f in h.server.received[start:]]
            if module.keepalive_interval_s:
                assert sum(_is_keepalive(venue, f) for f in frames) >= 3, frames[:5]
            elif venue == "htx":
                pongs = [f for f in frames if b'"pong"' in (f.encode() if isinstance(f, str) else f)]
                assert len(pongs) >= 3, frames[:5]
            elif venue == "coinbase":
                assert any(b"heartbeats" in (f.encode() if isinstance(f, str) else f) for _, f in h.server.received)
            assert h.status(h.instruments[0]) == RowStatus.LIVE
            assert h.stat("reconnects") == 0
    run(scenario())


def _is_keepalive(venue: str, frame) -> bool:
    text = frame.decode() if isinstance(frame, bytes) else frame
    return {"bybit": '"op":"ping"' in text, "okx": text == "ping",
            "kraken": '"method":"ping"' in text}.get(venue, False)
