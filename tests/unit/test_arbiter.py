"""Redundant paths to one venue, arbitrated by the exchange's own ids: real sessions on real frame shapes.

Each path is a :class:`FeedSession` of its own over one connection, writing through the arbiter into one
board row (a :class:`MemorySink` that keeps every write). Whatever the interleaving of the paths' copies,
the row never goes back to an older update nor shows one twice, ends on the newest update any path
delivered, and stays trusted while one path is.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.feed.arbiter import Arbiter
from pipeline.feed.session import FeedSession, MemorySink
from pipeline.model import RowStatus
from pipeline.venues import load_venue
from tests.conftest import examples

LIVE = int(RowStatus.LIVE)
MS = 1_000_000


class History(MemorySink):
    """A one-row board that keeps every write's status and best bid."""

    def __init__(self):
        super().__init__(5)
        self.writes: list[tuple[int, float | None]] = []

    def write(self, row, status, bids, asks, exch_ts_ns, recv_ns, gaps, checksum_failures, version=None) -> None:
        super().write(row, status, bids, asks, exch_ts_ns, recv_ns, gaps, checksum_failures, version)
        self.writes.append((status, bids[0][0] if bids else None))


def paths(venue: str, symbol: str, n: int, staleness_ms: float = 60_000):
    board = History()
    journal: list = []
    arbiter = Arbiter(board, n, journal=lambda kind, now, fields: journal.append((kind, fields)))
    sessions, conns = [], []
    for path in range(n):
        sink = arbiter.sink_for(path)
        session = FeedSession(load_venue(venue), {symbol: 0}, 5, int(staleness_ms * MS), sink)
        sink.bind(session)
        sessions.append(session)
        conns.append(session.connection_opened([symbol], 0))
    return board, arbiter, sessions, conns, journal


def ticker(u: int) -> str:
    """A Binance bookTicker (combined stream) whose update id is ``u``; its bid says which update it is."""
    bid = 100 + u / 100
    return (f'{{"stream":"btcusdt@bookTicker","data":{{"u":{u},"s":"BTCUSDT","b":"{bid:.2f}","B":"1.5",'
            f'"a":"{bid + 0.01:.2f}","A":"2.25"}}}}')


def bid_of(u: int) -> float:
    return float(f"{100 + u / 100:.2f}")


@st.composite
def deliveries(draw):
    """Updates 1..n of one instrument, each copied to some of the paths (at least one), each path's copies in
    exchange order, the paths interleaved arbitrarily: [(path, update id)]."""
    n_paths = draw(st.integers(2, 3))
    n = draw(st.integers(1, 30))
    per_path: list[list[int]] = [[] for _ in range(n_paths)]
    for u in range(1, n + 1):
        carried = draw(st.sets(st.integers(0, n_paths - 1), min_size=1))
        for path in carried:
            per_path[path].append(u)
    order = draw(st.permutations([p for p, ids in enumerate(per_path) for _ in ids]))
    cursor = [0] * n_paths
    out = []
    for path in order:
        out.append((path, per_path[path][cursor[path]]))
        cursor[path] += 1
    return n_paths, out


@settings(max_examples=examples(300), deadline=None)
@given(deliveries())
def test_whatever_the_interleaving_the_row_moves_forward_only_and_ends_on_the_newest_update(case):
    n_paths, delivered = case
    board, arbiter, sessions, conns, _ = paths("binance", "BTCUSDT", n_paths)
    newest = 0
    for step, (path, u) in enumerate(delivered):
        sessions[path].receive(ticker(u), step + 1, conns[path])
        newest = max(newest, u)
        assert board.row(0).status == LIVE and board.row(0).bids[0][0] == bid_of(newest)
    shown = [bid for status, bid in board.writes]
    assert shown == sorted(set(shown)), "the row went back, or showed one update twice"
    assert sum(arbiter.first) == len(shown)
    # every LIVE write a path made is either the first copy, a later copy, or an older one, counted once
    assert sum(arbiter.first) + sum(arbiter.duplicates) + sum(arbiter.late) == len(delivered)


def test_each_path_is_credited_with_what_it_delivered_first_and_the_lag_of_its_later_copies():
    board, arbiter, sessions, conns, _ = paths("binance", "BTCUSDT", 2)
    for u, (first, second) in enumerate([(0, 1), (1, 0), (0, 1)], start=1):
        sessions[first].receive(ticker(u), u * 10 * MS, conns[first])
        sessions[second].receive(ticker(u), u * 10 * MS + (u + 1) * MS, conns[second])
    assert (arbiter.first, arbiter.duplicates, arbiter.late) == ([2, 1], [1, 2], [0, 0])
    assert board.rows[0].xseq == 3                              # the row carries the exchange's id it shows
    assert arbiter.lag_percentiles(0) == (3 * MS, 3 * MS)
    assert arbiter.lag_percentiles(1) == (4 * MS, 4 * MS)       # 2 and 4 ms: the p50 of two is the upper one


