"""Kraken v2 parser and book checksum against tests/fixtures/kraken."""
from __future__ import annotations

import ast
import zlib
from decimal import Decimal
from functools import partial
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import (
    BBO,
    DEPTH,
    Ack,
    BookUpdate,
    InstrumentSpec,
    Liveness,
    Pong,
    RowStatus,
    SchemaDrift,
    SubscribeError,
    TradingStatus,
)
from pipeline.venues.kraken import VENUE as KRAKEN_VENUE
from pipeline.venues.kraken import wire as kraken
from tests.conftest import FIXTURES as SHARED
from tests.conftest import examples, fixture_lines, single_book_update
from tests.integration import test_quirks as quirks
from tests.property import test_sim_fuzz as fuzz
from tests.unit import test_sim_protocols as sim

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


# ccxt/ccxt ts/src/test/static/ws/kraken.json, watchOrderBook "spot orderbook depth 10" (BTC/USD, 2026-08-12),
# minified; the recording was re-serialized (63298 without ".0", 5.1e-05), as JSON serializers print numbers
BTC_SNAPSHOT = (
    '{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":['
    '{"price":63299.4,"qty":0.00209987},{"price":63298.7,"qty":5.1e-05},{"price":63298.1,"qty":0.05742569},'
    '{"price":63298,"qty":0.01534518},{"price":63297.8,"qty":0.504238},{"price":63297.7,"qty":0.78991808},'
    '{"price":63296.7,"qty":1.27336513},{"price":63295.8,"qty":0.56593064},{"price":63295.7,"qty":0.78994295},'
    '{"price":63295.5,"qty":5.1e-05}],"asks":['
    '{"price":63299.5,"qty":0.4388201},{"price":63303.3,"qty":0.05742569},{"price":63303.4,"qty":0.78984756},'
    '{"price":63305,"qty":5.1e-05},{"price":63305.4,"qty":0.03159716},{"price":63305.5,"qty":0.789821},'
    '{"price":63306,"qty":0.0789929},{"price":63307,"qty":0.31581476},{"price":63307.8,"qty":0.06},'
    '{"price":63308,"qty":0.00650419}],"checksum":1490766955,"timestamp":"2026-08-12T19:28:08.631028Z"}]}')
BTC_UPDATE = ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":63296.7,"qty":0},'
              '{"price":63294.6,"qty":0.31581476}],"asks":[],"checksum":1153589921,'
              '"timestamp":"2026-08-12T19:28:09.140448Z"}]}')

# the documented instrument message shape (docs.kraken.com/api/docs/websocket-v2/instrument), trimmed
INSTRUMENT = ('{"channel":"instrument","type":"snapshot","data":{"assets":[{"id":"USD","status":"enabled",'
              '"precision":4,"precision_display":2,"borrowable":true,"collateral_value":1.0,"margin_rate":0.025}],'
              '"pairs":[{"symbol":"BTC/USD","base":"BTC","quote":"USD","status":"online","qty_precision":8,'
              '"qty_increment":0.00000001,"price_precision":1,"cost_precision":5,"marginable":true,"has_index":true,'
              '"cost_min":0.5,"tick_size":0.1,"price_increment":0.1,"qty_min":0.0001},'
              '{"symbol":"ETH/USD","base":"ETH","quote":"USD","status":"online","qty_precision":8,'
              '"qty_increment":0.00000001,"price_precision":2,"cost_precision":5,"marginable":true,"has_index":true,'
              '"cost_min":0.5,"tick_size":0.01,"price_increment":0.01,"qty_min":0.001},'
              '{"symbol":"MATIC/USD","base":"MATIC","quote":"USD","status":"cancel_only","qty_precision":8,'
              '"qty_increment":0.00000001,"price_precision":4,"cost_precision":5,"marginable":false,'
              '"has_index":true,"cost_min":0.5,"tick_size":0.0001,"price_increment":0.0001,"qty_min":5}]}}')
SPECS = {s.symbol: s for s in kraken.parse(INSTRUMENT, 0)}


def new_book(symbol: str = "ETH/USD", spec: bool = True) -> InstrumentBook:
    book = InstrumentBook(symbol, depth=10, keep_levels=kraken.BOOK_LEVELS, checksum=KRAKEN_VENUE.checksum,
                          checksum_levels=kraken.CHECKSUM_LEVELS)
    if spec:
        book.apply(SPECS[symbol])
    return book


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
    assert kraken.checksum(u.bids_text, u.asks_text, 2, 8) == 2606672715
    # float text loses trailing zeros (1797.30 -> 1797.3); formatting to the pair's precision restores them
    assert kraken.checksum([(repr(p), repr(q)) for p, q in u.bids],
                           [(repr(p), repr(q)) for p, q in u.asks], 2, 8) == 2606672715


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
    # same number, shorter text: the same checksum (numbers are hashed at the pair's precision)
    book = new_book()
    assert book.apply(one(snap.replace('"qty":4.21870000', '"qty":4.2187'))) == Outcome.CHANGED


