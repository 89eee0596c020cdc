"""The detector opens only what both venues accept: sizes on both quantity steps, within both legs' maximums,
at or above both minimums, prices on each tick, and the expected profit that of the rounded size.

Books are small and worked out by hand (taker fees 10 bps a side). The walk alone takes 0.1234: binance's
0.05 @ 100.0 and 0.0734 @ 100.1 against bybit's 0.06 @ 101.0 and 0.0634 @ 100.9. Binance's step 0.001 and
bybit's 0.0025 meet on 0.005, so the order is 0.120: 0.05 @ 100.0 + 0.07 @ 100.1 bought, 0.06 @ 101.0 +
0.06 @ 100.9 sold.
"""
from __future__ import annotations

from decimal import Decimal as D

from pipeline.detector.rules import fit, walk
from pipeline.detector.sizing import PairSizer
from pipeline.model import RowStatus
from tests.engine_harness import T0, engine_for, quote, rules

VENUES = {"binance": ["BTC/USDT"], "bybit": ["BTC/USDT"]}
BINANCE = rules("binance", tick="0.1", step="0.001", min_qty="0.001", min_notional="5")
BYBIT = rules("bybit", tick="0.1", step="0.0025", min_qty="0.0025", min_notional="1", max_qty="100")


def books(bybit_top=101.0):
    return {q.leg: q for q in (quote("binance", "BTC/USDT", [(99.0, 1.0)], [(100.0, 0.05), (100.1, 0.0734)]),
                               quote("bybit", "BTC/USDT", [(bybit_top, 0.06), (100.9, 0.2)], [(102.0, 1.0)]))}


def opened(engine, quotes=None, now=T0):
    return [e.record for e in engine.evaluate("BTC/USDT", quotes or books(), now) if e.record["event"] == "open"]


def exact_profit(bought, sold, fee=D("0.001")):
    """Proceeds after the sell fee less cost with the buy fee, in Decimal, from (price, qty) text pairs."""
    cost = sum(D(p) * D(q) for p, q in bought)
    proceeds = sum(D(p) * D(q) for p, q in sold)
    return proceeds * (1 - fee) - cost * (1 + fee)


def test_the_size_is_rounded_onto_both_steps_and_the_profit_is_that_of_the_rounded_size():
    engine = engine_for(VENUES, rules={"binance": BINANCE, "bybit": BYBIT})
    [record] = opened(engine)
    assert record["qty_base"] == 0.12
    profit = exact_profit([("100.0", "0.05"), ("100.1", "0.07")], [("101.0", "0.06"), ("100.9", "0.06")])
    assert profit == D("0.082879")
    assert record["profit_quote"] == 0.082879
    # the walk's own size would claim more: 0.0849156 on 0.1234
    assert round(walk([(100.0, 0.05), (100.1, 0.0734)], [(101.0, 0.06), (100.9, 0.2)], 10.0, 10.0).profit_quote,
                 7) == 0.0849156
    # VWAPs of the rounded size, and the limits: the worst level each leg takes, on its tick
    assert (record["buy_price"], record["sell_price"]) == (100.0583333, 100.95)
    assert (record["buy_limit_price"], record["sell_limit_price"]) == (100.1, 100.9)
    assert record["buy_rules"] == {"tick": "0.1", "step": "0.001", "min_qty": "0.001", "min_notional": "5",
                                   "max_qty": None, "max_notional": None}
    assert record["sell_rules"] == {"tick": "0.1", "step": "0.0025", "min_qty": "0.0025", "min_notional": "1",
                                    "max_qty": "100", "max_notional": None}
    assert engine.summary.refused == {}
    assert engine.summary.profit_by_quote == {"USDT": 0.082879}


def test_a_maximum_caps_the_size_on_the_common_grid():
    engine = engine_for(VENUES, rules={"binance": rules("binance", tick="0.1", step="0.001", max_qty="0.1037"),
                                       "bybit": BYBIT})
    [record] = opened(engine)
    # 0.1037 is not on the 0.005 grid: 0.100; 0.05 @ 100.0 + 0.05 @ 100.1 against 0.06 @ 101.0 + 0.04 @ 100.9
    assert record["qty_base"] == 0.1
    assert record["profit_quote"] == float(exact_profit([("100.0", "0.05"), ("100.1", "0.05")],
                                                        [("101.0", "0.06"), ("100.9", "0.04")])) == 0.070899
    assert (record["buy_limit_price"], record["sell_limit_price"]) == (100.1, 100.9)


def test_a_rounded_size_under_a_minimum_quantity_is_not_opened_and_counted_once_while_it_lasts():
    engine = engine_for(VENUES, rules={"binance": BINANCE, "bybit": rules("bybit", tick="0.1", step="0.0025",
                                                                          min_qty="0.2")})
    assert opened(engine) == []
    assert opened(engine, books(), T0 + 1000) == []          # new quotes, the same refusal: not counted again
    assert engine.summary.refused == {"below_min_qty": 1}
    assert engine.evaluate("BTC/USDT", books(bybit_top=99.5), T0 + 2000) == []    # the dislocation is gone
    assert opened(engine, books(), T0 + 3000) == []          # and back: a new would-be open
    assert engine.summary.refused == {"below_min_qty": 2}
    assert engine.summary.opens == 0
    assert "refused by the venues' trading rules, not opened: 2 below_min_qty" in engine.summary.render()


