"""HTX (Huobi) spot public market data.

Docs: https://huobiapi.github.io/docs/spot/v1/en/#websocket-market-data (Huobi v1 market
WebSocket; the same text is now at https://www.htx.com/en-us/opend/newApiPages/, "Websocket
Market Data"), announcements https://www.huobi.com/support/en-us/detail/900000455606/
(``mbp.refresh``), 900001526643 (tick-by-tick ``mbp.5`` on ``/feed``) and 900001078223
(the ``req`` answer's ``seqNum`` meets the incremental stream).

**Every server frame is a binary WebSocket frame of gzip-compressed JSON**
(magic ``1f 8b``), pings included. :func:`parse` accepts the gzip bytes and
also the plain JSON (decompressed) text used by fixtures and the decoder.
Numbers are JSON numbers, sometimes in exponent form (``9.121E-7``).

Channels (native symbol lower-case ``btcusdt``):

* ``market.<sym>.mbp.5`` -- the depth book we keep: incremental Market By Price
  ("Market By Price (incremental update)", #market-by-price-incremental-update)::

      {"ch":"market.btcusdt.mbp.5","ts":1573199608679,
       "tick":{"seqNum":100020146795,"prevSeqNum":100020146794,"asks":[[645.14,26.75597395914065]]}}

  and its snapshot, the answer to ``{"req": "market.<sym>.mbp.5", "id": ..}`` on the same
  connection (parsed as an :class:`~pipeline.model.AlignedSnapshot`)::

      {"id":"id21","rep":"market.btcusdt.mbp.150","status":"ok",
       "data":{"seqNum":100020142010,"bids":[[618.37,71.594],...],"asks":[...]}}

  The rules we build it by, as HTX writes them (the book enforces them, :mod:`pipeline.book`,
  "Alignment"):

  - "Suggested downstream data processing: 1) Subscribe to incremental updates and start to
    cache them; 2) Request refresh message (with same number of levels), and base on its
    "seqNum" to align it with the cached incremental message which has the same "prevSeqNum";
    3) Start to continuously process incremental messages to build up MBP book; 4) The
    "prevSeqNum" of the current incremental message must be the same with "seqNum" of the
    previous message, otherwise it implicates message loss which should require another round
    of refresh message retrieval and alignment" (docs, #market-by-price-incremental-update).
    Steps 5-7: a new price is inserted, a new size replaces the old, size 0 removes the level;
    step 8: all levels of one message change at once.
  - "The 'seqNum' inside refresh message user requested via 'REQ', should match with the
    'prevSeqNum' inside one of incremental messages user subscribed via 'SUB'. User has to make
    sure that 'REQ' request and the 'SUB' subscription are coming from same Websocket
    connection" (announcement 900001078223, effective 2020-06-18).
  - Levels 5, 20, 150 or 400; "REQ channel supports refreshing message for 5-level, 20-level,
    and 150-level"; "All trading pairs support 5-level incremental push", 20 levels only a listed
    few symbols; 5/20 are "tick by tick" (an update whenever that book changes) and a one-sided
    change carries only that side, while 150/400 are the difference of two snapshots 100 ms apart
    and send blank sides and blank messages (docs). Hence ``mbp.5`` (:data:`BOOK_LEVELS`): every
    pair, a ``req`` snapshot, the lowest latency; the book is kept at 5 levels.
  - "MBP incremental channel & its REQ channel": ``wss://api.huobi.pro/feed`` or
    ``wss://api-aws.huobi.pro/feed``; ``/ws`` serves the "Websocket Market Feed (excluding MBP
    incremental channel & its REQ channel)" (docs, "Websocket URL"), so the record's URL is
    ``/feed``. The ``bbo`` channel is not documented on ``/feed``, so it is not subscribed: ``mbp.5``
  is tick by tick and its best level is the top of book (the record says ``bbo_channel=False``).
  - ``req`` rate: "The limitation of single connection is 100 ms" (docs, "Rate Limit");
    the subscribe frames (the ``req`` among them) are paced 100 ms apart.

  A missing ``bids`` or ``asks`` key means no change on that side; an incremental without
  ``seqNum`` and ``prevSeqNum`` cannot be chained and is refused. The ``req`` goes out after
  each symbol's subscriptions (:func:`build_subscribe`) and again whenever the book asks for a
  snapshot (:func:`build_resubscribe`: after a gap, a snapshot that met no delta, an
  unanswered request).
* ``market.<sym>.bbo`` -- top of book, pushed on change (on ``/ws``; not subscribed, see above; parsed, with
  its short path :func:`top`, for captures and recordings made on ``/ws``)::

      {"ch":"market.btcusdt.bbo","ts":1654031600066,"tick":{"seqId":155441231856,
       "ask":31764.09,"askSize":0.794873,"bid":31764.08,"bidSize":4.378544,
       "quoteTime":1654031600064,"symbol":"btcusdt"}}

  ``ts`` is the push time, ``quoteTime`` the quote time (ms; we use it);
  ``seqId`` is missing on 2020 frames.
* Also understood (captures decode; not subscribed): ``market.<sym>.mbp.refresh.<5|10|20>``
  full N-level snapshots every 100 ms (``tick.seqNum``), and ``market.<sym>.depth.step<K>``
  150-level snapshots (``tick.version``, ``tick.ts``).

Each market message is declared once, as a msgspec struct (:class:`Bbo`, :class:`MbpRefresh`,
:class:`MbpUpdate`, :class:`Depth`, and :class:`MbpSnapshotReply` for the ``req`` answer), decoded
strictly (a number sent as text is refused) by :class:`~pipeline.venues._common.Message`: a field HTX
adds is ignored and reported as :class:`~pipeline.model.SchemaDrift`. :func:`parse` picks the
declaration from the channel name at the head of the frame; pings, acks, errors and every other frame
(the ``req`` answer among them) go through the orjson control handler :func:`_handle`. :func:`top`
reads the same :class:`Bbo`.

Merging: the bbo ``seqId`` and the mbp ``seqNum`` are not documented as one
id space, so the book merges the two channels by arrival order (the fallback).

Endpoint: ``wss://api.huobi.pro/feed``; boxes hosted on AWS should use
``wss://api-aws.huobi.pro/feed`` ("preferred by aws customers", lower latency
from AWS per HTX announcement 900000014146).

Keepalive: the server sends ``{"ping": <ms>}`` every 5 s and closes the
connection after two unanswered ones; the answer is ``{"pong": <same>}``.
Subscribe with one ``{"sub": topic, "id": ...}`` frame per topic; acks are
``{"id":..,"status":"ok","subbed":topic}``, refusals ``"status":"error"``
with ``err-code``/``err-msg`` (a ``req`` for a pair a level count does not serve:
``"err-msg":"invalid mbp.150.symbol linkusdt"``, ccxt issue 6748, 2020).
"""
from __future__ import annotations

