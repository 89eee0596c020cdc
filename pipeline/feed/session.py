"""The feed's decisions, without I/O: one exchange's frames in, board rows and replies out.

A :class:`FeedSession` is the websockets "protocol object" move applied to a
feed: it owns every decision a feed makes (parse with the venue module, apply
to the book, decide the row's trust state, resync after a gap or a checksum
failure, hold a refused symbol, follow a connection's own sequence numbers,
observe the exchange's clock offset, mark silent rows stale) and nothing
else. It has no socket, no clock and no shared memory:

* ``receive(raw, recv_ns, conn) -> replies``: one frame as received, the time
  it was received, and the :class:`Connection` it came on. The replies
  (pongs, resubscriptions) are frames for the caller to send on ``conn``;
  ``conn.reconnect_reason`` is set when the connection must be dropped.
* ``tick(now_ns)``: marks rows with no update for the staleness limit STALE.
* ``fall_behind(conn, now_ns, waited_ns)`` / ``caught_up(conn, now_ns)``: the
  caller saw ``conn``'s frames reach it more than the staleness limit after they
  reached the socket (a backlog); its rows are STALE until it has caught up.
* ``connection_opened(symbols, now_ns)`` / ``connection_lost(conn, now_ns, reason)``.
* ``apply_rules(rules, now_ns, full=True)``: the venue's trading rules (a whole reference-data response,
  or with ``full=False`` a change notice naming some instruments). From the first call on, a row whose
  instrument has no rules is never LIVE (``NO_RULES``) and one whose rules say it does not trade is
  ``HALTED``; each changed field is journaled (``rules_change``: symbol, field, old, new) and counted
  (``rules_changes``), and ``rules_sink(row, rules)`` (the board's rules region) gets the new rules; each
  change the venue announces (``upcoming``, OKX ``upcChg``) is journaled once (``rules_announced``: symbol,
  field, new, effective_ms). A venue whose rules arrive on the market-data connection (Kraken's
  ``instrument`` channel; OKX's ``instruments``, which ``subscribe_frames`` subscribes: the record's
  ``reference_data.channel_subscribe``) has them applied here as they arrive.

Rows are written through a :class:`RowSink`: the board (with the doorbell and
the hop histograms) in the feed process, :class:`MemorySink` in ``decode``,
the tests and anywhere a session runs without a board. The same code runs
live, in ``decode`` and in ``replay``, so what a recording replays is what
the live feed decided.

Incidents (connect, disconnect, subscribe, reject, gap, checksum failure,
resync, stale, crossed) go to ``journal(kind, now_ns, fields)`` when one is
set: the feed process logs them and writes them into the recording.
``trace``, when a list, receives one ``(kind, symbol, detail)`` per update
and control event: ``decode`` uses it to say what each line did.
"""
from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import Protocol

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError, RowValueError
from pipeline.model import (
    AlignedSnapshot,
    BookUpdate,
    ChannelNotPermitted,
    InstrumentRules,
    InstrumentSpec,
    Liveness,
    LoginResult,
    Notice,
    Ping,
    RowStatus,
    SchemaDrift,
    SequenceMark,
    SkipReason,
    SubscribeError,
    TradingStatus,
)

SKIP_BY_REASON = {"invalid_json": SkipReason.INVALID_JSON, "unknown_message": SkipReason.UNKNOWN_MESSAGE,
                  "bad_number": SkipReason.BAD_NUMBER, "oversize": SkipReason.OVERSIZE}
FAILED_OUTCOME_REASON = {Outcome.GAP: SkipReason.SEQUENCE_GAP, Outcome.CHECKSUM: SkipReason.CHECKSUM_MISMATCH,
                         Outcome.BAD_NUMBER: SkipReason.BAD_NUMBER}
OUTCOME_KIND = {Outcome.CHANGED: "changed", Outcome.UNCHANGED: "unchanged", Outcome.IGNORED: "ignored",
                Outcome.GAP: "gap", Outcome.CHECKSUM: "checksum", Outcome.BAD_NUMBER: "bad_number",
                Outcome.RESUBSCRIBE: "resubscribe", Outcome.STATUS: "status"}
READY = (int(RowStatus.LIVE), int(RowStatus.CROSSED), int(RowStatus.HALTED))   # a book the exchange made whole
CHANGED, UNCHANGED, IGNORED = Outcome.CHANGED, Outcome.UNCHANGED, Outcome.IGNORED
CROSSED = int(RowStatus.CROSSED)
LIVE = int(RowStatus.LIVE)
STALE = int(RowStatus.STALE)

# Gap- and checksum-driven resubscribes per instrument: at most RESYNC_BURST in RESYNC_WINDOW_NS, then one
# each time the oldest leaves the window. A parser bug that sees a gap in every message must never become a
# subscribe storm (the exchanges cut such clients off).
RESYNC_BURST = 3
RESYNC_WINDOW_NS = 60_000_000_000
# fraction of a venue's per-connection request budget after which a resubscribe moves the instruments to a
# new connection (make-before-break) instead of spending the rest
BUDGET_SHARE = 0.9
HOUR_NS = 3_600_000_000_000
RULE_FIELDS = ("tick", "step", "min_qty", "max_qty", "min_notional", "max_notional", "trading", "status")


