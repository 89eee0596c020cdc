"""One number out of range never stops a feed, a bridge or a replay.

An exchange time too large for a row (``"ts":"99999999999999999999"`` in an OKX frame, a year past 2262, an
integer up to 2^64-1 in a bridge message) used to overflow the row's int64 field inside ``RowWriter.write``:
the feed died, and after enough deaths the supervisor gave up on it. Now the book counts it as a bad number
where it is parsed (the row is not trusted until the book is rebuilt), the row writer refuses a time it
cannot hold before it stores anything (the row keeps its last consistent value, its sequence even), and a
feed session or bridge that meets that refusal counts it and goes on.
"""
from __future__ import annotations

import uuid

import orjson
import pytest

from pipeline.board import Board, RowReader, RowStatus, RowWriter
from pipeline.bridge.codec import parse_quote
from pipeline.errors import ParseError, RowValueError
from pipeline.model import SkipReason
from tests.conftest import run_cli, session_for, write_config

LIVE = int(RowStatus.LIVE)
SECOND = 1_000_000_000
T0 = 1_780_000_000 * SECOND
HUGE_TS = "99999999999999999999"              # ms: 3.2 billion years, 10^20 x 10^6 ns does not fit an int64


def okx_bbo(ts: str, seq: int, bid: str = "31774.6", ask: str = "31774.7") -> str:
    """An OKX ``bbo-tbt`` push, in the shape of the real 2022 frame in pipeline/venues/okx.py."""
    return ('{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[{"asks":[["%s","0.14368878","0","3"]],'
            '"bids":[["%s","0.3392211","0","3"]],"ts":"%s","seqId":%d}]}' % (ask, bid, ts, seq))


@pytest.fixture
def board():
    board = Board.create(f"pipeline-test-{uuid.uuid4().hex[:10]}", 1, 5, 1)
    try:
        yield board
    finally:
        board.destroy()


def okx_session(board):
    session, _, conn, journal = session_for("okx", ["BTC-USDT"], 5000, sink=RowWriter(board, [0]), recv_ns=T0,
                                            journal_fields=lambda kind, now, fields: (kind, fields))
    return session, conn, journal


def row_of(board) -> dict:
    reader = RowReader(board)
    values = reader.read(0)
    return {name: values[i] for name, i in reader.codec.index.items()}


def test_an_exchange_time_no_row_can_hold_is_a_counted_bad_number_and_the_feed_goes_on(board):
    session, conn, _ = okx_session(board)
    session.receive(okx_bbo("1654031991947", 1), T0, conn)
    assert session.stats.skipped(SkipReason.BAD_NUMBER) == 0
    before = row_of(board)
    assert before["bid_px"] == 31774.6 and before["exch_ts_ns"] == 1654031991947 * 1_000_000

    session.receive(okx_bbo(HUGE_TS, 2, bid="31775.0", ask="31775.1"), T0 + 1, conn)   # no exception
    assert session.stats.skipped(SkipReason.BAD_NUMBER) == 1
    after = row_of(board)
    assert after["status"] != LIVE                     # the book was discarded: the row is not traded
    assert after["bid_px"] != 31775.0                  # and the bad frame's quote never reached it

    session.receive(okx_bbo("1654031992000", 3, bid="31776.0", ask="31776.1"), T0 + 2, conn)
    assert row_of(board)["bid_px"] == 31776.0          # the next good frame is applied as usual
    assert session.stats.skipped(SkipReason.BAD_NUMBER) == 1


@pytest.mark.parametrize("venue, frame", [
    ("okx", okx_bbo("1654031992000", 2, bid="31775.0", ask="31775.1")
     .replace('"seqId":2', '"seqId":99999999999999999999')),
    ("binance", '{"stream":"btcusdt@bookTicker","data":{"u":18446744073709551615,"s":"BTCUSDT","b":"31775.0",'
                '"B":"1","a":"31775.1","A":"1"}}'),
])
def test_an_exchange_id_past_int64_is_a_counted_bad_number_not_a_quote_held_by_it(board, venue, frame):
    """Taken as the last id, an id too large for the int64 every venue documents would make every later, real id
    look old: the row would stay LIVE on that one quote. It is a bad number: the book is discarded, and the next
    real frame (a smaller id) makes the row live again."""
    symbol = {"okx": "BTC-USDT", "binance": "BTCUSDT"}[venue]
    good = {"okx": okx_bbo("1654031991947", 1),
            "binance": '{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"31774.6","B":"1",'
                       '"a":"31774.7","A":"1"}}'}[venue]
    session, _, conn, _ = session_for(venue, [symbol], 5000, sink=RowWriter(board, [0]), recv_ns=T0, journal=False)
    session.receive(good, T0, conn)
    assert row_of(board)["status"] == LIVE and row_of(board)["bid_px"] == 31774.6
    session.receive(frame, T0 + 1, conn)
    assert session.stats.skipped(SkipReason.BAD_NUMBER) == 1
    assert row_of(board)["status"] != LIVE and row_of(board)["bid_px"] != 31775.0
    session.receive(good.replace("31774.6", "31776.0").replace("31774.7", "31776.1").replace('"seqId":1', '"seqId":3')
                    .replace('"u":7', '"u":8'), T0 + 2, conn)
    assert row_of(board)["status"] == LIVE and row_of(board)["bid_px"] == 31776.0


