"""The cryptofeed 2.4.1 client of ``tests/integration/test_clients.py``, run by it as a child process:
``python tests/integration/cryptofeed_client.py VENUE PORT`` follows the venue's book, trades and ticker on the
simulator at wss://127.0.0.1:PORT and prints a JSON line per callback.

A script of its own, importing cryptofeed and nothing of the tests: run as the test file itself, each child
also imported pytest, numpy and the test harness (about 0.4 s of CPU a venue).
"""
from __future__ import annotations

import asyncio

HOST = "127.0.0.1"
# venue -> (instrument, the exchange's symbol) cryptofeed follows
CRYPTOFEED = {"binance": ("BTC/USDT", "BTCUSDT"), "bybit": ("BTC/USDT", "BTC/USDT"), "okx": ("BTC/USDT", "BTC-USDT"),
              "htx": ("BTC/USDT", "btcusdt"), "coinbase": ("BTC/USD", "BTC-USD")}


def main(venue: str, port: int) -> None:
    """The child process: one cryptofeed feed (book, trades, ticker where it has one), a JSON line per callback."""
    import json
    import sys

    from cryptofeed import FeedHandler
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
    from cryptofeed.defines import L2_BOOK, SPOT, TICKER, TRADES
    from cryptofeed.exchanges import OKX, Binance, Bybit, Coinbase, Huobi
    from cryptofeed.symbols import Symbols

    cls = {"binance": Binance, "bybit": Bybit, "okx": OKX, "htx": Huobi, "coinbase": Coinbase}[venue]
    instrument, native = CRYPTOFEED[venue]
    symbol = instrument.replace("/", "-")
    base = f"{HOST}:{port}"
    Symbols.set(cls.id, {symbol: native}, {"instrument_type": {symbol: SPOT}, "tick_size": {symbol: 0.01}})
    endpoints = {
        "binance": [WebsocketEndpoint(f"wss://{base}")],
        "bybit": [WebsocketEndpoint(f"wss://{base}/v5/public/spot", options={"compression": None})],
        "okx": [WebsocketEndpoint(f"wss://{base}/ws/v5/public", options={"compression": None})],
        "htx": [WebsocketEndpoint(f"wss://{base}/ws")],
        "coinbase": [WebsocketEndpoint(f"wss://{base}", options={"compression": None})],
    }[venue]
    rest = [RestEndpoint(f"https://{base}", routes=Routes("/api/v3/exchangeInfo",
                                                          l2book="/api/v3/depth?symbol={}&limit={}"))]
    feed_class = type("Simulated" + cls.__name__, (cls,), {"websocket_endpoints": endpoints, "rest_endpoints": rest})

    def emit(**fields):
        sys.stdout.write(json.dumps(fields, default=str) + "\n")
        sys.stdout.flush()

    async def book(update, receipt):
        emit(kind="book", bids=[[str(p), str(q)] for p, q in list(update.book.bids.to_list())[:5]],
             asks=[[str(p), str(q)] for p, q in list(update.book.asks.to_list())[:5]])

    async def trade(update, receipt):
        emit(kind="trade", price=str(update.price), amount=str(update.amount), timestamp=update.timestamp)

    async def ticker(update, receipt):
        emit(kind="ticker", bid=str(update.bid), ask=str(update.ask))

    callbacks = {L2_BOOK: book, TRADES: trade}
    if venue in ("binance", "okx", "htx"):
        callbacks[TICKER] = ticker
    options = {}
    if venue == "coinbase":                    # 2.4.1 signs even public subscriptions: a throw-away key
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        secret = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()).decode()
        options["config"] = {"coinbase": {"key_id": "organizations/sim/apiKeys/sim", "key_secret": secret}}
    async def serve_until_killed():
        handler = FeedHandler()
        handler.add_feed(feed_class(symbols=[symbol], channels=list(callbacks), callbacks=callbacks, **options))
        handler.run(start_loop=False)
        await asyncio.Event().wait()

    asyncio.run(serve_until_killed())


if __name__ == "__main__":
    import sys
    main(sys.argv[1], int(sys.argv[2]))
