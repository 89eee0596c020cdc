"""Every venue module has the same shape and stays sans-I/O."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from pipeline.venues import DEFAULT_TAKER_FEE_BPS, PACKAGES, VENUES, load_venue

FORBIDDEN = {"asyncio", "websockets", "socket", "time", "multiprocessing", "threading", "requests", "urllib"}
FOLDERS = Path(__file__).resolve().parents[2] / "pipeline" / "venues"
FOLDER = {name: Path(importlib.import_module(package).__file__).parent for name, package in PACKAGES.items()}
RECORD_ONLY = ["DEFAULT_URL", "DEFAULT_TAKER_FEE_BPS", "KEEPALIVE_INTERVAL_S", "SUBSCRIBE_INTERVAL_S",
               "MAX_SYMBOLS_PER_CONNECTION", "WS_PING_INTERVAL_S", "VENUE"]


@pytest.mark.parametrize("venue", VENUES)
def test_each_venue_is_one_folder_with_one_record(venue):
    from pipeline.venues._common import Venue
    folder = FOLDER[venue]
    assert {"__init__.py", "wire.py", "sim.py"} <= {p.name for p in folder.glob("*.py")}
    record = load_venue(venue)
    assert isinstance(record, Venue) and record.name == venue
    assert record.taker_fee_bps == DEFAULT_TAKER_FEE_BPS[venue]
    wire = importlib.import_module(f"{PACKAGES[venue]}.wire")
    assert record.parse is wire.parse and record.build_subscribe is wire.build_subscribe
    copies = [name for name in RECORD_ONLY if hasattr(wire, name)]
    assert not copies, f"{venue}/wire.py restates what the record declares: {copies}"


PURE = sorted([*(FOLDER[v] / name for v in VENUES for name in ("wire.py", "__init__.py")), FOLDERS / "_common.py"])


@pytest.mark.parametrize("path", PURE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_venue_modules_import_no_io(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"


@pytest.mark.parametrize("path", sorted(p for v in VENUES for p in FOLDER[v].glob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_venue_folder_imports_no_other_venue(path):
    tree = ast.parse(path.read_text())
    others = set(PACKAGES.values()) - {PACKAGES[path.parent.name]}
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {m for m in imported if m.rsplit(".", 1)[0] in others or m in others}


@pytest.mark.parametrize("venue, instrument, native", [
    ("binance", "BTC/USDT", "BTCUSDT"), ("bybit", "ETH/USDT", "ETHUSDT"), ("okx", "BTC/USDT", "BTC-USDT"),
    ("htx", "BTC/USDT", "btcusdt"), ("coinbase", "BTC/USD", "BTC-USD"), ("kraken", "BTC/USD", "BTC/USD"),
])
def test_native_symbol_rules(venue, instrument, native):
    assert load_venue(venue).native_symbol(instrument) == native


@pytest.mark.parametrize("venue", VENUES)
def test_the_record_declares_the_simulator_path(venue):
    from pipeline.venues import SIM_PATHS
    assert SIM_PATHS[venue] == load_venue(venue).sim_path and load_venue(venue).sim_path.startswith("/")


@pytest.mark.integration
def test_simulator_serves_each_venue_on_its_declared_path():
    """A running simulator: each venue's URL ends with the record's path, a handshake there is accepted, and
    one on a path the venue does not serve is refused (404)."""
    import asyncio
    from urllib.parse import urlsplit

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from pipeline.sim.market import Market
    from pipeline.sim.server import Simulator
    from tests.conftest import async_wait_until

    async def scenario():
        symbols = {v: {"BTC/USDT": load_venue(v).native_symbol("BTC/USDT")} for v in VENUES}
        sim = Simulator(symbols, Market(list(VENUES), ["BTC/USDT"], seed=1, random_dislocations=False), 50)
        urls = await sim.start()
        try:
            assert set(urls) == set(VENUES)
            for venue in VENUES:
                declared = load_venue(venue).sim_path
                assert urlsplit(urls[venue]).path == declared, venue
                server = sim.exchanges[venue]
                opened = server.connections_opened
                async with connect(urls[venue]):
                    await async_wait_until(lambda: server.connections_opened == opened + 1, 5,
                                           message=f"{venue}: the connection served")
                with pytest.raises(InvalidStatus, match="404"):
                    async with connect(f"ws://127.0.0.1:{server.port}/not-{venue}-at-all"):
                        pass
        finally:
            await sim.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_documented_limits_are_declared():
    assert load_venue("okx").limit("requests_per_connection_per_hour") == 480
    assert load_venue("kraken").limit("reconnect_after_status_s") == 5
    assert load_venue("binance").limit("connection_lifetime_s") == 86400
    assert load_venue("htx").limit("requests_per_connection_per_hour") is None


def test_cross_channel_ids_are_declared_where_both_channels_carry_one():
    from pipeline.venues import venues_with
    assert venues_with(lambda v: bool(v.cross_channel_seq)) == ["binance", "bybit", "okx"]
    assert venues_with(lambda v: v.depth_is_delta) == ["bybit", "okx", "htx", "coinbase", "kraken"]
    assert venues_with(lambda v: v.aligned_snapshots) == ["htx"]


@pytest.mark.parametrize("venue", VENUES)
def test_declared_quirks_are_simulator_switches(venue):
    from pipeline.sim.protocol import QUIRK_NAMES
    assert set(load_venue(venue).quirks) <= set(QUIRK_NAMES)


def test_a_venue_keeps_one_connection_exactly_when_its_updates_carry_no_exchange_wide_id():
    """``cross_channel_seq`` names the id that tells an update's copies on redundant connections apart; a venue
    without one says why it keeps one connection (``single_connection``), and only such a venue does."""
    from pipeline.venues import VENUES, load_venue
    for name in VENUES:
        record = load_venue(name)
        assert bool(record.cross_channel_seq) != bool(record.single_connection), name
    assert sorted(n for n in VENUES if load_venue(n).single_connection) == ["coinbase", "htx", "kraken"]
