"""The simulator serves each venue's reference data (trading rules) where the real venue publishes it, and the
venue's own parser reads back exactly the rules served; a rule change and a halt made while it runs are seen over
REST at the next request and pushed on OKX's ``instruments`` and Kraken's ``instrument`` channels.

Real servers on loopback (the simulator's), real HTTP (``urllib.request`` in a thread) and real WebSocket clients.
"""
from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from decimal import Decimal

import orjson
import pytest
from websockets.asyncio.client import connect

from pipeline.sim.market import Market
from pipeline.sim.protocol import Quirks
from pipeline.sim.server import Simulator
from pipeline.venues import VENUES, load_venue
from pipeline.venues.kraken.wire import INSTRUMENT_SUBSCRIBE
from tests.conftest import async_wait_until, run

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
INSTRUMENTS = {"coinbase": ["BTC/USD", "ETH/USD", "BTC/USDT"], "kraken": ["BTC/USD", "ETH/USD", "BTC/USDT"]}
TRADING = {"binance": "TRADING", "bybit": "Trading", "okx": "live", "htx": "online", "coinbase": "online",
           "kraken": "online"}
OKX_INSTRUMENTS = '{"op":"subscribe","args":[{"channel":"instruments","instType":"SPOT"}]}'
WITH_REFERENCE_DATA = [name for name in VENUES if load_venue(name).reference_data is not None]


@contextlib.asynccontextmanager
async def simulator(venue: str):
    """One venue's simulator, running (market steps, staged events) on loopback."""
    record = load_venue(venue)
    instruments = INSTRUMENTS.get(venue, ["BTC/USDT", "ETH/USDT", "SOL/USDT"])
    symbols = {instrument: record.native_symbol(instrument) for instrument in instruments}
    sim = Simulator({venue: symbols}, Market([venue], instruments, seed=11, random_dislocations=False), 20, HOST)
    await sim.start()
    stop = asyncio.Event()
    task = asyncio.ensure_future(sim.run(stop))
    try:
        yield sim.exchanges[venue]
    finally:
        stop.set()
        await task
        await sim.close()


async def fetch_rest(server, venue: str) -> bytes:
    """The record's reference-data request, over HTTP, from a thread (the event loop keeps serving)."""
    url = server.rest_base(HOST) + load_venue(venue).reference_data.path
    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            return response.read()
    return await asyncio.to_thread(get)


async def next_push(websocket, channel: str, timeout: float = 10.0) -> bytes:
    """The next frame of ``channel`` (OKX ``arg.channel`` / Kraken ``channel``), skipping acks and market data."""
    async def read():
        while True:
            frame = await websocket.recv()
            msg = orjson.loads(frame)
            if msg.get("channel") == channel or (msg.get("arg") or {}).get("channel") == channel and "data" in msg:
                return frame
    return await asyncio.wait_for(read(), timeout)


async def served_rules(server, venue: str) -> dict:
    """What the venue's parser reads from the simulator's reference data, by symbol."""
    record = load_venue(venue)
    if record.reference_data.transport == "rest":
        raw = await fetch_rest(server, venue)
    else:
        async with connect(server.url(HOST)) as websocket:
            await websocket.send(INSTRUMENT_SUBSCRIBE)
            raw = await next_push(websocket, "instrument")
    return {rules.symbol: rules for rules in record.reference_data.parse(raw)}


def check_served(venue: str, parsed, rule, halted_word: str) -> None:
    """``parsed`` (an InstrumentRules) holds exactly the values of ``rule`` (the simulator's InstrumentRule)."""
    for name in ("tick", "step", "min_qty", "min_notional", "max_notional"):
        assert getattr(parsed, name) == rule.decimal(name), (venue, parsed.symbol, name)
    if rule.max_qty is not None:
        assert parsed.max_qty == Decimal(rule.max_qty), (venue, parsed.symbol)
    assert parsed.trading is not rule.halted, (venue, parsed.symbol)
    word = halted_word if rule.halted else TRADING[venue]
    assert parsed.status.split(" ")[0] == word, (venue, parsed.status)


@pytest.mark.parametrize("venue", WITH_REFERENCE_DATA)
def test_served_reference_data_parses_to_the_served_rules(venue):
    async def scenario():
        async with simulator(venue) as server:
            parsed = await served_rules(server, venue)
            assert sorted(parsed) == sorted(server.instrument_of)
            for symbol, rule in server.trading_rules.items():
                check_served(venue, parsed[symbol], rule, server.protocol_class.HALTED)
            # the table's values are the ones served for the instruments it lists (real responses)
            for symbol, canonical in server.instrument_of.items():
                table = server.protocol_class.REFERENCE_RULES.get(canonical)
                if table is not None:
                    assert parsed[symbol].tick == Decimal(table.tick) and parsed[symbol].step == Decimal(table.step)
            # every price quoted is on the served tick
            await async_wait_until(lambda: all(s.bids for s in server.states.values()), 10, "books")
            for symbol, state in server.states.items():
                tick = parsed[symbol].tick
                for price, _ in state.bids + state.asks:
                    assert Decimal(repr(price)) % tick == 0, (venue, symbol, price, tick)
    run(scenario())


