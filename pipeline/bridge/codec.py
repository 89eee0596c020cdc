"""The bridge's wire format: one NATS message per row state, one per heartbeat.

Pure: bytes and numbers in, records or bytes out; no sockets, no clock.

Subjects (one token per name, so a subscriber asks the server for exactly
the rows it mirrors, and a gateway between regions forwards only those)::

    quotes.<box>.<venue>.<BASE-QUOTE>      e.g. quotes.tokyo.binance.BTC-USDT
    heartbeat.<box>                        every bridge.heartbeat_interval_ms
    quotes.<box>.<venue>.<BASE-QUOTE>.rules   the row's trading rules, when they change
    refresh.<box>                          "send me every row again" (after a reconnect)
    decisions.<box>                        the detector's records, from the output process

A quote message is the row's whole state, never a delta, so a lost or
skipped message is repaired by the next one and the latest always wins::

    {"box": "tokyo", "venue": "binance", "instrument": "BTC/USDT", "status": 2,
     "bids": [[65000.1, 0.5], ...], "asks": [[65000.2, 0.3], ...],
     "exch_ts_ns": 0, "recv_ns": 1780000000000000000, "publish_ns": 1780000000000020000,
     "sent_ns": 1780000000000090000, "updates": 1234, "confirmed_ns": 1780000000000000000,
     "xseq": 71234567890}

``status`` is a :class:`~pipeline.board.layout.RowStatus` value; the times are
the publishing box's ``time.time_ns()`` (``exch_ts_ns``: the exchange's own
clock, 0 when it sends none); ``sent_ns`` is when the bridge published it;
``confirmed_ns`` is the last time the exchange confirmed the quote current (a
change or a liveness message), which staleness is judged on (optional:
``recv_ns`` when absent); ``xseq`` is the exchange's own id of the newest update
in the book (the row's ``xseq``: Binance ``u``, Bybit ``seq``, OKX ``seqId``),
by which a box that reads the venue itself tells which copy is newer (optional:
0, none, when absent).

A rules message carries the row's :class:`~pipeline.model.InstrumentRules` (the feed's, from its venue's
reference data). Rules change rarely, so they travel on their own subject, sent when the row's rules
version moves and once per row on a refresh, never with every quote. Each bound is its exact decimal
text, as :func:`str` renders the Decimal (``max_qty``/``max_notional`` null when unbounded); ``rules`` is
null when the row has none (its feed holds it ``no_rules``); ``upcoming`` is not carried::

    {"box": "tokyo", "venue": "binance", "instrument": "BTC/USDT", "sent_ns": 1780000000000090000,
     "rules": {"venue": "binance", "symbol": "BTCUSDT", "tick": "0.01000000", "step": "0.00001000",
               "min_qty": "0.00001000", "max_qty": "9000.00000000", "min_notional": "5.00000000",
               "max_notional": null, "trading": true, "status": "TRADING"}}

JSON through orjson, readable with ``nats sub``. Rendering a 5-level row took
about 3 µs and parsing it with every check about 13 µs (timeit on the shared
2-vCPU development VM), next to 1.3-1.6 ms for the whole hop between boards
(``python -m bench.bridge``).
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import NamedTuple

import orjson

from pipeline.errors import ParseError
from pipeline.model import MAX_DEPTH, InstrumentRules, RowStatus

MAX_MESSAGE_BYTES = 16_384
_STATUSES = frozenset(int(s) for s in RowStatus)
_BOUNDS = ("tick", "step", "min_qty", "max_qty", "min_notional", "max_notional")
_RULES_KEYS = ("venue", "symbol", *_BOUNDS, "trading", "status")
_DECIMAL_TEXT = re.compile(r"[0-9]{1,40}(?:\.[0-9]{0,40})?(?:[eE][-+]?[0-9]{1,4})?")
_TEXT_LIMIT = 80            # venue, symbol, status: the board's rules entry holds at most 16, 32, 80 bytes
_QUOTE_KEYS = ("box", "venue", "instrument", "status", "bids", "asks", "exch_ts_ns", "recv_ns", "publish_ns",
               "sent_ns", "updates")


def instrument_token(instrument: str) -> str:
    """``BTC/USDT`` -> ``BTC-USDT`` (a ``/`` is fine in a subject, but one token per name reads better)."""
    return instrument.replace("/", "-")


def quote_subject(box: str, venue: str, instrument: str) -> str:
    return f"quotes.{box}.{venue}.{instrument_token(instrument)}"


RULES_SUFFIX = ".rules"


def rules_subject(box: str, venue: str, instrument: str) -> str:
    """The row's quote subject plus ``.rules``: inside ``quotes.<box>.>``, so the same permissions and
    recording cover it, and a distinct subject, so a subscriber to a row's quotes gets no rules unasked."""
    return quote_subject(box, venue, instrument) + RULES_SUFFIX


