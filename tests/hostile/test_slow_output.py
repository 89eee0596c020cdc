"""A slow disk or a pipe nobody reads costs dropped output, never detection.

The detector's loop only queues a record; a thread per destination (the events file, stdout) writes it.
When a destination cannot keep up, its buffer fills and further records are dropped from it and counted
(the slot's ``output_dropped``, the summary), while the loop keeps scanning and opening. At stop the
buffers are drained within a bounded time and the process exits 0.

These run the real detector process (``pipeline.detector.process.main``) on a real board whose rows the
test keeps changing, writing to a FIFO or a stdout pipe that is never read. The buffer is made small and
the pipe's kernel buffer 4 KiB so that it fills within a second.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest

from pipeline.board import Board, RowStatus, RowWriter, RulesWriter
from pipeline.board.doorbell import Doorbell
from pipeline.config import parse_config
from pipeline.output.writers import BATCH_RECORDS, BackgroundWriter, Outputs
from pipeline.supervisor.core import STOP_TIMEOUT_S, plan_rows
from tests.conftest import REPO, wait_until
from tests.engine_harness import rules as trading_rules

SLOT = 2
N_PROCS = 4
DEPTH = 5
QUEUE = 50                      # records a destination may hold in the child
PIPE_SIZE = 4096

CHILD = """
import json, sys
args = json.loads(sys.argv[1])
from pipeline.output import writers as outputs
outputs.QUEUE_RECORDS = args["queue"]
from pipeline.model import ProcessRole
from pipeline.config import parse_config
from pipeline.detector.process import main
from pipeline.runtime import ProcessSpec
from pipeline.supervisor.core import plan_rows
config = parse_config(args["config"], available_cores=frozenset({0}))
spec = ProcessSpec(key="detector", role=ProcessRole.DETECTOR, title="pipeline: detector", slot=args["slot"],
                   cores=(), board_name=args["board"], depth=args["depth"], doorbell_fd=args["fd"],
                   rows=tuple(plan_rows(config)), supervisor_pid=args["parent"])
