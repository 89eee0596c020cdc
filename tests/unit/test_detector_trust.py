"""What the detector takes from a row's trust fields: halted rows never trade, confirmed quiet rows stay fresh."""
from __future__ import annotations

from pipeline.detector.rules import Quote, find, untradable_reason
from pipeline.model import RowStatus

MS = 1_000_000
NOW = 1_700_000_000_000 * MS
STALENESS = 1000 * MS


def quote(venue, bid, ask, status=RowStatus.LIVE, recv_ms_ago=10, confirmed_ms_ago=None):
    recv = NOW - recv_ms_ago * MS
    confirmed = NOW - confirmed_ms_ago * MS if confirmed_ms_ago is not None else 0
    return Quote(venue, int(status), [(bid, 10.0)], [(ask, 10.0)], recv, 0, recv, 2, 0, confirmed)


def test_a_halted_row_is_never_tradable_and_says_why():
    assert untradable_reason(quote("kraken", 99.0, 99.1, RowStatus.HALTED), NOW, STALENESS) == "venue_halted"
    found, _ = find("BTC/USD", [quote("kraken", 99.0, 99.1, RowStatus.HALTED), quote("coinbase", 101.0, 101.1)],
                    {"kraken": 0.0, "coinbase": 0.0}, NOW, STALENESS, 0.0, 1e9, 0.0, 10_000)
    assert found == []
    found, _ = find("BTC/USD", [quote("kraken", 99.0, 99.1), quote("coinbase", 101.0, 101.1)],
                    {"kraken": 0.0, "coinbase": 0.0}, NOW, STALENESS, 0.0, 1e9, 0.0, 10_000)
    assert [(c.buy.venue, c.sell.venue) for c in found] == [("kraken", "coinbase")]


def test_a_quiet_row_the_exchange_keeps_confirming_stays_tradable():
    quiet = quote("kraken", 99.0, 99.1, recv_ms_ago=5000, confirmed_ms_ago=200)
    silent = quote("kraken", 99.0, 99.1, recv_ms_ago=5000)
    assert untradable_reason(quiet, NOW, STALENESS) is None
    assert untradable_reason(silent, NOW, STALENESS) == "quote_stale"
    assert untradable_reason(quote("kraken", 99.0, 99.1, recv_ms_ago=5000, confirmed_ms_ago=1500), NOW,
                             STALENESS) == "quote_stale"


def test_a_bridged_leg_delays_its_shadow_fill_by_its_age_on_arrival():
    from pipeline.detector.engine import remote_leg_delay_ns
    from pipeline.detector.rules import Candidate
    local = quote("okx", 99.0, 99.1)
    remote = quote("binance@tokyo", 101.0, 101.1, recv_ms_ago=10)
    remote.via = "tokyo"
    remote.publish_ns = remote.recv_ns + 4 * MS              # written here 4 ms after tokyo received it
    assert remote_leg_delay_ns(Candidate("BTC/USDT", local, remote, None)) == 4 * MS
    assert remote_leg_delay_ns(Candidate("BTC/USDT", local, quote("bybit", 101.0, 101.1), None)) == 0
