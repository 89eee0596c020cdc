"""The detector's view of the board: which rows changed, and their quotes.

Reads rows in place through the seqlock (no serialization, no queue) and
finds changed rows in the writers' change lanes (see
:mod:`pipeline.board.layout` and :mod:`pipeline.board.seqlock`): one counter
load per lane, then only the ring entries published since the last pass, so
a pass costs in proportion to what changed, not to the size of the board. A
lane that moved by a whole ring or more since the last pass is scanned row by
row (a burst: evaluating it costs far more than the scan), and rows that have
no lane (a board whose creator assigned none, as in ``replay``) are found by
comparing every seq word on each pass, one strided numpy copy on large boards.
The live detector and ``replay`` read the board through this same class.

Rows are grouped by instrument identity (quotes declared equivalent, such as
USDT and USD, map to the group's first, the currency its profit is stated
in). A row's venue is named by its label: ``kraken`` for this box's own feed,
``kraken@frankfurt`` for a row a bridge mirrors from another box; within a
group a row is named by its *leg*, label and own instrument (``kraken
BTC/USDT``), so one venue quoting two equivalent instruments gives two legs of
one matching engine, never a pair. Fees and staleness limits come from the
venue's config (for a bridged row, the venue as the ``bridge.subscribe``
section declares it).
"""
from __future__ import annotations

import struct
from itertools import compress
from operator import ne
from typing import Any

import numpy as np

from pipeline.board import (
    LANE_MASK,
    LANE_RING,
    ChangeLane,
    RowReader,
    TornReadError,
    lane_of_rows,
    read_consistent,
    read_entry,
)
from pipeline.detector.rules import LIVE, Quote, leg_of
from pipeline.fees import account_fee_or_configured

NUMPY_SCAN_ROWS = 64
_U64 = struct.Struct("<Q")


