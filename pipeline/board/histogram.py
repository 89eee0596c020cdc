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

    def minus(self, earlier: "HistogramSnapshot") -> "HistogramSnapshot":
        """Samples recorded since ``earlier`` (max is the all-time max)."""
        return HistogramSnapshot(self.count - earlier.count, self.sum_ns - earlier.sum_ns, self.max_ns,
                                 tuple(a - b for a, b in zip(self.buckets, earlier.buckets)))


def read_histogram(board, slot: int, index: int) -> HistogramSnapshot:
    words = board.buf.cast("B").cast("Q")
    base = board.geometry.hist_offset(slot, index) // 8
    values = words[base:base + _WORDS].tolist()
    return HistogramSnapshot(values[0], values[1], values[2],
                             tuple(values[_BUCKETS_WORD:_BUCKETS_WORD + HIST_BUCKETS]))
