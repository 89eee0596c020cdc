"""Sizes and prices both legs of an opportunity can be sent at (pure: no I/O, no clock).

The depth walk (:mod:`pipeline.detector.rules`) finds how much is worth trading; this module says whether
that can be *ordered* on both exchanges, and at what exact quantity and prices, from each leg's
:class:`~pipeline.model.InstrumentRules`:

1. **Quantity**: the largest quantity <= the size asked for that is a multiple of both legs' ``step``.
   When the steps are not multiples of each other the common grid is their least common multiple
   (0.001 and 0.0025 -> 0.005; 1 and 10 -> 10).
2. **Prices** on each venue's tick grid, as a trader sends a marketable limit order: the buy leg's
   limit (its VWAP ask) is rounded **up** to its tick, the sell leg's (its VWAP bid) **down**. Rounding
   the other way could leave the order short of the levels the depth walk counted on; these limits are
   never worse than the walk's VWAP by more than one tick, and the notional checks below use them.
3. **Maximums**: above a leg's ``max_qty``, or above its ``max_notional`` at its limit price, the
   quantity is capped to the largest common multiple below the bound ("capped").
4. **Minimums**, refused in this order: below either leg's ``min_qty`` (or nothing left on the grid) ->
   ``below_min_qty``; below either leg's ``min_notional`` at that leg's limit price ->
   ``below_min_notional``. The cap comes before them so an accepted size meets every rule.

A leg whose ``trading`` is False refuses everything (``not_trading``).

Exactness. The grids are decimal (0.1 is no float), so the hot path runs on integers: each pair's steps,
ticks and bounds are scaled once (:class:`PairSizer`, cached per pair by :func:`pair_sizer`) to integers
on a common power of ten, and a float coming from the depth walk is brought onto that scale with one
multiplication and a one-step correction, so it is read as the decimal it prints as (``repr``). The
float results are the nearest floats to the exact decimals. :func:`size_exact` is the same rule written
with :class:`~decimal.Decimal` only, the twin the tests hold the fast path to. Floats above 2**53 units
of a grid (about 9e7 BTC at a 1e-8 step) are beyond this exactness; no order is that large.
"""
from __future__ import annotations

import math
from decimal import Decimal, localcontext
from functools import lru_cache
from typing import NamedTuple

from pipeline.model import InstrumentRules

BELOW_MIN_QTY = "below_min_qty"
BELOW_MIN_NOTIONAL = "below_min_notional"
NOT_TRADING = "not_trading"


class Sizing(NamedTuple):
    """What both legs can be sent at. ``reason`` None: accepted, with ``qty`` > 0 on both grids and the
    limit prices on each tick grid; else the refusal (``qty`` 0.0, the prices still rounded).
    ``capped``: a maximum lowered the quantity."""

    qty: float
    buy_px: float
    sell_px: float
    reason: str | None = None
    capped: bool = False


class ExactSizing(NamedTuple):
    """:class:`Sizing` in Decimals (the twin's answer)."""

    qty: Decimal
    buy_px: Decimal
    sell_px: Decimal
    reason: str | None = None
    capped: bool = False


def _decimals(value: Decimal | None) -> int:
    """How many decimal places ``value`` needs (0 for an integer or None)."""
    if value is None:
        return 0
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _units(value: Decimal, scale: int) -> int:
    """``value * 10**scale`` as an int; exact by construction of ``scale``."""
    return int(value.scaleb(scale))


def _floor_units(x: float, mult: float) -> int:
    """The largest n with float(n / mult) <= x: ``x`` on the grid of 1/mult, read as the decimal it prints as."""
    n = round(x * mult)
    if n / mult > x:
        n -= 1
    return n


def _ceil_units(x: float, mult: float) -> int:
    """The smallest n with float(n / mult) >= x."""
    n = round(x * mult)
    if n / mult < x:
        n += 1
    return n


