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

Reference data: ``GET /v5/market/instruments-info?category=spot`` (``symbol=`` narrows it) lists every simulated
symbol in the documented spot shape (``lotSizeFilter``, ``priceFilter``, numbers as strings); a halted symbol's
``status`` is ``Closed``. Another category answers ``retCode`` 10001.
"""
from __future__ import annotations

import time
import uuid

import orjson

from pipeline.sim.protocol import BBO, DEPTH, InstrumentRule, SimProtocol
from pipeline.venues.bybit import account as account_rules

FIRST_UPDATE_ID = 20_404_753    # a fresh subscription does not start at u 1 (that means a restart)
OTHER_DEPTHS = ("200", "1000")

# Trading rules served by /v5/market/instruments-info, from tests/fixtures/bybit/reference_data.json: BTCUSDT (the
# docs' spot example, 2026) and ETHUSDT (the docs' 2023 example; its maxOrderQty is the maximum); no SOL record.
REFERENCE_RULES = {
    "BTC/USDT": InstrumentRule(tick="0.1", step="0.000001", min_qty="0.000011", max_qty="83", min_notional="5"),
    "ETH/USDT": InstrumentRule(tick="0.01", step="0.00001", min_qty="0.0005", max_qty="100000000", min_notional="1"),
}


def _instrument(symbol: str, rule: InstrumentRule) -> dict:
    base, quote = rule.assets()
    max_qty = rule.max_qty or "100000000"
    return {"symbol": symbol, "baseCoin": base, "quoteCoin": quote, "innovation": "0",
            "status": Protocol.HALTED if rule.halted else "Trading", "marginTrading": "none", "stTag": "0",
            "lotSizeFilter": {"basePrecision": rule.step, "quotePrecision": "0.0000001", "minOrderQty": rule.min_qty,
                              "maxOrderQty": max_qty, "minOrderAmt": rule.min_notional, "maxOrderAmt": "8000000",
                              "maxLimitOrderQty": max_qty, "maxMarketOrderQty": max_qty},
            "priceFilter": {"tickSize": rule.tick},
            "riskParameters": {"priceLimitRatioX": "0.005", "priceLimitRatioY": "0.01"}, "symbolType": ""}



def _one() -> int:
    return 1

class Protocol(SimProtocol):
    NAME = "bybit"
    REFERENCE_RULES = REFERENCE_RULES
    HALTED = "Closed"
    PATHS = ("/v5/public/spot",)
    DEPTH_LEVELS = 50
    IDLE_TIMEOUT_S = 600

    @classmethod
    def render_account(cls, request, account):
        """``GET /v5/account/fee-rate``: the ``X-BAPI-*`` headers checked like Bybit (``retCode`` 10003 for an
        unknown key, 10004 for a bad sign, in an HTTP 200); the account's rates per listed symbol."""
        head = request.headers
        envelope = {"retExtInfo": {}, "time": int(time.time() * 1000)}
        if head.get("x-bapi-api-key") != account.credentials.key:
            return 200, {"retCode": 10003, "retMsg": "API key is invalid.", "result": {}, **envelope}
        expected = account_rules.sign(head.get("x-bapi-timestamp", ""), account.credentials.key,
                                      head.get("x-bapi-recv-window", ""), request.raw_query, account.credentials.secret)
        if head.get("x-bapi-sign") != expected:
            return 200, {"retCode": 10004, "retMsg": "error sign! origin_string[...]", "result": {}, **envelope}
        wanted = request.query.get("symbol")
        listed = [s for s in account.symbols if wanted in (None, s)]
        return 200, {"retCode": 0, "retMsg": "OK", "result": {"list": [
            {"symbol": s, "takerFeeRate": account.taker, "makerFeeRate": account.maker} for s in listed]}, **envelope}

    @classmethod
    def render_rest(cls, path, query, states, decimals, rules=None):
        if path.rstrip("/") != "/v5/market/instruments-info":
            return 404, {"retCode": 10001, "retMsg": f"not served by the simulator: {path}"}
        now = int(time.time() * 1000)
        if query.get("category") != "spot":
            return 200, {"retCode": 10001, "retMsg": "params error: Category is invalid", "result": {},
                         "retExtInfo": {}, "time": now}
        rules = rules or {}
        wanted = [query["symbol"]] if "symbol" in query else list(rules)
        items = [_instrument(symbol, rules[symbol]) for symbol in wanted if symbol in rules]
        return 200, {"retCode": 0, "retMsg": "OK", "result": {"category": "spot", "list": items,
                                                              "nextPageCursor": ""}, "retExtInfo": {}, "time": now}

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.conn_id = str(uuid.uuid4())
        self.update_ids: dict[tuple[str, int], int] = {}
        self.seq = 4_000_000_000
        self.last_top: dict[str, tuple] = {}

    def _cross_seq(self, symbol: str, push: str) -> int:
        """The ``seq`` of this market step's ``push`` of ``symbol`` (a channel's frame, a trade), the same on every
        connection. Bybit's "Cross sequence" orders the venue's own events ("You can use this field to compare
        different levels orderbook data, and for the smaller seq, then it means the data is generated
        earlier"): one engine numbers them, whatever connection relays them, so a feed reading two connections
        tells their copies apart by it. Without shared state (a protocol rendering alone), the connection's
        own counter."""
        seq = self.shared_id(symbol, push, "bybit_seq", 4_000_000_000, _one)
        if seq is None:
            self.seq += 1
            return self.seq
        return seq

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
            seq = self._cross_seq(symbol, channel)
            data = {"symbol": symbol, "lastPrice": px(symbol, tape.last_price), "highPrice24h": px(symbol, tape.high),
                    "lowPrice24h": px(symbol, tape.low), "prevPrice24h": px(symbol, tape.open),
                    "volume24h": f"{tape.volume:.6f}", "turnover24h": f"{tape.quote_volume:.8f}",
                    "price24hPcnt": f"{tape.change_pct / 100:.4f}", "usdIndexPrice": px(symbol, tape.last_price)}
            return [self._reply({"topic": f"tickers.{symbol}", "ts": ts, "type": "snapshot", "cs": seq,
                                 "data": data})]
        if channel == "publicTrade":
            if not state.trades:
                return []
            trades = []
            for trade in state.trades:
                seq = self._cross_seq(symbol, f"trade:{trade.trade_id}")
                trades.append({"i": str(trade.trade_id), "T": trade.ts_ms, "p": px(symbol, trade.price),
                               "v": self.fmt_qty(trade.qty), "S": "Buy" if trade.side == "buy" else "Sell",
                               "seq": seq, "s": symbol, "BT": False, "RPI": False})
            return [self._reply({"topic": f"publicTrade.{symbol}", "ts": ts, "type": "snapshot", "data": trades})]
        levels = int(channel.split(".")[1])
        snapshot, b, a = self.depth_delta(symbol, state.bids, state.asks, key=(symbol, channel), levels=levels)
        if not snapshot and not b and not a:
            return []
        key = (symbol, channel)
        u = self.update_ids.get(key, FIRST_UPDATE_ID) + 1
        self.update_ids[key] = u
        seq = self._cross_seq(symbol, channel)
        qty = self.fmt_qty
        return [self._reply({"topic": channel + "." + symbol, "ts": ts, "type": "snapshot" if snapshot else "delta",
                             "data": {"s": symbol, "b": [[px(symbol, p), qty(q)] for p, q in b],
                                      "a": [[px(symbol, p), qty(q)] for p, q in a], "u": u, "seq": seq},
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
        seq = self._cross_seq(symbol, channel)
        px, qty = self.fmt_px, self.fmt_qty
        if channel == BBO:
            kind, b, a, levels = "snapshot", bids[:1], asks[:1], 1
        else:
            snapshot, b, a = self.depth_delta(symbol, bids, asks)
            kind, levels = ("snapshot" if snapshot else "delta"), self.DEPTH_LEVELS
        msg = {"topic": f"orderbook.{levels}.{symbol}", "ts": ts_ms, "type": kind,
               "data": {"s": symbol, "b": [[px(symbol, p), qty(q)] for p, q in b],
                        "a": [[px(symbol, p), qty(q)] for p, q in a], "u": u, "seq": seq},
               "cts": ts_ms}
        frames = [orjson.dumps(msg).decode()]
        return frames if channel == BBO else self.late(symbol, frames)
