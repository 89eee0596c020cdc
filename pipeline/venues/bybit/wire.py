"""Bybit v5 spot public market data.

Docs: https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook

Channels (``wss://stream.bybit.com/v5/public/spot``):

* ``orderbook.1.<SYMBOL>`` -- top of book, snapshot-only on spot (10 ms)::

      {"topic":"orderbook.1.BTCUSDT","ts":1680652806504,"type":"snapshot",
       "data":{"s":"BTCUSDT","b":[["28165.07","0.175231"]],"a":[["28165.08","0.996816"]],
               "u":20404754,"seq":4281281856},"cts":1680652806500}

  An unchanged book is re-sent every 3 s with the same ``u``: not new
  information, but the exchange's confirmation that the quiet book is current
  (the book reports it as UNCHANGED: the session refreshes the row's
  confirmed time). 2023 spot captures also carry L1 ``delta`` messages; both apply.
* ``orderbook.50.<SYMBOL>`` -- 50-level snapshot, then deltas (20 ms). Size
  ``"0"`` deletes a level. A new snapshot resets the book; ``u == 1`` means
  the service restarted: the message is a snapshot that overwrites the book
  (both documented). The docs call ``u`` only an "Update ID" and promise that
  "if there is a problem on Bybit's end, a snapshot will be re-sent"; they do
  not say it grows by one. Every capture we have (spot 2023 59438060 -> 61,
  linear 2026 15076952 -> 55) does, so a delta's expected predecessor is
  taken to be ``u - 1`` and a jump is treated as a gap (one resubscribe, a
  fresh snapshot). That step is observed, not documented: watch the ``gaps``
  counter on a live run; if it rises without real loss, relax the check to
  "``u`` increases" and rely on the documented snapshot re-send.

``data.seq`` is the "cross sequence ... compare different levels orderbook
data, and for the smaller seq, then it means the data is generated earlier"
(docs): carried as ``xseq`` so the book merges ``orderbook.1`` and
``orderbook.50`` in the exchange's order, not in arrival order.

``ts`` is the system push time, ``cts`` the matching-engine time (ms); we
use ``cts`` when present. Keepalive: ``{"op":"ping"}`` every 20 s. Spot
subscribe requests take at most 10 args each.

Both orderbook channels are one message, declared once (:class:`OrderbookFrame`,
:class:`OrderbookData`): ``parse`` and ``top`` both read it, through :func:`_book`.
Control frames (pongs, subscribe acks and errors) are read with orjson.
"""
from __future__ import annotations

from decimal import Decimal

import msgspec
import orjson

from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, InstrumentRules, Pong, SubscribeError
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

NAME = "bybit"
BOOK_LEVELS = 50
ARGS_PER_REQUEST = 10   # spot limit per subscribe request


def native_symbol(instrument: str) -> str:
    base, quote = instrument.split("/")
    return f"{base}{quote}"


canonical_symbol = split_concatenated       # the inverse of native_symbol


def topics(symbol: str) -> list[str]:
    return [f"orderbook.1.{symbol}", f"orderbook.{BOOK_LEVELS}.{symbol}"]


def build_url(url: str, symbols: list[str], depth: int) -> str:
    return url


def build_subscribe(symbols: list[str], depth: int) -> list[str]:
    """One request per symbol: Bybit fails a whole request when one topic is invalid,
    so a delisted symbol must not take the others down (and 2 args stay under the 10-arg limit)."""
    return [orjson.dumps({"req_id": symbol, "op": "subscribe", "args": topics(symbol)}).decode()
            for symbol in symbols]


def build_resubscribe(symbol: str, depth: int) -> list[str]:
    topic = f"orderbook.{BOOK_LEVELS}.{symbol}"
    return [orjson.dumps({"op": "unsubscribe", "args": [topic]}).decode(),
            orjson.dumps({"op": "subscribe", "args": [topic]}).decode()]


def build_keepalive() -> str:
    return '{"op":"ping"}'


def build_pong(token) -> str:
    raise NotImplementedError("Bybit does not ping clients")


# ---------------------------------------------------------------- the hot messages, each declared once

Level = tuple[float, float]          # [price, size] as text; size 0 deletes the level


class OrderbookData(WireMsg):
    """``data`` of an ``orderbook.<depth>.<SYMBOL>`` message.

    Docs: https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook ("Response Parameters":
    ``s`` symbol, ``b``/``a`` bids/asks ``[price, size]``, ``u`` update id, ``seq`` cross sequence).
    """

    s: str
    b: list[Level]
    a: list[Level]
    u: int
    seq: int | None = None          # the cross sequence (carried as xseq); always sent, tolerated absent


