"""Simulated Kraken spot WebSocket v2 endpoint (``/v2``).

Real behaviours reproduced:

* On connect a ``status`` message arrives whose ``connection_id`` exceeds 2**63.
* ``{"method":"subscribe","params":{"channel":"book"|"ticker","symbol":[...],
  ...},"req_id":n}`` is acknowledged **once per symbol** (``result`` with
  ``channel``, ``symbol``, ``depth``/``event_trigger``, ``snapshot``; ``time_in``/
  ``time_out``); an unknown pair gets ``success:false`` with ``error``
  ``"Currency pair not supported <SYM>"`` and ``symbol``. ``unsubscribe`` likewise.
* ``{"method":"ping","req_id":n}`` -> ``{"method":"pong","req_id":n,"time_in":...,"time_out":...}``.
* ``{"channel":"heartbeat"}`` about once a second, only while subscribed and
  only when nothing else was sent since the previous one.
* ``ticker`` (``event_trigger:"bbo"``): a ``snapshot`` then an ``update`` on
  every top-of-book change, ``bid``/``bid_qty``/``ask``/``ask_qty``/``last`` as
  JSON numbers, ``timestamp`` RFC3339 with microseconds.
* ``book``: a snapshot then updates of the changed levels (qty 0 deletes);
  levels pushed out of the subscribed depth get no delete (the client
  truncates). By default prices carry the pair's decimals and quantities 8
  decimals **as JSON number text with trailing zeros** (``1797.30``), so the
  level JSON is written by hand. With the ``shortest_numbers`` quirk numbers
  are printed as JSON serializers print floats (``63298``, ``5.1e-05``) and
  the quantities of levels 6-10 are dust, so exponent forms occur. Either way
  ``checksum`` is computed the documented way: each number formatted to the
  pair's ``price_precision`` / ``qty_precision``, ``.`` and leading zeros
  removed, top 10 asks then top 10 bids, CRC32 (done here from the numbers,
  independently of the client's code).
* ``instrument``: ``{"method":"subscribe","params":{"channel":"instrument"}}``
  is acknowledged and answered with a snapshot of every known pair
  (``price_precision`` = the decimals of the pair's grid, ``qty_precision`` 8,
  ``price_increment`` / ``qty_increment`` / ``qty_min`` / ``cost_min`` from its
  trading rules, ``status`` online or ``maintenance`` when halted);
  :meth:`Protocol.render_pair` pushes an ``update`` for one pair (a status or
  precision change), :meth:`Protocol.render_rule` one for a rule change.
* :meth:`Protocol.render_status` pushes a ``status`` update (``maintenance``,
  ``cancel_only``, ...).
* ``ticker`` carries the 24 h statistics (``volume``, ``vwap``, ``low``,
  ``high``, ``change``, ``change_pct``). ``event_trigger`` is honoured: with
  ``bbo`` (what our feed asks for) it is pushed on every top-of-book change,
  with ``trades`` (the default) a snapshot and then only on simulated trades.
* ``trade``: a snapshot of the recent simulated trades, then an update per
  trade (``side`` is the taker's, ``ord_type`` market).
* Any other channel is refused ``Channel X not supported``. A v1 client
  (``{"event": "subscribe", ...}``) gets the v2 ``Malformed request`` error;
  what the real v2 endpoint answers a v1 frame is not documented.
* Rule ``idle_timeout``: a minute without traffic either way closes the connection.
"""
from __future__ import annotations

import random
import time
import zlib
from urllib.parse import parse_qs

import orjson

from pipeline.sim.protocol import BBO, DEPTH, InstrumentRule, SimProtocol, grid_rule
from pipeline.venues.kraken import account as account_rules

CHANNELS = {"ticker": BBO, "book": DEPTH, "trade": "trade"}
BOOK_DEPTHS = (10, 25, 100, 500, 1000)
CHECKSUM_LEVELS = 10
QTY_PRECISION = 8
DUST_FROM_LEVEL = 5          # shortest_numbers: levels from here on get dust quantities (exponent form)

# Trading rules served on the instrument channel, from tests/fixtures/kraken/instrument.jsonl line 1 (a stored
# snapshot of BTC/USD and ETH/USD). qty_precision stays 8 whatever qty_increment says: it is the grid of the
# simulated book's quantities, which the book checksum is computed on. No BTC/USDT record: grid_rule.
REFERENCE_RULES = {
    "BTC/USD": InstrumentRule(tick="0.1", step="0.00000001", min_qty="0.00005", min_notional="0.5"),
    "ETH/USD": InstrumentRule(tick="0.05", step="0.00001", min_qty="0.002", min_notional="1.25"),
}


def _number(text: str) -> float:
    return float(text)          # JSON numbers, as Kraken sends them (orjson writes the shortest form: 5e-05)


