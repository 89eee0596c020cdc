"""Seqlock writer and reader for quote rows, and the writer's change lane.

Contract, per row:

* exactly one writer (the feed process that owns the row). The writer sets
  ``seq`` to an odd value, writes the payload, then sets ``seq`` to the next
  even value;
* any number of readers, which never block the writer: read ``seq``, copy
  the payload, read ``seq`` again, and retry while it was odd or changed, a
  bounded number of times.

Then, per publish, the change lane (see :mod:`pipeline.board.layout`): after
the even ``seq`` the writer stores the row index in its lane's ring at
``count % LANE_RING`` and then stores ``count + 1``. A reader that loads a
lane's ``count`` and then the ring entries below it learns every row whose
publish finished before that ``count``; it loads ``count`` again after the
entries, and any entry at ``count - LANE_RING`` or below may have been
overwritten meanwhile, so a reader that far behind scans the lane's rows
instead. A row caught mid-write (odd ``seq``) when its entry is read was
already published again-in-progress: that next publish appends its own entry.

``seq`` and the lane's words are stored through a u64 memoryview (one
aligned 8-byte store each), never inside a ``pack_into``: CPython's
``s_pack_internal`` zero-fills the whole span it packs before it stores the
fields, so a ``seq`` packed with the payload would read 0, even, for a moment.

Why this is correct without fences: CPython has no memory barriers, so we rely
on the hardware. x86-64 (TSO) keeps stores in program order with other stores
and loads in order with other loads, and CPython's ``struct.pack_into`` /
``unpack_from`` write and read the fields one at a time in format order
(``s_pack_internal`` / ``s_unpack_internal`` loop over the codes through
function pointers). So a reader that saw the same even ``seq`` before and after
its copy saw no store of that write interleaved, and a reader that saw a lane's
``count`` sees the row and ring stores made before it. This is **not** safe on
ARM, where loads and stores may be reordered and pure Python cannot issue a
barrier. Readers must not validate with a single ``memcpy`` (numpy ``.copy()``
of a whole block): ``rep movsb`` gives no ordering within the copy.

Cost, from ``shared/reference/measured-limits.md`` on these machines: one
``Struct.pack_into`` of the whole payload bracketed by two u64 stores through
a memoryview is about 0.3-0.45 µs; the same row written with numpy field
assignments is 0.67 µs, so the hot path uses ``struct``; numpy views are for
the detector's change scan and for tests and health, where convenience wins.
A top-of-book write packs only the row's header and first levels (two
``pack_into`` of 20 and 2 values, against 36 for the whole row at depth 5):
after the writer slept, Python runs cold and each value costs, so this halves
a cold publish on this VM (measured in ``bench.transport``).
"""
from __future__ import annotations

import struct
import time

from pipeline.board.layout import LANE_DTYPE, LANE_MASK, LANE_RING, NO_LANE, struct_format
from pipeline.board.shm import Board
from pipeline.errors import BoardError, RowOwnershipError, RowValueError, TornReadError

_I64_MAX = 2 ** 63 - 1   # the row's time fields are int64 nanoseconds
_U64_MAX = 2 ** 64 - 1   # and its exchange id (xseq) a uint64
READ_RETRIES = 10_000   # ~1-2 ms of retries: a writer preempted mid-write makes the row "busy", not an error to die on
assert LANE_MASK == 255     # RowWriter.write masks with the literal


class RowCodec:
    """Offsets and the payload ``Struct`` for one board's row layout."""

    def __init__(self, board: Board):
        row = board.geometry.row
        self.depth = board.geometry.depth
        self.row_size = row.itemsize
        self.rows_offset = board.geometry.rows_offset
        self.payload = struct.Struct(struct_format(row, "bid_px"))
        self.payload_offset = row.fields["bid_px"][1]
        # the header and the first bid level (what a top-of-book write changes, with the first ask level)
        assert row.fields["bids"][1] == row.fields["checksum_failures"][1] + 4
        self.head = struct.Struct(struct_format(row, "bid_px", "checksum_failures") + "dd")
        self.top_ask = struct.Struct("<dd")
        self.top_ask_offset = row.fields["asks"][1]
        names = list(row.names)
        # index of each scalar field inside the unpacked payload tuple (the head's tuple is its prefix)
        self.index = {}
        i = 0
        for name in names[names.index("bid_px"):]:
            self.index[name] = i
            sub = row.fields[name][0]
            i += int(sub.shape[0] * sub.shape[1]) if sub.subdtype else 1
        self.n_values = i


