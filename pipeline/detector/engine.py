"""The detector's decisions, without I/O: quotes and a time in, opportunity records out.

:class:`DetectorEngine` evaluates an instrument whose rows changed (net edge
after both taker fees, walking both books), follows each opportunity's
lifecycle (open / update / close), runs the shadow fills after each
configured latency, and keeps the exit summary. It never reads a clock and
never writes anything: every method takes ``now_ns`` and returns the records
to emit, in order, as :class:`Emitted` (the record plus the lifecycle event
it came from, for the live process's hop histograms). The live detector
process feeds it from the board as rows change and fans the records out to
stdout, the JSON-lines file and the sink; ``replay`` feeds it the same way
with the time of the frame being replayed, which is why two replays of one
recording give identical records.

Each leg's trading rules are read through ``rules_of(leg) -> (version, InstrumentRules | None)`` (see
:class:`~pipeline.detector.rules.PairState`): asked only when the leg's quote is replaced, a pair's
sizer rebuilt only when a version moved. With them every opened size is one both venues accept and the
refusals are counted in the summary (``refused``); without them (None) sizes are the depth walk's own.

Quotes for shadow fills and expiry are read through ``quotes_of(key)``; it
may raise :class:`~pipeline.board.TornReadError` when a writer was preempted
mid-write, and the engine then tries again shortly after.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.detector.lifecycle import Event, Lifecycle
from pipeline.detector.report import Summary, event_record, shadow_record
from pipeline.detector.rules import PairState, Quote, allocate, shadow_fill
from pipeline.detector.scan import RowUniverse
from pipeline.errors import TornReadError
from pipeline.model import InstrumentRules

EXPIRE_INTERVAL_NS = 20_000_000
TORN_RETRY_NS = 100_000


@dataclass(slots=True)
class Emitted:
    record: dict
    event: Event | None = None       # None for shadow records


def remote_leg_delay_ns(candidate) -> int:
    """How much later a bridged leg is seen here than on its own box (its row's age on arrival at the open).

    An order for that leg reaches its venue from the remote box, and what the venue's book did at
    ``open + latency`` shows up here this much later: the shadow fill of a cross-box opportunity is
    priced on the book as seen ``latency`` + this delay after the open. Legs read from this box's own feed:
    0 (a leg this box reads itself, served by another box's copy, counts as bridged).
    """
    delay = 0
    for quote in (candidate.buy, candidate.sell):
        if quote.via and quote.publish_ns > quote.recv_ns:
            delay = max(delay, quote.publish_ns - quote.recv_ns)
    return delay


class DetectorEngine:
    """Quotes and a time in, records out: pairs found, liquidity allocated, lifecycle followed, shadow fills run."""

    def __init__(self, config, universe: RowUniverse, quotes_of: Callable[[str], dict[str, Quote]],
                 clock_offset_ns: Callable[[str], int] = lambda label: 0,
                 rules_of: Callable[[str], tuple[int, InstrumentRules | None]] | None = None):
        dc = config.detector
        self.rules_of = rules_of
        self.config = config
        self.universe = universe
        self.fees = universe.fees
        self.quotes_of = quotes_of
        self.clock_offset_ns = clock_offset_ns
        self.staleness_ns = int(dc.staleness_ms * 1e6)
        self.threshold_bps = dc.threshold_bps
        self.hysteresis_bps = dc.close_hysteresis_bps       # None: half the pair's fees
        self.shadow_latencies_ms = tuple(dc.shadow_latencies_ms or ())
        self.lifecycle = Lifecycle(update_bps=dc.update_bps, threshold_bps=dc.threshold_bps,
                                   close_after_ns=int(dc.close_after_ms * 1e6), reopen_ns=int(dc.reopen_ms * 1e6))
        self._open = self.lifecycle.by_instrument        # instrument -> its live opportunities
        self.summary = Summary()
        self.suspects: list = []          # (key, candidate) seen since the caller last looked
        self.shadow_due: list = []        # heap of (due_ns, n, opened event, latency_ms)
        self.shadow_pending: dict = {}    # id(open) -> [event, {latency: ShadowFill}, remote delay]
        self._shadow_n = 0
        self._pairs: dict[str, PairState] = {}   # per instrument identity, kept between passes
        self.held: dict = {}              # pair key -> why it may not open now (counted once per hold)

    def hysteresis(self, candidate) -> float:
        return self.hysteresis_bps if self.hysteresis_bps is not None else 0.5 * candidate.fill.fees_bps

    def close_level_bps(self, candidate) -> float:
        """The net edge under which an open opportunity of this pair ends: the threshold less the hysteresis."""
        return self.threshold_bps - self.hysteresis(candidate)

    def _ranked(self, candidates: list) -> list:
        """The order in which pairs take shared liquidity: the best net edge first (per unit taken, the pair that
        earns most; ranking by profit would hand the shared levels to a large pair whose deeper units earn less
        on them), except that a pair already open keeps its place, the older first, until another beats its
        edge by more than the hysteresis: two pairs of about the same edge never take a book from each other
        at every tick, and a much better one is never kept waiting."""
        live = self.lifecycle.live
        placed: list = []               # (candidate, the edge another must beat to go before it)
        opened = []
        fresh = []
        for c in candidates:
            current = live.get(c.key)
            if current is not None and not current.ended_ns:
                opened.append((current.id, c))
            else:
                fresh.append(c)
        fresh.sort(key=lambda c: -c.fill.net_bps)
        if not opened:
            return fresh
        opened.sort(key=lambda item: item[0])
        for c, guard in [(c, c.fill.net_bps + self.hysteresis(c)) for _, c in opened] + [
                (c, c.fill.net_bps) for c in fresh]:
            edge = c.fill.net_bps
            at = next((n for n, (_, other) in enumerate(placed) if edge > other), len(placed))
            placed.insert(at, (c, guard))
        return [c for c, _ in placed]

    def _bar(self, candidate) -> float:
        return self.lifecycle.bar(candidate.key, self.threshold_bps, self.close_level_bps(candidate))

    # ---------------------------------------------------------------- deciding
    def evaluate(self, key: str, quotes: dict[str, Quote], now_ns: int) -> list[Emitted]:
        """Re-evaluate one instrument identity from its current quotes.

        Per instrument, the pairs' fills are kept between calls (:class:`~pipeline.detector.rules.PairState`)
        and only the pairs of quotes that are new objects are walked again; the result is what
        :func:`~pipeline.detector.rules.find` gives on the same quotes. The pairs that clear their bar (the
        threshold to open, the close level to stay open) then share the books' liquidity, best net edge
        first (:func:`~pipeline.detector.rules.allocate`), and the lifecycle decides what to emit.
        """
        state = self._pairs.get(key)
        try:
            if state is None:
                raise KeyError(key)
            found, suspect = state.find(quotes, now_ns)
        except KeyError:                  # first time, or another set of labels: start this instrument afresh
            state = self._pairs[key] = self._pair_state(key, quotes)
            found, suspect = state.find(quotes, now_ns)
        if self.lifecycle.spent:
            close_level = self.close_level_bps
            self.lifecycle.seen(key, {c.key for c in found if c.fill.net_bps >= close_level(c)}, now_ns)
        if suspect:
            for candidate in suspect:
                self.summary.suspects += 1
                self.suspects.append((key, candidate))
        elif not found and key not in self._open:
            return []                     # nothing found and nothing open: what Lifecycle.step would say
        alone = None
        if found:
            found = self._openable(key, found, quotes, now_ns)
        if len(found) > 1:
            bar = self._bar
            ranked = self._ranked([c for c in found if c.fill.net_bps >= bar(c)])
            kept = allocate(ranked, bar, self.universe.max_notional[key], self.config.detector.min_notional)
            if len(kept) < len(ranked):
                taken = {c.key for c in kept}
                alone = {c.key: c for c in ranked if c.key not in taken}
        else:
            kept = [c for c in found if c.fill.net_bps >= self._bar(c)]
        events = self.lifecycle.step(key, kept, quotes, now_ns, self.staleness_ns, alone)
        return self._records(events, now_ns) if events else []

    def _openable(self, key: str, found: list, quotes: dict[str, Quote], now_ns: int) -> list:
        """``found`` less the pairs that may not open now: a leg whose price has sat still past its venue's
        ``max_unchanged_ms`` while another venue's quote of the instrument changed (the exchange's
        confirmations kept its row fresh: they prove the connection, not the price), or whose exchange time,
        corrected by its feed's clock offset, was more than ``max_exchange_lag_ms`` behind its receive time (the
        venue's stream runs late). An open opportunity is not affected. Each hold is counted once in the summary."""
        held = self.held
        live = self.lifecycle.live
        out = []
        for c in found:
            if c.key in live:
                out.append(c)
                continue
            reason = self._held_by(c.buy, c.key[1], quotes, now_ns) or self._held_by(c.sell, c.key[2], quotes, now_ns)
            if reason is None:
                held.pop(c.key, None)
                out.append(c)
            elif held.get(c.key) != reason:
                held[c.key] = reason
                self.summary.held_back[reason] = self.summary.held_back.get(reason, 0) + 1
        if held:
            seen = {c.key for c in found}
            for k in [k for k in held if k[0] == key and k not in seen]:
                del held[k]                    # gone: a later hold of the pair is another would-be open
        return out

    def _held_by(self, quote: Quote, leg: str, quotes: dict[str, Quote], now_ns: int) -> str | None:
        universe = self.universe
        limit = universe.unchanged_ns[leg]
        if limit and now_ns - quote.recv_ns > limit:
            for other in quotes.values():
                if other.venue != quote.venue and now_ns - other.recv_ns <= limit:
                    return "quote_unchanged"
        # how late the quote's last change arrived: receive time less exchange time, less the feed's clock offset
        # (the low envelope of that difference): not the quote's age, which a quiet book makes large
        lag = universe.lag_ns[leg]
        if lag and quote.exch_ts_ns and quote.recv_ns - quote.exch_ts_ns - self.clock_offset_ns(quote.venue) > lag:
            return "exchange_lag"
        return None

    def _pair_state(self, key: str, quotes: dict[str, Quote]) -> PairState:
        dc = self.config.detector
        fees = self.fees[key]
        top_two = sorted(fees.values())[-2:]
        conversion = dc.conversion_bps if len(set(self.universe.currency[key].values())) > 1 else 0.0
        widest = self.hysteresis_bps if self.hysteresis_bps is not None else 0.5 * (sum(top_two) + conversion)
        # keep every pair that could stay open: the lowest close level of any pair of this instrument
        return PairState(key, quotes, fees, self.staleness_ns, self.threshold_bps - widest,
                         self.universe.max_notional[key], dc.min_notional, dc.sanity_bps,
                         self.universe.currency[key], dc.conversion_bps, self.rules_of, self.summary.refused,
                         self.threshold_bps)

    def _records(self, events: list[Event], now_ns: int) -> list[Emitted]:
        out = []
        universe = self.universe
        for event in events:
            c = event.candidate
            record = event_record(event, now_ns, self.fees[c.instrument], universe.currency_of_key[c.instrument],
                                  self.clock_offset_ns(c.buy.venue), self.clock_offset_ns(c.sell.venue),
                                  universe.fee_source.get(c.instrument))
            if event.kind == "open":
                self.summary.opened(record, universe.currency_of_key[c.instrument][1])
                self._schedule_shadows(event)
            elif event.kind == "close":
                self.summary.closed(record)
            out.append(Emitted(record, event))
        return out

    # ---------------------------------------------------------------- shadow fills
    def _schedule_shadows(self, event: Event) -> None:
        if not self.shadow_latencies_ms:
            return
        remote_ns = remote_leg_delay_ns(event.candidate)
        self.shadow_pending[id(event)] = [event, {}, remote_ns]
        for latency_ms in self.shadow_latencies_ms:
            self._shadow_n += 1
            heapq.heappush(self.shadow_due, (event.now_ns + int(latency_ms * 1e6) + remote_ns, self._shadow_n, event,
                                             latency_ms))

    def next_shadow_ns(self) -> int | None:
        return self.shadow_due[0][0] if self.shadow_due else None

    def run_shadows(self, now_ns: int) -> list[Emitted]:
        """Shadow fills that are due: what taking both legs ``latency`` after the open would have given.

        The fills due at one moment for one instrument (the opens of one pass) take from the books in
        the order the pass ranked them, each from what the ones before it left, as at the open.
        """
        due = self.shadow_due
        out = []
        taken: dict = {}                  # (due_ns, instrument) -> the levels left, by (leg, side)
        while due and due[0][0] <= now_ns:
            due_ns, _, event, latency_ms = heapq.heappop(due)
            c = event.candidate
            try:
                quotes = self.quotes_of(c.instrument)
            except TornReadError:
                self._shadow_n += 1
                heapq.heappush(due, (now_ns + TORN_RETRY_NS, self._shadow_n, event, latency_ms))
                break
            left = taken.setdefault((due_ns, c.instrument), {})
            fill = shadow_fill(c, quotes[c.key[1]], quotes[c.key[2]], latency_ms, now_ns, self.staleness_ns, left)
            self.summary.shadow(fill, c.fill.quantity * c.fill.buy_price,
                                self.universe.currency_of_key[c.instrument][1])
            pending = self.shadow_pending[id(event)]
            pending[1][latency_ms] = fill
            if len(pending[1]) == len(self.shadow_latencies_ms):
                del self.shadow_pending[id(event)]
                fills = [pending[1][ms] for ms in sorted(pending[1])]
                record = shadow_record(event, fills, now_ns, self.universe.currency_of_key[c.instrument])
                if pending[2]:
                    record["remote_leg_delay_ms"] = round(pending[2] / 1e6, 3)
                out.append(Emitted(record, None))
        return out

    # ---------------------------------------------------------------- time
    def expire(self, now_ns: int) -> list[Emitted]:
        """Close opportunities whose quotes went stale with no board change to say so."""
        if not self.lifecycle.live:
            return []
        keys = {key[0] for key in self.lifecycle.live}
        try:
            quotes = {k: self.quotes_of(k) for k in keys}
        except TornReadError:
            return []
        return self._records(self.lifecycle.expire(quotes, now_ns, self.staleness_ns), now_ns)

    def close_all(self, now_ns: int) -> list[Emitted]:
        return self._records(self.lifecycle.close_all(now_ns), now_ns)