def documented_checksum(bids: list, asks: list, price_dp: int, qty_dp: int) -> int:
    """The book-checksum guide's CRC32, from the numbers (not from any text)."""
    def digits(value: float, dp: int) -> str:
        return f"{value:.{dp}f}".replace(".", "").lstrip("0")
    text = "".join(digits(p, price_dp) + digits(q, qty_dp) for p, q in asks[:CHECKSUM_LEVELS])
    text += "".join(digits(p, price_dp) + digits(q, qty_dp) for p, q in bids[:CHECKSUM_LEVELS])
    return zlib.crc32(text.encode("ascii"))


def shortest(value: float) -> str:
    """A float as JSON serializers print it: shortest repr, no ``.0`` on integers, exponent when small."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def rfc3339_us(us: int) -> str:
    secs, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


def _now() -> str:
    return rfc3339_us(time.time_ns() // 1000)


class Protocol(SimProtocol):
    NAME = "kraken"
    REFERENCE_RULES = REFERENCE_RULES
    HALTED = "maintenance"
    PATHS = ("/v2",)
    KEEPALIVE_INTERVAL_S = 1
    DEPTH_LEVELS = 10                  # what the market gives; the checksum covers 10
    IDLE_TIMEOUT_S = 60

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.connection_id = (1 << 63) | random.getrandbits(63)
        self.depth: dict[str, int] = {}
        self.last_top: dict[str, tuple] = {}
        self.quiet = True                      # nothing sent since the last heartbeat tick
        self.price_precision: dict[str, int] = {}   # announced changes; default: the pair's decimals
        self.instrument = False                # subscribed to the instrument channel
        self.trigger: dict[str, str] = {}      # ticker event_trigger per symbol
        self.trades_seen: dict[str, int] = {}  # ticker with event_trigger trades: trade count last pushed

    def on_connect(self) -> list:
        self.quiet = False
        status = {"api_version": "v2", "connection_id": self.connection_id, "system": "online",
                  "version": "2.0.0"}
        return [orjson.dumps({"channel": "status", "data": [status], "type": "update"}).decode()]

    def on_message(self, frame) -> list:
        time_in = _now()
        try:
            msg = orjson.loads(frame)
            method = msg["method"]
            if not isinstance(method, str):
                raise TypeError(method)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return self._sent([{"error": "Malformed request", "success": False,
                                "time_in": time_in, "time_out": _now()}])
        head = {"method": method}
        if "req_id" in msg:
            head["req_id"] = msg["req_id"]
        if method == "ping":
            return self._sent([{**head, "method": "pong", "time_in": time_in, "time_out": _now()}])
        if method not in ("subscribe", "unsubscribe"):
            return self._sent([{**head, "error": f"Method not found: {method[:100]}", "success": False,
                                "time_in": time_in, "time_out": _now()}])
        params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
        name = params.get("channel")
        if name == "instrument":
            self.instrument = method == "subscribe"
            ack = {**head, "result": {"channel": "instrument", "snapshot": True}, "success": True,
                   "time_in": time_in, "time_out": _now()}
            if method != "subscribe" or params.get("snapshot") is False:
                return self._sent([ack])
            return self._sent([ack, self._instrument("snapshot", self._pairs())])
        symbols = params.get("symbol")
        depth = params.get("depth", 10)
        trigger = params.get("event_trigger", "trades")
        problem = (f"Channel {str(name)[:100]} not supported" if not isinstance(name, str) or name not in CHANNELS else
                   f"Invalid event_trigger {str(trigger)[:50]}" if name == "ticker" and trigger not in ("bbo", "trades")
                   else
                   "Field symbol must be a non-empty list" if not isinstance(symbols, list) or not symbols else
                   f"Invalid depth {depth}" if name == "book" and depth not in BOOK_DEPTHS else None)
        if problem:
            return self._sent([{**head, "error": problem, "success": False, "time_in": time_in,
                                "time_out": _now()}])
        channel = CHANNELS[name]
        replies = []
        for symbol in symbols:
            if not isinstance(symbol, str) or not self.accepts(symbol):
                replies.append({**head, "error": f"Currency pair not supported {str(symbol)[:100]}", "success": False,
                                "symbol": symbol, "time_in": time_in, "time_out": _now()})
                continue
            result = {"channel": name, "symbol": symbol}
            if method == "subscribe":
                self.subscribe(symbol, channel)
                if channel == DEPTH:
                    self.depth[symbol] = depth
                    result.update(depth=depth, snapshot=True)
                elif channel == BBO:
                    self.last_top.pop(symbol, None)
                    self.trigger[symbol] = trigger
                    result.update(event_trigger=trigger, snapshot=True)
                else:
                    result.update(snapshot=True)
            else:
                self.unsubscribe(symbol, channel)
            replies.append({**head, "result": result, "success": True, "time_in": time_in, "time_out": _now()})
        return self._sent(replies)

    def _sent(self, messages: list) -> list:
        self.quiet = False
        return [orjson.dumps(m).decode() for m in messages]

    def keepalive(self, now_ms: int) -> list:
        quiet, self.quiet = self.quiet, True
        return ['{"channel":"heartbeat"}'] if quiet and self.subscriptions else []

    # -- reference data and status ------------------------------------------
    def precision(self, symbol: str) -> int:
        return self.price_precision.get(symbol, self.decimals.get(symbol, 2))

    def _pair(self, symbol: str, status: str | None = None) -> dict:
        dp = self.precision(symbol)
        base, _, quote = symbol.partition("/")
        rule = self.trading_rules.get(symbol) or grid_rule(dp)
        tick = _number(rule.tick) if symbol not in self.price_precision else 10.0 ** -dp
        if status is None:
            status = self.HALTED if rule.halted else "online"
        return {"symbol": symbol, "base": base, "quote": quote, "status": status, "qty_precision": QTY_PRECISION,
                "qty_increment": _number(rule.step), "price_precision": dp, "cost_precision": 5,
                "marginable": False, "has_index": True, "cost_min": _number(rule.min_notional),
                "tick_size": tick, "price_increment": tick, "qty_min": _number(rule.min_qty)}

    @classmethod
    def render_account(cls, request, account):
        """``POST /0/private/TradeVolume``: ``API-Key`` and ``API-Sign`` checked like Kraken (``EAPI:Invalid key`` in
        an HTTP 200 for an unknown key or a signature that does not verify); fees in percent keyed by Kraken's
        pair names."""
        head = request.headers
        if request.method != "POST":
            return 200, {"error": ["EGeneral:Invalid arguments"]}
        if head.get("api-key") != account.credentials.key:
            return 200, {"error": ["EAPI:Invalid key"]}
        body = request.body.decode()
        form = {k: v[-1] for k, v in parse_qs(body).items()}
        try:
            expected = account_rules.sign(request.path, form.get("nonce", ""), body, account.credentials.secret)
        except ValueError:                       # a secret that is not base64: every signature is wrong
            expected = ""
        if head.get("api-sign") != expected:      # Kraken says a signature that does not verify is an invalid key
            return 200, {"error": ["EAPI:Invalid key"]}
        listed = {account_rules.pair_key(s): s for s in account.symbols}       # any spelling of a listed pair
        pairs = [listed[account_rules.pair_key(p)] for p in form.get("pair", "").split(",")
                 if account_rules.pair_key(p) in listed]

        def tier(fee):
            return {"fee": fee, "minfee": "0.1000", "maxfee": "0.4000", "nextfee": None, "tiervolume": "1000000.0000",
                    "nextvolume": None}
        return 200, {"error": [], "result": {"currency": "ZUSD", "volume": "1000000.0000",
                                             "fees": {legacy_pair(p): tier(account.taker) for p in pairs},
                                             "fees_maker": {legacy_pair(p): tier(account.maker) for p in pairs}}}

    def render_rule(self, symbol: str) -> list:
        return self._sent([self._instrument("update", [self._pair(symbol)])]) if self.instrument else []

    def _pairs(self) -> list:
        symbols = sorted(self.known_symbols if self.known_symbols is not None else self.decimals)
        return [self._pair(symbol) for symbol in symbols]

    def _instrument(self, kind: str, pairs: list) -> dict:
        assets = sorted({a for p in pairs for a in (p["base"], p["quote"])})
        return {"channel": "instrument", "type": kind,
                "data": {"assets": [{"id": a, "status": "enabled", "precision": 8, "precision_display": 5,
                                     "borrowable": False, "collateral_value": 0.0, "margin_rate": 0.0}
                                    for a in assets], "pairs": pairs}}

    def render_pair(self, symbol: str, status: str, price_precision: int | None = None) -> list:
        if price_precision is not None:
            self.price_precision[symbol] = price_precision
        if not self.instrument:
            return []
        return self._sent([self._instrument("update", [self._pair(symbol, status)])])

    def render_status(self, system: str) -> list:
        status = {"api_version": "v2", "connection_id": self.connection_id, "system": system, "version": "2.0.0"}
        return self._sent([{"channel": "status", "data": [status], "type": "update"}])

    # -- market data --------------------------------------------------------
    def _num(self, value: float, dp: int) -> str:
        return shortest(round(value, dp)) if self.quirks.shortest_numbers else f"{value:.{dp}f}"

    def _levels(self, symbol: str, levels: list) -> tuple[list, str]:
        dp = self.precision(symbol)
        text = [(self._num(p, dp), self._num(q, QTY_PRECISION)) for p, q in levels]
        return text, ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in text)

    def _dust(self, levels: list) -> list:
        """shortest_numbers: deep levels get quantities below 1e-4 (printed in exponent form)."""
        if not self.quirks.shortest_numbers:
            return levels
        return [(p, round(q * 1e-5, QTY_PRECISION) or 1e-8) if i >= DUST_FROM_LEVEL else (p, q)
                for i, (p, q) in enumerate(levels)]

    def render_stream(self, symbol, channel, state) -> list:
        first = (symbol, channel) not in self.sent_books
        trades = state.tape.recent if first else state.trades
        if not trades:
            return []
        self.sent_books[(symbol, channel)] = ([], [])
        dp = self.precision(symbol)
        rows = [{"symbol": symbol, "side": t.side, "price": round(t.price, dp), "qty": round(t.qty, QTY_PRECISION),
                 "ord_type": "market", "trade_id": t.trade_id, "timestamp": rfc3339_us(t.ts_ms * 1000)}
                for t in trades]
        return self._sent([{"channel": "trade", "type": "snapshot" if first else "update", "data": rows}])

    def render(self, symbol, channel, bids, asks, ts_ms) -> list:
        sym = orjson.dumps(symbol).decode()
        stamp = rfc3339_us(ts_ms * 1000)
        if channel == BBO:
            top = (tuple(bids[:1]), tuple(asks[:1]))
            previous = self.last_top.get(symbol)
            state = self.states.get(symbol)
            if self.trigger.get(symbol) == "trades" and state is not None:
                seen = self.trades_seen.get(symbol)
                if previous is not None and seen == state.tape.count:
                    return []                               # event_trigger trades: push on trades only
                self.trades_seen[symbol] = state.tape.count
            elif previous == top:
                return []                                   # event_trigger bbo: push on change only
            self.last_top[symbol] = top
            fields = [f'"symbol":{sym}']
            for key, side in (("bid", bids), ("ask", asks)):
                if side:
                    (p, q), = self._levels(symbol, side[:1])[0]
                    fields.append(f'"{key}":{p},"{key}_qty":{q}')
            dp = self.precision(symbol)
            if state is not None:
                tape = state.tape
                fields.append(f'"last":{self._num(tape.last_price, dp)},'
                              f'"volume":{self._num(tape.volume, QTY_PRECISION)},'
                              f'"vwap":{self._num(tape.vwap, dp)},"low":{self._num(tape.low, dp)},'
                              f'"high":{self._num(tape.high, dp)},"change":{self._num(tape.change, dp)},'
                              f'"change_pct":{tape.change_pct:.2f}')
            elif bids:
                fields.append(f'"last":{self._num(bids[0][0], dp)}')
            fields.append(f'"timestamp":"{stamp}"')
            kind = "snapshot" if previous is None else "update"
            self.quiet = False
            return [f'{{"channel":"ticker","type":"{kind}","data":[{{{",".join(fields)}}}]}}']
        snapshot, bid_changes, ask_changes = self.depth_delta(symbol, self._dust(bids), self._dust(asks))
        depth = self.depth.get(symbol, 10)
        if not snapshot and depth == CHECKSUM_LEVELS:       # levels pushed out of scope get no delete
            new_bids, new_asks = self.sent_books[symbol]
            if len(new_bids) >= depth:
                bid_changes = [(p, q) for p, q in bid_changes if q or p >= new_bids[-1][0]]
            if len(new_asks) >= depth:
                ask_changes = [(p, q) for p, q in ask_changes if q or p <= new_asks[-1][0]]
        if not snapshot and not bid_changes and not ask_changes:
            return []
        top_bids, top_asks = self.sent_books[symbol]
        crc = documented_checksum(top_bids, top_asks, self.precision(symbol), QTY_PRECISION)
        kind = "snapshot" if snapshot else "update"
        self.quiet = False
        return [f'{{"channel":"book","type":"{kind}","data":[{{"symbol":{sym},'
                f'"bids":[{self._levels(symbol, bid_changes)[1]}],"asks":[{self._levels(symbol, ask_changes)[1]}],'
                f'"checksum":{crc},"timestamp":"{stamp}"}}]}}']


def legacy_pair(symbol: str) -> str:
    """Kraken's REST name of a pair in an account answer: ``BTC/USD`` -> ``XXBTZUSD``, ``ETH/USDT`` -> ``ETHUSDT``."""
    base, _, quote = symbol.partition("/")
    base = {"BTC": "XBT", "DOGE": "XDG"}.get(base, base)
    if quote in ("USD", "EUR", "GBP", "JPY", "CAD") and base in ("XBT", "ETH", "LTC", "XDG", "XRP"):
        return f"X{base}Z{quote}"
    return base + quote
