"""Small helpers the venue parsers share (pure, no I/O)."""
from __future__ import annotations

from dataclasses import dataclass

import orjson

from pipeline.errors import ParseError

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


@dataclass(frozen=True)
class Venue:
    """Everything one exchange declares, once (its module ends with ``VENUE = Venue(...)``).

    The registry in :mod:`pipeline.venues` derives the fee table, the
    simulator's URL paths and the conformance lists from these records.
    """

    name: str
    default_url: str
    sim_path: str                      # URL path the simulator serves this exchange on
    taker_fee_bps: float               # standard spot taker tier
    keepalive_interval_s: float | None
    subscribe_interval_s: float
    max_symbols_per_connection: int
    book_levels: int | None
    checksum: object                   # checksum(bids_text, asks_text[, price_dp, qty_dp]) -> int, or None
    checksum_levels: int
    native_symbol: object
    build_url: object
    build_subscribe: object
    build_resubscribe: object
    build_keepalive: object
    build_pong: object
    parse: object
    depth_is_delta: bool               # the depth channel is deltas with a continuity check (a lost frame is a gap)
    cross_channel_seq: str             # the id that orders top of book vs depth, or '' (arrival order)
    quirks: tuple[str, ...] = ()       # simulator quirks (pipeline.sim.protocols.base.QUIRK_NAMES) this venue has
    ws_ping_interval_s: float | None = 20.0   # RFC 6455 pings from the client; None: rely on the venue's own keepalive
    limits: tuple[tuple[str, float], ...] = ()   # documented limits, (name, value): budgets the session enforces

    def limit(self, name: str, default: float | None = None) -> float | None:
        return dict(self.limits).get(name, default)
