"""The feed session on real frames: every decision of a feed, without sockets, clocks or shared memory."""
from __future__ import annotations

import orjson

from pipeline.feed.session import FeedSession
from pipeline.model import RowStatus, SkipReason
from pipeline.venues import load_venue
from tests.conftest import fixture_lines, session_for

SECOND = 1_000_000_000


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


# ---------------------------------------------------------------- trust on the real exchanges (issue: audit items)

KRAKEN_STATUS = ('{"channel":"status","type":"update","data":[{"api_version":"v2","connection_id":1,"system":"%s",'
                 '"version":"2.0.0"}]}')


def kraken_live_session():
    from tests.unit.test_venue_kraken import INSTRUMENT
    session, sink, conn, journal = session_for("kraken", ["ETH/USD"], staleness_ms=1000)
    session.receive(INSTRUMENT, 1 * SECOND, conn)
    for line in fixture_lines("kraken", "book.jsonl"):
        if '"ETH/USD"' in line:
            session.receive(line, 2 * SECOND, conn)
    assert sink.row(0).status == RowStatus.LIVE
    return session, sink, conn, journal


def test_venue_status_other_than_online_halts_the_rows_until_it_clears():
    session, sink, conn, journal = kraken_live_session()
    quote = (sink.row(0).bids, sink.row(0).asks)
    session.receive(KRAKEN_STATUS % "maintenance", 3 * SECOND, conn)
    assert sink.row(0).status == RowStatus.HALTED
    assert (sink.row(0).bids, sink.row(0).asks) == quote          # the book is kept, only not tradable
    assert journal[-1][0] == "status" and journal[-1][2] == {"symbol": None, "tradable": False,
                                                              "reason": "maintenance"}
    session.receive(KRAKEN_STATUS % "cancel_only", 4 * SECOND, conn)
    assert sink.row(0).status == RowStatus.HALTED
    session.receive(KRAKEN_STATUS % "online", 5 * SECOND, conn)
    assert sink.row(0).status == RowStatus.LIVE


def test_heartbeats_keep_a_quiet_book_fresh_and_a_silent_one_goes_stale():
    session, sink, conn, _ = kraken_live_session()
    changed_at = sink.row(0).recv_ns
    for t in (2.6, 3.2, 3.8):
        session.receive('{"channel":"heartbeat"}', int(t * SECOND), conn)
        assert session.tick(int(t * SECOND) + 1) == []
    row = sink.row(0)
    assert row.status == RowStatus.LIVE and row.recv_ns == changed_at and row.confirmed_ns == int(3.8 * SECOND)
    assert session.tick(int(4.9 * SECOND)) == [0]                 # then silence: stale after 1 s
    session.receive('{"channel":"heartbeat"}', 5 * SECOND, conn)  # the exchange confirms again: live
    assert sink.row(0).status == RowStatus.LIVE and sink.row(0).recv_ns == changed_at


def test_gap_driven_resubscribes_are_rate_limited_per_instrument():
    session, sink, conn, journal = session_for("bybit", ["BTCUSDT"])
    snapshot = next(line for line in fixture_lines("bybit", "depth.jsonl") if '"snapshot"' in line)
    import orjson as _orjson
    msg = _orjson.loads(snapshot)
    symbol = msg["data"]["s"]
    session = FeedSession(load_venue("bybit"), {symbol: 0}, 5, SECOND, sink)
    conn = session.connection_opened([symbol], 0)
    sent = []
    for n in range(5):
        session.receive(snapshot, (n * 10 + 1) * SECOND, conn)
        delta = dict(msg, type="delta", data=dict(msg["data"], u=msg["data"]["u"] + 5, b=[], a=[]))
        sent.append(session.receive(_orjson.dumps(delta), (n * 10 + 2) * SECOND, conn))
    assert [bool(frames) for frames in sent] == [True, True, True, False, False]
    assert session.stats.get("resyncs") == 5 and session.stats.get("resyncs_deferred") == 1
    assert session.poll(conn, 60 * SECOND) == []                  # still inside the window
    later = session.poll(conn, 62 * SECOND)                        # the first left the window at 62 s
    assert later and orjson.loads(later[-1])["op"] == "subscribe"


