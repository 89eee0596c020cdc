"""Sizes both venues accept (pipeline.detector.sizing): exact cases by hand, then the fast integer path held
to its Decimal twin and to the rules themselves on random rules and sizes."""
from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detector.sizing import (
    BELOW_MIN_NOTIONAL,
    BELOW_MIN_QTY,
    NOT_TRADING,
    Sizing,
    common_step,
    pair_sizer,
    size_exact,
    size_legs,
)
from pipeline.model import InstrumentRules
from pipeline.venues import load_venue
from tests.conftest import examples

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def leg(step, tick="0.01", min_qty="0", min_notional="0", max_qty=None, max_notional=None, trading=True,
        venue="x", symbol="BTC-USDT"):
    return InstrumentRules(venue, symbol, D(tick), D(step), D(min_qty), None if max_qty is None else D(max_qty),
                           D(min_notional), None if max_notional is None else D(max_notional), trading,
                           "online" if trading else "halt")


def fixture_rules(venue: str, symbol: str) -> InstrumentRules:
    raw = (FIXTURES / venue / "reference_data.json").read_bytes()
    return next(r for r in load_venue(venue).reference_data.parse(raw) if r.symbol == symbol)


def test_common_step_is_the_least_common_multiple():
    assert common_step(D("0.001"), D("0.0025")) == D("0.005")
    assert common_step(D("1"), D("10")) == D("10")
    assert common_step(D("0.00001"), D("0.000001")) == D("0.00001")
    assert common_step(D("0.3"), D("0.2")) == D("0.6")


def test_steps_not_multiples_of_each_other():
    buy, sell = leg("0.001"), leg("0.0025")
    assert size_legs(buy, sell, 0.0149, 100.0, 100.0) == Sizing(0.01, 100.0, 100.0)
    assert size_legs(buy, sell, 0.015, 100.0, 100.0) == Sizing(0.015, 100.0, 100.0)    # read as the decimal 0.015
    assert size_legs(buy, sell, 0.0149999, 100.0, 100.0) == Sizing(0.01, 100.0, 100.0)
    assert size_legs(buy, sell, 0.0049, 100.0, 100.0) == Sizing(0.0, 100.0, 100.0, BELOW_MIN_QTY)


def test_prices_round_in_the_traders_favour_of_execution():
    buy, sell = leg("0.001", tick="0.01"), leg("0.001", tick="0.5")
    # the buy limit goes up to its tick, the sell limit down to its own: marketable limit orders
    assert size_legs(buy, sell, 1.0, 100.001, 100.99) == Sizing(1.0, 100.01, 100.5)
    assert size_legs(buy, sell, 1.0, 100.01, 100.5) == Sizing(1.0, 100.01, 100.5)      # already on the grid
    assert size_exact(buy, sell, D("1"), D("100.001"), D("100.99"))[1:3] == (D("100.01"), D("100.5"))


def test_tiny_price_token_with_integer_steps():
    buy = leg("1", tick="0.00000001", min_notional="5")
    sell = leg("10", tick="0.0000001", min_notional="1")
    got = size_legs(buy, sell, 1234567.9, 0.000012345, 0.00001299)
    assert got == Sizing(1234560.0, 0.00001235, 0.0000129)
    assert size_exact(buy, sell, D("1234567.9"), D("0.000012345"), D("0.00001299")) == (
        D("1234560"), D("0.00001235"), D("0.0000129"), None, False)
    # 400000 units are worth 4.94 on the buy side: under its 5 minimum
    assert size_legs(buy, sell, 400009.0, 0.000012345, 0.00001299).reason == BELOW_MIN_NOTIONAL


