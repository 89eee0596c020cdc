"""Kraken v2 parser and book checksum against shared/fixtures/kraken."""
from __future__ import annotations

from functools import partial

import ast
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.board.layout import RowStatus
from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, Ack, BookUpdate, Heartbeat, Notice, Pong, SubscribeError
from pipeline.venues import kraken
from tests.conftest import FIXTURES as SHARED, fixture_lines, single_book_update

FIXTURES = SHARED / "kraken"

ETH_BIDS_TEXT = [("1797.24", "0.43393711"), ("1797.18", "139.10616255"), ("1797.13", "139.10995927"),
                 ("1797.12", "0.80386470"), ("1797.07", "139.11517673"), ("1796.98", "5.22282896"),
                 ("1796.97", "12.17138476"), ("1796.95", "139.69390939"), ("1796.88", "4.21870000"),
                 ("1796.85", "1.22932317")]
ETH_ASKS_TEXT = [("1797.25", "1.40355852"), ("1797.28", "10.82400000"), ("1797.29", "139.09899871"),
                 ("1797.30", "139.09783403"), ("1797.37", "139.09216827"), ("1797.41", "5.24638952"),
                 ("1797.42", "0.01780330"), ("1797.46", "33.05700000"), ("1797.48", "3.11556555"),
                 ("1797.49", "139.49306646")]


lines = partial(fixture_lines, "kraken")


one = partial(single_book_update, kraken)


def new_book() -> InstrumentBook:
    return InstrumentBook("ETH/USD", depth=10, keep_levels=kraken.BOOK_LEVELS, checksum=kraken.CHECKSUM,
                          checksum_levels=kraken.CHECKSUM_LEVELS)


# ---------------------------------------------------------------- ticker
def test_ticker_as_bbo():
    snap, upd = (one(line) for line in lines("ticker.jsonl"))
    assert (snap.symbol, snap.channel, snap.snapshot) == ("ALGO/USD", BBO, True)
    assert snap.bids == [(0.10025, 740.0)] and snap.asks == [(0.10036, 1361.44813783)]
    assert snap.exch_ts_ms == 1695632671742          # 2023-09-25T09:04:31.742648Z
    assert (upd.snapshot, upd.bids, upd.asks) == (True, [(0.10025, 740.0)], [(0.10035, 740.0)])


# ---------------------------------------------------------------- book text and checksum
def test_book_snapshot_keeps_wire_text():
    u = one(lines("book.jsonl")[2].encode())
    assert (u.symbol, u.channel, u.snapshot) == ("ETH/USD", DEPTH, True)
    assert u.bids_text == ETH_BIDS_TEXT and u.asks_text == ETH_ASKS_TEXT
    assert u.bids == [(float(p), float(q)) for p, q in ETH_BIDS_TEXT]
    assert u.asks == [(float(p), float(q)) for p, q in ETH_ASKS_TEXT]
    assert (u.checksum, u.exch_ts_ms, u.seq, u.prev_seq) == (2606672715, 0, None, None)   # no timestamp
    assert kraken.checksum(u.bids_text, u.asks_text) == 2606672715
    # the trap: float text loses trailing zeros (1797.30 -> 1797.3) and breaks the checksum
    assert kraken.checksum([(repr(p), repr(q)) for p, q in u.bids],
                           [(repr(p), repr(q)) for p, q in u.asks]) != 2606672715


def test_book_update_text():
    u = one(lines("book.jsonl")[3])
    assert (u.symbol, u.snapshot, u.bids, u.bids_text) == ("ETH/USD", False, [], [])
    assert u.asks == [(1797.29, 0.0), (1797.52, 1.56601318)]
    assert u.asks_text == [("1797.29", "0.00000000"), ("1797.52", "1.56601318")]
    assert (u.checksum, u.exch_ts_ms) == (3329440863, 1746523046208)   # 2025-05-06T09:17:26.208075Z


