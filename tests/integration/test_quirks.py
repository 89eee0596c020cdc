"""The parser side against the simulator with each real-venue quirk switched on.

A small client here does what a feed session does with the venue module and
the book -- subscribe, parse every frame, hand book updates, instrument specs
and trading statuses to the symbol's :class:`InstrumentBook`, resubscribe
when an outcome asks for it -- over a real loopback WebSocket, and records
every event and outcome. The tests check what the parser side delivers (the
events, the outcomes, the book state); what the session does with them
(halted rows, make-before-break) is tested with the session.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from websockets.asyncio.client import connect

from pipeline.board.layout import RowStatus
from pipeline.book import InstrumentBook, Outcome
from pipeline.model import (BBO, DEPTH, BookUpdate, ChannelNotPermitted, InstrumentSpec, Liveness, LoginResult,
                            Notice, Ping, SequenceMark, TradingStatus)
from pipeline.sim.market import Market, price_decimals
from pipeline.sim.server import Simulator
from pipeline.venues import load_venue, venues_with

pytestmark = pytest.mark.integration

INSTRUMENTS = {"coinbase": ["BTC/USD", "ETH/USD"], "kraken": ["BTC/USD", "ETH/USD"]}
RESYNC = (Outcome.GAP, Outcome.CHECKSUM, Outcome.BAD_NUMBER, Outcome.RESUBSCRIBE)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def until(predicate, timeout: float = 10.0, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


class Venue:
    """One simulated exchange and one client connection driving the parser and the books."""

    def __init__(self, name: str, quiet_market: bool = False, depth_channel: str | None = None):
        self.name = name
        self.venue = load_venue(name)
        self.instruments = INSTRUMENTS.get(name, ["BTC/USDT", "ETH/USDT"])
        self.symbols = {i: self.venue.native_symbol(i) for i in self.instruments}
        still = {"volatility_bps": 0.0, "noise_bps": 0.0} if quiet_market else {}
        self.market = Market([name], self.instruments, seed=3, depth=10, random_dislocations=False, **still)
        self.sim = Simulator({name: self.symbols}, self.market, 10)
        self.books = {s: InstrumentBook(s, 5, self.venue.book_levels, self.venue.checksum,
                                        self.venue.checksum_levels or 10, aligned=self.venue.aligned_snapshots)
                      for s in self.symbols.values()}
        self.depth_channel = depth_channel
        self.events: list = []                 # every non-book event, in order
        self.outcomes: list = []               # (symbol, channel, outcome) for every book update
        self.frames: list = []                 # raw frames received
        self.late_depth = 0                    # depth updates older (by the exchange's id) than the top of book
        self.stop = asyncio.Event()

    async def __aenter__(self) -> "Venue":
        urls = await self.sim.start()
        self.server = self.sim.exchanges[self.name]
        self.sim_task = asyncio.ensure_future(self.sim.run(self.stop))
        self.ws = await connect(urls[self.name], max_size=2 ** 24, compression=None)
        symbols = list(self.symbols.values())
        frames = (self.venue.build_subscribe(symbols, 5, channel=self.depth_channel) if self.depth_channel
                  else self.venue.build_subscribe(symbols, 5))
        for frame in frames:
            await self.ws.send(frame)
        self.reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        self.reader.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()
        for task in (self.sim_task, self.reader):
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(task, 5)
        await self.sim.close()

    async def _read(self) -> None:
        async for raw in self.ws:
            self.frames.append(raw)
            for reply in self.receive(raw):
                await self.ws.send(reply)

    def receive(self, raw) -> list:
        replies = []
        for event in self.venue.parse(raw, time.time_ns()):
            if isinstance(event, BookUpdate):
                book = self.books[event.symbol]
                if (event.channel == DEPTH and event.xseq is not None and book.bbo.xseq is not None
                        and event.xseq < book.bbo.xseq):
                    self.late_depth += 1
                outcome = book.apply(event)
                self.outcomes.append((event.symbol, event.channel, outcome))
                if outcome in RESYNC:
                    replies += self.venue.build_resubscribe(event.symbol, 5)
            elif isinstance(event, InstrumentSpec):
                self.events.append(event)
                book = self.books.get(event.symbol)
                if book is not None and book.apply(event) is Outcome.RESUBSCRIBE:
                    replies += self.venue.build_resubscribe(event.symbol, 5)
            elif isinstance(event, TradingStatus):
                self.events.append(event)
                for symbol, book in self.books.items():
                    if event.symbol in (None, symbol):
                        book.apply(event)
            elif isinstance(event, Ping):
                replies.append(self.venue.build_pong(event.token))
            else:
                self.events.append(event)
        return replies

    # ------------------------------------------------------------ checks
    def state(self, instrument: str) -> RowStatus:
        return self.books[self.symbols[instrument]].state

    async def all_live(self, timeout: float = 10.0) -> None:
        await until(lambda: all(self.state(i) == RowStatus.LIVE for i in self.instruments), timeout,
                    f"{self.name} books live")

    def expected_top(self, instrument: str):
        bids, asks = self.server.last_books[self.symbols[instrument]]
        decimals = price_decimals(self.market.mid[instrument])
        return ((round(bids[0][0], decimals), round(bids[0][1], 6)),
                (round(asks[0][0], decimals), round(asks[0][1], 6)))

    def top(self, instrument: str):
        bids, asks = self.books[self.symbols[instrument]].compose()
        return ((round(bids[0][0], 8), round(bids[0][1], 6)), (round(asks[0][0], 8), round(asks[0][1], 6)))

    async def settled_tops_match(self) -> None:
        """Freeze the market: every book's composed top must be the last top the exchange rendered."""
        self.server.faults.silent = True
        await asyncio.sleep(0.05)
        try:
            await until(lambda: all(self.top(i) == self.expected_top(i) for i in self.instruments), 5,
                        f"{self.name} tops to equal the last rendered tops")
        finally:
            self.server.faults.silent = False

    def count(self, kind) -> int:
        return sum(isinstance(e, kind) for e in self.events)

    def bad_outcomes(self) -> list:
        return [o for o in self.outcomes if o[2] in RESYNC]


