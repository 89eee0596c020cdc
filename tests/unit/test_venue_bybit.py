"""Bybit v5 parser against real messages (tests/fixtures/bybit)."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, Pong, SchemaDrift, SubscribeError
from pipeline.venues import load_protocol, load_venue
from pipeline.venues.bybit import wire as bybit
from tests.conftest import FIXTURES, examples, fixture_lines
from tests.property import test_sim_fuzz as fuzz
from tests.unit import test_sim_protocols as sim


@pytest.fixture
def parse():
    """The venue's one parse (its messages are declared once, in ``venues/bybit/wire.py``)."""
    return load_venue("bybit").parse


def test_orderbook_1_spot_snapshot_and_delta(parse):
    lines = fixture_lines("bybit", "bbo.jsonl")
    [u] = parse(lines[0], 0)
    assert (u.symbol, u.channel, u.snapshot, u.seq, u.exch_ts_ms) == ("BTCUSDT", BBO, True, 20404754, 1680652806504)
    assert u.bids == [(28165.07, 0.175231)] and u.asks == [(28165.08, 0.996816)]
    [d] = parse(lines[1], 0)
    assert (d.snapshot, d.seq, d.asks) == (False, 20404755, [])
    [u] = parse(lines[2], 0)
    assert (u.symbol, u.exch_ts_ms) == ("BANDUSDT", 1749833474768)     # cts, the matching-engine time


def test_depth_snapshot_then_deltas_through_the_book(parse):
    lines = fixture_lines("bybit", "depth.jsonl")
    book = InstrumentBook("BTCUSDT", depth=5, keep_levels=bybit.BOOK_LEVELS)
    [snap] = parse(lines[3], 0)
    assert (snap.channel, snap.snapshot, snap.seq) == (DEPTH, True, 15076952)
    assert book.apply(snap) is Outcome.CHANGED
    for line, seq in zip(lines[4:7], (15076953, 15076954, 15076955)):
        [delta] = parse(line, 0)
        assert (delta.seq, delta.prev_seq) == (seq, seq - 1)
        assert book.apply(delta) is Outcome.CHANGED
    bids, asks = book.compose()
    assert bids[0] == (65114.2, 6.054)
    assert bids[1] == (65114.1, 0.045)      # updated by the second delta
    assert asks[0] == (65114.3, 10.488)


def test_cross_sequence_orders_orderbook_1_against_orderbook_50(parse):
    """W1 on real 2023 BTCUSDT frames: depth seq 4281282229 is newer than L1 seq 4281281875, whatever the arrival."""
    bbo = fixture_lines("bybit", "bbo.jsonl")
    depth = fixture_lines("bybit", "depth.jsonl")
    [l1] = parse(bbo[1], 0)
    [snap] = parse(depth[1], 0)
    assert (l1.xseq, snap.xseq) == (4281281875, 4281282229)
    book = InstrumentBook("BTCUSDT", depth=2, keep_levels=bybit.BOOK_LEVELS)
    assert book.apply(parse(bbo[0], 0)[0]) is Outcome.CHANGED
    assert book.apply(snap) is Outcome.CHANGED
    assert book.apply(l1) is Outcome.CHANGED              # arrives last, but was generated earlier
    bids, asks = book.compose()
    assert bids[0] == (28162.57, 0.07562) and asks[0] == (28162.58, 0.506829)   # the depth book's top


def test_restart_u1_rearms_the_top_of_book_ids(parse):
    """T3: after u == 1 (service restart) the top-of-book channel is not stuck behind its old ids."""
    book = InstrumentBook("BTCUSDT", depth=2, keep_levels=50)

    def msg(levels, kind, u, seq, bid):
        return parse('{"topic":"orderbook.%d.BTCUSDT","ts":1,"type":"%s","data":{"s":"BTCUSDT",'
                     '"b":[["%s","1"]],"a":[["101","1"]],"u":%d,"seq":%d},"cts":1}'
                     % (levels, kind, bid, u, seq), 0)[0]

    book.apply(msg(50, "snapshot", 500, 9000, "99"))
    book.apply(msg(1, "snapshot", 800, 9001, "99.5"))
    restart = msg(50, "snapshot", 1, 10, "98")
    assert restart.restart and book.apply(restart) is Outcome.CHANGED
    assert book.apply(msg(1, "snapshot", 2, 11, "98.5")) is Outcome.CHANGED
    assert book.compose()[0][0] == (98.5, 1.0)


def test_unchanged_resend_is_a_liveness_confirmation(parse):
    [first] = parse(fixture_lines("bybit", "bbo.jsonl")[0], 0)
    book = InstrumentBook("BTCUSDT", depth=1)
    assert book.apply(first) is Outcome.CHANGED
    assert book.apply(first) is Outcome.UNCHANGED         # the 3 s re-send with the same u


def test_a_skipped_update_id_is_a_gap(parse):
    lines = fixture_lines("bybit", "depth.jsonl")
    book = InstrumentBook("BTCUSDT", depth=5, keep_levels=50)
    book.apply(parse(lines[3], 0)[0])
    assert book.apply(parse(lines[5], 0)[0]) is Outcome.GAP
    assert book.gaps == 1 and book.state.name == "RESYNCING"


