"""Prometheus metrics: a real board, a real HTTP scrape on 127.0.0.1, exact values."""
from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.board import Board, HistogramWriter, ProcessRole, RowStatus, SkipReason
from pipeline.health.metrics import BoardCollector, start_metrics_server, stop_metrics_server
from pipeline.runtime import ProcessSpec, RowAssignment

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "pipeline.json"
NOW = 1_700_000_000_000_000_000
ROWS = (
    RowAssignment(0, "binance", "BTC/USDT", "BTCUSDT"),
    RowAssignment(1, "binance", "ETH/USDT", "ETHUSDT"),
    RowAssignment(2, "bybit", "BTC/USDT", "BTCUSDT"),
    RowAssignment(3, "bybit", "ETH/USDT", "ETHUSDT"),
)
ROW_STATUS = {0: RowStatus.LIVE, 1: RowStatus.STALE, 2: RowStatus.EMPTY, 3: RowStatus.RESYNCING}
ROW_AGE_NS = {0: 250_000_000, 1: 3_000_000_000, 3: 1_000_000_000}   # row 2 never written
HISTOGRAMS = [
    ("recv_to_publish", {"exchange": "binance"}, [0.0001, 0.001, 0.01], [5, 8, 9, 10], 0.0123),
    ("publish_to_detect", {}, [0.001, math.inf], [3, 4], 0.002),
    ("broken", {}, [0.1, 0.05], [1, 2], 0.0),          # bounds not increasing: left out, counted
]
PAIRS = {("binance", "bybit"): 3, ("bybit", "binance"): 1}


def _specs(board_name: str) -> list[ProcessSpec]:
    common = dict(cores=(), board_name=board_name, depth=5, doorbell_fd=-1)
    return [
        ProcessSpec(key="feed:binance", role=ProcessRole.FEED, title="pipeline: feed binance", slot=0,
                    venue="binance", rows=ROWS[:2], **common),
        ProcessSpec(key="feed:bybit", role=ProcessRole.FEED, title="pipeline: feed bybit", slot=1,
                    venue="bybit", rows=ROWS[2:], **common),
        ProcessSpec(key="detector", role=ProcessRole.DETECTOR, title="pipeline: detector", slot=2,
                    rows=ROWS, **common),
        ProcessSpec(key="health", role=ProcessRole.HEALTH, title="pipeline: health", slot=3, rows=ROWS, **common),
        ProcessSpec(key="output", role=ProcessRole.OUTPUT, title="pipeline: output", slot=4, rows=ROWS, **common),
    ]


def _fill(board: Board) -> None:
    me = os.getpid()
    binance = dict(pid=me, role=int(ProcessRole.FEED), started_ns=time.time_ns(), heartbeat_ns=NOW - 1_500_000_000,
                   messages=1234, parse_errors=5, reconnects=2, gaps=3, checksum_failures=1, resyncs=4,
                   connected=1, restarts=7, late_frames=250, fell_behind=2, behind=1, backlog_wait_ns=1_750_000_000,
                   backlog_frames=64)
    for field, value in binance.items():
        board.procs[0][field] = value
    board.procs[0]["skipped"] = [int(r) + 1 for r in SkipReason]       # invalid_json=1 ... other=8
    bybit = dict(pid=0, role=int(ProcessRole.FEED), messages=99, connected=2)   # pid 0: not running
    for field, value in bybit.items():
        board.procs[1][field] = value
    board.procs[1]["skipped"][int(SkipReason.SEQUENCE_GAP)] = 11
    detector = dict(pid=me, role=int(ProcessRole.DETECTOR), started_ns=time.time_ns(), scans=5000,
                    opportunities=17, restarts=1, output_dropped=3, sink_dropped=2, refused_below_min_qty=4,
                    refused_no_rules=6)
    for field, value in detector.items():
        board.procs[2][field] = value
    output = dict(pid=me, role=int(ProcessRole.OUTPUT), started_ns=time.time_ns(), decisions_behind=7,
                  decisions_lost=2)
    for field, value in output.items():
        board.procs[4][field] = value
    # a pid that was recycled after the health process wrote started_ns: must not be reported
    board.procs[3]["pid"] = me
    board.procs[3]["started_ns"] = 1
    # binance's receive_to_publish (its second hop) and the detector's receive_to_emitted (its third)
    for ns in (1_000, 1_000, 5_000):
        HistogramWriter(board, 0, 1).record(ns)
    HistogramWriter(board, 2, 2).record(300_000)
    for r in ROWS:
        board.rows[r.row]["status"] = int(ROW_STATUS[r.row])
        board.rows[r.row]["update_count"] = 10 * (r.row + 1)
        if r.row in ROW_AGE_NS:
            board.rows[r.row]["recv_ns"] = NOW - ROW_AGE_NS[r.row]