def test_the_row_writer_refuses_a_time_or_id_it_cannot_hold_before_storing_anything(board):
    writer = RowWriter(board, [0])
    writer.write(0, LIVE, [(100.0, 1.0)], [(101.0, 1.0)], 5 * SECOND, T0)
    seq = RowReader(board).read_with_seq(0)[0]
    for exch_ts_ns, recv_ns in ((2 ** 63, T0), (0, 2 ** 63), (-1, T0)):
        with pytest.raises(RowValueError):
            writer.write(0, LIVE, [(200.0, 1.0)], [(201.0, 1.0)], exch_ts_ns, recv_ns)
    for xseq in (2 ** 64, -1):                         # an exchange id the row's u64 cannot hold
        with pytest.raises(RowValueError):
            writer.write(0, LIVE, [(200.0, 1.0)], [(201.0, 1.0)], 0, T0, xseq=xseq)
    with pytest.raises(RowValueError):
        writer.set_status(0, LIVE, confirmed_ns=2 ** 64 - 1)
    seq_after, values = RowReader(board).read_with_seq(0)
    assert seq_after == seq and seq_after % 2 == 0     # not left odd: readers never wait on it
    assert row_of(board)["bid_px"] == 100.0 and row_of(board)["exch_ts_ns"] == 5 * SECOND


def test_a_session_whose_row_write_is_refused_counts_it_and_untrusts_the_row(board):
    session, conn, journal = okx_session(board)
    session.receive(okx_bbo("1654031991947", 1), T0, conn)
    assert row_of(board)["bid_px"] == 31774.6
    # a receive time the row cannot hold (a clock gone wrong): the row writer's own guard, not the book's
    session.receive(okx_bbo("1654031991950", 2, bid="31775.0", ask="31775.1"), 2 ** 63, conn)
    assert session.stats.skipped(SkipReason.BAD_NUMBER) == 1
    assert [kind for kind, _ in journal].count("bad_number") == 1
    assert row_of(board)["status"] != LIVE and row_of(board)["bid_px"] == 31774.6


def test_a_bridge_message_with_an_integer_a_row_cannot_hold_is_a_parse_error():
    message = {"box": "tokyo", "venue": "binance", "instrument": "BTC/USDT", "status": LIVE,
               "bids": [[65000.1, 0.5]], "asks": [[65000.2, 0.3]], "exch_ts_ns": 2 ** 64 - 1,
               "recv_ns": T0, "publish_ns": T0, "sent_ns": T0, "updates": 17}
    with pytest.raises(ParseError) as info:
        parse_quote("quotes.tokyo.binance.BTC-USDT", orjson.dumps(message))
    assert info.value.reason == "bad_number" and "exch_ts_ns" in str(info.value)
    message["exch_ts_ns"] = 2 ** 63 - 1                # the largest that fits is taken
    assert parse_quote("quotes.tokyo.binance.BTC-USDT", orjson.dumps(message)).exch_ts_ns == 2 ** 63 - 1


@pytest.mark.integration
def test_replay_of_a_capture_with_an_out_of_range_time_runs_to_the_end(tmp_path):
    capture = tmp_path / "okx.jsonl"
    frames = [okx_bbo("1654031991947", 1), okx_bbo(HUGE_TS, 2), okx_bbo("1654031992000", 3, bid="31776.0",
                                                                         ask="31776.1")]
    capture.write_text("\n".join(frames) + "\n")
    result = run_cli("recording", "import", "--format", "jsonl", "--exchange", "okx", "--out",
                     str(tmp_path / "rec"), str(capture))
    assert result.returncode == 0, result.stderr
    config = write_config(tmp_path / "c.yaml", {
        "board": {"name": "unused"}, "venues": {"okx": {"instruments": ["BTC/USDT"], "url": "wss://x"}},
        "detector": {"output": str(tmp_path / "unused.jsonl")}})
    result = run_cli("replay", "--config", str(config), "--recording", str(tmp_path / "rec"), "--quiet",
                     "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "replay: 3 frames" in result.stdout
    assert "replay: okx incidents: connect 1, resync 1" in result.stdout        # the bad number's resync