def test_book_truncates_to_ten_before_checksum():
    book = new_book()
    snap, upd = lines("book.jsonl")[2:4]
    assert book.apply(one(snap)) == Outcome.CHANGED
    # an ask inserted inside the book pushes 1797.49 out; Kraken sends no delete for it
    inserted = ("1797.26", "1.00000000")
    asks = sorted(ETH_ASKS_TEXT + [inserted], key=lambda lv: float(lv[0]))[:10]
    msg = orjson.loads(upd)
    msg["data"][0]["asks"] = []
    msg["data"][0]["checksum"] = kraken.checksum(ETH_BIDS_TEXT, asks, 2, 8)
    raw = orjson.dumps(msg).replace(b'"asks":[]', b'"asks":[{"price":1797.26,"qty":1.00000000}]')
    assert book.apply(one(raw)) == Outcome.CHANGED
    assert book.compose()[1][-1] == (1797.48, 3.11556555)


def test_docs_example_checksums_at_the_pair_precision():
    """The docs' MATIC/USD JSON lost trailing zeros: its checksums hold at 4 dp price / 8 dp qty."""
    snap, upd = (one(line) for line in lines("book.jsonl")[:2])
    assert snap.symbol == "MATIC/USD" and snap.bids_text[6] == ("0.566", "18097.1547")
    assert kraken.checksum(snap.bids_text, snap.asks_text, 4, 8) == snap.checksum == 2439117997
    assert kraken.checksum(snap.bids_text, snap.asks_text, 3, 8) != 2439117997
    assert (upd.bids, upd.asks, upd.checksum) == ([(0.5657, 1098.3947558)], [], 2114181697)
    book = new_book("MATIC/USD")
    assert book.apply(snap) is Outcome.CHANGED and book.apply(upd) is Outcome.CHANGED
    assert book.checksum_failures == 0
    assert book.state == RowStatus.HALTED and book.halted == "pair cancel_only"   # the pair cannot match


def test_shortest_and_exponent_numbers_checksum_at_the_pair_precision():
    """T1 on the ccxt BTC/USD recording: 63298 and 5.1e-05 hashed as 632980 / 5100 (1 dp, 8 dp)."""
    snap = one(BTC_SNAPSHOT)
    assert snap.bids_text[1] == ("63298.7", "5.1e-05") and snap.bids_text[3] == ("63298", "0.01534518")
    assert snap.bids[1] == (63298.7, 5.1e-05)
    raw_text_rule = zlib.crc32("".join(p.replace(".", "").lstrip("0") + q.replace(".", "").lstrip("0")
                                       for p, q in snap.asks_text + snap.bids_text).encode())
    assert raw_text_rule != 1490766955                   # what the wire-text rule did: never LIVE
    assert kraken.checksum(snap.bids_text, snap.asks_text, 1, 8) == 1490766955
    book = new_book("BTC/USD")
    assert book.apply(snap) is Outcome.CHANGED
    assert book.apply(one(BTC_UPDATE)) is Outcome.CHANGED
    assert book.checksum_failures == 0 and book.state == RowStatus.LIVE
    assert book.compose()[0][-1] == (63294.6, 0.31581476)


def test_rows_stay_syncing_until_the_precisions_are_known():
    book = new_book("BTC/USD", spec=False)
    assert book.apply(one(BTC_SNAPSHOT)) is Outcome.CHANGED
    assert book.state == RowStatus.SYNCING and book.checksum_failures == 0   # kept, not verified, not LIVE
    book.apply(one('{"channel":"ticker","type":"snapshot","data":[{"symbol":"BTC/USD","bid":63299.4,'
                   '"bid_qty":1.0,"ask":63299.5,"ask_qty":1.0,"timestamp":"2026-08-12T19:28:08.7Z"}]}'))
    assert book.state == RowStatus.SYNCING                 # not even through the ticker
    assert book.apply(SPECS["BTC/USD"]) is Outcome.STATUS
    # known now, the book not verified yet: the ticker stands in, one level
    assert book.state == RowStatus.LIVE and book.compose() == ([(63299.4, 1.0)], [(63299.5, 1.0)])
    assert book.apply(one(BTC_UPDATE)) is Outcome.CHANGED  # the first matching checksum
    assert book.state == RowStatus.LIVE and len(book.compose()[0]) == 10


