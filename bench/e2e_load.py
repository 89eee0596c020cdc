"""End to end under load: the whole pipeline against a load generator at rising update rates.

Run by hand::

    python -m bench.e2e_load --seconds 12 --warmup 4 --rates 5000 10000 50000 --transports websockets picows

``--transports`` picks the feed's WebSocket client: ``websockets`` (the default config) or ``picows`` (as
``configs/tokyo.yaml``).

For each target rate (updates/s summed over six exchanges x 3 instruments x
2 channels) the load comes from :mod:`bench.loadgen` (``--load loadgen``, the
default): every venue's frames rendered once in advance with the simulator's
own protocol code, then written to the sockets at the target rate by one
process pinned to ``--loadgen-cores`` at niceness ``--loadgen-nice`` (ahead
of the feeds when it shares their core, so the load is delivered and the
feeds are what falls behind). The feeds connect to it the normal way (each
venue's ``url`` in the config points at its loopback port), subscribe, and
get frames their parsers take (sequences increasing, Coinbase
``sequence_num`` contiguous, Kraken checksums right), with a 45 bps
dislocation every 0.5 s so the detector has opportunities to emit. By
default a book changes a few levels per update (``--book ladder``); ``--book
sim`` replays the simulator's market, where every level moves every step;
``--depth-every N`` sends depth updates every N steps only (top of book every
step). One generator serves every transport and wait mode of a rate in turn.
``--load simulator`` runs the simulator instead (the supervisor starts it, as
in the demo), for comparison.

For each rate, feed transport and detector wait mode the supervisor runs the
feeds, the detector and health; once every feed is connected and after a
warm-up the script reads the per-hop histograms and counters from the board
twice and reports what was recorded in between: the rate the generator sent
(its own counters) and the rate the feeds received (their message counters),
the hop percentiles (``receive_to_emitted``: frame received -> decision in the
board's decision ring; ``seen_to_emitted``: the detector saw the change -> the
decision in the ring; ``ring_to_output``: in the ring -> the output process has
it; ``receive_to_file``: frame received -> its decision written to the events
file), the CPU of every process (psutil), the whole machine's
busy cores and, of those, other users' share. "Falls behind" shows in
``exchange_to_receive``: every frame is stamped (in ms, as the venues do) at
the millisecond it is written in, so a feed that keeps up shows a few hundred
µs there and one that cannot shows its socket's queue (ms to s), while the
board itself never queues (it keeps only the latest state). The machine is
small and shared: before each run the script waits (``--quiet-below``) for
the other users' work to drop.

Cores (defaults: the generator, the feeds, health, the output process and the
supervisor on core 0, the detector alone on core 1): ``--feed-cores``,
``--detector-cores``, ``--health-cores``, ``--output-cores`` become the config's
``cores`` keys (the supervisor pins
each process); the supervisor itself and the generator are pinned by this
script. Results go to ``<results>/<--out>`` (:func:`bench._common.results_dir`: outside the repository unless
``PIPELINE_BENCH_RESULTS`` says otherwise).
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

from bench._common import RESULTS_DIR, BusyMeter, machine_info
from pipeline.board import HOPS, Board, HistogramSnapshot, ProcessRole, read_histogram
from pipeline.errors import BoardError
from pipeline.venues import VENUES as ALL_VENUES

REPO = Path(__file__).resolve().parents[1]
VENUES = list(ALL_VENUES)
INSTRUMENTS = {"coinbase": ["BTC/USD", "ETH/USD", "BTC/USDT"], "kraken": ["BTC/USD", "ETH/USD", "BTC/USDT"]}
# seen_to_emitted / receive_to_emitted: to the decision in the board's decision ring (the detector formats and
# writes nothing; the output process follows the ring: ring_to_output)
HOP_NAMES = ("exchange_to_receive", "receive_to_publish", "publish_to_seen", "seen_to_emitted", "receive_to_emitted",
             "ring_to_output", "receive_to_file")
VENUE_OF_ID = {i + 1: name for i, name in enumerate(ALL_VENUES)}
FEED_COUNTERS = ("messages", "gaps", "resyncs", "parse_errors", "reconnects", "checksum_failures")


def frames_per_step(venues: list[str]) -> int:
    return sum(len(INSTRUMENTS.get(v, [1, 2, 3])) for v in venues) * 2


# what each --transports value sets on every venue
PATHS = {"websockets": {}, "picows": {"transport": "picows"}}


def config(board: str, rate: int, wait: str, out: Path, transport: str = "websockets", urls: dict | None = None,
           venues: list[str] = VENUES, feed_cores=(0,), detector_cores=(1,), health_cores=(0,),
           simulator_cores=(0,), output_cores=(0,)) -> dict:
    """The run's config: the venues at ``urls`` (the load generator), or the simulator when ``urls`` is None."""
    raw = {
        "board": {"name": board, "depth": 5},
        "venues": {v: {"instruments": INSTRUMENTS.get(v, ["BTC/USDT", "ETH/USDT", "SOL/USDT"]),
                       "cores": list(feed_cores),
                       **({"url": urls[v]} if urls is not None else {}),
                       **PATHS[transport]}
                   for v in venues},
        "detector": {"threshold_bps": 0.0, "wait": wait, "output": str(out), "print_opportunities": False,
                     "cores": list(detector_cores), "shadow_latencies_ms": [],
                     "output_cores": list(output_cores)},
        "health": {"interval_s": 60, "cores": list(health_cores)},
    }
    if urls is None:
        raw["simulator"] = {"seed": 3, "update_interval_ms": 1000.0 * frames_per_step(venues) / rate,
                            "dislocation_every_s": 0.5, "dislocation_bps": 45, "dislocation_ms": 150,
                            "cores": list(simulator_cores)}
    return raw