def heartbeat_subject(box: str) -> str:
    return f"heartbeat.{box}"


def refresh_subject(box: str) -> str:
    return f"refresh.{box}"


def decisions_subject(box: str) -> str:
    """Where the output process publishes the box's decisions (``bridge.publish_decisions``): each message is
    one record exactly as the events file holds it, without the newline, so a subscriber and the file agree."""
    return f"decisions.{box}"


class RemoteQuote(NamedTuple):
    """One row state as another box published it (its clock). A tuple: a frozen dataclass costs 5 µs to build."""

    box: str
    venue: str
    instrument: str
    status: int
    bids: list
    asks: list
    exch_ts_ns: int
    recv_ns: int
    publish_ns: int
    sent_ns: int
    updates: int
    confirmed_ns: int
    xseq: int


class Heartbeat(NamedTuple):
    box: str
    sent_ns: int
    rows: int


def render_quote(box: str, venue: str, instrument: str, status: int, bids, asks, exch_ts_ns: int, recv_ns: int,
                 publish_ns: int, sent_ns: int, updates: int, confirmed_ns: int = 0, xseq: int = 0) -> bytes:
    return orjson.dumps({"box": box, "venue": venue, "instrument": instrument, "status": status, "bids": bids,
                         "asks": asks, "exch_ts_ns": exch_ts_ns, "recv_ns": recv_ns, "publish_ns": publish_ns,
                         "sent_ns": sent_ns, "updates": updates, "confirmed_ns": confirmed_ns or recv_ns,
                         "xseq": xseq})


def render_row(box: str, venue: str, instrument: str, values: tuple, index: dict[str, int], depth: int,
               sent_ns: int) -> bytes:
    """A board row's payload (a :class:`~pipeline.board.RowCodec` tuple) as a quote message, top ``depth`` levels."""
    b = index["bids"]
    a = index["asks"]
    n_bids = min(values[index["n_bids"]], depth)
    n_asks = min(values[index["n_asks"]], depth)
    bids = [[values[b + 2 * k], values[b + 2 * k + 1]] for k in range(n_bids)]
    asks = [[values[a + 2 * k], values[a + 2 * k + 1]] for k in range(n_asks)]
    return render_quote(box, venue, instrument, values[index["status"]], bids, asks, values[index["exch_ts_ns"]],
                        values[index["recv_ns"]], values[index["publish_ns"]], sent_ns, values[index["update_count"]],
                        values[index["confirmed_ns"]], values[index["xseq"]])


def render_rules(box: str, venue: str, instrument: str, rules: InstrumentRules | None, sent_ns: int) -> bytes:
    """One row's trading rules as a rules message (None: the row has none); the bounds as exact decimal texts."""
    body = None
    if rules is not None:
        body = {"venue": rules.venue, "symbol": rules.symbol,
                **{name: None if getattr(rules, name) is None else str(getattr(rules, name)) for name in _BOUNDS},
                "trading": rules.trading, "status": rules.status}
    return orjson.dumps({"box": box, "venue": venue, "instrument": instrument, "sent_ns": sent_ns, "rules": body})


