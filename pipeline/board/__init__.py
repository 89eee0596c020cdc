"""The shared-memory quote board: layout, lifetime and the per-row seqlock."""
from pipeline.board.layout import (
    LAYOUT_VERSION,
    MAX_DEPTH,
    ProcessRole,
    RowStatus,
    SkipReason,
    row_dtype,
)
from pipeline.board.shm import Board, foreign_segment, remove_leftover, unlink
from pipeline.board.seqlock import RowCodec, RowReader, RowWriter, TornReadError, read_row

__all__ = [
    "LAYOUT_VERSION", "MAX_DEPTH", "ProcessRole", "RowStatus", "SkipReason", "row_dtype",
    "Board", "foreign_segment", "remove_leftover", "unlink", "RowCodec", "RowReader", "RowWriter", "TornReadError", "read_row",
]
