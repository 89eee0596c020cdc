"""Simulated Coinbase Advanced Trade market-data endpoint (``/``).

Real behaviours reproduced:

* One ``{"type":"subscribe"|"unsubscribe","product_ids":[...],"channel":...}``
  per channel; every (un)subscribe is answered with a ``subscriptions``
  message listing the connection's whole current subscription set
  (``heartbeats`` lists itself: ``{"heartbeats":["heartbeats"]}``).
* Every message carries the envelope ``channel``, ``timestamp`` (RFC3339
  with nanoseconds), ``sequence_num`` and ``events``; ``sequence_num`` counts
  messages **per connection across all channels**, 0, 1, 2, ...
* An unknown product is refused with ``{"type":"error","message":"Failed to
  subscribe","reason":"<PRODUCT> is not a valid product"}`` (the known
  products of the request are still subscribed). Error frames are not part
  of the envelope format and consume no ``sequence_num``, so the client's
  continuity check is not broken by them.
* ``ticker``: ``events[].tickers[]`` with ``best_bid``/``best_bid_quantity``/
  ``best_ask``/``best_ask_quantity`` and ``price``; first event ``snapshot``,
  then ``update`` -- pushed when the top of book changed.
* ``level2`` arrives as channel ``l2_data``: a ``snapshot`` event of the
  product's book, then ``update`` events with the changed levels (side
  ``bid``/``offer``, absolute ``new_quantity``, ``"0"`` deletes, per-level
  ``event_time``). Nothing is sent when the book did not change. Numbers are
  strings with trailing zeros trimmed, as Coinbase sends them.
* ``heartbeats``: one per second (``heartbeat_counter``) while subscribed.
* ``ticker`` carries the 24 h / 52 w statistics of the real frames
  (``volume_24_h``, ``low_24_h``, ``high_24_h``, ``low_52_w``, ``high_52_w``,
  ``price_percent_chg_24_h``) and ``price`` is the last simulated trade. It is
  pushed on top-of-book changes (our own feed takes its BBO from it); the
  real channel is driven by trades.
* ``market_trades``: a ``snapshot`` of the recent simulated trades, then an
  ``update`` per trade (``side`` is the taker's).
* ``candles``, ``status`` and ``ticker_batch`` exist on Coinbase but are not
  simulated: they are refused with ``Failed to subscribe`` rather than acked
  and left silent.
"""
from __future__ import annotations

import time

import orjson

from pipeline.sim.protocol import BBO, DEPTH, InstrumentRule, SimProtocol

DATA_CHANNELS = {"ticker": BBO, "level2": DEPTH}
OTHER_CHANNELS = ("heartbeats", "market_trades")


# Trading rules served by /api/v3/brokerage/market/products. tests/fixtures/coinbase/reference_data.json holds the
# docs' schema example (every increment 0.00000001, placeholders, not BTC-USD's rules), so BTC-USD's come from the
# live response quoted in ccxt 4.5.90's coinbase.py (fetch_markets_v3): price_increment 0.01, base_increment and
# base_min_size 0.00000001, base_max_size 3400, quote_min_size 1, quote_max_size 150000000. Others: grid_rule.
REFERENCE_RULES = {
    "BTC/USD": InstrumentRule(tick="0.01", step="0.00000001", min_qty="0.00000001", max_qty="3400",
                              min_notional="1", max_notional="150000000"),
}


def product(symbol: str, rule: InstrumentRule) -> dict:
    """One SPOT product of "List Public Products" (market statistics left out)."""
    base, quote = rule.assets()
    bounds = {name: value for name, value in (("quote_max_size", rule.max_notional), ("base_max_size", rule.max_qty))
              if value is not None}           # a rule without a maximum: the field left out (the parser's None)
    return {"product_id": symbol, "base_increment": rule.step, "quote_increment": rule.tick,
            "quote_min_size": rule.min_notional, "base_min_size": rule.min_qty, **bounds, "base_name": base,
            "quote_name": quote, "watched": False, "is_disabled": False, "new": False,
            "status": "offline" if rule.halted else "online", "cancel_only": False, "limit_only": False,
            "post_only": False, "trading_disabled": rule.halted, "auction_mode": False, "product_type": "SPOT",
            "quote_currency_id": quote, "base_currency_id": base, "fcm_trading_session_details": None,
            "mid_market_price": "", "alias": "", "alias_to": [], "base_display_symbol": base,
            "quote_display_symbol": quote, "view_only": False, "price_increment": rule.tick, "display_name": symbol,
            "product_venue": "CBE"}


