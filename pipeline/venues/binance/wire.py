"""Binance spot public market data (combined streams).

Docs: https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams

Channels:

* ``<symbol>@bookTicker`` -- real-time best bid/ask::

      {"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT",
       "b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}

  ``u`` is the order book update id (we drop older ones); **no timestamp**.
* ``<symbol>@depth<N>@100ms`` -- a full top-N snapshot every 100 ms::

      {"stream":"bnbusdt@depth5@100ms","data":{"lastUpdateId":13919791373,
       "bids":[["656.72000000","29.05200000"],...],"asks":[...]}}

  No symbol and no timestamp in the payload: the symbol comes from the
  combined-stream name, which is why we use ``/stream`` and not ``/ws``.
  Each push replaces the book, so there is no sequence to lose; a repeated or
  older ``lastUpdateId`` is dropped.

Merging the two channels: both ids are carried as ``xseq``; the book overlays
the bookTicker only when its ``u`` is above the depth's ``lastUpdateId``, so a
depth snapshot delivered late never brings back an older top. That the two
ids count in one id space is inferred (both are documented as the order book
update id), not stated by the docs.

Keepalive is WebSocket ping frames from the server every 20 s, answered by
the WebSocket library; there is no JSON ping. A connection lives at most
24 h; ``serverShutdown`` (``{"e":"serverShutdown","E":...}``, stream
``!serverShutdown`` on combined streams) announces a disconnect and asks for a
new connection "as soon as possible": parsed as a planned
:class:`~pipeline.model.Notice` (make-before-break). Limits: 5 incoming messages
per second per connection (SUBSCRIBE counts), 1024 streams per connection.
"""
from __future__ import annotations

from decimal import Decimal

import msgspec
import orjson

from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, InstrumentRules, Notice, SubscribeError
from pipeline.venues._common import (
    MAX_FRAME_BYTES,
    Message,
    RefMsg,
    WireMsg,
    build_rules,
    decode_reference,
    make_parse,
    split_concatenated,
)

NAME = "binance"
DEPTH_CHOICES = (5, 10, 20)


def native_symbol(instrument: str) -> str:
    base, quote = instrument.split("/")
    return f"{base}{quote}"


canonical_symbol = split_concatenated       # the inverse of native_symbol


def _depth_levels(depth: int) -> int:
    return next(n for n in DEPTH_CHOICES if n >= depth)


def streams(symbol: str, depth: int) -> list[str]:
    lower = symbol.lower()
    return [f"{lower}@bookTicker", f"{lower}@depth{_depth_levels(depth)}@100ms"]


def build_url(url: str, symbols: list[str], depth: int) -> str:
    return url