import re
import zlib
from decimal import Decimal

import msgspec
import orjson

from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, AlignedSnapshot, BookUpdate, InstrumentRules, Ping, Pong, SubscribeError
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

NAME = "htx"
BOOK_LEVELS = 5                       # market.<sym>.mbp.5: every pair, tick by tick, a req snapshot (module docstring)

_GZIP_MAGIC = b"\x1f\x8b"
# "market.btcusdt.mbp.5", "invalid topic market.btcusdx.bbo"; a req refused for its pair: "invalid mbp.150.symbol x"
_SYMBOL_IN_TEXT = re.compile(r"market\.([a-z0-9]+)\.|\.symbol ([a-z0-9]+)")


def native_symbol(instrument: str) -> str:
    base, quote = instrument.split("/")
    return f"{base}{quote}".lower()


canonical_symbol = split_concatenated       # the inverse of native_symbol


def depth_topic(symbol: str) -> str:
    """The incremental MBP channel of ``symbol``, also the topic its snapshot is requested by."""
    return f"market.{symbol}.mbp.{BOOK_LEVELS}"


def topics(symbol: str, depth: int) -> list[str]:
    """The channels of ``symbol``: ``mbp.5`` whatever the board's depth; its best level is the top of book."""
    return [depth_topic(symbol)]


