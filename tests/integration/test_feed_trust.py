"""The feed process's reactions to what the exchanges announce, against the simulator over real sockets.

The parser side of each quirk is tested in ``test_quirks.py``; here the whole feed (session and I/O shell)
must act on it: an announced disconnect is make-before-break (the rows never go disconnected), a venue in
maintenance holds its rows halted and releases them, a gap storm does not become a subscribe storm.
"""
from __future__ import annotations

import asyncio

import pytest

from pipeline.board import RowStatus
from pipeline.venues import venues_with
from tests.conftest import run
from tests.integration.harness import FeedHarness

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("venue", venues_with(lambda v: "planned_disconnects" in v.quirks))
def test_announced_disconnect_hands_over_without_the_rows_going_disconnected(venue):
    async def scenario():
        async with FeedHarness(venue) as h:
            await h.all_live()
            opened = h.server.connections_opened
            notified = list(h.server.connections)
            marks = {i: h.writes(i) for i in h.instruments}
            assert await h.server.announce_shutdown() >= 1
            # the replacement opens while the old connection still works
            await h.until(lambda: h.server.connections_opened > opened, 10, "a replacement connection")
            await h.until(lambda: not any(ws in h.server.connections for ws in notified), 10,
                          "the old connection closed by the feed after the handover")
            # rows written by the new connection since the old one closed: the handover is complete
            after = {i: h.writes(i) for i in h.instruments}
            await h.until(lambda: all(h.writes(i) > after[i] + 2 for i in h.instruments), 10,
                          "updates from the replacement connection")
            await h.all_live()
            seen = {s for i in h.instruments for s in h.statuses(i, marks[i])}
            assert RowStatus.DISCONNECTED not in seen and RowStatus.SYNCING not in seen, seen
            assert h.stat("reconnects") == 0                       # a handover is not a reconnect
    run(scenario())


def test_kraken_maintenance_holds_the_rows_halted_then_releases_them():
    async def scenario():
        async with FeedHarness("kraken") as h:
            await h.all_live()
            await h.server.announce_status("maintenance")
            await h.until(lambda: all(h.status(i) == RowStatus.HALTED for i in h.instruments), 5, "halted rows")
            marks = {i: h.writes(i) for i in h.instruments}
            # held: while the market moves on, every write keeps the rows halted, each with a quote (kept, only
            # untradable)
            await h.until(lambda: all(h.writes(i) > marks[i] + 3 for i in h.instruments), 5, "updates while halted")
            for instrument in h.instruments:
                assert set(h.statuses(instrument, marks[instrument])) == {RowStatus.HALTED}, instrument
                row = h.row(instrument)
                assert row["status"] == RowStatus.HALTED and row["bids"] and row["asks"], row
            await h.server.announce_status("online")
            await h.all_live(5)                                    # and released
    run(scenario())


def test_a_gap_storm_does_not_become_a_subscribe_storm():
    async def scenario():
        async with FeedHarness("bybit", instruments=["BTC/USDT"]) as h:
            await h.all_live()
            symbol = h.symbols["BTC/USDT"]
            for _ in range(6):                                     # up to six gaps in quick succession
                if h.stat("resyncs_deferred"):
                    break                                          # resyncing, deferred: no gap seen until then
                gaps = h.stat("gaps")
                h.server.faults.drop_next_depth.add(symbol)
                await h.until(lambda: h.stat("gaps") > gaps, 5, "the gap seen")
                await h.until(lambda: h.status("BTC/USDT") == RowStatus.LIVE or h.stat("resyncs_deferred"), 5,
                              "the book rebuilt, or its resync deferred")
            assert h.stat("resyncs") == 4 and h.stat("resyncs_deferred") == 1  # the fourth within a minute waits
            [conn] = h.feed.open_conns
            assert symbol in conn.deferred                         # and goes when the oldest leaves the window
    run(scenario())


def test_okx_login_then_tick_by_tick_refused_falls_back_to_books_and_goes_live():
    async def scenario():
        async with FeedHarness("okx") as h:
            # the harness's feed has no credentials; give it some (the simulator accepts any login)
            h.feed.credentials = {"key": "k", "secret": "s", "passphrase": "p"}
            h.feed.session.depth_channel = "books50-l2-tbt"
            await h.server.drop_connections("close")             # reconnect with login and the tbt channel
            await h.until(lambda: h.feed.session.depth_channel is None, 10, "the fallback to books")
            await h.all_live(10)
            [conn] = h.feed.open_conns
            assert conn.logged_in is True                          # logged in, then refused the channel
    run(scenario())


def test_a_connection_near_its_lifetime_is_replaced_make_before_break():
    async def scenario():
        async with FeedHarness("binance") as h:
            await h.all_live()
            # Binance allows 24 h; the feed replaces a connection 10 min before. Here: a lifetime that is due now.
            from pipeline.feed.process import LIFETIME_MARGIN_S
            h.feed.lifetime_s = LIFETIME_MARGIN_S + 0.3
            opened = h.server.connections_opened
            marks = {i: h.writes(i) for i in h.instruments}
            await h.until(lambda: h.server.connections_opened > opened, 10, "the replacement connection")
            await h.until(lambda: len(h.server.connections) == 1 and h.feed.open_conns, 10, "one connection left")
            h.feed.lifetime_s = None
            await h.all_live()
            seen = {s for i in h.instruments for s in h.statuses(i, marks[i])}
            assert RowStatus.DISCONNECTED not in seen, seen
    run(scenario())


def test_kraken_reconnects_no_faster_than_every_5_s_after_maintenance():
    from pipeline.venues import load_venue
    assert load_venue("kraken").limit("reconnect_after_status_s") == 5           # the documented pause

    async def scenario():
        async with FeedHarness("kraken") as h:
            assert h.feed.status_pause_s == 5
            h.feed.status_pause_s = 1.5                  # the same rule, a shorter pause: the test waits less
            await h.all_live()
            await h.server.announce_status("maintenance")
            await h.until(lambda: all(h.status(i) == RowStatus.HALTED for i in h.instruments), 5, "halted rows")
            opened = h.server.connections_opened
            loop = asyncio.get_running_loop()
            dropped = loop.time()
            await h.server.drop_connections("abort")
            await h.until(lambda: h.server.connections_opened > opened, 15, "the reconnect")
            assert loop.time() - dropped >= 1.45         # the pause; the backoff alone is 0.05-0.5 s
    run(scenario())
