"""toyex's simulator side: acks subscriptions, renders the market as ``bbo`` and ``depth`` pushes."""
from __future__ import annotations

import orjson

from pipeline.sim.protocol import BBO, DEPTH, SimProtocol


class Protocol(SimProtocol):
    NAME = "toyex"
    PATHS = ("/ws",)

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.u = 0

    def on_message(self, frame) -> list:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return [orjson.dumps({"op": "error", "msg": "bad json"}).decode()]
        if not isinstance(msg, dict) or msg.get("op") != "subscribe" or not isinstance(msg.get("symbols"), list):
            return [orjson.dumps({"op": "error", "msg": "unknown request"}).decode()]
        for symbol in msg["symbols"]:
            if not isinstance(symbol, str) or not self.accepts(symbol):
                return [orjson.dumps({"op": "error", "msg": f"unknown symbol {str(symbol)[:40]}",
                                      "symbol": str(symbol)[:40]}).decode()]
        for symbol in msg["symbols"]:
            self.subscribe(symbol, BBO)
            self.subscribe(symbol, DEPTH)
        return [orjson.dumps({"op": "subscribed", "symbols": msg["symbols"]}).decode()]

    def render(self, symbol, channel, bids, asks, ts_ms) -> list:
        self.u += 1
        px, qty = self.fmt_px, self.fmt_qty
        if channel == BBO:
            (b, bq), (a, aq) = bids[0], asks[0]
            return [orjson.dumps({"ch": "bbo", "s": symbol, "u": self.u, "t": ts_ms, "b": px(symbol, b), "B": qty(bq),
                                  "a": px(symbol, a), "A": qty(aq)}).decode()]
        n = self.DEPTH_LEVELS
        return [orjson.dumps({"ch": "depth", "s": symbol, "u": self.u, "t": ts_ms,
                              "bids": [[px(symbol, p), qty(q)] for p, q in bids[:n]],
                              "asks": [[px(symbol, p), qty(q)] for p, q in asks[:n]]}).decode()]
