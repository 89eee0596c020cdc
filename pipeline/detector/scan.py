"""The detector's view of the board: which rows changed, and their quotes.

Reads rows in place through the seqlock (no serialization, no queue) and
finds changed rows by their seq words, so a pass costs in proportion to what
changed, not to the size of the board. The live detector and ``replay`` read
the board through this same class.

Rows are grouped by instrument identity (quotes declared equivalent, such as
USDT and USDC, map to the group's first). A row's venue is named by its
label: ``kraken`` for this box's own feed, ``kraken@frankfurt`` for a row a
bridge mirrors from another box; fees and staleness limits come from the
venue's config (for a bridged row, the venue as the ``bridge.subscribe``
section declares it).
"""
from __future__ import annotations

import struct

import numpy as np

from pipeline.board import RowReader, TornReadError
from pipeline.board.seqlock import READ_RETRIES
from pipeline.detector.rules import Quote

NUMPY_SCAN_ROWS = 64
_U64 = struct.Struct("<Q")


def level_readers(bids_at: int, asks_at: int, depth: int) -> list[list]:
    """``readers[n_bids][n_asks](values)`` -> (bids, asks) as lists of (price, qty), from an unpacked row.

    One small function per pair of level counts, written out index by index: building the lists from
    constant indexes costs about half of slicing and zipping, and the detector reads a row per change.
    """
    def side(at: int, n: int) -> str:
        return "[" + "".join(f"(v[{at + 2 * k}], v[{at + 2 * k + 1}]), " for k in range(n)) + "]"
    return [[eval(f"lambda v: ({side(bids_at, nb)}, {side(asks_at, na)})")  # noqa: S307 - our own constant text
             for na in range(depth + 1)] for nb in range(depth + 1)]


def instrument_key(instrument: str, equivalent_quotes) -> str:
    """The identity used to compare exchanges: quotes declared equivalent map to the group's first."""
    base, quote = instrument.split("/")
    for group in equivalent_quotes:
        if quote in group:
            return f"{base}/{group[0]}"
    return instrument


def venue_config_for(config, assignment):
    """The :class:`~pipeline.config.VenueConfig` that governs a row (its own feed's, or the bridged box's)."""
    if assignment.box and config.bridge is not None:
        for box, venues in config.bridge.subscribe:
            if box == assignment.box:
                for venue in venues:
                    if venue.name == assignment.venue:
                        return venue
    return config.venue(assignment.venue)


class RowUniverse:
    """The rows the detector watches, grouped by instrument identity, with fees and limits per label."""

    def __init__(self, config, rows):
        dc = config.detector
        self.rows_of: dict[str, list[tuple[int, str]]] = {}
        self.key_of_row: dict[int, str] = {}
        self.label_of_row: dict[int, str] = {}
        self.venue_of_label: dict[str, str] = {}
        self.fees: dict[str, dict[str, float]] = {}
        self.max_age_ns: dict[str, int] = {}
        self.max_notional: dict[str, float] = {}
        for assignment in rows:
            key = instrument_key(assignment.instrument, dc.equivalent_quotes)
            label = assignment.label
            venue = venue_config_for(config, assignment)
            self.rows_of.setdefault(key, []).append((assignment.row, label))
            self.key_of_row[assignment.row] = key
            self.label_of_row[assignment.row] = label
            self.venue_of_label[label] = assignment.venue
            self.fees.setdefault(key, {})[label] = venue.fee_bps(assignment.instrument)
            self.max_age_ns[label] = int(venue.staleness_ms * 1e6)
            self.max_notional[key] = dc.max_notional_for(assignment.instrument)
        self.watch = sorted(self.key_of_row)


