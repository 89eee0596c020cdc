"""Arbitrary client frames against every simulated venue: never an exception, always a well-formed reply.

Each example is a short conversation with one connection's protocol: frames
that look like the venue's subscribe requests with any field replaced by
anything (plus raw text, bytes and random JSON), then three market steps
rendered for whatever ended up subscribed, and a keepalive. The protocol must
not raise (the server would log it and the client would see nothing), every
reply must be a frame the venue could send (JSON, gzip JSON for HTX, OKX's
bare ``pong``), and nothing may end up subscribed for a symbol the venue
does not list.
"""
from __future__ import annotations

import gzip
import json

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.model import BBO, DEPTH
from pipeline.sim.market import Tape
from pipeline.venues import load_protocol
from pipeline.sim.protocol import Rules, SymbolState
from pipeline.venues import VENUES, load_venue

INSTRUMENT = {"coinbase": "BTC/USD", "kraken": "BTC/USD"}
T0 = 1_790_000_000_000

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                           max_leaves=12)


def native(venue: str) -> str:
    return load_venue(venue).native_symbol(INSTRUMENT.get(venue, "BTC/USDT"))


def names(venue: str) -> st.SearchStrategy:
    """Stream / topic / channel names: the served ones, near misses and noise."""
    sym = native(venue)
    lower = sym.lower()
    served = {
        "binance": [f"{lower}@{k}" for k in ("bookTicker", "depth5@100ms", "depth20", "depth", "depth@100ms",
                                            "depth@1000ms", "ticker", "miniTicker", "trade", "aggTrade",
                                            "kline_1m", "depth7", "avgPrice", "")] + ["BTCUSDT@trade", "@trade"],
        "bybit": [f"{k}.{sym}" for k in ("orderbook.1", "orderbook.50", "orderbook.200", "orderbook.1000",
                                         "orderbook.7", "tickers", "publicTrade", "kline.1")] + ["orderbook", ""],
        "okx": ["bbo-tbt", "books", "books5", "tickers", "trades", "books-l2-tbt", "candle1m", ""],
        "htx": [f"market.{lower}.{k}" for k in ("bbo", "mbp.refresh.5", "mbp.refresh.7", "detail", "ticker",
                                                "trade.detail", "depth.step0", "depth.step3", "mbp.5", "mbp.150",
                                                "mbp.151", "kline.1min")] + ["market", "market..bbo"],
        "coinbase": ["ticker", "level2", "heartbeats", "market_trades", "candles", "status", "ticker_batch", ""],
        "kraken": ["ticker", "book", "trade", "instrument", "ohlc", "level3", ""],
    }[venue]
    return st.one_of(st.sampled_from(served), st.text(max_size=20), json_values)


def symbols(venue: str) -> st.SearchStrategy:
    return st.one_of(st.sampled_from([native(venue), "ZZZUSDT", ""]), json_values)