class OrderbookFrame(WireMsg):
    """One ``orderbook.<depth>.<SYMBOL>`` snapshot or delta (top of book is depth 1).

    Docs: https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook ("Response Parameters":
    ``topic``, ``type`` snapshot/delta, ``ts`` system push time ms, ``data``, ``cts`` matching-engine time ms).
    """

    topic: str
    type: str
    data: OrderbookData
    ts: int | None = None
    cts: int | None = None          # preferred over ts when present (and not 0)


ORDERBOOK = Message(OrderbookFrame, NAME)


def _book(msg: OrderbookFrame) -> tuple:
    """A decoded orderbook frame -> ``(symbol, channel, snapshot, bids, asks, exch_ts_ms, u, xseq)``.

    The one reading of the frame, for :func:`parse` and :func:`top` alike; raises ParseError for a
    topic or type the declaration's text fields allow but the channel does not.
    """
    topic = msg.topic
    if not topic.startswith("orderbook."):
        raise ParseError("unknown_message", f"topic {topic!r}", NAME)
    kind = msg.type
    if kind != "snapshot" and kind != "delta":
        raise ParseError("unknown_message", f"orderbook type {kind!r}", NAME)
    d = msg.data
    return (d.s, BBO if topic.split(".", 2)[1] == "1" else DEPTH, kind == "snapshot", d.b, d.a,
            msg.cts or msg.ts or 0, d.u, d.seq)


def _book_events(raw) -> list:
    """``parse`` of an orderbook frame: one BookUpdate, then the SchemaDrift if the frame had new fields."""
    try:
        msg, drift = ORDERBOOK.decode(raw)
    except UnicodeEncodeError as exc:     # a str frame with a lone surrogate (msgspec encodes str first)
        raise ParseError("invalid_json", str(exc)[:120], NAME) from None
    symbol, channel, snapshot, bids, asks, ts, u, xseq = _book(msg)
    events = [BookUpdate(symbol, channel, snapshot, bids, asks, ts, u,
                         None if snapshot or channel == BBO else u - 1, restart=(u == 1), xseq=xseq)]
    if drift is not None:
        events.append(drift)
    return events


def _handle(msg: dict, raw) -> list | None:
    """Control frames (pongs, subscribe acks and errors); orderbook frames are :func:`_book_events`."""
    topic = msg.get("topic")
    if topic is not None:
        if isinstance(topic, str) and topic.startswith("orderbook."):
            return _book_events(raw)          # an orderbook frame without the usual first bytes: same reading
        raise ParseError("unknown_message", f"topic {topic!r}", NAME)
    op = msg.get("op")
    if op in ("ping", "pong"):
        return [Pong()]
    if op in ("subscribe", "unsubscribe") or "success" in msg:
        if msg.get("success"):
            return [Ack(channel=op or "")]
        return [SubscribeError(str(msg.get("ret_msg", "subscription failed")),
                               _symbol_from_error(str(msg.get("ret_msg", ""))))]
    return None


_control = make_parse(NAME, _handle)
_BOOK_MARK = {str: '"topic":"orderbook.', bytes: b'"topic":"orderbook.'}
_TOP_MARK = {str: '"orderbook.1.', bytes: b'"orderbook.1.'}     # as wide as before: the struct decides


def parse(raw, recv_ns: int) -> list:
    """``(raw, recv_ns) -> list[event]`` (:func:`pipeline.venues._common.make_parse`'s contract):
    orderbook frames through :data:`ORDERBOOK`, everything else through the control handler."""
    mark = _BOOK_MARK.get(raw.__class__)
    if mark is not None and raw.find(mark, 0, 48) >= 0:
        return _book_events(raw)
    return _control(raw, recv_ns)


parse.__name__ = f"parse_{NAME}"


def top(raw) -> tuple | None:
    """The short path for an ``orderbook.1`` snapshot (contract in :mod:`pipeline.venues._common`); None otherwise.

    Reads the frame with the exact decoder of :data:`ORDERBOOK` (a drifted frame is None: parse counts it).
    """
    try:
        if raw.find(_TOP_MARK[raw.__class__], 0, 48) < 0 or len(raw) > MAX_FRAME_BYTES:
            return None
        symbol, channel, snapshot, bids, asks, ts, u, xseq = _book(ORDERBOOK.exact.decode(raw))
        if channel != BBO or not snapshot or u == 1 or len(bids) != 1 or len(asks) != 1:
            return None                       # a restart or a side without its level: the general path
        (bid_px, bid_qty), = bids
        (ask_px, ask_qty), = asks
        return (symbol, bid_px, bid_qty, ask_px, ask_qty, ts, u, xseq)
    except Exception:  # noqa: BLE001 - anything unusual takes the general path, which names it
        return None


