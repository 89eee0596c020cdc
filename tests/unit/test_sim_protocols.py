"""Simulator protocols against the venue parsers, without sockets.

For every exchange: the client's own subscribe frames are answered with
acks the venue parser understands; a random walk of books rendered by the
simulator and parsed by the venue rebuilds, through the shared book logic,
exactly the top levels that were rendered (no gap, checksum or bad-number
outcome); unknown symbols are refused the exchange's way; keepalives round trip.
"""
from __future__ import annotations

import gzip
import random

import orjson
import pytest

from pipeline.board.layout import RowStatus
from pipeline.book import InstrumentBook, Outcome
from pipeline.model import (BBO, DEPTH, Ack, BookUpdate, InstrumentSpec, Liveness, Ping, Pong, SequenceMark,
                            SubscribeError, TradingStatus)
from pipeline.sim.protocols import load_protocol
from pipeline.venues import VENUES, load_venue

INSTRUMENT = "ETH/USDT"
UNKNOWN = "ZZZ/USDT"
DECIMALS = 2
SHOWN = 5
BAD = (Outcome.GAP, Outcome.CHECKSUM, Outcome.BAD_NUMBER)
T0 = 1_790_000_000_000


def setup(name: str):
    venue = load_venue(name)
    symbol = venue.native_symbol(INSTRUMENT)
    proto = load_protocol(name)({symbol: DECIMALS})
    proto.known_symbols = {symbol}
    return venue, proto, symbol


def parse_all(venue, frames) -> list:
    return [event for frame in frames for event in venue.parse(frame, 0)]


class Sequence:
    """Checks Coinbase's per-connection sequence_num on every parsed message."""

    def __init__(self):
        self.last = None

    def strip(self, events: list) -> list:
        out = []
        for event in events:
            if isinstance(event, SequenceMark):
                assert self.last is None or event.seq == self.last + 1, (self.last, event.seq)
                self.last = event.seq
            else:
                out.append(event)
        return out


def _present(ticks: int) -> bool:
    return (ticks * 2654435761 >> 7) % 4 != 0          # a fixed sparse ladder: levels persist while in range


def random_walk(seed: int, steps: int = 20, levels: int = 10):
    """``steps`` books of ``levels`` levels a side; step 6 repeats step 5 unchanged."""
    rng = random.Random(seed)
    mid = 320_000                                         # ticks of 0.01: 3200.00
    qty: dict[int, float] = {}
    books = []
    for step in range(steps):
        if step == 6:
            books.append(books[-1])
            continue
        mid += rng.choice((-7, -3, -1, 0, 1, 3, 7))
        for key in list(qty):
            if rng.random() < 0.15:
                qty[key] = round(rng.uniform(0.001, 40.0), 6)
        sides = []
        for start, direction in ((mid - 1, -1), (mid + 1, 1)):
            side, t = [], start
            while len(side) < levels:
                if _present(t):
                    q = qty.setdefault(t, round(rng.uniform(0.001, 40.0), 6))
                    side.append((round(t * 10 ** -DECIMALS, DECIMALS), q))
                t += direction
            sides.append(side)
        books.append(tuple(sides))
    return books


def subscribe(venue, proto, symbol: str, seq: Sequence) -> list:
    """Subscribe as the client does; returns the reference data (Kraken instrument specs) to hand to the book."""
    events = seq.strip(parse_all(venue, proto.on_connect()))
    assert events == ([TradingStatus(None, True, "online")] if venue.NAME == "kraken" else []), events
    specs = []
    for frame in venue.build_subscribe([symbol], SHOWN):
        events = seq.strip(parse_all(venue, proto.on_message(frame)))
        specs += [e for e in events if isinstance(e, InstrumentSpec)]
        events = [e for e in events if not isinstance(e, InstrumentSpec)]
        assert events and all(isinstance(e, Ack) for e in events), events
    # Coinbase: level2 only, the top of book is the book's own (W4)
    expected = {(symbol, DEPTH)} if venue.NAME == "coinbase" else {(symbol, BBO), (symbol, DEPTH)}
    assert set(proto.subscriptions) == expected
    return specs


@pytest.mark.parametrize("name", VENUES)
def test_subscribe_and_random_walk_round_trip(name):
    venue, proto, symbol = setup(name)
    seq = Sequence()
    specs = subscribe(venue, proto, symbol, seq)
    book = InstrumentBook(symbol, depth=SHOWN, keep_levels=venue.BOOK_LEVELS, checksum=venue.CHECKSUM,
                          checksum_levels=venue.CHECKSUM_LEVELS or 10)
    for spec in specs:
        book.apply(spec)
    if name == "kraken":
        assert specs == [InstrumentSpec(symbol, DECIMALS, 8, "online")]
    outcomes = set()
    for step, (bids, asks) in enumerate(random_walk(seed=VENUES.index(name))):
        ts = T0 + step * 100
        if step == 12:                                   # as after a gap: discard, ask for a fresh snapshot
            book.invalidate()
            for frame in venue.build_resubscribe(symbol, SHOWN):
                replies = seq.strip(parse_all(venue, proto.on_message(frame)))
                assert not any(isinstance(e, SubscribeError) for e in replies)
        frames = [f for key in list(proto.subscriptions) for f in proto.render(*key, bids, asks, ts)]
        if name == "htx":
            assert all(isinstance(f, bytes) and f[:2] == b"\x1f\x8b" for f in frames)
        for frame in frames:
            for event in seq.strip(venue.parse(frame, 0)):
                assert isinstance(event, BookUpdate) and event.symbol == symbol
                outcome = book.apply(event)
                assert outcome not in BAD, (step, outcome, event)
                outcomes.add(outcome)
        expected = ([(float(proto.fmt_px(symbol, p)), float(proto.fmt_qty(q))) for p, q in bids[:SHOWN]],
                    [(float(proto.fmt_px(symbol, p)), float(proto.fmt_qty(q))) for p, q in asks[:SHOWN]])
        assert book.compose() == expected, (step, book.compose(), expected)
    assert book.state == RowStatus.LIVE
    assert Outcome.CHANGED in outcomes
    if name in ("okx", "htx"):                           # step 6 repeats a book: keep-alive / same seqNum
        assert Outcome.UNCHANGED in outcomes
    if name != "binance":                                # Binance spot bookTicker/depth5 carry no time
        assert book.exch_ts_ms > T0


