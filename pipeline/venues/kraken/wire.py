"""Kraken spot WebSocket v2 public market data.

Docs: https://docs.kraken.com/api/docs/websocket-v2/book,
https://docs.kraken.com/api/docs/websocket-v2/ticker,
https://docs.kraken.com/api/docs/websocket-v2/instrument,
https://docs.kraken.com/api/docs/websocket-v2/status,
https://docs.kraken.com/exchange/guides/websockets/book-checksum-v2 (checksum guide)

Channels (``wss://ws.kraken.com/v2``, native symbol ``BTC/USD``; v2 says
BTC where v1 said XBT):

* ``ticker`` subscribed with ``"event_trigger":"bbo"`` (the default
  ``trades`` only pushes on trades) -- level 1 plus 24 h statistics::

      {"channel":"ticker","type":"update","data":[{"symbol":"ALGO/USD",
       "bid":0.10025,"bid_qty":740.0,"ask":0.10035,"ask_qty":740.0,"last":0.10035,...,
       "timestamp":"2023-09-25T09:04:31.742648Z"}]}

  Snapshot and update both carry the whole top of book. It is a ``weak``
  source: the checksummed ``book`` is the top of book, the ticker only stands
  in while the book is not synced.
* ``instrument`` -- reference data of every pair, subscribed **first**::

      {"channel":"instrument","type":"snapshot","data":{"assets":[...],"pairs":[
       {"symbol":"BTC/USD","base":"BTC","quote":"USD","status":"online",
        "qty_precision":8,"qty_increment":0.00000001,"price_precision":1,
        "price_increment":0.1,"cost_precision":5,...}]}}

  Each pair becomes an :class:`~pipeline.model.InstrumentSpec` (precisions
  and ``status``: ``online``, ``cancel_only``, ``delisted``, ``limit_only``,
  ``maintenance``, ``post_only``, ``reduce_only``, ``work_in_progress``; only
  ``online`` is tradable for us). The book checksum needs the precisions.
* ``book`` depth 10 -- a snapshot, then updates; qty 0 deletes; levels pushed
  out of the top 10 get no delete, so the book truncates to 10 after every
  message::

      {"channel":"book","type":"update","data":[{"symbol":"ETH/USD","bids":[],
       "asks":[{"price":1797.29,"qty":0.00000000},{"price":1797.52,"qty":1.56601318}],
       "checksum":3329440863,"timestamp":"2025-05-06T09:17:26.208075Z"}]}

  ``checksum`` is a CRC32 of the top 10 asks (low to high) then top 10 bids
  (high to low), each level's price then qty formatted with the pair's
  ``price_precision`` / ``qty_precision``, without the ``.`` and leading
  zeros (the checksum guide; Kraken's sample client formats the same way from
  a per-pair precision table). The wire text is not enough on its own: it
  carries full precision only while Kraken prints it so (``1797.30``); a
  re-serialized or shortest-form number (``63298``, ``5.1e-05``) breaks a
  raw-text checksum. So :func:`parse` lifts each level's number text from the
  raw frame (``bids_text``/``asks_text``, never through a float) and
  :func:`checksum` formats it through ``Decimal`` to the pair's precision.
  Until the ``instrument`` channel gave the precisions the book keeps the
  row syncing. A snapshot may have no ``timestamp``.
* ``status`` -- sent on connect and when the engine status changes:
  ``system`` ``online`` / ``maintenance`` / ``cancel_only`` / ``post_only``
  (the docs' list; ``limit_only`` is treated the same): anything but
  ``online`` cannot match orders, so it becomes
  ``TradingStatus(None, tradable=False)`` for the whole venue.

Keepalive: the server sends ``{"channel":"heartbeat"}`` about once a second
when nothing else was sent (so it proves every subscribed book is unchanged:
:class:`~pipeline.model.Liveness` for the connection) and closes an idle
socket after ~1 minute; the
client sends ``{"method":"ping","req_id":N}`` and gets ``{"method":"pong"}``.
On connect a ``status`` message arrives (its ``connection_id`` exceeds
2**63). Subscribe acks come one per symbol. Limit: ~150 connection attempts
per 10 minutes per IP.
"""
from __future__ import annotations

import re
import zlib
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import orjson

from pipeline.errors import ParseError
from pipeline.model import (
    BBO,
    DEPTH,
    Ack,
    BookUpdate,
    InstrumentSpec,
    Liveness,
    Pong,
    SubscribeError,
    TradingStatus,
)
from pipeline.venues._common import make_parse, rfc3339_ms

NAME = "kraken"
BOOK_LEVELS = 10
CHECKSUM_LEVELS = 10

