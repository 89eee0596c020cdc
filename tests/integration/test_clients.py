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

import ccxt.pro
import pytest

from pipeline.board import RowStatus
from tests.integration.harness import FeedHarness

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
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
               ("watch_ticker (ticker)", "watch_ticker", {}, "statistics"),
               ("watch_trades (trade)", "watch_trades", {}, "trades")],
}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


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


@pytest.mark.parametrize("venue", list(CALLS))
def test_ccxt_pro_client_ends_on_our_feeds_book(venue):
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
                except Exception as exc:               # collected and reported per call below
                    failures[label] = repr(exc)

            try:
                await asyncio.gather(*(first(label, method, kwargs) for label, method, kwargs, _ in CALLS[venue]))
                assert not failures, f"{venue}: calls failed: {failures}"
                h.market.volatility = 0.0                   # freeze the book; trades keep printing
                h.market.noise = 0.0
                await asyncio.sleep(0.1)
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
                    for label, method, kwargs, kind in CALLS[venue]:
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
                for label, method, kwargs, kind in CALLS[venue]:
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
