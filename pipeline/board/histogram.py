"""Log-bucketed latency histograms in shared memory.

Each process records its own hops into histograms in its region of the
board (one writer each), so the health reporter and the metrics endpoint
read them with no messages and no locks. Buckets: 4 per power of two, from
128 ns up (about 19 % wide each), which keeps percentiles within one bucket
of the truth at a cost of a few integer operations per sample; a sample
goes through one ``bit_length`` and three memoryview increments (~0.3 µs).

Readers copy the counters without a lock; a reading taken while a sample
is being added can be off by that one sample, which statistics tolerate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.board.layout import HIST_BUCKETS, HIST_DTYPE

FIRST_BIT = 7                      # 2**7 ns = 128 ns: everything below lands in bucket 0
MAX_SAMPLE_NS = 1 << 40            # ~18 min: longer "latencies" are clock or unit errors; clamp, never overflow
SUB_BITS = 2                       # 4 sub-buckets per power of two
_WORDS = HIST_DTYPE.itemsize // 8
_BUCKETS_WORD = HIST_DTYPE.fields["buckets"][1] // 8


def bucket_of(ns: int) -> int:
    if ns < (1 << FIRST_BIT):
        return 0
    bits = ns.bit_length()
    index = ((bits - FIRST_BIT) << SUB_BITS) + ((ns >> (bits - 1 - SUB_BITS)) & ((1 << SUB_BITS) - 1))
    return index if index < HIST_BUCKETS else HIST_BUCKETS - 1


def bucket_upper_ns(index: int) -> int:
    """Exclusive upper bound of bucket ``index`` in ns."""
    octave, sub = divmod(index + 1, 1 << SUB_BITS)
    base = 1 << (octave + FIRST_BIT - 1)
    return base + (base >> SUB_BITS) * sub if octave else 1 << FIRST_BIT


class HistogramWriter:
    """Records samples into one histogram of the board (owner process only)."""

    __slots__ = ("_words", "_base", "_bucket0")

    def __init__(self, board, slot: int, index: int):
        self._words = board.buf.cast("B").cast("Q")
        self._base = board.geometry.hist_offset(slot, index) // 8
        self._bucket0 = self._base + _BUCKETS_WORD

    def record(self, ns: int) -> None:
        if ns < 0:
            ns = 0
        elif ns > MAX_SAMPLE_NS:
            ns = MAX_SAMPLE_NS
        words = self._words
        base = self._base
        words[base] += 1
        words[base + 1] = (words[base + 1] + ns) & 0xFFFF_FFFF_FFFF_FFFF
        if ns > words[base + 2]:
            words[base + 2] = ns
        if ns < 128:
            words[self._bucket0] += 1
            return
        bits = ns.bit_length()
        index = ((bits - 7) << 2) + ((ns >> (bits - 3)) & 3)
        words[self._bucket0 + (index if index < HIST_BUCKETS else HIST_BUCKETS - 1)] += 1


    def record_many(self, samples) -> None:
        """Record a batch of samples: the same counters as :meth:`record` on each, in a few numpy calls."""
        n = len(samples)
        if not n:
            return
        values = np.asarray(samples, dtype=np.int64)
        np.clip(values, 0, MAX_SAMPLE_NS, out=values)
        words = self._words
        base = self._base
        words[base] += n
        words[base + 1] = (words[base + 1] + int(values.sum())) & 0xFFFF_FFFF_FFFF_FFFF
        top = int(values.max())
        if top > words[base + 2]:
            words[base + 2] = top
        small = values < 128
        large = values[~small]
        # frexp's exponent is the bit length for integers below 2**53 (samples are clamped to 2**40)
        bits = np.frexp(large.astype(np.float64))[1].astype(np.int64)
        index = ((bits - 7) << 2) + ((large >> (bits - 3)) & 3)
        counts = np.bincount(np.minimum(index, HIST_BUCKETS - 1), minlength=HIST_BUCKETS)
        counts[0] += int(small.sum())
        bucket0 = self._bucket0
        for i in np.flatnonzero(counts).tolist():
            words[bucket0 + i] += int(counts[i])


class HistogramBuffer:
    """Samples kept in a list and recorded into a :class:`HistogramWriter` in batches.

    ``add(ns)`` is a list append (~0.05 µs against ~1 µs for :meth:`HistogramWriter.record`), for hops
    measured on every frame. The owner calls :meth:`flush` on its timer; a batch is also recorded as
    soon as ``batch`` samples are waiting, so the histogram on the board lags by at most one timer
    period or one batch.
    """

    __slots__ = ("writer", "samples", "add", "batch")

    def __init__(self, writer: HistogramWriter, batch: int = 512):
        self.writer = writer
        self.samples: list[int] = []
        self.add = self.samples.append
        self.batch = batch

    def flush(self) -> None:
        if self.samples:
            self.writer.record_many(self.samples)
            self.samples.clear()


@dataclass(frozen=True)
class HistogramSnapshot:
    count: int
    sum_ns: int
    max_ns: int
    buckets: tuple[int, ...]

    def percentile_ns(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (0 < q <= 1), capped by the max seen."""
        if not self.count:
            return 0.0
        target = q * self.count
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= target:
                return float(min(bucket_upper_ns(index), self.max_ns))
        return float(self.max_ns)

    def minus(self, earlier: HistogramSnapshot) -> HistogramSnapshot:
        """Samples recorded since ``earlier`` (max is the all-time max)."""
        return HistogramSnapshot(self.count - earlier.count, self.sum_ns - earlier.sum_ns, self.max_ns,
                                 tuple(a - b for a, b in zip(self.buckets, earlier.buckets)))


def read_histogram(board, slot: int, index: int) -> HistogramSnapshot:
    words = board.buf.cast("B").cast("Q")
    base = board.geometry.hist_offset(slot, index) // 8
    values = words[base:base + _WORDS].tolist()
    return HistogramSnapshot(values[0], values[1], values[2],
                             tuple(values[_BUCKETS_WORD:_BUCKETS_WORD + HIST_BUCKETS]))
