"""Opportunity lifecycle: one live opportunity per (instrument, buy, sell).

``open`` when a pair first crosses the threshold, ``update`` when its size or
edge moves materially, ``close`` (with the reason and duration, peak edge
and peak profit) when it stops holding. Pure: callers pass ``now_ns``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.detector.rules import Candidate, Quote, untradable_reason


@dataclass(slots=True)
class Live:
    key: tuple[str, str, str]
    opened_ns: int
    candidate: Candidate
    peak_net_bps: float
    peak_profit: float
    updates: int = 0


@dataclass(slots=True)
class Event:
    kind: str                      # "open" | "update" | "close"
    now_ns: int
    candidate: Candidate           # the latest candidate (the last one seen, for close)
    opened_ns: int
    peak_net_bps: float = 0.0
    peak_profit: float = 0.0
    close_reason: str = ""

    @property
    def duration_ms(self) -> float:
        return (self.now_ns - self.opened_ns) / 1e6


@dataclass
class Lifecycle:
    update_bps: float = 1.0               # an edge change at least this large is an update
    update_quantity_ratio: float = 0.2    # or a size change of at least this fraction
    live: dict = field(default_factory=dict)
    by_instrument: dict = field(default_factory=dict)    # instrument -> {key: None}, in the order opened

    def step(self, instrument: str, candidates: list[Candidate], quotes: dict[str, Quote], now_ns: int,
             staleness_ns: int) -> list[Event]:
        """Events for one instrument after it was re-evaluated."""
        mine = self.by_instrument.get(instrument)
        if not candidates and not mine:
            return []                     # nothing open and nothing found: the common case
        events: list[Event] = []
        seen = set()
        for candidate in candidates:
            key = (instrument, candidate.buy.venue, candidate.sell.venue)
            seen.add(key)
            fill = candidate.fill
            current = self.live.get(key)
            if current is None:
                self.live[key] = Live(key, now_ns, candidate, fill.net_bps, fill.profit_quote)
                if mine is None:
                    mine = self.by_instrument[instrument] = {}
                mine[key] = None
                events.append(Event("open", now_ns, candidate, now_ns, fill.net_bps, fill.profit_quote))
                continue
            previous = current.candidate.fill
            current.peak_net_bps = max(current.peak_net_bps, fill.net_bps)
            current.peak_profit = max(current.peak_profit, fill.profit_quote)
            moved = abs(fill.net_bps - previous.net_bps) >= self.update_bps or (
                abs(fill.quantity - previous.quantity) >= self.update_quantity_ratio * previous.quantity)
            if moved:
                current.candidate = candidate
                current.updates += 1
                events.append(Event("update", now_ns, candidate, current.opened_ns, current.peak_net_bps,
                                    current.peak_profit))
        if mine:
            for key in [k for k in mine if k not in seen]:
                events.append(self._close(key, quotes, now_ns, staleness_ns))
        return events

    def expire(self, quotes_by_instrument: dict[str, dict[str, Quote]], now_ns: int, staleness_ns: int) -> list[Event]:
        """Close live opportunities whose quotes went stale with no board change to tell us."""
        events = []
        for key in list(self.live):
            instrument, buy, sell = key
            quotes = quotes_by_instrument.get(instrument, {})
            for venue in (buy, sell):
                quote = quotes.get(venue)
                if quote is None or untradable_reason(quote, now_ns, staleness_ns) is not None:
                    events.append(self._close(key, quotes, now_ns, staleness_ns))
                    break
        return events

    def _close(self, key, quotes: dict[str, Quote], now_ns: int, staleness_ns: int) -> Event:
        current = self.live.pop(key)
        self._forget(key)
        reason = "spread_closed"
        for venue in key[1:]:
            quote = quotes.get(venue)
            why = "book_invalidated" if quote is None else untradable_reason(quote, now_ns, staleness_ns)
            if why is not None:
                reason = why
                break
        return Event("close", now_ns, current.candidate, current.opened_ns, current.peak_net_bps,
                     current.peak_profit, reason)

    def close_all(self, now_ns: int, reason: str = "shutdown") -> list[Event]:
        events = []
        for key in list(self.live):
            current = self.live.pop(key)
            self._forget(key)
            events.append(Event("close", now_ns, current.candidate, current.opened_ns, current.peak_net_bps,
                                current.peak_profit, reason))
        return events

    def _forget(self, key) -> None:
        mine = self.by_instrument.get(key[0])
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self.by_instrument[key[0]]
