"""Change lanes: what RowWriter logs, how BoardView reads it, and the layout around them."""
from __future__ import annotations

import pytest

from pipeline.board import Board, RowStatus, RowWriter
from pipeline.board.layout import CACHE_LINE, LANE_RING, BoardGeometry
from pipeline.board.seqlock import ChangeLane
from pipeline.config import parse_config
from pipeline.detector.scan import BoardView, RowUniverse
from pipeline.errors import BoardError
from pipeline.runtime import RowAssignment

LIVE = int(RowStatus.LIVE)


def logged(board: Board, lane: int, since: int = 0) -> list[int]:
    where = ChangeLane(board, lane)
    words = board.buf.cast("B").cast("Q")
    count = words[where.count_word]
    return [where.ring[n % LANE_RING] for n in range(max(since, count - LANE_RING), count)]


def test_regions_are_cache_line_aligned_and_lanes_do_not_share_lines():
    for n_rows, n_procs in [(1, 1), (7, 3), (6000, 10)]:
        g = BoardGeometry(n_rows=n_rows, depth=5, n_procs=n_procs)
        assert g.row_lanes_offset % CACHE_LINE == 0 and g.lanes_offset % CACHE_LINE == 0
        assert g.rows_offset % CACHE_LINE == 0 and g.lanes_offset >= g.row_lanes_offset + 2 * n_rows
        assert g.lane_offset(1) - g.lane_offset(0) >= 2 * CACHE_LINE


def test_every_publish_is_logged_in_its_lane_after_the_row(board_name):
    with Board.create(board_name, n_rows=6, depth=3, n_procs=3) as board:
        board.assign_lane([0, 1, 2], 0)
        board.assign_lane([3, 4], 2)
        a, b = RowWriter(board, [0, 1, 2]), RowWriter(board, [3, 4])
        assert (a.lane, b.lane) == (0, 2)
        a.write(1, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)              # top of book
        a.write(0, LIVE, [(1.0, 1.0), (0.9, 2.0)], [(2.0, 1.0)], 0, 1)  # deeper
        b.write(4, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
        a.set_status(1, int(RowStatus.STALE))
        assert logged(board, 0) == [1, 0, 1] and logged(board, 2) == [4] and logged(board, 1) == []
        # a writer of the same rows after a restart carries on counting
        a = RowWriter(board, [0, 1, 2])
        a.write(2, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
        assert logged(board, 0) == [1, 0, 1, 2]
        a = b = None


def test_a_row_left_mid_write_is_logged_when_the_next_writer_closes_it(board_name):
    with Board.create(board_name, n_rows=2, depth=1, n_procs=1) as board:
        board.assign_lane([0, 1], 0)
        board.rows[1]["seq"] = 5
        writer = RowWriter(board, [0, 1])
        assert int(board.rows[1]["seq"]) == 6 and logged(board, 0) == [1] and writer.lane == 0
        writer = None


def test_a_writer_owns_rows_of_one_lane_or_of_none(board_name):
    with Board.create(board_name, n_rows=4, depth=1, n_procs=2) as board:
        board.assign_lane([0, 1], 0)
        with pytest.raises(BoardError, match="several change lanes"):
            RowWriter(board, [1, 2])
        with pytest.raises(BoardError, match="lane 2 is outside"):
            board.assign_lane([3], 2)
        free = RowWriter(board, [2, 3])                   # no lane: a private ring, nothing on the board
        free.write(2, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
        assert free.lane is None and logged(board, 0) == [] and logged(board, 1) == []
        free = None


def _view(board: Board, rows: list[int], venues=("binance", "bybit")) -> BoardView:
    instruments = [f"I{row}/USDT" for row in range(board.geometry.n_rows)]
    config = parse_config({"board": {"name": "unused", "depth": board.geometry.depth}, "simulator": {},
                           "venues": {v: {"instruments": instruments} for v in venues}}, source="test")
    assignments = [RowAssignment(row, venues[row % 2], instruments[row // 2 * 2], "") for row in rows]
    return BoardView(board, RowUniverse(config, assignments))


def test_the_view_reads_only_what_the_lanes_logged_and_scans_a_lane_that_lapped(board_name):
    with Board.create(board_name, n_rows=8, depth=2, n_procs=2) as board:
        board.assign_lane([0, 2, 4, 6], 0)
        board.assign_lane([1, 3, 5, 7], 1)
        even, odd = RowWriter(board, [0, 2, 4, 6]), RowWriter(board, [1, 3, 5, 7])
        even.write(2, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)          # before the view: found by its first scan
        view = _view(board, list(range(7)))                             # row 7 is not watched
        assert view.anything_changed()
        assert view.changed() == {"I2/USDT": [2]}
        assert view.changed() == {} and not view.anything_changed()
        odd.write(7, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)            # logged, but not watched
        assert view.anything_changed() and view.changed() == {} and not view.anything_changed()
        odd.write(1, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
        even.write(0, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
        odd.write(1, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
        assert view.changed() == {"I0/USDT": [0, 1]}                    # both exchanges, each once
        # a lane that moved by more than its ring since the last pass: its rows are scanned instead
        even.write(4, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
        for _ in range(LANE_RING):
            even.write(6, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
        assert view.changed() == {"I4/USDT": [4], "I6/USDT": [6]}
        assert view.changed() == {}
        # a torn read of an instrument puts it in the next pass
        view.retry("I2/USDT")
        assert view.anything_changed() and view.changed() == {"I2/USDT": [2, 3]}
        even = odd = None
        view.close()


def test_refresh_reads_the_named_rows_and_keeps_the_others(board_name):
    with Board.create(board_name, n_rows=2, depth=2, n_procs=2) as board:
        board.assign_lane([0], 0)
        board.assign_lane([1], 1)
        a, b = RowWriter(board, [0]), RowWriter(board, [1])
        a.write(0, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
        b.write(1, LIVE, [(1.5, 1.0)], [(2.5, 1.0)], 0, 1)
        view = _view(board, [0, 1])
        first = dict(view.refresh("I0/USDT", [0]))                       # the first read takes every row
        assert first["binance I0/USDT"].bids == [(1.0, 1.0)] and first["bybit I0/USDT"].bids == [(1.5, 1.0)]
        a.write(0, LIVE, [(1.1, 1.0), (1.0, 3.0)], [(2.0, 1.0)], 0, 1)
        b.write(1, LIVE, [(1.6, 1.0)], [(2.5, 1.0)], 0, 1)
        after = view.refresh("I0/USDT", [0])
        assert after["binance I0/USDT"].bids == [(1.1, 1.0), (1.0, 3.0)]
        assert after["bybit I0/USDT"] is first["bybit I0/USDT"]                         # its move is the next pass's
        assert view.quotes("I0/USDT")["bybit I0/USDT"].bids == [(1.6, 1.0)]
        a = b = None
        view.close()
