"""The simulator as a child process of the supervisor (demo and tests)."""
from __future__ import annotations

import asyncio
import logging
import time

from pipeline.board import Board, ProcStats
from pipeline.runtime import ProcessSpec, claim_slot, parent_alive, run_child, run_loop
from pipeline.sim.server import build_simulator

log = logging.getLogger("pipeline.sim")


async def serve(spec: ProcessSpec, config, report, ports=None, stop=None) -> None:
    """Listen, report the URLs to the supervisor, claim the slot, then serve until ``stop`` is set."""
    simulator = build_simulator(config)
    urls = await simulator.start(ports)
    report.send(urls)
    report.close()
    claim_slot(spec)                     # only now: the slot says the simulator is listening
    board = Board.attach(spec.board_name, spec.depth)
    stats = ProcStats(board, spec.slot)
    stopped = asyncio.Event()
    if stop is not None:
        stop.link(stopped)

    async def watch():
        while not stopped.is_set():
            stats.set("heartbeat_ns", time.time_ns())
            stats.set("messages", sum(s.frames_sent for s in simulator.exchanges.values()))
            if not parent_alive(spec):
                stopped.set()
            await asyncio.sleep(0.2)

    watcher = asyncio.ensure_future(watch())
    try:
        await simulator.run(stopped)
    finally:
        watcher.cancel()
        await simulator.close()
        board.close()


def main(spec: ProcessSpec, config, report, ports=None) -> None:
    """Entry point of the simulator process (called in the forked child)."""
    run_child(spec, lambda stop: run_loop(serve(spec, config, report, ports, stop)), claim=False)