def build_url(url: str, symbols: list[str], depth: int) -> str:
    return url


def _request(symbol: str) -> str:
    return orjson.dumps({"req": depth_topic(symbol), "id": f"req.{symbol}"}).decode()


def build_subscribe(symbols: list[str], depth: int) -> list[str]:
    """Per symbol: ``sub`` mbp.5, then the ``req`` for the mbp.5 snapshot on the same connection
    (HTX step 2: the incrementals are cached by then). The session sends these ``subscribe_interval_s`` apart,
    which keeps ``req`` within HTX's one per 100 ms per connection."""
    frames: list[str] = []
    for symbol in symbols:
        for topic in topics(symbol, depth):
            frames.append(orjson.dumps({"sub": topic, "id": f"id{len(frames) + 1}"}).decode())
        frames.append(_request(symbol))
    return frames


def build_resubscribe(symbol: str, depth: int) -> list[str]:
    """A fresh snapshot to align with (HTX step 4, "another round of refresh message retrieval and alignment"):
    the ``req`` alone; the subscription stays and its deltas are cached meanwhile."""
    return [_request(symbol)]


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


# ---------------------------------------------------------------- wire messages, each declared once
# HTX numbers are JSON numbers: every Message here is strict (a price sent as text is refused, not read).

Level = tuple[float, float]           # [price, size]


class BboTick(WireMsg):
    """``tick`` of a ``market.$symbol.bbo`` push: HTX Spot v1, Websocket Market Data, "Best Bid/Offer"
    (https://huobiapi.github.io/docs/spot/v1/en/#best-bid-offer). ``seqId`` is missing on 2020 frames; a
    side without a price is a side without a level (as the orjson path always read it)."""

    seqId: int | None = None
    ask: float | None = None
    askSize: float | None = None
    bid: float | None = None
    bidSize: float | None = None
    quoteTime: int | None = None   # ms; the time we keep (``ts`` is the push time)
    symbol: str | None = None


class Bbo(WireMsg):
    """A ``market.$symbol.bbo`` push (HTX Spot v1, "Best Bid/Offer", #best-bid-offer)."""

    ch: str
    tick: BboTick
    ts: int | None = None


class MbpRefreshTick(WireMsg):
    """``tick`` of a ``market.$symbol.mbp.refresh.$levels`` push: HTX Spot v1, "Market By Price (refresh
    update)" (#market-by-price-refresh-update; announcement 900000455606): the whole N-level book."""

    seqNum: int | None = None
    bids: list[Level] = []
    asks: list[Level] = []


class MbpRefresh(WireMsg):
    """A ``market.$symbol.mbp.refresh.$levels`` push (HTX Spot v1, #market-by-price-refresh-update)."""

    ch: str
    tick: MbpRefreshTick
    ts: int | None = None


class MbpUpdateTick(WireMsg):
    """``tick`` of a ``market.$symbol.mbp.$levels`` push: HTX Spot v1, "Market By Price (incremental
    update)" (#market-by-price-incremental-update; announcement 900000047626). A missing side is no change
    (5/20 levels send only the side that changed). The docs' table marks every field optional, but an
    incremental without both ids cannot be chained (step 4), so both are required here. The 150/400-level
    channels' "blank object" for an unchanged side is not a list: refused (we take ``mbp.5``)."""

    seqNum: int
    prevSeqNum: int
    bids: list[Level] = []
    asks: list[Level] = []


class MbpUpdate(WireMsg):
    """A ``market.$symbol.mbp.$levels`` delta (HTX Spot v1, #market-by-price-incremental-update)."""

    ch: str
    tick: MbpUpdateTick
    ts: int | None = None


