"""The supervisor: creates the board, starts, pins, names and watches every
process, restarts what dies with backoff, and unlinks the board on the way out.

Children are forked (``multiprocessing`` "fork" context): they inherit the
doorbell eventfd, and each attaches to the board by name and verifies its
layout. The supervisor itself runs no threads and no event loop, so forking
is safe. It is the only process that creates or unlinks the segment.

Every child starts through :func:`pipeline.runtime.run_child` and ends with an
exit status the supervisor acts on (:class:`~pipeline.runtime.ExitCode`): a
clean stop (0) needs nothing; a crash (1, or killed by a signal) is restarted
after the one backoff (:class:`~pipeline.backoff.Backoff`, fed by
``supervisor.restart_backoff_s`` / ``restart_backoff_max_s``, reset once the
child has run 30 s) and reported FAILED, not restarted again, when it dies more
than ``supervisor.max_restarts`` times within ``restart_window_s``; a
configuration or resource problem (2) is never restarted: the supervisor says
which child and why, in one line. The feeds, the detector, the output process,
health and the simulator are required: such an exit ends the run.

Stop order: every child but the output process first (the detector first of
them: it puts its last records and its summary in the decision ring), then the
output process, which reads the ring to its end, prints the summary and exits;
so the events file is complete after a clean stop. The bridge is optional (it
only mirrors rows between boxes): the run goes on without it. Either way the
run's exit status is then 2.

The run's own exit status (:class:`RunStatus`, the README's table): 0 a clean
run; 1 the supervisor could not run; 2 a configuration or resource problem,
before the start or reported by a child; 3 a child crash-looped (FAILED)
during the run; 4 no row ever went LIVE although the run went on for
:data:`LIVE_GRACE_S` (a run stopped sooner is not judged). The first that
applies, in that order of precedence: 2, 3, 4. A stop request is SIGINT,
SIGTERM, ``--duration`` running out, or stdout's reader going away
(``run.py ... | head``): the run then stops as on Ctrl-C.
"""
from __future__ import annotations

import dataclasses
import enum
import fcntl
import gc
import logging
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from pipeline.backoff import Backoff
from pipeline.board import (
    Board,
    BoardPlan,
    Doorbell,
    ProcessRole,
    ProcStats,
    RowAssignment,
    foreign_segment,
    plan_remote_rows,
    plan_rows,
    remove_leftover,
)
from pipeline.errors import PipelineError
from pipeline.files import FILE_MODE
from pipeline.runtime import ClosedPipeGuard, ExitCode, ProcessSpec
from pipeline.venues import VENUE_IDS

log = logging.getLogger("pipeline.supervisor")

_CTX = multiprocessing.get_context("fork")
STOP_TIMEOUT_S = 5.0
LIVE_GRACE_S = 10.0            # a run this long without any LIVE row ends with RunStatus.NEVER_LIVE
HEALTHY_AFTER_S = 30.0         # a child that ran this long starts its restart backoff again from the base
OPTIONAL_CHILDREN = frozenset({"bridge"})      # a configuration exit of these does not end the run

__all__ = ["LIVE_GRACE_S", "BoardPlan", "Child", "RowAssignment", "RunStatus", "Supervisor", "check_resources",
           "plan_remote_rows", "plan_rows"]


class RunStatus(enum.IntEnum):
    """The exit status of ``run.py --config FILE`` (see the module docstring and the README)."""

    CLEAN = 0
    ERROR = 1            # the supervisor itself could not run (e.g. the simulator did not start)
    CONFIG = 2           # configuration or resource unusable: at the start, or a child's exit status 2
    CHILD_FAILED = 3     # a child died too often and was given up (FAILED)
    NEVER_LIVE = 4       # the run went on for LIVE_GRACE_S and no row ever went LIVE


@dataclass
class Child:
    spec: ProcessSpec
    target: object
    args: tuple
    process: multiprocessing.Process | None = None
    restarts: list = field(default_factory=list)      # monotonic times of restarts
    restart_at: float | None = None
    failed: bool = False
    started_at: float = 0.0
    backoff: Backoff | None = None
    unusable: str = ""         # why the child exited with ExitCode.CONFIG (it is not restarted)


