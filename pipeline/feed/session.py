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
* ``connection_opened(symbols, now_ns)`` / ``connection_lost(conn, now_ns, reason)``.

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

from typing import Callable, Protocol

from pipeline.board.layout import PROC_DTYPE, RowStatus, SkipReason
from pipeline.board.stats import SKIPPED_WORD, WORD
from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import BookUpdate, Notice, Ping, SequenceMark, SubscribeError

SKIP_BY_REASON = {"invalid_json": SkipReason.INVALID_JSON, "unknown_message": SkipReason.UNKNOWN_MESSAGE,
                  "bad_number": SkipReason.BAD_NUMBER, "oversize": SkipReason.OVERSIZE}
FAILED_OUTCOME_REASON = {Outcome.GAP: SkipReason.SEQUENCE_GAP, Outcome.CHECKSUM: SkipReason.CHECKSUM_MISMATCH,
                         Outcome.BAD_NUMBER: SkipReason.BAD_NUMBER}
OUTCOME_KIND = {Outcome.CHANGED: "changed", Outcome.UNCHANGED: "unchanged", Outcome.IGNORED: "ignored",
                Outcome.GAP: "gap", Outcome.CHECKSUM: "checksum", Outcome.BAD_NUMBER: "bad_number"}


class RowSink(Protocol):
    """Where a session's rows go. One writer per row, as on the board."""

    def write(self, row: int, status: int, bids, asks, exch_ts_ns: int, recv_ns: int, gaps: int,
              checksum_failures: int) -> None: ...

    def set_status(self, row: int, status: int) -> None: ...


class MemoryRow:
    """The content of one board row, kept in memory."""

    __slots__ = ("status", "bids", "asks", "exch_ts_ns", "recv_ns", "gaps", "checksum_failures", "writes")

    def __init__(self) -> None:
        self.status = int(RowStatus.EMPTY)
        self.bids: list = []
        self.asks: list = []
        self.exch_ts_ns = 0
        self.recv_ns = 0
        self.gaps = 0
        self.checksum_failures = 0
        self.writes = 0


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

    def write(self, row, status, bids, asks, exch_ts_ns, recv_ns, gaps, checksum_failures) -> None:
        r = self.row(row)
        r.status = status
        r.bids = list(bids[:self.depth])
        r.asks = list(asks[:self.depth])
        r.exch_ts_ns = exch_ts_ns
        r.recv_ns = recv_ns
        r.gaps = gaps
        r.checksum_failures = checksum_failures
        r.writes += 1

    def set_status(self, row, status) -> None:
        r = self.row(row)
        r.status = status
        r.writes += 1


