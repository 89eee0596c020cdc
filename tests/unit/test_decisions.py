"""The decision ring carries the engine's records exactly; a reader that falls behind is told what it lost.

The records are the real engine's (open, update, close, shadow, with shared liquidity, trading rules,
exchange ages and shadow fills a leg could not take), written through the board's ring and read back:
the same keys in the same order, the same values, the same JSON bytes. The writer's fast encoder puts the
very bytes the plain one does in the ring, and refuses what it refuses.
"""
from __future__ import annotations

import dataclasses

import orjson
import pytest

from pipeline.board import Board, BoardPlan, ProcStats
from pipeline.config import parse_config
from pipeline.decisions import (
    KIND_CODE,
    DecisionError,
    DecisionReader,
    DecisionWriter,
    decode,
    encode,
)
from pipeline.detector.report import iso
from pipeline.detector.rules import Quote
from pipeline.output.process import OutputFollower
from tests.engine_harness import LIVE, MS, T0, engine_for, rules


def q(venue, bid, ask, now, qty=1.0, exch_ts_ns=0):
    return Quote(venue, LIVE, [(bid, qty), (bid - 1, qty)], [(ask, qty), (ask + 1, qty)], now - MS, exch_ts_ns,
                 now - MS // 2, 7, 0, 0, "BTC/USDT")


def engine_records() -> list[dict]:
    """The engine's records for three venues: a dislocation two pairs share, an update, shadow fills (one of
    them on a book gone stale), a close, and the close at shutdown."""
    books = {}
    engine = engine_for({"binance": ["BTC/USDT"], "bybit": ["BTC/USDT"], "okx": ["BTC/USDT"]},
                        quotes_of=lambda key: books, shadow_latencies_ms=[5, 20],
                        rules={v: rules(v, tick="0.1", step="0.001") for v in ("binance", "bybit", "okx")},
                        staleness_ms=10)
    out = []
    now = T0

    def put(*quotes):
        books.update({quote.leg: quote for quote in quotes})
    put(q("binance", 99.9, 100.0, now, exch_ts_ns=now - 3 * MS), q("bybit", 101.0, 101.1, now),
        q("okx", 99.95, 100.05, now))
    out += engine.evaluate("BTC/USDT", dict(books), now)
    now += 2 * MS
    put(q("bybit", 101.5, 101.6, now))
    out += engine.evaluate("BTC/USDT", dict(books), now)
    now += 6 * MS
    out += engine.run_shadows(now)
    now += 30 * MS                      # the books are stale by now: the 20 ms fills cannot be taken
    out += engine.run_shadows(now)
    put(q("bybit", 100.0, 100.1, now), q("binance", 99.9, 100.0, now), q("okx", 99.95, 100.05, now))
    out += engine.evaluate("BTC/USDT", dict(books), now)
    out += engine.close_all(now + MS)
    return [e.record for e in out]


@pytest.fixture
def ring_board(board_name):
    board = Board.create(board_name, 3, 2, 2, decision_entries=64, decision_fills=2)
    yield board
    board.destroy()


def test_every_engine_record_comes_back_from_the_ring_identical(ring_board):
    records = engine_records()
    kinds = [r["event"] for r in records]
    assert {"open", "update", "close", "shadow"} <= set(kinds), kinds
    assert any("shares_liquidity_with" in r for r in records) and any("buy_rules" in r for r in records)
    assert any(f["net_bps"] is None for r in records if r["event"] == "shadow" for f in r["shadow_fills"])
    writer = DecisionWriter(ring_board)
    reader = DecisionReader(ring_board, 0)
    for n, record in enumerate(records):
        record["run_id"] = "20261207T063000Z-3fa2c1"      # stamped by the outputs: not carried, never refused
        assert writer.write(record, (0, T0, T0 - MS, T0 - 2 * MS, 7, 9, 1, 2)) == n
        del record["run_id"]
    for n, record in enumerate(records):
        got_n, values = reader.read()
        back = reader.record(values)
        assert got_n == n and list(back) == list(record) and back == record
        assert orjson.dumps(back) == orjson.dumps(record)
        decision = reader.decision(got_n, values)
        assert (decision.kind, decision.buy_row, decision.sell_row, decision.buy_seq, decision.sell_seq,
                decision.seen_ns) == (record["event"], 1, 2, 7, 9, T0)
        assert decision.written_ns > 0 and decision.buy_venue == record["buy_exchange"]
    assert reader.read() is None and reader.lost == 0
    writer.close()
    reader.close()


def test_ints_nones_and_names_keep_their_type():
    names: list[str] = []

    def index(text):
        if text is None:
            return 0xFFFF
        if text not in names:
            names.append(text)
        return names.index(text)
    record = {"event": "shadow", "id": 2, "time": iso(T0), "time_ns": T0, "opened_time_ns": T0 - 5,
              "instrument": "BTC/USD", "buy_exchange": "kraken@frankfurt", "sell_exchange": "bybit",
              "quote_currency": "USD", "qty_base": 0.5, "notional_quote": 30000.0, "net_bps": 12.25,
              "shadow_fills": [{"latency_ms": 5.0, "filled_qty_base": 0, "fill_fraction": 0, "buy_price": None,
                                "sell_price": None, "net_bps": None, "profit_quote": None, "slippage_bps": None,
                                "reason": "quote_stale"}],
              "remote_leg_delay_ms": 41.5}
    back = decode(encode(record, index, 1), lambda n: names[n])
    assert back == record and list(back) == list(record)
    assert type(back["shadow_fills"][0]["filled_qty_base"]) is int and back["shadow_fills"][0]["net_bps"] is None


def test_a_record_the_ring_cannot_carry_is_refused_by_name():
    record = {"event": "open", "id": 1, "time": iso(T0), "time_ns": T0, "instrument": "BTC/USDT", "surprise": 1}
    with pytest.raises(DecisionError, match="surprise"):
        encode(record, lambda text: 0, 1)
    with pytest.raises(DecisionError, match="unknown event"):
        encode({"event": "teleport"}, lambda text: 0, 1)
    assert KIND_CODE == {"open": 1, "update": 2, "close": 3, "shadow": 4}


def test_the_output_follower_counts_what_a_whole_ring_behind_lost_and_says_so_last(board_name, tmp_path):
    config = parse_config({"venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://x"},
                                      "bybit": {"instruments": ["BTC/USDT"], "url": "wss://y"}},
                           "detector": {"output": str(tmp_path / "events.jsonl"), "print_opportunities": False,
                                        "decision_ring": 16, "shadow_latencies_ms": [5]}},
                          available_cores=frozenset({0}))
    config = dataclasses.replace(config, run_id="r1")
    plan = BoardPlan.from_config(config)
    board = plan.create_board(board_name, 2)
    try:
        assert (board.geometry.decision_entries, board.geometry.decision_fills) == (16, 1)
        stats = ProcStats(board, plan.slot("output").slot)
        follower = OutputFollower(board, config, stats, start=0)
        writer = DecisionWriter(board)
        record = engine_records()[0]
        for n in range(40):
            writer.write(dict(record, id=n + 1))
        assert follower.reader.behind() == 40
        writer.text("detector summary: 40 opportunities opened\n" + "x" * 900)     # three entries of text
        assert follower.close() is True
        ids = [orjson.loads(line)["id"] for line in (tmp_path / "events.jsonl").read_bytes().splitlines()]
        assert ids == list(range(28, 41))               # 43 entries, the last 16 kept: 13 records and the text
        proc = board.procs[plan.slot("output").slot]
        assert (int(proc["decisions_lost"]), int(proc["decisions_behind"]), int(proc["messages"])) == (27, 0, 43)
        assert follower.reader.summary.startswith("detector summary: 40") and len(follower.reader.summary) == 942
        assert follower.final_text("s").splitlines()[-1] == (
            "  DECISIONS LOST: 27 entries of the decision ring were overwritten before the output read them "
            "(raise detector.decision_ring)")
        writer.close()
    finally:
        board.destroy()


