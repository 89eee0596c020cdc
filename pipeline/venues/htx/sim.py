"""Simulated HTX (Huobi) spot market endpoint (``/feed`` and ``/ws``).

Real behaviours reproduced:

* **Every server frame is a binary frame of gzip-compressed JSON**, pings and
  acks included; client frames are plain JSON text.
* Nothing is sent on connect. ``{"sub": topic, "id": x}`` (one topic per
  frame) is answered ``{"id":x,"status":"ok","subbed":topic,"ts":...}``;
  ``unsub`` likewise with ``unsubbed``; an unknown symbol or topic gets
  ``{"status":"error","err-code":"bad-request","err-msg":"invalid topic <topic>"}``.
* The server pings ``{"ping": <ms>}`` every 5 s; ``{"pong": n}`` is accepted
  silently; a client ``{"ping": n}`` is answered ``{"pong": n}`` and a
  non-integer one gets the ``invalid ping`` error. The real server closes
  after two unanswered pings; with rule ``missed_pongs`` the simulator does
  too (close code 1003 ``ping check expired``), otherwise it only counts
  them in ``missed_pongs``.
* ``market.<sym>.bbo``: pushed when the top of book changed, ``tick`` with
  ``seqId``, ``bid``/``bidSize``/``ask``/``askSize``, ``quoteTime``, ``symbol``;
  numbers are JSON numbers.
* ``market.<sym>.mbp.<5|20|150|400>``, incremental MBP: ``seqNum``/``prevSeqNum``
  per (symbol, depth) numbered once for every connection (one book the
  exchange keeps, :func:`_mbp`), one push per market step that changed that
  N-level book: the changed levels only, size 0 for a level that left it, a
  side without changes left out (as the 5/20-level channels do); no snapshot
  on subscribe. ``{"req": "market.<sym>.mbp.<5|20|150>"}`` answers
  ``{"id", "rep", "status":"ok", "ts", "data":{"seqNum","bids","asks"}}`` (a
  ``req`` for 400 levels is refused, as documented). The answer's ``seqNum``
  fits into the stream as HTX's does (announcement 900001078223: it equals
  the ``prevSeqNum`` of one of the incrementals on the same connection), and
  it alternates between the two ways it can: the first request on a
  connection (and every other one after it) gets the book the stream has
  reached, newer than every incremental already sent; the others, when this
  connection was sent the latest incremental, get the book before it, older
  than an incremental already sent (the client finds that one in its cache).
  Either way the next incremental, or one already sent, has the answer's
  ``seqNum`` as its ``prevSeqNum``. Subscribing makes it this connection's
  depth channel (the server's depth faults, such as a dropped message, apply
  to it). The simulator serves both on ``/ws`` and ``/feed`` (on HTX the
  incremental channel and its ``req`` live on ``/feed`` only).
* ``market.<sym>.mbp.refresh.<5|10|20>``: a full N-level snapshot each step,
  ``tick.seqNum`` (unchanged when the book did not change), ``bids``/``asks``
  as ``[[px, qty], ...]`` numbers. A symbol's depth channel is the one
  subscribed last, incremental or refresh.
* Other public topics, from the same market: ``market.<sym>.detail`` (24 h
  statistics, every 500 ms), ``market.<sym>.ticker`` (statistics plus best
  bid/ask and last trade, every 100 ms), ``market.<sym>.trade.detail`` (every
  simulated trade) and ``market.<sym>.depth.step0`` (a 150-level snapshot of
  the book the market has, every second; the aggregated ``step1``-``step5``
  are refused).

Reference data: ``GET /v1/settings/common/market-symbols`` (``symbols=a,b`` narrows it) lists every simulated
symbol as "Get Market Symbols Setting" documents it: numbers as JSON numbers, the tick and step as precisions
(``pp``, ``ap``), the limit-order bounds ``lominoa`` / ``lomaxoa`` and ``minov``; a halted symbol is ``offline``.
With ``ts=`` it answers as HTX does: only the symbols changed since then (``data`` ``[]`` when none), ``full`` 0.
"""
from __future__ import annotations

import gzip
import time
from decimal import Decimal

