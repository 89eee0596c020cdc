"""The top-of-book short path decides exactly what the general path decides.

Two sessions receive the same frames: one as the feed runs (a venue's ``top``
frames go through ``InstrumentBook.apply_top`` without event objects), one
with the short path switched off (every frame through ``parse`` and
``InstrumentBook.apply``). After every frame their rows, counters, replies
and row states must be identical. The frames are each venue's top-of-book and
depth messages in their wire shape, with ids that go up, repeat, go down and
restart, numbers that are fine, zero, negative, NaN, out of range or not
numbers, empty sides, and garbage in between.

Every venue in the registry with a short path (``top``) is checked with frames its simulator renders
(numbers the simulator can write, ids in any order); the venues with a hand-written frame maker below
are checked with those too (numbers it cannot write: text, out of range).
"""
from __future__ import annotations

import functools
import gzip
import random

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeline.feed.session import MemorySink
from pipeline.model import BBO, DEPTH, BookUpdate, RowStatus
from pipeline.venues import load_protocol, load_venue, venues_with
from tests.conftest import examples, session_for

PRICES = ["100.5", "100.6", "100.4", "99.9", "101", "100.55", "0", "-1", "NaN", "1e400", "abc"]
QTYS = ["1.5", "0.001", "2", "0", "-2", "NaN", "x"]
VALID_PRICES = PRICES[:6]
VALID_QTYS = QTYS[:3]


def _num(text: str):
    """HTX sends JSON numbers: the same values, or the bad text as a string."""
    try:
        return float(text) if text not in ("1e400",) else 1e400
    except ValueError:
        return text


# every strategy below is built once, not at each draw: building one (and hypothesis validating it) costs more
# than drawing from it
_NUMBERS = {True: (st.sampled_from(VALID_PRICES), st.sampled_from(VALID_QTYS)),
            False: (st.sampled_from(PRICES), st.sampled_from(QTYS))}


@st.composite
def quotes(draw):
    """(bid_px, bid_qty, ask_px, ask_qty): mostly usable, sometimes not."""
    prices, qtys = _NUMBERS[draw(st.integers(0, 3)) > 0]
    return tuple(draw(p) for p in (prices, qtys, prices, qtys))


QUOTES = quotes()


def binance_top(seq, q, empty):
    return orjson.dumps({"stream": "btcusdt@bookTicker", "data": {"u": seq, "s": "BTCUSDT", "b": q[0], "B": q[1],
                                                                    "a": q[2], "A": q[3]}}).decode()


def binance_depth(seq, q, empty):
    return orjson.dumps({"stream": "btcusdt@depth5@100ms", "data": {
        "lastUpdateId": seq, "bids": [[q[0], q[1]], ["99.0", "3"]],
        "asks": [] if empty else [[q[2], q[3]], ["102.0", "3"]]}}).decode()


def bybit_top(seq, q, empty, kind="snapshot"):
    return orjson.dumps({"topic": "orderbook.1.BTCUSDT", "ts": 1_700_000_000_000 + seq, "type": kind,
                         "data": {"s": "BTCUSDT", "b": [[q[0], q[1]]], "a": [] if empty else [[q[2], q[3]]],
                                  "u": seq, "seq": 1000 + seq}}).decode()


def bybit_depth(seq, q, empty):
    return orjson.dumps({"topic": "orderbook.50.BTCUSDT", "ts": 1_700_000_000_000 + seq, "type": "snapshot",
                         "data": {"s": "BTCUSDT", "b": [[q[0], q[1]], ["99.0", "3"]],
                                  "a": [] if empty else [[q[2], q[3]], ["102.0", "3"]], "u": seq,
                                  "seq": 1000 + seq}}).decode()


def bybit_top_delta(seq, q, empty):
    return bybit_top(seq, q, empty, kind="delta")


def okx_top(seq, q, empty):
    return orjson.dumps({"arg": {"channel": "bbo-tbt", "instId": "BTC-USDT"}, "data": [{
        "asks": [] if empty else [[q[2], q[3], "0", "1"]], "bids": [[q[0], q[1], "0", "2"]],
        "ts": str(1_700_000_000_000 + seq), "seqId": seq}]}).decode()


def okx_depth(seq, q, empty):
    return orjson.dumps({"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "snapshot", "data": [{
        "asks": [] if empty else [[q[2], q[3], "0", "1"], ["102.0", "3", "0", "1"]],
        "bids": [[q[0], q[1], "0", "2"], ["99.0", "3", "0", "1"]], "ts": str(1_700_000_000_000 + seq),
        "checksum": 0, "prevSeqId": -1, "seqId": seq}]}).decode()


