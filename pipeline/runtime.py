"""One child runtime: how every process the supervisor starts begins, runs and ends.

:func:`run_child` is the whole start of a child (feed, detector, health,
simulator, bridge, console); each process's ``main`` only builds its body and
hands it over. In order, it

* names the process (``pipeline: feed binance`` in ps/top, setproctitle),
* asks the kernel for SIGTERM when the supervisor dies (parent-death signal)
  and exits at once if the supervisor is already gone,
* logs to stderr, each line tagged with the process key,
* guards stdout and stderr: once their reader has gone (``run.py | head``) a
  write no longer fails; the descriptor is pointed at /dev/null and the process
  keeps working (:class:`ClosedPipeGuard`),
* installs the stop request (:class:`Stop`): SIGTERM sets it; SIGINT is
  ignored in a supervised child (Ctrl-C reaches the whole process group, and
  the supervisor decides the order in which children stop),
* claims the process slot the board plan gave it (role, venue id, pid, start
  time, first heartbeat; the body beats the heartbeat from its own loop, so a
  wedged loop shows as a stale heartbeat),
* runs ``body(stop)`` and turns how it ended into the exit status the
  supervisor acts on (:class:`ExitCode`).

A body with an event loop (feed, bridge, simulator) runs it in :func:`run_loop`,
which ends the tasks left running when the loop's main coroutine returns.

Exit statuses of a child (declared once, here):

====  ===========  ==========================================================
code  name         the supervisor
====  ===========  ==========================================================
0     ``CLEAN``    a requested stop: nothing to do
1     ``CRASH``    an exception the child could not handle (logged once, with
                   its traceback), or killed by a signal: restarted with the
                   backoff, reported FAILED when it keeps dying
2     ``CONFIG``   the configuration, or a resource it names, is unusable
                   (:class:`~pipeline.errors.ConfigError`,
                   :class:`UnusableResource`): not restarted; the reason, one
                   line naming the field, is logged and reported to the
                   supervisor, which says it and ends the run with status 2
====  ===========  ==========================================================
"""
from __future__ import annotations

import contextlib
import ctypes
import enum
import gc
import logging
import os
import select
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass

from pipeline.board import RowAssignment
from pipeline.errors import ConfigError, PipelineError
from pipeline.model import ProcessRole

log = logging.getLogger("pipeline")

__all__ = ["ClosedPipeGuard", "ExitCode", "ProcessSpec", "RateLimitedLog", "RowAssignment", "Stop",
           "UnusableResource", "exit_code_for", "parent_alive", "run_child", "run_loop", "run_until_stopped"]

EXIT_REASON_BYTES = 512        # one line a child reports with CONFIG; below PIPE_BUF, so one atomic write


class ExitCode(enum.IntEnum):
    """What a child's exit status tells the supervisor (see the table in the module docstring)."""

    CLEAN = 0
    CRASH = 1
    CONFIG = 2


