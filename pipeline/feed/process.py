"""One exchange's feed: connect, subscribe, keep alive, parse, validate, publish.

The venue module parses (pure); :mod:`pipeline.book` decides whether a book
can be trusted; this module owns the sockets, the clock, the reconnect
policy and the rows the supervisor assigned to it. A malformed frame is
counted and skipped; a broken book is invalidated and resubscribed; a lost
connection marks its rows DISCONNECTED and reconnects with backoff; a row
with no update for ``staleness_ms`` is marked STALE. Any of those rows is
never LIVE, so the detector never trades on it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time

from websockets.asyncio.client import connect

from pipeline.board import Board, RowStatus, RowWriter, SkipReason
from pipeline.board.doorbell import Doorbell
from pipeline.board.histogram import HistogramWriter
from pipeline.board.layout import HOPS, ProcessRole
from pipeline.board.stats import ProcStats
from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.feed.retry import Backoff, should_reconnect
from pipeline.model import BookUpdate, Notice, Ping, SequenceMark, SubscribeError
from pipeline.runtime import ProcessSpec, RateLimitedLog, parent_alive, setup_child
from pipeline.venues import VENUE_IDS, load_venue

log = logging.getLogger("pipeline.feed")

WATCHDOG_INTERVAL_S = 0.1
SKIP_BY_REASON = {"invalid_json": SkipReason.INVALID_JSON, "unknown_message": SkipReason.UNKNOWN_MESSAGE,
                  "bad_number": SkipReason.BAD_NUMBER, "oversize": SkipReason.OVERSIZE}
FAILED_OUTCOME_REASON = {Outcome.GAP: SkipReason.SEQUENCE_GAP, Outcome.CHECKSUM: SkipReason.CHECKSUM_MISMATCH,
                         Outcome.BAD_NUMBER: SkipReason.BAD_NUMBER}


class ConnectionState:
    """Per-connection bookkeeping (Coinbase numbers messages per connection)."""

    def __init__(self, symbols: list[str]):
        self.symbols = symbols
        self.last_seq: int | None = None
        self.reconnect_reason = ""


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


class Feed:
    def __init__(self, spec: ProcessSpec, url: str, staleness_ms: float, backoff_base_s: float = 0.1,
                 backoff_cap_s: float = 10.0, keepalive_s: float | None = None, open_timeout_s: float = 10.0):
        self.spec = spec
        self.venue = load_venue(spec.venue)
        self.url = url
        self.depth = spec.depth
        self.board = Board.attach(spec.board_name, spec.depth)
        self.writer = RowWriter(self.board, [r.row for r in spec.rows])
        self.stats = ProcStats(self.board, spec.slot)
        self.doorbell = Doorbell(self.board.buf, spec.doorbell_fd)
        self.staleness_ns = int(staleness_ms * 1e6)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        venue = self.venue
        self.keepalive_s = keepalive_s or venue.KEEPALIVE_INTERVAL_S
        self.open_timeout_s = open_timeout_s
        self.books = {r.symbol: InstrumentBook(r.symbol, spec.depth, venue.BOOK_LEVELS, venue.CHECKSUM,
                                               venue.CHECKSUM_LEVELS or 10) for r in spec.rows}
        self.row_of = {r.symbol: r.row for r in spec.rows}
        self.status = {r.row: int(RowStatus.SYNCING) for r in spec.rows}
        self.last_update_ns = {r.row: 0 for r in spec.rows}
        self.rejected: set[str] = set()
        self.rate_log = RateLimitedLog()
        self._words = self.stats.words
        self._messages_word = self.stats.word("messages")
        hops = HOPS[ProcessRole.FEED]
        self.exchange_to_receive = HistogramWriter(self.board, spec.slot, hops.index("exchange_to_receive"))
        self.receive_to_publish = HistogramWriter(self.board, spec.slot, hops.index("receive_to_publish"))
        self.clock = ClockOffset()
        self.connected = 0
        self.stop = asyncio.Event()

    # ---------------------------------------------------------------- setup
    def register(self) -> None:
        slot = self.board.procs[self.spec.slot]
        slot["role"] = int(ProcessRole.FEED)
        slot["venue_id"] = VENUE_IDS[self.spec.venue]
        slot["connected"] = 0
        self.stats.set("pid", os.getpid())
        self.stats.set("started_ns", time.time_ns())
        self.stats.set("heartbeat_ns", time.time_ns())
        for row in self.writer.rows:
            self.writer.set_status(row, int(RowStatus.SYNCING))

    def connection_groups(self) -> list[list[str]]:
        symbols = list(self.books)
        size = self.venue.MAX_SYMBOLS_PER_CONNECTION
        return [symbols[i:i + size] for i in range(0, len(symbols), size)]

    # ---------------------------------------------------------------- hot path
    def handle(self, raw, recv_ns: int, conn: ConnectionState) -> list:
        """Parse one frame and apply it; returns frames to send back (pongs, resubscriptions)."""
        self._words[self._messages_word] += 1
        try:
            events = self.venue.parse(raw, recv_ns)
        except ParseError as exc:
            self.stats.add("parse_errors")
            self.stats.skip(SKIP_BY_REASON.get(exc.reason, SkipReason.OTHER))
            self.rate_log.warning(f"parse:{exc.reason}", f"skipped frame: {exc}")
            return []
        out = []
        for event in events:
            if event.__class__ is BookUpdate:
                book = self.books.get(event.symbol)
                if book is None:
                    self.stats.skip(SkipReason.UNKNOWN_MESSAGE)
                    continue
                outcome = book.apply(event)
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
            elif isinstance(event, SequenceMark):
                if conn.last_seq is not None and event.seq != conn.last_seq + 1:
                    self.stats.add("gaps")
                    self.stats.skip(SkipReason.SEQUENCE_GAP)
                    conn.reconnect_reason = f"connection sequence jumped {conn.last_seq} -> {event.seq}"
                conn.last_seq = event.seq
            elif isinstance(event, SubscribeError):
                self.reject(event)
            elif isinstance(event, Notice) and event.reconnect:
                conn.reconnect_reason = event.message
        return out

    def publish(self, book: InstrumentBook, recv_ns: int) -> None:
        row = self.row_of[book.symbol]
        state = int(book.state)
        if state == RowStatus.CROSSED and self.status[row] != RowStatus.CROSSED:
            self.stats.skip(SkipReason.CROSSED_BOOK)
            self.rate_log.warning(f"crossed:{book.symbol}", f"{self.spec.venue} {book.symbol}: book crossed or locked")
        bids, asks = book.composed
        exch_ts_ns = book.exch_ts_ms * 1_000_000
        self.writer.write(row, state, bids, asks, exch_ts_ns, recv_ns, book.gaps, book.checksum_failures)
        self.doorbell.ring_if_sleeping()
        self.receive_to_publish.record(time.time_ns() - recv_ns)
        if exch_ts_ns:
            delay = recv_ns - exch_ts_ns
            self.exchange_to_receive.record(delay)
            self.clock.observe(delay, recv_ns)
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
        self.rate_log.warning(f"resync:{book.symbol}",
                              f"{self.spec.venue} {book.symbol}: {reason.name.lower()}, book discarded and rebuilt")
        self.publish(book, recv_ns)            # state is RESYNCING now: not tradable
        return self.venue.build_resubscribe(book.symbol, self.depth)

    def reject(self, event: SubscribeError) -> None:
        symbol = event.symbol
        log.error("%s refused a subscription%s: %s", self.spec.venue, f" for {symbol}" if symbol else "",
                  event.message)
        if symbol in self.books and symbol not in self.rejected:
            self.rejected.add(symbol)
            row = self.row_of[symbol]
            self.writer.set_status(row, int(RowStatus.REJECTED))
            self.status[row] = int(RowStatus.REJECTED)

    def mark(self, symbols: list[str], status: RowStatus) -> None:
        for symbol in symbols:
            if symbol in self.rejected:
                continue
            row = self.row_of[symbol]
            self.books[symbol].invalidate(status)
            self.writer.set_status(row, int(status))
            self.status[row] = int(status)

    # ---------------------------------------------------------------- I/O
    async def connection(self, symbols: list[str]) -> None:
        venue = self.venue
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        url = venue.build_url(self.url, symbols, self.depth)
        established_before = False
        while not self.stop.is_set():
            opened = None
            try:
                async with connect(url, max_size=2 ** 24, open_timeout=self.open_timeout_s, close_timeout=1,
                                   compression=None, ping_interval=20, ping_timeout=20,
                                   max_queue=None) as ws:
                    opened = time.monotonic()
                    if established_before:
                        self.stats.add("reconnects")
                    established_before = True
                    self._set_connected(+1)
                    conn = ConnectionState(symbols)
                    for n, frame in enumerate(venue.build_subscribe(symbols, self.depth)):
                        if n and venue.SUBSCRIBE_INTERVAL_S:
                            await asyncio.sleep(venue.SUBSCRIBE_INTERVAL_S)     # the exchange's request rate limit
                        await ws.send(frame)
                    keepalive = None
                    if self.keepalive_s:
                        keepalive = asyncio.ensure_future(self.keepalive(ws, self.keepalive_s))
                    try:
                        async for raw in ws:
                            replies = self.handle(raw, time.time_ns(), conn)
                            for frame in replies:
                                await ws.send(frame)
                            if conn.reconnect_reason:
                                log.warning("%s: reconnecting: %s", venue.NAME, conn.reconnect_reason)
                                break
                    finally:
                        if keepalive is not None:
                            keepalive.cancel()
                        self._set_connected(-1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified right below
                if not should_reconnect(exc):
                    raise
                self.rate_log.warning(f"conn:{url}", f"{venue.NAME}: connection to {url} failed: "
                                                     f"{type(exc).__name__}: {exc}")
            self.mark(symbols, RowStatus.DISCONNECTED)
            if opened is not None:
                backoff.connected_for(time.monotonic() - opened)
            delay = backoff.next_delay()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)

    def _set_connected(self, delta: int) -> None:
        self.connected += delta
        self.board.procs[self.spec.slot]["connected"] = self.connected

    async def keepalive(self, ws, interval_s: float) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(interval_s)
                await ws.send(self.venue.build_keepalive())

    async def watchdog(self) -> None:
        """Marks silent rows STALE, beats the heartbeat, exits when the supervisor is gone."""
        stale = int(RowStatus.STALE)
        live = int(RowStatus.LIVE)
        while not self.stop.is_set():
            now = time.time_ns()
            self.stats.set("heartbeat_ns", now)
            offset = self.clock.offset_ns(now)
            if offset is not None:
                self.board.procs[self.spec.slot]["clock_offset_ns"] = offset
            for row, status in self.status.items():
                if status == live and now - self.last_update_ns[row] > self.staleness_ns:
                    self.writer.set_status(row, stale)
                    self.status[row] = stale
                    self.rate_log.warning(f"stale:{row}", f"{self.spec.venue}: row {row} stale "
                                                          f"(no update for {self.staleness_ns / 1e6:.0f} ms)")
            if not parent_alive(self.spec):
                log.error("supervisor is gone; exiting")
                self.stop.set()
                return
            await asyncio.sleep(WATCHDOG_INTERVAL_S)

    async def run(self) -> None:
        self.register()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        tasks = [asyncio.ensure_future(self.connection(group)) for group in self.connection_groups()]
        tasks.append(asyncio.ensure_future(self.watchdog()))
        stopper = asyncio.ensure_future(self.stop.wait())
        done, _ = await asyncio.wait(tasks + [stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks + [stopper]:
            task.cancel()
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception() is not None:
                raise task.exception()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.set_status_all(int(RowStatus.DISCONNECTED))
        self.writer = None
        self.board.close()


def main(spec: ProcessSpec, config) -> None:
    """Entry point of a feed process (called in the forked child)."""
    setup_child(spec)
    venue_config = config.venue(spec.venue)
    url = dict(spec.urls).get(spec.venue) or venue_config.url or load_venue(spec.venue).DEFAULT_URL
    feed = Feed(spec, url, venue_config.staleness_ms)
    try:
        asyncio.run(feed.run())
    except Exception:
        log.exception("feed %s failed", spec.venue)
        feed.close()
        sys.exit(3)
    feed.close()