def build_subscribe(symbols: list[str], depth: int, request_id: int = 1) -> list[str]:
    params = [s for symbol in symbols for s in streams(symbol, depth)]
    return [orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": request_id}).decode()]


def build_resubscribe(symbol: str, depth: int) -> list[str]:
    # depth pushes are full snapshots: the next one rebuilds the book by itself
    return []


def build_keepalive() -> str | None:
    return None


def build_pong(token) -> str:
    raise NotImplementedError("Binance pings are WebSocket control frames, answered by the library")


SHUTDOWN = Notice("server shutdown announced", reconnect=True, planned=True)


# ---------------------------------------------------------------- the market-data messages, declared once

class BookTicker(WireMsg):
    """``<symbol>@bookTicker`` payload ("Individual Symbol Book Ticker Streams"): no timestamp."""

    u: int               # order book updateId
    s: str               # symbol
    b: float             # best bid price
    B: float             # best bid qty
    a: float             # best ask price
    A: float             # best ask qty


class BookTickerFrame(WireMsg):
    """A bookTicker on the combined endpoint: ``{"stream": "<symbol>@bookTicker", "data": {...}}``."""

    stream: str
    data: BookTicker


class PartialDepth(WireMsg):
    """``<symbol>@depth<levels>[@100ms]`` payload ("Partial Book Depth Streams"): no symbol, no timestamp."""

    lastUpdateId: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


class PartialDepthFrame(WireMsg):
    """A partial depth push on the combined endpoint; the symbol is the stream name's."""

    stream: str
    data: PartialDepth


TICKER = Message(BookTickerFrame, NAME)
RAW_TICKER = Message(BookTicker, NAME)          # the raw ``/ws`` endpoint sends the payload bare
PARTIAL_DEPTH = Message(PartialDepthFrame, NAME)
_TICKER_MARK = {str: '@bookTicker"', bytes: b'@bookTicker"'}
_DEPTH_MARK = {str: "@depth", bytes: b"@depth"}


def _ticker(d: BookTicker) -> tuple:
    """The top of book a bookTicker says: ``(symbol, bid, bid qty, ask, ask qty, exch ts, seq, xseq)``."""
    return d.s, d.b, d.B, d.a, d.A, 0, d.u, d.u


def _ticker_update(d: BookTicker) -> BookUpdate:
    return BookUpdate(d.s, BBO, True, [(d.b, d.B)], [(d.a, d.A)], 0, d.u, xseq=d.u)


def _market(raw, message: Message) -> list:
    """A combined-stream market-data frame into events (the stream name says which declaration)."""
    msg, drift = message.decode(raw)
    stream = msg.stream
    if message is TICKER:
        if not stream.endswith("@bookTicker"):
            raise ParseError("unknown_message", f"a book ticker on stream {stream!r}", NAME)
        events = [_ticker_update(msg.data)]
    else:
        if "@depth" not in stream or stream.endswith("@bookTicker"):
            raise ParseError("unknown_message", f"partial depth on stream {stream!r}", NAME)
        d = msg.data
        last = d.lastUpdateId
        events = [BookUpdate(stream.split("@", 1)[0].upper(), DEPTH, True, d.bids, d.asks, 0, last, xseq=last)]
    if drift is not None:
        events.append(drift)
    return events


def _control(msg: dict, raw) -> list | None:
    """Every frame that is not a combined-stream market-data push: acks, errors, notices, raw tickers."""
    if "stream" in msg:
        stream = msg["stream"]
        data = msg["data"]
        if stream.endswith("@bookTicker"):
            return _market(raw, TICKER)
        if "@depth" in stream:
            if "lastUpdateId" not in data:
                raise ParseError("unknown_message", "diff depth is not used; subscribe to partial depth", NAME)
            return _market(raw, PARTIAL_DEPTH)
        if data.get("e") == "serverShutdown":
            return [SHUTDOWN]
        raise ParseError("unknown_message", f"stream {stream!r}", NAME)
    if "result" in msg and "id" in msg:
        return [Ack()]
    if "code" in msg and "msg" in msg:
        return [SubscribeError(f"code {msg['code']}: {msg['msg']}")]
    if msg.get("e") == "serverShutdown":
        return [SHUTDOWN]
    if "u" in msg and "s" in msg and "b" in msg:          # raw-stream bookTicker
        d, drift = RAW_TICKER.decode(raw)
        return [_ticker_update(d)] if drift is None else [_ticker_update(d), drift]
    return None


_parse_control = make_parse(NAME, _control)


def parse(raw, recv_ns: int) -> list:
    """One frame into :mod:`pipeline.model` events; raises only :class:`~pipeline.errors.ParseError`."""
    cls = raw.__class__
    if cls is bytes or cls is str:
        if raw.find(_TICKER_MARK[cls], 0, 64) >= 0:
            return _market(raw, TICKER)
        if raw.find(_DEPTH_MARK[cls], 0, 64) >= 0 and raw.find(_LAST_MARK[cls]) >= 0:
            return _market(raw, PARTIAL_DEPTH)
    return _parse_control(raw, recv_ns)


_LAST_MARK = {str: '"lastUpdateId"', bytes: b'"lastUpdateId"'}


def top(raw) -> tuple | None:
    """The short path for a bookTicker frame (contract in :mod:`pipeline.venues._common`); None for any other.

    The same declaration as :func:`parse`, decoded exactly (a frame with a field we do not declare is
    left to :func:`parse`, which counts it).
    """
    try:
        if raw.find(_TICKER_MARK[raw.__class__], 0, 64) < 0 or len(raw) > MAX_FRAME_BYTES:
            return None
        msg = TICKER.exact.decode(raw)
    except Exception:  # noqa: BLE001 - anything unusual takes the general path, which names it
        return None
    return _ticker(msg.data) if msg.stream.endswith("@bookTicker") else None


# ---------------------------------------------------------------- reference data: trading rules


class SymbolFilter(RefMsg):
    """One entry of a symbol's ``filters`` (filters.md), every kind in one declaration: the fields below are
    those of ``PRICE_FILTER``, ``LOT_SIZE``, ``NOTIONAL`` and ``MIN_NOTIONAL``; other kinds leave them None."""

    filterType: str
    tickSize: Decimal | None = None
    minQty: Decimal | None = None
    maxQty: Decimal | None = None
    stepSize: Decimal | None = None
    minNotional: Decimal | None = None
    maxNotional: Decimal | None = None


class ExchangeSymbol(RefMsg):
    symbol: str
    status: str
    filters: list[SymbolFilter]
    isSpotTradingAllowed: bool = True


class ExchangeInfo(RefMsg):
    """``GET /api/v3/exchangeInfo`` (rest-api.md "Exchange information"): the fields the rules use."""

    symbols: list[ExchangeSymbol]


_EXCHANGE_INFO = msgspec.json.Decoder(ExchangeInfo)


def instrument_rules(raw: bytes | str) -> list[InstrumentRules]:
    """``GET /api/v3/exchangeInfo`` -> one :class:`~pipeline.model.InstrumentRules` per symbol.

    Docs: ``rest-api.md`` "Exchange information", ``filters.md`` and ``enums.md`` of
    https://github.com/binance/binance-spot-api-docs (read at commit a5e0bc3, 2026-07-21). A symbol, trimmed::

        {"symbol":"BTCBUSD","status":"TRADING","isSpotTradingAllowed":true,"filters":[
         {"filterType":"PRICE_FILTER","minPrice":"0.01000000","maxPrice":"1000000.00000000","tickSize":"0.01000000"},
         {"filterType":"LOT_SIZE","minQty":"0.00001000","maxQty":"9000.00000000","stepSize":"0.00001000"},
         {"filterType":"MIN_NOTIONAL","minNotional":"10.00000000","applyToMarket":true,"avgPriceMins":5},
         {"filterType":"MARKET_LOT_SIZE","minQty":"0.00000000","maxQty":"122.34284289","stepSize":"0.00000000"}]}

    ``tick`` is ``PRICE_FILTER.tickSize``; ``step``/``min_qty``/``max_qty`` are ``LOT_SIZE``'s; the notional
    bounds come from ``NOTIONAL`` (``minNotional``, ``maxNotional``), or from the legacy ``MIN_NOTIONAL``
    on symbols that still carry it. ``applyMinToMarket``/``applyMaxToMarket``/``applyToMarket`` only say
    whether the bound also applies to MARKET orders; the orders sized here are limit orders, to which the
    bounds always apply, so the flags are not read. ``MARKET_LOT_SIZE`` (market orders only) is not read
    either. ``trading``: ``status`` is ``TRADING`` (the others: ``END_OF_DAY``, ``HALT``, ``BREAK``,
    ``CANCEL_ONLY``) and ``isSpotTradingAllowed``. All numbers are strings on the wire.
    """
    info = decode_reference(_EXCHANGE_INFO, raw, NAME)
    out = []
    for sym in info.symbols:
        kinds = {f.filterType: f for f in sym.filters}
        price, lot = kinds.get("PRICE_FILTER"), kinds.get("LOT_SIZE")
        notional = kinds.get("NOTIONAL") or kinds.get("MIN_NOTIONAL")
        if price is None or lot is None:
            missing = "PRICE_FILTER" if price is None else "LOT_SIZE"
            raise ParseError("bad_reference_data", f"{sym.symbol}: no {missing} filter", NAME)
        out.append(build_rules(
            NAME, sym.symbol, tick=price.tickSize, step=lot.stepSize, min_qty=lot.minQty, max_qty=lot.maxQty,
            min_notional=notional.minNotional if notional is not None else None,
            max_notional=notional.maxNotional if notional is not None else None,
            trading=sym.status == "TRADING" and sym.isSpotTradingAllowed, status=sym.status))
    return out
