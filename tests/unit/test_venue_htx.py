"""HTX parser against tests/fixtures/htx (decompressed JSON) and real gzip frames.

One path: ``load_venue("htx").parse`` / ``.top``, whose hot messages are the msgspec declarations in
``pipeline/venues/htx/wire.py`` (``Bbo``, ``MbpRefresh``, ``MbpUpdate``, ``Depth``, ``MbpSnapshotReply``).
"""
from __future__ import annotations

import ast
import gzip
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, AlignedSnapshot, BookUpdate, Ping, Pong, SchemaDrift, SubscribeError
from pipeline.venues import load_venue
from pipeline.venues._common import WireMsg
from pipeline.venues.htx import VENUE as HTX_VENUE
from pipeline.venues.htx import wire as htx
from tests.conftest import FIXTURES as SHARED
from tests.conftest import examples, fixture_lines, single_book_update, top_from_parse
from tests.property import test_sim_fuzz as fuzz
from tests.unit import test_sim_protocols as sim

FIXTURES = SHARED / "htx"


lines = partial(fixture_lines, "htx")


@pytest.fixture
def parse():
    """The venue's parse: the one path (the declarations in ``wire.py``)."""
    return load_venue("htx").parse


@pytest.fixture
def one(parse):
    """The one BookUpdate a frame parses into, on the decoder of ``parse``."""
    return partial(single_book_update, SimpleNamespace(parse=parse))


def same(a: BookUpdate, b: BookUpdate) -> bool:
    return all(getattr(a, k) == getattr(b, k) for k in BookUpdate.__slots__)


# ---------------------------------------------------------------- market data
def test_bbo(one):
    u = one(lines("bbo.jsonl")[0])
    assert (u.symbol, u.channel, u.snapshot) == ("btcusdt", BBO, True)
    assert u.bids == [(31764.08, 4.378544)]
    assert u.asks == [(31764.09, 0.794873)]
    assert (u.exch_ts_ms, u.seq, u.prev_seq) == (1654031600064, 155441231856, None)   # quoteTime, not ts


def test_bbo_without_seq_id_uses_quote_time_or_ts(one):
    u = one(b'{"ch":"market.ethusdt.bbo","ts":1600000000100,"tick":{"ask":2.5E2,"askSize":1,'
            b'"bid":249.5,"bidSize":0.5,"symbol":"ethusdt"}}')
    assert (u.bids, u.asks, u.exch_ts_ms, u.seq) == ([(249.5, 0.5)], [(250.0, 1.0)], 1600000000100, None)


def test_mbp_refresh_snapshot(one):
    u = one(lines("mbp_refresh_bittrade.jsonl")[0])
    assert (u.symbol, u.channel, u.snapshot) == ("batjpy", DEPTH, True)
    assert u.bids == [(14.46, 13.39), (14.42, 17.48), (14.4, 21.76)]
    assert u.asks == [(14.64, 2.53), (14.68, 5.83), (14.72, 9.49)]
    assert (u.exch_ts_ms, u.seq, u.prev_seq) == (1790134135640, 200333109135, None)


def test_depth_step0_snapshot_with_exponent_numbers(parse, one):
    ack, step0 = lines("cryptofeed2021_decompressed.jsonl")[:2]
    assert parse(ack, 0) == [Ack("trioeth", "market.trioeth.depth.step0")]
    u = one(step0)
    tick = orjson.loads(step0)["tick"]
    assert (u.symbol, u.channel, u.snapshot) == ("trioeth", DEPTH, True)
    assert u.bids[:3] == [(9.121e-7, 92730.24), (9.12e-7, 66053.68), (9.119e-7, 74838.79)]
    assert u.bids[-1] == (1.0e-10, 2.2e8)
    assert u.asks[0] == (9.28e-7, 4342.25) and u.asks[-1] == (4.3e-5, 260.37)
    assert (len(u.bids), len(u.asks)) == (len(tick["bids"]), len(tick["asks"])) == (27, 150)
    assert (u.exch_ts_ms, u.seq) == (1618678069868, 100182534697)    # tick.ts and tick.version