def test_a_copy_received_first_but_read_second_has_a_negative_lag_which_the_slot_and_health_line_keep(board_name):
    # one loop reads both connections: it may take path 0's frame first though path 1's was received 0.5 ms earlier
    board, arbiter, sessions, conns, _ = paths("binance", "BTCUSDT", 2)
    sessions[0].receive(ticker(1), 10 * MS, conns[0])
    sessions[1].receive(ticker(1), 10 * MS - MS // 2, conns[1])
    assert (arbiter.first, arbiter.duplicates) == ([1, 0], [0, 1])
    assert arbiter.lag_percentiles(1) == (-MS // 2, -MS // 2)
    from pipeline.board import Board
    from pipeline.board.snapshot import read_procs
    from pipeline.health.process import paths_status
    with Board.create(board_name, n_rows=1, depth=5, n_procs=1) as shm:
        proc = shm.procs[0]
        proc["paths"] = 2
        proc["path_first"][:2] = arbiter.first
        proc["path_lag_p50_us"][1] = arbiter.lag_percentiles(1)[0] // 1000
        proc["path_lag_p99_us"][1] = -0x80000000
        snapshot = read_procs(shm)[0]
    assert (snapshot.path_lag_p50_us[1], snapshot.path_lag_p99_us[1]) == (-500, -0x80000000)
    assert "lag p50 0.0/-0.5ms" in paths_status(snapshot)


def orderbook(kind: str, u: int, seq: int, bid: float) -> str:
    """A Bybit ``orderbook.50`` frame with ids ``u`` and ``seq``: a snapshot of one level a side, or a delta that
    moves both sides up by 0.5 from ``bid - 0.5`` (the old levels deleted: size 0)."""
    bids, asks = [[f"{bid}", "1"]], [[f"{bid + 1}", "1"]]
    if kind == "delta":
        bids.append([f"{bid - 0.5}", "0"])
        asks.append([f"{bid + 0.5}", "0"])
    return (f'{{"topic":"orderbook.50.BTCUSDT","type":"{kind}","ts":1700000000000,"data":{{"s":"BTCUSDT",'
            f'"b":{bids},"a":{asks},"u":{u},"seq":{seq}}},"cts":1700000000000}}').replace("'", '"')


def test_a_gap_on_one_path_keeps_the_row_live_from_the_other_and_only_both_gapped_untrust_it():
    board, arbiter, sessions, conns, journal = paths("bybit", "BTCUSDT", 2)
    for path in (0, 1):
        sessions[path].receive(orderbook("snapshot", 100, 5000, 100.0), 1, conns[path])
    assert board.row(0).status == LIVE
    for path in (0, 1):
        sessions[path].receive(orderbook("delta", 101, 5001, 100.5), 2, conns[path])
    # path 0 loses update 102: its own book has a gap and resyncs; path 1 has it
    sessions[1].receive(orderbook("delta", 102, 5002, 101.0), 3, conns[1])
    sessions[0].receive(orderbook("delta", 103, 5003, 101.5), 4, conns[0])
    assert sessions[0].stats.get("gaps") == 1 and int(sessions[0].books["BTCUSDT"].state) == int(RowStatus.RESYNCING)
    assert board.row(0).status == LIVE and board.row(0).bids[0][0] == 101.0
    sessions[1].receive(orderbook("delta", 103, 5003, 101.5), 5, conns[1])
    assert board.row(0).status == LIVE and board.row(0).bids[0][0] == 101.5
    assert all(status == LIVE for status, _ in board.writes)           # never untrusted while path 1 was whole
    # path 1 loses one too, while path 0 is still waiting for its snapshot: nothing trusted is left
    sessions[1].receive(orderbook("delta", 105, 5005, 102.5), 6, conns[1])
    assert board.row(0).status == int(RowStatus.RESYNCING)
    # path 0's snapshot comes back first: the row is live again from it
    sessions[0].receive(orderbook("snapshot", 105, 5005, 102.5), 7, conns[0])
    assert board.row(0).status == LIVE and board.row(0).bids[0][0] == 102.5
    # updates 100, 101 and the snapshot at 105 came first on path 0, 102 and 103 on path 1; path 0's gap needed no
    # failover (the row already showed path 1's 102)
    assert arbiter.first == [3, 2] and "failover" not in [kind for kind, _ in journal]


def test_a_lost_connection_fails_over_to_the_other_path_and_both_lost_is_disconnected():
    board, arbiter, sessions, conns, journal = paths("binance", "BTCUSDT", 2)
    sessions[0].receive(ticker(1), 1, conns[0])
    sessions[1].receive(ticker(1), 2, conns[1])
    sessions[0].connection_lost(conns[0], 3, "test")
    assert board.row(0).status == LIVE and arbiter.rows[0][0] == 1 and arbiter.failovers == 1
    sessions[1].receive(ticker(2), 4, conns[1])
    assert board.row(0).bids[0][0] == bid_of(2)
    sessions[1].connection_lost(conns[1], 5, "test")
    assert board.row(0).status == int(RowStatus.DISCONNECTED)
    conns[0] = sessions[0].connection_opened(["BTCUSDT"], 6)
    sessions[0].receive(ticker(3), 7, conns[0])
    assert board.row(0).status == LIVE and board.row(0).bids[0][0] == bid_of(3)


def test_a_stale_path_hands_the_row_to_the_one_still_speaking_and_confirmations_keep_it_fresh():
    board, arbiter, sessions, conns, _ = paths("binance", "BTCUSDT", 2, staleness_ms=100)
    sessions[0].receive(ticker(1), 1 * MS, conns[0])
    sessions[1].receive(ticker(1), 2 * MS, conns[1])
    sessions[1].receive(ticker(2), 90 * MS, conns[1])           # path 0 has gone quiet
    sessions[0].tick(150 * MS)                                   # path 0's row: stale there
    sessions[1].tick(150 * MS)
    assert board.row(0).status == LIVE and board.row(0).bids[0][0] == bid_of(2)


def test_connections_above_one_only_where_copies_can_be_told_apart():
    import pytest

    from pipeline.config import parse_config
    from pipeline.errors import ConfigError

    def problems(venue: str, n) -> str:
        try:
            parse_config({"venues": {venue: {"instruments": ["BTC/USDT"], "url": "wss://127.0.0.1:1",
                                             "connections": n}}}, available_cores=frozenset({0}))
        except ConfigError as exc:
            return str(exc)
        return ""
    assert problems("binance", 2) == problems("okx", 4) == problems("bybit", 3) == problems("htx", 1) == ""
    assert "venues.htx.connections: htx keeps one connection: bbo carries seqId" in problems("htx", 2)
    assert "venues.kraken.connections: kraken keeps one connection" in problems("kraken", 2)
    assert "venues.binance.connections" in problems("binance", 5) and "venues.okx.connections" in problems("okx", 0)
    with pytest.raises(ValueError):
        Arbiter(MemorySink(5), 1)


def test_the_health_line_of_a_feed_on_two_paths_says_what_each_did():
    from pipeline.board.snapshot import ProcSnapshot
    from pipeline.health.process import paths_status
    proc = ProcSnapshot(paths=2, failovers=3, path_first=(600, 400, 0, 0), path_lag_p50_us=(300, 450, 0, 0),
                        path_lag_p99_us=(2100, 48_000, 0, 0), path_live_rows=(2, 1, 0, 0),
                        path_reconnects=(0, 4, 0, 0))
    assert paths_status(proc) == (" paths first 60%/40% lag p50 0.3/0.5ms p99 2.1/48.0ms live 2/1 reconnects 0/4 "
                                  "failovers 3")
    assert paths_status(ProcSnapshot(paths=1, path_first=(9, 0, 0, 0))) == ""


def test_an_update_that_changed_no_level_still_moves_the_rows_id_so_an_older_copy_is_never_taken_for_newer():
    """OKX's empty updates and Bybit's re-sends move a book's id without changing a level (the session confirms
    the row): that id is the row's now, and a stalled path's late burst below it is dropped, not published."""
    board = History()
    arbiter = Arbiter(board, 2)
    levels = ([(100.0, 1.0)], [(101.0, 1.0)])
    arbiter.write(0, 10, 0, LIVE, *levels, 1, 1 * MS, 0, 0)
    arbiter.write(1, 10, 0, LIVE, *levels, 1, 2 * MS, 0, 0)            # the same update, later
    arbiter.set_status(1, 0, LIVE, 3 * MS, 12)                          # path 1: updates 11, 12 changed nothing
    assert arbiter.rows[0][:2] == [1, 12] and arbiter.first == [1, 1]
    arbiter.write(0, 11, 0, LIVE, [(99.0, 1.0)], [(101.0, 1.0)], 1, 4 * MS, 0, 0)   # path 0's stalled burst
    assert board.row(0).bids[0][0] == 100.0 and arbiter.late == [1, 0]
    arbiter.set_status(0, 0, LIVE, 5 * MS, 12)                          # path 0 catches up: the same id, confirmed
    assert board.row(0).confirmed_ns == 5 * MS and arbiter.rows[0][:2] == [1, 12]
