"""``run.py instruments``: the instruments two or more venues list, with each venue's rules side by side, asked of
the simulator the command starts itself (real processes, real HTTP and WebSocket on loopback).

The values are the simulator's reference tables (``pipeline/venues/<name>/sim.py`` ``REFERENCE_RULES``).
"""
from __future__ import annotations

import socket

import orjson
import pytest

from pipeline.config import load_config
from tests.conftest import run_cli, write_config

pytestmark = pytest.mark.integration

VENUES = {"binance": ["BTC/USDT", "ETH/USDT"], "bybit": ["BTC/USDT", "ETH/USDT"], "okx": ["BTC/USDT"],
          "kraken": ["BTC/USD", "BTC/USDT"]}
BTC_USDT = [
    "BTC/USDT     binance    BTCUSDT      0.01         0.00001      0.00001      10            TRADING    10",
    "             bybit      BTCUSDT      0.1          0.000001     0.000011     5             Trading    12.5",
    "             kraken     BTC/USDT     0.1          0.0001       0.0001       5             online     40",
    "             okx        BTC-USDT     0.1          0.00000001   0.00001      0             live       10",
]


def config(tmp_path, name="venues.yaml"):
    raw = {"board": {"name": "instruments-test", "depth": 5},
           "simulator": {"seed": 3, "random_dislocations": False},
           "venues": {v: {"instruments": i} for v, i in VENUES.items()},
           "detector": {"threshold_bps": 1.5}}
    raw["venues"]["bybit"]["taker_fee_bps"] = 12.5
    return write_config(tmp_path / name, raw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lists_instruments_on_two_venues_side_by_side(tmp_path):
    done = run_cli("instruments", "--config", str(config(tmp_path)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == ("instrument   venue      symbol       tick         step         min_qty      min_notional  "
                        "status     taker_bps")
    start = lines.index(BTC_USDT[0])
    assert lines[start:start + 4] == BTC_USDT
    # ETH/USDT on binance and bybit; BTC/USD on kraken only: not listed
    assert [line.split()[0] for line in lines[1:] if not line.startswith(" ")] == ["BTC/USDT", "ETH/USDT"]
    assert done.stderr == ""


def test_json_quote_filter_and_one_venue(tmp_path):
    done = run_cli("instruments", "--config", str(config(tmp_path)), "--json", "--quote", "USD", "--min-venues", "1")
    assert done.returncode == 0, done.stderr
    document = orjson.loads(done.stdout)
    assert document["unavailable"] == {}
    [item] = document["instruments"]
    assert item["instrument"] == "BTC/USD"
    assert item["venues"] == {"kraken": {"symbol": "BTC/USD", "tick": "0.1", "step": "0.00000001",
                                         "min_qty": "0.00005", "max_qty": None, "min_notional": "0.5",
                                         "max_notional": None, "status": "online", "trading": True,
                                         "taker_fee_bps": 40.0, "fee_source": "config"}}


def test_write_config_gives_a_config_that_loads_and_is_never_overwritten(tmp_path):
    out = tmp_path / "watch.yaml"
    done = run_cli("instruments", "--config", str(config(tmp_path)), "--write-config", str(out))
    assert done.returncode == 0, done.stderr
    watched = load_config(out)
    assert {v.name: v.instruments for v in watched.venues} == {
        "binance": ("BTC/USDT", "ETH/USDT"), "bybit": ("BTC/USDT", "ETH/USDT"), "kraken": ("BTC/USDT",),
        "okx": ("BTC/USDT",)}
    assert watched.venue("bybit").taker_fee_bps == 12.5 and watched.detector.threshold_bps == 1.5
    before = out.read_text()
    again = run_cli("instruments", "--config", str(config(tmp_path)), "--write-config", str(out))
    assert again.returncode == 2
    assert again.stderr == f"run.py instruments: --write-config: {out} exists; not overwritten\n"
    assert out.read_text() == before


def test_a_venue_that_does_not_answer_is_one_line_and_the_others_are_listed(tmp_path):
    port = closed_port()
    done = run_cli("instruments", "--config", str(config(tmp_path)), "--venue", f"okx=http://127.0.0.1:{port}")
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("run.py instruments: venues.okx: reference data not available (")
    assert "okx" not in done.stdout and BTC_USDT[0] in done.stdout.splitlines()
    nobody = run_cli("instruments", "--venue", f"binance=http://127.0.0.1:{port}", "--timeout", "1")
    assert nobody.returncode == 2
    assert nobody.stderr.splitlines()[-1] == "run.py instruments: no venue answered: venues.binance"