def test_mbp_incremental_deltas(one):
    first, one_sided, third, fourth = (one(line) for line in lines("mbp_incremental.jsonl"))
    assert (first.symbol, first.channel, first.snapshot) == ("btcusdt", DEPTH, False)
    assert first.bids == [(38765.39, 0.0), (38762.87, 0.009708)]
    assert first.asks == [(38762.88, 0.102302)]
    assert (first.exch_ts_ms, first.seq, first.prev_seq) == (1622707662703, 129803485567, 129803485424)
    assert one_sided.bids == [] and one_sided.asks == [(61945.07, 0.000533)]      # missing key, 5.33E-4
    assert (one_sided.seq, one_sided.prev_seq) == (140059393690, 140059393689)
    assert (third.seq, third.prev_seq, fourth.prev_seq) == (109409288130, 109409288078, 109409288130)
    assert third.asks[0] == (9138.61, 0.033785) and len(third.bids) == 14


def test_mbp_chain_through_book_with_req_snapshot(one):
    """The 2020 capture's chain (lines 3, 4) and a hand-written req answer at line 3's prevSeqNum: the deltas
    that came first are cached, the answer aligns them (exact book in tests/unit/test_htx_mbp.py)."""
    book = InstrumentBook("btcusdt", depth=5, keep_levels=htx.BOOK_LEVELS, aligned=True)
    first, _, third, fourth = (one(line) for line in lines("mbp_incremental.jsonl"))
    assert book.apply(third) == Outcome.IGNORED                 # no snapshot yet: cached
    assert book.apply(fourth) == Outcome.IGNORED
    rep = orjson.dumps({"id": "r1", "rep": "market.btcusdt.mbp.150", "status": "ok", "ts": 1593561600600,
                        "data": {"seqNum": 109409288078, "bids": [[9137.67, 4.0], [9135.96, 1.0]],
                                 "asks": [[9138.61, 1.0], [9138.67, 2.0]]}})
    snap = one(rep)
    assert snap.__class__ is AlignedSnapshot
    assert (snap.symbol, snap.snapshot, snap.seq, snap.exch_ts_ms) == ("btcusdt", True, 109409288078, 1593561600600)
    assert book.apply(snap) == Outcome.CHANGED                  # aligned with line 3, then line 4 applied
    bids, asks = book.compose()
    assert asks[:3] == [(9138.6, 0.010259), (9138.61, 0.01767), (9138.67, 0.014126)]
    assert bids[:2] == [(9137.67, 4.683547), (9135.95, 0.4998)]
    assert book.book.last_seq == 109409288160
    assert book.apply(first) == Outcome.GAP                     # prevSeqNum is not our last seqNum


def test_other_topics_are_unknown(parse):
    trade = lines("cryptofeed2021_decompressed.jsonl")[5]
    with pytest.raises(ParseError) as exc:
        parse(trade, 0)                                         # 27-digit trade id parses, topic is not ours
    assert exc.value.reason == "unknown_message"


# ---------------------------------------------------------------- gzip
def test_gzip_frames_equal_plain_json(parse, one):
    for name in ("bbo.jsonl", "mbp_refresh_bittrade.jsonl", "mbp_incremental.jsonl"):
        for line in lines(name):
            assert same(one(gzip.compress(line.encode())), one(line))
    assert parse(bytearray(gzip.compress(b'{"ping":7}')), 0) == [Ping(7)]
    assert parse(memoryview(gzip.compress(b'{"ping":8}')), 0) == [Ping(8)]


def test_real_gzip_frames_from_2021_capture(parse, one):
    capture = (SHARED / "cryptofeed-2021" / "HUOBI.ws.44.0").read_text().splitlines()
    frames = [ast.literal_eval(line.split(": ", 1)[1]) for line in capture[21:23]]
    assert all(f[:2] == b"\x1f\x8b" for f in frames)
    ack, depth = (parse(f, 0) for f in frames)
    decompressed = lines("cryptofeed2021_decompressed.jsonl")
    assert ack == parse(decompressed[0], 0) == [Ack("trioeth", "market.trioeth.depth.step0")]
    assert same(depth[0], one(decompressed[1]))


def test_bad_gzip(parse):
    frame = gzip.compress(lines("bbo.jsonl")[0].encode())
    for bad in (frame[:-12], frame[:2] + b"\x00" * 20, b"\x1f\x8b"):
        with pytest.raises(ParseError) as exc:
            parse(bad, 0)
        assert exc.value.reason == "invalid_json"


def test_gzip_output_is_capped(monkeypatch, parse):
    monkeypatch.setattr(htx, "MAX_INFLATED_BYTES", 100)
    with pytest.raises(ParseError) as exc:
        parse(gzip.compress(b'{"ping":1,"pad":"' + b"x" * 200 + b'"}'), 0)
    assert exc.value.reason == "oversize"


