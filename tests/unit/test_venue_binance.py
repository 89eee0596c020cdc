"""Binance parser against real messages (tests/fixtures/binance)."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, Notice, RowStatus, SchemaDrift, SubscribeError
from pipeline.venues import load_venue
from pipeline.venues.binance import wire as binance
from tests.conftest import examples, fixture_lines
from tests.property import test_sim_fuzz as fuzz
from tests.unit import test_sim_protocols as sim

VENUE = load_venue("binance")


@pytest.fixture
def parse():
    return VENUE.parse


def test_book_ticker_raw_and_combined(parse):
    lines = fixture_lines("binance", "bbo.jsonl")
    [u] = parse(lines[1], 0)
    assert (u.symbol, u.channel, u.snapshot, u.seq, u.exch_ts_ms) == ("BTCUSDT", BBO, True, 98494969448, 0)
    assert u.xseq == 98494969448                          # bookTicker `u` orders it against depth
    assert u.bids == [(63704.0, 4.77471)] and u.asks == [(63704.01, 11.33198)]
    [u] = parse(lines[3], 0)
    assert (u.symbol, u.seq) == ("BTCUSDT", 1127645101)
    assert u.bids == [(8010.0, 0.142459)] and u.asks == [(8012.15, 0.031201)]


def test_partial_depth_takes_symbol_from_stream_name(parse):
    lines = fixture_lines("binance", "depth5.jsonl")
    [u] = parse(lines[1], 0)
    assert (u.symbol, u.channel, u.snapshot, u.seq, u.xseq) == ("BNBUSDT", DEPTH, True, 13919791373, 13919791373)
    assert u.bids[0] == (656.72, 29.052) and u.bids[4] == (656.68, 0.025)
    assert u.asks[0] == (656.73, 21.012) and u.asks[4] == (656.77, 0.625)
    [u] = parse(lines[2], 0)
    assert u.symbol == "ETHUSDT" and u.bids == [(1782.0, 6.483), (1781.95, 0.03)]
    with pytest.raises(ParseError):      # raw /ws partial depth carries no symbol at all
        parse(lines[0], 0)


def test_control_messages(parse):
    lines = fixture_lines("binance", "control_recv.jsonl")
    assert parse(lines[0], 0) == [Ack()]
    planned = Notice("server shutdown announced", reconnect=True, planned=True)
    assert parse(lines[3], 0) == [planned]               # raw stream
    assert parse(lines[4], 0) == [planned]               # combined stream `!serverShutdown`
    [err] = parse(lines[6], 0)
    assert isinstance(err, SubscribeError) and "too many parameters" in err.message


def test_subscribe_frame_shape():
    [frame] = binance.build_subscribe(["BTCUSDT"], 5)
    assert frame == '{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","btcusdt@depth5@100ms"],"id":1}'
    assert binance.native_symbol("BTC/USDT") == "BTCUSDT"


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(raw):
    try:
        events = VENUE.parse(raw, 0)
    except ParseError:
        return
    assert all(isinstance(e, (BookUpdate, Ack, Notice, SubscribeError, SchemaDrift)) for e in events)


def test_a_field_binance_adds_is_decoded_and_reported_once_per_frame(parse):
    line = fixture_lines("binance", "bbo.jsonl")[3]            # combined stream
    [before] = parse(line, 0)
    added = line.replace('"data":{', '"data":{"E":1700000000000,', 1).replace('{"stream"', '{"sig":"x","stream"', 1)
    after, drift = parse(added, 0)
    assert repr(after) == repr(before)
    assert drift == SchemaDrift("BookTickerFrame", "Object contains unknown field `sig`")
    assert VENUE.top(added) is None                     # the short path takes exact frames only: parse counts it
    raw = fixture_lines("binance", "bbo.jsonl")[1]              # the raw /ws payload
    assert repr(parse(raw.replace('{"u"', '{"E":1,"u"', 1), 0)) == repr([*parse(raw, 0), SchemaDrift(
        "BookTicker", "Object contains unknown field `E`")])
    [u, drift] = parse(fixture_lines("binance", "depth5.jsonl")[1].replace('"bids"', '"T":1,"bids"', 1), 0)
    assert u.channel == DEPTH and drift.message == "PartialDepthFrame" and "`T`" in drift.detail


@pytest.mark.parametrize("frame, words", [
    ('{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":null,"B":"1","a":"2","A":"1"}}', "$.data.b"),
    ('{"stream":"btcusdt@bookTicker","data":{"u":[1],"s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}', "$.data.u"),
    ('{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"x1","B":"1","a":"2","A":"1"}}', "$.data.b"),
    ('{"stream":"btcusdt@depth5@100ms","data":{"lastUpdateId":5,"bids":[["1"]],"asks":[]}}', "$.data.bids[0]"),
])
def test_a_frame_of_the_wrong_shape_is_refused_with_where(parse, frame, words):
    with pytest.raises(ParseError) as err:
        parse(frame, 0)
    assert err.value.reason == "unknown_message" and words in err.value.detail
    assert VENUE.top(frame) is None


def test_the_short_path_agrees_with_parse_on_every_captured_frame():
    for name in ("bbo.jsonl", "depth5.jsonl", "control_recv.jsonl"):
        for line in fixture_lines("binance", name):
            try:
                events = VENUE.parse(line, 0)
            except ParseError:
                events = None
            quote = VENUE.top(line)
            if quote is not None:
                [u] = events
                assert (u.channel, u.bids, u.asks, u.seq, u.xseq) == \
                    (BBO, [quote[1:3]], [quote[3:5]], quote[6], quote[7])
                assert u.symbol == quote[0]


def test_late_depth_never_overrides_a_newer_book_ticker(parse):
    """W1: depth lastUpdateId 90 -> bookTicker u 100 -> depth 95 delivered late: the top stays the ticker's."""
    book = InstrumentBook("BTCUSDT", depth=2)

    def depth(last, bid):
        return parse('{"stream":"btcusdt@depth5@100ms","data":{"lastUpdateId":%d,'
                     '"bids":[["%s","1.0"],["99.0","2.0"]],"asks":[["100.5","1.0"],["101.0","2.0"]]}}'
                     % (last, bid), 0)[0]

    ticker = parse('{"stream":"btcusdt@bookTicker","data":{"u":100,"s":"BTCUSDT","b":"99.9",'
                   '"B":"3.0","a":"100.5","A":"1.0"}}', 0)[0]
    assert book.apply(depth(90, "100.0")) is Outcome.CHANGED
    assert book.apply(ticker) is Outcome.CHANGED
    assert book.compose()[0] == [(99.9, 3.0), (99.0, 2.0)]
    assert book.apply(depth(95, "100.0")) is Outcome.CHANGED
    assert book.compose()[0] == [(99.9, 3.0), (99.0, 2.0)]        # not the older 100.0
    assert book.state == RowStatus.LIVE
    assert book.apply(depth(105, "99.95")) is Outcome.CHANGED     # a newer depth wins again
    assert book.compose()[0] == [(99.95, 1.0), (99.0, 2.0)]


