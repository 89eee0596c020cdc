"""What the detector reports adds up: shared liquidity counted once, one dislocation one opportunity,
no venue paired with itself, equivalent quotes as separate legs with their conversion cost.

Books are small and the numbers are worked out by hand in the comments (taker fees 10 bps a side).
"""
from __future__ import annotations

import pytest

from pipeline.detector.rules import allocate, find, leg_of, walk
from tests.engine_harness import MS, T0, engine_for, quote

# ---------------------------------------------------------------- liquidity allocated once

BINANCE_ASKS = [(100.0, 1.0)]
OKX_ASKS = [(100.05, 1.0)]
BYBIT_BIDS = [(100.5, 0.5), (100.4, 2.0)]


def test_two_pairs_selling_into_one_book_share_its_levels_best_edge_first():
    binance = quote("binance", "BTC/USDT", [(99.9, 1.0)], BINANCE_ASKS)
    okx = quote("okx", "BTC/USDT", [(99.95, 1.0)], OKX_ASKS)
    bybit = quote("bybit", "BTC/USDT", BYBIT_BIDS, [(100.6, 1.0)])
    fees = {q.leg: 10.0 for q in (binance, okx, bybit)}
    found, _ = find("BTC/USDT", [binance, okx, bybit], fees, T0, 2000 * MS, 0.0)
    alone = {c.pair: c for c in found}
    # alone, each would sell 1.0 into bybit's 0.5 @ 100.5 and 0.5 of 100.4: VWAP 100.45
    assert alone["binance>bybit"].fill.quantity == 1.0 and alone["okx>bybit"].fill.quantity == 1.0
    assert alone["binance>bybit"].fill.net_bps == pytest.approx(45.0 - 20.0)
    assert alone["okx>bybit"].fill.net_bps == pytest.approx((100.45 - 100.05) / 100.05 * 1e4 - 20.0)
    ranked = sorted(found, key=lambda c: -c.fill.net_bps)
    first, second = allocate(ranked, lambda c: 0.0)
    # binance>bybit (25 bps) takes 100.5 x 0.5 and 100.4 x 0.5; okx>bybit gets 100.4 x 1.0 of the 1.5 left
    assert (first.pair, first.fill.quantity, first.alone) == ("binance>bybit", 1.0, None)
    assert second.pair == "okx>bybit" and second.fill.quantity == pytest.approx(1.0)
    assert second.fill.sell_price == pytest.approx(100.4)
    assert second.fill.net_bps == pytest.approx((100.4 - 100.05) / 100.05 * 1e4 - 20.0)
    assert second.fill.profit_quote == pytest.approx(100.4 * 0.999 - 100.05 * 1.001)
    assert second.alone.profit_quote == pytest.approx(100.45 * 0.999 - 100.05 * 1.001)
    assert first.shares == ("okx>bybit",) and second.shares == ("binance>bybit",)
    # what both sell into bybit (2.0) is within its bids (2.5), and no level is sold into twice
    assert first.fill.quantity + second.fill.quantity <= sum(q for _, q in BYBIT_BIDS)
    # a pair left below its bar by the better one consumes nothing and is not kept
    assert [c.pair for c in allocate(ranked, lambda c: 16.0)] == ["binance>bybit"]


def test_the_engine_opens_the_shared_pairs_once_with_what_each_can_take():
    engine = engine_for({"binance": ["BTC/USDT"], "okx": ["BTC/USDT"], "bybit": ["BTC/USDT"]})
    quotes = {q.leg: q for q in (quote("binance", "BTC/USDT", [(99.9, 1.0)], BINANCE_ASKS),
                                 quote("okx", "BTC/USDT", [(99.95, 1.0)], OKX_ASKS),
                                 quote("bybit", "BTC/USDT", BYBIT_BIDS, [(100.6, 1.0)]))}
    records = [e.record for e in engine.evaluate("BTC/USDT", quotes, T0)]
    assert [(r["event"], r["id"], r["buy_exchange"], r["sell_exchange"]) for r in records] == [
        ("open", 1, "binance", "bybit"), ("open", 2, "okx", "bybit")]
    first, second = records
    assert first["qty_base"] == 1.0 and first["sell_price"] == 100.45 and "alone_qty_base" not in first
    assert second["qty_base"] == 1.0 and second["sell_price"] == 100.4
    assert second["alone_profit_quote"] == round(100.45 * 0.999 - 100.05 * 1.001, 6)
    assert first["shares_liquidity_with"] == ["okx>bybit"] and second["shares_liquidity_with"] == ["binance>bybit"]
    assert (first["base_currency"], first["quote_currency"], first["instrument"]) == ("BTC", "USDT", "BTC/USDT")
    # the summary adds what each got, not what each would claim alone
    expected = (100.45 * 0.999 - 100.0 * 1.001) + (100.4 * 0.999 - 100.05 * 1.001)
    assert engine.summary.profit_by_quote["USDT"] == pytest.approx(expected, abs=2e-6)
    assert engine.summary.shared == 2
    assert engine.summary.alone_profit == pytest.approx((100.45 - 100.4) * 0.999, abs=2e-6)