# ---------------------------------------------------------------- control
def test_ping_pong_round_trip(parse):
    recv = lines("control_recv.jsonl")
    events = parse(gzip.compress(recv[1].encode()), 0)
    assert events == [Ping(1786563068868)]
    assert htx.build_pong(events[0].token) == lines("control_sent.jsonl")[1] == '{"pong":1786563068868}'
    assert parse(recv[2], 0) == [Ping(1786563073866)]
    assert parse(b'{"pong":1786563068868}', 0) == [Pong()]
    assert HTX_VENUE.keepalive_interval_s is None and htx.build_keepalive() is None


def test_acks_and_errors(parse):
    recv = lines("control_recv.jsonl")
    assert parse(recv[0], 0) == [Ack("btcusdt", "market.btcusdt.detail")]
    assert parse(recv[3], 0) == [Ack("btcusdt", "market.btcusdt.mbp.refresh.20")]
    assert parse(recv[4], 0) == [SubscribeError("bad-request: invalid ping", "")]
    bad_topic = b'{"id":"id3","status":"error","err-code":"bad-request","err-msg":"invalid topic market.btcusdx.bbo"}'
    assert parse(bad_topic, 0) == [SubscribeError("bad-request: invalid topic market.btcusdx.bbo", "btcusdx")]
    # a req for a pair the level count does not serve (ccxt issue 6748, 2020): the pair is named
    bad_req = (b'{"ts":1586252319079,"status":"error","err-code":"bad-request",'
               b'"err-msg":"invalid mbp.150.symbol linkusdt","id":"2"}')
    assert parse(bad_req, 0) == [SubscribeError("bad-request: invalid mbp.150.symbol linkusdt", "linkusdt")]
    too_fast = b'{"status":"error","err-code":"bad-request","err-msg":"429 too many request"}'
    assert parse(too_fast, 0) == [SubscribeError("bad-request: 429 too many request", "")]
    assert parse(b'{"status":"error","err-code":"bad-request","err-msg":"symbol trade not open now"}', 0) == [
        SubscribeError("bad-request: symbol trade not open now", "")]
    assert parse(b'{"id":"id4","status":"ok","unsubbed":"market.btcusdt.bbo","ts":1}', 0) == []


def test_build_subscribe():
    """Per symbol: the incremental mbp.5 (no bbo: it is not documented on /feed, and mbp.5's best level is the
    top of book), then the req for the mbp.5 snapshot on the same connection; a resubscribe is the req alone
    (the subscription and its cached deltas stay)."""
    assert htx.native_symbol("BTC/USDT") == "btcusdt"
    assert htx.build_subscribe(["btcusdt"], 5) == [
        '{"sub":"market.btcusdt.mbp.5","id":"id1"}', '{"req":"market.btcusdt.mbp.5","id":"req.btcusdt"}']
    assert [(orjson.loads(f).get("sub"), orjson.loads(f).get("req")) for f in htx.build_subscribe(
        ["btcusdt", "ethusdt"], 5)] == [
        ("market.btcusdt.mbp.5", None), (None, "market.btcusdt.mbp.5"),
        ("market.ethusdt.mbp.5", None), (None, "market.ethusdt.mbp.5")]
    assert htx.build_subscribe(["x"], 10) == htx.build_subscribe(["x"], 5)       # mbp.5 whatever the depth
    assert htx.build_resubscribe("btcusdt", 5) == ['{"req":"market.btcusdt.mbp.5","id":"req.btcusdt"}']
    assert (HTX_VENUE.default_url, HTX_VENUE.depth_is_delta, HTX_VENUE.book_levels) == (
        "wss://api.huobi.pro/feed", True, 5)
    assert "dropped_messages" in HTX_VENUE.quirks


