"""Simulated Binance spot market streams (``/stream``, ``/ws``).

Endpoints, as documented (web-socket-streams.md): the combined endpoint
``/stream`` wraps every payload as ``{"stream":<name>,"data":<payload>}``,
the raw endpoint ``/ws`` sends the bare payload; streams can be named in the
URL (``/stream?streams=a/b``, ``/ws/<stream>``) or subscribed live with
``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS``, and
``SET_PROPERTY ["combined", true]`` switches ``/ws`` to the wrapper.

Streams served (stream names lower-case, payload symbol upper-case):

* ``<s>@bookTicker`` and ``<s>@depth<5|10|20>[@100ms]``, the pair our own
  feed takes: ``u`` and ``lastUpdateId`` come from one per-connection counter
  (one order book). Quirks: ``late_depth`` sends every partial depth one step
  late, after a bookTicker with a higher ``u``; :meth:`Protocol.render_shutdown`
  is ``serverShutdown``.
* ``<s>@depth[@100ms|@1000ms]`` diff depth: ``{"e":"depthUpdate","E","s","U","u","b","a"}``
  numbered by the exchange-wide book id (:class:`SymbolState`), so the REST
  snapshot ``GET /api/v3/depth?symbol=&limit=`` on the same port
  (``lastUpdateId``) lines up with it the documented way. Spot has no ``pu``.
* ``<s>@ticker`` (``24hrTicker``) and ``<s>@miniTicker`` once a second,
  ``<s>@trade`` and ``<s>@aggTrade`` on every simulated trade. These carry
  numbers padded to 8 decimals as real spot frames do.

Reference data: ``GET /api/v3/exchangeInfo`` (``symbol=`` / ``symbols=["A","B"]`` narrow it, an unknown one is
``-1121``) lists every simulated symbol with ``PRICE_FILTER``, ``LOT_SIZE`` and ``MIN_NOTIONAL`` (``NOTIONAL``
when a maximum is set) as rest-api.md shows them, numbers padded to 8 decimals; a halted symbol is ``BREAK``.

A stream the simulator does not serve (``@kline_1m``, ``@avgPrice``, a
typo) is refused with ``{"error":{"code":2,"msg":"Invalid request: ..."},"id":n}``
(the docs' "Error Messages" list gives the code/msg pairs; the ``error``
object carrying them with the request ``id`` is the reply shape ccxt's
client handles; the wording for a bad stream name is not documented) and
nothing else on the connection changes. A well-formed stream of an
unknown symbol is acked and stays silent, as on the real exchange. Stream
counts above 1024 per connection are refused. Rule ``message_rate``: more
than 5 incoming messages in a second closes the connection.
"""
from __future__ import annotations

import re
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import orjson

from pipeline.sim.protocol import BBO, DEPTH, InstrumentRule, SimProtocol
from pipeline.venues.binance import account as account_rules

PARTIAL_DEPTH = re.compile(r"depth(5|10|20)(@100ms|@1000ms)?")
DIFF_DEPTH = ("depth", "depth@100ms", "depth@1000ms")
TIMED = {"ticker": 1000, "miniTicker": 1000}
STREAM_KINDS = DIFF_DEPTH + ("ticker", "miniTicker", "trade", "aggTrade")
MAX_STREAMS = 1024

# Trading rules served by /api/v3/exchangeInfo, from tests/fixtures/binance/reference_data.json: BTCBUSD's and
# ETHBUSD's filters (a 2022-08-23 response) for the USDT pairs the simulator quotes; SOL has no record there.
REFERENCE_RULES = {
    "BTC/USDT": InstrumentRule(tick="0.01", step="0.00001", min_qty="0.00001", max_qty="9000", min_notional="10"),
    "ETH/USDT": InstrumentRule(tick="0.01", step="0.0001", min_qty="0.0001", max_qty="90000", min_notional="10"),
}


def _p8(value: float) -> str:
    return f"{value:.8f}"


def _d8(text: str | None) -> str:
    """A rule value as Binance writes it: 8 decimals (``"0.01000000"``)."""
    return f"{Decimal(text or 0):.8f}"


