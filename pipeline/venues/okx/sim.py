"""Simulated OKX v5 public endpoint (``/ws/v5/public``).

Real behaviours reproduced:

* ``{"op":"subscribe"|"unsubscribe","args":[{"channel","instId"}, ...]}`` is
  answered with one ``{"event":"subscribe","arg":{...},"connId":...}`` per arg
  (``id`` echoed when the request had one); an unknown ``instId`` or channel
  gets ``{"event":"error","code":"60018","msg":"Wrong URL or channel:...,instId:X
  doesn't exist..."}``; a frame that is not JSON gets code ``60012``.
* The keepalive is the bare text ``ping`` answered with the bare text ``pong``.
* ``bbo-tbt``: a 1-level snapshot, pushed only when the top of book changed,
  ``ts`` a string, ``seqId`` increasing.
* ``books``: ``action:"snapshot"`` (``prevSeqId:-1``) first, then
  ``action:"update"`` with the changed levels (size ``"0"`` deletes) chained
  ``prevSeqId`` -> ``seqId`` per instrument, ``checksum`` fixed to 0 (the
  field is deprecated). Levels are ``[px, sz, "0", orderCount]`` strings with
  trailing zeros trimmed as OKX sends them.
* An unchanged book gets the empty keep-alive update (``prevSeqId == seqId``,
  empty sides). OKX sends it after ~60 s without change; the simulator sends
  it on every market step where the book did not change, so the path is used.
* ``books-l2-tbt`` / ``books50-l2-tbt`` are refused with error 64003 (the
  simulator has no VIP4 users); ``{"op":"login"}`` is answered
  ``{"event":"login","code":"0"}`` without checking the signature.
* Quirks: ``late_depth`` (every ``books`` message one step late, after a newer
  ``bbo-tbt``); a sequence reset (``reset_next``): the instrument's ``seqId``
  restarts from a small number, seen on ``books`` as ``seqId < prevSeqId``
  and on ``bbo-tbt`` only as lower ids; :meth:`Protocol.render_shutdown` is
  notice 64008.
* Other public channels, from the same market: ``tickers`` (on a trade or a
  top-of-book change, at most every 100 ms, 24 h statistics), ``books5``
  (a 5-level snapshot every 100 ms when the book changed, ``seqId``, no
  ``prevSeqId``) and ``trades`` (every simulated trade). Any other channel
  gets ``60018``; nothing else on the connection changes.
* Reference data: ``GET /api/v5/public/instruments?instType=SPOT`` (``instId=`` narrows it; another
  ``instType`` answers ``[]``) and the ``instruments`` channel
  (``{"op":"subscribe","args":[{"channel":"instruments","instType":"SPOT"}]}``): the ack, then every instrument
  in one push, then a push of each instrument whose rules change. The instrument objects are the REST ones
  (strings, ``""`` when unset); ``upcChg`` lists announced changes of ``tickSz`` / ``minSz``; a halted instrument's
  ``state`` is ``suspend``.
* Rule ``idle_timeout``: 30 s without a push or a client frame closes the
  connection (no subscription within 30 s, or a silent one without pings).
* Rule ``request_budget``: the 481st (un)subscribe / login request within an
  hour on one connection is refused ``60014`` ``Requests too frequent.`` (the
  limit is documented; the reply to exceeding it is not, 60014 is OKX's code
  for too-frequent requests).
"""
from __future__ import annotations

import math
import random
import time

import orjson

from pipeline.sim.protocol import BBO, DEPTH, InstrumentRule, SimProtocol
from pipeline.venues.okx import account as account_rules

CHANNELS = {"bbo-tbt": BBO, "books": DEPTH, "tickers": "tickers", "books5": "books5", "trades": "trades"}
TBT_CHANNELS = ("books-l2-tbt", "books50-l2-tbt")
REQUESTS_PER_HOUR = 480      # subscribe / unsubscribe / login per connection (rule request_budget)
INSTRUMENTS_ARG = {"channel": "instruments", "instType": "SPOT"}

