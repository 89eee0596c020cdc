"""One conformance suite every venue passes against the simulator.

Each test runs the real feed code against the simulated exchange over a
loopback WebSocket and a real shared-memory board.
"""
from __future__ import annotations

import asyncio

import pytest

from pipeline.board import RowStatus
from pipeline.feed.transport import TRANSPORTS, available
from pipeline.model import Liveness, Ping
from pipeline.venues import VENUES as ALL_VENUES
from pipeline.venues import load_protocol, load_venue, venues_with
from tests.conftest import run
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
# where every depth push is a full snapshot a lost frame loses nothing
DELTA_VENUES = list(venues_with(lambda v: v.depth_is_delta))
CHECKSUM_VENUES = list(venues_with(lambda v: v.checksum is not None))


def expected_top(harness: FeedHarness, instrument: str, depth: int = 5):
    symbol = harness.symbols[instrument]
    bids, asks = harness.server.last_books[symbol]
    decimals = harness.server.decimals()[symbol]            # the grid this venue quotes the instrument on

    def rounded(levels):
        return [(round(p, decimals), round(q, 6)) for p, q in levels[:depth]]
    return rounded(bids), rounded(asks)


async def settled_books_match(h: FeedHarness) -> None:
    """Freeze the market, then the board must show exactly the last rendered top 5."""
    h.server.faults.silent = True
    last: list = []

    def matches() -> bool:
        last.clear()
        for instrument in h.instruments:
            row = h.row(instrument)
            got = ([(round(p, 8), round(q, 6)) for p, q in row["bids"]],
                   [(round(p, 8), round(q, 6)) for p, q in row["asks"]])
            if got != expected_top(h, instrument):
                last.append((instrument, row["status"], got, expected_top(h, instrument)))
        return not last

    try:
        await h.until(matches, 5, f"{h.venue} rows to equal the last rendered books")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: (instrument, status, row, rendered): {last}") from None
    finally:
        h.server.faults.silent = False


@pytest.mark.parametrize("venue", VENUES)
def test_subscribe_acked_and_snapshot_then_deltas_give_the_right_top_n(venue, run_on):
    async def scenario():
        async with FeedHarness(venue) as h:
            assert h.feed.transport == run_on
            await h.all_rebuilt()
            assert any(h.server.received), "the feed subscribed"
            assert h.stat("parse_errors") == 0
            messages = h.stat("messages")
            await h.until(lambda: h.stat("messages") >= messages + 30, 10, "many deltas on top of the snapshot")
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
            await h.all_rebuilt()
            await settled_books_match(h)
    run(scenario())


@pytest.mark.parametrize("venue", CHECKSUM_VENUES)
def test_checksum_mismatch_is_detected(venue):
    async def scenario():
        async with FeedHarness(venue) as h:
            await h.all_live()
            instrument = h.instruments[0]
            h.server.faults.corrupt_checksum_next.add(h.symbols[instrument])
            await h.until(lambda: h.stat("checksum_failures") >= 1, 10, "checksum failure")
            await h.all_rebuilt()
            assert h.row(instrument)["checksum_failures"] >= 1
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
            await h.all_rebuilt()
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
    record = load_venue(venue)

    def text(frame) -> str:
        return frame.decode() if isinstance(frame, bytes) else frame

    async def scenario():
        async with FeedHarness(venue, keepalive_s=0.2) as h:
            h.server.keepalive_s = 0.2                      # the server's own keepalive (pings, heartbeats) every 0.2 s
            await h.all_live()
            sent = []                                       # what the server's keepalive timer sent the feed
            for protocol in h.server.connections.values():
                def recorded(now_ms, own=protocol.keepalive):
                    frames = own(now_ms)
                    sent.extend(frames)
                    return frames
                protocol.keepalive = recorded
            start = len(h.server.received)
            # WebSocket control-frame pings (Binance's only keepalive): the feed must answer each in time
            for websocket in list(h.server.connections):
                pong = await websocket.ping()
                await asyncio.wait_for(pong, 1.0)
            server_keepalive = bool(load_protocol(venue).KEEPALIVE_INTERVAL_S)
            failed: list = []

            def kept_alive() -> bool:
                """Each keepalive duty of this venue seen done at least three times (the last answer seen)."""
                failed.clear()
                frames = [text(f) for _, f in h.server.received[start:]]
                if record.keepalive_interval_s:             # the client's own keepalive, every keepalive_s
                    if sum(f == text(record.build_keepalive()) for f in frames) < 3:
                        failed.append(("client keepalives", frames[:5]))
                events = [e for frame in sent for e in record.parse(frame, 0)]
                pings = [e.token for e in events if isinstance(e, Ping)]
                if record.keepalive_interval_s or not server_keepalive:
                    pass                                    # the client keeps the connection alive (or pongs do)
                elif pings:                                 # the server pings (HTX): each answered with its pong
                    if sum(text(record.build_pong(token)) in frames for token in pings) < 3:
                        failed.append(("pongs", pings, frames[:5]))
                elif not any(isinstance(e, Liveness) for e in events):
                    # no keepalive of its own and a server that sends heartbeats: the feed subscribed to them
                    # (Coinbase); before the first one, and for a server that pings, the check waits
                    failed.append(("heartbeats or pings", sent[:5]))
                return not failed

            try:                                            # every 0.2 s: three of each within a few seconds
                await h.until(kept_alive, 5, f"{venue} keepalives")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {failed}") from None
            assert h.status(h.instruments[0]) == RowStatus.LIVE
            assert h.stat("reconnects") == 0
    run(scenario())
