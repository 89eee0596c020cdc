"""Simulator protocols against the venue parsers, without sockets.

For every exchange in the registry: the client's own subscribe frames are answered with
acks the venue parser understands; a random walk of books rendered by the
simulator and parsed by the venue rebuilds, through the shared book logic,
exactly the top levels that were rendered (no gap, checksum or bad-number
outcome); unknown symbols are refused the way the record says; keepalives round trip.
What only one exchange does is tested in its own file (``tests/unit/test_venue_<name>.py``),
with the helpers here (:func:`setup`, :func:`served`, :func:`step`).
"""
from __future__ import annotations

import gzip
import random

import orjson
import pytest

from pipeline.book import InstrumentBook, Outcome
from pipeline.model import (
    BBO,
    DEPTH,
    Ack,
    BookUpdate,
    InstrumentSpec,
    Liveness,
    Ping,
    Pong,
    RowStatus,
    SequenceMark,
    SubscribeError,
    TradingStatus,
)
from pipeline.venues import VENUES, load_protocol, load_venue

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
    """Checks a connection-wide sequence (``SequenceMark``, Coinbase's ``sequence_num``) on every parsed message."""

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


def connect(venue, proto, seq: Sequence) -> list:
    """What a connection hears before it asks for anything: nothing, or that the venue is tradable."""
    events = seq.strip(parse_all(venue, proto.on_connect()))
    assert all(isinstance(e, TradingStatus) and e.symbol is None and e.tradable for e in events), events
    return events


def answers(venue, proto, frame, symbol: str, seq: Sequence) -> list:
    """What the venue answers one of the client's requests: acks, and what to hand to the book in order
    (reference data, a snapshot answering a request); never a refusal."""
    events = seq.strip(parse_all(venue, proto.on_message(frame)))
    assert all(isinstance(e, (Ack, InstrumentSpec, BookUpdate)) for e in events), events
    assert all(e.symbol == symbol for e in events if not isinstance(e, Ack)), events
    return events


def subscribe(venue, proto, symbol: str, seq: Sequence) -> list:
    """Subscribe as the client does; returns what to hand to the book (instrument specs, snapshots), in order."""
    connect(venue, proto, seq)
    replies = [e for frame in venue.build_subscribe([symbol], SHOWN) for e in answers(venue, proto, frame, symbol, seq)]
    assert any(isinstance(e, Ack) for e in replies), replies
    # a venue without a top-of-book channel: level2 only, the top of book is the book's own (W4)
    expected = {(symbol, BBO), (symbol, DEPTH)} if venue.bbo_channel else {(symbol, DEPTH)}
    assert set(proto.subscriptions) == expected
    specs = [e for e in replies if isinstance(e, InstrumentSpec)]
    assert all(s.price_precision == DECIMALS for s in specs), specs
    return [e for e in replies if not isinstance(e, Ack)]


@pytest.mark.parametrize("name", VENUES)
def test_subscribe_and_random_walk_round_trip(name):
    venue, proto, symbol = setup(name)
    seq = Sequence()
    book = InstrumentBook(symbol, depth=SHOWN, keep_levels=venue.book_levels, checksum=venue.checksum,
                          checksum_levels=venue.checksum_levels or 10, aligned=venue.aligned_snapshots)
    outcomes = set()

    def apply(step: int, event) -> Outcome:
        outcome = book.apply(event)
        assert outcome not in BAD, (step, outcome, event)
        outcomes.add(outcome)
        if outcome is Outcome.RESUBSCRIBE:               # the book asks for a fresh snapshot: the feed asks again
            resync(step)
        return outcome

    def resync(step: int) -> None:
        for frame in venue.build_resubscribe(symbol, SHOWN):
            for event in answers(venue, proto, frame, symbol, seq):
                if not isinstance(event, Ack):
                    apply(step, event)

    for event in subscribe(venue, proto, symbol, seq):
        apply(-1, event)
    last_seq = {}
    waited = 0
    for step, (bids, asks) in enumerate(random_walk(seed=VENUES.index(name))):
        ts = T0 + step * 100
        if step == 12:                                   # as after a gap: discard, ask for a fresh snapshot
            book.invalidate()
            resync(step)
        frames = [f for key in list(proto.subscriptions) for f in proto.render(*key, bids, asks, ts)]
        if venue.compression == "gzip":
            assert all(isinstance(f, bytes) and f[:2] == b"\x1f\x8b" for f in frames)
        for frame in frames:
            for event in seq.strip(venue.parse(frame, 0)):
                assert isinstance(event, BookUpdate) and event.symbol == symbol
                outcome = apply(step, event)
                if step == 6 and event.seq is not None and last_seq.get(event.channel) == event.seq:
                    # step 6 repeats step 5's book: one re-sent under the same id (a keep-alive) confirms it
                    assert outcome is Outcome.UNCHANGED, (step, outcome, event)
                last_seq[event.channel] = event.seq
        if venue.aligned_snapshots and book.state != RowStatus.LIVE:
            waited += 1                                  # a snapshot aligned with the deltas waits for the next one
            continue
        expected = ([(float(proto.fmt_px(symbol, p)), float(proto.fmt_qty(q))) for p, q in bids[:SHOWN]],
                    [(float(proto.fmt_px(symbol, p)), float(proto.fmt_qty(q))) for p, q in asks[:SHOWN]])
        assert book.compose() == expected, (step, book.compose(), expected)
    assert waited <= 2, waited                           # (pipeline.book, Alignment A3)
    assert book.state == RowStatus.LIVE
    assert Outcome.CHANGED in outcomes
    if venue.exchange_time:                              # (Binance spot bookTicker/depth5 carry no time)
        assert book.exch_ts_ms > T0


