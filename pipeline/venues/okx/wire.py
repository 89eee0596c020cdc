"""OKX v5 spot public market data.

Docs: https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-order-book-channel
(keepalive: https://www.okx.com/docs-v5/en/#overview-websocket-connect,
notices: https://www.okx.com/docs-v5/en/#overview-websocket-notification)

Channels (``wss://ws.okx.com:8443/ws/v5/public``, native symbol ``BTC-USDT``):

* ``bbo-tbt`` -- top of book, a 1-level snapshot every 10 ms when it changed
  (real 2022 frame)::

      {"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{
       "asks":[["31774.7","0.14368878","0","3"]],"bids":[["31774.6","0.3392211","0","3"]],
       "ts":"1654031991947"}]}

  Levels are ``[price, size, "0" (deprecated), order count]`` as strings;
  ``ts`` is the matching-engine time (ms, a string). Current frames add
  ``"seqId":363996337`` (docs); when present an older one is dropped by the book.
* ``books`` -- 400 levels: ``action:"snapshot"`` then ``action:"update"``
  (100 ms), size ``"0"`` deletes (docs example, trimmed)::

      {"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{
       "asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],
       "ts":"1597026383085","checksum":0,"prevSeqId":123456,"seqId":123457}]}

  Continuity: an update's ``prevSeqId`` equals the previous ``seqId``
  (snapshot: ``prevSeqId`` -1). ``seqId < prevSeqId`` is a sequence reset
  after maintenance, not a gap (``restart``). About once a minute an
  unchanged book sends empty sides with ``prevSeqId == seqId``: the book
  ignores it as already applied. ``checksum`` is deprecated and fixed to 0:
  it is never passed on.
* ``books-l2-tbt`` (400 levels) and ``books50-l2-tbt`` (50 levels) -- the same
  push format as ``books`` every 10 ms, but only for logged-in VIP4+ users;
  anyone else gets error 64003 (60011 without login), parsed into
  :class:`~pipeline.model.ChannelNotPermitted` so the session falls back to
  ``books``. ``build_subscribe(..., channel=...)`` picks the depth channel;
  the docs forbid ``books`` and a tbt channel for one instrument on one
  connection, so exactly one depth channel is subscribed per instrument.
  ``build_login`` signs the login request (HMAC-SHA256 of
  ``timestamp + "GET" + "/users/self/verify"``, base64); the reply is a
  :class:`~pipeline.model.LoginResult`.
* ``books5`` (5-level snapshot every 100 ms) and ``tickers`` (``bidPx/bidSz/
  askPx/askSz``; an absent side is ``""``) are understood too.
* ``instruments`` (``instType`` ``SPOT``, :data:`INSTRUMENTS_SUBSCRIBE`) -- trading rules: every instrument
  in one push after the subscription, then a push of each instrument whose ``state`` or trading parameters
  change (``upcChg`` lists announced ones)::

      {"arg":{"channel":"instruments","instType":"SPOT"},"data":[{"instId":"BTC-USDT","state":"live",
       "tickSz":"0.1","lotSz":"0.00000001","minSz":"0.00001","upcChg":[],...}]}

  ``parse`` gives one :class:`~pipeline.model.InstrumentSpec` per instrument; the rules are
  :func:`instrument_rules` of the same frame (the session applies them as a change).

Merging: "each ``instId`` has an unique set of sequence ID" (docs), shared by
``bbo-tbt`` and the depth channels, so ``seqId`` is carried as ``xseq`` and
the book overlays the top of book only when it is newer than the depth book.
After a reset (``seqId < prevSeqId`` on the depth channel) the book re-arms the
``bbo-tbt`` ids too; ``bbo-tbt`` has no ``prevSeqId`` and cannot announce its
own reset, so the book also re-arms a top-of-book channel whose ids stay behind
while the depth advances (that bbo-tbt resets with the instrument is inferred).
The empty keep-alive update of an unchanged book is the exchange's liveness
confirmation (the book reports it as UNCHANGED).

Decoding: the pushes of all five order book channels share one format, declared once in this module as
:class:`BookPush` (``arg``: :class:`BookArg`, ``data`` items: :class:`BookData`) and read by :data:`BOOK`
(a :class:`~pipeline.venues._common.Message`) for ``parse`` and ``top`` alike: a field OKX adds is a
:class:`~pipeline.model.SchemaDrift` after the frame's events, a wrong type is a ParseError. Control frames
and ``tickers`` (never subscribed here; a weak top of book) are read from orjson's dict by ``_handle``.

Keepalive: the client sends the bare text ``ping`` when idle (the server
drops a connection after 30 s without traffic) and gets the bare text
``pong`` back, not JSON. ``{"event":"notice","code":"64008"}`` announces a
disconnect for a service upgrade 60 s ahead and asks users to "establish a new
connection": a planned :class:`~pipeline.model.Notice` (make-before-break). Limits: 3 connections/s per IP,
480 (un)subscribe requests per connection per hour, fewer than 30 deep book
channels per connection advised.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from decimal import Decimal

import msgspec
import orjson

from pipeline.errors import ParseError
from pipeline.model import (
    BBO,
    DEPTH,
    Ack,
    BookUpdate,
    ChannelNotPermitted,
    InstrumentRules,
    InstrumentSpec,
    LoginResult,
    Notice,
    Pong,
    RuleChange,
    SubscribeError,
)
from pipeline.venues._common import (
    MAX_FRAME_BYTES,
    Message,
    RefMsg,
    WireMsg,
    build_rules,
    decimal_text,
    decode_reference,
    make_parse,
)

NAME = "okx"
DEPTH_CHANNEL = "books"              # public default
DEPTH_CHANNELS = {"books": 400, "books-l2-tbt": 400, "books50-l2-tbt": 50}   # channel -> levels
TBT_CHANNEL = "books50-l2-tbt"        # the tick-by-tick channel to ask for when logged in
RECONNECT_NOTICE = "64008"
NOT_PERMITTED = {"64003", "60011"}    # channel needs VIP4+ / needs login: fall back to `books`
LOGIN_PATH = "/users/self/verify"
# trading-rule pushes on the public connection (the record's reference_data.channel_subscribe): every SPOT
# instrument once after the subscription, then each one whose state or trading parameters change
INSTRUMENTS_SUBSCRIBE = '{"op":"subscribe","args":[{"channel":"instruments","instType":"SPOT"}]}'

_INST_IN_TEXT = re.compile(r'instId\W{1,6}([A-Za-z0-9]+(?:-[A-Za-z0-9]+)+)')


def native_symbol(instrument: str) -> str:
    base, quote = instrument.split("/")
    return f"{base}-{quote}"


def canonical_symbol(symbol: str) -> str | None:
    """The inverse of :func:`native_symbol`: ``BTC-USDT`` -> ``BTC/USDT``, or None for another shape."""
    base, sep, quote = symbol.partition("-")
    return f"{base}/{quote}" if sep and base and quote and "-" not in quote else None


def channels(symbol: str, channel: str = DEPTH_CHANNEL) -> list[dict]:
    if channel not in DEPTH_CHANNELS:
        raise ValueError(f"unknown OKX depth channel {channel!r}")
    return [{"channel": "bbo-tbt", "instId": symbol}, {"channel": channel, "instId": symbol}]


def build_url(url: str, symbols: list[str], depth: int) -> str:
    return url


def build_subscribe(symbols: list[str], depth: int, channel: str = DEPTH_CHANNEL) -> list[str]:
    """One subscribe request; ``channel`` is the depth channel (``books`` or a tbt channel after login)."""
    args = [a for symbol in symbols for a in channels(symbol, channel)]
    return [orjson.dumps({"op": "subscribe", "args": args}).decode()]


def build_resubscribe(symbol: str, depth: int, channel: str = DEPTH_CHANNEL) -> list[str]:
    args = [{"channel": channel, "instId": symbol}]
    return [orjson.dumps({"op": "unsubscribe", "args": args}).decode(),
            orjson.dumps({"op": "subscribe", "args": args}).decode()]


def build_login(api_key: str, secret: str, passphrase: str, timestamp_s: int) -> str:
    """The login request (the caller passes the clock: Unix seconds)."""
    message = f"{timestamp_s}GET{LOGIN_PATH}".encode()
    sign = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    return orjson.dumps({"op": "login", "args": [{"apiKey": api_key, "passphrase": passphrase,
                                                  "timestamp": str(timestamp_s), "sign": sign}]}).decode()


def build_keepalive() -> str:
    return "ping"


def build_pong(token) -> str:
    raise NotImplementedError("OKX does not ping clients; the client sends the text 'ping'")


def _pre(raw):
    if len(raw) <= 8:                     # the keepalive answer is the bare text `pong`, not JSON
        text = raw if isinstance(raw, str) else bytes(raw).decode("latin-1")
        if text.strip() == "pong":
            return raw, [Pong()]
    return raw, None


_LOGIN_ERRORS = {"60004", "60005", "60006", "60007", "60009", "60024", "60031", "63999"}


# ---------------------------------------------------------------- the hot messages, each declared once

Level = tuple[float, float, str, str]     # [price, size, "0" (deprecated), order count], all text on the wire


class BookArg(WireMsg):
    """``arg`` of an order book push: the subscription it answers.

    Docs: https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-order-book-channel
    ("Push data parameters": ``arg`` > ``channel``, ``instId``).
    """

    channel: str
    instId: str | None = None             # always sent; a bbo-tbt/books5 item's own instId is preferred


class BookData(WireMsg):
    """One item of ``data`` of an order book push (``bbo-tbt``, ``books5``, ``books``, ``books-l2-tbt``,
    ``books50-l2-tbt``).

    Docs: https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-order-book-channel
    ("Push data parameters": ``asks``/``bids`` ``[price, size, "0", orders]``, ``ts`` ms, ``checksum``,
    ``prevSeqId``, ``seqId``; ``instId`` in ``books5`` pushes).
    """

    asks: list[Level]
    bids: list[Level]
    ts: int                               # matching-engine time, ms (text on the wire)
    seqId: int | None = None              # absent in 2022-05 captures: nothing to check then
    prevSeqId: int | None = None          # depth channels; -1 on a snapshot (never passed on)
    checksum: int | None = None           # deprecated, fixed to 0: never passed on
    instId: str | None = None


class BookPush(WireMsg):
    """An order book push: ``{"arg": ..., "action": ..., "data": [...]}``.

    Docs: https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-order-book-channel
    ("Push data parameters": ``arg``, ``action`` ``snapshot``/``update`` (``books`` and the tbt channels
    only), ``data``).
    """

    arg: BookArg
    data: list[BookData]
    action: str | None = None


BOOK = Message(BookPush, NAME)
SNAPSHOT_CHANNELS = {"bbo-tbt": BBO, "books5": DEPTH}    # a snapshot each push; DEPTH_CHANNELS send deltas


def _rows(msg: BookPush) -> list[tuple]:
    """A decoded push -> ``(symbol, channel, snapshot, item, prev_seq, restart)`` per ``data`` item.

    The one reading of the declaration, for :func:`parse` and :func:`top` alike (``item.seqId`` is
    both the sequence and the cross-channel id). Raises ParseError for what the types allow but the
    channel does not (another channel, an unknown action, a depth push without instId or action).
    """
    arg = msg.arg
    channel = arg.channel
    data = msg.data
    if channel in DEPTH_CHANNELS:
        if not data:
            return []                     # nothing to apply: instId and action are not needed
        symbol = arg.instId
        action = msg.action
        if symbol is None or action is None:
            raise ParseError("unknown_message", f"{channel} push without {'instId' if symbol is None else 'action'}",
                             NAME)
        if action == "snapshot":
            return [(symbol, DEPTH, True, d, None, False) for d in data]
        if action != "update":
            raise ParseError("unknown_message", f"books action {action!r}", NAME)
        rows = []
        for d in data:
            seq = d.seqId
            prev = d.prevSeqId
            # seqId < prevSeqId: the exchange reset its sequence (maintenance); continue from seqId. The
            # reset message's prevSeqId is still the last seqId sent: the book checks it like any other.
            # prevSeqId == seqId with empty sides: keep-alive of an unchanged book; the book sees
            # seq <= last and ignores it (or reports a gap if we had fallen behind seqId).
            rows.append((symbol, DEPTH, False, d, prev, seq is not None and prev is not None and seq < prev))
        return rows
    chan = SNAPSHOT_CHANNELS.get(channel)
    if chan is None:
        raise ParseError("unknown_message", f"channel {channel!r}", NAME)
    rows = []
    for d in data:
        symbol = d.instId or arg.instId
        if symbol is None:
            raise ParseError("unknown_message", f"{channel} push without instId", NAME)
        rows.append((symbol, chan, True, d, None, False))
    return rows


def _pairs(levels: list) -> list[tuple[float, float]]:
    return [(px, qty) for px, qty, _, _ in levels]


def _book_events(raw) -> list:
    """``parse`` of an order book push: its BookUpdates, then the SchemaDrift if the frame had new fields."""
    try:
        msg, drift = BOOK.decode(raw)
    except (UnicodeEncodeError, RecursionError) as exc:
        # a str holding a lone surrogate, an unknown field nested too deep: not JSON to orjson either
        raise ParseError("invalid_json", f"{type(exc).__name__}: {exc}"[:120], NAME) from None
    events = [BookUpdate(symbol, channel, snapshot, _pairs(d.bids), _pairs(d.asks), d.ts, d.seqId, prev,
                         restart=restart, xseq=d.seqId)
              for symbol, channel, snapshot, d, prev, restart in _rows(msg)]
    if drift is not None:
        events.append(drift)
    return events


# ---------------------------------------------------------------- everything else: control frames, tickers

def _handle(msg: dict, raw) -> list | None:
    """Control frames (acks, errors, login, notices) and ``tickers``; order book pushes are :func:`_book_events`."""
    data = msg.get("data")
    if data is not None:
        arg = msg["arg"]
        channel = arg["channel"]
        if channel in DEPTH_CHANNELS or channel in SNAPSHOT_CHANNELS:
            return _book_events(raw)      # an order book push without the usual first bytes: the same reading
        if channel == "tickers":
            return [BookUpdate(d.get("instId") or arg["instId"], BBO, True, _side(d, "bidPx", "bidSz"),
                               _side(d, "askPx", "askSz"), int(d["ts"]), weak=True) for d in data]
        if channel == "instruments":
            return _instrument_specs(raw)
        raise ParseError("unknown_message", f"channel {channel!r}", NAME)
    event = msg.get("event")
    if event == "subscribe":
        arg = msg.get("arg") or {}
        return [Ack(arg.get("instId", ""), arg.get("channel", ""))]
    if event == "unsubscribe":
        return []                         # the first half of a resubscribe; nothing to do
    if event == "login":
        code = str(msg.get("code", "0"))
        return [LoginResult(code == "0", code, str(msg.get("msg", "")))]
    if event == "error":
        code = str(msg.get("code", "?"))
        text = str(msg.get("msg", ""))
        arg = msg.get("arg") or {}
        symbol = arg.get("instId") or _symbol_from_error(text)
        if code in NOT_PERMITTED:
            channel = arg.get("channel") or next((c for c in DEPTH_CHANNELS if c in text and c != "books"), "")
            return [ChannelNotPermitted(symbol, channel, code, text)]
        if code in _LOGIN_ERRORS:
            return [LoginResult(False, code, text)]
        return [SubscribeError(f"code {code}: {text}", symbol)]
    if event == "notice":
        code = str(msg.get("code", ""))
        planned = code == RECONNECT_NOTICE
        return [Notice(f"code {code}: {msg.get('msg', '')}", reconnect=planned, planned=planned)]
    return None


_control = make_parse(NAME, _handle, _pre)
# An order book push starts {"arg":{"channel":"b... (bbo-tbt, books, books5, books-l2-tbt, books50-l2-tbt)
# and has "data"; a subscribe ack for the same channel has no "data". A push that does not look like this
# still reaches _book_events through _handle.
_BOOK_MARK = {str: ('"channel":"b', '"data"'), bytes: (b'"channel":"b', b'"data"')}
_TOP_MARK = {str: '"bbo-tbt"', bytes: b'"bbo-tbt"'}


def parse(raw, recv_ns: int) -> list:
    """``(raw, recv_ns) -> list[event]`` (:func:`pipeline.venues._common.make_parse`'s contract):
    order book pushes through :data:`BOOK`, everything else through the control handler."""
    marks = _BOOK_MARK.get(raw.__class__)
    if marks is not None and raw.find(marks[0], 0, 32) >= 0 and raw.find(marks[1]) >= 0:
        return _book_events(raw)
    return _control(raw, recv_ns)


parse.__name__ = f"parse_{NAME}"


def top(raw) -> tuple | None:
    """The short path for a ``bbo-tbt`` push (contract in :mod:`pipeline.venues._common`); None for any other.

    Reads the frame with the exact decoder of :data:`BOOK` (a drifted frame is None: parse counts it).
    """
    try:
        if raw.find(_TOP_MARK[raw.__class__], 0, 40) < 0 or len(raw) > MAX_FRAME_BYTES:
            return None
        rows = _rows(BOOK.exact.decode(raw))
        if len(rows) != 1:
            return None
        symbol, channel, snapshot, d, prev, restart = rows[0]
        if channel != BBO or not snapshot or restart or len(d.bids) != 1 or len(d.asks) != 1:
            return None
        (bid_px, bid_qty, _, _), = d.bids
        (ask_px, ask_qty, _, _), = d.asks
        return (symbol, bid_px, bid_qty, ask_px, ask_qty, d.ts, d.seqId, d.seqId)
    except Exception:  # noqa: BLE001 - anything unusual takes the general path, which names it
        return None


def _side(d: dict, px_key: str, sz_key: str) -> list[tuple[float, float]]:
    px = d.get(px_key)
    sz = d.get(sz_key)
    if not px or not sz:                  # "" means that side of the book is empty
        return []
    return [(float(px), float(sz))]


def _symbol_from_error(text: str) -> str:
    # 'Invalid request: {"op": "subscribe", "argss":[{ "channel" : "books", "instId" : "BTC-USD-191227"}]}'
    match = _INST_IN_TEXT.search(text)
    return match.group(1) if match else ""


# ---------------------------------------------------------------- reference data: trading rules

USD_QUOTES = frozenset({"USD", "USDT", "USDC"})   # maxLmtAmt is in USD: a quote-currency bound only for these


class UpcomingChange(RefMsg):
    param: str
    newValue: str
    effTime: str


class SpotInstrument(RefMsg):
    instId: str
    state: str
    tickSz: str
    lotSz: str
    minSz: str
    quoteCcy: str = ""
    maxLmtSz: str = ""
    maxLmtAmt: str = ""
    upcChg: list[UpcomingChange] = []


class InstrumentsResponse(RefMsg):
    """The REST answer (``code``, ``msg``, ``data``) and the ``instruments`` channel's push (``arg``, ``data``)
    carry the same instrument objects: one declaration reads both."""

    data: list[SpotInstrument]
    code: str = "0"
    msg: str = ""


_INSTRUMENTS = msgspec.json.Decoder(InstrumentsResponse)


def _decimals(text: str) -> int:
    """Decimals of an increment's text (``"0.10"`` -> 1, ``"1"`` -> 0): the precision an InstrumentSpec carries."""
    return len(text.partition(".")[2].rstrip("0"))


def _instrument_specs(raw) -> list:
    """``parse`` of an ``instruments`` channel push: one :class:`~pipeline.model.InstrumentSpec` per instrument
    (precisions from ``tickSz``/``lotSz``; ``status`` ``online`` while ``state`` is ``live``, else OKX's word, so
    the book holds the row halted like any pair status). The event says the frame carries trading rules: the
    session reads them from the same frame with :func:`instrument_rules` and applies them as a change."""
    try:
        resp = decode_reference(_INSTRUMENTS, raw, NAME)
    except ParseError as exc:
        raise ParseError("unknown_message", f"instruments: {exc.detail}"[:160], NAME) from None
    return [InstrumentSpec(inst.instId, _decimals(inst.tickSz), _decimals(inst.lotSz),
                           "online" if inst.state == "live" else inst.state) for inst in resp.data]


def _amount(inst: SpotInstrument, name: str) -> Decimal | None:
    return decimal_text(getattr(inst, name), NAME, f"{inst.instId}: {name}")


def instrument_rules(raw: bytes | str) -> list[InstrumentRules]:
    """``GET /api/v5/public/instruments?instType=SPOT``, or a push of the ``instruments`` WebSocket channel
    (``{"arg":{"channel":"instruments","instType":"SPOT"},"data":[...]}``: the same objects, pushed when a
    state or a trading parameter changes) -> one :class:`~pipeline.model.InstrumentRules` per instrument.

    Docs: https://www.okx.com/docs-v5/en/#public-data-rest-api-get-instruments and
    #public-data-websocket-instruments-channel (as scraped 2026-06-27 in github.com/qiuham/crypto-api-docs,
    ``docs/okx/public/data/``). The docs' example, trimmed::

        {"code":"0","msg":"","data":[{"instId":"BTC-USDT","instType":"SPOT","quoteCcy":"USDT",
         "tickSz":"0.1","lotSz":"0.00000001","minSz":"0.00001","maxLmtSz":"9999999999","maxLmtAmt":"1000000",
         "maxMktSz":"","maxMktAmt":"1000000","state":"live",
         "upcChg":[{"param":"tickSz","newValue":"0.0001","effTime":"1704876947000"}]}]}

    ``tick`` ``tickSz``, ``step`` ``lotSz``, ``min_qty`` ``minSz`` ("sz >= minSz AND sz is a multiple of
    lotSz"), ``max_qty`` ``maxLmtSz`` (a limit order's maximum, base currency on SPOT). ``maxLmtAmt`` is a
    limit order's maximum in USD: it is ``max_notional`` when the quote is USD, USDT or USDC, else not used.
    ``maxMktSz``/``maxMktAmt`` bound market orders only. No minimum order value is documented (0).
    ``trading``: ``state`` is ``live`` (others: ``suspend``, ``preopen``, ``test`` "can't be traded", and
    ``rebase``/``post_only``/``settling`` for other instrument types). ``upcChg`` (announced changes of
    ``tickSz``, ``minSz``, ``maxMktSz``) becomes ``upcoming``. All numbers are strings, ``""`` when unset.
    """
    resp = decode_reference(_INSTRUMENTS, raw, NAME)
    if resp.code != "0":
        raise ParseError("bad_reference_data", f"code {resp.code}: {resp.msg[:80]}", NAME)
    out = []
    for inst in resp.data:
        upcoming = []
        for chg in inst.upcChg:
            value = decimal_text(chg.newValue, NAME, f"{inst.instId}: upcChg {chg.param}")
            if value is None or not chg.effTime.isdigit():
                raise ParseError("bad_reference_data", f"{inst.instId}: upcChg {chg.param} {chg.newValue!r} "
                                 f"at {chg.effTime!r}", NAME)
            upcoming.append(RuleChange(chg.param, value, int(chg.effTime)))
        out.append(build_rules(
            NAME, inst.instId, tick=_amount(inst, "tickSz"), step=_amount(inst, "lotSz"),
            min_qty=_amount(inst, "minSz"), max_qty=_amount(inst, "maxLmtSz"), min_notional=None,
            max_notional=_amount(inst, "maxLmtAmt") if inst.quoteCcy in USD_QUOTES else None,
            trading=inst.state == "live", status=inst.state,
            upcoming=tuple(sorted(upcoming, key=lambda c: c.effective_ms))))
    return out