# Trading rules served by /api/v5/public/instruments and the instruments channel, from
# tests/fixtures/okx/reference_data.json: BTC-USDT (the docs' example), ETH-USDT and SOL-USDT (a 2021 capture).
# OKX states no minimum order value (min_notional 0); maxLmtAmt is the maximum in USD.
REFERENCE_RULES = {
    "BTC/USDT": InstrumentRule(tick="0.1", step="0.00000001", min_qty="0.00001", max_qty="9999999999",
                               min_notional="0", max_notional="1000000"),
    "ETH/USDT": InstrumentRule(tick="0.01", step="0.000001", min_qty="0.0001", max_qty="999999999999",
                               min_notional="0", max_notional="20000000"),
    "SOL/USDT": InstrumentRule(tick="0.01", step="0.000001", min_qty="0.001", max_qty="999999999999",
                               min_notional="0", max_notional="20000000"),
}


def instrument(symbol: str, rule: InstrumentRule) -> dict:
    """One SPOT instrument object, as the REST answer and the ``instruments`` channel both carry it."""
    base, quote = rule.assets()
    return {"alias": "", "auctionEndTime": "", "baseCcy": base, "category": "1", "ctMult": "", "ctType": "",
            "ctVal": "", "ctValCcy": "", "expTime": "", "instFamily": "", "instId": symbol, "instType": "SPOT",
            "lever": "10", "listTime": "1606468572000", "lotSz": rule.step, "maxIcebergSz": rule.max_qty or "",
            "maxLmtAmt": rule.max_notional or "", "maxLmtSz": rule.max_qty or "", "maxMktAmt": "1000000",
            "maxMktSz": "1000000", "maxStopSz": "1000000", "maxTriggerSz": rule.max_qty or "",
            "maxTwapSz": rule.max_qty or "", "minSz": rule.min_qty, "optType": "", "quoteCcy": quote,
            "settleCcy": "", "state": Protocol.HALTED if rule.halted else "live", "ruleType": "normal", "stk": "",
            "tickSz": rule.tick, "uly": "",
            "upcChg": [{"param": param, "newValue": value, "effTime": str(ms)} for param, value, ms in rule.upcoming]}


def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text



def _jump() -> int:
    return random.randint(1, 3)

