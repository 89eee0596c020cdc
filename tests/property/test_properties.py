"""Property tests: parsers, books, detector rules and the config loader on arbitrary input.

Each strategy is shaped so that the interesting case is common, not a lucky draw: the parser fuzz starts
from real frames of the venue and changes them (random bytes alone stop at the JSON decoder), and the book
fuzz draws books around a mid price (independent random levels are crossed almost every time). Each test
labels its examples with ``hypothesis.event``; ``pytest --hypothesis-show-statistics`` shows how often each
case came up.
"""
from __future__ import annotations

import functools
import json

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeline.board import RowStatus
from pipeline.book import InstrumentBook
from pipeline.config import parse_config
from pipeline.detector.rules import Quote, find, walk
from pipeline.errors import ConfigError, ParseError
from pipeline.model import DEPTH, BookUpdate
from pipeline.venues import VENUES, load_venue
from tests.conftest import FIXTURES, examples, weighted

prices = st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False)
quantities = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
levels = st.lists(st.tuples(prices, quantities), max_size=12)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(), st.text(max_size=12),
                         st.sampled_from(["", "0", "-1", "1e400", "NaN", "abc", "1.5"]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                  st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3)), max_leaves=8)


@functools.cache
def received_frames(venue: str) -> tuple[str, ...]:
    """Real frames the exchange sent (every capture but what the client sent), as JSON text (read once)."""
    frames = []
    for path in sorted((FIXTURES / venue).glob("*.jsonl")):
        if "sent" not in path.name:
            frames += [line for line in path.read_text().splitlines() if line.strip()][:30]
    return tuple(frames)


def _places(doc, found: list) -> list:
    """Every (container, key) inside a JSON document: where a value can be replaced or dropped."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found.append((doc, key))
        _places(value, found)
    return found


CHANGES = st.sampled_from(["as is", "replace", "replace", "drop", "truncate", "byte"])


@st.composite
def changed_frames(draw, venue: str):
    """A real frame of the venue, as is or changed: a value replaced, a field dropped, cut short, a byte
    overwritten; sent as the exchange sends it (gzip for HTX) or, now and then, as plain text."""
    record = load_venue(venue)
    text = draw(st.sampled_from(received_frames(venue)))
    how = draw(CHANGES)
    if how == "truncate":
        text = text[:draw(st.integers(0, max(len(text) - 1, 0)))]
    elif how == "byte":
        data = bytearray(text.encode())
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        text = data.decode(errors="replace")
    elif how in ("replace", "drop"):
        doc = orjson.loads(text)
        places = _places(doc, [])
        if places:
            container, key = draw(st.sampled_from(places))
            if how == "drop":
                container.pop(key)
            else:
                container[key] = draw(json_values)
        text = json.dumps(doc)
    event(f"frame {how}")
    return record.wire_frame(text) if draw(st.integers(0, 9)) else text


ARBITRARY = st.one_of(st.binary(max_size=400), st.text(max_size=400))


@functools.cache
def parser_input(venue: str):
    """A real frame of the venue changed three times in five, arbitrary bytes or text otherwise (built once)."""
    if not received_frames(venue):
        return ARBITRARY
    return weighted((ARBITRARY, 2), (changed_frames(venue), 3))


@pytest.mark.parametrize("venue", VENUES)
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_parse_of_arbitrary_input_raises_only_parse_error(venue, data):
    module = load_venue(venue)
    raw = data.draw(parser_input(venue))
    try:
        events = module.parse(raw, 0)
    except ParseError as exc:
        event(f"refused: {exc.reason}")
    else:
        event("parsed: " + (" ".join(sorted({type(e).__name__ for e in events})) or "nothing"))


MID = 1000.0
offsets = st.integers(1, 40)                          # ticks of 0.5 from the mid price


def market_side(side: int, ticks=offsets):
    """Levels on one side of the mid price (bids below, asks above); quantity 0 (a deletion in a delta) one
    time in five."""
    level = st.tuples(ticks.map(lambda n: MID + side * 0.5 * n), weighted((st.floats(0.001, 50), 4), (st.just(0.0), 1)))
    return st.lists(level, max_size=8)


books_in_a_market = st.tuples(market_side(-1), market_side(+1))
# the same with one level at or across the mid price: a crossed or locked book
crossing_books = st.tuples(market_side(-1), market_side(+1)).flatmap(
    lambda sides: st.tuples(st.integers(0, 1), st.integers(-3, 0)).map(
        lambda where: tuple(side + [(MID + (1 if n else -1) * 0.5 * where[1], 1.0)] if n == where[0] else side
                            for n, side in enumerate(sides))))
# in the market six times in eight; crossed or locked, or independent levels (crossed almost always), once each
book_updates = weighted((books_in_a_market, 6), (crossing_books, 1), (st.tuples(levels, levels), 1))


@settings(max_examples=examples(300), deadline=None)
@given(snapshot=book_updates, deltas=st.lists(book_updates, min_size=1, max_size=15),
       depth=st.integers(1, 10), keep=st.one_of(st.none(), st.integers(1, 20)))
def test_books_stay_sorted_within_depth_and_crossed_books_are_flagged(snapshot, deltas, depth, keep):
    book = InstrumentBook("X", depth=depth, keep_levels=keep)
    states = set()
    seq = 1
    book.apply(BookUpdate("X", DEPTH, True, [lv for lv in snapshot[0] if lv[1] > 0],
                          [lv for lv in snapshot[1] if lv[1] > 0], 0, seq))
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
        states.add(RowStatus(book.state).name)
    event("states seen: " + " ".join(sorted(states)))


book_side = st.lists(st.tuples(prices, st.floats(min_value=0.001, max_value=100, allow_nan=False)),
                     min_size=1, max_size=6)


@settings(max_examples=examples(400), deadline=None)
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


@settings(max_examples=examples(300), deadline=None)
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


@settings(max_examples=examples(300), deadline=None)
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


@settings(max_examples=examples(300), deadline=None)
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


@settings(max_examples=examples(300), deadline=None)
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
