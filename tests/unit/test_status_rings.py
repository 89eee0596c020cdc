"""A row that stops being trusted wakes the sleepers at once, as a publish does.

A status-only change (the session marking rows stale, resyncing or halted, a feed's rows disconnected as it
closes, the supervisor releasing a dead feed's rows) must ring the doorbell: in a quiet market nothing else
would wake a sleeping detector before its poll timeout, and an opportunity would stay open on a leg nobody
can trust. Real board, real eventfds: each sleeper raises its flag as it does before blocking, and its
eventfd must then hold a ring.
"""
from __future__ import annotations

import os

import pytest

from pipeline.board import Doorbell, ProcessRole, RowReader, RowStatus, RowWriter
from pipeline.board.doorbell import BRIDGE, DETECTOR
from pipeline.config import parse_config
from pipeline.feed.process import BoardSink
from pipeline.supervisor.core import Child, Supervisor


def rung(fd: int) -> bool:
    try:
        return os.eventfd_read(fd) > 0
    except BlockingIOError:
        return False


def asleep(board, fds):
    """Both sleepers as they are just before blocking: flags raised, nothing rung yet."""
    sleepers = [Doorbell(board.buf, fds[0], fds[1], sleeper=s) for s in (DETECTOR, BRIDGE)]
    for sleeper in sleepers:
        sleeper.prepare_sleep()
    assert not any(rung(fd) for fd in fds)
    return sleepers


@pytest.fixture
def supervisor(board_name):
    config = parse_config({"board": {"name": board_name, "depth": 2},
                           "venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://x"},
                                      "bybit": {"instruments": ["BTC/USDT"], "url": "wss://y"}}},
                          available_cores=frozenset({0}))
    sup = Supervisor(config)
    sup.create_board()
    try:
        yield sup
    finally:
        sup.board.destroy()
        for fd in (sup.doorbell_fd, sup.bridge_doorbell_fd, sup.decision_fd, *sup._exit_reasons):
            os.close(fd)


def feed_spec(sup, venue):
    return next(s for s in sup.specs() if s.role == ProcessRole.FEED and s.venue == venue)


@pytest.mark.parametrize("status", [RowStatus.STALE, RowStatus.RESYNCING, RowStatus.HALTED, RowStatus.DISCONNECTED])
def test_a_status_change_without_a_confirmation_time_rings_both_sleepers(supervisor, status):
    sup = supervisor
    spec = feed_spec(sup, "bybit")
    [row] = [r.row for r in spec.rows]
    fds = (sup.doorbell_fd, sup.bridge_doorbell_fd)
    sink = BoardSink.of(sup.board, spec.slot, RowWriter(sup.board, [row]), Doorbell(sup.board.buf, *fds))
    sink.write(row, int(RowStatus.LIVE), [(100.0, 1.0)], [(101.0, 1.0)], 1, 2, 0, 0)
    asleep(sup.board, fds)
    sink.set_status(row, int(status))            # no confirmation time: what session.mark does
    assert RowReader(sup.board).read(row)[RowReader(sup.board).codec.index["status"]] == int(status)
    assert [rung(fd) for fd in fds] == [True, True]


def test_the_supervisor_releasing_a_dead_feeds_rows_rings_both_sleepers(supervisor):
    sup = supervisor
    spec = feed_spec(sup, "binance")
    rows = [r.row for r in spec.rows]
    writer = RowWriter(sup.board, rows)            # the feed, before it died
    for row in rows:
        writer.write(row, int(RowStatus.LIVE), [(100.0, 1.0)], [(101.0, 1.0)], 1, 2)
    writer = None
    fds = (sup.doorbell_fd, sup.bridge_doorbell_fd)
    asleep(sup.board, fds)
    sup.release_rows(Child(spec, None, ()))
    reader = RowReader(sup.board)
    assert [reader.read(row)[reader.codec.index["status"]] for row in rows] == [int(RowStatus.DISCONNECTED)] * len(rows)
    assert [rung(fd) for fd in fds] == [True, True]