class UnusableResource(PipelineError):
    """A resource the configuration names cannot be used (a file, a credential, a port): exit status 2.

    ``field`` is the config field (dotted path) that names it; the message says what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)     # "": the message names the field
        self.field = field


def exit_code_for(exc: BaseException | None) -> ExitCode:
    """The exit status of a child whose body ended with ``exc`` (None: it returned)."""
    if exc is None:
        return ExitCode.CLEAN
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return ExitCode.CLEAN
        return ExitCode(code) if isinstance(code, int) and code in ExitCode._value2member_map_ else ExitCode.CRASH
    if isinstance(exc, (ConfigError, UnusableResource)):
        return ExitCode.CONFIG
    return ExitCode.CRASH


@dataclass(frozen=True)
class ProcessSpec:
    """Everything a child process is started with (the supervisor builds it)."""

    key: str                       # "feed:binance", "detector", "health", "simulator"
    role: ProcessRole
    title: str                     # setproctitle name, e.g. "pipeline: feed binance"
    slot: int                      # process slot on the board (-1: none)
    cores: tuple[int, ...]
    board_name: str
    depth: int
    doorbell_fd: int
    venue: str = ""
    rows: tuple[RowAssignment, ...] = ()
    supervisor_pid: int = 0
    urls: tuple[tuple[str, str], ...] = ()     # venue -> url (simulator or real)
    venue_id: int = 0                          # feeds: the venue's id, claimed into the slot
    exit_fd: int = -1                          # where a child writes why it exits with CONFIG (-1: log only)
    decision_fd: int = -1                      # the output process's doorbell (pipeline.decisions; -1: none)
    bridge_doorbell_fd: int = -1               # the bridge publisher's doorbell eventfd (feeds ring it)


class Stop:
    """A process's stop request: set by SIGTERM (the supervisor's, or the kernel's when the supervisor
    dies) or by the process itself.

    Plain loops poll it (``while not stop:``) or sleep on it (:meth:`wait`, which returns early when it
    is set); asyncio bodies await :meth:`event` or :meth:`link` an ``asyncio.Event`` of their own, set
    from the loop as soon as the signal arrives. Setting it is safe from a signal handler.
    """

    def __init__(self) -> None:
        self._set = False
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._linked: list = []          # (loop, asyncio.Event)

    def set(self, *_signal) -> None:
        """Request the stop (also the SIGTERM handler: it takes and ignores the handler's arguments)."""
        first = not self._set
        self._set = True
        if first:
            with contextlib.suppress(OSError):
                os.write(self._write_fd, b"\0")
        for loop, event in self._linked:
            with contextlib.suppress(RuntimeError):           # the loop has closed: nobody waits on it
                loop.call_soon_threadsafe(event.set)

    def is_set(self) -> bool:
        return self._set

    __bool__ = is_set

    def wait(self, timeout_s: float | None = None) -> bool:
        """Sleep until the stop is requested or ``timeout_s`` has passed; True when it is set."""
        if not self._set:
            with contextlib.suppress(InterruptedError):
                select.select([self._read_fd], [], [], timeout_s)
        return self._set

    def link(self, event) -> None:
        """Set ``event`` (an ``asyncio.Event`` of the running loop) when the stop is requested."""
        import asyncio
        self._linked.append((asyncio.get_running_loop(), event))
        if self._set:
            event.set()

    def event(self):
        """A new ``asyncio.Event`` of the running loop, set when the stop is requested."""
        import asyncio
        event = asyncio.Event()
        self.link(event)
        return event


class ClosedPipeGuard:
    """A text stream (stdout, stderr) that survives its reader going away.

    Writing to a pipe whose reader has closed (``run.py ... | head -3``) raises BrokenPipeError; through
    this guard that write is dropped instead, the descriptor is pointed at /dev/null so that every later
    write (the stream's, and raw ``os.write`` of the same descriptor) succeeds silently, and
    ``on_closed`` (when given) is called once. Everything else is the wrapped stream's.
    """

    def __init__(self, stream, on_closed=None):
        self._stream = stream
        self._on_closed = on_closed
        self.closed_by_reader = False

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self.reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self.reader_gone()

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def reader_gone(self) -> None:
        """The reader has closed: from now on this descriptor writes to /dev/null."""
        if not self.closed_by_reader:
            self.closed_by_reader = True
            with contextlib.suppress(OSError, ValueError, AttributeError):
                fd = self._stream.fileno()
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
            if self._on_closed is not None:
                self._on_closed()
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            self._stream.flush()           # what was buffered for the closed pipe now goes to /dev/null

    def reader_closed(self) -> bool:
        """True once the reader of this stream's pipe has closed (checked without writing; a stream that
        is not a pipe never closes this way)."""
        if self.closed_by_reader:
            return True
        try:
            fd = self._stream.fileno()
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return False
            poller = select.poll()
            poller.register(fd, 0)                # POLLERR is reported whatever is asked: the reader is gone
            events = poller.poll(0)
        except (OSError, ValueError, AttributeError):
            return False
        if events and events[0][1] & select.POLLERR:
            self.reader_gone()
            return True
        return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _watch_closed_pipes(guards: list[ClosedPipeGuard]) -> None:
    """Point stdout/stderr at /dev/null as soon as their pipe's reader closes, even when the writes go
    straight to the descriptor (the detector's writer threads): one daemon thread, asleep in poll()."""
    fds = {}
    for guard in guards:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = guard.fileno()
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                fds[fd] = guard
    if not fds:
        return

    def watch() -> None:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, 0)                # errors only: POLLERR once the reader has closed
        while fds:
            for fd, events in poller.poll():
                if events & (select.POLLERR | select.POLLNVAL):
                    poller.unregister(fd)
                    fds.pop(fd).reader_gone()

    threading.Thread(target=watch, name="closed-pipe-watch", daemon=True).start()


