"""Shared pieces of the simulated exchange protocols."""
from __future__ import annotations

import dataclasses
import gzip
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal

from pipeline.choices import QUIRK_NAMES
from pipeline.model import BBO, DEPTH


@dataclass
class Quirks:
    """Real-venue behaviours the simulator can switch on (config ``simulator.quirks``).

    Each applies only to the venues that have it; the others ignore it. The
    first three change how every message is written; the last five are events
    the simulator stages every ``every_s`` seconds (see
    :meth:`pipeline.sim.server.ExchangeServer.stage_events`); tests can also
    trigger each one directly.
    """

    # kraken: numbers as JSON serializers print them (63298, 5.1e-05), dust deep in the book
    shortest_numbers: bool = False
    # binance/bybit/okx: each depth message goes out one step late, after a newer top of book
    late_depth: bool = False
    resend_unchanged: bool = False     # bybit: an unchanged orderbook.1 is re-sent with the same u (as every 3 s live)
    sequence_resets: bool = False      # okx/bybit: every instrument's sequence restarts (maintenance, u == 1)
    venue_status: bool = False         # kraken: status maintenance, then online again after status_s
    planned_disconnects: bool = False  # binance serverShutdown / okx 64008, then the connection is closed after grace_s
    dropped_messages: bool = False     # one depth message is lost (coinbase: a sequence_num jump; others: a gap)
    rule_changes: bool = False         # every venue: an instrument's minimums change (OKX announces it ahead in
    #                                    upcChg) or it halts for status_s (ExchangeServer.change_rule)
    every_s: float = 10.0              # how often the staged events happen
    status_s: float = 1.0              # how long a staged non-online status lasts
    grace_s: float = 2.0               # how long after a shutdown notice the connection is closed

    @classmethod
    def named(cls, names) -> Quirks:
        unknown = set(names) - set(QUIRK_NAMES)
        if unknown:
            raise ValueError(f"unknown simulator quirks: {sorted(unknown)}")
        return cls(**{name: True for name in names})

    def stages_events(self) -> bool:
        return (self.sequence_resets or self.venue_status or self.planned_disconnects or self.dropped_messages
                or self.rule_changes)


HOSTILE_NAMES = ("out_of_range_numbers", "fragmented_messages", "oversize_messages", "endless_symbols")


@dataclass
class Hostile:
    """Crafted input a hostile venue (or whoever sits between us and it) may send (issue 24; the soak's ``--hostile``).

    Not real-venue behaviour, unlike :class:`Quirks`: each is what a client must survive without dying,
    growing or trusting it. The server stages them on its own (:meth:`pipeline.sim.server.ExchangeServer.
    stage_events`), each venue independently; tests can also set the one-shot :class:`~pipeline.sim.server.
    Faults` directly.

    * ``out_of_range_numbers``: every ``numbers_every_s`` one frame (per connection) of one instrument carries
      a number no row can hold, written the way the venue writes that field (:meth:`SimProtocol.out_of_range`):
      an exchange time past 2262 (or past int64 even in ms), a sequence id past int64, a price ``1e400`` /
      ``inf`` / ``NaN``.
    * ``fragmented_messages``: every ``fragments_every_s`` one market-data message of each connection goes out
      as ``fragments`` WebSocket fragments (a real frame: the client must put it together and use it).
    * ``oversize_messages``: every ``oversize_every_s`` a message of ``oversize_bytes`` (past the clients' 16 MiB
      cap) goes out in 1 MiB fragments: the client must refuse it and reconnect, not collect it.
    * ``endless_symbols``: every ``symbol_every`` market steps each connection gets book messages (and, where the
      venue has them, instrument/status messages) naming a symbol never seen before and never subscribed.
    """

    out_of_range_numbers: bool = False
    fragmented_messages: bool = False
    oversize_messages: bool = False
    endless_symbols: bool = False
    numbers_every_s: float = 20.0      # each costs the instrument a resync, of which a feed allows 3 a minute
    fragments_every_s: float = 5.0
    fragments: int = 64
    oversize_every_s: float = 60.0
    oversize_bytes: int = 17 * 2 ** 20
    symbol_every: int = 5

    @classmethod
    def named(cls, names) -> Hostile:
        unknown = set(names) - set(HOSTILE_NAMES)
        if unknown:
            raise ValueError(f"unknown hostile faults: {sorted(unknown)} (known: {', '.join(HOSTILE_NAMES)})")
        return cls(**{name: True for name in names})

    def any(self) -> bool:
        return self.out_of_range_numbers or self.fragmented_messages or self.oversize_messages or self.endless_symbols


