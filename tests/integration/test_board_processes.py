"""The board across real processes: torn reads, the 3.11 resource tracker, leftovers."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.board import Board, RowReader, RowStatus, RowWriter, TornReadError, remove_leftover
from pipeline.errors import BoardInUseError

pytestmark = pytest.mark.integration
CTX = multiprocessing.get_context("fork")
DEPTH = 5


def _hammer(name: str, rows: list[int], seconds: float, ready) -> None:
    """Writer: every value in a row is the same counter k, so a torn row is detectable."""
    board = Board.attach(name, DEPTH)
    writer = RowWriter(board, rows)
    ready.set()
    deadline = time.monotonic() + seconds
    k = 0
    while time.monotonic() < deadline:
        k += 1
        value = float(k)
        levels = [(value, value)] * DEPTH
        for row in rows:
            writer.write(row, int(RowStatus.LIVE), levels, levels, k, k)
    writer = None
    board.close()


def test_reader_never_sees_a_torn_row_while_another_process_writes(board_name):
    with Board.create(board_name, n_rows=4, depth=DEPTH, n_procs=1) as board:
        ready = CTX.Event()
        writer = CTX.Process(target=_hammer, args=(board_name, [0, 1, 2, 3], 2.0, ready))
        writer.start()
        try:
            assert ready.wait(10)
            reader = RowReader(board)
            idx = reader.codec.index
            first_bid = idx["bids"]
            reads = torn = busy = 0
            distinct = set()
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                for row in range(4):
                    try:
                        seq, v = reader.read_with_seq(row)
                    except TornReadError:
                        busy += 1        # writer preempted mid-write: bounded retries gave up, never torn
                        continue
                    if seq == 0:
                        continue
                    k = v[idx["recv_ns"]]
                    expected = float(k)
                    payload = (v[idx["bid_px"]], v[idx["bid_qty"]], v[idx["ask_px"]], v[idx["ask_qty"]],
                               float(v[idx["exch_ts_ns"]]), *v[first_bid:first_bid + 4 * DEPTH])
                    if any(x != expected for x in payload):
                        torn += 1
                    reads += 1
                    distinct.add(k)
            assert torn == 0
            assert reads > 1000 and busy < reads
            assert len(distinct) > 100, "the reader should see the writer make progress"
        finally:
            writer.join(10)
            reader = None
        assert writer.exitcode == 0


def test_a_process_that_only_attaches_does_not_unlink_the_live_board(board_name):
    """CPython 82300/104291: on 3.11 an attaching process's resource tracker unlinks the segment at exit."""
    with Board.create(board_name, n_rows=1, depth=1, n_procs=1):
        code = ("import sys; from pipeline.board import Board; "
                f"b = Board.attach({board_name!r}); b.close()")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "leaked" not in result.stderr
        assert (Path("/dev/shm") / board_name).exists(), "the attaching process unlinked the live board"
        again = Board.attach(board_name)
        again.close()
    assert not (Path("/dev/shm") / board_name).exists()


def test_leftover_from_a_dead_supervisor_is_removed_with_a_message(board_name):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    board = Board.create(board_name, n_rows=1, depth=1, n_procs=1)
    board.header["supervisor_pid"] = child.pid          # a pid that no longer runs
    board.close()
    message = remove_leftover(board_name)
    assert message is not None and board_name in message and str(child.pid) in message
    assert not (Path("/dev/shm") / board_name).exists()
    assert remove_leftover(board_name) is None


def test_board_of_a_running_supervisor_is_not_removed(board_name):
    board = Board.create(board_name, n_rows=1, depth=1, n_procs=1)
    board.header["supervisor_pid"] = os.getppid()       # alive
    try:
        with pytest.raises(BoardInUseError, match=str(os.getppid())):
            remove_leftover(board_name)
        assert (Path("/dev/shm") / board_name).exists()
    finally:
        board.destroy()