SERVER_TEXT_CHARS = 300            # what a log line or a recording keeps of an exchange's error or notice text
# "apiKey":"...", passphrase='...', sign=...: a credential field and its quoted value, in JSON or key=value text
_CREDENTIAL_FIELD = re.compile(
    r"""(["']?(?:apiKey|api_key|passphrase|sign|signature|secret|password|token)["']?\s*[:=]\s*)"""
    r"""(["'])[^"']*(["'])""", re.IGNORECASE)


def server_text(text) -> str:
    """An exchange's error or notice text as we keep it: credentials it echoes back (OKX 60012 quotes the whole
    login request) replaced by ``<redacted>``, and at most :data:`SERVER_TEXT_CHARS` characters."""
    text = _CREDENTIAL_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>{m.group(3)}", str(text))
    if len(text) > SERVER_TEXT_CHARS:
        text = f"{text[:SERVER_TEXT_CHARS]}... ({len(text) - SERVER_TEXT_CHARS} more characters)"
    return text


class RowSink(Protocol):
    """Where a session's rows go. One writer per row, as on the board."""

    def write(self, row: int, status: int, bids, asks, exch_ts_ns: int, recv_ns: int, gaps: int,
              checksum_failures: int, version: int | None = None) -> None:
        """``version``: the exchange's own id of the newest update in the book written
        (:attr:`pipeline.book.InstrumentBook.version`; None where the venue's frames carry none)."""

    def set_status(self, row: int, status: int, confirmed_ns: int | None = None) -> None: ...


class MemoryRow:
    """The content of one board row, kept in memory."""

    __slots__ = ("status", "bids", "asks", "exch_ts_ns", "recv_ns", "gaps", "checksum_failures", "writes",
                 "confirmed_ns", "xseq")

    def __init__(self) -> None:
        self.status = int(RowStatus.EMPTY)
        self.bids: list = []
        self.asks: list = []
        self.exch_ts_ns = 0
        self.recv_ns = 0
        self.gaps = 0
        self.checksum_failures = 0
        self.writes = 0
        self.confirmed_ns = 0
        self.xseq = 0


class MemorySink:
    """Rows in a dict, the same fields the board row holds (depth-limited like the board)."""

    def __init__(self, depth: int):
        self.depth = depth
        self.rows: dict[int, MemoryRow] = {}

    def row(self, row: int) -> MemoryRow:
        current = self.rows.get(row)
        if current is None:
            current = self.rows[row] = MemoryRow()
        return current

    def write(self, row, status, bids, asks, exch_ts_ns, recv_ns, gaps, checksum_failures, version=None) -> None:
        r = self.row(row)
        r.status = status
        r.bids = list(bids[:self.depth])
        r.asks = list(asks[:self.depth])
        r.exch_ts_ns = exch_ts_ns
        r.recv_ns = recv_ns
        r.gaps = gaps
        r.checksum_failures = checksum_failures
        r.confirmed_ns = recv_ns
        r.xseq = version or 0
        r.writes += 1

    def set_status(self, row, status, confirmed_ns=None) -> None:
        r = self.row(row)
        r.status = status
        if confirmed_ns is not None:
            r.confirmed_ns = confirmed_ns
        r.writes += 1


class MemoryStats:
    """The counters a process slot keeps (the board's :class:`~pipeline.board.ProcStats`), in a list.

    The same interface with no board: each name gets its word on first use, so this needs no layout.
    """

    def __init__(self) -> None:
        self.words: list[int] = []
        self._word: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        self.words[self.word(name)] += n

    def set(self, name: str, value: int) -> None:
        self.words[self.word(name)] = value

    def get(self, name: str) -> int:
        return self.words[self.word(name)]

    def skip(self, reason: SkipReason) -> None:
        self.words[self.word(f"skipped.{reason.name}")] += 1

    def skipped(self, reason: SkipReason) -> int:
        return self.words[self.word(f"skipped.{reason.name}")]

    def word(self, name: str) -> int:
        index = self._word.get(name)
        if index is None:
            index = self._word[name] = len(self.words)
            self.words.append(0)       # in place: a caller holding ``words`` sees the new word
        return index

    def counts(self) -> dict[str, int]:
        """Every counter that is not 0, by name (``skipped.<REASON>`` for the skips)."""
        return {name: self.words[index] for name, index in sorted(self._word.items()) if self.words[index]}


class ClockOffset:
    """Low envelope of (local receive time - exchange time) over a sliding window.

    The smallest delay seen is the exchange's clock offset plus the minimum
    one-way latency; over a window of ``window_s`` it tracks clock drift
    while ignoring queueing spikes. Two half-windows keep it O(1) per sample.
    """

    def __init__(self, window_s: float = 30.0):
        self.half_ns = int(window_s * 1e9 / 2)
        self.current: int | None = None
        self.previous: int | None = None
        self.started_ns = 0

    def observe(self, delay_ns: int, now_ns: int) -> None:
        if now_ns - self.started_ns > self.half_ns:
            self.previous, self.current, self.started_ns = self.current, None, now_ns
        if self.current is None or delay_ns < self.current:
            self.current = delay_ns

    def offset_ns(self, now_ns: int) -> int | None:
        values = [v for v in (self.current, self.previous) if v is not None]
        return min(values) if values else None


