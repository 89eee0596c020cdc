"""``run.py top [--board NAME | --config FILE]``: the live console, and its in-process form
for ``run.py --config FILE --console``.

Attaches to the board read-only, follows the detector's JSON-lines file, and
redraws a few times a second with rich (colour, the alternate screen, and
nothing else: the three keys are read with the terminal in cbreak mode).
Without ``--config`` it finds the running supervisor's config from its command
line (the board header holds its pid), so rows are named and fees known;
failing that, rows are named from the ids on the board.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import select
import signal
import sys
import time

from pipeline.board import pid_alive
from pipeline.console.events import EventBook, JsonlTail
from pipeline.console.render import View, render, render_text
from pipeline.console.snapshot import BoardSource

KEYS_HELP = "keys: f/b next/previous instrument, p pause, q quit"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py top", description="Live console of a running pipeline. " + KEYS_HELP)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--board", help="shared-memory name of the board (board.name in the config)")
    where.add_argument("--config", help="the config the pipeline runs with")
    parser.add_argument("--events", help="the detector's JSON-lines file (default: detector.output of the config)")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between redraws (default 0.25)")
    parser.add_argument("--once", action="store_true", help="print one screen as plain text and exit")
    return parser


class Setup:
    """What the console needs to know about the pipeline it watches."""

    def __init__(self, board, rows=None, fees=None, events_path=None, supervisor_pid=0):
        self.board, self.rows, self.fees, self.events_path = board, rows, fees, events_path
        self.supervisor_pid = supervisor_pid


def describe(config, base_dir: str = "") -> tuple[list, dict, str]:
    """Rows, (venue, instrument) -> fee, and the events file of a config."""
    from pipeline.board import plan_rows
    from pipeline.venues import DEFAULT_TAKER_FEE_BPS
    rows = plan_rows(config)
    venues = {("", venue.name): venue for venue in config.venues}
    bridge = getattr(config, "bridge", None)
    if bridge is not None:     # a row mirrored from another box has that box's venue record (fees)
        for box, venue, _ in bridge.remote_rows():
            venues[(box, venue.name)] = venue
    fees = {}
    for r in rows:             # keyed by label, as the rows and the events name venues
        venue = venues.get((r.box, r.venue))
        fees[(r.label, r.instrument)] = (venue.fee_bps(r.instrument) if venue is not None
                                         else DEFAULT_TAKER_FEE_BPS.get(r.venue, 0.0))
    output = config.detector.output
    if output and base_dir and not os.path.isabs(output):
        output = os.path.join(base_dir, output)
    return rows, fees, output


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


class Console:
    """The refresh loop: read board and events, draw, handle keys."""

    def __init__(self, setup: Setup, interval_s: float = 0.25, on_quit=None):
        self.setup = setup
        self.interval_s = interval_s
        self.on_quit = on_quit
        self.source = BoardSource(setup.board, setup.rows, setup.fees)
        self.book = EventBook(since_ns=int(setup.board.header["created_ns"]))
        self.tail = JsonlTail(setup.events_path) if setup.events_path else None
        self.instrument_index = 0
        self.paused = False
        self.stop = False
        self.quit_requested = False      # ``q`` (not SIGTERM): with --console it stops the pipeline
        self.stopped_reason = ""
        self._frozen = None

    def key(self, key: str) -> None:
        instruments = self.source.instruments
        if key == "q":
            self.stop = self.quit_requested = True
        elif key == "p":
            self.paused = not self.paused
        elif key in ("f", "\t") and instruments:
            self.instrument_index = (self.instrument_index + 1) % len(instruments)
        elif key == "b" and instruments:
            self.instrument_index = (self.instrument_index - 1) % len(instruments)

    def supervisor_alive(self) -> bool:
        pid = self.setup.supervisor_pid
        return not pid or pid_alive(pid)

    def run(self, out, key_fd: int) -> int:
        """Draw on ``out`` until ``q``, SIGTERM or the supervisor's exit; keys from ``key_fd`` (-1: none)."""
        from rich.console import Console as RichConsole
        from rich.live import Live
        console = RichConsole(file=out, force_terminal=out.isatty() or None)
        saved = None
        if key_fd >= 0 and os.isatty(key_fd):
            import termios
            import tty
            saved = termios.tcgetattr(key_fd)
            tty.setcbreak(key_fd)
        previous_term = signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop", True))
        try:
            with Live(console=console, screen=True, auto_refresh=False, transient=False) as live:
                try:
                    while not self.stop:
                        self.tick(live, console)
                        if not self.supervisor_alive():
                            self.stopped_reason = (f"the pipeline stopped (supervisor pid "
                                                   f"{self.setup.supervisor_pid} exited)")
                            break
                        self.wait_keys(key_fd)
                except KeyboardInterrupt:      # Ctrl-C is as good as q for a standalone top
                    self.stop = True
        finally:
            if saved is not None:
                import termios
                termios.tcsetattr(key_fd, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGTERM, previous_term)
            if self.tail is not None:
                self.tail.close()
        if self.stopped_reason:
            out.write(f"run.py top: {self.stopped_reason}\n")
            out.flush()
        if self.quit_requested and self.on_quit is not None:
            self.on_quit()
        return 0

    def tick(self, live, console) -> None:
        if self.tail is not None:
            for record in self.tail.read():
                self.book.apply(record)
        now = time.time_ns()
        snapshot = self.source.read(now)
        view = View(self.current_instrument(), self.paused, console.size.width, console.size.height)
        if not self.paused:
            self._frozen = None
            live.update(render(snapshot, self.book, now, view), refresh=True)
            return
        if self._frozen is None:          # the screen as it was when paused (reading goes on underneath)
            self._frozen = (snapshot, copy.deepcopy(self.book), now)
        live.update(render(*self._frozen, view), refresh=True)

    def current_instrument(self) -> str | None:
        instruments = self.source.instruments
        return instruments[self.instrument_index % len(instruments)] if instruments else None

    def wait_keys(self, key_fd: int) -> None:
        deadline = time.monotonic() + self.interval_s
        while not self.stop:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if key_fd < 0:
                time.sleep(remaining)
                return
            ready, _, _ = select.select([key_fd], [], [], remaining)
            if ready:
                data = os.read(key_fd, 64)
                if not data:            # stdin closed: no more keys, keep drawing
                    key_fd = -1
                    continue
                for key in data.decode(errors="ignore"):
                    self.key(key)
                return                  # redraw at once after a key


def run_in_supervisor(spec, config, terminal_fd: int, key_fd: int) -> None:
    """The console as a child of the supervisor (``--console``): draws on the terminal the
    supervisor kept aside while everyone else's output goes to the log; ``q`` stops the pipeline."""
    from pipeline.runtime import run_child
    run_child(spec, lambda stop: _console_body(spec, config, terminal_fd, key_fd, stop))


def _console_body(spec, config, terminal_fd: int, key_fd: int, stop) -> None:
    from pipeline.board import Board
    board = Board.attach(spec.board_name, spec.depth)
    rows, fees, events = describe(config)
    setup = Setup(board, rows, fees, events, spec.supervisor_pid)
    out = os.fdopen(terminal_fd, "w", closefd=False)
    console = Console(setup, on_quit=lambda: os.kill(spec.supervisor_pid, signal.SIGINT))
    console.stop = bool(stop)         # a SIGTERM before the loop starts; during it, the loop's own handler
    try:
        console.run(out, key_fd)
    finally:
        board.close()