class MbpSnapshotData(WireMsg):
    """``data`` of the answer to ``{"req": "market.$symbol.mbp.$levels"}``: HTX Spot v1, "Market By Price
    (incremental update)", request of the full book (#market-by-price-incremental-update)."""

    seqNum: int
    bids: list[Level] = []
    asks: list[Level] = []


class MbpSnapshotReply(WireMsg):
    """The ``rep`` to an mbp ``req`` (HTX Spot v1, #market-by-price-incremental-update):
    ``{"id":..,"rep":"market.btcusdt.mbp.150","status":"ok","data":{"seqNum":..,"bids":..,"asks":..}}``
    (the docs' example has no ``ts``; the server adds one to most answers). ``data.seqNum`` is a number of the
    incremental stream (announcement 900001078223): parsed as an :class:`~pipeline.model.AlignedSnapshot`."""

    rep: str
    data: MbpSnapshotData
    id: str | int | None = None
    status: str | None = None
    ts: int | None = None


class DepthTick(WireMsg):
    """``tick`` of a ``market.$symbol.depth.$type`` push: HTX Spot v1, "Market Depth" (#market-depth),
    a 150-level snapshot with its own ``ts`` and ``version``."""

    bids: list[Level] = []
    asks: list[Level] = []
    version: int | None = None
    ts: int | None = None


class Depth(WireMsg):
    """A ``market.$symbol.depth.$type`` push (HTX Spot v1, "Market Depth", #market-depth)."""

    ch: str
    tick: DepthTick
    ts: int | None = None


_BBO = Message(Bbo, NAME, strict_numbers=True)
_MBP_REFRESH = Message(MbpRefresh, NAME, strict_numbers=True)
_MBP_UPDATE = Message(MbpUpdate, NAME, strict_numbers=True)
_MBP_REPLY = Message(MbpSnapshotReply, NAME, strict_numbers=True)
_DEPTH = Message(Depth, NAME, strict_numbers=True)


# ---------------------------------------------------------------- frame -> values

def _bbo_quote(msg: Bbo) -> tuple:
    """``(symbol, bid_px, bid_qty, ask_px, ask_qty, exch_ts_ms, seq)`` of a bbo push; a side with no
    price is ``None, None``. The one reading of :class:`Bbo`: :func:`parse` and :func:`top` both call it."""
    tick = msg.tick
    bid = tick.bid
    ask = tick.ask
    if (bid is not None and tick.bidSize is None) or (ask is not None and tick.askSize is None):
        raise ParseError("unknown_message", "bbo: a price without its size", NAME)
    return (msg.ch.split(".", 2)[1], bid, tick.bidSize, ask, tick.askSize, tick.quoteTime or msg.ts or 0,
            tick.seqId)


def _bbo_events(msg: Bbo) -> list:
    symbol, bid, bid_qty, ask, ask_qty, ts, seq = _bbo_quote(msg)
    return [BookUpdate(symbol, BBO, True, [] if bid is None else [(bid, bid_qty)],
                       [] if ask is None else [(ask, ask_qty)], ts, seq)]


def _mbp_refresh_events(msg: MbpRefresh) -> list:
    tick = msg.tick
    return [BookUpdate(msg.ch.split(".", 2)[1], DEPTH, True, tick.bids, tick.asks, msg.ts or 0, tick.seqNum)]


def _mbp_update_events(msg: MbpUpdate) -> list:
    tick = msg.tick
    return [BookUpdate(msg.ch.split(".", 2)[1], DEPTH, False, tick.bids, tick.asks, msg.ts or 0, tick.seqNum,
                       tick.prevSeqNum)]


def _mbp_reply_events(msg: MbpSnapshotReply) -> list:
    """The ``req`` answer: a snapshot numbered in the incremental stream, to be aligned with it (HTX step 2)."""
    data = msg.data
    return [AlignedSnapshot(msg.rep.split(".")[1], DEPTH, True, data.bids, data.asks, msg.ts or 0, data.seqNum)]


def _depth_events(msg: Depth) -> list:
    tick = msg.tick
    return [BookUpdate(msg.ch.split(".", 2)[1], DEPTH, True, tick.bids, tick.asks, tick.ts or msg.ts or 0,
                       tick.version)]


