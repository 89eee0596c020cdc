"""Each simulated connection's own network path: one-way delay, stalls and abrupt drops (config
``simulator.paths``).

A real feed reaches an exchange over TCP paths that differ: each has its own delay distribution, stalls now
and then (a lost segment waiting for its retransmission, a congested hop) and is sometimes reset. Redundant
connections to one venue receive the same stream over such paths, each at its own times. This module is the
schedule of one path, pure: times in (monotonic seconds, passed by the caller), due times out; no clock, no
socket, no task. :class:`pipeline.sim.server.ExchangeServer` is the I/O around it: it hands every frame a
connection would get (market data, replies, keepalives) to that connection's :class:`PathSchedule` and one
sender task per connection sends what :meth:`PathSchedule.pop_due` returns.

The schedule keeps TCP's promises:

* a frame is due ``delay`` after it was handed over, ``delay`` drawn from a lognormal distribution with median
  ``delay_ms`` and sigma ``jitter``; a frame never overtakes an earlier one of the same connection (its due
  time is at least the previous frame's);
* a stall holds every frame due while it lasts until it ends, then they go out back to back; random stalls
  start ``stall_every_s`` apart on average (exponential) and last ``stall_ms`` (uniform over the range);
  :meth:`PathSchedule.stall` starts one now (a test's hook), holding the frames already waiting too;
* a drop (``disconnect_every_s`` apart on average, exponential) ends the connection abruptly, without a close
  frame; what was still waiting is lost, as with a reset; :meth:`PathSchedule.drop` drops it now.

Beside these random faults, a server may rotate deterministic ones through its connections
(:class:`FaultRotation`, ``fault_every_s``): every ``fault_every_s`` its oldest open connection is dropped or
stalled ``fault_stall_ms``, alternately, and never while another of its connections is still down.

Each path draws from its own random streams, seeded from (``simulator.seed``, venue, the connection's index on
its server): two connections of a venue have independent paths, and a run is repeatable.
"""
from __future__ import annotations

import collections
import math
import random
from array import array
from dataclasses import dataclass

SAMPLES_KEPT = 4096          # per connection, the newest delay samples its p50 / p99 are taken over (32 KiB)


@dataclass(frozen=True)
class PathModel:
    """The distribution every connection's path draws from (the values of ``simulator.paths``).

    ``delay_ms``: median one-way delay (0: none); ``jitter``: sigma of the delay's lognormal (0: every frame
    takes ``delay_ms``); ``stall_every_s``: mean time between stalls of one connection (0: never);
    ``stall_ms``: ``(low, high)`` of a stall's length; ``disconnect_every_s``: mean time between drops of one
    connection (0: never); ``fault_every_s``: period of the server's :class:`FaultRotation` (0: off),
    ``fault_stall_ms``: how long each of its stalls lasts.
    """

    delay_ms: float = 0.2
    jitter: float = 0.5
    stall_every_s: float = 5.0
    stall_ms: tuple[float, float] = (50.0, 300.0)
    disconnect_every_s: float = 0.0
    fault_every_s: float = 0.0
    fault_stall_ms: float = 300.0


@dataclass(frozen=True)
class PathStatistics:
    """What one connection's path did so far (:meth:`PathSchedule.statistics`).

    ``frames``: frames handed to the path (each delayed by its sample); ``held``: those a stall held past their
    due time; ``stalls`` / ``stall_ms``: stalls begun and their total length; ``dropped``: the path ended the
    connection. ``delay_*_ms``: over the delay samples (``delay_sum_ms`` over all of them, the quantiles over
    the newest :data:`SAMPLES_KEPT`), 0 before the first frame.
    """

    index: int
    frames: int
    held: int
    stalls: int
    stall_ms: float
    dropped: bool
    delay_sum_ms: float
    delay_p50_ms: float
    delay_p99_ms: float


