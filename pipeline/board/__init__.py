"""The shared-memory quote board: layout, lifetime, the per-row seqlock, process slots, histograms, doorbell.

This package is the board's front door: every module outside ``pipeline/board/`` imports what it needs
from ``pipeline.board`` and never from its modules, so the board's insides can move without touching its
users. (``RowStatus``, ``SkipReason``, ``ProcessRole`` and ``MAX_DEPTH`` belong to :mod:`pipeline.model`;
they are here too because the layout stores them.)
"""
from pipeline.board.doorbell import BRIDGE, DETECTOR, Doorbell
from pipeline.board.histogram import (
    HistogramBuffer,
    HistogramSnapshot,
    HistogramWriter,
    bucket_of,
    bucket_upper_ns,
    read_histogram,
)
from pipeline.board.layout import (
    CACHE_LINE,
    DECISION_FILL,
    DECISION_FIXED,
    HEADER_DTYPE,
    HIST_BUCKETS,
    HOPS,
    LANE_MASK,
    LANE_RING,
    LAYOUT_VERSION,
    MAX_VENUES,
    NAME_SIZE,
    NAMES_MAX,
    PROC_DTYPE,
    RING_CONTROL,
    BoardGeometry,
    row_dtype,
)
from pipeline.board.plan import BoardPlan, RowAssignment, plan_remote_rows, plan_rows
from pipeline.board.ring import SEQ_BYTES, PlainRing, RingReader, RingWriter
from pipeline.board.rules import RulesWriter, read_entry, read_rules
from pipeline.board.seqlock import (
    ChangeLane,
    RowCodec,
    RowReader,
    RowWriter,
    TornReadError,
    lane_of_rows,
    read_consistent,
    read_row,
)
from pipeline.board.shm import Board, foreign_segment, pid_alive, remove_leftover, running_boards, unlink
from pipeline.board.snapshot import ProcSnapshot, read_proc, read_procs
from pipeline.board.stats import ProcStats
from pipeline.model import MAX_DEPTH, ProcessRole, RowStatus, SkipReason  # the trust states the rows store

__all__ = [
    # layout
    "HIST_BUCKETS", "HOPS", "LANE_MASK", "LANE_RING", "LAYOUT_VERSION", "MAX_DEPTH", "MAX_VENUES", "PROC_DTYPE",
    "BoardGeometry", "ProcessRole", "RowStatus", "SkipReason", "row_dtype",
    # what goes where (rows, process slots), decided before the board exists
    "BoardPlan", "RowAssignment", "plan_remote_rows", "plan_rows",
    # lifetime
    "Board", "foreign_segment", "pid_alive", "remove_leftover", "running_boards", "unlink",
    # rows
    "ChangeLane", "RowCodec", "RowReader", "RowWriter", "TornReadError", "lane_of_rows", "read_consistent",
    "read_row",
    # each row's trading rules (own seqlock; pipeline.board.rules)
    "RulesWriter", "read_entry", "read_rules",
    # process slots and their histograms
    "ProcSnapshot", "ProcStats", "read_proc", "read_procs",
    "HistogramBuffer", "HistogramSnapshot", "HistogramWriter", "bucket_of", "bucket_upper_ns",
    "read_histogram",
    # the wake-up of a sleeping reader: the detector, the bridge's publisher
    "BRIDGE", "DETECTOR", "Doorbell",
    # the decision ring: a seqlocked ring of fixed-size entries (pipeline.board.ring) and its layout
    "PlainRing", "RingReader", "RingWriter", "SEQ_BYTES", "CACHE_LINE", "DECISION_FILL", "DECISION_FIXED",
    "HEADER_DTYPE", "NAME_SIZE", "NAMES_MAX", "RING_CONTROL",
]
