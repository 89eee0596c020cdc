"""Clients we did not write, against the simulator: ccxt's pro classes.

For every venue a real simulator (loopback) serves our own feed (a real
:class:`~pipeline.feed.process.Feed` writing a real board) and one ccxt pro
client at once. The client's markets are set by hand and its URLs point at
the simulator (WebSocket and, for Binance's depth snapshot, REST on the same
port); any other HTTP request fails the test, so nothing leaves the machine.
Each of the client's default calls must deliver data; then the market is
frozen and the client's top 5 (book) or top of book (tickers) must end equal
to the row our own feed published, and every trade it saw must be one the
simulator printed.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from pipeline.board import RowStatus
from pipeline.venues import VENUES
from tests.conftest import REPO, async_wait_until, run
from tests.integration import cryptofeed_client
from tests.integration.cryptofeed_client import CRYPTOFEED, HOST
from tests.integration.harness import FeedHarness

pytestmark = pytest.mark.integration

INSTRUMENT = {"coinbase": "BTC/USD", "kraken": "BTC/USD"}

# venue -> the calls whose data is checked: (label, method name, kwargs, kind)
CALLS = {
    "binance": [("watch_order_book (diff depth + REST snapshot)", "watch_order_book", {}, "book"),
                ("watch_ticker (@miniTicker)", "watch_ticker", {}, "statistics"),
                ("watch_ticker name ticker (@ticker)", "watch_ticker", {"params": {"name": "ticker"}}, "statistics"),
                ("watch_bids_asks (@bookTicker)", "watch_bids_asks", {}, "bidask"),
                ("watch_trades (@trade)", "watch_trades", {}, "trades")],
    "bybit": [("watch_order_book (orderbook.50)", "watch_order_book", {}, "book"),
              ("watch_order_book limit 200 (orderbook.200)", "watch_order_book", {"limit": 200}, "book"),
              ("watch_bids_asks (orderbook.1)", "watch_bids_asks", {}, "bidask"),
              ("watch_ticker (tickers)", "watch_ticker", {}, "statistics"),
              ("watch_trades (publicTrade)", "watch_trades", {}, "trades")],
    "okx": [("watch_order_book (books)", "watch_order_book", {}, "book"),
            ("watch_order_book limit 5 (books5)", "watch_order_book", {"limit": 5}, "book"),
            ("watch_bids_asks (bbo-tbt)", "watch_bids_asks", {}, "bidask"),
            ("watch_ticker (tickers)", "watch_ticker", {}, "ticker"),
            ("watch_trades (trades)", "watch_trades", {}, "trades")],
    "htx": [("watch_order_book (mbp.150 + req on /feed)", "watch_order_book", {}, "book"),
            ("watch_ticker (detail)", "watch_ticker", {}, "statistics"),
            ("watch_trades (trade.detail)", "watch_trades", {}, "trades")],
    "coinbase": [("watch_order_book (level2)", "watch_order_book", {}, "book"),
                 ("watch_ticker (ticker)", "watch_ticker", {}, "ticker"),
                 ("watch_trades (market_trades)", "watch_trades", {}, "trades")],
    "kraken": [("watch_order_book (book)", "watch_order_book", {}, "book"),
               ("watch_ticker (ticker, on trades)", "watch_ticker", {}, "statistics"),
               ("watch_bids_asks (ticker, event_trigger bbo)", "watch_bids_asks", {}, "ticker"),
               ("watch_trades (trade)", "watch_trades", {}, "trades")],
}


def ccxt_market(venue: str, instrument: str, native: str, decimals: int) -> dict:
    base, quote = instrument.split("/")
    return {"id": native, "symbol": instrument, "base": base, "quote": quote, "baseId": base, "quoteId": quote,
            "lowercaseId": native.lower(), "type": "spot", "spot": True, "margin": False, "swap": False,
            "future": False, "option": False, "contract": False, "linear": None, "inverse": None,
            "active": True, "contractSize": None, "settle": None, "settleId": None,
            "precision": {"amount": 1e-8, "price": 10.0 ** -decimals},
            "limits": {"amount": {"min": 1e-8, "max": None}, "price": {"min": None, "max": None},
                       "cost": {"min": None, "max": None}},
            "info": {"symbol": native, "instId": native, "product_id": native}}


def ccxt_client(venue: str, port: int, market: dict, rest_calls: list):
    ws = f"ws://{HOST}:{port}"
    import ccxt.pro  # here, not at import: ccxt loads ~900 modules, too many for every test worker to collect
    client = getattr(ccxt.pro, venue)({"enableRateLimit": False})
    urls = client.urls["api"]
    if venue == "binance":
        urls["ws"]["spot"] = ws + "/ws"
        urls["public"] = f"http://{HOST}:{port}/api/v3"
    elif venue == "bybit":
        urls["ws"]["public"]["spot"] = ws + "/v5/public/spot"
    elif venue == "okx":
        urls["ws"] = ws + "/ws/v5"
    elif venue == "htx":
        urls["ws"]["api"]["spot"].update(public=ws + "/ws", feed=ws + "/feed")
    elif venue == "coinbase":
        urls["ws"] = ws
    elif venue == "kraken":
        urls["ws"]["publicV2"] = ws + "/v2"
    client.set_markets([market])
    original_fetch = client.fetch

    async def loopback_only(url, method="GET", headers=None, body=None):
        rest_calls.append(url)
        if not url.startswith(f"http://{HOST}:{port}/"):
            raise AssertionError(f"{venue}: ccxt tried to reach {url}")
        return await original_fetch(url, method, headers, body)

    client.fetch = loopback_only
    return client


def levels(side, n: int = 5) -> list:
    return [(round(float(p), 8), round(float(q), 6)) for p, q, *_ in side[:n]]


def row_levels(side) -> list:
    return [(round(p, 8), round(q, 6)) for p, q in side[:5]]


@pytest.mark.xdist_group("ccxt")
@pytest.mark.parametrize("venue", VENUES)
def test_ccxt_pro_client_ends_on_our_feeds_book(venue):
    # every registered venue: a new one fails here until its ccxt calls are declared above
    assert venue in CALLS, f"{venue}: no ccxt calls declared in CALLS"

    async def scenario():
        instrument = INSTRUMENT.get(venue, "BTC/USDT")
        rest_calls: list = []
        failures: dict = {}
        async with FeedHarness(venue, instruments=[instrument], update_interval_ms=20) as h:
            await h.all_live()
            native = h.symbols[instrument]
            market = ccxt_market(venue, instrument, native, h.market.decimals[instrument])
            # one client per call: ccxt keeps one book per symbol, which orderbook.1 and orderbook.50 would share
            clients = {label: ccxt_client(venue, h.server.port, market, rest_calls) for label, *_ in CALLS[venue]}
            results = {}

            async def first(label, method, kwargs):
                try:
                    call = getattr(clients[label], method)
                    args = ([instrument] if method == "watch_bids_asks" else instrument)
                    results[label] = await asyncio.wait_for(call(args, **kwargs), 15)
                except Exception as exc:  # noqa: BLE001 - collected and reported per call below
                    failures[label] = repr(exc)

            try:
                await asyncio.gather(*(first(label, method, kwargs) for label, method, kwargs, _ in CALLS[venue]))
                assert not failures, f"{venue}: calls failed: {failures}"
                h.market.volatility = 0.0                   # freeze the book; trades keep printing
                h.market.noise = 0.0
                tape = h.server.states[native].tape

                mismatch = []

                def settled():
                    mismatch.clear()
                    row = h.row(instrument)
                    bids, asks = row_levels(row["bids"]), row_levels(row["asks"])
                    rendered = h.server.last_books[native]
                    if row["status"] != RowStatus.LIVE or \
                            (bids, asks) != (row_levels(rendered[0]), row_levels(rendered[1])):
                        mismatch.append(("our feed", row["status"], bids, asks))
                    for label, _method, _kwargs, kind in CALLS[venue]:
                        client = clients[label]
                        if kind == "book":
                            book = client.orderbooks.get(instrument)
                            got = book and (levels(book["bids"]), levels(book["asks"]))
                            if got != (bids, asks):
                                mismatch.append((label, got))
                        elif kind in ("ticker", "bidask"):
                            ticker = (client.bidsasks if kind == "bidask" else client.tickers).get(instrument) or {}
                            if (ticker.get("bid"), ticker.get("ask")) != (bids[0][0], asks[0][0]):
                                mismatch.append((label, ticker.get("bid"), ticker.get("ask"), bids[0], asks[0]))
                    return not mismatch

                try:
                    await h.until(settled, 10, f"{venue}: ccxt and our feed to end on the same book")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}: {mismatch}") from None
                for label, _method, _kwargs, kind in CALLS[venue]:
                    client = clients[label]
                    if kind == "trades":
                        trades = client.trades.get(instrument) or []
                        assert trades, f"{venue} {label}: no trades"
                        printed = {(t.ts_ms, round(t.price, 8), round(t.qty, 6)) for t in tape.recent}
                        seen = {(t["timestamp"], round(t["price"], 8), round(t["amount"], 6)) for t in trades[-5:]}
                        assert seen <= printed, f"{venue} {label}: trades the simulator did not print: {seen - printed}"
                    if kind == "statistics":
                        ticker = client.tickers.get(instrument) or {}
                        assert ticker.get("high") and ticker.get("low") and ticker["low"] <= ticker["high"], \
                            f"{venue} {label}: no 24 h statistics in {ticker}"
            finally:
                for client in clients.values():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.close(), 5)
        assert h.server.handler_errors == 0
        if venue == "binance":
            assert any("/api/v3/depth" in url for url in rest_calls), rest_calls
        else:
            assert rest_calls == []

    run(scenario())


# ---------------------------------------------------------------- hand-written clients that follow the docs
@contextlib.asynccontextmanager
async def simulated(venue: str, instrument: str = "BTC/USDT", **rules):
    from pipeline.sim.market import Market
    from pipeline.sim.protocol import Rules
    from pipeline.sim.server import Simulator
    from pipeline.venues import load_venue
    native = load_venue(venue).native_symbol(instrument)
    market = Market([venue], [instrument], seed=5, depth=10, random_dislocations=False)
    sim = Simulator({venue: {instrument: native}}, market, 20)
    await sim.start()
    server = sim.exchanges[venue]
    server.rules = Rules(**rules)
    stop = asyncio.Event()
    task = asyncio.ensure_future(sim.run(stop))
    try:
        yield server, f"ws://{HOST}:{server.port}"
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        await sim.close()


async def frames_until(ws, predicate, timeout: float = 5.0):
    """Frames received until one satisfies ``predicate``; that frame last."""
    import gzip

    import orjson
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.01))
        msg = orjson.loads(gzip.decompress(raw) if isinstance(raw, bytes) else raw)
        seen.append(msg)
        if predicate(msg):
            return seen
    raise AssertionError(f"timed out; received {seen[-3:]}")


def test_binance_url_subscriptions_raw_payloads_and_unknown_streams_over_the_wire():
    from websockets.asyncio.client import connect

    async def scenario():
        async with simulated("binance") as (server, base):
            async with connect(base + "/stream?streams=btcusdt@bookTicker/btcusdt@trade") as ws:
                got = await frames_until(ws, lambda m: m.get("stream") == "btcusdt@trade")
                assert got[-1]["data"]["e"] == "trade" and all("data" in m for m in got)
            async with connect(base + "/ws/btcusdt@depth@100ms") as ws:
                got = await frames_until(ws, lambda m: m.get("e") == "depthUpdate")
                assert "stream" not in got[-1] and got[-1]["s"] == "BTCUSDT"
            async with connect(base + "/ws") as ws:
                await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@miniTicker"],"id":1}')
                await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":2}')
                got = await frames_until(ws, lambda m: m.get("id") == 2)
                assert got[-1]["error"]["code"] == 2
                got += await frames_until(ws, lambda m: m.get("e") == "24hrMiniTicker")  # still served
                assert {"result": None, "id": 1} in got and "stream" not in got[-1]
        assert server.handler_errors == 0

    run(scenario())


def test_each_venue_answers_only_on_its_documented_paths():
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    wrong = {"binance": "/api", "bybit": "/v5/public/linear", "okx": "/ws/v5/business", "htx": "/linear-swap-ws",
             "coinbase": "/v2", "kraken": "/"}                  # kraken "/" is v1, which is not simulated

    async def scenario():
        for venue, path in wrong.items():
            instrument = "BTC/USD" if venue in ("coinbase", "kraken") else "BTC/USDT"
            async with simulated(venue, instrument) as (server, base):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(base + path):
                        pass
                assert refused.value.response.status_code == 404, venue
                async with connect(server.url(HOST)):        # the documented path still opens
                    pass

    run(scenario())


def test_htx_closes_a_client_that_ignores_pings_only_with_the_rule():
    import gzip

    import orjson
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def answer_pings(ws, answered: list):
        async for raw in ws:
            msg = orjson.loads(gzip.decompress(raw))
            if "ping" in msg:
                await ws.send(orjson.dumps({"pong": msg["ping"]}).decode())
                answered.append(msg["ping"])

    async def scenario():
        async with simulated("htx", missed_pongs=True) as (server, base):
            server.keepalive_s = 0.2
            async with connect(base + "/ws") as deaf, connect(base + "/ws") as polite:
                answered: list = []
                responder = asyncio.ensure_future(answer_pings(polite, answered))
                with pytest.raises(ConnectionClosed) as closed:
                    await frames_until(deaf, lambda m: False, 5)
                assert closed.value.rcvd.code == 1003
                await async_wait_until(lambda: len(answered) >= 8 or responder.done(), 5, "pings answered")
                assert len(answered) >= 8 and not responder.done()    # the one that answers stays
                responder.cancel()
        async with simulated("htx") as (server, base):
            server.keepalive_s = 0.1
            async with connect(base + "/ws") as deaf:
                pings = []                                             # 8 pings left unanswered
                await frames_until(deaf, lambda m: "ping" in m and pings.append(m) is None and len(pings) >= 8)
                await deaf.send('{"ping": 1}')
                await frames_until(deaf, lambda m: m.get("pong") == 1)  # still open without the rule

    run(scenario())


def test_idle_timeout_and_message_rate_rules():
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def scenario():
        async with simulated("okx", idle_timeout=True, idle_timeout_s=0.5) as (server, base):
            async with connect(base + "/ws/v5/public") as idle:
                with pytest.raises(ConnectionClosed):
                    await frames_until(idle, lambda m: False, 5)
            async with connect(base + "/ws/v5/public") as busy:
                await busy.send('{"op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"}]}')
                await asyncio.sleep(1.0)
                await busy.send("ping")                # data kept flowing: still open
                while await asyncio.wait_for(busy.recv(), 2) != "pong":
                    pass
        async with simulated("binance", message_rate=True) as (server, base):
            async with connect(base + "/ws") as chatty:
                for i in range(7):
                    await chatty.send('{"method":"LIST_SUBSCRIPTIONS","id":%d}' % i)
                with pytest.raises(ConnectionClosed) as closed:
                    await frames_until(chatty, lambda m: False, 5)
                assert closed.value.rcvd.code == 1008

    run(scenario())


def test_a_protocol_exception_is_logged_and_the_connection_stays_open():
    from websockets.asyncio.client import connect

    async def scenario():
        async with simulated("bybit") as (server, base):
            original = server.protocol_class.on_message

            def broken(self, frame):
                if "boom" in str(frame):
                    raise RuntimeError("simulated protocol bug")
                return original(self, frame)

            server.protocol_class = type("Broken", (server.protocol_class,), {"on_message": broken})
            async with connect(base + "/v5/public/spot") as ws:
                await ws.send('{"op":"boom"}')
                await ws.send('{"op":"ping","req_id":"after"}')
                got = await frames_until(ws, lambda m: m.get("req_id") == "after")
                assert got[-1]["ret_msg"] == "pong"
            assert server.handler_errors == 1

    run(scenario())


def test_simulate_subcommand_prints_urls_that_serve_and_stops_on_ctrl_c(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from websockets.asyncio.client import connect


    proc = subprocess.Popen([sys.executable, "run.py", "simulate", "--config", "configs/demo.yaml"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = {}
        while True:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            if line.startswith("simulating"):
                break
            fields = line.split()
            printed[fields[0]] = (fields[2], fields[4])
        assert set(printed) == {"binance", "bybit", "okx", "htx", "coinbase", "kraken"}
        ws_url, rest = printed["binance"]
        assert ws_url.startswith("ws://127.0.0.1:") and rest.startswith("http://127.0.0.1:")

        async def client():
            async with connect(ws_url.replace("/stream", "/ws/btcusdt@bookTicker")) as ws:
                return await frames_until(ws, lambda m: m.get("s") == "BTCUSDT")

        assert run(client())
        import urllib.request
        with urllib.request.urlopen(rest + "/api/v3/depth?symbol=BTCUSDT&limit=5", timeout=5) as response:
            import json
            body = json.loads(response.read())
        assert len(body["bids"]) == 5 and body["lastUpdateId"] > 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------- cryptofeed 2.4.1 (wss only, Kraken v1 only)
# cryptofeed refuses ws:// and reads its REST snapshot through aiohttp, whose verified TLS context is built
# at import; so the simulator serves TLS with a throw-away certificate and the client runs in a child process
# (tests/integration/cryptofeed_client.py) with SSL_CERT_FILE naming that certificate. Kraken is left out: 2.4.1 speaks
# Kraken's v1 protocol, which the simulator does not serve (it serves v2, as wss://ws.kraken.com/v2 does).
# venues cryptofeed cannot be pointed at, and why (shown as the skip reason)
CRYPTOFEED_CANNOT = {"kraken": "cryptofeed 2.4.1 speaks Kraken's v1 API; the simulator serves v2"}


def self_signed(directory) -> tuple[str, str]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = f"{directory}/cert.pem", f"{directory}/key.pem"
    with open(certfile, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return certfile, keyfile


@pytest.mark.parametrize("venue", VENUES)
def test_cryptofeed_ends_on_the_simulators_book(venue, tmp_path):
    if venue in CRYPTOFEED_CANNOT:
        pytest.skip(CRYPTOFEED_CANNOT[venue])
    # every other registered venue: a new one fails here until it is declared above
    assert venue in CRYPTOFEED, f"{venue}: no cryptofeed instrument declared in CRYPTOFEED"
    import json
    import os
    import ssl
    import sys
    from decimal import Decimal

    certfile, keyfile = self_signed(tmp_path)

    async def scenario():
        from pipeline.sim.market import Market
        from pipeline.sim.server import Simulator
        instrument, _ = CRYPTOFEED[venue]
        from pipeline.venues import load_venue
        native = load_venue(venue).native_symbol(instrument)
        market = Market([venue], [instrument], seed=5, depth=10, random_dislocations=False)
        sim = Simulator({venue: {instrument: native}}, market, 20)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        urls = await sim.start(None, context)
        assert urls[venue].startswith("wss://")
        server = sim.exchanges[venue]
        stop = asyncio.Event()
        stepping = asyncio.ensure_future(sim.run(stop))
        env = dict(os.environ, SSL_CERT_FILE=certfile, PYTHONPATH=str(REPO))
        child = await asyncio.create_subprocess_exec(
            sys.executable, cryptofeed_client.__file__, venue, str(server.port), cwd=str(REPO), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        last: dict = {}
        frozen = False
        try:
            async def want(predicate, timeout):
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    line = await asyncio.wait_for(child.stdout.readline(), max(deadline - time.monotonic(), 0.01))
                    assert line, (await child.stderr.read()).decode()[-3000:]
                    msg = json.loads(line)
                    last.setdefault(msg["kind"], []).append(msg)
                    if predicate():
                        return
                raise AssertionError(f"{venue}: timed out; last {[(k, v[-1]) for k, v in last.items()]}")

            def book_matches():
                nonlocal frozen
                kinds = {"book", "trade"} | ({"ticker"} if venue in ("binance", "okx", "htx") else set())
                if set(last) < kinds:
                    return False
                if not frozen:
                    market.volatility = market.noise = 0.0
                    frozen = True
                    return False
                state = server.states[native]
                expected = [[Decimal(f"{p:.8f}"), Decimal(f"{q:.8f}")] for p, q in state.bids[:5]], \
                    [[Decimal(f"{p:.8f}"), Decimal(f"{q:.8f}")] for p, q in state.asks[:5]]
                book = last["book"][-1]
                got = ([[Decimal(p), Decimal(q)] for p, q in book["bids"]],
                       [[Decimal(p), Decimal(q)] for p, q in book["asks"]])
                ticker = last.get("ticker", [None])[-1]
                ticker_ok = ticker is None or \
                    (Decimal(ticker["bid"]), Decimal(ticker["ask"])) == (expected[0][0][0], expected[1][0][0])
                return got == expected and ticker_ok

            await want(book_matches, 20)
            printed = {(round(t.price, 8), round(t.qty, 6)) for t in server.states[native].tape.recent}
            seen = {(round(float(t["price"]), 8), round(float(t["amount"]), 6)) for t in last["trade"][-3:]}
            assert seen <= printed, f"{venue}: trades the simulator did not print: {seen - printed}"
            assert server.handler_errors == 0
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()
            stop.set()
            await asyncio.wait_for(stepping, 5)
            await sim.close()

    run(scenario())