def test_without_a_ticker_the_row_waits_for_a_verified_book():
    book = new_book("BTC/USD", spec=False)
    book.apply(one(BTC_SNAPSHOT))
    assert book.apply(SPECS["BTC/USD"]) is Outcome.IGNORED and book.state == RowStatus.SYNCING
    assert book.apply(one(BTC_UPDATE)) is Outcome.CHANGED and book.state == RowStatus.LIVE


def test_a_precision_change_asks_for_a_resubscribe():
    book = new_book("BTC/USD")
    book.apply(one(BTC_SNAPSHOT))
    assert book.state == RowStatus.LIVE
    assert book.apply(InstrumentSpec("BTC/USD", 1, 8, "online")) is Outcome.IGNORED      # same precisions
    assert book.apply(InstrumentSpec("BTC/USD", 2, 8, "online")) is Outcome.RESUBSCRIBE
    assert book.state == RowStatus.RESYNCING and book.compose() == ([], [])
    assert book.precision == (2, 8)


def test_instrument_channel():
    specs = kraken.parse(INSTRUMENT, 0)
    assert specs == [InstrumentSpec("BTC/USD", 1, 8, "online"), InstrumentSpec("ETH/USD", 2, 8, "online"),
                     InstrumentSpec("MATIC/USD", 4, 8, "cancel_only")]
    for broken in (INSTRUMENT.replace('"price_precision":1,', ''),
                   INSTRUMENT.replace('"qty_precision":8', '"qty_precision":"8"', 1),
                   INSTRUMENT.replace('"status":"online"', '"status":null', 1),
                   INSTRUMENT.replace('"type":"snapshot"', '"type":"x"')):
        with pytest.raises(ParseError) as exc:
            kraken.parse(broken, 0)
        assert exc.value.reason == "unknown_message"
    ack = ('{"method":"subscribe","req_id":79,"result":{"channel":"instrument","snapshot":true,"warnings":'
           '["tick_size is deprecated, use price_increment"]},"success":true,"time_in":"2023-09-26T16:49:20.962586Z",'
           '"time_out":"2023-09-26T16:49:20.962630Z"}')
    assert kraken.parse(ack, 0) == [Ack("", "instrument")]


# docs.kraken.com/api/docs/websocket-v2/instrument examples (copy in qiuham/crypto-api-docs, 2026-06-09), minified
DOCS_INSTRUMENT_SNAPSHOT = (
    '{"channel":"instrument","type":"snapshot","data":{"assets":[{"id":"USD","status":"enabled","precision":4,'
    '"precision_display":2,"borrowable":true,"collateral_value":1.0,"margin_rate":0.015},{"id":"BTC","status":'
    '"enabled","precision":10,"precision_display":5,"borrowable":true,"collateral_value":1.0,"margin_rate":0.01},'
    '{"id":"XRP","status":"enabled","precision":8,"precision_display":5,"borrowable":true,"collateral_value":0.0,'
    '"margin_rate":0.02}],"pairs":[{"symbol":"BTC/USD","base":"BTC","quote":"USD","status":"online",'
    '"qty_precision":8,"qty_increment":1e-08,"price_precision":1,"cost_precision":5,"marginable":true,'
    '"has_index":true,"cost_min":0.5,"margin_initial":0.2,"position_limit_long":250,"position_limit_short":200,'
    '"tick_size":0.1,"price_increment":0.1,"qty_min":0.0001},{"symbol":"MATIC/GBP","base":"MATIC","quote":"GBP",'
    '"status":"online","qty_precision":8,"qty_increment":1e-08,"price_precision":4,"cost_precision":6,'
    '"marginable":false,"has_index":true,"cost_min":0.43,"tick_size":0.0001,"price_increment":0.0001,'
    '"qty_min":4.0}]}}')
DOCS_INSTRUMENT_UPDATE = (
    '{"channel":"instrument","type":"update","data":{"assets":[{"id":"BTC","status":"enabled","precision":10,'
    '"precision_display":5,"borrowable":true,"collateral_value":1.0,"margin_rate":0.01}],"pairs":[]}}')


def test_instrument_docs_examples():
    assert kraken.parse(DOCS_INSTRUMENT_SNAPSHOT, 0) == [InstrumentSpec("BTC/USD", 1, 8, "online"),
                                                         InstrumentSpec("MATIC/GBP", 4, 8, "online")]
    assert kraken.parse(DOCS_INSTRUMENT_UPDATE, 0) == []          # an asset change only: nothing for the books