@pytest.mark.parametrize("venue", [v for v in WITH_REFERENCE_DATA if load_venue(v).reference_data.transport == "rest"])
def test_rest_answers_a_rule_change_and_a_halt_at_once(venue):
    async def scenario():
        async with simulator(venue) as server:
            symbol = sorted(server.instrument_of)[0]
            before = (await served_rules(server, venue))[symbol]
            assert before.trading
            await server.halt(symbol)
            halted = (await served_rules(server, venue))[symbol]
            assert not halted.trading and halted.status.split(" ")[0] == server.protocol_class.HALTED
            min_qty = before.min_qty * 4
            await server.change_rule(symbol, min_qty=str(min_qty), halted=False)
            after = (await served_rules(server, venue))[symbol]
            assert after.trading and after.min_qty == min_qty and after.tick == before.tick
            check_served(venue, after, server.trading_rules[symbol], server.protocol_class.HALTED)
    run(scenario())


def test_okx_instruments_channel_full_push_then_announced_change_then_halt():
    parse = load_venue("okx").reference_data.parse

    async def scenario():
        async with simulator("okx") as server, connect(server.url(HOST)) as websocket:
            await websocket.send(OKX_INSTRUMENTS)
            ack = orjson.loads(await websocket.recv())
            assert ack["event"] == "subscribe" and ack["arg"] == {"channel": "instruments", "instType": "SPOT"}
            full = {r.symbol: r for r in parse(await next_push(websocket, "instruments"))}
            assert sorted(full) == sorted(server.instrument_of)
            assert full["BTC-USDT"].tick == Decimal("0.1") and full["BTC-USDT"].min_qty == Decimal("0.00001")

            await server.announce_rule_change("BTC-USDT", 0.5, min_qty="0.0001")
            announced, = parse(await next_push(websocket, "instruments"))
            assert announced.min_qty == Decimal("0.00001")            # not yet
            change, = announced.upcoming
            assert (change.field, change.new_value) == ("minSz", Decimal("0.0001")) and change.effective_ms > 0
            effective, = parse(await next_push(websocket, "instruments"))
            assert effective.min_qty == Decimal("0.0001") and effective.upcoming == ()
            rest = {r.symbol: r for r in parse(await fetch_rest(server, "okx"))}
            assert rest["BTC-USDT"] == effective

            await server.halt("ETH-USDT")
            halted, = parse(await next_push(websocket, "instruments"))
            assert (halted.symbol, halted.trading, halted.status) == ("ETH-USDT", False, "suspend")
    run(scenario())


def test_kraken_instrument_channel_pushes_a_halt_and_a_rule_change():
    parse = load_venue("kraken").reference_data.parse

    async def scenario():
        async with simulator("kraken") as server, connect(server.url(HOST)) as websocket:
            await websocket.send(INSTRUMENT_SUBSCRIBE)
            snapshot = {r.symbol: r for r in parse(await next_push(websocket, "instrument"))}
            assert snapshot["ETH/USD"].tick == Decimal("0.05") and snapshot["ETH/USD"].min_notional == Decimal("1.25")
            await server.halt("ETH/USD")
            halted, = parse(await next_push(websocket, "instrument"))
            assert (halted.symbol, halted.trading, halted.status) == ("ETH/USD", False, "maintenance")
            await server.change_rule("ETH/USD", halted=False, min_qty="0.004", min_notional="2.5")
            changed, = parse(await next_push(websocket, "instrument"))
            assert changed.trading and (changed.min_qty, changed.min_notional) == (Decimal("0.004"), Decimal("2.5"))
    run(scenario())


def test_a_new_tick_moves_the_quoted_grid():
    async def scenario():
        async with simulator("bybit") as server:
            await server.change_rule("BTCUSDT", tick="0.5")
            assert (await served_rules(server, "bybit"))["BTCUSDT"].tick == Decimal("0.5")
            steps = server._steps

            def on_new_grid():
                state = server.states["BTCUSDT"]
                return server._steps > steps + 1 and all(Decimal(repr(p)) % Decimal("0.5") == 0
                                                          for p, _ in state.bids + state.asks)
            await async_wait_until(on_new_grid, 10, "BTCUSDT quoted on 0.5")
    run(scenario())


def test_rule_changes_quirk_halts_and_changes_minimums_on_a_seeded_schedule():
    async def scenario():
        async with simulator("binance") as server:
            server.quirks = Quirks(rule_changes=True, every_s=0.3, status_s=0.3)
            seen_halt, seen_change = set(), set()

            async def saw_both():
                for symbol, rules in (await served_rules(server, "binance")).items():
                    base = server.base_rules[symbol]
                    if not rules.trading:
                        seen_halt.add(symbol)
                    if rules.min_qty == Decimal(base.min_qty) * 2:
                        seen_change.add(symbol)
                return seen_halt and seen_change
            await async_wait_until(saw_both, 15, "a halt and a doubled minimum over REST", interval=0.05)
    run(scenario())
    # the schedule is drawn from the market's seed: the same seed picks the same symbols
    picks = []
    for _ in range(2):
        market = Market(["binance"], ["BTC/USDT", "ETH/USDT", "SOL/USDT"], seed=11)
        server = Simulator({"binance": {"BTC/USDT": "BTCUSDT", "ETH/USDT": "ETHUSDT", "SOL/USDT": "SOLUSDT"}},
                           market, 20).exchanges["binance"]
        picks.append([server._rule_rng.choice(sorted(server.instrument_of)) for _ in range(8)])
    assert picks[0] == picks[1]
