"""The top-of-book short path on real frames: exact values, and None for everything it must leave alone."""
from __future__ import annotations

import gzip

import pytest

from pipeline.feed.session import FeedSession, MemorySink
from pipeline.model import BBO, BookUpdate, RowStatus
from pipeline.venues import VENUES, load_venue
from tests.conftest import FIXTURES, fixture_lines


def test_real_top_of_book_frames_give_exact_numbers():
    binance = fixture_lines("binance", "bbo.jsonl")[3]          # a combined-stream bookTicker
    assert load_venue("binance").top(binance) == ("BTCUSDT", 8010.0, 0.142459, 8012.15, 0.031201, 0, 1127645101,
                                                  1127645101)
    bybit = fixture_lines("bybit", "bbo.jsonl")[0]
    assert load_venue("bybit").top(bybit) == ("BTCUSDT", 28165.07, 0.175231, 28165.08, 0.996816, 1680652806504,
                                              20404754, 4281281856)
    okx = fixture_lines("okx", "bbo.jsonl")[0]
    assert load_venue("okx").top(okx) == ("BCH-USDT-SWAP", 111.05, 57745.0, 111.06, 55154.0, 1670324386802,
                                          363996337, 363996337)
    htx = gzip.compress(fixture_lines("htx", "bbo.jsonl")[0].encode())     # HTX frames are gzip on the wire
    assert load_venue("htx").top(htx) == ("btcusdt", 31764.08, 4.378544, 31764.09, 0.794873, 1654031600064,
                                          155441231856, None)


def test_frames_the_short_path_leaves_to_the_general_path():
    bybit = load_venue("bybit")
    lines = fixture_lines("bybit", "bbo.jsonl")
    assert bybit.top(lines[1]) is None                          # a delta with an empty ask side
    restart = lines[0].replace('"u":20404754', '"u":1')
    assert bybit.top(restart) is None                           # u == 1: the sequence restarts
    binance = load_venue("binance")
    assert binance.top(fixture_lines("binance", "bbo.jsonl")[0]) is None     # raw /ws stream: no wrapper
    assert binance.top(fixture_lines("binance", "depth5.jsonl")[1]) is None
    assert binance.top('{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":null}}') is None
    assert binance.top(b'{"stream":"btcusdt@bookTicker"') is None           # truncated
    okx = load_venue("okx")
    assert okx.top(fixture_lines("okx", "depth5.jsonl")[0]) is None
    assert okx.top("pong") is None


@pytest.mark.parametrize("venue", [v for v in VENUES if load_venue(v).top is not None and (FIXTURES / v).is_dir()])
def test_top_agrees_with_parse_on_every_fixture_frame(venue):
    """Wherever ``top`` answers, ``parse`` says exactly the same thing as one BookUpdate."""
    module = load_venue(venue)
    top = module.top
    answered = 0
    for path in sorted((FIXTURES / venue).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            raw = module.wire_frame(line)
            quote = top(raw)
            if quote is None:
                continue
            answered += 1
            (event,) = module.parse(raw, 0)
            assert event.__class__ is BookUpdate and event.channel == BBO and event.snapshot
            assert (event.symbol, event.bids, event.asks, event.exch_ts_ms, event.seq, event.xseq) == \
                   (quote[0], [quote[1:3]], [quote[3:5]], quote[5], quote[6], quote[7])
            assert event.prev_seq is None and event.checksum is None and not event.restart and not event.weak
    assert answered >= 1


def test_a_feed_on_the_short_path_goes_live_and_follows_ids():
    sink = MemorySink(5)
    session = FeedSession(load_venue("binance"), {"BTCUSDT": 0}, 5, 10**9, sink)
    conn = session.connection_opened(["BTCUSDT"], 0)
    frame = '{"stream":"btcusdt@bookTicker","data":{"u":%d,"s":"BTCUSDT","b":"%s","B":"1","a":"%s","A":"2"}}'
    session.receive(frame % (10, "100.0", "100.5"), 1_000, conn)
    assert sink.rows[0].status == RowStatus.LIVE and sink.rows[0].bids == [(100.0, 1.0)]
    session.receive(frame % (9, "99.0", "99.5"), 2_000, conn)          # older id: ignored
    assert sink.rows[0].bids == [(100.0, 1.0)] and sink.rows[0].recv_ns == 1_000
    session.receive(frame % (11, "101.0", "100.5"), 3_000, conn)       # crossed
    assert sink.rows[0].status == RowStatus.CROSSED and sink.rows[0].asks == [(100.5, 2.0)]
    session.receive(frame % (12, "NaN", "100.5"), 4_000, conn)         # a bad number: the channel resyncs
    assert sink.rows[0].status == RowStatus.RESYNCING
    assert session.stats.get("messages") == 4
