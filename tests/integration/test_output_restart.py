"""The output process killed mid-run: the supervisor restarts it, and the events file loses nothing it had not
lost to a lapped ring.

The successor continues from the ring position up to which its predecessor's events file had taken every
record (the slot's ``messages``), so what the killed process had read but not yet written is read again. Only
entries the detector overwrote before anyone read them are lost, and the summary says how many.
"""
from __future__ import annotations

import os
import re
import signal
from collections import Counter

import orjson
import pytest

from pipeline.board import BoardPlan
from pipeline.config import parse_config
from tests.conftest import complete_records, demo_config, wait_for, write_config
from tests.integration.test_process_faults import slot_pid, start, stop

pytestmark = pytest.mark.integration


def output_slot(raw: dict) -> int:
    return BoardPlan.from_config(parse_config(raw, available_cores=frozenset({0}))).slot("output").slot


def opens(path) -> int:
    return sum(1 for r in complete_records(path) if r["event"] == "open")


def kill_output_mid_run(tmp_path, board_name, raw: dict) -> tuple[str, list[dict], int]:
    """Run ``raw`` until a few opens are written, kill -9 the output process, run until its successor has written
    a few more, stop; (stdout, the events file's records, the opens the detector's summary counts)."""
    out = tmp_path / "o.jsonl"
    slot = output_slot(raw)
    proc = start(write_config(tmp_path / "c.yaml", raw))
    try:
        first = wait_for(lambda: slot_pid(board_name, slot), 30, message="output process running")
        wait_for(lambda: opens(out) >= 3, 30, message="three opens in the events file")
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: (p := slot_pid(board_name, slot)) and p != first, 30, message="output process restarted")
        seen = opens(out)
        wait_for(lambda: opens(out) >= seen + 3, 30, message="three more opens written by the restarted process")
    finally:
        output = stop(proc)
    assert proc.returncode == 0, output[-3000:]
    assert "pipeline: output died (killed by signal 9)" in output, output[-3000:]
    assert "restarted pipeline: output" in output
    [opened] = re.findall(r"detector summary: (\d+) opportunities opened", output)
    assert out.read_bytes().endswith(b"\n"), "a record left cut short"
    records = complete_records(out)
    lines = Counter(orjson.dumps(r) for r in records)
    assert [line for line, n in lines.items() if n > 1] == [], "a record written twice"
    return output, records, int(opened)


def test_a_killed_output_process_is_restarted_and_the_events_file_loses_no_record(tmp_path, board_name):
    raw = demo_config(board_name, tmp_path / "o.jsonl")
    output, records, opened = kill_output_mid_run(tmp_path, board_name, raw)
    assert "DECISIONS LOST" not in output
    # every opportunity the detector opened is in the file, opened once and closed once (the stop closes all)
    assert sorted(r["id"] for r in records if r["event"] == "open") == list(range(1, opened + 1))
    assert sorted(r["id"] for r in records if r["event"] == "close") == list(range(1, opened + 1))


def test_a_successor_that_finds_the_ring_lapped_says_how_many_entries_were_lost(tmp_path, board_name):
    # a 16-entry ring and 3 s before the restart: the detector writes more than a ring's worth meanwhile (a
    # dislocation every 0.1 s, each an open and a close at least: some 60 entries)
    raw = demo_config(board_name, tmp_path / "o.jsonl", decision_ring=16)
    raw["supervisor"] = {"restart_backoff_s": 3.0}
    raw["simulator"]["dislocation_every_s"] = 0.1
    output, records, opened = kill_output_mid_run(tmp_path, board_name, raw)
    [lost] = re.findall(r"DECISIONS LOST: (\d+) entries of the decision ring were overwritten", output)
    assert int(lost) > 0
    ids = {r["id"] for r in records if r["event"] == "open"}
    assert ids <= set(range(1, opened + 1))
    # the output's final line: its position counts every entry, read or lost
    [(position, lost_again)] = re.findall(r"pipeline: output .* decisions\s+(\d+) behind 0 lost (\d+)", output)
    assert int(lost_again) == int(lost) and len(records) + int(lost) < int(position)   # (plus the summary's text)
