"""The one backoff (bounds, reset), the board plan (rows, slots, lanes), the child exit-code mapping, a child's
garbage collection across the fork, and the end of a child's event loop."""
from __future__ import annotations

import asyncio
import json
import logging
import random

import pytest

from pipeline.backoff import Backoff
from pipeline.board.plan import BoardPlan
from pipeline.config import parse_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.model import ProcessRole
from pipeline.runtime import ExitCode, Stop, UnusableResource, exit_code_for, run_loop

CORES = frozenset({0, 1})


# ------------------------------------------------------------------ backoff
def test_every_delay_is_within_its_jittered_ceiling_and_never_above_the_cap():
    backoff = Backoff(base_s=0.2, cap_s=10.0, rng=random.Random(7))
    for n in range(40):
        ceiling = min(10.0, 0.2 * 2 ** n)
        assert backoff.ceiling(n) == ceiling
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling
    assert backoff.attempt == 40


def test_full_jitter_reaches_down_to_zero_and_no_jitter_is_the_ceiling():
    full = Backoff(base_s=1.0, cap_s=4.0, rng=random.Random(3), jitter=1.0)
    delays = [full.delay(5) for _ in range(200)]
    assert min(delays) < 0.5 and max(delays) <= 4.0 and min(delays) >= 0.0
    exact = Backoff(base_s=0.5, cap_s=3.0, jitter=0.0)
    assert [exact.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_healthy_period_resets_and_a_short_one_does_not():
    backoff = Backoff(base_s=0.5, cap_s=3.0, reset_after_s=30.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(3)] == [0.5, 1.0, 2.0]
    backoff.connected_for(29.9)
    assert backoff.next_delay() == 3.0
    backoff.connected_for(30.0)
    assert backoff.next_delay() == 0.5


def test_huge_attempt_numbers_stay_at_the_cap_and_bad_settings_are_refused():
    assert Backoff(base_s=0.1, cap_s=2.0).ceiling(10_000) == 2.0
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=-1)


# ------------------------------------------------------------------ plan
def _config(simulator: bool, bridge: bool):
    raw = {"venues": {"binance": {"instruments": ["BTC/USDT", "ETH/USDT"]},
                      "kraken": {"instruments": ["BTC/USD"]}}}
    if simulator:
        raw["simulator"] = {}
    else:
        for venue in raw["venues"].values():
            venue["url"] = "wss://example.invalid/ws"
    if bridge:
        raw["bridge"] = {"nats_url": "nats://127.0.0.1:4222", "box": "tokyo",
                         "subscribe": {"frankfurt": {"coinbase": ["BTC/USD", "ETH/USD"]}}}
    return parse_config(raw, available_cores=CORES)


def test_the_plan_without_bridge_or_simulator():
    plan = BoardPlan.from_config(_config(simulator=False, bridge=False))
    assert [(r.row, r.label, r.instrument, r.symbol) for r in plan.rows] == [
        (0, "binance", "BTC/USDT", "BTCUSDT"), (1, "binance", "ETH/USDT", "ETHUSDT"),
        (2, "kraken", "BTC/USD", "BTC/USD")]
    assert [(s.slot, s.key, s.role, s.title) for s in plan.slots] == [
        (0, "feed:binance", ProcessRole.FEED, "pipeline: feed binance"),
        (1, "feed:kraken", ProcessRole.FEED, "pipeline: feed kraken"),
        (2, "detector", ProcessRole.DETECTOR, "pipeline: detector"),
        (3, "health", ProcessRole.HEALTH, "pipeline: health"),
        (4, "output", ProcessRole.OUTPUT, "pipeline: output")]
    assert plan.n_procs == 5
    assert plan.lanes() == [([0, 1], 0), ([2], 1)]
    assert plan.feed_slots() == {"binance": 0, "kraken": 1}
    assert plan.instruments == ("BTC/USDT", "ETH/USDT", "BTC/USD")
    assert plan.instrument_ids == (0, 1, 2)
    assert plan.slot("detector").lane == -1 and not plan.has("simulator") and not plan.has("bridge")
    with pytest.raises(KeyError, match="no process 'bridge'"):
        plan.slot("bridge")


def test_the_plan_with_simulator_and_bridge():
    plan = BoardPlan.from_config(_config(simulator=True, bridge=True))
    assert [(r.row, r.label, r.instrument) for r in plan.rows] == [
        (0, "binance", "BTC/USDT"), (1, "binance", "ETH/USDT"), (2, "kraken", "BTC/USD"),
        (3, "coinbase@frankfurt", "BTC/USD"), (4, "coinbase@frankfurt", "ETH/USD")]
    assert [(s.slot, s.key) for s in plan.slots] == [
        (0, "feed:binance"), (1, "feed:kraken"), (2, "detector"), (3, "health"), (4, "simulator"), (5, "bridge"),
        (6, "output")]
    assert plan.n_procs == 7
    assert [r.row for r in plan.slot("bridge").rows] == [3, 4]
    assert plan.lanes() == [([0, 1], 0), ([2], 1), ([3, 4], 5)]
    assert [r.row for r in plan.local_rows] == [0, 1, 2] and [r.row for r in plan.remote_rows] == [3, 4]
    assert plan.instrument_ids == (0, 1, 2, 2, 3)


