"""Shared book logic: snapshots, deltas, continuity, bad numbers, crossed books, BBO overlay."""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.board import RowStatus
from pipeline.book import InstrumentBook, Outcome, SideBook
from pipeline.model import BBO, DEPTH, BookUpdate
from tests.conftest import examples


def depth(snapshot, bids, asks, seq=None, prev=None, restart=False):
    return BookUpdate("X", DEPTH, snapshot, bids, asks, 0, seq, prev, restart=restart)


def test_delta_before_snapshot_is_ignored_then_snapshot_makes_it_live():
    book = InstrumentBook("X", depth=3)
    assert book.apply(depth(False, [(9.0, 1.0)], [], 1, 0)) is Outcome.IGNORED
    assert book.state == RowStatus.SYNCING
    assert book.apply(depth(True, [(9.0, 1.0), (8.0, 2.0)], [(10.0, 1.0)], 5)) is Outcome.CHANGED
    assert book.state == RowStatus.LIVE
    assert book.compose() == ([(9.0, 1.0), (8.0, 2.0)], [(10.0, 1.0)])


def test_deltas_update_delete_and_truncate():
    book = InstrumentBook("X", depth=2, keep_levels=3)
    book.apply(depth(True, [(9.0, 1.0), (8.0, 2.0), (7.0, 3.0)], [(10.0, 1.0), (11.0, 1.0)], 1))
    book.apply(depth(False, [(9.0, 0.0), (8.5, 4.0), (9.5, 1.5)], [(10.0, 2.0)], 2, 1))
    assert book.compose() == ([(9.5, 1.5), (8.5, 4.0)], [(10.0, 2.0), (11.0, 1.0)])
    assert len(book.book.bids.levels) == 3           # truncated to keep_levels


def test_gap_invalidates_and_restart_does_not():
    book = InstrumentBook("X", depth=2)
    book.apply(depth(True, [(9.0, 1.0)], [(10.0, 1.0)], 10))
    assert book.apply(depth(False, [(9.0, 2.0)], [], 12, 11)) is Outcome.GAP
    assert book.state == RowStatus.RESYNCING and book.gaps == 1
    assert book.compose() == ([], [])                 # discarded, never merged
    book.apply(depth(True, [(9.0, 1.0)], [(10.0, 1.0)], 20))
    assert book.state == RowStatus.LIVE
    assert book.apply(depth(False, [(9.0, 3.0)], [], 3, 20, restart=True)) is Outcome.CHANGED
    assert book.compose()[0] == [(9.0, 3.0)]
    assert book.apply(depth(False, [(9.0, 4.0)], [], 1, 9, restart=True)) is Outcome.GAP   # 3 -> ? -> 9: one lost


def test_duplicate_update_is_ignored_and_resent_snapshot_is_unchanged():
    book = InstrumentBook("X", depth=2)
    book.apply(depth(True, [(9.0, 1.0)], [(10.0, 1.0)], 10))
    book.apply(depth(False, [(9.0, 2.0)], [], 11, 10))
    assert book.apply(depth(False, [(9.0, 5.0)], [], 11, 10)) is Outcome.IGNORED
    assert book.compose()[0] == [(9.0, 2.0)]
    bbo = BookUpdate("X", BBO, True, [(9.0, 2.0)], [(10.0, 1.0)], 0, 77)
    assert book.apply(bbo) is Outcome.CHANGED
    assert book.apply(BookUpdate("X", BBO, True, [(9.0, 2.0)], [(10.0, 1.0)], 0, 77)) is Outcome.UNCHANGED


def test_bad_numbers_invalidate():
    for bad in (math.nan, math.inf, -1.0, 0.0):
        book = InstrumentBook("X", depth=2)
        book.apply(depth(True, [(9.0, 1.0)], [(10.0, 1.0)], 1))
        assert book.apply(depth(False, [(bad, 1.0)], [], 2, 1)) is Outcome.BAD_NUMBER
        assert book.state == RowStatus.RESYNCING
    book = InstrumentBook("X", depth=2)
    assert book.apply(depth(True, [(9.0, -2.0)], [(10.0, 1.0)], 1)) is Outcome.BAD_NUMBER


def test_crossed_and_locked_books_are_flagged():
    book = InstrumentBook("X", depth=2)
    book.apply(depth(True, [(10.0, 1.0)], [(10.0, 1.0)], 1))
    assert book.state == RowStatus.CROSSED
    book.apply(depth(True, [(10.5, 1.0)], [(10.0, 1.0)], 2))
    assert book.state == RowStatus.CROSSED
    book.apply(depth(True, [(9.5, 1.0)], [(10.0, 1.0)], 3))
    assert book.state == RowStatus.LIVE


