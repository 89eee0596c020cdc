"""The example executor follows a real detector's decision stream and "sends" what each open says: on a board the
test drives, and on the whole demo pipeline.

A board planned from a config, rows the test keeps moving (two venues, two instruments: every step opens or
closes on both), the real detector process writing its decisions into the board's ring, and
``examples/paper_executor.py`` following that ring from another process. Every open the detector wrote to
its events file while the executor followed must show up as a paper order at the decision's size and
limit prices, with a reaction latency, and nothing may be lost.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from pipeline.board import BoardPlan, RowStatus, RowWriter, RulesWriter
from pipeline.board.doorbell import Doorbell
from pipeline.config import parse_config
from tests.conftest import REPO, demo_config, wait_until, write_config
from tests.engine_harness import rules as trading_rules
from tests.integration.test_process_faults import start, stop

pytestmark = pytest.mark.integration

DEPTH = 2
DETECTOR = """
import json, sys
args = json.loads(sys.argv[1])
from pipeline.model import ProcessRole
from pipeline.config import parse_config
from pipeline.detector.process import main
from pipeline.runtime import ProcessSpec
from pipeline.board import BoardPlan
config = parse_config(args["config"], available_cores=frozenset({0}))
spec = ProcessSpec(key="detector", role=ProcessRole.DETECTOR, title="pipeline: detector", slot=args["slot"],
                   cores=(), board_name=args["board"], depth=args["depth"], doorbell_fd=args["fd"],
                   rows=BoardPlan.from_config(config).rows, supervisor_pid=args["parent"])
