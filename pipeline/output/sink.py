"""Optional HTTP sink: forwards opportunity events to an outside analysis service.

Some traders want every ``open`` event checked by a second system. This module
POSTs each record, as JSON, to a URL they configure. Two rules shape it:

* **It never slows the detector.** :meth:`HttpSink.submit` only does a
  ``put_nowait`` onto a bounded :class:`queue.Queue`; when the queue is full the
  record is dropped and counted (``dropped``), it is never waited for. One
  daemon thread does all the network work: a persistent ``http.client``
  connection (reconnected after any failure), a bounded socket timeout, and
  retries with backoff. A slow, throttling or dead service therefore costs at
  most the queue's memory and some dropped records, never detector latency.
  An analysis hook is an optional extra: losing some of its events is better
  than arriving late at the next opportunity.

* **The token comes only from the environment.** The caller reads it from the
  environment variable named in the configuration (the configuration file holds
  the variable's *name*, never the secret) and passes it in. The sink sends it
  as ``Authorization: Bearer <token>`` and never writes it anywhere: log lines
  name the environment variable, not its value, URLs are logged without
  credentials or query strings, and a token that could not be sent as a header
  is refused at construction without being echoed.

Responses: 2xx counts ``sent``. 401/403 counts ``rejected``, logs one
actionable error per episode (until a record is accepted again) and the record
is not retried, since resending the same token cannot help. 429 counts
``throttled`` and retries the same record after ``Retry-After`` (seconds or an
HTTP date) or, without it, after an exponential backoff; throttling is not a
failure, so it is not limited by ``retries``. 5xx, 408, connection errors and
timeouts are retried ``retries`` times with exponential backoff and jitter,
then the record is dropped and counted ``failed``. Any other status (a 3xx or
a 4xx such as 400/404/413) is a problem retrying cannot fix: ``failed``, logged
once per episode. Every backoff is capped by ``max_backoff_s``.

``close(timeout_s)`` stops accepting records, lets the worker flush what is
queued until shortly before the deadline, then interrupts it (including a
request stuck on a hanging server) and returns; records still queued or in
flight then are counted as ``dropped``. ``timeout_s`` on the constructor bounds
connecting and each socket read or write, not a whole slow-dribbling response.
"""
from __future__ import annotations

import datetime
import email.utils
import http.client
import logging
import queue
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass

import orjson

from pipeline.backoff import Backoff
from pipeline.errors import PipelineError
from pipeline.net import is_loopback

log = logging.getLogger("pipeline.sink")

MAX_RESPONSE_BYTES = 64 * 1024      # we only need the status; a bigger body closes the connection
IDLE_POLL_S = 0.05                  # how often an idle worker checks for close()
DROP_REPORT_INTERVAL_S = 10.0       # at most one "queue full" warning per interval
BACKOFF_BASE_S = 0.25
RETRIES = 3

# Errors that mean "this reused keep-alive connection was already dead": the
# request is resent once at once on a fresh connection, without counting it as
# a failed attempt. Timeouts are not in the list: they count.
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                     ConnectionAbortedError)


class SinkError(PipelineError):
    """The HTTP sink cannot be set up as asked (bad URL, unusable token, reuse after close)."""


@dataclass(frozen=True)
class SinkStatistics:
    """A snapshot of the sink's counters.

    ``sent`` accepted with 2xx; ``dropped`` refused by a full queue, submitted
    after close, or abandoned at close; ``rejected`` refused with 401/403;
    ``throttled`` 429 answers (one record may be throttled several times);
    ``failed`` given up after the retries, or answered with a status that
    retrying cannot fix, or not serializable; ``queued`` waiting right now.
    """

    sent: int
    dropped: int
    rejected: int
    throttled: int
    failed: int
    queued: int


