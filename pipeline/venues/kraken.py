"""Kraken spot WebSocket v2 public market data.

Docs: https://docs.kraken.com/api/docs/websocket-v2/book,
https://docs.kraken.com/api/docs/websocket-v2/ticker,
https://docs.kraken.com/api/docs/guides/spot-ws-book-v2 (checksum guide)

Channels (``wss://ws.kraken.com/v2``, native symbol ``BTC/USD``; v2 says
BTC where v1 said XBT):

* ``ticker`` subscribed with ``"event_trigger":"bbo"`` (the default
  ``trades`` only pushes on trades) -- level 1 plus 24 h statistics::

      {"channel":"ticker","type":"update","data":[{"symbol":"ALGO/USD",
       "bid":0.10025,"bid_qty":740.0,"ask":0.10035,"ask_qty":740.0,"last":0.10035,...,
       "timestamp":"2023-09-25T09:04:31.742648Z"}]}

  Snapshot and update both carry the whole top of book.
* ``book`` depth 10 -- a snapshot, then updates; qty 0 deletes; levels pushed
  out of the top 10 get no delete, so the book truncates to 10 after every
  message::

      {"channel":"book","type":"update","data":[{"symbol":"ETH/USD","bids":[],
       "asks":[{"price":1797.29,"qty":0.00000000},{"price":1797.52,"qty":1.56601318}],
       "checksum":3329440863,"timestamp":"2025-05-06T09:17:26.208075Z"}]}

  ``checksum`` is a CRC32 of the top 10 asks then top 10 bids, each level's
  price then qty **as text** without the ``.`` and leading zeros. Prices and
  quantities are JSON numbers whose text carries the engine precision
  (``1797.30``, ``0.80386470``): a float loses the trailing zeros, so
  :func:`parse` lifts each level's number text from the raw frame and sends
  it along (``bids_text``/``asks_text``) for :func:`checksum`. A snapshot may
  have no ``timestamp``.

Keepalive: the server sends ``{"channel":"heartbeat"}`` about once a second
when nothing else was sent and closes an idle socket after ~1 minute; the
client sends ``{"method":"ping","req_id":N}`` and gets ``{"method":"pong"}``.
On connect a ``status`` message arrives (its ``connection_id`` exceeds
2**63). Subscribe acks come one per symbol. Limit: ~150 connection attempts
per 10 minutes per IP.
"""
from __future__ import annotations

import re
import zlib

import orjson

from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, Heartbeat, Notice, Pong, SubscribeError
from pipeline.venues._common import SHAPE_ERRORS, loads
from pipeline.venues.coinbase import rfc3339_ms

NAME = "kraken"
DEFAULT_URL = "wss://ws.kraken.com/v2"
DEFAULT_TAKER_FEE_BPS = 40.0
KEEPALIVE_INTERVAL_S = 20.0
SUBSCRIBE_INTERVAL_S = 0.0   # between subscribe frames: one frame per channel
MAX_SYMBOLS_PER_CONNECTION = 50       # no documented per-connection limit
BOOK_LEVELS = 10
CHECKSUM_LEVELS = 10

_SECTION = re.compile(rb'"(bids|asks)"\s*:\s*\[([^\]]*)\]')
_LEVEL = re.compile(rb'\{\s*"price"\s*:\s*(-?[0-9][0-9.eE+-]*)\s*,\s*"qty"\s*:\s*(-?[0-9][0-9.eE+-]*)\s*[,}]')
_PAIR_IN_TEXT = re.compile(r"\b([A-Z0-9]{2,12}/[A-Z0-9]{2,12})\b")
KEEPALIVE_FRAME = '{"method":"ping","req_id":1}'   # a constant id: the pong only needs to arrive


def checksum(bids_text: list, asks_text: list) -> int:
    """Kraken's CRC32 over the top levels, from each level's (price, qty) wire text, best first."""
    parts = [p.replace(".", "").lstrip("0") + q.replace(".", "").lstrip("0")
             for p, q in asks_text[:CHECKSUM_LEVELS]]
    parts.extend(p.replace(".", "").lstrip("0") + q.replace(".", "").lstrip("0")
                 for p, q in bids_text[:CHECKSUM_LEVELS])
    return zlib.crc32("".join(parts).encode("ascii"))


CHECKSUM = checksum


def native_symbol(instrument: str) -> str:
    return instrument


