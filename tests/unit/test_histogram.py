"""Latency histograms in shared memory."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.board import Board
from pipeline.board.histogram import HistogramBuffer, HistogramWriter, bucket_of, bucket_upper_ns, read_histogram


def test_bucket_bounds_contain_their_values():
    for ns in [128, 150, 1000, 12_345, 999_999, 10**9, 3 * 10**10]:
        b = bucket_of(ns)
        assert bucket_upper_ns(b - 1) <= ns < bucket_upper_ns(b)
        assert bucket_upper_ns(b) <= ns * 1.26          # 4 buckets per power of two: about 19 % wide
    assert bucket_of(0) == bucket_of(127) == 0


def test_record_and_percentiles(board_name):
    with Board.create(board_name, n_rows=1, depth=1, n_procs=2) as board:
        writer = HistogramWriter(board, slot=1, index=2)
        for ns in range(1000, 101_000, 1000):           # 1 .. 100 µs
            writer.record(ns)
        writer.record(5_000_000)
        h = read_histogram(board, 1, 2)
        assert h.count == 101 and h.max_ns == 5_000_000
        assert h.sum_ns == sum(range(1000, 101_000, 1000)) + 5_000_000
        assert 50_000 <= h.percentile_ns(0.5) <= 50_000 * 1.26
        assert 99_000 <= h.percentile_ns(0.99) <= 100_000 * 1.26
        assert h.percentile_ns(1.0) == 5_000_000
        assert read_histogram(board, 0, 2).count == 0   # other slots untouched
        later = read_histogram(board, 1, 2)
        writer.record(2000)
        assert read_histogram(board, 1, 2).minus(later).count == 1
        writer = None


def test_absurd_samples_are_clamped_never_overflow(board_name):
    """An exchange timestamp in the wrong unit must not crash the feed that records it."""
    with Board.create(board_name, n_rows=1, depth=1, n_procs=1) as board:
        writer = HistogramWriter(board, slot=0, index=0)
        for _ in range(100):
            writer.record(1_700_000_000_000_000_000)      # ns since the epoch, as if it were a delay
        writer.record(-5)
        h = read_histogram(board, 0, 0)
        assert h.count == 101 and h.max_ns == 1 << 40
        writer = None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples=st.lists(st.one_of(st.integers(-10**6, 10**6), st.integers(0, 1 << 45),
                                  st.sampled_from([0, 127, 128, 129, 255, 256, (1 << 40) - 1, 1 << 40,
                                                   (1 << 40) + 1, 1_700_000_000_000_000_000])), max_size=300))
def test_a_batch_records_exactly_what_one_sample_at_a_time_records(board_name, samples):
    with Board.create(board_name, n_rows=1, depth=1, n_procs=2) as board:
        one, batch = HistogramWriter(board, 0, 1), HistogramWriter(board, 1, 1)
        for ns in samples:
            one.record(ns)
        buffer = HistogramBuffer(batch, batch=64)
        for ns in samples:
            buffer.add(ns)
            if len(buffer.samples) >= buffer.batch:
                buffer.flush()
        buffer.flush()
        assert buffer.samples == []
        assert read_histogram(board, 0, 1) == read_histogram(board, 1, 1)
        one = batch = buffer = None
