"""Command line: ``run.py --config FILE [--duration S]`` and ``run.py decode``.

The only module that reads argv; exit status 2 for usage and config errors,
with the message and no traceback.
"""
from __future__ import annotations

import argparse
import sys

from pipeline.errors import ConfigError, PipelineError


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", description="Run the market-data pipeline and arbitrage detector.",
        epilog="Also: run.py decode --exchange NAME [FILE|-] decodes captured frames.")
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/demo.yaml")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop cleanly after this many seconds (default: run until Ctrl-C)")
    return parser


def decode_parser() -> argparse.ArgumentParser:
    from pipeline.venues import VENUES
    parser = argparse.ArgumentParser(
        prog="run.py decode", description="Decode raw WebSocket frames (one per line) through the feed's parser "
                                          "and book code; print one JSON object per book change.")
    parser.add_argument("--exchange", required=True, choices=VENUES)
    parser.add_argument("--depth", type=int, default=5, help="levels to print per side (default 5)")
    parser.add_argument("file", nargs="?", default="-", help="capture file, or - for standard input")
    return parser


def main(argv: list[str] | None = None, stop_requested: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "decode":
        args = decode_parser().parse_args(argv[1:])
        from pipeline.decode import decode_stream
        if args.file == "-":
            return decode_stream(args.exchange, sys.stdin, sys.stdout, sys.stderr, args.depth)
        try:
            with open(args.file, "r", encoding="utf-8", errors="replace") as stream:
                return decode_stream(args.exchange, stream, sys.stdout, sys.stderr, args.depth)
        except OSError as exc:
            sys.stderr.write(f"run.py decode: cannot read {args.file}: {exc.strerror}\n")
            return 2
    args = run_parser().parse_args(argv)
    if args.duration is not None and args.duration <= 0:
        run_parser().error("--duration must be positive")
    from pipeline.config import load_config
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"run.py: {exc}\n")
        return 2
    from pipeline.supervisor.core import Supervisor
    try:
        return Supervisor(config, args.duration, stop_requested=stop_requested).run()
    except PipelineError as exc:
        sys.stderr.write(f"run.py: {exc}\n")
        return 1
