"""The health reporter shows a feed's backlog: its one-line status names a feed behind, its block the counts."""
from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.board import Board, RowStatus, RowWriter
from pipeline.health.process import HealthReporter, backlog_status, behind_part
from pipeline.model import ProcessRole
from pipeline.runtime import ProcessSpec, RowAssignment

NOW = 1_700_000_000_000_000_000
MS = 1_000_000
ROWS = [RowAssignment(0, "binance", "BTC/USDT", "BTCUSDT"), RowAssignment(1, "bybit", "BTC/USDT", "BTCUSDT")]


@pytest.fixture
def board(board_name):
    b = Board.create(board_name, len(ROWS), 5, 2)
    yield b
    b.destroy()


def test_a_feed_behind_is_named_in_the_status_line_and_its_backlog_in_the_block(board):
    writer = RowWriter(board, [0, 1])
    writer.write(0, int(RowStatus.STALE), [(99.9, 2.0)], [(100.0, 1.0)], 0, NOW - 4 * MS)
    writer.write(1, int(RowStatus.LIVE), [(100.3, 3.0)], [(100.4, 1.0)], 0, NOW - 12 * MS)
    common = dict(board_name=board.name, depth=5, doorbell_fd=-1, cores=())
    specs = [ProcessSpec(key="feed:binance", role=ProcessRole.FEED, title="pipeline: feed binance", slot=0,
                         venue="binance", rows=(ROWS[0],), **common),
             ProcessSpec(key="feed:bybit", role=ProcessRole.FEED, title="pipeline: feed bybit", slot=1,
                         venue="bybit", rows=(ROWS[1],), **common)]
    for slot, venue_id in ((0, 1), (1, 2)):
        board.procs[slot]["role"] = int(ProcessRole.FEED)
        board.procs[slot]["venue_id"] = venue_id
    binance = board.procs[0]
    binance["behind"] = 1
    binance["fell_behind"] = 2
    binance["late_frames"] = 250
    binance["backlog_wait_ns"] = 1_750_000_000
    binance["backlog_frames"] = 64
    board.procs[1]["late_frames"] = 3                   # bybit had late frames once, is not behind now
    board.procs[1]["backlog_wait_ns"] = 40 * MS
    reporter = HealthReporter(board, specs, ROWS, cpu_count=2)
    snapshot = reporter.snapshot(NOW)
    binance_info, bybit_info = snapshot
    assert (binance_info.behind, binance_info.fell_behind, binance_info.late_frames,
            binance_info.backlog_wait_ns, binance_info.backlog_frames) == (1, 2, 250, 1_750_000_000, 64)
    assert reporter.status_line(snapshot, clock="12:00:00") == (
        "--- health 12:00:00  venues live 1/2 (binance stale)  msg/s -  BEHIND (rows stale): binance 1.8s")
    assert backlog_status(binance_info.proc) == " backlog waited 1750ms queued 64 late 250 fell behind 2x BEHIND"
    assert backlog_status(bybit_info.proc) == " backlog waited 40ms queued 0 late 3 fell behind 0x"
    block = reporter.render(snapshot).splitlines()
    assert block[1].endswith("[stale=1] backlog waited 1750ms queued 64 late 250 fell behind 2x BEHIND")
    assert block[2].endswith("[live=1] backlog waited 40ms queued 0 late 3 fell behind 0x")
    # nothing to say for a feed that never had a backlog
    quiet = replace(bybit_info, proc=replace(bybit_info.proc, late_frames=0))
    assert backlog_status(quiet.proc) == ""
    assert behind_part([quiet]) == ""
