"""Opportunity lifecycle: one opportunity per dislocation of a pair (instrument, buy leg, sell leg).

``open`` when the pair's net edge reaches ``threshold_bps``. While open, an
``update`` when its size or edge moves materially. It ends when a leg is no
longer tradable, when its edge falls below its close level (``threshold_bps``
minus the pair's hysteresis: the edge must fall well below the bar it crossed,
so noise around the threshold does not make a new opportunity at every tick),
or when the better pairs of the same pass took the liquidity it had. An ended
opportunity whose pair is back above its close level within ``reopen_ms``
continues (a *flap*, counted on its close); otherwise its ``close`` is emitted
once ``reopen_ms`` has passed, with the reason, the lifetime up to its end,
peaks and flaps. So a ``close`` is final, and one dislocation is one
opportunity. A leg that stops being trusted (its row stale, resyncing,
disconnected or halted, or its book invalid) is no flap: the ``close`` is
emitted at once.

An opportunity that stays under ``threshold_bps`` (above its close level) for
``close_after_ms`` is closed at once (``below_threshold``), and its pair is
*spent*: it cannot open again until it has been below its close level for
``reopen_ms``, so a dislocation that lingers is still one opportunity.

What follows: where the close level is the same for two thresholds (the
default hysteresis is half the pair's fees, and no pair is ever found below
zero, so every threshold up to it closes at the same place), an opportunity at
the higher one is a stretch of the pair above its close level (gaps shorter
than ``reopen_ms`` bridged) that also reached the higher bar, and each such
stretch gives at most one opportunity: raising the threshold can only remove
opportunities (tests/property/test_detector_properties.py). Their peaks need not
follow: at the lower threshold the stretch's one opportunity may have closed
under its bar (``close_after_ms``) before the stretch peaked, while the higher
threshold opens later and reports the peak.

Pure: callers pass ``now_ns``; candidates come already allocated (see
:func:`pipeline.detector.rules.allocate`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.detector.rules import Candidate, Quote, untradable_reason

_NEVER = float("inf")
# the ends that may be a flap: the market moved and may move back. Any other end is a leg no longer to be
# trusted (stale, resyncing, disconnected, halted, an invalid book): closed at once, for a trader who acts on
# the decisions must stop at once, and the pair opens afresh once both legs are trusted again
FLAP_REASONS = frozenset({"spread_closed", "liquidity_taken"})


@dataclass(slots=True)
class Live:
    key: tuple[str, str, str]
    id: int
    opened_ns: int
    candidate: Candidate            # as last emitted (open or update)
    peak_net_bps: float
    peak_profit: float
    updates: int = 0
    below_since_ns: int = 0         # since when the edge has been under the open threshold (0: it is not)
    ended_ns: int = 0               # when it ended (0: it has not); its close waits for reopen_ms
    end_reason: str = ""
    flaps: int = 0                  # times it ended and came back within reopen_ms


@dataclass(slots=True)
class Event:
    kind: str                      # "open" | "update" | "close"
    now_ns: int
    candidate: Candidate           # the latest candidate (the last one emitted, for close)
    opened_ns: int
    peak_net_bps: float = 0.0
    peak_profit: float = 0.0
    close_reason: str = ""
    id: int = 0
    flaps: int = 0
    ended_ns: int = 0              # close: when the opportunity ended (its close is emitted reopen_ms later)

    @property
    def duration_ms(self) -> float:
        return ((self.ended_ns or self.now_ns) - self.opened_ns) / 1e6


@dataclass
class Lifecycle:
    update_bps: float = 1.0               # an edge change at least this large is an update
    update_quantity_ratio: float = 0.2    # or a size change of at least this fraction
    threshold_bps: float = 0.0            # open at this net edge
    close_after_ns: int = 0               # end after this long under threshold_bps (0: never)
    reopen_ns: int = 0                    # an end followed by a reopen within this long is a flap
    live: dict = field(default_factory=dict)             # key -> Live (ended ones included until their close)
    by_instrument: dict = field(default_factory=dict)    # instrument -> {key: None}, in the order opened
    spent: dict = field(default_factory=dict)            # key -> since when below its close level (0: it is not)
    opened: int = 0                                      # ids given so far

    def bar(self, key, threshold_bps: float, close_level_bps: float) -> float:
        """The net edge a pair must reach in this pass: its close level while it is open (ended ones included,
        which continue if back above it), the threshold to open, never while it is spent."""
        if key in self.live:
            return close_level_bps
        return _NEVER if key in self.spent else threshold_bps

    def seen(self, instrument: str, above_close: set, now_ns: int) -> None:
        """Before a pass's bars are read: the spent pairs of ``instrument`` seen above their close level
        (``above_close``) stay spent; the others are released once below it for ``reopen_ms``."""
        if not self.spent:
            return
        for key in [k for k in self.spent if k[0] == instrument]:
            if key in above_close:
                self.spent[key] = 0
            elif not self.spent[key]:
                self.spent[key] = now_ns
            if self.spent[key] and now_ns - self.spent[key] >= self.reopen_ns:
                del self.spent[key]

    def step(self, instrument: str, candidates: list[Candidate], quotes: dict[str, Quote], now_ns: int,
             staleness_ns: int, alone: dict | None = None) -> list[Event]:
        """Events for one instrument after it was re-evaluated.

        ``candidates``: the allocated pairs, each above its bar (the open threshold for a pair that is
        not open, its close level for one that is). ``alone``: key -> the pair's own candidate where it
        was found but lost its liquidity to better pairs (the close then says ``liquidity_taken``).
        """
        mine = self.by_instrument.get(instrument)
        if not candidates and not mine:
            return []                     # nothing open and nothing found: the common case
        events: list[Event] = []
        seen = set()
        threshold = self.threshold_bps
        for candidate in candidates:
            key = candidate.key
            seen.add(key)
            fill = candidate.fill
            current = self.live.get(key)
            if current is not None and current.ended_ns and now_ns - current.ended_ns >= self.reopen_ns:
                events.append(self._close(current, now_ns))        # ended too long ago: that one is over
                current = None
                if fill.net_bps < threshold:
                    continue
                mine = self.by_instrument.get(instrument)
            if current is None:
                self.opened += 1
                self.live[key] = Live(key, self.opened, now_ns, candidate, fill.net_bps, fill.profit_quote)
                if mine is None:
                    mine = self.by_instrument[instrument] = {}
                mine[key] = None
                events.append(Event("open", now_ns, candidate, now_ns, fill.net_bps, fill.profit_quote,
                                    id=self.opened))
                continue
            if current.ended_ns:          # ended, and back within reopen_ms: the same opportunity goes on
                current.ended_ns = 0
                current.end_reason = ""
                current.flaps += 1
                current.below_since_ns = 0
            if fill.net_bps >= threshold:
                current.below_since_ns = 0
            elif not current.below_since_ns:
                current.below_since_ns = now_ns
            elif self.close_after_ns and now_ns - current.below_since_ns >= self.close_after_ns:
                self._end(current, now_ns, "below_threshold", events)
                continue
            previous = current.candidate.fill
            current.peak_net_bps = max(current.peak_net_bps, fill.net_bps)
            current.peak_profit = max(current.peak_profit, fill.profit_quote)
            moved = abs(fill.net_bps - previous.net_bps) >= self.update_bps or (
                abs(fill.quantity - previous.quantity) >= self.update_quantity_ratio * previous.quantity)
            if moved:
                current.candidate = candidate
                current.updates += 1
                events.append(self._event("update", current, now_ns))
        if mine:
            for key in [k for k in mine if k not in seen]:
                current = self.live[key]
                if not current.ended_ns:
                    reason = self._reason(key, quotes, now_ns, staleness_ns)
                    if reason == "spread_closed" and alone and key in alone:
                        reason = "liquidity_taken"
                    self._end(current, now_ns, reason, events)
                elif now_ns - current.ended_ns >= self.reopen_ns:
                    events.append(self._close(current, now_ns))
        return events

    def expire(self, quotes_by_instrument: dict[str, dict[str, Quote]], now_ns: int, staleness_ns: int) -> list[Event]:
        """What time alone decides: legs gone stale with no board change to say so, an edge left under the
        threshold for ``close_after_ms``, and closes whose ``reopen_ms`` has passed."""
        events = []
        for key, current in list(self.live.items()):
            if current.ended_ns:
                if now_ns - current.ended_ns >= self.reopen_ns:
                    events.append(self._close(current, now_ns))
                continue
            quotes = quotes_by_instrument.get(key[0], {})
            reason = None
            for leg in key[1:]:
                quote = quotes.get(leg)
                reason = "book_invalidated" if quote is None else untradable_reason(quote, now_ns, staleness_ns)
                if reason is not None:
                    break
            if reason is None and self.close_after_ns and current.below_since_ns and (
                    now_ns - current.below_since_ns >= self.close_after_ns):
                reason = "below_threshold"
            if reason is not None:
                self._end(current, now_ns, reason, events)
        return events

    def close_all(self, now_ns: int, reason: str = "shutdown") -> list[Event]:
        events = []
        for current in list(self.live.values()):
            if not current.ended_ns:
                current.ended_ns, current.end_reason = now_ns, reason
            events.append(self._close(current, now_ns))
        return events

    # ---------------------------------------------------------------- helpers
    def _end(self, current: Live, now_ns: int, reason: str, events: list[Event]) -> None:
        current.ended_ns = now_ns
        current.end_reason = reason
        if reason == "below_threshold":     # the edge is still there: closed now, and spent while it lasts
            self.spent[current.key] = 0
            events.append(self._close(current, now_ns))
        elif self.reopen_ns <= 0 or reason not in FLAP_REASONS:
            events.append(self._close(current, now_ns))

    def _close(self, current: Live, now_ns: int) -> Event:
        del self.live[current.key]
        mine = self.by_instrument.get(current.key[0])
        if mine is not None:
            mine.pop(current.key, None)
            if not mine:
                del self.by_instrument[current.key[0]]
        event = self._event("close", current, now_ns)
        event.close_reason = current.end_reason
        event.ended_ns = current.ended_ns
        return event

    @staticmethod
    def _event(kind: str, current: Live, now_ns: int) -> Event:
        return Event(kind, now_ns, current.candidate, current.opened_ns, current.peak_net_bps, current.peak_profit,
                     id=current.id, flaps=current.flaps)

    @staticmethod
    def _reason(key, quotes: dict[str, Quote], now_ns: int, staleness_ns: int) -> str:
        for leg in key[1:]:
            quote = quotes.get(leg)
            why = "book_invalidated" if quote is None else untradable_reason(quote, now_ns, staleness_ns)
            if why is not None:
                return why
        return "spread_closed"
