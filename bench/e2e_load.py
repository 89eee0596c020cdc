"""End to end under load: the whole pipeline against the simulator at rising update rates.

Run by hand::

    python -m bench.e2e_load --seconds 15 --rates 1000 10000 50000

For each target rate (updates/s summed over six exchanges x 3 instruments x
2 channels) and each detector waiting mode, the supervisor runs the demo
topology; after a warm-up the script reads the per-hop histograms from the
board twice and reports the percentiles of what was recorded in between,
the achieved update rate, and the CPU of the detector and the feeds
(psutil). "Falls behind" is judged from ``exchange_to_receive``: the
simulator stamps each frame when it renders it, so a feed that cannot keep
up shows a growing p99 there (frames queue in the socket), while the board
itself never queues (it keeps only the latest state).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import yaml

from bench._common import BusyMeter, machine_info
from pipeline.board import Board
from pipeline.board.histogram import read_histogram
from pipeline.board.layout import HOPS, ProcessRole

REPO = Path(__file__).resolve().parents[1]
VENUES = ["binance", "bybit", "okx", "htx", "coinbase", "kraken"]
INSTRUMENTS = {"coinbase": ["BTC/USD", "ETH/USD", "BTC/USDT"], "kraken": ["BTC/USD", "ETH/USD", "BTC/USDT"]}
FRAMES_PER_STEP = sum(len(INSTRUMENTS.get(v, [1, 2, 3])) for v in VENUES) * 2


def config(board: str, rate: int, wait: str, out: Path, transport: str = "websockets") -> dict:
    return {
        "board": {"name": board, "depth": 5},
        "simulator": {"seed": 3, "update_interval_ms": 1000.0 * FRAMES_PER_STEP / rate,
                      "dislocation_every_s": 0.5, "dislocation_bps": 45, "dislocation_ms": 150, "cores": [0]},
        "venues": {v: {"instruments": INSTRUMENTS.get(v, ["BTC/USDT", "ETH/USDT", "SOL/USDT"]), "cores": [0],
                       **({"transport": transport} if transport != "websockets" else {})}
                   for v in VENUES},
        "detector": {"threshold_bps": 0.0, "wait": wait, "output": str(out), "print_opportunities": False,
                     "cores": [1], "shadow_latencies_ms": []},
        "health": {"interval_s": 60, "cores": [0]},
    }


def snapshot(board: Board) -> dict:
    out = {}
    slots = {i: ProcessRole(int(board.procs[i]["role"])) for i in range(board.geometry.n_procs)}
    for slot, role in slots.items():
        for index, hop in enumerate(HOPS.get(role, ())):
            out[(slot, hop)] = read_histogram(board, slot, index)
    out["messages"] = sum(int(board.procs[i]["messages"]) for i, r in slots.items() if r == ProcessRole.FEED)
    return out


def merge(later: dict, earlier: dict, hop: str):
    parts = [later[k].minus(earlier[k]) for k in later if isinstance(k, tuple) and k[1] == hop and k in earlier]
    if not parts:
        return None
    count = sum(p.count for p in parts)
    buckets = tuple(sum(b) for b in zip(*(p.buckets for p in parts)))
    from pipeline.board.histogram import HistogramSnapshot
    return HistogramSnapshot(count, sum(p.sum_ns for p in parts), max(p.max_ns for p in parts), buckets)


def run_one(rate: int, wait: str, seconds: float, warmup: float, transport: str = "websockets") -> dict:
    board_name = f"pipeline-bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="e2e-"))
    path = work / "c.yaml"
    path.write_text(yaml.safe_dump(config(board_name, rate, wait, work / "o.jsonl", transport)))
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        time.sleep(warmup)
        board = Board.attach(board_name)
        pids = {("detector" if ProcessRole(int(board.procs[i]["role"])) == ProcessRole.DETECTOR else f"slot{i}"):
                int(board.procs[i]["pid"]) for i in range(board.geometry.n_procs) if int(board.procs[i]["pid"])}
        procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        for p in procs.values():
            p.cpu_percent(None)
        before = snapshot(board)
        meter = BusyMeter()
        t0 = time.monotonic()
        time.sleep(seconds)
        after = snapshot(board)
        elapsed = time.monotonic() - t0
        cpu = {name: p.cpu_percent(None) for name, p in procs.items()}
        busy = meter.busy_cores()
        board.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    result = {"target_rate": rate, "wait": wait, "transport": transport, "busy_cores": round(busy, 2),
              "achieved_rate": round((after["messages"] - before["messages"]) / elapsed),
              "detector_cpu_percent": cpu.get("detector"),
              "feeds_cpu_percent_total": round(sum(v for k, v in cpu.items() if k.startswith("slot")), 1),
              "hops": {}}
    for hop in ("exchange_to_receive", "receive_to_publish", "publish_to_seen", "seen_to_emitted",
                "receive_to_emitted"):
        h = merge(after, before, hop)
        if h is None or not h.count:
            continue
        result["hops"][hop] = {"count": h.count, "p50_us": h.percentile_ns(0.5) / 1e3,
                               "p99_us": h.percentile_ns(0.99) / 1e3, "p999_us": h.percentile_ns(0.999) / 1e3,
                               "max_us": h.max_ns / 1e3}
    return result


def table(results: list[dict]) -> str:
    lines = ["| target/s | transport | wait | achieved/s | busy cores | detector CPU | feeds CPU | hop | p50 µs | p99 µs "
             "| p99.9 µs | max µs | n |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for hop, h in r["hops"].items():
            lines.append(f"| {r['target_rate']} | {r.get('transport', 'websockets')} | {r['wait']} "
                         f"| {r['achieved_rate']} | {r.get('busy_cores', float('nan')):.2f} "
                         f"| {r['detector_cpu_percent']:.0f}% "
                         f"| {r['feeds_cpu_percent_total']:.0f}% | {hop} | {h['p50_us']:.0f} | {h['p99_us']:.0f} "
                         f"| {h['p999_us']:.0f} | {h['max_us']:.0f} | {h['count']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=6.0)
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--waits", nargs="+", default=["doorbell", "spin"])
    parser.add_argument("--transports", nargs="+", default=["websockets"],
                        help="feed transports to compare, e.g. websockets picows (default websockets)")
    args = parser.parse_args()
    machine = machine_info()
    results = [run_one(rate, wait, args.seconds, args.warmup, transport)
               for rate in args.rates for transport in args.transports for wait in args.waits]
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    machine["loadavg_end"] = os.getloadavg()
    (out / "e2e_load.json").write_text(json.dumps({"options": vars(args), "machine": machine, "results": results},
                                                  indent=2, default=str))
    print(table(results))


if __name__ == "__main__":
    main()
