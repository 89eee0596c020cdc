"""ccxt agrees with our parsers on the trading rules the simulator serves.

For each venue whose ccxt class reads its markets from the endpoint our record names, ccxt's ``load_markets()``
runs against the simulator (its REST URLs point at the simulator's port; any other request fails the test, so
nothing leaves the machine), with one instrument halted. For every simulated instrument ccxt's ``precision``
(price, amount), ``limits`` (amount.min, cost.min) and ``active`` must equal what the venue's own
``wire.instrument_rules`` reads from the same endpoint (a limit ccxt leaves None is a minimum of 0 for us).
"""
from __future__ import annotations

import asyncio
import urllib.request
from decimal import Decimal

import pytest

from pipeline.venues import VENUES, load_venue
from tests.conftest import run
from tests.integration.test_sim_reference_data import HOST, simulator

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ccxt")]   # ccxt imported once

# venues whose ccxt load_markets reads another endpoint than the record's: comparing them would not compare one
# response read twice
NOT_COMPARABLE = {
    "htx": "ccxt reads spot markets from /v1/common/symbols, not /v1/settings/common/market-symbols (the record's)",
    "kraken": "ccxt reads markets from REST /0/public/AssetPairs; the record's rules are the WebSocket instrument "
              "channel, which the simulator serves and ccxt does not read",
}


def point_at(venue: str, base: str, requests: list):
    """A ccxt client of ``venue`` whose REST calls go to ``base`` (the simulator) and nowhere else."""
    # imported here, not at import: ccxt loads ~600 modules, too many for every test worker to collect
    import ccxt.async_support as ccxt_async
    client = getattr(ccxt_async, venue)({"enableRateLimit": False})
    api = client.urls["api"]
    if venue == "binance":
        api["public"] = base + "/api/v3"
        client.options["fetchMarkets"]["types"] = ["spot"]
        client.options["fetchCurrencies"] = False
    elif venue == "bybit":
        for key in api:
            api[key] = base
        client.options["fetchMarkets"]["types"] = ["spot"]
    elif venue == "okx":
        api["rest"] = base
        client.options["fetchMarkets"]["types"] = ["spot"]
    elif venue == "coinbase":
        api["rest"] = base
        # load_markets would also read /v2/currencies, /v2/currencies/crypto (the Coinbase App API, which the
        # simulator does not serve): they name the currencies, not the products' rules compared here
        client.has["fetchCurrencies"] = False
    else:
        raise AssertionError(f"{venue}: no ccxt URLs declared")
    original_fetch = client.fetch

    async def loopback_only(url, method="GET", headers=None, body=None):
        requests.append(url)
        if not url.startswith(base + "/"):
            raise AssertionError(f"{venue}: ccxt tried to reach {url}")
        return await original_fetch(url, method, headers, body)

    client.fetch = loopback_only
    return client


def decimal_or_zero(value) -> Decimal:
    return Decimal(0) if value is None else Decimal(str(value))


@pytest.mark.parametrize("venue", VENUES)
def test_ccxt_load_markets_agrees_with_our_parser(venue):
    if load_venue(venue).reference_data is None:
        pytest.skip(f"{venue}: its record names no reference data")
    if venue in NOT_COMPARABLE:
        pytest.skip(NOT_COMPARABLE[venue])

    async def scenario():
        async with simulator(venue) as server:
            halted = sorted(server.instrument_of)[-1]
            await server.halt(halted)
            base = server.rest_base(HOST)
            url = base + load_venue(venue).reference_data.path

            def get() -> bytes:
                with urllib.request.urlopen(url, timeout=10) as response:
                    return response.read()
            ours = {r.symbol: r for r in load_venue(venue).reference_data.parse(await asyncio.to_thread(get))}
            requests: list = []
            client = point_at(venue, base, requests)
            try:
                markets = await client.load_markets()
            finally:
                await client.close()
            assert requests, f"{venue}: ccxt made no request"
            by_id = {market["id"]: market for market in markets.values()}
            assert sorted(by_id) == sorted(server.instrument_of)
            for symbol, rules in ours.items():
                market = by_id[symbol]
                assert market["symbol"] == server.instrument_of[symbol]
                got = (decimal_or_zero(market["precision"]["price"]), decimal_or_zero(market["precision"]["amount"]),
                       decimal_or_zero(market["limits"]["amount"]["min"]),
                       decimal_or_zero(market["limits"]["cost"]["min"]), market["active"])
                assert got == (rules.tick, rules.step, rules.min_qty, rules.min_notional, rules.trading), symbol
            assert ours[halted].trading is False
    run(scenario())