def test_control_messages(parse):
    lines = fixture_lines("bybit", "control_recv.jsonl")
    assert parse(lines[0], 0) == [Pong()]
    assert parse(lines[3], 0) == [Ack(channel="subscribe")]
    [err] = parse(lines[4], 0)
    assert isinstance(err, SubscribeError) and err.message == "Invalid topic: invalid.topic.BTCUSDT"


def test_subscribe_one_request_per_symbol_within_the_arg_limit():
    frames = bybit.build_subscribe([f"S{i}USDT" for i in range(6)], 5)
    assert len(frames) == 6
    assert frames[0] == '{"req_id":"S0USDT","op":"subscribe","args":["orderbook.1.S0USDT","orderbook.50.S0USDT"]}'
    assert all(frame.count("orderbook.") <= bybit.ARGS_PER_REQUEST for frame in frames)
    assert bybit.build_keepalive() == '{"op":"ping"}'


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(raw):
    try:
        events = load_venue("bybit").parse(raw, 0)
    except ParseError:
        return
    assert all(isinstance(e, (BookUpdate, Ack, Pong, SubscribeError)) for e in events)


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_tails_of_an_orderbook_frame_raise_only_parse_error(tail):
    """Past the orderbook marker the declaration reads the frame: still ParseError or events, never a crash."""
    venue = load_venue("bybit")
    raw = b'{"topic":"orderbook.1.BTCUSDT",' + tail
    try:
        events = venue.parse(raw, 0)
    except ParseError:
        events = None
    assert events is None or all(isinstance(e, (BookUpdate, SchemaDrift)) for e in events)
    assert venue.top(raw) is None or events is not None


# ---------------------------------------------------------------- the declaration: drift, refusals, top

def _drifted(line: str, where: str) -> str:
    if where == "top":
        return line.replace('{"topic"', '{"newField":1,"topic"', 1)
    return line.replace('"data":{', '"data":{"newField":[1,2],', 1)


@pytest.mark.parametrize("name, index", [("bbo.jsonl", 0), ("bbo.jsonl", 2), ("depth.jsonl", 3), ("depth.jsonl", 4)])
@pytest.mark.parametrize("where", ["top", "data"])
def test_an_unknown_field_is_decoded_and_reported_as_drift(name, index, where):
    venue = load_venue("bybit")
    line = fixture_lines("bybit", name)[index]
    drifted = _drifted(line, where)
    assert drifted != line
    expected = venue.parse(line, 0)
    [update, drift] = venue.parse(drifted, 0)
    assert repr([update]) == repr(expected)
    assert (update.bids, update.asks, update.seq, update.prev_seq, update.xseq, update.exch_ts_ms) == (
        expected[0].bids, expected[0].asks, expected[0].seq, expected[0].prev_seq, expected[0].xseq,
        expected[0].exch_ts_ms)
    assert isinstance(drift, SchemaDrift) and drift.message == "OrderbookFrame"
    assert "newField" in drift.detail and (where == "top") == ("$.data" not in drift.detail)
    assert venue.parse(drifted.encode(), 0)[1] == drift
    assert venue.top(drifted) is None                 # the short path leaves a drifted frame to parse, which counts it


@pytest.mark.parametrize("old, new", [
    ('"28165.07"', "null"),                           # a price null
    ('"0.996816"', "null"),                           # a size null
    ('"u":20404754', '"u":[20404754]'),               # u as a list
    ('"u":20404754', '"u":null'),
    ('"seq":4281281856', '"seq":"x"'),
    ('"ts":1680652806504', '"ts":[1]'),
    ('[["28165.07","0.175231"]]', '[["28165.07"]]'),  # a level without its size
    ('"s":"BTCUSDT"', '"s":7'),
    ('"type":"snapshot"', '"type":"partial"'),
    (',"u":20404754', ''),                            # a missing id
])
def test_a_wrong_type_or_shape_raises_parse_error(old, new):
    venue = load_venue("bybit")
    line = fixture_lines("bybit", "bbo.jsonl")[0]
    bad = line.replace(old, new, 1)
    assert bad != line
    for raw in (bad, bad.encode()):
        with pytest.raises(ParseError):
            venue.parse(raw, 0)
        assert venue.top(raw) is None
    with pytest.raises(ParseError):                    # also with an unknown field beside the fault
        venue.parse(_drifted(bad, "data"), 0)


def test_timestamps_prefer_cts_then_ts_then_zero(parse):
    frame = ('{"topic":"orderbook.50.BTCUSDT",%s"type":"delta","data":{"s":"BTCUSDT","b":[],"a":[["1","0"]],'
             '"u":5,"seq":9}%s}')
    assert parse(frame % ('"ts":7,', ',"cts":6'), 0)[0].exch_ts_ms == 6
    assert parse(frame % ('"ts":7,', ',"cts":0'), 0)[0].exch_ts_ms == 7
    assert parse(frame % ('"ts":7,', ',"cts":null'), 0)[0].exch_ts_ms == 7
    assert parse(frame % ("", ""), 0)[0].exch_ts_ms == 0
    [u] = parse(frame % ('"ts":7,', ""), 0)
    assert (u.channel, u.snapshot, u.seq, u.prev_seq, u.xseq, u.restart) == (DEPTH, False, 5, 4, 9, False)