def render_heartbeat(box: str, sent_ns: int, rows: int) -> bytes:
    return orjson.dumps({"box": box, "sent_ns": sent_ns, "rows": rows})


_INF = float("inf")


def _levels(value, name: str, falling: bool) -> list:
    """[[price, quantity], ...] -> [(price, quantity), ...]: finite numbers, prices > 0, best first.

    Chained comparisons reject NaN and infinities without a call per number (JSON has neither,
    but the check costs nothing extra); about 1 µs for 5 levels.
    """
    if value.__class__ is not list:
        raise ParseError("unknown_message", f"{name} must be a list of [price, quantity]")
    if len(value) > MAX_DEPTH:
        raise ParseError("oversize", f"{name} has {len(value)} levels (at most {MAX_DEPTH})")
    out = []
    previous = _INF if falling else 0.0
    for level in value:
        if level.__class__ is not list or len(level) != 2:
            raise ParseError("unknown_message", f"{name}: level {level!r} is not [price, quantity]")
        price, quantity = level
        if price.__class__ is not float:
            if price.__class__ is not int:
                raise ParseError("bad_number", f"{name}: level {level!r} is not two numbers")
            price = float(price)
        if quantity.__class__ is not float:
            if quantity.__class__ is not int:
                raise ParseError("bad_number", f"{name}: level {level!r} is not two numbers")
            quantity = float(quantity)
        if not (0.0 < price < _INF and 0.0 <= quantity < _INF):
            raise ParseError("bad_number", f"{name}: level {level!r} out of range")
        if (price >= previous) if falling else (price <= previous):
            raise ParseError("bad_number", f"{name}: levels out of order (bids must fall, asks must rise)")
        previous = price
        out.append((price, quantity))
    return out


def _loads(data: bytes, what: str) -> dict:
    if len(data) > MAX_MESSAGE_BYTES:
        raise ParseError("oversize", f"{what} of {len(data)} bytes (at most {MAX_MESSAGE_BYTES})")
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ParseError("invalid_json", f"{what}: {exc}") from None
    if not isinstance(message, dict):
        raise ParseError("unknown_message", f"{what} is not a JSON object")
    return message


def _integer(message: dict, key: str, bits: int = 63) -> int:
    """``message[key]``, an integer from 0 to 2^``bits``-1: rows keep times and counters as int64 (63 bits
    from 0) and the exchange's id as a uint64 (64): a larger number would not fit the row."""
    value = message[key]
    if value.__class__ is not int or not 0 <= value < 1 << bits:
        raise ParseError("bad_number", f"{key} must be an integer from 0 to 2^{bits}-1, got {value!r}")
    return value


def parse_quote(subject: str, data: bytes) -> RemoteQuote:
    """Check one quote message against the subject it came on. Raises :class:`ParseError` only."""
    message = _loads(data, "quote message")
    try:
        box, venue, instrument = message["box"], message["venue"], message["instrument"]
        status, bids, asks = message["status"], message["bids"], message["asks"]
        recv_ns = _integer(message, "recv_ns")
        exch_ts_ns, publish_ns = _integer(message, "exch_ts_ns"), _integer(message, "publish_ns")
        sent_ns, updates = _integer(message, "sent_ns"), _integer(message, "updates")
    except KeyError:
        missing = [k for k in _QUOTE_KEYS if k not in message]
        raise ParseError("unknown_message", f"quote message without {', '.join(missing)}") from None
    if not (isinstance(box, str) and isinstance(venue, str) and isinstance(instrument, str)) \
            or subject != quote_subject(box, venue, instrument):
        raise ParseError("unknown_message", f"names {box!r} {venue!r} {instrument!r} do not match subject {subject!r}")
    if status.__class__ is not int or status not in _STATUSES:
        raise ParseError("bad_number", f"unknown row status {status!r}")
    return RemoteQuote(box, venue, instrument, status, _levels(bids, "bids", True), _levels(asks, "asks", False),
                       exch_ts_ns, recv_ns, publish_ns, sent_ns, updates,
                       _integer(message, "confirmed_ns") if "confirmed_ns" in message else recv_ns,
                       _integer(message, "xseq", 64) if "xseq" in message else 0)


