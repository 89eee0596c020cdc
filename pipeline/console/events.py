"""The opportunity stream as the console shows it: what is open now, what closed last.

:class:`EventBook` is pure state fed one JSON-lines record at a time (the schema is
``pipeline.detector.report.event_record`` / ``shadow_record``); :class:`JsonlTail`
is the I/O that follows the detector's output file, which is opened for append,
so the tail starts near the end and survives truncation.
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field

import orjson

Key = tuple[str, str, str]          # (instrument, buy exchange, sell exchange)


@dataclass
class OpenOpportunity:
    instrument: str
    buy: str
    sell: str
    opened_ns: int
    net_bps: float
    quantity: float
    profit_quote: float
    peak_net_bps: float
    shadow: list | None = None     # shadow_fills of this open, once known


@dataclass(frozen=True)
class ClosedOpportunity:
    instrument: str
    buy: str
    sell: str
    closed_ns: int
    duration_ms: float
    peak_net_bps: float
    reason: str
    shadow: tuple | None = None    # ((latency_ms, net_bps or None, reason), ...)


@dataclass
class EventBook:
    """Open opportunities and the last ``keep`` closes, from the records seen so far."""

    keep: int = 20
    since_ns: int = 0              # records older than this (an earlier run in the same file) are ignored
    open: dict = field(default_factory=dict)          # Key -> OpenOpportunity
    closes: collections.deque = field(default_factory=collections.deque)
    counts: collections.Counter = field(default_factory=collections.Counter)

    def apply(self, record: dict) -> None:
        kind = record.get("event")
        if record.get("time_ns", 0) < self.since_ns or kind not in ("open", "update", "close", "shadow"):
            return
        self.counts[kind] += 1
        key = (record["instrument"], record["buy_exchange"], record["sell_exchange"])
        if kind == "open":
            self.open[key] = OpenOpportunity(key[0], key[1], key[2], record["time_ns"], record["net_bps"],
                                             record["quantity"], record["profit_quote"], record["net_bps"])
        elif kind == "update":
            opp = self.open.get(key)
            if opp is not None:
                opp.net_bps, opp.quantity, opp.profit_quote = (record["net_bps"], record["quantity"],
                                                               record["profit_quote"])
                opp.peak_net_bps = max(opp.peak_net_bps, record["net_bps"])
        elif kind == "close":
            opp = self.open.pop(key, None)
            self.closes.appendleft(ClosedOpportunity(
                key[0], key[1], key[2], record["time_ns"], record["duration_ms"], record["peak_net_bps"],
                record["close_reason"], _shadow(opp.shadow) if opp is not None and opp.shadow else None))
            while len(self.closes) > self.keep:
                self.closes.pop()
        else:   # shadow: belongs to the open it follows, which may already have closed
            opp = self.open.get(key)
            if opp is not None:
                opp.shadow = record["shadow_fills"]
                return
            for i, closed in enumerate(self.closes):
                if (closed.instrument, closed.buy, closed.sell) == key:
                    if closed.shadow is None:
                        self.closes[i] = ClosedOpportunity(closed.instrument, closed.buy, closed.sell,
                                                           closed.closed_ns, closed.duration_ms,
                                                           closed.peak_net_bps, closed.reason,
                                                           _shadow(record["shadow_fills"]))
                    break


def _shadow(fills: list) -> tuple:
    return tuple((f["latency_ms"], f["net_bps"], f.get("reason", "")) for f in fills)


class JsonlTail:
    """Follows a JSON-lines file that another process appends to.

    Reads only whole lines; starts ``start_back_bytes`` before the end (the file keeps
    earlier runs); starts over when the file shrinks (truncated or replaced).
    """

    def __init__(self, path: str, start_back_bytes: int = 1 << 20):
        self.path = path
        self.start_back_bytes = start_back_bytes
        self._file = None
        self._inode = None
        self._partial = b""

    def _open(self) -> bool:
        try:
            f = open(self.path, "rb")
        except OSError:
            return False
        st = os.fstat(f.fileno())
        start = max(0, st.st_size - self.start_back_bytes)
        f.seek(start)
        if start:
            f.readline()            # skip the partial line we landed in
        self._file, self._inode, self._partial = f, st.st_ino, b""
        return True

    def read(self) -> list[dict]:
        """Records appended since the last call (unparseable lines are skipped)."""
        if self._file is None and not self._open():
            return []
        try:
            st = os.stat(self.path)
            if st.st_ino != self._inode or st.st_size < self._file.tell():
                self.close()
                self.start_back_bytes = 1 << 62    # a new file: read it whole
                if not self._open():
                    return []
        except OSError:
            return []
        data = self._partial + self._file.read()
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            if line.strip():
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
