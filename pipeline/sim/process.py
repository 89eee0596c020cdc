"""The simulator as a child process of the supervisor (demo and tests)."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from pipeline.board import Board
from pipeline.board.layout import ProcessRole
from pipeline.board.stats import ProcStats
from pipeline.runtime import ProcessSpec, parent_alive, setup_child
from pipeline.sim.server import build_simulator

log = logging.getLogger("pipeline.sim")


async def serve(spec: ProcessSpec, config, report, ports=None) -> None:
    simulator = build_simulator(config)
    urls = await simulator.start(ports)
    report.send(urls)
    report.close()
    board = Board.attach(spec.board_name, spec.depth)
    stats = ProcStats(board, spec.slot)
    board.procs[spec.slot]["role"] = int(ProcessRole.SIMULATOR)
    stats.set("pid", os.getpid())
    stats.set("started_ns", time.time_ns())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def watch():
        while not stop.is_set():
            stats.set("heartbeat_ns", time.time_ns())
            stats.set("messages", sum(s.frames_sent for s in simulator.exchanges.values()))
            if not parent_alive(spec):
                stop.set()
            await asyncio.sleep(0.2)

    watcher = asyncio.ensure_future(watch())
    try:
        await simulator.run(stop)
    finally:
        watcher.cancel()
        await simulator.close()
        board.close()


def main(spec: ProcessSpec, config, report, ports=None) -> None:
    setup_child(spec)
    asyncio.run(serve(spec, config, report, ports))