def test_an_orderbook_frame_with_its_keys_reordered_reads_the_same(parse):
    """The cheap first-bytes test misses it; the control handler hands it to the same declaration."""
    line = fixture_lines("bybit", "bbo.jsonl")[0]
    reordered = '{"ts":1680652806504,' + line[1:].replace(',"ts":1680652806504', "")
    assert reordered.find('"topic"') > 10
    assert repr(parse(reordered, 0)) == repr(parse(line, 0))
    assert repr(parse(bytearray(line.encode()), 0)) == repr(parse(line, 0))


def _all_fixture_lines():
    return [(path.name, i, line) for path in sorted((FIXTURES / "bybit").glob("*.jsonl"))
            for i, line in enumerate(fixture_lines("bybit", path.name))]


@pytest.mark.parametrize("name, index, line", _all_fixture_lines(), ids=lambda v: str(v)[:20])
def test_top_agrees_with_parse_on_every_fixture_line(name, index, line):
    venue = load_venue("bybit")
    for raw in (line, line.encode()):
        quote = venue.top(raw)
        try:
            events = venue.parse(raw, 0)
        except ParseError:
            events = None
        single = (events is not None and len(events) == 1 and events[0].__class__ is BookUpdate
                  and events[0].channel == BBO and events[0].snapshot and len(events[0].bids) == 1
                  and len(events[0].asks) == 1 and events[0].prev_seq is None and not events[0].restart)
        if quote is None:
            assert not single or name != "bbo.jsonl", "a plain top-of-book snapshot should take the short path"
            continue
        assert single
        e = events[0]
        assert quote == (e.symbol, *e.bids[0], *e.asks[0], e.exch_ts_ms, e.seq, e.xseq)


def test_top_on_the_real_top_of_book_frames():
    top = load_venue("bybit").top
    lines = fixture_lines("bybit", "bbo.jsonl")
    assert top(lines[0]) == ("BTCUSDT", 28165.07, 0.175231, 28165.08, 0.996816, 1680652806504, 20404754, 4281281856)
    assert top(lines[1]) is None                                    # a delta
    assert top(lines[2]) == ("BANDUSDT", 0.6131, 17.9, 0.6134, 35.4, 1749833474768, 24042997, 209972815373)
    assert top(lines[2].replace('"u":24042997', '"u":1')) is None   # a restart
    assert top(fixture_lines("bybit", "depth.jsonl")[1]) is None    # orderbook.50, one level a side
    assert top(memoryview(lines[0].encode())) is None               # not a type the transports hand over


# ---------------------------------------------------------------- the simulator's Bybit (sim-fidelity M1-M8)
def test_bybit_topics_requested_depths_req_id_and_conn_id():
    _, proto, symbol, state = sim.served("bybit")
    reply = orjson.loads(proto.on_message(orjson.dumps({"op": "subscribe", "req_id": "r1", "args": [
        f"orderbook.200.{symbol}", f"tickers.{symbol}", f"publicTrade.{symbol}"]}))[0])
    assert reply["success"] is True and reply["req_id"] == "r1"
    frames = sim.step(proto, state, 1, sim.T0)
    assert {f["topic"] for f in frames} == {f"orderbook.200.{symbol}", f"tickers.{symbol}", f"publicTrade.{symbol}"}
    ticker = next(f for f in frames if f["topic"].startswith("tickers"))["data"]
    assert {"lastPrice", "highPrice24h", "lowPrice24h", "prevPrice24h", "volume24h", "turnover24h",
            "price24hPcnt"} <= set(ticker) and "bid1Price" not in ticker       # spot tickers carry no bid/ask
    bad = orjson.loads(proto.on_message(orjson.dumps({"op": "subscribe", "args": [f"orderbook.7.{symbol}"]}))[0])
    assert bad["success"] is False and "orderbook.7" in bad["ret_msg"]
    pong = orjson.loads(proto.on_message('{"op":"ping","req_id":"p1"}')[0])
    assert (pong["ret_msg"], pong["req_id"]) == ("pong", "p1")
    assert load_protocol("bybit")({}).conn_id != proto.conn_id


# ---------------------------------------------------------------- fuzzing the simulator with Bybit's request shapes
def _fuzz_requests():
    sym = fuzz.native("bybit")
    name = fuzz.names([f"{k}.{sym}" for k in ("orderbook.1", "orderbook.50", "orderbook.200", "orderbook.1000",
                                              "orderbook.7", "tickers", "publicTrade", "kline.1")] + ["orderbook", ""])
    anything = fuzz.json_values
    return fuzz.shaped(st.fixed_dictionaries({"op": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping"]),
                                                              anything),
                                              "args": st.one_of(st.lists(name, max_size=11), anything),
                                              "req_id": anything}))


test_sim_never_raises_on_bybit_requests = fuzz.fuzz("bybit", _fuzz_requests())
