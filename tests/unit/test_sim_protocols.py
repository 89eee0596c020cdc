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
from pipeline.venues import load_protocol
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
    assert events == ([TradingStatus(None, True, "online")] if venue.name == "kraken" else []), events
    specs = []
    for frame in venue.build_subscribe([symbol], SHOWN):
        events = seq.strip(parse_all(venue, proto.on_message(frame)))
        specs += [e for e in events if isinstance(e, InstrumentSpec)]
        events = [e for e in events if not isinstance(e, InstrumentSpec)]
        assert events and all(isinstance(e, Ack) for e in events), events
    # Coinbase: level2 only, the top of book is the book's own (W4)
    expected = {(symbol, DEPTH)} if venue.name == "coinbase" else {(symbol, BBO), (symbol, DEPTH)}
    assert set(proto.subscriptions) == expected
    return specs


@pytest.mark.parametrize("name", VENUES)
def test_subscribe_and_random_walk_round_trip(name):
    venue, proto, symbol = setup(name)
    seq = Sequence()
    specs = subscribe(venue, proto, symbol, seq)
    book = InstrumentBook(symbol, depth=SHOWN, keep_levels=venue.book_levels, checksum=venue.checksum,
                          checksum_levels=venue.checksum_levels or 10)
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


def test_binance_unknown_streams_get_the_error_object_and_change_nothing():
    _, proto, _, state = served("binance")
    for stream in ("ethusdt@kline_1m", "ethusdt@depth7", "ethusdt@avgPrice", "ETHUSDT@trade", 7):
        reply = orjson.loads(proto.on_message(orjson.dumps({"method": "SUBSCRIBE", "params": [stream], "id": 9}))[0])
        assert reply["id"] == 9 and reply["error"]["code"] == 2 and "Invalid request" in reply["error"]["msg"]
    assert not proto.subscriptions and step(proto, state, 1, T0) == []
    bad = orjson.loads(proto.on_message('{"method":"SUBSCRIBE","params":["ethusdt@trade","ethusdt@x"],"id":3}')[0])
    assert "error" in bad and not proto.subscriptions          # one bad name refuses the whole request


def test_binance_each_stream_is_answered_under_its_own_name_with_its_own_payload():
    _, proto, symbol, state = served("binance")
    streams = ["ethusdt@trade", "ethusdt@aggTrade", "ethusdt@ticker", "ethusdt@miniTicker", "ethusdt@depth@100ms"]
    assert orjson.loads(proto.on_message(orjson.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}))[0]) \
        == {"result": None, "id": 1}
    listed = orjson.loads(proto.on_message('{"method":"LIST_SUBSCRIPTIONS","id":2}')[0])["result"]
    assert listed == streams
    frames = step(proto, state, 1, T0) + step(proto, state, 2, T0 + 20)
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
    _, proto, symbol, state = served("binance")
    proto.on_message('{"method":"SUBSCRIBE","params":["ethusdt@depth@100ms"],"id":1}')
    step(proto, state, 1, T0)
    status, snapshot = Protocol.render_rest("/api/v3/depth", {"symbol": symbol, "limit": "5"}, proto.states, {})
    assert status == 200 and len(snapshot["bids"]) == 5 and snapshot["lastUpdateId"] == state.book_id
    update = step(proto, state, 2, T0 + 20)[0]["data"]
    assert update["U"] == snapshot["lastUpdateId"] + 1
    assert Protocol.render_rest("/api/v3/depth", {"symbol": "NOPE"}, proto.states, {})[0] == 400
    assert Protocol.render_rest("/api/v3/klines", {}, proto.states, {})[0] == 404


def test_binance_url_streams_and_the_raw_endpoint():
    _, raw, _, state = served("binance", "/ws/ethusdt@bookTicker")
    raw.on_connect()
    frame = step(raw, state, 1, T0)[0]
    assert set(frame) == {"u", "s", "b", "B", "a", "A"}                # bare payload on /ws
    assert orjson.loads(raw.on_message('{"method":"SET_PROPERTY","params":["combined",true],"id":5}')[0]) \
        == {"result": None, "id": 5}
    assert step(raw, state, 2, T0 + 20)[0]["stream"] == "ethusdt@bookTicker"
    _, combined, _, state = served("binance", "/stream?streams=ethusdt@bookTicker/ethusdt@kline_1m/ethusdt@trade")
    combined.on_connect()
    assert [c for _, c in combined.subscriptions] == [BBO, "trade"]      # the unknown stream is left out
    assert {f["stream"] for f in step(combined, state, 1, T0)} == {"ethusdt@bookTicker", "ethusdt@trade"}


