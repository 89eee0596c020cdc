"""The bridge process: this box's rows out to NATS, other boxes' rows in.

Publishing wakes on change, as the detector does: the publisher follows the
local writers' change lanes (:mod:`pipeline.bridge.changes`) and, when they
hold nothing new, sleeps on the board's doorbell as its second sleeper
(:mod:`pipeline.board.doorbell`: raise the flag, re-check the lanes, block on
its eventfd, which every feed rings after a publish while the flag is up). There
is no polling interval: a change is sent as soon as the event loop gets to it,
and an idle box costs one wake-up per heartbeat interval. Publishing is
conflated: each pass sends the current state of every row logged since the
last pass, once, so a row that changed ten times while the previous pass was
being sent goes out once with its latest state, and there is no queue to fall
behind. Every heartbeat interval it also resends every row (a receiver that
lost its connection is whole again within one interval) and publishes
``heartbeat.<box>``. Each row's trading rules (the rules region the feed writes)
go out on the row's rules subject when their version moves: they are checked
for the rows a pass sends (before their quotes) and for every row once per
heartbeat interval, and sent for every row again when a remote box asks for a
refresh or this bridge (re)connects; the periodic resend leaves them out, as
they rarely change. While NATS is unreachable, or the client's outgoing buffer
is above :data:`PENDING_LIMIT`, it publishes nothing and simply sends the latest
states later.

Subscribing writes the row from the NATS callback itself, with no hand-off to
another task: the message is parsed and written into the row this process owns
(one writer per row, as for the feeds) before the callback returns. It is
conflated too: each mirrored subject has its own subscription, and a message
whose subscription already holds a newer one in the client's queue is skipped
(counted in ``messages``, never written), so the newest message per row wins
and a burst never backs up into the rows. A rules message is written into the
mirrored row's rules entry (:class:`~pipeline.board.RulesWriter`), which the
detector sizes the row's pairs with. A remote box that is silent for
``heartbeat_timeout_ms``, or a dropped NATS connection, marks that box's rows
DISCONNECTED at once.

The feeds and the detector never wait for this process: it only reads their
rows through the seqlock and writes its own rows.

Process slot counters (the board's per-process fields, read by health):
``messages`` messages received, ``parse_errors`` malformed ones skipped (by
reason under ``skipped``), ``scans`` row states (and rules) published, ``reconnects``
NATS reconnects, ``connected`` 1 while connected, ``gaps`` failed connection
attempts, ``checksum_failures`` connection attempts whose credentials the
server refused, ``clock_offset_ns`` the largest remote clock envelope, ``record_dropped`` messages the
JetStream stream (``bridge.record``) discarded at its size or count bound (see :mod:`pipeline.bridge.stream`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time

from pipeline.backoff import Backoff
from pipeline.board import (
    BRIDGE,
    HOPS,
    Board,
    Doorbell,
    HistogramWriter,
    ProcessRole,
    ProcStats,
    RowReader,
    RowStatus,
    RowWriter,
    RulesWriter,
    SkipReason,
    TornReadError,
    read_rules,
)
from pipeline.bridge.changes import ChangedRows
from pipeline.bridge.codec import (
    heartbeat_subject,
    quote_subject,
    refresh_subject,
    render_heartbeat,
    render_row,
    render_rules,
    rules_subject,
)
from pipeline.bridge.rows import RemoteRows
from pipeline.bridge.stream import CHECK_INTERVAL_S, StreamKeeper
from pipeline.errors import ParseError, PipelineError, RowValueError
from pipeline.runtime import (
    ProcessSpec,
    RateLimitedLog,
    RowAssignment,
    UnusableResource,
    parent_alive,
    run_child,
    run_loop,
    run_until_stopped,
)

log = logging.getLogger("pipeline.bridge")

PENDING_LIMIT = 256 * 1024         # bytes waiting in the NATS client: above this, skip a scan (conflate)
BUFFER_RETRY_S = 0.001             # the client's buffer above PENDING_LIMIT: look again this soon
WATCHDOG_INTERVAL_S = 0.05
SKIP_BY_REASON = {"invalid_json": SkipReason.INVALID_JSON, "unknown_message": SkipReason.UNKNOWN_MESSAGE,
                  "bad_number": SkipReason.BAD_NUMBER, "oversize": SkipReason.OVERSIZE}


class BridgeError(PipelineError):
    """The bridge cannot start as configured (e.g. the credentials' environment variable is unset)."""


def connect_options(bridge, environ) -> dict:
    """nats-py ``connect`` keyword arguments for ``bridge`` (a BridgeConfig); reads the named secret."""
    options: dict = {"servers": [bridge.nats_url], "name": f"pipeline-bridge-{bridge.box}"}
    if bridge.token_env:
        token = environ.get(bridge.token_env)
        if not token:
            raise BridgeError(f"bridge.token_env names {bridge.token_env}, which is not set in the environment")
        options["token"] = token
    elif bridge.token_file:
        with open(bridge.token_file) as f:
            options["token"] = f.read().strip()
    elif bridge.nkey_seed_file:
        options["nkeys_seed"] = bridge.nkey_seed_file
    elif bridge.creds_file:
        options["user_credentials"] = bridge.creds_file
    if bridge.nats_url.startswith("tls://") or bridge.tls_ca_file or bridge.tls_cert_file:
        context = ssl.create_default_context(cafile=bridge.tls_ca_file)
        if bridge.tls_cert_file:
            context.load_cert_chain(bridge.tls_cert_file, bridge.tls_key_file)
        options["tls"] = context
    return options


def check_bridge(bridge, environ) -> str | None:
    """What would stop the bridge before it connects (one line naming the field), or None; run at start-up."""
    try:
        import nats  # noqa: F401 - only whether it is installed
    except ImportError:
        return "bridge: the NATS client is not installed (pip install -e '.[bridge]')"
    try:
        connect_options(bridge, environ)
    except BridgeError as exc:
        return str(exc)
    except (OSError, ssl.SSLError) as exc:
        return f"bridge: cannot read the credentials or TLS files: {exc}"
    return None


def connect_attempt(connect) -> asyncio.Task:
    """nats-py's ``connect`` coroutine as a task whose outcome is always read, even when the attempt is
    abandoned (stop, timeout): nats-py may end a cancelled attempt in its own error (``NoServersError``), and a
    task whose error nobody read is reported with its traceback when the loop closes."""
    task = asyncio.ensure_future(connect)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task


def describe_connect_error(exc: BaseException, url: str) -> tuple[str, bool]:
    """(message for the log, whether the server refused our credentials)."""
    text = str(exc)
    lowered = text.lower()
    if "permissions violation" in lowered and "decisions." in text:
        return (f"NATS server {url} denied a subject ({text}): bridge.publish_decisions needs publish permission "
                f"on decisions.>", False)
    if "permissions violation" in lowered:
        return (f"NATS server {url} denied a subject ({text}): the account needs publish and subscribe "
                f"permission on quotes.>, heartbeat.> and refresh.>", False)
    if "authorization" in lowered or "authentication" in lowered:
        return (f"NATS server {url} refused the credentials ({text}): check bridge.token_env / token_file / "
                f"nkey_seed_file / creds_file; the local pipeline keeps running without the bridge", True)
    if isinstance(exc, asyncio.TimeoutError) or type(exc).__name__ in ("NoServersError", "TimeoutError"):
        return f"no NATS server answered at {url}; retrying", False
    return f"cannot connect to NATS at {url}: {type(exc).__name__}: {text}", False


class Bridge:
    def __init__(self, spec: ProcessSpec, config, local_rows: tuple[RowAssignment, ...] = (), environ=None):
        self.spec = spec
        self.config = config
        bc = self.bridge = config.bridge
        self.options = connect_options(bc, os.environ if environ is None else environ)
        self.board = Board.attach(spec.board_name, spec.depth)
        self.stats = ProcStats(self.board, spec.slot)
        self.reader = RowReader(self.board)
        self.writer = RowWriter(self.board, [r.row for r in spec.rows])
        self.rules_writer = RulesWriter(self.board, [r.row for r in spec.rows])
        self.doorbell = Doorbell(self.board.buf, spec.doorbell_fd)         # rings the detector (mirrored rows)
        # sleeps as the board's bridge sleeper (the feeds ring it); never rings itself
        self.bell = Doorbell(self.board.buf, spec.doorbell_fd, spec.bridge_doorbell_fd, sleeper=BRIDGE)
        self.remote = RemoteRows(spec.rows, int(bc.heartbeat_timeout_ms * 1e6))
        self.depth = min(bc.depth or spec.depth, spec.depth)
        self.published = [(r.row, quote_subject(bc.box, r.venue, r.instrument), r.venue, r.instrument)
                          for r in local_rows if not r.box] if bc.publish else []
        self.last_sent = [-1] * len(self.published)              # seq last sent, per published row (in place)
        self.changes = ChangedRows(self.board, [p[0] for p in self.published], self.reader.seq_words, self.last_sent)
        self.rules_published = [(r.row, rules_subject(bc.box, r.venue, r.instrument), r.venue, r.instrument,
                                 self.board.geometry.rule_offset(r.row) // 8)
                                for r in local_rows if not r.box] if bc.publish else []
        self.rules_sent = [-1] * len(self.rules_published)     # the rules version last sent, per row
        self.subscriptions: dict = {}      # subject -> its nats-py subscription (its queue: newer messages)
        self._waiter: asyncio.Future | None = None     # the publisher's sleep, while it sleeps
        self._scans_word = self.stats.word("scans")
        self.nc = None
        self.rate_log = RateLimitedLog()
        hops = HOPS[ProcessRole.BRIDGE]
        self.publish_to_written = HistogramWriter(self.board, spec.slot, hops.index("remote_publish_to_written"))
        self.receive_to_written = HistogramWriter(self.board, spec.slot, hops.index("remote_receive_to_written"))
        self._words = self.stats.words
        self._messages_word = self.stats.word("messages")
        self.keeper = (StreamKeeper(bc.record, bc.box, lambda total: self.stats.set("record_dropped", total))
                       if bc.record is not None and self.published else None)
        self.stream_ready = False
        self.stop: asyncio.Event | None = None

    # ---------------------------------------------------------------- setup
    def register(self) -> None:
        """Every mirrored row DISCONNECTED until its box is heard (the slot is claimed by the child runtime)."""
        self.writer.set_status_all(int(RowStatus.DISCONNECTED))

    # ---------------------------------------------------------------- receiving
    async def on_message(self, msg) -> None:
        """NATS callback: write the message's row now, unless a newer message of its subject is already queued
        behind it in the client (conflation: that one is written instead)."""
        self._words[self._messages_word] += 1
        subscription = self.subscriptions.get(msg.subject)
        if subscription is not None and subscription.pending_msgs:
            return
        self.apply(msg.subject, msg.data, time.time_ns())

    def apply(self, subject: str, data: bytes, arrival_ns: int) -> None:
        remote = self.remote
        try:
            if remote.is_heartbeat(subject):
                remote.on_heartbeat(subject, data, arrival_ns)
                return
            if remote.is_rules(subject):
                row, rules = remote.on_rules(subject, data, arrival_ns)
                self.rules_writer.write(row, rules)     # takes effect with the row's next quote
                return
            write = remote.on_quote(subject, data, arrival_ns)
        except ParseError as exc:
            self.stats.add("parse_errors")
            self.stats.skip(SKIP_BY_REASON.get(exc.reason, SkipReason.OTHER))
            self.rate_log.warning(f"parse:{exc.reason}", f"skipped message on {subject}: {exc}")
            return
        except RowValueError as exc:      # rules the board's entry cannot hold exactly: not written
            self.stats.add("parse_errors")
            self.stats.skip(SkipReason.BAD_NUMBER)
            self.rate_log.warning("rules:bad_number", f"skipped message on {subject}: {exc}")
            return
        if write is None:
            return
        try:
            self.writer.write(write.row, write.status, write.bids, write.asks, write.exch_ts_ns, write.recv_ns,
                              confirmed_ns=write.confirmed_ns, xseq=write.xseq)
        except RowValueError as exc:      # a time the row cannot hold: the quote is dropped, the row untrusted
            self.stats.add("parse_errors")
            self.stats.skip(SkipReason.BAD_NUMBER)
            self.rate_log.warning("row:bad_number", f"skipped message on {subject}: {exc}")
            self.writer.set_status(write.row, int(RowStatus.RESYNCING))
            self.doorbell.ring_if_sleeping()
            return
        self.doorbell.ring_if_sleeping()
        now = time.time_ns()
        self.publish_to_written.record(now - write.sent_ns)
        if write.recv_ns:
            self.receive_to_written.record(now - write.recv_ns)

    def disconnect_rows(self, rows: list[int], why: str) -> None:
        for row in rows:
            self.writer.set_status(row, int(RowStatus.DISCONNECTED))
        if rows:
            self.doorbell.ring_if_sleeping()
            if not self.stop.is_set():
                log.warning("%d remote rows disconnected: %s", len(rows), why)

    # ---------------------------------------------------------------- publishing
    def scan_rules(self, candidates: list[int] | None = None) -> list[tuple[str, bytes]]:
        """(subject, rules message) for every local row (of ``candidates``, published indices; None: all) whose
        rules version moved since it was last sent (one load of the entry's sequence word per row; the rules
        are decoded only for those)."""
        words = self.reader._words  # noqa: SLF001 - the rules entries' seq words, read directly as in scan
        sent = self.rules_sent
        out = []
        sent_ns = time.time_ns()
        box = self.bridge.box
        published = self.rules_published
        for i in range(len(published)) if candidates is None else candidates:
            row, subject, venue, instrument, word = published[i]
            seq = words[word]
            if seq // 2 == sent[i] or seq & 1:
                continue
            try:
                version, rules = read_rules(self.board, row)
            except TornReadError:
                continue
            sent[i] = version
            out.append((subject, render_rules(box, venue, instrument, rules, sent_ns)))
        return out

    def scan(self, candidates: list[int] | None = None) -> list[tuple[str, bytes]]:
        """(subject, message) for every local row whose seqlock word moved since it was last sent, among
        ``candidates`` (published indices; None: what the change lanes logged since the last scan)."""
        words = self.reader._words  # noqa: SLF001 - the hot loop reads seq words directly, as the detector does
        seq_words = self.reader.seq_words
        last = self.last_sent
        out = []
        sent_ns = time.time_ns()
        box, depth, index = self.bridge.box, self.depth, self.reader.codec.index
        published = self.published
        for i in self.changes.changed() if candidates is None else candidates:
            row, subject, venue, instrument = published[i]
            seq = words[seq_words[row]]
            if seq == last[i] or seq & 1:
                continue
            try:
                seq, values = self.reader.read_with_seq(row)
            except TornReadError:
                continue
            last[i] = seq
            out.append((subject, render_row(box, venue, instrument, values, index, depth, sent_ns)))
        return out

    def resend_all(self) -> None:
        """Every row's state again at the next pass (and the publisher woken for it)."""
        self.last_sent[:] = [-1] * len(self.published)
        self.changes.mark_all()
        self.wake_publisher()

    def resend_rules(self) -> None:
        """Every row's rules again at the next pass (a box that joined late, or messages lost in an outage)."""
        self.rules_sent = [-1] * len(self.rules_published)
        self.changes.mark_all()
        self.wake_publisher()

    def wake_publisher(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_ring(self) -> None:
        """The event loop's reader callback on the bridge's doorbell eventfd: a feed rang."""
        self.bell.drain()
        self.wake_publisher()

    async def _sleep(self, timeout_s: float) -> None:
        """Until :meth:`wake_publisher` (a ring, a resend) or ``timeout_s``."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(max(0.0, timeout_s), self.wake_publisher)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def publish_pass(self, nc) -> None:
        """Send what changed since the last pass: each candidate row's rules (if their version moved), then its
        latest state (if its seq moved)."""
        candidates = self.changes.changed()
        messages = self.scan_rules(candidates) + self.scan(candidates)      # a row's rules before its quote
        try:
            for subject, data in messages:
                await nc.publish(subject, data)
        except Exception as exc:  # noqa: BLE001 - the connection went away mid-pass: resend later
            self.resend_all()
            self.resend_rules()
            self.rate_log.warning("publish", f"publish failed ({type(exc).__name__}: {exc}); "
                                             f"the latest states are sent after reconnecting")
        else:
            self._words[self._scans_word] += len(messages)

    async def publisher(self) -> None:
        """Pass after pass while rows change; asleep on the doorbell while none does (see the module docstring)."""
        loop = asyncio.get_running_loop()
        bell = self.bell
        refresh_s = self.bridge.heartbeat_interval_ms / 1000
        next_refresh = time.monotonic() + refresh_s
        loop.add_reader(bell.fd, self._on_ring)
        try:
            while not self.stop.is_set():
                nc = self.nc
                if nc is None or not nc.is_connected:
                    await self._sleep(next_refresh - time.monotonic())   # the connection's resend_all wakes it
                    if time.monotonic() >= next_refresh:
                        next_refresh = time.monotonic() + refresh_s
                    continue
                if nc.pending_data_size >= PENDING_LIMIT:            # conflate: the latest states go later
                    await asyncio.sleep(BUFFER_RETRY_S)
                    continue
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + refresh_s
                    self.resend_all()
                await self.publish_pass(nc)
                bell.prepare_sleep()                                 # flag up, fence, then the re-check
                if self.changes.pending():
                    bell.cancel_sleep()
                    await asyncio.sleep(0)                           # let the client send, the callbacks run
                    continue
                await self._sleep(next_refresh - time.monotonic())
                bell.cancel_sleep()          # a ring lowered it already; a timeout or a resend did not
        finally:
            loop.remove_reader(bell.fd)

    async def heartbeat(self) -> None:
        interval_s = self.bridge.heartbeat_interval_ms / 1000
        subject = heartbeat_subject(self.bridge.box)
        while not self.stop.is_set():
            nc = self.nc
            if nc is not None and nc.is_connected:
                with contextlib.suppress(Exception):
                    await nc.publish(subject, render_heartbeat(self.bridge.box, time.time_ns(), len(self.published)))
            await asyncio.sleep(interval_s)

    # ---------------------------------------------------------------- connection
    async def on_refresh(self, msg) -> None:
        self.resend_all()
        self.resend_rules()

    async def on_connected(self, nc) -> None:
        self.subscriptions = {}
        for subject in self.remote.subjects():
            self.subscriptions[subject] = await nc.subscribe(subject, cb=self.on_message)
        if self.published:
            await nc.subscribe(refresh_subject(self.bridge.box), cb=self.on_refresh)
        await self.set_connected(True)
        for box in self.remote.boxes:          # ask every mirrored box for all its rows now
            await nc.publish(refresh_subject(box), b"")
        if self.keeper is not None:
            self.stream_ready = await self.keeper.ensure(nc.jetstream())

    async def stream_watch(self) -> None:
        """Every CHECK_INTERVAL_S: the recording stream's state, what its bounds discarded (record_dropped)."""
        while not self.stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), CHECK_INTERVAL_S)
            nc = self.nc
            if self.stop.is_set() or nc is None or not nc.is_connected or not self.stream_ready:
                continue         # a stream the server refused is asked for again at the next connection
            try:
                await self.keeper.check(nc.jetstream())
            except Exception as exc:  # noqa: BLE001 - a check that fails is tried again at the next interval
                self.rate_log.warning("stream", f"cannot read JetStream stream {self.bridge.record.stream} "
                                                f"({type(exc).__name__}: {exc}); trying again")

    async def set_connected(self, connected: bool) -> None:
        self.board.procs[self.spec.slot]["connected"] = int(connected)
        self.disconnect_rows(self.remote.set_connected(connected), "NATS connection lost")
        if connected:
            self.resend_all()
            self.resend_rules()

    async def connection(self) -> None:
        import nats
        url = self.bridge.nats_url
        backoff = Backoff(0.1, 2.0)
        closed = asyncio.Event()

        async def on_error(exc):
            message, refused = describe_connect_error(exc, url)
            if refused:
                self.stats.add("checksum_failures")
            self.rate_log.warning(f"nats:{type(exc).__name__}", message)

        async def on_disconnected():
            await self.set_connected(False)

        async def on_reconnected():
            self.stats.add("reconnects")
            log.info("reconnected to NATS at %s", url)
            await self.set_connected(True)
            for box in self.remote.boxes:
                with contextlib.suppress(Exception):
                    await self.nc.publish(refresh_subject(box), b"")

        async def on_closed():
            closed.set()

        ping_s = max(1, int(self.bridge.heartbeat_timeout_ms / 2000))
        first = True
        while not self.stop.is_set():
            closed.clear()
            opened = None
            # nats-py's connect may end in its own error (NoServersError) even when cancelled: awaited through
            # a shield and, when this attempt is abandoned (stop, timeout), cancelled and awaited here, so its
            # outcome is always read (else asyncio.run reports it at shutdown as an unhandled exception)
            connecting = connect_attempt(
                nats.connect(**self.options, connect_timeout=self.bridge.connect_timeout_s,
                             max_reconnect_attempts=3, reconnect_time_wait=0.25, ping_interval=ping_s,
                             max_outstanding_pings=2, pending_size=4 * PENDING_LIMIT, flush_timeout=1.0,
                             error_cb=on_error, disconnected_cb=on_disconnected,
                             reconnected_cb=on_reconnected, closed_cb=on_closed))
            try:
                nc = await asyncio.wait_for(asyncio.shield(connecting), timeout=self.bridge.connect_timeout_s * 4 + 1)
            except BaseException as exc:
                if not connecting.done():
                    connecting.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(connecting, 2)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                if not isinstance(exc, Exception):
                    raise
                message, refused = describe_connect_error(exc, url)
                self.stats.add("gaps")
                if refused:
                    log.error("%s", message)
                else:
                    self.rate_log.warning("connect", message)
            else:
                opened = time.monotonic()
                if not first:
                    self.stats.add("reconnects")
                first = False
                log.info("connected to NATS at %s as box %s", url, self.bridge.box)
                self.nc = nc
                try:
                    await self.on_connected(nc)
                except Exception as exc:  # noqa: BLE001 - the connection broke while subscribing: start over
                    self.rate_log.warning("subscribe", f"setting up the NATS connection failed "
                                                       f"({type(exc).__name__}: {exc}); reconnecting")
                    closed.set()
                stopper = asyncio.ensure_future(self.stop.wait())
                closer = asyncio.ensure_future(closed.wait())
                await asyncio.wait([stopper, closer], return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                closer.cancel()
                self.nc = None
                if not nc.is_closed:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(nc.close(), 2)
                await self.set_connected(False)
            if opened is not None:
                backoff.connected_for(time.monotonic() - opened)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), backoff.next_delay())

    # ---------------------------------------------------------------- watch
    async def watchdog(self) -> None:
        while not self.stop.is_set():
            now = time.time_ns()
            self.stats.set("heartbeat_ns", now)
            self.disconnect_rows(self.remote.check(now), "remote box silent for longer than "
                                                         f"{self.bridge.heartbeat_timeout_ms:.0f} ms")
            envelope = self.remote.clock_envelope_ns()
            if envelope is not None:
                self.board.procs[self.spec.slot]["clock_offset_ns"] = envelope
            if not parent_alive(self.spec):
                log.error("supervisor is gone; exiting")
                self.stop.set()
                return
            await asyncio.sleep(WATCHDOG_INTERVAL_S)

    async def run(self, stop=None) -> None:
        """Until ``stop`` (the process's :class:`~pipeline.runtime.Stop`) is set, or a task fails."""
        self.stop = asyncio.Event()
        self.register()
        if stop is not None:
            stop.link(self.stop)
        tasks = [asyncio.ensure_future(self.connection()), asyncio.ensure_future(self.watchdog())]
        if self.published:
            tasks.append(asyncio.ensure_future(self.publisher()))
            tasks.append(asyncio.ensure_future(self.heartbeat()))
        if self.keeper is not None:
            tasks.append(asyncio.ensure_future(self.stream_watch()))
        try:
            await run_until_stopped(tasks, self.stop)
        finally:
            if self.nc is not None and not self.nc.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.nc.close(), 2)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.set_status_all(int(RowStatus.DISCONNECTED))
            self.doorbell.ring_if_sleeping()
        self.writer = None
        self.rules_writer = None
        self.reader = None
        self.board.close()


def main(spec: ProcessSpec, config, local_rows: tuple[RowAssignment, ...] = ()) -> None:
    """Entry point of the bridge process (called in the forked child)."""
    run_child(spec, lambda stop: run_bridge(spec, config, local_rows, stop))


def run_bridge(spec: ProcessSpec, config, local_rows: tuple[RowAssignment, ...], stop) -> None:
    logging.getLogger("nats").setLevel(logging.CRITICAL)     # its errors reach us through error_cb
    try:
        bridge = Bridge(spec, config, local_rows)
    except BridgeError as exc:                                # the message names the field
        raise UnusableResource("", str(exc)) from exc
    except OSError as exc:
        raise UnusableResource("bridge", f"cannot read the credentials or TLS files: {exc}") from exc
    try:
        run_loop(bridge.run(stop))
    finally:
        bridge.close()
