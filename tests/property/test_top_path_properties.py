"""The top-of-book short path decides exactly what the general path decides.

Two sessions receive the same frames: one as the feed runs (a venue's ``top``
frames go through ``InstrumentBook.apply_top`` without event objects), one
with the short path switched off (every frame through ``parse`` and
``InstrumentBook.apply``). After every frame their rows, counters, replies
and row states must be identical. The frames are each venue's top-of-book and
depth messages in their wire shape, with ids that go up, repeat, go down and
restart, numbers that are fine, zero, negative, NaN, out of range or not
numbers, empty sides, and garbage in between.
"""
from __future__ import annotations

import gzip

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.feed.session import FeedSession, MemorySink
from pipeline.venues import load_venue

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


@st.composite
def quotes(draw):
    """(bid_px, bid_qty, ask_px, ask_qty): mostly usable, sometimes not."""
    good = draw(st.integers(0, 3)) > 0
    prices = VALID_PRICES if good else PRICES
    qtys = VALID_QTYS if good else QTYS
    return tuple(draw(st.sampled_from(p)) for p in (prices, qtys, prices, qtys))


def binance_top(seq, q, empty):
    return orjson.dumps({"stream": "btcusdt@bookTicker", "data": {"u": seq, "s": "BTCUSDT", "b": q[0], "B": q[1],
                                                                    "a": q[2], "A": q[3]}}).decode()


def binance_depth(seq, q, empty):
    return orjson.dumps({"stream": "btcusdt@depth5@100ms", "data": {
        "lastUpdateId": seq, "bids": [[q[0], q[1]], ["99.0", "3"]], "asks": [] if empty else [[q[2], q[3]],
                                                                                              ["102.0", "3"]]}}).decode()


def bybit_top(seq, q, empty, kind="snapshot"):
    return orjson.dumps({"topic": "orderbook.1.BTCUSDT", "ts": 1_700_000_000_000 + seq, "type": kind,
                         "data": {"s": "BTCUSDT", "b": [[q[0], q[1]]], "a": [] if empty else [[q[2], q[3]]],
                                  "u": seq, "seq": 1000 + seq}}).decode()


def bybit_depth(seq, q, empty):
    return orjson.dumps({"topic": "orderbook.50.BTCUSDT", "ts": 1_700_000_000_000 + seq, "type": "snapshot",
                         "data": {"s": "BTCUSDT", "b": [[q[0], q[1]], ["99.0", "3"]],
                                  "a": [] if empty else [[q[2], q[3]], ["102.0", "3"]], "u": seq,
                                  "seq": 1000 + seq}}).decode()


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


MAKERS = {"binance": (binance_top, binance_depth), "bybit": (bybit_top, bybit_depth), "okx": (okx_top, okx_depth),
          "htx": (htx_top, htx_depth)}


@st.composite
def frames(draw, venue):
    top, depth = MAKERS[venue]
    kind = draw(st.sampled_from(["top"] * 6 + ["depth", "garbage", "bybit_delta"]))
    seq = draw(st.integers(1, 12))
    q = draw(quotes())
    empty = draw(st.integers(0, 9)) == 0
    if kind == "garbage":
        return draw(st.one_of(st.text(max_size=60), st.binary(max_size=60),
                              st.just(top(seq, q, empty)[:40])))
    if kind == "depth":
        return depth(seq, q, empty)
    if kind == "bybit_delta" and venue == "bybit":
        return bybit_top(seq, q, empty, kind="delta")
    raw = top(seq, q, empty)
    if draw(st.booleans()) and isinstance(raw, str):
        raw = raw.encode()              # picows hands text frames over as bytes
    return raw


def sessions(venue: str):
    out = []
    for short in (True, False):
        sink = MemorySink(5)
        session = FeedSession(load_venue(venue), {}, 5, 10**9, sink, add_unknown=True)
        if not short:
            session.top = None
        out.append((session, sink, session.connection_opened([], 0)))
    return out


def rows(sink: MemorySink) -> dict:
    return {n: (r.status, r.bids, r.asks, r.exch_ts_ns, r.recv_ns, r.gaps, r.checksum_failures, r.writes,
                r.confirmed_ns) for n, r in sink.rows.items()}


def test_every_venue_with_a_top_of_book_channel_has_a_short_path():
    for venue in MAKERS:
        assert load_venue(venue).top is not None
        quote = load_venue(venue).top(MAKERS[venue][0](7, ("100.5", "1.5", "100.6", "2"), False))
        assert quote is not None and quote[1:5] == (100.5, 1.5, 100.6, 2.0) and quote[6] == 7


@pytest.mark.parametrize("venue", sorted(MAKERS))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_short_path_writes_the_same_rows_as_the_general_path(venue, data):
    (fast, fast_sink, fast_conn), (slow, slow_sink, slow_conn) = sessions(venue)
    sequence = data.draw(st.lists(frames(venue), min_size=1, max_size=40))
    for n, raw in enumerate(sequence):
        recv_ns = 1_700_000_000_000_000_000 + n * 1_000_000
        assert fast.receive(raw, recv_ns, fast_conn) == slow.receive(raw, recv_ns, slow_conn), n
        assert rows(fast_sink) == rows(slow_sink), n
        assert fast.stats.words == slow.stats.words, n
        assert fast.status == slow.status and fast.last_update_ns == slow.last_update_ns, n
        assert fast_conn.reconnect_reason == slow_conn.reconnect_reason
    book_f, book_s = fast.books.get(next(iter(fast.books), None)), slow.books.get(next(iter(slow.books), None))
    if book_f is not None:
        assert (book_f.state, book_f.gaps, book_f.stuck_channels, book_f.bbo.last_seq, book_f.bbo.xseq) == \
               (book_s.state, book_s.gaps, book_s.stuck_channels, book_s.bbo.last_seq, book_s.bbo.xseq)
