"""What the venue folders share (pure, no I/O): the record, the wire-message base, small helpers.

The top-of-book short path. A venue with a top-of-book channel gives its record a ``top(raw)``
that either returns None or a tuple ``(symbol, bid_px, bid_qty, ask_px, ask_qty, exch_ts_ms, seq,
xseq)``, and a tuple only for a frame that is exactly one top-of-book snapshot of that channel, such
that ``parse(raw, recv_ns)`` would have returned exactly
``[BookUpdate(symbol, BBO, True, [(bid_px, bid_qty)], [(ask_px, ask_qty)], exch_ts_ms, seq, xseq=xseq)]``
(one level a side, ``prev_seq``/``checksum`` None, ``restart``/``weak`` False). None is always a
correct answer (the session then runs ``parse``, which names any problem, and counts a frame whose
shape drifted); ``top`` never raises. It decodes with the same declaration as ``parse`` (one
description), exactly (unknown fields refused). Whether the numbers are usable (NaN, zero or
negative prices) is for the book to judge, as on the general path. A session on the short path
writes the same rows as one without it (``tests/property/test_top_path_properties.py``).
"""
from __future__ import annotations

import gzip
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
import orjson

from pipeline.errors import ParseError
from pipeline.model import InstrumentRules, RuleChange, SchemaDrift

MAX_FRAME_BYTES = 64 * 1024 * 1024  # Coinbase's whole-book snapshot is ~5 MB; anything near this is not a quote


def loads(raw: bytes | str, exchange: str):
    """orjson decode with the project's error; rejects absurd frame sizes first."""
    if len(raw) > MAX_FRAME_BYTES:
        raise ParseError("oversize", f"{len(raw)} bytes", exchange)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError("invalid_json", str(exc)[:120], exchange) from None


def levels(pairs) -> list[tuple[float, float]]:
    """[[price, qty, ...], ...] (strings or numbers) -> [(float, float), ...]."""
    return [(float(p[0]), float(p[1])) for p in pairs]


SHAPE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)


# ---------------------------------------------------------------- wire messages, each declared once