def test_pair_status_holds_and_releases_the_row():
    book = new_book("BTC/USD")
    book.apply(one(BTC_SNAPSHOT))
    assert book.apply(InstrumentSpec("BTC/USD", 1, 8, "maintenance")) is Outcome.STATUS
    assert book.state == RowStatus.HALTED and book.halted == "pair maintenance"
    assert book.apply(one(BTC_UPDATE)) is Outcome.CHANGED and book.state == RowStatus.HALTED
    assert book.apply(InstrumentSpec("BTC/USD", 1, 8, "online")) is Outcome.STATUS
    assert book.state == RowStatus.LIVE


def test_ticker_only_stands_in_while_the_book_is_not_synced():
    """W4: the checksummed book is the top of book; the ticker never overrides it."""
    book = new_book("BTC/USD")
    ticker = one('{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":63300.1,"bid_qty":1.0,'
                 '"ask":63300.2,"ask_qty":1.0,"last":63300.1,"timestamp":"2026-08-12T19:28:09.2Z"}]}')
    assert ticker.weak
    book.apply(ticker)
    assert book.compose() == ([(63300.1, 1.0)], [(63300.2, 1.0)]) and book.state == RowStatus.LIVE
    book.apply(one(BTC_SNAPSHOT))
    book.apply(ticker)
    assert book.compose()[0][0] == (63299.4, 0.00209987) and book.state == RowStatus.LIVE
    assert book.apply(one(BTC_UPDATE.replace("1153589921", "1"))) is Outcome.CHECKSUM
    book.apply(ticker)                                    # book discarded: the ticker stands in again
    assert book.compose() == ([(63300.1, 1.0)], [(63300.2, 1.0)]) and book.state == RowStatus.LIVE


def test_level_keys_in_any_order_keep_their_text():
    """The declaration reads a level by its keys: ``qty`` before ``price`` is the same level, same text."""
    u = one(b'{"channel":"book","type":"update","data":[{"symbol":"ETH/USD","bids":'
            b'[{"qty":1.00000000,"price":1797.10}],"asks":[],"checksum":1}]}')
    assert (u.bids, u.bids_text, u.checksum) == ([(1797.1, 1.0)], [("1797.10", "1.00000000")], 1)


# ---------------------------------------------------------------- the declarations (BookPush, TickerPush)
def _events_and_drift(raw):
    events = kraken.parse(raw, 0)
    drift = [e for e in events if isinstance(e, SchemaDrift)]
    return [e for e in events if not isinstance(e, SchemaDrift)], drift


