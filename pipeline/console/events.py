"""The opportunity stream as the console shows it: what is open now, what closed last.

:class:`EventBook` is pure state fed one JSON-lines record at a time (the schema is
``pipeline.detector.report.event_record`` / ``shadow_record``, documented in the README);
:class:`JsonlTail` is the I/O that follows the detector's output file. ``detector.output``
is a link to the current run's file (or, with ``run.py --append``, one file every run
appends to): the tail starts near the end, follows the link when a new run repoints it,
and survives truncation.
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
    qty_base: float
    profit_quote: float
    peak_net_bps: float
    shadow: tuple | None = None    # its shadow fills, once known (as ClosedOpportunity.shadow)
    id: int | None = None          # the opportunity's number within its run (records of older versions: None)


@dataclass(frozen=True)
class ClosedOpportunity:
    instrument: str
    buy: str
    sell: str
    closed_ns: int
    duration_ms: float
    peak_net_bps: float
    reason: str
    shadow: tuple | None = None    # ((latency_ms, net_bps or None, reason, fill_fraction or None), ...)
    id: int | None = None
    run_id: str | None = None
    flaps: int = 0


def _qty(record: dict) -> float:
    """The size in the base currency: ``qty_base``, or ``quantity`` in records of older versions."""
    return record.get("qty_base", record.get("quantity", 0.0))


@dataclass
class EventBook:
    """Open opportunities and the last ``keep`` closes, from the records seen so far.

    ``counts`` counts records by event, and ``flaps`` (the sum of the closes' ``flaps``: times an
    opportunity's edge dropped out and came back within ``detector.reopen_ms``). A record of
    another run than the last one seen means a new run started: the open set and the counts start
    over (the last closes stay, as history).
    """

    keep: int = 20
    since_ns: int = 0              # records older than this (an earlier run in the same file) are ignored
    open: dict = field(default_factory=dict)          # Key -> OpenOpportunity
    closes: collections.deque = field(default_factory=collections.deque)
    counts: collections.Counter = field(default_factory=collections.Counter)
    run_id: str | None = None      # the run of the last record that carried one

    def apply(self, record: dict) -> None:
        kind = record.get("event")
        if record.get("time_ns", 0) < self.since_ns or kind not in ("open", "update", "close", "shadow"):
            return
        run_id = record.get("run_id")
        if run_id and run_id != self.run_id:
            if self.run_id is not None:          # a new run: what was open belonged to the old one
                self.open.clear()
                self.counts.clear()
            self.run_id = run_id
        self.counts[kind] += 1
        key = (record["instrument"], record["buy_exchange"], record["sell_exchange"])
        number = record.get("id")
        if kind == "open":
            self.open[key] = OpenOpportunity(key[0], key[1], key[2], record["time_ns"], record["net_bps"],
                                             _qty(record), record["profit_quote"], record["net_bps"], id=number)
        elif kind == "update":
            opp = self.open.get(key)
            if opp is not None:
                opp.net_bps, opp.qty_base, opp.profit_quote = record["net_bps"], _qty(record), record["profit_quote"]
                opp.peak_net_bps = max(opp.peak_net_bps, record["net_bps"])
        elif kind == "close":
            opp = self.open.pop(key, None)
            flaps = int(record.get("flaps") or 0)
            self.counts["flaps"] += flaps
            self.closes.appendleft(ClosedOpportunity(
                key[0], key[1], key[2], record["time_ns"], record["duration_ms"], record["peak_net_bps"],
                record["close_reason"], opp.shadow if opp is not None else None, number, run_id or None, flaps))
            while len(self.closes) > self.keep:
                self.closes.pop()
        else:   # shadow: belongs to the open it follows (same id, or same pair), which may already have closed
            opp = self.open.get(key)
            if opp is not None and (number is None or opp.id is None or opp.id == number):
                opp.shadow = _shadow(record["shadow_fills"], _qty(record))
                return
            for i, closed in enumerate(self.closes):
                if number is not None and closed.id is not None:
                    same = (closed.id, closed.run_id) == (number, run_id or None)
                else:
                    same = (closed.instrument, closed.buy, closed.sell) == key
                if same:
                    if closed.shadow is None:
                        self.closes[i] = ClosedOpportunity(closed.instrument, closed.buy, closed.sell,
                                                           closed.closed_ns, closed.duration_ms,
                                                           closed.peak_net_bps, closed.reason,
                                                           _shadow(record["shadow_fills"], _qty(record)),
                                                           closed.id, closed.run_id, closed.flaps)
                    break


def _shadow(fills: list, qty_base: float) -> tuple:
    """(latency, net bps, reason, fill fraction) per fill; the fraction from ``filled`` and the detected
    ``quantity`` in older records."""
    out = []
    for f in fills:
        fraction = f.get("fill_fraction")
        if fraction is None and f.get("filled") is not None and qty_base:
            fraction = f["filled"] / qty_base
        out.append((f["latency_ms"], f["net_bps"], f.get("reason", ""), fraction))
    return tuple(out)


class JsonlTail:
    """Follows a JSON-lines file that another process appends to.

    Reads only whole lines; starts ``start_back_bytes`` before the end (the file may keep
    earlier runs); starts over when the file shrinks (truncated) or when the path names
    another file (replaced, or a link repointed to a new run's file: ``os.stat`` follows
    the link), reading that one from its start.
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
