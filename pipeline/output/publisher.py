"""The decisions on NATS: one message per record on ``decisions.<box>`` (``bridge.publish_decisions``).

A destination of the output process like the events file and stdout: its own
:class:`~pipeline.output.writers.BackgroundWriter` thread renders each record and hands a batch (up to 64)
to :meth:`DecisionPublisher.publish`, which publishes them, one message each, on the NATS client's event
loop (a thread of its own) and then flushes (a PING the server answers once it holds them). The payload is
the events file's line without its newline (``orjson.dumps(record)``, ``run_id`` included), so a
subscriber and the file agree byte for byte (trimmed)::

    decisions.tokyo  {"event":"open",...,"id":3,...,"instrument":"BTC/USDT",...,"run_id":"20261207T063000Z-3fa2c1"}

The connection uses the bridge's settings and credentials (:func:`~pipeline.bridge.process.connect_options`,
named ``pipeline-output-<box>`` on the server) and is made in the background: a server that is down at start
holds up neither the pipeline nor the other destinations. nats-py keeps trying (every
:data:`RECONNECT_WAIT_S`) until a server answers, and once connected it reconnects for ever. While it is not
connected a batch is not published and never waits: the writer counts its records as dropped (the slot's
``output_dropped``, the summary's OUTPUT DROPPED line) and logs that at most every 10 s, with the reason
:func:`~pipeline.bridge.process.describe_connect_error` gives. A decision delivered minutes late is worth
less than one dropped and counted, and the ring, not this client, is the pipeline's buffer. Only the first
batch waits, for the first connection attempt to end (at most ``bridge.connect_timeout_s``), so a run whose
server is up loses nothing at its start.

At stop the writer publishes what is queued until the output's close deadline, then :meth:`close` ends a
connection attempt still under way, or closes the connection (the client sends what it holds first), and
ends the loop, within :data:`CLOSE_TIMEOUT_S` each.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import ssl
import threading

from pipeline.bridge.codec import decisions_subject
from pipeline.bridge.process import BridgeError, connect_attempt, connect_options, describe_connect_error
from pipeline.output.writers import ERROR_LOG_INTERVAL_S
from pipeline.runtime import RateLimitedLog

log = logging.getLogger("pipeline.output")

RECONNECT_WAIT_S = 0.5      # between two connection attempts, before the first connection and after a loss
FLUSH_TIMEOUT_S = 1.0       # the server confirms a batch within this, or its records count as dropped
CLOSE_TIMEOUT_S = 0.5       # at stop: ending a connection attempt, then closing the connection


class DecisionPublisher:
    """The NATS connection for ``bridge`` (a :class:`~pipeline.config.BridgeConfig`) and its writer's opener.

    ``name`` is the writer's name in the log; :meth:`open` is the writer's opener, :meth:`publish` its
    ``write`` (with ``joined=False``: a list of payloads, one message each), :meth:`close` its close.
    ``environ`` is where ``bridge.token_env`` is looked up."""

    def __init__(self, bridge, environ=None):
        self.bridge = bridge
        self.url = bridge.nats_url
        self.subject = decisions_subject(bridge.box)
        self.name = f"NATS decisions ({self.subject} at {self.url})"
        self._environ = os.environ if environ is None else environ
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = asyncio.Event()
        self._nc = None
        self._reason = f"not connected to NATS at {self.url} yet"
        self._attempted = threading.Event()     # the first connection attempt has ended, either way
        self._told_waiting = False
        self.rate_log = RateLimitedLog(ERROR_LOG_INTERVAL_S)

    # ---------------------------------------------------------------- the writer thread's side
    def open(self):
        """``(publish, close)``; starts the client's thread and returns at once (it connects in the background).

        Credentials that cannot be read (checked at start-up, so only when they changed since) leave it
        unconnected: every batch is dropped, with that reason."""
        try:
            options = {**connect_options(self.bridge, self._environ), "name": f"pipeline-output-{self.bridge.box}"}
        except BridgeError as exc:
            self._reason = str(exc)
        except (OSError, ssl.SSLError) as exc:
            self._reason = f"bridge: cannot read the credentials or TLS files: {exc}"
        else:
            logging.getLogger("nats").setLevel(logging.CRITICAL)     # its errors reach us through error_cb
            self._loop = asyncio.new_event_loop()
            self._loop.set_exception_handler(self._on_loop_error)
            self._thread = threading.Thread(target=self._run, args=(options,), name="pipeline-output-nats",
                                            daemon=True)
            self._thread.start()
            return self.publish, self.close
        self._attempted.set()
        log.error("%s: decisions are not published: %s", self.name, self._reason)
        return self.publish, None

    def publish(self, payloads: list[bytes]) -> None:
        """One message per payload on :attr:`subject`, then a flush; OSError (the writer counts the batch
        as dropped) when not connected, or when the server does not confirm within :data:`FLUSH_TIMEOUT_S`."""
        self._attempted.wait(self.bridge.connect_timeout_s + 1.0)
        nc, loop = self._nc, self._loop
        if nc is None or loop is None or not nc.is_connected:
            raise OSError(self._reason)
        try:
            future = asyncio.run_coroutine_threadsafe(self._send(nc, payloads), loop)
            future.result(FLUSH_TIMEOUT_S + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise OSError(f"NATS at {self.url} did not confirm the batch within {FLUSH_TIMEOUT_S:g} s") from None
        except Exception as exc:
            raise OSError(f"cannot publish on {self.subject} at {self.url} ({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        """End the connection (or the attempt under way) and the client's thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):         # the loop has ended already
            loop.call_soon_threadsafe(self._stopping.set)
        thread.join(2 * CLOSE_TIMEOUT_S + 1.0)

    # ---------------------------------------------------------------- the client's thread
    def _run(self, options: dict) -> None:
        loop = self._loop
        assert loop is not None
        try:
            loop.run_until_complete(self._connection(options))
        except Exception as exc:  # noqa: BLE001 - the writer goes on, dropping and counting
            self._reason = f"the NATS client stopped ({type(exc).__name__}: {exc})"
            log.error("%s: %s; decisions are no longer published", self.name, self._reason)
        finally:
            self._nc = None
            with contextlib.suppress(Exception):
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _send(self, nc, payloads: list[bytes]) -> None:
        for payload in payloads:
            if not nc.is_connected:         # never into the client's buffer for a later connection: dropped now
                raise ConnectionError(f"lost the NATS connection to {self.url}; reconnecting")
            await nc.publish(self.subject, payload)
        await nc.flush(FLUSH_TIMEOUT_S)

    async def _connection(self, options: dict) -> None:
        import nats
        stopping = asyncio.ensure_future(self._stopping.wait())
        while not self._stopping.is_set():
            # max_reconnect_attempts=-1: nats-py tries the first connection, and every one after a loss, until a
            # server answers; an attempt abandoned at stop is cancelled and awaited, so its outcome is read
            connecting = connect_attempt(nats.connect(
                **options, connect_timeout=self.bridge.connect_timeout_s, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnect_time_wait=RECONNECT_WAIT_S, flush_timeout=FLUSH_TIMEOUT_S,
                error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected))
            await asyncio.wait([connecting, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(connecting, CLOSE_TIMEOUT_S)
                break
            error = connecting.exception()
            if error is None:
                self._nc = connecting.result()
                self._attempted.set()
                log.info("publishing decisions on %s at %s", self.subject, self.url)
                await stopping
                break
            await self._on_error(error)         # one nats-py does not retry itself: try again after a wait
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopping), RECONNECT_WAIT_S)
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT_S)
        stopping.cancel()

    async def _on_error(self, exc: BaseException) -> None:
        """Every failed attempt, and what the server says on a working connection. Said: the first failure
        before any connection, refused credentials and a denied subject (the server drops those messages
        without telling the publisher anything else); the rest only becomes the reason of the drops."""
        message, refused = describe_connect_error(exc, self.url)
        nc = self._nc
        if nc is not None and nc.is_connected:
            if "permissions violation" in str(exc).lower():
                self.rate_log.warning("denied", f"{self.name}: {message}")
            return
        self._reason = message
        self._attempted.set()
        if refused:
            self.rate_log.warning("refused", f"{self.name}: {message}")
        elif nc is None and not self._told_waiting:
            self._told_waiting = True
            log.warning("%s: %s; decisions are dropped (and counted) until it answers", self.name, message)

    async def _on_disconnected(self) -> None:
        self._reason = f"lost the NATS connection to {self.url}; reconnecting"
        if self._nc is not None and not self._stopping.is_set():
            self.rate_log.warning("disconnected", f"{self.name}: {self._reason}; decisions are dropped (and "
                                                  f"counted) until it is back")

    async def _on_reconnected(self) -> None:
        log.info("publishing decisions on %s at %s again", self.subject, self.url)

    def _on_loop_error(self, loop, context: dict) -> None:
        """nats-py's own tasks may end in an error nobody reads (a connection torn down): one line, no traceback."""
        exc = context.get("exception")
        log.debug("%s: %s%s", self.name, context.get("message", ""), f" ({type(exc).__name__}: {exc})" if exc else "")
