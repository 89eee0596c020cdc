"""One dislocation, one opportunity: hysteresis, flaps merged within reopen_ms, a lingering edge closed once.

One pair, binance -> bybit, 10 bps taker fee each side; ``edge(e)`` builds books whose only pair nets ``e``
bps after fees (buy 1.0 at 100, sell 1.0 at 100 x (1 + (e + 20) / 10^4)).
"""
from __future__ import annotations

import pytest

from tests.engine_harness import MS, T0, engine_for, quote

PAIR = {"binance": ["BTC/USDT"], "bybit": ["BTC/USDT"]}


def books(e, now):
    """The two books at ``now``; ``e`` None: bybit's bid below binance's ask (no pair at all)."""
    bid = 99.0 if e is None else 100.0 * (1 + (e + 20) * 1e-4)
    return {"binance BTC/USDT": quote("binance", "BTC/USDT", [(99.0, 1.0)], [(100.0, 1.0)], now),
            "bybit BTC/USDT": quote("bybit", "BTC/USDT", [(bid, 1.0)], [(bid + 1.0, 1.0)], now)}


def run(edges, **detector):
    """Feed (ms, edge) steps to an engine, expiring every step; the records emitted, in order."""
    current = {}
    engine = engine_for(PAIR, quotes_of=lambda key: current, **detector)
    out = []
    for ms, e in edges:
        now = T0 + int(ms * MS)
        current = books(e, now)
        out += [x.record for x in engine.evaluate("BTC/USDT", current, now)]
        out += [x.record for x in engine.expire(now)]
    out += [x.record for x in engine.close_all(T0 + int(edges[-1][0] * MS) + MS)]
    return out, engine


def kinds(records):
    return [(r["event"], r["id"], r.get("close_reason"), r.get("flaps")) for r in records if r["event"] != "update"]


def test_an_edge_around_the_threshold_is_one_opportunity_not_one_per_crossing():
    # threshold 5; the default hysteresis is half the pair's fees (10 bps): it stays open down to -5 bps,
    # that is until the edge is gone
    steps = [(0, 6), (1, 4), (2, 6.5), (3, 4.5), (4, 7), (5, 3), (6, None)]
    records, engine = run(steps, threshold_bps=5, reopen_ms=0)
    assert kinds(records) == [("open", 1, None, None), ("close", 1, "spread_closed", 0)]
    close = records[-1]
    assert close["duration_ms"] == 6.0 and close["peak_net_bps"] == pytest.approx(7.0)
    # without hysteresis every dip under the threshold is a close, and every return an open
    records, _ = run(steps, threshold_bps=5, close_hysteresis_bps=0, reopen_ms=0)
    assert [r["event"] for r in records if r["event"] != "update"] == ["open", "close"] * 3
    assert engine.summary.opens == 1 and engine.summary.flaps == 0


def test_a_return_within_reopen_ms_continues_the_opportunity_as_a_flap():
    steps = [(0, 8), (10, None), (40, 9), (60, None), (200, None), (250, 8), (260, None), (400, None)]
    records, engine = run(steps, threshold_bps=5, reopen_ms=100)
    # gone at 10 ms, back at 40 (within 100 ms): the same opportunity; gone at 60 for good: closed at 160 ms at
    # the first look after that (200), its lifetime up to 60; back at 250: a new one
    assert kinds(records) == [("open", 1, None, None), ("close", 1, "spread_closed", 1),
                              ("open", 2, None, None), ("close", 2, "spread_closed", 0)]
    first = records[[r["event"] for r in records].index("close")]
    assert first["time_ns"] == T0 + 200 * MS and first["duration_ms"] == 60.0
    assert engine.summary.opens == 2 and engine.summary.flaps == 1


def test_an_edge_lingering_under_the_threshold_closes_after_close_after_ms_and_cannot_reopen_while_it_lasts():
    steps = [(0, 8), (100, 3), (600, 3), (1100, 3), (1200, 8), (1300, 2), (1400, None), (1450, None),
             (1600, None), (1700, 9)]
    records, _ = run(steps, threshold_bps=5, close_after_ms=1000, reopen_ms=100)
    # under 5 bps from 100 ms: closed at the first look past 1100 ms; back to 8 at 1200 ms, but that is the
    # same dislocation (it never fell below the close level): no new open until it is gone for reopen_ms
    assert kinds(records) == [("open", 1, None, None), ("close", 1, "below_threshold", 0),
                              ("open", 2, None, None), ("close", 2, "shutdown", 0)]
    assert [r["time_ns"] for r in records if r["event"] == "open"] == [T0, T0 + 1700 * MS]


@pytest.mark.parametrize("status, reason", [("DISCONNECTED", "exchange_disconnected"), ("STALE", "quote_stale"),
                                            ("RESYNCING", "book_invalidated"), ("HALTED", "venue_halted")])
def test_a_leg_that_goes_untrusted_closes_the_opportunity_at_once_whatever_reopen_ms(status, reason):
    from pipeline.board import RowStatus
    current = {}
    engine = engine_for(PAIR, quotes_of=lambda key: current, threshold_bps=0, reopen_ms=100)
    current = books(10, T0)
    assert [x.record["event"] for x in engine.evaluate("BTC/USDT", current, T0)] == ["open"]
    current = dict(current)
    bybit = current["bybit BTC/USDT"]
    current["bybit BTC/USDT"] = quote("bybit", "BTC/USDT", bybit.bids, bybit.asks, T0 + MS,
                                      status=int(getattr(RowStatus, status)))
    # the close comes with the change that untrusted the leg, not reopen_ms later: no flap waits on a leg
    # a trader must stop using
    [close] = [x.record for x in engine.evaluate("BTC/USDT", current, T0 + MS)]
    assert (close["event"], close["id"], close["close_reason"], close["flaps"], close["time_ns"]) == \
        ("close", 1, reason, 0, T0 + MS)
    # trusted again 10 ms later, with the edge still there: a new opportunity, not the closed one going on
    current = books(10, T0 + 11 * MS)
    [reopened] = [x.record for x in engine.evaluate("BTC/USDT", current, T0 + 11 * MS)]
    assert (reopened["event"], reopened["id"]) == ("open", 2)


def test_a_spread_that_closes_still_waits_reopen_ms_for_its_close():
    records, _ = run([(0, 8), (1, None), (50, None), (102, None)], threshold_bps=5, reopen_ms=100)
    closes = [r for r in records if r["event"] == "close"]
    assert [(r["close_reason"], r["time_ns"]) for r in closes] == [("spread_closed", T0 + 102 * MS)]


def test_counts_fall_as_the_threshold_rises_on_a_noisy_edge():
    # per cycle three stretches with an edge: peaks 11, 12 and 5; the close level is the same for all four
    # thresholds (the edge gone), so each stretch is one opportunity at any threshold its peak reaches
    cycle = [1, 6, 3, 11, 4, 7, None, None, 2, 12, 9, None, 5, 1, None]
    noisy = list(enumerate(cycle * 4))
    opens = {t: run(noisy, threshold_bps=t, reopen_ms=0)[1].summary.opens for t in (0, 2, 5, 10, 11.5)}
    assert opens == {0: 12, 2: 12, 5: 12, 10: 8, 11.5: 4}