# ---------------------------------------------------------------- W1: late depth vs fast top of book
@pytest.mark.parametrize("name", venues_with(lambda v: "late_depth" in v.quirks))
def test_late_depth_never_brings_back_an_older_top(name):
    assert load_venue(name).cross_channel_seq

    async def scenario():
        async with Venue(name) as v:
            v.server.quirks.late_depth = True
            await v.all_live()
            await asyncio.sleep(0.4)                    # every depth message one step behind the top of book
            await v.settled_tops_match()
            assert not v.bad_outcomes()
            assert v.late_depth > 0                     # depth messages did arrive behind a newer top of book
    run(scenario())


# ---------------------------------------------------------------- T3: sequence resets re-arm both channels
@pytest.mark.parametrize("name", venues_with(lambda v: "sequence_resets" in v.quirks))
def test_sequence_reset_keeps_the_top_of_book_channel_flowing(name):
    async def scenario():
        async with Venue(name) as v:
            await v.all_live()
            symbol = v.symbols[v.instruments[0]]
            book = v.books[symbol]
            v.server.faults.reset_sequence_next.add(symbol)
            await until(lambda: book.sequence_resets >= 1, 10, "the reset to reach the book")
            after = len(v.outcomes)
            await until(lambda: sum(1 for s, c, o in v.outcomes[after:] if s == symbol and c == BBO
                                    and o is Outcome.CHANGED) >= 5, 10, "top-of-book updates after the reset")
            assert book.bbo.last_seq is not None and book.bbo.last_seq < 1_000_000   # the new, small ids
            assert not v.bad_outcomes() and book.stuck_channels == 0
            await v.settled_tops_match()
    run(scenario())


# ---------------------------------------------------------------- T1: shortest-form and exponent numbers
def test_kraken_shortest_and_exponent_numbers_checksum_at_the_pair_precision():
    async def scenario():
        async with Venue("kraken") as v:
            v.server.quirks.shortest_numbers = True
            await v.all_live()
            specs = [e for e in v.events if isinstance(e, InstrumentSpec)]
            assert {(s.symbol, s.qty_precision, s.status) for s in specs} == {
                ("BTC/USD", 8, "online"), ("ETH/USD", 8, "online")}
            await until(lambda: any(b"e-0" in (f.encode() if isinstance(f, str) else f) for f in v.frames), 5,
                        "a quantity in exponent form")
            await asyncio.sleep(0.3)
            assert all(b.checksum_failures == 0 for b in v.books.values())
            assert not v.bad_outcomes()
            await v.settled_tops_match()
    run(scenario())