class Connection:
    """One connection's bookkeeping.

    ``symbols`` it carries; ``last_seq`` its own sequence (Coinbase
    ``sequence_num``); ``reconnect_reason`` set when it must be dropped now;
    ``replace_requested`` set when it should be replaced make-before-break
    (an announced disconnect, the connection's age, its request budget);
    ``books`` its own books while it is a standby for ``replaces`` (None once
    it carries the rows); ``retired`` once a standby took its rows over (its
    frames are no longer applied and its loss marks nothing); ``behind`` while its
    frames reach the session later than the staleness limit (its rows STALE).
    """

    __slots__ = ("id", "symbols", "last_seq", "reconnect_reason", "opened_ns", "replace_requested", "books",
                 "replaces", "retired", "requests", "deferred", "logged_in", "behind")

    def __init__(self, conn_id: int, symbols: list[str], opened_ns: int):
        self.id = conn_id
        self.symbols = symbols
        self.last_seq: int | None = None
        self.reconnect_reason = ""
        self.opened_ns = opened_ns
        self.replace_requested = ""
        self.books: dict[str, InstrumentBook] | None = None
        self.replaces: Connection | None = None
        self.retired = False
        self.requests: deque = deque()          # send times of (un)subscribe/login requests, last hour
        self.deferred: dict[str, int] = {}      # symbol -> when its held-back resubscribe may go
        self.logged_in: bool | None = None      # the answer to a login request, None before one
        self.behind = False                     # a backlog: its frames arrive later than the staleness limit


