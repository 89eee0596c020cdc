"""Each venue's trading rules, parsed from its public reference data (tests/fixtures/<venue>/, provenance in the
folder's README), to exact Decimal values; a malformed response is a ParseError naming what is wrong."""
from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import orjson
import pytest

from pipeline.errors import ParseError
from pipeline.model import InstrumentRules, RuleChange
from pipeline.venues import VENUES, load_venue
from pipeline.venues._common import ReferenceData

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(venue: str, name: str = "reference_data.json") -> bytes:
    return (FIXTURES / venue / name).read_bytes()


def rules_of(venue: str, raw) -> dict[str, InstrumentRules]:
    parsed = load_venue(venue).reference_data.parse(raw)
    by_symbol = {r.symbol: r for r in parsed}
    assert len(by_symbol) == len(parsed)
    return by_symbol


def rules(venue, symbol, tick, step, min_qty, max_qty, min_notional, max_notional, trading, status, upcoming=()):
    return InstrumentRules(venue, symbol, D(tick), D(step), D(min_qty), None if max_qty is None else D(max_qty),
                           D(min_notional), None if max_notional is None else D(max_notional), trading, status,
                           upcoming)


def test_every_venue_record_names_its_reference_data():
    for name in VENUES:
        ref = load_venue(name).reference_data
        assert isinstance(ref, ReferenceData), name
        assert ref.doc.startswith("https://") and callable(ref.parse), name
        assert ref.transport in ("rest", "websocket"), name


def test_binance_exchange_info():
    got = rules_of("binance", fixture("binance"))
    assert got["BTCBUSD"] == rules("binance", "BTCBUSD", "0.01", "0.00001", "0.00001", "9000", "10", None, True,
                                   "TRADING")
    assert got["ETHBUSD"] == rules("binance", "ETHBUSD", "0.01", "0.0001", "0.0001", "90000", "10", None, True,
                                   "TRADING")
    # the NOTIONAL filter gives both bounds (its applyMinToMarket false concerns MARKET orders only)
    assert got["ETHBTC"] == rules("binance", "ETHBTC", "0.000001", "0.001", "0.001", "100000", "10", "10000", True,
                                  "TRADING")
    assert got["BNBBTC"].trading is False and got["BNBBTC"].status == "BREAK"
    assert got["BNBBTC"].min_notional == 0 and got["BNBBTC"].max_notional is None   # no notional filter at all
    # exact: the wire text, never a float
    assert str(got["BTCBUSD"].tick) == "0.01000000" and str(got["ETHBTC"].tick) == "0.00000100"


def test_binance_spot_trading_not_allowed_is_not_trading():
    raw = fixture("binance").replace(b'"isSpotTradingAllowed": true', b'"isSpotTradingAllowed": false', 1)
    got = rules_of("binance", raw)
    assert got["BTCBUSD"].trading is False and got["BTCBUSD"].status == "TRADING"
    assert got["ETHBUSD"].trading is True


def test_bybit_instruments_info_with_min_order_qty():
    got = rules_of("bybit", fixture("bybit"))
    # maxLimitOrderQty (limit orders) is the max; maxOrderAmt is deprecated and "no longer checked"
    assert got["BTCUSDT"] == rules("bybit", "BTCUSDT", "0.1", "0.000001", "0.000011", "83", "5", None, True,
                                   "Trading")
    # the 2023 docs' ETHUSDT: status "1" is not "Trading"; no maxLimitOrderQty, so maxOrderQty bounds
    assert got["ETHUSDT"] == rules("bybit", "ETHUSDT", "0.01", "0.00001", "0.0005", "100000000", "1", None, False,
                                   "1")