class LoadGen:
    """A :mod:`bench.loadgen` process: started pinned, its URLs read from its first line, its counters from a file."""

    def __init__(self, rate: int, venues: list[str], cores, depth_every: int = 1, tick_ms: float = 1.0,
                 book: str = "ladder", nice: int = 0):
        self.work = Path(tempfile.mkdtemp(prefix="loadgen-"))
        self.stats_file = self.work / "stats.json"
        command = [sys.executable, "-m", "bench.loadgen", "--rate", str(rate), "--venues", *venues,
                   "--depth-every", str(depth_every), "--tick-ms", str(tick_ms), "--book", book,
                   "--stats-file", str(self.stats_file), "--nice", str(nice)]
        if cores:
            command += ["--cores", *map(str, cores)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"the load generator did not start (exit code {self.proc.returncode})")
        self.info = json.loads(line)
        self.urls = self.info["urls"]
        self.pid = self.proc.pid

    def stats(self) -> dict:
        for _ in range(20):
            try:
                return json.loads(self.stats_file.read_text())
            except (OSError, ValueError):
                time.sleep(0.05)
        return {}

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        for line in reversed(out.splitlines()):
            if line.startswith('{"stats"'):
                return json.loads(line)["stats"]
        return {}


def snapshot(board: Board) -> dict:
    out = {}
    slots = {i: ProcessRole(int(board.procs[i]["role"])) for i in range(board.geometry.n_procs)}
    for slot, role in slots.items():
        for index, hop in enumerate(HOPS.get(role, ())):
            out[(slot, hop)] = read_histogram(board, slot, index)
    for name in FEED_COUNTERS:
        out[name] = sum(int(board.procs[i][name]) for i, r in slots.items() if r == ProcessRole.FEED)
    out["opportunities"] = sum(int(board.procs[i]["opportunities"]) for i, r in slots.items()
                               if r == ProcessRole.DETECTOR)
    out["time"] = time.monotonic()
    return out


def merge(later: dict, earlier: dict, hop: str):
    parts = [later[k].minus(earlier[k]) for k in later if isinstance(k, tuple) and k[1] == hop and k in earlier]
    if not parts:
        return None
    count = sum(p.count for p in parts)
    buckets = tuple(sum(b) for b in zip(*(p.buckets for p in parts)))
    return HistogramSnapshot(count, sum(p.sum_ns for p in parts), max(p.max_ns for p in parts), buckets)