def test_planned_disconnect_hands_the_rows_over_without_ever_going_disconnected():
    session, sink, conn, journal = session_for("bybit", ["BTCUSDT"])
    frames = [line for line in fixture_lines("bybit", "bbo.jsonl") if '"orderbook.1.BTCUSDT"' in line]
    session.receive(frames[0], 1 * SECOND, conn)
    assert sink.row(0).status == RowStatus.LIVE
    conn.replace_requested = "server upgrade"                     # what a planned notice sets
    standby = session.connection_opened(["BTCUSDT"], 2 * SECOND, standby_for=conn)
    writes = sink.row(0).writes
    session.receive(frames[1], 3 * SECOND, conn)                  # the old connection still carries the row
    assert sink.row(0).writes == writes + 1
    # the standby's first whole book takes the row over at once
    session.receive(frames[0], 4 * SECOND, standby)
    assert conn.retired and standby.books is None and journal[-1][0] == "handover"
    assert sink.row(0).status == RowStatus.LIVE and sink.row(0).recv_ns == 4 * SECOND
    statuses = []
    session.sink = type("Spy", (), {"write": lambda *a: statuses.append(a[2]),
                                    "set_status": lambda *a, **k: statuses.append(a[2])})()
    session.receive(frames[1], 5 * SECOND, conn)                  # frames of the retired connection: ignored
    session.connection_lost(conn, 6 * SECOND, "closed by us")     # its loss marks nothing
    assert statuses == []


def test_okx_tick_by_tick_refused_falls_back_to_books_once():
    session, sink, conn, journal = session_for("okx", ["BTC-USDT"])
    session.depth_channel = "books50-l2-tbt"
    assert "books50-l2-tbt" in session.subscribe_frames(conn)[0]
    refused = (b'{"event":"error","code":"64003","msg":"Your trading fee tier does not meet the requirement to '
               b'access this channel","arg":{"channel":"books50-l2-tbt","instId":"BTC-USDT"},"connId":"a4d3ae55"}')
    replies = session.receive(refused, 1, conn)
    assert session.depth_channel is None
    assert [orjson.loads(r)["args"][0]["channel"] for r in replies if orjson.loads(r)["op"] == "subscribe"] == ["books"]
    assert [j[0] for j in journal].count("fallback") == 1


def test_okx_request_budget_moves_the_instruments_to_a_new_connection():
    session, sink, conn, journal = session_for("okx", ["BTC-USDT"])
    assert session.request_budget == 480
    session.subscribe_frames(conn)
    for n in range(480):
        session._resubscribe("BTC-USDT", n * 1000, conn, limited=False)   # noqa: SLF001
        if conn.replace_requested:
            break
    assert conn.replace_requested.startswith("4") and "480 requests per hour" in conn.replace_requested
    assert len(conn.requests) <= 0.9 * 480


def test_a_frame_with_a_field_the_declaration_does_not_know_is_used_counted_and_said_once():
    session, sink, conn, journal = session_for("binance", ["BTCUSDT"])
    line = fixture_lines("binance", "bbo.jsonl")[3]                 # a combined-stream bookTicker
    drifted = line.replace('"data":{', '"data":{"E":1700000000000,', 1)
    session.receive(drifted, 1 * SECOND, conn)
    row = sink.row(0)
    assert row.status == RowStatus.LIVE and row.bids == [(8010.0, 0.142459)] and row.asks == [(8012.15, 0.031201)]
    session.receive(drifted.replace('"u":1127645101', '"u":1127645102'), 2 * SECOND, conn)
    assert session.stats.get("schema_fallbacks") == 2 and session.stats.get("parse_errors") == 0
    assert [fields for kind, _, fields in journal if kind == "schema_drift"] == [
        {"message": "BookTickerFrame", "detail": "Object contains unknown field `E` - at `$.data`"}]
    session.receive(line, 3 * SECOND, conn)                         # the declared shape: nothing more to count
    assert session.stats.get("schema_fallbacks") == 2