def _exchange_symbol(symbol: str, rule: InstrumentRule) -> dict:
    base, quote = rule.assets()
    notional = ({"filterType": "NOTIONAL", "minNotional": _d8(rule.min_notional), "applyMinToMarket": True,
                 "maxNotional": _d8(rule.max_notional), "applyMaxToMarket": False, "avgPriceMins": 5}
                if rule.max_notional is not None else
                {"filterType": "MIN_NOTIONAL", "minNotional": _d8(rule.min_notional), "applyToMarket": True,
                 "avgPriceMins": 5})
    return {"symbol": symbol, "status": Protocol.HALTED if rule.halted else "TRADING", "baseAsset": base,
            "baseAssetPrecision": 8, "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
            "cancelReplaceAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
            "filters": [{"filterType": "PRICE_FILTER", "minPrice": _d8(rule.tick), "maxPrice": "1000000.00000000",
                         "tickSize": _d8(rule.tick)},
                        {"filterType": "LOT_SIZE", "minQty": _d8(rule.min_qty), "maxQty": _d8(rule.max_qty or "9000"),
                         "stepSize": _d8(rule.step)},
                        notional],
            "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]}



def _one() -> int:
    return 1

class Protocol(SimProtocol):
    NAME = "binance"
    REFERENCE_RULES = REFERENCE_RULES
    HALTED = "BREAK"
    MESSAGE_RATE = 5

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.update_id = 1_000_000
        self._rendered: dict[tuple, tuple[int, int]] = {}   # (symbol, channel) -> (market step, renders in it)
        self.depth_levels: dict[str, int] = {}
        self.combined = True
        self.names: dict[tuple, str] = {}              # (symbol, channel) -> the stream name as subscribed
        self.pending: dict[tuple, tuple] = {}          # 1000 ms diff depth: (first U, bids, asks) not yet sent

    @classmethod
    def serves_path(cls, path: str) -> bool:
        return path in ("/ws", "/stream") or path.startswith("/ws/")

    # -- requests -----------------------------------------------------------
    def on_connect(self) -> list:
        url = urlsplit(self.path or "/")
        path = url.path.rstrip("/")
        self.combined = not path.startswith("/ws")
        if path.startswith("/ws/"):
            streams = path[len("/ws/"):].split("/")
        else:
            streams = [s for v in parse_qs(url.query).get("streams", []) for s in v.split("/")]
        for stream in streams:
            parsed = self._parse_stream(stream)
            if parsed is not None and parsed[0] is not None:
                self._apply("SUBSCRIBE", *parsed)
        return []

    def _error(self, code: int, msg: str, request_id=None) -> list:
        return [orjson.dumps({"error": {"code": code, "msg": msg}, "id": request_id}).decode()]

    def on_message(self, frame) -> list:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return [orjson.dumps({"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}).decode()]
        if not isinstance(msg, dict) or "method" not in msg:
            return [orjson.dumps({"code": 2, "msg": "Invalid request: missing field `method`"}).decode()]
        method = msg["method"]
        request_id = msg.get("id")
        if isinstance(request_id, bool) or (request_id is not None and not isinstance(request_id, (int, str))):
            return self._error(2, "Invalid request: request ID must be an unsigned integer")
        params = msg.get("params") or []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list):
                return self._error(2, "Invalid request: params must be an array of stream names", request_id)
            parsed = []
            for stream in params:
                one = self._parse_stream(stream)
                if one is None:
                    return self._error(2, f"Invalid request: invalid stream name {str(stream)[:100]!r}", request_id)
                parsed.append(one)
            if method == "SUBSCRIBE" and len(self.subscriptions) + len(parsed) > MAX_STREAMS:
                return self._error(2, f"Invalid request: too many streams (at most {MAX_STREAMS})", request_id)
            for symbol, channel, levels, name in parsed:
                if symbol is not None:
                    self._apply(method, symbol, channel, levels, name)
            return [orjson.dumps({"result": None, "id": request_id}).decode()]
        if method == "LIST_SUBSCRIPTIONS":
            return [orjson.dumps({"result": [self._stream(s, c) for s, c in self.subscriptions],
                                  "id": request_id}).decode()]
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not isinstance(params, list) or not params or params[0] != "combined":
                return self._error(0, "Unknown property", request_id)
            if method == "GET_PROPERTY":
                return [orjson.dumps({"result": self.combined, "id": request_id}).decode()]
            if len(params) != 2 or not isinstance(params[1], bool):
                return self._error(1, "Invalid value type: expected Boolean", request_id)
            self.combined = params[1]
            return [orjson.dumps({"result": None, "id": request_id}).decode()]
        return self._error(2, f"Invalid request: unknown variant {str(method)[:50]}, expected one of SUBSCRIBE, "
                              "UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY", request_id)

    def _parse_stream(self, stream):
        """(symbol or None when unknown, channel, depth levels, name); None for a stream not served."""
        if not isinstance(stream, str):
            return None
        name, _, kind = stream.partition("@")
        if not name or name != name.lower():
            return None
        match = PARTIAL_DEPTH.fullmatch(kind)
        if kind == "bookTicker":
            channel, levels = BBO, 0
        elif match:
            channel, levels = DEPTH, int(match.group(1))
        elif kind in STREAM_KINDS:
            channel, levels = kind, 0
        else:
            return None
        symbol = name.upper()
        return (symbol if self.accepts(symbol) else None), channel, levels, stream

    def _apply(self, method: str, symbol: str, channel, levels: int, name: str) -> None:
        if method == "SUBSCRIBE":
            if channel == DEPTH:
                self.depth_levels[symbol] = levels
            self.subscribe(symbol, channel)
            self.names[(symbol, channel)] = name
            self.pending.pop((symbol, channel), None)
        else:
            self.unsubscribe(symbol, channel)
            self.names.pop((symbol, channel), None)

    def _stream(self, symbol: str, channel) -> str:
        if channel == BBO:
            return f"{symbol.lower()}@bookTicker"
        if channel == DEPTH:
            return f"{symbol.lower()}@depth{self.depth_levels.get(symbol, 5)}@100ms"
        return self.names.get((symbol, channel)) or f"{symbol.lower()}@{channel}"

    def _wrap(self, stream: str, data: dict) -> str:
        return orjson.dumps({"stream": stream, "data": data} if self.combined else data).decode()

    def render_shutdown(self, now_ms: int) -> list:
        return [self._wrap("!serverShutdown", {"e": "serverShutdown", "E": now_ms})]

    # -- REST -----------------------------------------------------------------
    @classmethod
    def render_account(cls, request, account):
        """``GET /api/v3/account/commission``: ``X-MBX-APIKEY`` and the query's ``signature`` checked like Binance
        (401 -2015 for an unknown key, 400 -1022 for a bad signature); the account's rates as standard
        commission, no special or tax commission."""
        if request.headers.get("x-mbx-apikey") != account.credentials.key:
            return 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
        payload, _, signature = request.raw_query.rpartition("&signature=")
        if not payload or signature != account_rules.sign(payload, account.credentials.secret):
            return 400, {"code": -1022, "msg": "Signature for this request is not valid."}
        symbol = request.query.get("symbol", "")
        if symbol not in account.symbols:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        zero = {"maker": "0.00000000", "taker": "0.00000000", "buyer": "0.00000000", "seller": "0.00000000"}
        return 200, {"symbol": symbol,
                     "standardCommission": {"maker": account.maker, "taker": account.taker,
                                            "buyer": "0.00000000", "seller": "0.00000000"},
                     "specialCommission": zero, "taxCommission": zero,
                     "discount": {"enabledForAccount": True, "enabledForSymbol": True, "discountAsset": "BNB",
                                  "discount": "0.75000000"}}

    @classmethod
    def render_rest(cls, path, query, states, decimals, rules=None):
        if path == "/api/v3/exchangeInfo":
            return cls._exchange_info(query, rules or {})
        if path != "/api/v3/depth":
            return 404, {"code": -1, "msg": f"not served by the simulator: {path}"}
        state = states.get(str(query.get("symbol", "")))
        if state is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        try:
            limit = min(max(int(query.get("limit", 100)), 1), 5000)
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in parameter 'limit'."}
        return 200, {"lastUpdateId": state.book_id,
                     "bids": [[_p8(p), _p8(q)] for p, q in state.bids[:limit]],
                     "asks": [[_p8(p), _p8(q)] for p, q in state.asks[:limit]]}

    @staticmethod
    def _exchange_info(query: dict, rules: dict) -> tuple[int, object]:
        wanted = list(rules)
        try:
            if "symbols" in query:
                wanted = orjson.loads(query["symbols"])
                if not isinstance(wanted, list):
                    raise ValueError(wanted)
            elif "symbol" in query:
                wanted = [query["symbol"]]
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."}
        if any(symbol not in rules for symbol in wanted):
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        return 200, {"timezone": "UTC", "serverTime": Protocol.now_ms(), "rateLimits": [], "exchangeFilters": [],
                     "symbols": [_exchange_symbol(symbol, rules[symbol]) for symbol in wanted]}

    # -- market data ----------------------------------------------------------
    def _update_id(self, symbol: str, channel) -> int:
        """The book's update id of this market step's ``channel`` frame of ``symbol`` (bookTicker ``u``, partial
        depth ``lastUpdateId``): the same on every connection, as the venue's order book numbers its own
        updates (each render of the step a new one: a burst renders a step more than once). Without shared
        state (a protocol rendering alone), the connection's own counter."""
        state = self.states.get(symbol)
        if state is None:
            self.update_id += 1
            return self.update_id
        last = self._rendered.get((symbol, channel))
        nth = last[1] + 1 if last is not None and last[0] == state.step else 0
        self._rendered[(symbol, channel)] = (state.step, nth)
        update_id = self.shared_id(symbol, f"{channel}:{nth}", "binance_u", 1_000_000, _one)
        assert update_id is not None
        return update_id

    def render(self, symbol, channel, bids, asks, ts_ms) -> list:
        update_id = self._update_id(symbol, channel)
        px = self.fmt_px
        if channel == BBO:
            data = {"u": update_id, "s": symbol, "b": px(symbol, bids[0][0]), "B": self.fmt_qty(bids[0][1]),
                    "a": px(symbol, asks[0][0]), "A": self.fmt_qty(asks[0][1])}
        else:
            n = self.depth_levels.get(symbol, 5)
            data = {"lastUpdateId": update_id,
                    "bids": [[px(symbol, p), self.fmt_qty(q)] for p, q in bids[:n]],
                    "asks": [[px(symbol, p), self.fmt_qty(q)] for p, q in asks[:n]]}
        frames = [self._wrap(self._stream(symbol, channel), data)]
        return frames if channel == BBO else self.late(symbol, frames)

    def render_stream(self, symbol, channel, state) -> list:
        stream = self._stream(symbol, channel)
        ts = state.ts_ms
        if channel in DIFF_DEPTH:
            return self._diff(symbol, channel, stream, state)
        if channel in TIMED:
            if not self.due(symbol, channel, ts, TIMED[channel]):
                return []
            tape = state.tape
            data = {"e": "24hrMiniTicker", "E": ts, "s": symbol, "c": _p8(tape.last_price), "o": _p8(tape.open),
                    "h": _p8(tape.high), "l": _p8(tape.low), "v": _p8(tape.volume), "q": _p8(tape.quote_volume)}
            if channel == "ticker":
                bid = state.bids[0] if state.bids else (0.0, 0.0)
                ask = state.asks[0] if state.asks else (0.0, 0.0)
                data = {"e": "24hrTicker", "E": ts, "s": symbol, "p": _p8(tape.change),
                        "P": f"{tape.change_pct:.2f}", "w": _p8(tape.vwap), "x": _p8(tape.open),
                        "c": _p8(tape.last_price), "Q": _p8(tape.last_qty),
                        "b": _p8(bid[0]), "B": _p8(bid[1]), "a": _p8(ask[0]), "A": _p8(ask[1]),
                        "o": _p8(tape.open), "h": _p8(tape.high), "l": _p8(tape.low), "v": _p8(tape.volume),
                        "q": _p8(tape.quote_volume), "O": ts - 86_400_000, "C": ts, "F": tape.first_id,
                        "L": tape.next_id - 1, "n": tape.count}
            return [self._wrap(stream, data)]
        frames = []
        for trade in state.trades:
            common = {"E": ts, "s": symbol}
            if channel == "trade":
                data = {"e": "trade", **common, "t": trade.trade_id, "p": _p8(trade.price), "q": _p8(trade.qty),
                        "T": trade.ts_ms, "m": trade.side == "sell", "M": True}
            else:
                data = {"e": "aggTrade", **common, "a": trade.trade_id - 1_000_000_000, "p": _p8(trade.price),
                        "q": _p8(trade.qty), "f": trade.trade_id, "l": trade.trade_id, "T": trade.ts_ms,
                        "m": trade.side == "sell", "M": True}
            frames.append(self._wrap(stream, data))
        return frames

    def _diff(self, symbol, channel, stream, state) -> list:
        key = (symbol, channel)
        if channel in ("depth", "depth@1000ms"):
            # the 1000 ms stream gathers the changes of its period into one event
            first, bids, asks = self.pending.get(key, (None, {}, {}))
            if state.changed:
                first = state.previous_id + 1 if first is None else first
                bids.update(state.bid_changes)
                asks.update(state.ask_changes)
                self.pending[key] = (first, bids, asks)
            if first is None or not self.due(symbol, channel, state.ts_ms, 1000):
                return []
            self.pending.pop(key, None)
            bid_changes, ask_changes = sorted(bids.items(), reverse=True), sorted(asks.items())
        else:
            if not state.changed:
                return []
            first, bid_changes, ask_changes = state.previous_id + 1, state.bid_changes, state.ask_changes
        data = {"e": "depthUpdate", "E": state.ts_ms, "s": symbol, "U": first, "u": state.book_id,
                "b": [[_p8(p), _p8(q)] for p, q in bid_changes], "a": [[_p8(p), _p8(q)] for p, q in ask_changes]}
        return [self._wrap(stream, data)]
