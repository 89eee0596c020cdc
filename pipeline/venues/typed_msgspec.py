"""The ``msgspec`` decoder: typed structs for the hot market-data messages of each venue.

Why: a bookTicker decoded straight into a struct whose price fields are
``float`` (msgspec reads ``"25.35"`` into a float in C, "lax" mode) costs
about half of ``orjson.loads`` + four ``float()`` calls, and the saving grows
with the levels of a depth message.

The rule is that this path changes speed, never results. For every frame,
``parse`` returns exactly the events of the venue's own ``parse`` (the same
``BookUpdate`` values and types) or raises the same :class:`ParseError`,
and ``top`` returns what the orjson ``top`` returns. It gets there by taking
only frames it can prove it reads alike and handing every other frame to the
venue's own ``parse`` (or ``top``) unchanged, so the general path names every
problem:

* Only the messages below have a struct; acks, pings, errors, notices,
  status and anything unknown go to the general path, as does any frame the
  struct refuses (a missing key, a wrong type, a number that is not one).
* Every struct forbids unknown fields. An ignored field is skipped by msgspec
  without the checks orjson makes (a number too large for a double, such as
  ``1e400``, fails ``orjson.loads``; msgspec skips it), so a frame with a field
  not declared here takes the general path. A venue that adds a field makes
  this path slower, not different.
* Integers are ``Int``: a JSON integer within int64 (orjson reads larger ones
  as floats), or text that ``int()`` reads here, as the general path does
  (msgspec's lax mode would read ``"1e5"`` as 100000 where ``int()`` refuses).
* Numbers given as text (Binance, Bybit, OKX, Coinbase) are read by msgspec in
  lax mode, which agrees with ``float()`` on every text it accepts except
  ``"-0"`` (it gives 0.0, ``float()`` gives -0.0). A top-of-book message with
  a zero price or quantity, and a depth message whose text holds ``"-0"`` or a
  backslash escape (which could spell one), take the general path.
* Only ASCII frames are taken (for bytes, msgspec does not reject invalid
  UTF-8 where orjson does), and none above the general path's size limit.
* HTX sends JSON numbers: its struct is strict (no text numbers at all).
* Kraken's book checksum is computed over the wire text of each level, which
  the general path lifts from the raw frame: Kraken keeps its own ``parse``.

``tests/unit/test_typed_decoder.py`` holds both paths equal on every fixture
frame, on hand-made edge cases and on random mutations of real frames.
"""
from __future__ import annotations

from typing import Annotated, Optional, Union

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from pipeline.model import BBO, DEPTH, BookUpdate, SequenceMark
from pipeline.venues._common import MAX_FRAME_BYTES, rfc3339_ms
from pipeline.venues.typed import Decoder, top_from_parse