OUT_OF_RANGE_KINDS = ("time", "id", "price")
GZIP_MAGIC = b"\x1f\x8b"
# the values, by kind and by how the venue writes the field (a JSON number, a quoted number, RFC3339 text)
_TIMES = (b"99999999999999999999", b"9300000000000")    # ms: past int64 even as ms; year 2264 (past 2262 in ns)
_YEARS = (b"2300", b"9999")                               # RFC3339: past 2262
_IDS = (b"18446744073709551616", b"9223372036854775808", b"99999999999999999999999")   # 2^64, 2^63, 10^23
_TEXT_PRICES = (b"1e400", b"inf", b"NaN", b"-inf", b"1E+400")
_NUMBER_PRICES = (b"1e400", b"1E+400", b"-1e400")


def _field(keys) -> re.Pattern:
    names = b"|".join(re.escape(k.encode()) for k in keys)
    return re.compile(rb'"(' + names + rb')":("?)(-?[0-9][0-9A-Za-z.:+-]*)\2')


def _replace_number(match: re.Match, values: tuple, variant: int) -> bytes:
    key, quote, value = match.groups()
    if quote and b"-" in value[1:] and b"T" in value:      # RFC3339 text: the year goes past 2262
        bad = _YEARS[variant % len(_YEARS)] + value[value.index(b"-"):]
    else:
        bad = values[variant % len(values)]
    return b'"' + key + b'":' + quote + bad + quote


def _levels_field(keys) -> re.Pattern:
    names = b"|".join(re.escape(k.encode()) for k in keys)
    return re.compile(rb'"(' + names + rb')":\[\[("?)(-?[0-9][0-9A-Za-z.:+-]*)\2')


def _mutate(raw: bytes, kind: str, variant: int, patterns: tuple) -> bytes | None:
    """``raw`` with every ``kind`` field out of range (``price``: the first price only); None when it has none."""
    time_re, id_re, price_re, levels_re = patterns
    if kind == "time":
        out, n = time_re.subn(lambda m: _replace_number(m, _TIMES, variant), raw)
    elif kind == "id":
        out, n = id_re.subn(lambda m: _replace_number(m, _IDS, variant), raw)
    else:
        first = [m for m in (price_re.search(raw), levels_re.search(raw)) if m is not None]
        if not first:
            return None
        match = min(first, key=lambda m: m.start())
        quote = match.group(2)
        bad = (_TEXT_PRICES if quote else _NUMBER_PRICES)[variant % len(_TEXT_PRICES if quote else _NUMBER_PRICES)]
        out, n = raw[:match.start(3)] + bad + raw[match.end(3):], 1
    return out if n else None


def _monotonic() -> float:
    return time.monotonic()


RULE_NAMES = ("missed_pongs", "idle_timeout", "message_rate", "request_budget")


@dataclass
class Rules:
    """Server-side rules of the real venues (``python run.py simulate --rules ...``; tests switch them on).

    Off by default: our own feeds keep to them anyway, and a loaded test box
    should not see a connection closed because a pong came a little late.

    * ``missed_pongs`` (htx): the server closes a connection that left two
      of its ``{"ping": n}`` unanswered (code 1003 ``ping check expired``).
    * ``idle_timeout`` (bybit 600 s, okx 30 s, kraken 60 s): a connection on
      which neither side sent anything for that long is closed (code 1000);
      ``idle_timeout_s`` overrides the venue's period (tests).
    * ``message_rate`` (binance): more than 5 incoming messages within one
      second closes the connection (code 1008).
    * ``request_budget`` (okx): at most 480 subscribe / unsubscribe / login
      requests per connection per hour; more are refused (60014).
    """

    missed_pongs: bool = False
    idle_timeout: bool = False
    message_rate: bool = False
    request_budget: bool = False
    idle_timeout_s: float | None = None

    @classmethod
    def named(cls, names) -> Rules:
        unknown = set(names) - set(RULE_NAMES)
        if unknown:
            raise ValueError(f"unknown simulator rules: {sorted(unknown)}")
        return cls(**{name: True for name in names})

    def any(self) -> bool:
        return self.missed_pongs or self.idle_timeout or self.message_rate


