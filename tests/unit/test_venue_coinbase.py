"""Coinbase Advanced Trade parser against tests/fixtures/coinbase."""
from __future__ import annotations

from functools import partial

import ast
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, Heartbeat, Liveness, SequenceMark, SubscribeError
from pipeline.venues.coinbase import wire as coinbase
from pipeline.venues.coinbase import VENUE as COINBASE_VENUE
from pipeline.venues import load_venue
from pipeline.venues.typed import DECODERS, decoder_for
from tests.conftest import FIXTURES as SHARED, fixture_lines


FIXTURES = SHARED / "coinbase"


lines = partial(fixture_lines, "coinbase")


@pytest.fixture(params=DECODERS)
def parse(request):
    """The tests that parse frames run on each decoder (``venues.coinbase.decoder``): the events must be the same."""
    return decoder_for(load_venue("coinbase"), request.param).parse


@pytest.fixture
def marked(parse):
    def marked(raw, seq: int) -> list:
        """parse, check the SequenceMark comes first, return the rest."""
        events = parse(raw, 0)
        assert events[0] == SequenceMark(seq)
        return events[1:]
    return marked


def utc_ms(*args) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


# ---------------------------------------------------------------- ticker
def test_ticker_real_2026(marked):
    tickers = lines("at_ticker.jsonl")
    [u] = marked(tickers[1], 7)
    assert (u.symbol, u.channel, u.snapshot) == ("ETH-USD", BBO, True)
    assert u.bids == [(1919.42, 1.512673)]
    assert u.asks == [(1919.49, 0.07814824)]
    assert (u.exch_ts_ms, u.seq, u.prev_seq) == (1786309548229, None, None)
    assert u.exch_ts_ms == utc_ms(2026, 8, 9, 21, 5, 48, 229000)
    [u] = marked(tickers[3].encode(), 20)                     # 8 fraction digits: .59377133Z
    assert (u.bids, u.asks, u.exch_ts_ms) == ([(1919.44, 0.02858092)], [(1919.49, 0.07814824)], 1786309548593)
    [u] = marked(tickers[7], 117)
    assert (u.bids, u.asks) == ([(1919.46, 0.0328824)], [(1919.49, 0.07384676)])


def test_ticker_is_weak_and_never_overrides_a_synced_level2_book(marked):
    book = InstrumentBook("ETH-USD", depth=2)
    [snap] = marked(lines("at_level2.jsonl")[1], 21)
    assert book.apply(snap) is Outcome.CHANGED
    [ticker] = marked(lines("at_ticker.jsonl")[1], 7)
    assert ticker.weak
    assert book.apply(ticker) is Outcome.CHANGED
    bids, asks = book.compose()
    assert bids[0] == (1919.44, 0.02858092) and asks[0] == (1919.49, 0.07814824)   # level2, not 1919.42


def test_level2_event_time_with_trimmed_fraction_digits(marked):
    raw = (b'{"channel":"l2_data","timestamp":"2026-08-09T21:05:49.000000001Z","sequence_num":4,"events":[{'
           b'"type":"update","product_id":"ETH-USD","updates":[{"side":"bid","event_time":"2026-08-09T21:05:48.35Z",'
           b'"price_level":"1","new_quantity":"1"},{"side":"bid","event_time":"2026-08-09T21:05:48.351Z",'
           b'"price_level":"2","new_quantity":"1"},{"side":"bid","event_time":"2026-08-09T21:05:48Z",'
           b'"price_level":"3","new_quantity":"1"}]}]}')
    [u] = marked(raw, 4)
    assert u.exch_ts_ms == 1786309548351


def test_ticker_docs_example(marked):
    [u] = marked(lines("at_ticker.jsonl")[0], 0)
    assert (u.symbol, u.bids, u.asks) == ("BTC-USD", [(21931.98, 8000.21)], [(21933.98, 8038.07770938)])
    assert u.exch_ts_ms == 1675974637167 == utc_ms(2023, 2, 9, 20, 30, 37, 167000)


# ---------------------------------------------------------------- level2
def test_level2_full_book_snapshot(marked):
    line = lines("at_level2.jsonl")[1]
    [u] = marked(line, 21)
    assert (u.symbol, u.channel, u.snapshot) == ("ETH-USD", DEPTH, True)
    # L4: the engine's event_time (21:05:48.35161Z), not the envelope send time (21:05:48.618125631Z)
    assert (u.seq, u.prev_seq, u.exch_ts_ms) == (None, None, 1786309548351)
    assert u.bids[:4] == [(1919.44, 0.02858092), (1919.43, 0.05050291), (1919.42, 1.43358917), (1919.41, 1.1531)]
    assert u.asks[:3] == [(1919.49, 0.07814824), (1919.5, 0.03274658), (1919.51, 0.05050291)]
    assert len(u.bids) == line.count('"side":"bid"') and len(u.asks) == line.count('"side":"offer"')
    assert len(u.bids) + len(u.asks) == 23334