# ---------------------------------------------------------------- the simulator's Binance (sim-fidelity M1-M8)
def test_the_record_says_frames_carry_no_time_and_an_unknown_symbol_is_not_refused():
    assert VENUE.exchange_time is False and VENUE.refuses_unknown_symbols is False


def test_sim_acks_a_stream_of_an_unknown_symbol_once_and_stays_silent():
    proto = sim.setup("binance")[1]
    proto.on_connect()
    unknown = VENUE.native_symbol(sim.UNKNOWN)
    events = [e for frame in VENUE.build_subscribe([unknown], sim.SHOWN)
              for e in sim.parse_all(VENUE, proto.on_message(frame))]
    assert events == [Ack()] and not proto.subscriptions


def test_binance_unknown_streams_get_the_error_object_and_change_nothing():
    _, proto, _, state = sim.served("binance")
    for stream in ("ethusdt@kline_1m", "ethusdt@depth7", "ethusdt@avgPrice", "ETHUSDT@trade", 7):
        reply = orjson.loads(proto.on_message(orjson.dumps({"method": "SUBSCRIBE", "params": [stream], "id": 9}))[0])
        assert reply["id"] == 9 and reply["error"]["code"] == 2 and "Invalid request" in reply["error"]["msg"]
    assert not proto.subscriptions and sim.step(proto, state, 1, sim.T0) == []
    bad = orjson.loads(proto.on_message('{"method":"SUBSCRIBE","params":["ethusdt@trade","ethusdt@x"],"id":3}')[0])
    assert "error" in bad and not proto.subscriptions          # one bad name refuses the whole request