def test_module_contract():
    tree = ast.parse(Path(htx.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"asyncio", "websockets", "socket", "time", "multiprocessing"}
    assert (htx.NAME, htx.BOOK_LEVELS, HTX_VENUE.checksum, HTX_VENUE.taker_fee_bps) == ("htx", 5, None, 20.0)


# ---------------------------------------------------------------- the declarations
ALL_FIXTURE_LINES = [line for path in sorted(FIXTURES.glob("*.jsonl")) for line in lines(path.name)]


def test_hot_messages_are_declared_once_as_wire_structs():
    declared = {name for name, obj in vars(htx).items()
                if isinstance(obj, type) and issubclass(obj, WireMsg) and obj is not WireMsg}
    assert declared >= {"Bbo", "BboTick", "MbpRefresh", "MbpRefreshTick", "MbpUpdate", "MbpUpdateTick",
                        "Depth", "DepthTick", "MbpSnapshotReply", "MbpSnapshotData"}
    for name in declared:
        assert "HTX Spot v1" in getattr(htx, name).__doc__ or "#" in getattr(htx, name).__doc__, name


def _with_field(line: str, where: str, field: str) -> str:
    """``line`` with ``"field":1`` added at the top level or first in ``tick``."""
    if where == "top":
        return line[:-1] + f',"{field}":1}}'
    return line.replace('"tick":{', f'"tick":{{"{field}":1,', 1)


DRIFT_FRAMES = [("bbo.jsonl", 0, "Bbo"), ("mbp_refresh_bittrade.jsonl", 0, "MbpRefresh"),
                ("mbp_incremental.jsonl", 1, "MbpUpdate"), ("cryptofeed2021_decompressed.jsonl", 1, "Depth")]


@pytest.mark.parametrize("where", ["top", "tick"])
@pytest.mark.parametrize("name,index,message", DRIFT_FRAMES)
def test_an_unknown_field_is_one_schema_drift_and_the_same_events(parse, name, index, message, where):
    line = lines(name)[index]
    plain = parse(gzip.compress(line.encode()), 0)
    drifted = _with_field(line, where, "brandNew")
    assert drifted != line
    events = parse(gzip.compress(drifted.encode()), 0)
    assert len(events) == len(plain) + 1 and all(same(a, b) for a, b in zip(events, plain))
    drift = events[-1]
    assert drift.__class__ is SchemaDrift and drift.message == message
    assert "`brandNew`" in drift.detail and ("$.tick" in drift.detail) == (where == "tick")
    assert [e for e in events if e.__class__ is SchemaDrift] == [drift]
    assert load_venue("htx").top(gzip.compress(drifted.encode())) is None      # the short path takes exact frames only


def test_the_mbp_req_answer_is_declared_too(parse):
    rep = {"id": "r1", "rep": "market.btcusdt.mbp.150", "status": "ok", "ts": 5,
           "data": {"seqNum": 9, "bids": [[1.5, 2]], "asks": [], "brandNew": 1}}
    u, drift = parse(orjson.dumps(rep), 0)
    assert u.__class__ is AlignedSnapshot and u.prev_seq is None
    assert (u.symbol, u.channel, u.snapshot, u.bids, u.asks, u.exch_ts_ms, u.seq) == (
        "btcusdt", DEPTH, True, [(1.5, 2.0)], [], 5, 9)
    assert drift.message == "MbpSnapshotReply" and "`brandNew` - at `$.data`" in drift.detail
    rep["data"] = {"seqNum": 9, "bids": [["1.5", 2]]}
    with pytest.raises(ParseError):
        parse(orjson.dumps(rep), 0)


WRONG_TYPES = [
    ("bbo.jsonl", 0, '"bid":31764.08', '"bid":"1.0"'),                 # a price as text: HTX sends numbers
    ("bbo.jsonl", 0, '"ask":31764.09', '"ask":"31764.09"'),
    ("bbo.jsonl", 0, '"bidSize":4.378544', '"bidSize":null'),           # a price without its size
    ("bbo.jsonl", 0, '"askSize":0.794873', '"askSize":"1.0"'),
    ("bbo.jsonl", 0, '"seqId":155441231856', '"seqId":"155441231856"'),
    ("bbo.jsonl", 0, '"ts":1654031600066', '"ts":1654031600066.5'),
    ("mbp_refresh_bittrade.jsonl", 0, "[14.46,13.39]", '["1.0",13.39]'),
    ("mbp_refresh_bittrade.jsonl", 0, "[14.46,13.39]", "[null,13.39]"),
    ("mbp_refresh_bittrade.jsonl", 0, "[14.64,2.53]", "[14.64,null]"),
    ("mbp_refresh_bittrade.jsonl", 0, '"bids":[', '"bids":null,"x":['),
    ("mbp_incremental.jsonl", 0, '"prevSeqNum":129803485424', '"prevSeqNum":null'),
    ("mbp_incremental.jsonl", 0, '"seqNum":129803485567,', ''),              # the chain needs both ids
    ("mbp_incremental.jsonl", 0, "[38762.88,0.102302]", '[38762.88,"0.102302"]'),
    ("cryptofeed2021_decompressed.jsonl", 1, '"version":100182534697', '"version":"100182534697"'),
]


@pytest.mark.parametrize("name,index,old,new", WRONG_TYPES)
def test_a_wrong_type_is_a_parse_error(parse, name, index, old, new):
    line = lines(name)[index]
    assert old in line
    frame = gzip.compress(line.replace(old, new, 1).encode())
    with pytest.raises(ParseError) as exc:
        parse(frame, 0)
    assert exc.value.reason == "unknown_message"
    assert load_venue("htx").top(frame) is None


def test_a_side_without_a_price_is_a_side_without_a_level(one):
    line = lines("bbo.jsonl")[0]
    assert one(line.replace('"bid":31764.08,', '')).bids == []
    u = one(line.replace('"ask":31764.09', '"ask":null'))
    assert (u.bids, u.asks) == ([(31764.08, 4.378544)], [])
    assert load_venue("htx").top(line.replace('"ask":31764.09', '"ask":null')) is None


def test_a_push_in_another_key_order_is_read_by_the_same_declaration(parse):
    line = lines("bbo.jsonl")[0]
    moved = '{"ts":1654031600066,' + line[1:].replace(',"ts":1654031600066', '', 1)
    escaped = line.replace("market.btcusdt.bbo", "market.btc\\u0075sdt.bbo")
    for frame in (moved, escaped):
        (u,) = parse(frame, 0)
        assert same(u, parse(line, 0)[0])
        assert load_venue("htx").top(frame) is None                   # None is always a correct answer
    assert load_venue("htx").top(line) == top_from_parse(parse)(line)


@pytest.mark.parametrize("gzipped", [True, False])
def test_top_agrees_with_parse_on_every_fixture_frame(parse, gzipped):
    top = load_venue("htx").top
    long_way = top_from_parse(parse)
    answered = 0
    for line in ALL_FIXTURE_LINES:
        frame = gzip.compress(line.encode()) if gzipped else line.encode()
        quote = top(frame)
        assert quote == long_way(frame), line[:80]
        answered += quote is not None
    assert answered == len(lines("bbo.jsonl"))


def test_text_that_is_not_utf8_is_invalid_json(parse):
    line = lines("bbo.jsonl")[0]
    for frame in (line.replace("btcusdt\"}", "btcusdt\ud800\"}"), line + "\ud800",
                  line.encode().replace(b"btcusdt\"}", b"btcusdt\xff\"}")):
        with pytest.raises(ParseError) as exc:
            parse(frame, 0)
        assert exc.value.reason == "invalid_json"
        assert load_venue("htx").top(frame) is None


# ---------------------------------------------------------------- fuzz
@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=512))
def test_parse_arbitrary_bytes_raises_only_parse_error(raw):
    parse = load_venue("htx").parse
    for frame in (raw, b"\x1f\x8b" + raw, gzip.compress(raw), b'{"ch":"market.x.bbo"' + raw,
                  b'{"ch":"market.x.mbp.5",' + raw):
        try:
            parse(frame, 0)
        except ParseError:
            pass
        load_venue("htx").top(frame)