def _same_updates(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.__class__ is y.__class__ is BookUpdate
        for name in BookUpdate.__slots__:
            assert getattr(x, name) == getattr(y, name), name
            assert type(getattr(x, name)) is type(getattr(y, name)), name


@pytest.mark.parametrize("name, line", [("book.jsonl", 2), ("book.jsonl", 3), ("ticker.jsonl", 0)])
@pytest.mark.parametrize("where", ["top", "data"])
def test_an_unknown_field_is_drift_with_the_same_events(name, line, where):
    raw = lines(name)[line]
    expected = kraken.parse(raw, 0)
    assert not any(isinstance(e, SchemaDrift) for e in expected)        # the real frame is exactly declared
    if where == "top":
        changed = raw.replace('"type":', '"new_field":{"a":[1,2]},"type":', 1)
    else:
        changed = raw.replace('{"symbol":', '{"new_field":1.5,"symbol":', 1)
    assert changed != raw
    events, drift = _events_and_drift(changed)
    _same_updates(events, expected)
    assert len(drift) == 1 and "new_field" in drift[0].detail
    assert drift[0].message == ("TickerPush" if name == "ticker.jsonl" else "BookPush")
    if where == "data":
        assert "$.data[0]" in drift[0].detail
    from_bytes, drift_from_bytes = _events_and_drift(changed.encode())
    _same_updates(from_bytes, expected)
    assert drift_from_bytes == drift


def test_an_unknown_field_in_a_level_is_drift():
    raw = lines("book.jsonl")[3].replace('"qty":1.56601318}', '"qty":1.56601318,"orders":3}')
    events, drift = _events_and_drift(raw)
    _same_updates(events, kraken.parse(lines("book.jsonl")[3], 0))
    assert len(drift) == 1 and "orders" in drift[0].detail and "asks[1]" in drift[0].detail


@pytest.mark.parametrize("bad", ['"1797.29"', '"1.0"', "null", "true", "[1797.29]", '{"v":1797.29}'])
@pytest.mark.parametrize("field", ["price", "qty"])
def test_a_level_number_of_the_wrong_type_is_refused(bad, field):
    good = lines("book.jsonl")[3]
    raw = good.replace('"price":1797.29', f'"price":{bad}') if field == "price" else \
        good.replace('"qty":0.00000000', f'"qty":{bad}')
    assert raw != good
    with pytest.raises(ParseError) as exc:
        kraken.parse(raw, 0)
    assert exc.value.reason == "unknown_message"


@pytest.mark.parametrize("broken, reason", [
    ('"price":1e999', "invalid_json"), ('"price":-1e400', "invalid_json"),        # orjson refuses infinity too
    ('"checksum":"x"', "unknown_message"), ('"symbol":5', "unknown_message"), ('"timestamp":5', "unknown_message"),
    ('"timestamp":"2025-13-06T09:17:26Z"', "unknown_message"), ('"type":"x"', "unknown_message"),
    ('"bids":null', "unknown_message"), ('"asks":[[1797.29,0.0]]', "unknown_message"),
    ('"data":{}', "unknown_message")])
def test_a_misshapen_book_is_refused(broken, reason):
    key = broken.split(":", 1)[0]
    good = lines("book.jsonl")[3]
    start = good.index(key + ":")
    # replace the value of the first occurrence of key (up to the next , or } or ] at depth 0)
    depth, end = 0, start + len(key) + 1
    while end < len(good) and not (depth == 0 and good[end] in ",}"):
        depth += good[end] in "[{"
        depth -= good[end] in "]}"
        end += 1
    raw = good[:start] + broken + good[end:]
    with pytest.raises(ParseError) as exc:
        kraken.parse(raw, 0)
    assert exc.value.reason == reason


def test_the_ticker_declaration_refuses_wrong_types():
    good = lines("ticker.jsonl")[1]
    no_bid = one(good.replace('"bid":0.10025,"bid_qty":740.0,', '"bid":null,'))
    assert no_bid.bids == [] and no_bid.asks == [(0.10035, 740.0)]          # no bid: an empty side, as before
    for bad in (good.replace('"bid":0.10025', '"bid":true'), good.replace('"bid_qty":740.0', '"bid_qty":null'),
                good.replace('"bid_qty":740.0,', ''), good.replace('"symbol":"ALGO/USD"', '"symbol":1'),
                good.replace('"timestamp":"2023-09-25T09:04:31.742648Z"', '"timestamp":"x"'),
                good.replace('"type":"update"', '"type":"delete"')):
        assert bad != good
        with pytest.raises(ParseError) as exc:
            kraken.parse(bad, 0)
        assert exc.value.reason == "unknown_message"
    with pytest.raises(ParseError) as exc:
        kraken.parse(good.replace('"bid":0.10025', '"bid":1e999'), 0)
    assert exc.value.reason == "invalid_json"                                 # as orjson said before


@pytest.mark.parametrize("price, qty", [("63298.10", "5.1e-05"), ("63298", "0.00000000"), ("6.32981E4", "1e-8"),
                                        ("-0", "0.10000000")])
def test_level_text_is_kept_as_written(price, qty):
    raw = ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":%s,"qty":%s}],'
           '"asks":[{"price": %s , "qty" :%s}],"checksum":7,"timestamp":"2026-08-12T19:28:09.140448Z"}]}'
           % (price, qty, price, qty))
    for frame in (raw, raw.encode()):
        u = one(frame)
        assert u.bids_text == u.asks_text == [(price, qty)]
        assert type(u.bids_text[0][0]) is str
        assert u.bids == u.asks == [(float(price), float(qty))]


@pytest.mark.parametrize("numbers", [
    ["63298.10", "5.1e-05", "63298", "0.00000000"], ["1797.30", "139.09783403"] * 10, ["-0", "1", "2", "-0.0"],
    ["-1797.29", "1"], ["1E+2", "99999999999999999999", "1e-400", "0.1000000000000000055511151231257827"],
    ["2.2250738585072011e-308", "1.7976931348623157e308"]])
def test_a_side_read_in_one_go_equals_one_number_at_a_time(numbers):
    """_side reads a side's numbers as one array; _side_each (float() per number) is the reference."""
    levels = ",".join('{"price":%s,"qty":%s}' % (numbers[i], numbers[i + 1]) for i in range(0, len(numbers), 2))
    raw = '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[%s]}]}' % levels
    side = kraken.BOOK.decode(raw)[0].data[0].bids
    texts, floats = kraken._side(side)
    assert (texts, floats) == kraken._side_each(side)
    assert repr(floats) == repr([(float(p), float(q)) for p, q in texts])          # -0.0 keeps its sign
    assert texts == [(numbers[i], numbers[i + 1]) for i in range(0, len(numbers), 2)]