class HttpSink:
    """POSTs records to ``url`` from one background thread; :meth:`submit` never blocks.

    ``token`` is the bearer token (read by the caller from the environment);
    ``None`` or an empty string sends no ``Authorization`` header.
    ``token_env`` is the *name* of that environment variable, used only to make
    log messages actionable. ``retries`` and ``backoff_base_s`` tune the retry
    of transient failures (5xx, 408, connection errors, timeouts).
    """

    def __init__(self, url: str, token: str | None, timeout_s: float = 2.0, queue_size: int = 1000,
                 max_backoff_s: float = 30.0, *, token_env: str | None = None, retries: int = RETRIES,
                 backoff_base_s: float = BACKOFF_BASE_S):
        if not timeout_s > 0:
            raise SinkError(f"sink timeout_s must be > 0, got {timeout_s!r}")
        if int(queue_size) < 1:
            raise SinkError(f"sink queue_size must be >= 1, got {queue_size!r}")
        if max_backoff_s < 0 or backoff_base_s < 0:
            raise SinkError("sink max_backoff_s and backoff_base_s must be >= 0")
        if int(retries) < 0:
            raise SinkError(f"sink retries must be >= 0, got {retries!r}")
        self._scheme, self._host, self._port, self._path, self.display_url = _parse_url(url)
        self.timeout_s = float(timeout_s)
        self.max_backoff_s = float(max_backoff_s)
        self.backoff_base_s = float(backoff_base_s)
        self._backoff_policy = Backoff(self.backoff_base_s, self.max_backoff_s)
        self.retries = int(retries)
        self.token_env = token_env

        token = (token or "").strip()
        self._has_token = bool(token)
        self._headers = {"Content-Type": "application/json"}
        if token:
            _check_token(token, token_env)
            self._headers["Authorization"] = f"Bearer {token}"
            if self._scheme == "http" and not is_loopback(self._host):
                log.warning("analysis sink at %s uses plain http: the bearer token from %s travels "
                            "unencrypted; prefer an https URL", self.display_url, self._token_name())

        self._queue: queue.Queue = queue.Queue(maxsize=int(queue_size))
        self._lock = threading.Lock()       # guards the counters (submit may be called from any thread)
        self._sent = self._dropped = self._rejected = self._throttled = self._failed = 0
        self._accepting = True
        self._stop = threading.Event()      # hard stop: abandon the current record and exit
        self._drain = threading.Event()     # soft stop: exit once the queue is empty
        self._thread: threading.Thread | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._conn_lock = threading.Lock()  # lets close() interrupt a blocked socket safely
        self._conn_used = False
        self._episode: str | None = None    # the problem last logged; cleared by a success
        self._drops_reported = 0
        self._drops_report_at = 0.0

    # ---------------------------------------------------------------- caller side

    def submit(self, record: dict) -> bool:
        """Queue ``record`` for sending; never blocks. False when it was dropped (queue full or closed)."""
        if self._accepting:
            try:
                self._queue.put_nowait(record)
                return True
            except queue.Full:
                pass
        with self._lock:
            self._dropped += 1
        return False

    def start(self) -> None:
        """Start the background sender (once; a no-op when already running)."""
        if self._stop.is_set() or self._drain.is_set():
            raise SinkError("this HTTP sink was closed; create a new one")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="pipeline-http-sink", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 1.0) -> bool:
        """Stop within ``timeout_s``: flush what is queued until then, abandon the rest.

        Returns True when the worker thread has ended (it is a daemon thread, so
        it cannot keep the process alive in any case).
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._accepting = False
        self._drain.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            # Flush until shortly before the deadline, keeping a little time to interrupt.
            grace = min(0.1, max(0.0, timeout_s) / 4)
            thread.join(max(0.0, deadline - time.monotonic() - grace))
        self._stop.set()
        # Shut the socket down to wake a request blocked on a hanging server; repeat in
        # short slices in case the worker was just opening a new connection.
        while thread is not None and thread.is_alive():
            self._interrupt_connection()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            thread.join(min(0.02, remaining))
        stopped = thread is None or not thread.is_alive()
        if stopped:
            self._discard_queued()
            self._close_connection()
        return stopped

    def statistics(self) -> SinkStatistics:
        with self._lock:
            return SinkStatistics(sent=self._sent, dropped=self._dropped, rejected=self._rejected,
                                  throttled=self._throttled, failed=self._failed, queued=self._queue.qsize())

    def __enter__(self) -> HttpSink:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:       # never shows the token
        return f"HttpSink({self.display_url!r}, token={'set' if self._has_token else 'none'})"

    # ---------------------------------------------------------------- worker side

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._report_drops()
                try:
                    record = self._queue.get(timeout=IDLE_POLL_S)
                except queue.Empty:
                    if self._drain.is_set():
                        break
                    continue
                self._deliver(record)
        except Exception:               # a bug here must not die silently
            log.exception("analysis sink at %s: sender thread crashed; events are no longer forwarded",
                          self.display_url)
        finally:
            self._close_connection()
            self._discard_queued()

    def _deliver(self, record: dict) -> None:
        try:
            body = orjson.dumps(record)
        except (TypeError, orjson.JSONEncodeError) as exc:
            self._count("_failed")
            log.error("analysis sink: a record could not be serialized to JSON and was dropped: %s", exc)
            return
        failures = 0
        throttles = 0
        while not self._stop.is_set():
            try:
                status, retry_after = self._post(body)
            except (OSError, http.client.HTTPException) as exc:
                self._close_connection()
                if self._stop.is_set():         # interrupted by close(), not the service's fault
                    break
                failures += 1
                if not self._retry(failures, _describe(exc, self.timeout_s)):
                    return
                continue

            if 200 <= status < 300:
                self._count("_sent")
                if self._episode is not None:
                    log.info("analysis sink at %s is accepting events again", self.display_url)
                    self._episode = None
                return
            if status in (401, 403):
                self._count("_rejected")
                self._log_episode(f"rejected-{status}", logging.ERROR, self._rejection_message(status))
                return
            if status == 429:
                self._count("_throttled")
                throttles += 1
                delay = retry_after if retry_after is not None else self._backoff(throttles)
                log.debug("analysis sink at %s throttled us (429); retrying in %.3f s", self.display_url, delay)
                if not self._pause(min(delay, self.max_backoff_s)):
                    break
                continue
            if status >= 500 or status == 408:
                failures += 1
                if not self._retry(failures, f"server answered {status}"):
                    return
                continue
            # 1xx/3xx/other 4xx: resending the same request will not change the answer.
            self._count("_failed")
            self._log_episode(f"status-{status}", logging.ERROR,
                              f"analysis sink at {self.display_url} answered {status} "
                              f"({http.client.responses.get(status, 'unexpected status')}); the event was "
                              f"dropped: check the sink URL and what the service expects")
            return
        # close() gave up on this record while it was being retried.
        self._count("_dropped")

    def _post(self, body: bytes) -> tuple[int, float | None]:
        """One POST on the persistent connection: ``(status, retry_after_s)``."""
        for attempt in (1, 2):
            with self._conn_lock:
                if self._stop.is_set():
                    raise ConnectionAbortedError("sink is closing")
                if self._conn is None:
                    cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
                    self._conn = cls(self._host, self._port, timeout=self.timeout_s)
                    self._conn_used = False
                conn = self._conn
            reused = self._conn_used
            try:
                conn.request("POST", self._path, body=body, headers=self._headers)
                response = conn.getresponse()
                self._conn_used = True
                response.read(MAX_RESPONSE_BYTES)
                if not response.isclosed():
                    self._close_connection()        # unread body left: cannot reuse this connection
                return response.status, _retry_after(response.getheader("Retry-After"))
            except _STALE_CONNECTION:
                self._close_connection()
                if not reused or attempt == 2 or self._stop.is_set():
                    raise
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- helpers

    def _backoff(self, attempt: int) -> float:
        """The pipeline's backoff (:class:`~pipeline.backoff.Backoff`) for retry ``attempt`` (from 1):
        between half and all of ``backoff_base_s * 2**(attempt-1)``, capped at ``max_backoff_s``."""
        return self._backoff_policy.delay(attempt - 1)

    def _pause(self, delay: float) -> bool:
        """Sleep ``delay`` seconds unless close() hard-stops first; False when stopped."""
        return not self._stop.wait(max(0.0, delay))

    def _retry(self, failures: int, reason: str) -> bool:
        """Back off before retry number ``failures``; False when out of retries (counted as failed).

        A pause cut short by close() returns True: the caller's loop then sees the stop and
        counts the record as dropped.
        """
        if failures > self.retries:
            self._give_up(reason)
            return False
        log.debug("analysis sink at %s: %s; retry %d/%d", self.display_url, reason, failures, self.retries)
        self._pause(self._backoff(failures))
        return True

    def _give_up(self, reason: str) -> None:
        self._count("_failed")
        self._log_episode("failing", logging.WARNING,
                          f"analysis sink at {self.display_url} is unreachable or failing ({reason}); "
                          f"dropping events after {self.retries} retries until it recovers")

    def _log_episode(self, episode: str, level: int, message: str) -> None:
        """Log a problem once, until it changes or a record gets through again."""
        if self._episode != episode:
            self._episode = episode
            log.log(level, "%s", message)

    def _rejection_message(self, status: int) -> str:
        if not self._has_token:
            return (f"analysis sink at {self.display_url} requires a token ({status}) but none was sent: "
                    f"set the environment variable {self._token_name()} and restart the detector; "
                    f"events are dropped until then")
        return (f"analysis sink at {self.display_url} rejected our token ({status}): check the environment "
                f"variable {self._token_name()} (expired, revoked or for another service?) and restart the "
                f"detector; events are dropped until it is accepted")

    def _token_name(self) -> str:
        return self.token_env or "that holds the sink token (named in the detector configuration)"

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def _report_drops(self) -> None:
        dropped = self._dropped
        if dropped == self._drops_reported:
            return
        now = time.monotonic()
        if now < self._drops_report_at:
            return
        log.warning("analysis sink at %s: queue full, %d events dropped (the service is slower than the "
                    "event rate)", self.display_url, dropped - self._drops_reported)
        self._drops_reported = dropped
        self._drops_report_at = now + DROP_REPORT_INTERVAL_S

    def _discard_queued(self) -> None:
        n = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            n += 1
        if n:
            self._count("_dropped", n)

    def _interrupt_connection(self) -> None:
        """Wake a worker blocked on the socket (e.g. a hanging server) without closing it under its feet."""
        with self._conn_lock:
            sock = getattr(self._conn, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _close_connection(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass


def _parse_url(url: str) -> tuple[str, str, int | None, str, str]:
    """``(scheme, host, port, request_path, display_url)``; display_url has no credentials or query."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SinkError(f"sink url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SinkError("sink url must look like http(s)://host[:port]/path")
    if parts.username is not None or parts.password is not None:
        raise SinkError("sink url must not contain credentials; pass the token through its environment variable")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname
    shown_host = f"[{host}]" if ":" in host else host
    display = f"{parts.scheme}://{shown_host}{':' + str(port) if port else ''}{parts.path or '/'}"
    return parts.scheme, host, port, path, display


def _check_token(token: str, token_env: str | None) -> None:
    """Refuse a token that cannot be a header value, without ever echoing it."""
    where = f"the environment variable {token_env}" if token_env else "the sink token"
    if any(ch in token for ch in "\r\n\0") or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in token):
        raise SinkError(f"{where} contains control characters and cannot be sent as a bearer token")
    try:
        token.encode("latin-1")
    except UnicodeEncodeError:
        raise SinkError(f"{where} contains characters that cannot be sent in an HTTP header") from None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    if seconds != seconds:      # NaN
        return None
    return max(0.0, seconds)


def _describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
