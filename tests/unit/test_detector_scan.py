"""The detector's change scan, on small boards (Python loop) and large ones (numpy column)."""
from __future__ import annotations

import os

import pytest

from pipeline.board import Board, RowStatus, RowWriter
from pipeline.board.doorbell import Doorbell
from pipeline.config import parse_config
from pipeline.detector.process import Detector
from pipeline.detector.scan import NUMPY_SCAN_ROWS
from pipeline.model import ProcessRole
from pipeline.runtime import ProcessSpec
from pipeline.supervisor.core import plan_rows


@pytest.mark.parametrize("n_instruments", [3, NUMPY_SCAN_ROWS])   # 6 rows, and 2 x 64 rows
def test_changed_rows_are_found_and_a_row_caught_mid_write_waits(tmp_path, board_name, n_instruments):
    instruments = [f"C{i}/USDT" for i in range(n_instruments)]
    config = parse_config({"board": {"name": board_name},
                           "venues": {"binance": {"instruments": instruments, "url": "wss://x"},
                                      "bybit": {"instruments": instruments, "url": "wss://y"}},
                           "detector": {"output": str(tmp_path / "o.jsonl"), "print_opportunities": False}},
                          available_cores=frozenset({0}))
    rows = plan_rows(config)
    fd = Doorbell.create_fd()
    board = Board.create(board_name, len(rows), 5, 4)
    try:
        spec = ProcessSpec(key="detector", role=ProcessRole.DETECTOR, title="t", slot=2, cores=(),
                           board_name=board_name, depth=5, doorbell_fd=fd, rows=tuple(rows))
        detector = Detector(spec, config)
        assert (detector.view._seq_column is not None) == (len(rows) > NUMPY_SCAN_ROWS)
        assert detector.view.changed() == {}
        writer = RowWriter(board, [r.row for r in rows])
        last = rows[-1]
        writer.write(last.row, int(RowStatus.LIVE), [(9.0, 1.0)], [(10.0, 1.0)], 0, 1)
        assert detector.view.anything_changed()
        assert detector.view.changed() == {last.instrument: [last.row]}
        assert detector.view.changed() == {}
        # a write in progress (odd sequence) is not a change yet
        board.rows[last.row]["seq"] += 1
        assert detector.view.changed() == {}
        board.rows[last.row]["seq"] += 1
        assert detector.view.changed() == {last.instrument: [last.row]}
        # both exchanges of one instrument change in the same pass
        first = [r for r in rows if r.instrument == instruments[0]]
        writer.write(first[0].row, int(RowStatus.LIVE), [(99.0, 1.0)], [(100.0, 1.0)], 0, 10**19 // 10)
        writer.write(first[1].row, int(RowStatus.LIVE), [(101.0, 1.0)], [(102.0, 1.0)], 0, 10**19 // 10)
        dirty = detector.view.changed()
        assert dirty == {instruments[0]: [first[0].row, first[1].row]}
        # quotes: an unchanged row keeps its Quote object, a changed row is read into a new one
        before = dict(detector.view.quotes(instruments[0]))
        assert [q.bids for q in before.values()] == [[(99.0, 1.0)], [(101.0, 1.0)]]
        writer.write(first[1].row, int(RowStatus.LIVE), [(101.5, 2.0), (101.0, 1.0)], [(102.0, 1.0)], 0, 10**19 // 10)
        after = detector.view.quotes(instruments[0])
        assert after[f"{first[0].venue} {first[0].instrument}"] is before[f"{first[0].venue} {first[0].instrument}"]
        assert after[f"{first[1].venue} {first[1].instrument}"] is not before[f"{first[1].venue} {first[1].instrument}"]
        assert after[f"{first[1].venue} {first[1].instrument}"].bids == [(101.5, 2.0), (101.0, 1.0)]
        assert after[f"{first[1].venue} {first[1].instrument}"].asks == [(102.0, 1.0)]
        assert detector.view.changed() == {instruments[0]: [first[1].row]}
        writer = None
        detector.close()
    finally:
        board.destroy()
        os.close(fd)


def test_board_rules_reads_a_rows_rules_again_only_when_its_version_moved(board_name):
    from pipeline.board import RulesWriter
    from pipeline.detector.scan import BoardRules, RowUniverse
    from tests.engine_harness import rules

    config = parse_config({"board": {"name": board_name},
                           "venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://x"},
                                      "bybit": {"instruments": ["BTC/USDT"], "url": "wss://y"}}},
                          available_cores=frozenset({0}))
    rows = plan_rows(config)
    board = Board.create(board_name, len(rows), 5, 4)
    try:
        rules_of = BoardRules(board, RowUniverse(config, rows))
        binance = next(r.row for r in rows if r.venue == "binance")
        assert rules_of("binance BTC/USDT") == (0, None) and rules_of("bybit BTC/USDT") == (0, None)
        writer = RulesWriter(board, [r.row for r in rows])
        first = rules("binance", tick="0.01", step="0.00001", min_qty="0.00001", min_notional="5")
        writer.write(binance, first)
        version, read = rules_of("binance BTC/USDT")
        assert (version, read) == (1, first)
        assert rules_of("binance BTC/USDT")[1] is read          # the same version: not decoded again
        second = rules("binance", tick="0.01", step="0.0001", min_qty="0.0001", min_notional="10")
        writer.write(binance, second)
        assert rules_of("binance BTC/USDT") == (2, second)
        writer.write(binance, None)
        assert rules_of("binance BTC/USDT") == (3, None)
        rules_of.close()
    finally:
        board.destroy()