@dataclass(frozen=True)
class PathTotals:
    """What the paths of one server's connections did (:meth:`pipeline.sim.server.ExchangeServer.path_statistics`).

    ``frames_delayed``: frames sent through a path; ``frames_held``: those a stall held; ``stalls`` /
    ``stall_ms``: stalls begun and their total length; ``drops``: connections a path ended. Summed over every
    connection so far; ``connections``: each kept connection's own :class:`PathStatistics`, by index.
    ``faults_dropped`` / ``faults_stalled`` / ``faults_skipped``: the server's :class:`FaultRotation` turns that
    dropped a connection, stalled one, or took nothing down (its drops and stalls are among ``drops`` and
    ``stalls`` too).
    """

    frames_delayed: int = 0
    frames_held: int = 0
    stalls: int = 0
    stall_ms: float = 0.0
    drops: int = 0
    connections: tuple[PathStatistics, ...] = ()
    faults_dropped: int = 0
    faults_stalled: int = 0
    faults_skipped: int = 0

    def add(self, path: PathStatistics, keep: bool = True) -> PathTotals:
        """These totals with ``path``'s added (and ``path`` among ``connections`` with ``keep``)."""
        return PathTotals(self.frames_delayed + path.frames, self.frames_held + path.held,
                          self.stalls + path.stalls, self.stall_ms + path.stall_ms, self.drops + int(path.dropped),
                          self.connections + (path,) if keep else self.connections,
                          self.faults_dropped, self.faults_stalled, self.faults_skipped)

    def connection(self, index: int) -> PathStatistics:
        """The path of connection ``index`` (KeyError when it is not kept)."""
        for path in self.connections:
            if path.index == index:
                return path
        raise KeyError(index)


class FaultRotation:
    """One server's deterministic faults: every ``every_s`` a turn takes its oldest open connection down,
    alternately dropped (first) and stalled ``stall_ms``, one at a time.

    A turn takes nothing down (skipped) while fewer connections are open than were ever open at once (a dropped
    one is not back yet), while the stall of the turn before still lasts, or when none is open: so of a venue's
    two connections one is always whole. Pure: :meth:`turn` gets the open connections' indexes and the time
    (monotonic s) and says what to do; the server does it. Turns are due at ``start_s + k * every_s``; a turn
    found late does not bring the missed ones back.
    """

    def __init__(self, every_s: float, stall_ms: float, start_s: float) -> None:
        self.every_s = every_s
        self.stall_ms = stall_ms
        self.next_s = start_s + every_s       # when the next turn is due
        self.peak = 0                         # the most connections ever open at once
        self.dropped = 0
        self.stalled = 0
        self.skipped = 0
        self._drop_next = True
        self._stall_end_s = -math.inf

    def opened(self, open_count: int) -> None:
        """A connection opened: ``open_count`` are open now (the peak a turn compares with)."""
        self.peak = max(self.peak, open_count)

    def turn(self, open_indexes, now_s: float) -> tuple[str, int] | None:
        """This turn's fault: ``("drop", index)``, ``("stall", index)`` of the oldest (lowest index) open
        connection, or None (skipped). Moves :attr:`next_s` past ``now_s``."""
        while self.next_s <= now_s:
            self.next_s += self.every_s
        self.opened(len(open_indexes))
        if not open_indexes or len(open_indexes) < self.peak or now_s < self._stall_end_s:
            self.skipped += 1
            return None
        index = min(open_indexes)
        if self._drop_next:
            self.dropped += 1
            fault = ("drop", index)
        else:
            self.stalled += 1
            self._stall_end_s = now_s + self.stall_ms / 1000.0
            fault = ("stall", index)
        self._drop_next = not self._drop_next
        return fault


