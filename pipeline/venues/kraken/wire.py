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
  ``online`` is tradable for us). The book checksum needs the precisions. The same
  declaration (:class:`InstrumentPair`) gives each pair's trading rules (:func:`instrument_rules`).
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
  raw-text checksum. So a level's ``price`` and ``qty`` are declared
  :class:`msgspec.Raw` (:class:`BookLevel`): the decoder keeps each number's
  text as sent, :func:`parse` hands it on as ``bids_text``/``asks_text`` (never
  through a float) beside the floats read from the same text, and
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
from typing import Literal

import msgspec
import orjson

from pipeline.errors import ParseError
from pipeline.model import (
    BBO,
    DEPTH,
    Ack,
    BookUpdate,
    InstrumentRules,
    InstrumentSpec,
    Liveness,
    Pong,
    SubscribeError,
    TradingStatus,
)
from pipeline.venues._common import (
    SHAPE_ERRORS,
    Message,
    RefMsg,
    WireMsg,
    build_rules,
    loads,
    make_parse,
    rfc3339_ms,
)

NAME = "kraken"
BOOK_LEVELS = 10
CHECKSUM_LEVELS = 10

_PAIR_IN_TEXT = re.compile(r"\b([A-Z0-9]{2,12}/[A-Z0-9]{2,12})\b")
KEEPALIVE_FRAME = '{"method":"ping","req_id":1}'   # a constant id: the pong only needs to arrive


MAX_PRECISION = 18        # the most decimals a pair's precision may have (what _instrument accepts)
# The checksum's formatted numbers are kept, per precision, in a bounded cache: after every message a checksum
# formats the 40 numbers of the top 10 levels, most of them unchanged since the previous message, and a dict
# lookup is several times cheaper than formatting a number. At most DIGITS_CACHE_SIZE numbers over all
# precisions; when it is full the whole cache is emptied (counted in DIGITS.clears) and refills with what the
# books hold now. 4096 holds the top 10 levels of 50 pairs (2000 numbers; a connection carries at most 50) in
# about 0.7 MB, the texts it keeps included (~170 bytes a number). It was an lru_cache of 65536 numbers: once
# the books' numbers had wandered through that many, within minutes of a soak, it held 21 MB of RSS, the
# Kraken feed's 57 MB against 36 MB for every other feed (issue 24, finding 12; tests/hostile/test_feed_memory.py).
DIGITS_CACHE_SIZE = 4096


class _DigitsCache:
    """The formatted numbers of :func:`checksum`: ``tables[d]`` maps a number's text to its digits at ``d``
    decimals; ``size`` numbers in all (at most :data:`DIGITS_CACHE_SIZE`), emptied ``clears`` times."""

    __slots__ = ("tables", "size", "clears")

    def __init__(self) -> None:
        self.tables: tuple[dict[str, str], ...] = tuple({} for _ in range(MAX_PRECISION + 1))
        self.size = 0
        self.clears = 0

    def add(self, table: dict, text: str, decimals: int) -> str:
        """The digits of ``text`` (a miss in ``table``, the table of ``decimals``), remembered."""
        digits = _digits(text, decimals)
        if self.size >= DIGITS_CACHE_SIZE:
            for each in self.tables:
                each.clear()
            self.size = 0
            self.clears += 1
        table[text] = digits
        self.size += 1
        return digits


DIGITS = _DigitsCache()


def _digits(text: str, decimals: int) -> str:
    """One number as the checksum wants it: formatted to ``decimals``, no ".", no leading zeros.

    What ``format(Decimal(text), f".{decimals}f")`` gives, without ``Decimal`` for the text Kraken prints
    (ASCII digits, a ``.`` and at most ``decimals`` of them: only zeros to append); any other form (an
    exponent, a sign, more decimals to round) goes through ``Decimal``.
    """
    whole, _, fraction = text.partition(".")
    if (len(fraction) <= decimals and whole.isdigit() and text.isascii()
            and (fraction.isdigit() or not fraction)):
        return (whole + fraction + "0" * (decimals - len(fraction))).lstrip("0")
    try:
        fixed = format(Decimal(text), f".{decimals}f")
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    return fixed.replace(".", "").lstrip("0")


