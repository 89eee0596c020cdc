"""Binance parser against real messages (tests/fixtures/binance)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from pipeline.board.layout import RowStatus
from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, Notice, SubscribeError
from pipeline.venues.binance import wire as binance
from pipeline.venues import load_venue
from pipeline.venues.typed import DECODERS, decoder_for
from tests.conftest import fixture_lines


@pytest.fixture(params=DECODERS)
def parse(request):
    """The tests that parse frames run on each decoder (``venues.binance.decoder``): the events must be the same."""
    return decoder_for(load_venue("binance"), request.param).parse


def test_book_ticker_raw_and_combined(parse):
    lines = fixture_lines("binance", "bbo.jsonl")
    [u] = parse(lines[1], 0)
    assert (u.symbol, u.channel, u.snapshot, u.seq, u.exch_ts_ms) == ("BTCUSDT", BBO, True, 98494969448, 0)
    assert u.xseq == 98494969448                          # bookTicker `u` orders it against depth
    assert u.bids == [(63704.0, 4.77471)] and u.asks == [(63704.01, 11.33198)]
    [u] = parse(lines[3], 0)
    assert (u.symbol, u.seq) == ("BTCUSDT", 1127645101)
    assert u.bids == [(8010.0, 0.142459)] and u.asks == [(8012.15, 0.031201)]


def test_partial_depth_takes_symbol_from_stream_name(parse):
    lines = fixture_lines("binance", "depth5.jsonl")
    [u] = parse(lines[1], 0)
    assert (u.symbol, u.channel, u.snapshot, u.seq, u.xseq) == ("BNBUSDT", DEPTH, True, 13919791373, 13919791373)
    assert u.bids[0] == (656.72, 29.052) and u.bids[4] == (656.68, 0.025)
    assert u.asks[0] == (656.73, 21.012) and u.asks[4] == (656.77, 0.625)
    [u] = parse(lines[2], 0)
    assert u.symbol == "ETHUSDT" and u.bids == [(1782.0, 6.483), (1781.95, 0.03)]
    with pytest.raises(ParseError):      # raw /ws partial depth carries no symbol at all
        parse(lines[0], 0)


def test_control_messages(parse):
    lines = fixture_lines("binance", "control_recv.jsonl")
    assert parse(lines[0], 0) == [Ack()]
    planned = Notice("server shutdown announced", reconnect=True, planned=True)
    assert parse(lines[3], 0) == [planned]               # raw stream
    assert parse(lines[4], 0) == [planned]               # combined stream `!serverShutdown`
    [err] = parse(lines[6], 0)
    assert isinstance(err, SubscribeError) and "too many parameters" in err.message


def test_subscribe_frame_shape():
    [frame] = binance.build_subscribe(["BTCUSDT"], 5)
    assert frame == '{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","btcusdt@depth5@100ms"],"id":1}'
    assert binance.native_symbol("BTC/USDT") == "BTCUSDT"


@pytest.mark.parametrize("decoder", DECODERS)
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(decoder, raw):
    parse = decoder_for(load_venue("binance"), decoder).parse
    try:
        events = parse(raw, 0)
    except ParseError:
        return
    assert all(isinstance(e, (BookUpdate, Ack, Notice, SubscribeError)) for e in events)


def test_late_depth_never_overrides_a_newer_book_ticker(parse):
    """W1: depth lastUpdateId 90 -> bookTicker u 100 -> depth 95 delivered late: the top stays the ticker's."""
    book = InstrumentBook("BTCUSDT", depth=2)

    def depth(last, bid):
        return parse('{"stream":"btcusdt@depth5@100ms","data":{"lastUpdateId":%d,'
                     '"bids":[["%s","1.0"],["99.0","2.0"]],"asks":[["100.5","1.0"],["101.0","2.0"]]}}'
                     % (last, bid), 0)[0]

    ticker = parse('{"stream":"btcusdt@bookTicker","data":{"u":100,"s":"BTCUSDT","b":"99.9",'
                   '"B":"3.0","a":"100.5","A":"1.0"}}', 0)[0]
    assert book.apply(depth(90, "100.0")) is Outcome.CHANGED
    assert book.apply(ticker) is Outcome.CHANGED
    assert book.compose()[0] == [(99.9, 3.0), (99.0, 2.0)]
    assert book.apply(depth(95, "100.0")) is Outcome.CHANGED
    assert book.compose()[0] == [(99.9, 3.0), (99.0, 2.0)]        # not the older 100.0
    assert book.state == RowStatus.LIVE
    assert book.apply(depth(105, "99.95")) is Outcome.CHANGED     # a newer depth wins again
    assert book.compose()[0] == [(99.95, 1.0), (99.0, 2.0)]
