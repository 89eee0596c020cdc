"""The simulator's network paths, the pure schedule (``pipeline.sim.paths``) and its configuration: delays drawn
per connection and repeatable per seed, TCP order kept, stalls holding every frame until they end, drops on time.
Times are handed in, so every value here is exact."""
from __future__ import annotations

import math

import pytest

from pipeline.config import parse_config
from pipeline.errors import ConfigError
from pipeline.sim.paths import (
    SAMPLES_KEPT,
    FaultRotation,
    PathModel,
    PathSchedule,
    PathStatistics,
    PathTotals,
    quantile,
)
from pipeline.sim.server import build_simulator
from tests.conftest import run_cli, write_config

CORES = frozenset({0, 1})
QUIET = PathModel(delay_ms=0.2, jitter=0.0, stall_every_s=0.0)       # fixed delay, no random stall, no drop


def dues(schedule: PathSchedule, times) -> list[float]:
    return [schedule.push(n, t) for n, t in enumerate(times)]


def test_the_schedule_is_the_same_for_the_same_seed_venue_and_index():
    model = PathModel(delay_ms=1.0, jitter=1.0, stall_every_s=0.5, stall_ms=(20.0, 80.0))
    times = [n * 0.01 for n in range(500)]
    first = dues(PathSchedule(model, 7, "binance", 0, 0.0), times)
    assert dues(PathSchedule(model, 7, "binance", 0, 0.0), times) == first
    for other in (PathSchedule(model, 8, "binance", 0, 0.0), PathSchedule(model, 7, "bybit", 0, 0.0),
                  PathSchedule(model, 7, "binance", 1, 0.0)):
        assert dues(other, times) != first


def test_two_connection_indexes_draw_different_delays():
    model = PathModel(stall_every_s=0.0)
    zero = PathSchedule(model, 7, "binance", 0, 0.0)
    one = PathSchedule(model, 7, "binance", 1, 0.0)
    a, b = [zero.sample_ms() for _ in range(100)], [one.sample_ms() for _ in range(100)]
    assert a != b
    assert len(set(a)) == 100                                  # jitter: every sample its own
    assert all(sample > 0 for sample in a + b)


def test_the_delay_is_lognormal_around_its_median():
    fixed = PathSchedule(QUIET, 7, "okx", 0, 0.0)
    assert [fixed.sample_ms() for _ in range(3)] == [0.2, 0.2, 0.2]      # jitter 0: the median every time
    assert PathSchedule(PathModel(delay_ms=0.0), 7, "okx", 0, 0.0).sample_ms() == 0.0
    schedule = PathSchedule(PathModel(delay_ms=2.0, jitter=0.5, stall_every_s=0.0), 7, "okx", 0, 0.0)
    samples = sorted(schedule.sample_ms() for _ in range(4001))
    assert 1.9 < samples[2000] < 2.1                                     # the median (seeded: these exact draws)
    assert 2.0 * math.exp(0.5 * 2.0) < samples[3980] < 2.0 * math.exp(0.5 * 3.0)   # p99.5 near +2.58 sigma


def test_a_frame_never_overtakes_an_earlier_one():
    schedule = PathSchedule(PathModel(delay_ms=5.0, jitter=2.0, stall_every_s=0.0), 3, "htx", 0, 0.0)
    times = [n * 0.001 for n in range(300)]
    due = dues(schedule, times)
    assert due == sorted(due)
    assert all(d >= t for d, t in zip(due, times, strict=True))
    assert any(due[n] == due[n - 1] for n in range(1, len(due)))      # some waited for a slower one before them
    assert schedule.pop_due(max(due)) == list(range(300))             # out in the order they came
    assert schedule.waiting == 0 and schedule.next_s() == math.inf


def test_frames_come_out_when_due_and_not_before():
    schedule = PathSchedule(QUIET, 7, "binance", 0, 0.0)
    assert schedule.push("a", 1.0) == 1.0 + 0.0002
    assert schedule.push("b", 1.0005) == 1.0005 + 0.0002
    assert schedule.next_s() == 1.0002
    assert schedule.pop_due(1.0001) == []
    assert schedule.pop_due(1.0002) == ["a"]
    assert schedule.pop_due(1.0007) == ["b"]
    stats = schedule.statistics()
    assert (stats.frames, stats.held, stats.stalls, stats.dropped) == (2, 0, 0, False)
    assert (stats.delay_p50_ms, stats.delay_p99_ms) == (0.2, 0.2)
    assert stats.delay_sum_ms == pytest.approx(0.4)