main(spec, config)
"""


def test_the_paper_executor_sends_both_legs_of_every_open_it_follows(board_name, tmp_path):
    events = tmp_path / "events.jsonl"
    raw = {"board": {"name": board_name, "depth": DEPTH},
           "venues": {"binance": {"instruments": ["BTC/USDT", "ETH/USDT"], "url": "wss://x"},
                      "bybit": {"instruments": ["BTC/USDT", "ETH/USDT"], "url": "wss://y"}},
           "detector": {"output": str(events), "print_opportunities": False, "threshold_bps": 0.0,
                        "reopen_ms": 0, "shadow_latencies_ms": [1.0], "decision_ring": 256}}
    config = parse_config(raw, available_cores=frozenset({0}))
    plan = BoardPlan.from_config(config)
    board = plan.create_board(board_name, DEPTH)
    fd = Doorbell.create_fd()
    processes = []
    try:
        writers = {venue: RowWriter(board, [r.row for r in plan.rows if r.venue == venue])     # one per feed
                   for venue in ("binance", "bybit")}
        rules = RulesWriter(board, [r.row for r in plan.rows])
        for r in plan.rows:
            rules.write(r.row, trading_rules(r.venue, tick="0.000001", step="0.0001"))
        doorbell = Doorbell(board.buf, fd)
        args = {"config": raw, "slot": plan.slot("detector").slot, "board": board_name, "depth": DEPTH, "fd": fd,
                "parent": os.getpid()}
        detector = subprocess.Popen([sys.executable, "-c", DETECTOR, json.dumps(args)], cwd=REPO,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(fd,))
        processes.append(detector)
        executor = subprocess.Popen([sys.executable, str(REPO / "examples" / "paper_executor.py"), "--board",
                                     board_name, "--duration", "60"], cwd=tmp_path, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        processes.append(executor)
        assert executor.stdout.readline() == f"paper executor: following the decisions on board {board_name!r}\n"
        steps = [0]

        def step():
            steps[0] += 1
            apart = steps[0] % 2                    # bybit 60 bps above binance, then level again
            now = time.time_ns()
            for r in plan.rows:
                base = 100.0 if r.instrument == "BTC/USDT" else 50.0
                mid = (base * (1 + 0.006 * apart) if r.venue == "bybit" else base) + base * 1e-6 * (steps[0] % 7)
                writers[r.venue].write(r.row, int(RowStatus.LIVE), [(mid - base * 5e-5, 1.0)],
                                       [(mid + base * 5e-5, 1.0)], now, now)
            doorbell.ring_if_sleeping()

        def opened():
            assert detector.poll() is None, detector.stderr.read()
            step()
            text = events.read_bytes() if events.exists() else b""
            return text.count(b'"event":"open"') >= 6
        wait_until(opened, 30, interval=0.02, message="six opens in the events file")
        detector.send_signal(signal.SIGTERM)
        assert detector.wait(timeout=15) == 0
        executor.send_signal(signal.SIGTERM)     # (SIGINT may be ignored: a shell's background job inherits that)
        out, err = executor.communicate(timeout=15)
        assert executor.returncode == 0, err
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        writers = rules = doorbell = None
        board.destroy()
        os.close(fd)
    records = [orjson.loads(line) for line in events.read_bytes().splitlines()]
    opens = [r for r in records if r["event"] == "open"]
    paper = {int(m["id"]): m for m in re.finditer(
        r"PAPER OPEN  #(?P<id>\d+) (?P<instrument>\S+) BUY (?P<qty>\S+) @ (?P<buy>\S+) on (?P<buy_venue>\w+), "
        r"SELL (?P=qty) @ (?P<sell>\S+) on (?P<sell_venue>\w+)  expected \S+ USDT  reaction (?P<us>\d+) µs", out)}
    assert len(opens) >= 6 and sorted(paper) == [r["id"] for r in opens], out
    for record in opens:
        line = paper[record["id"]]
        assert (line["instrument"], line["buy_venue"], line["sell_venue"], line["qty"], line["buy"], line["sell"]) \
            == (record["instrument"], record["buy_exchange"], record["sell_exchange"], f"{record['qty_base']:g}",
                f"{record['buy_limit_price']:g}", f"{record['sell_limit_price']:g}")
        assert int(line["us"]) < 10_000_000
    closes = sum(1 for r in records if r["event"] == "close")
    assert out.count("PAPER CLOSE #") == closes
    assert re.search(rf"paper executor: {len(opens) + closes + out.count('PAPER UPDATE')} decisions, "
                     rf"{2 * len(opens)} orders sent on paper, .* lost 0\n$", out), out[-500:]


def test_the_paper_executor_follows_the_demo_and_sends_the_legs_of_every_open_it_saw(tmp_path, board_name):
    """The whole demo pipeline (simulator, feeds, detector, output process) and the executor following its
    board for a few seconds: every open written after the executor attached is a paper order with the
    decision's venues, size and limit prices, and the executor ends on its own when the pipeline stops."""
    events = tmp_path / "o.jsonl"
    pipeline = start(write_config(tmp_path / "c.yaml", demo_config(board_name, events)))
    executor = None
    try:
        wait_until(lambda: (Path("/dev/shm") / board_name).exists(), 30, message="the demo's board")
        executor = subprocess.Popen([sys.executable, str(REPO / "examples" / "paper_executor.py"), "--board",
                                     board_name, "--duration", "120"], cwd=tmp_path, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        assert executor.stdout.readline() == f"paper executor: following the decisions on board {board_name!r}\n"
        attached = len(events.read_bytes().splitlines()) if events.exists() else 0

        def opens_since() -> int:
            lines = events.read_bytes().splitlines()[attached:] if events.exists() else []
            return sum(1 for line in lines if b'"event":"open"' in line)
        wait_until(lambda: opens_since() >= 3, 60, interval=0.05, message="three opens after the executor attached")
    finally:
        output = stop(pipeline)
        if executor is not None:
            try:
                out, err = executor.communicate(timeout=30)      # the stream ends once the supervisor has gone
            except subprocess.TimeoutExpired:
                executor.kill()
                out, err = executor.communicate()
    assert pipeline.returncode == 0, output[-2000:]
    assert executor.returncode == 0, err[-2000:]
    records = [orjson.loads(line) for line in events.read_bytes().splitlines()]
    paper = {int(m["id"]): m for m in re.finditer(
        r"PAPER OPEN  #(?P<id>\d+) (?P<instrument>\S+) BUY (?P<qty>\S+) @ (?P<buy>\S+) on (?P<buy_venue>\w+), "
        r"SELL (?P=qty) @ (?P<sell>\S+) on (?P<sell_venue>\w+)  expected \S+ USDT  reaction (?P<us>\d+) µs", out)}
    opens = [r for r in records if r["event"] == "open" and r["id"] >= min(paper, default=10**9)]
    assert len(opens) >= 3 and sorted(paper) == [r["id"] for r in opens], out[-3000:]
    for record in opens:
        line = paper[record["id"]]
        assert {line["buy_venue"], line["sell_venue"]} == {"binance", "bybit"}
        assert (line["instrument"], line["buy_venue"], line["sell_venue"], line["qty"], line["buy"], line["sell"]) \
            == (record["instrument"], record["buy_exchange"], record["sell_exchange"], f"{record['qty_base']:g}",
                f"{record['buy_limit_price']:g}", f"{record['sell_limit_price']:g}")
    assert "lost 0" in out.splitlines()[-1], out[-500:]