def test_binance_each_stream_is_answered_under_its_own_name_with_its_own_payload():
    _, proto, symbol, state = sim.served("binance")
    streams = ["ethusdt@trade", "ethusdt@aggTrade", "ethusdt@ticker", "ethusdt@miniTicker", "ethusdt@depth@100ms"]
    assert orjson.loads(proto.on_message(orjson.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}))[0]) \
        == {"result": None, "id": 1}
    listed = orjson.loads(proto.on_message('{"method":"LIST_SUBSCRIPTIONS","id":2}')[0])["result"]
    assert listed == streams
    frames = sim.step(proto, state, 1, sim.T0) + sim.step(proto, state, 2, sim.T0 + 20)
    events = {f["stream"]: f["data"]["e"] for f in frames}
    assert events == {"ethusdt@trade": "trade", "ethusdt@aggTrade": "aggTrade", "ethusdt@ticker": "24hrTicker",
                      "ethusdt@miniTicker": "24hrMiniTicker", "ethusdt@depth@100ms": "depthUpdate"}
    diffs = [f["data"] for f in frames if f["stream"] == "ethusdt@depth@100ms"]
    assert diffs[1]["U"] == diffs[0]["u"] + 1 and "pu" not in diffs[1] and diffs[1]["s"] == symbol
    ticker = next(f["data"] for f in frames if f["stream"] == "ethusdt@ticker")
    assert float(ticker["l"]) <= float(ticker["c"]) <= float(ticker["h"]) and ticker["b"] == "3200.01000000"
    trade = next(f["data"] for f in frames if f["stream"] == "ethusdt@trade")
    assert float(trade["p"]) in (3200.01, 3200.11)                     # at the top of step 1's book


def test_binance_rest_snapshot_lines_up_with_the_diff_stream():
    from pipeline.venues.binance.sim import Protocol
    _, proto, symbol, state = sim.served("binance")
    proto.on_message('{"method":"SUBSCRIBE","params":["ethusdt@depth@100ms"],"id":1}')
    sim.step(proto, state, 1, sim.T0)
    status, snapshot = Protocol.render_rest("/api/v3/depth", {"symbol": symbol, "limit": "5"}, proto.states, {})
    assert status == 200 and len(snapshot["bids"]) == 5 and snapshot["lastUpdateId"] == state.book_id
    update = sim.step(proto, state, 2, sim.T0 + 20)[0]["data"]
    assert update["U"] == snapshot["lastUpdateId"] + 1
    assert Protocol.render_rest("/api/v3/depth", {"symbol": "NOPE"}, proto.states, {})[0] == 400
    assert Protocol.render_rest("/api/v3/klines", {}, proto.states, {})[0] == 404


def test_binance_url_streams_and_the_raw_endpoint():
    _, raw, _, state = sim.served("binance", "/ws/ethusdt@bookTicker")
    raw.on_connect()
    frame = sim.step(raw, state, 1, sim.T0)[0]
    assert set(frame) == {"u", "s", "b", "B", "a", "A"}                # bare payload on /ws
    assert orjson.loads(raw.on_message('{"method":"SET_PROPERTY","params":["combined",true],"id":5}')[0]) \
        == {"result": None, "id": 5}
    assert sim.step(raw, state, 2, sim.T0 + 20)[0]["stream"] == "ethusdt@bookTicker"
    _, combined, _, state = sim.served("binance", "/stream?streams=ethusdt@bookTicker/ethusdt@kline_1m/ethusdt@trade")
    combined.on_connect()
    assert [c for _, c in combined.subscriptions] == [BBO, "trade"]      # the unknown stream is left out
    assert {f["stream"] for f in sim.step(combined, state, 1, sim.T0)} == {"ethusdt@bookTicker", "ethusdt@trade"}


# ---------------------------------------------------------------- fuzzing the simulator with Binance's request shapes
def _fuzz_requests():
    lower = fuzz.native("binance").lower()
    name = fuzz.names([f"{lower}@{k}" for k in ("bookTicker", "depth5@100ms", "depth20", "depth", "depth@100ms",
                                                "depth@1000ms", "ticker", "miniTicker", "trade", "aggTrade",
                                                "kline_1m", "depth7", "avgPrice", "")] + ["BTCUSDT@trade", "@trade"])
    anything = fuzz.json_values
    return fuzz.shaped(st.fixed_dictionaries({"method": st.one_of(st.sampled_from(
        ["SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY", "PING"]), anything),
        "params": st.one_of(st.lists(name, max_size=4), st.lists(st.sampled_from(["combined", True, False, 1]),
                                                                  max_size=3), anything),
        "id": anything}))


test_sim_never_raises_on_binance_requests = fuzz.fuzz("binance", _fuzz_requests(), [
    "/ws", "/ws/btcusdt@trade", "/stream?streams=btcusdt@trade/btcusdt@kline_1m",
    "/ws/btcusdt@nonsense/btcusdt@depth@100ms"])
