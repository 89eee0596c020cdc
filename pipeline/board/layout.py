"""The quote board's layout, declared once.

The segment is a few regions, each an array of one numpy structured dtype::

    [ header ][ process slots (n_procs x 576 B) ][ latency histograms (n_procs x 4) ][ pairs ]
    [ row lanes (n_rows x u2) ][ change lanes (n_procs x 1088 B) ][ quote rows ][ rules (n_rows x 256 B) ]

Every offset anyone uses (the seqlock writer's ``struct`` format, the
detector's strided views, the health reporter) is derived from these dtypes,
so changing a field here changes it everywhere, and ``LAYOUT_VERSION`` must be
bumped so that an old process attaching to a new board (or the reverse) fails
loudly instead of reading garbage.

Rows are padded to a multiple of 64 bytes and start 64-byte aligned, so two
feed processes never write the same cache line (no false sharing), and the
header's doorbell flag sits on its own line, away from the identity fields.

Change lanes (version 6). Each writing process (a feed, the bridge) may own a
*lane*: a change counter on its own cache line and a ring of the last
``LANE_RING`` row indices it published. After a row's seqlock write the
writer stores the row index at ``ring[count % LANE_RING]`` and then
``count + 1``, in that order, so a reader that reads the counter and then the
entries below it finds every row published before that counter, and a pass of
the detector costs per change, not per row (see
:class:`pipeline.detector.scan.BoardView`). A reader more than a ring behind
(``count`` moved by ``LANE_RING`` or more since it last looked) cannot know
which rows changed and scans all the rows of that lane instead. The row
lanes table says which lane (process slot + 1; 0: none) each row's writer
logs to; the board's creator fills it before any writer starts
(:meth:`pipeline.board.shm.Board.assign_lane`). A row without a lane is found
by scanning its seq word on every pass, as before lanes existed. All rows of
one lane belong to one writer: the counter has exactly one writer.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

# the states, reasons and roles are the pipeline's own vocabulary (pipeline.model); the board stores their values
from pipeline.model import MAX_CONNECTIONS, MAX_DEPTH, ProcessRole, SkipReason

MAGIC = 0x4452414F_42455551  # b"QUEBOARD" little-endian
LAYOUT_VERSION = 15
CACHE_LINE = 64
PROC_SLOT_SIZE = 576


HEADER_DTYPE = np.dtype(
    [
        ("magic", "<u8"),
        ("version", "<u4"),
        ("n_rows", "<u4"),
        ("depth", "<u4"),
        ("row_size", "<u4"),
        ("n_procs", "<u4"),
        ("proc_size", "<u4"),
        ("supervisor_pid", "<i8"),
        ("created_ns", "<i8"),
        ("decision_entries", "<u4"),   # the decision ring's entries (pipeline.board.ring; 0: no ring)
        ("decision_fills", "<u4"),     # shadow fills one of its entries holds at most
        ("pad0", "V8"),
        # second cache line: the doorbell's sleeping flags (pipeline.board.doorbell), each written by its
        # sleeper only, both read by every writer after each publish (one 8-byte load).
        ("detector_sleeping", "<u4"),
        ("bridge_sleeping", "<u4"),
        ("pad1", "V56"),
    ],
    align=True,
)
assert HEADER_DTYPE.itemsize == 2 * CACHE_LINE


# One slot per process (feed, detector, health). Written by that process only,
# except ``restarts`` and ``last_exit_code``, which belong to the supervisor.
PROC_DTYPE = np.dtype(
    [
        ("pid", "<i8"),
        ("role", "<u4"),
        ("venue_id", "<u4"),
        ("started_ns", "<i8"),
        ("heartbeat_ns", "<i8"),
        ("messages", "<u8"),
        ("parse_errors", "<u8"),
        ("reconnects", "<u8"),
        ("gaps", "<u8"),
        ("checksum_failures", "<u8"),
        ("resyncs", "<u8"),
        ("scans", "<u8"),
        ("opportunities", "<u8"),
        ("skipped", "<u8", (len(SkipReason),)),
        ("connected", "<u4"),
        ("pad0", "<u4"),
        ("clock_offset_ns", "<i8"),   # feeds: low envelope of (receive - exchange time), sliding window
        ("shadow_fills", "<u8"),      # detector: shadow fills evaluated
        ("shadow_profitable", "<u8"), # detector: ... of which still profitable after fees
        ("sink_dropped", "<u8"),      # detector: events the HTTP sink dropped
        ("recorded", "<u8"),          # feeds: frames written to the recording
        ("record_dropped", "<u8"),    # feeds: frames the recording lost (disk full, unwritable dir); never the board
        ("record_errors", "<u8"),     # feeds: recording write failures
        ("resyncs_deferred", "<u8"),  # feeds: resubscribes held back by the per-instrument rate limit
        ("stuck_channels", "<u8"),    # feeds: top-of-book channels re-armed after their ids stayed behind
        ("schema_fallbacks", "<u8"),  # feeds: market-data frames with fields their declaration does not know
        # feeds, backlog (version 8): how long frames wait between the socket and the session
        ("backlog_wait_ns", "<u8"),   # feeds: longest a frame waited (socket -> session) over the last 100 ms
        ("backlog_frames", "<u8"),    # feeds: most messages queued in the WebSocket library over the last 100 ms
        ("late_frames", "<u8"),       # feeds: frames that reached the session more than the staleness budget late
        ("fell_behind", "<u8"),       # feeds: times a connection fell behind by more than the budget (rows STALE)
        ("behind", "<u8"),            # feeds: connections behind now (their rows untrusted until caught up)
        ("output_dropped", "<u8"),    # detector: records the events file or stdout lost (full buffer, failed write)
        ("connect_failures", "<u8"),  # feeds: connection attempts that failed (offline: reconnects stay 0)
        # feeds, trading rules (version 10; docs/trading-rules.md)
        ("rules_changes", "<u8"),     # feeds: rule changes applied while running (a field of one instrument each)
        ("rules_fetch_failures", "<u8"),  # feeds: reference-data fetches that failed (start or refresh)
        ("rules_cache_age_s", "<u8"), # feeds: age of the cached rules in use (s) when they came from the cache, else 0
        # detector: pairs the venues' trading rules refused (each counted once while the refusal lasts)
        ("refused_below_min_qty", "<u8"),
        ("refused_below_min_notional", "<u8"),
        ("refused_not_trading", "<u8"),
        ("refused_no_rules", "<u8"),
        # the output process (version 11): how far it is behind the decision ring, what the ring overwrote first
        ("decisions_behind", "<u4"),  # output: entries written to the ring and not yet handled, at its last look
        ("decisions_lost", "<u4"),    # output: entries overwritten before it read them (it fell a whole ring behind)
        # feeds, the account's fees (version 12; docs/trading-rules.md "Fees your account pays")
        ("fee_lookup_failures", "<u8"),  # feeds: account fee lookups that failed (refused or unreachable)
        ("fee_lookup_state", "<u8"),  # feeds: 0 off, 1 account fees in use, 2 refused, 3 unreachable, 4 bad answer
        ("fee_lookup_status", "<u8"), # feeds: the HTTP status of the last failed lookup (0: none, no answer)
        # feeds, redundant connections (version 14; the lags signed since 15, when rows took ``xseq``;
        # pipeline/feed/arbiter.py), per path, published every 100 ms
        ("paths", "<u4"),             # feeds: connections read per venue (1: no arbitration; the path fields unused)
        ("failovers", "<u4"),         # feeds: rows published from another path because theirs stopped being trusted
        ("path_first", "<u8", (MAX_CONNECTIONS,)),       # updates each path delivered first
        ("path_copies", "<u8", (MAX_CONNECTIONS,)),      # copies each path delivered after another (later or older)
        # how long after the first its copies were received (its latest 4096); negative: received before the copy
        # that won, read after it (the feed's one loop took the other connection's frames first)
        ("path_lag_p50_us", "<i4", (MAX_CONNECTIONS,)),
        ("path_lag_p99_us", "<i4", (MAX_CONNECTIONS,)),
        ("path_live_rows", "<u4", (MAX_CONNECTIONS,)),   # rows each path holds trusted now
        ("path_reconnects", "<u4", (MAX_CONNECTIONS,)),  # connections each path opened again after a loss
        # supervisor-owned
        ("restarts", "<u8"),
        ("last_exit_code", "<i8"),
    ]
)
PROC_DTYPE = np.dtype({"names": PROC_DTYPE.names, "formats": [PROC_DTYPE.fields[n][0] for n in PROC_DTYPE.names],
                       "offsets": [PROC_DTYPE.fields[n][1] for n in PROC_DTYPE.names], "itemsize": PROC_SLOT_SIZE})


# Log-bucketed latency histograms, one region per process slot, written only
# by that process (see pipeline.board.histogram). 4 sub-buckets per power of
# two from 128 ns to about 68 s.
HIST_BUCKETS = 116
HISTS_PER_PROC = 4
HIST_DTYPE = np.dtype([
    ("count", "<u8"),
    ("sum_ns", "<u8"),
    ("max_ns", "<u8"),
    ("pad0", "<u8"),
    ("buckets", "<u8", (HIST_BUCKETS,)),
])
assert HIST_DTYPE.itemsize % CACHE_LINE == 0

# which hop each of a process's histograms measures, by role
HOPS = {
    ProcessRole.FEED: ("exchange_to_receive", "receive_to_publish"),
    ProcessRole.DETECTOR: ("publish_to_seen", "seen_to_emitted", "receive_to_emitted"),
    # bridge, for rows mirrored from other boxes (remote times converted to this box's clock)
    ProcessRole.BRIDGE: ("remote_publish_to_written", "remote_receive_to_written"),
    # output: a decision written to the ring -> the output process has it; the newest leg's frame received ->
    # its record written to the events file (pipeline.output.process)
    ProcessRole.OUTPUT: ("ring_to_output", "receive_to_file"),
}


# Opportunities opened per (buy venue, sell venue), indexed by venue id - 1;
# written by the detector only, read by the metrics endpoint.
MAX_VENUES = 8
PAIRS_DTYPE = np.dtype([("opened", "<u8", (MAX_VENUES, MAX_VENUES))])


# One change lane per process slot (see the module docstring): ``count`` rows published so far, on its
# own cache line, then the ring of the last LANE_RING row indices, entry ``n`` at ``ring[n % LANE_RING]``.
LANE_RING = 256
LANE_MASK = LANE_RING - 1
LANE_DTYPE = np.dtype([("count", "<u8"), ("pad0", "V56"), ("ring", "<u4", (LANE_RING,))])
assert LANE_DTYPE.itemsize % CACHE_LINE == 0 and LANE_RING & LANE_MASK == 0
NO_LANE = 0          # in the row lanes table: a row whose writer keeps no lane


# Trading rules (version 10), one entry per quote row, written by the row's writer only (its own seqlock:
# ``seq`` odd while a write is in progress; the version a reader sees is ``seq // 2``). Increments and bounds
# are float64 of the exact Decimals: every value a venue publishes has at most 15 significant digits, so the
# shortest repr of the float gives back an equal Decimal (checked on write; pipeline.board.rules).
# Version 12: the fees the row's account pays (its feed's signed fee lookup), bps, NaN when not looked up: the
# detector uses them in place of the configured fee. Written under the same seqlock as the rules.
RULES_DTYPE = np.dtype({
    "names": ["seq", "tick", "step", "min_qty", "max_qty", "min_notional", "max_notional",
              "present", "trading", "pad0", "venue", "symbol", "status", "taker_fee_bps", "maker_fee_bps"],
    "formats": ["<u8", "<f8", "<f8", "<f8", "<f8", "<f8", "<f8", "u1", "u1", "V6", "S16", "S32", "S80", "<f8", "<f8"],
    "offsets": [0, 8, 16, 24, 32, 40, 48, 56, 57, 58, 64, 80, 112, 192, 200],
    "itemsize": 4 * CACHE_LINE,
})
RULES_TEXT = {"venue": 16, "symbol": 32, "status": 80}   # bytes of each text field (UTF-8, NUL padded)


def row_dtype(depth: int) -> np.dtype:
    """The quote row for top-``depth`` books.

    Field order matters: ``seq`` is first so the seqlock counter is one
    aligned u64 at offset 0; the payload after it is written by one
    ``struct.pack_into`` (see :mod:`pipeline.board.seqlock`). Everything a
    top-of-book write changes comes first (the best levels, the times, the
    counters, the status) and then the level arrays, so that write packs the
    header and the first bid level in one go and the first ask level in a
    second small one, instead of the whole row.
    """
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be 1..{MAX_DEPTH}, got {depth}")
    fields = [
        ("seq", "<u8"),
        ("bid_px", "<f8"),
        ("bid_qty", "<f8"),
        ("ask_px", "<f8"),
        ("ask_qty", "<f8"),
        ("exch_ts_ns", "<i8"),     # exchange event time (wall clock), 0 when the exchange sends none
        ("recv_ns", "<i8"),        # when the frame reached the socket (wall clock; see feed/transport.py)
        ("publish_ns", "<i8"),     # time.time_ns() just before the row was written
        ("update_count", "<u8"),
        ("confirmed_ns", "<i8"),   # last time the exchange confirmed this quote current (a change or a
                                   # liveness message: heartbeat, unchanged re-send); staleness uses it
        ("xseq", "<u8"),           # the exchange's own id of the newest update the row holds, the same on every
                                   # connection and box (pipeline.book.InstrumentBook.version); 0: the venue's
                                   # frames carry none. Copies of one book read over other paths compare by it
        ("status", "u1"),
        ("n_bids", "u1"),
        ("n_asks", "u1"),
        ("pad0", "u1"),
        ("venue_id", "<u2"),
        ("instrument_id", "<u2"),
        ("gaps", "<u4"),
        ("checksum_failures", "<u4"),
        ("bids", "<f8", (depth, 2)),  # [price, qty], best first
        ("asks", "<f8", (depth, 2)),
    ]
    packed = np.dtype(fields)
    size = -(-packed.itemsize // CACHE_LINE) * CACHE_LINE
    return np.dtype({"names": packed.names, "formats": [packed.fields[n][0] for n in packed.names],
                     "offsets": [packed.fields[n][1] for n in packed.names], "itemsize": size})


def struct_format(dtype: np.dtype, first_field: str, last_field: str | None = None) -> str:
    """A ``struct`` format covering ``dtype`` from ``first_field`` to ``last_field`` (default: its last field).

    Derived from the dtype so the seqlock's ``pack_into`` can never disagree
    with the numpy views: sub-arrays become repeated codes and holes become
    pad bytes.
    """
    codes = {"<f8": "d", "<i8": "q", "<u8": "Q", "<u4": "I", "<u2": "H", "|u1": "B", "<i4": "i"}
    names = list(dtype.names)
    start = dtype.fields[first_field][1]
    out = ["<"]
    cursor = start
    for name in names[names.index(first_field):names.index(last_field or names[-1]) + 1]:
        field_dtype, offset = dtype.fields[name][:2]
        if offset > cursor:
            out.append(f"{offset - cursor}x")
        base = field_dtype.base if field_dtype.subdtype else field_dtype
        count = int(np.prod(field_dtype.shape)) if field_dtype.subdtype else 1
        code = codes[base.str]
        out.append(f"{count}{code}" if count > 1 else code)
        cursor = offset + field_dtype.itemsize
    fmt = "".join(out)
    assert struct.calcsize(fmt) == cursor - start, (fmt, cursor - start)
    return fmt


# The decision ring (version 11; pipeline.board.ring, pipeline.board.decisions): after the rules, a control
# block (the ring's entry counter on its own cache line, then the output's sleeping flag on the next, where the
# doorbell finds it), the names table (a counter line, then NAMES_MAX entries of NAME_SIZE bytes: the text a
# decision refers to by index) and ``decision_entries`` slots of ``decision_slot_size(decision_fills)`` bytes.
RING_CONTROL = 2 * CACHE_LINE
NAMES_MAX = 1024
NAME_SIZE = 64
DECISION_HEAD = RING_CONTROL + CACHE_LINE + NAMES_MAX * NAME_SIZE
DECISION_FIXED = 384        # bytes of an entry before its shadow fills (pipeline.board.decisions checks its struct)
DECISION_FILL = 72          # bytes of one shadow fill


def decision_slot_size(fills: int) -> int:
    """Bytes of one decision ring slot holding up to ``fills`` shadow fills: whole cache lines."""
    return -(-(DECISION_FIXED + fills * DECISION_FILL) // CACHE_LINE) * CACHE_LINE


@dataclass(frozen=True)
class BoardGeometry:
    """Sizes and offsets of one board, all derived from the dtypes above."""

    n_rows: int
    depth: int
    n_procs: int
    decision_entries: int = 0       # 0: a board without a decision ring
    decision_fills: int = 0

    @property
    def row(self) -> np.dtype:
        return row_dtype(self.depth)

    @property
    def procs_offset(self) -> int:
        return HEADER_DTYPE.itemsize

    @property
    def hists_offset(self) -> int:
        return HEADER_DTYPE.itemsize + self.n_procs * PROC_DTYPE.itemsize

    @property
    def pairs_offset(self) -> int:
        return self.hists_offset + self.n_procs * HISTS_PER_PROC * HIST_DTYPE.itemsize

    @property
    def row_lanes_offset(self) -> int:
        return self.pairs_offset + PAIRS_DTYPE.itemsize

    @property
    def lanes_offset(self) -> int:
        return self.row_lanes_offset + -(-2 * self.n_rows // CACHE_LINE) * CACHE_LINE

    def lane_offset(self, lane: int) -> int:
        return self.lanes_offset + lane * LANE_DTYPE.itemsize

    @property
    def rows_offset(self) -> int:
        return self.lanes_offset + self.n_procs * LANE_DTYPE.itemsize

    def hist_offset(self, slot: int, index: int) -> int:
        return self.hists_offset + (slot * HISTS_PER_PROC + index) * HIST_DTYPE.itemsize

    @property
    def rules_offset(self) -> int:
        return self.rows_offset + self.n_rows * self.row.itemsize

    def rule_offset(self, row: int) -> int:
        return self.rules_offset + row * RULES_DTYPE.itemsize

    @property
    def decisions_offset(self) -> int:
        return self.rules_offset + self.n_rows * RULES_DTYPE.itemsize

    @property
    def decision_slot_size(self) -> int:
        return decision_slot_size(self.decision_fills)

    @property
    def size(self) -> int:
        if not self.decision_entries:
            return self.decisions_offset
        return self.decisions_offset + DECISION_HEAD + self.decision_entries * self.decision_slot_size

    def row_offset(self, row: int) -> int:
        return self.rows_offset + row * self.row.itemsize