@dataclass(frozen=True)
class InstrumentRule:
    """One instrument's trading rules as a simulated venue publishes them (its reference data).

    The numbers are decimal **text**, the values the venue's renderer writes (each in its own format: Binance pads
    to 8 decimals, HTX and Kraken send JSON numbers, HTX a precision for the tick): what the venue's
    ``wire.instrument_rules`` reads back is exactly these values (``tests/integration/test_sim_reference_data.py``).
    ``tick`` is also the grid the simulated market quotes this venue's instrument on
    (:meth:`pipeline.sim.market.Market.set_tick`). ``max_qty`` / ``max_notional`` None: the venue states none.
    ``halted``: the venue's own non-trading status (each protocol's ``HALTED`` word). ``upcoming``: announced
    changes ``(param, new value text, effective ms)``, which only OKX publishes (``upcChg``).

    ``assets()`` is ``(base, quote)`` of ``instrument``.
    """

    tick: str
    step: str
    min_qty: str
    min_notional: str
    max_qty: str | None = None
    max_notional: str | None = None
    halted: bool = False
    upcoming: tuple[tuple[str, str, int], ...] = ()
    instrument: str = ""               # canonical BASE/QUOTE (the server fills it in: responses name both assets)
    changed_ms: int = 0                # when it last changed (0: as listed): HTX answers the changes since a ts

    def replace(self, **changes) -> InstrumentRule:
        return dataclasses.replace(self, **changes)

    def assets(self) -> tuple[str, str]:
        base, _, quote = self.instrument.partition("/")
        return base, quote

    def decimal(self, name: str) -> Decimal | None:
        value = getattr(self, name)
        return None if value is None else Decimal(value)


def grid_rule(decimals: int) -> InstrumentRule:
    """The rule of an instrument a venue's table does not list: the tick is the simulator's price grid
    (``10**-decimals``), the rest plausible for a major pair (step 0.0001, no minimum size, 5 in quote)."""
    tick = format(Decimal(1).scaleb(-decimals), "f")
    return InstrumentRule(tick=tick, step="0.0001", min_qty="0.0001", min_notional="5")


@dataclass
class SymbolState:
    """One exchange's view of one symbol on the current market step, shared by every connection.

    Channels that are one order book for all clients (Binance diff depth and
    its REST snapshot, HTX incremental ``mbp`` and its ``req``) number the
    book here, once per change, so a snapshot fetched on another connection
    (or over REST) lines up with the stream. ``trades`` are this step's trades,
    ``tape`` the trade history and 24 h statistics.
    """

    symbol: str
    tape: object                                   # pipeline.sim.market.Tape
    bids: list = field(default_factory=list)
    asks: list = field(default_factory=list)
    ts_ms: int = 0
    trades: list = field(default_factory=list)
    book_id: int = 0                               # counts book changes
    previous_id: int = 0                           # book_id before this step's change
    bid_changes: list = field(default_factory=list)
    ask_changes: list = field(default_factory=list)
    changed: bool = False
    step: int = 0                                  # market steps seen
    extra: dict = field(default_factory=dict)      # a venue's own shared books (HTX incremental mbp per depth)

    def update(self, bids: list, asks: list, ts_ms: int, trade: bool = True) -> None:
        """One market step: the new book (numbered when it changed) and, with ``trade``, the tape's trades.

        ``trade=False`` leaves the tape where it is (no trades this step): the load generator, which renders
        every pass of its loop alike, numbers the books without moving the trade history."""
        self.step += 1
        self.previous_id = self.book_id
        self.bid_changes, self.ask_changes = _changes(self.bids, bids), _changes(self.asks, asks)
        self.changed = bool(self.bid_changes or self.ask_changes)
        if self.changed:
            self.book_id += 1
        self.bids, self.asks, self.ts_ms = list(bids), list(asks), ts_ms
        self.trades = self.tape.step(bids, asks, ts_ms) if trade else []


