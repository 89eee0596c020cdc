"""Per-process counters in the board's process slots, updated without numpy.

A numpy field increment costs about a microsecond; an index into a u64
memoryview costs about 0.1 µs, so the hot path uses word indices derived
from :data:`~pipeline.board.layout.PROC_DTYPE`. Each slot has one writer (its
process), except the supervisor-owned ``restarts`` and ``last_exit_code``.
"""
from __future__ import annotations

from pipeline.board.layout import PROC_DTYPE, SkipReason

WORD = {name: PROC_DTYPE.fields[name][1] // 8 for name in PROC_DTYPE.names
        if PROC_DTYPE.fields[name][0].itemsize % 8 == 0 or PROC_DTYPE.fields[name][0].subdtype}
SKIPPED_WORD = PROC_DTYPE.fields["skipped"][1] // 8


class ProcStats:
    """Counters of one process slot."""

    def __init__(self, board, slot: int):
        self._words = board.buf.cast("B").cast("Q")
        self._signed = board.buf.cast("B").cast("q")
        self.base = (board.geometry.procs_offset + slot * PROC_DTYPE.itemsize) // 8
        self.slot = slot

    def add(self, name: str, n: int = 1) -> None:
        self._words[self.base + WORD[name]] += n

    def set(self, name: str, value: int) -> None:
        if name in ("pid", "started_ns", "heartbeat_ns", "last_exit_code"):
            self._signed[self.base + WORD[name]] = value
        else:
            self._words[self.base + WORD[name]] = value

    def get(self, name: str) -> int:
        return self._words[self.base + WORD[name]]

    def skip(self, reason: SkipReason) -> None:
        self._words[self.base + SKIPPED_WORD + int(reason)] += 1

    def skipped(self, reason: SkipReason) -> int:
        return self._words[self.base + SKIPPED_WORD + int(reason)]

    def word(self, name: str) -> int:
        """Absolute word index, for hot loops that increment through their own memoryview."""
        return self.base + WORD[name]

    @property
    def words(self):
        return self._words
