"""A quiet quote is not a fresh price, and a stream that runs late is not current.

In a 20-minute soak one opportunity opened on a Kraken ask that had not changed for 2.6 s while HTX moved:
the exchange's heartbeats kept the row fresh, but a heartbeat proves the connection, not the price. A leg
whose price has sat still past its venue's ``max_unchanged_ms`` (default: the detector's staleness limit)
while another venue's quote of the instrument changed, or whose exchange time (corrected by the feed's clock
offset) is more than ``max_exchange_lag_ms`` behind, opens nothing; each hold is counted once. A quiet market
where nothing moves still trades, and an opportunity already open is not cut by it.
"""
from __future__ import annotations

from pipeline.board import RowStatus
from pipeline.detector.rules import Quote
from tests.engine_harness import MS, T0, engine_for

LIVE = int(RowStatus.LIVE)
PAIR = {"kraken": ["BTC/USDT"], "htx": ["BTC/USDT"]}


def book(venue, bid, ask, changed_ms_ago, confirmed_ms_ago=None, late_ms=0, now=T0):
    """``late_ms``: the exchange time of the last change was this long before it was received."""
    recv = now - changed_ms_ago * MS
    confirmed = now - confirmed_ms_ago * MS if confirmed_ms_ago is not None else 0
    exch = recv - late_ms * MS if late_ms else 0
    return Quote(venue, LIVE, [(bid, 1.0)], [(ask, 1.0)], recv, exch, recv, 1, 0, confirmed, "BTC/USDT")


def quotes(*books):
    return {f"{b.venue} BTC/USDT": b for b in books}


def events(engine, books, now=T0):
    return [(e.record["event"], e.record["buy_exchange"], e.record["sell_exchange"])
            for e in engine.evaluate("BTC/USDT", books, now)]


def test_a_quote_kept_fresh_only_by_confirmations_while_the_other_venue_moves_opens_nothing():
    engine = engine_for(PAIR)                                   # detector staleness 2000 ms: the default limit
    # kraken's ask has not changed for 2.6 s (heartbeats confirmed it 100 ms ago); htx moved 5 ms ago: 76 bps
    frozen = book("kraken", 65000.0, 65010.0, changed_ms_ago=2600, confirmed_ms_ago=100)
    moving = book("htx", 65600.0, 65610.0, changed_ms_ago=5)
    assert events(engine, quotes(frozen, moving)) == []
    assert engine.summary.held_back == {"quote_unchanged": 1}
    assert events(engine, quotes(frozen, book("htx", 65601.0, 65611.0, changed_ms_ago=1)), T0 + MS) == []
    assert engine.summary.held_back == {"quote_unchanged": 1}      # one hold, counted once
    assert "held back, not opened: 1 on a quote unchanged while the market moved" in engine.summary.render()
    # kraken's ask moves: a current price, and the opportunity opens
    fresh = book("kraken", 65000.5, 65010.5, changed_ms_ago=0, now=T0 + 2 * MS)
    assert events(engine, quotes(fresh, book("htx", 65601.0, 65611.0, changed_ms_ago=1, now=T0 + 2 * MS)),
                  T0 + 2 * MS) == [("open", "kraken", "htx")]


def test_a_quiet_market_where_nothing_moves_still_trades():
    engine = engine_for(PAIR)
    assert events(engine, quotes(book("kraken", 65000.0, 65010.0, changed_ms_ago=2600, confirmed_ms_ago=100),
                                 book("htx", 65600.0, 65610.0, changed_ms_ago=2500, confirmed_ms_ago=50))) == [
        ("open", "kraken", "htx")]
    assert engine.summary.held_back == {}


def test_the_limit_is_per_venue_and_zero_turns_it_off():
    frozen = book("kraken", 65000.0, 65010.0, changed_ms_ago=2600, confirmed_ms_ago=100)
    moving = book("htx", 65600.0, 65610.0, changed_ms_ago=5)
    assert events(engine_for(PAIR, venue_keys={"kraken": {"max_unchanged_ms": 0}}), quotes(frozen, moving)) == [
        ("open", "kraken", "htx")]
    assert events(engine_for(PAIR, venue_keys={"kraken": {"max_unchanged_ms": 5000}}), quotes(frozen, moving)) == [
        ("open", "kraken", "htx")]
    assert events(engine_for(PAIR, venue_keys={"kraken": {"max_unchanged_ms": 500}}, staleness_ms=10_000),
                  quotes(frozen, moving)) == []


def test_a_stream_running_behind_its_exchange_opens_nothing_unless_the_clock_offset_explains_it():
    late = book("htx", 65600.0, 65610.0, changed_ms_ago=1, late_ms=1500)    # received 1.5 s after its exchange time
    kraken = book("kraken", 65000.0, 65010.0, changed_ms_ago=1)
    engine = engine_for(PAIR)
    assert events(engine, quotes(kraken, late)) == []
    assert engine.summary.held_back == {"exchange_lag": 1}
    # the same age, when the feed's clock-offset estimate says htx's clock runs 1.45 s behind ours: 50 ms late
    offsets = {"htx": 1450 * MS}
    engine = engine_for(PAIR, clock_offset_ns=lambda label: offsets.get(label, 0))
    assert events(engine, quotes(kraken, late)) == [("open", "kraken", "htx")]
    assert events(engine_for(PAIR, venue_keys={"htx": {"max_exchange_lag_ms": 2000}}), quotes(kraken, late)) == [
        ("open", "kraken", "htx")]


def test_a_quiet_book_is_old_by_exchange_time_but_not_late():
    # both books last changed 3 s ago (each arrived 2 ms after its exchange time) and are confirmed since:
    # old, not late, and nobody moved: the opportunity opens
    engine = engine_for(PAIR)
    assert events(engine, quotes(book("kraken", 65000.0, 65010.0, changed_ms_ago=3000, confirmed_ms_ago=10, late_ms=2),
                                 book("htx", 65600.0, 65610.0, changed_ms_ago=3000, confirmed_ms_ago=10,
                                      late_ms=2))) == [("open", "kraken", "htx")]


def test_an_open_opportunity_is_not_cut_by_a_hold():
    engine = engine_for(PAIR, reopen_ms=0)
    kraken = book("kraken", 65000.0, 65010.0, changed_ms_ago=1)
    assert events(engine, quotes(kraken, book("htx", 65600.0, 65610.0, changed_ms_ago=1))) == [
        ("open", "kraken", "htx")]
    later = T0 + 2600 * MS                         # kraken has sat still since, htx keeps moving, edge unchanged
    still = Quote("kraken", LIVE, [(65000.0, 1.0)], [(65010.0, 1.0)], T0 - MS, 0, T0 - MS, 1, 0, later - 100 * MS,
                  "BTC/USDT")
    assert events(engine, quotes(still, book("htx", 65600.0, 65610.0, changed_ms_ago=1, now=later)), later) == []
    assert engine.lifecycle.live and engine.summary.held_back == {}
