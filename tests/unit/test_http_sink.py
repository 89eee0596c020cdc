"""HttpSink against a real local HTTP server whose answers each test scripts.

Every timeout is small (0.2 s) and every wait is bounded, so the file runs in a
few seconds; a hanging server is released when its test ends.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from pipeline.errors import PipelineError
from pipeline.output.sink import HttpSink, SinkError, SinkStatistics
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(30)

TOKEN = "tok-5f3a9c-do-not-log"
ENV = "ARB_SINK_TOKEN"
RECORD = {"event": "open", "instrument": "BTC/USDT", "buy_exchange": "binance", "sell_exchange": "okx",
          "buy_price": 64000.5, "sell_price": 64100.25, "net_bps": 12.3456, "time_ns": 1_700_000_000_000_000_000}


class Scripted:
    """What the server answers, in order, then ``default``; and what it received."""

    def __init__(self):
        self.plan: deque = deque()
        self.default = ("status", 200, {})
        self.requests: list[dict] = []
        self.release = threading.Event()       # ends every "hang"
        self.lock = threading.Lock()

    def next_action(self):
        with self.lock:
            return self.plan.popleft() if self.plan else self.default

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [r["body"] for r in self.requests]


def make_handler(script: Scripted):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"          # keep-alive, so connection reuse is exercised

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with script.lock:
                script.requests.append({"path": self.path, "headers": dict(self.headers.items()),
                                        "body": body, "at": time.monotonic(), "peer": self.client_address})
            action = script.next_action()
            if action[0] == "hang":
                script.release.wait(action[1])
                self.close_connection = True
                return
            _, status, headers = action
            if action[0] == "status-then-close":      # close the keep-alive connection without saying so
                self.close_connection = True
            payload = b'{"ok":true}' if status < 300 else b'{"error":"no"}'
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass

        def log_message(self, *args):        # keep test output clean
            pass

    return Handler


@pytest.fixture
def server():
    script = Scripted()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(script))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1/opportunities"
    yield script
    script.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(2)


@pytest.fixture
def sinks():
    """Build sinks that are always closed at the end of the test."""
    made: list[HttpSink] = []

    def build(url, token=TOKEN, **kw):
        kw.setdefault("timeout_s", 0.2)
        kw.setdefault("backoff_base_s", 0.01)
        kw.setdefault("max_backoff_s", 0.05)
        sink = HttpSink(url, token, token_env=ENV, **kw)
        made.append(sink)
        return sink

    yield build
    for sink in made:
        sink.close(0.5)


def stats_when(sink: HttpSink, predicate, timeout: float = 5.0) -> SinkStatistics:
    return wait_for(lambda: (lambda s: s if predicate(s) else None)(sink.statistics()), timeout,
                    interval=0.01, message="sink statistics")


def test_body_and_bearer_header_arrive_exactly_on_one_connection(server, sinks):
    sink = sinks(server.url)
    sink.start()
    second = dict(RECORD, event="close", duration_ms=12.5)
    assert sink.submit(RECORD) and sink.submit(second)
    st = stats_when(sink, lambda s: s.sent == 2)
    assert st == SinkStatistics(sent=2, dropped=0, rejected=0, throttled=0, failed=0, queued=0)
    assert server.bodies() == [orjson.dumps(RECORD), orjson.dumps(second)]
    assert orjson.loads(server.bodies()[0]) == RECORD
    first = server.requests[0]
    assert first["path"] == "/v1/opportunities"
    assert first["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert first["headers"]["Content-Type"] == "application/json"
    assert server.requests[0]["peer"] == server.requests[1]["peer"]     # persistent connection reused


def test_no_token_sends_no_authorization_header(server, sinks):
    sink = sinks(server.url, token=None)
    sink.start()
    sink.submit(RECORD)
    stats_when(sink, lambda s: s.sent == 1)
    assert "Authorization" not in server.requests[0]["headers"]


def test_401_counted_rejected_logged_once_without_the_token(server, sinks, caplog):
    server.default = ("status", 401, {})
    sink = sinks(server.url)
    caplog.set_level(logging.DEBUG, logger="pipeline.sink")
    sink.start()
    sink.submit(RECORD)
    sink.submit(RECORD)
    st = stats_when(sink, lambda s: s.rejected == 2)
    assert st.sent == 0 and st.failed == 0 and st.throttled == 0
    assert len(server.requests) == 2                                    # the record is not retried
    errors = [r for r in caplog.records if r.name == "pipeline.sink" and r.levelno >= logging.ERROR]
    assert len(errors) == 1                                             # once per episode
    message = errors[0].getMessage()
    assert "rejected our token (401)" in message and ENV in message and server.url in message
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(sink)


def test_rejection_episode_ends_when_a_record_is_accepted(server, sinks, caplog):
    server.plan.extend([("status", 403, {}), ("status", 200, {}), ("status", 403, {})])
    sink = sinks(server.url)
    caplog.set_level(logging.INFO, logger="pipeline.sink")
    sink.start()
    for _ in range(3):
        sink.submit(RECORD)
    stats_when(sink, lambda s: s.rejected == 2 and s.sent == 1)

    def errors():   # the sink thread counts a rejection, then logs it: wait for the second line too
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    wait_for(lambda: len(errors()) >= 2, 5, interval=0.01, message="the second rejection logged")
    assert len(errors()) == 2 and all("(403)" in m for m in errors())


def test_429_waits_for_retry_after_then_delivers(server, sinks):
    server.plan.append(("status", 429, {"Retry-After": "0.1"}))
    sink = sinks(server.url, max_backoff_s=5.0)
    sink.start()
    sink.submit(RECORD)
    st = stats_when(sink, lambda s: s.sent == 1)
    assert st.throttled == 1 and st.failed == 0 and st.rejected == 0
    assert server.bodies() == [orjson.dumps(RECORD)] * 2                # the same record, resent
    assert server.requests[1]["at"] - server.requests[0]["at"] >= 0.09


def test_500_then_200_delivered_after_retry(server, sinks):
    server.plan.append(("status", 500, {}))
    sink = sinks(server.url)
    sink.start()
    sink.submit(RECORD)
    st = stats_when(sink, lambda s: s.sent == 1)
    assert st.failed == 0 and len(server.requests) == 2
    assert server.bodies()[0] == server.bodies()[1] == orjson.dumps(RECORD)


def test_persistent_5xx_fails_after_bounded_retries(server, sinks, caplog):
    server.default = ("status", 503, {})
    sink = sinks(server.url, retries=2)
    caplog.set_level(logging.WARNING, logger="pipeline.sink")
    sink.start()
    sink.submit(RECORD)
    sink.submit(RECORD)
    st = stats_when(sink, lambda s: s.failed == 2)
    assert st.sent == 0 and len(server.requests) == 6                   # 1 try + 2 retries each
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "503" in warnings[0]


def test_hanging_server_times_out_counts_failed_and_close_returns(server, sinks, caplog):
    server.default = ("hang", 10.0)
    sink = sinks(server.url, retries=2)
    caplog.set_level(logging.WARNING, logger="pipeline.sink")
    sink.start()
    sink.submit(RECORD)
    st = stats_when(sink, lambda s: s.failed == 1, timeout=5.0)         # ~3 x 0.2 s timeouts
    assert st.sent == 0 and len(server.requests) == 3
    assert any("no answer within 0.2 s" in r.getMessage() for r in caplog.records)
    # Hang again and close while the request is stuck: close still returns, within its bound.
    sink.submit(RECORD)
    wait_for(lambda: len(server.requests) == 4, 2.0, interval=0.01, message="stuck request")
    started = time.monotonic()
    assert sink.close(0.3) is True
    assert time.monotonic() - started < 2.0
    st = sink.statistics()
    assert st.failed == 1 and st.dropped == 1 and st.queued == 0


def test_full_queue_drops_and_counts_without_blocking(server, sinks):
    server.default = ("hang", 10.0)
    sink = sinks(server.url, queue_size=10, timeout_s=5.0)
    sink.start()
    assert sink.submit(RECORD)
    wait_for(lambda: len(server.requests) == 1, 2.0, interval=0.01, message="first request")
    results = [sink.submit(dict(RECORD, n=i)) for i in range(10_000)]  # the worker is stuck
    st = sink.statistics()
    assert results.count(True) == 10 and results[:10] == [True] * 10
    assert st.dropped == 10_000 - 10 and st.queued == 10 and st.sent == 0
    assert sink.close(0.3) is True                                     # does not wait for the queue
    st = sink.statistics()
    assert st.queued == 0 and st.dropped == 10_000 - 10 + 11           # queue + in-flight abandoned
    assert sink.submit(RECORD) is False                                 # closed: refused, counted
    assert sink.statistics().dropped == 10_000 - 10 + 12


def test_close_flushes_what_is_queued(server, sinks):
    sink = sinks(server.url)
    for i in range(5):
        assert sink.submit(dict(RECORD, n=i))                           # queued before start
    sink.start()
    assert sink.close(2.0) is True
    assert sink.statistics() == SinkStatistics(sent=5, dropped=0, rejected=0, throttled=0, failed=0, queued=0)
    assert [orjson.loads(b)["n"] for b in server.bodies()] == [0, 1, 2, 3, 4]
    with pytest.raises(SinkError):
        sink.start()


def test_reconnects_after_server_closes_the_connection(server, sinks):
    server.plan.append(("status", 200, {"Connection": "close"}))
    sink = sinks(server.url)
    sink.start()
    sink.submit(RECORD)
    sink.submit(RECORD)
    st = stats_when(sink, lambda s: s.sent == 2)
    assert st.failed == 0
    assert server.requests[0]["peer"] != server.requests[1]["peer"]


def test_silently_closed_keepalive_is_resent_on_a_fresh_connection(server, sinks):
    server.plan.append(("status-then-close", 200, {}))
    sink = sinks(server.url, retries=0)                 # the resend is not a counted retry
    sink.start()
    sink.submit(RECORD)
    stats_when(sink, lambda s: s.sent == 1)
    time.sleep(0.05)                                    # let the server finish closing its end
    sink.submit(RECORD)
    st = stats_when(sink, lambda s: s.sent == 2)
    assert st.failed == 0 and len(server.requests) == 2


def test_connection_refused_fails_after_retries(sinks):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = sinks(f"http://127.0.0.1:{port}/x", retries=2)
    sink.start()
    sink.submit(RECORD)
    st = stats_when(sink, lambda s: s.failed == 1)
    assert st.sent == 0


def test_unserializable_record_is_failed_not_fatal(server, sinks):
    sink = sinks(server.url)
    sink.start()
    sink.submit({"bad": object()})
    sink.submit(RECORD)
    st = stats_when(sink, lambda s: s.sent == 1)
    assert st.failed == 1


@pytest.mark.parametrize("url", ["ftp://host/x", "not a url", "http:///nohost", "http://user:pw@host/x"])
def test_bad_urls_are_refused(url):
    with pytest.raises(SinkError):
        HttpSink(url, None)


def test_unusable_token_is_refused_without_echoing_it():
    with pytest.raises(SinkError) as info:
        HttpSink("http://127.0.0.1:9/x", "abc\r\nX-Injected: 1", token_env=ENV)
    assert "X-Injected" not in str(info.value) and ENV in str(info.value)
    assert isinstance(info.value, PipelineError)
