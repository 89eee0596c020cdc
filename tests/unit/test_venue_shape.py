"""Every venue module has the same shape and stays sans-I/O."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.venues import DEFAULT_TAKER_FEE_BPS, VENUES, load_venue

REQUIRED = ["NAME", "DEFAULT_URL", "DEFAULT_TAKER_FEE_BPS", "KEEPALIVE_INTERVAL_S", "SUBSCRIBE_INTERVAL_S",
            "MAX_SYMBOLS_PER_CONNECTION", "BOOK_LEVELS", "CHECKSUM", "CHECKSUM_LEVELS", "native_symbol",
            "build_url", "build_subscribe", "build_resubscribe", "build_keepalive", "build_pong", "parse",
            "WS_PING_INTERVAL_S", "VENUE"]
FORBIDDEN = {"asyncio", "websockets", "socket", "time", "multiprocessing", "threading", "requests", "urllib"}


@pytest.mark.parametrize("venue", VENUES)
def test_same_shape(venue):
    module = load_venue(venue)
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    assert not missing
    assert module.NAME == venue
    assert module.DEFAULT_TAKER_FEE_BPS == DEFAULT_TAKER_FEE_BPS[venue]


@pytest.mark.parametrize("path", sorted(Path(load_venue("binance").__file__).parent.glob("*.py")))
def test_venue_modules_import_no_io(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"


@pytest.mark.parametrize("venue, instrument, native", [
    ("binance", "BTC/USDT", "BTCUSDT"), ("bybit", "ETH/USDT", "ETHUSDT"), ("okx", "BTC/USDT", "BTC-USDT"),
    ("htx", "BTC/USDT", "btcusdt"), ("coinbase", "BTC/USD", "BTC-USD"), ("kraken", "BTC/USD", "BTC/USD"),
])
def test_native_symbol_rules(venue, instrument, native):
    assert load_venue(venue).native_symbol(instrument) == native


@pytest.mark.parametrize("venue", VENUES)
def test_one_declared_record_matches_the_module(venue):
    from pipeline.venues import SIM_PATHS, venue_record
    module = load_venue(venue)
    record = venue_record(venue)
    assert record is module.VENUE and record.name == module.NAME == venue
    assert (record.default_url, record.taker_fee_bps, record.keepalive_interval_s, record.subscribe_interval_s,
            record.max_symbols_per_connection, record.book_levels, record.checksum, record.checksum_levels) == (
        module.DEFAULT_URL, module.DEFAULT_TAKER_FEE_BPS, module.KEEPALIVE_INTERVAL_S, module.SUBSCRIBE_INTERVAL_S,
        module.MAX_SYMBOLS_PER_CONNECTION, module.BOOK_LEVELS, module.CHECKSUM, module.CHECKSUM_LEVELS)
    assert record.parse is module.parse and record.build_subscribe is module.build_subscribe
    assert DEFAULT_TAKER_FEE_BPS[venue] == record.taker_fee_bps
    assert SIM_PATHS[venue] == record.sim_path and record.sim_path.startswith("/")


def test_simulator_serves_each_venue_on_its_declared_path():
    from pipeline.sim.server import URL_PATHS
    from pipeline.venues import SIM_PATHS
    assert URL_PATHS == SIM_PATHS and set(SIM_PATHS) == set(VENUES)


def test_documented_limits_are_declared():
    from pipeline.venues import venue_record
    assert venue_record("okx").limit("requests_per_connection_per_hour") == 480
    assert venue_record("kraken").limit("reconnect_after_status_s") == 5
    assert venue_record("binance").limit("connection_lifetime_s") == 86400
    assert venue_record("htx").limit("requests_per_connection_per_hour") is None


def test_cross_channel_ids_are_declared_where_both_channels_carry_one():
    from pipeline.venues import venues_with
    assert venues_with(lambda v: bool(v.cross_channel_seq)) == ["binance", "bybit", "okx"]
    assert venues_with(lambda v: v.depth_is_delta) == ["bybit", "okx", "coinbase", "kraken"]


@pytest.mark.parametrize("venue", VENUES)
def test_declared_quirks_are_simulator_switches(venue):
    from pipeline.sim.protocols.base import QUIRK_NAMES
    from pipeline.venues import venue_record
    assert set(venue_record(venue).quirks) <= set(QUIRK_NAMES)