def process_names(board: Board, supervisor_pid: int, loadgen_pid: int | None) -> dict:
    names = {"supervisor": supervisor_pid}
    if loadgen_pid:
        names["loadgen"] = loadgen_pid
    for i in range(board.geometry.n_procs):
        pid = int(board.procs[i]["pid"])
        if not pid:
            continue
        role = ProcessRole(int(board.procs[i]["role"]))
        if role == ProcessRole.FEED:
            names[f"feed:{VENUE_OF_ID.get(int(board.procs[i]['venue_id']), i)}"] = pid
        else:
            names[role.name.lower()] = pid
    return names


def wait_connected(board: Board, n_feeds: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        feeds = [i for i in range(board.geometry.n_procs)
                 if ProcessRole(int(board.procs[i]["role"])) == ProcessRole.FEED and int(board.procs[i]["connected"])]
        if len(feeds) >= n_feeds:
            return
        time.sleep(0.1)


def attach(name: str, timeout_s: float = 30.0) -> Board:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return Board.attach(name)
        except BoardError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_quiet(below: float, max_wait_s: float, window_s: float = 2.0) -> float:
    """Waits (at most ``max_wait_s``) until the machine's busy cores over ``window_s`` fall below ``below``;
    returns the last measurement. Between runs only the idle load generator is ours."""
    deadline = time.monotonic() + max_wait_s
    while True:
        meter = BusyMeter()
        time.sleep(window_s)
        busy = meter.busy_cores()
        if busy < below or time.monotonic() > deadline:
            return busy


def run_one(rate: int, wait: str, seconds: float, warmup: float, transport: str = "websockets",
            load: LoadGen | None = None, venues: list[str] = VENUES, cores: dict | None = None) -> dict:
    cores = cores or {}
    board_name = f"pipeline-bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="e2e-"))
    path = work / "c.yaml"
    path.write_text(yaml.safe_dump(config(board_name, rate, wait, work / "o.jsonl", transport,
                                          load.urls if load is not None else None, venues,
                                          cores.get("feeds", (0,)), cores.get("detector", (1,)),
                                          cores.get("health", (0,)), cores.get("loadgen", (0,)),
                                          cores.get("output", (0,)))))
    supervisor_cores = cores.get("supervisor", (0,))
    log = open(work / "run.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", str(path)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        board = attach(board_name)
        if supervisor_cores:            # once it has read the config (which checks the cores it may use)
            os.sched_setaffinity(proc.pid, supervisor_cores)
        wait_connected(board, len(venues), warmup)
        time.sleep(warmup)
        names = process_names(board, proc.pid, load.pid if load is not None else None)
        procs = {}
        for name, pid in names.items():
            try:
                procs[name] = psutil.Process(pid)
                procs[name].cpu_percent(None)
            except psutil.Error:
                pass
        affinity = {}
        for name, p in procs.items():
            try:
                affinity[name] = p.cpu_affinity()
            except psutil.Error:
                pass
        load_before = load.stats() if load is not None else {}
        before = snapshot(board)
        meter = BusyMeter()
        time.sleep(seconds)
        after = snapshot(board)
        load_after = load.stats() if load is not None else {}
        cpu = {}
        for name, p in procs.items():
            try:
                cpu[name] = round(p.cpu_percent(None), 1)
            except psutil.Error:
                cpu[name] = None
        busy = meter.busy_cores()
        board.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    elapsed = after["time"] - before["time"]
    result = {"target_rate": rate, "wait": wait, "transport": transport, "venues": venues,
              "load": "loadgen" if load is not None else "simulator", "seconds": round(elapsed, 2),
              "busy_cores": round(busy, 2), "loadavg": os.getloadavg(),
              # the whole machine's busy cores less this run's own processes: other users' work meanwhile
              "others_cores": round(busy - sum(v or 0 for v in cpu.values()) / 100, 2),
              "achieved_rate": round((after["messages"] - before["messages"]) / elapsed),
              "counters": {name: after[name] - before[name] for name in FEED_COUNTERS[1:] + ("opportunities",)},
              "cpu_percent": cpu, "affinity": affinity,
              "feeds_cpu_percent_total": round(sum(v or 0 for k, v in cpu.items() if k.startswith("feed:")), 1),
              "detector_cpu_percent": cpu.get("detector"), "output_cpu_percent": cpu.get("output"),
              "hops": {}}
    if load_before and load_after:
        sent = sum(v["frames_sent"] for v in load_after["venues"].values()) - \
            sum(v["frames_sent"] for v in load_before["venues"].values())
        dt = load_after["time_s"] - load_before["time_s"]
        result["sent_rate"] = round(sent / dt) if dt > 0 else None
        result["loadgen"] = {"late_ticks": load_after["late_ticks"] - load_before["late_ticks"],
                             "ticks": load_after["ticks"] - load_before["ticks"],
                             "rebased": load_after["rebased"] - load_before["rebased"],
                             "wake_us": load_after.get("wake_us"), "written_us": load_after.get("written_us"),
                             "skipped_backed_up": sum(v["skipped_backed_up"] for v in load_after["venues"].values())
                             - sum(v["skipped_backed_up"] for v in load_before["venues"].values())}
    for hop in HOP_NAMES:
        h = merge(after, before, hop)
        if h is None or not h.count:
            continue
        result["hops"][hop] = {"count": h.count, "p50_us": h.percentile_ns(0.5) / 1e3,
                               "p99_us": h.percentile_ns(0.99) / 1e3, "p999_us": h.percentile_ns(0.999) / 1e3,
                               "max_us": h.max_ns / 1e3}
    return result


def _pp(r: dict, hop: str) -> str:
    h = r["hops"].get(hop)
    if h is None:
        return "-"
    return f"{h['p50_us']:,.0f} / {h['p99_us']:,.0f}"


def _cpu(r: dict, name: str) -> str:
    value = r["cpu_percent"].get(name)
    if value is None and name == "loadgen":
        value = r["cpu_percent"].get("simulator")          # --load simulator: the load is the simulator's
    return "-" if value is None else f"{value:.0f}"


def table(results: list[dict]) -> str:
    lines = ["| target/s | feeds | wait | sent/s | reached/s | **receive→emitted** p50 / p99 µs (n) "
             "| exchange→receive | receive→publish | publish→seen | seen→emitted | ring→output | receive→file "
             "| CPU % load / feeds / detector / output / health+sup | busy cores (others) | opps | gaps / resyncs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        n = r["hops"].get("receive_to_emitted", {}).get("count", 0)
        other = (r["cpu_percent"].get("health") or 0) + (r["cpu_percent"].get("supervisor") or 0)
        counters = r["counters"]
        lines.append(
            f"| {r['target_rate']:,} | {r['transport']} | {r['wait']} | {r.get('sent_rate', 0) or 0:,} "
            f"| {r['achieved_rate']:,} | **{_pp(r, 'receive_to_emitted')}** ({n}) | {_pp(r, 'exchange_to_receive')} "
            f"| {_pp(r, 'receive_to_publish')} | {_pp(r, 'publish_to_seen')} | {_pp(r, 'seen_to_emitted')} "
            f"| {_pp(r, 'ring_to_output')} | {_pp(r, 'receive_to_file')} "
            f"| {_cpu(r, 'loadgen')} / {r['feeds_cpu_percent_total']:.0f} / {_cpu(r, 'detector')} "
            f"/ {_cpu(r, 'output')} / {other:.0f} "
            f"| {r['busy_cores']:.2f} ({r['others_cores']:.2f}) | {counters['opportunities']} "
            f"| {counters['gaps']} / {counters['resyncs']} |")
    return "\n".join(lines)


def feeds_table(results: list[dict]) -> str:
    """CPU % of each feed process per run."""
    feeds = sorted({k for r in results for k in r["cpu_percent"] if k.startswith("feed:")})
    lines = ["| target/s | feeds | wait | " + " | ".join(f[5:] for f in feeds) + " |",
             "|---|---|---|" + "---|" * len(feeds)]
    for r in results:
        lines.append(f"| {r['target_rate']:,} | {r['transport']} | {r['wait']} | "
                     + " | ".join(_cpu(r, f) for f in feeds) + " |")
    return "\n".join(lines)


def _cores(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split(",") if c != "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="measuring window per run")
    parser.add_argument("--warmup", type=float, default=4.0, help="after every feed is connected")
    parser.add_argument("--rates", type=int, nargs="+", default=[5000, 10000, 50000])
    parser.add_argument("--waits", nargs="+", default=["spin", "doorbell"])
    parser.add_argument("--transports", nargs="+", default=["websockets", "picows"], choices=sorted(PATHS),
                        help="feed WebSocket clients to compare: websockets (the default), picows (as "
                             "configs/tokyo.yaml)")
    parser.add_argument("--load", choices=("loadgen", "simulator"), default="loadgen")
    parser.add_argument("--venues", nargs="+", default=VENUES)
    parser.add_argument("--depth-every", type=int, default=1,
                        help="loadgen: depth messages every N market steps (top of book every step)")
    parser.add_argument("--book", choices=("ladder", "sim"), default="ladder",
                        help="loadgen: ladder (a few levels change per update) or sim (the simulator's market: "
                             "every level moves every step)")
    parser.add_argument("--tick-ms", type=float, default=1.0, help="loadgen: how often it writes")
    parser.add_argument("--loadgen-nice", type=int, default=-10,
                        help="loadgen niceness: below 0 it runs ahead of the feeds it shares a core with, so the "
                             "load is delivered and the feeds are what falls behind (0: plain fair share)")
    parser.add_argument("--loadgen-cores", type=_cores, default=(0,), help="comma-separated, e.g. 0")
    parser.add_argument("--feed-cores", type=_cores, default=(0,))
    parser.add_argument("--detector-cores", type=_cores, default=(1,))
    parser.add_argument("--health-cores", type=_cores, default=(0,))
    parser.add_argument("--output-cores", type=_cores, default=(0,), help="the output process (stdout, events file)")
    parser.add_argument("--supervisor-cores", type=_cores, default=(0,))
    parser.add_argument("--quiet-below", type=float, default=0.5,
                        help="before each run, wait until the machine's busy cores fall below this (0: do not wait)")
    parser.add_argument("--quiet-wait-s", type=float, default=120.0, help="... but no longer than this")
    parser.add_argument("--out", default="e2e_load.json", help=f"file name under {RESULTS_DIR}")
    args = parser.parse_args()
    cores = {"loadgen": args.loadgen_cores, "feeds": args.feed_cores, "detector": args.detector_cores,
             "health": args.health_cores, "supervisor": args.supervisor_cores, "output": args.output_cores}
    machine = machine_info()
    results = []
    loadgens = []
    for rate in args.rates:
        load = None
        if args.load == "loadgen":
            load = LoadGen(rate, args.venues, args.loadgen_cores, args.depth_every, args.tick_ms, args.book,
                           args.loadgen_nice)
        try:
            for transport in args.transports:
                for wait in args.waits:
                    before = wait_quiet(args.quiet_below, args.quiet_wait_s) if args.quiet_below else None
                    results.append(run_one(rate, wait, args.seconds, args.warmup, transport, load, args.venues,
                                           cores))
                    results[-1]["busy_cores_before"] = None if before is None else round(before, 2)
                    print(table(results[-1:]).splitlines()[-1], flush=True)
        finally:
            if load is not None:
                loadgens.append({"rate": rate, **load.info, "final": load.stop()})
    out = RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    machine["loadavg_end"] = os.getloadavg()
    options = {k: v for k, v in vars(args).items()}
    (out / args.out).write_text(json.dumps({"options": options, "machine": machine, "cores": cores,
                                            "loadgens": loadgens, "results": results}, indent=2, default=str))
    print()
    print(table(results))
    print()
    print(feeds_table(results))


if __name__ == "__main__":
    main()
