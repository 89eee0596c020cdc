"""Which published rows changed: the writers' change lanes as the bridge's publisher follows them."""
from __future__ import annotations

from pipeline.board import LANE_RING, Board, RowReader, RowStatus, RowWriter
from pipeline.bridge.changes import ChangedRows

LIVE = int(RowStatus.LIVE)


def write(writer: RowWriter, row: int, bid: float) -> None:
    writer.write(row, LIVE, [(bid, 1.0)], [(bid + 1.0, 1.0)], 0, 1)


def test_the_lanes_say_which_rows_changed_once_each_and_a_lapped_lane_all_its_rows(board_name):
    with Board.create(board_name, n_rows=6, depth=1, n_procs=3) as board:
        board.assign_lane([0, 1, 2], 0)          # a feed's rows
        board.assign_lane([3], 1)                # another feed's
        board.assign_lane([5], 2)                # rows the bridge mirrors: not published, never followed
        published = [2, 0, 1, 3, 4]              # row 4 has no lane
        sent = [-1] * len(published)
        reader = RowReader(board)
        changes = ChangedRows(board, published, reader.seq_words, sent)
        feed, other, mirror = RowWriter(board, [0, 1, 2]), RowWriter(board, [3]), RowWriter(board, [5])
        assert changes.pending() and changes.changed() == [0, 1, 2, 3, 4]      # the first pass: every row
        assert changes.pending()                 # row 4 (no lane) until its state is sent, as the scan records it
        sent[4] = int(board.rows[4]["seq"])
        assert not changes.pending()
        assert changes.changed() == [4]                                        # no lane: a candidate every pass
        for k in range(10):                                                    # row 0 ten times, row 2 once
            write(feed, 0, 100.0 + k)
        write(feed, 2, 5.0)
        write(mirror, 5, 7.0)
        assert changes.pending()
        assert changes.changed() == [1, 0, 4]                                  # published indices of rows 0, 2
        assert not changes.pending()
        write(mirror, 5, 8.0)
        assert not changes.pending() and changes.changed() == [4]              # the mirrored row: never
        for k in range(LANE_RING):                                             # a whole ring behind: the lane
            write(other, 3, float(k))
        write(feed, 1, 9.0)
        assert changes.changed() == [2, 3, 4]
        # a row without a lane is pending while its seq differs from the one sent (and is even)
        assert not changes.pending()
        RowWriter(board, [4]).write(4, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
        assert changes.pending()
        changes.mark_all()
        assert changes.changed() == [0, 1, 2, 3, 4]
        feed = other = mirror = reader = None
