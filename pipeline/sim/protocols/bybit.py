"""Simulated Bybit v5 public spot endpoint (``/v5/public/spot``).

``u`` counts per topic, ``seq`` (the cross sequence) once for both topics, so
``orderbook.1`` and ``orderbook.50`` can be ordered by ``seq``. Quirks:
``late_depth`` (every orderbook.50 message one step late), ``resend_unchanged``
(an unchanged orderbook.1 re-sent with the same ``u``, as Bybit does every
3 s), and a service restart (``reset_next``): the next orderbook.50 message is
a snapshot with ``u`` 1 and both topics count again from 1.
"""
from __future__ import annotations

import uuid

import orjson

from pipeline.sim.protocols.base import BBO, DEPTH, SimProtocol


FIRST_UPDATE_ID = 20_404_753    # a fresh subscription does not start at u 1 (that means a restart)


class Protocol(SimProtocol):
    NAME = "bybit"
    DEPTH_LEVELS = 50

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.conn_id = str(uuid.UUID(int=0x5EED))
        self.update_ids: dict[tuple[str, int], int] = {}
        self.seq = 4_000_000_000
        self.last_top: dict[str, tuple] = {}

    def on_message(self, frame) -> list:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return [orjson.dumps({"success": False, "ret_msg": "error:invalid op", "conn_id": self.conn_id}).decode()]
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "ping":
            return [orjson.dumps({"success": True, "ret_msg": "pong", "conn_id": self.conn_id, "op": "ping"}).decode()]
        if op in ("subscribe", "unsubscribe"):
            args = msg.get("args") or []
            if op == "subscribe" and len(args) > 10:
                return [orjson.dumps({"success": False, "ret_msg": "args size >10", "conn_id": self.conn_id,
                                      "op": op}).decode()]
            for topic in args:
                parts = topic.split(".")
                if len(parts) != 3 or parts[0] != "orderbook" or not self.accepts(parts[2]):
                    return [orjson.dumps({"success": False, "ret_msg": f"Invalid topic: {topic}",
                                          "conn_id": self.conn_id, "op": op}).decode()]
            for topic in args:
                _, levels, symbol = topic.split(".")
                channel = BBO if levels == "1" else DEPTH
                if op == "subscribe":
                    self.subscribe(symbol, channel)
                    self.update_ids.pop((symbol, channel), None)
                else:
                    self.unsubscribe(symbol, channel)
            reply = {"success": True, "ret_msg": op, "conn_id": self.conn_id, "op": op}
            if "req_id" in msg:
                reply["req_id"] = msg["req_id"]
            return [orjson.dumps(reply).decode()]
        return [orjson.dumps({"success": False, "ret_msg": "error:invalid op", "conn_id": self.conn_id,
                              "request": {"op": op or "", "args": None}}).decode()]

    def render(self, symbol, channel, bids, asks, ts_ms) -> list:
        key = (symbol, channel)
        restart = channel == DEPTH and symbol in self.reset_next
        if restart:
            self.reset_next.discard(symbol)
            self.update_ids[(symbol, BBO)] = 0
            self.update_ids[key] = 0
            self.sent_books.pop(symbol, None)               # u == 1 is a snapshot
        if channel == BBO and self.quirks.resend_unchanged:
            top = (tuple(bids[:1]), tuple(asks[:1]))
            if self.last_top.get(symbol) == top and key in self.update_ids:
                self.update_ids[key] -= 1                   # the same u again: nothing new
            self.last_top[symbol] = top
        u = self.update_ids.get(key, FIRST_UPDATE_ID) + 1
        self.update_ids[key] = u
        self.seq += 1
        px, qty = self.fmt_px, self.fmt_qty
        if channel == BBO:
            kind, b, a, levels = "snapshot", bids[:1], asks[:1], 1
        else:
            snapshot, b, a = self.depth_delta(symbol, bids, asks)
            kind, levels = ("snapshot" if snapshot else "delta"), self.DEPTH_LEVELS
        msg = {"topic": f"orderbook.{levels}.{symbol}", "ts": ts_ms, "type": kind,
               "data": {"s": symbol, "b": [[px(symbol, p), qty(q)] for p, q in b],
                        "a": [[px(symbol, p), qty(q)] for p, q in a], "u": u, "seq": self.seq},
               "cts": ts_ms}
        frames = [orjson.dumps(msg).decode()]
        return frames if channel == BBO else self.late(symbol, frames)