# ---------------------------------------------------------------- W3: Kraken status and pair status
def test_kraken_venue_status_halts_every_book_until_online():
    async def scenario():
        async with Venue("kraken") as v:
            await v.all_live()
            assert v.events[0] == TradingStatus(None, True, "online")       # sent on connect
            for system in ("maintenance", "cancel_only"):
                await v.server.announce_status(system)
                await until(lambda: TradingStatus(None, False, system) in v.events, 5, system)
                await until(lambda: all(v.state(i) == RowStatus.HALTED for i in v.instruments), 5, "halted")
                assert all(b.halted == f"venue {system}" for b in v.books.values())
            await v.server.announce_status("online")
            await v.all_live()
    run(scenario())


def test_kraken_pair_status_and_precision_change():
    async def scenario():
        async with Venue("kraken") as v:
            await v.all_live()
            halted, other = v.instruments
            await v.server.announce_pair(v.symbols[halted], "cancel_only")
            await until(lambda: v.state(halted) == RowStatus.HALTED, 5, "the pair halted")
            assert v.state(other) == RowStatus.LIVE
            await v.server.announce_pair(v.symbols[halted], "online")
            await v.all_live()
            book = v.books[v.symbols[other]]
            dp = book.precision[0]
            await v.server.announce_pair(v.symbols[other], "online", price_precision=dp + 1)
            await until(lambda: book.precision == (dp + 1, 8), 5, "the new precision")
            await v.all_live()                           # resubscribed, rebuilt, checksums at the new precision
            assert book.checksum_failures == 0
            await v.settled_tops_match()
    run(scenario())


# ---------------------------------------------------------------- C1: planned disconnects
@pytest.mark.parametrize("name", venues_with(lambda v: "planned_disconnects" in v.quirks))
def test_announced_shutdown_is_a_planned_notice(name):
    async def scenario():
        async with Venue(name) as v:
            await v.all_live()
            assert await v.server.announce_shutdown() == 1
            await until(lambda: any(isinstance(e, Notice) for e in v.events), 5, "the notice")
            [notice] = [e for e in v.events if isinstance(e, Notice)]
            assert notice.reconnect and notice.planned
            await v.all_live()                           # the notice alone changes no book
    run(scenario())


# ---------------------------------------------------------------- W2 / T5: Coinbase connection sequence gap
def test_coinbase_dropped_message_shows_as_a_connection_sequence_jump():
    async def scenario():
        async with Venue("coinbase") as v:
            await v.all_live()
            v.server.faults.drop_next_depth.add(v.symbols[v.instruments[0]])

            def jumped() -> bool:
                marks = [e.seq for e in v.events if isinstance(e, SequenceMark)]
                return any(b != a + 1 for a, b in zip(marks, marks[1:]))

            await until(jumped, 5, "a sequence_num jump")
    run(scenario())


# ---------------------------------------------------------------- W4 / L4: Coinbase top of book from level2
def test_coinbase_top_of_book_is_level2_with_engine_time():
    async def scenario():
        async with Venue("coinbase") as v:
            await v.all_live()
            assert all(c == DEPTH for _, c, _ in v.outcomes)                # no ticker subscribed
            assert all(not b.uses_bbo for b in v.books.values())
            assert all(b.exch_ts_ms > 0 for b in v.books.values())
            await v.settled_tops_match()
    run(scenario())


# ---------------------------------------------------------------- L5: liveness of quiet books
@pytest.mark.parametrize("name", ["kraken", "coinbase"])
def test_heartbeats_confirm_quiet_books(name):
    async def scenario():
        async with Venue(name) as v:
            await v.all_live()
            v.server.faults.silent = True               # no market data; the keepalive loop goes on
            before = v.count(Liveness)
            await until(lambda: v.count(Liveness) >= before + 2, 5, "liveness while quiet")
            assert all(e.symbols is None for e in v.events if isinstance(e, Liveness))
            assert all(v.state(i) == RowStatus.LIVE for i in v.instruments)
    run(scenario())