_PUSH_BBO = (_BBO, _bbo_events)
_PUSH_MBP_REFRESH = (_MBP_REFRESH, _mbp_refresh_events)
_PUSH_MBP_UPDATE = (_MBP_UPDATE, _mbp_update_events)
_PUSH_DEPTH = (_DEPTH, _depth_events)


def _push_for(ch: str):
    """The declaration of the push on channel ``ch`` (a ``(Message, events)`` pair), or None. HTX's channel
    names are ASCII (``market.<sym>.<kind>``, lower-case symbols): any other is no channel of ours, for
    :func:`parse` as for :func:`top`."""
    if not ch.isascii():
        return None
    parts = ch.split(".")
    if parts[0] != "market" or len(parts) < 3:
        return None
    kind = parts[2]
    if kind == "bbo":
        return _PUSH_BBO
    if kind == "mbp":
        if len(parts) == 5 and parts[3] == "refresh":
            return _PUSH_MBP_REFRESH
        if len(parts) == 4:
            return _PUSH_MBP_UPDATE
    elif kind == "depth" and len(parts) == 4:
        return _PUSH_DEPTH
    return None


def _read(message: Message, text) -> tuple:
    """``message.decode(text)``: ``(msg, drift)``, or :class:`ParseError`."""
    try:
        return message.decode(text)
    except UnicodeEncodeError:    # a str frame holding a lone surrogate: not JSON text (orjson says so too)
        raise ParseError("invalid_json", "str is not valid UTF-8: surrogates not allowed", NAME) from None


def _with_drift(events: list, drift) -> list:
    if drift is not None:
        events.append(drift)
    return events


def _decode(push, ch: str, text, again: bool = True) -> list:
    """The events of one push of channel ``ch``, decoded by its declaration; a SchemaDrift last if it drifted."""
    message, events_of = push
    msg, drift = _read(message, text)
    if msg.ch != ch:              # a second "ch" key later in the frame: the last one counts (as orjson reads it)
        if not again:
            raise ParseError("unknown_message", f"channel {msg.ch!r} or {ch!r}", NAME)
        return _market(msg.ch, text, again=False)
    return _with_drift(events_of(msg), drift)


def _market(ch: str, text, again: bool = True) -> list:
    push = _push_for(ch)
    if push is None:
        raise ParseError("unknown_message", f"channel {ch!r}", NAME)
    return _decode(push, ch, text, again)


_LEAD = {str: '{"ch":"market.', bytes: b'{"ch":"market.'}
_QUOTE = {str: '"', bytes: b'"'}
_ROUTES: dict = {}        # channel name as the frame spells it -> (push, ch) or None: a few per connection
_MAX_ROUTES = 4096        # a server inventing names costs this many entries at most, then the cache restarts


def _route(text):
    """``(push, ch)`` for a frame that opens with the channel of a declared push (every HTX push does:
    ``{"ch":"market.<sym>.<kind>...``), read off the text without decoding it; None for any other frame."""
    cls = text.__class__
    lead = _LEAD.get(cls)
    if lead is None:
        return None
    if text.startswith(lead):
        at = 0
    else:
        at = text.find(lead, 0, 24)   # after a little whitespace
        if at < 0 or text[:at].strip():
            return None
    end = text.find(_QUOTE[cls], at + 14, at + 160)
    if end < 0:
        return None
    spelled = text[at + 7:end]
    route = _ROUTES.get(spelled, _ROUTES)
    if route is _ROUTES:
        route = _route_of(spelled)
        if len(_ROUTES) >= _MAX_ROUTES:
            _ROUTES.clear()
        _ROUTES[spelled] = route
    return route


def _route_of(spelled):
    ch = spelled
    if ch.__class__ is bytes:
        if not ch.isascii():
            return None
        ch = ch.decode()
    if "\\" in ch:                 # an escape: let the JSON decoder spell the name
        return None
    push = _push_for(ch)
    return None if push is None else (push, ch)