def quantile(samples, q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` (nearest rank), 0.0 when there are none."""
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class PathSchedule:
    """One connection's path: when each frame handed to it goes out, in order, through stalls, until a drop.

    ``push(frame, now_s)`` queues a frame and returns its due time; ``pop_due(now_s)`` returns the frames due
    by ``now_s``, oldest first; ``next_s()`` is when the next one is due (``inf``: none waiting);
    ``drop_due(now_s)`` says whether the path drops the connection now (``next_drop_s``: when it will).
    Times are monotonic seconds, from the caller; nothing here reads a clock.
    """

    def __init__(self, model: PathModel, seed: int, venue: str, index: int, start_s: float) -> None:
        self.model = model
        self.index = index
        key = f"path:{seed}:{venue}:{index}"
        self._delays = random.Random(f"{key}:delay")
        self._stall_rng = random.Random(f"{key}:stall")
        drops = random.Random(f"{key}:drop")
        self._mu = math.log(model.delay_ms) if model.delay_ms > 0 else None
        self._queue: collections.deque = collections.deque()       # [due_s, frame], due times non-decreasing
        self._last_due_s = start_s
        self._last_held = False                                     # whether a stall held the newest frame
        self._windows: list[tuple[float, float]] = []               # stalls (start_s, end_s) not yet over
        self._next_stall_s = (start_s + self._stall_rng.expovariate(1.0 / model.stall_every_s)
                              if model.stall_every_s > 0 else math.inf)
        self.next_drop_s = (start_s + drops.expovariate(1.0 / model.disconnect_every_s)
                            if model.disconnect_every_s > 0 else math.inf)
        self.frames = 0
        self.held = 0
        self.stalls = 0
        self.stall_ms = 0.0
        self.dropped = False
        self.delay_sum_ms = 0.0
        self.samples = array("d")                                   # the newest SAMPLES_KEPT delays, ms (a ring)

    # -- frames -----------------------------------------------------------
    def sample_ms(self) -> float:
        """The next one-way delay, ms: lognormal, median ``delay_ms``, sigma ``jitter``."""
        if self._mu is None:
            return 0.0
        return self._delays.lognormvariate(self._mu, self.model.jitter)

    def push(self, frame, now_s: float) -> float:
        """Queue ``frame`` handed over at ``now_s``; returns when it is due (never before the previous frame)."""
        delay_ms = self.sample_ms()
        self.delay_sum_ms += delay_ms
        if len(self.samples) < SAMPLES_KEPT:
            self.samples.append(delay_ms)
        else:
            self.samples[self.frames % SAMPLES_KEPT] = delay_ms
        self.frames += 1
        due_s, held = now_s + delay_ms / 1000.0, False
        if self._last_due_s > due_s:                  # waits for the frame before it (held if that one was)
            due_s, held = self._last_due_s, self._last_held
        released_s = self._release(due_s)
        held = held or released_s > due_s
        self.held += held
        self._last_due_s, self._last_held = released_s, held
        self._queue.append([released_s, frame])
        return released_s

    def pop_due(self, now_s: float) -> list:
        """The frames due by ``now_s``, oldest first (removed from the queue)."""
        self._advance(now_s)
        queue = self._queue
        out = []
        while queue and queue[0][0] <= now_s:
            out.append(queue.popleft()[1])
        return out

    def next_s(self) -> float:
        """When the oldest waiting frame is due; ``inf`` when none waits."""
        return self._queue[0][0] if self._queue else math.inf

    @property
    def waiting(self) -> int:
        """Frames handed over and not yet due."""
        return len(self._queue)

    # -- stalls and drops -------------------------------------------------
    def stall(self, now_s: float, ms: float) -> float:
        """Stall the path from ``now_s`` for ``ms``: every frame due before the end, those already waiting
        included, goes out at the end, back to back. Returns the end (monotonic s)."""
        end_s = now_s + ms / 1000.0
        self._add_window(now_s, end_s)
        moved = False
        for entry in self._queue:
            if now_s <= entry[0] < end_s:
                entry[0] = end_s
                self.held += 1
                moved = True
        if moved and self._last_due_s <= end_s:          # the newest frame was among them
            self._last_due_s, self._last_held = end_s, True
        return end_s

    def drop(self, now_s: float) -> None:
        """Drop the connection at ``now_s`` (or at its random drop, if that comes first): :meth:`drop_due` says so
        from then on."""
        self.next_drop_s = min(self.next_drop_s, now_s)

    def drop_due(self, now_s: float) -> bool:
        """True once ``now_s`` reaches the drop time: the connection ends now, and what waits is lost."""
        if now_s < self.next_drop_s or self.dropped:
            return False
        self.dropped = True
        self._queue.clear()
        return True

    def statistics(self) -> PathStatistics:
        return PathStatistics(self.index, self.frames, self.held, self.stalls, self.stall_ms, self.dropped,
                              self.delay_sum_ms, quantile(self.samples, 0.5), quantile(self.samples, 0.99))

    # -- the stall windows --------------------------------------------------
    def _add_window(self, start_s: float, end_s: float) -> None:
        self._windows.append((start_s, end_s))
        self._windows.sort()
        self.stalls += 1
        self.stall_ms += (end_s - start_s) * 1000.0

    def _advance(self, t_s: float) -> None:
        """Draw every random stall that begins by ``t_s``; forget those over before it (no frame is due there:
        due times only grow)."""
        low, high = self.model.stall_ms
        every_s = self.model.stall_every_s
        while self._next_stall_s <= t_s:
            start_s = self._next_stall_s
            end_s = start_s + self._stall_rng.uniform(low, high) / 1000.0
            self._add_window(start_s, end_s)
            self._next_stall_s = end_s + self._stall_rng.expovariate(1.0 / every_s)
        if self._windows and self._windows[0][1] <= t_s:
            self._windows = [w for w in self._windows if w[1] > t_s]

    def _release(self, t_s: float) -> float:
        """``t_s``, or the end of the stall it falls in (and of any stall that end falls in)."""
        while True:
            self._advance(t_s)
            end_s = next((end for start, end in self._windows if start <= t_s < end), None)
            if end_s is None:
                return t_s
            t_s = end_s


__all__ = ["FaultRotation", "PathModel", "PathSchedule", "PathStatistics", "PathTotals", "SAMPLES_KEPT", "quantile"]
