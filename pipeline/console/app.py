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

import copy
import os
import select
import signal
import time

from pipeline.board import pid_alive
from pipeline.console.events import EventBook, JsonlTail
from pipeline.console.render import View, render
from pipeline.console.snapshot import BoardSource

KEYS_HELP = "keys: f/b next/previous instrument, p pause, q quit"


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
