"""The fees the account pays, over real sockets: our signed lookups and ccxt's against each simulated venue's fee
endpoint, and a whole run (supervisor, simulator, feeds, detector) using the account's fee and alerting on a
refused key."""
from __future__ import annotations

import asyncio
import re
import urllib.request

import orjson
import pytest

from pipeline.fees import FeeLookupError, fetch_account_fees
from pipeline.sim.account import ACCOUNT_RATES, sim_credentials
from pipeline.sim.market import Market
from pipeline.sim.server import Simulator
from pipeline.venues._account import Credentials
from tests.conftest import complete_records, demo_config, run, run_cli, run_until, write_config

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
SYMBOLS = {"binance": ("BTC/USDT", "BTCUSDT"), "bybit": ("BTC/USDT", "BTCUSDT"), "okx": ("BTC/USDT", "BTC-USDT"),
           "htx": ("BTC/USDT", "btcusdt"), "coinbase": ("BTC/USD", "BTC-USD"), "kraken": ("BTC/USD", "BTC/USD")}
# the simulated account's taker fee, bps, per venue (pipeline.sim.account.ACCOUNT_RATES)
ACCOUNT_TAKER_BPS = {"binance": 6.0, "bybit": 6.0, "okx": 7.0, "htx": 15.0, "coinbase": 25.0, "kraken": 20.0}
# how each venue refuses a wrong secret, as our lookup classifies it: (HTTP status, reason)
REFUSED = {"binance": (400, "HTTP 400 code -1022: signature not valid"), "bybit": (200, "retCode 10004: error sign"),
           "okx": (401, "HTTP 401 code 50113: invalid sign"),
           "htx": (200, "HTTP 200 api-signature-not-valid: signature not valid"),
           "coinbase": (401, "HTTP 401"), "kraken": (200, "HTTP 200 EAPI:Invalid key")}


async def simulator() -> Simulator:
    venues = {venue: {instrument: native} for venue, (instrument, native) in SYMBOLS.items()}
    sim = Simulator(venues, Market(list(venues), ["BTC/USDT", "BTC/USD"], seed=3, depth=10), 20, HOST)
    await sim.start()
    return sim


def base_of(sim: Simulator, venue: str) -> str:
    server = sim.exchanges[venue]
    return f"http://{HOST}:{server.account_port if venue == 'kraken' else server.port}"


def wrong_secret(venue: str) -> Credentials:
    good = sim_credentials(venue)
    if venue == "coinbase":         # another P-256 key: a JWT the account's public key does not verify
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
        return Credentials(good.key, other.decode())
    return Credentials(good.key, "d3Jvbmctc2VjcmV0", good.passphrase)     # base64 of "wrong-secret"


def test_each_venue_answers_our_signed_lookup_and_refuses_a_wrong_secret_its_own_way():
    assert set(ACCOUNT_TAKER_BPS) == set(ACCOUNT_RATES)

    async def scenario():
        sim = await simulator()
        try:
            for venue, (_, native) in SYMBOLS.items():
                fees = await asyncio.to_thread(fetch_account_fees, venue, base_of(sim, venue),
                                               sim_credentials(venue), [native], 5.0)
                assert {s: f.taker_bps for s, f in fees.items()} == {native: ACCOUNT_TAKER_BPS[venue]}, venue
                with pytest.raises(FeeLookupError) as refused:
                    await asyncio.to_thread(fetch_account_fees, venue, base_of(sim, venue), wrong_secret(venue),
                                            [native], 5.0)
                assert (refused.value.kind, refused.value.status, refused.value.reason) == ("refused",
                                                                                            *REFUSED[venue]), venue
            # nothing listens: unreachable, not refused
            with pytest.raises(FeeLookupError) as unreachable:
                await asyncio.to_thread(fetch_account_fees, "binance", "http://127.0.0.1:9", sim_credentials("binance"),
                                        ["BTCUSDT"], 2.0)
            assert unreachable.value.kind == "unreachable" and unreachable.value.status == 0
        finally:
            await sim.close()
    run(scenario())


def ccxt_market(instrument: str, native: str) -> dict:
    base, quote = instrument.split("/")
    return {"id": native, "symbol": instrument, "base": base, "quote": quote, "baseId": base, "quoteId": quote,
            "lowercaseId": native.lower(), "type": "spot", "spot": True, "margin": False, "swap": False,
            "future": False, "option": False, "contract": False, "linear": None, "inverse": None, "active": True,
            "contractSize": None, "settle": None, "settleId": None, "precision": {"amount": 1e-8, "price": 0.01},
            "limits": {"amount": {"min": 1e-8, "max": None}, "price": {"min": None, "max": None},
                       "cost": {"min": None, "max": None}},
            "info": {"symbol": native, "instId": native, "product_id": native}}