def test_an_open_pair_keeps_its_levels_until_another_beats_it_by_more_than_the_hysteresis():
    engine = engine_for({"binance": ["BTC/USDT"], "okx": ["BTC/USDT"], "bybit": ["BTC/USDT"]}, reopen_ms=0)
    okx = quote("okx", "BTC/USDT", [(99.95, 1.0)], OKX_ASKS)
    bybit = quote("bybit", "BTC/USDT", [(100.5, 1.0)], [(100.6, 1.0)])         # one bid level: room for one pair

    def with_binance(ask, now):
        binance = quote("binance", "BTC/USDT", [(99.0, 1.0)], [(ask, 1.0)])
        books = {"binance BTC/USDT": binance, "okx BTC/USDT": okx, "bybit BTC/USDT": bybit}
        return [(e.record["event"], e.record["buy_exchange"], e.record.get("close_reason"))
                for e in engine.evaluate("BTC/USDT", books, now)]

    assert with_binance(101.0, T0) == [("open", "okx", None)]       # okx>bybit: 100.05 -> 100.5, 24.98 bps net
    # binance>bybit at 30 bps beats it by 5, less than the pair's hysteresis (half of 20 bps of fees): okx keeps it
    assert with_binance(100.0, T0 + MS) == []
    # at 99.8, binance>bybit nets 50.14 bps, 25 more: it takes bybit's bid, and okx>bybit closes saying why
    assert with_binance(99.8, T0 + 2 * MS) == [("open", "binance", None), ("close", "okx", "liquidity_taken")]


# ---------------------------------------------------------------- one matching engine, equivalent quotes

def test_a_venue_is_never_paired_with_itself_through_another_box_or_row():
    local = quote("binance", "BTC/USDT", [(99.0, 1.0)], [(99.1, 1.0)])
    bridged = quote("binance@tokyo", "BTC/USDT", [(101.0, 1.0)], [(101.1, 1.0)])
    fees = {local.leg: 0.0, bridged.leg: 0.0}
    assert find("BTC/USDT", [local, bridged], fees, T0, 2000 * MS, 0.0) == ([], [])
    other = quote("okx@tokyo", "BTC/USDT", [(101.0, 1.0)], [(101.1, 1.0)])
    found, _ = find("BTC/USDT", [local, other], {local.leg: 0.0, other.leg: 0.0}, T0, 2000 * MS, 0.0)
    assert [c.pair for c in found] == ["binance>okx@tokyo"]


def test_a_mirrored_copy_of_a_venue_this_box_reads_itself_is_another_path_not_another_leg():
    """binance@frankfurt where this box reads binance itself is the same book over another path: a row of the
    binance leg, so a dislocation against okx is one opportunity on binance's liquidity, not two that count it
    twice (which row serves the leg: tests/unit/test_detector_paths.py). A venue only the other box reads
    (kraken@frankfurt), or an instrument only it reads (binance@frankfurt ETH/USDT), stays a leg."""
    from pipeline.board.plan import plan_rows
    from pipeline.config import parse_config
    from pipeline.detector.scan import RowUniverse
    config = parse_config({
        "venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://127.0.0.1:1"},
                   "okx": {"instruments": ["BTC/USDT"], "url": "wss://127.0.0.1:2"}},
        "detector": {"shadow_latencies_ms": [], "threshold_bps": 0.0, "reopen_ms": 0},
        "bridge": {"nats_url": "nats://127.0.0.1:4222", "box": "tokyo",
                   "subscribe": {"frankfurt": {"binance": ["BTC/USDT", "ETH/USDT"], "kraken": ["BTC/USDT"]}}}},
        available_cores=frozenset({0}))
    rows = plan_rows(config)
    universe = RowUniverse(config, rows)
    [mirrored] = [r.row for r in rows if r.label == "binance@frankfurt" and r.instrument == "BTC/USDT"]
    [own] = [r.row for r in rows if r.label == "binance" and r.instrument == "BTC/USDT"]
    assert universe.copies == {mirrored: "frankfurt"}
    assert universe.copies_of_leg == {"binance BTC/USDT": [own, mirrored]}
    assert universe.leg_of_row[mirrored] == "binance BTC/USDT" and universe.venue_label_of_row[mirrored] == "binance"
    assert sorted(set(universe.leg_of_row.values())) == ["binance BTC/USDT", "binance@frankfurt ETH/USDT",
                                                         "kraken@frankfurt BTC/USDT", "okx BTC/USDT"]
    # the engine over this universe: binance and its copy quote alike, okx 60 bps above: one opportunity
    books = {"binance BTC/USDT": quote("binance", "BTC/USDT", [(99.95, 1.0)], [(100.0, 1.0)]),
             "okx BTC/USDT": quote("okx", "BTC/USDT", [(100.6, 1.0)], [(100.65, 1.0)])}
    from pipeline.detector.engine import DetectorEngine
    engine = DetectorEngine(config, universe, lambda key: books, lambda label: 0, None)
    opened = [e.record for e in engine.evaluate("BTC/USDT", books, T0) if e.record["event"] == "open"]
    assert [(r["buy_exchange"], r["sell_exchange"], r["qty_base"]) for r in opened] == [("binance", "okx", 1.0)]


