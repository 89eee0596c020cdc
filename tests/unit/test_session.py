"""The feed session on real frames: every decision of a feed, without sockets, clocks or shared memory."""
from __future__ import annotations

import orjson

from pipeline.board.layout import RowStatus, SkipReason
from pipeline.feed.session import FeedSession, MemorySink
from pipeline.venues import load_venue
from tests.conftest import fixture_lines

SECOND = 1_000_000_000


def session_for(venue: str, symbols: list[str], staleness_ms: float = 1000, depth: int = 5):
    sink = MemorySink(depth)
    journal = []
    session = FeedSession(load_venue(venue), {s: n for n, s in enumerate(symbols)}, depth, int(staleness_ms * 1e6),
                          sink, journal=lambda kind, now, fields: journal.append((kind, now, fields)))
    conn = session.connection_opened(symbols, 0)
    return session, sink, conn, journal


def test_bybit_top_of_book_frames_make_a_live_row_with_exact_values():
    session, sink, conn, _ = session_for("bybit", ["BTCUSDT"])
    frames = [line for line in fixture_lines("bybit", "bbo.jsonl") if '"orderbook.1.BTCUSDT"' in line]
    assert session.receive(frames[0], 5 * SECOND, conn) == []
    row = sink.row(0)
    assert row.status == RowStatus.LIVE
    assert row.bids == [(28165.07, 0.175231)] and row.asks == [(28165.08, 0.996816)]
    assert row.exch_ts_ns == 1680652806504 * 1_000_000 and row.recv_ns == 5 * SECOND
    assert session.stats.get("messages") == 1
    # the session observed the exchange clock: receive time minus exchange time
    assert session.clock.offset_ns(5 * SECOND) == 5 * SECOND - 1680652806504 * 1_000_000


def test_unusable_frame_is_counted_and_skipped_and_changes_nothing():
    session, sink, conn, journal = session_for("bybit", ["BTCUSDT"])
    assert session.receive("not json", 1, conn) == []
    assert session.stats.get("parse_errors") == 1
    assert session.stats.skipped(SkipReason.INVALID_JSON) == 1
    assert sink.rows == {} and journal[-1][0] == "parse_error"


def test_symbols_not_subscribed_are_skipped():
    session, sink, conn, _ = session_for("bybit", ["ETHUSDT"])
    session.receive(fixture_lines("bybit", "bbo.jsonl")[0], 1, conn)
    assert sink.rows == {} and session.stats.skipped(SkipReason.UNKNOWN_MESSAGE) == 1


def test_ping_gets_the_venues_pong():
    session, _, conn, _ = session_for("htx", ["btcusdt"])
    replies = session.receive('{"ping":1786563068868}', 1, conn)
    assert [orjson.loads(r) for r in replies] == [{"pong": 1786563068868}]


def test_refused_subscription_holds_the_row_rejected_even_across_reconnects():
    session, sink, conn, journal = session_for("bybit", ["BTCUSDT"])
    refusal = ('{"success":false,"ret_msg":"Invalid symbol :[orderbook.1.BTCUSDT]","conn_id":"x",'
               '"req_id":"BTCUSDT","op":"subscribe"}')
    session.receive(refusal, 1, conn)
    assert sink.row(0).status == RowStatus.REJECTED
    assert journal[-1][0] == "reject"
    session.connection_lost(conn, 2, "test")
    assert sink.row(0).status == RowStatus.REJECTED


def test_coinbase_sequence_gap_untrusts_the_rows_at_once_and_skips_the_rest_of_the_frame():
    session, sink, conn, journal = session_for("coinbase", ["ETH-USD"])
    frames = [line for line in fixture_lines("coinbase", "at_level2.jsonl") if '"ETH-USD"' in line]
    first = orjson.loads(frames[0])
    session.receive(frames[0], 1, conn)
    assert sink.row(0).status == RowStatus.LIVE
    bid_before = sink.row(0).bids[0]
    # the next frame of the connection skipped a number and would move the best bid
    nxt = dict(first)
    nxt["sequence_num"] = first["sequence_num"] + 5
    nxt["events"] = [{"type": "update", "product_id": "ETH-USD", "updates": [
        {"side": "bid", "event_time": "2026-08-09T21:05:49Z", "price_level": str(bid_before[0] + 0.01),
         "new_quantity": "9"}]}]
    session.receive(orjson.dumps(nxt).decode(), 2, conn)
    row = sink.row(0)
    assert row.status == RowStatus.RESYNCING
    assert conn.reconnect_reason.startswith("connection sequence jumped")
    assert session.stats.get("gaps") == 1
    assert ("gap", 2) == journal[-1][:2]
    # the frame's update was not applied: the row keeps its last quote (untradable), the book is discarded
    assert row.bids[0] == bid_before
    assert session.books["ETH-USD"].book.bids.best() is None


def test_silence_makes_a_live_row_stale_and_a_new_update_makes_it_live_again():
    session, sink, conn, journal = session_for("bybit", ["BTCUSDT"], staleness_ms=1000)
    frames = [line for line in fixture_lines("bybit", "bbo.jsonl") if '"orderbook.1.BTCUSDT"' in line]
    session.receive(frames[0], 10 * SECOND, conn)
    assert session.tick(10 * SECOND + SECOND // 2) == []
    assert session.tick(11 * SECOND + 1) == [0]
    assert sink.row(0).status == RowStatus.STALE and journal[-1][0] == "stale"
    session.receive(frames[1], 12 * SECOND, conn)
    assert sink.row(0).status == RowStatus.LIVE


def test_lost_connection_marks_its_rows_disconnected_until_a_new_snapshot():
    session, sink, conn, journal = session_for("bybit", ["BTCUSDT"])
    frames = [line for line in fixture_lines("bybit", "bbo.jsonl") if '"orderbook.1.BTCUSDT"' in line]
    session.receive(frames[0], 1, conn)
    session.connection_lost(conn, 2, "server closed")
    assert sink.row(0).status == RowStatus.DISCONNECTED
    assert journal[-1] == ("disconnect", 2, {"conn": conn.id, "reason": "server closed"})
    conn2 = session.connection_opened(["BTCUSDT"], 3)
    assert conn2.id == conn.id + 1
    session.receive(frames[0], 4, conn2)
    assert sink.row(0).status == RowStatus.LIVE


def test_trace_names_every_outcome_of_a_frame():
    session, _, conn, _ = session_for("bybit", ["BTCUSDT"])
    session.trace = []
    frames = [line for line in fixture_lines("bybit", "bbo.jsonl") if '"orderbook.1.BTCUSDT"' in line]
    session.receive(frames[0], 1, conn)
    session.receive(frames[0], 2, conn)
    assert [t[0] for t in session.trace][0] == "changed"
    assert session.trace[1][0] in ("unchanged", "ignored")