_SAMPLES = [line for name in ("bbo.jsonl", "mbp_incremental.jsonl", "mbp_refresh_bittrade.jsonl",
                              "control_recv.jsonl") for line in lines(name)]


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(_SAMPLES), st.integers(0, 2000), st.integers(0, 40), st.binary(max_size=8))
def test_parse_mutated_fixture_raises_only_parse_error(line, at, cut, insert):
    venue = load_venue("htx")
    raw = line.encode()
    at %= len(raw)
    frame = gzip.compress(raw[:at] + insert + raw[at + cut:])
    try:
        events = venue.parse(frame, 0)
    except ParseError:
        events = None
    assert venue.top(frame) == (None if events is None else top_from_parse(venue.parse)(frame))


def test_a_channel_that_is_not_ascii_is_no_channel_for_parse_or_top():
    """Found by the mutation test above: a non-ASCII byte in ``ch`` was read by parse as symbol '\\x80btcusdt'
    while the short path declined it; HTX's channels are ASCII, so both refuse it."""
    venue = load_venue("htx")
    frame = gzip.compress(b'{"ch":"market.\xc2\x80btcusdt.bbo","ts":1654031600066,"tick":{"seqId":155441231856,'
                          b'"ask":31764.09,"askSize":0.794873,"bid":31764.08,"bidSize":4.378544,'
                          b'"quoteTime":1654031600064,"symbol":"btcusdt"}}')
    with pytest.raises(ParseError, match="unknown_message"):
        venue.parse(frame, 0)
    assert venue.top(frame) is None