class BoardView:
    """Changed rows and quotes, read from a board through a :class:`RowReader`."""

    def __init__(self, board, universe: RowUniverse):
        self.universe = universe
        self.reader = RowReader(board)
        self.rows_of = universe.rows_of
        self.key_of_row = universe.key_of_row
        self.max_age_ns = universe.max_age_ns
        self.watch = universe.watch
        self.seq_words = [self.reader.seq_words[r] for r in self.watch]
        self.last_seq = [0] * len(self.watch)
        self._position = {row: i for i, row in enumerate(self.watch)}
        codec = self.reader.codec
        idx = codec.index
        self._fields = (idx["bids"], idx["asks"], idx["n_bids"], idx["n_asks"], idx["status"], idx["recv_ns"],
                        idx["exch_ts_ns"], idx["publish_ns"], idx["confirmed_ns"])
        self._levels = level_readers(idx["bids"], idx["asks"], codec.depth)
        self._words = self.reader._words  # noqa: SLF001 - the hot loops read seq words directly
        self._buf = board.buf
        self._unpack = codec.payload.unpack_from
        # per row: [row, label, seq word, payload offset, seq of the cached quote, staleness limit]
        self._entry: dict[int, list] = {}
        self._entries_of: dict[str, list[list]] = {}
        self._cached: dict[str, dict[str, Quote]] = {}
        for key, members in self.rows_of.items():
            entries = []
            for row, label in members:
                word = self.reader.seq_words[row]
                entry = [row, label, word, word * 8 + codec.payload_offset, -1, self.max_age_ns[label]]
                self._entry[row] = entry
                entries.append(entry)
            self._entries_of[key] = entries
            self._cached[key] = {}
        # large boards: find changed rows with one strided numpy copy of the seq column instead of a
        # Python loop (about 37 ns a row); small boards: the loop is cheaper than numpy's call overhead
        self._seq_column = None
        if len(self.watch) > NUMPY_SCAN_ROWS and self.watch == list(range(len(self.watch))):
            self._seq_column = np.ndarray((len(self.watch),), "<u8", board.buf, codec.rows_offset,
                                          (codec.row_size,))
            self._last_column = np.zeros(len(self.watch), "<u8")  # the seq column as last seen, and as bytes
            self._last_bytes = self._last_column.tobytes()
            self._moved = np.zeros(len(self.watch), bool)

    # ---------------------------------------------------------------- reading
    def quote(self, row: int, label: str) -> Quote:
        """A fresh read of one row."""
        return self._read_quote(self._entry[row])

    def _read_quote(self, entry: list) -> Quote:
        """The seqlock read (as :meth:`RowReader.read_with_seq`) of one row into a new Quote; updates its seq."""
        words = self._words
        word = entry[2]
        unpack = self._unpack
        buf = self._buf
        offset = entry[3]
        for _ in range(READ_RETRIES):
            seq = words[word]
            if seq & 1:
                continue
            v = unpack(buf, offset)
            if words[word] == seq:
                break
        else:
            raise TornReadError(f"row {entry[0]} changed during {READ_RETRIES} read attempts")
        _, _, nb, na, status, recv, exch, publish, confirmed = self._fields
        entry[4] = seq
        bids, asks = self._levels[v[nb]][v[na]](v)
        return Quote(entry[1], v[status], bids, asks, v[recv], v[exch], v[publish], seq, entry[5], v[confirmed])

    def quotes(self, key: str) -> dict[str, Quote]:
        """Every quote of one instrument identity, by label. Raises TornReadError when a writer stalls mid-write.

        Only rows whose seq moved since they were last read are read again; the others keep their
        :class:`Quote` object (the engine relies on that to re-walk only what changed). The dict is this
        view's own and is updated in place by the next call: use it before calling again.
        """
        cache = self._cached[key]
        words = self._words
        for entry in self._entries_of[key]:
            if words[entry[2]] != entry[4]:
                cache[entry[1]] = self._read_quote(entry)
        return cache

    def retry(self, key: str) -> None:
        """Read ``key`` again on the next pass (its read was torn by a preempted writer)."""
        for row, _ in self.rows_of[key]:
            if self._seq_column is not None:
                last = self._last_column.copy()
                last[row] = 0
                self._last_column = last
                self._last_bytes = last.tobytes()
            else:
                self.last_seq[self._position[row]] = -1

    # ---------------------------------------------------------------- change scan
    def changed(self) -> dict[str, list[int]]:
        """Instrument identities whose rows changed since the last pass, with those rows."""
        if self._seq_column is not None:
            return self._changed_numpy()
        words = self._words
        current = [words[word] for word in self.seq_words]
        last = self.last_seq
        if current == last:
            return {}
        dirty: dict[str, list[int]] = {}
        watch = self.watch
        key_of_row = self.key_of_row
        for i, seq in enumerate(current):
            if seq != last[i] and not seq & 1:      # odd: a write in progress, seen when it completes
                last[i] = seq
                row = watch[i]
                dirty.setdefault(key_of_row[row], []).append(row)
        return dirty

    def _changed_numpy(self) -> dict[str, list[int]]:
        seen = self._seq_column.tobytes()          # each u64 load is atomic; rows are re-validated when read
        if seen == self._last_bytes:
            return {}
        current = np.frombuffer(seen, "<u8")
        last = self._last_column
        np.not_equal(current, last, out=self._moved)
        dirty: dict[str, list[int]] = {}
        key_of_row = self.key_of_row
        moved = self._moved.nonzero()[0]
        if len(moved) > 64:                        # a burst: the odd rows in one numpy pass
            odd_rows = moved[(current[moved] & 1).astype(bool)]
            if len(odd_rows):
                current = current.copy()
                current[odd_rows] = last[odd_rows]
                seen = current.tobytes()
                moved = np.flatnonzero(current != last)
            for row in moved.tolist():
                dirty.setdefault(key_of_row[row], []).append(row)
            self._last_column = current
            self._last_bytes = seen
            return dirty
        seq_at = _U64.unpack_from
        odd = []
        for row in moved.tolist():
            if seq_at(seen, 8 * row)[0] & 1:       # odd: a write in progress, seen when it completes
                odd.append(row)
                continue
            dirty.setdefault(key_of_row[row], []).append(row)
        if odd:
            current = current.copy()
            current[odd] = last[odd]
            seen = current.tobytes()
        self._last_column = current                # read-only when it shares ``seen``: retry() copies first
        self._last_bytes = seen
        return dirty

    def anything_changed(self) -> bool:
        if self._seq_column is not None:
            return self._seq_column.tobytes() != self._last_bytes
        words = self._words
        last = self.last_seq
        for i, word in enumerate(self.seq_words):
            if words[word] != last[i]:
                return True
        return False

    def close(self) -> None:
        self.reader = None
        self._seq_column = None
        self._words = self._buf = self._unpack = None
