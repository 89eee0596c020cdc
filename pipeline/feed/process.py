"""One exchange's feed process: connect, subscribe, keep alive, reconnect, record.

Every decision (parse, book, trust state, resync, reject, staleness) is made
by the pure :class:`~pipeline.feed.session.FeedSession`; this module only
does I/O around it: the sockets, subscribe pacing, keepalive timers, the
reconnect backoff, the watchdog that gives the session its clock, and the
optional recorder that keeps every frame exactly as received.

Backlogs. Every frame carries the time it reached the socket (see
:mod:`pipeline.feed.transport`); the frame handler reads the clock once more
as it hands the frame to the session. The difference is how long the frame
waited in the kernel, the WebSocket library and behind the frames before it.
A frame that waited more than the feed's staleness limit
(``venues.NAME.staleness_ms``) is counted (``late_frames``) and puts its
connection behind (:meth:`FeedSession.fall_behind`: its rows STALE); the first
frame of that connection to arrive within half the limit ends it
(:meth:`FeedSession.caught_up`). The watchdog publishes the longest wait and the
most messages queued in the library over each of its 100 ms intervals
(``backlog_wait_ns``, ``backlog_frames``).

Trading rules (docs/trading-rules.md "How the pipeline loads them"). Before any connection opens, the
feed fetches its venue's reference data (:mod:`pipeline.refdata`: ``reference_data.timeout_s`` per
attempt, ``retries`` attempts) and applies it (:meth:`FeedSession.apply_rules`), so no row is LIVE on a
book alone; the raw response is kept in ``reference_data.cache_dir`` and recorded as a session event
(``reference_data``). When the venue cannot be reached the cached response is used and its age said once
(log, and ``rules_cache_age_s`` in the slot); with no cache the rows are held ``NO_RULES`` and the fetch is
tried again on the backoff until it answers. The rules are fetched again every ``refresh_s`` and applied
without a restart; each changed field is logged and counted (``rules_changes``). The rules go to the
board's rules region (:class:`~pipeline.board.RulesWriter`) for the detector. With ``fee_lookup`` the
account's fees are looked up once the rules are in, and on the same schedule (:mod:`pipeline.feed.fees`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from pipeline.board import (
    HOPS,
    Board,
    Doorbell,
    HistogramBuffer,
    HistogramWriter,
    ProcessRole,
    ProcStats,
    RowStatus,
    RowWriter,
    RulesWriter,
)
from pipeline.config import ReferenceDataConfig, VenueConfig
from pipeline.errors import FeedError, ParseError
from pipeline.feed.arbiter import Arbiter, open_paths
from pipeline.feed.fees import build_fee_lookup
from pipeline.feed.retry import Backoff, ConnectionRateLimit, should_reconnect
from pipeline.feed.session import FeedSession
from pipeline.feed.transport import open_link
from pipeline.recording.redact import redact_frame
from pipeline.refdata import RulesCache, describe_age, fetch_reference_response_async, rules_base_url
from pipeline.runtime import ProcessSpec, RateLimitedLog, parent_alive, run_child, run_loop, run_until_stopped
from pipeline.venues import load_venue

log = logging.getLogger("pipeline.feed")

WATCHDOG_INTERVAL_S = 0.1
HANDOVER_TIMEOUT_S = 30.0      # a replacement whose books are not all whole by then takes the rows anyway
LOGIN_TIMEOUT_S = 5.0
REPLACE_RETRY_S = 5.0
LIFETIME_MARGIN_S = 600.0      # replace a connection this long before the exchange's lifetime limit (24 h)


async def wait_or_end(event: asyncio.Event, task: asyncio.Future, timeout_s: float) -> None:
    """Until ``event`` is set, ``task`` ends or ``timeout_s`` passes, whichever comes first."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter, task], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


class Backlog:
    """The longest a frame waited between the socket and the session since the watchdog last looked."""

    __slots__ = ("peak_ns",)

    def __init__(self) -> None:
        self.peak_ns = 0


def _int32(value: int) -> int:
    """``value`` held within a signed 32-bit slot field."""
    return max(-0x80000000, min(value, 0x7FFFFFFF))