_SECTION = re.compile(rb'"(bids|asks)"\s*:\s*\[([^\]]*)\]')
_LEVEL = re.compile(rb'\{\s*"price"\s*:\s*(-?[0-9][0-9.eE+-]*)\s*,\s*"qty"\s*:\s*(-?[0-9][0-9.eE+-]*)\s*[,}]')
_PAIR_IN_TEXT = re.compile(r"\b([A-Z0-9]{2,12}/[A-Z0-9]{2,12})\b")
KEEPALIVE_FRAME = '{"method":"ping","req_id":1}'   # a constant id: the pong only needs to arrive


@lru_cache(maxsize=1 << 16)
def _digits(text: str, decimals: int) -> str:
    """One number as the checksum wants it: formatted to ``decimals``, no ".", no leading zeros."""
    try:
        fixed = format(Decimal(text), f".{decimals}f")
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    return fixed.replace(".", "").lstrip("0")


def checksum(bids_text: list, asks_text: list, price_precision: int, qty_precision: int) -> int:
    """Kraken's CRC32 over the top levels (best first), each number formatted to the pair's precision."""
    parts = [_digits(p, price_precision) + _digits(q, qty_precision) for p, q in asks_text[:CHECKSUM_LEVELS]]
    parts.extend(_digits(p, price_precision) + _digits(q, qty_precision) for p, q in bids_text[:CHECKSUM_LEVELS])
    return zlib.crc32("".join(parts).encode("ascii"))


checksum.precision_required = True     # the book calls it with the pair's precisions (pipeline.book)


def infer_precision(bids_text: list, asks_text: list) -> tuple[int, int]:
    """The most decimals any price / quantity of a snapshot shows, as ``(price, qty)`` precisions.

    Inferred, not documented: only for reading captures that hold no
    ``instrument`` message (the live feed waits for the instrument channel).
    It can only err low (every number of a side happening to end in zero);
    a precision that is too low makes the checksum fail, it is never
    accepted silently.
    """
    def decimals(texts) -> int:
        most = 0
        for text in texts:
            try:
                exponent = Decimal(text).as_tuple().exponent
            except InvalidOperation:
                raise ValueError(f"not a number: {text!r}") from None
            if isinstance(exponent, int) and -exponent > most:
                most = -exponent
        return most
    levels = list(bids_text) + list(asks_text)
    return decimals(p for p, _ in levels), decimals(q for _, q in levels)


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


INSTRUMENT_SUBSCRIBE = '{"method":"subscribe","params":{"channel":"instrument","snapshot":true}}'


def build_subscribe(symbols: list[str], depth: int) -> list[str]:
    """``instrument`` first (the checksum needs the precisions), then ticker and book."""
    return [INSTRUMENT_SUBSCRIBE, _request("subscribe", "ticker", symbols), _request("subscribe", "book", symbols)]


def build_resubscribe(symbol: str, depth: int) -> list[str]:
    return [_request("unsubscribe", "book", [symbol]), _request("subscribe", "book", [symbol])]


def build_keepalive() -> str:
    return KEEPALIVE_FRAME


def build_pong(token) -> str:
    raise NotImplementedError("Kraken does not ping clients; the client sends method ping")


CONNECTION_LIVE = Liveness(None)


def _handle(msg: dict, raw) -> list | None:
    channel = msg.get("channel")
    if channel == "book":
        return _book(msg, raw)
    if channel == "ticker":
        return [BookUpdate(d["symbol"], BBO, True, _one(d, "bid", "bid_qty"), _one(d, "ask", "ask_qty"),
                           rfc3339_ms(d["timestamp"]) if d.get("timestamp") else 0, weak=True)
                for d in msg["data"]]
    if channel == "heartbeat":
        return [CONNECTION_LIVE]
    if channel == "status":
        system = msg["data"][0]["system"]
        if not isinstance(system, str):
            raise ParseError("unknown_message", f"status system {system!r}", NAME)
        return [TradingStatus(None, system == "online", system)]
    if channel == "instrument":
        return _instrument(msg)
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
    return None


parse = make_parse(NAME, _handle)


def _instrument(msg: dict) -> list:
    """Every pair of an ``instrument`` snapshot or update; one malformed pair rejects the frame."""
    kind = msg["type"]
    if kind != "snapshot" and kind != "update":
        raise ParseError("unknown_message", f"instrument type {kind!r}", NAME)
    out = []
    for pair in msg["data"].get("pairs") or ():
        price_dp = pair["price_precision"]
        qty_dp = pair["qty_precision"]
        status = pair["status"]
        symbol = pair["symbol"]
        if (type(price_dp) is not int or type(qty_dp) is not int or not 0 <= price_dp <= 18
                or not 0 <= qty_dp <= 18 or not isinstance(status, str) or not isinstance(symbol, str)):
            raise ParseError("unknown_message", f"instrument pair {str(pair)[:80]}", NAME)
        out.append(InstrumentSpec(symbol, price_dp, qty_dp, status))
    return out


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
