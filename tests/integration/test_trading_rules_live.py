"""Trading rules in a running pipeline (supervisor, simulator, feeds, detector as real processes).

The venue's reference data unreachable at start, with a cache (the feed runs on it and says its age) and
without (rows ``no_rules``, no opportunity, no crash); and a halt and a rule change served mid-run by a
local HTTP server the feed's ``venues.binance.rules_url`` points at, applied without a restart.
"""
from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

import orjson
import pytest

from pipeline.refdata import RulesCache
from tests.conftest import REPO, complete_records, demo_config, run_until, write_config

pytestmark = pytest.mark.integration

DEMO_RULES = REPO / "tests" / "data" / "demo-recording" / "rules"


def closed_port_url() -> str:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"      # nothing listens there once closed


def rules_config(tmp_path, board_name, cache_dir: Path, binance_rules_url: str, refresh_s: float = 3600):
    raw = demo_config(board_name, tmp_path / "opps.jsonl")
    raw["venues"]["binance"]["rules_url"] = binance_rules_url
    raw["reference_data"] = {"cache_dir": str(cache_dir), "timeout_s": 0.5, "retries": 1, "refresh_s": refresh_s}
    return write_config(tmp_path / "c.yaml", raw)


def test_reference_data_unreachable_with_a_cache_runs_on_it_and_says_its_age(tmp_path, board_name):
    cache = tmp_path / "rules"
    cache.mkdir()
    url = closed_port_url()
    target = RulesCache(cache, url).path("binance")          # kept under where the rules come from
    assert target.name.startswith("binance@127.0.0.1_")
    target.write_bytes((DEMO_RULES / "binance.json").read_bytes())
    two_hours_ago = time.time() - 7200
    os.utime(target, (two_hours_ago, two_hours_ago))
    config = rules_config(tmp_path, board_name, cache, url)
    out = tmp_path / "opps.jsonl"
    result = run_until(lambda stdout: "rules from cache" in stdout and any(
        e["event"] == "open" and "binance" in (e["buy_exchange"], e["sell_exchange"]) for e in complete_records(out)),
        "--config", str(config), "--verbose", timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    said = [line for line in (result.stdout + result.stderr).splitlines() if "using the cached trading rules" in line]
    assert len(said) == 1
    assert "binance: reference data unreachable; using the cached trading rules of 2.0 h ago" in said[0]
    assert " rules from cache, 720" in result.stdout            # the health line: 7200 s and more
    assert target.stat().st_mtime == pytest.approx(two_hours_ago, abs=1)   # a cache is not refreshed by reading it


def test_reference_data_unreachable_without_a_cache_holds_the_rows_no_rules(tmp_path, board_name):
    config = rules_config(tmp_path, board_name, tmp_path / "no-cache", closed_port_url())
    out = tmp_path / "opps.jsonl"
    # bybit's rules come from the simulator: its rows are live; binance's are held no_rules
    result = run_until(lambda stdout: "no_rules=2" in stdout and "rules fetch failures" in stdout,
                       "--config", str(config), "--verbose", timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "binance: reference data unreachable and no cached rules in" in result.stdout + result.stderr
    assert not [e for e in complete_records(out) if e["event"] == "open" and "binance" in (e["buy_exchange"],
                                                                               e["sell_exchange"])]
    # bybit fetched from the simulator and kept its answer; binance has nothing cached
    # the simulator's rules are kept under their source, never as bybit's own
    cached = sorted(p.name for p in (tmp_path / "no-cache").iterdir())
    assert len(cached) == 1 and cached[0].startswith("bybit@127.0.0.1_") and cached[0].endswith(".json")


class RulesServer:
    """Serves binance's reference data from ``body`` (changed by the test while the pipeline runs)."""

    def __init__(self, body: bytes):
        self.body = body
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests += 1
                body = outer.body
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def binance_with(symbol: str, **changes) -> bytes:
    doc = orjson.loads((DEMO_RULES / "binance.json").read_bytes())
    for sym in doc["symbols"]:
        if sym["symbol"] == symbol:
            for key, value in changes.items():
                if key == "tickSize":
                    next(f for f in sym["filters"] if f["filterType"] == "PRICE_FILTER")["tickSize"] = value
                else:
                    sym[key] = value
    return orjson.dumps(doc)


def test_a_halt_and_a_rule_change_apply_mid_run_without_a_restart(tmp_path, board_name):
    normal = (DEMO_RULES / "binance.json").read_bytes()
    server = RulesServer(normal)
    config = rules_config(tmp_path, board_name, tmp_path / "cache", server.url, refresh_s=0.3)
    steps = ["live", "halted", "live again"]

    def progress(stdout: str) -> bool:
        health = [line for line in stdout.splitlines() if "feed binance" in line]
        last = health[-1] if health else ""
        if steps[0] == "live" and "live=2" in last:
            server.body = binance_with("BTCUSDT", status="HALT", tickSize="0.05000000")
            steps.pop(0)
        elif steps[0] == "halted" and "halted=1" in last:
            server.body = normal
            steps.pop(0)
        elif steps[0] == "live again" and "live=2" in last and "rules changes 6" in last:
            steps.pop(0)
            return True
        return False

    try:
        result = run_until(progress, "--config", str(config), "--verbose", timeout=120)
    finally:
        server.close()
    assert steps == [], (steps, result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0, result.stderr[-3000:]
    logged = result.stdout + result.stderr
    assert "binance BTCUSDT: trading rule trading True -> False (reference_data)" in logged
    assert "binance BTCUSDT: trading rule status TRADING -> HALT (reference_data)" in logged
    assert "binance BTCUSDT: trading rule tick 0.01000000 -> 0.05000000 (reference_data)" in logged
    assert "binance BTCUSDT: trading rule trading False -> True (reference_data)" in logged
    assert not [line for line in result.stdout.splitlines() if "feed binance" in line and "restarts" in line]