def _symbol_from_error(message: str) -> str:
    # "Invalid topic: orderbook.1.BTCUSDX" / "Invalid symbol :[orderbook.50.XYZ]"
    for token in message.replace("[", " ").replace("]", " ").replace(":", " ").split():
        if token.startswith("orderbook."):
            return token.rsplit(".", 1)[-1]
    return ""


# ---------------------------------------------------------------- reference data: trading rules


class LotSizeFilter(RefMsg):
    basePrecision: Decimal
    minOrderAmt: Decimal
    minOrderQty: Decimal | None = None        # deprecated: "no longer check minOrderQty, check minOrderAmt"
    maxOrderQty: Decimal | None = None        # deprecated in favour of maxLimitOrderQty / maxMarketOrderQty
    maxLimitOrderQty: Decimal | None = None


class PriceFilter(RefMsg):
    tickSize: Decimal


class SpotInstrument(RefMsg):
    symbol: str
    status: str
    lotSizeFilter: LotSizeFilter
    priceFilter: PriceFilter


class InstrumentList(RefMsg):
    items: list[SpotInstrument] = msgspec.field(default_factory=list, name="list")   # "result":{} on an error


class InstrumentsInfo(RefMsg):
    """``GET /v5/market/instruments-info?category=spot`` (docs/v5/market/instrument, Spot tab)."""

    retCode: int
    retMsg: str
    result: InstrumentList = msgspec.field(default_factory=InstrumentList)


_INSTRUMENTS_INFO = msgspec.json.Decoder(InstrumentsInfo)


def instrument_rules(raw: bytes | str) -> list[InstrumentRules]:
    """``GET /v5/market/instruments-info?category=spot`` -> one :class:`~pipeline.model.InstrumentRules` per symbol.

    Docs: https://bybit-exchange.github.io/docs/v5/market/instrument (the repository
    github.com/bybit-exchange/docs, ``docs/v5/market/instrument.mdx``, read at commit b3f09bd, 2026-05-27).
    A symbol of the docs' spot example, trimmed::

        {"symbol":"BTCUSDT","status":"Trading","lotSizeFilter":{"basePrecision":"0.000001",
         "quotePrecision":"0.0000001","minOrderQty":"0.000011","maxOrderQty":"83","minOrderAmt":"5",
         "maxOrderAmt":"8000000","maxLimitOrderQty":"83","maxMarketOrderQty":"41.5"},
         "priceFilter":{"tickSize":"0.1"}}

    ``tick`` is ``priceFilter.tickSize``; ``step`` is ``basePrecision`` (on spot the quantity increment);
    ``min_notional`` is ``minOrderAmt``. ``minOrderQty`` is deprecated ("no longer check minOrderQty, check
    minOrderAmt"): when a response still carries it, it is kept as ``min_qty`` (stricter, never wrong), and
    absent it is 0. ``max_qty`` is ``maxLimitOrderQty`` (limit orders), else the deprecated ``maxOrderQty``;
    ``maxOrderAmt`` is deprecated and "no longer checked", so ``max_notional`` is None. ``trading``: ``status``
    is ``Trading`` (spot lists only trading symbols unless asked; the enum also has ``PreLaunch``,
    ``Delivering``, ``Closed``). ``retCode`` other than 0 is a ParseError with ``retMsg``.
    """
    info = decode_reference(_INSTRUMENTS_INFO, raw, NAME)
    if info.retCode != 0:
        raise ParseError("bad_reference_data", f"retCode {info.retCode}: {info.retMsg[:80]}", NAME)
    out = []
    for inst in info.result.items:
        lot = inst.lotSizeFilter
        max_qty = lot.maxLimitOrderQty if lot.maxLimitOrderQty is not None else lot.maxOrderQty
        out.append(build_rules(
            NAME, inst.symbol, tick=inst.priceFilter.tickSize, step=lot.basePrecision, min_qty=lot.minOrderQty,
            max_qty=max_qty, min_notional=lot.minOrderAmt, max_notional=None,
            trading=inst.status == "Trading", status=inst.status))
    return out
