"""``run.py simulate --config FILE``: only the exchange simulator, for clients of your own.

Starts the simulated exchanges of the config's venues (those without a
``url``) on the simulator's host (loopback by default), prints one line per
venue with its WebSocket URL and its REST base, and serves until Ctrl-C
(or ``--duration``). No board, feeds or detector: point ccxt, cryptofeed, a
bot or a hand-written client at the printed URLs. ``--rules`` switches on the
venues' server-side rules (HTX closes after two missed pongs, idle timeouts,
Binance's 5 messages a second), which the demo leaves off.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from pipeline.sim.protocol import RULE_NAMES

# the other URL forms each venue accepts besides the one printed
OTHER_FORMS = {"binance": "also /ws (bare payloads), /ws/<stream>, /stream?streams=<a>/<b>",
               "htx": "also /feed"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py simulate",
                                description="Run only the exchange simulator and print each venue's URLs.")
    p.add_argument("--config", required=True, help="YAML config; its venues without a url are simulated")
    p.add_argument("--port", type=int, default=0, metavar="BASE",
                   help="first port; the venues take consecutive ports in config order (default: any free port)")
    p.add_argument("--rules", default="", metavar="NAMES",
                   help=f"comma-separated server-side rules to enforce: {', '.join(RULE_NAMES)}, or all")
    p.add_argument("--tls", nargs=2, metavar=("CERTFILE", "KEYFILE"),
                   help="serve wss:// and https:// with this certificate (clients that refuse ws://, e.g. cryptofeed)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds (default: run until Ctrl-C)")
    return p


def lines(simulator, urls: dict) -> list[str]:
    out = []
    for name, url in urls.items():
        server = simulator.exchanges[name]
        symbols = ", ".join(sorted(server.instrument_of))
        extra = f"  ({OTHER_FORMS[name]})" if name in OTHER_FORMS else ""
        out.append(f"{name:<9} ws {url}  rest {server.rest_base(simulator.host)}  symbols {symbols}{extra}")
    return out


async def serve(config, base_port: int, rules: tuple, duration: float | None, tls=None) -> None:
    from pipeline.sim.server import build_simulator
    simulator = build_simulator(config, rules)
    ports = ({name: base_port + i for i, name in enumerate(simulator.exchanges)} if base_port else None)
    context = None
    if tls:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
    urls = await simulator.start(ports, context)
    for line in lines(simulator, urls):
        print(line, flush=True)
    print("simulating; Ctrl-C stops", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    try:
        await simulator.run(stop)
    finally:
        await simulator.close()


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    rules = tuple(r for r in args.rules.split(",") if r)
    if rules == ("all",):
        rules = RULE_NAMES
    unknown = set(rules) - set(RULE_NAMES)
    if unknown:
        parser().error(f"unknown rules {sorted(unknown)} (known: {', '.join(RULE_NAMES)})")
    from pipeline.config import load_config
    from pipeline.errors import ConfigError
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"run.py simulate: {exc}\n")
        return 2
    if not any(venue.url is None for venue in config.venues):
        sys.stderr.write("run.py simulate: every venue of this config has a url; none is simulated\n")
        return 2
    try:
        asyncio.run(serve(config, args.port, rules, args.duration, args.tls))
    except OSError as exc:
        sys.stderr.write(f"run.py simulate: {exc}\n")
        return 1
    return 0
