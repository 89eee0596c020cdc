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

import orjson

from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, Notice, SubscribeError
from pipeline.venues._common import MAX_FRAME_BYTES, levels, make_parse

NAME = "binance"
DEPTH_CHOICES = (5, 10, 20)


def native_symbol(instrument: str) -> str:
    base, quote = instrument.split("/")
    return f"{base}{quote}"


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


def _book_ticker(data: dict) -> BookUpdate:
    u = int(data["u"])
    return BookUpdate(data["s"], BBO, True, [(float(data["b"]), float(data["B"]))],
                      [(float(data["a"]), float(data["A"]))], 0, u, xseq=u)


def _handle(msg: dict, raw) -> list | None:
    if "stream" in msg:
        stream = msg["stream"]
        data = msg["data"]
        if stream.endswith("@bookTicker"):
            return [_book_ticker(data)]
        if "@depth" in stream:
            if "lastUpdateId" not in data:
                raise ParseError("unknown_message", "diff depth is not used; subscribe to partial depth", NAME)
            symbol = stream.split("@", 1)[0].upper()
            last = int(data["lastUpdateId"])
            return [BookUpdate(symbol, DEPTH, True, levels(data["bids"]), levels(data["asks"]), 0, last,
                               xseq=last)]
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
        return [_book_ticker(msg)]
    return None


parse = make_parse(NAME, _handle)


def top(raw) -> tuple | None:
    """The short path for a bookTicker frame (contract in :mod:`pipeline.venues.typed`); None for any other."""
    try:
        if raw.find(_TOP_MARK[raw.__class__], 0, 64) < 0 or len(raw) > MAX_FRAME_BYTES:
            return None
        msg = orjson.loads(raw)
        if not msg["stream"].endswith("@bookTicker"):
            return None
        data = msg["data"]
        u = int(data["u"])
        return data["s"], float(data["b"]), float(data["B"]), float(data["a"]), float(data["A"]), 0, u, u
    except Exception:  # noqa: BLE001 - anything unusual takes the general path, which names it
        return None


_TOP_MARK = {str: "@bookTicker", bytes: b"@bookTicker"}
