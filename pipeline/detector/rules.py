"""Pure opportunity rules: which quotes may trade, how much, at what edge.

No I/O and no clock: callers pass ``now_ns``. Every number a reported
opportunity carries comes from here, so the tests can check it by hand.

An opportunity buys at the asks of one exchange and sells into the bids of
another: two different matching engines (:func:`engine_of`; a venue seen
through another box is still that venue). Its size is found by walking both books level by level and keeping
every unit whose *marginal* edge is still positive net of both taker fees,
capped by a maximum notional and dropped below a minimum notional. Prices
reported are the volume-weighted prices of that size, so ``gross_bps`` is
what the trade would really earn before fees and ``net_bps`` after them.

Where both legs' trading rules are known (:class:`~pipeline.model.InstrumentRules`, held as a
:class:`~pipeline.detector.sizing.PairSizer`), :func:`fit` turns the walk's size into one both venues
accept: rounded down onto both quantity steps, capped by the legs' maximums, refused under a minimum or
when a leg does not trade, and walked again on the levels at that size, so the prices and the profit
are those of the rounded quantity. The limit prices are the worst level each leg takes, on its tick.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.detector.sizing import PairSizer
from pipeline.model import RowStatus

LIVE = int(RowStatus.LIVE)
NO_RULES = int(getattr(RowStatus, "NO_RULES", -1))   # a row whose venue's trading rules are not known (never LIVE)
_INF = float("inf")

CLOSE_REASON_BY_STATUS = {
    int(RowStatus.STALE): "quote_stale",
    int(RowStatus.DISCONNECTED): "exchange_disconnected",
    int(RowStatus.RESYNCING): "book_invalidated",
    int(RowStatus.SYNCING): "book_invalidated",
    int(RowStatus.CROSSED): "book_invalidated",
    int(RowStatus.REJECTED): "book_invalidated",
    int(RowStatus.EMPTY): "book_invalidated",
    int(RowStatus.HALTED): "venue_halted",
}


@dataclass(slots=True)
class Quote:
    """One exchange's view of one instrument, as read from its board row."""

    venue: str
    status: int
    bids: list          # [(price, qty)], best first
    asks: list
    recv_ns: int
    exch_ts_ns: int = 0
    publish_ns: int = 0
    seq: int = 0
    max_age_ns: int = 0          # this exchange's own staleness limit when stricter than the detector's (0: none)
    confirmed_ns: int = 0        # last time the exchange confirmed the quote current (>= recv_ns; 0: recv_ns)
    instrument: str = ""         # the row's own instrument (BTC/USDT), which may differ from the compared one
    xseq: int = 0                # the exchange's own id of the newest update in the book (0: none)
    via: str = ""                # the box whose bridge mirrors the row ("": this box's own feed)
    row: int = -1                # the board row it was read from

    @property
    def leg(self) -> str:
        """This quote's name among the quotes of one compared instrument: one per board row."""
        return leg_of(self.venue, self.instrument) if self.instrument else self.venue

    def age_ms(self, now_ns: int) -> float:
        return (now_ns - self.recv_ns) / 1e6


def leg_of(label: str, instrument: str) -> str:
    """A row's name among the rows of its instrument identity: venue label and its own instrument
    (``kraken BTC/USDT``), so one venue quoting two equivalent instruments gives two legs."""
    return f"{label} {instrument}"


def engine_of(label: str) -> str:
    """The matching engine behind a row label: ``kraken@frankfurt`` (a row bridged from another box) is ``kraken``."""
    return label.partition("@")[0]


def untradable_reason(quote: Quote, now_ns: int, staleness_ns: int) -> str | None:
    """Why this quote must not make an opportunity, or None when it may."""
    if quote.status != LIVE:
        return CLOSE_REASON_BY_STATUS.get(quote.status, "book_invalidated")
    limit = quote.max_age_ns if quote.max_age_ns and quote.max_age_ns < staleness_ns else staleness_ns
    confirmed = quote.confirmed_ns if quote.confirmed_ns > quote.recv_ns else quote.recv_ns
    if now_ns - confirmed > limit:        # a quiet book the exchange keeps confirming stays tradable
        return "quote_stale"
    if not quote.bids or not quote.asks or quote.bids[0][0] >= quote.asks[0][0]:
        return "book_invalidated"
    return None


