"""Invariants of what the detector reports: liquidity is counted once, and a higher threshold never makes more.

* For any books and any order of the pairs, what :func:`allocate` keeps never takes more from a row than
  the row holds at the prices used: the sizes sold into one row's bids add up to at most its depth, and
  their proceeds to at most what selling that total from the best bid down would give (so no level is
  sold into twice); the same for the asks bought from, with cost.
* For any books and any venues' trading rules, every size the engine opens is a multiple of both legs'
  steps, within both maximums and at or above both minimums (at the limit prices, which are on each tick),
  and the sizes opened into one book side never add up to more than its depth.
* For any run of one pair's edge (with gaps and stale legs), raising the threshold within the pair's
  hysteresis never raises the number of opportunities or the sum of their peak profits.
"""
from __future__ import annotations

import functools
from decimal import Decimal as D

from hypothesis import event, given, settings
from hypothesis import strategies as st

from pipeline.detector.rules import allocate, find, take
from pipeline.model import InstrumentRules
from tests.conftest import examples
from tests.engine_harness import MS, T0, engine_for, quote

VENUES = ("a", "b", "c", "d")
# built once, not on every draw
BOARD_VENUES = st.lists(st.sampled_from(VENUES), min_size=2, max_size=4, unique=True)
LEVEL_QTYS = st.sampled_from([0.1, 0.5, 1.0, 2.5])
FEES = st.sampled_from([0.0, 1.0, 5.0, 10.0])


@st.composite
def boards(draw):
    quotes = []
    for venue in draw(BOARD_VENUES):
        mid = 100.0 + draw(st.integers(-40, 40)) * 0.01
        half = draw(st.integers(1, 5)) * 0.01
        bids = [(round(mid - half - k * 0.01, 2), draw(LEVEL_QTYS)) for k in range(draw(st.integers(1, 4)))]
        asks = [(round(mid + half + k * 0.01, 2), draw(LEVEL_QTYS)) for k in range(draw(st.integers(1, 4)))]
        quotes.append(quote(venue, "X/Y", bids, asks))
    fees = {q.leg: draw(FEES) for q in quotes}
    return quotes, fees


@settings(max_examples=examples(400), deadline=None)
@given(boards(), st.randoms(use_true_random=False), st.sampled_from([float("inf"), 150.0]))
def test_allocated_pairs_never_take_a_level_twice(board, rng, cap):
    quotes, fees = board
    found, _ = find("X/Y", quotes, fees, T0, 2000 * MS, 0.0, cap)
    rng.shuffle(found)
    kept = allocate(found, lambda c: 0.0, cap)
    shared = sum(1 for q in quotes for side in ("sell", "buy") if sum(getattr(c, side) is q for c in kept) > 1)
    event(f"pairs found {min(len(found), 3)}{'+' if len(found) > 3 else ''}, kept {min(len(kept), 3)}"
          f"{'+' if len(kept) > 3 else ''}" + (", a book side shared" if shared else ""))
    for q in quotes:
        sold = [c.fill for c in kept if c.sell is q]
        bought = [c.fill for c in kept if c.buy is q]
        for fills, levels, sign in ((sold, q.bids, 1), (bought, q.asks, -1)):
            total = sum(f.quantity for f in fills)
            if not total:
                continue
            assert total <= sum(qty for _, qty in levels) * (1 + 1e-9)
            best_price, filled = take(levels, total)
            assert filled >= total * (1 - 1e-9)
            money = sum(f.quantity * (f.sell_price if sign == 1 else f.buy_price) for f in fills)
            # selling: at most the proceeds of the best levels; buying: at least their cost
            assert sign * money <= sign * best_price * total + 1e-6
    # and every pair kept alone takes no more than it would alone
    for c in kept:
        if c.alone is not None:
            assert c.fill.quantity <= c.alone.quantity * (1 + 1e-9)


def books(e, stale, now):
    """binance asks 100; bybit bids so that the pair nets ``e`` bps after 10 + 10 bps of fees."""
    bid = 99.0 if e is None else 100.0 * (1 + (e + 20) * 1e-4)
    bybit_recv = now - 3000 * MS if stale else now      # older than the detector's 2 s staleness limit
    return {"binance BTC/USDT": quote("binance", "BTC/USDT", [(99.0, 1.0)], [(100.0, 1.0)], now),
            "bybit BTC/USDT": quote("bybit", "BTC/USDT", [(bid, 1.0)], [(bid + 1.0, 1.0)], bybit_recv + MS)}


def outcome(steps, threshold, close_after_ms, reopen_ms):
    current = {}
    engine = engine_for({"binance": ["BTC/USDT"], "bybit": ["BTC/USDT"]}, quotes_of=lambda key: current,
                        threshold_bps=threshold, close_after_ms=close_after_ms, reopen_ms=reopen_ms)
    now = T0
    closes = []
    for dt_ms, e, stale in steps:
        now += dt_ms * MS
        current = books(e, stale, now)
        emitted = engine.evaluate("BTC/USDT", current, now) + engine.expire(now)
        closes += [x.record for x in emitted if x.record["event"] == "close"]
    closes += [x.record for x in engine.close_all(now + MS)]
    return engine.summary.opens, sum(r["peak_profit_quote"] for r in closes)