def quote_readers(index: dict[str, int], depth: int) -> list[list]:
    """``readers[n_bids][n_asks](values, label, seq, max_age_ns, instrument, via, row)`` -> a :class:`Quote`, from
    a row.

    One small function per pair of level counts, written out index by index: building the level lists
    from constant indexes costs about half of slicing and zipping, and building the Quote in the same
    call saves a call per row read; the detector reads a row per change.
    """
    bids_at, asks_at = index["bids"], index["asks"]

    def side(at: int, n: int) -> str:
        return "[" + "".join(f"(v[{at + 2 * k}], v[{at + 2 * k + 1}]), " for k in range(n)) + "]"
    i = index
    return [[eval(f"lambda v, label, seq, max_age_ns, instrument, via, row: Quote(label, v[{i['status']}], "  # noqa: S307
                  f"{side(bids_at, nb)}, {side(asks_at, na)}, v[{i['recv_ns']}], v[{i['exch_ts_ns']}], "
                  f"v[{i['publish_ns']}], seq, max_age_ns, v[{i['confirmed_ns']}], instrument, v[{i['xseq']}], "
                  "via, row)",
                  {"Quote": Quote})      # our own constant text
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
    """The rows the detector watches, grouped by instrument identity, with fees and limits per leg.

    A venue is one matching engine whatever the path it is read through: a row mirrored from another box
    (``binance@frankfurt``) of a venue and instrument this box also reads itself is one more path to the same
    book, never a second venue. It joins the local row's leg (:attr:`copies`: such rows, with their box), and
    :class:`BoardView` serves the leg from whichever of its rows holds the newest update by the exchange's own
    id (the rows' ``xseq``), so the venue's liquidity is counted once, one dislocation is one opportunity, and
    a local feed that stalls or resyncs is covered by the other box's copy. A venue only another box reads
    (``kraken@frankfurt`` where this box has no kraken) is a leg like any other.
    """

    def __init__(self, config, rows):
        dc = config.detector
        local = {(a.venue, a.instrument) for a in rows if not a.box}
        self.copies: dict[int, str] = {a.row: a.box for a in rows if a.box and (a.venue, a.instrument) in local}
        self.via_of_row: dict[int, str] = {a.row: a.box for a in rows if a.box}
        self.copies_of_leg: dict[str, list[int]] = {}              # leg -> its rows, the local one first
        self.rows_of: dict[str, list[tuple[int, str]]] = {}         # key -> [(row, leg)]
        self.key_of_row: dict[int, str] = {}
        self.leg_of_row: dict[int, str] = {}                       # row -> its leg (the key of its quote)
        self.venue_label_of_row: dict[int, str] = {}               # row -> venue label (kraken, kraken@frankfurt)
        self.instrument_of_row: dict[int, str] = {}
        self.venue_of_label: dict[str, str] = {}
        self.fees: dict[str, dict[str, float]] = {}                # key -> leg -> taker fee bps (in use)
        self.configured_fees: dict[str, float] = {}                # leg -> the configured taker fee bps
        self.fee_source: dict[str, dict[str, str]] = {}            # key -> leg -> "config" / "account"
        self.key_of_leg: dict[str, str] = {}
        self.currency: dict[str, dict[str, str]] = {}              # key -> leg -> the quote currency it trades in
        self.currency_of_key: dict[str, tuple[str, str]] = {}     # key -> (base, currency profit is stated in)
        self.max_age_ns: dict[str, int] = {}                       # leg -> its venue's staleness limit
        self.unchanged_ns: dict[str, int] = {}                     # leg -> how long its price may sit still (0: any)
        self.lag_ns: dict[str, int] = {}                           # leg -> how far behind its exchange time may be
        self.max_notional: dict[str, float] = {}
        for assignment in sorted(rows, key=lambda a: a.row in self.copies):     # local rows before their copies
            key = instrument_key(assignment.instrument, dc.equivalent_quotes)
            copy = assignment.row in self.copies
            label = assignment.venue if copy else assignment.label      # a copy is read as the local leg
            leg = leg_of(label, assignment.instrument)
            self.rows_of.setdefault(key, []).append((assignment.row, leg))
            self.key_of_row[assignment.row] = key
            self.leg_of_row[assignment.row] = leg
            self.venue_label_of_row[assignment.row] = label
            self.instrument_of_row[assignment.row] = assignment.instrument
            if copy:
                self.copies_of_leg[leg] = [r for r, other in self.rows_of[key] if other == leg]
                continue                                # fees, limits and rules: the local leg's
            venue = venue_config_for(config, assignment)
            self.venue_of_label[label] = assignment.venue
            self.fees.setdefault(key, {})[leg] = self.configured_fees[leg] = venue.fee_bps(assignment.instrument)
            self.fee_source.setdefault(key, {})[leg] = "config"
            self.key_of_leg[leg] = key
            self.currency.setdefault(key, {})[leg] = assignment.instrument.split("/")[1]
            base, quote = key.split("/")
            self.currency_of_key[key] = (base, quote)
            self.max_age_ns[leg] = int(venue.staleness_ms * 1e6)
            unchanged_ms = dc.staleness_ms if venue.max_unchanged_ms is None else venue.max_unchanged_ms
            self.unchanged_ns[leg] = int(unchanged_ms * 1e6)
            self.lag_ns[leg] = int(venue.max_exchange_lag_ms * 1e6)
            self.max_notional[key] = min(self.max_notional.get(key, float("inf")),
                                         dc.max_notional_for(assignment.instrument))
        self.watch = sorted(self.key_of_row)

    def set_account_fee(self, leg: str, account_bps: float) -> None:
        """The fee ``leg``'s account pays as its feed looked it up (NaN: none): it replaces the configured one
        in :attr:`fees` (the dict each instrument's pairs read, updated in place) until it is NaN again."""
        key = self.key_of_leg[leg]
        fee, source = account_fee_or_configured(account_bps, self.configured_fees[leg])
        self.fees[key][leg] = fee
        self.fee_source[key][leg] = source


class BoardRules:
    """``rules_of(leg) -> (version, InstrumentRules | None)`` from the board's rules entries (the engine's
    ``rules_of``): one load of the entry's sequence word, and :func:`~pipeline.board.read_rules` only when the
    version moved since the last read (a rules write is rare; decoding one costs Decimals). A torn read (the
    writer preempted mid-write) gives the last rules read, or none yet: the next quote asks again.

    A row mirrored from another box (``kraken@frankfurt``) is read like any other: its bridge writes the rules
    the other box publishes for it, and until it has, the row has none (no pair, counted ``no_rules``). A leg
    this box reads itself takes its own feed's rules, whichever path serves its quote.

    The entry also carries the fee the row's account pays (its feed's fee lookup, NaN: none); each read of a
    new version hands it to :meth:`RowUniverse.set_account_fee`, so a leg's fee changes with its version, as
    its rules do (:class:`~pipeline.detector.rules.PairState` re-reads the leg's fee when the version moves)."""

    def __init__(self, board, universe: RowUniverse):
        self.board = board
        self.universe = universe
        self._words = board.buf.cast("B").cast("Q")
        self._row = {leg: row for row, leg in universe.leg_of_row.items() if row not in universe.copies}
        self._word = {leg: board.geometry.rule_offset(row) // 8 for leg, row in self._row.items()}
        self._last: dict[str, tuple[int, object]] = {}

    def __call__(self, leg: str):
        seq = self._words[self._word[leg]]
        last = self._last.get(leg)
        if last is not None and not seq & 1 and seq // 2 == last[0]:
            return last
        try:
            version, rules, account_bps = read_entry(self.board, self._row[leg])
        except TornReadError:
            return last if last is not None else (0, None)
        self.universe.set_account_fee(leg, account_bps)
        last = self._last[leg] = (version, rules)
        return last

    def close(self) -> None:
        self._words = None
        self.board = None
        self.universe = None  # type: ignore[assignment]   # closed: nothing reads through it again


class BoardView:
    """Changed rows and quotes, read from a board through a :class:`RowReader`."""

    def __init__(self, board, universe: RowUniverse):
        self.universe = universe
        self.reader = RowReader(board)
        self.rows_of = universe.rows_of
        self.key_of_row = universe.key_of_row
        self.max_age_ns = universe.max_age_ns
        codec = self.reader.codec
        idx = codec.index
        self._n_bids, self._n_asks = idx["n_bids"], idx["n_asks"]
        self._readers = quote_readers(idx, codec.depth)
        self._words = self.reader._words  # noqa: SLF001 - the hot loops read seq words directly
        self._buf = board.buf
        self._unpack = codec.payload.unpack_from
        # per row: [row, leg, seq word, payload offset, seq of the cached quote, staleness limit,
        #           seq last reported changed (rows with a lane), instrument key, venue label, instrument,
        #           box it is mirrored from ("": local), the entries of its leg's rows when it has copies
        #           (else None), its last quote (rows with copies)]
        self._entry: dict[int, list] = {}
        self._entries_of: dict[str, list[list]] = {}
        self._legs_of: dict[str, int] = {}
        self._cached: dict[str, dict[str, Quote]] = {}
        for key, members in self.rows_of.items():
            entries = []
            for row, label in members:
                word = self.reader.seq_words[row]
                entry = [row, label, word, word * 8 + codec.payload_offset, -1, self.max_age_ns[label], 0, key,
                         universe.venue_label_of_row[row], universe.instrument_of_row[row],
                         universe.via_of_row.get(row, ""), None, None]
                self._entry[row] = entry
                entries.append(entry)
            self._entries_of[key] = entries
            self._legs_of[key] = len({leg for _, leg in members})
            self._cached[key] = {}
        for rows in universe.copies_of_leg.values():
            copies = [self._entry[row] for row in rows]
            for entry in copies:
                entry[11] = copies
        self._again: dict[str, list[int]] = {}      # instruments to evaluate again (a torn read)
        # change lanes: [counter word, count seen, ring, entries of the watched rows it logs]
        by_lane: dict[int, list] = {}
        unlaned = []
        for row in sorted(self.key_of_row):
            lane = lane_of_rows(board, [row])
            if lane is None:
                unlaned.append(row)
            else:
                by_lane.setdefault(lane, []).append(self._entry[row])
        self._lanes: list[list[Any]] = []
        for lane, entries in sorted(by_lane.items()):
            where = ChangeLane(board, lane)
            # seen up to the current count; the rows already written are found by one scan on the first pass
            self._lanes.append([where.count_word, self._words[where.count_word], where.ring, entries])
        self._first = list(self._lanes)
        # every lane's counter in one unpack (native 'Q' fields are copied whole, as a memoryview index is,
        # so each is one aligned 8-byte load: a counter is never torn), compared with the last pass's
        fmt: list[str] = ["@"]
        cursor = -1                           # where the last counter ends (-1: none yet)
        for counted in self._lanes:
            offset: int = counted[0] * 8
            if cursor >= 0:
                fmt.append(f"{offset - cursor}x")
            fmt.append("Q")
            cursor = offset + 8
        counters = struct.Struct("".join(fmt))
        self._counts_at = self._lanes[0][0] * 8 if self._lanes else 0
        assert not self._lanes or counters.size == cursor - self._counts_at
        self._counts = counters.unpack_from
        self._last_counts = self._counts(self._buf, self._counts_at)
        self._lane_index = range(len(self._lanes))
        # rows without a lane: compared one by one on every pass
        self.watch = unlaned
        self.seq_words = [self.reader.seq_words[r] for r in unlaned]
        self.last_seq = [0] * len(unlaned)
        # large boards: find changed rows with one strided numpy copy of the seq column instead of a
        # Python loop (about 37 ns a row); small boards: the loop is cheaper than numpy's call overhead
        self._seq_column: np.ndarray | None = None
        if len(unlaned) > NUMPY_SCAN_ROWS and unlaned == list(range(len(unlaned))):
            self._seq_column = np.ndarray((len(unlaned),), "<u8", board.buf, codec.rows_offset, (codec.row_size,))
            self._last_column = np.zeros(len(unlaned), "<u8")  # the seq column as last seen, and as bytes
            self._last_bytes = self._last_column.tobytes()
            self._moved = np.zeros(len(unlaned), bool)
        self._more = True                          # changed() has more to do than the lanes (see _changed_more)

    # ---------------------------------------------------------------- reading
    def quote(self, row: int, label: str) -> Quote:
        """A fresh read of one row."""
        return self._read_quote(self._entry[row])

    def _read_quote(self, entry: list) -> Quote:
        """The seqlock read (as :meth:`RowReader.read_with_seq`) of one row into a new Quote; updates its seq."""
        words = self._words
        word = entry[2]
        seq = words[word]
        v = self._unpack(self._buf, entry[3]) if not seq & 1 else None
        if v is None or words[word] != seq:
            seq, v = self._read_again(entry)
        entry[4] = seq
        return self._readers[v[self._n_bids]][v[self._n_asks]](v, entry[8], seq, entry[5], entry[9], entry[10],
                                                               entry[0])

    @staticmethod
    def _serve(entry: list, quote: Quote, serving: Quote | None) -> Quote:
        """The quote a leg read over several paths shows, now that ``entry``'s row read ``quote`` (``serving``:
        what the leg showed before). Among its rows that are LIVE, the newest update by the exchange's own id
        wins, and at one id the row already serving keeps it (the first copy to arrive); where the venue's
        frames carry no id (``xseq`` 0), the local row while it is LIVE, else the first LIVE copy. With none
        LIVE, the local row, whose status says why the leg is not traded."""
        entry[12] = quote
        best = None
        for other in entry[11]:
            q = other[12]
            if q is None or q.status != LIVE:
                continue
            if best is None or (q.xseq and best.xseq and (
                    q.xseq > best.xseq or (q.xseq == best.xseq and serving is not None and q.row == serving.row))):
                best = q
        if best is not None:
            return best
        local = entry[11][0][12]
        return local if local is not None else quote

    def _read_again(self, entry: list) -> tuple[int, tuple]:
        """The seqlock's retries, after a first attempt met a write in progress."""
        return read_consistent(self._words, entry[2], self._unpack, self._buf, entry[3], entry[0])

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
                if entry[11] is None:
                    cache[entry[1]] = self._read_quote(entry)
                else:
                    cache[entry[1]] = self._serve(entry, self._read_quote(entry), cache.get(entry[1]))
        return cache

    def refresh(self, key: str, rows: list[int]) -> dict[str, Quote]:
        """:meth:`quotes` of ``key`` after :meth:`changed` named ``rows`` of it: only those rows are read again.

        The instrument's other rows keep their last quote even if they moved since: a move not yet in
        :meth:`changed` is in the next one. The first call of an instrument reads all its rows.
        """
        cache = self._cached[key]
        if len(cache) != self._legs_of[key]:
            return self.quotes(key)
        words = self._words
        entry_of = self._entry
        for row in rows:
            entry = entry_of[row]
            if words[entry[2]] != entry[4]:
                if entry[11] is None:
                    cache[entry[1]] = self._read_quote(entry)
                else:
                    cache[entry[1]] = self._serve(entry, self._read_quote(entry), cache.get(entry[1]))
        return cache

    def retry(self, key: str) -> None:
        """Read ``key`` again on the next pass (its read was torn by a preempted writer)."""
        self._again[key] = [row for row, _ in self.rows_of[key]]
        self._more = True

    # ---------------------------------------------------------------- change scan
    def changed(self) -> dict[str, list[int]]:
        """Instrument identities whose rows changed since the last pass, with those rows."""
        counts = self._counts(self._buf, self._counts_at)
        if counts == self._last_counts and not self._more:
            return {}                              # nothing published: one call and one comparison
        dirty: dict[str, list[int]] = {}
        if self._more:
            self._changed_more(dirty)
        last = self._last_counts
        if counts != last:
            lanes = self._lanes
            words = self._words
            for i in compress(self._lane_index, map(ne, counts, last)):
                lane = lanes[i]
                count = counts[i]
                seen = lane[1]
                if count == seen + 1:              # the common case, inline: one publish since the last pass
                    row = lane[2][seen & LANE_MASK]
                    if words[lane[0]] - seen < LANE_RING:      # (after the entry: it was not overwritten)
                        lane[1] = count
                        entry = self._entry.get(row)
                        if entry is not None:
                            seq = words[entry[2]]
                            if not seq & 1 and seq != entry[6]:
                                entry[6] = seq
                                rows_of_key = dirty.get(entry[7])
                                if rows_of_key is None:
                                    dirty[entry[7]] = [row]
                                elif row not in rows_of_key:
                                    rows_of_key.append(row)
                        continue
                if count > seen:                   # (a scan may have taken the lane past this count)
                    self._changed_lane(lane, count, dirty)
            self._last_counts = counts
        return dirty

    def _changed_more(self, dirty: dict[str, list[int]]) -> None:
        """Besides the lanes: instruments to read again, the first pass's scan, and the rows without a lane."""
        if self._again:
            dirty.update(self._again)
            self._again = {}
        if self._first:                            # the rows written before this view existed
            for lane in self._first:
                self._scan_lane(lane, dirty)
            self._first = []
        if self.watch:
            if self._seq_column is not None:
                self._changed_numpy(dirty)
            else:
                self._changed_rows(dirty)
        self._more = bool(self.watch)

    def _changed_lane(self, lane: list, count: int, dirty: dict[str, list[int]]) -> None:
        """The rows a lane logged since the last pass, up to ``count`` (the whole lane scanned if it lapped)."""
        words = self._words
        last = lane[1]
        if count - last < LANE_RING:
            ring = lane[2]
            if count - last == 1:                  # the common case: one publish since the last pass
                rows = (ring[last & LANE_MASK],)
            else:
                start, end = last & LANE_MASK, count & LANE_MASK
                rows = ring[start:end].tolist() if start < end else ring[start:].tolist() + ring[:end].tolist()
            # entries at or below (count now - LANE_RING) may have been overwritten while they were read
            if words[lane[0]] - last < LANE_RING:
                lane[1] = count
                entry_of = self._entry
                for row in rows:
                    entry = entry_of.get(row)
                    if entry is None:              # a row of this lane the view does not watch
                        continue
                    seq = words[entry[2]]
                    # odd: a write in progress, whose publish logs the row again; equal: reported already
                    if seq & 1 or seq == entry[6]:
                        continue
                    entry[6] = seq
                    rows_of_key = dirty.get(entry[7])
                    if rows_of_key is None:
                        dirty[entry[7]] = [row]
                    elif row not in rows_of_key:
                        rows_of_key.append(row)
                return
        self._scan_lane(lane, dirty)

    def _scan_lane(self, lane: list, dirty: dict[str, list[int]]) -> None:
        """Every watched row of a lane against the seq last reported (after the ring lapped, and at start)."""
        words = self._words
        lane[1] = words[lane[0]]                   # before the rows: a publish after it is seen again, never lost
        for entry in lane[3]:
            seq = words[entry[2]]
            if seq & 1 or seq == entry[6]:
                continue
            entry[6] = seq
            rows_of_key = dirty.get(entry[7])
            if rows_of_key is None:
                dirty[entry[7]] = [entry[0]]
            elif entry[0] not in rows_of_key:
                rows_of_key.append(entry[0])

    def _changed_rows(self, dirty: dict[str, list[int]]) -> None:
        words = self._words
        current = [words[word] for word in self.seq_words]
        last = self.last_seq
        if current == last:
            return
        watch = self.watch
        key_of_row = self.key_of_row
        for i, seq in enumerate(current):
            if seq != last[i] and not seq & 1:      # odd: a write in progress, seen when it completes
                last[i] = seq
                row = watch[i]
                rows = dirty.setdefault(key_of_row[row], [])
                if row not in rows:
                    rows.append(row)

    def _changed_numpy(self, dirty: dict[str, list[int]]) -> None:
        assert self._seq_column is not None        # chosen at start for large boards only
        seen = self._seq_column.tobytes()          # each u64 load is atomic; rows are re-validated when read
        if seen == self._last_bytes:
            return
        current = np.frombuffer(seen, "<u8")
        last = self._last_column
        np.not_equal(current, last, out=self._moved)
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
                rows = dirty.setdefault(key_of_row[row], [])
                if row not in rows:
                    rows.append(row)
            self._last_column = current
            self._last_bytes = seen
            return
        seq_at = _U64.unpack_from
        odd = []
        for row in moved.tolist():
            if seq_at(seen, 8 * row)[0] & 1:       # odd: a write in progress, seen when it completes
                odd.append(row)
                continue
            rows = dirty.setdefault(key_of_row[row], [])
            if row not in rows:
                rows.append(row)
        if odd:
            current = current.copy()
            current[odd] = last[odd]
            seen = current.tobytes()
        self._last_column = current
        self._last_bytes = seen

    def anything_changed(self) -> bool:
        """Whether :meth:`changed` would find anything (the doorbell's re-check before sleeping)."""
        words = self._words
        if self._counts(self._buf, self._counts_at) != self._last_counts or self._again or self._first:
            return True
        if self._seq_column is not None:
            return self._seq_column.tobytes() != self._last_bytes
        last = self.last_seq
        for i, word in enumerate(self.seq_words):
            if words[word] != last[i]:
                return True
        return False

    def close(self) -> None:
        self.reader = None  # type: ignore[assignment]   # closed: nothing reads through it again
        self._seq_column = None
        self._lanes = self._first = []
        self._words = self._buf = self._unpack = None  # type: ignore[assignment]