class MemoryStats:
    """The counters of a process slot (:class:`~pipeline.board.stats.ProcStats`), in a list."""

    def __init__(self) -> None:
        self.words = [0] * (PROC_DTYPE.itemsize // 8)

    def add(self, name: str, n: int = 1) -> None:
        self.words[WORD[name]] += n

    def get(self, name: str) -> int:
        return self.words[WORD[name]]

    def skip(self, reason: SkipReason) -> None:
        self.words[SKIPPED_WORD + int(reason)] += 1

    def skipped(self, reason: SkipReason) -> int:
        return self.words[SKIPPED_WORD + int(reason)]

    def word(self, name: str) -> int:
        return WORD[name]


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
    """One connection's bookkeeping: its symbols and its own sequence (Coinbase ``sequence_num``)."""

    __slots__ = ("id", "symbols", "last_seq", "reconnect_reason", "opened_ns")

    def __init__(self, conn_id: int, symbols: list[str], opened_ns: int):
        self.id = conn_id
        self.symbols = symbols
        self.last_seq: int | None = None
        self.reconnect_reason = ""
        self.opened_ns = opened_ns


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
        self.name = venue.NAME
        self.depth = depth
        self.staleness_ns = staleness_ns
        self.sink = sink
        self.stats = stats if stats is not None else MemoryStats()
        self.journal = journal
        self.trace: list | None = None
        self.add_unknown = add_unknown
        self.books: dict[str, InstrumentBook] = {}
        self.row_of: dict[str, int] = {}
        self.status: dict[int, int] = {}
        self.last_update_ns: dict[int, int] = {}
        for symbol, row in rows.items():
            self._add_row(symbol, row)
        self.rejected: set[str] = set()
        self.clock = ClockOffset()
        self.connections = 0
        self._words = self.stats.words
        self._messages_word = self.stats.word("messages")

    def _add_row(self, symbol: str, row: int) -> InstrumentBook:
        venue = self.venue
        book = self.books[symbol] = InstrumentBook(symbol, self.depth, venue.BOOK_LEVELS, venue.CHECKSUM,
                                                   venue.CHECKSUM_LEVELS or 10)
        self.row_of[symbol] = row
        self.status[row] = int(RowStatus.SYNCING)
        self.last_update_ns[row] = 0
        return book

    def _note(self, kind: str, now_ns: int, **fields) -> None:
        if self.journal is not None:
            self.journal(kind, now_ns, fields)

    # ---------------------------------------------------------------- connections
    def connection_groups(self) -> list[list[str]]:
        symbols = list(self.books)
        size = self.venue.MAX_SYMBOLS_PER_CONNECTION
        return [symbols[i:i + size] for i in range(0, len(symbols), size)]

    def connection_opened(self, symbols: list[str], now_ns: int, conn_id: int | None = None) -> Connection:
        """A connection carrying ``symbols`` is up; its rows stay SYNCING until their books are."""
        self.connections += 1
        conn = Connection(self.connections if conn_id is None else conn_id, list(symbols), now_ns)
        self._note("connect", now_ns, conn=conn.id, symbols=list(symbols))
        return conn

    def subscribe_frames(self, conn: Connection) -> list:
        """The frames to send right after ``conn`` opened (paced by the caller)."""
        frames = self.venue.build_subscribe(conn.symbols, self.depth)
        self._note("subscribe", conn.opened_ns, conn=conn.id, frames=len(frames))
        return frames

    def connection_lost(self, conn: Connection, now_ns: int, reason: str = "") -> None:
        """The rows of ``conn`` cannot be trusted any more: DISCONNECTED until a new snapshot."""
        self._note("disconnect", now_ns, conn=conn.id, reason=reason or conn.reconnect_reason)
        self.mark(conn.symbols, RowStatus.DISCONNECTED)

    def connection_failed(self, symbols: list[str], now_ns: int, reason: str) -> None:
        """A connection attempt for ``symbols`` failed before it opened."""
        self._note("connect_failed", now_ns, symbols=list(symbols), reason=reason)
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
        try:
            events = self.venue.parse(raw, recv_ns)
        except ParseError as exc:
            self.stats.add("parse_errors")
            self.stats.skip(SKIP_BY_REASON.get(exc.reason, SkipReason.OTHER))
            if self.trace is not None:
                self.trace.append(("unusable", "", str(exc)))
            self._note("parse_error", recv_ns, reason=exc.reason)
            return []
        out = []
        trace = self.trace
        for event in events:
            if event.__class__ is BookUpdate:
                book = self.books.get(event.symbol)
                if book is None:
                    if not self.add_unknown:
                        self.stats.skip(SkipReason.UNKNOWN_MESSAGE)
                        if trace is not None:
                            trace.append(("ignored", event.symbol, "not subscribed"))
                        continue
                    book = self._add_row(event.symbol, len(self.row_of))
                    conn.symbols.append(event.symbol)       # its row now lives and dies with this connection
                outcome = book.apply(event)
                if trace is not None:
                    trace.append((OUTCOME_KIND[outcome], event.symbol, ""))
                if outcome is Outcome.CHANGED:
                    self.publish(book, recv_ns)
                elif outcome is Outcome.UNCHANGED:
                    row = self.row_of[book.symbol]
                    self.last_update_ns[row] = recv_ns
                    if self.status[row] != book.state:
                        self.publish(book, recv_ns)
                elif outcome is not Outcome.IGNORED:
                    out.extend(self.resync(book, outcome, recv_ns))
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
                    self.mark(conn.symbols, RowStatus.RESYNCING)
                    if trace is not None:
                        trace.append(("gap", "", conn.reconnect_reason))
                    break
                conn.last_seq = event.seq
            elif isinstance(event, SubscribeError):
                self.reject(event, recv_ns)
                if trace is not None:
                    trace.append(("rejected", event.symbol, event.message))
            else:
                if isinstance(event, Notice) and event.reconnect:
                    conn.reconnect_reason = event.message
                    self._note("notice", recv_ns, conn=conn.id, message=event.message)
                if trace is not None:
                    trace.append(("control", "", type(event).__name__.lower()))
        return out

    def publish(self, book: InstrumentBook, recv_ns: int) -> None:
        row = self.row_of[book.symbol]
        state = int(book.state)
        if state == RowStatus.CROSSED and self.status[row] != RowStatus.CROSSED:
            self.stats.skip(SkipReason.CROSSED_BOOK)
            self._note("crossed", recv_ns, symbol=book.symbol)
        bids, asks = book.composed
        exch_ts_ns = book.exch_ts_ms * 1_000_000
        self.sink.write(row, state, bids, asks, exch_ts_ns, recv_ns, book.gaps, book.checksum_failures)
        if exch_ts_ns:
            self.clock.observe(recv_ns - exch_ts_ns, recv_ns)
        self.status[row] = state
        self.last_update_ns[row] = recv_ns

    def resync(self, book: InstrumentBook, outcome: Outcome, recv_ns: int) -> list:
        reason = FAILED_OUTCOME_REASON[outcome]
        self.stats.skip(reason)
        if outcome is Outcome.GAP:
            self.stats.add("gaps")
        elif outcome is Outcome.CHECKSUM:
            self.stats.add("checksum_failures")
        self.stats.add("resyncs")
        self._note("resync", recv_ns, symbol=book.symbol, reason=reason.name.lower())
        self.publish(book, recv_ns)            # state is RESYNCING now: not tradable
        return self.venue.build_resubscribe(book.symbol, self.depth)

    def reject(self, event: SubscribeError, now_ns: int) -> None:
        symbol = event.symbol
        self._note("reject", now_ns, symbol=symbol, message=event.message)
        if symbol in self.books and symbol not in self.rejected:
            self.rejected.add(symbol)
            row = self.row_of[symbol]
            self.sink.set_status(row, int(RowStatus.REJECTED))
            self.status[row] = int(RowStatus.REJECTED)

    # ---------------------------------------------------------------- time
    def tick(self, now_ns: int) -> list[int]:
        """Marks LIVE rows with no update for the staleness limit STALE; returns those rows."""
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
