"""Property tests: parsers, books, detector rules and the config loader on arbitrary input."""
from __future__ import annotations


import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.board import RowStatus
from pipeline.book import InstrumentBook
from pipeline.config import parse_config
from pipeline.detector.rules import Quote, find, walk
from pipeline.errors import ConfigError, ParseError
from pipeline.model import DEPTH, BookUpdate
from pipeline.venues import VENUES, load_venue

prices = st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False)
quantities = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
levels = st.lists(st.tuples(prices, quantities), max_size=12)


@pytest.mark.parametrize("venue", VENUES)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_parse_of_arbitrary_input_raises_only_parse_error(venue, raw):
    module = load_venue(venue)
    try:
        module.parse(raw, 0)
    except ParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(snapshot=st.tuples(levels, levels), deltas=st.lists(st.tuples(levels, levels), max_size=15),
       depth=st.integers(1, 10), keep=st.one_of(st.none(), st.integers(1, 20)))
def test_books_stay_sorted_within_depth_and_crossed_books_are_flagged(snapshot, deltas, depth, keep):
    book = InstrumentBook("X", depth=depth, keep_levels=keep)
    seq = 1
    book.apply(BookUpdate("X", DEPTH, True, [l for l in snapshot[0] if l[1] > 0],
                          [l for l in snapshot[1] if l[1] > 0], 0, seq))
    for bids, asks in deltas:
        seq += 1
        book.apply(BookUpdate("X", DEPTH, False, bids, asks, 0, seq, seq - 1))
        top_bids, top_asks = book.compose()
        assert len(top_bids) <= depth and len(top_asks) <= depth
        assert [p for p, _ in top_bids] == sorted((p for p, _ in top_bids), reverse=True)
        assert [p for p, _ in top_asks] == sorted(p for p, _ in top_asks)
        assert all(q > 0 for _, q in top_bids + top_asks)
        assert len({p for p, _ in top_bids}) == len(top_bids)
        if book.state == RowStatus.LIVE:
            assert top_bids and top_asks and top_bids[0][0] < top_asks[0][0]
        if top_bids and top_asks and top_bids[0][0] >= top_asks[0][0]:
            assert book.state == RowStatus.CROSSED


book_side = st.lists(st.tuples(prices, st.floats(min_value=0.001, max_value=100, allow_nan=False)),
                     min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(asks=book_side, bids=book_side, buy_fee=st.floats(0, 50), sell_fee=st.floats(0, 50),
       cap=st.floats(min_value=1.0, max_value=1e7))
def test_walk_never_exceeds_the_books_and_net_never_exceeds_gross(asks, bids, buy_fee, sell_fee, cap):
    asks = sorted(asks)
    bids = sorted(bids, reverse=True)
    fill = walk(asks, bids, buy_fee, sell_fee, max_notional=cap)
    if fill is None:
        return
    assert fill.quantity <= sum(q for _, q in asks) * (1 + 1e-9)
    assert fill.quantity <= sum(q for _, q in bids) * (1 + 1e-9)
    assert fill.quantity * fill.buy_price <= cap * (1 + 1e-9)
    assert fill.net_bps <= fill.gross_bps
    assert fill.profit_quote > -1e-9 * max(1.0, fill.quantity * fill.buy_price)
    assert asks[0][0] - 1e-9 <= fill.buy_price and fill.sell_price <= bids[0][0] + 1e-9


@settings(max_examples=300, deadline=None)
@given(a_bids=book_side, a_asks=book_side, b_bids=book_side, b_asks=book_side,
       status=st.sampled_from([s for s in RowStatus if s != RowStatus.LIVE]))
def test_no_opportunity_ever_comes_from_a_row_that_is_not_live(a_bids, a_asks, b_bids, b_asks, status):
    now = 10**12
    a = Quote("a", int(RowStatus.LIVE), sorted(a_bids, reverse=True), sorted(a_asks), now)
    b = Quote("b", int(status), sorted(b_bids, reverse=True), sorted(b_asks), now)
    found, suspect = find("X/Y", [a, b], {"a": 0.0, "b": 0.0}, now, 10**9, -1e9)
    assert found == [] and suspect == []


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(document=st.one_of(yaml_values, st.dictionaries(
    st.sampled_from(["board", "venues", "detector", "health", "supervisor", "simulator", "metrics", "x"]),
    yaml_values, max_size=6)))
def test_config_loader_raises_only_config_error(document):
    text = yaml.safe_dump(document)
    try:
        parse_config(yaml.safe_load(text), available_cores=frozenset({0, 1}))
    except ConfigError as exc:
        assert exc.problems and all(isinstance(path, str) for path, _ in exc.problems)


# ---------------------------------------------------------------- venue/book: merge order and checksum text
top_level = st.tuples(st.integers(1, 10**6), st.integers(1, 10**6))


@settings(max_examples=300, deadline=None)
@given(channels=st.lists(st.booleans(), min_size=1, max_size=30), tops=st.lists(top_level, min_size=30, max_size=30))
def test_the_newest_id_wins_whatever_the_interleaving(channels, tops):
    """W1: top-of-book and depth updates interleaved in any order (each channel in its own order):
    the composed top is always the top of the update with the highest exchange id seen so far."""
    from pipeline.model import BBO
    book = InstrumentBook("X", depth=3)
    latest = {}
    for xseq, (is_bbo, (bid_ticks, qty)) in enumerate(zip(channels, tops), 1):
        bid = (bid_ticks / 100, qty / 100)
        ask = ((bid_ticks + 1) / 100, qty / 100)
        if is_bbo:
            update = BookUpdate("X", BBO, True, [bid], [ask], 0, xseq, xseq=xseq)
        else:
            update = BookUpdate("X", DEPTH, True, [bid, (bid[0] / 2, 1.0)], [ask, (ask[0] * 2, 1.0)], 0, xseq,
                                xseq=xseq)
        book.apply(update)
        latest[is_bbo] = (xseq, bid, ask)
        newest = max(latest.values())
        bids, asks = book.compose()
        assert bids[0] == newest[1] and asks[0] == newest[2]


@settings(max_examples=300, deadline=None)
@given(ticks=st.lists(st.tuples(st.integers(1, 10**9), st.integers(1, 10**10)), min_size=1, max_size=10),
       price_dp=st.integers(0, 8), qty_dp=st.integers(0, 8))
def test_kraken_checksum_does_not_depend_on_how_numbers_are_printed(ticks, price_dp, qty_dp):
    """T1: fixed full-precision text, shortest repr and exponent forms of the same numbers hash alike."""
    from pipeline.venues.kraken import wire as kraken
    values = [(p / 10 ** price_dp, q / 10 ** qty_dp) for p, q in ticks]
    fixed = [(f"{p:.{price_dp}f}", f"{q:.{qty_dp}f}") for p, q in values]
    shortest = [(repr(p).removesuffix(".0"), repr(q).removesuffix(".0")) for p, q in values]
    exponent = [(f"{p:.17e}", f"{q:.17e}") for p, q in values]
    expected = kraken.checksum(fixed, fixed, price_dp, qty_dp)
    assert kraken.checksum(shortest, shortest, price_dp, qty_dp) == expected
    assert kraken.checksum(exponent, exponent, price_dp, qty_dp) == expected