def test_a_restarted_output_continues_where_its_events_file_stood_not_where_it_had_read(board_name, tmp_path):
    """``messages`` (where a successor starts) moves when the events file has taken a record, not when the
    ring was read: with a FIFO nobody reads yet, every entry is read and none is committed."""
    import os
    import threading

    from tests.conftest import wait_until
    events = tmp_path / "events.fifo"
    os.mkfifo(events)
    config = parse_config({"venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://x"},
                                      "bybit": {"instruments": ["BTC/USDT"], "url": "wss://y"}},
                           "detector": {"output": str(events), "print_opportunities": False,
                                        "decision_ring": 64, "shadow_latencies_ms": [5]}},
                          available_cores=frozenset({0}))
    plan = BoardPlan.from_config(config)
    board = plan.create_board(board_name, 2)
    slot = plan.slot("output").slot
    got = []
    try:
        stats = ProcStats(board, slot)
        follower = OutputFollower(board, config, stats, start=0)      # its file's open waits for a reader
        writer = DecisionWriter(board)
        record = engine_records()[0]
        for n in range(5):
            writer.write(dict(record, id=n + 1))
        assert follower.pump() == 5
        assert (follower.reader.next, int(board.procs[slot]["messages"])) == (5, 0)   # read, none taken
        reader = threading.Thread(target=lambda: got.append(events.read_bytes()))
        reader.start()                                                # a reader: the file opens, 5 records go
        wait_until(lambda: int(board.procs[slot]["messages"]) == 5, 10, message="the five records committed")
        assert follower.close() is True
        reader.join(10)
        assert [orjson.loads(line)["id"] for line in got[0].splitlines()] == [1, 2, 3, 4, 5]
        writer.close()
    finally:
        board.destroy()


