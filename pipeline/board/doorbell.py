"""The doorbell: its sleepers spin while busy and block on an ``eventfd`` when idle.

Measured on these machines (``shared/reference/measured-limits.md``): a
spinning reader sees a row about 3.6 µs after it is written but burns a whole
core even when idle; blocking on an eventfd costs about 21 µs p50 per wake-up
and ~0 % CPU idle. On a 2-core box the doorbell is the default; pure spinning
is a config switch for a dedicated core.

Sleepers. Two processes sleep on the board, each with its own eventfd and its
own flag, side by side on one cache line of the board header (:data:`SLEEPERS`,
in slot order): the detector (``detector_sleeping``) and the bridge's publisher
(``bridge_sleeping``, :mod:`pipeline.bridge.process`), which follows the
writers' change lanes as the detector does. A :class:`Doorbell` rings the
sleepers it was given an eventfd for (a feed: both; the bridge, for the rows it
mirrors: the detector only, since it never publishes those) and sleeps as one
of them (``sleeper``).

Contract (no lost wake-up), for each sleeper. Writers ring a sleeper only when
it has raised its flag, so busy sleepers cost the feeds nothing but one 8-byte
load per publish (both flags at once). The sleeper raises its flag, fences and
re-checks the rows before it blocks (:meth:`prepare_sleep`, then its own
check, then :meth:`sleep` or its event loop's wait on :attr:`fd`); a writer
publishes, fences and then reads the flags (:meth:`ring_if_sleeping`). That is
the Dekker pattern: it needs a full fence on both sides, because x86-64 may
reorder a store with a later load, and ``threading.Lock`` acquire and release
is a locked instruction, i.e. a full fence, reachable from Python. So either
the writer sees the flag and rings, or the sleeper's re-check sees the row.
The two sleepers do not interact: each flag has one writer that raises it (its
sleeper) and is cleared only by a ring to that sleeper or by that sleeper, and
the writer's one load reads both flags as they are after its fence (an aligned
8-byte load is one access on x86-64), so the argument holds for each flag
alone. A lost wake-up is still bounded by the sleeper's timeout.

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

SLEEPERS = ("detector", "bridge")    # the sleeper slots, in the order of their flags in the header
DETECTOR, BRIDGE = range(len(SLEEPERS))
_FLAG_WORD = HEADER_DTYPE.fields["detector_sleeping"][1] // 4      # the first flag, as a u32 index
assert all(HEADER_DTYPE.fields[f"{name}_sleeping"][1] == 4 * (_FLAG_WORD + slot) for slot, name in enumerate(SLEEPERS))
assert _FLAG_WORD % 2 == 0 and len(SLEEPERS) == 2
_PAIR_WORD = _FLAG_WORD // 2         # both flags as one u64: a writer reads every sleeper's flag in one load


class Doorbell:
    """The eventfds of the sleepers and their flags in the board header: rings them, or sleeps as one.

    ``fd`` is the detector's eventfd, ``bridge_fd`` the bridge publisher's (-1: not rung from here);
    ``sleeper`` is the slot this end sleeps as (:meth:`prepare_sleep`, :meth:`sleep`, :meth:`cancel_sleep`,
    :attr:`fd`).
    """

    def __init__(self, board_buf, fd: int, bridge_fd: int = -1, *, sleeper: int = DETECTOR):
        self._fds = (fd, bridge_fd)
        self.fd = self._fds[sleeper]             # the eventfd this end sleeps on
        self._flag = _FLAG_WORD + sleeper
        words = board_buf.cast("B")
        self._flags = words.cast("I")
        self._pair = words.cast("Q")
        self._fence = threading.Lock()
        self.rings = 0
        self._poll = None

    @staticmethod
    def create_fd() -> int:
        return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    # -- writer side (feeds, the bridge for its mirrored rows) --------------
    def ring_if_sleeping(self) -> None:
        """After a publish: wake every sleeper that is (about to be) asleep. Part of the contract."""
        fence = self._fence
        fence.acquire()
        fence.release()
        if self._pair[_PAIR_WORD]:           # somebody sleeps: which (one load for both when nobody does)
            flags = self._flags
            for slot, fd in enumerate(self._fds):
                if fd >= 0 and flags[_FLAG_WORD + slot]:
                    self._ring(slot, fd)

    def _ring(self, slot: int, fd: int) -> None:
        self._flags[_FLAG_WORD + slot] = 0   # one ring per sleep is enough (and the woken sleeper need not clear it)
        self.rings += 1
        try:
            os.eventfd_write(fd, 1)
        except BlockingIOError:              # counter saturated: the sleeper is awake anyway
            pass

    def ring_ahead(self) -> None:
        """Before a publish: wake a sleeping detector now, so its wake-up overlaps the publish. A hint only.

        Call it as soon as a publish is known to be coming (a frame arrived): on a detector that sleeps on
        another core the wake-up, which costs more than the parse and the write together on a VM, then
        runs alongside them (``python -m bench.transport``: board_doorbell_ahead against board_doorbell).
        The detector only: it spins ``spin_us`` after a wake-up and so sees the row as soon as it is
        written, where an early-woken bridge would find nothing, sleep again and need the ring after the
        publish anyway.
        """
        if self._flags[_FLAG_WORD] and self._fds[DETECTOR] >= 0:
            self._ring(DETECTOR, self._fds[DETECTOR])

    # -- sleeper side (the detector, the bridge's publisher) ---------------
    def prepare_sleep(self) -> None:
        """Drain old rings, raise the flag and fence; the caller must re-check for work before :meth:`sleep`."""
        self.drain()                         # a ring from an earlier sleep (or a late hint) must not end this one
        self._flags[self._flag] = 1
        fence = self._fence
        fence.acquire()
        fence.release()

    def drain(self) -> bool:
        """Take a pending ring off the eventfd without blocking; True when there was one (an event loop's
        reader callback on :attr:`fd` calls this, then wakes its task)."""
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            return False
        return True

    def sleep(self, timeout_ms: float) -> bool:
        """Block until rung or ``timeout_ms``; True when rung. The ring is drained by the next prepare_sleep.

        A ring cleared the flag already (the writer that rang did); only a timeout leaves it to clear here,
        so a woken sleeper goes straight back to its rows. (A ring delayed past a timeout, by a writer
        preempted between clearing the flag and writing the eventfd, can end the next sleep with the flag
        still up: the next publish then rings once more and clears it.)
        """
        poll = self._poll
        if poll is None:
            poll = self._poll = select.poll()
            poll.register(self.fd, select.POLLIN)
        if poll.poll(timeout_ms):
            return True
        self._flags[self._flag] = 0
        return False

    def cancel_sleep(self) -> None:
        """Lower the flag: the re-check found work, or a sleep without :meth:`sleep` timed out."""
        self._flags[self._flag] = 0