class FeedSession:
    """Every decision of one exchange's feed. See the module docstring for the contract.

    ``rows`` maps native symbols to board rows. With ``add_unknown`` (``decode``),
    a symbol seen for the first time gets the next row instead of being
    skipped as unknown.
    """

    def __init__(self, venue, rows: dict[str, int], depth: int, staleness_ns: int, sink: RowSink,
                 stats=None, journal: Callable[[str, int, dict], None] | None = None,
                 add_unknown: bool = False):
        self.venue = venue
        self.parse = venue.parse
        self.top = venue.top
        self.name = venue.name
        self.depth = depth
        self.staleness_ns = staleness_ns
        self.sink = sink
        self.stats = stats if stats is not None else MemoryStats()
        self.journal = journal
        self.trace: list | None = None
        self.add_unknown = add_unknown
        # decode only: reference data inferred from a symbol's first message when a capture holds none
        self.infer_reference: Callable | None = None
        # the last word of the exchange on each pair and on itself, for books created later (standby, decode)
        self.reference: dict[str, InstrumentSpec] = {}
        self.pair_status: dict[str, TradingStatus] = {}
        self.venue_status: TradingStatus | None = None
        self.books: dict[str, InstrumentBook] = {}
        self.row_of: dict[str, int] = {}
        self.status: dict[int, int] = {}
        # trading rules (apply_rules): None until the first call, then symbol -> rules (None: the venue has none)
        self.rules: dict[str, InstrumentRules | None] | None = None
        self.rules_sink: Callable[[int, InstrumentRules | None], None] | None = None
        self.last_update_ns: dict[int, int] = {}
        for symbol, row in rows.items():
            self._add_row(symbol, row)
        self.rejected: set[str] = set()
        self.clock = ClockOffset()
        self.connections = 0
        self.path = 0                              # which of the venue's redundant paths (pipeline.feed.arbiter)
        self.depth_channel: str | None = None     # a non-default depth channel (OKX tbt after login)
        self.resync_times: dict[str, deque] = {}
        self.request_budget = venue.limit("requests_per_connection_per_hour")
        self.drifted: set[str] = set()             # declarations an exchange has added fields to (SchemaDrift)
        self.server_texts = 0                      # frames whose server text was journaled (errors, notices, logins)
        self.behind_conns: set[Connection] = set() # connections behind now (fall_behind)
        self.behind_rows: set[int] = set()         # their rows: never LIVE until the connection has caught up
        ref = getattr(venue, "reference_data", None)
        # rules arriving on the market-data connection (ReferenceData): the channel that is the venue's source
        # (Kraken: its snapshot is a whole response) or the pushes of changes `channel_subscribe` subscribes (OKX)
        self._rules_subscribe: str | None = ref.channel_subscribe if ref is not None else None
        self._rules_whole_on_wire = ref is not None and ref.transport == "websocket"
        on_wire = ref is not None and (self._rules_whole_on_wire or self._rules_subscribe is not None)
        self._rules_on_wire: Callable | None = ref.parse if ref is not None and on_wire else None
        self.announced: dict[str, frozenset] = {}   # symbol -> the rule changes its venue has announced (journaled)
        self._words = self.stats.words
        self._messages_word = self.stats.word("messages")

    def _new_book(self, symbol: str) -> InstrumentBook:
        """A fresh book that already knows what the exchange said about its pair and the venue."""
        venue = self.venue
        book = InstrumentBook(symbol, self.depth, venue.book_levels, venue.checksum, venue.checksum_levels or 10,
                              aligned=venue.aligned_snapshots)
        for said in (self.reference.get(symbol), self.venue_status, self.pair_status.get(symbol)):
            if said is not None:
                book.apply(said)
        if self.rules is not None:
            book.set_rules(self.rules.get(symbol))
        return book

    def _add_row(self, symbol: str, row: int) -> InstrumentBook:
        book = self.books[symbol] = self._new_book(symbol)
        self.row_of[symbol] = row
        self.status[row] = int(RowStatus.SYNCING)
        self.last_update_ns[row] = 0
        return book

    def _note(self, kind: str, now_ns: int, **fields) -> None:
        if "message" in fields:
            self.server_texts += 1                  # the frame carried the server's own words: it may echo a login
        if self.journal is not None:
            if "message" in fields:
                fields["message"] = server_text(fields["message"])
            self.journal(kind, now_ns, fields)

    # ---------------------------------------------------------------- trading rules
    def apply_rules(self, rules: list[InstrumentRules], now_ns: int, full: bool = True,
                    source: str = "reference_data") -> list[tuple[str, str, object, object]]:
        """Apply the venue's trading rules; returns the changes ``(symbol, field, old, new)`` to followed rows.

        ``full``: ``rules`` is a whole response, and a followed instrument missing from it has no rules
        (``NO_RULES``); otherwise only the instruments it names change. The first call sets every followed
        row's rules and counts no change; later calls count each changed field once in ``rules_changes``
        (an instrument gaining or losing its rules counts as one change of ``rules``).
        """
        by_symbol = {r.symbol: r for r in rules}
        first = self.rules is None
        known: dict[str, InstrumentRules | None] = {} if self.rules is None else self.rules
        self.rules = known
        changes: list[tuple[str, str, object, object]] = []
        for symbol, book in self.books.items():
            if symbol not in by_symbol and not (full or first):
                continue
            new = by_symbol.get(symbol)
            old = known.get(symbol)
            known[symbol] = new
            if not first and new != old:
                if old is None or new is None:
                    changes.append((symbol, "rules", "none" if old is None else "present",
                                    "none" if new is None else "present"))
                else:
                    changes.extend((symbol, name, getattr(old, name), getattr(new, name)) for name in RULE_FIELDS
                                   if getattr(old, name) != getattr(new, name))
            if first or new != old:
                row = self.row_of[symbol]
                if self.rules_sink is not None:
                    self.rules_sink(row, new)
                outcome = book.set_rules(new)
                if outcome is Outcome.STATUS and symbol not in self.rejected:
                    self.publish(book, now_ns)
                upcoming = frozenset(new.upcoming if new is not None else ())
                fresh = upcoming - self.announced.get(symbol, frozenset())
                for change in sorted(fresh, key=lambda c: (c.effective_ms, c.field)):
                    self._note("rules_announced", now_ns, symbol=symbol, field=change.field,
                               new=str(change.new_value), effective_ms=change.effective_ms, source=source)
                self.announced[symbol] = upcoming
        for changed, name, was, now in changes:
            self.stats.add("rules_changes")
            self._note("rules_change", now_ns, symbol=changed, field=name, old=str(was), new=str(now), source=source)
        if first:
            missing = sorted(s for s in self.books if known.get(s) is None)
            self._note("rules", now_ns, source=source, instruments=len(by_symbol),
                       **({"missing": missing} if missing else {}))
        return changes

    def _rules_from_wire(self, raw, now_ns: int) -> None:
        """A reference-data frame on the market-data connection (Kraken ``instrument``, OKX ``instruments``):
        its rules applied (a Kraken snapshot as a whole response; an update, and every OKX push, for the
        instruments it names). A frame the rules' declaration refuses changes nothing (its book-side meaning
        was applied already)."""
        parse = self._rules_on_wire
        if parse is None:
            return
        try:
            rules = parse(raw)
        except ParseError as exc:
            self._note("rules_refused", now_ns, reason=exc.reason, detail=exc.detail[:160])
            return
        full = self._rules_whole_on_wire and b'"snapshot"' in (raw if isinstance(raw, bytes) else raw.encode())
        self.apply_rules(rules, now_ns, full=full, source="instrument_channel")

    def rows_without_rules(self) -> list[str]:
        """The followed symbols that have no trading rules now ([] while rules are not tracked)."""
        if self.rules is None:
            return []
        return [s for s in self.books if self.rules.get(s) is None]

    # ---------------------------------------------------------------- connections
    def connection_groups(self) -> list[list[str]]:
        symbols = list(self.books)
        size = self.venue.max_symbols_per_connection
        return [symbols[i:i + size] for i in range(0, len(symbols), size)]

    def connection_opened(self, symbols: list[str], now_ns: int, conn_id: int | None = None,
                          standby_for: Connection | None = None) -> Connection:
        """A connection carrying ``symbols`` is up; its rows stay SYNCING until their books are.

        With ``standby_for``, it is the replacement of that connection: its frames
        build books of its own, and once every one of them is whole the rows move
        over to it at once (:meth:`handover`) and the old connection is retired, so
        the rows never go through DISCONNECTED for a planned reconnect.
        """
        self.connections += 1
        conn = Connection(self.connections if conn_id is None else conn_id, list(symbols), now_ns)
        if standby_for is not None:
            conn.replaces = standby_for
            conn.books = {s: self._new_book(s) for s in symbols if s in self.books and s not in self.rejected}
        self._note("connect", now_ns, conn=conn.id, symbols=list(symbols),
                   **({"standby_for": standby_for.id} if standby_for is not None else {}))
        return conn

    def subscribe_frames(self, conn: Connection) -> list:
        """The frames to send right after ``conn`` opened (paced by the caller)."""
        symbols = [s for s in conn.symbols if s not in self.rejected]
        if self.depth_channel is not None:
            frames = self.venue.build_subscribe(symbols, self.depth, channel=self.depth_channel)
        else:
            frames = self.venue.build_subscribe(symbols, self.depth)
        if self._rules_subscribe is not None:
            frames = [*frames, self._rules_subscribe]      # the venue's trading-rule pushes (_rules_from_wire)
        self._spend(conn, len(frames), conn.opened_ns)
        self._note("subscribe", conn.opened_ns, conn=conn.id, frames=len(frames))
        return frames

    def connection_lost(self, conn: Connection, now_ns: int, reason: str = "") -> None:
        """The rows of ``conn`` cannot be trusted any more: DISCONNECTED until a new snapshot.

        A retired connection (its rows already moved to its replacement) and a
        standby that never took over mark nothing.
        """
        self._note("disconnect", now_ns, conn=conn.id, reason=reason or conn.reconnect_reason,
                   **({"retired": True} if conn.retired else {}), **({"standby": True} if conn.books is not None
                                                                    else {}))
        if conn.behind:                          # its backlog is gone with it
            conn.behind = False
            self.behind_conns.discard(conn)
            self.stats.set("behind", len(self.behind_conns))
            if conn.books is None and not conn.retired:
                self.behind_rows.difference_update(self._rows_of(conn))
        if conn.retired or conn.books is not None:
            return
        self.mark(conn.symbols, RowStatus.DISCONNECTED)

    def handover(self, conn: Connection, now_ns: int, forced: bool = False) -> None:
        """The standby ``conn`` takes the rows over from the connection it replaces."""
        old = conn.replaces
        books, conn.books, conn.replaces = conn.books or {}, None, None
        if self.behind_rows or conn.behind:      # the rows now trust (or not) their new connection's timeliness
            rows = {self.row_of[s] for s in books if s in self.row_of}
            if conn.behind:
                self.behind_rows |= rows
            else:
                self.behind_rows -= rows
        for symbol, book in books.items():
            if symbol in self.rejected:
                continue
            self.books[symbol] = book
            self.publish(book, now_ns)
        if old is not None:
            old.retired = True
            old.reconnect_reason = old.reconnect_reason or f"replaced by connection {conn.id}"
        self._note("handover", now_ns, conn=conn.id, replaced=old.id if old is not None else None,
                   **({"forced": True} if forced else {}))

    def _standby_ready(self, conn: Connection) -> bool:
        books = conn.books or {}
        return all(int(book.state) in READY for symbol, book in books.items() if symbol not in self.rejected)

    def _spend(self, conn: Connection, n: int, now_ns: int) -> bool:
        """Counts ``n`` requests on ``conn``; False (and a planned replacement) when its budget is nearly used."""
        if not self.request_budget or n == 0:
            return True
        requests = conn.requests
        while requests and now_ns - requests[0] > HOUR_NS:
            requests.popleft()
        if len(requests) + n > self.request_budget * BUDGET_SHARE:
            if not conn.replace_requested:
                conn.replace_requested = (f"{len(requests)} of {self.request_budget} requests per hour used on "
                                          f"this connection")
                self._note("budget", now_ns, conn=conn.id, used=len(requests), budget=self.request_budget)
            return False
        requests.extend([now_ns] * n)
        return True

    def connection_failed(self, symbols: list[str], now_ns: int, reason: str) -> None:
        """A connection attempt for ``symbols`` failed before it opened."""
        self._note("connect_failed", now_ns, symbols=list(symbols), reason=reason,
                   **({"path": self.path} if self.path else {}))
        self.mark(symbols, RowStatus.DISCONNECTED)

    def mark(self, symbols: list[str], status: RowStatus) -> None:
        for symbol in symbols:
            if symbol in self.rejected or symbol not in self.books:
                continue
            row = self.row_of[symbol]
            self.books[symbol].invalidate(status)
            self.sink.set_status(row, int(status))
            self.status[row] = int(status)

    # ---------------------------------------------------------------- hot path
    def receive(self, raw, recv_ns: int, conn: Connection) -> list:
        """Parse one frame and apply it; returns frames to send back (pongs, resubscriptions)."""
        self._words[self._messages_word] += 1
        top = self.top
        if top is not None and conn.books is None and not conn.retired and self.trace is None:
            # the short path: one top-of-book snapshot, applied from its numbers (no event objects)
            quote = top(raw)
            if quote is not None:
                book = self.books.get(quote[0])
                if book is not None:
                    outcome = book.apply_top(quote)
                    if outcome is CHANGED:
                        self.publish(book, recv_ns)
                    elif outcome is UNCHANGED:
                        self.confirm(book, recv_ns)
                    elif outcome is not IGNORED:
                        return self._after(book, outcome, recv_ns, conn, False)
                    return []
        try:
            events = self.parse(raw, recv_ns)
        except ParseError as exc:
            self.stats.add("parse_errors")
            self.stats.skip(SKIP_BY_REASON.get(exc.reason, SkipReason.OTHER))
            if self.trace is not None:
                self.trace.append(("unusable", "", str(exc)))
            self._note("parse_error", recv_ns, reason=exc.reason)
            return []
        out = []
        trace = self.trace
        standby = conn.books is not None
        rules_done = False
        books: dict[str, InstrumentBook] = conn.books if conn.books is not None else self.books
        for event in events:
            if event.__class__ is BookUpdate or event.__class__ is AlignedSnapshot:
                if conn.retired:
                    continue                        # its rows moved to the replacement connection
                book = books.get(event.symbol)
                if book is None:
                    if not self.add_unknown or standby:
                        self.stats.skip(SkipReason.UNKNOWN_MESSAGE)
                        if trace is not None:
                            trace.append(("ignored", event.symbol, "not subscribed"))
                        continue
                    book = self._add_row(event.symbol, len(self.row_of))
                    conn.symbols.append(event.symbol)       # its row now lives and dies with this connection
                    if self.infer_reference is not None and event.symbol not in self.reference:
                        spec = self.infer_reference(event)
                        if spec is not None:
                            self.reference[event.symbol] = spec
                            book.apply(spec)
                outcome = book.apply(event)
                if trace is not None:
                    trace.append((OUTCOME_KIND[outcome], event.symbol, book.pop_note()))
                if outcome is CHANGED:
                    if not standby:
                        self.publish(book, recv_ns)
                elif outcome is UNCHANGED:
                    if not standby:
                        self.confirm(book, recv_ns)
                elif outcome is not IGNORED:
                    out.extend(self._after(book, outcome, recv_ns, conn, standby))
            elif isinstance(event, Ping):
                out.append(self.venue.build_pong(event.token))
                if trace is not None:
                    trace.append(("control", "", "ping"))
            elif isinstance(event, SequenceMark):
                if conn.last_seq is not None and event.seq != conn.last_seq + 1:
                    # the connection lost messages: nothing it carries can be trusted from here on,
                    # including the rest of this frame
                    self.stats.add("gaps")
                    self.stats.skip(SkipReason.SEQUENCE_GAP)
                    conn.reconnect_reason = f"connection sequence jumped {conn.last_seq} -> {event.seq}"
                    conn.last_seq = event.seq
                    self._note("gap", recv_ns, conn=conn.id, reason=conn.reconnect_reason)
                    if not standby and not conn.retired:
                        self.mark(conn.symbols, RowStatus.RESYNCING)
                    if trace is not None:
                        trace.append(("gap", "", conn.reconnect_reason))
                    break
                conn.last_seq = event.seq
            elif isinstance(event, Liveness):
                if not standby and not conn.retired:
                    for symbol in (conn.symbols if event.symbols is None else event.symbols):
                        book = self.books.get(symbol)
                        if book is not None:
                            self.confirm(book, recv_ns)
                if trace is not None:
                    trace.append(("control", "", "liveness"))
            elif isinstance(event, (TradingStatus, InstrumentSpec)):
                pair = event.symbol
                if pair is not None and pair not in self.books and not self.add_unknown:
                    continue                        # a pair we do not follow: kept nowhere (a server may name any)
                if isinstance(event, InstrumentSpec):
                    if pair is not None:                # an instrument message always names its pair
                        self.reference[pair] = event
                elif pair is None:
                    self.venue_status = event
                else:
                    self.pair_status[pair] = event
                targets = list(books.values()) if pair is None else [books.get(pair)]
                for book in targets:
                    if book is None:
                        continue
                    outcome = book.apply(event)
                    if outcome is Outcome.STATUS and not standby and not conn.retired:
                        self.publish(book, recv_ns)
                    elif outcome is Outcome.RESUBSCRIBE:
                        out.extend(self._after(book, outcome, recv_ns, conn, standby))
                if isinstance(event, TradingStatus):
                    self._note("status", recv_ns, symbol=pair, tradable=event.tradable, reason=event.reason)
                elif self._rules_on_wire is not None and self.rules is not None and not standby and not rules_done:
                    rules_done = True               # one frame's rules applied once, not per pair in it
                    self._rules_from_wire(raw, recv_ns)
                if trace is not None:
                    trace.append(("status", pair or "", "" if getattr(event, "tradable", True)
                                  else getattr(event, "reason", "")))
            elif isinstance(event, SubscribeError):
                self.reject(event, recv_ns)
                if trace is not None:
                    trace.append(("rejected", event.symbol, event.message))
            elif isinstance(event, SchemaDrift):
                self.stats.add("schema_fallbacks")
                if event.message not in self.drifted:        # said once per message: the count says how often
                    self.drifted.add(event.message)
                    self._note("schema_drift", recv_ns, message=event.message, detail=event.detail)
                if trace is not None:
                    trace.append(("control", "", "schema_drift"))
            elif isinstance(event, ChannelNotPermitted):
                out.extend(self._fall_back(event, recv_ns, conn))
                if trace is not None:
                    trace.append(("rejected", event.symbol, f"{event.channel}: {event.message}"))
            else:
                if isinstance(event, Notice) and event.reconnect:
                    if event.planned:
                        conn.replace_requested = conn.replace_requested or event.message
                        self._note("notice", recv_ns, conn=conn.id, message=event.message, planned=True)
                    else:
                        conn.reconnect_reason = event.message
                        self._note("notice", recv_ns, conn=conn.id, message=event.message)
                elif isinstance(event, LoginResult):
                    conn.logged_in = event.ok
                    self._note("login", recv_ns, conn=conn.id, ok=event.ok, code=event.code, message=event.message)
                if trace is not None:
                    trace.append(("control", "", type(event).__name__.lower()))
        if standby and conn.books and self._standby_ready(conn):
            self.handover(conn, recv_ns)
        return out

    def _after(self, book: InstrumentBook, outcome: Outcome, recv_ns: int, conn: Connection, standby: bool) -> list:
        """A book that failed (gap, checksum, bad number) or must be subscribed again (precision change)."""
        if outcome is Outcome.RESUBSCRIBE:
            self.stats.add("resyncs")
            self._note("resync", recv_ns, symbol=book.symbol, reason=book.resubscribe_reason or "precision_changed")
            if not standby:
                self.publish(book, recv_ns)
            return self._resubscribe(book.symbol, recv_ns, conn)
        if standby:
            self.stats.skip(FAILED_OUTCOME_REASON[outcome])
            self._note("resync", recv_ns, symbol=book.symbol, reason=FAILED_OUTCOME_REASON[outcome].name.lower(),
                       standby=True)
            return self._resubscribe(book.symbol, recv_ns, conn)
        return self.resync(book, outcome, recv_ns, conn)

    def _fall_back(self, event: ChannelNotPermitted, now_ns: int, conn: Connection) -> list:
        """A channel this account may not use (OKX tick-by-tick): the public depth channel instead."""
        if self.depth_channel is not None:
            self._note("fallback", now_ns, channel=event.channel, code=event.code, message=event.message)
            self.depth_channel = None
        if event.symbol in self.books:
            return self._resubscribe(event.symbol, now_ns, conn, limited=False)
        return []

    def publish(self, book: InstrumentBook, recv_ns: int) -> None:
        row = self.row_of[book.symbol]
        state = book.state._value_               # the int, without IntEnum arithmetic on the hot path
        if state == LIVE and self.behind_rows and row in self.behind_rows:
            state = STALE                        # written, but not trusted while its connection is behind
        if state == CROSSED and self.status[row] != CROSSED:
            self.stats.skip(SkipReason.CROSSED_BOOK)
            self._note("crossed", recv_ns, symbol=book.symbol)
        bids, asks = book.composed
        exch_ts_ns = book.exch_ts_ms * 1_000_000
        try:
            self.sink.write(row, state, bids, asks, exch_ts_ns, recv_ns, book.gaps, book.checksum_failures,
                            book.version)
        except RowValueError as exc:    # the book checks its numbers; this is the row's own guard: never fatal
            self.stats.skip(SkipReason.BAD_NUMBER)
            self._note("bad_number", recv_ns, symbol=book.symbol, detail=str(exc))
            book.invalidate()
            state = int(book.state)
            self.sink.set_status(row, state)
            self.status[row] = state
            return
        if exch_ts_ns:
            self.clock.observe(recv_ns - exch_ts_ns, recv_ns)
        self.status[row] = state
        self.last_update_ns[row] = recv_ns

    def confirm(self, book: InstrumentBook, now_ns: int) -> None:
        """The exchange says this book is still current (a heartbeat, an unchanged re-send): its row stays fresh.

        The row keeps its last-change time (``recv_ns``) and gets ``confirmed_ns``; a row that went
        STALE only for silence is LIVE again.
        """
        row = self.row_of[book.symbol]
        state = int(book.state)
        if state != RowStatus.LIVE:
            if self.status[row] != state:
                self.publish(book, now_ns)
            return
        if self.behind_rows and row in self.behind_rows:
            self.last_update_ns[row] = now_ns    # current as of now_ns, trusted again once caught up
            return
        self.sink.set_status(row, state, now_ns)
        self.status[row] = state
        self.last_update_ns[row] = now_ns

    def resync(self, book: InstrumentBook, outcome: Outcome, recv_ns: int, conn: Connection | None = None) -> list:
        reason = FAILED_OUTCOME_REASON[outcome]
        self.stats.skip(reason)
        if outcome is Outcome.GAP:
            self.stats.add("gaps")
        elif outcome is Outcome.CHECKSUM:
            self.stats.add("checksum_failures")
        self.stats.add("resyncs")
        self._note("resync", recv_ns, symbol=book.symbol, reason=reason.name.lower())
        self.publish(book, recv_ns)            # state is RESYNCING now: not tradable
        return self._resubscribe(book.symbol, recv_ns, conn)

    def _resubscribe(self, symbol: str, now_ns: int, conn: Connection | None, limited: bool = True) -> list:
        """The frames that make the exchange send ``symbol`` again, or none yet when its rate limit says wait."""
        if limited:
            times = self.resync_times.setdefault(symbol, deque())
            while times and now_ns - times[0] >= RESYNC_WINDOW_NS:
                times.popleft()
            if len(times) >= RESYNC_BURST:
                due = times[0] + RESYNC_WINDOW_NS
                if conn is not None and symbol not in conn.deferred:
                    conn.deferred[symbol] = due
                    self.stats.add("resyncs_deferred")
                    self._note("resync_deferred", now_ns, symbol=symbol, due_in_ms=(due - now_ns) / 1e6)
                return []
            times.append(now_ns)
        if self.depth_channel is not None:
            frames = self.venue.build_resubscribe(symbol, self.depth, channel=self.depth_channel)
        else:
            frames = self.venue.build_resubscribe(symbol, self.depth)
        if conn is not None and not self._spend(conn, len(frames), now_ns):
            return []                          # the replacement connection subscribes it afresh
        return frames

    def poll(self, conn: Connection, now_ns: int) -> list:
        """Frames due on ``conn`` now: resubscribes the rate limit held back (called by the feed's watchdog)."""
        if not conn.deferred:
            return []
        out = []
        for symbol, due in list(conn.deferred.items()):
            if due <= now_ns:
                del conn.deferred[symbol]
                out.extend(self._resubscribe(symbol, now_ns, conn))
        return out

    def reject(self, event: SubscribeError, now_ns: int) -> None:
        symbol = event.symbol
        self._note("reject", now_ns, symbol=symbol, message=event.message)
        if symbol in self.books and symbol not in self.rejected:
            self.rejected.add(symbol)
            row = self.row_of[symbol]
            self.sink.set_status(row, int(RowStatus.REJECTED))
            self.status[row] = int(RowStatus.REJECTED)

    # ---------------------------------------------------------------- backlog
    def _rows_of(self, conn: Connection) -> list[int]:
        return [self.row_of[s] for s in conn.symbols if s in self.row_of]

    def fall_behind(self, conn: Connection, now_ns: int, waited_ns: int) -> None:
        """``conn``'s frames reach us more than the staleness limit after they reached the socket.

        Its rows are untrusted until it has caught up: LIVE rows go STALE now, and a row written meanwhile is
        written STALE (its book is kept and applied as usual). Counted in ``fell_behind``; ``behind`` is the
        number of connections behind now.
        """
        if conn.behind:
            return
        conn.behind = True
        self.behind_conns.add(conn)
        self.stats.set("behind", len(self.behind_conns))
        self.stats.add("fell_behind")
        self._note("behind", now_ns, conn=conn.id, waited_ms=round(waited_ns / 1e6, 1),
                   limit_ms=round(self.staleness_ns / 1e6, 1))
        if conn.books is not None or conn.retired:
            return                               # a standby's books are not on the board; a retired one has none
        for row in self._rows_of(conn):
            self.behind_rows.add(row)
            if self.status[row] == LIVE:
                self.sink.set_status(row, STALE)
                self.status[row] = STALE

    def caught_up(self, conn: Connection, now_ns: int) -> None:
        """``conn``'s frames arrive in time again: its rows are trusted as their books and their silence say.

        A row whose book is whole and that was updated or confirmed within the staleness limit is LIVE again
        (confirmed as of that update); one silent for longer stays STALE until the exchange speaks of it.
        """
        if not conn.behind:
            return
        conn.behind = False
        self.behind_conns.discard(conn)
        self.stats.set("behind", len(self.behind_conns))
        self._note("caught_up", now_ns, conn=conn.id)
        if conn.books is not None or conn.retired:
            return
        for symbol in conn.symbols:
            row = self.row_of.get(symbol)
            if row is None:
                continue
            self.behind_rows.discard(row)
            if symbol in self.rejected:
                continue
            book = self.books.get(symbol)
            if (book is not None and self.status[row] == STALE and int(book.state) == LIVE
                    and now_ns - self.last_update_ns[row] <= self.staleness_ns):
                self.sink.set_status(row, LIVE, self.last_update_ns[row])
                self.status[row] = LIVE

    # ---------------------------------------------------------------- time
    def tick(self, now_ns: int) -> list[int]:
        """Marks LIVE rows neither updated nor confirmed for the staleness limit STALE; returns those rows."""
        stuck = sum(book.stuck_channels for book in self.books.values())
        if stuck != self.stats.get("stuck_channels"):
            self.stats.set("stuck_channels", stuck)
        stale = int(RowStatus.STALE)
        live = int(RowStatus.LIVE)
        went_stale = []
        for row, status in self.status.items():
            if status == live and now_ns - self.last_update_ns[row] > self.staleness_ns:
                self.sink.set_status(row, stale)
                self.status[row] = stale
                went_stale.append(row)
                self._note("stale", now_ns, row=row, silent_ms=self.staleness_ns / 1e6)
        return went_stale