def test_the_minimum_notional_is_checked_at_the_limit_price():
    # 0.12 x 100.1 (the buy limit) = 12.012 < 12.01 + 0.002: refused, though 0.12 x VWAP 100.058 is 12.007
    engine = engine_for(VENUES, rules={"binance": rules("binance", tick="0.1", step="0.001", min_notional="12.013"),
                                       "bybit": BYBIT})
    assert opened(engine) == []
    assert engine.summary.refused == {"below_min_notional": 1}
    engine = engine_for(VENUES, rules={"binance": rules("binance", tick="0.1", step="0.001", min_notional="12.012"),
                                       "bybit": BYBIT})
    assert [r["qty_base"] for r in opened(engine)] == [0.12]


def test_a_leg_without_rules_or_not_trading_opens_nothing():
    engine = engine_for(VENUES, rules={"binance": BINANCE, "bybit": None})
    assert opened(engine) == [] and opened(engine, books(), T0 + 1000) == []
    assert engine.summary.refused == {"no_rules": 1}
    engine = engine_for(VENUES, rules={"binance": BINANCE, "bybit": rules("bybit", trading=False)})
    assert opened(engine) == []
    assert engine.summary.refused == {"not_trading": 1}


def test_no_rules_counts_a_book_the_rules_keep_from_trading_not_a_row_that_never_had_one():
    """A feed without its venue's rules publishes its book as NO_RULES: a would-be pair refused, counted once.
    A row that never had a book (a venue absent from a recording) is no refusal of anything."""
    held = books()
    bybit = held["bybit BTC/USDT"]
    held["bybit BTC/USDT"] = quote("bybit", "BTC/USDT", bybit.bids, bybit.asks, status=RowStatus.NO_RULES)
    engine = engine_for(VENUES, rules={"binance": BINANCE, "bybit": None})
    assert opened(engine, held) == [] and engine.summary.refused == {"no_rules": 1}
    held["bybit BTC/USDT"] = quote("bybit", "BTC/USDT", [], [], status=RowStatus.NO_RULES)
    engine = engine_for(VENUES, rules={"binance": BINANCE, "bybit": None})
    assert opened(engine, held) == [] and engine.summary.refused == {}


def test_new_rules_take_effect_with_the_rows_next_quote():
    current = {"binance": (0, BINANCE), "bybit": (0, BYBIT)}
    engine = engine_for(VENUES, rules=lambda leg: current[leg.split(" ")[0]])
    assert [r["qty_base"] for r in opened(engine)] == [0.12]
    current["bybit"] = (1, rules("bybit", tick="0.1", step="0.0025", min_qty="0.2"))
    engine.evaluate("BTC/USDT", books(), T0 + 1000)
    assert engine.summary.refused == {"below_min_qty": 1}
    assert engine.summary.opens == 1


def test_fit_walks_the_rounded_size_again_until_its_limits_hold():
    # the buy's minimum value at its limit: 0.12 at the worst level 100.1 passes; fit keeps the level's limit
    fill = walk([(100.0, 0.05), (100.1, 0.0734)], [(101.0, 0.06), (100.9, 0.2)], 10.0, 10.0)
    fitted, reason = fit(PairSizer(BINANCE, BYBIT), fill, [(100.0, 0.05), (100.1, 0.0734)],
                         [(101.0, 0.06), (100.9, 0.2)])
    assert reason is None
    assert (fitted.quantity, fitted.buy_limit, fitted.sell_limit) == (0.12, 100.1, 100.9)
    # a coarser common step (0.05): 0.1
    coarse = rules("bybit", tick="0.1", step="0.05")
    fill = walk([(100.0, 0.05), (100.1, 0.0734)], [(101.0, 0.06), (100.9, 0.2)], 10.0, 10.0)
    fitted, reason = fit(PairSizer(BINANCE, coarse), fill, [(100.0, 0.05), (100.1, 0.0734)],
                         [(101.0, 0.06), (100.9, 0.2)])
    assert (fitted.quantity, fitted.buy_limit, fitted.sell_limit) == (0.1, 100.1, 100.9)
    fitted, reason = fit(PairSizer(BINANCE, rules("bybit", tick="0.1", step="0.0025", max_qty="0.06")), fill,
                         [(100.0, 0.05), (100.1, 0.0734)], [(101.0, 0.06), (100.9, 0.2)])
    # capped at 0.06: 0.05 @ 100.0 + 0.01 @ 100.1 against 0.06 @ 101.0 only, so the sell limit is 101.0
    assert (fitted.quantity, fitted.buy_limit, fitted.sell_limit) == (0.06, 100.1, 101.0)
    assert round(fitted.profit_quote, 9) == float(exact_profit([("100.0", "0.05"), ("100.1", "0.01")],
                                                               [("101.0", "0.06")]))


def test_a_leg_whose_rules_are_not_kept_here_is_reported_unsized():
    # rules_of answers None for a leg whose rules this engine is not given (an engine without a rules source)
    engine = engine_for(VENUES, rules=lambda leg: None if leg.startswith("bybit") else (0, BINANCE))
    [record] = opened(engine)
    assert record["qty_base"] == 0.1234          # the walk's own size
    assert "buy_rules" not in record and "buy_limit_price" not in record
    assert engine.summary.refused == {}