def start_child(spec: ProcessSpec) -> Stop:
    """Everything :func:`run_child` does before the body: title, parent-death signal, logging, guarded
    output, signals. Returns the stop request. Exits (status 0) when the supervisor is already gone."""
    gc.enable()                           # off in a supervisor still starting (run.py): on for every child
    try:
        import setproctitle
        setproctitle.setproctitle(spec.title)
    except ImportError:  # pragma: no cover - a core dependency
        pass
    _set_parent_death_signal(signal.SIGTERM)
    if spec.supervisor_pid and os.getppid() != spec.supervisor_pid:
        os._exit(ExitCode.CLEAN)          # the supervisor died between fork and here
    if not isinstance(sys.stdout, ClosedPipeGuard):
        sys.stdout = ClosedPipeGuard(sys.stdout)
    if not isinstance(sys.stderr, ClosedPipeGuard):
        sys.stderr = ClosedPipeGuard(sys.stderr)
    _watch_closed_pipes([sys.stdout, sys.stderr])
    root = logging.getLogger()
    for handler in list(root.handlers):   # the supervisor's, inherited through fork
        root.removeHandler(handler)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {spec.key} %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    stop = Stop()
    # not the supervisor's handlers, inherited through fork; the supervisor decides on Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_IGN if spec.supervisor_pid else stop.set)
    signal.signal(signal.SIGTERM, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    return stop


def claim_slot(spec: ProcessSpec) -> None:
    """Write this process into its slot (role, venue id, pid, start time, first heartbeat)."""
    if spec.slot < 0 or not spec.board_name:
        return
    from pipeline.board import Board
    board = Board.attach(spec.board_name, spec.depth)
    try:
        slot = board.procs[spec.slot]
        slot["role"] = int(spec.role)
        slot["venue_id"] = spec.venue_id
        slot["connected"] = 0
        now = time.time_ns()
        slot["pid"] = os.getpid()
        slot["started_ns"] = now
        slot["heartbeat_ns"] = now
        del slot
    finally:
        board.close()


def report_exit_reason(spec: ProcessSpec, reason: str) -> None:
    """Tell the supervisor, in one line, why this child exits with CONFIG (it says it and does not restart)."""
    if spec.exit_fd < 0:
        return
    line = f"{spec.key}\t{' '.join(reason.split())}"
    data = line.encode("utf-8", "replace")[:EXIT_REASON_BYTES - 1] + b"\n"
    with contextlib.suppress(OSError):
        os.write(spec.exit_fd, data)


def run_child(spec: ProcessSpec, body, *, claim: bool = True):
    """Run a child process: :func:`start_child`, :func:`claim_slot`, then ``body(stop)``; never returns.

    ``body`` is the process: it returns when ``stop`` is set (or when it has nothing more to do) and
    raises what it cannot handle. Its end becomes the exit status (:class:`ExitCode`): returned, CLEAN;
    :class:`~pipeline.errors.ConfigError` or :class:`UnusableResource`, CONFIG, with the message
    logged and reported once, without a traceback; anything else, CRASH, logged once with its
    traceback. ``claim=False`` for a process that claims its slot itself once it is ready (the simulator,
    after it listens).
    """
    stop = start_child(spec)
    error: BaseException | None = None
    try:
        if claim:
            claim_slot(spec)
        body(stop)
    except BaseException as exc:  # noqa: BLE001 - the process's top level: every end becomes an exit status
        error = exc
    code = exit_code_for(error)
    if code == ExitCode.CONFIG:
        reason = str(error).replace("invalid configuration:", "").strip()
        log.error("cannot run: %s", " ".join(reason.split()))
        report_exit_reason(spec, reason)
    elif code == ExitCode.CRASH and not isinstance(error, SystemExit):
        log.error("%s failed: %s: %s", spec.title, type(error).__name__, error, exc_info=error)
    sys.exit(int(code))


def _set_parent_death_signal(sig: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)               # PR_SET_PDEATHSIG
    except OSError:
        pass


def parent_alive(spec: ProcessSpec) -> bool:
    return not spec.supervisor_pid or os.getppid() == spec.supervisor_pid


class RateLimitedLog:
    """At most one line per key per ``interval_s``, with the count of what was suppressed."""

    def __init__(self, interval_s: float = 5.0):
        self.interval_ns = int(interval_s * 1e9)
        self._last: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str) -> None:
        now = time.monotonic_ns()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_ns:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        log.warning("%s%s", message, f" (+{suppressed} similar suppressed)" if suppressed else "")


SETTLE_S = 5.0         # how long a child's event loop waits, as it ends, for the tasks it cancels then


def run_loop(main) -> None:
    """A child's event loop: ``asyncio.run(main)``, and, once ``main`` ends, whatever tasks it left running (its
    own, cancelled by :func:`run_until_stopped` without waiting, and a library's, such as nats-py's after a close
    that took too long) cancelled and waited for, at most ``SETTLE_S``. Left to ``asyncio.run``, one that fails as
    it is cancelled is logged as an error with its traceback ("unhandled exception during asyncio.run()
    shutdown") on a stop that is going as planned; here it is one line."""
    import asyncio

    async def body():
        try:
            await main
        finally:
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            if others:
                await asyncio.wait(others, timeout=SETTLE_S)
            for task in others:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    log.warning("while stopping, %s ended in %s: %s", task.get_coro().__qualname__,
                                type(exc).__name__, exc)
    asyncio.run(body())


async def run_until_stopped(tasks: list, stop) -> None:
    """Run a process's tasks until one of them ends or ``stop`` (an asyncio.Event) is set; cancel the
    rest, and raise the first failure so that it reaches the process's main (which logs it and exits
    with its documented status for the supervisor to restart)."""
    import asyncio
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait(tasks + [stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks + [stopper]:
        task.cancel()
    for task in done:
        if task is not stopper and not task.cancelled() and task.exception() is not None:
            raise task.exception()