class WireMsg(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Base of every wire-message declaration (a ``wire.py`` struct per hot market-data message).

    The declaration is the one description of the message: :class:`Message` decodes with it, the
    top-of-book short path reads it, and nothing else restates its fields. Prices and quantities are
    declared ``float`` (msgspec reads ``"25.35"`` into a float in C, lax mode); ids are ``int``; a
    field we keep the wire text of (a checksum over the text) is :class:`msgspec.Raw`. Unknown
    fields are forbidden here so that an exchange adding one is *noticed*; :class:`Message` then
    decodes the frame again with the fields ignored and reports :class:`~pipeline.model.SchemaDrift`.
    """


_LENIENT: dict = {}


def _lenient_type(tp):
    """``tp`` with every :class:`WireMsg` inside it replaced by its lenient twin."""
    if isinstance(tp, type) and issubclass(tp, WireMsg):
        return lenient(tp)
    args = typing.get_args(tp)
    if not args:
        return tp
    origin = typing.get_origin(tp)
    new = tuple(_lenient_type(a) for a in args)
    if new == args:
        return tp
    if origin is typing.Union:
        return typing.Union[new]  # noqa: UP007 - built from a tuple at run time, not an annotation
    if origin is typing.Annotated:
        return typing.Annotated[(new[0], *tp.__metadata__)]
    return origin[new if len(new) > 1 else new[0]] if origin is not tuple else tuple[new]


def lenient(struct_type: type) -> type:
    """The same declaration with unknown fields ignored: derived, never written by hand."""
    twin = _LENIENT.get(struct_type)
    if twin is None:
        hints = typing.get_type_hints(struct_type, include_extras=True)
        fields = []
        for f in msgspec.structs.fields(struct_type):
            tp = _lenient_type(hints[f.name])
            if f.default is not msgspec.NODEFAULT:
                fields.append((f.name, tp, f.default))
            elif f.default_factory is not msgspec.NODEFAULT:
                fields.append((f.name, tp, msgspec.field(default_factory=f.default_factory)))
            else:
                fields.append((f.name, tp))
        twin = _LENIENT[struct_type] = msgspec.defstruct(
            f"{struct_type.__name__}Lenient", fields, gc=False, forbid_unknown_fields=False,
            array_like=struct_type.__struct_config__.array_like)
    return twin


def _refusal(raw) -> str:
    """Why a declaration refused a frame: msgspec stops at the first wrong field, before it would have seen
    that the JSON is broken further on; the skip reason says which it was (checked on this error path only)."""
    try:
        orjson.loads(raw)
    except Exception:  # noqa: BLE001 - whatever orjson refuses is not JSON
        return "invalid_json"
    return "unknown_message"


class Message:
    """One declared wire message and its decoders: ``decode(raw) -> (msg, drift)``.

    ``drift`` is None for a frame of exactly the declared shape, else a
    :class:`~pipeline.model.SchemaDrift` (the frame had fields the declaration does not know; ``msg``
    was decoded with them ignored). A frame that is not this message at all (a missing field, a
    wrong type, a number that is not one, bad JSON) raises :class:`ParseError` with msgspec's words.
    ``strict_numbers``: numbers must be JSON numbers (HTX), not text.
    """

    __slots__ = ("struct", "exchange", "exact", "_loose")

    def __init__(self, struct_type: type, exchange: str, strict_numbers: bool = False):
        self.struct = struct_type
        self.exchange = exchange
        self.exact = msgspec.json.Decoder(struct_type, strict=strict_numbers)   # the hot path uses this alone
        self._loose = msgspec.json.Decoder(lenient(struct_type), strict=strict_numbers)

    def decode(self, raw):
        if len(raw) > MAX_FRAME_BYTES:
            raise ParseError("oversize", f"{len(raw)} bytes", self.exchange)
        try:
            return self.exact.decode(raw), None
        except msgspec.ValidationError as exc:
            text = str(exc)
            if not text.startswith("Object contains unknown field"):
                raise ParseError(_refusal(raw), f"{self.struct.__name__}: {text}"[:160], self.exchange) from None
        except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:   # (a str frame with a lone surrogate)
            raise ParseError("invalid_json", str(exc)[:120], self.exchange) from None
        try:
            return self._loose.decode(raw), SchemaDrift(self.struct.__name__, text[:160])
        except msgspec.ValidationError as exc:
            raise ParseError(_refusal(raw), f"{self.struct.__name__}: {exc}"[:160], self.exchange) from None
        except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:   # (an unknown field nested too deep)
            raise ParseError("invalid_json", str(exc)[:120], self.exchange) from None


def make_parse(name: str, handle, pre=None):
    """The one parse wrapper every venue uses: ``parse(raw, recv_ns) -> list[event]``.

    ``pre(raw)`` (optional) returns ``(raw, events)``: events for frames that are
    not JSON (OKX's bare ``pong``), or the raw frame to decode (HTX gunzips).
    ``handle(msg, raw)`` turns the decoded message into events, or returns None
    for a message it does not know. Any shape problem (missing key, wrong type,
    a number that is not one) becomes :class:`ParseError` with a reason, so a
    frame is a counted skip and never a crash nor half a book.
    """
    def parse(raw: bytes | str, recv_ns: int) -> list:
        if pre is not None:
            raw, events = pre(raw)
            if events is not None:
                return events
        msg = loads(raw, name)
        if not isinstance(msg, dict):
            raise ParseError("unknown_message", f"not a JSON object: {str(raw[:80])}", name)
        try:
            events = handle(msg, raw)
        except ParseError:
            raise
        except SHAPE_ERRORS as exc:
            raise ParseError("unknown_message", f"{type(exc).__name__}: {exc}", name) from None
        if events is None:
            raise ParseError("unknown_message", str(raw[:80]), name)
        return events

    parse.__name__ = f"parse_{name}"
    return parse


# ---------------------------------------------------------------- RFC 3339 times (Coinbase, Kraken)

_day_cache: dict[str, int] = {}


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def rfc3339_ms(text: str) -> int:
    """``2026-08-09T21:05:48.618125631Z`` -> Unix ms (UTC), without datetime.

    Fraction digits beyond ms are truncated; a missing zone means UTC; a
    numeric offset is applied. Raises ValueError on anything else.
    """
    if len(text) < 19 or text[4] != "-" or text[7] != "-" or text[10] not in "Tt " or text[13] != ":":
        raise ValueError(f"not an RFC3339 time: {text!r}")
    day = text[:10]
    days = _day_cache.get(day)
    if days is None:
        month = int(day[5:7])
        mday = int(day[8:10])
        if not (1 <= month <= 12 and 1 <= mday <= 31):
            raise ValueError(f"not an RFC3339 date: {text!r}")
        days = _days_from_civil(int(day[:4]), month, mday)
        if len(_day_cache) > 64:
            _day_cache.clear()
        _day_cache[day] = days
    secs = days * 86400 + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
    ms = 0
    i = 19
    n = len(text)
    if i < n and text[i] == ".":
        j = i + 1
        while j < n and "0" <= text[j] <= "9":
            j += 1
        ms = int((text[i + 1:j] + "000")[:3])
        i = j
    zone = text[i:]
    if zone and zone not in ("Z", "z"):
        if len(zone) != 6 or zone[0] not in "+-" or zone[3] != ":":
            raise ValueError(f"bad RFC3339 zone: {text!r}")
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        secs -= offset if zone[0] == "+" else -offset
    return secs * 1000 + ms


# ---------------------------------------------------------------- reference data (trading rules)

class RefMsg(msgspec.Struct, gc=False):
    """Base of every reference-data declaration (a venue's trading-rules response, REST or channel).

    Unlike :class:`WireMsg`, unknown fields are ignored: these responses carry dozens of fields the rules do
    not use and gain new ones often, and they are read once per refresh, not per frame. Increments and limits
    are declared :class:`~decimal.Decimal`: msgspec reads both ``"0.01"`` and ``0.01`` into a Decimal from the
    wire text, exactly (never through a float).
    """


@dataclass(frozen=True, kw_only=True)
class ReferenceData:
    """Where a venue publishes its trading rules, and how to read them (the record's ``reference_data``).

    ``url`` + ``path`` is the request (``transport`` ``"rest"``: an HTTP GET; ``"websocket"``: the channel
    named by ``path`` on the market-data connection at ``url``); ``doc`` links the exchange's documentation
    of it; ``parse(raw) -> list[InstrumentRules]`` reads one whole response, and raises only
    :class:`~pipeline.errors.ParseError` naming what is wrong.

    Rules that also arrive on the market-data connection are applied as they arrive: a ``"websocket"`` venue's
    (Kraken: its ``build_subscribe`` subscribes the channel, a snapshot there is a whole response), and, for a
    venue whose rules are fetched apart, the pushes that ``channel_subscribe`` (the frame) subscribes on each
    market-data connection (OKX ``instruments``). In both, ``parse`` of the venue reports a rules frame with an
    :class:`~pipeline.model.InstrumentSpec` per instrument, and the session applies ``parse`` of this record to
    the same frame; a ``channel_subscribe`` push is a change (the instruments it does not name keep their rules).

    A venue whose endpoint answers only what changed since a stamp (HTX ``ts``) names the query parameter in
    ``since_param`` and gives ``since(raw) -> (stamp or None, full)``: a refresh sends the last answer's stamp,
    and an answer that is not ``full`` changes only the instruments it names.
    """

    url: str
    path: str
    doc: str
    parse: Callable
    transport: str = "rest"
    channel_subscribe: str | None = None
    since_param: str | None = None
    since: Callable | None = None


def decode_reference(decoder: msgspec.json.Decoder, raw, exchange: str):
    """Decode a reference-data response with its declaration; msgspec's words (with the path) on refusal."""
    if len(raw) > MAX_FRAME_BYTES:
        raise ParseError("oversize", f"{len(raw)} bytes", exchange)
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise ParseError("bad_reference_data", str(exc)[:200], exchange) from None
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise ParseError("invalid_json", str(exc)[:120], exchange) from None


def _finite(value) -> bool:
    return isinstance(value, Decimal) and value.is_finite()


def build_rules(exchange: str, symbol: str, *, tick: Decimal | None, step: Decimal | None, min_qty: Decimal | None,
                max_qty: Decimal | None, min_notional: Decimal | None, max_notional: Decimal | None,
                trading: bool, status: str, upcoming: tuple[RuleChange, ...] = ()) -> InstrumentRules:
    """One :class:`~pipeline.model.InstrumentRules`, checked: ``tick`` and ``step`` given, finite and > 0, minimums
    finite and >= 0 (None: 0), maximums finite and > 0 (None, or 0 where a venue writes 0 for "none": unbounded).
    Anything else raises :class:`ParseError` naming the symbol and the field."""
    def bad(name, value):
        return ParseError("bad_reference_data", f"{symbol}: {name} {value!s}", exchange)

    for name, value in (("tick", tick), ("step", step)):
        if not _finite(value) or value <= 0:
            raise bad(name, value)
    mins = []
    for name, value in (("min_qty", min_qty), ("min_notional", min_notional)):
        value = Decimal(0) if value is None else value
        if not _finite(value) or value < 0:
            raise bad(name, value)
        mins.append(value)
    maxes = []
    for name, value in (("max_qty", max_qty), ("max_notional", max_notional)):
        if value is not None and (not _finite(value) or value < 0):
            raise bad(name, value)
        maxes.append(value if value else None)
    return InstrumentRules(exchange, symbol, tick, step, mins[0], maxes[0], mins[1], maxes[1], trading, status,
                           upcoming)


def decimal_text(text: str, exchange: str, what: str) -> Decimal | None:
    """A number the exchange sends as text that may be empty (OKX ``""``): None when empty."""
    if text == "":
        return None
    try:
        return Decimal(text)
    except ArithmeticError:
        raise ParseError("bad_reference_data", f"{what}: {text[:40]!r} is not a number", exchange) from None


WIRE_FUNCTIONS = ("native_symbol", "build_url", "build_subscribe", "build_resubscribe", "build_keepalive",
                  "build_pong", "parse", "top", "build_login", "infer_precision")


def wire_functions(wire) -> dict:
    """The record's wire fields from a venue's ``wire`` module: every function of :data:`WIRE_FUNCTIONS` it
    defines (``Venue(name=..., **wire_functions(wire))``), so a record does not list them one by one."""
    return {name: getattr(wire, name) for name in WIRE_FUNCTIONS if callable(getattr(wire, name, None))}


@dataclass(frozen=True, kw_only=True)
class Venue:
    """Everything one exchange declares, once: its folder's ``__init__.py`` is ``VENUE = Venue(...)``.

    The session, the feed, the simulator, the config checks and the console read this record and
    nothing else of the venue; the registry in :mod:`pipeline.venues` derives the fee table, the
    simulator's URL paths and the conformance lists from it.
    """

    name: str
    default_url: str
    sim_path: str                      # URL path the simulator serves this exchange on
    taker_fee_bps: float               # standard spot taker tier
    # connection
    keepalive_interval_s: float | None  # how often the client sends build_keepalive() (None: the server pings)
    ws_ping_interval_s: float | None = 20.0   # RFC 6455 pings from the client; None: rely on the venue's own keepalive
    subscribe_interval_s: float = 0.0  # pause between subscribe frames (the exchange's request rate limit)
    max_symbols_per_connection: int    # the feed splits instruments over several connections above this
    limits: tuple[tuple[str, float], ...] = ()   # documented limits, (name, value): budgets the session enforces
    # the book
    book_levels: int | None            # levels the depth book keeps (the channel's depth; None: full book)
    checksum: Callable | None = None   # checksum(bids_text, asks_text[, price_dp, qty_dp]) -> int, or None
    checksum_levels: int = 0
    depth_is_delta: bool               # the depth channel is deltas with a continuity check (a lost frame is a gap)
    cross_channel_seq: str             # the id that orders top of book vs depth, or '' (arrival order); the same
    #                                    id tells an update's copies on redundant connections apart (feed/arbiter.py)
    single_connection: str = ""        # why copies on two connections cannot be told apart ('' : they can; then
    #                                    cross_channel_seq names the id), so venues.NAME.connections stays 1
    # the wire (the folder's wire.py)
    native_symbol: Callable            # canonical BASE/QUOTE -> the exchange's symbol
    build_url: Callable                # (url, symbols, depth) -> url
    build_subscribe: Callable          # (symbols, depth[, channel]) -> frames to send after connecting
    build_resubscribe: Callable        # (symbol, depth[, channel]) -> frames that bring a fresh snapshot
    build_keepalive: Callable          # () -> frame or None
    build_pong: Callable               # (token) -> frame
    parse: Callable                    # (raw, recv_ns) -> list of pipeline.model events; raises only ParseError
    top: Callable | None = None        # (raw) -> top-of-book tuple or None (the contract is in this module's docstring)
    infer_precision: Callable | None = None   # (bids_text, asks_text) -> (price dp, qty dp), for decode of a capture
    # logged-in market data (OKX): a signed login unlocks a faster depth channel
    build_login: Callable | None = None       # (key, secret, passphrase, timestamp_s) -> frame
    login_depth_channel: str | None = None    # the depth channel to ask for once logged in
    depth_channels: dict[str, int] = field(default_factory=dict)   # depth channel -> the levels it keeps
    quirks: tuple[str, ...] = ()       # simulator quirks (pipeline.sim.protocol.QUIRK_NAMES) this venue has
    compression: str | None = None     # "gzip": every frame the exchange sends is gzip-compressed JSON (HTX)
    bbo_channel: bool = True           # a top-of-book channel besides depth (Coinbase: the book's own top only)
    exchange_time: bool = True         # market-data frames carry the exchange's time (Binance spot's do not)
    refuses_unknown_symbols: bool = True   # a subscription to a symbol it does not list is answered with an
    #                                        error (Binance acks it and stays silent: the row just never syncs)
    aligned_snapshots: bool = False    # the depth snapshot is requested apart and numbered inside the delta stream:
    #                                    deltas before it are cached and aligned with it (HTX; pipeline.book Alignment)
    reference_data: ReferenceData | None = None   # where its trading rules (tick, step, minimums) are published
    account_fees: typing.Any = None    # the signed endpoint of the fees this account pays (_account.AccountFees)

    def wire_frame(self, text: str):
        """A frame's JSON text as this exchange sends it (captures kept as text, tests)."""
        return gzip.compress(text.encode()) if self.compression == "gzip" else text

    def limit(self, name: str, default: float | None = None) -> float | None:
        return dict(self.limits).get(name, default)


# quote currencies a concatenated symbol (``BTCUSDT``, ``btcusdt``) may end with, longest first (FDUSD before USD)
CONCATENATED_QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EURI", "USD", "EUR", "TRY", "BRL", "GBP", "JPY",
                       "BTC", "ETH", "BNB", "DAI")


def split_concatenated(symbol: str) -> str | None:
    """``BTCUSDT`` / ``btcusdt`` -> ``BTC/USDT``: split before the longest known quote currency the symbol ends
    with, or None when none fits. The inverse of the concatenating venues' ``native_symbol``."""
    text = symbol.upper()
    for quote in CONCATENATED_QUOTES:
        if text.endswith(quote) and len(text) > len(quote):
            return f"{text[:-len(quote)]}/{quote}"
    return None
