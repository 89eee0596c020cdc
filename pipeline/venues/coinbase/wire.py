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
"""
from __future__ import annotations

import re

import orjson

from pipeline.errors import ParseError
from pipeline.model import (
    BBO,
    DEPTH,
    Ack,
    BookUpdate,
    Heartbeat,
    Liveness,
    SequenceMark,
    SubscribeError,
)
from pipeline.venues._common import levels, make_parse, rfc3339_ms

NAME = "coinbase"
CHANNELS = ("level2", "heartbeats")
CONNECTION_LIVE = Liveness(None)

_PRODUCT_IN_TEXT = re.compile(r"\b([A-Z0-9]{2,12}-[A-Z0-9]{2,12})\b")


def native_symbol(instrument: str) -> str:
    base, quote = instrument.split("/")
    return f"{base}-{quote}"


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


def _handle(msg: dict, raw) -> list | None:
    channel = msg.get("channel")
    if channel is None:
        return _exchange_feed(msg, raw)
    seq = msg.get("sequence_num")
    out = [] if seq is None else [SequenceMark(int(seq))]
    if channel == "l2_data":
        envelope_ms = rfc3339_ms(msg["timestamp"])
        for event in msg["events"]:
            kind = event["type"]
            if kind != "snapshot" and kind != "update":
                raise ParseError("unknown_message", f"l2_data event type {kind!r}", NAME)
            bids, asks, newest = _updates(event["updates"])
            # no engine time in the event (or the 1970 placeholder): the send time is the best we have
            ts = (rfc3339_ms(newest) if newest else 0) or envelope_ms
            out.append(BookUpdate(event["product_id"], DEPTH, kind == "snapshot", bids, asks, ts))
    elif channel == "ticker":
        ts = rfc3339_ms(msg["timestamp"])
        for event in msg["events"]:
            for t in event["tickers"]:
                out.append(BookUpdate(t["product_id"], BBO, True, _one(t, "best_bid", "best_bid_quantity"),
                                      _one(t, "best_ask", "best_ask_quantity"), ts, weak=True))
    elif channel == "heartbeats":
        out.append(CONNECTION_LIVE)
    elif channel == "subscriptions":
        for event in msg["events"]:
            for name, products in event["subscriptions"].items():
                out.extend(Ack("" if p == name else p, name) for p in products)
    elif not out:                         # other channels (market_trades, candles, ...) only count
        raise ParseError("unknown_message", f"channel {channel!r}", NAME)
    return out


parse = make_parse(NAME, _handle)


def _updates(updates) -> tuple[list, list, str]:
    """(bids, asks, newest event_time text).

    Coinbase trims trailing zeros of the fraction (``48.35161Z``), so texts are
    compared without the zone letter: a shorter fraction that is a prefix is
    the smaller time, which plain string order gets right once the ``Z`` is gone.
    """
    bids = []
    asks = []
    newest = ""
    newest_key = ""
    for u in updates:
        side = u["side"]
        level = (float(u["price_level"]), float(u["new_quantity"]))
        if side == "bid":
            bids.append(level)
        elif side == "offer" or side == "ask":
            asks.append(level)
        else:
            raise ParseError("unknown_message", f"l2 side {side!r}", NAME)
        event_time = u.get("event_time")
        if event_time:
            key = event_time[:-1] if event_time[-1] in "Zz" else event_time
            if key > newest_key:
                newest, newest_key = event_time, key
    return bids, asks, newest


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


