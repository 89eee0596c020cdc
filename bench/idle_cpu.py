"""Detector CPU while quotes stream and while idle, in the demo topology.

Run by hand::

    python -m bench.idle_cpu --config configs/demo.yaml --seconds 10

Starts the supervisor, measures the detector's CPU (psutil) for ``--seconds``
while the simulator streams, then stops the simulator with SIGSTOP (after a
pause for rows to go stale, nothing changes on the board) and measures again.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from pipeline.board import Board, ProcessRole
from pipeline.config import load_config

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    config = load_config(args.config)
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", args.config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        time.sleep(8)
        board = Board.attach(config.board.name)
        roles = {ProcessRole(int(board.procs[i]["role"])): int(board.procs[i]["pid"])
                 for i in range(board.geometry.n_procs)}
        board.close()
        detector = psutil.Process(roles[ProcessRole.DETECTOR])
        simulator = roles[ProcessRole.SIMULATOR]
        detector.cpu_percent(None)
        time.sleep(args.seconds)
        busy = detector.cpu_percent(None)
        os.kill(simulator, signal.SIGSTOP)
        time.sleep(config.detector.staleness_ms / 1000 + 2)
        detector.cpu_percent(None)
        time.sleep(args.seconds)
        idle = detector.cpu_percent(None)
        os.kill(simulator, signal.SIGCONT)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    print(f"detector ({config.detector.wait} mode) CPU while streaming: {busy:.1f} %; idle: {idle:.1f} %")


if __name__ == "__main__":
    main()
