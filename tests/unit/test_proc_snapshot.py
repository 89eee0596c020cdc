"""One slot snapshot: every slot field in it, read exactly; the final health block rendered from it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline.board import (
    HOPS,
    PROC_DTYPE,
    Board,
    HistogramWriter,
    ProcessRole,
    ProcSnapshot,
    RowStatus,
    RowWriter,
    SkipReason,
    read_proc,
    read_procs,
)
from pipeline.board.snapshot import PAD_FIELDS, snapshot_fields
from pipeline.health.process import final_block
from pipeline.runtime import ProcessSpec, RowAssignment
from pipeline.venues import VENUES

NOW = 1_700_000_000_000_000_000
MS = 1_000_000
ROWS = (RowAssignment(0, "binance", "BTC/USDT", "BTCUSDT"), RowAssignment(1, "binance", "ETH/USDT", "ETHUSDT"),
        RowAssignment(2, "bybit", "BTC/USDT", "BTCUSDT"))


@pytest.fixture
def board(board_name):
    b = Board.create(board_name, len(ROWS), 5, 4)
    yield b
    b.destroy()


def test_every_field_of_the_process_slot_is_in_the_snapshot():
    """A field added to the slot's dtype and not to ProcSnapshot fails here (and read_proc refuses it)."""
    slot_fields = [name for name in PROC_DTYPE.names if name not in PAD_FIELDS]
    missing = [name for name in slot_fields if name not in snapshot_fields()]
    assert not missing, f"process slot fields missing from ProcSnapshot: {missing}"
    # in layout order, after the snapshot's own three (slot, venue, taken_ns) and before the hops
    assert list(snapshot_fields()) == ["slot", "venue", "taken_ns", *slot_fields, "hops"]
    assert PAD_FIELDS == {"pad0"}


def test_read_proc_copies_every_slot_field_exactly(board):
    """Each field gets a value of its own, so a field read from the wrong place cannot pass."""
    slot = board.procs[1]
    expected = {}
    for n, name in enumerate(name for name in PROC_DTYPE.names if name not in PAD_FIELDS):
        if name == "skipped":
            value = tuple(1000 + int(r) for r in SkipReason)
        elif name == "role":
            value = int(ProcessRole.FEED)
        elif name == "venue_id":
            value = 2                                              # bybit
        elif name == "last_exit_code":
            value = -9                                             # signed: killed by SIGKILL
        elif name == "clock_offset_ns":
            value = -2_500_000
        elif name.startswith("path_"):                         # one per redundant path, each its own
            value = tuple(100 * n + path for path in range(PROC_DTYPE.fields[name][0].shape[0]))
        else:
            value = 10 + n
        slot[name] = value
        expected[name] = value
    HistogramWriter(board, 1, 1).record(2_000)
    proc = read_proc(board, 1, VENUES, now_ns=NOW)
    for name, value in expected.items():
        assert getattr(proc, name) == value, name
    assert proc.role is ProcessRole.FEED and proc.venue == "bybit" and proc.key == "feed:bybit"
    assert proc.slot == 1 and proc.taken_ns == NOW
    assert proc.skipped_for(SkipReason.SEQUENCE_GAP) == 1003
    assert [hop for hop, _ in proc.hops] == list(HOPS[ProcessRole.FEED])
    assert proc.hop("exchange_to_receive").count == 0
    assert (proc.hop("receive_to_publish").count, proc.hop("receive_to_publish").max_ns) == (1, 2_000)
    assert proc.hop("publish_to_seen") is None
    # immutable, and a copy: the board moving on does not change it
    with pytest.raises(AttributeError):
        proc.messages = 0
    slot["messages"] = 0
    assert proc.messages == expected["messages"]


def test_read_procs_names_each_role_and_stamps_one_time(board):
    for index, (role, venue_id) in enumerate([(ProcessRole.FEED, 1), (ProcessRole.DETECTOR, 0),
                                              (ProcessRole.HEALTH, 0), (7, 0)]):
        board.procs[index]["role"] = int(role)
        board.procs[index]["venue_id"] = venue_id
    procs = read_procs(board, venues=VENUES, now_ns=NOW)
    assert [p.key for p in procs] == ["feed:binance", "detector", "health", "process3"]
    assert [p.role for p in procs] == [ProcessRole.FEED, ProcessRole.DETECTOR, ProcessRole.HEALTH, 7]
    assert [len(p.hops) for p in procs] == [2, 3, 0, 0]
    assert {p.taken_ns for p in procs} == {NOW}
    # a feed whose venue id this build does not name
    board.procs[0]["venue_id"] = 42
    assert read_proc(board, 0, VENUES).key == "feed:venue42"
    assert ProcSnapshot(heartbeat_ns=NOW - 1_500 * MS).heartbeat_age_ms(NOW) == 1_500.0
    assert ProcSnapshot().heartbeat_age_ms(NOW) is None


