"""Command line: ``run.py --config FILE [--duration S]`` and the subcommands.

The only module that reads argv; exit status 2 for usage and config errors,
with the message and no traceback. Each subcommand lives in its own module
with a ``main(argv) -> int``; this table is the one place that names them.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import sys

from pipeline.errors import ConfigError, PipelineError

# subcommand -> "module:function"; the function takes the remaining argv and returns an exit status
SUBCOMMANDS = {
    "decode": "pipeline.commands.decode:main",
    "top": "pipeline.commands.top:main",
    "report": "pipeline.commands.report:main",
    "doctor": "pipeline.commands.doctor:main",
    "recording": "pipeline.commands.recording:main",
    "replay": "pipeline.commands.replay:main",
    "two-box-demo": "pipeline.commands.two_box_demo:main",
    "simulate": "pipeline.commands.simulate:main",
    "instruments": "pipeline.commands.instruments:main",
}


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", description="Run the market-data pipeline and arbitrage detector.",
        epilog="Subcommands: " + ", ".join(f"run.py {name} --help" for name in SUBCOMMANDS))
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/demo.yaml")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop cleanly after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--console", action="store_true",
                        help="show the live console (as `run.py top`) instead of scrolling output; "
                             "the output goes to a log file next to detector.output")
    parser.add_argument("--verbose", action="store_true",
                        help="print every event (update, shadow) and the full health block each interval")
    parser.add_argument("--append", action="store_true",
                        help="append this run's events to detector.output itself, as before (the records still "
                             "carry the run id; `run.py report` splits them). Default: each run writes its own "
                             "file, <stem>-<run id><ext> beside detector.output, and detector.output becomes a "
                             "link to the latest")
    return parser


def main(argv: list[str] | None = None, stop_requested: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from pipeline.venues import extra_problems
    problems = extra_problems()
    if problems:
        sys.stderr.write("".join(f"run.py: {p}\n" for p in problems))
        return 2
    if argv and argv[0] in SUBCOMMANDS:
        module, function = SUBCOMMANDS[argv[0]].split(":")
        command = getattr(importlib.import_module(module), function)
        gc.enable()                         # run.py turns it off while the modules load
        return command(argv[1:])
    args = run_parser().parse_args(argv)
    if args.duration is not None and args.duration <= 0:
        run_parser().error("--duration must be positive")
    from pipeline.config import load_config
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"run.py: {exc}\n")
        return 2
    if args.verbose:
        import dataclasses
        config = dataclasses.replace(config, verbose=True)
    from pipeline.supervisor.core import Supervisor
    try:
        return Supervisor(config, args.duration, stop_requested=stop_requested, console=args.console,
                          append=args.append).run()
    except PipelineError as exc:
        sys.stderr.write(f"run.py: {exc}\n")
        return 1
