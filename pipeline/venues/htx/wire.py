"""HTX (Huobi) spot public market data.

Docs: https://huobiapi.github.io/docs/spot/v1/en/#websocket-market-data (Huobi v1 market
WebSocket), announcements https://www.huobi.com/support/en-us/detail/900000455606/
(``mbp.refresh``) and https://www.htx.com/support/900000047626 (incremental ``mbp``).

**Every server frame is a binary WebSocket frame of gzip-compressed JSON**
(magic ``1f 8b``), pings included. :func:`parse` accepts the gzip bytes and
also the plain JSON (decompressed) text used by fixtures and the decoder.
Numbers are JSON numbers, sometimes in exponent form (``9.121E-7``).

Channels (``wss://api.huobi.pro/ws``, native symbol lower-case ``btcusdt``):

* ``market.<sym>.bbo`` -- top of book, pushed on change::

      {"ch":"market.btcusdt.bbo","ts":1654031600066,"tick":{"seqId":155441231856,
       "ask":31764.09,"askSize":0.794873,"bid":31764.08,"bidSize":4.378544,
       "quoteTime":1654031600064,"symbol":"btcusdt"}}

  ``ts`` is the push time, ``quoteTime`` the quote time (ms; we use it);
  ``seqId`` is missing on 2020 frames.
* ``market.<sym>.mbp.refresh.<5|10|20>`` -- a full N-level snapshot every 100 ms::

      {"ch":"market.btcusdt.mbp.refresh.20","ts":1573199608679,
       "tick":{"seqNum":100020142010,"bids":[[618.37,71.594],...],"asks":[...]}}

  Each push replaces the book: no sequence to lose (``BOOK_LEVELS`` None).
* Also understood: ``market.<sym>.depth.step<K>`` 150-level snapshots
  (``tick.version``, ``tick.ts``) and incremental ``market.<sym>.mbp.<N>``
  deltas chained by ``prevSeqNum`` -> ``seqNum`` where a missing ``bids`` or
  ``asks`` key means no change on that side; their starting snapshot is the
  answer to a ``{"req": "market.<sym>.mbp.<N>"}`` request (``rep``). Parsed
  (captures decode) but not subscribed: the tick-by-tick ``mbp.5`` on
  ``/feed`` needs that ``req`` on the same connection, buffered deltas
  replayed from the snapshot's ``seqNum``; until that is built the feed uses
  the 100 ms ``mbp.refresh`` snapshots, which need no sequence at all.

Merging: the bbo ``seqId`` and the mbp ``seqNum`` are not documented as one
id space, so the book merges the two channels by arrival order (the fallback).

Endpoint: ``wss://api.huobi.pro/ws``; boxes hosted on AWS should use
``wss://api-aws.huobi.pro/ws`` ("preferred by aws customers", lower latency
from AWS per HTX announcement 900000014146).

Keepalive: the server sends ``{"ping": <ms>}`` every 5 s and closes the
connection after two unanswered ones; the answer is ``{"pong": <same>}``.
Subscribe with one ``{"sub": topic, "id": ...}`` frame per topic; acks are
``{"id":..,"status":"ok","subbed":topic}``, refusals ``"status":"error"``
with ``err-code``/``err-msg``.
"""
from __future__ import annotations

import re
import zlib

import orjson

from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, Ping, Pong, SubscribeError
from pipeline.venues._common import MAX_FRAME_BYTES, levels, make_parse

NAME = "htx"
BOOK_LEVELS = None                    # mbp.refresh snapshots replace the book
DEPTH_CHOICES = (5, 10, 20)

_GZIP_MAGIC = b"\x1f\x8b"
_SYMBOL_IN_TEXT = re.compile(r"market\.([a-z0-9]+)\.")


def native_symbol(instrument: str) -> str:
    base, quote = instrument.split("/")
    return f"{base}{quote}".lower()


def _depth_levels(depth: int) -> int:
    return next((n for n in DEPTH_CHOICES if n >= depth), DEPTH_CHOICES[-1])


def topics(symbol: str, depth: int) -> list[str]:
    return [f"market.{symbol}.mbp.refresh.{_depth_levels(depth)}", f"market.{symbol}.bbo"]


def build_url(url: str, symbols: list[str], depth: int) -> str:
    return url


def build_subscribe(symbols: list[str], depth: int) -> list[str]:
    subs = [t for symbol in symbols for t in topics(symbol, depth)]
    return [orjson.dumps({"sub": topic, "id": f"id{i}"}).decode() for i, topic in enumerate(subs, 1)]


def build_resubscribe(symbol: str, depth: int) -> list[str]:
    # mbp.refresh pushes are full snapshots: the next one rebuilds the book by itself
    return []


def build_keepalive() -> str | None:
    return None


def build_pong(token) -> str:
    return orjson.dumps({"pong": token}).decode()


# The largest frame HTX sends is a 400-level mbp refresh, about 25 KB of JSON (400 levels a side of two short
# numbers); 4 MiB is a hundred times that, and keeps a gzip bomb (a 92 KB frame can inflate to gigabytes) to
# 4 MiB of memory and a few milliseconds, refused and counted as oversize.
MAX_INFLATED_BYTES = 4 * 1024 * 1024