@pytest.fixture
def board(board_name):
    b = Board.create(board_name, n_rows=len(ROWS), depth=5, n_procs=5)
    try:
        _fill(b)
        yield b
    finally:
        b.destroy()
    assert not (Path("/dev/shm") / board_name).exists()


@pytest.fixture
def collector(board, board_name):
    return BoardCollector(board, _specs(board_name), histograms=lambda: HISTOGRAMS,
                          opportunities_by_pair=lambda: PAIRS, clock=lambda: NOW)


def _fetch(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never through a proxy
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def _samples(text: str) -> dict[str, list]:
    """sample name -> [(labels, value)]"""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _by(samples, name: str, *keys: str) -> dict:
    return {tuple(labels[k] for k in keys): value for labels, value in samples.get(name, [])}


def _scrape_once(collector) -> str:
    handle = start_metrics_server(0, collector)
    try:
        return _fetch(handle[0].server_port)
    finally:
        stop_metrics_server(handle)


def test_scrape_over_http_exposes_exact_board_values(collector):
    handle = start_metrics_server(0, collector)
    server, thread = handle
    try:
        port = server.server_port
        assert server.server_address[0] == "127.0.0.1"
        assert server.socket.family == socket.AF_INET
        me = psutil.Process()
        connections = getattr(me, "net_connections", None) or me.connections   # psutil < 6 has only the latter
        listening = [c for c in connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert [c.laddr.ip for c in listening] == ["127.0.0.1"]
        text = _fetch(port)
    finally:
        stop_metrics_server(handle)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    s = _samples(text)
    # feed counters, labelled by exchange
    expected = {"messages": (1234, 99), "parse_errors": (5, 0), "reconnects": (2, 0), "gaps": (3, 0),
                "checksum_failures": (1, 0), "resyncs": (4, 0), "restarts": (7, 0)}
    for field, (binance, bybit) in expected.items():
        assert _by(s, f"pipeline_feed_{field}_total", "exchange") == {("binance",): binance, ("bybit",): bybit}, field
    assert _by(s, "pipeline_feed_connected_connections", "exchange") == {("binance",): 1, ("bybit",): 2}
    # a backlog: frames handed over late, the times a connection fell behind, the state now
    assert _by(s, "pipeline_feed_late_frames_total", "exchange") == {("binance",): 250, ("bybit",): 0}
    assert _by(s, "pipeline_feed_fell_behind_total", "exchange") == {("binance",): 2, ("bybit",): 0}
    assert _by(s, "pipeline_feed_behind_connections", "exchange") == {("binance",): 1, ("bybit",): 0}
    assert _by(s, "pipeline_feed_backlog_wait_seconds", "exchange") == {("binance",): 1.75, ("bybit",): 0.0}
    assert _by(s, "pipeline_feed_backlog_frames", "exchange") == {("binance",): 64, ("bybit",): 0}
    skipped = _by(s, "pipeline_feed_skipped_total", "exchange", "reason")
    assert len(skipped) == 2 * len(SkipReason)
    for r in SkipReason:
        assert skipped[("binance", r.name.lower())] == int(r) + 1
        assert skipped[("bybit", r.name.lower())] == (11 if r == SkipReason.SEQUENCE_GAP else 0)

    # rows: one gauge per state, 1 for the current one
    states = _by(s, "pipeline_row_state", "exchange", "instrument", "state")
    assert len(states) == len(ROWS) * len(RowStatus)
    for r in ROWS:
        for status in RowStatus:
            value = states[(r.venue, r.instrument, status.name.lower())]
            assert value == (1.0 if status == ROW_STATUS[r.row] else 0.0), (r, status)
    ages = _by(s, "pipeline_row_last_update_age_seconds", "exchange", "instrument")
    assert ages == {("binance", "BTC/USDT"): 0.25, ("binance", "ETH/USDT"): 3.0, ("bybit", "ETH/USDT"): 1.0}
    assert _by(s, "pipeline_row_updates_total", "exchange", "instrument") == {
        ("binance", "BTC/USDT"): 10, ("binance", "ETH/USDT"): 20, ("bybit", "BTC/USDT"): 30, ("bybit", "ETH/USDT"): 40}

    # detector
    assert s["pipeline_detector_scans_total"] == [({}, 5000)]
    assert s["pipeline_detector_opportunities_total"] == [({}, 17)]
    assert s["pipeline_detector_output_dropped_total"] == [({}, 3)]
    assert sorted(s["pipeline_detector_refused_total"], key=lambda x: x[0]["reason"]) == [
        ({"reason": "below_min_notional"}, 0), ({"reason": "below_min_qty"}, 4), ({"reason": "no_rules"}, 6),
        ({"reason": "not_trading"}, 0)]
    assert s["pipeline_detector_sink_dropped_total"] == [({}, 2)]
    assert s["pipeline_output_decisions_behind"] == [({}, 7)]
    assert s["pipeline_output_decisions_lost_total"] == [({}, 2)]

    # processes: psutil on the slot pids (this test process); pid 0 and the recycled pid are absent
    cpu = _by(s, "pipeline_process_cpu_seconds_total", "process")
    rss = _by(s, "pipeline_process_resident_memory_bytes", "process")
    assert set(cpu) == set(rss) == {("feed:binance",), ("detector",), ("output",), ("supervisor",)}
    times = psutil.Process().cpu_times()
    for (process,), value in cpu.items():
        assert 0 < value <= times.user + times.system + 1e-6, process
    for (process,), value in rss.items():
        assert 10 * 2 ** 20 < value < 4 * 2 ** 30, process
    assert _by(s, "pipeline_process_restarts_total", "process") == {
        ("feed:binance",): 7, ("feed:bybit",): 0, ("detector",): 1, ("health",): 0, ("output",): 0}
    assert _by(s, "pipeline_process_heartbeat_age_seconds", "process") == {("feed:binance",): 1.5}

    # latency histograms read from the board, labelled by process like every per-process metric
    counts = _by(s, "pipeline_latency_seconds_count", "hop", "process")
    assert {k: v for k, v in counts.items() if k[1]} == {
        ("exchange_to_receive", "feed:binance"): 0, ("receive_to_publish", "feed:binance"): 3,
        ("exchange_to_receive", "feed:bybit"): 0, ("receive_to_publish", "feed:bybit"): 0,
        ("publish_to_seen", "detector"): 0, ("seen_to_emitted", "detector"): 0, ("receive_to_emitted", "detector"): 1,
        ("ring_to_output", "output"): 0, ("receive_to_file", "output"): 0}
    sums = _by(s, "pipeline_latency_seconds_sum", "hop", "process")
    assert sums[("receive_to_publish", "feed:binance")] == pytest.approx(7e-6, abs=1e-15)
    assert sums[("receive_to_emitted", "detector")] == pytest.approx(3e-4, abs=1e-15)
    board_buckets = _by(s, "pipeline_latency_seconds_bucket", "hop", "process", "le")
    # 1000 ns lands in the bucket up to 1024 ns, 5000 ns in the one up to 5120 ns
    assert board_buckets[("receive_to_publish", "feed:binance", "8.96e-07")] == 0
    assert board_buckets[("receive_to_publish", "feed:binance", "1.024e-06")] == 2
    assert board_buckets[("receive_to_publish", "feed:binance", "4.096e-06")] == 2
    assert board_buckets[("receive_to_publish", "feed:binance", "5.12e-06")] == 3
    assert board_buckets[("receive_to_publish", "feed:binance", "+Inf")] == 3

    # latency histogram hook: its entries keep their own labels (no process)
    buckets = {k: v for k, v in _by(s, "pipeline_latency_seconds_bucket", "hop", "exchange", "le", "process").items()
               if not k[3]}
    buckets = {k[:3]: v for k, v in buckets.items()}
    assert buckets == {
        ("recv_to_publish", "binance", "0.0001"): 5, ("recv_to_publish", "binance", "0.001"): 8,
        ("recv_to_publish", "binance", "0.01"): 9, ("recv_to_publish", "binance", "+Inf"): 10,
        ("publish_to_detect", "", "0.001"): 3, ("publish_to_detect", "", "+Inf"): 4,
    }
    assert {k[0]: v for k, v in counts.items() if not k[1]} == {"recv_to_publish": 10, "publish_to_detect": 4}
    assert {k[0]: v for k, v in sums.items() if not k[1]} == {"recv_to_publish": 0.0123, "publish_to_detect": 0.002}
    assert "# TYPE pipeline_latency_seconds histogram" in text

    # opportunities by pair hook, and the broken histogram entry counted as a hook error
    assert _by(s, "pipeline_opportunities_by_pair_total", "buy_exchange", "sell_exchange") == {
        ("binance", "bybit"): 3, ("bybit", "binance"): 1}
    assert _by(s, "pipeline_metrics_hook_errors_total", "hook") == {("histograms",): 1,
                                                                   ("opportunities_by_pair",): 0}


def test_reads_the_board_on_every_scrape_and_survives_failing_hooks(board, board_name):
    def explode():
        raise RuntimeError("no data yet")

    collector = BoardCollector(board, _specs(board_name), histograms=explode, opportunities_by_pair=explode,
                               process_label="title", clock=lambda: NOW)
    handle = start_metrics_server(0, collector)
    try:
        port = handle[0].server_port
        first = _samples(_fetch(port))
        board.procs[0]["messages"] = 2000
        board.rows[0]["status"] = int(RowStatus.DISCONNECTED)
        second = _samples(_fetch(port))
    finally:
        stop_metrics_server(handle)
    assert _by(first, "pipeline_feed_messages_total", "exchange")[("binance",)] == 1234
    assert _by(second, "pipeline_feed_messages_total", "exchange")[("binance",)] == 2000
    states = _by(second, "pipeline_row_state", "exchange", "instrument", "state")
    assert states[("binance", "BTC/USDT", "disconnected")] == 1.0
    assert states[("binance", "BTC/USDT", "live")] == 0.0
    # the failing hook's entries are left out; the board's histograms are still there, labelled by title
    assert {labels["process"] for labels, _ in second["pipeline_latency_seconds_count"]} == {
        "pipeline: feed binance", "pipeline: feed bybit", "pipeline: detector", "pipeline: output"}
    assert "pipeline_opportunities_by_pair_total" not in second
    assert _by(second, "pipeline_metrics_hook_errors_total", "hook") == {("histograms",): 2,
                                                                         ("opportunities_by_pair",): 2}
    assert ("pipeline: feed binance",) in _by(second, "pipeline_process_restarts_total", "process")


def test_own_registry_only_and_import_has_no_side_effects(collector):
    assert b"pipeline_" not in generate_latest(REGISTRY)
    assert b"pipeline_feed_messages_total" in generate_latest(collector.registry)
    code = ("import threading, socket\n"
            "from prometheus_client import REGISTRY, generate_latest\n"
            "import pipeline.health.metrics\n"
            "assert threading.active_count() == 1, threading.enumerate()\n"
            "assert b'pipeline_' not in generate_latest(REGISTRY)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _panels(panels):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_dashboard_queries_only_metrics_the_collector_exposes(collector):
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    exposed = set(_samples(_scrape_once(collector)))
    panels = list(_panels(dashboard["panels"]))
    assert len({p["id"] for p in panels}) == len(panels)
    queries = []
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queries.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        queries.append((variable["name"], variable["query"]["query"]))
    for where, expr in queries:
        names = set(re.findall(r"\bpipeline_[a-zA-Z0-9_]+", expr))
        assert names, (where, expr)
        assert names <= exposed, (where, names - exposed)
    exprs = " ".join(e for _, e in queries)
    for quantile in ("0.5", "0.99", "0.999"):
        assert f"histogram_quantile({quantile}, sum by (hop, le) (rate(pipeline_latency_seconds_bucket" in exprs
    for name in ("pipeline_feed_messages_total", "pipeline_feed_skipped_total", "pipeline_feed_resyncs_total",
                 "pipeline_feed_reconnects_total", "pipeline_row_state", "pipeline_row_last_update_age_seconds",
                 "pipeline_opportunities_by_pair_total", "pipeline_detector_scans_total",
                 "pipeline_process_cpu_seconds_total", "pipeline_process_resident_memory_bytes"):
        assert name in exprs, name


PER_PROCESS = ("pipeline_process_cpu_seconds_total", "pipeline_process_resident_memory_bytes",
               "pipeline_process_restarts_total", "pipeline_process_heartbeat_age_seconds",
               "pipeline_latency_seconds_count")


def test_every_per_process_metric_names_a_process_the_same_way(board, board_name):
    """CPU, RSS, restarts, heartbeat and latency of one feed carry one ``process`` value: its key."""
    specs = _specs(board_name)
    board.procs[0]["heartbeat_ns"] = NOW - 1_000_000_000
    s = _samples(_scrape_once(BoardCollector(board, specs, clock=lambda: NOW)))
    keys = {spec.key for spec in specs} | {"supervisor"}
    by_family = {name: {labels["process"] for labels, _ in s[name]} for name in PER_PROCESS}
    for name, values in by_family.items():
        assert values <= keys, (name, values - keys)
    # the feed running in this test (its slot holds this pid) is named alike in each of them
    assert all("feed:binance" in values for values in by_family.values()), by_family
    assert by_family["pipeline_latency_seconds_count"] == {"feed:binance", "feed:bybit", "detector", "output"}
    # no feed is named by its bare exchange in any per-process family
    assert not any(values & {"binance", "bybit"} for values in by_family.values())
    # the feed-level families keep the exchange label
    assert {labels["exchange"] for labels, _ in s["pipeline_feed_messages_total"]} == {"binance", "bybit"}


def test_redundant_connections_are_exposed_per_path_for_a_feed_that_reads_more_than_one(board, board_name):
    """binance read over two paths: first, copies, lag quantiles and live rows per path, and its failovers;
    bybit (one connection) has no path series at all."""
    proc = board.procs[0]
    proc["paths"] = 2
    proc["failovers"] = 3
    proc["path_first"][:2] = [600, 400]
    proc["path_copies"][:2] = [390, 590]
    proc["path_lag_p50_us"][:2] = [300, 450]
    proc["path_lag_p99_us"][:2] = [2100, 48_000]
    proc["path_live_rows"][:2] = [2, 1]
    proc["path_reconnects"][:2] = [4, 0]
    s = _samples(_scrape_once(BoardCollector(board, _specs(board_name), clock=lambda: NOW)))
    assert _by(s, "pipeline_feed_failovers_total", "exchange") == {("binance",): 3}
    assert _by(s, "pipeline_feed_path_first_total", "exchange", "path") == {("binance", "0"): 600,
                                                                           ("binance", "1"): 400}
    assert _by(s, "pipeline_feed_path_copies_total", "exchange", "path") == {("binance", "0"): 390,
                                                                            ("binance", "1"): 590}
    assert _by(s, "pipeline_feed_path_lag_seconds", "exchange", "path", "quantile") == {
        ("binance", "0", "0.5"): 0.0003, ("binance", "0", "0.99"): 0.0021,
        ("binance", "1", "0.5"): 0.00045, ("binance", "1", "0.99"): 0.048}
    assert _by(s, "pipeline_feed_path_live_rows", "exchange", "path") == {("binance", "0"): 2, ("binance", "1"): 1}
    assert _by(s, "pipeline_feed_path_reconnects_total", "exchange", "path") == {("binance", "0"): 4,
                                                                                ("binance", "1"): 0}