# ---------------------------------------------------------------- parse and top

def _pre(raw):
    return inflate(raw), None


def _handle(msg: dict, raw) -> list | None:
    """Control frames (pings, acks, errors, ``req`` answers); a push :func:`_route` did not recognise by its
    opening (keys in another order, an escaped name) is handed to its declaration here."""
    ch = msg.get("ch")
    if ch is not None:
        return _market(ch, raw)
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
            reply, drift = _read(_MBP_REPLY, raw)
            return _with_drift(_mbp_reply_events(reply), drift)
    if status == "error":
        text = str(msg.get("err-msg", ""))
        return [SubscribeError(f"{msg.get('err-code', 'error')}: {text}", _symbol_from_text(text))]
    if "pong" in msg:
        return [Pong()]
    return None


_control = make_parse(NAME, _handle, _pre)


def parse(raw, recv_ns: int) -> list:
    """``raw`` (gzip or plain JSON) -> events; raises only :class:`ParseError`. A bbo, mbp or depth push is
    decoded by its declaration above, every other frame by :func:`_handle`."""
    text = inflate(raw)
    route = _route(text)
    if route is None:
        return _control(raw, recv_ns)        # inflate hands back the same text (its one-frame cache)
    return _decode(route[0], route[1], text)


parse.__name__ = f"parse_{NAME}"


def top(raw) -> tuple | None:
    """The short path for a ``market.<sym>.bbo`` push (contract in :mod:`pipeline.venues._common`); None otherwise.

    Only a frame of exactly the :class:`Bbo` declaration (``Message.exact``: a drifted frame is None here
    and counted by :func:`parse`), read by :func:`_bbo_quote` as :func:`parse` reads it."""
    try:
        text = inflate(raw)
        if text is raw and len(raw) > MAX_FRAME_BYTES:
            return None
        route = _route(text)
        if route is None or route[0] is not _PUSH_BBO:
            return None
        msg = _BBO.exact.decode(text)
        if msg.ch != route[1]:
            return None
        symbol, bid, bid_qty, ask, ask_qty, ts, seq = _bbo_quote(msg)
        if bid is None or ask is None:
            return None
        return (symbol, bid, bid_qty, ask, ask_qty, ts, seq, None)
    except Exception:  # noqa: BLE001 - anything unusual takes the general path, which names it
        return None


def _symbol_from_text(text: str) -> str:
    # "market.btcusdt.mbp.5" / "invalid topic market.btcusdx.bbo" / "invalid mbp.150.symbol linkusdt"
    match = _SYMBOL_IN_TEXT.search(text)
    return (match.group(1) or match.group(2)) if match else ""


# ---------------------------------------------------------------- reference data: trading rules


class MarketSymbol(RefMsg):
    symbol: str
    state: str
    pp: int                           # price precision: decimals of the price
    ap: int                           # amount precision: decimals of the quantity (base)
    minov: Decimal | None = None      # min order value (quote)
    minoa: Decimal | None = None      # min order amount (base)
    maxoa: Decimal | None = None      # max order amount (base)
    lominoa: Decimal | None = None    # min amount of a limit order
    lomaxoa: Decimal | None = None    # max amount of a limit order
    at: str = "enabled"               # "trading by api interface": enabled / disabled


class MarketSymbols(RefMsg):
    """``GET /v1/settings/common/market-symbols`` ("Get Market Symbols Setting"); codes as documented there."""

    status: str
    data: list[MarketSymbol] = []
    err_msg: str = msgspec.field(default="", name="err-msg")
    ts: str | None = None       # "timestamp of incremental data": the next request's ``ts``
    full: int = 1               # "full data flag: 0 for no and 1 for yes"


_MARKET_SYMBOLS = msgspec.json.Decoder(MarketSymbols)
MAX_DECIMALS = 18