@pytest.mark.parametrize("name", VENUES)
def test_unknown_symbol_is_refused(name):
    venue, proto, _ = setup(name)
    unknown = venue.native_symbol(UNKNOWN)
    proto.on_connect()
    events = [e for frame in venue.build_subscribe([unknown], SHOWN)
              for e in parse_all(venue, proto.on_message(frame)) if not isinstance(e, SequenceMark)]
    assert not proto.subscriptions
    if not venue.refuses_unknown_symbols:                # acked, and silent (Binance): the row never syncs
        assert events and all(isinstance(e, Ack) for e in events), events
        return
    errors = [e for e in events if isinstance(e, SubscribeError)]
    assert errors and all(e.symbol == unknown for e in errors), events


@pytest.mark.parametrize("name", VENUES)
def test_keepalives_round_trip(name):
    """The client's keepalive (if the venue has one) is answered with a pong; what the server sends on its own
    keepalive timer is pings, which the client's pong answers without a reply, or liveness confirmations."""
    venue, proto, symbol = setup(name)
    seq = Sequence()
    subscribe(venue, proto, symbol, seq)
    frame = venue.build_keepalive()
    assert (frame is None) == (venue.keepalive_interval_s is None), (frame, venue.keepalive_interval_s)
    if frame is not None:
        assert Pong() in seq.strip(parse_all(venue, proto.on_message(frame)))
    for n in range(3):
        frames = proto.keepalive(T0 + n)
        assert not frames or proto.KEEPALIVE_INTERVAL_S, frames     # the server's timer runs only when declared
        if venue.compression == "gzip":
            assert all(isinstance(f, bytes) and f[:2] == b"\x1f\x8b" for f in frames)
        events = seq.strip(parse_all(venue, frames))
        assert all(isinstance(e, (Ping, Liveness)) for e in events), events
        for event in events:
            if isinstance(event, Ping):
                assert proto.on_message(venue.build_pong(event.token)) == []


def test_rule_names_are_checked():
    from pipeline.sim.protocol import Rules
    assert Rules.named(["missed_pongs"]) == Rules(missed_pongs=True)
    with pytest.raises(ValueError):
        Rules.named(["missed_pongs", "no_such_rule"])


# ---------------------------------------------------------------- channels outside clients use (sim-fidelity M1-M8)
def served(name: str, path: str = "/"):
    """A protocol with the server's shared state, as a connection on ``path`` sees it."""
    from pipeline.sim.market import Tape
    from pipeline.sim.protocol import SymbolState
    venue, proto, symbol = setup(name)
    state = SymbolState(symbol, Tape(f"{name}:{symbol}", 3200.0, DECIMALS, trade_chance=1.0))
    proto.states = {symbol: state}
    proto.path = path
    return venue, proto, symbol, state


def step(proto, state, n: int, ts: int) -> list:
    """Market step ``n`` (a moving book) rendered for every subscription; frames as JSON."""
    bids = [(round(3200.0 + n * 0.01 - i * 0.1, 2), 1.0 + i) for i in range(10)]
    asks = [(round(3200.1 + n * 0.01 + i * 0.1, 2), 2.0 + i) for i in range(10)]
    state.update(bids, asks, ts)
    frames = []
    for symbol, channel in list(proto.subscriptions):
        frames += (proto.render(symbol, channel, bids, asks, ts) if channel in (BBO, DEPTH)
                   else proto.render_stream(symbol, channel, state))
    return [orjson.loads(gzip.decompress(f) if isinstance(f, bytes) else f) for f in frames]