def htx_top(seq, q, empty):
    tick = {"seqId": seq, "bid": _num(q[0]), "bidSize": _num(q[1]), "quoteTime": 1_700_000_000_000 + seq,
            "symbol": "btcusdt"}
    if not empty:
        tick.update(ask=_num(q[2]), askSize=_num(q[3]))
    return gzip.compress(orjson.dumps({"ch": "market.btcusdt.bbo", "ts": 1_700_000_000_000 + seq, "tick": tick}))


def htx_depth(seq, q, empty):
    tick = {"seqNum": seq, "bids": [[_num(q[0]), _num(q[1])], [99.0, 3.0]],
            "asks": [] if empty else [[_num(q[2]), _num(q[3])], [102.0, 3.0]]}
    return gzip.compress(orjson.dumps({"ch": "market.btcusdt.mbp.refresh.20", "ts": 1_700_000_000_000 + seq,
                                       "tick": tick}))


# Hand-written frame makers (top, depth[, top-of-book delta]) for the venues that have one; a venue without a maker
# is checked with the frames its simulator renders only.
MAKERS = {"binance": (binance_top, binance_depth), "bybit": (bybit_top, bybit_depth, bybit_top_delta),
          "okx": (okx_top, okx_depth), "htx": (htx_top, htx_depth)}
SHORT_PATH = venues_with(lambda v: v.top is not None)


KINDS = st.sampled_from(["top"] * 6 + ["depth", "garbage", "top_delta"])
GARBAGE = (st.text(max_size=60), st.binary(max_size=60))        # or, third, a frame cut short


@st.composite
def frames(draw, venue):
    top, depth, *delta = MAKERS[venue]
    kind = draw(KINDS)
    seq = draw(st.integers(1, 12))
    q = draw(QUOTES)
    empty = draw(st.integers(0, 9)) == 0
    if kind == "garbage":
        which = draw(st.integers(0, 2))
        return draw(GARBAGE[which]) if which < 2 else top(seq, q, empty)[:40]
    if kind == "depth":
        return depth(seq, q, empty)
    if kind == "top_delta" and delta:
        return delta[0](seq, q, empty)
    raw = top(seq, q, empty)
    if draw(st.booleans()) and isinstance(raw, str):
        raw = raw.encode()              # picows hands text frames over as bytes
    return raw


def sessions(venue: str):
    out = []
    for short in (True, False):
        session, sink, conn, _ = session_for(venue, [], add_unknown=True)
        if not short:
            session.top = None
        out.append((session, sink, conn))
    return out


def rows(sink: MemorySink) -> dict:
    return {n: (r.status, r.bids, r.asks, r.exch_ts_ns, r.recv_ns, r.gaps, r.checksum_failures, r.writes,
                r.confirmed_ns) for n, r in sink.rows.items()}


# ---------------------------------------------------------------- frames the venue's simulator renders
PX = [100.5, 100.6, 100.4, 99.9, 101.0, 100.55, 0.0, -1.0, float("nan"), float("inf")]
QTY = [1.5, 0.001, 2.0, 0.0, -2.0, float("nan")]
T0 = 1_700_000_000_000


def subscribed(venue: str):
    """The venue's simulator protocol, subscribed as its client subscribes one symbol; its book channels."""
    record = load_venue(venue)
    symbol = record.native_symbol("BTC/USDT")
    proto = load_protocol(venue)({symbol: 2})
    proto.known_symbols = {symbol}
    proto.on_connect()
    for frame in record.build_subscribe([symbol], 5):
        proto.on_message(frame)
    return proto, [key for key in proto.subscriptions if key[1] in (BBO, DEPTH)]


_RENDERED_NUMBERS = {True: (st.sampled_from(PX[:6]), st.sampled_from(QTY[:3])),
                     False: (st.sampled_from(PX), st.sampled_from(QTY))}
REPEATS = st.sampled_from([1, 1, 1, 0, 2])


@functools.cache
def _sampled(choices: tuple):
    return st.sampled_from(choices)


@st.composite
def rendered(draw, venue):
    """Frames the simulator renders on the venue's book channels (mostly top of book) from usable and unusable
    numbers, sometimes an empty side; sent in order with some lost or repeated, or in any order; garbage between."""
    saved = random.getstate()                     # a simulator may draw its ids from random (OKX): keep Hypothesis'
    try:
        return _rendered(draw, venue)
    finally:
        random.setstate(saved)


