"""What the load generator alone costs: its CPU per frame at rising rates, against clients that only drain.

Run by hand::

    python -m bench.loadgen_drain --rates 10000 50000 100000 --seconds 10

For each rate, :mod:`bench.loadgen` runs pinned to ``--loadgen-cores`` (as in
``bench.e2e_load``); this process, pinned to ``--drain-cores``, opens one
connection per venue the way a feed does (WebSocket handshake, the venue's own
subscribe frames) and then reads whatever arrives in large chunks without
parsing it. The table gives the rate the generator sent (its own counters),
the bytes read, and the generator's CPU (psutil): the load side's cost, without
the feeds.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import selectors
import socket
import time
from urllib.parse import urlsplit

import psutil

from bench._common import RESULTS_DIR, machine_info
from bench.e2e_load import INSTRUMENTS, LoadGen
from pipeline.venues import VENUES, load_venue

DEPTH = 5


def masked(text: str) -> bytes:
    """One masked client text frame (the mask is zero, which RFC 6455 allows)."""
    payload = text.encode()
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


def connect(name: str, url: str) -> socket.socket:
    """Handshake and subscribe as the feed would; returns the socket, non-blocking."""
    venue = load_venue(name)
    symbols = [venue.native_symbol(i) for i in INSTRUMENTS.get(name, ["BTC/USDT", "ETH/USDT", "SOL/USDT"])]
    split = urlsplit(venue.build_url(url, symbols, DEPTH))
    sock = socket.create_connection((split.hostname, split.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {split.path or '/'} HTTP/1.1\r\nHost: {split.hostname}:{split.port}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"{name}: closed during the handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"{name}: {head[:80]!r}")
    for frame in venue.build_subscribe(symbols, DEPTH):
        sock.sendall(masked(frame))
    sock.setblocking(False)
    return sock


def drain(socks: list, seconds: float) -> int:
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    total = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(0.1):
            try:
                data = key.fileobj.recv(1 << 20)
            except BlockingIOError:
                continue
            total += len(data)
    selector.close()
    return total


def frames_sent(stats: dict) -> int:
    return sum(v["frames_sent"] for v in stats.get("venues", {}).values())


def measure(rate: int, seconds: float, warmup: float, venues: list, cores, nice: int, book: str) -> dict:
    load = LoadGen(rate, venues, cores, book=book, nice=nice)
    try:
        socks = [connect(name, url) for name, url in load.urls.items()]
        drain(socks, warmup)
        proc = psutil.Process(load.pid)
        proc.cpu_percent(None)
        before = load.stats()
        read = drain(socks, seconds)
        after = load.stats()
        cpu = proc.cpu_percent(None)
        for sock in socks:
            sock.close()
    finally:
        final = load.stop()
    dt = after["time_s"] - before["time_s"]
    sent = (frames_sent(after) - frames_sent(before)) / dt
    return {"target_rate": rate, "sent_rate": round(sent), "read_mb_per_s": round(read / seconds / 1e6, 2),
            "loadgen_cpu_percent": round(cpu, 1),
            "loadgen_us_per_frame": round(cpu / 100 * 1e6 / sent, 2) if sent else None,
            "late_ticks": after["late_ticks"] - before["late_ticks"], "ticks": after["ticks"] - before["ticks"],
            "rebased": after["rebased"] - before["rebased"], "render_s": load.info["render_s"],
            "frames_per_step": load.info["frames_per_step"], "final": final}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[5000, 10000, 50000, 100000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--venues", nargs="+", default=list(VENUES))
    parser.add_argument("--book", choices=("ladder", "sim"), default="ladder")
    parser.add_argument("--loadgen-cores", type=int, nargs="*", default=[0])
    parser.add_argument("--drain-cores", type=int, nargs="*", default=[1])
    parser.add_argument("--nice", type=int, default=0)
    args = parser.parse_args()
    if args.drain_cores:
        os.sched_setaffinity(0, args.drain_cores)
    machine = machine_info()
    results = [measure(rate, args.seconds, args.warmup, args.venues, args.loadgen_cores, args.nice, args.book)
               for rate in args.rates]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    machine["loadavg_end"] = os.getloadavg()
    (RESULTS_DIR / "loadgen_drain.json").write_text(json.dumps({"options": vars(args), "machine": machine,
                                                                "results": results}, indent=2, default=str))
    print("| target/s | sent/s | read MB/s | loadgen CPU % | µs per frame | late ticks / ticks |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['target_rate']:,} | {r['sent_rate']:,} | {r['read_mb_per_s']} | {r['loadgen_cpu_percent']} "
              f"| {r['loadgen_us_per_frame']} | {r['late_ticks']} / {r['ticks']} |")


if __name__ == "__main__":
    main()
