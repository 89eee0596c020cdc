"""The row writer's one-level short path writes exactly what the general path writes."""
from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.board import Board, RowReader, RowWriter
from tests.conftest import examples

levels = st.lists(st.tuples(st.floats(0.01, 1e6), st.floats(0.0, 1e4)), max_size=7)


@settings(max_examples=examples(200), deadline=None)
@given(bids=levels, asks=levels, depth=st.integers(1, 5), gaps=st.integers(0, 9), confirmed=st.integers(0, 1 << 40),
       xseq=st.one_of(st.none(), st.integers(0, (1 << 64) - 1)))
def test_any_levels_read_back_as_written(bids, asks, depth, gaps, confirmed, xseq):
    board = Board.create(f"pipeline-test-{uuid.uuid4().hex[:10]}", 1, depth, 1)
    try:
        writer, reader = RowWriter(board, [0]), RowReader(board)
        writer.write(0, 2, bids, asks, 11, 22, gaps, 3, xseq, confirmed)
        v = reader.read(0)
        idx = reader.codec.index
        b, a = idx["bids"], idx["asks"]
        nb, na = v[idx["n_bids"]], v[idx["n_asks"]]
        assert (nb, na) == (min(len(bids), depth), min(len(asks), depth))
        assert [(v[b + 2 * k], v[b + 2 * k + 1]) for k in range(nb)] == bids[:depth]
        assert [(v[a + 2 * k], v[a + 2 * k + 1]) for k in range(na)] == asks[:depth]
        assert all(x == 0.0 for x in v[b + 2 * nb:b + 2 * depth]) and all(x == 0.0 for x in v[a + 2 * na:a + 2 * depth])
        assert (v[idx["bid_px"]], v[idx["bid_qty"]]) == (bids[0] if bids else (0.0, 0.0))
        assert (v[idx["ask_px"]], v[idx["ask_qty"]]) == (asks[0] if asks else (0.0, 0.0))
        assert (v[idx["exch_ts_ns"]], v[idx["recv_ns"]], v[idx["status"]]) == (11, 22, 2)
        assert (v[idx["gaps"]], v[idx["checksum_failures"]]) == (gaps, 3)
        assert v[idx["confirmed_ns"]] == (confirmed or 22) and v[idx["xseq"]] == (xseq or 0)
        assert reader.seq(0) == 2 and v[idx["update_count"]] == 1
        seq, head = reader.read_top(0)                       # the head: a prefix of the whole row's values
        assert seq == 2 and head == v[:idx["bids"] + 2]
        # a second write of another shape over the first: the short path zeroes nothing it must not keep
        writer.write(0, 2, [(5.0, 1.0)], [(6.0, 2.0)], 1, 2)
        v = reader.read(0)
        assert [v[b], v[b + 1], v[a], v[a + 1]] == [5.0, 1.0, 6.0, 2.0]
        assert all(x == 0.0 for x in v[b + 2:b + 2 * depth]) and all(x == 0.0 for x in v[a + 2:a + 2 * depth])
        assert (v[idx["gaps"]], v[idx["n_bids"]], v[idx["n_asks"]]) == (gaps, 1, 1)
    finally:
        writer = reader = None
        board.destroy()