@pytest.mark.parametrize("name", VENUES)
def test_unknown_symbol_is_refused(name):
    venue, proto, _ = setup(name)
    unknown = venue.native_symbol(UNKNOWN)
    proto.on_connect()
    events = [e for frame in venue.build_subscribe([unknown], SHOWN)
              for e in parse_all(venue, proto.on_message(frame)) if not isinstance(e, SequenceMark)]
    assert not proto.subscriptions
    if name == "binance":                                # Binance acks unknown streams and stays silent
        assert events == [Ack()]
        return
    errors = [e for e in events if isinstance(e, SubscribeError)]
    assert errors and all(e.symbol == unknown for e in errors), events


def test_htx_ping_pong_round_trip():
    venue, proto, _ = setup("htx")
    frames = proto.keepalive(T0)
    assert proto.KEEPALIVE_INTERVAL_S == 5 and gzip.decompress(frames[0]) == b'{"ping":%d}' % T0
    assert parse_all(venue, frames) == [Ping(token=T0)]
    assert proto.missed_pongs == 1
    assert proto.on_message(venue.build_pong(T0)) == []
    assert proto.missed_pongs == 0
    assert parse_all(venue, proto.on_message('{"ping":"x"}'))[0].message.startswith("bad-request: invalid ping")


def test_okx_text_ping_pong():
    venue, proto, _ = setup("okx")
    assert proto.on_message(venue.build_keepalive()) == ["pong"]
    assert venue.parse("pong", 0) == [Pong()]


def test_okx_books_chain_and_keepalive_update():
    venue, proto, symbol = setup("okx")
    proto.on_message(venue.build_subscribe([symbol], SHOWN)[0])
    bids, asks = [(3200.0, 1.0), (3199.5, 2.0)], [(3200.5, 1.5)]
    snap = orjson.loads(proto.render(symbol, DEPTH, bids, asks, T0)[0])
    same = orjson.loads(proto.render(symbol, DEPTH, bids, asks, T0 + 100)[0])
    moved = orjson.loads(proto.render(symbol, DEPTH, bids[:1], asks, T0 + 200)[0])
    assert snap["action"] == "snapshot" and snap["data"][0]["prevSeqId"] == -1
    assert snap["data"][0]["bids"][0][:3] == ["3200", "1", "0"] and snap["data"][0]["checksum"] == 0
    keep = same["data"][0]
    assert (same["action"], keep["asks"], keep["bids"]) == ("update", [], [])
    assert keep["prevSeqId"] == keep["seqId"] == snap["data"][0]["seqId"]
    assert moved["data"][0]["prevSeqId"] == snap["data"][0]["seqId"] < moved["data"][0]["seqId"]
    assert moved["data"][0]["bids"] == [["3199.5", "0", "0", "0"]]


def test_kraken_status_ping_heartbeat_and_checksum_text():
    venue, proto, symbol = setup("kraken")
    status = orjson.loads(proto.on_connect()[0])
    assert status["channel"] == "status" and status["data"][0]["connection_id"] > 2 ** 63
    pong = proto.on_message('{"method":"ping","req_id":101}')
    assert venue.parse(pong[0], 0) == [Pong()] and orjson.loads(pong[0])["req_id"] == 101
    assert venue.parse(proto.on_message(venue.build_keepalive())[0], 0) == [Pong()]
    assert proto.keepalive(T0) == []                     # not subscribed: no heartbeat
    for frame in venue.build_subscribe([symbol], SHOWN):
        proto.on_message(frame)
    assert proto.keepalive(T0) == []                     # the acks were sent in the last second
    assert parse_all(venue, proto.keepalive(T0)) == [Liveness(None)]
    frame = proto.render(symbol, DEPTH, [(3200.1, 0.5)], [(3200.2, 1.25)], T0)[0]
    assert '{"price":3200.10,"qty":0.50000000}' in frame and '"timestamp":"2026-09-21T' in frame
    update = venue.parse(frame, 0)[0]
    assert update.checksum == venue.checksum(update.bids_text, update.asks_text, DECIMALS, 8)
    assert proto.keepalive(T0) == []                     # book data went out: no heartbeat


def test_coinbase_heartbeats_and_sequence():
    venue, proto, symbol = setup("coinbase")
    seq = Sequence()
    assert proto.keepalive(T0) == []                     # heartbeats not subscribed
    subscribe(venue, proto, symbol, seq)
    acks = seq.strip(parse_all(venue, proto.on_message(venue.build_subscribe([symbol], SHOWN)[1])))
    assert Ack("", "heartbeats") in acks                 # the whole subscription set, again
    for _ in range(3):
        assert seq.strip(parse_all(venue, proto.keepalive(T0))) == [Liveness(None)]
    assert seq.last == 5                                 # 2 subscriptions + 1 again + 3 heartbeats, from 0
