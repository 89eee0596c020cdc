"""Coinbase Advanced Trade parser against tests/fixtures/coinbase."""
from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, Heartbeat, Liveness, SchemaDrift, SequenceMark, SubscribeError
from pipeline.venues import load_venue
from pipeline.venues._common import rfc3339_ms
from pipeline.venues.coinbase import VENUE as COINBASE_VENUE
from pipeline.venues.coinbase import wire as coinbase
from tests.conftest import FIXTURES as SHARED
from tests.conftest import examples, fixture_lines
from tests.property import test_sim_fuzz as fuzz
from tests.unit import test_sim_protocols as sim

FIXTURES = SHARED / "coinbase"


lines = partial(fixture_lines, "coinbase")


@pytest.fixture
def parse():
    return load_venue("coinbase").parse


@pytest.fixture
def marked(parse):
    def marked(raw, seq: int) -> list:
        """parse, check the SequenceMark comes first, return the rest."""
        events = parse(raw, 0)
        assert events[0] == SequenceMark(seq)
        return events[1:]
    return marked


def utc_ms(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


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
    assert rfc3339_ms(text) == expected


@settings(max_examples=examples(200), deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_rfc3339_ms_matches_datetime(dt):
    text = dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    expected = (dt.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1)
    assert rfc3339_ms(text) == expected


def test_module_contract():
    tree = ast.parse(Path(coinbase.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"asyncio", "websockets", "socket", "time", "multiprocessing", "datetime"}
    assert (coinbase.NAME, COINBASE_VENUE.book_levels, COINBASE_VENUE.taker_fee_bps) == ("coinbase", None, 120.0)


# ---------------------------------------------------------------- the wire declarations (wire.py structs)
def values(events: list) -> list:
    """Events as comparable values (BookUpdate compares by identity): every slot, with its type."""
    return [tuple((getattr(e, s), type(getattr(e, s))) for s in BookUpdate.__slots__) if isinstance(e, BookUpdate)
            else e for e in events]


def with_field(line: str, path: tuple, name: str, value) -> bytes:
    """The fixture frame with ``name: value`` added to the object at ``path`` (keys and indexes)."""
    msg = orjson.loads(line)
    node = msg
    for key in path:
        node = node[key]
    node[name] = value
    return orjson.dumps(msg)


@pytest.mark.parametrize("name, index, path, struct", [
    ("at_level2.jsonl", 4, (), "Level2Message"),
    ("at_level2.jsonl", 4, ("events", 0, "updates", 1), "Level2Message"),
    ("at_level2.jsonl", 1, ("events", 0, "updates", 23333), "Level2Message"),     # the last level of the full book
    ("at_ticker.jsonl", 1, (), "TickerMessage"),
    ("at_ticker.jsonl", 2, ("events", 0, "tickers", 0), "TickerMessage"),
])
def test_an_unknown_field_is_schema_drift_next_to_the_same_events(parse, name, index, path, struct):
    line = lines(name)[index]
    raw = with_field(line, path, "new_field_x", "1")
    events = parse(raw, 0)
    *same, drift = events
    assert values(same) == values(parse(line, 0))
    assert drift.__class__ is SchemaDrift and drift.message == struct and "`new_field_x`" in drift.detail
    assert [e for e in events if isinstance(e, SchemaDrift)] == [drift]


def test_unknown_fields_in_the_envelope_and_in_an_update_are_one_schema_drift(parse):
    line = lines("at_level2.jsonl")[6]
    msg = orjson.loads(line)
    msg["extra_envelope"] = 1
    msg["events"][0]["updates"][3]["extra_update"] = {"a": [1, 2]}
    events = parse(orjson.dumps(msg), 0)
    assert values(events[:-1]) == values(parse(line, 0))
    assert [e.__class__ for e in events].count(SchemaDrift) == 1
    # msgspec names the first unknown field in wire order (the envelope's comes after ``events`` here)
    assert events[-1].message == "Level2Message" and "`extra_update`" in events[-1].detail


def test_real_frames_have_no_schema_drift(parse):
    for name in ("at_level2.jsonl", "at_ticker.jsonl", "at_control_recv.jsonl", "at_other.jsonl"):
        for line in lines(name):
            assert not any(isinstance(e, SchemaDrift) for e in parse(line, 0)), (name, line[:80])


@pytest.mark.parametrize("name, index, path, key, value", [
    ("at_level2.jsonl", 4, ("events", 0, "updates", 0), "price_level", None),
    ("at_level2.jsonl", 4, ("events", 0, "updates", 1), "new_quantity", [1]),
    ("at_level2.jsonl", 4, ("events", 0, "updates", 0), "price_level", "12a"),
    ("at_level2.jsonl", 4, (), "events", {"type": "update"}),
    ("at_level2.jsonl", 4, (), "events", ""),
    ("at_level2.jsonl", 4, ("events", 0), "updates", "none"),
    ("at_level2.jsonl", 4, ("events", 0), "product_id", 7),
    ("at_level2.jsonl", 4, (), "sequence_num", "25x"),
    ("at_level2.jsonl", 4, (), "timestamp", None),
    ("at_ticker.jsonl", 2, (), "events", None),
    ("at_ticker.jsonl", 2, ("events", 0, "tickers", 0), "best_bid", "x"),
])
def test_a_wrong_type_is_a_parse_error(parse, name, index, path, key, value):
    raw = with_field(lines(name)[index], path, key, value)
    with pytest.raises(ParseError) as exc:
        parse(raw, 0)
    assert exc.value.reason == "unknown_message"


@pytest.mark.parametrize("missing", ["price_level", "new_quantity", "side", "updates", "type", "product_id", "events",
                                     "timestamp", "channel"])
def test_a_missing_field_is_a_parse_error(parse, missing):
    msg = orjson.loads(lines("at_level2.jsonl")[4])
    for node in (msg, msg["events"][0], msg["events"][0]["updates"][0]):
        node.pop(missing, None)
    with pytest.raises(ParseError):
        parse(orjson.dumps(msg), 0)


def test_a_frame_that_is_not_json_is_named_so(parse):
    line = lines("at_level2.jsonl")[4]
    for raw in (line[:-1], line[:120], line.replace('"0.0948519"', "0.0948519x"),
                line.replace('"product_id":"ETH-USD"', '"product_id":7,,"x":1'),   # a wrong type before bad JSON
                line.encode().replace(b"ETH-USD", b"\xffTH-USD"), line.replace("ETH-USD", "\ud800TH-USD"),
                b'{"channel":"l2_data","x":' + b"[" * 5000 + b"]" * 5000 + b"}"):
        with pytest.raises(ParseError) as exc:
            parse(raw, 0)
        assert exc.value.reason == "invalid_json", raw[:200]


def test_every_frame_type_and_layout_reads_alike(parse):
    """str, bytes, bytearray, memoryview; the channel not first or spaced (the marker misses): the same events."""
    for name, index in (("at_level2.jsonl", 4), ("at_level2.jsonl", 0), ("at_ticker.jsonl", 7)):
        line = lines(name)[index]
        expected = parse(line, 0)
        msg = orjson.loads(line)
        reordered = orjson.dumps({k: msg[k] for k in reversed(msg)})
        spaced = line.replace('":', '": ').replace('","', '", "')
        for raw in (line.encode(), bytearray(line.encode()), memoryview(line.encode()), reordered, spaced,
                    spaced.encode()):
            assert values(parse(raw, 0)) == values(expected), raw[:60]


def test_ticker_empty_or_absent_best_levels_are_no_level(parse):
    line = lines("at_ticker.jsonl")[2]
    [_, u] = parse(with_field(line, ("events", 0, "tickers", 0), "best_bid", ""), 0)
    assert (u.bids, u.asks, u.weak) == ([], [(1919.49, 0.07814824)], True)
    [_, u] = parse(with_field(line, ("events", 0, "tickers", 0), "best_ask_quantity", None), 0)
    assert (u.bids, u.asks) == ([(1919.44, 0.02858092)], [])
    msg = orjson.loads(line)
    for key in ("best_bid", "best_bid_quantity", "best_ask", "best_ask_quantity"):
        del msg["events"][0]["tickers"][0][key]
    assert parse(orjson.dumps(msg), 0)[1].bids == [] and parse(orjson.dumps(msg), 0)[1].asks == []


def test_marker_in_another_channel_is_still_that_channel(parse):
    raw = b'{"channel":"heartbeats","note":{"channel":"l2_data"},"sequence_num":4,"events":[]}'
    assert parse(raw, 0) == [SequenceMark(4), Liveness(None)]
    raw = b'{"channel":"market_trades","x":{"channel":"ticker"},"timestamp":"x","sequence_num":5,"events":[]}'
    assert parse(raw, 0) == [SequenceMark(5)]


def test_no_top_path():
    assert load_venue("coinbase").top is None


# ---------------------------------------------------------------- fuzz
@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=512))
def test_parse_arbitrary_bytes_raises_only_parse_error(raw):
    parse = load_venue("coinbase").parse
    try:
        parse(raw, 0)
    except ParseError:
        pass


_SAMPLES = [line for name in ("at_control_recv.jsonl", "at_ticker.jsonl", "exchange_feed.jsonl")
            for line in lines(name)] + [line for line in lines("at_level2.jsonl") if len(line) < 10000]


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(_SAMPLES), st.integers(0, 2000), st.integers(0, 40), st.binary(max_size=8))
def test_parse_mutated_fixture_raises_only_parse_error(line, at, cut, insert):
    parse = load_venue("coinbase").parse
    raw = line.encode()
    at %= len(raw)
    try:
        parse(raw[:at] + insert + raw[at + cut:], 0)
    except ParseError:
        pass