def ring_bytes(board: Board) -> bytes:
    """The whole decision ring of ``board``: its control block, its names table and every slot."""
    g = board.geometry
    return bytes(board.buf[g.decisions_offset:g.size])


def varied_records() -> list[dict]:
    """The engine's records, and the same with what other books and configurations give: an int fee, a None
    number, no shared liquidity, a ``run_id`` stamped on (not carried), a shadow fill with an int quantity."""
    records = engine_records()
    out = list(records)
    for record in records:
        if record["event"] == "shadow":
            fills = [dict(fill, filled_qty_base=0) for fill in record["shadow_fills"]]
            out.append(dict(record, shadow_fills=fills, net_bps=None))
            continue
        out.append(dict(record, buy_fee_bps=10, sell_fee_bps=7.5, best_bid=None))
        out.append({key: value for key, value in record.items() if key != "shares_liquidity_with"})
        out.append(dict(record, run_id="20261207T063000Z-3fa2c1"))
    return out


def test_the_fast_writer_puts_the_very_bytes_of_the_plain_one_in_the_ring(board_name):
    records = varied_records()
    assert {"open", "update", "close", "shadow"} <= {r["event"] for r in records}
    assert any(r.get("best_bid", 1) is None for r in records) and any("buy_rules" in r for r in records)
    assert any(r["event"] != "shadow" and "shares_liquidity_with" not in r for r in records)
    boards = [Board.create(board_name, 3, 2, 2, decision_entries=128, decision_fills=2),
              Board.create(board_name + "-plain", 3, 2, 2, decision_entries=128, decision_fills=2)]
    try:
        writers = [DecisionWriter(boards[0]), DecisionWriter(boards[1], fast=False)]
        twice = records + records          # the second time every shape, type and name is known
        for n, record in enumerate(twice):
            meta = (T0 + n, T0, T0 - MS, T0 - 2 * MS, 7, 9, 1, 2)
            assert [writer.write(record, meta) for writer in writers] == [n, n]
            assert ring_bytes(boards[0]) == ring_bytes(boards[1]), (n, record)
        reader = DecisionReader(boards[0], 0)
        for n, record in enumerate(twice):
            got_n, values = reader.read()
            back = reader.record(values)
            expected = {key: value for key, value in record.items() if key != "run_id"}
            assert got_n == n and list(back) == list(expected) and back == expected
            assert values[7] == T0 + n
        reader.close()
        for writer in writers:
            writer.close()
    finally:
        for board in boards:
            board.destroy()


def test_the_fast_writer_refuses_what_the_plain_one_refuses_and_writes_nothing(ring_board):
    records = engine_records()
    update = next(r for r in records if r["event"] == "update" and "shares_liquidity_with" in r)
    opened = next(r for r in records if r["event"] == "open" and "buy_rules" in r)
    shadow = next(r for r in records if r["event"] == "shadow")
    keys = list(update)
    swapped = {key: update[key] for key in (*keys[:4], keys[5], keys[4], *keys[6:])}
    cases = [
        (dict(update, surprise=1), "a field the decision ring does not know: 'surprise'"),
        (swapped, f"{keys[4]!r} out of the engine's order"),
        (dict(update, instrument="X" * 64), "longer than 63 bytes"),
        (dict(update, buy_exchange=["binance"]), "a name that is not text"),
        (dict(update, qty_base="1.5"), "'qty_base' not a number"),
        (dict(update, id=1.0), "'id' not an int"),
        (dict(update, shares_liquidity_with=["okx"] * 23), "23 shares_liquidity_with names"),
        (dict(opened, buy_rules=dict(opened["buy_rules"], lot="1")), "'buy_rules' not a dict of"),
        (dict(shadow, shadow_fills=shadow["shadow_fills"] * 3), "shadow fills \\(the ring's entries hold 2\\)"),
        (dict(shadow, shadow_fills=[dict(shadow["shadow_fills"][0], note="x")]), "a shadow fill not a dict of"),
        (dict(shadow, shadow_fills=[dict(shadow["shadow_fills"][0], net_bps="x")]), "'net_bps' not a number"),
    ]
    for fast in (True, False):
        writer = DecisionWriter(ring_board, fast=fast)
        for record in (update, opened, shadow):       # the plans for these shapes are made, their names known
            writer.write(record)
        written = writer.count
        for record, message in cases:
            with pytest.raises(DecisionError, match=message):
                writer.write(record)
        assert writer.count == written
        writer.write(update)
        writer.close()
    reader = DecisionReader(ring_board, 0)
    assert [reader.record(reader.read()[1]) for _ in range(8)] == [update, opened, shadow, update] * 2
    assert reader.read() is None
    reader.close()
