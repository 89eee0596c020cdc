"""Simulated Binance spot combined-stream endpoint (``/stream``).

bookTicker ``u`` and partial depth ``lastUpdateId`` come from one counter (one
order book). Quirks: ``late_depth`` sends every depth snapshot one step late,
after a bookTicker with a higher ``u`` (what the merge by id must survive);
:meth:`Protocol.render_shutdown` is the combined-stream ``serverShutdown``.
"""
from __future__ import annotations

import orjson

from pipeline.sim.protocols.base import BBO, DEPTH, SimProtocol


class Protocol(SimProtocol):
    NAME = "binance"

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.update_id = 1_000_000
        self.depth_levels: dict[str, int] = {}

    def on_message(self, frame) -> list:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return [orjson.dumps({"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}).decode()]
        if not isinstance(msg, dict) or "method" not in msg:
            return [orjson.dumps({"code": 2, "msg": "Invalid request: missing field `method`"}).decode()]
        method = msg["method"]
        params = msg.get("params") or []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            for stream in params:
                name, _, kind = stream.partition("@")
                symbol = name.upper()
                if not self.accepts(symbol):
                    continue  # real Binance acks unknown streams and never sends data for them
                channel = BBO if kind == "bookTicker" else DEPTH
                if channel == DEPTH:
                    self.depth_levels[symbol] = int(kind.split("@")[0][len("depth"):] or 5)
                (self.subscribe if method == "SUBSCRIBE" else self.unsubscribe)(symbol, channel)
            return [orjson.dumps({"result": None, "id": msg.get("id")}).decode()]
        if method == "LIST_SUBSCRIPTIONS":
            return [orjson.dumps({"result": [self._stream(s, c) for s, c in self.subscriptions],
                                  "id": msg.get("id")}).decode()]
        return [orjson.dumps({"code": 2, "msg": f"Invalid request: unknown method {method}"}).decode()]

    def _stream(self, symbol: str, channel: int) -> str:
        if channel == BBO:
            return f"{symbol.lower()}@bookTicker"
        return f"{symbol.lower()}@depth{self.depth_levels.get(symbol, 5)}@100ms"

    def render_shutdown(self, now_ms: int) -> list:
        return [orjson.dumps({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": now_ms}}).decode()]

    def render(self, symbol, channel, bids, asks, ts_ms) -> list:
        self.update_id += 1
        px = self.fmt_px
        if channel == BBO:
            data = {"u": self.update_id, "s": symbol, "b": px(symbol, bids[0][0]), "B": self.fmt_qty(bids[0][1]),
                    "a": px(symbol, asks[0][0]), "A": self.fmt_qty(asks[0][1])}
        else:
            n = self.depth_levels.get(symbol, 5)
            data = {"lastUpdateId": self.update_id,
                    "bids": [[px(symbol, p), self.fmt_qty(q)] for p, q in bids[:n]],
                    "asks": [[px(symbol, p), self.fmt_qty(q)] for p, q in asks[:n]]}
        frames = [orjson.dumps({"stream": self._stream(symbol, channel), "data": data}).decode()]
        return frames if channel == BBO else self.late(symbol, frames)