def decompress(raw: bytes) -> bytes:
    """Gunzip one frame, refusing output above :data:`MAX_INFLATED_BYTES` (it stops inflating there)."""
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(raw, MAX_INFLATED_BYTES + 1)
    except zlib.error as exc:
        raise ParseError("invalid_json", f"gzip: {exc}", NAME) from None
    if len(out) > MAX_INFLATED_BYTES:
        raise ParseError("oversize", f"more than {MAX_INFLATED_BYTES} bytes after gunzip", NAME)
    if not inflater.eof:
        raise ParseError("invalid_json", "gzip: truncated frame", NAME)
    return out


# the last frame inflated and its text: top, then parse (of either decoder), inflate a frame once
# (identity, not equality: the entry holds the frame, so its id cannot be reused)
_inflated: list = [None, None]


def inflate(raw):
    """A frame's JSON text: a gzip frame gunzipped (:func:`decompress`), any other frame as it is."""
    if raw.__class__ is str or raw[:2] != _GZIP_MAGIC:
        return raw
    if raw is _inflated[0]:
        return _inflated[1]
    text = decompress(bytes(raw))
    _inflated[0] = raw
    _inflated[1] = text
    return text


def _pre(raw):
    return inflate(raw), None


def top(raw) -> tuple | None:
    """The short path for a ``market.<sym>.bbo`` push (contract in :mod:`pipeline.venues.typed`); None otherwise."""
    try:
        text = inflate(raw)
        if text is raw and len(raw) > MAX_FRAME_BYTES:
            return None
        if text.find(_TOP_MARK[text.__class__], 0, 48) < 0:
            return None
        msg = orjson.loads(text)
        parts = msg["ch"].split(".")
        if parts[0] != "market" or len(parts) < 3 or parts[2] != "bbo":
            return None
        tick = msg["tick"]
        bid = tick.get("bid")
        ask = tick.get("ask")
        if bid is None or ask is None:
            return None
        ts = int(msg.get("ts") or 0)
        return (parts[1], float(bid), float(tick["bidSize"]), float(ask), float(tick["askSize"]),
                int(tick.get("quoteTime") or ts), _opt_int(tick.get("seqId")), None)
    except Exception:  # noqa: BLE001 - anything unusual takes the general path, which names it
        return None


_TOP_MARK = {str: '.bbo"', bytes: b'.bbo"'}


def _handle(msg: dict, raw) -> list | None:
    ch = msg.get("ch")
    if ch is not None:
        return [_market(ch, msg["tick"], int(msg.get("ts") or 0))]
    if "ping" in msg:
        return [Ping(token=msg["ping"])]
    status = msg.get("status")
    if status == "ok":
        if "subbed" in msg:
            topic = msg["subbed"]
            return [Ack(_symbol_from_text(topic), topic)]
        if "unsubbed" in msg:
            return []
        rep = msg.get("rep")
        if rep is not None and ".mbp." in rep:    # answer to a `req` for an mbp snapshot
            data = msg["data"]
            return [BookUpdate(rep.split(".")[1], DEPTH, True, levels(data.get("bids", ())),
                               levels(data.get("asks", ())), int(msg.get("ts") or 0), int(data["seqNum"]))]
    if status == "error":
        text = str(msg.get("err-msg", ""))
        return [SubscribeError(f"{msg.get('err-code', 'error')}: {text}", _symbol_from_text(text))]
    if "pong" in msg:
        return [Pong()]
    return None


parse = make_parse(NAME, _handle, _pre)


def _market(ch: str, tick: dict, ts: int) -> BookUpdate:
    parts = ch.split(".")
    if parts[0] != "market" or len(parts) < 3:
        raise ParseError("unknown_message", f"channel {ch!r}", NAME)
    symbol = parts[1]
    kind = parts[2]
    if kind == "bbo":
        bids = [(float(tick["bid"]), float(tick["bidSize"]))] if tick.get("bid") is not None else []
        asks = [(float(tick["ask"]), float(tick["askSize"]))] if tick.get("ask") is not None else []
        return BookUpdate(symbol, BBO, True, bids, asks, int(tick.get("quoteTime") or ts),
                          _opt_int(tick.get("seqId")))
    if kind == "mbp":
        bids = levels(tick.get("bids", ()))
        asks = levels(tick.get("asks", ()))
        if len(parts) == 5 and parts[3] == "refresh":
            return BookUpdate(symbol, DEPTH, True, bids, asks, ts, _opt_int(tick.get("seqNum")))
        if len(parts) == 4:
            return BookUpdate(symbol, DEPTH, False, bids, asks, ts, int(tick["seqNum"]), int(tick["prevSeqNum"]))
    elif kind == "depth" and len(parts) == 4:
        return BookUpdate(symbol, DEPTH, True, levels(tick.get("bids", ())), levels(tick.get("asks", ())),
                          int(tick.get("ts") or ts), _opt_int(tick.get("version")))
    raise ParseError("unknown_message", f"channel {ch!r}", NAME)


def _opt_int(value) -> int | None:
    return None if value is None else int(value)


def _symbol_from_text(text: str) -> str:
    # "market.btcusdt.mbp.refresh.20" / "invalid topic market.btcusdx.bbo"
    match = _SYMBOL_IN_TEXT.search(text)
    return match.group(1) if match else ""
