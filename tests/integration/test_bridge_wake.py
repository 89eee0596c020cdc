"""The publishing bridge wakes on change: asleep on the board's doorbell, a change written while it sleeps
still crosses, as its own message, long before the only timeout it has.

Real parts: a nats-server on loopback; board A whose rows the test writes as a feed does (its change lane,
both sleepers of the doorbell rung); the pipeline's bridge process publishing board A as box ``a`` with a
heartbeat interval (its resend of every row, and the publisher's only timeout) of 60 s; a second bridge
process mirroring those rows into board B. Bridge A also mirrors a row of box ``c`` (played by the test) into
board A: that row is never published again.
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import time
import uuid

import pytest

from pipeline.board import Board, Doorbell, ProcStats, RowReader, RowStatus, RowWriter, TornReadError
from pipeline.bridge.codec import quote_subject, render_quote
from pipeline.config import parse_config
from pipeline.model import ProcessRole
from pipeline.runtime import ProcessSpec
from pipeline.supervisor.core import plan_rows
from tests.conftest import nats_connect, wait_until
from tests.integration.test_bridge import NatsServer

pytestmark = [pytest.mark.integration]

CTX = mp.get_context("fork")
LIVE = int(RowStatus.LIVE)
INSTRUMENTS = ["BTC/USDT", "ETH/USDT"]
HEARTBEAT_MS = 60_000.0      # the publisher's only timeout: a change crossing before it was carried by a wake-up
CROSS_S = 10.0               # how long a change may take to cross on a loaded machine (far below HEARTBEAT_MS)
CHANGES = 25


def bridge_main(spec: ProcessSpec, config, local_rows) -> None:
    from pipeline.bridge import process
    process.main(spec, config, local_rows)


def read(reader: RowReader, row: int):
    try:
        return reader.read_with_seq(row)[1]
    except TornReadError:
        return None


@pytest.fixture
def boxes(tmp_path):
    server = NatsServer(tmp_path).start()
    config_a = parse_config({
        "venues": {"binance": {"instruments": INSTRUMENTS, "url": "wss://127.0.0.1:1"}},
        "bridge": {"nats_url": server.url, "box": "a", "publish": True, "heartbeat_interval_ms": HEARTBEAT_MS,
                   "heartbeat_timeout_ms": 2 * HEARTBEAT_MS, "subscribe": {"c": {"kraken": ["BTC/USD"]}}}})
    config_b = parse_config({"bridge": {"nats_url": server.url, "box": "b", "heartbeat_timeout_ms": 2 * HEARTBEAT_MS,
                                        "subscribe": {"a": {"binance": INSTRUMENTS}}}})
    rows_a, rows_b = plan_rows(config_a), plan_rows(config_b)
    suffix = uuid.uuid4().hex[:8]
    board_a = Board.create(f"pipeline-test-wake-a-{suffix}", len(rows_a), 5, 3)
    board_b = Board.create(f"pipeline-test-wake-b-{suffix}", len(rows_b), 5, 1)
    local = [r.row for r in rows_a if not r.box]
    mirrored_a = [r for r in rows_a if r.box]
    board_a.assign_lane(local, 2)                        # the test writes the local rows as a feed in slot 2
    board_a.assign_lane([r.row for r in mirrored_a], 1)  # bridge A's own lane, as the supervisor assigns it
    fds = [Doorbell.create_fd() for _ in range(3)]       # board A's detector and bridge sleepers, board B's detector
    for fd in fds:
        os.set_inheritable(fd, True)
    spec_a = ProcessSpec(key="bridge", role=ProcessRole.BRIDGE, title="pipeline: bridge (test a)", slot=1, cores=(),
                         board_name=board_a.name, depth=5, doorbell_fd=fds[0], bridge_doorbell_fd=fds[1],
                         supervisor_pid=os.getpid(), rows=tuple(mirrored_a))
    spec_b = ProcessSpec(key="bridge", role=ProcessRole.BRIDGE, title="pipeline: bridge (test b)", slot=0, cores=(),
                         board_name=board_b.name, depth=5, doorbell_fd=fds[2], supervisor_pid=os.getpid(),
                         rows=tuple(r for r in rows_b if r.box))
    children = []
    try:
        # B first, so that its refresh request (at connect) goes to nobody: A's first pass is its only resend
        children.append(CTX.Process(target=bridge_main, args=(spec_b, config_b, ())))
        children[-1].start()
        wait_until(lambda: int(board_b.procs[0]["connected"]), 15, message="bridge B connected")
        children.append(CTX.Process(target=bridge_main, args=(spec_a, config_a, tuple(rows_a))))
        children[-1].start()
        wait_until(lambda: int(board_a.procs[1]["connected"]), 15, message="bridge A connected")
        yield server, board_a, board_b, rows_a, rows_b, fds
    finally:
        for p in children:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in children:
            p.join(10)
            if p.is_alive():
                p.kill()
        board_a.destroy()
        board_b.destroy()
        for fd in fds:
            os.close(fd)
        server.kill()


async def collect(url: str, subject: str, into: list, ready: asyncio.Event, done: asyncio.Event) -> None:
    nc = await nats_connect(url)

    async def on_message(msg):
        into.append(msg.subject)
    await nc.subscribe(subject, cb=on_message)
    await nc.flush()
    ready.set()
    await done.wait()
    await nc.flush()
    await nc.close()


def test_a_change_written_while_the_publisher_sleeps_crosses_as_its_own_message(boxes):
    server, board_a, board_b, rows_a, rows_b, (detector_fd, bridge_fd, _) = boxes
    row_a = next(r.row for r in rows_a if not r.box and r.instrument == "BTC/USDT")
    row_b = next(r.row for r in rows_b if r.instrument == "BTC/USDT")
    writer = RowWriter(board_a, [r.row for r in rows_a if not r.box])
    ring = Doorbell(board_a.buf, detector_fd, bridge_fd).ring_if_sleeping
    reader_b = RowReader(board_b)
    idx = reader_b.codec.index
    published = ProcStats(board_a, 1)
    try:
        # a first state through: whatever A sent before (its first pass) has been written on B before it
        writer.write(row_a, LIVE, [(100.0, 1.0)], [(101.0, 1.0)], 0, 0)
        ring()
        wait_until(lambda: (v := read(reader_b, row_b)) and v[idx["bid_px"]] == 100.0, CROSS_S,
                   message="the first state on B")
        for k in range(1, CHANGES + 1):
            # the publisher is asleep on the doorbell (its flag up) before the change is written
            wait_until(lambda: int(board_a.header["bridge_sleeping"]), CROSS_S, interval=0.001,
                       message="bridge A asleep on the doorbell")
            sent_before = published.get("scans")
            written_before = read(reader_b, row_b)[idx["update_count"]]
            bid = 100.0 + k
            writer.write(row_a, LIVE, [(bid, 1.0)], [(bid + 1.0, 1.0)], 0, k)
            ring()
            state = wait_until(lambda: (v := read(reader_b, row_b)) and v[idx["bid_px"]] == bid and v, CROSS_S,
                               interval=0.001, message=f"change {k} on B")
            # one change, one message, one write on B: nothing resent, nothing skipped, nothing older after it
            assert published.get("scans") - sent_before == 1
            assert state[idx["update_count"]] == written_before + 1 and state[idx["recv_ns"]] == k
            assert state[idx["status"]] == LIVE
    finally:
        writer = reader_b = published = None


def test_the_publisher_never_publishes_the_rows_it_mirrors(boxes):
    server, board_a, board_b, rows_a, rows_b, (detector_fd, bridge_fd, _) = boxes
    mirrored = next(r.row for r in rows_a if r.box == "c")
    reader_a = RowReader(board_a)
    idx = reader_a.codec.index
    seen: list[str] = []

    async def scenario():
        ready, done = asyncio.Event(), asyncio.Event()
        listener = asyncio.ensure_future(collect(server.url, "quotes.a.>", seen, ready, done))
        await ready.wait()
        nc = await nats_connect(server.url)
        for k in range(1, 11):                       # box c's quotes, written by bridge A into its mirrored row
            now = time.time_ns()
            await nc.publish(quote_subject("c", "kraken", "BTC/USD"),
                             render_quote("c", "kraken", "BTC/USD", LIVE, [[50_000.0 + k, 1.0]],
                                          [[50_001.0 + k, 1.0]], 0, now - 1000, now - 500, now, k))
        await nc.flush()
        await nc.close()
        await asyncio.get_running_loop().run_in_executor(None, lambda: wait_until(
            lambda: (v := read(reader_a, mirrored)) and v[idx["bid_px"]] == 50_010.0, CROSS_S,
            message="box c's last quote on board A"))
        # a local change after them: when it has been published, anything published before it has arrived
        writer = RowWriter(board_a, [r.row for r in rows_a if not r.box])
        writer.write(next(r.row for r in rows_a if not r.box), LIVE, [(7.0, 1.0)], [(8.0, 1.0)], 0, 1)
        Doorbell(board_a.buf, detector_fd, bridge_fd).ring_if_sleeping()
        writer = None
        local = quote_subject("a", "binance", "BTC/USDT")
        await asyncio.get_running_loop().run_in_executor(None, lambda: wait_until(
            lambda: local in seen, CROSS_S, message="the local change published"))
        done.set()
        await listener
    try:
        asyncio.run(asyncio.wait_for(scenario(), 4 * CROSS_S))
        assert set(seen) == {quote_subject("a", "binance", "BTC/USDT")}      # never c's row, under any name
    finally:
        reader_a = None
