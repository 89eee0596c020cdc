"""Opportunities under faults: one connection of each venue dropped or stalled every 10 s, against the same run
without faults (same seed).

Run by hand::

    python -m bench.redundant_opportunities --minutes 10      # ~3 x 10 minutes of wall time

Writes a demo-like config (binance, bybit and okx, each over ``connections: 2``; ``simulator.paths`` with a
small delay and no random stalls or drops; the demo's seed and dislocation sizes) and runs ``run.py --config ...
--duration`` three times in sequence, each with the whole supervisor (simulator, feeds, detector, output):

* **faulted**: ``simulator.paths.fault_every_s`` (every ``--every-s`` each venue's oldest open connection is
  dropped or stalled ``--stall-ms``, alternately, never while the other is down);
* **clean**: no faults;
* **clean again**: no faults either: the simulator runs in real time, so two runs of one seed already differ a
  little (the market steps when the clock says, quotes reach the detector a little earlier or later); this is
  the noise the faulted run is compared against.

The dislocations that make the opportunities are scripted (``simulator.scripted_dislocations``: the demo's
sizes and mean gap, drawn once from the seed, at the same times after the simulator's start in every run):
the market's random dislocations are drawn from the one generator its steps and quote noise draw from, at
wall-clock times, so two runs of one seed part after the first of them and no open of one run has a partner
in the other (``--dislocations random`` runs them anyway, to show it).

Each run's opportunities (its ``open`` events) are compared with the first clean run's: an open matches one of
the other run with the same (instrument, buy venue, sell venue) whose time since its run's start is within
``--tolerance-ms`` (the two runs' starts aligned by the offset that matches the most opens, searched among their
first opens). Reported per pair: opens in each, matched, only in one, and each run's expected-profit sum
(``profit_quote`` of the opens). From the faulted run: what the simulator's fault rotation did per venue (its
log line at stop) and what the feeds saw (reconnects and failovers, their health lines at stop).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench._common import RESULTS_DIR, percentile, write_results

REPO = Path(__file__).resolve().parents[1]
VENUES = ("binance", "bybit", "okx")
INSTRUMENTS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
ROTATION = re.compile(r"simulator INFO (\w+): fault rotation every \S+: (\d+) dropped, (\d+) stalled \S+, "
                      r"(\d+) skipped")
FEED = re.compile(r"feed (\w+) .* reconnects (\d+) .*paths first \S+ .* reconnects (\S+) failovers (\d+)")


def write_config(path: Path, args, faulted: bool) -> Path:
    """The run's config: the demo's simulator and detector settings, binance/bybit/okx over two connections."""
    paths = {"delay_ms": args.delay_ms, "jitter": 0.5, "stall_every_s": 0, "disconnect_every_s": 0}
    if faulted:
        paths.update(fault_every_s=args.every_s, fault_stall_ms=args.stall_ms)
    simulator = {"seed": args.seed, "update_interval_ms": 20, "dislocation_every_s": 1.0, "dislocation_bps": 45,
                 "dislocation_ms": 150, "quirks": ["late_depth", "shortest_numbers", "resend_unchanged"],
                 "paths": paths}
    if args.dislocations == "scripted":
        simulator.update(random_dislocations=False, scripted_dislocations=script(args))
    config = {
        "board": {"name": f"pipeline-bench-opps-{os.getpid()}", "depth": 5},
        "simulator": simulator,
        "venues": {venue: {"instruments": INSTRUMENTS, "connections": 2} for venue in VENUES},
        "detector": {"threshold_bps": 0.0, "staleness_ms": 2000, "output": str(path.parent / "opportunities.jsonl"),
                     "print_opportunities": False},
        "health": {"interval_s": 5},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    sys.path.insert(0, str(REPO))
    from pipeline.config import load_config
    load_config(path)                              # a ConfigError here is this script's bug: say it at once
    return path


def script(args) -> list[dict]:
    """The dislocations of every run: the demo's (45 bps x 0.6..1.4, 150 ms x 0.3..1.7, 1 s apart on average),
    drawn from the seed, from 5 s after the start (the feeds connected) to the end."""
    rng = random.Random(f"dislocations:{args.seed}")
    out, at_s = [], 5.0
    while at_s < args.minutes * 60:
        out.append({"at_s": round(at_s, 3), "exchange": rng.choice(VENUES), "instrument": rng.choice(INSTRUMENTS),
                    "bps": round(45 * rng.choice((-1.0, 1.0)) * rng.uniform(0.6, 1.4), 2),
                    "duration_ms": round(150 * rng.uniform(0.3, 1.7), 1)})
        at_s += rng.expovariate(1.0)
    return out


def run(name: str, args, faulted: bool) -> dict:
    """One ``run.py`` run; its opens (time since the run's first event, s) and what its log says."""
    folder = RESULTS_DIR / "redundant_opportunities" / name
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder / "config.yaml", args, faulted)
    started = time.time()
    with open(folder / "stdout.txt", "w") as out, open(folder / "stderr.txt", "w") as err:
        done = subprocess.run([sys.executable, "run.py", "--config", str(config), "--duration",
                               str(args.minutes * 60)], cwd=REPO, stdout=out, stderr=err,
                              timeout=args.minutes * 60 + 300)
    return read(folder) | {"exit": done.returncode, "wall_s": round(time.time() - started, 1)}


