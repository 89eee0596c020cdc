"""Read the board, read-only, into one frozen :class:`Snapshot` per refresh.

Rows are copied with the seqlock reader (never written, so the feeds are not
disturbed); each process's counters and latency histograms are one
:class:`~pipeline.board.ProcSnapshot` of its slot, the same snapshot the health
reporter and the metrics endpoint render. Rates and latency percentiles are
over a sliding window (``window_s``) of earlier reads kept here, so the
renderer stays pure.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from pipeline.board import Board, ProcessRole, ProcSnapshot, RowReader, RowStatus, TornReadError, read_procs
from pipeline.venues import VENUES


@dataclass(frozen=True)
class Quote:
    row: int
    venue: str             # the row's label: ``kraken``, or ``kraken@frankfurt`` for a bridged row
    instrument: str
    status: str            # RowStatus name in lower case; an unknown value shows as ``state<n>``
    bid_px: float
    bid_qty: float
    ask_px: float
    ask_qty: float
    recv_ns: int
    exch_ts_ns: int = 0    # the exchange's time of the row's last change, 0 when it sends none

    @property
    def mid(self) -> float | None:
        return (self.bid_px + self.ask_px) / 2 if self.bid_px > 0 and self.ask_px > 0 else None

    @property
    def spread_bps(self) -> float | None:
        mid = self.mid
        return (self.ask_px - self.bid_px) / mid * 1e4 if mid else None

    @property
    def imbalance(self) -> float | None:
        """Top-of-book imbalance in [-1, 1]: positive when the bid side is heavier."""
        total = self.bid_qty + self.ask_qty
        return (self.bid_qty - self.ask_qty) / total if total > 0 else None


@dataclass(frozen=True)
class ProcessStats:
    """One process on the console: its slot snapshot and what the console works out over its window.

    The slot's counters are read through (``stats.reconnects`` is ``stats.proc.reconnects``); the fields are
    the windowed figures only.
    """

    name: str              # ``binance`` for a feed, else ``detector``, ``health``, ``simulator``
    role: str
    proc: ProcSnapshot
    messages_per_s: float | None = None
    gaps_per_s: float | None = None
    scans_per_s: float | None = None
    hop_p50_us: float | None = None      # feeds: receive_to_publish; detector: receive_to_emitted (window)
    hop_p99_us: float | None = None
    restarted_recently: bool = False
    # feeds: how late the newest row's last change arrived after its exchange time, less the feed's clock offset
    # (what the detector's max_exchange_lag_ms holds a leg back on); None without exchange times
    lag_ms: float | None = None

    def __getattr__(self, name: str):
        # only called for names that are not fields: the slot's counters
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.proc, name)

    @property
    def heartbeat_age_ms(self) -> float | None:
        return self.proc.heartbeat_age_ms()

    @property
    def clock_offset_ms(self) -> float:
        return self.proc.clock_offset_ns / 1e6

    @property
    def backlog_wait_ms(self) -> float:
        return self.proc.backlog_wait_ns / 1e6


@dataclass(frozen=True)
class Snapshot:
    board: str
    taken_ns: int
    instruments: tuple[str, ...]
    quotes: tuple[Quote, ...]
    processes: tuple[ProcessStats, ...]
    fees_bps: tuple[tuple[tuple[str, str], float], ...]    # ((venue, instrument), taker fee bps)

    def fee(self, venue: str, instrument: str) -> float:
        return dict(self.fees_bps).get((venue, instrument), 0.0)

    @property
    def feeds(self) -> list[ProcessStats]:
        return [p for p in self.processes if p.role == "feed"]

    @property
    def detector(self) -> ProcessStats | None:
        return next((p for p in self.processes if p.role == "detector"), None)


def status_name(value: int) -> str:
    try:
        return RowStatus(value).name.lower()
    except ValueError:
        return f"state{value}"


class BoardSource:
    """Reads snapshots of an attached board.

    ``rows`` is the list of :class:`~pipeline.runtime.RowAssignment` (from the config)
    naming each row; without it rows are named from the ids on the board.
    """

    def __init__(self, board: Board, rows=None, fees_bps: dict | None = None, window_s: float = 5.0):
        self.board = board
        self.reader = RowReader(board)
        n = board.geometry.n_rows
        if rows:
            self.labels = {r.row: (r.label, r.instrument) for r in rows if r.row < n}
        else:
            self.labels = {}
            for i in range(n):
                venue_id, instrument_id = int(board.rows[i]["venue_id"]), int(board.rows[i]["instrument_id"])
                venue = VENUES[venue_id - 1] if 0 < venue_id <= len(VENUES) else f"venue{venue_id}"
                self.labels[i] = (venue, f"#{instrument_id}")
        self.instruments = tuple(dict.fromkeys(instrument for _, instrument in self.labels.values()))
        self.fees_bps = tuple(sorted((fees_bps or {}).items()))
        self.window_ns = int(window_s * 1e9)
        self._history: dict[int, collections.deque] = {}    # slot -> deque of (t_ns, counters, histogram)
        self._restarts_seen: dict[int, tuple[int, int]] = {}  # slot -> (restarts, t_ns they last rose)
        self._last_quotes: dict[int, Quote] = {}

    def read(self, now_ns: int | None = None) -> Snapshot:
        quotes = []
        codec = self.reader.codec
        index = codec.index
        for row, (venue, instrument) in sorted(self.labels.items()):
            try:
                values = self.reader.read(row)
            except TornReadError:
                # its writer was descheduled mid-write for longer than the reader retries: show the row as
                # it was at the last refresh (or not at all before one), never half a write
                previous = self._last_quotes.get(row)
                if previous is not None:
                    quotes.append(previous)
                continue
            quote = Quote(row, venue, instrument, status_name(values[index["status"]]),
                          values[index["bid_px"]], values[index["bid_qty"]], values[index["ask_px"]],
                          values[index["ask_qty"]], values[index["recv_ns"]], values[index["exch_ts_ns"]])
            self._last_quotes[row] = quote
            quotes.append(quote)
        now_ns = now_ns or time.time_ns()    # after the row reads: ages are never negative
        return Snapshot(self.board.name, now_ns, self.instruments, tuple(quotes), self._processes(now_ns, quotes),
                        self.fees_bps)

    def _processes(self, now_ns: int, quotes=()) -> tuple[ProcessStats, ...]:
        out = []
        for proc in read_procs(self.board, venues=VENUES, now_ns=now_ns):
            slot_index = proc.slot
            if proc.role == ProcessRole.NONE or not proc.pid:
                continue
            known = isinstance(proc.role, ProcessRole)
            if proc.role == ProcessRole.FEED:
                name = proc.venue
            else:
                name = proc.role.name.lower() if known else f"process{slot_index}"
            histogram = proc.hop("receive_to_publish" if proc.role == ProcessRole.FEED else "receive_to_emitted")
            counters = (proc.messages, proc.gaps, proc.scans)
            history = self._history.setdefault(slot_index, collections.deque())
            history.append((now_ns, counters, histogram))
            while len(history) > 2 and now_ns - history[1][0] >= self.window_ns:
                history.popleft()
            first_ns, first_counters, first_histogram = history[0]
            rates = [None, None, None]
            if now_ns > first_ns:
                dt = (now_ns - first_ns) / 1e9
                rates = [max(0, a - b) / dt for a, b in zip(counters, first_counters)]
            p50 = p99 = None
            if histogram is not None:
                recent = histogram.minus(first_histogram) if first_histogram is not histogram else histogram
                if not recent.count:
                    recent = histogram
                if recent.count:
                    p50, p99 = recent.percentile_ns(0.5) / 1e3, recent.percentile_ns(0.99) / 1e3
            seen = self._restarts_seen.get(slot_index)
            if seen is None or proc.restarts != seen[0]:
                seen = (proc.restarts, now_ns if seen is not None else 0)
                self._restarts_seen[slot_index] = seen
            out.append(ProcessStats(
                name=name, role=proc.role.name.lower() if known else "unknown", proc=proc,
                messages_per_s=rates[0], gaps_per_s=rates[1], scans_per_s=rates[2], hop_p50_us=p50, hop_p99_us=p99,
                restarted_recently=bool(seen[1]) and now_ns - seen[1] < 30e9,
                lag_ms=exchange_lag_ms(quotes, name, proc.clock_offset_ns) if proc.role == ProcessRole.FEED else None))
        return tuple(out)


def exchange_lag_ms(quotes, venue: str, clock_offset_ns: int) -> float | None:
    """A venue's current lag: receive time less exchange time, less the feed's clock offset, of its own row
    received last (the rule ``venues.NAME.max_exchange_lag_ms`` applies per leg); None without exchange times."""
    latest = None
    for q in quotes:
        if q.venue == venue and q.exch_ts_ns and (latest is None or q.recv_ns > latest.recv_ns):
            latest = q
    if latest is None:
        return None
    return (latest.recv_ns - latest.exch_ts_ns - clock_offset_ns) / 1e6