@dataclass(slots=True)
class Fill:
    """A size walked through two books."""

    quantity: float
    buy_price: float        # volume-weighted
    sell_price: float       # volume-weighted
    gross_bps: float
    net_bps: float
    fees_bps: float         # both legs' fees, and the conversion cost where the legs quote different currencies
    profit_quote: float     # after both fees, in the quote currency
    buy_fee_bps: float = 0.0    # the buy leg's fee as walked (its venue's taker fee plus any conversion cost)
    sell_fee_bps: float = 0.0
    buy_limit: float = 0.0      # the worst ask taken: a marketable buy limit that reaches every level walked
    sell_limit: float = 0.0     # the worst bid taken (after :func:`fit`: each on its venue's tick)

    @property
    def buy_notional(self) -> float:
        return self.quantity * self.buy_price


def walk(asks: list, bids: list, buy_fee_bps: float, sell_fee_bps: float,
         max_notional: float = float("inf"), min_notional: float = 0.0) -> Fill | None:
    """Largest size whose last unit is still profitable after both fees.

    ``asks``: the buy exchange's asks, best (lowest) first; ``bids``: the sell
    exchange's bids, best (highest) first. Returns None when not even the
    first unit is profitable or the size stays below ``min_notional``.
    """
    buy_mult = 1.0 + buy_fee_bps * 1e-4
    sell_mult = 1.0 - sell_fee_bps * 1e-4
    i = j = 0
    ask_left = asks[0][1] if asks else 0.0
    bid_left = bids[0][1] if bids else 0.0
    quantity = cost = proceeds = 0.0
    worst_ask = worst_bid = 0.0
    budget = max_notional
    while i < len(asks) and j < len(bids):
        ask_px = asks[i][0]
        bid_px = bids[j][0]
        if bid_px * sell_mult <= ask_px * buy_mult:
            break
        take = min(ask_left, bid_left)
        capped = ask_px * take >= budget
        if capped:
            take = budget / ask_px
        if take > 0.0:
            quantity += take
            cost += take * ask_px
            proceeds += take * bid_px
            budget -= take * ask_px
            worst_ask = ask_px
            worst_bid = bid_px
        if capped:
            break                   # the notional cap is reached (float residue must not keep the loop going)
        ask_left -= take
        bid_left -= take
        if ask_left <= 0.0:
            i += 1
            ask_left = asks[i][1] if i < len(asks) else 0.0
        if bid_left <= 0.0:
            j += 1
            bid_left = bids[j][1] if j < len(bids) else 0.0
    if quantity <= 0.0 or cost < min_notional:
        return None
    buy_price = cost / quantity
    sell_price = proceeds / quantity
    gross_bps = (sell_price - buy_price) / buy_price * 1e4
    fees_bps = buy_fee_bps + sell_fee_bps
    return Fill(quantity, buy_price, sell_price, gross_bps, gross_bps - fees_bps, fees_bps,
                proceeds * sell_mult - cost * buy_mult, buy_fee_bps, sell_fee_bps, worst_ask, worst_bid)


def _taken(levels: list, quantity: float) -> tuple[float, float]:
    """(notional, worst price) of taking exactly ``quantity`` from ``levels`` (best first); a float residue of
    the levels' sum (under 1e-12 of the quantity) does not reach the next level."""
    left = quantity
    notional = worst = 0.0
    tiny = quantity * 1e-12
    for price, qty in levels:
        if left <= tiny:
            break
        step = qty if qty < left else left
        notional += step * price
        worst = price
        left -= step
    return notional, worst


def walk_to(asks: list, bids: list, quantity: float, buy_fee_bps: float, sell_fee_bps: float) -> Fill:
    """The fill of exactly ``quantity`` (no more than both books hold), taken level by level from both books:
    the volume-weighted prices, edge and profit of that size (the levels' own prices, not a scaled VWAP)."""
    cost, worst_ask = _taken(asks, quantity)
    proceeds, worst_bid = _taken(bids, quantity)
    buy_price = cost / quantity
    sell_price = proceeds / quantity
    gross_bps = (sell_price - buy_price) / buy_price * 1e4
    fees_bps = buy_fee_bps + sell_fee_bps
    profit = proceeds * (1.0 - sell_fee_bps * 1e-4) - cost * (1.0 + buy_fee_bps * 1e-4)
    return Fill(quantity, buy_price, sell_price, gross_bps, gross_bps - fees_bps, fees_bps, profit,
                buy_fee_bps, sell_fee_bps, worst_ask, worst_bid)


