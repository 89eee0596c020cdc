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
  non-integer one gets the ``invalid ping`` error. (The real server closes
  after two unanswered pings; the simulator only counts them in ``missed_pongs``.)
* ``market.<sym>.bbo``: pushed when the top of book changed, ``tick`` with
  ``seqId``, ``bid``/``bidSize``/``ask``/``askSize``, ``quoteTime``, ``symbol``;
  numbers are JSON numbers.
* ``market.<sym>.mbp.refresh.<5|10|20>``: a full N-level snapshot each step,
  ``tick.seqNum`` (unchanged when the book did not change), ``bids``/``asks``
  as ``[[px, qty], ...]`` numbers.
"""
from __future__ import annotations

import gzip
import time

import orjson

from pipeline.sim.protocols.base import BBO, DEPTH, SimProtocol

REFRESH_LEVELS = (5, 10, 20)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Protocol(SimProtocol):
    NAME = "htx"
    KEEPALIVE_INTERVAL_S = 5

    def __init__(self, decimals=None):
        super().__init__(decimals)
        self.levels: dict[str, int] = {}               # symbol -> mbp.refresh depth
        self.seq_id = 160_000_000_000
        self.seq_num: dict[str, int] = {}
        self.last: dict[tuple[str, int], tuple] = {}   # last book pushed per (symbol, channel)
        self.missed_pongs = 0

    @staticmethod
    def _frame(msg: dict) -> bytes:
        return gzip.compress(orjson.dumps(msg), compresslevel=5, mtime=0)

    def _parse_topic(self, topic) -> tuple[str, int, int] | None:
        parts = topic.split(".") if isinstance(topic, str) else []
        if len(parts) < 3 or parts[0] != "market" or not self.accepts(parts[1]):
            return None
        if parts[2:] == ["bbo"]:
            return parts[1], BBO, 1
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
        kind = "sub" if "sub" in msg else "unsub" if "unsub" in msg else None
        head = {"id": msg["id"]} if "id" in msg else {}
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

    def keepalive(self, now_ms: int) -> list:
        self.missed_pongs += 1
        return [self._frame({"ping": now_ms})]

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