def read(folder: Path) -> dict:
    """What one run left in ``folder``: its opens and what its log says."""
    stdout, stderr = (folder / "stdout.txt").read_text(), (folder / "stderr.txt").read_text()
    events = [json.loads(line) for line in (folder / "opportunities.jsonl").read_text().splitlines() if line]
    first_ns = events[0]["time_ns"] if events else 0
    opens = [((e["instrument"], e["buy_exchange"], e["sell_exchange"]), (e["time_ns"] - first_ns) / 1e9,
              e["profit_quote"], e["quote_currency"]) for e in events if e["event"] == "open"]
    rotation = {m[1]: {"dropped": int(m[2]), "stalled": int(m[3]), "skipped": int(m[4])}
                for m in ROTATION.finditer(stderr)}
    feeds = {m[1]: {"reconnects": int(m[2]), "reconnects_by_path": m[3], "failovers": int(m[4])}
             for m in FEED.finditer(stdout.split("--- health at stop")[-1])}
    summary = next((line for line in stdout.splitlines() if line.startswith("detector summary")), "")
    return {"name": folder.name, "opens": opens, "rotation": rotation, "feeds": feeds, "summary": summary,
            "folder": str(folder)}


def match(a: list, b: list, tolerance_s: float, offset_s: float) -> list[float]:
    """Opens of ``a`` paired one-to-one with opens of ``b`` of the same key within ``tolerance_s`` (``b``'s
    times shifted by ``offset_s``), greedily in time order, each with the nearest still unpaired: the time
    differences of the pairs (``b``'s less ``a``'s), s."""
    free: dict = {}
    for key, t, *_ in b:
        free.setdefault(key, []).append(t + offset_s)
    matched = []
    for key, t, *_ in a:
        candidates = free.get(key, [])
        best = min(range(len(candidates)), key=lambda i: abs(candidates[i] - t), default=None)
        if best is not None and abs(candidates[best] - t) <= tolerance_s:
            matched.append(candidates.pop(best) - t)
    return matched


