"""The parser side against the simulator with each real-venue quirk switched on.

A small client here does what a feed session does with the venue module and
the book -- subscribe, parse every frame, hand book updates, instrument specs
and trading statuses to the symbol's :class:`InstrumentBook`, resubscribe
when an outcome asks for it -- over a real loopback WebSocket, and records
every event and outcome. The tests check what the parser side delivers (the
events, the outcomes, the book state); what the session does with them
(halted rows, make-before-break) is tested with the session.

Every test runs for the venues whose record (its ``quirks``, ``bbo_channel``, ``login_depth_channel`` ...) or
simulator says the behaviour applies; what only one exchange does is in its own test file, with this client.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from websockets.asyncio.client import connect

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import (
    BBO,
    DEPTH,
    BookUpdate,
    ChannelNotPermitted,
    InstrumentSpec,
    Liveness,
    LoginResult,
    Notice,
    Ping,
    RowStatus,
    SequenceMark,
    TradingStatus,
)
from pipeline.sim.market import Market
from pipeline.sim.protocol import Quirks
from pipeline.sim.server import Simulator
from pipeline.venues import VENUES, load_protocol, load_venue, venues_with
from tests.conftest import async_wait_until as until
from tests.conftest import run

pytestmark = pytest.mark.integration

INSTRUMENTS = ["BTC/USDT", "ETH/USDT"]
RESYNC = (Outcome.GAP, Outcome.CHECKSUM, Outcome.BAD_NUMBER, Outcome.RESUBSCRIBE)


def _offline(name: str):
    """The venue's record and a simulator protocol subscribed as its client subscribes one symbol (no socket)."""
    record = load_venue(name)
    symbol = record.native_symbol(INSTRUMENTS[0])
    proto = load_protocol(name)({symbol: 2})
    proto.known_symbols = {symbol}
    proto.on_connect()
    for frame in record.build_subscribe([symbol], 5):
        proto.on_message(frame)
    return record, proto


def _events(record, frames) -> list:
    out = []
    for frame in frames:
        try:
            out += record.parse(frame, 0)
        except ParseError:
            pass
    return out


def sends_heartbeats(name: str) -> bool:
    """The simulator's own keepalive timer sends liveness confirmations (Kraken ``heartbeat``, Coinbase
    ``heartbeats``), not pings."""
    record, proto = _offline(name)
    return any(isinstance(e, Liveness) for n in range(3) for e in _events(record, proto.keepalive(n)))


def confirms_unchanged_books(name: str) -> bool:
    """The simulator re-sends an unchanged book under the same id (OKX's keep-alive update; Bybit's re-sent
    orderbook.1 with the ``resend_unchanged`` quirk, switched on where the venue has it)."""
    record, proto = _offline(name)
    proto.quirks = Quirks(resend_unchanged="resend_unchanged" in record.quirks)
    bids, asks = [(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0), (102.0, 2.0)]
    ids = []
    for n in range(2):
        frames = [f for key in list(proto.subscriptions) if key[1] in (BBO, DEPTH)
                  for f in proto.render(*key, bids, asks, 1_700_000_000_000 + n)]
        ids.append({(e.channel, e.seq) for e in _events(record, frames) if isinstance(e, BookUpdate) and e.seq})
    return bool(ids[0] & ids[1])


class Venue:
    """One simulated exchange and one client connection driving the parser and the books."""

    def __init__(self, name: str, quiet_market: bool = False, depth_channel: str | None = None):
        self.name = name
        self.venue = load_venue(name)
        self.instruments = list(INSTRUMENTS)
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

    async def __aenter__(self) -> Venue:
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
        decimals = self.server.decimals()[self.symbols[instrument]]   # the grid the venue quotes it on
        return ((round(bids[0][0], decimals), round(bids[0][1], 6)),
                (round(asks[0][0], decimals), round(asks[0][1], 6)))

    def top(self, instrument: str):
        bids, asks = self.books[self.symbols[instrument]].compose()
        return ((round(bids[0][0], 8), round(bids[0][1], 6)), (round(asks[0][0], 8), round(asks[0][1], 6)))

    async def settled_tops_match(self) -> None:
        """Freeze the market: every book's composed top must be the last top the exchange rendered."""
        self.server.faults.silent = True
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
            # every depth message one step behind the top of book: many of them on top of the snapshot
            await until(lambda: v.late_depth >= 20, 10, "depth messages behind the top of book")
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
@pytest.mark.parametrize("name", venues_with(lambda v: "shortest_numbers" in v.quirks))
def test_shortest_and_exponent_numbers_checksum_at_the_pair_precision(name):
    async def scenario():
        async with Venue(name) as v:
            v.server.quirks.shortest_numbers = True
            await v.all_live()
            specs = [e for e in v.events if isinstance(e, InstrumentSpec)]     # the pair precisions, if sent
            assert {(s.symbol, s.status) for s in specs} in (set(), {(s, "online") for s in v.symbols.values()})
            await until(lambda: any(b"e-0" in (f.encode() if isinstance(f, str) else f) for f in v.frames), 5,
                        "a quantity in exponent form")
            # checked against the checksum of many more updates in that form (the books verify each one)
            after = len(v.outcomes)
            await until(lambda: len(v.outcomes) >= after + 30, 10, "more updates checksummed")
            assert all(b.checksum_failures == 0 for b in v.books.values())
            assert not v.bad_outcomes()
            await v.settled_tops_match()
    run(scenario())