class Protocol(SimProtocol):
    NAME = "okx"
    REFERENCE_RULES = REFERENCE_RULES
    HALTED = "suspend"
    PATHS = ("/ws/v5/public",)
    DEPTH_LEVELS = 400
    IDLE_TIMEOUT_S = 30

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.conn_id = f"{random.getrandbits(32):08x}"
        self.seq: dict[str, int] = {}              # per instrument, shared by both channels
        self.book_seq: dict[str, int] = {}         # last seqId sent on `books` per instrument
        self.last_top: dict[str, tuple] = {}       # last bbo-tbt level pair per instrument
        self.requests: list[float] = []            # monotonic times of this hour's (un)subscribe / login requests
        self.instruments = False                   # subscribed to the instruments channel (SPOT)

    @classmethod
    def render_account(cls, request, account):
        """``GET /api/v5/account/trade-fee``: the ``OK-ACCESS-*`` headers checked like OKX (HTTP 401 with 50111
        unknown key, 50105 wrong passphrase, 50113 bad sign); the account's (negative) rates."""
        head = request.headers
        if head.get("ok-access-key") != account.credentials.key:
            return 401, {"code": "50111", "msg": "Invalid OK-ACCESS-KEY", "data": []}
        if head.get("ok-access-passphrase") != account.credentials.passphrase:
            return 401, {"code": "50105", "msg": "Request header OK-ACCESS-PASSPHRASE incorrect.", "data": []}
        path = request.path + (f"?{request.raw_query}" if request.raw_query else "")
        expected = account_rules.sign(head.get("ok-access-timestamp", ""), request.method, path,
                                      request.body.decode(), account.credentials.secret)
        if head.get("ok-access-sign") != expected:
            return 401, {"code": "50113", "msg": "Invalid Sign", "data": []}
        return 200, {"code": "0", "msg": "", "data": [
            {"category": "1", "delivery": "", "exercise": "", "instType": "SPOT", "level": "Lv3",
             "maker": account.maker, "taker": account.taker, "ts": str(int(time.time() * 1000))}]}

    @classmethod
    def render_rest(cls, path, query, states, decimals, rules=None):
        if path.rstrip("/") != "/api/v5/public/instruments":
            return 404, {"code": "50030", "msg": f"not served by the simulator: {path}", "data": []}
        if "instType" not in query:
            return 400, {"code": "50014", "msg": "Parameter instType can not be empty.", "data": []}
        rules = rules or {}
        wanted = [query["instId"]] if "instId" in query else list(rules)
        data = [instrument(s, rules[s]) for s in wanted if s in rules] if query["instType"] == "SPOT" else []
        return 200, {"code": "0", "msg": "", "data": data}

    def _instruments_push(self, symbols) -> str:
        return self._dump({"arg": INSTRUMENTS_ARG,
                           "data": [instrument(s, self.trading_rules[s]) for s in symbols if s in self.trading_rules]})

    def render_rule(self, symbol: str) -> list:
        return [self._instruments_push([symbol])] if self.instruments else []

    def _dump(self, msg: dict) -> str:
        return orjson.dumps(msg).decode()

    def on_message(self, frame) -> list:
        text = frame if isinstance(frame, str) else bytes(frame).decode("utf-8", "replace")
        if text == "ping":
            return ["pong"]
        try:
            msg = orjson.loads(text)
            op = msg["op"]
            args = msg["args"]
            if op not in ("subscribe", "unsubscribe", "login") or not isinstance(args, list):
                raise ValueError(op)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return [self._dump({"event": "error", "code": "60012", "msg": f"Invalid request: {text[:200]}",
                                "connId": self.conn_id})]
        if self.rules.request_budget:
            now_s = time.monotonic()
            self.requests = [t for t in self.requests if now_s - t < 3600.0]
            if len(self.requests) >= REQUESTS_PER_HOUR:
                return [self._dump({**({"id": msg["id"]} if "id" in msg else {}), "event": "error",
                                    "code": "60014", "msg": "Requests too frequent.", "connId": self.conn_id})]
            self.requests.append(now_s)
        if op == "login":
            return [self._dump({"event": "login", "code": "0", "msg": "", "connId": self.conn_id})]
        replies = []
        for arg in args:
            channel = arg.get("channel") if isinstance(arg, dict) else None
            inst = arg.get("instId") if isinstance(arg, dict) else None
            channel = channel if isinstance(channel, str) else None
            inst = inst if isinstance(inst, str) else None
            head = {"id": msg["id"]} if "id" in msg else {}
            if channel == "instruments" and isinstance(arg, dict) and arg.get("instType") == "SPOT":
                self.instruments = op == "subscribe"
                replies.append(self._dump({**head, "event": op, "arg": INSTRUMENTS_ARG, "connId": self.conn_id}))
                if self.instruments:
                    replies.append(self._instruments_push(sorted(self.trading_rules)))
                continue
            if channel in TBT_CHANNELS and op == "subscribe":
                replies.append(self._dump({**head, "event": "error", "code": "64003",
                                           "msg": "Your trading fee tier doesn't meet the requirement to access "
                                                  "this channel", "arg": {"channel": channel, "instId": inst},
                                           "connId": self.conn_id}))
                continue
            if channel not in CHANNELS or not inst or not self.accepts(inst):
                replies.append(self._dump({**head, "event": "error", "code": "60018",
                                           "msg": f"Wrong URL or channel:{str(channel)[:100]},"
                                                  f"instId:{str(inst)[:100]} doesn't exist. "
                                                  "Please use the correct URL, channel and parameters referring "
                                                  "to API document.", "connId": self.conn_id}))
                continue
            chan = CHANNELS[channel]
            if op == "subscribe":
                self.subscribe(inst, chan)
            else:
                self.unsubscribe(inst, chan)
            if chan == BBO:
                self.last_top.pop(inst, None)
            elif chan == DEPTH:
                self.book_seq.pop(inst, None)
            else:
                self.last_top.pop((inst, chan), None)
            replies.append(self._dump({**head, "event": op, "arg": {"channel": channel, "instId": inst},
                                       "connId": self.conn_id}))
        return replies

    def _levels(self, symbol: str, levels: list) -> list:
        out = []
        for price, qty in levels:
            if qty == 0:
                out.append([_trim(self.fmt_px(symbol, price)), "0", "0", "0"])
            else:
                mix = price * 7 + qty * 13                    # a stable, plausible order count; a bad price
                count = 1 + int(mix) % 9 if math.isfinite(mix) else 1   # (a fault) still renders
                out.append([_trim(self.fmt_px(symbol, price)), _trim(self.fmt_qty(qty)), "0", str(count)])
        return out

    def _next_seq(self, symbol: str) -> int:
        """A connection's own next ``seqId`` (no shared state)."""
        seq = self.seq.get(symbol, 3_000_000_000) + random.randint(1, 3)   # OKX seqIds jump between pushes
        self.seq[symbol] = seq
        return seq

    def _shared_seq(self, symbol: str, push: str) -> int:
        """The ``seqId`` of this market step's ``push`` of ``symbol`` (``bbo``, ``books``, ``books5``, a trade): the
        same on every connection. OKX's "Sequence ID": "The set of sequence ID received by users is the same if
        users are connecting to the same channel through multiple websocket connections. Each instId has an
        unique set of sequence ID." So the id is drawn once per step and push, from the instrument's shared
        state, and every connection that renders that push sends it. Without shared state (a protocol rendering
        alone, as the load generator's), the connection's own counter."""
        # OKX seqIds jump between pushes (the simulator's one random: a load generator seeding it twice renders
        # two passes alike)
        seq = self.shared_id(symbol, push, "okx_seq", 3_000_000_000, _jump)
        return self._next_seq(symbol) if seq is None else seq

    def _books_seq(self, symbol: str, snapshot: bool) -> int:
        """The ``seqId`` of a ``books`` push: a new one for this step's change; a snapshot of a book that did not
        change this step carries the book's current id (what every other connection holds)."""
        state = self.states.get(symbol)
        if state is None:
            return self._next_seq(symbol)
        if snapshot and not state.changed:
            held = state.extra.get("okx_seq", {}).get("books_id")
            if held is not None:
                return held
        seq = state.extra["okx_seq"]["books_id"] = self._shared_seq(symbol, "books")
        return seq

    def _reset_seq(self, symbol: str) -> None:
        """A sequence reset (maintenance): the instrument's ids start again from a small number, once for every
        connection."""
        state = self.states.get(symbol)
        if state is None:
            self.seq[symbol] = random.randint(1, 9)
            return
        self._shared_seq(symbol, "reset")                               # the shared entry exists from here on
        shared = state.extra["okx_seq"]
        if shared.get("reset_step") != state.step:
            shared["reset_step"] = state.step
            shared["next"] = random.randint(1, 9)
            shared["ids"] = {k: v for k, v in shared["ids"].items() if k[0] != state.step}

    def render_shutdown(self, now_ms: int) -> list:
        return [self._dump({"event": "notice", "code": "64008", "msg": "The connection will soon be closed for a "
                            "service upgrade. Please reconnect.", "connId": self.conn_id})]

    def render_stream(self, symbol, channel, state) -> list:
        ts = state.ts_ms
        arg = {"channel": channel, "instId": symbol}
        px = lambda value: _trim(self.fmt_px(symbol, value))            # noqa: E731
        if channel == "trades":
            return [self._dump({"arg": arg, "data": [
                {"instId": symbol, "tradeId": str(t.trade_id), "px": px(t.price), "sz": _trim(self.fmt_qty(t.qty)),
                 "side": t.side, "ts": str(t.ts_ms), "count": "1", "source": "0",
                 "seqId": self._shared_seq(symbol, f"trade:{t.trade_id}")}]})
                for t in state.trades]
        key = (symbol, channel)
        if channel == "books5":
            book = (tuple(state.bids[:5]), tuple(state.asks[:5]))
            if self.last_top.get(key) == book or not self.due(symbol, channel, ts, 100):
                return []
            self.last_top[key] = book
            return [self._dump({"arg": arg, "data": [{"asks": self._levels(symbol, state.asks[:5]),
                                                      "bids": self._levels(symbol, state.bids[:5]), "instId": symbol,
                                                      "ts": str(ts), "seqId": self._shared_seq(symbol, "books5")}]})]
        tape = state.tape
        mark = (tuple(state.bids[:1]), tuple(state.asks[:1]), tape.count)
        if self.last_top.get(key) == mark or not self.due(symbol, channel, ts, 100):
            return []
        self.last_top[key] = mark
        side = lambda levels, i: (px(levels[0][0]), _trim(self.fmt_qty(levels[0][1])))[i] if levels else ""  # noqa
        return [self._dump({"arg": arg, "data": [{
            "instType": "SPOT", "instId": symbol, "last": px(tape.last_price),
            "lastSz": _trim(self.fmt_qty(tape.last_qty)),
            "askPx": side(state.asks, 0), "askSz": side(state.asks, 1), "bidPx": side(state.bids, 0),
            "bidSz": side(state.bids, 1), "open24h": px(tape.open), "high24h": px(tape.high), "low24h": px(tape.low),
            "sodUtc0": px(tape.open), "sodUtc8": px(tape.open), "volCcy24h": f"{tape.quote_volume:.8f}",
            "vol24h": f"{tape.volume:.8f}", "ts": str(ts)}]})]

    def render(self, symbol, channel, bids, asks, ts_ms) -> list:
        if channel == BBO:
            top = (tuple(bids[:1]), tuple(asks[:1]))
            if self.last_top.get(symbol) == top:
                return []                                  # bbo-tbt only pushes on change
            self.last_top[symbol] = top
            data = {"asks": self._levels(symbol, asks[:1]), "bids": self._levels(symbol, bids[:1]),
                    "ts": str(ts_ms), "seqId": self._shared_seq(symbol, "bbo")}
            return [self._dump({"arg": {"channel": "bbo-tbt", "instId": symbol}, "data": [data]})]
        snapshot, bid_changes, ask_changes = self.depth_delta(symbol, bids, asks)
        prev = self.book_seq.get(symbol)
        if symbol in self.reset_next and not snapshot and prev is not None:
            self.reset_next.discard(symbol)
            self._reset_seq(symbol)                         # maintenance: the instrument's ids start again
        if snapshot or prev is None:
            action, prev_id, seq = "snapshot", -1, self._books_seq(symbol, snapshot=True)
        elif not bid_changes and not ask_changes:
            action, prev_id, seq = "update", prev, prev   # keep-alive of an unchanged book
        else:
            action, prev_id, seq = "update", prev, self._books_seq(symbol, snapshot=False)
        self.book_seq[symbol] = seq
        data = {"asks": self._levels(symbol, ask_changes), "bids": self._levels(symbol, bid_changes),
                "ts": str(ts_ms), "checksum": 0, "prevSeqId": prev_id, "seqId": seq}
        return self.late(symbol, [self._dump({"arg": {"channel": "books", "instId": symbol}, "action": action,
                                              "data": [data]})])
