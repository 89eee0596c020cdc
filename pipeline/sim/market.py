"""The simulated market: one shared random walk per instrument, per-exchange
noise, and occasional dislocations where one exchange lags the others.

Pure and seeded: the same seed and the same sequence of ``step`` calls give
the same quotes, so a run can be repeated and a test can script a
dislocation of known size and duration (:meth:`Market.schedule`).

In the simulator each exchange quotes on its own tick where it serves a real one
(:func:`venue_ticks`, e.g. Binance BTC/USDT on 0.01, Kraken ETH/USD on 0.05; the
servers call :meth:`Market.set_tick`), else on the instrument's grid of about 6
significant digits, which is all a market built on its own uses
(:meth:`Market.use_venue_ticks` switches the real ticks on).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Decimal

DEFAULT_PRICES = {"BTC": 65000.0, "ETH": 3200.0, "SOL": 150.0, "XRP": 0.6, "DOGE": 0.15}


@dataclass
class Dislocation:
    """Exchange ``exchange`` quotes ``instrument`` ``bps`` away from the market
    (positive: too high, so its bid is above the others' asks) from
    ``start_ms`` for ``duration_ms``."""

    exchange: str
    instrument: str
    bps: float
    start_ms: float
    duration_ms: float

    def active(self, now_ms: float) -> bool:
        return self.start_ms <= now_ms < self.start_ms + self.duration_ms


def price_decimals(price: float) -> int:
    """Decimals a real exchange would quote at this price (about 6 significant digits)."""
    if price <= 0:
        return 8
    return max(0, min(8, 5 - int(math.floor(math.log10(price)))))


def venue_ticks(exchange: str) -> dict[str, Decimal]:
    """The real ticks a registered venue's simulator serves (its protocol's ``REFERENCE_RULES``), by instrument;
    {} for a name the registry does not know (a test's own exchange names). Every market of a venue quotes on
    them (:meth:`Market.use_venue_ticks`)."""
    from pipeline.venues import VENUES, load_protocol
    if exchange not in VENUES:
        return {}
    return {instrument: Decimal(rule.tick) for instrument, rule in load_protocol(exchange).REFERENCE_RULES.items()}


class Market:
    def __init__(self, exchanges: list[str], instruments: list[str], seed: int = 7, depth: int = 10,
                 volatility_bps: float = 1.0, noise_bps: float = 0.3, half_spread_bps: float = 0.5,
                 dislocation_every_s: float = 2.0, dislocation_bps: float = 25.0, dislocation_ms: float = 150.0,
                 start_prices: dict[str, float] | None = None, random_dislocations: bool = True):
        self.seed = seed
        self.rng = random.Random(seed)
        self.exchanges = list(exchanges)
        self.instruments = list(instruments)
        self.depth = depth
        self.volatility = volatility_bps * 1e-4
        self.noise = noise_bps * 1e-4
        self.half_spread = half_spread_bps * 1e-4
        self.dislocation_every_ms = dislocation_every_s * 1000.0
        self.dislocation_bps = dislocation_bps
        self.dislocation_ms = dislocation_ms
        self.random_dislocations = random_dislocations
        start_prices = start_prices or {}
        self.mid = {}
        for instrument in self.instruments:
            base = instrument.split("/")[0]
            self.mid[instrument] = start_prices.get(instrument, DEFAULT_PRICES.get(base, 100.0))
        self.decimals = {i: price_decimals(p) for i, p in self.mid.items()}
        self.ticks: dict[tuple[str, str], tuple[float, int]] = {}   # (exchange, instrument) -> (tick, decimals)
        self.scheduled: list[Dislocation] = []
        self.next_dislocation_ms: float | None = None
        self.dislocations_started = 0

    def set_tick(self, exchange: str, instrument: str, tick: Decimal) -> None:
        """Quote ``exchange``'s ``instrument`` on ``tick`` (the venue's real price increment, e.g. Kraken's 0.05)
        instead of the instrument's default grid (``10**-decimals``). The random walk is the same either way."""
        self.ticks[(exchange, instrument)] = (float(tick), max(0, -tick.normalize().as_tuple().exponent))

    def use_venue_ticks(self) -> Market:
        """Quote every registered exchange on the real ticks its simulator serves (:func:`venue_ticks`), as the
        simulator's servers do: a market built apart (a test recomputing the books) then quotes what they do."""
        for exchange in self.exchanges:
            for instrument, tick in venue_ticks(exchange).items():
                if instrument in self.mid:
                    self.set_tick(exchange, instrument, tick)
        return self

    def grid(self, exchange: str, instrument: str) -> tuple[float, int]:
        """(tick, decimals) ``exchange`` quotes ``instrument`` on."""
        grid = self.ticks.get((exchange, instrument))
        if grid is None:
            decimals = self.decimals[instrument]
            return 10.0 ** -decimals, decimals
        return grid

    def schedule(self, dislocation: Dislocation) -> None:
        self.scheduled.append(dislocation)

    def _maybe_dislocate(self, now_ms: float) -> None:
        if not self.random_dislocations or len(self.exchanges) < 2:
            return
        if self.next_dislocation_ms is None:
            self.next_dislocation_ms = now_ms + self.rng.expovariate(1.0 / self.dislocation_every_ms)
        if now_ms >= self.next_dislocation_ms:
            self.scheduled.append(Dislocation(
                exchange=self.rng.choice(self.exchanges),
                instrument=self.rng.choice(self.instruments),
                bps=self.dislocation_bps * self.rng.choice((-1.0, 1.0)) * self.rng.uniform(0.6, 1.4),
                start_ms=now_ms,
                duration_ms=self.dislocation_ms * self.rng.uniform(0.3, 1.7),
            ))
            self.dislocations_started += 1
            self.next_dislocation_ms = now_ms + self.rng.expovariate(1.0 / self.dislocation_every_ms)

    def step(self, now_ms: float) -> None:
        """Advance every instrument's shared random walk by one step."""
        self._maybe_dislocate(now_ms)
        for instrument in self.instruments:
            self.mid[instrument] *= math.exp(self.rng.gauss(0.0, self.volatility))
        self.scheduled = [d for d in self.scheduled if now_ms < d.start_ms + d.duration_ms]

    def book(self, exchange: str, instrument: str, now_ms: float) -> tuple[list, list]:
        """Top ``depth`` levels of ``exchange``'s book for ``instrument`` now, rounded to its tick."""
        mid = self.mid[instrument] * (1.0 + self.rng.gauss(0.0, self.noise))
        for d in self.scheduled:
            if d.exchange == exchange and d.instrument == instrument and d.active(now_ms):
                mid *= 1.0 + d.bps * 1e-4
        grid = self.ticks.get((exchange, instrument))
        if grid is None:
            decimals = self.decimals[instrument]
            tick = 10.0 ** -decimals
            snap = None
        else:
            tick, decimals = grid
            snap = tick if round(tick, decimals) != 10.0 ** -decimals else None   # a tick that is not a power of 10

        def on_grid(price: float) -> float:
            return round(round(price / snap) * snap, decimals) if snap else round(price, decimals)

        spread = max(mid * self.half_spread, tick)
        best_bid = on_grid(mid - spread)
        best_ask = on_grid(mid + spread)
        if best_ask <= best_bid:
            best_ask = on_grid(best_bid + tick)
        bids = []
        asks = []
        size = 20000.0 / max(mid, 1e-9)
        for level in range(self.depth):
            step = tick * (1 + level * 2)
            bid_px = on_grid(best_bid - step * level)
            ask_px = on_grid(best_ask + step * level)
            bids.append((bid_px, level_quantity(size, bid_px, decimals, exchange)))
            asks.append((ask_px, level_quantity(size, ask_px, decimals, exchange)))
        return bids, asks


def level_quantity(size: float, price: float, decimals: int, exchange: str) -> float:
    """A resting quantity that stays the same while the price level exists (as real books do)."""
    ticks = int(round(price * 10 ** decimals))
    mixed = (ticks * 2654435761 + len(exchange) * 40503) % 1000
    return round(size * (0.05 + mixed / 1000 * 1.45), 6)


@dataclass
class Trade:
    """One simulated public trade: the taker ``side`` (``buy`` lifts the ask, ``sell`` hits the bid)."""

    trade_id: int
    price: float
    qty: float
    side: str
    ts_ms: int


class Tape:
    """One (exchange, instrument)'s public trades and rolling 24 h statistics.

    The statistics start from plausible values around the opening price and
    then move with every simulated trade, so tickers carry numbers that agree
    with the trades a client sees. Trades print at the current best bid or ask
    and never change the book (the market model owns the book). Seeded on its
    own generator, so the quotes do not depend on whether anyone watches trades.
    """

    def __init__(self, seed: str, open_price: float, decimals: int, trade_chance: float = 0.25):
        self.rng = random.Random(seed)
        self.decimals = decimals
        self.trade_chance = trade_chance
        self.open = round(open_price, decimals)
        self.high = round(open_price * 1.012, decimals)
        self.low = round(open_price * 0.991, decimals)
        self.volume = round(2_000_000.0 / max(open_price, 1e-9), 6)    # base units over the last 24 h
        self.quote_volume = self.volume * open_price
        self.count = 120_000
        self.last_price = self.open
        self.last_qty = 0.0
        self.next_id = 3_000_000_000 + self.rng.randrange(1_000_000)
        self.first_id = self.next_id - self.count
        self.recent: list[Trade] = []              # newest last, at most 50 (snapshots of trade channels)

    def step(self, bids: list, asks: list, ts_ms: int) -> list[Trade]:
        """The trades of one market step (often none), at the top of this book."""
        if not bids or not asks or self.rng.random() >= self.trade_chance:
            return []
        side = "buy" if self.rng.random() < 0.5 else "sell"
        price, resting = (asks[0] if side == "buy" else bids[0])
        qty = round(max(resting * self.rng.uniform(0.001, 0.2), 1e-6), 6)
        trade = Trade(self.next_id, price, qty, side, ts_ms)
        self.next_id += 1
        self.count += 1
        self.volume += qty
        self.quote_volume += qty * price
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.last_price, self.last_qty = price, qty
        self.recent.append(trade)
        del self.recent[:-50]
        return [trade]

    @property
    def change(self) -> float:
        return self.last_price - self.open

    @property
    def change_pct(self) -> float:
        return self.change / self.open * 100.0 if self.open else 0.0

    @property
    def vwap(self) -> float:
        return self.quote_volume / self.volume if self.volume else self.last_price
