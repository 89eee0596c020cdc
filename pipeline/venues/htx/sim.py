"""Simulated HTX (Huobi) spot market endpoint (``/ws``).

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
* ``market.<sym>.mbp.refresh.<5|10|20>``: a full N-level snapshot each step,
  ``tick.seqNum`` (unchanged when the book did not change), ``bids``/``asks``
  as ``[[px, qty], ...]`` numbers.
* Other public topics, from the same market: ``market.<sym>.detail`` (24 h
  statistics, every 500 ms), ``market.<sym>.ticker`` (statistics plus best
  bid/ask and last trade, every 100 ms), ``market.<sym>.trade.detail`` (every
  simulated trade), ``market.<sym>.depth.step0`` (a 150-level snapshot of
  the book the market has, every second; the aggregated ``step1``-``step5``
  are refused) and the incremental ``market.<sym>.mbp.<5|20|150|400>``:
  ``seqNum``/``prevSeqNum`` per (symbol, depth) numbered once for every
  connection, no snapshot on subscribe; ``{"req": "market.<sym>.mbp.<n>"}``
  answers ``{"rep", "status":"ok", "data":{"seqNum","bids","asks"}}`` with the
  book the stream has reached. The simulator serves both on ``/ws`` and
  ``/feed`` (on HTX, ``mbp.5`` lives on ``/feed`` only).
"""
from __future__ import annotations

import gzip
import time

import orjson

from pipeline.sim.protocol import BBO, DEPTH, SimProtocol, _changes

REFRESH_LEVELS = (5, 10, 20)
MBP_LEVELS = (5, 20, 150, 400)
TIMED = {"detail": 500, "ticker": 100, "depth.step0": 1000}


def _mbp(state, levels: int) -> dict:
    """The shared incremental book of (symbol, depth): advanced once per market step, whoever asks first."""
    shared = state.extra.get(("mbp", levels))
    if shared is None:
        shared = state.extra[("mbp", levels)] = {"step": -1, "seq": 100_000_000_000, "prev": 0,
                                                  "bids": [], "asks": [], "changes": ([], [])}
    if shared["step"] != state.step:
        bids, asks = state.bids[:levels], state.asks[:levels]
        changes = (_changes(shared["bids"], bids), _changes(shared["asks"], asks))
        shared["step"] = state.step
        if changes[0] or changes[1]:
            shared["prev"], shared["seq"] = shared["seq"], shared["seq"] + 1
            shared.update(bids=bids, asks=asks, changes=changes)
        else:
            shared["changes"] = ([], [])
    return shared


def _now_ms() -> int:
    return int(time.time() * 1000)