class BoardSink:
    """A session's rows on the board: the seqlocked row, the doorbell, the feed's hop histograms.

    The two hops of every publish are buffered (:class:`HistogramBuffer`) and recorded in batches by
    :meth:`flush`, which the feed's watchdog calls every 100 ms.
    """

    BATCH = 4096      # hop samples recorded together: 108 ns a sample in batches of 512, 40 in 4096 (numpy)

    def __init__(self, writer: RowWriter, doorbell: Doorbell, exchange_to_receive: HistogramWriter,
                 receive_to_publish: HistogramWriter):
        self.writer = writer
        self.doorbell = doorbell
        self.exchange_to_receive = HistogramBuffer(exchange_to_receive, self.BATCH)
        self.receive_to_publish = HistogramBuffer(receive_to_publish, self.BATCH)
        self._write = writer.write
        self._ring = doorbell.ring_if_sleeping
        self._published = self.receive_to_publish.samples
        self._exchanged = self.exchange_to_receive.samples

    @classmethod
    def of(cls, board: Board, slot: int, writer: RowWriter, doorbell: Doorbell) -> BoardSink:
        """The sink of the feed in process slot ``slot``: its two hop histograms are that slot's."""
        hops = HOPS[ProcessRole.FEED]
        return cls(writer, doorbell, HistogramWriter(board, slot, hops.index("exchange_to_receive")),
                   HistogramWriter(board, slot, hops.index("receive_to_publish")))

    def write(self, row, status, bids, asks, exch_ts_ns, recv_ns, gaps, checksum_failures, version=None) -> None:
        published_ns = self._write(row, status, bids, asks, exch_ts_ns, recv_ns, gaps, checksum_failures, version)
        self._ring()
        published = self._published
        published.append(published_ns - recv_ns)         # the row's own publish time: one clock read a frame
        if exch_ts_ns:
            self._exchanged.append(recv_ns - exch_ts_ns)
        if len(published) >= self.BATCH:
            self.flush()

    def set_status(self, row, status, confirmed_ns=None) -> None:
        """A status change rings like a publish: a row that stops being trusted must close what it made at
        once, not at the detector's next poll timeout (a quiet market has no other publish to wake it)."""
        self.writer.set_status(row, status, confirmed_ns)
        self._ring()

    def flush(self) -> None:
        """Record the buffered hop samples into the board's histograms."""
        self.receive_to_publish.flush()
        self.exchange_to_receive.flush()


class RulesSource:
    """Where a feed gets its trading rules: ``base_url`` (None: the venue's own), the cache, the schedule."""

    def __init__(self, base_url: str | None, settings: ReferenceDataConfig):
        self.base_url = base_url
        self.cache = RulesCache(settings.cache_dir, base_url)
        self.refresh_s = settings.refresh_s
        self.timeout_s = settings.timeout_s
        self.retries = settings.retries