import orjson

from pipeline.sim.protocol import BBO, DEPTH, InstrumentRule, SimProtocol, SymbolState, _changes
from pipeline.venues.htx import account as account_rules

# Trading rules served by /v1/settings/common/market-symbols, from tests/fixtures/htx/reference_data.json's btcusdt
# (pp 2, ap 6, minoa/lominoa 0.00001, maxoa/lomaxoa 1000, minov 1); no ETH or SOL record of this endpoint exists
# there. HTX states the tick and step as decimals, so both must be powers of ten here.
REFERENCE_RULES = {
    "BTC/USDT": InstrumentRule(tick="0.01", step="0.000001", min_qty="0.00001", max_qty="1000", min_notional="1"),
}


def _digits(text: str) -> int:
    return max(0, -Decimal(text).normalize().as_tuple().exponent)


def _number(text: str) -> float | int:
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() else float(value)


def market_symbol(symbol: str, rule: InstrumentRule) -> dict:
    base, quote = (a.lower() for a in rule.assets())
    min_qty, max_qty = _number(rule.min_qty), _number(rule.max_qty or "1000000")
    return {"symbol": symbol, "state": Protocol.HALTED if rule.halted else "online", "bc": base, "qc": quote,
            "pp": _digits(rule.tick), "ap": _digits(rule.step), "sp": "main", "vp": 8, "minoa": min_qty,
            "maxoa": max_qty, "minov": _number(rule.min_notional), "lominoa": min_qty, "lomaxoa": max_qty,
            "lomaxba": max_qty, "lomaxsa": max_qty, "smminoa": min_qty, "smmaxoa": max_qty, "bmmaxov": 1500000,
            "blmlt": 1.1, "slmgt": 0.9, "msormlt": 0.01, "mbormlt": 0.01, "at": "enabled", "tags": ""}

REFRESH_LEVELS = (5, 10, 20)
MBP_LEVELS = (5, 20, 150, 400)
REQ_LEVELS = (5, 20, 150)        # "REQ channel supports refreshing message for 5-level, 20-level, and 150-level"
TIMED = {"detail": 500, "ticker": 100, "depth.step0": 1000}
MBP, REFRESH = "mbp", "refresh"


def _mbp(state, levels: int) -> dict:
    """The shared incremental book of (symbol, depth): advanced once per market step, whoever asks first.

    ``seq``/``bids``/``asks`` the book the stream has reached, ``prev``/``before`` the book before it,
    ``changes`` the levels the last step changed (empty when it changed none)."""
    shared = state.extra.get(("mbp", levels))
    if shared is None:
        shared = state.extra[("mbp", levels)] = {"step": -1, "seq": 100_000_000_000, "prev": 0,
                                                  "bids": [], "asks": [], "before": ([], []),
                                                  "changes": ([], [])}
    if shared["step"] != state.step:
        bids, asks = state.bids[:levels], state.asks[:levels]
        changes = (_changes(shared["bids"], bids), _changes(shared["asks"], asks))
        shared["step"] = state.step
        if changes[0] or changes[1]:
            shared["prev"], shared["seq"] = shared["seq"], shared["seq"] + 1
            shared["before"] = (shared["bids"], shared["asks"])
            shared.update(bids=bids, asks=asks, changes=changes)
        else:
            shared["changes"] = ([], [])
    return shared