def test_a_minimum_order_value_the_rounded_size_just_misses():
    buy = fixture_rules("binance", "BTCBUSD")      # step 0.00001, tick 0.01, min notional 10
    sell = fixture_rules("bybit", "BTCUSDT")       # step 0.000001, tick 0.1, min notional 5, min qty 0.000011
    # 0.000209 x 49000 = 10.241 would pass; on the common 0.00001 grid it is 0.0002 x 49000 = 9.8
    assert size_legs(buy, sell, 0.000209, 49000.0, 49100.0) == Sizing(0.0, 49000.0, 49100.0, BELOW_MIN_NOTIONAL)
    # exactly at the minimum is accepted: 0.0002 x 50000.00 = 10
    assert size_legs(buy, sell, 0.000209, 49999.994, 50100.04) == Sizing(0.0002, 50000.0, 50100.0)
    # the buy limit rounded up makes the difference: 49999.99 would have been 9.999998
    assert size_legs(buy, sell, 0.0002, 49999.981, 50100.0).buy_px == 49999.99
    assert size_legs(buy, sell, 0.0002, 49999.981, 50100.0).reason == BELOW_MIN_NOTIONAL


def test_below_either_legs_min_qty():
    buy, sell = leg("0.0001", min_qty="0.001"), leg("0.00001", min_qty="0.0005")
    assert size_legs(buy, sell, 0.00099, 100.0, 100.0).reason == BELOW_MIN_QTY
    assert size_legs(buy, sell, 0.001, 100.0, 100.0) == Sizing(0.001, 100.0, 100.0)


def test_a_max_caps_the_size_and_it_is_rounded_again():
    buy = fixture_rules("okx", "BTC-USDT")          # step 1e-8, max 9999999999, max notional 1000000 (USDT)
    sell = fixture_rules("bybit", "BTCUSDT")        # step 0.000001, max 83
    got = size_legs(buy, sell, 100.0, 10000.0, 10000.0)
    assert got == Sizing(83.0, 10000.0, 10000.0, None, True)
    # 1000000 / 65000.1 = 15.3845917... -> the 0.000001 grid below it
    got = size_legs(buy, sell, 20.0, 65000.1, 65000.0)
    assert got == Sizing(15.384591, 65000.1, 65000.0, None, True)
    assert size_exact(buy, sell, D("20"), D("65000.1"), D("65000")) == (D("15.384591"), D("65000.1"), D("65000.0"),
                                                                        None, True)
    assert size_legs(buy, sell, 10.0, 65000.1, 65000.0) == Sizing(10.0, 65000.1, 65000.0)   # under every bound


def test_a_cap_below_the_minimum_is_refused():
    buy, sell = leg("0.01", max_qty="0.005"), leg("0.01")
    assert size_legs(buy, sell, 1.0, 100.0, 100.0) == Sizing(0.0, 100.0, 100.0, BELOW_MIN_QTY, True)


def test_a_leg_not_trading_refuses():
    buy, sell = fixture_rules("okx", "OKB-USDT"), fixture_rules("okx", "ETH-USDT")
    assert buy.trading is False
    assert size_legs(buy, sell, 1.0, 50.0, 51.0).reason == NOT_TRADING
    assert size_legs(sell, buy, 1.0, 50.0, 51.0).reason == NOT_TRADING


def test_one_sizer_per_pair():
    buy, sell = leg("0.001"), leg("0.0025")
    assert pair_sizer(buy, sell) is pair_sizer(leg("0.001"), leg("0.0025"))
    assert pair_sizer(buy, sell) is not pair_sizer(sell, buy)


# ---------------------------------------------------------------- properties

def decimals(mantissas, exponents):
    return st.builds(lambda m, e: D(m).scaleb(e), st.sampled_from(mantissas), st.sampled_from(exponents))


STEPS = decimals(["1", "2", "25", "5", "3"], range(-8, 2))
TICKS = decimals(["1", "5", "25"], range(-8, 1))


# built once (a strategy built per draw costs more than the draw); an int drawn from MIN_QTY or MAX_QTY is a count
# of steps, multiplied by the step drawn with it
MIN_QTY = st.one_of(st.just(D(0)), st.integers(1, 50), decimals(["1", "11", "3"], range(-6, 1)))
MAX_QTY = st.one_of(st.none(), st.integers(1, 10 ** 6))
MIN_NOTIONAL = st.one_of(st.just(D(0)), decimals(["1", "5", "10", "0.5"], range(-2, 2)))
MAX_NOTIONAL = st.one_of(st.none(), decimals(["1", "2", "5"], range(1, 7)))
TRADING = st.booleans() | st.just(True)


