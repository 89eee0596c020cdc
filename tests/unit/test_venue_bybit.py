"""Bybit v5 parser against real messages (tests/fixtures/bybit)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, Pong, SubscribeError
from pipeline.venues.bybit import wire as bybit
from pipeline.venues import load_venue
from pipeline.venues.typed import DECODERS, decoder_for
from tests.conftest import fixture_lines


@pytest.fixture(params=DECODERS)
def parse(request):
    """The tests that parse frames run on each decoder (``venues.bybit.decoder``): the events must be the same."""
    return decoder_for(load_venue("bybit"), request.param).parse


def test_orderbook_1_spot_snapshot_and_delta(parse):
    lines = fixture_lines("bybit", "bbo.jsonl")
    [u] = parse(lines[0], 0)
    assert (u.symbol, u.channel, u.snapshot, u.seq, u.exch_ts_ms) == ("BTCUSDT", BBO, True, 20404754, 1680652806504)
    assert u.bids == [(28165.07, 0.175231)] and u.asks == [(28165.08, 0.996816)]
    [d] = parse(lines[1], 0)
    assert (d.snapshot, d.seq, d.asks) == (False, 20404755, [])
    [u] = parse(lines[2], 0)
    assert (u.symbol, u.exch_ts_ms) == ("BANDUSDT", 1749833474768)     # cts, the matching-engine time


def test_depth_snapshot_then_deltas_through_the_book(parse):
    lines = fixture_lines("bybit", "depth.jsonl")
    book = InstrumentBook("BTCUSDT", depth=5, keep_levels=bybit.BOOK_LEVELS)
    [snap] = parse(lines[3], 0)
    assert (snap.channel, snap.snapshot, snap.seq) == (DEPTH, True, 15076952)
    assert book.apply(snap) is Outcome.CHANGED
    for line, seq in zip(lines[4:7], (15076953, 15076954, 15076955)):
        [delta] = parse(line, 0)
        assert (delta.seq, delta.prev_seq) == (seq, seq - 1)
        assert book.apply(delta) is Outcome.CHANGED
    bids, asks = book.compose()
    assert bids[0] == (65114.2, 6.054)
    assert bids[1] == (65114.1, 0.045)      # updated by the second delta
    assert asks[0] == (65114.3, 10.488)


def test_cross_sequence_orders_orderbook_1_against_orderbook_50(parse):
    """W1 on real 2023 BTCUSDT frames: depth seq 4281282229 is newer than L1 seq 4281281875, whatever the arrival."""
    bbo = fixture_lines("bybit", "bbo.jsonl")
    depth = fixture_lines("bybit", "depth.jsonl")
    [l1] = parse(bbo[1], 0)
    [snap] = parse(depth[1], 0)
    assert (l1.xseq, snap.xseq) == (4281281875, 4281282229)
    book = InstrumentBook("BTCUSDT", depth=2, keep_levels=bybit.BOOK_LEVELS)
    assert book.apply(parse(bbo[0], 0)[0]) is Outcome.CHANGED
    assert book.apply(snap) is Outcome.CHANGED
    assert book.apply(l1) is Outcome.CHANGED              # arrives last, but was generated earlier
    bids, asks = book.compose()
    assert bids[0] == (28162.57, 0.07562) and asks[0] == (28162.58, 0.506829)   # the depth book's top


def test_restart_u1_rearms_the_top_of_book_ids(parse):
    """T3: after u == 1 (service restart) the top-of-book channel is not stuck behind its old ids."""
    book = InstrumentBook("BTCUSDT", depth=2, keep_levels=50)

    def msg(levels, kind, u, seq, bid):
        return parse('{"topic":"orderbook.%d.BTCUSDT","ts":1,"type":"%s","data":{"s":"BTCUSDT",'
                     '"b":[["%s","1"]],"a":[["101","1"]],"u":%d,"seq":%d},"cts":1}'
                     % (levels, kind, bid, u, seq), 0)[0]

    book.apply(msg(50, "snapshot", 500, 9000, "99"))
    book.apply(msg(1, "snapshot", 800, 9001, "99.5"))
    restart = msg(50, "snapshot", 1, 10, "98")
    assert restart.restart and book.apply(restart) is Outcome.CHANGED
    assert book.apply(msg(1, "snapshot", 2, 11, "98.5")) is Outcome.CHANGED
    assert book.compose()[0][0] == (98.5, 1.0)


def test_unchanged_resend_is_a_liveness_confirmation(parse):
    [first] = parse(fixture_lines("bybit", "bbo.jsonl")[0], 0)
    book = InstrumentBook("BTCUSDT", depth=1)
    assert book.apply(first) is Outcome.CHANGED
    assert book.apply(first) is Outcome.UNCHANGED         # the 3 s re-send with the same u


def test_a_skipped_update_id_is_a_gap(parse):
    lines = fixture_lines("bybit", "depth.jsonl")
    book = InstrumentBook("BTCUSDT", depth=5, keep_levels=50)
    book.apply(parse(lines[3], 0)[0])
    assert book.apply(parse(lines[5], 0)[0]) is Outcome.GAP
    assert book.gaps == 1 and book.state.name == "RESYNCING"


def test_control_messages(parse):
    lines = fixture_lines("bybit", "control_recv.jsonl")
    assert parse(lines[0], 0) == [Pong()]
    assert parse(lines[3], 0) == [Ack(channel="subscribe")]
    [err] = parse(lines[4], 0)
    assert isinstance(err, SubscribeError) and err.message == "Invalid topic: invalid.topic.BTCUSDT"


def test_subscribe_one_request_per_symbol_within_the_arg_limit():
    frames = bybit.build_subscribe([f"S{i}USDT" for i in range(6)], 5)
    assert len(frames) == 6
    assert frames[0] == '{"req_id":"S0USDT","op":"subscribe","args":["orderbook.1.S0USDT","orderbook.50.S0USDT"]}'
    assert all(frame.count("orderbook.") <= bybit.ARGS_PER_REQUEST for frame in frames)
    assert bybit.build_keepalive() == '{"op":"ping"}'


@pytest.mark.parametrize("decoder", DECODERS)
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(decoder, raw):
    parse = decoder_for(load_venue("bybit"), decoder).parse
    try:
        events = parse(raw, 0)
    except ParseError:
        return
    assert all(isinstance(e, (BookUpdate, Ack, Pong, SubscribeError)) for e in events)
