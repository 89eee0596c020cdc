"""Normalized events that venue parsers return, and instrument identities.

A venue's ``parse(raw, recv_ns)`` turns one WebSocket frame into a list of
these. Market data becomes :class:`BookUpdate`; control frames become typed
events too (ack, ping, pong, error, notice) so the feed process, which owns
the socket, decides what to do with each, and the parser stays pure.

What the feed session must do with each event (the contract):

* :class:`BookUpdate`, :class:`InstrumentSpec`, :class:`TradingStatus` with a
  symbol: hand it to that symbol's ``InstrumentBook.apply`` and act on the
  :class:`~pipeline.book.Outcome` (publish, resubscribe, resync).
* :class:`TradingStatus` with ``symbol=None``: the whole venue (every row of
  this connection) -- apply it to every book of the connection.
* :class:`Liveness`: the exchange confirms the named books (None: every book
  of this connection) are current although nothing changed; refresh the rows'
  "confirmed" time (not their last-change time). Only rows whose book is
  valid may be refreshed.
* :class:`Notice` with ``reconnect`` and ``planned``: an announced disconnect;
  open the replacement connection first (make-before-break).
* :class:`SequenceMark`: per-connection continuity (Coinbase); a jump is a gap
  for every row of the connection, and the rest of that frame is not applied.
* :class:`LoginResult`, :class:`ChannelNotPermitted`: OKX tick-by-tick depth;
  on a failed login or a refused channel fall back to ``books``.

It also holds the pipeline's own vocabulary that the book, the feed session,
the detector rules and the config share: what a row's state means
(:class:`RowStatus`), why a frame was dropped (:class:`SkipReason`), which
part a process plays (:class:`ProcessRole`) and how deep a book can be
(:data:`MAX_DEPTH`). They are plain enums and numbers: the quote board
(:mod:`pipeline.board.layout`) stores their int values, and nothing here
depends on the board's layout.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

# The most levels per side a book publishes (and a board row holds): ``board.depth`` is 1..MAX_DEPTH.
MAX_DEPTH = 10
MAX_CONNECTIONS = 4      # redundant connections per venue at most (venues.NAME.connections)


class RowStatus(enum.IntEnum):
    """What the detector may conclude from a row. Only LIVE rows can trade."""

    EMPTY = 0          # assigned, never written
    SYNCING = 1        # subscribed, waiting for the first snapshot
    LIVE = 2           # book valid and fresh
    RESYNCING = 3      # gap or checksum failure: book discarded, rebuilding
    STALE = 4          # no update within the staleness limit
    DISCONNECTED = 5   # connection lost, reconnecting
    CROSSED = 6        # book crossed or locked: not tradable until it uncrosses
    REJECTED = 7       # the exchange refused the subscription
    HALTED = 8         # the exchange says it cannot trade now (maintenance, cancel-only, pair halted): book kept,
                       # not tradable
    NO_RULES = 9       # no trading rules for the instrument (reference data unreachable, no cache, or not listed):
                       # not tradable


# why the detector did not open a pair the depth walk found: the venues' trading rules refused it
# (pipeline.detector.sizing; counted in the detector's summary and its slot's refused_<reason> counters)
REFUSAL_REASONS = ("below_min_qty", "below_min_notional", "not_trading", "no_rules")


class SkipReason(enum.IntEnum):
    """Why a frame or update was dropped; one counter each per process."""

    INVALID_JSON = 0
    UNKNOWN_MESSAGE = 1
    BAD_NUMBER = 2
    SEQUENCE_GAP = 3
    CHECKSUM_MISMATCH = 4
    CROSSED_BOOK = 5
    OVERSIZE = 6
    OTHER = 7


class ProcessRole(enum.IntEnum):
    """What a process of the pipeline does; its process slot on the board records it."""

    NONE = 0
    FEED = 1
    DETECTOR = 2
    HEALTH = 3
    SIMULATOR = 4
    BRIDGE = 5
    OUTPUT = 6

# The latest exchange time in ms a row can hold: rows keep times as int64 nanoseconds (until 2262-04-11).
# A larger (or negative) one is a bad number, like a NaN price: counted, and the book is not trusted.
MAX_TS_MS = (2 ** 63 - 1) // 1_000_000
# An exchange id (sequence, update id, cross-channel id) must fit the int64 every venue documents: a larger one
# is a bad number too. Taken as the last id, it would make every later, real id look old and hold the quote.
MAX_ID = 2 ** 63 - 1

# Which book an update belongs to: the exchange's top-of-book channel, or its depth channel.
BBO = 0
DEPTH = 1


class BookUpdate:
    """One book change for one native symbol.

    ``snapshot`` True replaces the whole (top-of-book or depth) book; False
    is a delta where quantity 0 deletes the level. Prices and quantities are
    floats, parsed once at the edge. ``seq``/``prev_seq`` carry the
    exchange's continuity numbers: the book checks ``prev_seq`` against the
    ``seq`` it applied last (None means "nothing to check"). ``checksum`` is
    the exchange's integrity value when it sends a usable one (Kraken);
    ``bids_text``/``asks_text`` keep the wire text of each level for it.
    ``restart`` marks an update the exchange says restarts the sequence
    (Bybit ``u == 1``, OKX ``seqId < prevSeqId``): ids may go down from here,
    the book continues from ``seq`` instead of declaring a gap (a ``prev_seq``
    that does not follow the last applied id is still a gap).

    ``xseq`` is the exchange's id that orders the top-of-book and the depth
    channel of one instrument against each other (Binance bookTicker ``u`` vs
    depth ``lastUpdateId``, Bybit ``data.seq`` across ``orderbook.1`` and
    ``orderbook.50``, OKX ``seqId`` across ``bbo-tbt`` and ``books``); None
    where the venue has no comparable id (the book then falls back to arrival
    order). ``weak`` marks a top-of-book source that must never override a
    synced depth book (Kraken ``ticker``, Coinbase ``ticker``): it is only
    used while the depth book is not synced.
    """

    __slots__ = ("symbol", "channel", "snapshot", "bids", "asks", "exch_ts_ms", "seq", "prev_seq",
                 "checksum", "bids_text", "asks_text", "restart", "xseq", "weak")

    def __init__(self, symbol: str, channel: int, snapshot: bool, bids: list, asks: list,
                 exch_ts_ms: int = 0, seq: int | None = None, prev_seq: int | None = None,
                 checksum: int | None = None, bids_text: list | None = None, asks_text: list | None = None,
                 restart: bool = False, xseq: int | None = None, weak: bool = False):
        self.symbol = symbol
        self.channel = channel
        self.snapshot = snapshot
        self.bids = bids
        self.asks = asks
        self.exch_ts_ms = exch_ts_ms
        self.seq = seq
        self.prev_seq = prev_seq
        self.checksum = checksum
        self.bids_text = bids_text
        self.asks_text = asks_text
        self.restart = restart
        self.xseq = xseq
        self.weak = weak

    def __repr__(self) -> str:
        kind = "snapshot" if self.snapshot else "delta"
        chan = "bbo" if self.channel == BBO else "depth"
        return (f"BookUpdate({self.symbol} {chan} {kind} bids={self.bids[:3]} asks={self.asks[:3]} "
                f"ts={self.exch_ts_ms} seq={self.seq} prev={self.prev_seq} xseq={self.xseq})")


class AlignedSnapshot(BookUpdate):
    """A depth snapshot numbered inside its delta stream, to be aligned with it before use (HTX ``req`` answer).

    The same fields as :class:`~pipeline.model.BookUpdate` (``snapshot`` True, ``channel`` DEPTH, ``seq`` the
    stream's number of the book it holds, ``prev_seq`` None); the class alone says that the deltas which came
    before it are to be aligned with it and that it is not usable on its own (:mod:`pipeline.book`, "Alignment").
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """The exchange accepted a subscription (``symbol`` may be '' when it does not say)."""
    symbol: str = ""
    channel: str = ""


@dataclass(frozen=True, slots=True)
class SubscribeError:
    """The exchange refused a request; ``symbol`` is set when it names one."""
    message: str
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class Ping:
    """The server asked for an application-level pong carrying ``token``."""
    token: object = None


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to our keepalive."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A control message with no market data and no promise about the books (legacy feeds)."""


@dataclass(frozen=True, slots=True)
class Liveness:
    """The exchange confirms that quiet books are still current.

    ``symbols`` None means every book of this connection (Kraken
    ``heartbeat``, sent only when nothing else was sent; Coinbase
    ``heartbeats``, whose ``sequence_num`` proves nothing was lost before it).
    The session refreshes each valid row's "confirmed" time, which staleness
    uses; the last-change time stays. Venues whose confirmation is a repeated
    book message (OKX empty update, Bybit's unchanged 3 s re-send) report it as
    :attr:`pipeline.book.Outcome.UNCHANGED` instead.
    """
    symbols: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """Server announcement; ``reconnect`` True when it is about to drop us.

    ``planned`` True when the exchange announces the disconnect ahead of time
    (Binance ``serverShutdown``, OKX notice 64008): the session should open the
    replacement connection, wait until its books are synced, hand the rows
    over and only then close this one, so the rows never go disconnected.
    """
    message: str
    reconnect: bool = False
    planned: bool = False


@dataclass(frozen=True, slots=True)
class TradingStatus:
    """Whether the venue (``symbol`` None) or one native symbol can be traded now.

    ``tradable`` False (Kraken system status ``maintenance``/``cancel_only``/
    ``post_only``/``limit_only``, or a pair status other than ``online``):
    the rows must be held in ``RowStatus.HALTED`` until a tradable status for
    the same scope arrives; ``reason`` is the exchange's word, for the console.
    """
    symbol: str | None
    tradable: bool
    reason: str


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """A pair's reference data (Kraken v2 ``instrument`` channel).

    ``price_precision``/``qty_precision`` are the decimals the book checksum is
    computed with; ``status`` is the pair's trading status (``online`` ...).
    Hand it to the symbol's book: a precision change makes ``apply`` return
    ``Outcome.RESUBSCRIBE``.
    """
    symbol: str
    price_precision: int
    qty_precision: int
    status: str = "online"


@dataclass(frozen=True, slots=True)
class LoginResult:
    """The answer to a login request (OKX ``{"event":"login"}``); ``ok`` False on a refusal."""
    ok: bool
    code: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class ChannelNotPermitted:
    """The exchange refused a channel this account may not use (OKX 64003: tick-by-tick
    depth needs VIP4+ and login; 60011: log in first). Not a refused symbol: fall back to
    the public channel (``build_subscribe(..., channel="books")``) for ``symbol``."""
    symbol: str
    channel: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SchemaDrift:
    """A market-data message carried fields its declaration does not know (the exchange added one).

    It was still decoded, by the same declaration with the unknown fields ignored, and its other
    events are in the same list; the session counts ``schema_fallbacks`` and says once per venue
    which message and field, so a changed wire format is seen the day it happens.
    """

    message: str          # the declaration's name, e.g. "BookTicker"
    detail: str           # msgspec's words: "Object contains unknown field `x` - at `$.data`"


@dataclass(frozen=True, slots=True)
class SequenceMark:
    """A per-connection sequence number (Coinbase ``sequence_num``)."""
    seq: int


@dataclass(frozen=True, slots=True)
class Instrument:
    """A canonical instrument: the same one across exchanges only because config says so."""
    base: str
    quote: str

    @classmethod
    def parse(cls, text: str) -> Instrument:
        base, quote = text.split("/")
        return cls(base, quote)

    def __str__(self) -> str:
        return f"{self.base}/{self.quote}"


@dataclass(frozen=True, slots=True)
class RuleChange:
    """A trading-rule change the exchange has announced (OKX ``upcChg``): ``field`` takes ``new_value`` at
    ``effective_ms`` (Unix ms). ``field`` is the exchange's own name (``tickSz``, ``minSz``, ``maxMktSz``)."""

    field: str
    new_value: Decimal
    effective_ms: int


@dataclass(frozen=True, slots=True)
class InstrumentRules:
    """What one exchange accepts as an order on one instrument, from its public reference data.

    The contract every venue's ``instrument_rules(raw)`` keeps:

    * ``tick`` (price increment) and ``step`` (quantity increment) are > 0, exact :class:`~decimal.Decimal`
      values read from the wire *text* (never through a float); an order's price is a multiple of ``tick``,
      its quantity a multiple of ``step``.
    * ``min_qty`` (base units) and ``min_notional`` (quote currency, price x quantity) are >= 0; 0 means the
      exchange states no such minimum. ``max_qty`` and ``max_notional`` are > 0, or None when unbounded.
    * The limits are those of a **limit** order: the detector's orders are marketable limit orders (a buy at
      the book's VWAP rounded up to the tick, a sell rounded down; :mod:`pipeline.detector.sizing`), so a
      venue's market-order-only limits (Binance ``MARKET_LOT_SIZE``, OKX ``maxMktSz``/``maxMktAmt``, Bybit
      ``maxMarketOrderQty``, HTX ``smminoa``/``bmmaxov``/``maxov``) are not used, and Binance's notional
      filter applies whatever its ``applyMinToMarket``/``applyToMarket`` says (those flags concern market
      orders only).
    * ``trading`` is True only when a taker order can be sent now; ``status`` is the exchange's own word for
      the state (``TRADING``, ``Trading``, ``live``, ``online``, ``cancel_only`` ...), for the console and logs.
    * ``upcoming``: changes the exchange has announced and not yet applied (OKX only), oldest first.
    """

    venue: str
    symbol: str                      # the exchange's native symbol
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal | None
    min_notional: Decimal
    max_notional: Decimal | None
    trading: bool
    status: str
    upcoming: tuple[RuleChange, ...] = ()