def to_simulator(urls, base: str):
    """ccxt's API URLs with every https:// host replaced by the simulator's (the paths kept)."""
    if isinstance(urls, dict):
        return {k: to_simulator(v, base) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith("https://"):
        parts = urls.split("/", 3)
        return base + ("/" + parts[3] if len(parts) > 3 else "")
    return urls


def ccxt_fee(venue: str, base: str, credentials: Credentials) -> float:
    """The taker fee ccxt 4.5.90 reads from the simulator, every request signed by ccxt (none leaves loopback)."""
    import ccxt  # here, not at import: ccxt loads ~600 modules, too many for every test worker to collect
    client = getattr(ccxt, venue)({"apiKey": credentials.key, "secret": credentials.secret,
                                   "password": credentials.passphrase, "enableRateLimit": False})
    client.urls["api"] = to_simulator(client.urls["api"], base)
    instrument, native = SYMBOLS[venue]
    # Kraken's REST names BTC/USD XXBTZUSD; ccxt's market id is that name
    client.set_markets([ccxt_market(instrument, "XXBTZUSD" if venue == "kraken" else native)])
    if venue == "binance":        # fetch_trading_fee asks /sapi/v1/asset/tradeFee: the commission call, signed by ccxt
        answer = client.privateGetAccountCommission({"symbol": native})
        return float(answer["standardCommission"]["taker"]) * 1e4
    if venue == "coinbase":       # ccxt's own JWT (named for api.coinbase.com), sent to the simulator
        token = client.create_auth_token(client.seconds(), "GET",
                                         "https://api.coinbase.com/api/v3/brokerage/transaction_summary")
        request = urllib.request.Request(f"{base}/api/v3/brokerage/transaction_summary?product_type=SPOT",
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return float(orjson.loads(response.read())["fee_tier"]["taker_fee_rate"]) * 1e4
        except urllib.error.HTTPError as exc:
            raise ccxt.AuthenticationError(f"HTTP {exc.code}") from None
    return client.fetch_trading_fee(instrument)["taker"] * 1e4


@pytest.mark.xdist_group("ccxt")
def test_the_simulator_accepts_what_ccxt_signs_and_refuses_a_wrong_secret_as_the_venue_does():
    import ccxt
    async def scenario():
        sim = await simulator()
        try:
            for venue in SYMBOLS:
                taker = await asyncio.to_thread(ccxt_fee, venue, base_of(sim, venue), sim_credentials(venue))
                assert taker == pytest.approx(ACCOUNT_TAKER_BPS[venue]), venue
                # the refusal's shape is the venue's: ccxt maps it to its authentication error
                with pytest.raises(ccxt.AuthenticationError):
                    await asyncio.to_thread(ccxt_fee, venue, base_of(sim, venue), wrong_secret(venue))
        finally:
            await sim.close()
    run(scenario())


def test_a_run_uses_the_accounts_fee_where_it_was_looked_up_and_alerts_where_the_key_was_refused(
        tmp_path, board_name, monkeypatch):
    good = sim_credentials("binance")
    monkeypatch.setenv("TEST_BINANCE_KEY", good.key)
    monkeypatch.setenv("TEST_BINANCE_SECRET", good.secret)
    monkeypatch.setenv("TEST_BYBIT_KEY", good.key)
    monkeypatch.setenv("TEST_BYBIT_SECRET", "d3Jvbmctc2VjcmV0")        # wrong: the simulated bybit refuses it
    out = tmp_path / "opps.jsonl"
    raw = demo_config(board_name, out)
    raw["venues"]["binance"].update(fee_lookup=True, credentials_env={"key": "TEST_BINANCE_KEY",
                                                                     "secret": "TEST_BINANCE_SECRET"})
    raw["venues"]["bybit"].update(fee_lookup=True, credentials_env={"key": "TEST_BYBIT_KEY",
                                                                   "secret": "TEST_BYBIT_SECRET"})
    config = write_config(tmp_path / "c.yaml", raw)

    def opened_with_account_fee(stdout: str) -> bool:
        return "ALERT bybit: account fee lookup refused" in stdout and any(
            r["event"] == "open" and "binance" in (r["buy_exchange"], r["sell_exchange"])
            and "account" in (r["buy_fee_source"], r["sell_fee_source"]) for r in complete_records(out))
    result = run_until(opened_with_account_fee, "--config", str(config), timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]          # a refused key stops nothing
    assert re.search(r"pipeline: feed binance .* fees account", result.stdout)
    assert re.search(r"pipeline: feed bybit .* fee lookup failures \d+", result.stdout)
    assert "ALERT bybit: account fee lookup refused (HTTP 200): using configured fees" in result.stdout
    assert "bybit: account fee lookup refused" in result.stderr and "d3Jvbmctc2VjcmV0" not in result.stderr
    opens = [r for r in complete_records(out) if r["event"] == "open"]
    with_account = [r for r in opens if "account" in (r["buy_fee_source"], r["sell_fee_source"])]
    assert with_account
    for record in with_account:
        fee = {record["buy_exchange"]: (record["buy_fee_bps"], record["buy_fee_source"]),
               record["sell_exchange"]: (record["sell_fee_bps"], record["sell_fee_source"])}
        assert fee == {"binance": (6.0, "account"), "bybit": (10.0, "config")}
        assert record["fees_bps"] == pytest.approx(16.0)
        assert record["net_bps"] == pytest.approx(record["gross_bps"] - 16.0, abs=1e-3)


def test_fee_lookup_with_its_variables_unset_exits_2_naming_the_field(tmp_path, board_name, monkeypatch):
    monkeypatch.delenv("TEST_UNSET_SECRET", raising=False)
    monkeypatch.setenv("TEST_SET_KEY", "k")
    raw = demo_config(board_name, tmp_path / "opps.jsonl")
    raw["venues"]["binance"].update(fee_lookup=True, credentials_env={"key": "TEST_SET_KEY",
                                                                     "secret": "TEST_UNSET_SECRET"})
    result = run_cli("--config", str(write_config(tmp_path / "c.yaml", raw)), timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "run.py: venues.binance.credentials_env.secret: environment variable TEST_UNSET_SECRET is not set "
        "(fee_lookup needs the account's API secret)")
    assert "Traceback" not in result.stderr