def test_equivalent_quotes_pair_other_venues_only_each_leg_with_its_instrument_and_the_conversion_cost():
    engine = engine_for({"kraken": ["BTC/USD", "BTC/USDT"], "okx": ["BTC/USDT"], "binance": ["BTC/USDT"]},
                        equivalent_quotes=[["USD", "USDT"]], conversion_bps=10)
    kraken_usd = quote("kraken", "BTC/USD", [(99.0, 1.0)], [(100.0, 1.0)])
    kraken_usdt = quote("kraken", "BTC/USDT", [(100.9, 1.0)], [(101.0, 1.0)])   # crosses kraken's USD book
    okx = quote("okx", "BTC/USDT", [(101.0, 2.0)], [(101.1, 1.0)])
    binance = quote("binance", "BTC/USDT", [(100.3, 1.0)], [(100.35, 1.0)])
    quotes = {q.leg: q for q in (kraken_usd, kraken_usdt, okx, binance)}
    records = [e.record for e in engine.evaluate("BTC/USD", quotes, T0)]
    pairs = {(r["buy_exchange"], r["buy_instrument"], r["sell_exchange"], r["sell_instrument"]): r for r in records}
    # kraken USD vs kraken USDT is one matching engine: never a pair, though kraken's USDT bid is above its USD ask
    assert all(buy != sell for buy, _, sell, _ in pairs)
    # (binance>kraken USDT, 4.8 bps, finds binance's one ask already taken by binance>okx, 44.8 bps)
    assert set(pairs) == {("binance", "BTC/USDT", "okx", "BTC/USDT"), ("kraken", "BTC/USD", "okx", "BTC/USDT")}
    # buy kraken BTC/USD at 100, sell okx BTC/USDT at 101: 100 bps gross less 40 + 10 fees, less 10 for USD/USDT
    usd_leg = pairs[("kraken", "BTC/USD", "okx", "BTC/USDT")]
    assert usd_leg["conversion_bps"] == 10.0 and usd_leg["fees_bps"] == 60.0
    assert usd_leg["net_bps"] == pytest.approx(40.0)
    assert usd_leg["profit_quote"] == round(101.0 * 0.999 - 100.0 * 1.005, 6)
    assert (usd_leg["instrument"], usd_leg["quote_currency"]) == ("BTC/USD", "USD")
    # binance and okx both list BTC/USDT only: their pair is labelled BTC/USDT and needs no conversion
    for (buy, _, sell, _), r in pairs.items():
        if {buy, sell} <= {"binance", "okx"}:
            assert (r["instrument"], r["quote_currency"], r.get("conversion_bps")) == ("BTC/USDT", "USDT", None)
    # totals are in the group's one currency
    assert set(engine.summary.profit_by_quote) == {"USD"}


def test_legs_are_named_by_venue_and_instrument():
    assert leg_of("kraken@frankfurt", "BTC/USDT") == "kraken@frankfurt BTC/USDT"
    assert quote("kraken", "BTC/USD", [], []).leg == "kraken BTC/USD"


def test_walk_charges_the_conversion_like_a_fee_on_the_buy_leg():
    plain = walk([(100.0, 1.0)], [(101.0, 1.0)], 10.0, 10.0)
    converted = walk([(100.0, 1.0)], [(101.0, 1.0)], 20.0, 10.0)
    assert converted.net_bps == pytest.approx(plain.net_bps - 10.0)
    assert converted.profit_quote == pytest.approx(101.0 * 0.999 - 100.0 * 1.002)