def checksum(bids_text: list, asks_text: list, price_precision: int, qty_precision: int) -> int:
    """Kraken's CRC32 over the top levels (best first), each number formatted to the pair's precision."""
    parts = []
    if type(price_precision) is int and type(qty_precision) is int and (
            0 <= price_precision <= MAX_PRECISION and 0 <= qty_precision <= MAX_PRECISION):
        tables = DIGITS.tables
        prices, quantities = tables[price_precision], tables[qty_precision]
        for side in (asks_text, bids_text):
            for price, qty in side[:CHECKSUM_LEVELS]:
                digits = prices.get(price)
                parts.append(digits if digits is not None else DIGITS.add(prices, price, price_precision))
                digits = quantities.get(qty)
                parts.append(digits if digits is not None else DIGITS.add(quantities, qty, qty_precision))
    else:                              # a precision no pair has (a caller's own): formatted, not kept
        if type(price_precision) is not int or type(qty_precision) is not int:
            raise ValueError(f"precisions are not decimals: {price_precision!r}, {qty_precision!r}")
        for side in (asks_text, bids_text):
            parts.extend(_digits(p, price_precision) + _digits(q, qty_precision) for p, q in side[:CHECKSUM_LEVELS])
    return zlib.crc32("".join(parts).encode("ascii"))


checksum.precision_required = True  # type: ignore[attr-defined]  # the book calls it with the pair's precisions


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
    # at most what a pair may declare (``1e-999`` would ask every checksum for a thousand digits)
    return (min(decimals(p for p, _ in levels), MAX_PRECISION), min(decimals(q for _, q in levels), MAX_PRECISION))


def native_symbol(instrument: str) -> str:
    return instrument


def canonical_symbol(symbol: str) -> str | None:
    """The inverse of :func:`native_symbol`: Kraken's v2 symbols are canonical (``BTC/USD``); None otherwise."""
    base, sep, quote = symbol.partition("/")
    return symbol if sep and base and quote and "/" not in quote else None


def build_url(url: str, symbols: list[str], depth: int) -> str:
    return url


def _request(method: str, channel: str, symbols: list[str]) -> str:
    params: dict[str, object] = {"channel": channel, "symbol": list(symbols)}
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


# ---------------------------------------------------------------- the market-data messages, declared once

class BookLevel(WireMsg):
    """One level of a ``book`` push (websocket-v2/book, "Snapshot Response" / "Update Response": ``bids`` and
    ``asks`` items). Both are JSON numbers; kept as their wire text for the checksum (see the module docstring)."""

    price: msgspec.Raw
    qty: msgspec.Raw           # 0 deletes the level


class BookData(WireMsg):
    """One ``data`` item of a ``book`` push (websocket-v2/book, "Snapshot Response" / "Update Response").

    An update carries only the side(s) that changed; a snapshot may come without ``timestamp``
    (the real 2025 ETH/USD capture).
    """

    symbol: str
    bids: list[BookLevel] = []
    asks: list[BookLevel] = []
    checksum: int | None = None    # CRC32 of the top 10 levels after this message (checksum guide)
    timestamp: str | None = None   # RFC 3339


class BookPush(WireMsg):
    """A ``book`` channel push (websocket-v2/book, "Snapshot Response" / "Update Response")."""

    channel: Literal["book"]
    type: Literal["snapshot", "update"]
    data: list[BookData]


class TickerData(WireMsg):
    """One ``data`` item of a ``ticker`` push (websocket-v2/ticker, "Snapshot / Update Response").

    Only the top of book and ``timestamp`` are read. The 24 h statistics (JSON numbers in the docs)
    are declared so that they are known, and kept undecoded: a value we never read cannot refuse the
    frame.
    """

    symbol: str
    bid: float | None = None
    bid_qty: float | None = None
    ask: float | None = None
    ask_qty: float | None = None
    last: msgspec.Raw = msgspec.Raw()
    volume: msgspec.Raw = msgspec.Raw()
    vwap: msgspec.Raw = msgspec.Raw()
    low: msgspec.Raw = msgspec.Raw()
    high: msgspec.Raw = msgspec.Raw()
    change: msgspec.Raw = msgspec.Raw()
    change_pct: msgspec.Raw = msgspec.Raw()
    timestamp: str | None = None   # RFC 3339


class TickerPush(WireMsg):
    """A ``ticker`` channel push (websocket-v2/ticker, "Snapshot / Update Response"); both carry the whole top."""

    channel: Literal["ticker"]
    type: Literal["snapshot", "update"]
    data: list[TickerData]


BOOK = Message(BookPush, NAME)
TICKER = Message(TickerPush, NAME)
# Kraken writes ``channel`` first; a push written otherwise still arrives, through the control path
_BOOK_MARK = {bytes: b'{"channel":"book",', str: '{"channel":"book",'}
_TICKER_MARK = {bytes: b'{"channel":"ticker",', str: '{"channel":"ticker",'}
_NUMBER_START = frozenset(bytes([c]) for c in b"-0123456789")