def parse_heartbeat(subject: str, data: bytes) -> Heartbeat:
    message = _loads(data, "heartbeat")
    box = message.get("box")
    if not isinstance(box, str) or subject != heartbeat_subject(box):
        raise ParseError("unknown_message", f"heartbeat box {box!r} does not match subject {subject!r}")
    for key in ("sent_ns", "rows"):
        if key not in message:
            raise ParseError("unknown_message", f"heartbeat without {key}")
    return Heartbeat(box, _integer(message, "sent_ns"), _integer(message, "rows"))


class RemoteRules(NamedTuple):
    """One row's trading rules as another box published them (``rules`` None: the row has none)."""

    box: str
    venue: str
    instrument: str
    sent_ns: int
    rules: InstrumentRules | None


def _maximum(body: dict, name: str) -> Decimal | None:
    """``max_qty`` / ``max_notional``: null when unbounded, else a decimal text above 0."""
    return None if body[name] is None else _bound(body, name, True)


def _bound(body: dict, name: str, optional: bool = False) -> Decimal:
    """A bound's decimal text -> its exact Decimal: digits only (no sign, NaN, infinity, spaces or underscores)."""
    text = body[name]
    if text.__class__ is not str or _DECIMAL_TEXT.fullmatch(text) is None:
        raise ParseError("bad_number", f"rules {name} must be a decimal text, got {text!r}")
    value = Decimal(text)
    if (optional or name in ("tick", "step")) and not value > 0:      # the minimums may be 0 (none stated)
        raise ParseError("bad_number", f"rules {name} must be above 0, got {text!r}")
    return value


def _rules(body) -> InstrumentRules:
    if body.__class__ is not dict:
        raise ParseError("unknown_message", "rules must be an object or null")
    missing = [k for k in _RULES_KEYS if k not in body]
    if missing:
        raise ParseError("unknown_message", f"rules without {', '.join(missing)}")
    for key in ("venue", "symbol", "status"):
        text = body[key]
        if text.__class__ is not str or not 0 < len(text) <= _TEXT_LIMIT:
            raise ParseError("unknown_message", f"rules {key} must be a text of 1 to {_TEXT_LIMIT} characters, "
                                                f"got {text!r}")
    if body["trading"].__class__ is not bool:
        raise ParseError("unknown_message", f"rules trading must be true or false, got {body['trading']!r}")
    tick, step = _bound(body, "tick"), _bound(body, "step")
    min_qty, max_qty = _bound(body, "min_qty"), _maximum(body, "max_qty")
    min_notional, max_notional = _bound(body, "min_notional"), _maximum(body, "max_notional")
    return InstrumentRules(body["venue"], body["symbol"], tick, step, min_qty, max_qty, min_notional, max_notional,
                           body["trading"], body["status"])


def parse_rules(subject: str, data: bytes) -> RemoteRules:
    """Check one rules message against the subject it came on. Raises :class:`ParseError` only."""
    message = _loads(data, "rules message")
    missing = [k for k in ("box", "venue", "instrument", "sent_ns", "rules") if k not in message]
    if missing:
        raise ParseError("unknown_message", f"rules message without {', '.join(missing)}")
    box, venue, instrument = message["box"], message["venue"], message["instrument"]
    if not (isinstance(box, str) and isinstance(venue, str) and isinstance(instrument, str)) \
            or subject != rules_subject(box, venue, instrument):
        raise ParseError("unknown_message", f"names {box!r} {venue!r} {instrument!r} do not match subject {subject!r}")
    body = message["rules"]
    return RemoteRules(box, venue, instrument, _integer(message, "sent_ns"), None if body is None else _rules(body))
