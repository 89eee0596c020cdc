"""One exchange's feed process: connect, subscribe, keep alive, reconnect, record.

Every decision (parse, book, trust state, resync, reject, staleness) is made
by the pure :class:`~pipeline.feed.session.FeedSession`; this module only
does I/O around it: the sockets, subscribe pacing, keepalive timers, the
reconnect backoff, the watchdog that gives the session its clock, and the
optional recorder that keeps every frame exactly as received.
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

from pipeline.board import Board, RowStatus, RowWriter
from pipeline.board.doorbell import Doorbell
from pipeline.board.histogram import HistogramWriter
from pipeline.board.layout import HOPS, ProcessRole
from pipeline.board.stats import ProcStats
from pipeline.feed.retry import Backoff, should_reconnect
from pipeline.feed.session import FeedSession
from pipeline.runtime import ProcessSpec, RateLimitedLog, parent_alive, setup_child
from pipeline.venues import VENUE_IDS, load_venue

log = logging.getLogger("pipeline.feed")

WATCHDOG_INTERVAL_S = 0.1


class BoardSink:
    """A session's rows on the board: the seqlocked row, the doorbell, the feed's hop histograms."""

    def __init__(self, writer: RowWriter, doorbell: Doorbell, exchange_to_receive: HistogramWriter,
                 receive_to_publish: HistogramWriter):
        self.writer = writer
        self.doorbell = doorbell
        self.exchange_to_receive = exchange_to_receive
        self.receive_to_publish = receive_to_publish

    def write(self, row, status, bids, asks, exch_ts_ns, recv_ns, gaps, checksum_failures) -> None:
        self.writer.write(row, status, bids, asks, exch_ts_ns, recv_ns, gaps, checksum_failures)
        self.doorbell.ring_if_sleeping()
        self.receive_to_publish.record(time.time_ns() - recv_ns)
        if exch_ts_ns:
            self.exchange_to_receive.record(recv_ns - exch_ts_ns)

    def set_status(self, row, status) -> None:
        self.writer.set_status(row, status)


class Feed:
    """The I/O shell around a :class:`~pipeline.feed.session.FeedSession`: sockets, timers, the clock."""

    def __init__(self, spec: ProcessSpec, url: str, staleness_ms: float, backoff_base_s: float = 0.1,
                 backoff_cap_s: float = 10.0, keepalive_s: float | None = None, open_timeout_s: float = 10.0,
                 recorder=None):
        self.spec = spec
        self.venue = load_venue(spec.venue)
        self.url = url
        self.depth = spec.depth
        self.board = Board.attach(spec.board_name, spec.depth)
        self.writer = RowWriter(self.board, [r.row for r in spec.rows])
        self.stats = ProcStats(self.board, spec.slot)
        self.doorbell = Doorbell(self.board.buf, spec.doorbell_fd)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.keepalive_s = keepalive_s or self.venue.KEEPALIVE_INTERVAL_S
        self.open_timeout_s = open_timeout_s
        self.rate_log = RateLimitedLog()
        self.recorder = recorder
        hops = HOPS[ProcessRole.FEED]
        sink = BoardSink(self.writer, self.doorbell,
                         HistogramWriter(self.board, spec.slot, hops.index("exchange_to_receive")),
                         HistogramWriter(self.board, spec.slot, hops.index("receive_to_publish")))
        self.session = FeedSession(self.venue, {r.symbol: r.row for r in spec.rows}, spec.depth,
                                   int(staleness_ms * 1e6), sink, self.stats, journal=self.journal)
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
        elif kind == "reject":
            symbol = fields["symbol"]
            log.error("%s refused a subscription%s: %s", venue, f" for {symbol}" if symbol else "", fields["message"])
        elif kind == "stale":
            self.rate_log.warning(f"stale:{fields['row']}", f"{venue}: row {fields['row']} stale "
                                                            f"(no update for {fields['silent_ms']:.0f} ms)")

    # ---------------------------------------------------------------- I/O
    async def connection(self, symbols: list[str]) -> None:
        venue = self.venue
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        url = venue.build_url(self.url, symbols, self.depth)
        established_before = False
        while not self.stop.is_set():
            opened = None
            conn = None
            reason = "closed"
            try:
                async with connect(url, max_size=2 ** 24, open_timeout=self.open_timeout_s, close_timeout=1,
                                   compression=None, ping_interval=20, ping_timeout=20,
                                   max_queue=None) as ws:
                    opened = time.monotonic()
                    if established_before:
                        self.stats.add("reconnects")
                    established_before = True
                    self._set_connected(+1)
                    conn = self.session.connection_opened(symbols, time.time_ns())
                    for n, frame in enumerate(self.session.subscribe_frames(conn)):
                        if n and venue.SUBSCRIBE_INTERVAL_S:
                            await asyncio.sleep(venue.SUBSCRIBE_INTERVAL_S)     # the exchange's request rate limit
                        await ws.send(frame)
                    keepalive = None
                    if self.keepalive_s:
                        keepalive = asyncio.ensure_future(self.keepalive(ws, self.keepalive_s))
                    try:
                        recorder = self.recorder
                        receive = self.session.receive
                        async for raw in ws:
                            recv_ns = time.time_ns()
                            if recorder is not None:
                                recorder.frame(raw, recv_ns, conn.id)
                            replies = receive(raw, recv_ns, conn)
                            for frame in replies:
                                await ws.send(frame)
                            if conn.reconnect_reason:
                                log.warning("%s: reconnecting: %s", venue.NAME, conn.reconnect_reason)
                                reason = conn.reconnect_reason
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
                reason = f"{type(exc).__name__}: {exc}"
                self.rate_log.warning(f"conn:{url}", f"{venue.NAME}: connection to {url} failed: {reason}")
            if conn is None:
                self.session.connection_failed(symbols, time.time_ns(), reason)
            else:
                self.session.connection_lost(conn, time.time_ns(), reason)
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
        """Runs the session's clock, beats the heartbeat, exits when the supervisor is gone."""
        while not self.stop.is_set():
            now = time.time_ns()
            self.stats.set("heartbeat_ns", now)
            offset = self.session.clock.offset_ns(now)
            if offset is not None:
                self.board.procs[self.spec.slot]["clock_offset_ns"] = offset
            self.session.tick(now)
            if self.recorder is not None:
                self.recorder.publish_stats(self.stats)
            if not parent_alive(self.spec):
                log.error("supervisor is gone; exiting")
                self.stop.set()
                return
            await asyncio.sleep(WATCHDOG_INTERVAL_S)

    async def run(self) -> None:
        self.register()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        tasks = [asyncio.ensure_future(self.connection(group)) for group in self.session.connection_groups()]
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


def main(spec: ProcessSpec, config) -> None:
    """Entry point of a feed process (called in the forked child)."""
    setup_child(spec)
    venue_config = config.venue(spec.venue)
    url = dict(spec.urls).get(spec.venue) or venue_config.url or load_venue(spec.venue).DEFAULT_URL
    feed = Feed(spec, url, venue_config.staleness_ms, recorder=build_recorder(spec, config))
    try:
        asyncio.run(feed.run())
    except Exception:
        log.exception("feed %s failed", spec.venue)
        feed.close()
        sys.exit(3)
    feed.close()
