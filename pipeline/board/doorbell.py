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

Where the wake-up time goes, and what is done about it (``python -m
bench.transport``, writer on core 0 and reader on core 1 as the shipped
configs place feeds and detector; three runs of 5 rounds on this VM):

* The hand-off itself is close to a pipe's: from the row written to the
  reader holding it, 39.0 / 54.4 / 38.0 µs p50 against the pipe's 37.7 /
  45.9 / 30.4 µs from its line built (the ring call, fence included, 11.1 /
  10.7 / 10.9 against ``os.write``'s 8.9 / 8.6 / 8.2 µs; then the wake-up
  and the read). The wake-up of a blocked process is the same kernel path
  for an eventfd and a pipe (``poll``, ``epoll``, ``select``, a blocking
  read, and a futex through ctypes measured alike or worse), and it is the
  bulk of either: a vCPU woken from idle. Waking returns at once: the
  eventfd is drained before the next sleep (:meth:`prepare_sleep`), and the
  writer that rang has cleared the flag, so the woken detector touches
  nothing before its rows.
* What the board adds is the writer's own cold publish: the row's stores go
  to shared cache lines the reader last read (12.4-13.3 µs p50 after a 1 ms
  sleep, against 6.2-7.6 µs for orjson of a 6-tuple and 8.8-10.0 µs for
  orjson of everything a row carries); a top-of-book write packs half a row
  for it (see :mod:`pipeline.board.seqlock`).
* :meth:`ring_ahead` takes the wake-up off that path: a writer that knows it
  is about to publish (a frame arrived) wakes a sleeping detector first, so
  the wake-up runs on the detector's core while the writer parses and
  writes; the detector then spins (it stays awake ``spin_us`` after a
  wake-up) and sees the row as soon as it is written. With it the board
  beats the pipe in each of three runs (41.6 / 47.8 / 36.8 µs p50 against
  45.9 / 50.8 / 37.9 µs); without it the board loses by its cold publish and
  the fence (56.6 / 69.9 / 58.4 µs). It only pays when the detector sleeps
  on another core: left to the scheduler (``--pin none``), this VM mostly
  queues the woken reader behind the writer on the writer's core, where
  nothing can overlap (50.5 plain, 55.6 ahead, 36.8 µs for the pipe). It is
  only a hint: it does not take part in the contract above, which
  :meth:`ring_if_sleeping` after the publish keeps. A hint with nothing
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