@pytest.mark.parametrize("name, quirk", [("okx", None), ("bybit", "resend_unchanged")])
def test_unchanged_books_are_confirmed_as_unchanged(name, quirk):
    async def scenario():
        async with Venue(name, quiet_market=True) as v:
            if quirk:
                setattr(v.server.quirks, quirk, True)
            await v.all_live()
            await until(lambda: sum(o is Outcome.UNCHANGED for _, _, o in v.outcomes) >= 5, 5, "unchanged")
            assert not v.bad_outcomes()
    run(scenario())


# ---------------------------------------------------------------- T2: OKX tick-by-tick depth
def test_okx_tbt_refused_then_public_books():
    async def scenario():
        async with Venue("okx", depth_channel="books50-l2-tbt") as v:
            await until(lambda: v.count(ChannelNotPermitted) == len(v.instruments), 5, "64003 per instrument")
            refused = [e for e in v.events if isinstance(e, ChannelNotPermitted)]
            assert {(e.symbol, e.channel, e.code) for e in refused} == {
                (s, "books50-l2-tbt", "64003") for s in v.symbols.values()}
            await v.ws.send(v.venue.build_login("key", "secret", "pass", int(time.time())))
            await until(lambda: v.count(LoginResult) == 1, 5, "the login reply")
            assert [e for e in v.events if isinstance(e, LoginResult)] == [LoginResult(True, "0", "")]
            for symbol in v.symbols.values():           # the fallback: the public 100 ms channel
                await v.ws.send(v.venue.build_resubscribe(symbol, 5)[1])
            await v.all_live()
    run(scenario())


# ---------------------------------------------------------------- staged events (what the soak switches on)
def test_staged_events_follow_the_quirk_switches():
    async def scenario():
        async with Venue("kraken") as v:
            await v.all_live()
            v.server.quirks.venue_status = True
            v.server.quirks.every_s = 0.2
            v.server.quirks.status_s = 0.1
            await until(lambda: TradingStatus(None, False, "maintenance") in v.events, 5, "staged maintenance")
            await until(lambda: v.events.count(TradingStatus(None, True, "online")) >= 2, 5, "back online")
        async with Venue("okx") as v:
            await v.all_live()
            v.server.quirks.planned_disconnects = True
            v.server.quirks.every_s = 0.2
            v.server.quirks.grace_s = 0.2
            await until(lambda: any(isinstance(e, Notice) and e.planned for e in v.events), 5, "staged 64008")
            await until(lambda: v.ws.close_code is not None, 5, "the announced close")
            assert v.ws.close_code == 1001
    run(scenario())


# Coinbase's lost message is a connection-wide gap the session reconnects on; this client does not
STAGED = [(name, quirk) for quirk in ("sequence_resets", "dropped_messages")
          for name in venues_with(lambda v: quirk in v.quirks) if name != "coinbase"]


@pytest.mark.parametrize("name, quirk", STAGED)
def test_staged_sequence_resets_and_dropped_messages(name, quirk):
    """Each staged on its own: a reset whose own message is dropped is a different fault (the ids of the new
    epoch can meet the old ones before the stuck channel is noticed); the exchanges send over TCP, where the
    reset message is not lost."""
    async def scenario():
        async with Venue(name) as v:
            await v.all_live()
            setattr(v.server.quirks, quirk, True)
            v.server.quirks.every_s = 0.3
            if quirk == "sequence_resets":
                await until(lambda: all(b.sequence_resets >= 2 for b in v.books.values()), 5, "resets, twice")
            else:
                await until(lambda: sum(b.gaps + b.checksum_failures for b in v.books.values()) >= 2, 5,
                            "dropped messages seen as gaps or checksum failures")
            setattr(v.server.quirks, quirk, False)
            await until(lambda: not v.server.faults.reset_sequence_next and not v.server.faults.drop_next_depth,
                        5, "the staged one-shots to be used")
            await v.all_live()
            assert all(b.stuck_channels == 0 for b in v.books.values())
            await v.settled_tops_match()
    run(scenario())
