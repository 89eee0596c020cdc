"""The detector's doorbell: spin while busy, block on an ``eventfd`` when idle.

Measured on these machines (``shared/reference/measured-limits.md``): a
spinning reader sees a row about 3.6 µs after it is written but burns a whole
core even when idle; blocking on an eventfd costs about 21 µs p50 per wake-up
and ~0 % CPU idle. On a 2-core box the doorbell is the default; pure spinning
is a config switch for a dedicated core.

Writers ring only when the detector has raised its ``detector_sleeping``
flag (a u32 on its own cache line in the board header), so a busy detector
costs the feeds nothing but one load per publish. Raising the flag and then
re-checking the rows (detector), and publishing and then reading the flag
(writer), is the Dekker pattern: it needs a full fence on both sides, because
x86-64 may reorder a store with a later load. ``threading.Lock`` acquire and
release is a locked instruction, i.e. a full fence, reachable from Python.
A lost wake-up is still bounded by the detector's poll timeout.
"""
from __future__ import annotations

import os
import select
import threading

from pipeline.board.layout import HEADER_DTYPE

_FLAG_WORD = HEADER_DTYPE.fields["detector_sleeping"][1] // 4


class Doorbell:
    """Both ends of one eventfd plus the sleeping flag in the board header."""

    def __init__(self, board_buf, fd: int):
        self.fd = fd
        self._flags = board_buf.cast("B").cast("I")
        self._fence = threading.Lock()
        self.rings = 0
        self._poll = None

    @staticmethod
    def create_fd() -> int:
        return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    # -- writer side (feeds) ----------------------------------------------
    def ring_if_sleeping(self) -> None:
        fence = self._fence
        fence.acquire()
        fence.release()
        if self._flags[_FLAG_WORD]:
            self._flags[_FLAG_WORD] = 0      # one ring per sleep is enough
            self.rings += 1
            try:
                os.eventfd_write(self.fd, 1)
            except BlockingIOError:          # counter saturated: the detector is awake anyway
                pass

    # -- detector side -----------------------------------------------------
    def prepare_sleep(self) -> None:
        """Raise the flag and fence; the caller must re-check for work before :meth:`sleep`."""
        self._flags[_FLAG_WORD] = 1
        fence = self._fence
        fence.acquire()
        fence.release()

    def sleep(self, timeout_ms: float) -> bool:
        """Block until rung or ``timeout_ms``; True when rung."""
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.fd, select.POLLIN)
        events = self._poll.poll(timeout_ms)
        self._flags[_FLAG_WORD] = 0
        if events:
            try:
                os.eventfd_read(self.fd)
            except BlockingIOError:
                pass
            return True
        return False

    def cancel_sleep(self) -> None:
        self._flags[_FLAG_WORD] = 0