def test_a_push_not_written_channel_first_still_parses():
    """The fast test is the frame's first bytes; any other layout reaches the same declaration."""
    raw = lines("book.jsonl")[3]
    moved = raw.replace('{"channel":"book","type":"update",', '{"type":"update","channel":"book",')
    spaced = raw.replace('{"channel":"book",', '{ "channel" : "book" ,')
    ticker = lines("ticker.jsonl")[0].replace('{"channel":"ticker","type":"snapshot",',
                                              '{"type":"snapshot","channel":"ticker",')
    for frame, original in ((moved, raw), (spaced, raw), (ticker, lines("ticker.jsonl")[0])):
        _same_updates(kraken.parse(frame, 0), kraken.parse(original, 0))
        _same_updates(kraken.parse(memoryview(frame.encode()), 0), kraken.parse(original, 0))
        _same_updates(kraken.parse(bytearray(frame.encode()), 0), kraken.parse(original, 0))


# ---------------------------------------------------------------- control
def test_control_messages():
    ack, ack2, pong, heartbeat, status = lines("control_recv.jsonl")
    assert kraken.parse(ack, 0) == [Ack("MATIC/USD", "book")]
    assert kraken.parse(ack2, 0) == [Ack("ETH/USD", "book")]
    assert kraken.parse(pong, 0) == [Pong()]
    assert kraken.parse(heartbeat, 0) == [Liveness(None)]   # sent only when nothing else was: books current
    online = TradingStatus(None, True, "online")
    assert kraken.parse(status, 0) == [online]          # connection_id 13834774380200032777 > 2**63
    huge = status.replace("13834774380200032777", str(2 ** 70))
    assert kraken.parse(huge.encode(), 0) == [online]
    for system in ("maintenance", "cancel_only", "post_only", "limit_only"):
        assert kraken.parse(status.replace('"online"', f'"{system}"'), 0) == [TradingStatus(None, False, system)]
    with pytest.raises(ParseError):
        kraken.parse('{"channel":"status","type":"update","data":[{"api_version":"v2"}]}', 0)
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
    instrument, ticker, book = kraken.build_subscribe(["ALGO/USD", "MATIC/USD"], 10)
    assert orjson.loads(instrument) == {"method": "subscribe", "params": {"channel": "instrument", "snapshot": True}}
    assert book == '{"method":"subscribe","params":{"channel":"book","symbol":["ALGO/USD","MATIC/USD"],"depth":10}}'
    assert orjson.loads(book) == {**sent[0], "params": {**sent[0]["params"], "depth": 10}}
    ticker_only_algo = kraken.build_subscribe(["ALGO/USD"], 5)[1]
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
    assert KRAKEN_VENUE.keepalive_interval_s == 20.0


def test_module_contract():
    tree = ast.parse(Path(kraken.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"asyncio", "websockets", "socket", "time", "multiprocessing"}
    assert (kraken.NAME, kraken.BOOK_LEVELS, kraken.CHECKSUM_LEVELS) == ("kraken", 10, 10)
    assert KRAKEN_VENUE.checksum is kraken.checksum and KRAKEN_VENUE.taker_fee_bps == 40.0


# ---------------------------------------------------------------- fuzz
@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=512))
def test_parse_arbitrary_bytes_raises_only_parse_error(raw):
    try:
        kraken.parse(raw, 0)
    except ParseError:
        pass


_SAMPLES = [line for name in ("book.jsonl", "ticker.jsonl", "control_recv.jsonl") for line in lines(name)] + [
    INSTRUMENT, BTC_SNAPSHOT, BTC_UPDATE]


@settings(max_examples=examples(300), deadline=None)
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
        elif isinstance(event, InstrumentSpec):
            assert 0 <= event.price_precision <= 18 and 0 <= event.qty_precision <= 18
            new_book().apply(event)


def test_precision_inferred_from_captured_snapshots():
    """For captures without the instrument channel only: the most decimals shown, which may only err low."""
    eth = one(lines("book.jsonl")[2])
    assert kraken.infer_precision(eth.bids_text, eth.asks_text) == (2, 8)
    btc = one(BTC_SNAPSHOT)
    assert kraken.infer_precision(btc.bids_text, btc.asks_text) == (1, 8)      # 5.1e-05 shows 6, others 8
    matic = one(lines("book.jsonl")[0])
    assert kraken.infer_precision(matic.bids_text, matic.asks_text) == (4, 8)
    # a capture's text cannot ask for more decimals than a pair may declare (1e-999: a thousand-digit checksum)
    assert kraken.infer_precision([("1e-999", "1")], [("2", "1e-40")]) == (kraken.MAX_PRECISION, kraken.MAX_PRECISION)


# ------------------------------------------------------ the checksum's formatted numbers (issue 24, finding 12)
def _decimal_digits(text: str, decimals: int) -> str:
    return format(Decimal(text), f".{decimals}f").replace(".", "").lstrip("0")


