"""The quote board: round trip, layout checks, row ownership, status changes."""
from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline.board import Board, RowReader, RowStatus, RowWriter, row_dtype
from pipeline.board.layout import CACHE_LINE, HEADER_DTYPE, LAYOUT_VERSION
from pipeline.errors import BoardError, LayoutMismatchError, RowOwnershipError
from pipeline.model import MAX_DEPTH


def test_rows_are_cache_line_multiples_and_aligned():
    for depth in range(1, MAX_DEPTH + 1):
        assert row_dtype(depth).itemsize % CACHE_LINE == 0
        assert row_dtype(depth).fields["seq"][1] == 0
    assert HEADER_DTYPE.itemsize % CACHE_LINE == 0


def test_write_then_read_round_trip(board_name):
    with Board.create(board_name, n_rows=3, depth=5, n_procs=2) as board:
        writer = RowWriter(board, [1])
        writer.write(1, int(RowStatus.LIVE), [(100.5, 1.25), (100.0, 2.0)], [(101.0, 3.5)],
                     exch_ts_ns=1_700_000_000_000_000_000, recv_ns=1_700_000_000_000_000_123)
        reader = RowReader(board)
        seq, values = reader.read_with_seq(1)
        idx = reader.codec.index
        assert seq == 2
        assert values[idx["bid_px"]] == 100.5 and values[idx["bid_qty"]] == 1.25
        assert values[idx["ask_px"]] == 101.0 and values[idx["ask_qty"]] == 3.5
        assert values[idx["status"]] == RowStatus.LIVE
        assert values[idx["n_bids"]] == 2 and values[idx["n_asks"]] == 1
        assert values[idx["exch_ts_ns"]] == 1_700_000_000_000_000_000
        assert values[idx["recv_ns"]] == 1_700_000_000_000_000_123
        assert values[idx["publish_ns"]] >= values[idx["recv_ns"]] - 10**12
        assert values[idx["update_count"]] == 1
        # numpy view of the same row agrees with the struct path
        row = board.rows[1]
        assert row["bids"].tolist()[:2] == [[100.5, 1.25], [100.0, 2.0]]
        assert row["asks"].tolist()[0] == [101.0, 3.5]
        assert np.all(row["asks"][1:] == 0)
        del row
        reader = writer = None


def test_set_status_keeps_the_quote(board_name):
    with Board.create(board_name, n_rows=1, depth=2, n_procs=1) as board:
        writer = RowWriter(board, [0])
        writer.write(0, int(RowStatus.LIVE), [(10.0, 1.0)], [(11.0, 1.0)], 0, 5)
        writer.set_status(0, int(RowStatus.STALE))
        reader = RowReader(board)
        seq, values = reader.read_with_seq(0)
        idx = reader.codec.index
        assert seq == 4
        assert values[idx["status"]] == RowStatus.STALE
        assert values[idx["bid_px"]] == 10.0 and values[idx["recv_ns"]] == 5
        reader = writer = None


def test_writing_a_row_you_do_not_own_is_an_error(board_name):
    with Board.create(board_name, n_rows=2, depth=1, n_procs=1) as board:
        writer = RowWriter(board, [0])
        with pytest.raises(RowOwnershipError):
            writer.write(1, int(RowStatus.LIVE), [(1.0, 1.0)], [(2.0, 1.0)], 0, 0)
        with pytest.raises(RowOwnershipError):
            writer.set_status(1, int(RowStatus.STALE))
        with pytest.raises(BoardError):
            RowWriter(board, [5])
        writer = None


