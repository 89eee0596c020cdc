"""toyex's wire format: a top-of-book channel and a full-snapshot depth channel, JSON text numbers.

* subscribe: ``{"op":"subscribe","symbols":["BTC-USDT"]}`` -> ``{"op":"subscribed","symbols":[...]}``;
  an unknown symbol: ``{"op":"error","msg":"unknown symbol BTC-XYZ","symbol":"BTC-XYZ"}``.
* top of book: ``{"ch":"bbo","s":"BTC-USDT","u":7,"t":1700000000123,"b":"100.5","B":"1.5","a":"100.6","A":"2"}``.
* depth: ``{"ch":"depth","s":"BTC-USDT","u":8,"t":1700000000123,"bids":[["100.5","1.5"],...],"asks":[...]}``.

``u`` counts every push of a connection (both channels), ``t`` is the exchange's time in ms.

* trading rules (``GET /api/symbols``): ``{"symbols":[{"symbol":"BTC-USDT","tick":"0.1","step":"0.001",
  "min_qty":"0.001","min_value":"5","open":true}]}``.
"""
from __future__ import annotations

from decimal import Decimal

import msgspec
import orjson

from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, InstrumentRules, SubscribeError
from pipeline.venues._common import Message, RefMsg, WireMsg, build_rules, decode_reference, make_parse

NAME = "toyex"


class Top(WireMsg):
    """The ``bbo`` channel."""

    ch: str
    s: str
    u: int
    t: int
    b: float
    B: float
    a: float
    A: float


class Depth(WireMsg):
    """The ``depth`` channel: the top levels, best first, replacing the book."""

    ch: str
    s: str
    u: int
    t: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


TOP = Message(Top, NAME)
DEPTH_MESSAGE = Message(Depth, NAME)
_MARKS = {str: ('"ch":"bbo"', '"ch":"depth"'), bytes: (b'"ch":"bbo"', b'"ch":"depth"')}


def native_symbol(instrument: str) -> str:
    return instrument.replace("/", "-")


def build_url(url: str, symbols: list[str], depth: int) -> str:
    return url


def build_subscribe(symbols: list[str], depth: int) -> list[str]:
    return [orjson.dumps({"op": "subscribe", "symbols": symbols}).decode()]


def build_resubscribe(symbol: str, depth: int) -> list[str]:
    return []                     # every depth push is a snapshot


def build_keepalive() -> str | None:
    return None


def build_pong(token) -> str:
    raise NotImplementedError("toyex sends no pings")


def _top(m: Top) -> tuple:
    return m.s, m.b, m.B, m.a, m.A, m.t, m.u, None


def _market(raw, bbo: bool) -> list:
    if bbo:
        m, drift = TOP.decode(raw)
        symbol, bid, bid_qty, ask, ask_qty, ts, seq, _ = _top(m)
        events = [BookUpdate(symbol, BBO, True, [(bid, bid_qty)], [(ask, ask_qty)], ts, seq)]
    else:
        m, drift = DEPTH_MESSAGE.decode(raw)
        events = [BookUpdate(m.s, DEPTH, True, m.bids, m.asks, m.t, m.u)]
    return events if drift is None else [*events, drift]


def _control(msg: dict, raw) -> list | None:
    op = msg.get("op")
    if op == "subscribed":
        return [Ack()]
    if op == "error":
        return [SubscribeError(str(msg.get("msg", "")), str(msg.get("symbol", "")))]
    if msg.get("ch") in ("bbo", "depth"):
        return _market(raw, msg["ch"] == "bbo")
    if "ch" in msg:
        raise ParseError("unknown_message", f"channel {msg['ch']!r}", NAME)
    return None


_parse_control = make_parse(NAME, _control)


def parse(raw, recv_ns: int) -> list:
    marks = _MARKS.get(raw.__class__)
    if marks is not None:
        if raw.find(marks[0], 0, 24) >= 0:
            return _market(raw, True)
        if raw.find(marks[1], 0, 24) >= 0:
            return _market(raw, False)
    return _parse_control(raw, recv_ns)


def top(raw) -> tuple | None:
    try:
        if raw.find(_MARKS[raw.__class__][0], 0, 24) < 0:
            return None
        return _top(TOP.exact.decode(raw))
    except Exception:  # noqa: BLE001 - None: parse decides
        return None


class SymbolRules(RefMsg):
    """One entry of ``GET /api/symbols``."""

    symbol: str
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    min_value: Decimal
    open: bool


class Symbols(RefMsg):
    symbols: list[SymbolRules]


_SYMBOLS = msgspec.json.Decoder(Symbols)


def instrument_rules(raw) -> list[InstrumentRules]:
    """``GET /api/symbols`` -> the trading rules of every symbol (no maximums)."""
    return [build_rules(NAME, s.symbol, tick=s.tick, step=s.step, min_qty=s.min_qty, max_qty=None,
                        min_notional=s.min_value, max_notional=None, trading=s.open,
                        status="open" if s.open else "closed")
            for s in decode_reference(_SYMBOLS, raw, NAME).symbols]