@settings(max_examples=examples(400), deadline=None)
@given(st.one_of(st.decimals(min_value=0, max_value=10 ** 9, allow_nan=False, allow_infinity=False, places=10).map(str),
                 st.floats(min_value=0, max_value=1e12, allow_nan=False).map(repr),
                 st.from_regex(r"[0-9]{1,12}(\.[0-9]{0,20})?", fullmatch=True)),
       st.integers(0, kraken.MAX_PRECISION))
def test_digits_without_decimal_are_what_decimal_formats(text, decimals):
    """Kraken's plain text (digits, at most ``decimals`` of them after the point) is padded, not parsed; every
    other form (an exponent, rounding, a sign) goes through Decimal: the same digits either way."""
    assert kraken._digits(text, decimals) == _decimal_digits(text, decimals)


@pytest.mark.parametrize("text", ["-1.5", "+2", "1_000.25", " 7", "\u0663.5", "1E+2", "0.125", "5.", "0"])
def test_digits_of_unusual_text_are_what_decimal_formats(text):
    assert kraken._digits(text, 2) == _decimal_digits(text, 2)


def test_the_checksum_cache_is_bounded_and_counts_its_clears(monkeypatch):
    """At most ``DIGITS_CACHE_SIZE`` numbers are kept over all precisions; a full cache is emptied and counted,
    and what it gives is what formatting each number gives."""
    cache = kraken._DigitsCache()
    monkeypatch.setattr(kraken, "DIGITS", cache)
    monkeypatch.setattr(kraken, "DIGITS_CACHE_SIZE", 50)
    for n in range(200):
        bids = [(f"{3000 - n - i}.5", f"{n}.{i:08d}") for i in range(12)]
        asks = [(f"{3001 + n + i}", f"{i}e-0{n % 9 + 1}") for i in range(12)]
        for dp in (1, 4):
            expected = zlib.crc32("".join(_decimal_digits(p, dp) + _decimal_digits(q, 8)
                                          for p, q in asks[:10] + bids[:10]).encode("ascii"))
            assert kraken.checksum(bids, asks, dp, 8) == expected
            assert cache.size <= 50
    assert cache.clears >= 50                    # new numbers every round: the cache was emptied again and again
    assert sum(len(table) for table in cache.tables) == cache.size


def test_a_precision_no_pair_has_is_formatted_and_not_kept(monkeypatch):
    cache = kraken._DigitsCache()
    monkeypatch.setattr(kraken, "DIGITS", cache)
    dp = kraken.MAX_PRECISION + 1
    expected = zlib.crc32("".join(_decimal_digits(p, dp) + _decimal_digits(q, 8)
                                  for p, q in ETH_ASKS_TEXT + ETH_BIDS_TEXT).encode("ascii"))
    assert kraken.checksum(ETH_BIDS_TEXT, ETH_ASKS_TEXT, dp, 8) == expected
    for wrong in (-1, True, 2.0):                  # as before the cache: not a format
        with pytest.raises(ValueError):
            kraken.checksum(ETH_BIDS_TEXT, ETH_ASKS_TEXT, wrong, 8)
    assert cache.size == 0


# ---------------------------------------------------------------- the simulator's Kraken (sim-fidelity M1-M8)
def test_kraken_sim_says_online_on_connect_and_gives_the_pair_spec_on_subscribe():
    venue, proto, symbol = sim.setup("kraken")
    assert sim.parse_all(venue, proto.on_connect()) == [TradingStatus(None, True, "online")]
    venue, proto, symbol = sim.setup("kraken")
    assert sim.subscribe(venue, proto, symbol, sim.Sequence()) == [InstrumentSpec(symbol, sim.DECIMALS, 8, "online")]


def test_kraken_status_ping_heartbeat_and_checksum_text():
    venue, proto, symbol = sim.setup("kraken")
    status = orjson.loads(proto.on_connect()[0])
    assert status["channel"] == "status" and status["data"][0]["connection_id"] > 2 ** 63
    pong = proto.on_message('{"method":"ping","req_id":101}')
    assert venue.parse(pong[0], 0) == [Pong()] and orjson.loads(pong[0])["req_id"] == 101
    assert venue.parse(proto.on_message(venue.build_keepalive())[0], 0) == [Pong()]
    assert proto.keepalive(sim.T0) == []                 # not subscribed: no heartbeat
    for frame in venue.build_subscribe([symbol], sim.SHOWN):
        proto.on_message(frame)
    assert proto.keepalive(sim.T0) == []                 # the acks were sent in the last second
    assert sim.parse_all(venue, proto.keepalive(sim.T0)) == [Liveness(None)]
    frame = proto.render(symbol, DEPTH, [(3200.1, 0.5)], [(3200.2, 1.25)], sim.T0)[0]
    assert '{"price":3200.10,"qty":0.50000000}' in frame and '"timestamp":"2026-09-21T' in frame
    update = venue.parse(frame, 0)[0]
    assert update.checksum == venue.checksum(update.bids_text, update.asks_text, sim.DECIMALS, 8)
    assert proto.keepalive(sim.T0) == []                 # book data went out: no heartbeat