def requests(venue: str) -> st.SearchStrategy:
    name, symbol, anything = names(venue), symbols(venue), json_values
    shaped = {
        "binance": st.fixed_dictionaries({"method": st.one_of(st.sampled_from(
            ["SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY", "PING"]), anything),
            "params": st.one_of(st.lists(name, max_size=4), st.lists(st.sampled_from(["combined", True, False, 1]),
                                                                      max_size=3), anything),
            "id": anything}),
        "bybit": st.fixed_dictionaries({"op": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping"]),
                                                        anything),
                                        "args": st.one_of(st.lists(name, max_size=11), anything),
                                        "req_id": anything}),
        "okx": st.fixed_dictionaries({"op": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "login"]),
                                                      anything),
                                      "args": st.one_of(st.lists(st.one_of(st.fixed_dictionaries(
                                          {"channel": name, "instId": symbol}), anything), max_size=3), anything),
                                      "id": anything}),
        "htx": st.one_of(st.sampled_from(["sub", "unsub", "req"]).flatmap(
                             lambda kind: st.fixed_dictionaries({kind: name, "id": anything})),
                         st.sampled_from(["ping", "pong"]).flatmap(
                             lambda kind: st.fixed_dictionaries({kind: anything}))),
        "coinbase": st.fixed_dictionaries({"type": st.one_of(st.sampled_from(["subscribe", "unsubscribe"]), anything),
                                           "channel": name,
                                           "product_ids": st.one_of(st.lists(symbol, max_size=3), anything)}),
        "kraken": st.fixed_dictionaries({"method": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping"]),
                                                             anything),
                                         "params": st.one_of(st.fixed_dictionaries(
                                             {"channel": name, "symbol": st.one_of(st.lists(symbol, max_size=3),
                                                                                   anything),
                                              "depth": st.one_of(st.sampled_from([10, 25, 7]), anything),
                                              "event_trigger": st.one_of(st.sampled_from(["bbo", "trades"]),
                                                                         anything)}), anything),
                                         "req_id": anything}),
    }[venue]
    encoded = shaped.map(json.dumps)
    junk = st.one_of(st.text(max_size=40), st.binary(max_size=40),
                     json_values.map(json.dumps))
    return st.one_of(encoded, encoded, encoded, junk)


def check_frame(venue: str, frame) -> object:
    if venue == "htx":
        assert isinstance(frame, bytes)
        return orjson.loads(gzip.decompress(frame))
    assert isinstance(frame, str)
    if venue == "okx" and frame == "pong":
        return frame
    return orjson.loads(frame)


def conversation(venue: str, frames: list, path: str) -> None:
    symbol = native(venue)
    proto = load_protocol(venue)({symbol: 2})
    proto.known_symbols = {symbol}
    proto.rules = Rules(missed_pongs=True, idle_timeout=True, message_rate=True, request_budget=True)
    state = SymbolState(symbol, Tape(f"{venue}:{symbol}", 65000.0, 2, trade_chance=1.0))
    proto.states = {symbol: state}
    proto.path = path
    for frame in proto.on_connect():
        check_frame(venue, frame)
    for raw in frames:
        for reply in proto.on_message(raw):
            check_frame(venue, reply)
        proto.close_reason(0.0)
    for step in range(3):
        mid = 65000.0 + step
        bids = [(round(mid - 0.5 - i, 2), 0.1 + i) for i in range(10)]
        asks = [(round(mid + 0.5 + i, 2), 0.2 + i) for i in range(10)]
        ts = T0 + step * 100
        state.update(bids, asks, ts)
        for sym, channel in list(proto.subscriptions):
            assert sym == symbol, f"{venue}: subscribed to unknown symbol {sym!r}"
            if channel in (BBO, DEPTH):
                out = proto.render(sym, channel, bids, asks, ts)
            else:
                out = proto.render_stream(sym, channel, state)
            for frame in out:
                check_frame(venue, frame)
        for frame in proto.keepalive(ts):
            check_frame(venue, frame)


def _fuzz(venue: str):
    paths = st.one_of(st.just("/"), st.sampled_from(["/ws", "/stream", "/ws/btcusdt@trade", "/feed", "/v2",
                                                     "/stream?streams=btcusdt@trade/btcusdt@kline_1m",
                                                     "/ws/btcusdt@nonsense/btcusdt@depth@100ms"]),
                      st.text(max_size=40).map(lambda t: "/" + t))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frames=st.lists(requests(venue), min_size=1, max_size=6), path=paths)
    def check(frames, path):
        conversation(venue, frames, path)

    return check


test_binance_never_raises = _fuzz("binance")
test_bybit_never_raises = _fuzz("bybit")
test_okx_never_raises = _fuzz("okx")
test_htx_never_raises = _fuzz("htx")
test_coinbase_never_raises = _fuzz("coinbase")
test_kraken_never_raises = _fuzz("kraken")


def test_every_venue_is_fuzzed():
    assert {name[5:-len("_never_raises")] for name in globals() if name.endswith("_never_raises")} == set(VENUES)