# ------------------------------------------------------- W3: venue status (Kraken's own words: test_venue_kraken)
@pytest.mark.parametrize("name", venues_with(lambda v: "venue_status" in v.quirks))
def test_venue_status_halts_every_book_until_online(name):
    async def scenario():
        async with Venue(name) as v:
            await v.all_live()
            assert all(e.symbol is None and e.tradable for e in v.events if isinstance(e, TradingStatus))
            await v.server.announce_status("maintenance")
            await until(lambda: TradingStatus(None, False, "maintenance") in v.events, 5, "maintenance")
            await until(lambda: all(v.state(i) == RowStatus.HALTED for i in v.instruments), 5, "halted")
            assert all(b.halted == "venue maintenance" for b in v.books.values())
            await v.server.announce_status("online")
            await v.all_live()
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


# ---------------------------------------------------------------- W2 / T5: a connection-wide sequence
def sequence_jumped(v: Venue) -> bool:
    """A jump in the connection-wide sequence (``SequenceMark``: Coinbase's ``sequence_num``): a message was lost."""
    marks = [e.seq for e in v.events if isinstance(e, SequenceMark)]
    return any(b != a + 1 for a, b in zip(marks, marks[1:]))


# ------------------------------------------------------- W4 / L4: no top-of-book channel: top of book from depth
@pytest.mark.parametrize("name", venues_with(lambda v: not v.bbo_channel))
def test_top_of_book_is_the_depth_books_own_with_engine_time(name):
    async def scenario():
        async with Venue(name) as v:
            await v.all_live()
            assert all(c == DEPTH for _, c, _ in v.outcomes)                # no top-of-book channel subscribed
            assert all(not b.uses_bbo for b in v.books.values())
            if v.venue.exchange_time:
                assert all(b.exch_ts_ms > 0 for b in v.books.values())
            await v.settled_tops_match()
    run(scenario())


# ---------------------------------------------------------------- L5: liveness of quiet books
@pytest.mark.parametrize("name", [name for name in VENUES if sends_heartbeats(name)])
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


@pytest.mark.parametrize("name", [name for name in VENUES if confirms_unchanged_books(name)])
def test_unchanged_books_are_confirmed_as_unchanged(name):
    async def scenario():
        async with Venue(name, quiet_market=True) as v:
            v.server.quirks.resend_unchanged = "resend_unchanged" in v.venue.quirks
            await v.all_live()
            await until(lambda: sum(o is Outcome.UNCHANGED for _, _, o in v.outcomes) >= 5, 5, "unchanged")
            assert not v.bad_outcomes()
    run(scenario())


# ---------------------------------------------------------------- T2: a depth channel that needs a login (OKX tbt)
@pytest.mark.parametrize("name", venues_with(lambda v: v.login_depth_channel))
def test_login_depth_channel_refused_then_public_books(name):
    channel = load_venue(name).login_depth_channel

    async def scenario():
        async with Venue(name, depth_channel=channel) as v:
            await until(lambda: v.count(ChannelNotPermitted) == len(v.instruments), 5, "a refusal per instrument")
            refused = [e for e in v.events if isinstance(e, ChannelNotPermitted)]
            assert {(e.symbol, e.channel) for e in refused} == {(s, channel) for s in v.symbols.values()}
            await v.ws.send(v.venue.build_login("key", "secret", "pass", int(time.time())))
            await until(lambda: v.count(LoginResult) == 1, 5, "the login reply")
            assert [e.ok for e in v.events if isinstance(e, LoginResult)] == [True]
            for symbol in v.symbols.values():           # the fallback: the public depth channel
                for frame in v.venue.build_resubscribe(symbol, 5):
                    await v.ws.send(frame)
            await v.all_live()
    run(scenario())


# ---------------------------------------------------------------- staged events (what the soak switches on)
@pytest.mark.parametrize("name", venues_with(lambda v: "venue_status" in v.quirks))
def test_staged_venue_status_follows_the_quirk_switch(name):
    maintenance, online = TradingStatus(None, False, "maintenance"), TradingStatus(None, True, "online")

    async def scenario():
        async with Venue(name) as v:
            await v.all_live()
            v.server.quirks.venue_status = True
            v.server.quirks.every_s = 0.2
            v.server.quirks.status_s = 0.1
            await until(lambda: maintenance in v.events, 5, "staged maintenance")
            await until(lambda: online in v.events[v.events.index(maintenance):], 5, "back online")
    run(scenario())


@pytest.mark.parametrize("name", venues_with(lambda v: "planned_disconnects" in v.quirks))
def test_staged_planned_disconnects_follow_the_quirk_switch(name):
    async def scenario():
        async with Venue(name) as v:
            await v.all_live()
            v.server.quirks.planned_disconnects = True
            v.server.quirks.every_s = 0.2
            v.server.quirks.grace_s = 0.2
            await until(lambda: any(isinstance(e, Notice) and e.planned for e in v.events), 5, "a staged notice")
            await until(lambda: v.ws.close_code is not None, 5, "the announced close")
            assert v.ws.close_code == 1001
    run(scenario())


STAGED = [(name, quirk) for quirk in ("sequence_resets", "dropped_messages")
          for name in venues_with(lambda v: quirk in v.quirks)]


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
            if quirk == "dropped_messages" and any(isinstance(e, SequenceMark) for e in v.events):
                # a connection-wide sequence (Coinbase): the lost message is a jump in it, which the session
                # reconnects on (this client does not: its books stay as they are)
                await until(lambda: sequence_jumped(v), 5, "a connection sequence jump")
                return
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