def test_a_stall_holds_every_frame_until_it_ends_then_they_go_back_to_back():
    schedule = PathSchedule(QUIET, 7, "binance", 0, 0.0)
    schedule.push("waiting", 1.0)                                # due at 1.0002, still queued at the stall
    end = schedule.stall(1.0001, 200)
    assert end == 1.0001 + 0.2
    assert schedule.push("during", 1.1) == end                  # due inside the stall: held to its end
    assert schedule.push("after", end + 0.01) == end + 0.01 + 0.0002
    assert schedule.pop_due(end - 1e-6) == []                   # nothing slips out during the stall
    assert schedule.pop_due(end) == ["waiting", "during"]
    assert schedule.pop_due(end + 0.0103) == ["after"]
    stats = schedule.statistics()
    assert (stats.frames, stats.held, stats.stalls, stats.stall_ms) == (3, 2, 1, pytest.approx(200.0))


def test_a_frame_due_before_a_stall_is_not_held():
    schedule = PathSchedule(QUIET, 7, "binance", 0, 0.0)
    schedule.push("sent", 1.0)
    end = schedule.stall(1.0003, 50)                            # begins after the frame was due
    assert schedule.pop_due(1.0003) == ["sent"]
    assert schedule.push("held", 1.001) == end
    assert schedule.statistics().held == 1


def test_stalls_in_the_middle_of_a_queue_keep_the_order():
    """Stalls begun while frames of very different delays wait (some due inside, some after): still in order."""
    import random
    schedule = PathSchedule(PathModel(delay_ms=20.0, jitter=2.0, stall_every_s=0.3, stall_ms=(5.0, 60.0)),
                            5, "bybit", 0, 0.0)
    rng = random.Random(1)
    due, popped, now = [], [], 0.0
    for n in range(2000):
        now += 0.001
        due.append(schedule.push(n, now))
        if n % 50 == 0:
            schedule.stall(now, rng.uniform(1, 80))
        if n % 7 == 0:
            popped += schedule.pop_due(now)
    popped += schedule.pop_due(max(due))
    assert due == sorted(due)
    assert popped == list(range(2000))
    stats = schedule.statistics()
    assert stats.stalls > 40 and 0 < stats.held < 2000


def test_random_stalls_hold_what_falls_in_them_for_their_length():
    model = PathModel(delay_ms=0.0, stall_every_s=1.0, stall_ms=(100.0, 100.0))
    schedule = PathSchedule(model, 11, "kraken", 0, 0.0)
    times = [n * 0.01 for n in range(1000)]                      # 10 s, a frame every 10 ms
    due = dues(schedule, times)
    held = [(t, d) for t, d in zip(times, due, strict=True) if d > t]
    ends = sorted({d for _, d in held})
    stats = schedule.statistics()
    assert stats.stalls >= 5 and stats.stall_ms == pytest.approx(100.0 * stats.stalls)
    assert len(ends) == stats.stalls                            # every stall (100 ms > 10 ms apart) held frames
    assert stats.held == len(held)
    assert all(0 < d - t <= 0.1 + 1e-9 for t, d in held)       # held at most the stall's length
    assert due == sorted(due)


def test_a_drop_comes_when_drawn_and_loses_what_waits():
    assert PathSchedule(QUIET, 7, "okx", 0, 5.0).next_drop_s == math.inf
    model = PathModel(delay_ms=0.2, jitter=0.0, stall_every_s=0.0, disconnect_every_s=1.0)
    schedule = PathSchedule(model, 7, "okx", 0, 5.0)
    at = schedule.next_drop_s
    assert 5.0 < at < math.inf
    assert at == PathSchedule(model, 7, "okx", 0, 5.0).next_drop_s != PathSchedule(model, 7, "okx", 1, 5.0).next_drop_s
    schedule.push("lost", at - 0.0001)
    assert not schedule.drop_due(at - 1e-6)
    assert schedule.drop_due(at)
    assert schedule.waiting == 0 and schedule.statistics().dropped
    assert not schedule.drop_due(at + 1)                        # once


def test_the_quantiles_are_over_the_newest_samples_and_the_sum_over_all():
    model = PathModel(delay_ms=1.0, jitter=1.0, stall_every_s=0.0)
    schedule, twin = PathSchedule(model, 7, "okx", 0, 0.0), PathSchedule(model, 7, "okx", 0, 0.0)
    count = SAMPLES_KEPT * 3 // 2 + 1
    drawn = [twin.sample_ms() for _ in range(count)]             # the same draws, one by one
    for n in range(count):
        schedule.push(n, n * 0.001)
    stats = schedule.statistics()
    newest = drawn[-SAMPLES_KEPT:]
    assert len(schedule.samples) == SAMPLES_KEPT and sorted(schedule.samples) == sorted(newest)
    assert (stats.frames, stats.delay_sum_ms) == (count, pytest.approx(sum(drawn)))
    assert (stats.delay_p50_ms, stats.delay_p99_ms) == (quantile(newest, 0.5), quantile(newest, 0.99))
    assert stats.delay_p50_ms != quantile(drawn, 0.5)