def test_bybit_instruments_info_without_min_order_qty():
    raw = orjson.loads(fixture("bybit"))
    for inst in raw["result"]["list"]:
        del inst["lotSizeFilter"]["minOrderQty"]          # deprecated: responses drop it
    del raw["result"]["list"][0]["lotSizeFilter"]["maxLimitOrderQty"]
    got = rules_of("bybit", orjson.dumps(raw))
    assert got["BTCUSDT"].min_qty == 0 and got["BTCUSDT"].min_notional == D("5")
    assert got["BTCUSDT"].max_qty == D("83")                # the deprecated maxOrderQty when nothing newer is sent
    assert got["ETHUSDT"].min_qty == 0


def test_bybit_error_answer():
    with pytest.raises(ParseError) as exc:
        rules_of("bybit", b'{"retCode":10001,"retMsg":"params error: category invalid","result":{},"time":1}')
    assert exc.value.reason == "bad_reference_data"
    assert "10001" in str(exc.value) and "category invalid" in str(exc.value)


def test_okx_instruments():
    got = rules_of("okx", fixture("okx"))
    change = RuleChange("tickSz", D("0.0001"), 1704876947000)
    assert got["BTC-USDT"] == rules("okx", "BTC-USDT", "0.1", "0.00000001", "0.00001", "9999999999", "0",
                                    "1000000", True, "live", (change,))
    assert got["ETH-USDT"] == rules("okx", "ETH-USDT", "0.01", "0.000001", "0.0001", "999999999999", "0",
                                    "20000000", True, "live")
    assert got["SOL-USDT"].min_qty == D("0.001") and got["SOL-USDT"].tick == D("0.01")
    assert got["OKB-USDT"].trading is False and got["OKB-USDT"].status == "suspend"


def test_okx_instruments_channel_push_and_upcoming_changes():
    got = rules_of("okx", fixture("okx", "instruments_push.json"))
    assert list(got) == ["BTC-USDT"]
    assert got["BTC-USDT"].upcoming == (RuleChange("tickSz", D("0.0001"), 1704876947000),)
    raw = orjson.loads(fixture("okx", "instruments_push.json"))
    raw["data"][0]["upcChg"] = [{"param": "minSz", "newValue": "0.0001", "effTime": "1704880000000"},
                                {"param": "tickSz", "newValue": "0.01", "effTime": "1704870000000"}]
    raw["data"][0]["state"] = "preopen"
    btc = rules_of("okx", orjson.dumps(raw))["BTC-USDT"]
    assert btc.upcoming == (RuleChange("tickSz", D("0.01"), 1704870000000),
                            RuleChange("minSz", D("0.0001"), 1704880000000))      # oldest first
    assert btc.trading is False and btc.status == "preopen"


def test_okx_max_amount_is_a_quote_bound_only_for_usd_quotes():
    raw = orjson.loads(fixture("okx"))
    raw["data"][1]["quoteCcy"] = "BTC"
    assert rules_of("okx", orjson.dumps(raw))["ETH-USDT"].max_notional is None


def test_htx_market_symbols():
    got = rules_of("htx", fixture("htx"))
    # tick 10**-pp, step 10**-ap; the limit-order lominoa/lomaxoa; minov; numbers read from their text
    assert got["btcusdt"] == rules("htx", "btcusdt", "0.01", "0.000001", "0.00001", "1000", "1", None, True, "online")
    assert got["btc3lusdt"] == rules("htx", "btc3lusdt", "0.0001", "0.0001", "0.01", "199.0515", "5", None, True,
                                     "online")


def test_htx_answers_what_changed_since_a_stamp():
    from pipeline.refdata import reference_url
    since = load_venue("htx").reference_data.since
    assert since(fixture("htx")) == ("1641880897191", True)
    # the documented answer when nothing changed since ts: "data" is [] (and full 0)
    empty = b'{"status":"ok","data":[],"ts":"1641880900000","full":0}'
    assert since(empty) == ("1641880900000", False) and rules_of("htx", empty) == {}
    assert since(b'{"status":"ok","data":[]}') == (None, True)           # no stamp: the next request is whole
    with pytest.raises(ParseError):
        since(b'{"status":"ok","data":[],"ts":"16418809x","full":0}')
    assert reference_url("htx", "http://127.0.0.1:9", since="1641880900000") == (
        "http://127.0.0.1:9/v1/settings/common/market-symbols?ts=1641880900000")
    assert reference_url("binance", "http://127.0.0.1:9", since="5") == reference_url("binance", "http://127.0.0.1:9")