def test_bybit_topics_requested_depths_req_id_and_conn_id():
    _, proto, symbol, state = served("bybit")
    reply = orjson.loads(proto.on_message(orjson.dumps({"op": "subscribe", "req_id": "r1", "args": [
        f"orderbook.200.{symbol}", f"tickers.{symbol}", f"publicTrade.{symbol}"]}))[0])
    assert reply["success"] is True and reply["req_id"] == "r1"
    frames = step(proto, state, 1, T0)
    assert {f["topic"] for f in frames} == {f"orderbook.200.{symbol}", f"tickers.{symbol}", f"publicTrade.{symbol}"}
    ticker = next(f for f in frames if f["topic"].startswith("tickers"))["data"]
    assert {"lastPrice", "highPrice24h", "lowPrice24h", "prevPrice24h", "volume24h", "turnover24h",
            "price24hPcnt"} <= set(ticker) and "bid1Price" not in ticker       # spot tickers carry no bid/ask
    bad = orjson.loads(proto.on_message(orjson.dumps({"op": "subscribe", "args": [f"orderbook.7.{symbol}"]}))[0])
    assert bad["success"] is False and "orderbook.7" in bad["ret_msg"]
    pong = orjson.loads(proto.on_message('{"op":"ping","req_id":"p1"}')[0])
    assert (pong["ret_msg"], pong["req_id"]) == ("pong", "p1")
    assert load_protocol("bybit")({}).conn_id != proto.conn_id


def test_okx_tickers_books5_and_trades():
    _, proto, symbol, state = served("okx")
    args = [{"channel": c, "instId": symbol} for c in ("tickers", "books5", "trades")]
    replies = [orjson.loads(r) for r in proto.on_message(orjson.dumps({"op": "subscribe", "args": args}))]
    assert [r["event"] for r in replies] == ["subscribe"] * 3
    frames = step(proto, state, 1, T0)
    by_channel = {f["arg"]["channel"]: f["data"][0] for f in frames}
    assert set(by_channel) == {"tickers", "books5", "trades"}
    assert len(by_channel["books5"]["bids"]) == 5 and "prevSeqId" not in by_channel["books5"]
    assert by_channel["tickers"]["bidPx"] == "3200.01" and {"open24h", "high24h", "low24h", "vol24h"} <= set(
        by_channel["tickers"])
    assert by_channel["trades"]["side"] in ("buy", "sell")
    refused = orjson.loads(proto.on_message(orjson.dumps({"op": "subscribe", "args": [
        {"channel": "candle1m", "instId": symbol}]}))[0])
    assert refused["code"] == "60018"


def test_htx_detail_ticker_trades_step0_and_incremental_mbp_with_req():
    _, proto, symbol, state = served("htx")
    for topic in ("detail", "ticker", "trade.detail", "depth.step0", "mbp.150"):
        reply = orjson.loads(gzip.decompress(proto.on_message(orjson.dumps({"sub": f"market.{symbol}.{topic}",
                                                                             "id": topic}))[0]))
        assert reply["status"] == "ok", reply
    first = step(proto, state, 1, T0)
    snapshot = orjson.loads(gzip.decompress(proto.on_message(orjson.dumps({"req": f"market.{symbol}.mbp.150",
                                                                            "id": "r"}))[0]))
    assert snapshot["status"] == "ok" and snapshot["rep"] == f"market.{symbol}.mbp.150"
    assert {f["ch"].split(".", 2)[2] for f in first} == {"detail", "ticker", "trade.detail", "depth.step0", "mbp.150"}
    nxt = [f for f in step(proto, state, 2, T0 + 20) if f["ch"].endswith("mbp.150")][0]
    assert nxt["tick"]["prevSeqNum"] == snapshot["data"]["seqNum"] < nxt["tick"]["seqNum"]
    bad = orjson.loads(gzip.decompress(proto.on_message(orjson.dumps({"sub": f"market.{symbol}.depth.step3"}))[0]))
    assert bad["err-code"] == "bad-request"