class Protocol(SimProtocol):
    NAME = "htx"
    PATHS = ("/ws", "/feed")
    KEEPALIVE_INTERVAL_S = 5

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.levels: dict[str, int] = {}               # symbol -> mbp.refresh depth
        self.seq_id = 160_000_000_000
        self.seq_num: dict[str, int] = {}
        self.last: dict[tuple[str, int], tuple] = {}   # last book pushed per (symbol, channel)
        self.missed_pongs = 0
        self.expired = False

    @staticmethod
    def _frame(msg: dict) -> bytes:
        return gzip.compress(orjson.dumps(msg), compresslevel=5, mtime=0)

    def _parse_topic(self, topic) -> tuple[str, object, int] | None:
        parts = topic.split(".") if isinstance(topic, str) else []
        if len(parts) < 3 or parts[0] != "market" or not self.accepts(parts[1]):
            return None
        if parts[2:] == ["bbo"]:
            return parts[1], BBO, 1
        rest = ".".join(parts[2:])
        if rest in ("detail", "ticker", "trade.detail", "depth.step0"):
            return parts[1], rest, 0
        if len(parts) == 4 and parts[2] == "mbp" and parts[3].isdigit() and int(parts[3]) in MBP_LEVELS:
            return parts[1], f"mbp.{int(parts[3])}", int(parts[3])
        if len(parts) == 5 and parts[2:4] == ["mbp", "refresh"] and parts[4].isdigit() \
                and int(parts[4]) in REFRESH_LEVELS:
            return parts[1], DEPTH, int(parts[4])
        return None

    def on_message(self, frame) -> list:
        try:
            msg = orjson.loads(frame)
            if not isinstance(msg, dict):
                raise ValueError
        except (orjson.JSONDecodeError, ValueError):
            return [self._frame({"status": "error", "ts": _now_ms(), "err-code": "bad-request",
                                 "err-msg": "invalid request"})]
        if "pong" in msg:
            self.missed_pongs = 0
            return []
        if "ping" in msg:
            if isinstance(msg["ping"], int) and not isinstance(msg["ping"], bool):
                return [self._frame({"pong": msg["ping"]})]
            return [self._frame({"ts": _now_ms(), "status": "error", "err-code": "bad-request",
                                 "err-msg": "invalid ping"})]
        kind = "sub" if "sub" in msg else "unsub" if "unsub" in msg else "req" if "req" in msg else None
        head = {"id": msg["id"]} if "id" in msg else {}
        if kind == "req":
            return [self._request(msg["req"], head)]
        if kind is None:
            return [self._frame({**head, "status": "error", "ts": _now_ms(), "err-code": "bad-request",
                                 "err-msg": "invalid request"})]
        topic = msg[kind]
        parsed = self._parse_topic(topic)
        if parsed is None:
            return [self._frame({**head, "status": "error", "ts": _now_ms(), "err-code": "bad-request",
                                 "err-msg": f"invalid topic {topic}"})]
        symbol, channel, levels = parsed
        if kind == "sub":
            self.subscribe(symbol, channel)
            if channel == DEPTH:
                self.levels[symbol] = levels
        else:
            self.unsubscribe(symbol, channel)
        self.last.pop((symbol, channel), None)
        return [self._frame({**head, "status": "ok", f"{kind}bed": topic, "ts": _now_ms()})]

    def _request(self, topic, head: dict) -> bytes:
        parsed = self._parse_topic(topic)
        if parsed is None or not str(parsed[1]).startswith("mbp.") or parsed[0] not in self.states:
            return self._frame({**head, "status": "error", "ts": _now_ms(), "err-code": "bad-request",
                                "err-msg": f"invalid topic {str(topic)[:200]}"})
        symbol, _, levels = parsed
        shared = _mbp(self.states[symbol], levels)
        px = self.fmt_px
        return self._frame({**head, "rep": topic, "status": "ok", "ts": _now_ms(), "data": {
            "seqNum": shared["seq"],
            "bids": [[float(px(symbol, p)), float(self.fmt_qty(q))] for p, q in shared["bids"]],
            "asks": [[float(px(symbol, p)), float(self.fmt_qty(q))] for p, q in shared["asks"]]}})

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
        if channel.startswith("mbp."):
            shared = _mbp(state, int(channel[4:]))
            bids, asks = shared["changes"]
            if not bids and not asks:
                return []
            tick = {"seqNum": shared["seq"], "prevSeqNum": shared["prev"]}
            if bids:
                tick["bids"] = [[px(p), qty(q)] for p, q in bids]
            if asks:
                tick["asks"] = [[px(p), qty(q)] for p, q in asks]
            return [self._frame({"ch": ch, "ts": ts, "tick": tick})]
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
        n = self.levels.get(symbol, 5)
        book = (tuple(bids[:n]), tuple(asks[:n]))
        if self.last.get((symbol, DEPTH)) != book or symbol not in self.seq_num:
            self.seq_num[symbol] = self.seq_num.get(symbol, 100_020_000_000) + 1
            self.last[(symbol, DEPTH)] = book
        tick = {"seqNum": self.seq_num[symbol],
                "bids": [[float(px(symbol, p)), float(self.fmt_qty(q))] for p, q in bids[:n]],
                "asks": [[float(px(symbol, p)), float(self.fmt_qty(q))] for p, q in asks[:n]]}
        return [self._frame({"ch": f"market.{symbol}.mbp.refresh.{n}", "ts": ts_ms, "tick": tick})]