def test_real_book_checksums_through_shared_book():
    book = new_book()
    snap, upd = lines("book.jsonl")[2:4]
    assert book.apply(one(snap)) == Outcome.CHANGED
    assert book.apply(one(upd)) == Outcome.CHANGED
    assert book.checksum_failures == 0 and book.state == RowStatus.LIVE
    bids, asks = book.compose()
    assert bids == [(float(p), float(q)) for p, q in ETH_BIDS_TEXT]
    # 1797.29 deleted, 1797.52 inserted at the bottom: still 10 levels
    assert asks == [(float(p), float(q)) for p, q in ETH_ASKS_TEXT if p != "1797.29"] + [(1797.52, 1.56601318)]


def test_tampered_quantity_fails_the_checksum():
    snap, upd = lines("book.jsonl")[2:4]
    book = new_book()
    assert book.apply(one(snap)) == Outcome.CHANGED
    assert book.apply(one(upd.replace("1.56601318", "1.56601319"))) == Outcome.CHECKSUM
    assert book.checksum_failures == 1 and book.state == RowStatus.RESYNCING
    # same number, different text: still a mismatch (the text is what Kraken hashes)
    book = new_book()
    assert book.apply(one(snap.replace('"qty":4.21870000', '"qty":4.2187'))) == Outcome.CHECKSUM


def test_book_truncates_to_ten_before_checksum():
    book = new_book()
    snap, upd = lines("book.jsonl")[2:4]
    assert book.apply(one(snap)) == Outcome.CHANGED
    # an ask inserted inside the book pushes 1797.49 out; Kraken sends no delete for it
    inserted = ("1797.26", "1.00000000")
    asks = sorted(ETH_ASKS_TEXT + [inserted], key=lambda lv: float(lv[0]))[:10]
    msg = orjson.loads(upd)
    msg["data"][0]["asks"] = []
    msg["data"][0]["checksum"] = kraken.checksum(ETH_BIDS_TEXT, asks)
    raw = orjson.dumps(msg).replace(b'"asks":[]', b'"asks":[{"price":1797.26,"qty":1.00000000}]')
    assert book.apply(one(raw)) == Outcome.CHANGED
    assert book.compose()[1][-1] == (1797.48, 3.11556555)


def test_docs_example_needs_padding():
    """The docs' MATIC/USD JSON lost trailing zeros: only re-padded text reproduces its checksums."""
    snap, upd = (one(line) for line in lines("book.jsonl")[:2])
    assert snap.symbol == "MATIC/USD" and snap.bids_text[6] == ("0.566", "18097.1547")
    assert kraken.checksum(snap.bids_text, snap.asks_text) != 2439117997

    def pad(levels):
        return [(f"{float(p):.4f}", f"{float(q):.8f}") for p, q in levels]

    assert kraken.checksum(pad(snap.bids_text), pad(snap.asks_text)) == snap.checksum == 2439117997
    assert (upd.bids, upd.asks, upd.checksum) == ([(0.5657, 1098.3947558)], [], 2114181697)
    bids = pad(snap.bids_text[:9] + upd.bids_text)
    assert kraken.checksum(bids, pad(snap.asks_text)) == 2114181697


def test_level_text_in_unexpected_layout_is_refused():
    with pytest.raises(ParseError) as exc:
        kraken.parse(b'{"channel":"book","type":"update","data":[{"symbol":"ETH/USD","bids":'
                     b'[{"qty":1.0,"price":1797.1}],"asks":[],"checksum":1}]}', 0)
    assert exc.value.reason == "unknown_message"


# ---------------------------------------------------------------- control
def test_control_messages():
    ack, ack2, pong, heartbeat, status = lines("control_recv.jsonl")
    assert kraken.parse(ack, 0) == [Ack("MATIC/USD", "book")]
    assert kraken.parse(ack2, 0) == [Ack("ETH/USD", "book")]
    assert kraken.parse(pong, 0) == [Pong()]
    assert kraken.parse(heartbeat, 0) == [Heartbeat()]
    assert kraken.parse(status, 0) == [Heartbeat()]          # connection_id 13834774380200032777 > 2**63
    huge = status.replace("13834774380200032777", str(2 ** 70))
    assert kraken.parse(huge.encode(), 0) == [Heartbeat()]
    assert kraken.parse(status.replace('"online"', '"maintenance"'), 0) == [Notice("system status maintenance")]
    unsub = b'{"method":"unsubscribe","result":{"channel":"book","depth":10,"symbol":"ETH/USD"},"success":true}'
    assert kraken.parse(unsub, 0) == []