def fit(sizer: PairSizer, fill: Fill, asks: list, bids: list) -> tuple[Fill | None, str | None]:
    """``fill`` (a walk of ``asks`` against ``bids``) brought to a size both venues accept: (the fill, None),
    or (None, the refusal: ``below_min_qty``, ``below_min_notional``, ``not_trading``).

    The quantity is :class:`~pipeline.detector.sizing.PairSizer`'s (the largest multiple of both steps under
    the walk's size and the legs' maximums, meeting both minimums) with the worst level each leg takes as its
    limit price (the price the venue checks notional bounds at). A smaller size takes fewer levels, so it is
    walked again (:func:`walk_to`) and sized again at its own limits, until the size holds: the quantity only
    ever shrinks, on a finite grid. The returned fill's limits are on each venue's tick (the buy rounded up,
    the sell down: a no-op for a book quoted on its tick)."""
    while True:
        sized = sizer.size(fill.quantity, fill.buy_limit, fill.sell_limit)
        if sized.reason is not None:
            return None, sized.reason
        if sized.qty >= fill.quantity:
            fill.buy_limit = sized.buy_px
            fill.sell_limit = sized.sell_px
            return fill, None
        fill = walk_to(asks, bids, sized.qty, fill.buy_fee_bps, fill.sell_fee_bps)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A tradable (buy venue, sell venue) pair for one instrument, before lifecycle.

    ``fill`` is what the pair may take; after :func:`allocate` it is what is left to it once better
    pairs took their share, and ``alone`` is what it would take on its own (None when the same).
    ``shares`` names the other pairs that take from one of its two book sides in the same pass.
    ``key`` (instrument, buy leg, sell leg) names the pair in the lifecycle; :func:`find` and
    :class:`PairState` set it.
    """

    instrument: str
    buy: Quote
    sell: Quote
    fill: Fill
    alone: Fill | None = None
    shares: tuple = ()
    conversion_bps: float = 0.0
    key: tuple = ()
    sizer: PairSizer | None = None     # both legs' trading rules (None: sizes not rounded, no rules known)

    @property
    def pair(self) -> str:
        return f"{self.buy.venue}>{self.sell.venue}"


def find(instrument: str, quotes: list[Quote], fees_bps: dict[str, float], now_ns: int, staleness_ns: int,
         threshold_bps: float, max_notional: float = float("inf"), min_notional: float = 0.0,
         sanity_bps: float = float("inf"), currency: dict[str, str] | None = None,
         conversion_bps: float = 0.0) -> tuple[list[Candidate], list[Candidate]]:
    """All pairs above the threshold, and those above the sanity bound (suspected bad data).

    ``fees_bps`` and ``currency`` are keyed by :attr:`Quote.leg`. A pair is never two rows of one matching
    engine. Where the two legs quote different currencies declared equivalent (``currency``), the buy leg
    also pays ``conversion_bps``, the assumed cost of the conversion between them.
    """
    tradable = [q for q in quotes if untradable_reason(q, now_ns, staleness_ns) is None]
    found: list[Candidate] = []
    suspect: list[Candidate] = []
    for buy in tradable:
        best_ask = buy.asks[0][0]
        for sell in tradable:
            if engine_of(sell.venue) == engine_of(buy.venue) or sell.bids[0][0] <= best_ask:
                continue
            extra = conversion_bps if currency and currency[buy.leg] != currency[sell.leg] else 0.0
            fill = walk(buy.asks, sell.bids, fees_bps[buy.leg] + extra, fees_bps[sell.leg], max_notional,
                        min_notional)
            if fill is None or fill.net_bps < threshold_bps:
                continue
            candidate = Candidate(instrument, buy, sell, fill, conversion_bps=extra,
                                  key=(instrument, buy.leg, sell.leg))
            (suspect if fill.net_bps > sanity_bps else found).append(candidate)
    return found, suspect


class PairState:
    """One instrument's (buy, sell) pairs kept between passes, so a pass re-walks only what changed.

    A pair's fill depends on its two books, the fees and the size limits, never on the time, so it is
    kept until either quote is replaced; only each quote's age is checked again at every pass. Quotes
    are never changed in place (a changed row is read into a new :class:`Quote`), so a quote that is
    the same object as last time has the same book. :meth:`find` gives exactly what :func:`find`
    gives on the same quotes, in the same order, with the same objects for unchanged pairs.

    ``rules_of(label) -> (version, InstrumentRules | None)``: each leg's trading rules, asked when the leg's
    quote is replaced (so a change of rules takes effect with the row's next quote); the pair's
    :class:`~pipeline.detector.sizing.PairSizer` is built once per (buy, sell, both versions). With it every
    candidate's size is :func:`fit` to both venues' rules, a leg without rules gives no pair (counted
    ``no_rules`` once while it lasts), and a pair whose walk reaches ``count_bps`` but which the rules refuse is
    counted under the refusal's reason in ``refusals``, once while the same refusal lasts. Without
    ``rules_of`` sizes are the walk's own (the depth walk alone, as its tests use it); ``rules_of`` answering
    None for a leg says its rules are not kept at all (the board's :class:`~pipeline.detector.scan.BoardRules`
    never does so: a mirrored row's rules come over the bridge): that leg's pairs are reported as walked,
    unsized, and their events carry no rules. ``fees_bps`` is read again for a leg whose rules version moved:
    the version also moves when its feed publishes the account's fee (the caller updates the dict in place,
    :meth:`~pipeline.detector.scan.RowUniverse.set_account_fee`).
    """

    __slots__ = ("instrument", "labels", "staleness_ns", "threshold_bps", "max_notional", "min_notional",
                 "sanity_bps", "fees", "buy_mult", "sell_mult", "quotes", "top", "confirmed", "limit", "pairs",
                 "cost", "gain", "engine", "extra", "rules_of", "refusals", "count_bps", "rules", "sizers",
                 "refused", "was_refused", "lacking", "fees_of")

    def __init__(self, instrument: str, labels, fees_bps: dict[str, float], staleness_ns: int,
                 threshold_bps: float, max_notional: float = float("inf"), min_notional: float = 0.0,
                 sanity_bps: float = float("inf"), currency: dict[str, str] | None = None,
                 conversion_bps: float = 0.0, rules_of=None, refusals: dict | None = None,
                 count_bps: float = float("-inf")):
        self.instrument = instrument
        self.rules_of = rules_of
        self.refusals = refusals if refusals is not None else {}
        self.count_bps = count_bps
        self.rules: list = [None] * len(labels)       # (version, rules) of each leg as last asked
        self.lacking = [False] * len(labels)          # a leg counted no_rules, until it has rules again
        self.sizers: dict[tuple[int, int], PairSizer] = {}
        self.refused: dict[tuple[int, int], str] = {}        # pair -> the refusal counted for it
        self.was_refused: dict[tuple[int, int], str] = {}    # the same, for pairs of a quote being replaced
        self.labels = tuple(labels)
        # a label is a quote's leg (``venue`` or ``venue instrument``): the matching engine is the venue's
        self.engine = [engine_of(label.split(" ", 1)[0]) for label in self.labels]
        self.extra = [[conversion_bps if currency and currency[a] != currency[b] else 0.0 for b in self.labels]
                      for a in self.labels]
        self.staleness_ns = staleness_ns
        self.threshold_bps = threshold_bps
        self.max_notional = max_notional
        self.min_notional = min_notional
        self.sanity_bps = sanity_bps
        self.fees_of = fees_bps                       # label -> fee in use (an account fee may replace it)
        self.fees = [fees_bps[label] for label in self.labels]
        self.buy_mult = [1.0 + fee * 1e-4 for fee in self.fees]      # the same floats walk() computes
        self.sell_mult = [1.0 - fee * 1e-4 for fee in self.fees]
        n = len(self.labels)
        self.quotes: list = [None] * n
        self.top: list = [None] * n      # (best bid, best ask) of a LIVE uncrossed two-sided book, else None
        self.confirmed = [0] * n
        self.limit = [0] * n
        # a tradable book's best ask with the buy fee, best bid net of the sell fee (else +inf / -inf): a new
        # quote has no pair to walk unless some other's gain beats its cost or its gain beats another's cost
        self.cost = [_INF] * n
        self.gain = [-_INF] * n
        self.pairs: dict[tuple[int, int], tuple[Candidate, bool]] = {}   # (buy, sell) -> (candidate, suspect)

    def find(self, quotes: dict[str, Quote], now_ns: int) -> tuple[list[Candidate], list[Candidate]]:
        """``quotes`` by label, in the order of ``labels``; raises KeyError when the labels differ."""
        cached = self.quotes
        if len(quotes) != len(cached):
            raise KeyError("labels differ")
        i = 0
        replaced = None
        for label, quote in quotes.items():
            if quote is not cached[i]:
                if label != self.labels[i]:
                    raise KeyError(label)
                if replaced is None:
                    replaced = [i]
                else:
                    replaced.append(i)
                self._take(i, quote)
            i += 1
        if replaced is not None:              # pairs after every new quote is in: each pair walked once
            for i in replaced:
                self._pairs_of(i, replaced)
            if self.was_refused:
                self.was_refused.clear()      # refusals that did not come back: the next one is counted again
        pairs = self.pairs
        if not pairs:
            return [], []
        found: list[Candidate] = []
        suspect: list[Candidate] = []
        confirmed = self.confirmed
        limit = self.limit
        for key in sorted(pairs) if len(pairs) > 1 else pairs:
            buy, sell = key
            if now_ns - confirmed[buy] > limit[buy] or now_ns - confirmed[sell] > limit[sell]:
                continue                                         # too old: untradable_reason says quote_stale
            candidate, is_suspect = pairs[key]
            (suspect if is_suspect else found).append(candidate)
        return found, suspect

    def _take(self, i: int, quote: Quote) -> None:
        """A new quote at ``i``: its tradability apart from age, and its pairs forgotten."""
        self.quotes[i] = quote
        bids, asks = quote.bids, quote.asks
        staleness_ns = self.staleness_ns
        self.limit[i] = quote.max_age_ns if quote.max_age_ns and quote.max_age_ns < staleness_ns else staleness_ns
        self.confirmed[i] = quote.confirmed_ns if quote.confirmed_ns > quote.recv_ns else quote.recv_ns
        pairs = self.pairs
        if pairs:
            for key in [k for k in pairs if i in k]:
                del pairs[key]
        if self.refused:
            for key in [k for k in self.refused if i in k]:
                self.was_refused[key] = self.refused.pop(key)
        usable = quote.status == LIVE and bids and asks and bids[0][0] < asks[0][0]
        version_rules = self.rules_of(self.labels[i]) if self.rules_of is not None else None
        if version_rules is None:                  # no rules source, or rules not kept for it: pairs go unsized
            self.rules[i] = None
            self.lacking[i] = False
        else:
            previous = self.rules[i]
            if previous is None or previous[0] != version_rules[0] or previous[1] is not version_rules[1]:
                self.rules[i] = version_rules
                fee = self.fees_of[self.labels[i]]     # a new version may carry the account's fee
                if fee != self.fees[i]:
                    self.fees[i] = fee
                    self.buy_mult[i] = 1.0 + fee * 1e-4
                    self.sell_mult[i] = 1.0 - fee * 1e-4
                if self.sizers:
                    for key in [k for k in self.sizers if i in k]:
                        del self.sizers[key]
            # counted for a row with a book (a quote the rules keep from trading), not for one that never had one
            if version_rules[1] is None and (usable or (quote.status == NO_RULES and bids and asks)):
                if not self.lacking[i]:       # counted once while it lasts
                    self.lacking[i] = True
                    self.refusals["no_rules"] = self.refusals.get("no_rules", 0) + 1
                usable = False                # no rules, no guessed step: this leg makes no pair
            else:
                self.lacking[i] = False
        if usable:
            self.top[i] = (bids[0][0], asks[0][0])
            self.cost[i] = asks[0][0] * self.buy_mult[i]
            self.gain[i] = bids[0][0] * self.sell_mult[i]
        else:
            self.top[i] = None
            self.cost[i] = _INF
            self.gain[i] = -_INF

    def _pairs_of(self, i: int, replaced: list[int]) -> None:
        """Walk the pairs of the new quote at ``i`` (both ways), except with new quotes before it (done)."""
        top = self.top
        if top[i] is None:
            return
        ask_cost = self.cost[i]
        bid_gain = self.gain[i]
        if max(self.gain) <= ask_cost and min(self.cost) >= bid_gain:
            return                    # no book's first level pays both fees against this one's: nothing to walk
        # find()'s and walk()'s first two tests, inline: most pairs stop here without a walk
        best_bid, best_ask = top[i]
        buy_mult, sell_mult = self.buy_mult, self.sell_mult
        first = replaced[0] != i
        engine = self.engine
        mine = engine[i]
        j = 0
        for other in top:
            if other is not None and engine[j] != mine and not (first and j < i and j in replaced):
                bid_j, ask_j = other
                if bid_j > best_ask and bid_j * sell_mult[j] > ask_cost:
                    self._pair(i, j)
                if best_bid > ask_j and bid_gain > ask_j * buy_mult[j]:
                    self._pair(j, i)
            j += 1

    def _pair(self, buy: int, sell: int) -> None:
        b, s = self.quotes[buy], self.quotes[sell]
        extra = self.extra[buy][sell]
        fill = walk(b.asks, s.bids, self.fees[buy] + extra, self.fees[sell], self.max_notional, self.min_notional)
        if fill is None or fill.net_bps < self.threshold_bps:
            return
        suspect = fill.net_bps > self.sanity_bps
        sizer = None
        if self.rules_of is not None and not suspect and self.rules[buy] is not None and self.rules[sell] is not None:
            pair = (buy, sell)
            sizer = self.sizers.get(pair)
            if sizer is None:
                sizer = self.sizers[pair] = PairSizer(self.rules[buy][1], self.rules[sell][1])
            walked_bps = fill.net_bps
            fitted, reason = fit(sizer, fill, b.asks, s.bids)
            if reason is not None:
                if walked_bps >= self.count_bps:
                    if self.was_refused.pop(pair, None) != reason:
                        self.refusals[reason] = self.refusals.get(reason, 0) + 1
                    self.refused[pair] = reason
                return
            if fitted is None or fitted.quantity * fitted.buy_price < self.min_notional \
                    or fitted.net_bps < self.threshold_bps:
                return
            fill = fitted
        self.pairs[(buy, sell)] = (Candidate(self.instrument, b, s, fill, conversion_bps=extra,
                                             key=(self.instrument, self.labels[buy], self.labels[sell]),
                                             sizer=sizer),
                                   suspect)


def consume(levels: list, quantity: float) -> list:
    """``levels`` (best first) with ``quantity`` taken from the best ones: what another taker still finds."""
    out = []
    left = quantity
    for price, qty in levels:
        if left > 0.0:
            if qty <= left * (1 + 1e-12):      # taken whole (a float residue of the walk is not a level)
                left -= qty
                continue
            qty -= left
            left = 0.0
        out.append((price, qty))
    return out


def allocate(ranked: list[Candidate], bar_bps, max_notional: float = float("inf"),
             min_notional: float = 0.0) -> list[Candidate]:
    """Give each pair, in the order of ``ranked``, the liquidity the pairs before it left.

    A book side (a row's asks or bids) is taken from once: a pair that shares a side with a pair
    ranked before it is walked again on what is left of that side (and, when it carries its legs' rules,
    :func:`fit` to them again), and kept only if its net edge still reaches ``bar_bps(candidate)`` (and its
    size ``min_notional``). A pair that is kept
    consumes what it takes; one that is not consumes nothing. The result keeps the order of
    ``ranked``; each kept pair carries what it would take alone (``alone``, when that is more) and the
    pairs it shares a side with (``shares``). So the sizes that buy from (sell into) one row never add
    up to more than that row's asks (bids) at the prices used.
    """
    if len(ranked) < 2:
        return [c for c in ranked if c.fill.net_bps >= bar_bps(c)]
    left: dict[tuple[str, int], list] = {}         # (leg, 0 asks / 1 bids) -> the levels not yet taken
    kept: list[Candidate] = []
    for c in ranked:
        buy_side, sell_side = (c.key[1], 0), (c.key[2], 1)
        asks, bids = left.get(buy_side), left.get(sell_side)
        fill: Fill | None = c.fill
        if asks is not None or bids is not None:
            asks_now = c.buy.asks if asks is None else asks
            bids_now = c.sell.bids if bids is None else bids
            fill = walk(asks_now, bids_now, c.fill.buy_fee_bps, c.fill.sell_fee_bps, max_notional, min_notional)
            if fill is not None and c.sizer is not None:     # what is left, on both venues' grids again
                fill, _ = fit(c.sizer, fill, asks_now, bids_now)
                if fill is not None and fill.quantity * fill.buy_price < min_notional:
                    fill = None
        if fill is None or fill.net_bps < bar_bps(c):
            continue
        left[buy_side] = consume(c.buy.asks if asks is None else asks, fill.quantity)
        left[sell_side] = consume(c.sell.bids if bids is None else bids, fill.quantity)
        kept.append(c if fill is c.fill else Candidate(c.instrument, c.buy, c.sell, fill, c.fill,
                                                        conversion_bps=c.conversion_bps, key=c.key, sizer=c.sizer))
    if len(kept) < 2:
        return kept
    out = []
    for c in kept:
        shares = tuple(o.pair for o in kept if o is not c and (o.key[1] == c.key[1] or o.key[2] == c.key[2]))
        out.append(Candidate(c.instrument, c.buy, c.sell, c.fill, c.alone, shares, c.conversion_bps, c.key, c.sizer)
                   if shares else c)
    return out


def take(levels: list, quantity: float) -> tuple[float, float]:
    """(volume-weighted price, filled quantity) of taking ``quantity`` from ``levels`` (best first)."""
    left = quantity
    notional = 0.0
    for price, qty in levels:
        if left <= 0.0:
            break
        step = qty if qty < left else left
        notional += step * price
        left -= step
    filled = quantity - max(left, 0.0)
    return (notional / filled if filled > 0.0 else 0.0), filled


@dataclass(frozen=True, slots=True)
class ShadowFill:
    """What taking both legs of an opportunity ``latency_ms`` after detection would have given."""

    latency_ms: float
    filled: float                 # quantity both legs could fill then (<= the detected quantity)
    buy_price: float | None
    sell_price: float | None
    net_bps: float | None         # realized edge after fees; None when a quote was not tradable
    slippage_bps: float | None    # detected net edge minus realized net edge
    reason: str = ""              # why there was nothing to fill ("quote_stale", ...)
    fraction: float = 0.0         # filled / detected quantity
    profit_quote: float | None = None   # after both fees, on what filled

    @property
    def full(self) -> bool:
        return self.fraction >= FULL_FILL

    def as_dict(self) -> dict:
        return {"latency_ms": self.latency_ms, "filled_qty_base": sig(self.filled),
                "fill_fraction": round(self.fraction, 6), "buy_price": sig(self.buy_price),
                "sell_price": sig(self.sell_price), "net_bps": None if self.net_bps is None else round(self.net_bps, 4),
                "profit_quote": None if self.profit_quote is None else round(self.profit_quote, 6),
                "slippage_bps": None if self.slippage_bps is None else round(self.slippage_bps, 4),
                "reason": self.reason}


FULL_FILL = 1.0 - 1e-6          # a fill this close to the detected size is full (the records carry 6 decimals)


def sig(value: float | None, digits: int = 10) -> float | None:
    """``value`` to ``digits`` significant digits: ``65099.99999999999`` is reported as ``65100.0``."""
    return None if value is None else float(f"{value:.{digits}g}")


def shadow_fill(candidate: Candidate, buy: Quote, sell: Quote, latency_ms: float, now_ns: int, staleness_ns: int,
                left: dict | None = None) -> ShadowFill:
    """Re-price the detected quantity against the books as they are now.

    ``left``: the levels other shadow fills of the same moment already took, by (leg, side), as
    :func:`allocate` keeps them; this fill takes from what they left and records what it took.
    """
    for quote in (buy, sell):
        why = untradable_reason(quote, now_ns, staleness_ns)
        if why is not None:
            return ShadowFill(latency_ms, 0.0, None, None, None, None, why)
    quantity = candidate.fill.quantity
    asks = left.get((buy.leg, 0), buy.asks) if left is not None else buy.asks
    bids = left.get((sell.leg, 1), sell.bids) if left is not None else sell.bids
    buy_price, buy_filled = take(asks, quantity)
    sell_price, sell_filled = take(bids, quantity)
    filled = min(buy_filled, sell_filled)
    if filled <= 0.0:
        return ShadowFill(latency_ms, 0.0, None, None, None, None, "book_empty")
    if filled < quantity:                  # the legs fill the same size: price both on what both can take
        buy_price, _ = take(asks, filled)
        sell_price, _ = take(bids, filled)
    if left is not None:
        left[(buy.leg, 0)] = consume(asks, filled)
        left[(sell.leg, 1)] = consume(bids, filled)
    fill = candidate.fill
    gross_bps = (sell_price - buy_price) / buy_price * 1e4
    net_bps = gross_bps - fill.fees_bps
    profit = filled * (sell_price * (1.0 - fill.sell_fee_bps * 1e-4) - buy_price * (1.0 + fill.buy_fee_bps * 1e-4))
    return ShadowFill(latency_ms, filled, buy_price, sell_price, net_bps, fill.net_bps - net_bps, "",
                      filled / quantity, profit)