class Protocol(SimProtocol):
    NAME = "htx"
    REFERENCE_RULES = REFERENCE_RULES
    HALTED = "offline"
    PATHS = ("/ws", "/feed")
    KEEPALIVE_INTERVAL_S = 5

    @classmethod
    def render_account(cls, request, account):
        """``GET /v2/reference/transact-fee-rate``: signature version 2 checked like HTX, on the host the
        request was sent to (``api-signature-not-valid`` in an HTTP 200 for an unknown key or a bad
        signature); the account's rates for each of ``symbols``."""
        params = dict(request.query)
        signature = params.pop("Signature", "")
        if params.get("AccessKeyId") != account.credentials.key:
            return 200, {"status": "error", "err-code": "api-signature-not-valid",
                         "err-msg": "Signature not valid: Incorrect Access key [Access key错误]", "data": None}
        if signature not in {account_rules.sign(request.method, host, request.path, params, account.credentials.secret)
                             for host in (request.host, account.real_host) if host}:
            return 200, {"status": "error", "err-code": "api-signature-not-valid",
                         "err-msg": "Signature not valid: Verification failure [校验失败]", "data": None}
        wanted = [s for s in params.get("symbols", "").split(",") if s in account.symbols]
        return 200, {"code": 200, "data": [
            {"symbol": s, "actualMakerRate": account.maker, "actualTakerRate": account.taker,
             "takerFeeRate": account.taker, "makerFeeRate": account.maker} for s in wanted], "success": True}

    @classmethod
    def render_rest(cls, path, query, states, decimals, rules=None):
        if path.rstrip("/") != "/v1/settings/common/market-symbols":
            return 404, {"status": "error", "err-code": "invalid-parameter", "err-msg": f"not served: {path}"}
        rules = rules or {}
        wanted = query["symbols"].split(",") if query.get("symbols") else list(rules)
        since = query.get("ts", "")
        if since:           # "updated data from this timestamp to the current time"; none: "data" is []
            if not since.isdigit():
                return 200, {"status": "error", "err-code": "invalid-parameter", "err-msg": f"invalid ts: {since}",
                             "data": None}
            wanted = [s for s in wanted if s in rules and rules[s].changed_ms >= int(since)]
        return 200, {"status": "ok", "data": [market_symbol(s, rules[s]) for s in wanted if s in rules],
                     "ts": str(int(time.time() * 1000)), "full": 0 if query.get("symbols") or since else 1}

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.depth_kind: dict[str, tuple[str, int]] = {}   # symbol -> (MBP or REFRESH, levels) of its depth channel
        self.sent_seq: dict[tuple[str, int], int] = {}   # (symbol, levels) -> seqNum of the last incremental sent
        self.requests = 0                                # mbp req answered on this connection
        self._own: dict[str, SymbolState] = {}           # a symbol's book when no server shares one (unit tests)
        self.seq_id = 160_000_000_000
        self.seq_num: dict[str, int] = {}
        self.last: dict[tuple[str, int], tuple] = {}   # last book pushed per (symbol, channel)
        self.missed_pongs = 0
        self.expired = False

    @staticmethod
    def _frame(msg: dict) -> bytes:
        return gzip.compress(orjson.dumps(msg), compresslevel=5, mtime=0)

    def _parse_topic(self, topic) -> tuple[str, object, object] | None:
        """``(symbol, channel, detail)`` of a topic we serve: the depth channel's detail is ``(MBP or REFRESH,
        levels)``; None for any other topic."""
        parts = topic.split(".") if isinstance(topic, str) else []
        if len(parts) < 3 or parts[0] != "market" or not self.accepts(parts[1]):
            return None
        if parts[2:] == ["bbo"]:
            return parts[1], BBO, 1
        rest = ".".join(parts[2:])
        if rest in ("detail", "ticker", "trade.detail", "depth.step0"):
            return parts[1], rest, 0
        if len(parts) == 4 and parts[2] == "mbp" and parts[3].isdigit() and int(parts[3]) in MBP_LEVELS:
            return parts[1], DEPTH, (MBP, int(parts[3]))
        if len(parts) == 5 and parts[2:4] == ["mbp", "refresh"] and parts[4].isdigit() \
                and int(parts[4]) in REFRESH_LEVELS:
            return parts[1], DEPTH, (REFRESH, int(parts[4]))
        return None

    def on_message(self, frame) -> list:
        try:
            msg = orjson.loads(frame)
            if not isinstance(msg, dict):
                raise ValueError
        except (orjson.JSONDecodeError, ValueError):
            return [self._frame({"status": "error", "ts": self.now_ms(), "err-code": "bad-request",
                                 "err-msg": "invalid request"})]
        if "pong" in msg:
            self.missed_pongs = 0
            return []
        if "ping" in msg:
            if isinstance(msg["ping"], int) and not isinstance(msg["ping"], bool):
                return [self._frame({"pong": msg["ping"]})]
            return [self._frame({"ts": self.now_ms(), "status": "error", "err-code": "bad-request",
                                 "err-msg": "invalid ping"})]
        kind = "sub" if "sub" in msg else "unsub" if "unsub" in msg else "req" if "req" in msg else None
        head = {"id": msg["id"]} if "id" in msg else {}
        if kind == "req":
            return [self._request(msg["req"], head)]
        if kind is None:
            return [self._frame({**head, "status": "error", "ts": self.now_ms(), "err-code": "bad-request",
                                 "err-msg": "invalid request"})]
        topic = msg[kind]
        parsed = self._parse_topic(topic)
        if parsed is None:
            return [self._frame({**head, "status": "error", "ts": self.now_ms(), "err-code": "bad-request",
                                 "err-msg": f"invalid topic {topic}"})]
        symbol, channel, depth = parsed
        if kind == "sub":
            self.subscribe(symbol, channel)
            if channel == DEPTH:
                self.depth_kind[symbol] = depth
                self.sent_seq.pop((symbol, depth[1]), None)
        else:
            self.unsubscribe(symbol, channel)
        self.last.pop((symbol, channel), None)
        return [self._frame({**head, "status": "ok", f"{kind}bed": topic, "ts": self.now_ms()})]

    def _state(self, symbol: str) -> SymbolState:
        """The server's shared state of ``symbol``; without a server (a protocol driven by hand), this
        connection's own, advanced one step per depth render (an empty book before the first)."""
        state = self.states.get(symbol) or self._own.get(symbol)
        if state is None:
            state = self._own[symbol] = SymbolState(symbol, None)
        return state

    def _request(self, topic, head: dict) -> bytes:
        parsed = self._parse_topic(topic)
        if parsed is None or parsed[1] != DEPTH or parsed[2][0] != MBP or parsed[2][1] not in REQ_LEVELS:
            return self._frame({**head, "status": "error", "ts": self.now_ms(), "err-code": "bad-request",
                                "err-msg": f"invalid topic {str(topic)[:200]}"})
        symbol, _, (_, levels) = parsed
        shared = _mbp(self._state(symbol), levels)
        self.requests += 1
        seq, bids, asks = shared["seq"], shared["bids"], shared["asks"]
        if self.requests % 2 == 0 and shared["prev"] and self.sent_seq.get((symbol, levels)) == seq:
            # the book before the incremental this connection was just sent: older than that one, which
            # has this seqNum as its prevSeqNum
            seq, (bids, asks) = shared["prev"], shared["before"]
        px = self.fmt_px
        return self._frame({**head, "rep": topic, "status": "ok", "ts": self.now_ms(), "data": {
            "seqNum": seq,
            "bids": [[float(px(symbol, p)), float(self.fmt_qty(q))] for p, q in bids],
            "asks": [[float(px(symbol, p)), float(self.fmt_qty(q))] for p, q in asks]}})

    def keepalive(self, now_ms: int) -> list:
        if self.rules.missed_pongs and self.missed_pongs >= 2:
            self.expired = True                       # two pings unanswered: closed instead of a third
            return []
        self.missed_pongs += 1
        return [self._frame({"ping": now_ms})]

    def close_reason(self, now_s: float):
        if self.expired:
            return 1003, "ping check expired"
        return super().close_reason(now_s)

    def render_stream(self, symbol, channel, state) -> list:
        ts = state.ts_ms
        px = lambda value: float(self.fmt_px(symbol, value))            # noqa: E731
        qty = lambda value: float(self.fmt_qty(value))                  # noqa: E731
        ch = f"market.{symbol}.{channel}"
        if channel == "trade.detail":
            if not state.trades:
                return []
            data = [{"id": t.trade_id * 100 + 1, "ts": t.ts_ms, "tradeId": t.trade_id, "amount": qty(t.qty),
                     "price": px(t.price), "direction": t.side} for t in state.trades]
            return [self._frame({"ch": ch, "ts": ts, "tick": {"id": state.trades[-1].trade_id, "ts": ts,
                                                              "data": data}})]
        if not self.due(symbol, channel, ts, TIMED[channel]):
            return []
        tape = state.tape
        if channel == "depth.step0":
            self.seq_id += 1
            return [self._frame({"ch": ch, "ts": ts, "tick": {
                "bids": [[px(p), qty(q)] for p, q in state.bids[:150]],
                "asks": [[px(p), qty(q)] for p, q in state.asks[:150]], "version": self.seq_id, "ts": ts}})]
        tick = {"open": px(tape.open), "high": px(tape.high), "low": px(tape.low), "close": px(tape.last_price),
                "amount": round(tape.volume, 8), "vol": round(tape.quote_volume, 8), "count": tape.count}
        if channel == "detail":
            tick.update(id=tape.next_id, version=tape.next_id)
        else:
            tick.update(bid=px(state.bids[0][0]) if state.bids else None,
                        bidSize=qty(state.bids[0][1]) if state.bids else None,
                        ask=px(state.asks[0][0]) if state.asks else None,
                        askSize=qty(state.asks[0][1]) if state.asks else None,
                        lastPrice=px(tape.last_price), lastSize=qty(tape.last_qty))
        return [self._frame({"ch": ch, "ts": ts, "tick": tick})]

    def render(self, symbol, channel, bids, asks, ts_ms) -> list:
        px = self.fmt_px
        if channel == BBO:
            top = (tuple(bids[:1]), tuple(asks[:1]))
            if self.last.get((symbol, BBO)) == top:
                return []                                  # bbo pushes only on change
            self.last[(symbol, BBO)] = top
            self.seq_id += 1
            tick = {"seqId": self.seq_id}
            if asks:
                tick.update(ask=float(px(symbol, asks[0][0])), askSize=float(self.fmt_qty(asks[0][1])))
            if bids:
                tick.update(bid=float(px(symbol, bids[0][0])), bidSize=float(self.fmt_qty(bids[0][1])))
            tick.update(quoteTime=ts_ms, symbol=symbol)
            return [self._frame({"ch": f"market.{symbol}.bbo", "ts": ts_ms, "tick": tick})]
        kind, n = self.depth_kind.get(symbol, (REFRESH, 5))
        if kind == MBP:
            return self._incremental(symbol, n, bids, asks, ts_ms)
        book = (tuple(bids[:n]), tuple(asks[:n]))
        if self.last.get((symbol, DEPTH)) != book or symbol not in self.seq_num:
            self.seq_num[symbol] = self.seq_num.get(symbol, 100_020_000_000) + 1
            self.last[(symbol, DEPTH)] = book
        tick = {"seqNum": self.seq_num[symbol],
                "bids": [[float(px(symbol, p)), float(self.fmt_qty(q))] for p, q in bids[:n]],
                "asks": [[float(px(symbol, p)), float(self.fmt_qty(q))] for p, q in asks[:n]]}
        return [self._frame({"ch": f"market.{symbol}.mbp.refresh.{n}", "ts": ts_ms, "tick": tick})]

    def _incremental(self, symbol: str, levels: int, bids, asks, ts_ms: int) -> list:
        """This step's ``market.<sym>.mbp.<levels>`` push: the shared book's change, or nothing."""
        state = self._state(symbol)
        if symbol not in self.states:                 # this connection's own book: one market step per render
            state.step += 1
            state.bids, state.asks, state.ts_ms = list(bids), list(asks), ts_ms
        shared = _mbp(state, levels)
        changed_bids, changed_asks = shared["changes"]
        if not changed_bids and not changed_asks:
            return []
        px = lambda value: float(self.fmt_px(symbol, value))            # noqa: E731
        qty = lambda value: float(self.fmt_qty(value))                  # noqa: E731
        tick = {"seqNum": shared["seq"], "prevSeqNum": shared["prev"]}
        if changed_bids:
            tick["bids"] = [[px(p), qty(q)] for p, q in changed_bids]
        if changed_asks:
            tick["asks"] = [[px(p), qty(q)] for p, q in changed_asks]
        self.sent_seq[(symbol, levels)] = shared["seq"]
        return [self._frame({"ch": f"market.{symbol}.mbp.{levels}", "ts": state.ts_ms or ts_ms, "tick": tick})]
