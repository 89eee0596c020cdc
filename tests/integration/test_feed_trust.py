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
from tests.integration.harness import FeedHarness

pytestmark = pytest.mark.integration


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


async def watch_states(h: FeedHarness, seen: set, stop: asyncio.Event):
    while not stop.is_set():
        for instrument in h.instruments:
            seen.add(h.status(instrument))
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("venue", venues_with(lambda v: "planned_disconnects" in v.quirks))
def test_announced_disconnect_hands_over_without_the_rows_going_disconnected(venue):
    async def scenario():
        async with FeedHarness(venue) as h:
            await h.all_live()
            opened = h.server.connections_opened
            notified = list(h.server.connections)
            seen: set = set()
            stop = asyncio.Event()
            watcher = asyncio.ensure_future(watch_states(h, seen, stop))
            assert await h.server.announce_shutdown() >= 1
            # the replacement opens while the old connection still works
            await h.until(lambda: h.server.connections_opened > opened, 10, "a replacement connection")
            await h.until(lambda: not any(ws in h.server.connections for ws in notified), 10,
                          "the old connection closed by the feed after the handover")
            await asyncio.sleep(0.2)
            await h.all_live()
            stop.set()
            await watcher
            assert RowStatus.DISCONNECTED not in seen and RowStatus.SYNCING not in seen, seen
            assert h.stat("reconnects") == 0                       # a handover is not a reconnect
    run(scenario())


def test_kraken_maintenance_holds_the_rows_halted_then_releases_them():
    async def scenario():
        async with FeedHarness("kraken") as h:
            await h.all_live()
            quote = h.row(h.instruments[0])["bids"]
            await h.server.announce_status("maintenance")
            await h.until(lambda: all(h.status(i) == RowStatus.HALTED for i in h.instruments), 5, "halted rows")
            assert h.row(h.instruments[0])["bids"]                 # the quote is kept, only untradable
            await h.server.announce_status("online")
            await h.all_live(5)
            assert quote
    run(scenario())


def test_a_gap_storm_does_not_become_a_subscribe_storm():
    async def scenario():
        async with FeedHarness("bybit", instruments=["BTC/USDT"]) as h:
            await h.all_live()
            symbol = h.symbols["BTC/USDT"]
            for _ in range(6):                                     # six gaps in quick succession
                h.server.faults.drop_next_depth.add(symbol)
                await asyncio.sleep(0.1)
            await h.until(lambda: h.stat("resyncs") >= 4, 10, "the gaps to be seen")
            await asyncio.sleep(0.5)
            assert h.stat("resyncs_deferred") >= 1                 # the fourth within a minute waits
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
            seen: set = set()
            stop = asyncio.Event()
            watcher = asyncio.ensure_future(watch_states(h, seen, stop))
            await h.until(lambda: h.server.connections_opened > opened, 10, "the replacement connection")
            await h.until(lambda: len(h.server.connections) == 1 and h.feed.open_conns, 10, "one connection left")
            h.feed.lifetime_s = None
            await h.all_live()
            stop.set()
            await watcher
            assert RowStatus.DISCONNECTED not in seen, seen
    run(scenario())


def test_kraken_reconnects_no_faster_than_every_5_s_after_maintenance():
    async def scenario():
        async with FeedHarness("kraken") as h:
            await h.all_live()
            await h.server.announce_status("maintenance")
            await h.until(lambda: all(h.status(i) == RowStatus.HALTED for i in h.instruments), 5, "halted rows")
            opened = h.server.connections_opened
            loop = asyncio.get_running_loop()
            dropped = loop.time()
            await h.server.drop_connections("abort")
            await h.until(lambda: h.server.connections_opened > opened, 15, "the reconnect")
            assert loop.time() - dropped >= 4.9          # the documented pause; the backoff alone is 0.05-0.5 s
    run(scenario())