def test_a_bridge_without_simulator_takes_the_next_slot():
    plan = BoardPlan.from_config(_config(simulator=False, bridge=True))
    assert [(s.slot, s.key) for s in plan.slots][-2:] == [(4, "bridge"), (5, "output")] and plan.n_procs == 6


def test_the_plan_creates_the_board_it_describes(board_name):
    plan = BoardPlan.from_config(_config(simulator=True, bridge=True))
    board = plan.create_board(board_name, 5)
    try:
        assert board.geometry.n_procs == 7 and board.geometry.n_rows == 5
        assert (board.geometry.decision_entries, board.geometry.decision_fills) == (65536, 3)
        assert [int(v) for v in board.rows["instrument_id"]] == [0, 1, 2, 2, 3]
        assert [int(v) for v in board.row_lanes] == [1, 1, 2, 6, 6]         # lane + 1; 0 is "no lane"
    finally:
        board.destroy()


# ------------------------------------------------------------------ exit codes
def test_exit_code_mapping():
    assert exit_code_for(None) == ExitCode.CLEAN
    assert exit_code_for(ConfigError([("detector.output", "is a directory")])) == ExitCode.CONFIG
    assert exit_code_for(UnusableResource("bridge.token_file", "cannot read it")) == ExitCode.CONFIG
    assert exit_code_for(PipelineError("broken")) == ExitCode.CRASH
    assert exit_code_for(ValueError("bug")) == ExitCode.CRASH
    assert exit_code_for(SystemExit(0)) == ExitCode.CLEAN
    assert exit_code_for(SystemExit(None)) == ExitCode.CLEAN
    assert exit_code_for(SystemExit(2)) == ExitCode.CONFIG
    assert exit_code_for(SystemExit(3)) == ExitCode.CRASH
    assert [int(c) for c in ExitCode] == [0, 1, 2]
    assert str(UnusableResource("bridge.token_file", "cannot read it")) == "bridge.token_file: cannot read it"
    assert str(UnusableResource("", "bridge.token_env names X, which is not set")) == \
        "bridge.token_env names X, which is not set"


def test_stop_wakes_a_waiter_and_is_falsy_until_set():
    stop = Stop()
    assert not stop and stop.wait(0.01) is False
    stop.set()
    assert stop and stop.is_set() and stop.wait(5.0) is True


# ------------------------------------------------------------------ garbage collection across the fork
GC_SCRIPT = """
import gc, json, os, sys, weakref
gc.disable()                                   # as run.py: off while the supervisor starts
from pipeline.config import parse_config
from pipeline.runtime import run_child
from pipeline.supervisor.core import Child, Supervisor

config = parse_config({"board": {"name": sys.argv[1], "depth": 2},
                       "venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://x"}}},
                      available_cores=frozenset({0}))
sup = Supervisor(config)
sup.create_board()
spec = sup.specs()[0]
read, write = os.pipe()

def child():
    def body(stop):
        os.write(write, f"{gc.isenabled()} {gc.get_freeze_count() > 0}\\n".encode())
    run_child(spec, body, claim=False)

class Node:
    pass

try:
    first = Child(spec, child, ())
    sup._spawn(first)
    first.process.join(30)
    gc.enable()                                # as the supervisor, once its children run
    cycle = Node()
    cycle.self = cycle
    gone = weakref.ref(cycle)
    del cycle                                  # garbage only a collection finds
    again = Child(spec, child, ())
    sup._spawn(again)                          # a restart
    again.process.join(30)
    print(json.dumps({"children": os.read(read, 200).decode().splitlines(), "exit": first.process.exitcode,
                      "collected": gone() is None}))
finally:
    sup.board.destroy()
"""


def test_children_collect_garbage_and_never_scan_what_the_supervisor_froze_for_them(board_name):
    """run.py starts with collection off; a child turns it on (runtime.start_child) and finds what it inherited
    frozen (Supervisor._spawn), and a restart first collects what the supervisor let go, so that nothing is
    frozen for good that was already garbage."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", GC_SCRIPT, board_name], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    # both children: collection on, what they inherited frozen; the garbage collected before the restart
    assert json.loads(done.stdout.splitlines()[-1]) == {"children": ["True True", "True True"], "exit": 0,
                                                        "collected": True}


def test_a_task_that_fails_as_the_process_stops_is_one_line_not_a_traceback(caplog):
    """A task still running when a child's main coroutine returns (a library's, such as nats-py's after a close
    that timed out under load) and failing as it is cancelled: ``asyncio.run`` logs it with its traceback;
    :func:`run_loop`, which the feed, the bridge and the simulator run in, settles it in one warning line."""
    async def fails_when_cancelled():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise OSError("the socket was already gone") from None

    async def main():
        asyncio.ensure_future(fails_when_cancelled())
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert [r.exc_info is not None for r in caplog.records
            if "unhandled exception during asyncio.run() shutdown" in r.getMessage()] == [True]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_loop(main())
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("WARNING", f"while stopping, {fails_when_cancelled.__qualname__} ended in OSError: the socket was already "
                    "gone", None)]
