"""Binance parser against real messages (../shared/fixtures/binance)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, Notice, SubscribeError
from pipeline.venues import binance
from tests.conftest import fixture_lines


def test_book_ticker_raw_and_combined():
    lines = fixture_lines("binance", "bbo.jsonl")
    [u] = binance.parse(lines[1], 0)
    assert (u.symbol, u.channel, u.snapshot, u.seq, u.exch_ts_ms) == ("BTCUSDT", BBO, True, 98494969448, 0)
    assert u.bids == [(63704.0, 4.77471)] and u.asks == [(63704.01, 11.33198)]
    [u] = binance.parse(lines[3], 0)
    assert (u.symbol, u.seq) == ("BTCUSDT", 1127645101)
    assert u.bids == [(8010.0, 0.142459)] and u.asks == [(8012.15, 0.031201)]


def test_partial_depth_takes_symbol_from_stream_name():
    lines = fixture_lines("binance", "depth5.jsonl")
    [u] = binance.parse(lines[1], 0)
    assert (u.symbol, u.channel, u.snapshot, u.seq) == ("BNBUSDT", DEPTH, True, 13919791373)
    assert u.bids[0] == (656.72, 29.052) and u.bids[4] == (656.68, 0.025)
    assert u.asks[0] == (656.73, 21.012) and u.asks[4] == (656.77, 0.625)
    [u] = binance.parse(lines[2], 0)
    assert u.symbol == "ETHUSDT" and u.bids == [(1782.0, 6.483), (1781.95, 0.03)]
    with pytest.raises(ParseError):      # raw /ws partial depth carries no symbol at all
        binance.parse(lines[0], 0)


def test_control_messages():
    lines = fixture_lines("binance", "control_recv.jsonl")
    assert binance.parse(lines[0], 0) == [Ack()]
    assert binance.parse(lines[3], 0) == [Notice("server shutdown announced", reconnect=True)]
    assert binance.parse(lines[4], 0) == [Notice("server shutdown announced", reconnect=True)]
    [err] = binance.parse(lines[6], 0)
    assert isinstance(err, SubscribeError) and "too many parameters" in err.message


def test_subscribe_frame_shape():
    [frame] = binance.build_subscribe(["BTCUSDT"], 5)
    assert frame == '{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","btcusdt@depth5@100ms"],"id":1}'
    assert binance.native_symbol("BTC/USDT") == "BTCUSDT"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(raw):
    try:
        events = binance.parse(raw, 0)
    except ParseError:
        return
    assert all(isinstance(e, (BookUpdate, Ack, Notice, SubscribeError)) for e in events)