# ---------------------------------------------------------------- the simulator's Coinbase (sim-fidelity M1-M8)
def test_the_record_says_there_is_no_top_of_book_channel_and_the_sim_serves_level2_only():
    assert COINBASE_VENUE.bbo_channel is False and COINBASE_VENUE.top is None
    venue, proto, symbol = sim.setup("coinbase")
    sim.subscribe(venue, proto, symbol, sim.Sequence())
    assert list(proto.subscriptions) == [(symbol, DEPTH)]


def test_coinbase_heartbeats_and_sequence():
    venue, proto, symbol = sim.setup("coinbase")
    seq = sim.Sequence()
    assert proto.keepalive(sim.T0) == []                 # heartbeats not subscribed
    sim.subscribe(venue, proto, symbol, seq)
    acks = seq.strip(sim.parse_all(venue, proto.on_message(venue.build_subscribe([symbol], sim.SHOWN)[1])))
    assert Ack("", "heartbeats") in acks                 # the whole subscription set, again
    for _ in range(3):
        assert seq.strip(sim.parse_all(venue, proto.keepalive(sim.T0))) == [Liveness(None)]
    assert seq.last == 5                                 # 2 subscriptions + 1 again + 3 heartbeats, from 0


def test_coinbase_market_trades_ticker_statistics_and_refused_channels():
    venue, proto, symbol, state = sim.served("coinbase")
    proto.on_message(orjson.dumps({"type": "subscribe", "channel": "market_trades", "product_ids": [symbol]}))
    proto.on_message(orjson.dumps({"type": "subscribe", "channel": "ticker", "product_ids": [symbol]}))
    frames = sim.step(proto, state, 1, sim.T0)
    trades = next(f for f in frames if f["channel"] == "market_trades")["events"][0]
    assert trades["type"] == "snapshot" and trades["trades"][0]["side"] in ("BUY", "SELL")
    ticker = next(f for f in frames if f["channel"] == "ticker")["events"][0]["tickers"][0]
    assert {"volume_24_h", "low_24_h", "high_24_h", "low_52_w", "high_52_w", "price_percent_chg_24_h"} <= set(ticker)
    assert [f["sequence_num"] for f in frames] == sorted(f["sequence_num"] for f in frames)
    for channel in ("candles", "status", "ticker_batch", "level3"):
        refused = orjson.loads(proto.on_message(orjson.dumps({"type": "subscribe", "channel": channel,
                                                              "product_ids": [symbol]}))[0])
        assert refused["type"] == "error" and refused["message"] == "Failed to subscribe"


# ---------------------------------------------------------------- fuzzing the simulator with Coinbase's request shapes
def _fuzz_requests():
    name = fuzz.names(["ticker", "level2", "heartbeats", "market_trades", "candles", "status", "ticker_batch", ""])
    anything = fuzz.json_values
    return fuzz.shaped(st.fixed_dictionaries({
        "type": st.one_of(st.sampled_from(["subscribe", "unsubscribe"]), anything),
        "channel": name,
        "product_ids": st.one_of(st.lists(fuzz.symbols("coinbase"), max_size=3), anything)}))


test_sim_never_raises_on_coinbase_requests = fuzz.fuzz("coinbase", _fuzz_requests())