def test_attach_verifies_layout(board_name):
    with Board.create(board_name, n_rows=2, depth=5, n_procs=1) as board:
        attached = Board.attach(board_name, expected_depth=5)
        assert attached.geometry == board.geometry
        attached.close()
        with pytest.raises(LayoutMismatchError, match="depth 5 \\(this process expects 3\\)"):
            Board.attach(board_name, expected_depth=3)
        board.header["version"] = LAYOUT_VERSION + 1
        with pytest.raises(LayoutMismatchError, match="layout version"):
            Board.attach(board_name)
        board.header["version"] = LAYOUT_VERSION
        board.header["row_size"] = 64
        with pytest.raises(LayoutMismatchError, match="row size 64 bytes"):
            Board.attach(board_name)
        board.header["magic"] = 0
        with pytest.raises(LayoutMismatchError, match="not a quote board"):
            Board.attach(board_name)


def test_attach_to_missing_board_names_it():
    with pytest.raises(BoardError, match="no quote board named 'pipeline-test-missing'"):
        Board.attach("pipeline-test-missing")


def test_writer_resumes_after_a_writer_died_mid_write(board_name):
    with Board.create(board_name, n_rows=1, depth=1, n_procs=1) as board:
        board.rows[0]["seq"] = 7            # odd: the previous owner died between its two stores
        writer = RowWriter(board, [0])
        assert int(board.rows[0]["seq"]) == 8
        writer.write(0, int(RowStatus.LIVE), [(1.0, 1.0)], [(2.0, 1.0)], 0, 0)
        assert int(board.rows[0]["seq"]) == 10
        writer = None


def test_doorbell_rings_only_a_sleeping_detector_and_a_ring_ends_one_sleep(board_name):
    import os

    from pipeline.board.doorbell import Doorbell

    fd = Doorbell.create_fd()
    try:
        with Board.create(board_name, n_rows=1, depth=5, n_procs=1) as board:
            feed, detector = Doorbell(board.buf, fd), Doorbell(board.buf, fd)
            feed.ring_if_sleeping()
            feed.ring_ahead()
            assert feed.rings == 0                          # awake detector: the feed only reads the flag
            detector.prepare_sleep()
            assert int(board.header["detector_sleeping"]) == 1
            feed.ring_if_sleeping()
            feed.ring_if_sleeping()
            assert feed.rings == 1                          # one ring per sleep
            assert detector.sleep(5000) is True             # rung: returns at once
            assert int(board.header["detector_sleeping"]) == 0
            # the ring is drained by the next prepare_sleep, so it cannot end the next sleep
            detector.prepare_sleep()
            assert detector.sleep(1) is False
            # a hint before a publish wakes a sleeping detector too
            detector.prepare_sleep()
            feed.ring_ahead()
            assert feed.rings == 2 and detector.sleep(5000) is True
            detector.prepare_sleep()
            detector.cancel_sleep()
            assert int(board.header["detector_sleeping"]) == 0
            feed = detector = None
    finally:
        os.close(fd)


def test_attaching_to_a_board_still_being_created_is_a_board_error(board_name):
    """Between the supervisor's shm_open and its ftruncate the segment exists with no size: a reader attaching
    then (``run.py top``, a test polling for the board) gets a BoardError it can retry on, not a ValueError."""
    fd = os.open(os.path.join("/dev/shm", board_name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        with pytest.raises(BoardError, match="being created"):
            Board.attach(board_name)
    finally:
        os.close(fd)
        os.unlink(os.path.join("/dev/shm", board_name))


def test_creating_attaching_and_destroying_a_board_never_starts_the_resource_tracker(board_name):
    """The tracker is a second Python interpreter, and on 3.11 it would unlink a live segment when an attaching
    process exits (pipeline/board/shm.py): no step of a board's life may start it. In a fresh interpreter, whose
    tracker has not started for any other reason."""
    import subprocess
    import sys
    script = (
        "import os, sys\n"
        "from multiprocessing import resource_tracker\n"
        "from pipeline.board import Board\n"
        f"board = Board.create({board_name!r}, 2, 5, 1)\n"
        f"Board.attach({board_name!r}).close()\n"
        "board.destroy()\n"
        f"print(os.path.exists('/dev/shm/{board_name}'), resource_tracker._resource_tracker._fd)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "None"]          # the segment is gone, and no tracker was started