class Feed:
    """The I/O shell around a :class:`~pipeline.feed.session.FeedSession`: sockets, timers, the clock."""

    def __init__(self, spec: ProcessSpec, url: str, staleness_ms: float, backoff_base_s: float = 0.1,
                 backoff_cap_s: float = 10.0, keepalive_s: float | None = None, open_timeout_s: float = 10.0,
                 recorder=None, ws_ping_interval_s: float | None = None, credentials: dict | None = None,
                 handover_timeout_s: float = HANDOVER_TIMEOUT_S, transport: str = VenueConfig.transport,
                 rules: RulesSource | None = None, fees=None, connections: int = 1, urls: tuple[str, ...] = ()):
        self.spec = spec
        self.venue = load_venue(spec.venue)
        self.url = url
        self.urls = urls                  # one endpoint per path (venues.NAME.urls); empty: ``url`` for every path
        self.depth = spec.depth
        self.board = Board.attach(spec.board_name, spec.depth)
        self.writer = RowWriter(self.board, [r.row for r in spec.rows])
        self.stats = ProcStats(self.board, spec.slot)
        self.doorbell = Doorbell(self.board.buf, spec.doorbell_fd, spec.bridge_doorbell_fd)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.keepalive_s = keepalive_s or self.venue.keepalive_interval_s
        self.open_timeout_s = open_timeout_s
        self.rate_log = RateLimitedLog()
        self.recorder = recorder
        self.sink = sink = BoardSink.of(self.board, spec.slot, self.writer, self.doorbell)
        # with redundant connections (pipeline.feed.arbiter) a session per path: the first copy of each update wins
        self.arbiter: Arbiter | None
        self.arbiter, self.sessions = open_paths(self.venue, {r.symbol: r.row for r in spec.rows}, spec.depth,
                                                 int(staleness_ms * 1e6), sink, connections, self.stats, self.journal)
        self.session = self.sessions[0]            # the venue's clock, status and rules as the first path sees them
        self.session_of: dict = {}                 # Connection -> the session (path) it belongs to
        self.path_reconnects = [0] * len(self.sessions)
        self.rules = rules
        self._rules_since: str | None = None    # the last answer's stamp, for a venue that answers changes only
        self.fees = fees                  # the account fee lookup (pipeline.feed.fees), None when off
        self.rules_writer = RulesWriter(self.board, [r.row for r in spec.rows])
        self.session.rules_sink = self.rules_writer.write   # one path writes the rules entries: they are the venue's
        record = self.venue
        if ws_ping_interval_s is None:
            ws_ping_interval_s = record.ws_ping_interval_s
        self.ws_ping_interval_s = ws_ping_interval_s or None          # 0 or None: no RFC 6455 pings
        self.lifetime_s = record.limit("connection_lifetime_s")
        self.connection_limit = ConnectionRateLimit.of(record)
        self.status_pause_s = record.limit("reconnect_after_status_s") or 0.0
        self.credentials = credentials if credentials and self.venue.build_login is not None else None
        if self.credentials is not None:
            for session in self.sessions:
                session.depth_channel = self.venue.login_depth_channel
        self.handover_timeout_s = handover_timeout_s
        self.transport = transport
        self.open_conns: dict = {}        # Connection -> websocket, every connection that is open now
        self.replacing: dict = {}         # Connection -> task opening its replacement
        self.replace_failed_ns: dict = {}
        self.connected = 0
        self.backlog = Backlog()
        self.stop = asyncio.Event()

    # ---------------------------------------------------------------- setup
    def register(self) -> None:
        """Every row SYNCING until its first snapshot (the process slot is claimed by the child runtime)."""
        for row in self.writer.rows:
            self.writer.set_status(row, int(RowStatus.SYNCING))

    def journal(self, kind: str, now_ns: int, fields: dict) -> None:
        """The session's incidents: into the recording, and the ones a person should see into the log."""
        if self.recorder is not None:
            self.recorder.event(kind, now_ns, fields)
        venue = self.spec.venue
        if kind == "parse_error":
            self.rate_log.warning(f"parse:{fields['reason']}", f"{venue}: skipped frame: {fields['reason']}")
        elif kind == "resync":
            self.rate_log.warning(f"resync:{fields['symbol']}", f"{venue} {fields['symbol']}: {fields['reason']}, "
                                                               "book discarded and rebuilt")
        elif kind == "gap":
            self.rate_log.warning(f"gap:{fields['conn']}", f"{venue}: {fields['reason']}; rows resyncing")
        elif kind == "crossed":
            self.rate_log.warning(f"crossed:{fields['symbol']}", f"{venue} {fields['symbol']}: book crossed or locked")
        elif kind == "reject":              # (the server's text arrives trimmed and redacted: session.server_text)
            symbol = fields["symbol"]
            self.rate_log.warning("reject", f"{venue} refused a subscription{f' for {symbol}' if symbol else ''}: "
                                            f"{fields['message']}")
        elif kind in ("notice", "budget", "handover", "fallback", "resync_deferred") or (
                kind == "login" and not fields.get("ok")) or (kind == "status" and not fields.get("tradable")):
            self.rate_log.warning(f"journal:{kind}", f"{venue}: {kind} " +
                                  " ".join(f"{k}={v}" for k, v in fields.items()))
        elif kind == "schema_drift":
            self.rate_log.warning(f"drift:{fields['message']}", f"{venue}: {fields['message']} frames carry fields we "
                                  f"do not declare ({fields['detail']}); decoded with them ignored, counted in "
                                  "schema_fallbacks")
        elif kind == "stale":
            self.rate_log.warning(f"stale:{fields['row']}", f"{venue}: row {fields['row']} stale "
                                                            f"(no update for {fields['silent_ms']:.0f} ms)")
        elif kind == "behind":
            self.rate_log.warning(f"behind:{fields['conn']}", f"{venue}: connection {fields['conn']} behind: a frame "
                                  f"waited {fields['waited_ms']:.0f} ms after it reached the socket (limit "
                                  f"{fields['limit_ms']:.0f} ms); its rows are stale until it has caught up")
        elif kind == "rules_change":
            log.warning("%s %s: trading rule %s %s -> %s (%s)", venue, fields["symbol"], fields["field"],
                        fields["old"], fields["new"], fields["source"])
        elif kind == "rules_announced":
            log.warning("%s %s: trading rule %s announced: %s at %d ms (%s)", venue, fields["symbol"], fields["field"],
                        fields["new"], fields["effective_ms"], fields["source"])
        elif kind == "rules" and fields.get("missing"):
            log.warning("%s: no trading rules for %s: %s held no_rules", venue, ", ".join(fields["missing"]),
                        "it is" if len(fields["missing"]) == 1 else "they are")
        elif kind == "rules_refused":
            self.rate_log.warning("rules_refused", f"{venue}: reference data on the connection refused: "
                                                   f"{fields['reason']}: {fields['detail']}")
        elif kind == "failover":
            self.rate_log.warning(f"failover:{fields['from_path']}", f"{venue}: row {fields['row']} now from "
                                  f"connection path {fields['to_path']} (path {fields['from_path']} is not trusted)")
        elif kind == "caught_up":
            self.rate_log.warning(f"caught_up:{fields['conn']}", f"{venue}: connection {fields['conn']} caught up")

    # ---------------------------------------------------------------- I/O
    async def _open(self, symbols: list[str], url: str, standby_for=None, group: dict | None = None,
                    session: FeedSession | None = None):
        """Connect, start handing frames to the session, log in when configured, subscribe (paced).

        Returns ``(link, conn, reader, waits)``: ``reader`` is the task that hands every frame of the
        connection to the session and ends, with the reason, when the connection does; ``waits`` (for a
        login or a standby, else None) are the events set when the login is answered and when the rows
        have been handed over to this connection.
        """
        wait = self.connection_limit.wait_s(time.monotonic())
        if wait > 0:                      # the venue's connection-rate limit, for every attempt of this feed
            self.rate_log.warning(f"connlimit:{url}", f"{self.venue.name}: next connection held {wait:.2f} s to keep "
                                                      f"to the venue's connection limit")
            await asyncio.sleep(wait)
        self.connection_limit.note(time.monotonic())
        link = await open_link(self.transport, url, self.ws_ping_interval_s, self.open_timeout_s)
        reader = None
        try:
            self._set_connected(+1)
            session = session or self.session
            if group is not None:
                if group["established"]:
                    self.stats.add("reconnects")
                    self.path_reconnects[session.path] += 1
                group["established"] = True
            conn = session.connection_opened(symbols, time.time_ns(), standby_for=standby_for)
            self.session_of[conn] = session
            login = self.credentials is not None and session.depth_channel is not None
            # what the opening waits for, set from the frame handler: the login answered, the rows handed over
            waits = (asyncio.Event(), asyncio.Event()) if login or standby_for is not None else None
            reader = asyncio.ensure_future(link.run(self._handler(link, conn, waits)))
            if login:
                await self._log_in(link, conn, reader, waits[0])
            venue = self.venue
            for n, frame in enumerate(session.subscribe_frames(conn)):
                if n and venue.subscribe_interval_s:
                    await asyncio.sleep(venue.subscribe_interval_s)     # the exchange's request rate limit
                await link.send_now(frame)
        except BaseException:
            self._set_connected(-1)
            if reader is not None:
                reader.cancel()
            await link.close()
            raise
        return link, conn, reader, waits

    def _handler(self, link, conn, waits):
        """What happens to every frame of ``conn``: record it, the session decides, act on its decision."""
        recorder = self.recorder
        session = self.session_of[conn]
        receive = session.receive
        ring_ahead = self.doorbell.ring_ahead
        backlog = self.backlog
        limit = session.staleness_ns               # a frame later than this puts the connection behind
        settled = limit // 2                       # and one within this ends it
        late_word = self.stats.word("late_frames")
        words = self.stats.words
        clock = time.time_ns

        def on_frame(raw, recv_ns):
            # a frame in is most often a row out: a sleeping detector starts waking now, on its own core,
            # while the frame is parsed and written (a hint; the contract is ring_if_sleeping after the write)
            ring_ahead()
            now = clock()
            waited = now - recv_ns                 # socket -> here: kernel, library queue, the frames before it
            if waited > backlog.peak_ns:
                backlog.peak_ns = waited
            if waited > limit:
                words[late_word] += 1
                if not conn.behind:
                    session.fall_behind(conn, now, waited)
            elif conn.behind and waited <= settled:
                session.caught_up(conn, now)
            if recorder is not None:
                texts = session.server_texts
                replies = receive(raw, recv_ns, conn)
                # a frame with the server's own words (an error, a notice, a login answer) may echo our login
                # (OKX 60012 quotes the whole request): recorded with its credentials replaced
                recorder.frame(raw if session.server_texts == texts else redact_frame(raw)[0], recv_ns, conn.id)
            else:
                replies = receive(raw, recv_ns, conn)
            if waits is not None:
                if conn.logged_in is not None:
                    waits[0].set()
                if conn.books is None:
                    waits[1].set()
            if conn.reconnect_reason:
                link.stop(conn.reconnect_reason)
            elif conn.replace_requested and conn not in self.replacing and not conn.retired and conn.books is None:
                self._replace(conn)
            return replies
        return on_frame

    async def _log_in(self, link, conn, reader, answered: asyncio.Event) -> None:
        """OKX: log in before subscribing the tick-by-tick channel; on refusal or silence, public depth."""
        c = self.credentials
        await link.send_now(self.venue.build_login(c["key"], c["secret"], c["passphrase"], int(time.time())))
        await wait_or_end(answered, reader, LOGIN_TIMEOUT_S)
        if not conn.logged_in:
            self.session_of[conn].depth_channel = None
            log.warning("%s: login %s; using the public depth channel", self.spec.venue,
                        "refused" if conn.logged_in is False else "not answered")

    async def _read(self, link, conn, reader) -> str:
        """Waits while the session gets every frame of ``conn``, until it ends or must be dropped; returns why."""
        keepalive = None
        if self.keepalive_s:
            keepalive = asyncio.ensure_future(self.keepalive(link, self.keepalive_s))
        self.open_conns[conn] = link
        try:
            return await reader
        finally:
            self.open_conns.pop(conn, None)
            if keepalive is not None:
                keepalive.cancel()

    def _replace(self, conn) -> None:
        """Start the replacement of ``conn`` (make-before-break)."""
        log.info("%s: replacing connection %d: %s", self.spec.venue, conn.id, conn.replace_requested)
        self.replacing[conn] = asyncio.ensure_future(self._standby(conn))

    async def _standby(self, old):
        """Open the replacement of ``old``, build its books, hand the rows over, close ``old``."""
        session = self.session_of[old]
        url = self.venue.build_url(self.url_of(session), old.symbols, self.depth)
        link, conn, reader, waits = await self._open(list(old.symbols), url, standby_for=old, session=session)
        try:
            await wait_or_end(waits[1], reader, self.handover_timeout_s)
            if conn.books is not None:
                if reader.done():
                    raise ConnectionError(f"replacement connection ended: {reader.result()}")
                session.handover(conn, time.time_ns(), forced=True)
        except BaseException:
            self._set_connected(-1)
            reader.cancel()
            await link.close()
            raise
        old_link = self.open_conns.get(old)
        if old_link is not None:
            old_link.stop(f"replaced by connection {conn.id}")   # its rows are already handed over
        return link, conn, reader

    async def connection(self, symbols: list[str], session: FeedSession | None = None) -> None:
        """One connection for ``symbols`` (of ``session``'s path), reconnected on its own backoff until stopped."""
        session = session or self.session
        venue = self.venue
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        url = venue.build_url(self.url_of(session), symbols, self.depth)
        group = {"established": False}      # this group of symbols had a connection before (for "reconnects")
        handed = None                       # (link, conn, reader) of a replacement that already holds the rows
        while not self.stop.is_set():
            opened = None
            conn = link = None
            reason = "closed"
            try:
                if handed is not None:
                    link, conn, reader = handed
                    handed = None
                else:
                    link, conn, reader, _ = await self._open(symbols, url, group=group, session=session)
                opened = time.monotonic()
                try:
                    reason = await self._read(link, conn, reader)
                    if reason != "closed by the exchange" and not conn.retired:
                        log.warning("%s: reconnecting: %s", venue.name, reason)
                finally:
                    self._set_connected(-1)
                    reader.cancel()
                    await link.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified right below
                if not should_reconnect(exc):
                    raise
                reason = f"{type(exc).__name__}: {exc}"
                if conn is None:
                    self.stats.add("connect_failures")      # it never opened: not a reconnect, but an attempt
                self.rate_log.warning(f"conn:{url}", f"{venue.name}: connection to {url} failed: {reason}")
            replacement = self.replacing.pop(conn, None) if conn is not None else None
            if conn is None:
                session.connection_failed(symbols, time.time_ns(), reason)
            else:
                session.connection_lost(conn, time.time_ns(), reason)
                self.session_of.pop(conn, None)
            if replacement is not None:
                # the rows move (or already moved) to the replacement: no backoff, no reconnect of our own
                try:
                    handed = await replacement
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a failed replacement: reconnect as usual
                    self.rate_log.warning(f"replace:{url}", f"{venue.name}: replacement failed: "
                                                            f"{type(exc).__name__}: {exc}")
            if opened is not None:
                backoff.connected_for(time.monotonic() - opened)
            delay = backoff.next_delay()
            if self.status_pause_s and session.venue_status is not None and not session.venue_status.tradable:
                delay = max(delay, self.status_pause_s)     # Kraken: no faster than every 5 s after maintenance
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)

    def url_of(self, session: FeedSession) -> str:
        """The endpoint ``session``'s path connects to."""
        return self.urls[session.path] if self.urls else self.url

    def _set_connected(self, delta: int) -> None:
        self.connected += delta
        self.board.procs[self.spec.slot]["connected"] = self.connected

    async def keepalive(self, link, interval_s: float) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(interval_s)
                await link.send_now(self.venue.build_keepalive())

    async def watchdog(self) -> None:
        """Runs the session's clock, beats the heartbeat, exits when the supervisor is gone."""
        while not self.stop.is_set():
            now = time.time_ns()
            self.stats.set("heartbeat_ns", now)
            offset = self.session.clock.offset_ns(now)
            if offset is not None:
                self.board.procs[self.spec.slot]["clock_offset_ns"] = offset
            for session in self.sessions:
                session.tick(now)
            self.sink.flush()
            self._publish_backlog()
            if self.arbiter is not None:
                self._publish_paths()
            await self._connection_timers(now)
            if self.recorder is not None:
                self.recorder.publish_stats(self.stats)
            if not parent_alive(self.spec):
                log.error("supervisor is gone; exiting")
                self.stop.set()
                return
            await asyncio.sleep(WATCHDOG_INTERVAL_S)

    def _publish_paths(self) -> None:
        """What the redundant paths did (pipeline.feed.arbiter), into the slot's path fields."""
        arbiter = self.arbiter
        proc = self.board.procs[self.spec.slot]
        proc["paths"] = arbiter.paths
        proc["failovers"] = min(arbiter.failovers, 0xFFFFFFFF)
        for path in range(arbiter.paths):
            proc["path_first"][path] = arbiter.first[path]
            proc["path_copies"][path] = arbiter.duplicates[path] + arbiter.late[path]
            lags = arbiter.lag_percentiles(path)
            p50, p99 = (0, 0) if lags is None else lags
            proc["path_lag_p50_us"][path] = _int32(p50 // 1000)        # signed: see the layout
            proc["path_lag_p99_us"][path] = _int32(p99 // 1000)
            proc["path_live_rows"][path] = arbiter.live_rows(path)
            proc["path_reconnects"][path] = min(self.path_reconnects[path], 0xFFFFFFFF)

    def _publish_backlog(self) -> None:
        """The longest wait and the most messages queued since the last call, into the slot (then reset)."""
        peak, self.backlog.peak_ns = self.backlog.peak_ns, 0
        self.stats.set("backlog_wait_ns", peak)
        self.stats.set("backlog_frames", max((link.take_waiting() for link in self.open_conns.values()), default=0))

    async def _connection_timers(self, now_ns: int) -> None:
        """Held-back resubscribes that are due, and replacements of connections near their lifetime."""
        for conn, link in list(self.open_conns.items()):
            session = self.session_of.get(conn)
            for frame in (session.poll(conn, now_ns) if session is not None else ()):
                with contextlib.suppress(Exception):
                    link.send(frame)
            if (self.lifetime_s and not conn.replace_requested and not conn.retired
                    and now_ns - conn.opened_ns > (self.lifetime_s - LIFETIME_MARGIN_S) * 1e9):
                conn.replace_requested = f"connection lifetime {self.lifetime_s / 3600:g} h"
            task = self.replacing.get(conn)
            if task is not None and task.done() and (task.cancelled() or task.exception() is not None):
                # the replacement failed: try again after a pause, the old connection still carries the rows
                if now_ns - self.replace_failed_ns.setdefault(conn, now_ns) > REPLACE_RETRY_S * 1e9:
                    self.replacing.pop(conn, None)
                    self.replace_failed_ns.pop(conn, None)
            elif conn.replace_requested and conn not in self.replacing and not conn.retired and conn.books is None:
                self._replace(conn)

    async def run(self, stop=None) -> None:
        """Until ``self.stop`` is set, or ``stop`` (the process's :class:`~pipeline.runtime.Stop`) is."""
        self.register()
        if stop is not None:
            stop.link(self.stop)
        tasks = [asyncio.ensure_future(self.watchdog())]         # the heartbeat beats while the rules load
        if self.rules is not None:
            loaded = asyncio.ensure_future(self.load_rules())
            stopper = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait([loaded, tasks[0], stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not loaded.done():
                loaded.cancel()
                await run_until_stopped(tasks, self.stop)      # stopped (or the watchdog ended) while loading
                return
            if loaded.exception() is not None:
                tasks[0].cancel()
                raise loaded.exception()
            tasks.append(asyncio.ensure_future(self.refresh_rules(fresh=loaded.result())))
        if self.fees is not None:         # after the rules: a fee write keeps the rules the entry has
            tasks.append(asyncio.ensure_future(self.fees.run(self.rules_writer, self.stats, self.stop)))
        tasks += [asyncio.ensure_future(self.connection(group, session))
                  for session in self.sessions for group in session.connection_groups()]
        await run_until_stopped(tasks, self.stop)

    # ---------------------------------------------------------------- trading rules
    async def _fetch_rules(self) -> bytes | None:
        """One fetch (with its retries) applied; None when the venue did not answer (counted, logged).

        A venue that answers what changed since a stamp (HTX ``ts``: the record's ``since_param``) is asked
        so once it gave a whole answer: an empty change confirms the cache (its age restarts), a change is
        applied to the instruments it names and followed by one whole fetch, so the cache always holds a
        whole answer."""
        source = self.rules
        ref = self.session.venue.reference_data
        try:
            raw, rules = await fetch_reference_response_async(self.spec.venue, source.base_url, source.timeout_s,
                                                              source.retries, since=self._rules_since)
            stamp, full = ref.since(raw) if ref.since is not None else (None, True)
        except (FeedError, ParseError) as exc:
            self.stats.add("rules_fetch_failures")
            self.rate_log.warning("rules_fetch", f"{exc}")
            return None
        self._rules_since = stamp
        self._apply_raw(raw, rules, "reference_data", **({} if full else {"full": False}))
        self.stats.set("rules_cache_age_s", 0)
        with contextlib.suppress(OSError):
            if full:
                source.cache.store(self.spec.venue, raw)
            elif rules:                   # changed: fetch the whole list once for the cache
                self._rules_since = None
                return await self._fetch_rules()
            else:
                source.cache.touch(self.spec.venue)
        return raw

    def _apply_raw(self, raw: bytes, rules, source: str, full: bool = True, **fields) -> None:
        now = time.time_ns()
        if self.recorder is not None:     # replay applies the same response at the same point
            self.recorder.event("reference_data", now, {"source": source, "raw": raw.decode("utf-8", "replace"),
                                                        **({} if full else {"full": False}), **fields})
        for session in self.sessions:              # every path's books hold the rules (one writes the board's)
            session.apply_rules(rules, now, full=full, source=source)

    async def load_rules(self) -> bool:
        """The rules at start: the venue's answer, else the cache (its age said once), else none (NO_RULES).
        True when they came from the venue."""
        if await self._fetch_rules() is not None:
            log.info("%s: trading rules loaded for %d instruments", self.spec.venue,
                     len(self.session.books) - len(self.session.rows_without_rules()))
            return True
        cached = self.rules.cache.load(self.spec.venue)
        if cached is not None:
            log.warning("%s: reference data unreachable; using the cached trading rules of %s ago (%s)",
                        self.spec.venue, describe_age(cached.age_s), cached.path)
            self.stats.set("rules_cache_age_s", max(1, int(cached.age_s)))
            self._apply_raw(cached.raw, cached.rules, "cache", age_s=round(cached.age_s, 1))
        else:
            log.error("%s: reference data unreachable and no cached rules in %s: rows held no_rules until it "
                      "answers", self.spec.venue, self.rules.cache.directory)
            for session in self.sessions:
                session.apply_rules([], time.time_ns(), source="none")
        return False

    async def refresh_rules(self, fresh: bool) -> None:
        """Fetch the rules again every ``refresh_s``; until the venue first answered, on the backoff."""
        backoff = Backoff(1.0, 60.0)
        while not self.stop.is_set():
            if fresh:
                if not self.rules.refresh_s:
                    await self.stop.wait()          # no schedule: only the venue's own notices change them
                    return
                delay = self.rules.refresh_s
            else:
                delay = backoff.next_delay()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            if self.stop.is_set():
                return
            if await self._fetch_rules() is not None and not fresh:
                fresh = True
                log.info("%s: trading rules loaded from the venue", self.spec.venue)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sink.flush()
        with contextlib.suppress(Exception):
            self.writer.set_status_all(int(RowStatus.DISCONNECTED))
            self.doorbell.ring_if_sleeping()
        if self.recorder is not None:
            self.recorder.close()
        self.writer = None
        self.board.close()


def build_recorder(spec: ProcessSpec, config):
    """The feed's recorder when the config asks for one (``recording:``), else None."""
    rc = config.recording
    if rc is None:
        return None
    from pipeline.recording.recorder import Recorder
    header = {"depth": spec.depth, "symbols": {r.symbol: r.instrument for r in spec.rows}}
    return Recorder(rc.dir, spec.venue, header, rotate_mb=rc.rotate_mb, keep_files=rc.keep_files)


def read_credentials(venue_config) -> dict | None:
    """Key, secret and passphrase from the environment variables the config names; None when any is unset."""
    if not venue_config.credentials_env:
        return None
    values = {key: os.environ.get(name) for key, name in venue_config.credentials_env}
    missing = [name for key, name in venue_config.credentials_env if not values[key]]
    if missing:
        log.error("%s: environment variable(s) %s not set: no login, public depth channel", venue_config.name,
                  ", ".join(missing))
        return None
    return values


def rules_url(venue_config, url: str) -> str | None:
    """Where the feed fetches its trading rules: ``venues.NAME.rules_url``; for a venue on the simulator (no
    ``url``), the simulator's port; else None (the venue's own endpoint)."""
    if venue_config.rules_url:
        return venue_config.rules_url
    return rules_base_url(url) if venue_config.url is None else None


def main(spec: ProcessSpec, config) -> None:
    """Entry point of a feed process (called in the forked child)."""
    run_child(spec, lambda stop: run_feed(spec, config, stop))


def run_feed(spec: ProcessSpec, config, stop) -> None:
    venue_config = config.venue(spec.venue)
    url = dict(spec.urls).get(spec.venue) or venue_config.url or load_venue(spec.venue).default_url
    rules_at = rules_url(venue_config, url)
    feed = Feed(spec, url, venue_config.staleness_ms, recorder=build_recorder(spec, config),
                ws_ping_interval_s=venue_config.ws_ping_interval_s, credentials=read_credentials(venue_config),
                transport=venue_config.transport,
                rules=RulesSource(rules_at, config.reference_data),
                fees=build_fee_lookup(venue_config, rules_at, spec.rows, config.reference_data, os.environ),
                connections=venue_config.connections,
                urls=() if dict(spec.urls).get(spec.venue) else venue_config.urls)
    try:
        run_loop(feed.run(stop))
    finally:
        feed.close()