def test_kraken_trade_statistics_and_event_trigger():
    _, proto, symbol, state = sim.served("kraken")
    proto.on_connect()
    ack = orjson.loads(proto.on_message(orjson.dumps({"method": "subscribe", "params": {
        "channel": "ticker", "symbol": [symbol]}}))[0])
    assert ack["result"]["event_trigger"] == "trades"
    proto.on_message(orjson.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": [symbol]}}))
    frames = sim.step(proto, state, 1, sim.T0)
    ticker = next(f for f in frames if f["channel"] == "ticker")["data"][0]
    assert {"volume", "vwap", "low", "high", "change", "change_pct"} <= set(ticker)
    assert next(f for f in frames if f["channel"] == "trade")["type"] == "snapshot"
    state.tape.trade_chance = 0.0                            # no trades: a trades-triggered ticker stays quiet
    assert [f for f in sim.step(proto, state, 2, sim.T0 + 20) if f["channel"] == "ticker"] == []
    refused = orjson.loads(proto.on_message(orjson.dumps({"method": "subscribe", "params": {
        "channel": "ohlc", "symbol": [symbol]}}))[0])
    assert refused["success"] is False and "ohlc" in refused["error"]


# ---------------------------------------------------------------- Kraken's status words over a socket (W3)
@pytest.mark.integration
def test_kraken_says_online_on_connect_gives_pair_specs_and_halts_every_book_until_online():
    async def scenario():
        async with quirks.Venue("kraken") as v:
            await v.all_live()
            assert v.events[0] == TradingStatus(None, True, "online")       # sent on connect
            specs = [e for e in v.events if isinstance(e, InstrumentSpec)]
            assert {(s.symbol, s.qty_precision, s.status) for s in specs} == {
                (symbol, 8, "online") for symbol in v.symbols.values()}
            for system in ("maintenance", "cancel_only"):
                await v.server.announce_status(system)
                await quirks.until(lambda: TradingStatus(None, False, system) in v.events, 5, system)
                await quirks.until(lambda: all(v.state(i) == RowStatus.HALTED for i in v.instruments), 5, "halted")
                assert all(b.halted == f"venue {system}" for b in v.books.values())
            await v.server.announce_status("online")
            await v.all_live()
    quirks.run(scenario())


@pytest.mark.integration
def test_kraken_pair_status_and_precision_change():
    async def scenario():
        async with quirks.Venue("kraken") as v:
            await v.all_live()
            halted, other = v.instruments
            await v.server.announce_pair(v.symbols[halted], "cancel_only")
            await quirks.until(lambda: v.state(halted) == RowStatus.HALTED, 5, "the pair halted")
            assert v.state(other) == RowStatus.LIVE
            await v.server.announce_pair(v.symbols[halted], "online")
            await v.all_live()
            book = v.books[v.symbols[other]]
            dp = book.precision[0]
            await v.server.announce_pair(v.symbols[other], "online", price_precision=dp + 1)
            await quirks.until(lambda: book.precision == (dp + 1, 8), 5, "the new precision")
            await v.all_live()                           # resubscribed, rebuilt, checksums at the new precision
            assert book.checksum_failures == 0
            await v.settled_tops_match()
    quirks.run(scenario())


# ---------------------------------------------------------------- fuzzing the simulator with Kraken's request shapes
def _fuzz_requests():
    name = fuzz.names(["ticker", "book", "trade", "instrument", "ohlc", "level3", ""])
    symbol, anything = fuzz.symbols("kraken"), fuzz.json_values
    return fuzz.shaped(st.fixed_dictionaries({
        "method": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping"]), anything),
        "params": st.one_of(st.fixed_dictionaries(
            {"channel": name, "symbol": st.one_of(st.lists(symbol, max_size=3), anything),
             "depth": st.one_of(st.sampled_from([10, 25, 7]), anything),
             "event_trigger": st.one_of(st.sampled_from(["bbo", "trades"]), anything)}), anything),
        "req_id": anything}))


test_sim_never_raises_on_kraken_requests = fuzz.fuzz("kraken", _fuzz_requests())
