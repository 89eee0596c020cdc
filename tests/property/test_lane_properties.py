"""The change lanes: a reader never misses a publish, whatever the interleaving with the writers' stores.

Two lanes and some rows without a lane on one board, read by the detector's :class:`BoardView`:

* lane 0 is written by the real :class:`RowWriter` (a publish is atomic between two reader passes);
* lane 1 is written store by store (``seq`` odd, payload, ``seq`` even, ring entry, counter), the
  protocol in :mod:`pipeline.board.seqlock`, so a reader pass can fall between any two of them;
* bursts of more than ``LANE_RING`` publishes between two passes make the reader lap the ring
  and scan the lane instead.

After every pass, each row whose last completed publish the reader has not reported must be in the
middle of a newer write (which will be reported when it completes); no row is reported twice at
one sequence; and once the writers stop, one pass reports every row at its final sequence.
"""
from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.board import Board, RowStatus, RowWriter
from pipeline.board.layout import LANE_RING
from pipeline.board.seqlock import ChangeLane, RowCodec
from pipeline.config import parse_config
from pipeline.detector.scan import BoardView, RowUniverse
from pipeline.runtime import RowAssignment
from tests.conftest import examples

LIVE = int(RowStatus.LIVE)
N_A, N_B, N_FREE = 3, 3, 2          # rows in lane 0, in lane 1, without a lane (one more per lane unwatched)
DEPTH = 2


class StepWriter:
    """Writes lane 1's rows one store at a time, in RowWriter's order; one publish at a time, as one writer."""

    STEPS = 5

    def __init__(self, board: Board, lane: int):
        self.codec = RowCodec(board)
        self.words = board.buf.cast("B").cast("Q")
        self.buf = board.buf
        self.lane = ChangeLane(board, lane)
        self.row: int | None = None             # the row being published, and its next store (0..4)
        self.next = 0

    def seq_word(self, row: int) -> int:
        return (self.codec.rows_offset + row * self.codec.row_size) // 8

    def step(self, row: int) -> int | None:
        """One store of the publish under way (else of a new publish of ``row``); the row once it completed."""
        if self.row is None:
            self.row, self.next = row, 0
        row = self.row
        word = self.seq_word(row)
        if self.next == 0:
            self.words[word] += 1                                   # odd: write in progress
        elif self.next == 1:
            values = [0] * self.codec.n_values
            values[self.codec.index["status"]] = LIVE
            values[self.codec.index["recv_ns"]] = self.words[word]
            self.codec.payload.pack_into(self.buf, word * 8 + self.codec.payload_offset, *values)
        elif self.next == 2:
            self.words[word] += 1                                   # even: consistent
        elif self.next == 3:
            count = self.words[self.lane.count_word]
            self.lane.ring[count % LANE_RING] = row                 # the entry ...
        else:
            self.words[self.lane.count_word] += 1                   # ... then the counter
        self.next += 1
        if self.next == self.STEPS:
            self.row = None
            return row
        return None


ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, N_A), st.just(1)),          # row N_A: in the lane, not watched
    st.tuples(st.just("step"), st.integers(0, N_B), st.integers(1, StepWriter.STEPS + 2)),   # stores in a row
    st.tuples(st.just("free"), st.integers(0, N_FREE - 1), st.just(1)),
    st.tuples(st.just("burst"), st.integers(LANE_RING - 2, LANE_RING + 40), st.just(1)),
    st.tuples(st.just("pass"), st.just(0), st.just(1)),
), max_size=60)


@settings(max_examples=examples(150), deadline=None)
@given(ops=ops)
def test_a_reader_never_misses_a_publish(ops):
    rows_a = list(range(N_A + 1))
    rows_b = list(range(N_A + 1, N_A + 1 + N_B + 1))
    rows_free = list(range(rows_b[-1] + 1, rows_b[-1] + 1 + N_FREE))
    n_rows = rows_free[-1] + 1
    watched = rows_a[:-1] + rows_b[:-1] + rows_free
    instruments = [f"I{row}/USDT" for row in range(n_rows)]
    config = parse_config({"board": {"name": "unused", "depth": DEPTH}, "simulator": {},
                           "venues": {"binance": {"instruments": instruments}}}, source="test")
    universe = RowUniverse(config, [RowAssignment(row, "binance", instruments[row], "") for row in watched])
    board = Board.create(f"pipeline-test-{uuid.uuid4().hex[:10]}", n_rows, DEPTH, 3)
    try:
        board.assign_lane(rows_a, 0)
        board.assign_lane(rows_b, 1)
        writer_a = RowWriter(board, rows_a)
        writer_free = RowWriter(board, rows_free)
        steps = StepWriter(board, 1)
        view = BoardView(board, universe)
        words = steps.words
        done: dict[int, int] = {}              # row -> seq of its last completed publish
        reported: dict[int, int] = {}          # row -> seq the reader last reported

        def publish(writer, row):
            writer.write(row, LIVE, [(1.0, 1.0)], [(2.0, 1.0)], 0, 1)
            done[row] = words[steps.seq_word(row)]

        def read_pass():
            for rows in view.changed().values():
                for row in rows:
                    seq = words[steps.seq_word(row)]
                    assert row in watched and not seq & 1, f"row {row} reported mid-write (seq {seq})"
                    assert seq > reported.get(row, 0), f"row {row} reported twice at seq {seq}"
                    reported[row] = seq
            for row in watched:
                seq = words[steps.seq_word(row)]
                if done.get(row, 0) > reported.get(row, 0):
                    # a newer write is under way: its seq is odd, or it is even but the lane has not logged it
                    # yet (the ring entry and the counter come after the seq)
                    assert seq & 1 or steps.row == row, \
                        f"row {row}: publish at seq {done[row]} missed (reader at {reported.get(row)})"

        for op, arg, n in ops:
            if op == "write":
                publish(writer_a, rows_a[arg])
            elif op == "step":
                row = rows_b[arg]
                for _ in range(n):
                    completed = steps.step(row)
                    if completed is not None:
                        done[completed] = words[steps.seq_word(completed)]
            elif op == "free":
                publish(writer_free, rows_free[arg])
            elif op == "burst":                  # more than a ring of publishes between two passes: the
                for k in range(arg):             # watched rows' entries are overwritten by the unwatched row's
                    publish(writer_a, rows_a[k] if k < N_A else rows_a[N_A])
            else:
                read_pass()
        while steps.row is not None:             # the writers finish what they started
            completed = steps.step(0)
            if completed is not None:
                done[completed] = words[steps.seq_word(completed)]
        read_pass()
        assert not view.anything_changed()
        for row in watched:
            assert reported.get(row, 0) == done.get(row, 0), row
        writer_a = writer_free = steps = view = words = None
    finally:
        board.destroy()
