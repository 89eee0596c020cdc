"""The doorbell with its two sleepers, the detector and the bridge's publisher: no lost wake-up for either.

Every interleaving of one writer's publish (the row's store, then :meth:`Doorbell.ring_if_sleeping`) with
both sleepers going to sleep (:meth:`Doorbell.prepare_sleep`, the re-check of the row, the block) is run on a
real board with real eventfds; in each, each sleeper either sees the row in its re-check or is woken by the
ring. A sleeper that found nothing blocks until rung, so once every step has run its block is
``sleep(0)``: whether its eventfd was rung at all (a sleeper never rung would sleep on: a lost wake-up).
"""
from __future__ import annotations

import os
from itertools import permutations

import pytest

from pipeline.board import Board
from pipeline.board.doorbell import BRIDGE, DETECTOR, Doorbell

WRITER = ("publish", "ring")
SLEEPER = ("prepare", "recheck", "block")


def interleavings() -> list[tuple[str, ...]]:
    """Every order of the writer's two steps and each sleeper's three, each actor's steps in its own order."""
    actors = ["w"] * len(WRITER) + ["d"] * len(SLEEPER) + ["b"] * len(SLEEPER)
    return sorted(set(permutations(actors)))


@pytest.fixture
def board_and_fds(board_name):
    fds = Doorbell.create_fd(), Doorbell.create_fd()
    board = Board.create(board_name, n_rows=1, depth=1, n_procs=1)
    try:
        yield board, fds
    finally:
        board.destroy()
        for fd in fds:
            os.close(fd)


def test_there_are_560_interleavings():
    assert len(interleavings()) == 560          # 8! / (2! 3! 3!)


def test_no_lost_wake_up_for_either_sleeper_in_any_interleaving(board_and_fds):
    board, (detector_fd, bridge_fd) = board_and_fds
    feed = Doorbell(board.buf, detector_fd, bridge_fd)
    sleepers = {"d": Doorbell(board.buf, detector_fd, bridge_fd, sleeper=DETECTOR),
                "b": Doorbell(board.buf, detector_fd, bridge_fd, sleeper=BRIDGE)}
    flags = {"d": "detector_sleeping", "b": "bridge_sleeping"}
    outcomes = set()
    for order in interleavings():
        published = [0]                          # the row: its version
        steps = {"w": iter(WRITER), "d": iter(SLEEPER), "b": iter(SLEEPER)}
        seen = {}
        woken = {}
        for actor in order:
            step = next(steps[actor])
            if step == "publish":
                published[0] += 1
            elif step == "ring":
                feed.ring_if_sleeping()
            elif step == "prepare":
                sleepers[actor].prepare_sleep()
            elif step == "recheck":
                seen[actor] = published[0] == 1
                if seen[actor]:
                    sleepers[actor].cancel_sleep()
            elif not seen[actor]:                # the block: only a sleeper that found nothing blocks ...
                woken[actor] = None
        for actor in woken:                      # ... until rung, whenever the ring comes: was it, by the end?
            woken[actor] = sleepers[actor].sleep(0)
        for actor in "db":
            assert seen[actor] or woken[actor], f"{actor} lost its wake-up in {''.join(order)}"
            assert int(board.header[flags[actor]]) == 0, f"{actor}'s flag left up after {''.join(order)}"
            outcomes.add((actor, seen[actor]))
        for sleeper in sleepers.values():        # the next round starts clean (a ring is drained by the next sleep)
            sleeper.drain()
    assert outcomes == {("d", True), ("d", False), ("b", True), ("b", False)}   # both paths taken by each


def test_a_ring_reaches_only_the_sleepers_that_sleep_and_those_the_ringer_knows(board_and_fds):
    board, (detector_fd, bridge_fd) = board_and_fds
    feed = Doorbell(board.buf, detector_fd, bridge_fd)
    mirror = Doorbell(board.buf, detector_fd)                 # the bridge writing a mirrored row: the detector only
    detector = Doorbell(board.buf, detector_fd, bridge_fd, sleeper=DETECTOR)
    bridge = Doorbell(board.buf, detector_fd, bridge_fd, sleeper=BRIDGE)
    assert bridge.fd == bridge_fd and detector.fd == detector_fd
    feed.ring_if_sleeping()
    assert feed.rings == 0                                    # nobody sleeps: one load, no ring
    bridge.prepare_sleep()
    assert (int(board.header["detector_sleeping"]), int(board.header["bridge_sleeping"])) == (0, 1)
    mirror.ring_if_sleeping()
    mirror.ring_ahead()
    assert mirror.rings == 0 and bridge.sleep(0) is False     # never rung by a ringer that does not know it
    bridge.prepare_sleep()
    feed.ring_ahead()
    assert feed.rings == 0                                    # the hint is for the detector only
    feed.ring_if_sleeping()
    assert feed.rings == 1 and bridge.sleep(5000) is True
    assert int(board.header["bridge_sleeping"]) == 0
    detector.prepare_sleep()
    bridge.prepare_sleep()
    feed.ring_if_sleeping()
    feed.ring_if_sleeping()
    assert feed.rings == 3                                    # one ring per sleeper per sleep
    assert detector.sleep(5000) is True and bridge.sleep(5000) is True
    assert bridge.drain() is True and bridge.drain() is False
    assert detector.drain() is True
    feed = mirror = detector = bridge = None
