"""The supervisor: creates the board, starts, pins, names and watches every
process, restarts what dies with backoff, and unlinks the board on the way out.

Children are forked (``multiprocessing`` "fork" context): they inherit the
doorbell eventfd, and each attaches to the board by name and verifies its
layout. The supervisor itself runs no threads and no event loop, so forking
is safe. It is the only process that creates or unlinks the segment.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from pipeline.board import Board, foreign_segment, remove_leftover
from pipeline.board.doorbell import Doorbell
from pipeline.board.layout import ProcessRole
from pipeline.board.stats import ProcStats
from pipeline.errors import PipelineError
from pipeline.files import FILE_MODE
from pipeline.runtime import ProcessSpec, RowAssignment
from pipeline.venues import VENUE_IDS, native_symbols

log = logging.getLogger("pipeline.supervisor")

_CTX = multiprocessing.get_context("fork")
STOP_TIMEOUT_S = 5.0


@dataclass
class Child:
    spec: ProcessSpec
    target: object
    args: tuple
    process: multiprocessing.Process | None = None
    restarts: list = field(default_factory=list)      # monotonic times of restarts
    restart_at: float | None = None
    failed: bool = False
    consecutive: int = 0
    started_at: float = 0.0


def plan_rows(config) -> list[RowAssignment]:
    """One row per (exchange, instrument), in config order; then the rows mirrored from other boxes."""
    rows = []
    for venue in config.venues:
        symbols = native_symbols(venue)
        for instrument in venue.instruments:
            rows.append(RowAssignment(len(rows), venue.name, instrument, symbols[instrument]))
    return rows + plan_remote_rows(config, len(rows))


def plan_remote_rows(config, first_row: int) -> list[RowAssignment]:
    """One row per (remote box, venue, instrument) of ``bridge.subscribe``, written by the bridge only.

    ``venue`` is the real venue name (fees, venue ids) and ``box`` the remote box, so the
    row's label reads ``kraken@frankfurt``; the native symbol is the remote feed's business.
    """
    if config.bridge is None:
        return []
    return [RowAssignment(first_row + n, venue.name, instrument, "", box=box)
            for n, (box, venue, instrument) in enumerate(config.bridge.remote_rows())]


def bridge_spec(config, rows: list[RowAssignment], slot: int, common: dict) -> list[ProcessSpec]:
    """The ``pipeline: bridge`` child (none without a bridge section); it owns the remote rows."""
    if config.bridge is None:
        return []
    return [ProcessSpec(key="bridge", role=ProcessRole.BRIDGE, title="pipeline: bridge", slot=slot,
                        cores=config.bridge.cores, rows=tuple(r for r in rows if r.box), **common)]


def bridge_child(spec: ProcessSpec, config, rows: list[RowAssignment]) -> Child:
    from pipeline.bridge import process as bridge_process
    return Child(spec, bridge_process.main, (spec, config, tuple(r for r in rows if not r.box)))


def check_resources(config) -> str | None:
    """Every resource the config names, checked before anything starts.

    Returns one line naming the first that is not usable (the config field and the
    value), or None. The board name held by a live supervisor and cores that do
    not exist are checked elsewhere (board lifetime, config validation).
    """
    import socket
    problem = foreign_segment(config.board.name)
    if problem:
        return f"board.name: {problem}"
    if config.metrics is not None and config.metrics.port:
        port, host = config.metrics.port, config.metrics.host
        probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        # the same option the metrics server binds with: a port in TIME_WAIT is free, a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return (f"metrics.port: port {port} on {host} is not free ({exc.strerror}); "
                    "choose another port or stop what listens there")
        finally:
            probe.close()
    output = config.detector.output
    if output:
        directory = os.path.dirname(os.path.abspath(output))
        existing = directory
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            return f"detector.output: cannot write {output!r} ({existing!r} is not a directory)"
        if os.path.isdir(output):
            return f"detector.output: cannot write {output!r} (it is a directory)"
        if not os.access(existing, os.W_OK | os.X_OK) or (os.path.exists(output) and not os.access(output, os.W_OK)):
            return f"detector.output: cannot write {output!r} (no write permission in {existing!r})"
    if config.bridge is not None:
        from pipeline.bridge.process import check_bridge
        return check_bridge(config.bridge, os.environ)
    return None


def resolve_run_output(config, append: bool = False, say=None, run_id: str | None = None):
    """The config the children get: this run's id, and ``detector.output`` resolved to the file it writes.

    Called once at start: a detector the supervisor restarts gets the same config, so it keeps the
    run id and appends to the same run file. See :func:`pipeline.detector.outputs.run_output_path`.
    """
    from pipeline.detector.outputs import new_run_id, run_output_path
    run_id = run_id or new_run_id()
    output = run_output_path(config.detector.output, run_id, append, say)
    return dataclasses.replace(config, run_id=run_id, detector=dataclasses.replace(config.detector, output=output))


def name_supervisor(config_source: str = "") -> None:
    """``pipeline: supervisor --config FILE`` in ps/top, like every child (and like nginx's master,
    with its config: the title replaces the command line, and ``run.py top --board`` reads it there)."""
    try:
        import setproctitle
        setproctitle.setproctitle("pipeline: supervisor" + (f" --config {config_source}" if config_source else ""))
    except ImportError:  # pragma: no cover - a core dependency
        pass


def console_log_path(config) -> str:
    """Where the output goes while the console has the terminal: next to the opportunity file."""
    return os.path.join(os.path.dirname(config.detector.output or "") or ".", "pipeline.log")


class Supervisor:
    def __init__(self, config, duration_s: float | None = None, out=sys.stdout, stop_requested: list | None = None,
                 console: bool = False, append: bool = False):
        self.config = config
        self.append = append             # --append: every run appends to detector.output itself
        self.console = console
        self._console_fds: tuple | None = None      # (terminal out, terminal err, keys, saved tty) while it runs
        self._early_stop = stop_requested if stop_requested is not None else []
        self.duration_s = duration_s
        self.out = out
        self.rows = plan_rows(config)
        self.board: Board | None = None
        self.doorbell_fd = -1
        self.children: dict[str, Child] = {}
        self.stopping = False
        self.urls: dict[str, str] = {}

    def say(self, message: str) -> None:
        self.out.write(f"supervisor: {message}\n")
        self.out.flush()

    # ---------------------------------------------------------------- signals
    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        if self._early_stop:                 # a signal arrived while we were still importing
            self.stopping = True

    # ---------------------------------------------------------------- start
    def specs(self) -> list[ProcessSpec]:
        config = self.config
        common = dict(board_name=config.board.name, depth=config.board.depth, doorbell_fd=self.doorbell_fd,
                      supervisor_pid=os.getpid(), urls=tuple(self.urls.items()))
        specs = []
        slot = 0
        for venue in config.venues:
            specs.append(ProcessSpec(key=f"feed:{venue.name}", role=ProcessRole.FEED,
                                     title=f"pipeline: feed {venue.name}", slot=slot, cores=venue.cores,
                                     venue=venue.name, rows=tuple(r for r in self.rows if r.venue == venue.name and not r.box),
                                     **common))
            slot += 1
        specs.append(ProcessSpec(key="detector", role=ProcessRole.DETECTOR, title="pipeline: detector", slot=slot,
                                 cores=config.detector.cores, rows=tuple(self.rows), **common))
        slot += 1
        specs.append(ProcessSpec(key="health", role=ProcessRole.HEALTH, title="pipeline: health", slot=slot,
                                 cores=config.health.cores, rows=tuple(self.rows), **common))
        slot += 1
        if config.simulator is not None:
            specs.append(ProcessSpec(key="simulator", role=ProcessRole.SIMULATOR, title="pipeline: simulator",
                                     slot=slot, cores=config.simulator.cores, **common))
        specs += bridge_spec(config, self.rows, len(config.venues) + 3, common)
        return specs

    def create_board(self) -> None:
        config = self.config
        message = remove_leftover(config.board.name)
        if message:
            self.say(message)
        n_procs = len(config.venues) + 3 + (config.bridge is not None)
        self.board = Board.create(config.board.name, len(self.rows), config.board.depth, n_procs)
        instruments = {name: i for i, name in enumerate(config.board_instruments)}
        for r in self.rows:
            self.board.rows[r.row]["venue_id"] = VENUE_IDS[r.venue]
            self.board.rows[r.row]["instrument_id"] = instruments[r.instrument]
        self.doorbell_fd = Doorbell.create_fd()
        os.set_inheritable(self.doorbell_fd, True)

    def start_simulator(self) -> None:
        from pipeline.sim import process as sim_process
        spec = next(s for s in self.specs() if s.key == "simulator")
        receiver, sender = _CTX.Pipe(duplex=False)
        child = Child(spec, sim_process.main, (spec, self.config, sender))
        self.children[spec.key] = child
        self._spawn(child)
        sender.close()
        deadline = time.monotonic() + 15
        while not self.stopping and time.monotonic() < deadline:
            if receiver.poll(0.1):
                self.urls = receiver.recv()
                receiver.close()
                ports = {name: int(url.split(":")[2].split("/")[0]) for name, url in self.urls.items()}
                child.args = (spec, self.config, _NullReport(), ports)
                self.say("simulator listening: " + ", ".join(f"{k} {v}" for k, v in self.urls.items()))
                return
            if not child.process.is_alive():
                break
        if self.stopping:
            return
        raise PipelineError("the exchange simulator did not start (see its error above)")

    def start(self) -> None:
        from pipeline.detector import process as detector_process
        from pipeline.feed import process as feed_process
        from pipeline.supervisor import health
        self.create_board()
        if self.config.simulator is not None and not self.stopping:
            self.start_simulator()
        specs = self.specs()
        for spec in specs:                   # each writer logs its publishes in its own change lane
            if spec.role in (ProcessRole.FEED, ProcessRole.BRIDGE) and spec.rows:
                self.board.assign_lane([r.row for r in spec.rows], spec.slot)
        for spec in specs:
            if self.stopping:
                return
            if spec.key == "simulator":
                self.children[spec.key].spec = spec
                continue
            if spec.role == ProcessRole.FEED:
                child = Child(spec, feed_process.main, (spec, self.config))
            elif spec.role == ProcessRole.DETECTOR:
                child = Child(spec, detector_process.main, (spec, self.config))
            elif spec.role == ProcessRole.BRIDGE:
                child = bridge_child(spec, self.config, self.rows)
            else:
                child = Child(spec, health.main, (spec, self.config, specs))
            self.children[spec.key] = child
            self._spawn(child)
        pinned = [c for c in self.children.values() if c.spec.cores]
        self.say(f"started {len(self.children)} processes on {os.cpu_count()} cores; "
                 f"board {self.config.board.name!r}: {len(self.rows)} rows, depth {self.config.board.depth}; "
                 f"{len(pinned)} pinned")

    def _spawn(self, child: Child) -> None:
        process = _CTX.Process(target=child.target, args=child.args, name=child.spec.title, daemon=False)
        # the child inherits our Python signal handlers, which would swallow a SIGTERM meant for it;
        # it starts with SIGINT/SIGTERM blocked and unblocks them once its own handling is in place
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        child.process = process
        child.started_at = time.monotonic()
        if child.spec.cores:
            try:
                os.sched_setaffinity(process.pid, child.spec.cores)
            except OSError as exc:
                self.say(f"could not pin {child.spec.title} to cores {child.spec.cores}: {exc}")

    # ---------------------------------------------------------------- watch
    def _stats(self, child: Child) -> ProcStats | None:
        if self.board is None or child.spec.slot < 0:
            return None
        return ProcStats(self.board, child.spec.slot)

    def release_rows(self, child: Child) -> None:
        """Mark a dead feed's rows DISCONNECTED so its last quotes can never trade.

        A row has exactly one writer; once its feed has died and been reaped,
        nobody writes it, so the supervisor takes it over for this one status
        change. The restarted feed resumes the sequence from the board.
        """
        if self.board is None or child.spec.role not in (ProcessRole.FEED, ProcessRole.BRIDGE) or not child.spec.rows:
            return
        from pipeline.board import RowStatus, RowWriter
        writer = RowWriter(self.board, [r.row for r in child.spec.rows])
        writer.set_status_all(int(RowStatus.DISCONNECTED))

    def on_exit(self, child: Child) -> None:
        code = child.process.exitcode
        cause = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        stats = self._stats(child)
        if stats is not None:
            stats.add("restarts")
            stats.set("last_exit_code", code if code is not None else 0)
        now = time.monotonic()
        sup = self.config.supervisor
        child.restarts = [t for t in child.restarts if now - t < sup.restart_window_s] + [now]
        if len(child.restarts) > sup.max_restarts:
            child.failed = True
            child.process = None
            self.say(f"{child.spec.title} FAILED: died {len(child.restarts)} times within "
                     f"{sup.restart_window_s:.0f} s (last: {cause}); not restarting, the rest keeps running")
            return
        delay = min(sup.restart_backoff_max_s, sup.restart_backoff_s * (2 ** child.consecutive))
        child.consecutive += 1
        child.restart_at = now + delay
        child.process = None
        self.say(f"{child.spec.title} died ({cause}); restarting in {delay:.2f} s")

    def watch_once(self, timeout: float) -> None:
        running = {c.process.sentinel: c for c in self.children.values() if c.process is not None}
        ready = wait(list(running), timeout=timeout) if running else time.sleep(timeout) or []
        for sentinel in ready:
            child = running[sentinel]
            # The sentinel is readable once the child's files are closed, which the kernel does after it
            # has released the child's memory: it can no longer write a row. Untrust its rows now, before
            # waiting for the reap, so the detector cannot use its last quotes.
            if not self.stopping:
                self.release_rows(child)
            child.process.join(2)          # the sentinel closes just before the kernel makes the child reapable
            if self.stopping:
                continue
            self.on_exit(child)
        now = time.monotonic()
        for child in self.children.values():
            if child.process is None and not child.failed and child.restart_at is not None \
                    and now >= child.restart_at and not self.stopping:
                child.restart_at = None
                self._spawn(child)
                self.say(f"restarted {child.spec.title} (pid {child.process.pid})")
            elif child.process is not None and child.consecutive and now - child.started_at > 30:
                child.consecutive = 0

    def run(self) -> int:
        problem = check_resources(self.config)
        if problem:
            sys.stderr.write(f"run.py: {problem}\n")
            return 2
        configured = self.config.detector.output
        try:
            self.config = resolve_run_output(self.config, self.append, self.say)
        except OSError as exc:
            sys.stderr.write(f"run.py: detector.output: cannot write {configured!r} ({exc.strerror or exc})\n")
            return 2
        if configured:
            output = self.config.detector.output
            if self.append:
                where = f"appending to {configured}" + (f" (the run file {output} it links to)"
                                                       if output != configured else "")
            else:
                where = f"events in {output} ({configured} links to it)"
            self.say(f"run {self.config.run_id}: {where}")
        name_supervisor(self.config.source)
        self.install_signal_handlers()
        started = time.monotonic()
        try:
            if self.console:
                self.console_begin()
            self.start()
            if self.console and not self.stopping:
                self.start_console()
            while not self.stopping:
                if self.duration_s is not None and time.monotonic() - started >= self.duration_s:
                    break
                self.watch_once(0.1)
        finally:
            self.shutdown()
        return 0

    # ---------------------------------------------------------------- stop
    def shutdown(self) -> None:
        self.stopping = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # stop the consumers first so the detector's summary sees live feeds close last
        order = sorted(self.children.values(), key=lambda c: {"detector": 0, "health": 1}.get(c.spec.key, 2))
        for child in order:
            if child.process is not None and child.process.is_alive():
                try:
                    os.kill(child.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in order:
            if child.process is not None:
                child.process.join(max(0.0, deadline - time.monotonic()))
                if child.process.is_alive():
                    self.say(f"{child.spec.title} did not stop in {STOP_TIMEOUT_S:.0f} s; killing it")
                    child.process.kill()
                    child.process.join(1)
        self.console_end()
        if self.board is not None:
            from pipeline.supervisor.health import latency_table
            self.out.write(latency_table(self.board, self.specs()) + "\n")
            self.board.destroy()
            self.board = None
            self.say(f"stopped; shared memory {self.config.board.name!r} removed")
        if self.doorbell_fd >= 0:
            os.close(self.doorbell_fd)
            self.doorbell_fd = -1


    # ---------------------------------------------------------------- console (--console)
    def console_begin(self) -> None:
        """Keep the terminal aside for the console; everyone's output goes to the log from here on."""
        path = console_log_path(self.config)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        saved_tty = None
        if os.isatty(0):
            import termios
            saved_tty = termios.tcgetattr(0)
        sys.stdout.flush()
        sys.stderr.flush()
        self._console_fds = (os.dup(1), os.dup(2), os.dup(0) if os.isatty(0) else -1, saved_tty)
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, FILE_MODE)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)

    def start_console(self) -> None:
        from pipeline.console.app import run_in_supervisor
        spec = ProcessSpec(key="console", role=ProcessRole.NONE, title="pipeline: console", slot=-1, cores=(),
                           board_name=self.config.board.name, depth=self.config.board.depth,
                           doorbell_fd=self.doorbell_fd, supervisor_pid=os.getpid())
        terminal, _, keys, _ = self._console_fds
        child = Child(spec, run_in_supervisor, (spec, self.config, terminal, keys))
        self.children[spec.key] = child
        self._spawn(child)

    def console_end(self) -> None:
        """Give the terminal back (the console child has stopped) and say where the output went."""
        if self._console_fds is None:
            return
        terminal, terminal_err, keys, saved_tty = self._console_fds
        self._console_fds = None
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(terminal, 1)
        os.dup2(terminal_err, 2)
        if saved_tty is not None:
            import termios
            termios.tcsetattr(0, termios.TCSADRAIN, saved_tty)
        for fd in (terminal, terminal_err, keys):
            if fd >= 0:
                os.close(fd)
        self.say(f"console closed; this run's output is in {console_log_path(self.config)}")


class _NullReport:
    """Stands in for the start-up pipe when the simulator is restarted."""

    def send(self, _):
        pass

    def close(self):
        pass