def test_level2_update_offer_is_ask(marked):
    level2 = lines("at_level2.jsonl")
    [u] = marked(level2[4], 25)
    assert (u.symbol, u.channel, u.snapshot) == ("ETH-USD", DEPTH, False)
    assert u.bids == [(1679.53, 0.05972024)]
    assert u.asks == [(1921.5, 0.0948519)]
    assert (u.seq, u.prev_seq, u.exch_ts_ms) == (None, None, 1786309548559)   # event_time, not 48.629
    [u] = marked(level2[2], 22)
    assert u.bids == [(1918.55, 0.00000131), (1917.95, 1.1531), (1917.35, 0.0)] and u.asks == []


def test_level2_docs_example_has_one_side(marked):
    [u] = marked(lines("at_level2.jsonl")[0], 0)
    assert (u.symbol, u.snapshot, u.bids, u.asks) == ("BTC-USD", True, [(21921.73, 0.06317902), (21921.3, 0.02)], [])
    # every event_time is the 1970-01-01T00:00:00Z placeholder: the envelope time 2023-02-09T20:32:50.714964855Z
    assert u.exch_ts_ms == utc_ms(2023, 2, 9, 20, 32, 50, 714000)


def test_level2_through_book(parse):
    book = InstrumentBook("ETH-USD", depth=5, keep_levels=COINBASE_VENUE.book_levels)
    level2 = lines("at_level2.jsonl")
    for line in level2[1:]:
        [u] = parse(line, 0)[1:]
        assert book.apply(u) == Outcome.CHANGED
    bids, asks = book.compose()
    assert bids == [(1919.44, 0.02858092), (1919.43, 0.05050291), (1919.42, 1.43358917), (1919.41, 1.1531),
                    (1919.38, 1.0)]
    assert asks == [(1919.49, 0.07814824), (1919.5, 0.03274658), (1919.51, 0.05050291), (1919.52, 2.08409363),
                    (1919.56, 1.0)]                       # 1919.56 set to 1 by the last update
    side_bids, side_asks = book.book.bids.levels, book.book.asks.levels
    assert -1917.35 not in side_bids and -1679.53 not in side_bids   # deleted by new_quantity "0"
    assert side_bids[-1917.95] == 1.1531 and side_bids[-1890.64] == 0.00107357
    assert side_asks[1921.5] == 0.0948519 and side_asks[1919.56] == 1.0


# ---------------------------------------------------------------- control
def test_heartbeats_and_subscriptions(marked):
    recv = lines("at_control_recv.jsonl")
    # an in-sequence heartbeat proves every book of the connection current (L5)
    assert marked(recv[0], 0) == [Liveness(None)]        # docs: heartbeat_counter as a string
    assert marked(recv[6], 35) == [Liveness(None)]       # live: an integer
    assert marked(recv[1], 2) == [Ack("BTC-USD", "market_trades"), Ack("ETH-USD", "market_trades")]
    acks = marked(recv[5], 26)
    assert Ack("", "heartbeats") in acks
    assert {a for a in acks if a.channel in ("level2", "ticker")} == {
        Ack("BTC-USD", "level2"), Ack("ETH-USD", "level2"), Ack("BTC-USD", "ticker"), Ack("ETH-USD", "ticker")}


def test_other_channels_only_mark_the_sequence(parse):
    assert parse(lines("at_other.jsonl")[0], 0) == [SequenceMark(0)]
    with pytest.raises(ParseError):
        parse(b'{"channel":"candles","events":[]}', 0)             # nothing to count either


def test_errors(parse):
    assert parse(b'{"type":"error","message":"failure to subscribe"}', 0) == [
        SubscribeError("failure to subscribe")]
    assert parse(b'{"type":"error","message":"Failed to subscribe","reason":"BTC-USDX is not a valid '
                 b'product"}', 0) == [SubscribeError("Failed to subscribe: BTC-USDX is not a valid product",
                                                     "BTC-USDX")]
    with pytest.raises(ParseError) as exc:
        parse(b'{"channel":"l2_data","timestamp":"x","sequence_num":3,"events":[]}', 0)
    assert exc.value.reason == "unknown_message"
    with pytest.raises(ParseError) as exc:
        parse(b'{"channel":"l2_data","timestamp":"2026-08-09T21:05:48Z","sequence_num":3,"events":'
              b'[{"type":"update","product_id":"A-B","updates":[{"side":"sell","price_level":"1",'
              b'"new_quantity":"1"}]}]}', 0)
    assert exc.value.reason == "unknown_message"