I64 = Annotated[int, Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
Int = Union[I64, str]            # an int as decoded, or text for int() (see the module docstring)
OptInt = Union[I64, str, None]
Level = tuple[float, float]
OkxLevel = tuple[float, float, str, str]   # price, size, deprecated "0", order count


class _Msg(Struct, forbid_unknown_fields=True, gc=False):
    """Base of every struct here: an undeclared field sends the frame to the general path."""


def _int(value) -> int:
    """``int(value)`` as the general path computes it, for a value that was decoded as ``Int``."""
    return value if value.__class__ is int else int(value)


def _plain(raw) -> bool:
    """No ``"-0"`` text and no backslash escape: every number text reads as ``float()`` reads it."""
    if raw.__class__ is str:
        return "\\" not in raw and ("-" not in raw or '"-0"' not in raw)
    return raw.find(b"\\") < 0 and (raw.find(b"-") < 0 or raw.find(b'"-0"') < 0)


def _taken(raw) -> bool:
    """A frame this path may decode at all: within the size limit, and ASCII."""
    return len(raw) <= MAX_FRAME_BYTES and raw.isascii()


# ---------------------------------------------------------------- top of book

UNDECIDED = object()      # a struct could not settle the frame: the orjson path decides


def _mark(raw, text: str, window: int) -> bool:
    """``text`` within the first ``window`` characters of the frame."""
    if raw.__class__ is str:
        return raw.find(text, 0, window) >= 0
    return raw.find(text.encode(), 0, window) >= 0


def _short_path(mark: str, window: int, settle, orjson_top, gunzip=None):
    """``top(raw)`` for one venue, with exactly the answers of the venue's orjson ``top``.

    It takes the same first look as the orjson ``top`` (``mark`` within the
    first ``window`` characters, the size limit). ``settle(text)`` returns the
    tuple or None as decided from its struct, or :data:`UNDECIDED`; an
    undecided frame goes to ``orjson_top`` (a zero price or quantity that may
    be a "-0", a frame the struct refuses, a non-ASCII frame).
    """
    marks = {str: mark, bytes: mark.encode()}

    def top(raw):
        if raw.__class__ is not str and raw.__class__ is not bytes:
            return orjson_top(raw)   # what the transports never hand over: as the orjson top takes it
        try:
            text = raw if gunzip is None else gunzip(raw)
            if text.find(marks[text.__class__], 0, window) < 0 or len(text) > MAX_FRAME_BYTES:
                return None
            if text.isascii():
                quote = settle(text)
                if quote is not UNDECIDED:
                    return quote
        except Exception:  # noqa: BLE001 - the orjson top names nothing either: it answers None or a quote
            pass
        return orjson_top(raw)
    top.settle = settle          # the struct path alone, for the tests
    return top


def _orjson_top(venue):
    return venue.top or top_from_parse(venue.parse)


def _parse(fast, general):
    def parse(raw, recv_ns: int) -> list:
        events = fast(raw)
        return general(raw, recv_ns) if events is None else events
    parse.fast = fast            # the struct path alone (None: left to the general path), for the tests
    return parse


# ---------------------------------------------------------------- Binance

class _BookTicker(_Msg):
    u: Int
    s: str
    b: float
    B: float
    a: float
    A: float


class _BinanceTickerFrame(_Msg):
    stream: str
    data: _BookTicker


class _PartialDepth(_Msg):
    lastUpdateId: Int
    bids: list[Level]
    asks: list[Level]


class _BinanceDepthFrame(_Msg):
    stream: str
    data: _PartialDepth


def binance(venue) -> Decoder:
    """Combined-stream ``@bookTicker`` and ``@depth<N>`` partial depth; everything else is general."""
    ticker = msgspec.json.Decoder(_BinanceTickerFrame, strict=False)
    depth = msgspec.json.Decoder(_BinanceDepthFrame, strict=False)

    def settle(raw):
        try:
            msg = ticker.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return UNDECIDED
        if not msg.stream.endswith("@bookTicker"):
            return None              # a ticker body on another stream: the general path refuses it
        d = msg.data
        if not (d.b and d.B and d.a and d.A) and not _plain(raw):
            return UNDECIDED
        u = _int(d.u)
        return (d.s, d.b, d.B, d.a, d.A, 0, u, u)

    def fast(raw):
        try:
            if not _taken(raw):
                return None
            if raw.__class__ is str:
                is_ticker = '@bookTicker"' in raw
            else:
                is_ticker = raw.find(b'@bookTicker"') >= 0
            if is_ticker:
                t = settle(raw)
                if t is None or t is UNDECIDED:
                    return None
                return [BookUpdate(t[0], BBO, True, [(t[1], t[2])], [(t[3], t[4])], 0, t[6], xseq=t[7])]
            if not _plain(raw):
                return None
            msg = depth.decode(raw)
            stream = msg.stream
            if stream.endswith("@bookTicker") or "@depth" not in stream:
                return None
            d = msg.data
            last = _int(d.lastUpdateId)
            return [BookUpdate(stream.split("@", 1)[0].upper(), DEPTH, True, d.bids, d.asks, 0, last, xseq=last)]
        except Exception:  # noqa: BLE001 - anything the structs refuse is for the general path
            return None

    return Decoder("msgspec", _parse(fast, venue.parse), _short_path("@bookTicker", 64, settle, _orjson_top(venue)))


# ---------------------------------------------------------------- Bybit

class _BybitBook(_Msg):
    s: str
    b: list[Level]
    a: list[Level]
    u: Int
    seq: OptInt = None


class _BybitFrame(_Msg):
    topic: str
    type: str
    data: _BybitBook
    ts: OptInt = None
    cts: OptInt = None


def _no_zero(levels) -> bool:
    for p, q in levels:
        if not p or not q:
            return False
    return True


def bybit(venue) -> Decoder:
    """``orderbook.<N>.<SYMBOL>`` snapshots and deltas; everything else is general."""
    book = msgspec.json.Decoder(_BybitFrame, strict=False)

    def fast(raw):
        try:
            if not _taken(raw):
                return None
            msg = book.decode(raw)
            topic = msg.topic
            if not topic.startswith("orderbook."):
                return None
            kind = msg.type
            if kind != "snapshot" and kind != "delta":
                return None
            d = msg.data
            if not (len(d.b) + len(d.a) <= 2 and _no_zero(d.b) and _no_zero(d.a)) and not _plain(raw):
                return None
            u = _int(d.u)
            snapshot = kind == "snapshot"
            channel = BBO if topic.split(".", 2)[1] == "1" else DEPTH
            seq = d.seq
            return [BookUpdate(d.s, channel, snapshot, d.b, d.a, _int(msg.cts or msg.ts or 0), u,
                               None if snapshot or channel == BBO else u - 1, restart=(u == 1),
                               xseq=None if seq is None else _int(seq))]
        except Exception:  # noqa: BLE001
            return None

    def settle(raw):
        try:
            msg = book.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return UNDECIDED
        if msg.type != "snapshot" or not msg.topic.startswith("orderbook.1."):
            return None
        d = msg.data
        u = _int(d.u)
        if u == 1 or len(d.b) != 1 or len(d.a) != 1:
            return None              # a restart, or a side without its one level
        (bid_px, bid_qty), (ask_px, ask_qty) = d.b[0], d.a[0]
        if not (bid_px and bid_qty and ask_px and ask_qty) and not _plain(raw):
            return UNDECIDED
        seq = d.seq
        return (d.s, bid_px, bid_qty, ask_px, ask_qty, _int(msg.cts or msg.ts or 0), u,
                None if seq is None else _int(seq))

    return Decoder("msgspec", _parse(fast, venue.parse), _short_path('"orderbook.1.', 48, settle, _orjson_top(venue)))


# ---------------------------------------------------------------- OKX

class _OkxArg(_Msg):
    channel: str
    instId: Union[str, UnsetType] = UNSET


class _OkxBook(_Msg):
    asks: list[OkxLevel]
    bids: list[OkxLevel]
    ts: Int
    seqId: OptInt = None
    prevSeqId: OptInt = None
    checksum: OptInt = None
    instId: Optional[str] = None


class _OkxFrame(_Msg):
    arg: _OkxArg
    data: list[_OkxBook]
    action: Union[str, UnsetType] = UNSET


def _okx_side(levels) -> list:
    return [(level[0], level[1]) for level in levels]


def _okx_no_zero(levels) -> bool:
    for level in levels:
        if not level[0] or not level[1]:
            return False
    return True


def okx(venue) -> Decoder:
    """``bbo-tbt``, ``books5`` and the ``books`` depth channels; everything else is general."""
    frame = msgspec.json.Decoder(_OkxFrame, strict=False)
    depth_channels = venue.depth_channels

    def fast(raw):
        try:
            if len(raw) <= 8 or not _taken(raw):          # the bare `pong` is the general path's
                return None
            msg = frame.decode(raw)
            arg = msg.arg
            channel = arg.channel
            data = msg.data
            if channel in depth_channels:
                chan = None
            elif channel == "bbo-tbt":
                chan = BBO
            elif channel == "books5":
                chan = DEPTH
            else:
                return None
            if not data:
                return []
            if not (len(data) == 1 and len(data[0].bids) <= 1 and len(data[0].asks) <= 1
                    and _okx_no_zero(data[0].bids) and _okx_no_zero(data[0].asks)) and not _plain(raw):
                return None
            out = []
            if chan is None:                                # books, books-l2-tbt, books50-l2-tbt
                symbol = arg.instId
                action = msg.action
                if symbol is UNSET or action is UNSET:
                    return None
                for d in data:
                    seq = d.seqId
                    seq = None if seq is None else _int(seq)
                    ts = _int(d.ts)
                    if action == "snapshot":
                        out.append(BookUpdate(symbol, DEPTH, True, _okx_side(d.bids), _okx_side(d.asks), ts, seq,
                                              xseq=seq))
                    elif action == "update":
                        prev = d.prevSeqId
                        prev = None if prev is None else _int(prev)
                        out.append(BookUpdate(symbol, DEPTH, False, _okx_side(d.bids), _okx_side(d.asks), ts, seq,
                                              prev, restart=seq is not None and prev is not None and seq < prev,
                                              xseq=seq))
                    else:
                        return None
                return out
            for d in data:                                  # bbo-tbt, books5
                seq = d.seqId
                seq = None if seq is None else _int(seq)
                symbol = d.instId or arg.instId
                if symbol is UNSET:
                    return None
                out.append(BookUpdate(symbol, chan, True, _okx_side(d.bids), _okx_side(d.asks), _int(d.ts), seq,
                                      xseq=seq))
            return out
        except Exception:  # noqa: BLE001
            return None

    def settle(raw):
        try:
            msg = frame.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return UNDECIDED
        if msg.arg.channel != "bbo-tbt" or len(msg.data) != 1:
            return None
        d = msg.data[0]
        if len(d.bids) != 1 or len(d.asks) != 1:
            return None
        (bid_px, bid_qty, _, _), (ask_px, ask_qty, _, _) = d.bids[0], d.asks[0]
        symbol = d.instId or msg.arg.instId
        if symbol is UNSET or not (bid_px and bid_qty and ask_px and ask_qty) and not _plain(raw):
            return UNDECIDED
        seq = d.seqId
        seq = None if seq is None else _int(seq)
        return (symbol, bid_px, bid_qty, ask_px, ask_qty, _int(d.ts), seq, seq)

    return Decoder("msgspec", _parse(fast, venue.parse), _short_path('"bbo-tbt"', 40, settle, _orjson_top(venue)))


# ---------------------------------------------------------------- HTX

class _HtxTick(_Msg):
    # market.<sym>.bbo
    bid: Optional[float] = None
    bidSize: Optional[float] = None
    ask: Optional[float] = None
    askSize: Optional[float] = None
    quoteTime: Optional[I64] = None
    seqId: Optional[I64] = None
    symbol: Optional[str] = None
    # market.<sym>.mbp[.refresh].<N> and market.<sym>.depth.step<K>
    bids: list[Level] = []
    asks: list[Level] = []
    seqNum: Optional[I64] = None
    prevSeqNum: Optional[I64] = None
    version: Optional[I64] = None
    ts: Optional[I64] = None


class _HtxFrame(_Msg):
    ch: str
    tick: _HtxTick
    ts: Optional[I64] = None


def htx(venue) -> Decoder:
    """``bbo``, ``mbp.refresh.<N>``, ``mbp.<N>`` and ``depth.step<K>`` after the gunzip; strict numbers."""
    frame = msgspec.json.Decoder(_HtxFrame)          # strict: HTX numbers are JSON numbers
    from pipeline.venues.htx.wire import inflate as gunzip   # the venue's own, with its one-frame cache

    def market(text):
        """(msg, symbol, kind, parts, ts) of a ``market.*`` frame, or None."""
        msg = frame.decode(text)
        parts = msg.ch.split(".")
        if parts[0] != "market" or len(parts) < 3:
            return None
        return msg, parts[1], parts[2], parts, msg.ts or 0

    def fast(raw):
        try:
            text = gunzip(raw)
            if not _taken(text):
                return None
            got = market(text)
            if got is None:
                return None
            msg, symbol, kind, parts, ts = got
            tick = msg.tick
            if kind == "bbo":
                bid, ask = tick.bid, tick.ask
                if bid is None:
                    bids = []
                elif tick.bidSize is None:
                    return None
                else:
                    bids = [(bid, tick.bidSize)]
                if ask is None:
                    asks = []
                elif tick.askSize is None:
                    return None
                else:
                    asks = [(ask, tick.askSize)]
                return [BookUpdate(symbol, BBO, True, bids, asks, tick.quoteTime or ts, tick.seqId)]
            if kind == "mbp":
                if len(parts) == 5 and parts[3] == "refresh":
                    return [BookUpdate(symbol, DEPTH, True, tick.bids, tick.asks, ts, tick.seqNum)]
                if len(parts) == 4 and tick.seqNum is not None and tick.prevSeqNum is not None:
                    return [BookUpdate(symbol, DEPTH, False, tick.bids, tick.asks, ts, tick.seqNum, tick.prevSeqNum)]
            elif kind == "depth" and len(parts) == 4:
                return [BookUpdate(symbol, DEPTH, True, tick.bids, tick.asks, tick.ts or ts, tick.version)]
            return None
        except Exception:  # noqa: BLE001
            return None

    def settle(text):
        try:
            got = market(text)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return UNDECIDED
        if got is None:
            return UNDECIDED             # the orjson top fails on a missing "market." just as well: let it say so
        msg, symbol, kind, parts, ts = got
        if kind != "bbo":
            return None
        tick = msg.tick
        if tick.bid is None or tick.ask is None:
            return None
        if tick.bidSize is None or tick.askSize is None:
            return UNDECIDED
        return (symbol, tick.bid, tick.bidSize, tick.ask, tick.askSize, tick.quoteTime or ts, tick.seqId, None)

    return Decoder("msgspec", _parse(fast, venue.parse), _short_path('.bbo"', 48, settle, _orjson_top(venue), gunzip))


# ---------------------------------------------------------------- Coinbase

class _L2Update(_Msg):
    side: str
    price_level: float
    new_quantity: float
    event_time: Optional[str] = None


class _L2Event(_Msg):
    type: str
    product_id: str
    updates: list[_L2Update]


class _L2Frame(_Msg):
    channel: str
    timestamp: str
    events: list[_L2Event]
    sequence_num: OptInt = None
    client_id: Optional[str] = None


def coinbase(venue) -> Decoder:
    """Advanced Trade ``level2`` (``l2_data``), snapshots and updates; everything else is general."""
    frame = msgspec.json.Decoder(_L2Frame, strict=False)

    def fast(raw):
        try:
            if not _mark(raw, '"l2_data"', 64):      # heartbeats and the rest: no decode attempt that must fail
                return None
            if not _taken(raw) or not _plain(raw):
                return None
            msg = frame.decode(raw)
            if msg.channel != "l2_data":
                return None
            seq = msg.sequence_num
            out = [] if seq is None else [SequenceMark(_int(seq))]
            envelope_ms = rfc3339_ms(msg.timestamp)
            for event in msg.events:
                kind = event.type
                if kind != "snapshot" and kind != "update":
                    return None
                bids = []
                asks = []
                newest = ""
                newest_key = ""
                for u in event.updates:
                    side = u.side
                    if side == "bid":
                        bids.append((u.price_level, u.new_quantity))
                    elif side == "offer" or side == "ask":
                        asks.append((u.price_level, u.new_quantity))
                    else:
                        return None
                    event_time = u.event_time
                    if event_time:
                        key = event_time[:-1] if event_time[-1] in "Zz" else event_time
                        if key > newest_key:
                            newest, newest_key = event_time, key
                ts = (rfc3339_ms(newest) if newest else 0) or envelope_ms
                out.append(BookUpdate(event.product_id, DEPTH, kind == "snapshot", bids, asks, ts))
            return out
        except Exception:  # noqa: BLE001
            return None

    return Decoder("msgspec", _parse(fast, venue.parse), venue.top)


BUILDERS = {"binance": binance, "bybit": bybit, "okx": okx, "htx": htx, "coinbase": coinbase}


def decoder(venue) -> Decoder:
    """The msgspec decoder of the venue module ``venue``; a venue without structs keeps its own parse."""
    build = BUILDERS.get(venue.name)
    if build is None:              # Kraken: the book checksum needs each level's wire text
        return Decoder("msgspec", venue.parse, venue.top)
    return build(venue)