class ChangeLane:
    """Where one lane lives on a board: its counter's word and its ring (a u32 view)."""

    def __init__(self, board: Board, lane: int):
        offset = board.geometry.lane_offset(lane)
        self.lane = lane
        self.count_word = offset // 8
        start = (offset + LANE_DTYPE.fields["ring"][1]) // 4
        self.ring = board.buf.cast("B").cast("I")[start:start + LANE_RING]


def lane_of_rows(board: Board, rows) -> int | None:
    """The process slot whose lane logs ``rows`` (None: no lane); rows of several lanes are an error."""
    lanes = {int(board.row_lanes[row]) for row in rows}
    if len(lanes) > 1:
        raise BoardError(f"rows {sorted(rows)} belong to several change lanes {sorted(lanes)}: one writer each")
    lane = lanes.pop() if lanes else NO_LANE
    return None if lane == NO_LANE else lane - 1


class RowWriter:
    """Writes the rows one feed process owns, and nothing else, and logs each publish in their lane.

    ``rows`` are the board row indices this writer owns (assigned by the
    supervisor); writing any other row raises :class:`RowOwnershipError`.
    Their lane is the one the board's creator assigned them
    (:meth:`~pipeline.board.shm.Board.assign_lane`); rows without one are
    logged nowhere (a private ring) and readers scan them.
    """

    def __init__(self, board: Board, rows: list[int]):
        self._codec = codec = RowCodec(board)
        self._buf = board.buf
        self._words = words = board.buf.cast("B").cast("Q")
        self._owned = frozenset(rows)
        self._pack = codec.payload.pack_into
        self._head = codec.head.pack_into
        self._top_ask = codec.top_ask.pack_into
        self._depth = codec.depth
        self._zeros = (0.0, 0.0) * codec.depth
        self._header_flag = board.header  # doorbell flag lives in the header
        self._state = {}
        for row in rows:
            if not 0 <= row < board.geometry.n_rows:
                raise BoardError(f"row {row} is outside the board (0..{board.geometry.n_rows - 1})")
        lane = lane_of_rows(board, rows)
        if lane is None:
            self._ring = memoryview(bytearray(4 * LANE_RING)).cast("I")
            self._count = memoryview(bytearray(8)).cast("Q")
        else:
            where = ChangeLane(board, lane)
            self._ring = where.ring
            self._count = words[where.count_word:where.count_word + 1]
        self.lane = lane
        self._lane = [self._count[0]]       # rows logged so far (resumed after a restart)
        for row in rows:
            record = board.rows[row]
            base = codec.rows_offset + row * codec.row_size
            self._state[row] = [
                int(record["seq"]) & ~1,     # resume after a restart (round an interrupted odd up below)
                int(record["update_count"]),
                int(record["venue_id"]),
                int(record["instrument_id"]),
                int(record["gaps"]),
                int(record["checksum_failures"]),
                base // 8,                          # seq word
                base + codec.payload_offset,        # payload offset (the head starts there)
                base + codec.top_ask_offset,        # the first ask level
                True,                               # the row may hold levels past the first: zero them once
            ]
            if int(record["seq"]) & 1:       # a previous owner died mid-write
                self._state[row][0] += 2
                words[base // 8] = self._state[row][0]
                self._log(row)
        self._last = {row: None for row in rows}

    @property
    def rows(self) -> frozenset[int]:
        return self._owned

    def _log(self, row: int) -> None:
        """Append ``row`` to the lane: the ring entry, then the counter (after the row's even seq)."""
        lane = self._lane
        n = lane[0]
        self._ring[n & LANE_MASK] = row
        lane[0] = n = n + 1
        self._count[0] = n

    def write(self, row: int, status: int, bids, asks, exch_ts_ns: int, recv_ns: int,
              gaps: int | None = None, checksum_failures: int | None = None, xseq: int | None = 0,
              confirmed_ns: int = 0) -> int:
        """Publish one row; returns the time it was published (the row's ``publish_ns``).

        ``bids``/``asks`` are sequences of (price, qty), best first.

        Levels beyond the board's depth are ignored; missing levels are zero.
        ``xseq`` is the exchange's id of the newest update in the book (the row's ``xseq``; None or 0: none),
        so a writer is a :class:`~pipeline.feed.session.RowSink` as it is; ``confirmed_ns`` defaults to
        ``recv_ns`` (a change confirms the quote). A time that does not fit
        the row's int64 field raises :class:`RowValueError` before anything is stored: the row keeps its
        last consistent value and its sequence stays even (a failure half way through a write would leave
        it odd, and every reader waiting).
        """
        state = self._state.get(row)
        if state is None:
            raise RowOwnershipError(f"this writer owns rows {sorted(self._owned)}, not row {row}")
        if xseq is None:
            xseq = 0
        if not (0 <= exch_ts_ns <= _I64_MAX and 0 <= recv_ns <= _I64_MAX and 0 <= confirmed_ns <= _I64_MAX
                and 0 <= xseq <= _U64_MAX):
            raise RowValueError(f"row {row}: a time or id out of range (exch_ts_ns {exch_ts_ns}, recv_ns {recv_ns}, "
                                f"confirmed_ns {confirmed_ns}, xseq {xseq})")
        if gaps is not None:
            state[4] = gaps
        if checksum_failures is not None:
            state[5] = checksum_failures
        if len(bids) == 1 and len(asks) == 1 and not state[9]:
            # top of book only, the hottest case: the header and the first levels, the deeper ones stay zero
            bid_px, bid_qty = bids[0]
            ask_px, ask_qty = asks[0]
            seq = state[0]
            count = state[1] = state[1] + 1
            word = state[6]
            words = self._words
            buf = self._buf
            # the seq never goes into a pack_into: it zero-fills its whole span before it stores the fields
            published_ns = time.time_ns()
            words[word] = seq + 1                                 # odd: write in progress
            self._head(buf, state[7], bid_px, bid_qty, ask_px, ask_qty, exch_ts_ns, recv_ns, published_ns,
                       count, confirmed_ns or recv_ns, xseq, status, 1, 1, 0, state[2], state[3], state[4], state[5],
                       bid_px, bid_qty)
            self._top_ask(buf, state[8], ask_px, ask_qty)
            words[word] = seq + 2                                 # even: consistent
            state[0] = seq + 2
            lane = self._lane                                     # then the change lane: entry, counter
            n = lane[0]
            self._ring[n & 255] = row
            lane[0] = n = n + 1
            self._count[0] = n
            return published_ns
        depth = self._depth
        if len(bids) > depth:
            bids = bids[:depth]
        if len(asks) > depth:
            asks = asks[:depth]
        n_bids = len(bids)
        n_asks = len(asks)
        zeros = self._zeros
        flat = [x for level in bids for x in level]
        flat += zeros[: 2 * (depth - n_bids)]
        flat += [x for level in asks for x in level]
        flat += zeros[: 2 * (depth - n_asks)]
        if n_bids:
            bid_px, bid_qty = bids[0]
        else:
            bid_px = bid_qty = 0.0
        if n_asks:
            ask_px, ask_qty = asks[0]
        else:
            ask_px = ask_qty = 0.0
        seq = state[0]
        state[1] += 1
        state[9] = n_bids > 1 or n_asks > 1
        word = state[6]
        words = self._words
        published_ns = time.time_ns()
        words[word] = seq + 1                                     # odd: write in progress
        self._pack(self._buf, state[7], bid_px, bid_qty, ask_px, ask_qty, exch_ts_ns, recv_ns, published_ns,
                   state[1], confirmed_ns or recv_ns, xseq, status, n_bids, n_asks, 0, state[2], state[3], state[4],
                   state[5], *flat)
        words[word] = seq + 2                                     # even: consistent
        state[0] = seq + 2
        lane = self._lane                                         # then the change lane: entry, counter
        n = lane[0]
        self._ring[n & 255] = row
        lane[0] = n = n + 1
        self._count[0] = n
        return published_ns

    def set_status(self, row: int, status: int, confirmed_ns: int | None = None) -> None:
        """Change only the status of a row (and, when given, its confirmed time), keeping its last quote.

        For stale, disconnected, halted, and for a liveness message that confirms the quote is current.
        """
        if row not in self._state:
            raise RowOwnershipError(f"this writer owns rows {sorted(self._owned)}, not row {row}")
        if confirmed_ns is not None and not 0 <= confirmed_ns <= _I64_MAX:
            raise RowValueError(f"row {row}: confirmed_ns {confirmed_ns} out of range")
        values = read_row(self._codec, self._buf, row, self._words)
        codec = self._codec
        idx = codec.index
        values = list(values)
        values[idx["status"]] = status
        if confirmed_ns is not None:
            values[idx["confirmed_ns"]] = confirmed_ns
        values[idx["publish_ns"]] = time.time_ns()
        state = self._state[row]
        state[1] += 1
        values[idx["update_count"]] = state[1]
        offset = codec.rows_offset + row * codec.row_size
        word = offset // 8
        seq = state[0]
        self._words[word] = seq + 1
        codec.payload.pack_into(self._buf, offset + codec.payload_offset, *values)
        self._words[word] = seq + 2
        state[0] = seq + 2
        self._log(row)

    def set_status_all(self, status: int) -> None:
        for row in self._owned:
            self.set_status(row, status)


def read_row(codec: RowCodec, buf, row: int, words=None) -> tuple:
    """Consistent copy of one row's payload (a tuple in ``RowCodec.index`` order)."""
    if words is None:
        words = buf.cast("B").cast("Q")
    return _read(codec, buf, words, (codec.rows_offset + row * codec.row_size) // 8, row)[1]


def read_consistent(words, word: int, unpack, buf, offset: int, row: int) -> tuple[int, tuple]:
    """The seqlock read: (even sequence, ``unpack(buf, offset)``) taken between two equal loads of the
    sequence word ``words[word]``; TornReadError after READ_RETRIES attempts met a write."""
    for _ in range(READ_RETRIES):
        before = words[word]
        if before & 1:
            continue
        values = unpack(buf, offset)
        if words[word] == before:
            return before, values
    raise TornReadError(f"row {row} changed during {READ_RETRIES} read attempts")


def _read(codec: RowCodec, buf, words, word: int, row: int) -> tuple[int, tuple]:
    """A whole row's payload, read through the seqlock."""
    return read_consistent(words, word, codec.payload.unpack_from, buf, word * 8 + codec.payload_offset, row)


class RowReader:
    """Reads consistent rows; hands out Python tuples, never numpy records."""

    def __init__(self, board: Board):
        self.codec = RowCodec(board)
        self._buf = board.buf
        self._words = board.buf.cast("B").cast("Q")
        self.n_rows = board.geometry.n_rows
        codec = self.codec
        self.seq_words = [(codec.rows_offset + r * codec.row_size) // 8 for r in range(self.n_rows)]
        self._head_from = codec.head.unpack_from
        self._payload_offset = codec.payload_offset

    def seq(self, row: int) -> int:
        return self._words[self.seq_words[row]]

    def read(self, row: int) -> tuple:
        return _read(self.codec, self._buf, self._words, self.seq_words[row], row)[1]

    def read_with_seq(self, row: int) -> tuple[int, tuple]:
        return _read(self.codec, self._buf, self._words, self.seq_words[row], row)

    def read_top(self, row: int) -> tuple[int, tuple]:
        """(even sequence, the row's head): every field but the levels past the first bid, half of a whole row.

        The head's values sit at the same indexes as in :meth:`read` (``codec.index``), up to the first
        bid level; a top-of-book reader needs no more. The first attempt is straight-line code: a reader
        that just woke up runs it cold.
        """
        words = self._words
        word = self.seq_words[row]
        seq = words[word]
        if not seq & 1:
            values = self._head_from(self._buf, word * 8 + self._payload_offset)
            if words[word] == seq:
                return seq, values
        return read_consistent(words, word, self._head_from, self._buf, word * 8 + self._payload_offset, row)