def bridge_spec(config, rows: list[RowAssignment], slot: int, common: dict) -> list[ProcessSpec]:
    """The ``pipeline: bridge`` child's spec in ``slot`` (none without a bridge section); it writes the
    mirrored rows of ``rows``."""
    if config.bridge is None:
        return []
    return [ProcessSpec(key="bridge", role=ProcessRole.BRIDGE, title="pipeline: bridge", slot=slot,
                        cores=config.bridge.cores, rows=tuple(r for r in rows if r.box), **common)]


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
        problem = probe_output(output, directory)
        if problem:
            return f"detector.output: cannot write {output!r} ({problem})"
    from pipeline.fees import check_fee_credentials
    problem = check_fee_credentials(config, os.environ)
    if problem:
        return problem
    if config.bridge is not None:
        from pipeline.bridge.process import check_bridge
        return check_bridge(config.bridge, os.environ)
    return None


def probe_output(output: str, directory: str) -> str | None:
    """Create a file where the run will write (and remove it): the only test that holds for root, for a
    read-only or pseudo file system (/sys, /proc) and for ACLs, where ``os.access`` says yes. Creates
    the missing directories, as the run would. Returns what failed, or None."""
    import tempfile
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        return f"cannot create {directory!r}: {exc.strerror or exc}"
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".pipeline-probe-")
        os.close(fd)
        os.unlink(probe)
        if os.path.isfile(output) and not os.path.islink(output):     # --append writes to it itself
            os.close(os.open(output, os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        return f"{exc.strerror or exc} in {directory!r}"
    return None


def resolve_run_output(config, append: bool = False, say=None, run_id: str | None = None):
    """The config the children get: this run's id, and ``detector.output`` resolved to the file it writes.

    Called once at start: a detector the supervisor restarts gets the same config, so it keeps the
    run id and appends to the same run file. See :func:`pipeline.output.writers.run_output_path`.
    """
    from pipeline.output.writers import new_run_id, run_output_path
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
        # a reader that goes away (run.py | head) is a stop request, never a traceback
        self.out = out if isinstance(out, ClosedPipeGuard) else ClosedPipeGuard(out, self._on_output_closed)
        self.plan = BoardPlan.from_config(config)
        self.rows = list(self.plan.rows)
        self.board: Board | None = None
        self.doorbell_fd = self.bridge_doorbell_fd = -1
        self.decision_fd = -1                  # the output process's doorbell (the detector rings it)
        self.children: dict[str, Child] = {}
        self.stopping = False
        self.urls: dict[str, str] = {}
        self._exit_reasons = (-1, -1)          # pipe: children say why they exit with ExitCode.CONFIG
        self.went_live = False                 # a row was LIVE at some point of the run
        self.live_since_start_s = 0.0          # how long the run went on after its children started
        self.config_failure = False            # a child exited with ExitCode.CONFIG
        self.child_failed = False              # a child was given up (FAILED)

    def say(self, message: str) -> None:
        self.out.write(f"supervisor: {message}\n")
        self.out.flush()

    def _on_output_closed(self) -> None:
        if not self.stopping:
            self.stopping = True
            sys.stderr.write("supervisor: stdout was closed by its reader; stopping\n")
            sys.stderr.flush()

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
        """One spec per planned process slot (:class:`~pipeline.board.plan.BoardPlan`), in slot order."""
        config = self.config
        common = dict(board_name=config.board.name, depth=config.board.depth, doorbell_fd=self.doorbell_fd,
                      bridge_doorbell_fd=self.bridge_doorbell_fd, decision_fd=self.decision_fd,
                      supervisor_pid=os.getpid(), urls=tuple(self.urls.items()), exit_fd=self._exit_reasons[1])
        cores = {"detector": config.detector.cores, "health": config.health.cores,
                 "simulator": config.simulator.cores if config.simulator is not None else (),
                 "bridge": config.bridge.cores if config.bridge is not None else (),
                 "output": config.detector.output_cores}
        specs = []
        for slot in self.plan.slots:
            if slot.role == ProcessRole.FEED:
                specs.append(ProcessSpec(key=slot.key, role=slot.role, title=slot.title, slot=slot.slot,
                                         cores=config.venue(slot.venue).cores, venue=slot.venue, rows=slot.rows,
                                         venue_id=VENUE_IDS[slot.venue], **common))
            else:        # the detector and health read every row; the bridge writes the mirrored ones
                rows = slot.rows if slot.role in (ProcessRole.BRIDGE, ProcessRole.OUTPUT) else self.plan.rows
                specs.append(ProcessSpec(key=slot.key, role=slot.role, title=slot.title, slot=slot.slot,
                                         cores=cores[slot.key], rows=rows, **common))
        return specs

    def create_board(self) -> None:
        config = self.config
        message = remove_leftover(config.board.name)
        if message:
            self.say(message)
        self.board = self.plan.create_board(config.board.name, config.board.depth)
        self.doorbell_fd, self.bridge_doorbell_fd = Doorbell.create_fd(), Doorbell.create_fd()
        os.set_inheritable(self.doorbell_fd, True)
        os.set_inheritable(self.bridge_doorbell_fd, True)
        self.decision_fd = Doorbell.create_fd()
        os.set_inheritable(self.decision_fd, True)
        read_fd, write_fd = os.pipe()
        fcntl.fcntl(read_fd, fcntl.F_SETFL, fcntl.fcntl(read_fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._exit_reasons = (read_fd, write_fd)

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
        child.process.join(2)
        if child.process.exitcode == ExitCode.CONFIG:
            self.config_failure = True
            self.stopping = True
            child.process = None
            self.say(f"{spec.title} cannot run: {self._reason_of(spec.key)}; not restarting")
            return
        raise PipelineError("the exchange simulator did not start (see its error above)")

    def start(self) -> None:
        from pipeline.detector import process as detector_process
        from pipeline.feed import process as feed_process
        from pipeline.feed.transport import preload
        from pipeline.health import process as health
        from pipeline.output import process as output_process
        preload(v.transport for v in self.config.venues)           # once here, not in every feed after the fork
        self.create_board()
        if self.config.simulator is not None and not self.stopping:
            self.start_simulator()
        specs = self.specs()
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
            elif spec.role == ProcessRole.OUTPUT:
                child = Child(spec, output_process.main, (spec, self.config))
            elif spec.role == ProcessRole.BRIDGE:
                from pipeline.bridge import process as bridge_process
                child = Child(spec, bridge_process.main, (spec, self.config, self.plan.local_rows))
            else:
                child = Child(spec, health.main, (spec, self.config, specs))
            self.children[spec.key] = child
            self._spawn(child)
        pinned = [c for c in self.children.values() if c.spec.cores]
        self.say(f"started {len(self.children)} processes on {os.cpu_count()} cores; "
                 f"board {self.config.board.name!r}: {len(self.rows)} rows, depth {self.config.board.depth}; "
                 f"{len(pinned)} pinned")

    def _stop_children(self, children: list[Child]) -> None:
        """SIGTERM each of ``children`` that runs, then wait up to STOP_TIMEOUT_S for them; kill what is left."""
        for child in children:
            if child.process is not None and child.process.is_alive():
                try:
                    os.kill(child.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in children:
            if child.process is not None:
                child.process.join(max(0.0, deadline - time.monotonic()))
                if child.process.is_alive():
                    self.say(f"{child.spec.title} did not stop in {STOP_TIMEOUT_S:.0f} s; killing it")
                    child.process.kill()
                    child.process.join(1)

    def _spawn(self, child: Child) -> None:
        # What the child inherits is frozen: its collections never scan (and so never copy) the supervisor's
        # modules, classes and config, and a feed's full collection on the hot path has only its own objects
        # to walk (the gc.freeze() recipe of the CPython docs). Frozen objects are never collected, so a
        # restart, once collection is on again, first collects what the supervisor has let go since.
        if gc.isenabled():
            gc.collect()
        gc.freeze()
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
        cores = self._cores_for(child)
        if cores:
            try:
                os.sched_setaffinity(process.pid, cores)
            except OSError as exc:
                self.say(f"could not pin {child.spec.title} to cores {cores}: {exc}")

    def _cores_for(self, child: Child) -> tuple[int, ...]:
        """The cores to pin ``child`` to. Strict (the default): its configured cores, which the config
        check found on this machine. With cores as a preference (``supervisor.cores_preferred``), only
        those that exist here; one line says what was left out."""
        cores = tuple(child.spec.cores)
        if not cores or not self.config.supervisor.cores_preferred:
            return cores
        available = os.sched_getaffinity(0)
        kept = tuple(c for c in cores if c in available)
        if kept != cores and child.restarts == []:
            missing = ", ".join(str(c) for c in cores if c not in available)
            self.say(f"{child.spec.title}: core(s) {missing} not on this machine; "
                     + (f"pinned to {list(kept)}" if kept else "not pinned"))
        return kept

    # ---------------------------------------------------------------- watch
    def _stats(self, child: Child) -> ProcStats | None:
        if self.board is None or child.spec.slot < 0:
            return None
        return ProcStats(self.board, child.spec.slot)

    def release_rows(self, child: Child) -> None:
        """Mark a dead feed's rows DISCONNECTED so its last quotes can never trade.

        A row has exactly one writer; once its feed has died and been reaped,
        nobody writes it, so the supervisor takes it over for this one status
        change, and rings the doorbell as a writer does after a change. The restarted feed resumes the
        sequence from the board.
        """
        if self.board is None or child.spec.role not in (ProcessRole.FEED, ProcessRole.BRIDGE) or not child.spec.rows:
            return
        from pipeline.board import Doorbell, RowStatus, RowWriter
        writer = RowWriter(self.board, [r.row for r in child.spec.rows])
        writer.set_status_all(int(RowStatus.DISCONNECTED))
        # and wakes the sleepers as the feed would have: the detector closes what those rows made now
        Doorbell(self.board.buf, self.doorbell_fd, self.bridge_doorbell_fd).ring_if_sleeping()

    def _reason_of(self, key: str) -> str:
        """What child ``key`` reported before exiting with ExitCode.CONFIG (read from the reasons pipe)."""
        read_fd = self._exit_reasons[0]
        if read_fd >= 0:
            data = b""
            while True:
                try:
                    chunk = os.read(read_fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                data += chunk
            for line in data.decode("utf-8", "replace").splitlines():
                who, _, reason = line.partition("\t")
                if who in self.children:
                    self.children[who].unusable = reason
        child = self.children.get(key)
        return (child.unusable if child is not None else "") or "its configuration or a resource it names is " \
                                                                 "unusable (see its message above)"

    def on_exit(self, child: Child) -> None:
        """Act on a child's exit status: CONFIG is never restarted, a crash is, after the backoff."""
        code = child.process.exitcode
        cause = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        stats = self._stats(child)
        if stats is not None:
            stats.add("restarts")
            stats.set("last_exit_code", code if code is not None else 0)
        now = time.monotonic()
        ran_s = now - child.started_at
        child.process = None
        if code == ExitCode.CONFIG:
            child.failed = True
            self.config_failure = True
            reason = self._reason_of(child.spec.key)
            if child.spec.key in OPTIONAL_CHILDREN:
                self.say(f"{child.spec.title} cannot run: {reason}; not restarting, the rest keeps running")
            else:
                self.say(f"{child.spec.title} cannot run: {reason}; not restarting, stopping the run")
                self.stopping = True
            return
        sup = self.config.supervisor
        child.restarts = [t for t in child.restarts if now - t < sup.restart_window_s] + [now]
        if len(child.restarts) > sup.max_restarts:
            child.failed = True
            self.child_failed = True
            self.say(f"{child.spec.title} FAILED: died {len(child.restarts)} times within "
                     f"{sup.restart_window_s:.0f} s (last: {cause}); not restarting, the rest keeps running")
            return
        if child.backoff is None:
            child.backoff = Backoff(sup.restart_backoff_s, sup.restart_backoff_max_s, HEALTHY_AFTER_S)
        child.backoff.connected_for(ran_s)
        delay = child.backoff.next_delay()
        child.restart_at = now + delay
        self.say(f"{child.spec.title} died ({cause}); restarting in {delay:.2f} s")

    def check_live(self) -> None:
        """Note whether any row is LIVE now (the run then counts as having gone live)."""
        if not self.went_live and self.board is not None and len(self.board.rows):
            from pipeline.board import RowStatus
            self.went_live = bool((self.board.rows["status"] == int(RowStatus.LIVE)).any())

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
        self.check_live()
        self.out.reader_closed()          # stdout's reader gone: a stop request (see _on_output_closed)

    def run(self) -> int:
        problem = check_resources(self.config)
        if problem:
            sys.stderr.write(f"run.py: {problem}\n")
            return RunStatus.CONFIG
        configured = self.config.detector.output
        try:
            self.config = resolve_run_output(self.config, self.append, self.say)
        except OSError as exc:
            sys.stderr.write(f"run.py: detector.output: cannot write {configured!r} ({exc.strerror or exc})\n")
            return RunStatus.CONFIG
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
            gc.enable()                      # off since run.py began: everything the children use is loaded
            if self.console and not self.stopping:
                self.start_console()
            running = time.monotonic()
            while not self.stopping:
                if self.duration_s is not None and time.monotonic() - started >= self.duration_s:
                    break
                self.watch_once(0.1)
            self.live_since_start_s = time.monotonic() - running
            self.check_live()
        finally:
            self.shutdown()
        return self.status()

    def status(self) -> RunStatus:
        """The run's exit status (module docstring): the first of CONFIG, CHILD_FAILED, NEVER_LIVE that
        applies, else CLEAN."""
        if self.config_failure:
            return RunStatus.CONFIG
        if self.child_failed:
            return RunStatus.CHILD_FAILED
        if not self.went_live and self.live_since_start_s >= LIVE_GRACE_S:
            self.say(f"no venue went live in {self.live_since_start_s:.0f} s (no row was ever LIVE)")
            return RunStatus.NEVER_LIVE
        return RunStatus.CLEAN

    # ---------------------------------------------------------------- stop
    def shutdown(self) -> None:
        self.stopping = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # stop the consumers first so the detector's summary sees live feeds close last; the output process
        # last of all: once the detector has put its last records and its summary in the decision ring, the
        # output reads the ring to its end, prints the summary and exits (so the events file is complete)
        order = sorted(self.children.values(), key=lambda c: {"detector": 0, "health": 1}.get(c.spec.key, 2))
        self._stop_children([c for c in order if c.spec.role != ProcessRole.OUTPUT])
        self._stop_children([c for c in order if c.spec.role == ProcessRole.OUTPUT])
        self.console_end()
        if self.board is not None:
            from pipeline.health.process import final_block
            self.out.write(final_block(self.board, self.specs()) + "\n")
            self.board.destroy()
            self.board = None
            self.say(f"stopped; shared memory {self.config.board.name!r} removed")
        for fd in (self.doorbell_fd, self.bridge_doorbell_fd, self.decision_fd):
            if fd >= 0:
                os.close(fd)
        self.doorbell_fd = self.bridge_doorbell_fd = self.decision_fd = -1
        for fd in self._exit_reasons:
            if fd >= 0:
                os.close(fd)
        self._exit_reasons = (-1, -1)


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
                           doorbell_fd=self.doorbell_fd, supervisor_pid=os.getpid(), exit_fd=self._exit_reasons[1])
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