main(spec, config)
"""


def raw_config(board_name, output, print_opportunities):
    return {"board": {"name": board_name, "depth": DEPTH},
            "venues": {"binance": {"instruments": ["BTC/USDT", "ETH/USDT"], "url": "wss://x"},
                       "bybit": {"instruments": ["BTC/USDT", "ETH/USDT"], "url": "wss://y"}},
            "detector": {"output": str(output), "print_opportunities": print_opportunities,
                         "threshold_bps": 0.0, "reopen_ms": 0, "shadow_latencies_ms": [1.0]}}


class Market:
    """A board with four rows that the test keeps changing: every step opens or closes on both instruments."""

    def __init__(self, board_name, raw):
        config = parse_config(raw, available_cores=frozenset({0}))
        self.rows = plan_rows(config)
        self.fd = Doorbell.create_fd()
        self.board = Board.create(board_name, len(self.rows), DEPTH, N_PROCS)
        self.writer = RowWriter(self.board, [r.row for r in self.rows])
        rules = RulesWriter(self.board, [r.row for r in self.rows])
        for r in self.rows:             # the venues' trading rules, as a feed publishes them: fine grids, no minimum
            rules.write(r.row, trading_rules(r.venue, tick="0.000001", step="0.0001"))
        self.doorbell = Doorbell(self.board.buf, self.fd)
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        apart = self.steps % 2          # bybit 60 bps above binance, then level again
        now = time.time_ns()
        for r in self.rows:
            base = 100.0 if r.instrument == "BTC/USDT" else 50.0
            jitter = base * 1e-6 * (self.steps % 7)     # every leg moves: none is a stale quote
            mid = base * (1 + 0.006 * apart) if r.venue == "bybit" else base
            mid += jitter
            self.writer.write(r.row, int(RowStatus.LIVE), [(mid - base * 5e-5, 1.0)], [(mid + base * 5e-5, 1.0)],
                              now, now)
        self.doorbell.ring_if_sleeping()

    def counter(self, name: str) -> int:
        return int(self.board.procs[SLOT][name])

    def close(self) -> None:
        self.writer = None
        self.board.destroy()
        os.close(self.fd)


@pytest.fixture
def market_for(board_name):
    """``(market, raw config)`` for a detector writing ``output``."""
    made = []

    def make(output, print_opportunities):
        raw = raw_config(board_name, output, print_opportunities)
        made.append(Market(board_name, raw))
        return made[-1], raw
    yield make
    for market in made:
        market.close()


def start_detector(market, raw, stdout, stderr):
    args = {"queue": QUEUE, "config": raw, "slot": SLOT, "board": raw["board"]["name"], "depth": DEPTH,
            "fd": market.fd, "parent": os.getpid()}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], cwd=REPO, stdout=stdout,
                            stderr=stderr, pass_fds=(market.fd,))


def drive_until_dropping(market, process, stderr_path):
    """Step the market until the detector has started and is dropping; then check it keeps detecting."""
    deadline = time.monotonic() + 30
    while market.counter("pid") != process.pid or market.counter("scans") == 0:
        assert process.poll() is None, stderr_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "the detector did not start"
        time.sleep(0.02)
    while market.counter("output_dropped") == 0:
        assert process.poll() is None, stderr_path.read_text()[-3000:]
        assert time.monotonic() < deadline, (f"nothing dropped after {market.steps} steps, "
                                             f"{market.counter('opportunities')} opportunities")
        market.step()
        time.sleep(0.002)
    # output is blocked now: detection goes on, and so do the drops
    before = {name: market.counter(name) for name in ("scans", "opportunities", "output_dropped")}
    for _ in range(200):
        market.step()
        time.sleep(0.002)

    def went_on():
        assert process.poll() is None, stderr_path.read_text()[-3000:]
        now = {name: market.counter(name) for name in ("scans", "opportunities", "output_dropped")}
        return (now["scans"] > before["scans"] and now["opportunities"] >= before["opportunities"] + 50
                and now["output_dropped"] > before["output_dropped"] and now)
    try:
        return wait_until(went_on, 10, message="detection and drops to go on while the output is blocked")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: before {before}, now "
                             f"{ {name: market.counter(name) for name in before} }") from None


def stop(process) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_TIMEOUT_S + 5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError("the detector did not stop") from None
    assert code == 0
    return time.monotonic() - started


@pytest.mark.parametrize("reader", ["opened, never reads", "never opened"])
def test_an_events_fifo_nobody_reads_drops_records_and_detection_goes_on(tmp_path, market_for, reader):
    fifo = tmp_path / "events.jsonl"
    os.mkfifo(fifo, 0o600)
    read_end = None
    if reader == "opened, never reads":
        read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    try:
        market, raw = market_for(fifo, False)
        stderr_path = tmp_path / "stderr.log"
        with open(stderr_path, "wb") as stderr:
            process = start_detector(market, raw, subprocess.DEVNULL, stderr)
        try:
            counts = drive_until_dropping(market, process, stderr_path)
            took = stop(process)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert took < STOP_TIMEOUT_S, f"stopping took {took:.1f} s: the supervisor would have killed it"
        log = stderr_path.read_text()
        assert "events file" in log and "still blocked at stop" in log, log[-3000:]
        assert market.counter("output_dropped") >= counts["output_dropped"]
    finally:
        if read_end is not None:
            os.close(read_end)


def test_a_stdout_pipe_nobody_reads_drops_lines_and_neither_detection_nor_the_file_waits(tmp_path, market_for):
    out = tmp_path / "events.jsonl"
    market, raw = market_for(out, True)
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        process = start_detector(market, raw, subprocess.PIPE, stderr)
    try:
        fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        counts = drive_until_dropping(market, process, stderr_path)
        took = stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    assert took < STOP_TIMEOUT_S, f"stopping took {took:.1f} s: the supervisor would have killed it"
    # the file was not held up by stdout: every record is there, each open closed at stop
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    opens = {r["id"] for r in records if r["event"] == "open"}
    closes = {r["id"] for r in records if r["event"] == "close"}
    assert len(opens) >= counts["opportunities"] and opens == closes
    log = stderr_path.read_text()
    assert "stdout was not read; the summary it could not print" in log, log[-3000:]
    assert "lines not printed" in log and "records not written to the events file" not in log
    assert market.counter("output_dropped") >= counts["output_dropped"]


# ---------------------------------------------------------------- in process: order, drain, counting

class Gate(io.StringIO):
    """A stdout that blocks every write until opened."""

    def __init__(self):
        super().__init__()
        self.open = threading.Event()

    def write(self, text):
        self.open.wait()
        return super().write(text)


def record(n: int, event: str = "open") -> dict:
    return {"event": event, "id": n, "instrument": "BTC/USDT", "buy_exchange": "binance", "sell_exchange": "bybit",
            "base_currency": "BTC", "quote_currency": "USDT", "buy_price": 100.0, "sell_price": 100.5,
            "qty_base": 0.5, "gross_bps": 50.0, "net_bps": 30.0, "profit_quote": 0.15}


def test_a_clean_stop_drains_everything_in_order_and_prints_the_summary_last(tmp_path):
    out = tmp_path / "o.jsonl"
    stdout = io.StringIO()
    outputs = Outputs(str(out), True, stdout=stdout, background=True, run_id="r1")
    for n in range(5000):
        outputs.write(record(n))
    assert outputs.close(lambda: "the summary") is True
    assert [orjson.loads(line)["id"] for line in out.read_bytes().splitlines()] == list(range(5000))
    lines = stdout.getvalue().splitlines()
    assert len(lines) == 5001 and lines[-1] == "the summary" and lines[0].startswith("OPEN  BTC/USDT")
    assert outputs.dropped == 0 and oct(os.stat(out).st_mode & 0o777) == oct(0o640 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_blocked_writer_never_blocks_the_caller_and_its_drops_are_counted(tmp_path):
    out = tmp_path / "o.jsonl"
    stdout = Gate()
    outputs = Outputs(str(out), True, stdout=stdout, background=True, queue_records=300)
    started = time.monotonic()
    for n in range(1000):
        outputs.write(record(n))
        if n % 50 == 49:
            time.sleep(0.005)       # the loop's idle moments, when the writers get the GIL
    assert time.monotonic() - started < 1.0
    # 300 wait (and the writer may hold one more batch in its blocked write); the rest were dropped
    assert 1000 - 300 - BATCH_RECORDS <= outputs.stdout_writer.full <= 1000 - 300
    assert outputs.dropped_by_destination() == {"stdout": outputs.stdout_writer.full}
    stdout.open.set()
    assert outputs.close("done") is True
    assert outputs.dropped == outputs.stdout_writer.full
    assert len(out.read_bytes().splitlines()) == 1000      # the file was never held up by stdout
    assert stdout.getvalue().endswith("done\n")


def test_a_writer_still_blocked_at_stop_is_given_up_in_bounded_time(tmp_path):
    stdout = Gate()
    outputs = Outputs(None, True, stdout=stdout, background=True, queue_records=100)
    for n in range(30):
        outputs.write(record(n))
    started = time.monotonic()
    assert outputs.close("summary", timeout_s=0.2) is False
    assert time.monotonic() - started < 2.0
    assert outputs.dropped == 30                          # the summary is not counted as a record
    stdout.open.set()


def test_a_fifo_nobody_opened_does_not_hold_up_the_constructor_and_a_planted_link_still_fails(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    outputs = Outputs(str(fifo), False, background=True, queue_records=5)
    assert time.monotonic() - started < 2.0
    for n in range(20):
        outputs.write(record(n))
    assert outputs.close(timeout_s=0.1) is True            # nothing for stdout; the file given up
    assert outputs.dropped == 20
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(OSError):
        Outputs(str(tmp_path / "link"), False, background=True)
    assert victim.read_text() == "precious\n"


def test_a_failed_write_is_counted_and_the_writer_goes_on():
    calls = []

    def opener():
        def write(data):
            calls.append(data)
            if len(calls) == 1:
                raise OSError(28, "No space left on device")
        return write, None
    writer = BackgroundWriter("test", lambda r: r, opener, capacity=100)
    writer.put(b"a\n")
    wait_until(lambda: writer.failed, 5, message="the failed write counted")
    writer.put(b"b\n")
    assert writer.close(time.monotonic() + 5) is True
    assert writer.failed == 1 and writer.written == 1 and calls == [b"a\n", b"b\n"]
