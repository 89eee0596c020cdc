"""What every child process needs at start: its spec, its name, its cores,
and a way to notice that the supervisor died."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

from pipeline.board.layout import ProcessRole

log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class RowAssignment:
    row: int
    venue: str
    instrument: str      # canonical
    symbol: str          # native
    box: str = ""        # "" for a row this box's own feed writes; the remote box's name for a bridged row

    @property
    def label(self) -> str:
        """How events and screens name the row's venue: ``kraken`` locally, ``kraken@frankfurt`` bridged."""
        return f"{self.venue}@{self.box}" if self.box else self.venue


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


def setup_child(spec: ProcessSpec) -> None:
    """Name the process, ask the kernel to signal us when the supervisor dies, log to stderr."""
    try:
        import setproctitle
        setproctitle.setproctitle(spec.title)
    except ImportError:  # pragma: no cover - a core dependency
        pass
    _set_parent_death_signal(signal.SIGTERM)
    if spec.supervisor_pid and os.getppid() != spec.supervisor_pid:
        # the supervisor died between fork and here
        sys.exit(0)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {spec.key} %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the supervisor decides; Ctrl-C reaches the group
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the supervisor's handler, inherited through fork
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


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