def build_url(url: str, symbols: list[str], depth: int) -> str:
    return url


def _request(method: str, channel: str, symbols: list[str]) -> str:
    params = {"channel": channel, "symbol": list(symbols)}
    if channel == "book":
        params["depth"] = BOOK_LEVELS
    else:
        params["event_trigger"] = "bbo"
    return orjson.dumps({"method": method, "params": params}).decode()


def build_subscribe(symbols: list[str], depth: int) -> list[str]:
    return [_request("subscribe", "ticker", symbols), _request("subscribe", "book", symbols)]


def build_resubscribe(symbol: str, depth: int) -> list[str]:
    return [_request("unsubscribe", "book", [symbol]), _request("subscribe", "book", [symbol])]


def build_keepalive() -> str:
    return KEEPALIVE_FRAME


def build_pong(token) -> str:
    raise NotImplementedError("Kraken does not ping clients; the client sends method ping")


def parse(raw: bytes | str, recv_ns: int) -> list:
    msg = loads(raw, NAME)
    try:
        channel = msg.get("channel")
        if channel == "book":
            return _book(msg, raw)
        if channel == "ticker":
            return [BookUpdate(d["symbol"], BBO, True, _one(d, "bid", "bid_qty"), _one(d, "ask", "ask_qty"),
                               rfc3339_ms(d["timestamp"]) if d.get("timestamp") else 0) for d in msg["data"]]
        if channel == "heartbeat":
            return [Heartbeat()]
        if channel == "status":
            system = (msg.get("data") or [{}])[0].get("system", "online")
            return [Heartbeat()] if system == "online" else [Notice(f"system status {system}")]
        method = msg.get("method")
        if method == "pong":
            return [Pong()]
        if (method == "subscribe" or method == "unsubscribe") and "success" in msg:
            result = msg.get("result") or {}
            symbol = result.get("symbol") or msg.get("symbol") or ""
            if msg.get("success"):
                return [Ack(symbol, result.get("channel", ""))] if method == "subscribe" else []
            error = str(msg.get("error", f"{method} failed"))
            if not symbol:
                match = _PAIR_IN_TEXT.search(error)
                symbol = match.group(1) if match else ""
            return [SubscribeError(error, symbol)]
    except ParseError:
        raise
    except SHAPE_ERRORS as exc:
        raise ParseError("unknown_message", f"{type(exc).__name__}: {exc}", NAME) from None
    raise ParseError("unknown_message", str(raw[:80]), NAME)


def _one(d: dict, px_key: str, qty_key: str) -> list[tuple[float, float]]:
    px = d.get(px_key)
    if px is None:
        return []
    return [(float(px), float(d[qty_key]))]


def _book(msg: dict, raw) -> list:
    kind = msg["type"]
    if kind != "snapshot" and kind != "update":
        raise ParseError("unknown_message", f"book type {kind!r}", NAME)
    text = raw.encode() if isinstance(raw, str) else bytes(raw)
    sections = {b"bids": [], b"asks": []}
    for match in _SECTION.finditer(text):
        sections[match.group(1)].append(match.group(2))
    bid_sections = iter(sections[b"bids"])
    ask_sections = iter(sections[b"asks"])
    out = []
    for item in msg["data"]:
        bids_text = _level_text(next(bid_sections, None), len(item["bids"])) if "bids" in item else []
        asks_text = _level_text(next(ask_sections, None), len(item["asks"])) if "asks" in item else []
        ts = item.get("timestamp")
        out.append(BookUpdate(item["symbol"], DEPTH, kind == "snapshot",
                              [(float(p), float(q)) for p, q in bids_text],
                              [(float(p), float(q)) for p, q in asks_text],
                              rfc3339_ms(ts) if ts else 0, checksum=_checksum_value(item),
                              bids_text=bids_text, asks_text=asks_text))
    return out


def _checksum_value(item: dict) -> int | None:
    value = item.get("checksum")
    return None if value is None else int(value)


def _level_text(section: bytes | None, expected: int) -> list[tuple[str, str]]:
    if section is None:
        raise ParseError("unknown_message", "book side not found in the frame text", NAME)
    found = [(p.decode("ascii"), q.decode("ascii")) for p, q in _LEVEL.findall(section)]
    if len(found) != expected:
        # price/qty in another order or shape: without the wire text the checksum cannot work
        raise ParseError("unknown_message", f"book level text: found {len(found)} of {expected}", NAME)
    return found
