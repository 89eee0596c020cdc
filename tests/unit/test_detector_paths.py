"""A venue this box reads itself and also mirrors from another box: one leg, served by the newest copy.

A real board: the local feed's row and the bridge's copy of the same book are written by two writers, each in
its own change lane, as in the pipeline; the detector's :class:`BoardView` reads them. Whatever path serves
the leg, it is one leg named after the venue, so it is never paired with itself, and its liquidity counts once.
"""
from __future__ import annotations

import pytest

from pipeline.board import Board, RowWriter
from pipeline.board.plan import plan_rows
from pipeline.config import parse_config
from pipeline.detector.engine import DetectorEngine
from pipeline.detector.scan import BoardView, RowUniverse
from pipeline.model import RowStatus

LIVE, STALE, RESYNCING = int(RowStatus.LIVE), int(RowStatus.STALE), int(RowStatus.RESYNCING)
MS = 1_000_000
T0 = 1_780_000_000_000_000_000
LEG = "binance BTC/USDT"


def config_and_rows():
    config = parse_config({
        "venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://127.0.0.1:1"},
                   "okx": {"instruments": ["BTC/USDT"], "url": "wss://127.0.0.1:2"}},
        "detector": {"shadow_latencies_ms": [], "threshold_bps": 0.0, "reopen_ms": 0},
        "bridge": {"nats_url": "nats://127.0.0.1:4222", "box": "tokyo",
                   "subscribe": {"frankfurt": {"binance": ["BTC/USDT"]}}}},
        available_cores=frozenset({0}))
    rows = plan_rows(config)
    own = next(r.row for r in rows if r.label == "binance")
    copy = next(r.row for r in rows if r.label == "binance@frankfurt")
    okx = next(r.row for r in rows if r.label == "okx")
    return config, rows, own, copy, okx


class Paths:
    """The board, the view, and a writer for each row (the local feed's, the bridge's, okx's feed's)."""

    def __init__(self, board: Board, config, rows, own: int, copy: int, okx: int):
        board.assign_lane([own], 0)
        board.assign_lane([copy], 1)
        board.assign_lane([okx], 2)
        self.writers = {own: RowWriter(board, [own]), copy: RowWriter(board, [copy]), okx: RowWriter(board, [okx])}
        self.universe = RowUniverse(config, rows)
        self.view = BoardView(board, self.universe)
        self.own, self.copy, self.okx = own, copy, okx
        self.config = config

    def write(self, row: int, bid: float, xseq: int, status: int = LIVE, at_ms: float = 0.0) -> None:
        now = T0 + int(at_ms * MS)
        self.writers[row].write(row, status, [(bid, 1.0)], [(bid + 0.1, 1.0)], now, now, xseq=xseq)

    def served(self):
        """The leg's quote after the view took in what changed (as the detector does on each pass)."""
        changed = self.view.changed()
        quotes = self.view.refresh("BTC/USDT", changed.get("BTC/USDT", []))
        quote = quotes[LEG]
        assert quote.venue == "binance" and quote.leg == LEG   # whatever row serves it: the venue's own leg
        return quote


@pytest.fixture
def paths(board_name):
    config, rows, own, copy, okx = config_and_rows()
    with Board.create(board_name, n_rows=len(rows), depth=5, n_procs=3) as board:
        made = Paths(board, config, rows, own, copy, okx)
        yield made
        made.__dict__.clear()                     # its views of the board go before the board closes


def test_the_leg_is_served_by_the_newest_update_and_a_later_copy_of_it_changes_nothing(paths):
    own, copy, okx = paths.own, paths.copy, paths.okx
    paths.write(okx, 200.0, 1)
    paths.write(own, 100.0, 10)
    paths.write(copy, 100.5, 12)              # the other box's copy is two updates ahead
    quote = paths.served()
    assert (quote.row, quote.via, quote.xseq, quote.bids[0][0]) == (copy, "frankfurt", 12, 100.5)
    paths.write(own, 100.5, 12, at_ms=1)      # the same update, later here: the first copy keeps the leg
    assert paths.served().row == copy
    paths.write(own, 100.7, 13, at_ms=2)      # newer here
    quote = paths.served()
    assert (quote.row, quote.via, quote.xseq, quote.bids[0][0]) == (own, "", 13, 100.7)
    paths.write(copy, 100.6, 12, at_ms=3)     # an older update arriving over the slower path: not shown
    assert paths.served().row == own


def test_a_local_row_that_stops_being_trusted_is_covered_by_the_copy_and_both_lost_show_the_local_state(paths):
    own, copy = paths.own, paths.copy
    paths.write(own, 100.0, 20)
    paths.write(copy, 100.0, 20)
    assert paths.served().row == own          # read first (local rows first), the same update
    paths.writers[own].set_status(own, RESYNCING)
    quote = paths.served()
    assert (quote.row, quote.status) == (copy, LIVE)       # the local feed resyncs: the other box's path serves
    paths.writers[copy].set_status(copy, STALE)
    quote = paths.served()
    assert (quote.row, quote.status) == (own, RESYNCING)   # no path trusted: the local row says why
    paths.write(own, 100.2, 21, at_ms=5)
    assert paths.served().row == own


def test_without_exchange_ids_the_local_row_serves_while_it_is_live(paths):
    own, copy = paths.own, paths.copy
    paths.write(copy, 100.5, 0)
    paths.write(own, 100.0, 0)
    assert paths.served().row == own          # no ids to compare: this box's own feed, never later
    paths.write(own, 100.0, 0, status=STALE, at_ms=1)
    assert paths.served().row == copy
    paths.write(own, 100.1, 0, at_ms=2)
    assert paths.served().row == own


def test_a_dislocation_against_a_venue_read_over_two_paths_is_one_opportunity_whichever_serves(paths):
    own, copy, okx = paths.own, paths.copy, paths.okx
    engine = DetectorEngine(paths.config, paths.universe, paths.view.quotes, lambda label: 0, None)
    paths.write(okx, 100.6, 1)
    paths.write(own, 99.9, 5)
    paths.write(copy, 99.9, 5)
    opened = []
    for step, (row, xseq) in enumerate([(own, 6), (copy, 6), (copy, 7), (own, 7)]):
        paths.write(row, 99.9, xseq, at_ms=step + 1)
        quotes = paths.view.refresh("BTC/USDT", paths.view.changed().get("BTC/USDT", []))
        records = [e.record for e in engine.evaluate("BTC/USDT", quotes, T0 + (step + 1) * MS)]
        opened += [(r["buy_exchange"], r["sell_exchange"], r["qty_base"]) for r in records
                   if r["event"] == "open"]
        assert not [r for r in records if r["event"] == "close"]
    assert opened == [("binance", "okx", 1.0)]
    del engine                                # (its view of the board goes before the board)
