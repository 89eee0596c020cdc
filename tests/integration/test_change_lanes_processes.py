"""Change lanes across real processes: a detector view never misses a publish of a writer in another process."""
from __future__ import annotations

import multiprocessing
import random
import time

import pytest

from pipeline.board import Board, RowStatus, RowWriter
from pipeline.board.layout import LANE_RING
from pipeline.config import parse_config
from pipeline.detector.scan import BoardView, RowUniverse
from pipeline.runtime import RowAssignment

pytestmark = pytest.mark.integration
CTX = multiprocessing.get_context("fork")
N_ROWS = 12
LIVE = int(RowStatus.LIVE)


def _publish(name: str, rows: list[int], n: int, seed: int, ready, final) -> None:
    """Writer: ``n`` publishes of random rows, in bursts (some longer than a ring) and pauses."""
    board = Board.attach(name)
    writer = RowWriter(board, rows)
    rng = random.Random(seed)
    ready.wait(10)
    done = 0
    while done < n:
        burst = rng.choice([1, 1, 2, 5, 40, LANE_RING + 50])
        for _ in range(min(burst, n - done)):
            writer.write(rng.choice(rows), LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
            done += 1
        pause_until = time.perf_counter_ns() + rng.choice([0, 0, 1_000, 20_000, 200_000])
        while time.perf_counter_ns() < pause_until:
            pass
    words = board.buf.cast("B").cast("Q")
    for row in rows:
        final[row] = words[(board.geometry.rows_offset + row * board.geometry.row.itemsize) // 8]
    writer = words = None
    board.close()


def test_a_view_in_another_process_never_misses_a_publish(board_name):
    instruments = [f"I{row}/USDT" for row in range(N_ROWS)]
    config = parse_config({"board": {"name": board_name, "depth": 2}, "simulator": {},
                           "venues": {"binance": {"instruments": instruments}}}, source="test")
    lanes = {0: list(range(0, N_ROWS, 2)), 1: list(range(1, N_ROWS, 2))}
    with Board.create(board_name, n_rows=N_ROWS, depth=2, n_procs=2) as board:
        for lane, rows in lanes.items():
            board.assign_lane(rows, lane)
        view = BoardView(board, RowUniverse(config, [RowAssignment(r, "binance", instruments[r], "")
                                                     for r in range(N_ROWS)]))
        words = board.buf.cast("B").cast("Q")
        ready = CTX.Event()
        final = CTX.Array("q", N_ROWS, lock=False)
        writers = [CTX.Process(target=_publish, args=(board_name, rows, 20_000, lane, ready, final))
                   for lane, rows in lanes.items()]
        for proc in writers:
            proc.start()
        reported = [0] * N_ROWS
        passes = 0
        try:
            ready.set()
            deadline = time.monotonic() + 120
            while any(p.is_alive() for p in writers) and time.monotonic() < deadline:
                for rows in view.changed().values():
                    for row in rows:
                        seq = words[(board.geometry.rows_offset + row * board.geometry.row.itemsize) // 8]
                        assert seq >= reported[row] and (seq > reported[row] or seq & 1 == 0), \
                            (row, seq, reported, passes)
                        reported[row] = max(reported[row], seq)
                passes += 1
        finally:
            for proc in writers:
                proc.join(30)
        assert all(p.exitcode == 0 for p in writers)
        for rows in view.changed().values():             # after the writers stopped: one more pass
            for row in rows:
                reported[row] = words[(board.geometry.rows_offset + row * board.geometry.row.itemsize) // 8]
        assert reported == list(final), "a publish was never reported"
        assert passes > 100
        view.close()
        view = words = None