class PairSizer:
    """The sizing rule for one (buy leg, sell leg) pair, scaled to integers once.

    ``size(qty, buy_vwap, sell_vwap) -> Sizing`` (floats in, floats out) is the hot path: a dozen integer
    operations, no Decimal.
    """

    __slots__ = ("buy", "sell", "_qmult", "_step", "_min_q", "_max_q", "_trading",
                 "_bmult", "_btick", "_bmin_n", "_bmax_n", "_smult", "_stick", "_smin_n", "_smax_n")

    def __init__(self, buy: InstrumentRules, sell: InstrumentRules):
        self.buy = buy
        self.sell = sell
        qd = max(_decimals(r.step) for r in (buy, sell))
        qd = max(qd, *(_decimals(v) for r in (buy, sell) for v in (r.min_qty, r.max_qty)))
        self._qmult = float(10 ** qd)
        steps = [_units(r.step, qd) for r in (buy, sell)]
        self._step = steps[0] * steps[1] // math.gcd(*steps)           # the common grid, in qty units
        self._min_q = max(_units(r.min_qty, qd) for r in (buy, sell))
        maxes = [_units(r.max_qty, qd) for r in (buy, sell) if r.max_qty is not None]
        self._max_q = min(maxes) if maxes else None
        self._trading = buy.trading and sell.trading
        self._bmult, self._btick, self._bmin_n, self._bmax_n = self._price_grid(buy, qd)
        self._smult, self._stick, self._smin_n, self._smax_n = self._price_grid(sell, qd)

    @staticmethod
    def _price_grid(rules: InstrumentRules, qd: int):
        """(price multiplier, tick in price units, min and max notional in qty units x price units)."""
        pd = max(_decimals(rules.tick), _decimals(rules.min_notional), _decimals(rules.max_notional))
        scale = qd + pd
        max_n = None if rules.max_notional is None else _units(rules.max_notional, scale)
        return float(10 ** pd), _units(rules.tick, pd), _units(rules.min_notional, scale), max_n

    def size(self, qty: float, buy_vwap: float, sell_vwap: float) -> Sizing:
        """Round ``qty`` (base units) and both limit prices onto the two venues' grids; see the module docstring."""
        bmult = self._bmult
        btick = self._btick
        bpx = -(-_ceil_units(buy_vwap, bmult) // btick) * btick          # buy: up to the tick
        smult = self._smult
        stick = self._stick
        spx = (_floor_units(sell_vwap, smult) // stick) * stick          # sell: down to the tick
        buy_px = bpx / bmult
        sell_px = spx / smult
        if not self._trading:
            return Sizing(0.0, buy_px, sell_px, NOT_TRADING)
        step = self._step
        q = (_floor_units(qty, self._qmult) // step) * step
        capped = False
        top = self._max_q
        if self._bmax_n is not None and bpx > 0:
            cap = self._bmax_n // bpx
            top = cap if top is None or cap < top else top
        if self._smax_n is not None and spx > 0:
            cap = self._smax_n // spx
            top = cap if top is None or cap < top else top
        if top is not None and q > top:
            q = (top // step) * step
            capped = True
        if q <= 0 or q < self._min_q:
            return Sizing(0.0, buy_px, sell_px, BELOW_MIN_QTY, capped)
        if q * bpx < self._bmin_n or q * spx < self._smin_n:
            return Sizing(0.0, buy_px, sell_px, BELOW_MIN_NOTIONAL, capped)
        return Sizing(q / self._qmult, buy_px, sell_px, None, capped)


@lru_cache(maxsize=4096)
def pair_sizer(buy: InstrumentRules, sell: InstrumentRules) -> PairSizer:
    """The :class:`PairSizer` of this pair, built once (rules are frozen and hashable; new rules, new sizer)."""
    return PairSizer(buy, sell)


def size_legs(buy: InstrumentRules, sell: InstrumentRules, qty: float, buy_vwap: float,
              sell_vwap: float) -> Sizing:
    """Size one candidate: ``qty`` base units bought at ``buy_vwap`` on ``buy``'s venue and sold at
    ``sell_vwap`` on ``sell``'s (see the module docstring for the rule)."""
    return pair_sizer(buy, sell).size(qty, buy_vwap, sell_vwap)


def common_step(a: Decimal, b: Decimal) -> Decimal:
    """The least common multiple of two decimal steps (0.001 and 0.0025 -> 0.005), exactly."""
    scale = max(_decimals(a), _decimals(b))
    x, y = _units(a, scale), _units(b, scale)
    return Decimal(x * y // math.gcd(x, y)).scaleb(-scale)


def _ceil_to(x: Decimal, grid: Decimal) -> Decimal:
    whole, rest = divmod(x, grid)
    return (whole + (1 if rest else 0)) * grid


def size_exact(buy: InstrumentRules, sell: InstrumentRules, qty: Decimal, buy_vwap: Decimal,
               sell_vwap: Decimal) -> ExactSizing:
    """The rule of :func:`size_legs` in Decimal arithmetic only: the twin the fast path is tested against
    (a float input ``x`` corresponds to ``Decimal(repr(x))``). Every step is exact (``//``, ``divmod``,
    products in a 100-digit context), so it is the reference, not a fast path."""
    with localcontext() as ctx:
        ctx.prec = 100
        bpx = _ceil_to(buy_vwap, buy.tick)
        spx = (sell_vwap // sell.tick) * sell.tick
        zero = Decimal(0)
        if not (buy.trading and sell.trading):
            return ExactSizing(zero, bpx, spx, NOT_TRADING)
        step = common_step(buy.step, sell.step)
        q = (qty // step) * step
        caps = [(r.max_qty // step) * step for r in (buy, sell) if r.max_qty is not None]
        if buy.max_notional is not None and bpx > 0:
            caps.append((buy.max_notional // (bpx * step)) * step)
        if sell.max_notional is not None and spx > 0:
            caps.append((sell.max_notional // (spx * step)) * step)
        capped = False
        if caps and q > min(caps):
            q = min(caps)
            capped = True
        if q <= 0 or q < buy.min_qty or q < sell.min_qty:
            return ExactSizing(zero, bpx, spx, BELOW_MIN_QTY, capped)
        if q * bpx < buy.min_notional or q * spx < sell.min_notional:
            return ExactSizing(zero, bpx, spx, BELOW_MIN_NOTIONAL, capped)
        return ExactSizing(q, bpx, spx, None, capped)