def test_htx_closes_after_two_missed_pongs_only_when_the_rule_is_on():
    from pipeline.sim.protocol import Rules
    _, proto, _ = setup("htx")
    for _ in range(4):
        proto.keepalive(T0)
    assert proto.close_reason(0.0) is None                  # rule off: only counted
    proto.rules = Rules(missed_pongs=True)
    _, strict, _ = setup("htx")
    strict.rules = Rules(missed_pongs=True)
    assert strict.keepalive(T0) and strict.keepalive(T0)   # two pings go out unanswered
    assert strict.keepalive(T0) == [] and strict.close_reason(0.0) == (1003, "ping check expired")
    _, polite, _ = setup("htx")
    polite.rules = Rules(missed_pongs=True)
    for _ in range(5):
        polite.keepalive(T0)
        polite.on_message('{"pong": 1}')
    assert polite.close_reason(0.0) is None


def test_coinbase_market_trades_ticker_statistics_and_refused_channels():
    venue, proto, symbol, state = served("coinbase")
    proto.on_message(orjson.dumps({"type": "subscribe", "channel": "market_trades", "product_ids": [symbol]}))
    proto.on_message(orjson.dumps({"type": "subscribe", "channel": "ticker", "product_ids": [symbol]}))
    frames = step(proto, state, 1, T0)
    trades = next(f for f in frames if f["channel"] == "market_trades")["events"][0]
    assert trades["type"] == "snapshot" and trades["trades"][0]["side"] in ("BUY", "SELL")
    ticker = next(f for f in frames if f["channel"] == "ticker")["events"][0]["tickers"][0]
    assert {"volume_24_h", "low_24_h", "high_24_h", "low_52_w", "high_52_w", "price_percent_chg_24_h"} <= set(ticker)
    assert [f["sequence_num"] for f in frames] == sorted(f["sequence_num"] for f in frames)
    for channel in ("candles", "status", "ticker_batch", "level3"):
        refused = orjson.loads(proto.on_message(orjson.dumps({"type": "subscribe", "channel": channel,
                                                              "product_ids": [symbol]}))[0])
        assert refused["type"] == "error" and refused["message"] == "Failed to subscribe"


def test_kraken_trade_statistics_and_event_trigger():
    _, proto, symbol, state = served("kraken")
    proto.on_connect()
    ack = orjson.loads(proto.on_message(orjson.dumps({"method": "subscribe", "params": {
        "channel": "ticker", "symbol": [symbol]}}))[0])
    assert ack["result"]["event_trigger"] == "trades"
    proto.on_message(orjson.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": [symbol]}}))
    frames = step(proto, state, 1, T0)
    ticker = next(f for f in frames if f["channel"] == "ticker")["data"][0]
    assert {"volume", "vwap", "low", "high", "change", "change_pct"} <= set(ticker)
    assert next(f for f in frames if f["channel"] == "trade")["type"] == "snapshot"
    state.tape.trade_chance = 0.0                            # no trades: a trades-triggered ticker stays quiet
    assert [f for f in step(proto, state, 2, T0 + 20) if f["channel"] == "ticker"] == []
    refused = orjson.loads(proto.on_message(orjson.dumps({"method": "subscribe", "params": {
        "channel": "ohlc", "symbol": [symbol]}}))[0])
    assert refused["success"] is False and "ohlc" in refused["error"]


def test_okx_request_budget_rule_and_rule_names():
    from pipeline.sim.protocol import Rules
    _, proto, symbol = setup("okx")
    frame = orjson.dumps({"op": "subscribe", "args": [{"channel": "bbo-tbt", "instId": symbol}]})
    for _ in range(500):
        proto.on_message(frame)                              # rule off: never refused
    proto.rules = Rules(request_budget=True)
    replies = [orjson.loads(proto.on_message(frame)[0]) for _ in range(481)]
    assert [r["event"] for r in replies[:480]] == ["subscribe"] * 480
    assert (replies[480]["event"], replies[480]["code"]) == ("error", "60014")
    with pytest.raises(ValueError):
        Rules.named(["missed_pongs", "no_such_rule"])
