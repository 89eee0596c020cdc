"""``run.py top``: the live console of a running pipeline, attached to its board by name, by its
config, or (without either) to the one pipeline running here; ``--once`` prints one screen as text.

The console itself (its refresh loop, what it reads and draws) is :mod:`pipeline.console`; this module
finds the board and the config to watch and turns what cannot be found into exit status 2.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time

from pipeline.console.app import KEYS_HELP, Console, Setup, describe
from pipeline.console.events import EventBook, JsonlTail
from pipeline.console.render import View, render_text
from pipeline.console.snapshot import BoardSource


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py top", description="Live console of a running pipeline. " + KEYS_HELP)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--board", help="shared-memory name of the board (board.name in the config)")
    where.add_argument("--config", help="the config the pipeline runs with")
    parser.add_argument("--events", help="the detector's JSON-lines file (default: detector.output of the config)")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between redraws (default 0.25)")
    parser.add_argument("--once", action="store_true", help="print one screen as plain text and exit")
    return parser


def config_of_running(supervisor_pid: int):
    """The config the supervisor with this pid was started with, or (None, "")."""
    import psutil

    from pipeline.config import load_config
    try:
        proc = psutil.Process(supervisor_pid)
        cmdline, cwd = proc.cmdline(), proc.cwd()
    except psutil.Error:
        return None, ""
    # the supervisor's title (``pipeline: supervisor --config FILE``) replaces its command line
    match = re.search(r"--config[= ](\S+)", " ".join(cmdline))
    path = match.group(1) if match else None
    if path is None:
        return None, ""
    try:
        return load_config(os.path.join(cwd, path)), cwd
    except Exception:      # noqa: BLE001 - an unreadable config only costs the names
        return None, ""


def _cwd_of(pid: int) -> str:
    import psutil
    try:
        return psutil.Process(pid).cwd()
    except psutil.Error:
        return ""


def _the_running_board() -> str:
    """Without ``--board`` or ``--config``: the one board a running pipeline holds, or what to pass instead."""
    from pipeline.board import running_boards
    from pipeline.errors import BoardError
    names = running_boards()
    if len(names) == 1:
        return names[0]
    if not names:
        raise BoardError("no pipeline is running (no quote board held by a live supervisor); start one with "
                         "python run.py --config FILE")
    raise BoardError(f"{len(names)} pipelines are running: {', '.join(names)}; pick one with --board NAME")


def open_setup(args) -> Setup:
    from pipeline.board import Board
    rows = fees = events = None
    if args.config:
        from pipeline.config import load_config
        config = load_config(args.config)
        board = Board.attach(config.board.name)
        # a relative detector.output is relative to where the pipeline runs, not to where top runs
        rows, fees, events = describe(config, _cwd_of(int(board.header["supervisor_pid"])))
    else:
        board = Board.attach(args.board or _the_running_board())
        config, cwd = config_of_running(int(board.header["supervisor_pid"]))
        if config is not None and config.board.name == board.name:
            rows, fees, events = describe(config, cwd)
    return Setup(board, rows, fees, args.events or events, int(board.header["supervisor_pid"]))


def main(argv: list[str]) -> int:
    from pipeline.errors import BoardError, ConfigError
    # run.py catches SIGINT from its first line for the supervisor's clean stop; top just quits on Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    if args.interval <= 0:
        build_parser().error("--interval must be positive")
    try:
        setup = open_setup(args)
    except ConfigError as exc:
        sys.stderr.write(f"run.py top: {exc}\n")
        return 2
    except BoardError as exc:
        sys.stderr.write(f"run.py top: {'--board: ' if args.board else ''}{exc}\n")
        return 2
    try:
        if args.once:
            return print_once(setup)
        return Console(setup, interval_s=args.interval).run(sys.stdout, sys.stdin.fileno())
    finally:
        setup.board.close()


def print_once(setup: Setup) -> int:
    source = BoardSource(setup.board, setup.rows, setup.fees)
    book = EventBook(since_ns=int(setup.board.header["created_ns"]))
    if setup.events_path:
        tail = JsonlTail(setup.events_path)
        for record in tail.read():
            book.apply(record)
        tail.close()
    source.read()
    time.sleep(0.5)        # two reads half a second apart give the rates
    now = time.time_ns()
    width = os.get_terminal_size().columns if sys.stdout.isatty() else 80
    sys.stdout.write(render_text(source.read(now), book, now, View(width=width, height=1000)) + "\n")
    return 0
