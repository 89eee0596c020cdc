"""Supervisor + simulator + feeds + detector as real processes on loopback."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pipeline.board import Board
from tests.conftest import (
    REPO,
    complete_records,
    demo_config,
    end_run,
    port_holder,
    run_cli,
    run_until,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration


def check_arithmetic(record: dict, fees: dict) -> None:
    buy, sell = record["buy_price"], record["sell_price"]
    gross = (sell - buy) / buy * 1e4
    assert record["gross_bps"] == pytest.approx(gross, abs=1e-3)
    fee_sum = fees[record["buy_exchange"]] + fees[record["sell_exchange"]]
    assert record["fees_bps"] == pytest.approx(fee_sum)
    assert record["buy_fee_bps"] == fees[record["buy_exchange"]]
    assert record["net_bps"] == pytest.approx(gross - fee_sum, abs=1e-3)
    qty = record.get("qty_base", record.get("quantity"))
    profit = (qty * sell * (1 - fees[record["sell_exchange"]] * 1e-4)
              - qty * buy * (1 + fees[record["buy_exchange"]] * 1e-4))
    # prices and size are written to 10 significant digits, so the profit rebuilt from them is good to a few
    # 1e-10 of the notional (up to max_notional, 100 000 here): 1e-5 of a 6 USDT profit
    assert record["profit_quote"] == pytest.approx(profit, rel=1e-6, abs=max(1e-6, 1e-9 * qty * buy))
    assert record["buy_exchange"] != record["sell_exchange"]
    assert record["buy_price"] >= record["best_ask"] * (1 - 1e-12)
    assert record["sell_price"] <= record["best_bid"] * (1 + 1e-12)
    assert record["buy_quote_age_ms"] >= 0 and record["sell_quote_age_ms"] >= 0


def test_demo_run_reports_opportunities_and_cleans_up(tmp_path, board_name):
    out = tmp_path / "opps.jsonl"
    config = write_config(tmp_path / "c.yaml", demo_config(board_name, out))
    # until a health block and a closed opportunity are out, then SIGTERM (closing what is open: shutdown)
    result = run_until(
        lambda stdout: "--- health" in stdout and any(r["event"] == "close" for r in complete_records(out)),
        "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "simulator listening" in result.stdout
    assert "--- health" in result.stdout and "pipeline: feed binance" in result.stdout
    assert "pipeline: detector" in result.stdout
    # this run's own file, the configured name a relative link to it, the run id on every record
    run_id = re.search(r"supervisor: run (\S+): events in (\S+) ", result.stdout).group(1)
    assert os.readlink(out) == f"opps-{run_id}.jsonl"
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert {r["run_id"] for r in records} == {run_id}
    opens = [r for r in records if r["event"] == "open"]
    assert opens, "a demo with dislocations every 0.5 s must open at least one opportunity"
    fees = {"binance": 10.0, "bybit": 10.0}
    for record in records:
        if record["event"] == "shadow":
            assert len(record["shadow_fills"]) == 3
            continue
        check_arithmetic(record, fees)
        assert record["net_bps"] >= 0.0
    closes = [r for r in records if r["event"] == "close"]
    assert all(r["close_reason"] in {"spread_closed", "quote_stale", "exchange_disconnected",
                                     "book_invalidated", "shutdown"} for r in closes)
    assert "OPEN" in result.stdout and "detector summary:" in result.stdout
    # the final block: each open and update timed from its newest frame's receipt to its line in the file
    updates = sum(1 for r in records if r["event"] in ("open", "update"))
    [counted] = re.findall(r"\n\s+receive_to_file\s+p50.*\(n=(\d+)\)", result.stdout)
    assert 0 < int(counted) <= updates
    assert not (Path("/dev/shm") / board_name).exists()


def test_each_run_writes_its_own_file_and_append_keeps_adding_to_one(tmp_path, board_name):
    out = tmp_path / "opps.jsonl"
    config = write_config(tmp_path / "c.yaml", demo_config(board_name, out))
    first = run_until(lambda stdout: len(complete_records(out)) >= 2, "--config", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    first_id = re.search(r"supervisor: run (\S+): events in ", first.stdout).group(1)
    run_file = tmp_path / f"opps-{first_id}.jsonl"
    assert os.readlink(out) == run_file.name
    first_data = run_file.read_bytes()
    assert first_data, "a demo writes events"
    # --append: no file of its own, no new link; it appends to detector.output (through the link), with its own id
    second = run_until(lambda stdout: len(complete_records(run_file)) >= len(first_data.splitlines()) + 2,
                       "--config", str(config), "--append")
    assert second.returncode == 0, second.stderr[-3000:]
    second_id = re.search(r"supervisor: run (\S+): appending to ", second.stdout).group(1)
    assert second_id != first_id
    assert sorted(p.name for p in tmp_path.glob("opps*")) == sorted(["opps.jsonl", run_file.name])
    data = run_file.read_bytes()
    assert data.startswith(first_data) and len(data) > len(first_data)
    assert {orjson.loads(line)["run_id"] for line in data[len(first_data):].splitlines()} == {second_id}
    # the report splits the file again, and by default reports the last run
    report = run_cli("report", str(out), "--out", str(tmp_path / "report"), "--no-plots", timeout=120)
    assert report.returncode == 0, report.stderr
    n_second = len(data[len(first_data):].splitlines())
    assert report.stdout.splitlines()[0] == (f"report: {out} holds 2 runs; reporting run {second_id} "
                                             f"({n_second} events); --run ID or --run all")
    assert not (Path("/dev/shm") / board_name).exists()


def _feed_pid(board_name: str, venue_slot: int = 0) -> int:
    try:
        board = Board.attach(board_name)
    except Exception:  # noqa: BLE001 - not created yet, or already gone
        return 0
    try:
        return int(board.procs[venue_slot]["pid"])
    finally:
        board.close()


def test_killed_feed_is_restarted_and_sigterm_cleans_up(tmp_path, board_name):
    out = tmp_path / "opps.jsonl"
    config = write_config(tmp_path / "c.yaml", demo_config(board_name, out))
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        first = wait_for(lambda: _feed_pid(board_name), 30, message="the binance feed to register")
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (p := _feed_pid(board_name)) and p != first and p, 15,
                          message="the binance feed to be restarted")
        assert second != first
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        end_run(proc)
    assert proc.returncode == 0, output[-3000:]
    assert "pipeline: feed binance died (killed by signal 9)" in output, output
    assert "restarted pipeline: feed binance" in output
    assert not (Path("/dev/shm") / board_name).exists()


def test_metrics_endpoint_is_scraped_during_a_demo_run(tmp_path, board_name):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    holder = port_holder()                    # held until the test ends: the run's /metrics binds it beside us
    port = holder.getsockname()[1]
    raw = demo_config(board_name, tmp_path / "opps.jsonl")
    raw["metrics"] = {"port": port}
    config = write_config(tmp_path / "c.yaml", raw)
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", str(config), "--duration", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)

    def scrape():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                return response.read().decode()
        except OSError:
            return None

    def has_traffic():
        text = scrape()
        if not text:
            return None
        families = {f.name: f for f in text_string_to_metric_families(text)}
        messages = families.get("pipeline_feed_messages")
        latency = families.get("pipeline_latency_seconds")
        if messages and latency and all(s.value > 50 for s in messages.samples) and any(
                s.name.endswith("_count") and s.value > 0 and s.labels.get("hop") == "publish_to_seen"
                for s in latency.samples):
            return families
        return None

    try:
        families = wait_for(has_traffic, 30, interval=0.2, message="metrics with traffic")
    except BaseException:
        end_run(proc)
        raise
    finally:
        holder.close()
    proc.send_signal(signal.SIGTERM)                          # seen: stop it cleanly
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-2000:]
    exchanges = {s.labels["exchange"] for s in families["pipeline_feed_messages"].samples}
    assert exchanges == {"binance", "bybit"}
    states = [s for s in families["pipeline_row_state"].samples if s.value == 1]
    assert {s.labels["state"] for s in states} <= {"live", "syncing"}
    hops = {s.labels["hop"] for s in families["pipeline_latency_seconds"].samples}
    assert {"receive_to_publish", "exchange_to_receive", "publish_to_seen"} <= hops
    assert not (Path("/dev/shm") / board_name).exists()


def test_rows_of_a_killed_feed_are_marked_disconnected_at_once(tmp_path, board_name):
    from pipeline.board import RowStatus
    raw = demo_config(board_name, tmp_path / "opps.jsonl")
    raw["supervisor"] = {"restart_backoff_s": 2.0}            # a long restart delay makes the gap observable
    config = write_config(tmp_path / "c.yaml", raw)
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)

    def statuses():
        board = Board.attach(board_name)
        try:
            return [RowStatus(int(board.rows[r]["status"])) for r in (0, 1)], int(board.procs[0]["pid"])
        finally:
            board.close()

    try:
        wait_for(lambda: _feed_pid(board_name) and statuses()[0] == [RowStatus.LIVE] * 2, 30, message="binance live")
        first = _feed_pid(board_name)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: statuses()[0] == [RowStatus.DISCONNECTED] * 2, 1.5,
                 message="rows of the dead feed disconnected")
        assert _feed_pid(board_name) == first, "still before the restart"
        wait_for(lambda: _feed_pid(board_name) != first and statuses()[0] == [RowStatus.LIVE] * 2, 20,
                 message="the restarted feed live again")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        end_run(proc)
    assert proc.returncode == 0