@st.composite
def leg_rules(draw):
    step = draw(STEPS)
    min_qty = draw(MIN_QTY)
    min_qty = step * min_qty if isinstance(min_qty, int) else min_qty
    max_qty = draw(MAX_QTY)
    max_qty = None if max_qty is None else step * max_qty
    return InstrumentRules("v", "S", draw(TICKS), step, min_qty, max_qty, draw(MIN_NOTIONAL), draw(MAX_NOTIONAL),
                           draw(TRADING), "s")


SIZES = st.builds(lambda m, e: D(m).scaleb(e), st.integers(1, 10 ** 9), st.integers(-12, -2))
PRICES = st.builds(lambda m, e: D(m).scaleb(e), st.integers(1, 10 ** 9), st.integers(-12, -3))


def is_multiple(x: D, step: D) -> bool:
    return x % step == 0


@settings(max_examples=examples(200), deadline=None)
@given(buy=leg_rules(), sell=leg_rules(), size=SIZES, buy_vwap=PRICES, sell_vwap=PRICES)
def test_the_fast_path_keeps_the_rules_and_equals_its_exact_twin(buy, sell, size, buy_vwap, sell_vwap):
    got = size_legs(buy, sell, float(size), float(buy_vwap), float(sell_vwap))
    exact = size_exact(buy, sell, D(repr(float(size))), D(repr(float(buy_vwap))), D(repr(float(sell_vwap))))
    assert got.reason == exact.reason and got.capped == exact.capped
    assert got.qty == float(exact.qty) and got.buy_px == float(exact.buy_px) and got.sell_px == float(exact.sell_px)
    qty, bpx, spx = D(repr(got.qty)), D(repr(got.buy_px)), D(repr(got.sell_px))
    # prices on each tick grid, in the direction that keeps the order marketable
    assert is_multiple(exact.buy_px, buy.tick) and exact.buy_px >= buy_vwap and exact.buy_px - buy_vwap < buy.tick
    assert is_multiple(exact.sell_px, sell.tick) and exact.sell_px <= sell_vwap
    assert sell_vwap - exact.sell_px < sell.tick
    assert qty <= size
    if not (buy.trading and sell.trading):
        assert got.reason == NOT_TRADING and got.qty == 0.0
        return
    if got.reason is None:
        assert qty == exact.qty > 0
        assert is_multiple(qty, buy.step) and is_multiple(qty, sell.step)
        assert qty >= buy.min_qty and qty >= sell.min_qty
        assert qty * bpx >= buy.min_notional and qty * spx >= sell.min_notional
        for r, px in ((buy, bpx), (sell, spx)):
            assert r.max_qty is None or qty <= r.max_qty
            assert r.max_notional is None or qty * px <= r.max_notional
        # the largest such size: one more common step would break a bound or pass the size asked for
        bigger = qty + common_step(buy.step, sell.step)
        assert (bigger > size or any(r.max_qty is not None and bigger > r.max_qty for r in (buy, sell))
                or any(r.max_notional is not None and bigger * px > r.max_notional
                       for r, px in ((buy, bpx), (sell, spx))))
        return
    assert got.qty == 0.0
    # the reason names the first rule the grid size breaks
    step = common_step(buy.step, sell.step)
    q = (size // step) * step
    caps = [r.max_qty for r in (buy, sell) if r.max_qty is not None]
    caps += [r.max_notional / px for r, px in ((buy, exact.buy_px), (sell, exact.sell_px))
             if r.max_notional is not None and px > 0]
    if caps and q > min(caps):
        q = (min(caps) // step) * step
    if q <= 0 or q < buy.min_qty or q < sell.min_qty:
        assert got.reason == BELOW_MIN_QTY
    else:
        assert got.reason == BELOW_MIN_NOTIONAL
        assert q * exact.buy_px < buy.min_notional or q * exact.sell_px < sell.min_notional
