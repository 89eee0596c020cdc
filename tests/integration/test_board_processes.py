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


def _publish_and_wait(name: str, fd: int, n: int, seen, ready, lost) -> None:
    """Writer: publish k, ring as the feeds do, wait until the reader has seen k; random pauses move the
    publish across every step of the reader's prepare_sleep / re-check / sleep."""
    import random

    from pipeline.board.doorbell import Doorbell
    board = Board.attach(name, DEPTH)
    writer = RowWriter(board, [0])
    bell = Doorbell(board.buf, fd)
    rng = random.Random(5)
    ready.wait(10)
    for k in range(1, n + 1):
        spin_until = time.perf_counter_ns() + rng.choice([0, 0, 2_000, 10_000, 30_000, 100_000])
        while time.perf_counter_ns() < spin_until:
            pass
        if rng.random() < 0.3:
            bell.ring_ahead()                       # the hint must not break the contract either
        writer.write(0, int(RowStatus.LIVE), [(1.0, 1.0)], [(2.0, 1.0)], k, k)
        bell.ring_if_sleeping()
        deadline = time.monotonic() + 2.0           # far below the reader's 5 s sleep
        while seen.value != k:
            if time.monotonic() > deadline:
                lost.value = k                      # the reader slept through a publish: a lost wake-up
                return
    writer = bell = None
    board.close()


def test_doorbell_never_loses_a_wake_up_across_processes(board_name):
    """The doorbell's contract: a publish while the detector goes to sleep always wakes it (no timeout)."""
    from pipeline.board.doorbell import Doorbell

    n = 3000
    fd = Doorbell.create_fd()
    try:
        with Board.create(board_name, n_rows=1, depth=DEPTH, n_procs=1) as board:
            seen, lost, ready = CTX.Value("q", 0, lock=False), CTX.Value("q", 0, lock=False), CTX.Event()
            proc = CTX.Process(target=_publish_and_wait, args=(board_name, fd, n, seen, ready, lost))
            proc.start()
            try:
                reader = RowReader(board)
                bell = Doorbell(board.buf, fd)
                i_k = reader.codec.index["recv_ns"]
                last_seq = reader.seq(0)
                sleeps = timeouts = 0
                ready.set()
                deadline = time.monotonic() + 120
                while seen.value < n and not lost.value and time.monotonic() < deadline:
                    seq = reader.seq(0)
                    if seq != last_seq and not seq & 1:
                        last_seq, values = reader.read_with_seq(0)
                        seen.value = values[i_k]
                        continue
                    bell.prepare_sleep()                # no spin at all: sleep as often as possible
                    if reader.seq(0) != last_seq:
                        bell.cancel_sleep()
                        continue
                    sleeps += 1
                    if not bell.sleep(5_000):
                        timeouts += 1
                        break
                assert lost.value == 0, f"publish {lost.value} did not wake the reader"
                assert timeouts == 0 and seen.value == n
                assert sleeps > n // 4, "the reader should have been asleep for many of the publishes"
            finally:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                reader = bell = None
            assert proc.exitcode == 0
    finally:
        os.close(fd)


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