def _side(levels: list) -> tuple[list[tuple[str, str]], list[tuple[float, float]]]:
    """A book side as ``(wire text, floats)`` of each level, both read from the same :class:`msgspec.Raw`.

    The numbers of a side are read in one go, as one JSON array of floats (msgspec reads them in C,
    correctly rounded, the value ``float()`` gives); a side that array refuses (a value that is not a
    number, or one too large for a double) or that holds a negative number (``-0`` would lose its
    sign) is read one number at a time by :func:`_side_each`, which names the problem.
    """
    if not levels:
        return [], []
    values = []
    for level in levels:
        values.append(level.price)
        values.append(level.qty)
    joined = b",".join(values)
    if joined[:1] != b"-" and b",-" not in joined:
        try:
            numbers = _FLOATS.decode(b"[" + joined + b"]")
        except msgspec.DecodeError:
            return _side_each(levels)
        texts = iter(joined.decode("ascii").split(","))    # numbers only: no comma inside one
        floats = iter(numbers)
        return list(zip(texts, texts)), list(zip(floats, floats))
    return _side_each(levels)


_FLOATS = msgspec.json.Decoder(list[float])


def _side_each(levels: list) -> tuple[list[tuple[str, str]], list[tuple[float, float]]]:
    """:func:`_side` one number at a time.

    ``float()`` takes every JSON number and refuses every other JSON value (a string keeps its
    quotes, ``null``, ``true``, an object), so it is also the check that both are numbers: the
    checksum needs them as Kraken printed them. A number too large for a double (``1e400``) is
    refused as orjson refused it, as ``invalid_json``.
    """
    try:
        texts = [(str(level.price, "ascii"), str(level.qty, "ascii")) for level in levels]
        numbers = [(float(price), float(qty)) for price, qty in texts]
    except ValueError:
        bad = next((f"{bytes(v)[:24]!r}" for level in levels for v in (level.price, level.qty)
                    if bytes(v)[:1] not in _NUMBER_START), "?")
        raise ParseError("unknown_message", f"book level price/qty not a JSON number: {bad}", NAME) from None
    for price, qty in numbers:
        if price - price or qty - qty:         # inf - inf is nan, which is true
            raise ParseError("invalid_json", "number is infinity when parsed as double", NAME)
    return texts, numbers


def _decode(message: Message, raw):
    """``message.decode(raw)``; a refused frame that is not JSON at all is ``invalid_json``, as orjson says.

    msgspec checks the shape while it reads, so a frame both malformed and misshapen can fail on the
    shape first; only on that error path is the frame read again to give the reason the control path
    (and this module before the declarations) gives.
    """
    try:
        return message.decode(raw)
    except ParseError as exc:
        if exc.reason == "unknown_message":
            loads(raw, NAME)           # raises ParseError("invalid_json") for a frame orjson refuses
        raise


def _book(raw) -> list:
    msg, drift = _decode(BOOK, raw)
    snapshot = msg.type == "snapshot"
    out = []
    try:
        for item in msg.data:
            bids_text, bids = _side(item.bids)
            asks_text, asks = _side(item.asks)
            ts = item.timestamp
            out.append(BookUpdate(item.symbol, DEPTH, snapshot, bids, asks, rfc3339_ms(ts) if ts else 0,
                                  checksum=item.checksum, bids_text=bids_text, asks_text=asks_text))
    except SHAPE_ERRORS as exc:        # a time that is not one
        raise ParseError("unknown_message", f"{type(exc).__name__}: {exc}", NAME) from None
    if drift is not None:
        out.append(drift)
    return out


def _ticker(raw) -> list:
    msg, drift = _decode(TICKER, raw)
    out = []
    try:
        for d in msg.data:
            ts = d.timestamp
            out.append(BookUpdate(d.symbol, BBO, True, _one(d.bid, d.bid_qty), _one(d.ask, d.ask_qty),
                                  rfc3339_ms(ts) if ts else 0, weak=True))
    except SHAPE_ERRORS as exc:        # a time that is not one
        raise ParseError("unknown_message", f"{type(exc).__name__}: {exc}", NAME) from None
    if drift is not None:
        out.append(drift)
    return out


def _one(px: float | None, qty: float | None) -> list[tuple[float, float]]:
    if px is None:
        return []
    if qty is None:
        raise ParseError("unknown_message", "ticker price without a quantity", NAME)
    return [(px, qty)]


def _handle(msg: dict, raw) -> list | None:
    """Control frames: status, instrument, heartbeat, pong, subscribe results and errors."""
    channel = msg.get("channel")
    if channel == "book":              # a push not written channel-first (see _BOOK_MARK)
        return _book(raw)
    if channel == "ticker":
        return _ticker(raw)
    if channel == "heartbeat":
        return [CONNECTION_LIVE]
    if channel == "status":
        system = msg["data"][0]["system"]
        if not isinstance(system, str):
            raise ParseError("unknown_message", f"status system {system!r}", NAME)
        return [TradingStatus(None, system == "online", system)]
    if channel == "instrument":
        return _instrument(raw)
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