def instrument_rules(raw: bytes | str) -> list[InstrumentRules]:
    """``GET /v1/settings/common/market-symbols`` -> one :class:`~pipeline.model.InstrumentRules` per symbol.

    Docs: "Get Market Symbols Setting",
    https://www.htx.com/en-us/opend/newApiPages/?id=7ec4f5d6-7773-11ed-9966-0242ac110003. The docs' example,
    trimmed::

        {"status":"ok","data":[{"symbol":"btc3lusdt","state":"online","bc":"btc3l","qc":"usdt","pp":4,"ap":4,
         "vp":8,"minoa":0.01,"maxoa":199.0515,"minov":5,"lominoa":0.01,"lomaxoa":199.0515,"smminoa":0.01,
         "smmaxoa":199.0515,"bmmaxov":2500,"maxov":2500,"at":"enabled"}],"ts":"1641880897191","full":1}

    This endpoint, not ``/v2/settings/common/symbols``: the v2 list (``sc`` symbol, ``tpp``/``tap``/``ttp``
    trade price/amount/total precisions, ``state``) carries no order limits; the codes used here are
    documented on this one. ``tick`` is ``10**-pp`` (price precision), ``step`` ``10**-ap`` (amount
    precision); ``min_qty``/``max_qty`` are the limit-order ``lominoa``/``lomaxoa`` (else the general
    ``minoa``/``maxoa``); ``min_notional`` is ``minov``. ``maxov``, ``smminoa``/``smmaxoa``, ``bmmaxov``
    bound market orders only and are not used. ``trading``: ``state`` is ``online`` (others: ``unknown``,
    ``not-online``, ``pre-online``, ``suspend``, ``offline``, ``transfer-board``, ``fuse``) and ``at``
    (API trading) is ``enabled``. Numbers are JSON numbers, read into Decimals from their text.
    ``status`` other than ``ok`` is a ParseError with ``err-msg``. An incremental answer (``full`` 0, see
    :func:`reference_since`) gives the rules of the symbols it names only.
    """
    resp = decode_reference(_MARKET_SYMBOLS, raw, NAME)
    if resp.status != "ok":
        raise ParseError("bad_reference_data", f"status {resp.status}: {resp.err_msg[:80]}", NAME)
    out = []
    for sym in resp.data:
        for name, digits in (("pp", sym.pp), ("ap", sym.ap)):
            if not 0 <= digits <= MAX_DECIMALS:
                raise ParseError("bad_reference_data", f"{sym.symbol}: {name} {digits}", NAME)
        out.append(build_rules(
            NAME, sym.symbol, tick=Decimal(1).scaleb(-sym.pp), step=Decimal(1).scaleb(-sym.ap),
            min_qty=sym.lominoa if sym.lominoa is not None else sym.minoa,
            max_qty=sym.lomaxoa if sym.lomaxoa is not None else sym.maxoa,
            min_notional=sym.minov, max_notional=None,
            trading=sym.state == "online" and sym.at == "enabled",
            status=sym.state if sym.at == "enabled" else f"{sym.state} (api trading {sym.at})"))
    return out


INCREMENTAL_PARAM = "ts"


def reference_since(raw: bytes | str) -> tuple[str | None, bool]:
    """``(ts, full)`` of a ``market-symbols`` answer: the stamp to send as the next request's ``ts`` and
    whether the answer is the whole list.

    The same doc: the request's ``ts`` ("timestamp to get incremental data") "returns updated data from this
    timestample to the current time if filled in with ts. If there is no update, the "data" of response is
    "[]""; the answer's ``ts`` is the "timestamp of incremental data" and ``full`` the "full data flag: 0 for
    no and 1 for yes". So a refresh sends the last answer's ``ts`` and applies a ``full`` 0 answer as a change
    to the symbols it names (the others keep their rules). A ``ts`` that is not a decimal integer is refused
    (ParseError), a missing one means the answer cannot be continued (the next request is a full one).
    """
    resp = decode_reference(_MARKET_SYMBOLS, raw, NAME)
    if resp.ts is not None and not resp.ts.isdigit():
        raise ParseError("bad_reference_data", f"ts {resp.ts[:40]!r}", NAME)
    return resp.ts, resp.full != 0