def test_htx_not_online_or_api_trading_disabled():
    raw = fixture("htx").replace(b'"state":"online"', b'"state":"suspend"', 1)
    assert rules_of("htx", raw)["btcusdt"].trading is False
    assert rules_of("htx", raw)["btcusdt"].status == "suspend"
    raw = fixture("htx").replace(b'"at":"enabled"', b'"at":"disabled"', 1)
    assert rules_of("htx", raw)["btcusdt"].trading is False
    assert rules_of("htx", raw)["btcusdt"].status == "online (api trading disabled)"


def test_htx_error_answer():
    with pytest.raises(ParseError) as exc:
        rules_of("htx", b'{"status":"error","err-code":"invalid-parameter","err-msg":"invalid symbol"}')
    assert exc.value.reason == "bad_reference_data" and "invalid symbol" in str(exc.value)


def test_coinbase_products():
    got = rules_of("coinbase", fixture("coinbase"))
    assert got["ETH-USD"] == rules("coinbase", "ETH-USD", "0.00000001", "0.00000001", "0.00000001", "1000",
                                   "0.00000001", "1000", True, "online")
    # the docs' example: cancel_only, limit_only and post_only set, status a placeholder
    assert got["BTC-USD"].trading is False
    assert got["BTC-USD"].status == "<string> cancel_only limit_only post_only"


@pytest.mark.parametrize("flag", ["trading_disabled", "is_disabled", "cancel_only", "limit_only", "post_only"])
def test_coinbase_each_flag_stops_taker_orders(flag):
    raw = orjson.loads(fixture("coinbase"))
    raw["products"][1][flag] = True
    eth = rules_of("coinbase", orjson.dumps(raw))["ETH-USD"]
    assert eth.trading is False and eth.status == f"online {flag}"


def test_kraken_instrument_channel():
    stored, docs = fixture("kraken", "instrument.jsonl").splitlines()
    got = rules_of("kraken", stored)
    assert got["BTC/USD"] == rules("kraken", "BTC/USD", "0.1", "0.00000001", "0.00005", None, "0.5", None, True,
                                   "online")
    assert got["ETH/USD"] == rules("kraken", "ETH/USD", "0.05", "0.00001", "0.002", None, "1.25", None, True,
                                   "online")
    got = rules_of("kraken", docs)
    assert got["BTC/USD"].step == D("1E-8") and got["BTC/USD"].min_qty == D("0.0001")    # 1e-08 read exactly
    assert got["MATIC/GBP"].min_qty == D("4.0") and got["MATIC/GBP"].min_notional == D("0.43")


def test_kraken_pair_status_other_than_online():
    stored = fixture("kraken", "instrument.jsonl").splitlines()[0]
    for status in ("cancel_only", "post_only", "limit_only", "reduce_only", "maintenance", "delisted",
                   "work_in_progress"):
        eth = rules_of("kraken", stored.replace(b'"ETH","quote":"USD","status":"online"',
                                                b'"ETH","quote":"USD","status":"%s"' % status.encode()))["ETH/USD"]
        assert eth.trading is False and eth.status == status


def test_kraken_one_declaration_for_books_and_rules():
    stored = fixture("kraken", "instrument.jsonl").splitlines()[0]
    specs = load_venue("kraken").parse(stored, 0)
    assert [(s.symbol, s.price_precision, s.qty_precision) for s in specs] == [("BTC/USD", 1, 8), ("ETH/USD", 2, 5)]


# ---------------------------------------------------------------- malformed responses