def test_fresher_bbo_overlays_level_zero_and_drops_levels_through_it():
    book = InstrumentBook("X", depth=3)
    book.apply(depth(True, [(9.0, 1.0), (8.0, 1.0), (7.0, 1.0)], [(10.0, 1.0), (11.0, 1.0), (12.0, 1.0)], 1))
    book.apply(BookUpdate("X", BBO, True, [(8.5, 4.0)], [(10.5, 2.0)], 0, 1))
    assert book.compose() == ([(8.5, 4.0), (8.0, 1.0), (7.0, 1.0)], [(10.5, 2.0), (11.0, 1.0), (12.0, 1.0)])
    book.apply(depth(True, [(9.0, 1.0)], [(10.0, 1.0)], 2))            # depth newer again: it wins
    assert book.compose() == ([(9.0, 1.0)], [(10.0, 1.0)])


# ---------------------------------------------------------------- cross-channel order, status, reference data
def bbo(bid, ask, seq=None, xseq=None, weak=False):
    return BookUpdate("X", BBO, True, [bid], [ask], 0, seq, xseq=xseq, weak=weak)


def test_without_comparable_ids_arrival_order_decides():
    book = InstrumentBook("X", depth=2)
    book.apply(depth(True, [(9.0, 1.0), (8.0, 1.0)], [(11.0, 1.0)]))
    book.apply(bbo((9.5, 2.0), (10.5, 2.0)))
    assert book.compose() == ([(9.5, 2.0), (9.0, 1.0)], [(10.5, 2.0), (11.0, 1.0)])
    book.apply(depth(True, [(9.0, 1.0), (8.0, 1.0)], [(11.0, 1.0)]))
    assert book.compose() == ([(9.0, 1.0), (8.0, 1.0)], [(11.0, 1.0)])


def test_venue_and_pair_halts_are_separate_and_both_must_clear():
    from pipeline.model import TradingStatus
    book = InstrumentBook("X", depth=2)
    book.apply(depth(True, [(9.0, 1.0)], [(10.0, 1.0)]))
    assert book.apply(TradingStatus(None, False, "maintenance")) is Outcome.STATUS
    assert book.state == RowStatus.HALTED and book.halted == "venue maintenance"
    assert book.apply(TradingStatus("X", False, "cancel_only")) is Outcome.IGNORED        # still halted
    assert book.apply(TradingStatus("Y", True, "online")) is Outcome.IGNORED              # another symbol
    assert book.apply(TradingStatus(None, True, "online")) is Outcome.IGNORED             # the pair still is
    assert book.state == RowStatus.HALTED and book.halted == "pair cancel_only"
    assert book.apply(TradingStatus("X", True, "online")) is Outcome.STATUS
    assert book.state == RowStatus.LIVE and book.halted == ""
    book.invalidate()                                      # a halted book that loses its data is not LIVE either
    book.apply(TradingStatus(None, False, "post_only"))
    assert book.state == RowStatus.RESYNCING


def test_reference_data_for_another_symbol_is_ignored():
    from pipeline.model import InstrumentSpec
    book = InstrumentBook("X", depth=2)
    assert book.apply(InstrumentSpec("Y", 1, 8, "maintenance")) is Outcome.IGNORED
    assert book.precision is None and book.halted == ""


@settings(max_examples=examples(300), deadline=None)
@given(ops=st.lists(st.one_of(
    st.tuples(st.just("set"), st.sampled_from([99.5, 100.0, 100.25, 100.5, 101.0, 102.0, 98.0, 97.75]),
              st.sampled_from([0.0, 0.0, 1.0, 2.5, 0.001])),
    st.tuples(st.just("truncate"), st.integers(0, 6), st.just(0.0)),
    st.tuples(st.just("clear"), st.just(0), st.just(0.0)),
    st.tuples(st.just("replace"), st.lists(st.tuples(st.sampled_from([99.5, 100.0, 100.5, 101.0, 98.0]),
                                                     st.sampled_from([0.0, 1.0, 2.5])), max_size=6),
              st.just(0.0))), max_size=80),
    is_bid=st.booleans())
def test_a_side_matches_a_plain_sorted_model_whatever_the_operations(ops, is_bid):
    side = SideBook(is_bid, keep_text=True)
    model: dict[float, float] = {}
    best_first = (lambda prices: sorted(prices, reverse=True)) if is_bid else sorted
    for op, a, b in ops:
        if op == "set":
            side.set(a, b, (str(a), str(b)))
            if b == 0.0:
                model.pop(a, None)
            else:
                model[a] = b
        elif op == "truncate":
            side.truncate(a)
            model = {p: model[p] for p in best_first(model)[:a]}
        elif op == "replace":
            side.replace(a, [(str(p), str(q)) for p, q in a])
            model = {}
            for p, q in a:
                if q == 0.0:
                    model.pop(p, None)
                else:
                    model[p] = q
        else:
            side.clear()
            model.clear()
        expected = [(p, model[p]) for p in best_first(model)]
        assert side.top(100) == expected
        assert side.top(2) == expected[:2]
        assert side.top_text(3) == [(str(p), str(q)) for p, q in expected[:3]]
        assert side.best() == (expected[0][0] if expected else None)
        assert len(side.keys) == len(side.levels) == len(side.text) == len(model)