class SimProtocol:
    """One client connection's view of a simulated exchange.

    Subclasses implement :meth:`on_message` and :meth:`render`; the server
    calls :meth:`on_connect` once, :meth:`on_message` for every client frame,
    :meth:`render` for every subscribed (symbol, channel) on every market
    step, and :meth:`keepalive` every ``KEEPALIVE_INTERVAL_S`` when set.
    """

    NAME = ""
    # the venue's trading rules by canonical instrument, from real responses (each venue's sim.py names its
    # source); instruments not listed get grid_rule. HALTED: the status word the venue uses for a halt.
    REFERENCE_RULES: dict[str, InstrumentRule] = {}
    HALTED = ""
    KEEPALIVE_INTERVAL_S: float | None = None
    DEPTH_LEVELS = 5
    PATHS: tuple[str, ...] = ()                # URL paths the venue serves this protocol on (empty: any)
    IDLE_TIMEOUT_S: float | None = None        # Rules.idle_timeout: the venue's idle period
    MESSAGE_RATE: int | None = None            # Rules.message_rate: incoming messages per second allowed
    # Hostile.out_of_range_numbers: the JSON keys of the venue's exchange times, sequence ids and prices (scalars),
    # and of its [[price, qty], ...] level lists; a venue whose frames use other names declares its own
    TIME_FIELDS: tuple[str, ...] = ("ts", "E", "T", "quoteTime", "cts", "timestamp", "event_time", "time")
    ID_FIELDS: tuple[str, ...] = ("u", "U", "seqId", "prevSeqId", "seqNum", "prevSeqNum", "seq", "lastUpdateId",
                                  "sequence_num")
    PRICE_FIELDS: tuple[str, ...] = ("b", "a", "bid", "ask", "best_bid", "best_ask", "price_level", "price", "px")
    LEVEL_FIELDS: tuple[str, ...] = ("bids", "asks", "b", "a")

    def __init__(self, decimals: dict[str, int] | None = None):
        self.subscriptions: dict[tuple[str, int], None] = {}   # (native symbol, channel), insertion ordered
        self.decimals = decimals or {}                        # native symbol -> price decimals
        self.known_symbols: set[str] | None = None            # None: accept any symbol
        self.sent_books: dict[str, tuple[list, list]] = {}    # last depth book rendered per symbol
        self.quirks = Quirks()                                # the server shares its switches with every connection
        self.reset_next: set[str] = set()                     # symbols whose sequence resets on the next depth render
        self._late: dict[str, list] = {}                      # late_depth: the depth frames held back one step
        self.states: dict[str, SymbolState] = {}              # the server's per-symbol state (render_stream, requests)
        self.trading_rules: dict[str, InstrumentRule] = {}    # the server's rules per native symbol (shared)
        self.path = "/"                                       # the request path (and query) the client connected to
        self._last_push: dict = {}                            # (symbol, channel) -> ts_ms of the last timed push
        self.rules = Rules()                                  # the server shares its rule switches
        self.last_received_s = self.last_sent_s = _monotonic()
        self._arrivals: list[float] = []                      # monotonic times of the last second's client frames

    # -- hooks ------------------------------------------------------------
    @staticmethod
    def now_ms() -> int:
        """The server's clock (ms) for what it stamps with the time it answers (acks, request answers); the load
        generator renders with a fixed one (an instance attribute)."""
        return int(time.time() * 1000)

    def on_connect(self) -> list:
        return []

    def on_message(self, frame) -> list:
        raise NotImplementedError

    def render(self, symbol: str, channel: int, bids: list, asks: list, ts_ms: int) -> list:
        raise NotImplementedError

    def render_stream(self, symbol: str, channel, state: SymbolState) -> list:
        """Frames of a channel other than the BBO / depth pair our own feeds take (tickers, trades, ...)."""
        return []

    def keepalive(self, now_ms: int) -> list:
        return []

    @classmethod
    def serves_path(cls, path: str) -> bool:
        """Whether a WebSocket handshake on ``path`` (query excluded) reaches this protocol; others get 404."""
        return not cls.PATHS or (path.rstrip("/") or "/") in cls.PATHS

    @classmethod
    def render_rest(cls, path: str, query: dict, states: dict, decimals: dict,
                    rules: dict | None = None) -> tuple[int, object]:
        """(HTTP status, JSON body) of a REST request on the WebSocket port: what clients need to build books, and
        the venue's reference-data endpoint from ``rules`` (native symbol -> :class:`InstrumentRule`)."""
        return 404, {"error": f"not served by the simulator: {path}"}

    @classmethod
    def render_account(cls, request, account) -> tuple[int, object]:
        """(HTTP status, JSON body) of the venue's signed fee endpoint (:mod:`pipeline.sim.account`): the
        signature verified the venue's way, its refusal or the account's fees."""
        return 404, {"error": f"not served by the simulator: {request.path}"}

    def note_received(self, now_s: float) -> None:
        self.last_received_s = now_s
        if self.MESSAGE_RATE and self.rules.message_rate:
            self._arrivals = [t for t in self._arrivals if now_s - t < 1.0] + [now_s]

    def close_reason(self, now_s: float) -> tuple[int, str] | None:
        """(code, reason) when the venue's rules say this connection must be closed now, else None."""
        rules = self.rules
        if rules.message_rate and self.MESSAGE_RATE and len(self._arrivals) > self.MESSAGE_RATE:
            return 1008, "Too many requests"
        timeout = rules.idle_timeout_s or self.IDLE_TIMEOUT_S
        if rules.idle_timeout and timeout and now_s - max(self.last_received_s, self.last_sent_s) > timeout:
            return 1000, "idle timeout"
        return None

    def render_shutdown(self, now_ms: int) -> list:
        """Frames announcing a planned disconnect (Binance ``serverShutdown``, OKX 64008), or []."""
        return []

    def render_status(self, system: str) -> list:
        """Frames announcing the venue's trading status (Kraken ``status``), or []."""
        return []

    def render_pair(self, symbol: str, status: str, price_precision: int | None = None) -> list:
        """Frames announcing one pair's status / precision (Kraken ``instrument`` update), or []."""
        return []

    def render_rule(self, symbol: str) -> list:
        """Frames a subscribed client gets when ``symbol``'s trading rules change (``self.trading_rules`` already
        holds the new ones): OKX's ``instruments`` push, Kraken's ``instrument`` update; [] where the venue
        publishes its rules over REST only (the next request answers the new rule)."""
        return []

    def out_of_range(self, frame, kind: str, variant: int = 0):
        """``frame`` (as rendered) with a number no row can hold, written as the venue writes that field; None
        when the frame has no field of ``kind`` (one of :data:`OUT_OF_RANGE_KINDS`).

        ``time``: every exchange time of the frame past 2262 (``99999999999999999999`` / ``9300000000000`` ms, as
        a number or quoted as the venue quotes it; RFC3339 text gets the year 2300 or 9999); ``id``: every
        sequence id past int64 (2^64, 2^63, 10^23); ``price``: the first price ``1e400`` (a JSON number, where the
        venue sends numbers) or ``inf`` / ``NaN`` / ``1e400`` text (where it sends text). ``variant`` picks the
        value. Gzip frames (HTX) are inflated and compressed again. The default works from the ``*_FIELDS``
        names, so a venue only declares the names its frames use."""
        raw = frame.encode() if isinstance(frame, str) else bytes(frame)
        packed = raw[:2] == GZIP_MAGIC
        if packed:
            raw = gzip.decompress(raw)
        cls = type(self)
        patterns = cls.__dict__.get("_number_patterns")
        if patterns is None:
            patterns = (_field(cls.TIME_FIELDS), _field(cls.ID_FIELDS), _field(cls.PRICE_FIELDS),
                        _levels_field(cls.LEVEL_FIELDS))
            cls._number_patterns = patterns
        out = _mutate(raw, kind, variant, patterns)
        if out is None:
            return None
        if packed:
            out = gzip.compress(out, compresslevel=5, mtime=0)
        return out.decode() if isinstance(frame, str) else out

    def render_unknown(self, symbol: str, bids: list, asks: list, ts_ms: int) -> list:
        """Hostile.endless_symbols: frames naming ``symbol``, which the client never subscribed and the venue
        never listed: its book messages (both channels, from this connection's own renderer, so connection-wide
        sequence numbers stay continuous) and, where the venue has them, an instrument/status message
        (:meth:`render_pair`). Whatever the renderer kept about the symbol is forgotten afterwards
        (:meth:`forget_symbol`): a simulator that sends endless names must not grow either."""
        frames = []
        for channel in (BBO, DEPTH):
            frames.extend(self.render(symbol, channel, bids, asks, ts_ms))
        held = self._late.pop(symbol, None)                  # late_depth: send the depth now rather than keep it
        if held is not None:
            frames.extend(held)
        frames.extend(self.render_pair(symbol, "online"))
        self.forget_symbol(symbol)
        return frames

    def forget_symbol(self, symbol: str) -> None:
        """Drop every per-symbol entry this connection's renderer keeps for ``symbol`` (keys ``symbol`` or tuples
        naming it, in any dict or set attribute); the server's shared state and the subscriptions are not
        touched."""
        for name, value in vars(self).items():
            if name in ("states", "subscriptions", "decimals", "known_symbols", "trading_rules") or not value:
                continue
            if isinstance(value, dict):
                for key in [k for k in value if k == symbol or (isinstance(k, tuple) and symbol in k)]:
                    del value[key]
            elif isinstance(value, set):
                value.discard(symbol)

    def late(self, symbol: str, frames: list) -> list:
        """``late_depth``: send the previous step's depth frames now and keep these for the next step."""
        if not self.quirks.late_depth:
            return frames
        held = self._late.pop(symbol, [])
        self._late[symbol] = frames
        return held

    # -- helpers ----------------------------------------------------------
    def subscribe(self, symbol: str, channel) -> None:
        self.subscriptions[(symbol, channel)] = None
        self._forget(symbol, channel)                # a (re)subscription starts with a snapshot

    def unsubscribe(self, symbol: str, channel) -> None:
        self.subscriptions.pop((symbol, channel), None)
        self._forget(symbol, channel)

    def _forget(self, symbol: str, channel) -> None:
        if channel == DEPTH:
            self.sent_books.pop(symbol, None)
            self._late.pop(symbol, None)
        elif channel != BBO:
            self.sent_books.pop((symbol, channel), None)
            self._last_push.pop((symbol, channel), None)

    def shared_id(self, symbol: str, push: str, name: str, start: int, jump) -> int | None:
        """The exchange's id of this market step's ``push`` of ``symbol`` (a channel's frame, a trade): drawn once,
        then the same on every connection that renders that push, as a venue's own ids are (one matching
        engine numbers its events; each connection only relays them). The ids of ``name`` (the venue's id field)
        start at ``start`` and move by ``jump()`` from one push to the next. Kept in the symbol's shared state
        (``extra[name]``: ``next``, ``ids``); None without one (a protocol rendering alone, as the load
        generator's), where the caller numbers its own."""
        state = self.states.get(symbol)
        if state is None:
            return None
        shared = state.extra.get(name)
        if shared is None:
            shared = state.extra[name] = {"next": start, "ids": {}}
        key = (state.step, push)
        seq = shared["ids"].get(key)
        if seq is None:
            shared["next"] += jump()
            seq = shared["ids"][key] = shared["next"]
            if len(shared["ids"]) > 256:                                # only the last few steps' pushes matter
                shared["ids"] = {k: v for k, v in shared["ids"].items() if k[0] >= state.step - 4}
        return seq

    def due(self, symbol: str, channel, ts_ms: int, every_ms: int) -> bool:
        """True (and restarts the period) when a timed channel should push now; the first push is at once."""
        key = (symbol, channel)
        last = self._last_push.get(key)
        if last is not None and ts_ms - last < every_ms:
            return False
        self._last_push[key] = ts_ms
        return True

    def accepts(self, symbol: str) -> bool:
        return self.known_symbols is None or symbol in self.known_symbols

    def fmt_px(self, symbol: str, price: float) -> str:
        return f"{price:.{self.decimals.get(symbol, 2)}f}"

    @staticmethod
    def fmt_qty(qty: float) -> str:
        return f"{qty:.6f}"

    def depth_delta(self, symbol: str, bids: list, asks: list, key=None, levels: int | None = None):
        """(is_snapshot, bid changes, ask changes) against the last book sent on this connection.

        Changes are (price, qty) with qty 0 for a removed level. The first
        call per symbol (or after a resubscription) is a snapshot. ``key``
        keeps a second book per symbol (another depth of the same venue).
        """
        bids = bids[: levels or self.DEPTH_LEVELS]
        asks = asks[: levels or self.DEPTH_LEVELS]
        key = symbol if key is None else key
        previous = self.sent_books.get(key)
        self.sent_books[key] = (bids, asks)
        if previous is None:
            return True, bids, asks
        return False, _changes(previous[0], bids), _changes(previous[1], asks)


def _changes(old: list, new: list) -> list:
    new_map = dict(new)
    out = [(price, 0.0) for price, _ in old if price not in new_map]
    old_map = dict(old)
    out.extend((price, qty) for price, qty in new if old_map.get(price) != qty)
    return out


__all__ = ["SimProtocol", "SymbolState", "InstrumentRule", "grid_rule", "Rules", "RULE_NAMES", "Quirks",
           "QUIRK_NAMES", "Hostile", "HOSTILE_NAMES", "OUT_OF_RANGE_KINDS", "BBO", "DEPTH"]
