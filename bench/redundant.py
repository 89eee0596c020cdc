"""Redundant connections: exchange -> first copy received, with 1, 2 and 3 connections per venue, over the
simulator's network paths (each connection its own delay and stalls).

Run by hand::

    python -m bench.redundant            # defaults: --connections 1 2 3 --seconds 20 --stall-every-s 2

For each connection count, the whole pipeline (``run.py``) against the simulator with ``simulator.paths``:
each connection's frames delayed by a lognormal (median ``--delay-ms``, sigma ``--jitter``) and stalled
``--stall-ms`` (uniform) every ``--stall-every-s`` on average (exponential), independently per connection, as
TCP paths to an exchange stall behind a lost packet. Two venues whose frames carry the exchange's time (bybit,
okx: the simulator stamps each update when it renders it, before its path). Reported from the run's final
health block (the feed's hop histograms: bucket upper bounds), per venue: ``exchange_to_receive`` (the
exchange's stamp -> the first copy received: with several connections the feed records it for the copy it
publishes) p50 / p99 / p99.9, and the feed process's CPU (psutil, over the run) per connection count. All
connection counts run in one invocation, one after the other, on the same seed.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import yaml

from bench._common import write_results

REPO = Path(__file__).resolve().parents[1]
VENUES = ("bybit", "okx")
HOP = re.compile(r"^\s+(\w+)\s+p50\s+([\d.]+) p99\s+([\d.]+) p99\.9\s+([\d.]+) max\s+([\d.]+) µs\s+\(n=(\d+)\)")


def config(board: str, out: Path, connections: int, args) -> dict:
    return {
        "board": {"name": board, "depth": 5},
        "simulator": {"seed": args.seed, "update_interval_ms": args.update_ms,
                      "paths": {"delay_ms": args.delay_ms, "jitter": args.jitter, "stall_every_s": args.stall_every_s,
                                "stall_ms": [args.stall_ms[0], args.stall_ms[1]], "disconnect_every_s": 0}},
        "venues": {v: {"instruments": ["BTC/USDT", "ETH/USDT"], "connections": connections,
                       "staleness_ms": 2000} for v in VENUES},
        "detector": {"output": str(out / "events.jsonl"), "print_opportunities": False},
        "health": {"interval_s": 60},
        "reference_data": {"cache_dir": str(out / "rules")},
        "supervisor": {"cores_preferred": True},
    }


def feed_cpu(run: psutil.Process) -> dict[str, float]:
    out = {}
    for child in run.children(recursive=True):
        try:
            title = " ".join(child.cmdline())
            if title.startswith("pipeline: feed "):
                times = child.cpu_times()
                out[title.split()[-1]] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def run_one(connections: int, args, work: Path) -> dict:
    board = f"bench-redundant-{uuid.uuid4().hex[:8]}"
    out = work / f"c{connections}"
    out.mkdir()
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config(board, out, connections, args)))
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", str(path), "--duration",
                             str(args.seconds + args.warmup)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO)
    parent = psutil.Process(proc.pid)
    time.sleep(args.warmup)
    before = feed_cpu(parent)
    time.sleep(args.seconds)
    after = feed_cpu(parent)
    stdout, _ = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"run.py exited {proc.returncode}:\n{stdout[-3000:]}")
    hops: dict[str, dict] = {}
    venue = None
    for line in stdout.splitlines():
        named = re.match(r"^\s+pipeline: feed (\w+)", line)
        if named:
            venue = named.group(1)
            continue
        if line.startswith("  pipeline: "):
            venue = None
        match = HOP.match(line)
        if match and venue is not None:
            name, p50, p99, p999, top, n = match.groups()
            hops.setdefault(venue, {})[name] = {"p50_us": float(p50), "p99_us": float(p99), "p999_us": float(p999),
                                                "max_us": float(top), "n": int(n)}
    cpu = {v: round(100 * (after.get(v, 0) - before.get(v, 0)) / args.seconds, 1) for v in VENUES}
    return {"connections": connections, "hops": hops, "feed_cpu_percent": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7, help="the simulator's seed: its market and every path")
    parser.add_argument("--update-ms", type=float, default=10.0)
    parser.add_argument("--delay-ms", type=float, default=0.5)
    parser.add_argument("--jitter", type=float, default=0.8)
    parser.add_argument("--stall-every-s", type=float, default=2.0)
    parser.add_argument("--stall-ms", type=float, nargs=2, default=[50.0, 300.0])
    parser.add_argument("--out", default="redundant", help="results name (<results dir>/<name>.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-redundant-") as tmp:
        results = [run_one(n, args, Path(tmp)) for n in args.connections]
    lines = ["| connections | venue | exchange → first copy received p50 / p99 / p99.9 µs | frames (n) | "
             "feed CPU % |", "|---|---|---|---|---|"]
    for r in results:
        for venue in VENUES:
            hop = r["hops"].get(venue, {}).get("exchange_to_receive")
            figures = "-" if hop is None else f"{hop['p50_us']:,.0f} / {hop['p99_us']:,.0f} / {hop['p999_us']:,.0f}"
            lines.append(f"| {r['connections']} | {venue} | {figures} | {hop['n'] if hop else 0} | "
                         f"{r['feed_cpu_percent'][venue]} |")
    base = {v: results[0]["hops"].get(v, {}).get("exchange_to_receive") for v in VENUES}
    for r in results[1:]:
        for venue in VENUES:
            hop = r["hops"].get(venue, {}).get("exchange_to_receive")
            if hop and base[venue]:
                lines.append(f"{venue}: p99 with {results[0]['connections']} / with {r['connections']} connections: "
                             f"{base[venue]['p99_us'] / hop['p99_us']:.1f}x")
    print("\n".join(lines))
    path = write_results(args.out, {"options": vars(args), "loadavg": os.getloadavg(), "results": results})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