def _gone_pid() -> int:
    """The pid of a process that has run, exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def _specs(board_name: str) -> list[ProcessSpec]:
    common = dict(board_name=board_name, depth=5, doorbell_fd=-1, cores=())
    return [ProcessSpec(key="feed:binance", role=ProcessRole.FEED, title="pipeline: feed binance", slot=0,
                        venue="binance", rows=ROWS[:2], **common),
            ProcessSpec(key="feed:bybit", role=ProcessRole.FEED, title="pipeline: feed bybit", slot=1,
                        venue="bybit", rows=ROWS[2:], **common),
            ProcessSpec(key="detector", role=ProcessRole.DETECTOR, title="pipeline: detector", slot=2, rows=ROWS,
                        **common),
            ProcessSpec(key="health", role=ProcessRole.HEALTH, title="pipeline: health", slot=3, rows=ROWS, **common)]


def _fill_stopped_run(board: Board) -> None:
    """The board as a run leaves it: every child has stopped, its slot holds its last counters."""
    gone = _gone_pid()
    started = time.time_ns() - 60_000 * MS
    writer = RowWriter(board, [0, 1, 2])
    writer.write(0, int(RowStatus.LIVE), [(99.9, 2.0)], [(100.0, 1.0)], 0, NOW - 20 * MS)
    writer.write(1, int(RowStatus.STALE), [(9.9, 2.0)], [(10.0, 1.0)], 0, NOW - 3_000 * MS)
    writer.write(2, int(RowStatus.DISCONNECTED), [(99.8, 2.0)], [(100.1, 1.0)], 0, NOW - 40 * MS)
    slots = [dict(role=ProcessRole.FEED, venue_id=1, messages=12_345, reconnects=1, parse_errors=2, gaps=3),
             dict(role=ProcessRole.FEED, venue_id=2, messages=678, connect_failures=6, restarts=1, last_exit_code=1),
             dict(role=ProcessRole.DETECTOR, scans=5_000, opportunities=4, shadow_fills=4, shadow_profitable=3),
             dict(role=ProcessRole.HEALTH)]
    for index, fields in enumerate(slots):
        for name, value in dict(pid=gone, started_ns=started, heartbeat_ns=NOW - 100 * MS, **fields).items():
            board.procs[index][name] = int(value)
    board.procs[0]["clock_offset_ns"] = 2_500_000
    for ns in (100_000, 100_000, 100_000, 900_000):                   # binance receive_to_publish
        HistogramWriter(board, 0, 1).record(ns)
    HistogramWriter(board, 2, 0).record(40_000)                       # detector publish_to_seen


def test_final_block_is_one_rendering_of_the_slots_and_says_stopped(board, board_name):
    _fill_stopped_run(board)
    text = final_block(board, _specs(board_name), cpu_count=2, clock="12:00:00")
    lines = text.splitlines()
    pid = int(board.procs[0]["pid"])
    # the rows' ages run from their receive times (NOW - ...) to the moment the block was taken
    binance_age, bybit_age = _age(lines[1]), _age(lines[3])
    assert lines == [
        "--- health at stop 12:00:00 --- 5 processes on 2 cores (more processes than cores: they share)",
        f"  pipeline: feed binance     pid {pid:>7} {'stopped':33} messages  12345 last {binance_age:>7} reconnects 1 "
        f"parse_errors 2 gaps 3 [live=1 stale=1] clock offset +2.5ms",
        "      receive_to_publish     p50     114.7 p99     900.0 p99.9     900.0 max     900.0 µs  (n=4)",
        f"  pipeline: feed bybit       pid {pid:>7} {'stopped':33} messages    678 last {bybit_age:>7} reconnects 0 "
        f"failed connects 6 parse_errors 0 gaps 0 [disconnected=1] restarts 1 (last exit 1)",
        f"  pipeline: detector         pid {pid:>7} {'stopped':33} scans   5000 opportunities 4 "
        f"shadow fills profitable 3/4",
        "      publish_to_seen        p50      40.0 p99      40.0 p99.9      40.0 max      40.0 µs  (n=1)",
        f"  pipeline: health           pid {pid:>7} stopped",
    ]
    # the newest row of each feed: binance's 20 ms before NOW, bybit's 40 ms
    assert int(binance_age[:-2]) - int(bybit_age[:-2]) == -20
    # no line twice (the detector's hop once, no second table), and no psutil figures of stopped processes
    assert len(set(lines)) == len(lines)
    assert " rss " not in text and " cpu " not in text


def _age(line: str) -> str:
    return re.search(r" last +(\d+ms)", line).group(1)


def test_final_block_shows_a_process_still_running_with_its_usage(board, board_name):
    board.procs[3]["role"] = int(ProcessRole.HEALTH)
    board.procs[3]["pid"] = os.getpid()
    board.procs[3]["started_ns"] = time.time_ns()
    lines = final_block(board, _specs(board_name)[3:], cpu_count=2, clock="12:00:00").splitlines()
    assert lines[0] == "--- health at stop 12:00:00 --- 2 processes on 2 cores"
    cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    assert re.fullmatch(rf"  pipeline: health           pid {os.getpid():>7} cores {re.escape(cores)} *cpu +[\d.]+% "
                        r"rss +\d+MB", lines[1]), lines[1]
    # the same slot with a pid recycled by another process since it started is not that process: stopped
    board.procs[3]["started_ns"] = 1
    lines = final_block(board, _specs(board_name)[3:], cpu_count=2, clock="12:00:00").splitlines()
    assert lines[1] == f"  pipeline: health           pid {os.getpid():>7} stopped"
    assert np.dtype(PROC_DTYPE).itemsize == 576