_parse_control = make_parse(NAME, _handle)


def parse(raw, recv_ns: int) -> list:
    """One frame into :mod:`pipeline.model` events; raises only :class:`~pipeline.errors.ParseError`."""
    cls = raw.__class__
    if cls is bytes or cls is str:
        if raw.startswith(_BOOK_MARK[cls]):
            return _book(raw)
        if raw.startswith(_TICKER_MARK[cls]):
            return _ticker(raw)
    return _parse_control(raw, recv_ns)


class InstrumentPair(RefMsg):
    """One pair of the ``instrument`` channel (websocket-v2/instrument, ``data.pairs[]``), the one declaration
    the books' precisions (:func:`parse`) and the trading rules (:func:`instrument_rules`) are read from.
    The increments and minimums are JSON numbers (``"qty_increment":1e-08``; ``cost_min`` is documented as a
    string, sent as a number): read into Decimals from their text. Fields not declared are ignored."""

    symbol: str
    status: str
    price_precision: int
    qty_precision: int
    price_increment: Decimal | None = None
    qty_increment: Decimal | None = None
    qty_min: Decimal | None = None
    cost_min: Decimal | None = None


class InstrumentData(RefMsg):
    pairs: list[InstrumentPair] | None = None


class InstrumentPush(RefMsg):
    channel: Literal["instrument"]
    type: str
    data: InstrumentData


_INSTRUMENT = msgspec.json.Decoder(InstrumentPush)


def _instrument_push(raw, reason: str) -> InstrumentPush:
    try:
        push = _INSTRUMENT.decode(raw)
    except msgspec.ValidationError as exc:
        raise ParseError(reason, f"instrument: {str(exc)[:120]}", NAME) from None
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise ParseError("invalid_json", str(exc)[:120], NAME) from None
    if push.type != "snapshot" and push.type != "update":
        raise ParseError(reason, f"instrument type {push.type!r}", NAME)
    return push


def _instrument(raw) -> list:
    """Every pair of an ``instrument`` snapshot or update; one malformed pair rejects the frame."""
    out = []
    for pair in _instrument_push(raw, "unknown_message").data.pairs or ():
        if not 0 <= pair.price_precision <= MAX_PRECISION or not 0 <= pair.qty_precision <= MAX_PRECISION:
            raise ParseError("unknown_message", f"instrument pair {pair.symbol}: precision "
                             f"{pair.price_precision}/{pair.qty_precision}", NAME)
        out.append(InstrumentSpec(pair.symbol, pair.price_precision, pair.qty_precision, pair.status))
    return out


# ---------------------------------------------------------------- reference data: trading rules


def instrument_rules(raw: bytes | str) -> list[InstrumentRules]:
    """An ``instrument`` snapshot or update -> one :class:`~pipeline.model.InstrumentRules` per pair.

    Docs: https://docs.kraken.com/api/docs/websocket-v2/instrument (as scraped 2026-06-09 in
    github.com/qiuham/crypto-api-docs, ``docs/kraken/websocket-v2/instrument.md``). A pair of the docs'
    snapshot, trimmed::

        {"symbol":"BTC/USD","base":"BTC","quote":"USD","status":"online","qty_precision":8,
         "qty_increment":1e-08,"price_precision":1,"cost_precision":5,"cost_min":0.5,"tick_size":0.1,
         "price_increment":0.1,"qty_min":0.0001}

    The same declaration as the books' precisions (:class:`InstrumentPair`). ``tick`` ``price_increment``
    (``tick_size`` is deprecated), ``step`` ``qty_increment``, ``min_qty`` ``qty_min``, ``min_notional``
    ``cost_min``; Kraken documents no maximum. ``trading``: the pair's ``status`` is ``online`` (others:
    ``cancel_only``, ``delisted``, ``limit_only``, ``maintenance``, ``post_only``, ``reduce_only``,
    ``work_in_progress``). The venue-wide ``status`` channel is not part of this: the books hold the rows.
    Numbers are JSON numbers on the live feed, read exactly from their text.
    """
    out = []
    for pair in _instrument_push(raw, "bad_reference_data").data.pairs or ():
        out.append(build_rules(
            NAME, pair.symbol, tick=pair.price_increment, step=pair.qty_increment, min_qty=pair.qty_min,
            max_qty=None, min_notional=pair.cost_min, max_notional=None, trading=pair.status == "online",
            status=pair.status))
    return out
