"""``run.py decode`` on the fixture files: the feed's own session, one record per input line."""
from __future__ import annotations

import io

import orjson
import pytest

from pipeline.commands.decode import decode_stream, frame_of
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


def test_one_record_per_line_with_what_the_line_did():
    text = (FIXTURES / "binance" / "depth5.jsonl").read_text()
    records, err = decode("binance", text)
    assert [r["line"] for r in records] == list(range(1, len(text.splitlines()) + 1))
    # a raw partial depth has no symbol: reported on stderr and still gets its record
    assert "line 1:" in err
    assert records[0]["did"] == "unusable" and records[0]["row"] is None and "unknown_message" in records[0]["detail"]
    second = records[1]
    assert second["did"] == "changed" and second["symbol"] == "BNBUSDT"
    assert second["row"] == {"state": "live", "bid_price": 656.72, "bid_qty": 29.052, "ask_price": 656.73,
                             "ask_qty": 21.012, "exchange_ts_ms": None,
                             "bids": [[656.72, 29.052], [656.71, 11.685], [656.7, 1.016], [656.69, 0.008],
                                      [656.68, 0.025]],
                             "asks": [[656.73, 21.012], [656.74, 0.024], [656.75, 0.024], [656.76, 0.171],
                                      [656.77, 0.625]]}


def test_repeated_frame_is_reported_as_ignored_and_the_row_kept():
    line = (FIXTURES / "binance" / "depth5.jsonl").read_text().splitlines()[1]
    records, _ = decode("binance", line + "\n" + line + "\n")
    assert [r["did"] for r in records] == ["changed", "unchanged"] or [r["did"] for r in records] == ["changed",
                                                                                                       "ignored"]
    assert records[1]["row"] == records[0]["row"]


def test_kraken_real_book_passes_its_checksum_once_the_instrument_channel_gave_the_precisions():
    from tests.unit.test_venue_kraken import INSTRUMENT
    book = (FIXTURES / "kraken" / "book.jsonl").read_text()
    # without the pair's precisions the checksum cannot be checked: the rows stay syncing, never live
    records, _ = decode("kraken", book)
    assert {r["row"]["state"] for r in records if r["symbol"] == "ETH/USD"} == {"syncing"}
    records, err = decode("kraken", INSTRUMENT + "\n" + book)
    assert records[0]["did"] == "status" and records[0]["row"] is None
    eth = [r for r in records if r["symbol"] == "ETH/USD" and r["did"] == "changed"]
    assert eth and all(r["row"]["state"] == "live" for r in eth)
    assert eth[0]["row"]["bid_price"] == 1797.24 and eth[0]["row"]["ask_price"] == 1797.25
    assert not any(r["did"] == "checksum" for r in records)
    # MATIC/USD is cancel_only in that instrument message: its book is whole but it cannot trade
    matic = [r for r in records if r["symbol"] == "MATIC/USD" and r["did"] == "changed"]
    assert matic and matic[-1]["row"]["state"] == "halted"


def test_cryptofeed_capture_files_decode_without_stopping():
    path = FIXTURES / "cryptofeed-2021" / "HUOBI.ws.44.0"
    result = run_cli("decode", "--exchange", "htx", str(path))
    assert result.returncode == 0
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == len(path.read_text(errors="replace").splitlines())
    live = [r["row"] for r in records if r["did"] == "changed" and r["row"]["state"] == "live"]
    assert len(live) > 100 and all(r["bid_price"] < r["ask_price"] for r in live)
    assert {r["did"] for r in records} >= {"changed", "sent", "connection"}
    result = run_cli("decode", "--exchange", "okx", str(FIXTURES / "cryptofeed-2021" / "OKX.ws.1.0"))
    assert result.returncode == 0
    assert sum(1 for line in result.stdout.splitlines() if orjson.loads(line)["did"] == "changed") > 50


def test_bad_lines_are_reported_with_their_number():
    records, err = decode("bybit", "not json\n" + (FIXTURES / "bybit" / "bbo.jsonl").read_text())
    assert "line 1: bybit: invalid_json" in err
    assert records[0]["did"] == "unusable" and records[0]["line"] == 1
    assert records[1]["symbol"] == "BTCUSDT" and records[1]["row"]["bid_price"] == 28165.07


def test_kraken_capture_without_instrument_messages_with_inferred_precisions():
    records, err = decode_with("kraken", (FIXTURES / "kraken" / "book.jsonl").read_text(), infer_precision=True)
    assert [(r["symbol"], r["did"], r["row"]["state"]) for r in records] == [
        ("MATIC/USD", "changed", "live"), ("MATIC/USD", "changed", "live"),
        ("ETH/USD", "changed", "live"), ("ETH/USD", "changed", "live")]
    assert err == ""


def decode_with(exchange: str, text: str, **options) -> tuple[list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    assert decode_stream(exchange, io.StringIO(text), out, err, **options) == 0
    return [orjson.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


CAPTURES = [("binance", "cryptofeed-2021/BINANCE.ws.1.0"), ("okx", "cryptofeed-2021/OKX.ws.1.0"),
            ("htx", "cryptofeed-2021/HUOBI.ws.44.0"), ("bybit", "bybit/depth.jsonl"), ("bybit", "bybit/bbo.jsonl"),
            ("okx", "okx/books.jsonl"), ("okx", "okx/bbo.jsonl"), ("htx", "htx/mbp_incremental.jsonl"),
            ("coinbase", "coinbase/at_level2.jsonl"), ("kraken", "kraken/book.jsonl")]


@pytest.mark.parametrize("exchange, name", CAPTURES)
def test_every_real_capture_decodes_by_its_declarations_with_no_field_unknown(exchange, name):
    text = (FIXTURES / name).read_text(errors="replace")
    records, _ = decode(exchange, text)
    assert records
    assert not [r for r in records if "schema_drift" in orjson.dumps(r).decode()]


def test_the_command_line():
    path = FIXTURES / "bybit" / "depth.jsonl"
    run = run_cli("decode", "--exchange", "bybit", str(path))
    assert run.returncode == 0 and len(run.stdout.splitlines()) == 7
    refused = run_cli("decode", "--exchange", "bybit", "--decoder", "msgspec", str(path))   # there is one decoder now
    assert refused.returncode == 2 and "unrecognized arguments: --decoder" in refused.stderr
