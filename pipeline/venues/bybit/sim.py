"""Simulated Bybit v5 public spot endpoint (``/v5/public/spot``).

``u`` counts per topic, ``seq`` (the cross sequence) once for both topics, so
``orderbook.1`` and ``orderbook.50`` can be ordered by ``seq``. Quirks:
``late_depth`` (every orderbook.50 message one step late), ``resend_unchanged``
(an unchanged orderbook.1 re-sent with the same ``u``, as Bybit does every
3 s), and a service restart (``reset_next``): the next orderbook.50 message is
a snapshot with ``u`` 1 and both topics count again from 1.

Other public spot topics, as documented: ``orderbook.200`` / ``orderbook.1000``
(snapshot then deltas, under the topic that was asked for, from the same
market book), ``tickers.<SYM>`` (the spot shape: snapshot only, every 50 ms,
24 h statistics, no bid/ask) and ``publicTrade.<SYM>`` (every simulated
trade). Anything else, ``orderbook.7`` included, is refused
``{"success":false,"ret_msg":"Invalid topic: ..."}`` and nothing is subscribed.
``req_id`` is echoed on every reply that had one (ping included), and
``conn_id`` is new on every connection. Rule ``idle_timeout``: 10 minutes
without a ping or a push closes the connection.
"""
from __future__ import annotations

import uuid

import orjson

from pipeline.sim.protocol import BBO, DEPTH, SimProtocol


FIRST_UPDATE_ID = 20_404_753    # a fresh subscription does not start at u 1 (that means a restart)
OTHER_DEPTHS = ("200", "1000")


class Protocol(SimProtocol):
    NAME = "bybit"
    PATHS = ("/v5/public/spot",)
    DEPTH_LEVELS = 50
    IDLE_TIMEOUT_S = 600

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.conn_id = str(uuid.uuid4())
        self.update_ids: dict[tuple[str, int], int] = {}
        self.seq = 4_000_000_000
        self.last_top: dict[str, tuple] = {}

    def on_message(self, frame) -> list:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return [orjson.dumps({"success": False, "ret_msg": "error:invalid op", "conn_id": self.conn_id}).decode()]
        op = msg.get("op") if isinstance(msg, dict) else None
        op = op if isinstance(op, str) else None
        head = {"req_id": msg["req_id"]} if isinstance(msg, dict) and isinstance(msg.get("req_id"), str) else {}
        if op == "ping":
            return [self._reply({"success": True, "ret_msg": "pong", "conn_id": self.conn_id, **head, "op": "ping"})]
        if op in ("subscribe", "unsubscribe"):
            args = msg.get("args") or []
            if not isinstance(args, list):
                args = [args]
            if op == "subscribe" and len(args) > 10:
                return [self._reply({"success": False, "ret_msg": "args size >10", "conn_id": self.conn_id,
                                     **head, "op": op})]
            parsed = []
            for topic in args:
                channel = self._channel(topic)
                if channel is None:
                    return [self._reply({"success": False, "ret_msg": f"Invalid topic: {str(topic)[:200]}",
                                         "conn_id": self.conn_id, **head, "op": op})]
                parsed.append((topic.rsplit(".", 1)[1], channel))
            for symbol, channel in parsed:
                if op == "subscribe":
                    self.subscribe(symbol, channel)
                    self.update_ids.pop((symbol, channel), None)
                else:
                    self.unsubscribe(symbol, channel)
            return [self._reply({"success": True, "ret_msg": op, "conn_id": self.conn_id, **head, "op": op})]
        return [self._reply({"success": False, "ret_msg": "error:invalid op", "conn_id": self.conn_id, **head,
                             "request": {"op": op or "", "args": None}})]

    @staticmethod
    def _reply(msg: dict) -> str:
        return orjson.dumps(msg).decode()

    def _channel(self, topic):
        """BBO / DEPTH for the topics our own feed takes, the topic kind for the others; None if not served."""
        parts = topic.split(".") if isinstance(topic, str) else []
        if len(parts) == 3 and parts[0] == "orderbook" and self.accepts(parts[2]):
            levels = parts[1]
            return BBO if levels == "1" else DEPTH if levels == "50" else \
                f"orderbook.{levels}" if levels in OTHER_DEPTHS else None
        if len(parts) == 2 and parts[0] in ("tickers", "publicTrade") and self.accepts(parts[1]):
            return parts[0]
        return None

    def render_stream(self, symbol, channel, state) -> list:
        ts = state.ts_ms
        px = self.fmt_px
        if channel == "tickers":
            if not self.due(symbol, channel, ts, 50):
                return []
            tape = state.tape
            self.seq += 1
            data = {"symbol": symbol, "lastPrice": px(symbol, tape.last_price), "highPrice24h": px(symbol, tape.high),
                    "lowPrice24h": px(symbol, tape.low), "prevPrice24h": px(symbol, tape.open),
                    "volume24h": f"{tape.volume:.6f}", "turnover24h": f"{tape.quote_volume:.8f}",
                    "price24hPcnt": f"{tape.change_pct / 100:.4f}", "usdIndexPrice": px(symbol, tape.last_price)}
            return [self._reply({"topic": f"tickers.{symbol}", "ts": ts, "type": "snapshot", "cs": self.seq,
                                 "data": data})]
        if channel == "publicTrade":
            if not state.trades:
                return []
            trades = []
            for trade in state.trades:
                self.seq += 1
                trades.append({"i": str(trade.trade_id), "T": trade.ts_ms, "p": px(symbol, trade.price),
                               "v": self.fmt_qty(trade.qty), "S": "Buy" if trade.side == "buy" else "Sell",
                               "seq": self.seq, "s": symbol, "BT": False, "RPI": False})
            return [self._reply({"topic": f"publicTrade.{symbol}", "ts": ts, "type": "snapshot", "data": trades})]
        levels = int(channel.split(".")[1])
        snapshot, b, a = self.depth_delta(symbol, state.bids, state.asks, key=(symbol, channel), levels=levels)
        if not snapshot and not b and not a:
            return []
        key = (symbol, channel)
        u = self.update_ids.get(key, FIRST_UPDATE_ID) + 1
        self.update_ids[key] = u
        self.seq += 1
        qty = self.fmt_qty
        return [self._reply({"topic": channel + "." + symbol, "ts": ts, "type": "snapshot" if snapshot else "delta",
                             "data": {"s": symbol, "b": [[px(symbol, p), qty(q)] for p, q in b],
                                      "a": [[px(symbol, p), qty(q)] for p, q in a], "u": u, "seq": self.seq},
                             "cts": ts})]

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
