"""``run.py decode`` on the fixture files: same parser and book code as the feed."""
from __future__ import annotations

import io

import orjson

from pipeline.decode import decode_stream, frame_of
from tests.conftest import FIXTURES, run_cli


def decode(exchange: str, text: str) -> tuple[list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    assert decode_stream(exchange, io.StringIO(text), out, err) == 0
    return [orjson.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_frame_of_understands_capture_formats():
    assert frame_of("1618678070.123: {\"a\":1}\n") == '{"a":1}'
    assert frame_of("wss://x <- 1618678070.1: {\"sub\":1}") is None
    assert frame_of("wss://x <-> 1618678070") is None
    assert frame_of("{\"a\": 2}") == '{"a": 2}'
    assert frame_of("1.5: b'\\x1f\\x8b'") == b"\x1f\x8b"


def test_binance_depth_and_ticker_records():
    text = (FIXTURES / "binance" / "depth5.jsonl").read_text()
    records, err = decode("binance", text)
    assert "line 1:" in err                      # raw partial depth has no symbol: reported, not fatal
    first = records[0]
    assert first == {"exchange": "binance", "symbol": "BNBUSDT", "bid_price": 656.72, "bid_qty": 29.052,
                     "ask_price": 656.73, "ask_qty": 21.012, "exchange_ts_ms": None,
                     "bids": [[656.72, 29.052], [656.71, 11.685], [656.7, 1.016], [656.69, 0.008], [656.68, 0.025]],
                     "asks": [[656.73, 21.012], [656.74, 0.024], [656.75, 0.024], [656.76, 0.171], [656.77, 0.625]],
                     "state": "live"}


def test_kraken_real_book_passes_its_checksum():
    records, err = decode("kraken", (FIXTURES / "kraken" / "book.jsonl").read_text())
    eth = [r for r in records if r["symbol"] == "ETH/USD"]
    assert eth and all(r["state"] == "live" for r in eth)
    assert eth[0]["bid_price"] == 1797.24 and eth[0]["ask_price"] == 1797.25
    assert "ETH/USD: checksum" not in err


def test_cryptofeed_capture_files_decode_without_stopping():
    result = run_cli("decode", "--exchange", "htx", str(FIXTURES / "cryptofeed-2021" / "HUOBI.ws.44.0"))
    assert result.returncode == 0
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(records) > 100
    assert all(r["exchange"] == "htx" and r["bid_price"] < r["ask_price"] for r in records if r["state"] == "live")
    result = run_cli("decode", "--exchange", "okx", str(FIXTURES / "cryptofeed-2021" / "OKX.ws.1.0"))
    assert result.returncode == 0 and result.stdout.count("\n") > 50


def test_bad_lines_are_reported_with_their_number():
    records, err = decode("bybit", "not json\n" + (FIXTURES / "bybit" / "bbo.jsonl").read_text())
    assert "line 1: bybit: invalid_json" in err
    assert records[0]["symbol"] == "BTCUSDT" and records[0]["bid_price"] == 28165.07