def test_quantiles_and_totals():
    assert quantile([], 0.5) == 0.0
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile(range(1, 101), 0.99) == 99
    assert quantile(range(1, 101), 1.0) == 100
    a = PathStatistics(0, 10, 2, 1, 120.0, False, 2.0, 0.2, 0.4)
    b = PathStatistics(1, 5, 0, 2, 30.0, True, 1.0, 0.2, 0.3)
    totals = PathTotals().add(a).add(b, keep=False)
    assert totals == PathTotals(15, 2, 3, 150.0, 1, (a,))
    assert totals.connection(0) is a
    with pytest.raises(KeyError):
        totals.connection(1)


# ---------------------------------------------------------------- configuration

def raw_config(**paths):
    simulator = {"seed": 5} if paths.get("absent") else {"seed": 5, "paths": paths}
    return {"venues": {"binance": {"instruments": ["BTC/USDT"]}}, "simulator": simulator}


def path_problems(**paths) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw_config(**paths), available_cores=CORES)
    return info.value.problems


def test_absent_section_means_no_path():
    config = parse_config(raw_config(absent=True), available_cores=CORES)
    assert config.simulator.paths is None
    simulator = build_simulator(config)
    assert [server.paths for server in simulator.exchanges.values()] == [None]
    assert simulator.exchanges["binance"].path_statistics() == PathTotals()


def test_the_section_takes_its_documented_defaults_and_reaches_every_server():
    config = parse_config(raw_config(), available_cores=CORES)
    paths = config.simulator.paths
    assert (paths.delay_ms, paths.jitter, paths.stall_every_s, paths.stall_ms, paths.disconnect_every_s) == (
        0.2, 0.5, 5.0, (50.0, 300.0), 0.0)
    assert build_simulator(config).exchanges["binance"].paths == PathModel()
    config = parse_config(raw_config(delay_ms=3, jitter=0, stall_every_s=0, stall_ms=[10, 10],
                                     disconnect_every_s=2.5), available_cores=CORES)
    assert build_simulator(config).exchanges["binance"].paths == PathModel(3, 0, 0, (10.0, 10.0), 2.5)


@pytest.mark.parametrize("paths, where, says", [
    ({"delay_ms": -1}, "simulator.paths.delay_ms", "must be >= 0, got -1"),
    ({"jitter": "wide"}, "simulator.paths.jitter", "must be a number, got 'wide'"),
    ({"jitter": 4}, "simulator.paths.jitter", "must be <= 3, got 4"),
    ({"stall_every_s": 0.001}, "simulator.paths.stall_every_s", "must be 0 (never) or at least 0.01 s, got 0.001"),
    ({"disconnect_every_s": -2}, "simulator.paths.disconnect_every_s", "must be >= 0, got -2"),
    ({"stall_ms": [300, 50]}, "simulator.paths.stall_ms", "low must not be above high, got [300, 50]"),
    ({"stall_ms": 100}, "simulator.paths.stall_ms", "must be a range of two numbers [low, high], ms, got 100"),
    ({"stall_ms": [10, "x"]}, "simulator.paths.stall_ms[1]", "must be a number, got 'x'"),
    ({"delay": 1}, "simulator.paths.delay", "unknown key"),
])
def test_bad_values_name_their_dotted_path(paths, where, says):
    found = dict(path_problems(**paths))
    assert where in found and says in found[where], found


@pytest.mark.parametrize("paths, says", [
    ({"stall_ms": [300, 50]}, "simulator.paths.stall_ms: low must not be above high, got [300, 50]"),
    ({"fault_every_s": 0.01}, "simulator.paths.fault_every_s: must be 0 (never) or at least 0.1 s, got 0.01"),
])
def test_run_exits_2_naming_the_field(tmp_path, paths, says):
    path = write_config(tmp_path / "paths.yaml", raw_config(**paths))
    done = run_cli("--config", str(path))
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- the fault rotation

