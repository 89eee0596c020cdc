"""The decision ring between two processes: a writer process putting many decisions in as fast as it can, a
reader here following it. Every entry read is a whole decision (never one torn by a write under way), in the
order written; what a lapped reader misses it is told, exactly: read + lost = written.
"""
from __future__ import annotations

import multiprocessing

import pytest

from pipeline.board import Board
from pipeline.decisions import DecisionReader, DecisionWriter
from tests.unit.test_decisions import engine_records

pytestmark = pytest.mark.integration

CTX = multiprocessing.get_context("fork")
TEMPLATES = [r for r in engine_records() if r["event"] != "shadow"]


def record(n: int) -> dict:
    return dict(TEMPLATES[n % len(TEMPLATES)], id=n)


def write_decisions(name: str, total: int, started) -> None:
    board = Board.attach(name)
    writer = DecisionWriter(board)
    started.set()
    for n in range(1, total + 1):
        writer.write(record(n), (0, 0, 0, 0, 0, 0, 0, 0))
    writer.close()
    board.close()


@pytest.mark.parametrize("entries, total", [(65536, 20000), (64, 20000)])
def test_a_reader_in_another_process_gets_whole_decisions_in_order_and_counts_what_it_lost(board_name, entries,
                                                                                           total):
    board = Board.create(board_name, 3, 2, 2, decision_entries=entries, decision_fills=2)
    reader = None
    try:
        reader = DecisionReader(board, 0)
        started = CTX.Event()
        writer = CTX.Process(target=write_decisions, args=(board_name, total, started))
        writer.start()
        assert started.wait(30)
        read_ids = []
        while True:
            got = reader.read()
            if got is None:
                if not writer.is_alive() and reader.behind() == 0:
                    break
                continue
            decoded = reader.record(got[1])
            assert decoded == record(decoded["id"]), decoded      # whole: every field of the one written
            read_ids.append(decoded["id"])
        writer.join(30)
        assert writer.exitcode == 0
        assert read_ids == sorted(set(read_ids)) and read_ids[-1] == total      # in order, none twice, to the end
        assert len(read_ids) + reader.lost == total
        if entries >= total:
            assert reader.lost == 0 and read_ids == list(range(1, total + 1))
        else:                   # writing an entry costs less than decoding one: a 64-entry ring is lapped
            assert reader.lost > 0
    finally:
        if reader is not None:
            reader.close()
        board.destroy()
