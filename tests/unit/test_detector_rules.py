"""Detector rules with hand-computed books: fees, depth walk, caps, trust, lifecycle."""
from __future__ import annotations

import pytest

from pipeline.board import RowStatus
from pipeline.detector.lifecycle import Lifecycle
from pipeline.detector.rules import Quote, find, walk

LIVE = int(RowStatus.LIVE)
NOW = 10_000_000_000
STALE_NS = 2_000_000_000


def q(venue, bids, asks, status=LIVE, age_ms=1.0):
    return Quote(venue, status, bids, asks, NOW - int(age_ms * 1e6))


def test_walk_takes_only_levels_profitable_after_fees():
    # buy on A: asks 100 x1, 100.5 x2 ; sell on B: bids 101 x 1.5, 100.6 x 5; fees 10 bps each side
    fill = walk([(100.0, 1.0), (100.5, 2.0)], [(101.0, 1.5), (100.6, 5.0)], 10, 10)
    # unit economics: sell*(1-0.001) > buy*(1.001)
    #  100 vs 101   : 100.9 > 100.1  take 1.0
    #  100.5 vs 101 : 100.899 > 100.6005 take 0.5
    #  100.5 vs 100.6: 100.4994 > 100.6005? no -> stop
    assert fill.quantity == pytest.approx(1.5)
    assert fill.buy_price == pytest.approx((100.0 + 0.5 * 100.5) / 1.5)
    assert fill.sell_price == pytest.approx(101.0)
    gross = (101.0 - fill.buy_price) / fill.buy_price * 1e4
    assert fill.gross_bps == pytest.approx(gross)
    assert fill.net_bps == pytest.approx(gross - 20)
    assert fill.profit_quote == pytest.approx(1.5 * 101.0 * 0.999 - (100.0 + 50.25) * 1.001)


def test_walk_respects_notional_cap_and_minimum():
    fill = walk([(100.0, 10.0)], [(102.0, 10.0)], 0, 0, max_notional=250.0)
    assert fill.quantity == pytest.approx(2.5) and fill.buy_notional == pytest.approx(250.0)
    assert walk([(100.0, 0.05)], [(102.0, 10.0)], 0, 0, min_notional=10.0) is None
    assert walk([(100.0, 1.0)], [(100.15, 1.0)], 10, 10) is None     # 15 bps gross < 20 bps of fees


def test_find_uses_fees_per_venue_and_threshold():
    quotes = [q("a", [(99.0, 1.0)], [(100.0, 1.0)]), q("b", [(100.3, 2.0)], [(100.4, 1.0)])]
    found, _ = find("X/Y", quotes, {"a": 10, "b": 10}, NOW, STALE_NS, threshold_bps=0)
    assert [(c.buy.venue, c.sell.venue) for c in found] == [("a", "b")]
    c = found[0]
    assert c.fill.quantity == 1.0
    assert c.fill.gross_bps == pytest.approx(30.0)
    assert c.fill.net_bps == pytest.approx(10.0)
    assert find("X/Y", quotes, {"a": 10, "b": 25}, NOW, STALE_NS, 0)[0] == []
    assert find("X/Y", quotes, {"a": 10, "b": 10}, NOW, STALE_NS, threshold_bps=10.5)[0] == []


@pytest.mark.parametrize("status", [s for s in RowStatus if s != RowStatus.LIVE])
def test_no_opportunity_from_a_row_that_is_not_live(status):
    quotes = [q("a", [(99.0, 1.0)], [(100.0, 1.0)]), q("b", [(110.0, 2.0)], [(111.0, 1.0)], status=int(status))]
    assert find("X/Y", quotes, {"a": 0, "b": 0}, NOW, STALE_NS, 0) == ([], [])


def test_no_opportunity_from_a_stale_quote():
    quotes = [q("a", [(99.0, 1.0)], [(100.0, 1.0)]), q("b", [(110.0, 2.0)], [(111.0, 1.0)], age_ms=2001)]
    assert find("X/Y", quotes, {"a": 0, "b": 0}, NOW, STALE_NS, 0) == ([], [])


def test_edge_above_sanity_bound_is_suspect_not_opportunity():
    quotes = [q("a", [(99.0, 1.0)], [(100.0, 1.0)]), q("b", [(110.0, 2.0)], [(111.0, 1.0)])]
    found, suspect = find("X/Y", quotes, {"a": 0, "b": 0}, NOW, STALE_NS, 0, sanity_bps=500)
    assert found == [] and len(suspect) == 1


def test_lifecycle_open_update_close_with_reason():
    life = Lifecycle(update_bps=1.0)
    a = q("a", [(99.0, 1.0)], [(100.0, 1.0)])
    b = q("b", [(100.3, 2.0)], [(100.4, 1.0)])
    fees = {"a": 10, "b": 10}
    found, _ = find("X/Y", [a, b], fees, NOW, STALE_NS, 0)
    [event] = life.step("X/Y", found, {"a": a, "b": b}, NOW, STALE_NS)
    assert event.kind == "open"
    assert life.step("X/Y", found, {"a": a, "b": b}, NOW + 1, STALE_NS) == []       # no material change
    b2 = q("b", [(100.5, 2.0)], [(100.6, 1.0)])
    found, _ = find("X/Y", [a, b2], fees, NOW, STALE_NS, 0)
    [event] = life.step("X/Y", found, {"a": a, "b": b2}, NOW + 2, STALE_NS)
    assert event.kind == "update" and event.candidate.fill.net_bps == pytest.approx(30.0)
    b3 = q("b", [(100.5, 2.0)], [(100.6, 1.0)], status=int(RowStatus.DISCONNECTED))
    [event] = life.step("X/Y", [], {"a": a, "b": b3}, NOW + 5_000_000, STALE_NS)
    assert event.kind == "close" and event.close_reason == "exchange_disconnected"
    assert event.duration_ms == pytest.approx(5.0) and event.peak_net_bps == pytest.approx(30.0)


