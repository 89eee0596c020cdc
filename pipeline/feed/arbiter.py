"""Redundant connections to one venue: the first copy of every update reaches the board, a bad path is invisible.

With ``venues.NAME.connections: N`` (N > 1) a feed holds N independent connections to its venue, each
subscribed to the same instruments, each read by a :class:`~pipeline.feed.session.FeedSession` of its own
(a *path*): its own books, its own continuity and checksum checks, its own resyncs, its own staleness. So a
gap, a checksum failure, a stall or a drop on one path touches that path's books only. Every path writes its
rows here instead of to the board, through its :class:`PathSink`, and the :class:`Arbiter` decides, row by row,
what the board shows:

* **The first copy wins.** A path's book carries the exchange's own id of the newest update it holds
  (:attr:`pipeline.book.InstrumentBook.version`: Binance ``u``, Bybit ``seq``, OKX ``seqId``, one id space per
  instrument and the same on every connection; the venue record's ``cross_channel_seq``). A LIVE write whose
  id is newer than the row's is published (counted ``first`` for its path); one at the row's id is a copy that
  came later (``duplicates``, with how long after the first it was received: ``lag``, negative when it
  was received first but read second, the feed's one loop having taken the other connection's frames first);
  an older one is dropped (``late``). So the row never goes back to an older update, whatever the paths' order.
* **Trusted while any path is.** When the path the row was last published from stops being trusted (its row
  there resyncing, stale, disconnected, behind, halted), the row is published at once from the trusted path
  with the newest update (``failovers``); only when no path is trusted does the board show the untrusted state,
  as the path that went last says it.
* **Confirmations** (a heartbeat, an unchanged re-send) of the update on the board are passed on from any path.

A venue whose frames carry no such id (HTX: separate id spaces per channel; Coinbase: a per-connection
``sequence_num``; Kraken: none) cannot be arbitrated: it keeps one connection (the venue record's
``single_connection``, checked with the config). Pure: no I/O and no clock; the feed process wires it
(:class:`~pipeline.feed.process.Feed`).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable

from pipeline.feed.session import FeedSession
from pipeline.model import RowStatus

LIVE = int(RowStatus.LIVE)
LAG_SAMPLES = 4096          # per path, the latest copies' lags kept for the percentiles
PATH_CONNECTION_IDS = 100_000   # path p numbers its connections from p * this: recordings say each frame's path


def path_of_connection(conn_id: int | None, paths: int) -> int:
    """The path a connection id belongs to (:data:`PATH_CONNECTION_IDS`), for a venue read over ``paths``."""
    return min(max(conn_id or 0, 0) // PATH_CONNECTION_IDS, paths - 1)


def open_paths(venue, rows: dict[str, int], depth: int, staleness_ns: int, sink, connections: int, stats=None,
               journal=None) -> tuple[Arbiter | None, list[FeedSession]]:
    """A venue's sessions writing into ``sink``: one, or with ``connections`` above 1 one per path through an
    :class:`Arbiter` (which is returned), each path numbering its connections from ``path`` x
    :data:`PATH_CONNECTION_IDS`. The feed process and replay both build their sessions here."""
    if connections == 1:
        return None, [FeedSession(venue, rows, depth, staleness_ns, sink, stats, journal=journal)]
    arbiter = Arbiter(sink, connections, journal=journal)
    sessions = []
    for path in range(connections):
        path_sink = arbiter.sink_for(path)
        session = FeedSession(venue, rows, depth, staleness_ns, path_sink, stats, journal=journal)
        session.connections = path * PATH_CONNECTION_IDS
        session.path = path
        path_sink.bind(session)
        sessions.append(session)
    return arbiter, sessions


class Arbiter:
    """The rows of one venue's redundant paths, merged into ``sink`` (the board's :class:`RowSink`)."""

    def __init__(self, sink, paths: int, journal: Callable[[str, int, dict], None] | None = None):
        if paths < 2:
            raise ValueError("an arbiter needs at least two paths")
        self.sink = sink
        self.paths = paths
        self.journal = journal
        # row -> [source path, version, status, recv_ns of the version's first copy]
        self.rows: dict[int, list] = {}
        # per path: row -> [status, version, (bids, asks, exch_ts_ns, recv_ns, gaps, checksum_failures) | None,
        #                   confirmed_ns]
        self.last: list[dict[int, list]] = [{} for _ in range(paths)]
        self.first = [0] * paths            # updates each path delivered first
        self.duplicates = [0] * paths       # copies that came after the first
        self.late = [0] * paths             # copies older than the row's update
        self.lags: list[deque] = [deque(maxlen=LAG_SAMPLES) for _ in range(paths)]
        self.failovers = 0

    def sink_for(self, path: int) -> PathSink:
        return PathSink(self, path)

    # ---------------------------------------------------------------- what the paths write
    def write(self, path: int, version: int | None, row: int, status: int, bids, asks, exch_ts_ns: int,
              recv_ns: int, gaps, checksum_failures) -> None:
        mine = self.last[path].get(row)
        args = (bids, asks, exch_ts_ns, recv_ns, gaps, checksum_failures)
        if mine is None:
            self.last[path][row] = [status, version, args, recv_ns]
        else:                                           # in place: one write per frame on every path
            if mine[1] != version:
                mine[3] = recv_ns                       # a new update: confirmed as of its receipt
            mine[0], mine[1], mine[2] = status, version, args
        current = self.rows.get(row)
        if status == LIVE:
            if current is None or current[2] != LIVE or version is None or current[1] is None or version > current[1]:
                self._publish(path, row)
            elif version == current[1]:
                if current[0] == path:
                    self._publish(path, row)            # the same update written again (its state moved)
                else:
                    self.duplicates[path] += 1
                    self.lags[path].append(recv_ns - current[3])
            else:
                self.late[path] += 1
        elif current is None or current[0] == path:
            self._fail_over(path, row, recv_ns)

    def set_status(self, path: int, row: int, status: int, confirmed_ns: int | None,
                   version: int | None = None) -> None:
        """A status-only write of ``path`` (``version``: its book's id now: an update that changed no level, as
        OKX's empty updates and Bybit's re-sends, still moves it on)."""
        mine = self.last[path].get(row)
        if mine is None:
            mine = self.last[path][row] = [status, None, None, 0]
        else:
            mine[0] = status
        if confirmed_ns is not None:
            mine[3] = confirmed_ns
        if version is not None and mine[2] is not None:
            mine[1] = version                           # its levels, as last written, are the book at ``version``
        current = self.rows.get(row)
        if status == LIVE:
            if current is not None and current[0] == path:
                self.sink.set_status(row, status, confirmed_ns)
                current[2] = status
                if version is not None and (current[1] is None or version > current[1]):
                    current[1] = version
            elif current is None or current[2] != LIVE:
                if mine[2] is not None:
                    self._publish(path, row)            # trusted again on this path first
            elif mine[1] is not None and current[1] is not None and mine[1] > current[1]:
                self._publish(path, row)                # this path's book is ahead (unchanged levels, newer id)
            elif confirmed_ns is not None and mine[1] is not None and mine[1] == current[1]:
                self.sink.set_status(row, LIVE, confirmed_ns)   # the same update, confirmed through this path
        elif current is None or current[0] == path:
            self._fail_over(path, row, confirmed_ns or 0, status)

    # ---------------------------------------------------------------- deciding
    def _fail_over(self, path: int, row: int, now_ns: int, status: int | None = None) -> None:
        """``path``, which the row shows, is not trusted any more: the trusted path with the newest update, or
        (none) the untrusted state as ``path`` says it."""
        best = self._best_live(row, path)
        if best is not None:
            self.failovers += 1
            if self.journal is not None:
                self.journal("failover", now_ns, {"row": row, "from_path": path, "to_path": best})
            self._publish(best, row)
        elif status is not None and self.last[path][row][2] is None:
            self.sink.set_status(row, status)           # never written by this path: only the status
            current = self.rows.get(row)
            if current is None:
                self.rows[row] = [path, None, status, 0]
            else:
                current[0], current[2] = path, status
        else:
            self._publish(path, row)

    def _best_live(self, row: int, exclude: int) -> int | None:
        best = None
        key = None
        for path in range(self.paths):
            if path == exclude:
                continue
            state = self.last[path].get(row)
            if state is None or state[0] != LIVE or state[2] is None:
                continue
            rank = (-1 if state[1] is None else state[1], state[3])
            if key is None or rank > key:
                best, key = path, rank
        return best

    def _publish(self, path: int, row: int) -> None:
        status, version, args, confirmed = self.last[path][row]
        current = self.rows.get(row)
        if args is None:
            self.sink.set_status(row, status)
        else:
            self.sink.write(row, status, *args, version)
            if status == LIVE and confirmed > args[3]:
                self.sink.set_status(row, status, confirmed)    # confirmed on this path since its last change
        newer = status == LIVE and (current is None or current[1] is None or version is None or version > current[1])
        if newer:
            self.first[path] += 1
        first_recv = args[3] if args is not None and (newer or current is None) else (current[3] if current else 0)
        self.rows[row] = [path, version, status, first_recv]

    # ---------------------------------------------------------------- reporting
    def live_rows(self, path: int) -> int:
        """Rows ``path`` holds trusted now (LIVE there, whatever the board shows)."""
        return sum(1 for state in self.last[path].values() if state[0] == LIVE)

    def lag_percentiles(self, path: int) -> tuple[int, int] | None:
        """(p50, p99) in ns of how long after the first copy ``path``'s copies came, or None without any."""
        samples = sorted(self.lags[path])
        if not samples:
            return None
        return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


class PathSink:
    """One path's :class:`~pipeline.feed.session.RowSink`: what its session writes goes to the :class:`Arbiter`,
    with the exchange id of the book written (a write says it; for a status-only write :meth:`bind` gives the
    session whose books hold it)."""

    def __init__(self, arbiter: Arbiter, path: int):
        self.arbiter = arbiter
        self.path = path
        self._books: dict = {}
        self._symbol_of: dict[int, str] = {}

    def bind(self, session) -> None:
        self._books = session.books
        self._symbol_of = {row: symbol for symbol, row in session.row_of.items()}

    def write(self, row, status, bids, asks, exch_ts_ns, recv_ns, gaps=None, checksum_failures=None,
              version=None) -> None:
        self.arbiter.write(self.path, version, row, status, bids, asks, exch_ts_ns, recv_ns, gaps, checksum_failures)

    def set_status(self, row, status, confirmed_ns=None) -> None:
        book = self._books.get(self._symbol_of.get(row))
        self.arbiter.set_status(self.path, row, status, confirmed_ns, None if book is None else book.version)
