"""End to end against the simulator with a scripted dislocation of known size and duration."""
from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from pipeline.detector.rules import fit, walk
from pipeline.detector.sizing import PairSizer
from pipeline.model import InstrumentRules
from pipeline.sim.market import Dislocation, Market
from pipeline.venues.binance.sim import REFERENCE_RULES as BINANCE_RULES
from pipeline.venues.bybit.sim import REFERENCE_RULES as BYBIT_RULES
from tests.conftest import demo_config, run_until, write_config

pytestmark = pytest.mark.integration

DISLOCATION = {"at_s": 2.0, "exchange": "bybit", "instrument": "BTC/USDT", "bps": 50.0, "duration_ms": 400.0}


def test_scripted_dislocation_opens_sizes_closes_and_shadow_fills(tmp_path, board_name):
    out = tmp_path / "opps.jsonl"
    raw = demo_config(board_name, out, shadow_latencies_ms=[5, 1000])
    raw["venues"] = {"binance": {"instruments": ["BTC/USDT"]}, "bybit": {"instruments": ["BTC/USDT"]}}
    raw["simulator"] = {"seed": 5, "update_interval_ms": 10, "volatility_bps": 0.0, "noise_bps": 0.0,
                        "half_spread_bps": 0.5, "random_dislocations": False,
                        "scripted_dislocations": [DISLOCATION]}
    # until the opportunity's shadow fills (1 s after its open) are out, then SIGTERM
    result = run_until(lambda stdout: b'"event":"shadow"' in (out.read_bytes() if out.exists() else b""),
                       "--config", str(write_config(tmp_path / "c.yaml", raw)))
    assert result.returncode == 0, result.stderr[-3000:]
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    opens = [r for r in records if r["event"] == "open"]
    assert len(opens) == 1, records
    opened = opens[0]

    # the same market model, computed independently: bybit quotes 50 bps high, so buy binance, sell bybit
    market = Market(["binance", "bybit"], ["BTC/USDT"], depth=10, volatility_bps=0, noise_bps=0,
                    half_spread_bps=0.5, random_dislocations=False).use_venue_ticks()
    market.schedule(Dislocation("bybit", "BTC/USDT", 50.0, 0.0, 1e12))
    _, binance_asks = market.book("binance", "BTC/USDT", 1.0)
    bybit_bids, _ = market.book("bybit", "BTC/USDT", 1.0)
    expected = walk(binance_asks[:5], bybit_bids[:5], 10.0, 10.0, 100_000.0, 10.0)
    # sized to the rules the simulated venues serve and the feeds publish on the board
    expected, _ = fit(PairSizer(served("binance", BINANCE_RULES["BTC/USDT"]), served("bybit", BYBIT_RULES["BTC/USDT"])),
                      expected, binance_asks[:5], bybit_bids[:5])
    assert (opened["buy_exchange"], opened["sell_exchange"]) == ("binance", "bybit")
    # the top-of-book and depth channels arrive as separate frames, so the first view may be partial;
    # once both books show the dislocation the reported opportunity is exactly the scripted one
    settled = [r for r in records if r["event"] in ("open", "update")][-1]
    assert settled["qty_base"] == pytest.approx(expected.quantity, rel=1e-9)
    assert settled["buy_price"] == pytest.approx(expected.buy_price, rel=1e-9)      # 10 significant digits
    assert settled["sell_price"] == pytest.approx(expected.sell_price, rel=1e-9)
    assert settled["net_bps"] == pytest.approx(expected.net_bps, abs=1e-3)
    assert settled["profit_quote"] == pytest.approx(expected.profit_quote, rel=1e-6)
    assert 20.0 < settled["net_bps"] < 30.0         # 50 bps dislocation - 1 bp spread - 20 bps fees, less the walk
    assert opened["net_bps"] > 0 and opened["qty_base"] <= expected.quantity * (1 + 1e-9)

    [closed] = [r for r in records if r["event"] == "close"]
    assert closed["close_reason"] == "spread_closed"
    assert closed["duration_ms"] == pytest.approx(DISLOCATION["duration_ms"], abs=120)
    assert closed["peak_net_bps"] >= opened["net_bps"]

    [shadow] = [r for r in records if r["event"] == "shadow"]
    fast, slow = shadow["shadow_fills"]
    assert fast["latency_ms"] == 5 and fast["net_bps"] is not None and fast["net_bps"] > 20.0
    assert slow["latency_ms"] == 1000 and slow["net_bps"] is not None and slow["net_bps"] < 0, \
        "a fill slower than the window must report the edge gone"
    assert fast["fill_fraction"] == 1.0 and fast["filled_qty_base"] == opened["qty_base"]
    assert ("shadow fill after 1000 ms: 0% of the detected size filled at a profit; full fills 0/1 profitable, "
            "partial 0/0, not tradable 0") in result.stdout


def served(venue, rule) -> InstrumentRules:
    """The :class:`InstrumentRules` a venue's parser reads from the simulator's ``InstrumentRule``."""
    def dec(text):
        return None if text is None else Decimal(text)
    return InstrumentRules(venue, "BTCUSDT", dec(rule.tick), dec(rule.step), dec(rule.min_qty), dec(rule.max_qty),
                           dec(rule.min_notional), dec(rule.max_notional), True, "")