MALFORMED = [
    ("binance", b'{"symbols":[{"symbol":"BTCUSDT","status":"TRADING","filters":[{"filterType":"LOT_SIZE",'
                b'"minQty":"0.001","maxQty":"9","stepSize":"0.001"}]}]}', "BTCUSDT: no PRICE_FILTER filter"),
    ("binance", b'{"symbols":[{"symbol":"BTCUSDT","status":"TRADING","filters":[{"filterType":"PRICE_FILTER",'
                b'"tickSize":"0.00000000"},{"filterType":"LOT_SIZE","minQty":"0.001","maxQty":"9","stepSize":'
                b'"0.001"}]}]}', "BTCUSDT: tick 0E-8"),
    ("binance", b'{"symbols":[{"symbol":"BTCUSDT","status":"TRADING","filters":[{"filterType":"PRICE_FILTER",'
                b'"tickSize":"abc"}]}]}', "Invalid decimal string - at `$.symbols[0].filters[0].tickSize`"),
    ("binance", b'{"timezone":"UTC"}', "Object missing required field `symbols`"),
    ("bybit", b'{"retCode":0,"retMsg":"OK","result":{"list":[{"symbol":"BTCUSDT","status":"Trading",'
              b'"lotSizeFilter":{"basePrecision":"0.000001"},"priceFilter":{"tickSize":"0.1"}}]}}',
     "Object missing required field `minOrderAmt` - at `$.result.list[0].lotSizeFilter`"),
    ("okx", b'{"code":"0","msg":"","data":[{"instId":"BTC-USDT","state":"live","tickSz":"","lotSz":"0.1",'
            b'"minSz":"1"}]}', "BTC-USDT: tick None"),
    ("okx", b'{"code":"0","msg":"","data":[{"instId":"BTC-USDT","state":"live","tickSz":"0.1","lotSz":"x",'
            b'"minSz":"1"}]}', "BTC-USDT: lotSz: 'x' is not a number"),
    ("okx", b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}', "code 51001"),
    ("htx", b'{"status":"ok","data":[{"symbol":"btcusdt","state":"online","pp":-2,"ap":6}]}', "btcusdt: pp -2"),
    ("htx", b'{"status":"ok","data":[{"symbol":"btcusdt","state":"online","pp":2,"ap":6,"minov":"NaN"}]}',
     "btcusdt: min_notional NaN"),
    ("coinbase", b'{"products":[{"product_id":"BTC-USD","price_increment":"0.01","base_increment":"-1",'
                 b'"base_min_size":"0"}]}', "BTC-USD: step -1"),
    ("coinbase", b'{"products":[{"product_id":"BTC-USD","price_increment":0.01}]}',
     "Object missing required field `base_increment`"),
    ("kraken", b'{"channel":"instrument","type":"snapshot","data":{"pairs":[{"symbol":"BTC/USD","status":'
               b'"online","qty_precision":8,"price_precision":1,"price_increment":0.1,"qty_min":0.0001}]}}',
     "BTC/USD: step None"),
    ("kraken", b'{"channel":"instrument","type":"trades","data":{"pairs":[]}}', "instrument type 'trades'"),
]


@pytest.mark.parametrize("venue,raw,words", MALFORMED, ids=[f"{v}-{i}" for i, (v, _, _) in enumerate(MALFORMED)])
def test_a_malformed_response_is_a_parse_error_naming_the_problem(venue, raw, words):
    with pytest.raises(ParseError) as exc:
        load_venue(venue).reference_data.parse(raw)
    assert exc.value.exchange == venue
    assert exc.value.reason == "bad_reference_data"
    assert words in str(exc.value)


@pytest.mark.parametrize("venue", VENUES)
def test_not_json_is_invalid_json(venue):
    with pytest.raises(ParseError) as exc:
        load_venue(venue).reference_data.parse(b"<html>502 Bad Gateway</html>")
    assert exc.value.reason == "invalid_json" and exc.value.exchange == venue