def test_lifecycle_close_reasons():
    fees = {"a": 0, "b": 0}
    a = q("a", [(99.0, 1.0)], [(100.0, 1.0)])
    b = q("b", [(100.3, 2.0)], [(100.4, 1.0)])
    for other, reason in [(q("b", [(99.5, 1.0)], [(99.9, 1.0)]), "spread_closed"),
                          (q("b", [(100.3, 2.0)], [(100.4, 1.0)], age_ms=3000), "quote_stale"),
                          (q("b", [(100.3, 2.0)], [(100.4, 1.0)], status=int(RowStatus.RESYNCING)),
                           "book_invalidated")]:
        life = Lifecycle()
        life.step("X/Y", find("X/Y", [a, b], fees, NOW, STALE_NS, 0)[0], {"a": a, "b": b}, NOW, STALE_NS)
        found, _ = find("X/Y", [a, other], fees, NOW, STALE_NS, 0)
        [event] = life.step("X/Y", found, {"a": a, "b": other}, NOW, STALE_NS)
        assert (event.kind, event.close_reason) == ("close", reason)


def test_an_exchange_with_a_stricter_staleness_limit_goes_stale_first():
    a = q("a", [(99.0, 1.0)], [(100.0, 1.0)], age_ms=600)
    b = q("b", [(110.0, 2.0)], [(111.0, 1.0)], age_ms=600)
    assert len(find("X/Y", [a, b], {"a": 0, "b": 0}, NOW, STALE_NS, 0)[0]) == 1
    b.max_age_ns = 500_000_000                      # venues.b.staleness_ms: 500
    assert find("X/Y", [a, b], {"a": 0, "b": 0}, NOW, STALE_NS, 0) == ([], [])


@pytest.mark.parametrize("cap", [0.1, 1 / 3, 7.7, 1e-300, 123456.789])
@pytest.mark.parametrize("ask_px", [0.3, 0.7, 3.3, 65000.1])
def test_walk_stops_at_the_notional_cap_whatever_the_float_residue(cap, ask_px):
    """Regression: a cap hit with a tiny float residue left kept the loop taking ever smaller sizes."""
    fill = walk([(ask_px, 1e6)] * 3, [(ask_px * 2, 1e6)] * 3, 0.0, 0.0, max_notional=cap)
    assert fill.buy_notional == pytest.approx(cap, rel=1e-9)


def test_pair_state_gives_what_find_gives_while_quotes_change():
    """The detector keeps each instrument's pairs between passes; the result must stay find()'s, exactly."""
    import random

    from pipeline.detector.rules import PairState

    rng = random.Random(13)
    venues = ["a", "b", "c", "d", "e"]
    fees = {"a": 0.0, "b": 10.0, "c": 2.5, "d": 40.0, "e": 1.0}
    statuses = [LIVE] * 6 + [int(RowStatus.HALTED), int(RowStatus.STALE), int(RowStatus.RESYNCING)]

    def random_quote(venue, now):
        mid = 100.0 * (1 + rng.uniform(-30, 30) * 1e-4)
        half = rng.choice([0.5, 1.0, -0.5]) * 1e-4 * mid          # some books crossed
        bids = [(mid - half - k * 0.01, rng.choice([0.1, 1.0, 5.0])) for k in range(rng.randint(0, 3))]
        asks = [(mid + half + k * 0.01, rng.choice([0.1, 1.0, 5.0])) for k in range(rng.randint(0, 3))]
        recv = now - rng.choice([0, 1_000_000, 3_000_000_000])     # some older than the staleness limit
        confirmed = rng.choice([0, recv, now])                     # a quiet book the exchange keeps confirming
        return Quote(venue, rng.choice(statuses), bids, asks, recv, 0, 0, 0,
                     rng.choice([0, 1_000_000_000]), confirmed)

    now = NOW
    quotes = {v: random_quote(v, now) for v in venues}
    state = PairState("X/Y", quotes, fees, STALE_NS, 0.5, 5_000.0, 1.0, 40.0)
    compared = 0
    for _ in range(3000):
        now += rng.choice([0, 1_000, 500_000_000])
        if rng.random() < 0.7:
            for venue in rng.sample(venues, rng.choice([1, 1, 2, 5])):    # one row changed, or several at once
                quotes[venue] = random_quote(venue, now)
        expected = find("X/Y", list(quotes.values()), fees, now, STALE_NS, 0.5, 5_000.0, 1.0, 40.0)
        got = state.find(quotes, now)
        assert got == expected
        compared += len(expected[0]) + len(expected[1])
    assert compared > 100        # the random books did make opportunities and suspects
