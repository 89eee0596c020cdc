"""Coinbase Advanced Trade public market data.

Docs: https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-channels
(overview and limits: https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-overview)

Every message has the envelope ``channel``, ``timestamp`` (RFC3339, ns: the
send time), ``sequence_num`` and ``events``. ``sequence_num``
counts messages **per connection across all channels** (0, 1, 2, ...; the
docs' "per product" wording does not match the live feed), so :func:`parse`
returns a :class:`~pipeline.model.SequenceMark` first for every message that
carries one and the feed checks the connection's continuity.

Channels (``wss://advanced-trade-ws.coinbase.com``, native symbol ``BTC-USD``;
``-USDC`` products are aliases of ``-USD`` on market channels, not a second book):

* ``ticker`` -- on every trade (batched on cascades); best bid/ask with
  quantities. **Not subscribed**: it moves on trades only and can arrive after
  the ``level2`` update that already moved the book, so it would publish an
  older top. Still parsed (as a ``weak`` top of book that never overrides a
  synced depth book) so captures decode::

      {"channel":"ticker","timestamp":"2026-08-09T21:05:48.298032046Z","sequence_num":10,
       "events":[{"type":"update","tickers":[{"type":"ticker","product_id":"ETH-USD",
       "price":"1919.41",...,"best_bid":"1919.44","best_ask":"1919.49",
       "best_bid_quantity":"0.02858092","best_ask_quantity":"0.07814824"}]}]}

* ``level2`` -- arrives as channel ``l2_data``; the first event is a
  ``snapshot`` of the **whole book** (several MB), then ``update``s;
  ``new_quantity`` is absolute and ``"0"`` deletes; the ask side is ``offer``::

      {"channel":"l2_data","timestamp":"2026-08-09T21:05:48.629702747Z","sequence_num":25,
       "events":[{"type":"update","product_id":"ETH-USD","updates":[
       {"side":"bid","event_time":"2026-08-09T21:05:48.559352Z","price_level":"1679.53",
        "new_quantity":"0.05972024"},{"side":"offer",...}]}]}

  There is no per-book sequence: continuity is the connection's ``sequence_num``.
  The top of book is the best level of this full book (``level2`` "guarantees
  delivery of all updates"). Exchange time is the newest ``event_time`` of the
  event's updates ("the time of the event as recorded by our trading engine"),
  not the envelope ``timestamp``. The docs' own snapshot example carries
  ``event_time`` ``1970-01-01T00:00:00Z`` on every level: a zero engine time
  is a placeholder, and the envelope time is used instead.
* ``heartbeats`` -- one per second; without it idle channels close after 60-90 s.
  Its ``sequence_num`` follows the level2 messages on the same connection, so
  an in-sequence heartbeat proves every book of the connection is current:
  parsed as :class:`~pipeline.model.Liveness` for the whole connection.
* ``subscriptions`` -- the full current subscription set after every (un)subscribe.

Subscribe with one ``{"type":"subscribe","product_ids":[...],"channel":...}``
per channel within 5 s of connecting. ``build_resubscribe`` (unsubscribe +
subscribe ``level2`` on the same connection) exists for the shape only: a
lost message shows as a jump of the connection's ``sequence_num``, which says
nothing about which book lost it, so the session treats it as a gap of every
row of the connection and reconnects (the docs: "your feed consumer should be
designed to handle sequence gaps"); a per-book resubscribe would not repair
the others. No client keepalive. Limits: 8
connections/s and 8 unauthenticated messages/s per IP.

The legacy *Exchange* feed (``wss://ws-feed.exchange.coinbase.com``, messages
keyed by ``type``: ``ticker``, ``snapshot``, ``l2update``, ``heartbeat``,
``error``) is parsed too, so its captures decode.

Each hot message (``l2_data``, ``ticker``) is declared once below as a
:class:`~pipeline.venues._common.WireMsg` struct and decoded with it; a field
Coinbase adds shows as a :class:`~pipeline.model.SchemaDrift` next to the
frame's events. Control frames (``heartbeats``, ``subscriptions``, errors, the
Exchange feed, other channels) are read with orjson by :func:`_handle`.
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal

import msgspec
import orjson

from pipeline.errors import ParseError
from pipeline.model import (
    BBO,
    DEPTH,
    Ack,
    BookUpdate,
    Heartbeat,
    InstrumentRules,
    Liveness,
    SequenceMark,
    SubscribeError,
)
from pipeline.venues._common import (
    SHAPE_ERRORS,
    Message,
    RefMsg,
    WireMsg,
    build_rules,
    decode_reference,
    levels,
    make_parse,
    rfc3339_ms,
)

NAME = "coinbase"
CHANNELS = ("level2", "heartbeats")
CONNECTION_LIVE = Liveness(None)

_PRODUCT_IN_TEXT = re.compile(r"\b([A-Z0-9]{2,12}-[A-Z0-9]{2,12})\b")


def native_symbol(instrument: str) -> str:
    base, quote = instrument.split("/")
    return f"{base}-{quote}"


def canonical_symbol(symbol: str) -> str | None:
    """The inverse of :func:`native_symbol`: ``BTC-USDT`` -> ``BTC/USDT``, or None for another shape."""
    base, sep, quote = symbol.partition("-")
    return f"{base}/{quote}" if sep and base and quote and "-" not in quote else None


def build_url(url: str, symbols: list[str], depth: int) -> str:
    return url


def build_subscribe(symbols: list[str], depth: int) -> list[str]:
    return [orjson.dumps({"type": "subscribe", "product_ids": list(symbols), "channel": channel}).decode()
            for channel in CHANNELS]


def build_resubscribe(symbol: str, depth: int) -> list[str]:
    return [orjson.dumps({"type": kind, "product_ids": [symbol], "channel": "level2"}).decode()
            for kind in ("unsubscribe", "subscribe")]


def build_keepalive() -> str | None:
    return None


def build_pong(token) -> str:
    raise NotImplementedError("Coinbase does not send application-level pings")


# ---------------------------------------------------------------- the hot messages, each declared once

class Level2Update(WireMsg):
    """One level of a ``level2`` event: websocket-channels, "Level2 Channel" (``updates[]``).

    ``side`` is ``bid`` or ``offer`` (the ask side); ``new_quantity`` is absolute, ``"0"`` deletes.
    ``event_time`` is the engine time of the change (``1970-01-01T00:00:00Z`` in the docs' snapshot).
    """

    side: str
    price_level: float
    new_quantity: float
    event_time: str | None = None


class Level2Event(WireMsg):
    """An event of a ``level2`` message: websocket-channels, "Level2 Channel" (``events[]``).

    ``type`` is ``snapshot`` (the whole book) or ``update``.
    """

    type: str
    product_id: str
    updates: list[Level2Update]


class Level2Message(WireMsg):
    """The ``level2`` envelope, channel ``l2_data``: websocket-channels, "Level2 Channel".

    ``sequence_num`` counts the connection's messages across all channels (see the module docstring);
    ``client_id`` appears in the docs' examples only.
    """

    channel: str
    timestamp: str
    events: list[Level2Event]
    sequence_num: int | None = None
    client_id: str | None = None


Best = float | Literal[""] | None      # best bid/ask price or quantity: "" (or absent) when the side is empty


class Ticker(WireMsg):
    """One product of a ``ticker`` event: websocket-channels, "Ticker Channel" (``tickers[]``).

    Only ``product_id`` and the best bid/ask with their quantities are read; the trade and 24 h / 52 w
    statistics are declared so that they are known, never read.
    """

    product_id: str
    best_bid: Best = None
    best_bid_quantity: Best = None
    best_ask: Best = None
    best_ask_quantity: Best = None
    type: str | None = None
    price: str | None = None
    volume_24_h: str | None = None
    low_24_h: str | None = None
    high_24_h: str | None = None
    low_52_w: str | None = None
    high_52_w: str | None = None
    price_percent_chg_24_h: str | None = None


class TickerEvent(WireMsg):
    """An event of a ``ticker`` message: websocket-channels, "Ticker Channel" (``events[]``)."""

    tickers: list[Ticker]
    type: str | None = None


class TickerMessage(WireMsg):
    """The ``ticker`` envelope: websocket-channels, "Ticker Channel"."""

    channel: str
    timestamp: str
    events: list[TickerEvent]
    sequence_num: int | None = None
    client_id: str | None = None


_LEVEL2 = Message(Level2Message, NAME)
_TICKER = Message(TickerMessage, NAME)

# A hot frame names its channel first (``{"channel":"l2_data",...``): found in the frame's first bytes.
_HEAD = 64
_MARKS: dict[type, tuple] = {str: ('"channel":"l2_data"', '"channel":"ticker"')}
_MARKS[bytes] = _MARKS[bytearray] = tuple(m.encode() for m in _MARKS[str])


def _level2(raw) -> list | None:
    """The events of an ``l2_data`` frame; None when its envelope names another channel."""
    msg, drift = _LEVEL2.decode(raw)
    if msg.channel != "l2_data":
        return None
    seq = msg.sequence_num
    out: list = [] if seq is None else [SequenceMark(seq)]
    envelope_ms = rfc3339_ms(msg.timestamp)
    for event in msg.events:
        kind = event.type
        if kind != "snapshot" and kind != "update":
            raise ParseError("unknown_message", f"l2_data event type {kind!r}", NAME)
        bids, asks, newest = _updates(event.updates)
        # no engine time in the event (or the 1970 placeholder): the send time is the best we have
        ts = (rfc3339_ms(newest) if newest else 0) or envelope_ms
        out.append(BookUpdate(event.product_id, DEPTH, kind == "snapshot", bids, asks, ts))
    if drift is not None:
        out.append(drift)
    return out


def _updates(updates: list[Level2Update]) -> tuple[list, list, str]:
    """(bids, asks, newest event_time text).

    Coinbase trims trailing zeros of the fraction (``48.35161Z``), so texts are
    compared without the zone letter: a shorter fraction that is a prefix is
    the smaller time, which plain string order gets right once the ``Z`` is gone.
    """
    bids: list = []
    asks: list = []
    bid = bids.append
    ask = asks.append
    newest = ""
    newest_key = ""
    for u in updates:
        side = u.side
        if side == "bid":
            bid((u.price_level, u.new_quantity))
        elif side == "offer" or side == "ask":
            ask((u.price_level, u.new_quantity))
        else:
            raise ParseError("unknown_message", f"l2 side {side!r}", NAME)
        event_time = u.event_time
        if event_time and event_time != newest:         # the same text as the newest: nothing to compare
            key = event_time[:-1] if event_time[-1] in "Zz" else event_time
            if key > newest_key:
                newest, newest_key = event_time, key
    return bids, asks, newest


def _ticker(raw) -> list | None:
    """The events of a ``ticker`` frame (weak tops of book); None when its envelope names another channel."""
    msg, drift = _TICKER.decode(raw)
    if msg.channel != "ticker":
        return None
    seq = msg.sequence_num
    out: list = [] if seq is None else [SequenceMark(seq)]
    ts = rfc3339_ms(msg.timestamp)
    for event in msg.events:
        for t in event.tickers:
            out.append(BookUpdate(t.product_id, BBO, True, _side(t.best_bid, t.best_bid_quantity),
                                  _side(t.best_ask, t.best_ask_quantity), ts, weak=True))
    if drift is not None:
        out.append(drift)
    return out


def _side(px, qty) -> list[tuple[float, float]]:
    """One best level, or none when the price or quantity is empty or absent."""
    if px is None or px == "" or qty is None or qty == "":
        return []
    return [(px, qty)]


_HOT = {"l2_data": _level2, "ticker": _ticker}


def _handle(msg: dict, raw) -> list | None:
    """Control frames (and the Exchange feed); a hot channel missed by the marker goes to its struct."""
    channel = msg.get("channel")
    if channel is None:
        return _exchange_feed(msg, raw)
    hot = _HOT.get(channel) if channel.__class__ is str else None
    if hot is not None:                   # not seen by parse's marker (another key first, spaces): same struct
        return _hot(hot, raw)
    seq = msg.get("sequence_num")
    out: list = [] if seq is None else [SequenceMark(int(seq))]
    if channel == "heartbeats":
        out.append(CONNECTION_LIVE)
    elif channel == "subscriptions":
        for event in msg["events"]:
            for name, products in event["subscriptions"].items():
                out.extend(Ack("" if p == name else p, name) for p in products)
    elif not out:                         # other channels (market_trades, candles, ...) only count
        raise ParseError("unknown_message", f"channel {channel!r}", NAME)
    return out


_control = make_parse(NAME, _handle)


def parse(raw: bytes | str, recv_ns: int) -> list:
    """``raw`` -> events: ``l2_data`` and ``ticker`` by their structs, every other frame by :func:`_handle`.

    The marker only chooses the first attempt: a frame it picks that does not decode (or whose envelope
    names another channel, the marker having been found elsewhere) goes the control way, which reads
    the channel with orjson and names the problem (``invalid_json`` first, as before).
    """
    marks = _MARKS.get(raw.__class__)
    if marks is not None:
        try:
            if raw.find(marks[0], 0, _HEAD) >= 0:
                events = _level2(raw)
                if events is not None:
                    return events
            elif raw.find(marks[1], 0, _HEAD) >= 0:
                events = _ticker(raw)
                if events is not None:
                    return events
        except Exception:  # noqa: BLE001 - not decoded: the control way decides, and raises only ParseError
            pass
    return _control(raw, recv_ns)


def _hot(decode, raw) -> list | None:
    """``decode(raw)`` for a frame orjson read (the channel is ``l2_data`` or ``ticker``), raising only ParseError."""
    try:
        return decode(raw)
    except ParseError:
        raise
    except RecursionError as exc:                     # nesting msgspec refuses deeper than orjson does
        raise ParseError("invalid_json", f"{type(exc).__name__}: {exc}"[:120], NAME) from None
    except SHAPE_ERRORS as exc:                       # a time that is not RFC 3339
        raise ParseError("unknown_message", f"{type(exc).__name__}: {exc}", NAME) from None


def _one(d: dict, px_key: str, qty_key: str) -> list[tuple[float, float]]:
    px = d.get(px_key)
    qty = d.get(qty_key)
    if not px or qty is None or qty == "":
        return []
    return [(float(px), float(qty))]


def _exchange_feed(msg: dict, raw) -> list:
    """The legacy Exchange feed (``type``-keyed messages)."""
    kind = msg.get("type")
    if kind == "heartbeat":
        return [Heartbeat()]
    if kind == "subscriptions":
        return [Ack(p, c["name"]) for c in msg["channels"] for p in c.get("product_ids") or ("",)]
    if kind == "error":
        text = f"{msg.get('message', 'error')}: {msg.get('reason', '')}".rstrip(": ")
        match = _PRODUCT_IN_TEXT.search(text)
        return [SubscribeError(text, match.group(1) if match else "")]
    ts = rfc3339_ms(msg["time"]) if msg.get("time") else 0
    if kind == "ticker":
        if "best_bid_size" not in msg:
            raise ParseError("unknown_message", "exchange-feed ticker without best bid/ask sizes", NAME)
        return [BookUpdate(msg["product_id"], BBO, True, _one(msg, "best_bid", "best_bid_size"),
                           _one(msg, "best_ask", "best_ask_size"), ts, int(msg["sequence"]))]
    if kind == "snapshot":
        return [BookUpdate(msg["product_id"], DEPTH, True, levels(msg["bids"]), levels(msg["asks"]), ts)]
    if kind == "l2update":
        bids = [(float(p), float(q)) for side, p, q in msg["changes"] if side == "buy"]
        asks = [(float(p), float(q)) for side, p, q in msg["changes"] if side == "sell"]
        return [BookUpdate(msg["product_id"], DEPTH, False, bids, asks, ts)]
    raise ParseError("unknown_message", str(raw[:80]), NAME)


# ---------------------------------------------------------------- reference data: trading rules


class Product(RefMsg):
    product_id: str
    price_increment: Decimal
    base_increment: Decimal
    base_min_size: Decimal
    base_max_size: Decimal | None = None
    quote_min_size: Decimal | None = None
    quote_max_size: Decimal | None = None
    status: str = ""
    trading_disabled: bool = False
    is_disabled: bool = False
    cancel_only: bool = False
    limit_only: bool = False
    post_only: bool = False


class Products(RefMsg):
    """``GET /api/v3/brokerage/market/products`` (Advanced Trade "List Public Products")."""

    products: list[Product]


_PRODUCTS = msgspec.json.Decoder(Products)
_UNTRADABLE_FLAGS = ("trading_disabled", "is_disabled", "cancel_only", "limit_only", "post_only")


def instrument_rules(raw: bytes | str) -> list[InstrumentRules]:
    """``GET /api/v3/brokerage/market/products`` -> one :class:`~pipeline.model.InstrumentRules` per product.

    Docs: https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/public/list-public-products
    (as scraped 2026-06-27 in github.com/qiuham/crypto-api-docs). A product of the docs' example, trimmed::

        {"products":[{"product_id":"BTC-USD","price_increment":"0.00000001","base_increment":"0.00000001",
         "quote_min_size":"0.00000001","quote_max_size":"1000","base_min_size":"0.00000001",
         "base_max_size":"1000","status":"<string>","is_disabled":false,"trading_disabled":false,
         "cancel_only":true,"limit_only":true,"post_only":true}],"num_products":100}

    ``tick`` ``price_increment``, ``step`` ``base_increment``, ``min_qty``/``max_qty`` ``base_min_size``/
    ``base_max_size``, ``min_notional``/``max_notional`` ``quote_min_size``/``quote_max_size``. ``trading``:
    ``status`` is ``online`` and none of ``trading_disabled``, ``is_disabled``, ``cancel_only``,
    ``limit_only``, ``post_only`` is set (``limit_only`` is read as "no taker order" too: conservative, a
    marketable limit may be refused while the book is in that mode); the reported ``status`` names the flags
    set. Numbers are strings.
    """
    resp = decode_reference(_PRODUCTS, raw, NAME)
    out = []
    for prod in resp.products:
        flags = [name for name in _UNTRADABLE_FLAGS if getattr(prod, name)]
        out.append(build_rules(
            NAME, prod.product_id, tick=prod.price_increment, step=prod.base_increment,
            min_qty=prod.base_min_size, max_qty=prod.base_max_size, min_notional=prod.quote_min_size,
            max_notional=prod.quote_max_size, trading=prod.status == "online" and not flags,
            status=" ".join([prod.status, *flags])))
    return out