# ---------------------------------------------------------------- the simulator's HTX
def test_htx_ping_pong_round_trip():
    venue, proto, _ = sim.setup("htx")
    frames = proto.keepalive(sim.T0)
    assert proto.KEEPALIVE_INTERVAL_S == 5 and gzip.decompress(frames[0]) == b'{"ping":%d}' % sim.T0
    assert sim.parse_all(venue, frames) == [Ping(token=sim.T0)]
    assert proto.missed_pongs == 1
    assert proto.on_message(venue.build_pong(sim.T0)) == []
    assert proto.missed_pongs == 0
    assert sim.parse_all(venue, proto.on_message('{"ping":"x"}'))[0].message.startswith("bad-request: invalid ping")


def test_htx_detail_ticker_trades_step0_and_incremental_mbp_with_req():
    _, proto, symbol, state = sim.served("htx")
    for topic in ("detail", "ticker", "trade.detail", "depth.step0", "mbp.150"):
        reply = orjson.loads(gzip.decompress(proto.on_message(orjson.dumps({"sub": f"market.{symbol}.{topic}",
                                                                             "id": topic}))[0]))
        assert reply["status"] == "ok", reply
    first = sim.step(proto, state, 1, sim.T0)
    snapshot = orjson.loads(gzip.decompress(proto.on_message(orjson.dumps({"req": f"market.{symbol}.mbp.150",
                                                                            "id": "r"}))[0]))
    assert snapshot["status"] == "ok" and snapshot["rep"] == f"market.{symbol}.mbp.150"
    assert {f["ch"].split(".", 2)[2] for f in first} == {"detail", "ticker", "trade.detail", "depth.step0", "mbp.150"}
    nxt = [f for f in sim.step(proto, state, 2, sim.T0 + 20) if f["ch"].endswith("mbp.150")][0]
    assert nxt["tick"]["prevSeqNum"] == snapshot["data"]["seqNum"] < nxt["tick"]["seqNum"]
    bad = orjson.loads(gzip.decompress(proto.on_message(orjson.dumps({"sub": f"market.{symbol}.depth.step3"}))[0]))
    assert bad["err-code"] == "bad-request"


def test_htx_closes_after_two_missed_pongs_only_when_the_rule_is_on():
    from pipeline.sim.protocol import Rules
    _, proto, _ = sim.setup("htx")
    for _ in range(4):
        proto.keepalive(sim.T0)
    assert proto.close_reason(0.0) is None                  # rule off: only counted
    proto.rules = Rules(missed_pongs=True)
    _, strict, _ = sim.setup("htx")
    strict.rules = Rules(missed_pongs=True)
    assert strict.keepalive(sim.T0) and strict.keepalive(sim.T0)   # two pings go out unanswered
    assert strict.keepalive(sim.T0) == [] and strict.close_reason(0.0) == (1003, "ping check expired")
    _, polite, _ = sim.setup("htx")
    polite.rules = Rules(missed_pongs=True)
    for _ in range(5):
        polite.keepalive(sim.T0)
        polite.on_message('{"pong": 1}')
    assert polite.close_reason(0.0) is None


# ---------------------------------------------------------------- fuzzing the simulator with HTX's request shapes
def _fuzz_requests():
    lower = fuzz.native("htx").lower()
    name = fuzz.names([f"market.{lower}.{k}" for k in ("bbo", "mbp.refresh.5", "mbp.refresh.7", "detail", "ticker",
                                                  "trade.detail", "depth.step0", "depth.step3", "mbp.5", "mbp.150",
                                                  "mbp.151", "kline.1min")] + ["market", "market..bbo"])
    anything = fuzz.json_values
    return fuzz.shaped(st.one_of(st.sampled_from(["sub", "unsub", "req"]).flatmap(
                                lambda kind: st.fixed_dictionaries({kind: name, "id": anything})),
                            st.sampled_from(["ping", "pong"]).flatmap(
                                lambda kind: st.fixed_dictionaries({kind: anything}))))


test_sim_never_raises_on_htx_requests = fuzz.fuzz("htx", _fuzz_requests())