def test_the_rotation_drops_then_stalls_the_oldest_open_connection_on_its_turns():
    rotation = FaultRotation(10.0, 300.0, 100.0)
    assert rotation.next_s == 110.0
    rotation.opened(1)
    rotation.opened(2)
    assert rotation.turn([0, 1], 110.0) == ("drop", 0)
    assert rotation.next_s == 120.0
    assert rotation.turn([1, 2], 120.0) == ("stall", 1)       # 0 was dropped, 2 is its reconnection
    assert rotation.turn([1, 2], 130.0) == ("drop", 1)
    assert rotation.turn([2, 3], 140.0) == ("stall", 2)
    assert (rotation.dropped, rotation.stalled, rotation.skipped) == (2, 2, 0)


def test_a_turn_is_skipped_while_a_connection_is_missing_and_the_alternation_waits():
    rotation = FaultRotation(10.0, 300.0, 0.0)
    rotation.opened(2)
    assert rotation.turn([0, 1], 10.0) == ("drop", 0)
    assert rotation.turn([1], 20.0) is None                   # the dropped one is not back: never both down
    assert rotation.turn([], 30.0) is None
    assert rotation.turn([1, 2], 40.0) == ("stall", 1)        # the skipped turns took nothing: still a stall next
    assert (rotation.dropped, rotation.stalled, rotation.skipped, rotation.peak) == (1, 1, 2, 2)


def test_a_turn_is_skipped_while_the_last_stall_lasts():
    rotation = FaultRotation(0.5, 800.0, 0.0)
    rotation.opened(2)
    assert rotation.turn([0, 1], 0.5) == ("drop", 0)
    assert rotation.turn([1, 2], 1.0) == ("stall", 1)         # lasts until 1.8
    assert rotation.turn([1, 2], 1.5) is None
    assert rotation.turn([1, 2], 2.0) == ("drop", 1)
    assert (rotation.dropped, rotation.stalled, rotation.skipped) == (2, 1, 1)


def test_a_late_turn_does_not_bring_back_the_missed_ones():
    rotation = FaultRotation(10.0, 300.0, 0.0)
    rotation.opened(1)
    assert rotation.turn([4], 35.0) == ("drop", 4)
    assert rotation.next_s == 40.0
    assert (rotation.dropped, rotation.skipped) == (1, 0)


def test_totals_keep_the_rotation_counts_through_add():
    totals = PathTotals(faults_dropped=3, faults_stalled=2, faults_skipped=1)
    added = totals.add(PathStatistics(0, 5, 1, 1, 300.0, True, 1.0, 0.2, 0.3))
    assert added == PathTotals(5, 1, 1, 300.0, 1, (added.connection(0),), 3, 2, 1)


def test_the_fault_keys_take_their_defaults_and_reach_every_server():
    paths = parse_config(raw_config(), available_cores=CORES).simulator.paths
    assert (paths.fault_every_s, paths.fault_stall_ms) == (0.0, 300.0)
    config = parse_config(raw_config(stall_every_s=0, fault_every_s=10, fault_stall_ms=250), available_cores=CORES)
    server = build_simulator(config).exchanges["binance"]
    assert server.paths == PathModel(stall_every_s=0.0, fault_every_s=10.0, fault_stall_ms=250.0)
    assert server.fault_rotation is None                      # made when the server starts listening
    assert server.path_statistics() == PathTotals()


@pytest.mark.parametrize("paths, where, says", [
    ({"fault_every_s": 0.05}, "simulator.paths.fault_every_s", "must be 0 (never) or at least 0.1 s, got 0.05"),
    ({"fault_every_s": -1}, "simulator.paths.fault_every_s", "must be >= 0, got -1"),
    ({"fault_every_s": "often"}, "simulator.paths.fault_every_s", "must be a number, got 'often'"),
    ({"fault_every_s": 100_000}, "simulator.paths.fault_every_s", "must be <= 86400, got 100000"),
    ({"fault_stall_ms": 0}, "simulator.paths.fault_stall_ms", "must be >= 1, got 0"),
    ({"fault_stall_ms": [300]}, "simulator.paths.fault_stall_ms", "must be a number, got [300]"),
])
def test_bad_fault_values_name_their_dotted_path(paths, where, says):
    found = dict(path_problems(**paths))
    assert where in found and says in found[where], found


def test_drop_ends_the_connection_at_the_time_given_and_loses_what_waits():
    schedule = PathSchedule(QUIET, 7, "binance", 0, 0.0)
    dues(schedule, [1.0, 1.0])
    schedule.drop(5.0)
    assert schedule.next_drop_s == 5.0 and not schedule.drop_due(4.999)
    assert schedule.drop_due(5.0) and schedule.waiting == 0 and schedule.statistics().dropped