def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def rfc3339_ns(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


class Protocol(SimProtocol):
    NAME = "coinbase"
    REFERENCE_RULES = REFERENCE_RULES
    HALTED = "offline"
    PATHS = ("/",)
    KEEPALIVE_INTERVAL_S = 1
    DEPTH_LEVELS = 10                  # the whole book the market gives
    PRICE_FIELDS = ("best_bid", "best_ask", "price_level")   # a ticker's "price" is the last trade, not a quote

    @classmethod
    def render_account(cls, request, account):
        """``GET /api/v3/brokerage/transaction_summary``: the bearer JWT checked like Coinbase (ES256 with the
        key's public half, ``kid`` and ``sub`` the key name, ``uri`` this method, host and path, not expired);
        HTTP 401 otherwise. The account's tier."""
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not any(verify_jwt(token, account.credentials, f"{request.method} {host}{request.path}")
                   for host in (request.host, account.real_host) if host):
            return 401, {"error": "unauthorized", "error_details": "", "message": "Unauthorized"}
        return 200, {"total_volume": 0, "total_fees": 0, "fee_tier": {
            "pricing_tier": "Advanced 3", "usd_from": "50000", "usd_to": "100000",
            "taker_fee_rate": account.taker, "maker_fee_rate": account.maker, "aop_from": "", "aop_to": ""},
            "margin_rate": None, "goods_and_services_tax": None, "advanced_trade_only_volume": 0,
            "advanced_trade_only_fees": 0, "coinbase_pro_volume": 0, "coinbase_pro_fees": 0, "total_balance": "",
            "has_promo_fee": False}

    @classmethod
    def render_rest(cls, path, query, states, decimals, rules=None):
        if path.rstrip("/") != "/api/v3/brokerage/market/products":
            return 404, {"error": "NOT_FOUND", "message": f"not served by the simulator: {path}"}
        rules = rules or {}
        spot = query.get("product_type", "SPOT") == "SPOT"
        wanted = query["product_ids"].split(",") if query.get("product_ids") else list(rules)
        products = [product(s, rules[s]) for s in wanted if s in rules] if spot else []
        return 200, {"products": products, "num_products": len(products)}

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.sequence_num = 0
        self.channels: dict[str, list[str]] = {}     # channel -> products, as listed in `subscriptions`
        self.last_top: dict[str, tuple] = {}
        self.heartbeat_counter = 1000
        self.started = time.monotonic()

    def _envelope(self, channel: str, events: list, ns: int | None = None) -> str:
        msg = {"channel": channel, "timestamp": rfc3339_ns(time.time_ns() if ns is None else ns),
               "sequence_num": self.sequence_num, "events": events}
        self.sequence_num += 1
        return orjson.dumps(msg).decode()

    def on_message(self, frame) -> list:
        try:
            msg = orjson.loads(frame)
            kind, channel = msg["type"], msg["channel"]
            products = msg.get("product_ids") or []
            if kind not in ("subscribe", "unsubscribe") or not isinstance(products, list) \
                    or not isinstance(channel, str):
                raise ValueError(kind)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return [orjson.dumps({"type": "error", "message": "Failed to parse request"}).decode()]
        if channel not in DATA_CHANNELS and channel not in OTHER_CHANNELS:
            return [orjson.dumps({"type": "error", "message": "Failed to subscribe",
                                  "reason": f"unsupported channel {channel[:100]}"}).decode()]
        replies = []
        accepted = 0
        listed = self.channels.setdefault(channel, [])
        if channel == "heartbeats":
            products = ["heartbeats"]
        for product in products:
            if channel != "heartbeats" and (not isinstance(product, str) or not self.accepts(product)):
                replies.append(orjson.dumps({"type": "error", "message": "Failed to subscribe",
                                             "reason": f"{str(product)[:100]} is not a valid product"}).decode())
                continue
            accepted += 1
            if kind == "subscribe":
                if product not in listed:
                    listed.append(product)
                if channel in DATA_CHANNELS:
                    self.subscribe(product, DATA_CHANNELS[channel])
                    self.last_top.pop(product, None)
                elif channel == "market_trades":
                    self.subscribe(product, channel)
            else:
                if product in listed:
                    listed.remove(product)
                if channel in DATA_CHANNELS:
                    self.unsubscribe(product, DATA_CHANNELS[channel])
                elif channel == "market_trades":
                    self.unsubscribe(product, channel)
        if not listed:
            del self.channels[channel]
        if not accepted:
            return replies
        current = {name: list(p) for name, p in sorted(self.channels.items())}
        replies.append(self._envelope("subscriptions", [{"subscriptions": current}]))
        return replies

    def keepalive(self, now_ms: int) -> list:
        if "heartbeats" not in self.channels:
            return []
        self.heartbeat_counter += 1
        ns = time.time_ns()
        up = time.monotonic() - self.started
        current = rfc3339_ns(ns).replace("T", " ").rstrip("Z") + f" +0000 UTC m=+{up:.9f}"
        return [self._envelope("heartbeats", [{"current_time": current,
                                               "heartbeat_counter": self.heartbeat_counter}], ns)]

    def _statistics(self, symbol: str) -> dict:
        state = self.states.get(symbol)
        if state is None:
            return {}
        tape, px = state.tape, self.fmt_px
        return {"price": _trim(px(symbol, tape.last_price)), "volume_24_h": _trim(f"{tape.volume:.8f}"),
                "low_24_h": _trim(px(symbol, tape.low)), "high_24_h": _trim(px(symbol, tape.high)),
                "low_52_w": _trim(px(symbol, tape.low * 0.62)), "high_52_w": _trim(px(symbol, tape.high * 1.31)),
                "price_percent_chg_24_h": _trim(f"{tape.change_pct:.14f}")}

    def render_stream(self, symbol, channel, state) -> list:
        first = (symbol, channel) not in self.sent_books
        trades = list(reversed(state.tape.recent)) if first else list(reversed(state.trades))
        if not trades:
            return []
        self.sent_books[(symbol, channel)] = ([], [])
        px = self.fmt_px
        rows = [{"product_id": symbol, "trade_id": str(t.trade_id), "price": _trim(px(symbol, t.price)),
                 "size": _trim(f"{t.qty:.8f}"), "time": rfc3339_ns(t.ts_ms * 1_000_000)[:-4] + "Z",
                 "side": t.side.upper()} for t in trades]
        return [self._envelope("market_trades", [{"type": "snapshot" if first else "update", "trades": rows}])]

    def render(self, symbol, channel, bids, asks, ts_ms) -> list:
        px = self.fmt_px
        ns = ts_ms * 1_000_000
        if channel == BBO:
            top = (tuple(bids[:1]), tuple(asks[:1]))
            previous = self.last_top.get(symbol)
            if previous == top:
                return []                                  # pushed on change only
            self.last_top[symbol] = top
            ticker = {"type": "ticker", "product_id": symbol,
                      "price": _trim(px(symbol, (bids or asks)[0][0])) if bids or asks else "",
                      **self._statistics(symbol),
                      "best_bid": _trim(px(symbol, bids[0][0])) if bids else "",
                      "best_bid_quantity": _trim(self.fmt_qty(bids[0][1])) if bids else "",
                      "best_ask": _trim(px(symbol, asks[0][0])) if asks else "",
                      "best_ask_quantity": _trim(self.fmt_qty(asks[0][1])) if asks else ""}
            kind = "snapshot" if previous is None else "update"
            return [self._envelope("ticker", [{"type": kind, "tickers": [ticker]}], ns)]
        snapshot, bid_changes, ask_changes = self.depth_delta(symbol, bids, asks)
        if not snapshot and not bid_changes and not ask_changes:
            return []
        event_time = rfc3339_ns(ns)[:-4] + "Z"            # engine time, microseconds
        updates = [{"side": side, "event_time": event_time, "price_level": _trim(px(symbol, p)),
                    "new_quantity": _trim(self.fmt_qty(q)) if q else "0"}
                   for side, levels in (("bid", bid_changes), ("offer", ask_changes)) for p, q in levels]
        kind = "snapshot" if snapshot else "update"
        return [self._envelope("l2_data", [{"type": kind, "product_id": symbol, "updates": updates}], ns)]


def verify_jwt(token: str, credentials, uri: str, now_s: float | None = None) -> bool:
    """Whether ``token`` is an ES256 JWT of ``credentials`` (signed by the private key, ``kid`` / ``sub`` the key
    name, ``iss`` cdp, or coinbase-cloud as the earlier CDP keys' JWTs say) for ``uri`` (``GET host/path``),
    valid now: what Coinbase checks of a CDP key's JWT."""
    import base64
    import json

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    def unb64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    try:
        head_b64, claims_b64, sig_b64 = token.split(".")
        header, claims, signature = json.loads(unb64(head_b64)), json.loads(unb64(claims_b64)), unb64(sig_b64)
        key = serialization.load_pem_private_key(credentials.secret.encode(), password=None).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or len(signature) != 64 or header.get("alg") != "ES256":
            return False
        key.verify(encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")),
                   f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except (ValueError, InvalidSignature, TypeError, AttributeError):
        return False
    now = time.time() if now_s is None else now_s
    return (header.get("kid") == credentials.key and claims.get("sub") == credentials.key
            and claims.get("iss") in ("cdp", "coinbase-cloud") and claims.get("uri") == uri
            and claims.get("nbf", 0) - 5 <= now <= claims.get("exp", 0))