def test_exchange_feed_lines(parse):
    ticker, heartbeat, error, l2update = lines("exchange_feed.jsonl")
    with pytest.raises(ParseError):
        parse(ticker, 0)                                 # no best_bid_size/best_ask_size: no usable quote
    sized = orjson.loads(ticker) | {"best_bid_size": "0.5", "best_ask_size": "0.25"}
    [u] = parse(orjson.dumps(sized), 0)
    assert (u.symbol, u.channel, u.bids, u.asks) == ("BTC-USD", BBO, [(9380.54, 0.5)], [(9380.55, 0.25)])
    assert (u.seq, u.exch_ts_ms) == (12042642428, utc_ms(2020, 2, 1, 1, 40, 16, 253000))
    assert parse(heartbeat, 0) == [Heartbeat()]
    [err] = parse(error, 0)
    assert isinstance(err, SubscribeError) and "require authentication" in err.message
    [u] = parse(l2update, 0)
    assert (u.symbol, u.channel, u.snapshot, u.bids, u.asks) == ("BTC-USD", DEPTH, False, [], [(30862.6, 0.0)])
    assert u.exch_ts_ms == utc_ms(2023, 7, 4, 18, 14, 39)   # no zone: UTC


def test_build_subscribe_matches_capture():
    assert coinbase.native_symbol("BTC/USD") == "BTC-USD"
    # W4: level2 and heartbeats only; the ticker (trades only) never feeds the top of book
    assert coinbase.build_subscribe(["BTC-USD", "ETH-USD"], 5) == lines("at_control_sent.jsonl")[3:5]
    assert coinbase.build_resubscribe("BTC-USD", 5) == [
        '{"type":"unsubscribe","product_ids":["BTC-USD"],"channel":"level2"}',
        '{"type":"subscribe","product_ids":["BTC-USD"],"channel":"level2"}']
    assert COINBASE_VENUE.keepalive_interval_s is None and coinbase.build_keepalive() is None


@pytest.mark.parametrize("text, expected", [
    ("2026-08-09T21:05:48.618125631Z", utc_ms(2026, 8, 9, 21, 5, 48, 618000)),
    ("2024-02-29T23:59:59.999999Z", utc_ms(2024, 2, 29, 23, 59, 59, 999000)),
    ("1970-01-01T00:00:00Z", 0),
    ("2000-03-01T00:00:00.5+02:00", utc_ms(2000, 2, 29, 22, 0, 0, 500000)),
    ("2023-07-04T18:14:39", utc_ms(2023, 7, 4, 18, 14, 39)),
])
def test_rfc3339_ms(text, expected):
    assert coinbase.rfc3339_ms(text) == expected


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_rfc3339_ms_matches_datetime(dt):
    text = dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    expected = (dt.replace(tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(
        milliseconds=1)
    assert coinbase.rfc3339_ms(text) == expected


def test_module_contract():
    tree = ast.parse(Path(coinbase.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"asyncio", "websockets", "socket", "time", "multiprocessing", "datetime"}
    assert (coinbase.NAME, COINBASE_VENUE.book_levels, COINBASE_VENUE.taker_fee_bps) == ("coinbase", None, 120.0)


# ---------------------------------------------------------------- fuzz
@pytest.mark.parametrize("decoder", DECODERS)
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_parse_arbitrary_bytes_raises_only_parse_error(decoder, raw):
    parse = decoder_for(load_venue("coinbase"), decoder).parse
    try:
        parse(raw, 0)
    except ParseError:
        pass


_SAMPLES = [line for name in ("at_control_recv.jsonl", "at_ticker.jsonl", "exchange_feed.jsonl")
            for line in lines(name)] + [line for line in lines("at_level2.jsonl") if len(line) < 10000]


@pytest.mark.parametrize("decoder", DECODERS)
@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_SAMPLES), st.integers(0, 2000), st.integers(0, 40), st.binary(max_size=8))
def test_parse_mutated_fixture_raises_only_parse_error(decoder, line, at, cut, insert):
    parse = decoder_for(load_venue("coinbase"), decoder).parse
    raw = line.encode()
    at %= len(raw)
    try:
        parse(raw[:at] + insert + raw[at + cut:], 0)
    except ParseError:
        pass