def test_subscribe_errors():
    refused = (b'{"error":"Currency pair not supported XBT/USD","method":"subscribe","req_id":1,'
               b'"success":false,"symbol":"XBT/USD","time_in":"2023-09-24T14:10:23.799685Z"}')
    assert kraken.parse(refused, 0) == [SubscribeError("Currency pair not supported XBT/USD", "XBT/USD")]
    no_symbol = b'{"error":"Currency pair not supported FOO/BAR","method":"subscribe","success":false}'
    assert kraken.parse(no_symbol, 0) == [SubscribeError("Currency pair not supported FOO/BAR", "FOO/BAR")]


def test_build_subscribe_matches_docs_shapes():
    sent = [orjson.loads(line) for line in lines("control_sent.jsonl")]
    assert kraken.native_symbol("BTC/USD") == "BTC/USD"
    ticker, book = kraken.build_subscribe(["ALGO/USD", "MATIC/USD"], 10)
    assert book == '{"method":"subscribe","params":{"channel":"book","symbol":["ALGO/USD","MATIC/USD"],"depth":10}}'
    assert orjson.loads(book) == {**sent[0], "params": {**sent[0]["params"], "depth": 10}}
    ticker_only_algo = kraken.build_subscribe(["ALGO/USD"], 5)[0]
    assert ticker_only_algo == '{"method":"subscribe","params":{"channel":"ticker","symbol":["ALGO/USD"],' \
                               '"event_trigger":"bbo"}}'
    assert orjson.loads(ticker_only_algo) == {**sent[1], "params": {**sent[1]["params"], "event_trigger": "bbo"}}
    assert kraken.build_resubscribe("ETH/USD", 5) == [
        '{"method":"unsubscribe","params":{"channel":"book","symbol":["ETH/USD"],"depth":10}}',
        '{"method":"subscribe","params":{"channel":"book","symbol":["ETH/USD"],"depth":10}}']


def test_keepalive():
    first = orjson.loads(kraken.build_keepalive())
    assert set(first) == set(orjson.loads(lines("control_sent.jsonl")[2])) == {"method", "req_id"}
    assert first["method"] == "ping" and isinstance(first["req_id"], int)
    assert kraken.parse('{"method":"pong","req_id":1,"time_in":"2023-09-24T14:10:23.799685Z",'
                        '"time_out":"2023-09-24T14:10:23.799703Z"}', 0) == [Pong()]
    assert kraken.KEEPALIVE_INTERVAL_S == 20.0


def test_module_contract():
    tree = ast.parse(Path(kraken.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"asyncio", "websockets", "socket", "time", "multiprocessing"}
    assert (kraken.NAME, kraken.BOOK_LEVELS, kraken.CHECKSUM_LEVELS) == ("kraken", 10, 10)
    assert kraken.CHECKSUM is kraken.checksum and kraken.DEFAULT_TAKER_FEE_BPS == 40.0


# ---------------------------------------------------------------- fuzz
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_parse_arbitrary_bytes_raises_only_parse_error(raw):
    try:
        kraken.parse(raw, 0)
    except ParseError:
        pass


_SAMPLES = [line for name in ("book.jsonl", "ticker.jsonl", "control_recv.jsonl") for line in lines(name)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_SAMPLES), st.integers(0, 2000), st.integers(0, 40), st.binary(max_size=8))
def test_parse_mutated_fixture_raises_only_parse_error(line, at, cut, insert):
    raw = line.encode()
    at %= len(raw)
    try:
        events = kraken.parse(raw[:at] + insert + raw[at + cut:], 0)
    except ParseError:
        return
    for event in events:                     # whatever parses must be usable by the book
        if isinstance(event, BookUpdate) and event.channel == DEPTH:
            assert len(event.bids_text) == len(event.bids) and len(event.asks_text) == len(event.asks)
            new_book().apply(event)