def compare(a: dict, b: dict, tolerance_s: float) -> dict:
    """``a``'s opens against ``b``'s: the offset that lines up one of their first 10 opens and matches the most,
    then moved by the median difference of its pairs (the first events of two runs may be different ones)."""
    offsets = {ta - tb for ka, ta, *_ in a["opens"][:10] for kb, tb, *_ in b["opens"][:10] if ka == kb} or {0.0}
    offset_s = max(sorted(offsets), key=lambda o: (len(match(a["opens"], b["opens"], tolerance_s, o)), -abs(o)))
    offset_s -= percentile(sorted(match(a["opens"], b["opens"], tolerance_s, offset_s)), 50) if a["opens"] else 0
    differences = sorted(abs(d) for d in match(a["opens"], b["opens"], tolerance_s, offset_s))
    matched = len(differences)
    profit = {run["name"]: profit_of(run) for run in (a, b)}
    return {"runs": f"{a['name']} vs {b['name']}", "opens": [len(a["opens"]), len(b["opens"])], "matched": matched,
            "only_in": [len(a["opens"]) - matched, len(b["opens"]) - matched], "offset_ms": round(offset_s * 1e3, 1),
            "difference_ms": {q: round(percentile(differences, q) * 1e3, 2) for q in (50, 99, 100)},
            "profit": [profit[a["name"]], profit[b["name"]]]}


def profit_of(run: dict) -> dict:
    total: dict = {}
    for *_, profit, quote in run["opens"]:
        total[quote] = round(total.get(quote, 0.0) + profit, 4)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of each of the three runs")
    parser.add_argument("--every-s", type=float, default=10.0, help="simulator.paths.fault_every_s of the faulted run")
    parser.add_argument("--stall-ms", type=float, default=300.0, help="simulator.paths.fault_stall_ms")
    parser.add_argument("--delay-ms", type=float, default=0.3, help="simulator.paths.delay_ms of every run")
    parser.add_argument("--seed", type=int, default=7, help="simulator.seed of every run")
    parser.add_argument("--dislocations", choices=("scripted", "random"), default="scripted",
                        help="the same scripted dislocations in every run, or the market's random ones")
    parser.add_argument("--tolerance-ms", type=float, default=250.0,
                        help="two opens of one pair match when their times since start differ by at most this")
    parser.add_argument("--out", default="redundant_opportunities", help="results name (<results dir>/<name>.json)")
    parser.add_argument("--from-runs", action="store_true",
                        help="compare again what the last three runs left in <results dir>, without running")
    args = parser.parse_args()
    runs = []
    for name, with_faults in (("faulted", True), ("clean", False), ("clean_again", False)):
        if args.from_runs:
            runs.append(read(RESULTS_DIR / "redundant_opportunities" / name))
            continue
        print(f"{name}: {args.minutes:g} min ...", flush=True)
        runs.append(run(name, args, with_faults))
        print(f"  exit {runs[-1]['exit']}, {len(runs[-1]['opens'])} opens; {runs[-1]['summary']}", flush=True)
    faulted, clean, again = runs
    tolerance_s = args.tolerance_ms / 1e3
    pairs = [compare(faulted, clean, tolerance_s), compare(again, clean, tolerance_s)]
    lines = ["| runs | opens | matched | only in one | offset ms | apart p50 / p99 / max ms | expected profit |",
             "|---|---|---|---|---|---|---|"]
    for p in pairs:
        apart = " / ".join(str(v) for v in p["difference_ms"].values())
        lines.append(f"| {p['runs']} | {p['opens'][0]} / {p['opens'][1]} | {p['matched']} | "
                     f"{p['only_in'][0]} / {p['only_in'][1]} | {p['offset_ms']} | {apart} | "
                     f"{' / '.join(', '.join(f'{v:.2f} {q}' for q, v in side.items()) for side in p['profit'])} |")
    lines += ["", "| venue (faulted run) | dropped | stalled | skipped | feed reconnects (by path) | failovers |",
              "|---|---|---|---|---|---|"]
    for venue in VENUES:
        r, f = faulted["rotation"].get(venue, {}), faulted["feeds"].get(venue, {})
        lines.append(f"| {venue} | {r.get('dropped')} | {r.get('stalled')} | {r.get('skipped')} | "
                     f"{f.get('reconnects')} ({f.get('reconnects_by_path')}) | {f.get('failovers')} |")
    print("\n".join(lines))
    results = [{k: v for k, v in r.items() if k != "opens"} | {"open_count": len(r["opens"])} for r in runs]
    path = write_results(args.out, {"options": vars(args), "loadavg": os.getloadavg(), "runs": results,
                                    "pairs": pairs})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