def _rendered(draw, venue):
    proto, keys = subscribed(venue)
    keys = [k for k in keys if k[1] == BBO] * 3 + keys
    pool = []
    pick_key = _sampled(tuple(keys))
    for n in range(draw(st.integers(1, 12))):
        px, qty = _RENDERED_NUMBERS[draw(st.integers(0, 3)) > 0]
        bid, bid_qty, ask, ask_qty = (draw(v) for v in (px, qty, px, qty))
        empty = draw(st.integers(0, 9)) == 0
        bids, asks = [(bid, bid_qty), (99.0, 3.0)], [] if empty else [(ask, ask_qty), (102.0, 3.0)]
        try:
            pool += proto.render(*draw(pick_key), bids, asks, T0 + n)
        except Exception:  # noqa: BLE001 - a book this simulator cannot write (an empty side): not sent
            pass

    def garbage():
        which = draw(st.integers(0, 2 if pool else 1))
        return draw(GARBAGE[which]) if which < 2 else draw(st.sampled_from(pool))[:40]
    if not pool:
        return [garbage()]
    if draw(st.booleans()):                       # in order, some lost, some repeated
        sequence = [f for f in pool for _ in range(draw(REPEATS))] or pool[:1]
    else:                                         # any order: ids up, down, repeated
        sequence = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=40))
    out = []
    for raw in sequence:
        if draw(st.integers(0, 9)) == 0:
            out.append(garbage())
        out.append(raw.encode() if isinstance(raw, str) and draw(st.booleans()) else raw)   # picows: text as bytes
    return out


def test_every_short_path_reads_its_own_top_of_book_frames_as_parse_does():
    for venue in SHORT_PATH:
        record = load_venue(venue)
        proto, keys = subscribed(venue)
        tops = [f for key in keys if key[1] == BBO
                for f in proto.render(*key, [(100.5, 1.5), (99.0, 3.0)], [(100.6, 2.0), (102.0, 3.0)], T0)]
        assert bool(tops) == record.bbo_channel, venue
        for raw in tops:
            [update] = [e for e in record.parse(raw, 0) if isinstance(e, BookUpdate)]
            quote = record.top(raw)
            assert quote is not None and quote[1:5] == (100.5, 1.5, 100.6, 2.0), (venue, quote)
            assert quote[0] == update.symbol and quote[5:] == (update.exch_ts_ms, update.seq, update.xseq), venue
        if venue in MAKERS:
            quote = record.top(MAKERS[venue][0](7, ("100.5", "1.5", "100.6", "2"), False))
            assert quote is not None and quote[1:5] == (100.5, 1.5, 100.6, 2.0) and quote[6] == 7


@functools.cache
def _rendered_of(venue: str):
    return rendered(venue)


@functools.cache
def _frame_lists(venue: str):
    return st.lists(frames(venue), min_size=1, max_size=40)


def check_same_rows(venue: str, sequence: list) -> None:
    (fast, fast_sink, fast_conn), (slow, slow_sink, slow_conn) = sessions(venue)
    for n, raw in enumerate(sequence):
        recv_ns = 1_700_000_000_000_000_000 + n * 1_000_000
        assert fast.receive(raw, recv_ns, fast_conn) == slow.receive(raw, recv_ns, slow_conn), n
        assert rows(fast_sink) == rows(slow_sink), n
        assert fast.stats.counts() == slow.stats.counts(), n
        assert fast.status == slow.status and fast.last_update_ns == slow.last_update_ns, n
        assert fast_conn.reconnect_reason == slow_conn.reconnect_reason
    live = sum(1 for r in fast_sink.rows.values() if r.status == RowStatus.LIVE)
    event(f"rows live at the end: {live}" + ("" if any(r.writes for r in fast_sink.rows.values()) else
                                                 ", no row written"))
    book_f, book_s = fast.books.get(next(iter(fast.books), None)), slow.books.get(next(iter(slow.books), None))
    if book_f is not None:
        assert (book_f.state, book_f.gaps, book_f.stuck_channels, book_f.bbo.last_seq, book_f.bbo.xseq) == \
               (book_s.state, book_s.gaps, book_s.stuck_channels, book_s.bbo.last_seq, book_s.bbo.xseq)


@pytest.mark.parametrize("venue", SHORT_PATH)
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_short_path_writes_the_same_rows_as_the_general_path_on_rendered_frames(venue, data):
    check_same_rows(venue, data.draw(_rendered_of(venue)))



@pytest.mark.parametrize("venue", SHORT_PATH)
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_short_path_writes_the_same_rows_as_the_general_path(venue, data):
    if venue not in MAKERS:
        pytest.skip(f"no hand-written frame maker for {venue}: its rendered frames are checked above")
    check_same_rows(venue, data.draw(_frame_lists(venue)))