edges = st.one_of(st.none(), st.sampled_from([0.5, 1.0, 2.0, 3.0, 4.0, 4.99, 5.0, 6.0, 8.0, 9.5, 10.0, 12.0]))


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 5, 20, 60, 150, 400]), edges, st.sampled_from([False, False, True])),
               min_size=1, max_size=60),
       st.sampled_from([0.0, 1.0, 2.0, 5.0]), st.sampled_from([0.5, 2.0, 5.0, 7.5, 10.0]),
       st.sampled_from([0.0, 50.0, 1000.0]), st.sampled_from([0.0, 30.0, 100.0]))
def test_a_higher_threshold_within_the_hysteresis_never_makes_more_opportunities(steps, low, step, close_after_ms,
                                                                                  reopen_ms):
    high = min(low + step, 10.0)          # the default hysteresis here: half of 10 + 10 bps of fees
    opens_low, peaks_low = outcome(steps, low, close_after_ms, reopen_ms)
    opens_high, peaks_high = outcome(steps, high, close_after_ms, reopen_ms)
    event(f"opens at the lower threshold: {min(opens_low, 3)}{'+' if opens_low > 3 else ''}"
          + (", fewer at the higher" if opens_high < opens_low else ""))
    assert opens_high <= opens_low
    if not close_after_ms:
        # each stretch above the close level is one opportunity at the lower threshold, open all along: its
        # peak is the stretch's. With close_after_ms, the lower threshold's opportunity can be closed (under its
        # bar too long, pipeline/detector/lifecycle.py) before the stretch peaks, and the pair stays spent, while
        # the higher threshold opens later and sees the peak: e.g. edges 2.0, 0.5 for 60 ms, then 4.0 bps with
        # thresholds 1 and 3 report peaks of 2.0 and 4.0 bps. Counts stay monotone; peaks need not.
        assert peaks_high <= peaks_low + 1e-9


STEPS = ["0.001", "0.0025", "0.01", "0.1", "0.5"]
# built once, not on every draw
STEP_TEXTS = st.sampled_from(STEPS)
MAX_QTYS = st.sampled_from([None, D("1.7"), D("100")])
MIN_NOTIONALS = st.sampled_from([D(0), D(5), D(60)])
MAX_NOTIONALS = st.sampled_from([None, D(130)])


@functools.cache
def min_qtys(step: D):
    """No minimum, one step or 0.3 (built once per step)."""
    return st.sampled_from([D(0), step, D("0.3")])


@st.composite
def _venue_rules(draw, venue):
    step = D(draw(STEP_TEXTS))
    min_qty = draw(min_qtys(step))
    max_qty = draw(MAX_QTYS)
    return InstrumentRules(venue, venue.upper(), D("0.01"), step, min_qty, max_qty,
                           draw(MIN_NOTIONALS), draw(MAX_NOTIONALS), True, "online")


@functools.cache
def venue_rules(venue):
    """A venue's trading rules for the instrument (the strategy built once per venue)."""
    return _venue_rules(venue)


@settings(max_examples=examples(300), deadline=None)
@given(boards(), st.data())
def test_every_opened_size_is_one_both_venues_accept_and_no_book_side_is_overdrawn(board, data):
    named = {"a": "binance", "b": "bybit", "c": "okx", "d": "htx"}
    quotes = [quote(named[q.venue], "BTC/USDT", q.bids, q.asks) for q in board[0]]
    fees = {named[leg.split(" ")[0]]: fee for leg, fee in board[1].items()}
    table = {q.venue: data.draw(venue_rules(q.venue)) for q in quotes}
    engine = engine_for({q.venue: ["BTC/USDT"] for q in quotes}, rules=table, min_notional=0,
                        venue_keys={q.venue: {"taker_fee_bps": fees[q.venue]} for q in quotes})
    records = [e.record for e in engine.evaluate("BTC/USDT", {q.leg: q for q in quotes}, T0)
               if e.record["event"] == "open"]
    event(f"opened {min(len(records), 2)}{'+' if len(records) > 2 else ''}"
          + (f", refused {sorted(engine.summary.refused)}" if engine.summary.refused else ""))
    by_venue = {q.venue: q for q in quotes}
    for r in records:
        qty = D(repr(r["qty_base"]))
        buy, sell = table[r["buy_exchange"]], table[r["sell_exchange"]]
        assert qty > 0 and qty % buy.step == 0 and qty % sell.step == 0
        assert qty >= buy.min_qty and qty >= sell.min_qty
        assert qty * D(repr(r["buy_limit_price"])) >= buy.min_notional
        assert qty * D(repr(r["sell_limit_price"])) >= sell.min_notional
        for leg, price in ((buy, r["buy_limit_price"]), (sell, r["sell_limit_price"])):
            assert D(repr(price)) % leg.tick == 0
            assert leg.max_qty is None or qty <= leg.max_qty
            assert leg.max_notional is None or qty * D(repr(price)) <= leg.max_notional
        # the limits reach every level the VWAP was made of
        assert r["buy_limit_price"] >= r["buy_price"] * (1 - 1e-12)
        assert r["sell_limit_price"] <= r["sell_price"] * (1 + 1e-12)
    for venue, q in by_venue.items():
        sold = sum(D(repr(r["qty_base"])) for r in records if r["sell_exchange"] == venue)
        bought = sum(D(repr(r["qty_base"])) for r in records if r["buy_exchange"] == venue)
        assert float(sold) <= sum(qty for _, qty in q.bids) * (1 + 1e-9)
        assert float(bought) <= sum(qty for _, qty in q.asks) * (1 + 1e-9)
