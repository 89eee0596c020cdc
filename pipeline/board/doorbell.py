"""The detector's doorbell: spin while busy, block on an ``eventfd`` when idle.

Measured on these machines (``shared/reference/measured-limits.md``): a
spinning reader sees a row about 3.6 µs after it is written but burns a whole
core even when idle; blocking on an eventfd costs about 21 µs p50 per wake-up
and ~0 % CPU idle. On a 2-core box the doorbell is the default; pure spinning
is a config switch for a dedicated core.

Contract (no lost wake-up). Writers ring only when the detector has raised its
``detector_sleeping`` flag (a u32 on its own cache line in the board header),
so a busy detector costs the feeds nothing but one load per publish. The
detector raises the flag, fences and re-checks the rows before it blocks
(:meth:`prepare_sleep`, then its own check, then :meth:`sleep`); a writer
publishes, fences and then reads the flag (:meth:`ring_if_sleeping`). That is
the Dekker pattern: it needs a full fence on both sides, because x86-64 may
reorder a store with a later load, and ``threading.Lock`` acquire and release
is a locked instruction, i.e. a full fence, reachable from Python. So either
the writer sees the flag and rings, or the detector's re-check sees the row.
A lost wake-up is still bounded by the detector's poll timeout.

Where the wake-up time goes, and what is done about it:

* The wake-up of a blocked process is the same kernel path for an eventfd and
  a pipe (``poll``, ``epoll`` and ``select`` on the eventfd measured alike),
  so the doorbell only loses to a pipe by what it adds around it. Waking
  returns at once: the eventfd is drained before the next sleep
  (:meth:`prepare_sleep`), not on the wake-up path.
* A writer's publish runs cold after it slept, and the reader's wake-up used
  to start only after it. :meth:`ring_ahead` lets a writer that knows it is
  about to publish (a frame arrived) wake a sleeping detector first, so the
  wake-up overlaps the parse and the write; the detector then spins (it stays
  awake ``spin_us`` after a wake-up) and sees the row as soon as it is
  written. It is only a hint: it does not take part in the contract above,
  which :meth:`ring_if_sleeping` after the publish keeps. A hint with nothing
  behind it costs the detector one spin window.
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
        """After a publish: wake the detector when it is (about to be) asleep. Part of the contract."""
        fence = self._fence
        fence.acquire()
        fence.release()
        flags = self._flags
        if flags[_FLAG_WORD]:
            flags[_FLAG_WORD] = 0            # one ring per sleep is enough (and the woken detector need not clear it)
            self.rings += 1
            try:
                os.eventfd_write(self.fd, 1)
            except BlockingIOError:          # counter saturated: the detector is awake anyway
                pass

    def ring_ahead(self) -> None:
        """Before a publish: wake a sleeping detector now, so its wake-up overlaps the publish. A hint only.

        Call it as soon as a publish is known to be coming (a frame arrived): on a detector that sleeps on
        another core the wake-up, which costs more than the parse and the write together on a VM, then
        runs alongside them (``python -m bench.transport``: board_doorbell_ahead against board_doorbell).
        """
        flags = self._flags
        if flags[_FLAG_WORD]:
            flags[_FLAG_WORD] = 0
            self.rings += 1
            try:
                os.eventfd_write(self.fd, 1)
            except BlockingIOError:
                pass

    # -- detector side -----------------------------------------------------
    def prepare_sleep(self) -> None:
        """Drain old rings, raise the flag and fence; the caller must re-check for work before :meth:`sleep`."""
        try:
            os.eventfd_read(self.fd)         # a ring from an earlier sleep (or a late hint) must not end this one
        except BlockingIOError:
            pass
        self._flags[_FLAG_WORD] = 1
        fence = self._fence
        fence.acquire()
        fence.release()

    def sleep(self, timeout_ms: float) -> bool:
        """Block until rung or ``timeout_ms``; True when rung. The ring is drained by the next prepare_sleep.

        A ring cleared the flag already (the writer that rang did); only a timeout leaves it to clear here,
        so a woken detector goes straight back to its rows. (A ring delayed past a timeout, by a writer
        preempted between clearing the flag and writing the eventfd, can end the next sleep with the flag
        still up: the next publish then rings once more and clears it.)
        """
        poll = self._poll
        if poll is None:
            poll = self._poll = select.poll()
            poll.register(self.fd, select.POLLIN)
        if poll.poll(timeout_ms):
            return True
        self._flags[_FLAG_WORD] = 0
        return False

    def cancel_sleep(self) -> None:
        self._flags[_FLAG_WORD] = 0
