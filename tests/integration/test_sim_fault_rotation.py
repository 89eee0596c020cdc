"""The simulator's fault rotation (``simulator.paths.fault_every_s``) against a real feed over two connections:
every turn takes the oldest open connection down, dropped and stalled in turn, never while the other is down,
so the rows never leave LIVE; what it did is counted in ``path_statistics()`` alike by the rotation and by the
paths it took down.

The feed's own status writes are kept (:meth:`FeedHarness.statuses`), so a row that left LIVE for a moment
cannot go unseen; every turn the rotation takes is kept too (the real rotation, its ``turn`` wrapped)."""
from __future__ import annotations

import pytest

from pipeline.board import RowStatus
from pipeline.sim.paths import PathModel
from tests.conftest import run
from tests.integration.harness import FeedHarness

pytestmark = pytest.mark.integration

FAULTS = PathModel(delay_ms=0.3, jitter=0.5, stall_every_s=0.0, disconnect_every_s=0.0, fault_every_s=0.5,
                   fault_stall_ms=200.0)


@pytest.mark.parametrize("venue", ["binance", "bybit", "okx"])
def test_drops_and_stalls_alternate_one_connection_at_a_time_and_the_rows_stay_live(venue):
    async def scenario():
        async with FeedHarness(venue, connections=2, paths=FAULTS) as h:
            rotation = h.server.fault_rotation
            turns: list[tuple[tuple[int, ...], tuple[str, int] | None, float]] = []   # (open indexes, fault, s)
            turn = rotation.turn

            def recorded(open_indexes, now_s):
                fault = turn(open_indexes, now_s)
                turns.append((tuple(open_indexes), fault, now_s))
                return fault
            rotation.turn = recorded
            await h.all_live()
            await h.until(lambda: len(h.server.connections) == 2, 10, "two connections")
            marks = {i: h.writes(i) for i in h.instruments}
            made = len(turns)
            await h.until(lambda: sum(f is not None for _, f, _ in turns[made:]) >= 6, 30, "six faults after the mark")
            task = h.server._fault_task                        # noqa: SLF001 - to see it end
            h.server.stop_fault_rotation()
            stopped = len(turns)
            faults = [f for _, f, _ in turns if f is not None]
            drops = [kind for kind, _ in faults].count("drop")
            await h.until(lambda: len(h.server.connections) == 2 and h.stat("reconnects") == drops, 10,
                          "the feed back on two connections after every drop")
            moved = {i: h.writes(i) for i in h.instruments}
            await h.until(lambda: all(h.writes(i) > moved[i] + 5 for i in h.instruments), 10, "rows still moving")
            assert task is not None and task.cancelled() and len(turns) == stopped     # no turn after the stop

            assert [kind for kind, _ in faults] == ["drop", "stall"] * (len(faults) // 2) + ["drop"] * (len(faults) % 2)
            stall_ends_s = 0.0
            for n, (open_indexes, fault, now_s) in enumerate(turns):
                if fault is not None:          # the one taken down is the oldest open
                    assert fault[1] == min(open_indexes), turns
                if n >= made:
                    # both open at every fault (the other whole); skipped only while the dropped one was not back
                    # (or, on a turn found late, while the stall before still lasted)
                    assert (len(open_indexes) == 2) == (fault is not None) or now_s < stall_ends_s, turns
                if fault is not None and fault[0] == "stall":
                    stall_ends_s = now_s + FAULTS.fault_stall_ms / 1000.0
            for instrument in h.instruments:
                assert set(h.statuses(instrument, marks[instrument])) == {RowStatus.LIVE}, instrument

            totals = h.server.path_statistics()
            assert (totals.faults_dropped, totals.faults_stalled, totals.faults_skipped) == (
                drops, len(faults) - drops, len(turns) - len(faults))
            # the paths' own accounting agrees: no random stall or drop, so every one is the rotation's
            assert (totals.drops, totals.stalls, totals.stall_ms) == (drops, len(faults) - drops,
                                                                      pytest.approx(200.0 * (len(faults) - drops)))
            assert totals.frames_held > 0
            dropped = {index for kind, index in faults if kind == "drop"}
            assert {p.index for p in totals.connections if p.dropped} == dropped
            assert h.server._fault_task is None                # noqa: SLF001
    run(scenario())


def test_without_fault_every_s_there_is_no_rotation():
    async def scenario():
        async with FeedHarness("binance", connections=2, paths=PathModel(stall_every_s=0.0)) as h:
            await h.all_live()
            assert h.server.fault_rotation is None
            totals = h.server.path_statistics()
            assert (totals.faults_dropped, totals.faults_stalled, totals.faults_skipped, totals.drops) == (0, 0, 0, 0)
    run(scenario())
