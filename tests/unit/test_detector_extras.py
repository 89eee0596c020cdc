"""Shadow fills, instrument identity, per-instrument overrides."""
from __future__ import annotations

import pytest

from pipeline.board import RowStatus
from pipeline.config import parse_config
from pipeline.detector.rules import Quote, find, shadow_fill, take
from pipeline.detector.scan import instrument_key
from pipeline.errors import ConfigError

NOW = 10_000_000_000
LIVE = int(RowStatus.LIVE)


def q(venue, bids, asks, status=LIVE):
    return Quote(venue, status, bids, asks, NOW - 1_000_000)


def test_take_walks_levels():
    assert take([(100.0, 1.0), (101.0, 1.0)], 1.5) == (pytest.approx(100.0 * 2 / 3 + 101.0 / 3), 1.5)
    assert take([(100.0, 1.0)], 3.0) == (100.0, 1.0)
    assert take([], 1.0) == (0.0, 0.0)


def test_shadow_fill_reprices_the_detected_quantity():
    fees = {"a": 10.0, "b": 10.0}
    a = q("a", [(99.0, 1.0)], [(100.0, 1.0), (100.45, 5.0)])   # second level not profitable after fees
    b = q("b", [(100.5, 2.0)], [(100.6, 1.0)])
    [c], _ = find("X/Y", [a, b], fees, NOW, 2_000_000_000, 0)
    assert c.fill.quantity == 1.0 and c.fill.net_bps == pytest.approx(30.0)
    later_b = q("b", [(100.3, 0.5), (100.25, 5.0)], [(100.6, 1.0)])
    fill = shadow_fill(c, a, later_b, 20.0, NOW, 2_000_000_000)
    sell = (0.5 * 100.3 + 0.5 * 100.25) / 1.0
    assert fill.filled == 1.0 and fill.fraction == 1.0 and fill.full
    assert fill.sell_price == pytest.approx(sell) and fill.buy_price == 100.0
    assert fill.net_bps == pytest.approx((sell - 100.0) / 100.0 * 1e4 - 20.0)
    assert fill.slippage_bps == pytest.approx(30.0 - fill.net_bps)
    assert fill.profit_quote == pytest.approx(sell * 0.999 - 100.0 * 1.001)
    gone = shadow_fill(c, a, q("b", [(100.5, 2.0)], [(100.6, 1.0)], status=int(RowStatus.STALE)), 50.0,
                       NOW, 2_000_000_000)
    assert gone.net_bps is None and gone.reason == "quote_stale" and gone.profit_quote is None


def test_a_partial_shadow_fill_is_priced_and_counted_on_what_filled():
    fees = {"a": 10.0, "b": 10.0}
    a = q("a", [(99.0, 1.0)], [(100.0, 1.0)])
    b = q("b", [(100.5, 2.0)], [(100.6, 1.0)])
    [c], _ = find("X/Y", [a, b], fees, NOW, 2_000_000_000, 0)
    thin_b = q("b", [(100.4, 0.14)], [(100.6, 1.0)])          # only 14 % of the size is still bid
    fill = shadow_fill(c, a, thin_b, 50.0, NOW, 2_000_000_000)
    assert fill.filled == pytest.approx(0.14) and fill.fraction == pytest.approx(0.14) and not fill.full
    assert fill.buy_price == 100.0 and fill.sell_price == 100.4
    assert fill.net_bps == pytest.approx(40.0 - 20.0)
    assert fill.profit_quote == pytest.approx(0.14 * (100.4 * 0.999 - 100.0 * 1.001))
    assert fill.as_dict()["fill_fraction"] == 0.14 and fill.as_dict()["filled_qty_base"] == 0.14
    from pipeline.detector.report import shadow_outcome
    assert shadow_outcome([fill.as_dict()]) == "50ms +20.00bps 14% filled"


def test_quotes_are_one_instrument_only_when_declared_equivalent():
    assert instrument_key("BTC/USDC", ()) == "BTC/USDC"
    assert instrument_key("BTC/USDC", (("USD", "USDC"),)) == "BTC/USD"
    assert instrument_key("BTC/USDT", (("USD", "USDC"),)) == "BTC/USDT"


def test_fee_and_notional_overrides_and_sink_token_rules():
    raw = {"venues": {"binance": {"instruments": ["BTC/USDT", "ETH/USDT"], "url": "wss://x",
                                  "fee_overrides": {"ETH/USDT": 0.0}}},
           "detector": {"max_notional_by_instrument": {"ETH/USDT": 500}}}
    config = parse_config(raw, available_cores=frozenset({0}))
    venue = config.venues[0]
    assert venue.fee_bps("BTC/USDT") == 10.0 and venue.fee_bps("ETH/USDT") == 0.0
    assert config.detector.max_notional_for("ETH/USDT") == 500 and config.detector.max_notional_for("BTC/USDT") == 1e5
    raw["detector"]["sink"] = {"url": "http://127.0.0.1:1/x", "token": "secret"}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, available_cores=frozenset({0}))
    assert info.value.problems[0][0] == "detector.sink.token"
    assert "secret" not in str(info.value)
