"""Record a simulated run, replay it through the live path: deterministic, paced, configurable, honest on imports."""
from __future__ import annotations

import time

import orjson
import pytest

from pipeline.recording.format import EVENT, read_recording, recording_files
from tests.conftest import FIXTURES, demo_config, run_cli, run_until, write_config

# one recorded run serves the file: the whole file on one xdist worker
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("record_replay")]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A 3 s demo run of three venues with recording on: (config path, recording dir, live events file)."""
    import uuid
    tmp = tmp_path_factory.mktemp("recorded")
    board = f"pipeline-test-{uuid.uuid4().hex[:10]}"
    raw = demo_config(board, tmp / "live.jsonl", venues=("binance", "bybit", "okx"),
                      shadow_latencies_ms=[5, 50])
    raw["recording"] = {"dir": str(tmp / "rec")}
    config = write_config(tmp / "config.yaml", raw)
    result = run_cli("--config", str(config), "--duration", "3", timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return config, tmp / "rec", tmp / "live.jsonl", tmp


def test_every_feed_recorded_its_frames_and_connection_events(recorded):
    _, rec, _, _ = recorded
    files = recording_files(rec)
    venues = {}
    for path in files:
        header, records, damage = read_recording(path)
        assert damage is None
        venues.setdefault(header["venue"], []).extend(records)
    assert set(venues) == {"binance", "bybit", "okx"}
    for venue, records in venues.items():
        frames = [r for r in records if r.kind != EVENT]
        events = [r.event["kind"] for r in records if r.kind == EVENT]
        assert len(frames) > 100, venue
        assert events[:4] == ["reference_data", "rules", "connect", "subscribe"], venue   # the rules come first
        assert [r.recv_ns for r in records] == sorted(r.recv_ns for r in records)


def test_two_replays_at_max_speed_write_identical_event_files(recorded):
    config, rec, live, tmp = recorded
    outs = []
    for n in range(2):
        out = tmp / f"replay{n}.jsonl"
        result = run_cli("replay", "--config", str(config), "--recording", str(rec), "--out", str(out), "--quiet")
        assert result.returncode == 0, result.stderr
        assert "detector summary:" in result.stdout
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    records = [orjson.loads(line) for line in outs[0].splitlines()]
    opens = [r for r in records if r["event"] == "open"]
    assert opens, "the simulator's dislocations must show up in the replay"
    # every open closes (at the latest at the end of the replay) and has its shadow fills
    assert len([r for r in records if r["event"] == "close"]) == len(opens)
    assert {len(r["shadow_fills"]) for r in records if r["event"] == "shadow"} == {2}
    # the live run saw the same kind of opportunities: every venue pair opened in the replay was opened live
    live_pairs = {(r["instrument"], r["buy_exchange"], r["sell_exchange"])
                  for r in map(orjson.loads, live.read_bytes().splitlines()) if r["event"] == "open"}
    replay_pairs = {(r["instrument"], r["buy_exchange"], r["sell_exchange"]) for r in opens}
    assert live_pairs & replay_pairs


def test_replay_at_recorded_speed_takes_about_the_recorded_time(recorded):
    config, rec, _, tmp = recorded
    spans = []
    for path in recording_files(rec):
        records = read_recording(path)[1]
        spans.append((records[0].recv_ns, records[-1].recv_ns))
    span_s = (max(e for _, e in spans) - min(s for s, _ in spans)) / 1e9
    started = time.monotonic()
    result = run_cli("replay", "--config", str(config), "--recording", str(rec), "--speed", "1",
                     "--out", str(tmp / "paced.jsonl"), "--quiet", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed >= 0.9 * span_s          # paced by the recorded gaps (a lower bound: slowness cannot fail it)


def test_set_and_compare_show_what_another_threshold_would_have_given(recorded):
    config, rec, _, tmp = recorded
    result = run_cli("replay", "--config", str(config), "--recording", str(rec), "--out", str(tmp / "cmp.jsonl"),
                     "--set", "detector.threshold_bps=100000", "--compare")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("as configured"))
    assert "with detector.threshold_bps=100000" in header
    row = next(line for line in lines if "opportunities opened" in line)
    left, right = row.split("detector summary:")[1:3]
    assert int(left.split()[0]) > 0 and int(right.split()[0]) == 0
    assert (tmp / "cmp.jsonl").read_bytes() == b""           # nothing clears 100000 bps
    assert (tmp / "cmp-baseline.jsonl").stat().st_size > 0


def test_bad_overrides_and_versions_exit_2_naming_the_problem(recorded, tmp_path):
    config, rec, _, _ = recorded
    result = run_cli("replay", "--config", str(config), "--recording", str(rec), "--set", "detector.threshold_bps=abc")
    assert result.returncode == 2 and "detector.threshold_bps" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("replay", "--config", str(config), "--recording", str(tmp_path / "none"))
    assert result.returncode == 2 and "no recording" in result.stderr


def test_truncated_recording_replays_up_to_the_damage(recorded, tmp_path):
    config, rec, _, _ = recorded
    source = max(recording_files(rec), key=lambda p: __import__("os").path.getsize(p))
    damaged = tmp_path / "damaged.rec"
    data = open(source, "rb").read()
    damaged.write_bytes(data[: len(data) - 10])
    result = run_cli("replay", "--config", str(config), "--recording", str(damaged), "--quiet",
                     "--out", str(tmp_path / "d.jsonl"))
    assert result.returncode == 0, result.stderr
    assert f"stopped reading {damaged}: unreadable from byte" in result.stdout


def test_real_captures_import_and_replay_with_incident_counts(tmp_path):
    captures = sorted((FIXTURES / "cryptofeed-2021").glob("*.ws.*"))
    result = run_cli("recording", "import", "--format", "cryptofeed", "--out", str(tmp_path / "rec"),
                     *map(str, captures))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" -> ") == len(captures)
    result = run_cli("recording", "import", "--format", "jsonl", "--exchange", "bybit", "--out",
                     str(tmp_path / "rec"), str(FIXTURES / "bybit" / "depth.jsonl"))
    assert result.returncode == 0, result.stderr
    info = run_cli("recording", "info", "--json", str(tmp_path / "rec"))
    assert info.returncode == 0, info.stderr
    venues = orjson.loads(info.stdout)
    assert venues["coinbase"]["channels"]["SKL-USD depth"] == 2593
    assert venues["htx"]["frames"] == 362 and venues["okx"]["frames"] == 410
    assert venues["bybit"]["session"]["gaps"] == 0
    config = write_config(tmp_path / "c.yaml", {
        "board": {"name": "unused"},
        "venues": {"coinbase": {"instruments": ["SKL/USD", "DASH/BTC"], "url": "wss://x"},
                   "htx": {"instruments": ["OMG/BTC"], "url": "wss://x"},
                   "okx": {"instruments": ["BTC/USDT"], "url": "wss://x"},
                   "bybit": {"instruments": ["BTC/USDT"], "url": "wss://x"}},
        "detector": {"output": str(tmp_path / "unused.jsonl")}})
    result = run_cli("replay", "--config", str(config), "--recording", str(tmp_path / "rec"), "--quiet",
                     "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "replay: coinbase incidents: connect 1, parse_error 214" in result.stdout
    assert "detector summary:" in result.stdout


def test_unwritable_recording_directory_never_stops_the_feeds(tmp_path, board_name):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    raw = demo_config(board_name, tmp_path / "live.jsonl", venues=("binance", "bybit"))
    raw["recording"] = {"dir": str(blocker / "rec")}
    config = write_config(tmp_path / "config.yaml", raw)
    live = tmp_path / "live.jsonl"
    result = run_until(lambda stdout: "frames not recorded" in stdout
                       and b'"event":"open"' in (live.read_bytes() if live.exists() else b""),
                       "--config", str(config), "--verbose")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "frames not recorded" in result.stdout           # the health line says so
    assert "recording to" in result.stderr and "failed" in result.stderr
    opens = [r for r in map(orjson.loads, (tmp_path / "live.jsonl").read_bytes().splitlines())
             if r["event"] == "open"]
    assert opens                                             # the board and the detector kept working
