"""The output process: follows the decision ring and writes stdout, the events file, the HTTP sink and NATS.

The detector only puts each record into the board's decision ring (:mod:`pipeline.decisions`) and rings
this process's doorbell; this process turns each entry back into the engine's record
(:func:`pipeline.decisions.decode`: the same keys, order and values) and hands it to the same fan-out
replay uses (:class:`~pipeline.output.writers.Outputs`): the JSON-lines file, the readable stdout line and
the sink, and, with ``bridge.publish_decisions``, one NATS message per record on ``decisions.<box>``
(:mod:`pipeline.output.publisher`: the file's bytes without the newline, over the bridge's connection
settings). Nothing is formatted or written on the detector's path.

Waiting: the doorbell (:mod:`pipeline.board.doorbell`, its flag in the ring's control block), spinning
``detector.spin_us`` after the last entry and then blocking on its eventfd, bounded by
:data:`SLEEP_TIMEOUT_MS`: decisions come in bursts with long quiet spells between them, so a poll would
either cost CPU all day or add its period to every decision's way out; the doorbell costs the detector one
flag load and a fence per pass that wrote, and this process ~0 % CPU when nothing happens.

Nothing is lost when an output is slow. The ring is the buffer (``detector.decision_ring`` entries, 64 k by
default): this process reads it as fast as the destinations take records, each destination has its own
writer thread and queue (a blocked stdout never holds up the file, nor the reverse; an unreachable NATS server
holds up neither) and one that cannot keep up drops from its own queue, counted (``output_dropped``,
``sink_dropped``). The slot says how far behind the ring this process is (``decisions_behind``) and how many
entries the detector overwrote before it read them (``decisions_lost``: it fell a whole ring behind);
``messages`` is its position in the ring: the entries whose records the events file has taken (written, or
dropped and counted), or that were lost. A restarted output process (the supervisor restarts a killed one)
continues from there, so a kill loses nothing: what its predecessor had read but not yet written is read
again (a record written in the instant before the kill may be written twice); only entries the detector
overwrote before a successor read them are lost, and counted (``decisions_lost``, the summary's last line).

Stop order (the supervisor's): the detector stops first and puts its last records (every open closed) and
its exit summary in the ring; then this process is asked to stop, reads the ring to its end, drains the
writers, prints the summary last (with what the outputs dropped) and exits. So the events file is complete
after a clean stop.

A detector run without an output process (started on its own: tests, benchmarks) follows its own ring with
an :class:`OutputFollower` on a thread, the same code.

Decisions go over NATS from here, not from the bridge: the bridge process publishes rows, trading rules and
heartbeats; a decision is one more destination of this process, written after the ring like the file, so
the detector is never slower for it and a subscriber gets exactly the file's records, in the file's order.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time

from pipeline.board import HOPS, PROC_DTYPE, Board, HistogramWriter, ProcessRole, ProcStats
from pipeline.decisions import META, DecisionReader, bell
from pipeline.output.writers import NATS_LABEL, Outputs
from pipeline.runtime import ProcessSpec, UnusableResource, parent_alive, run_child

log = logging.getLogger("pipeline.output")

SLEEP_TIMEOUT_MS = 50           # bounds a lost wake-up; the heartbeat is beaten at least this often
BATCH = 256                     # entries handled between two updates of the slot's counters


class OutputFollower:
    """Reads the decision ring from entry ``start`` and writes each record to the outputs.

    ``stats`` is the slot its counters go to (``messages``, ``decisions_behind``, ``decisions_lost``,
    ``output_dropped``, ``sink_dropped``); ``hist`` (optional) records written -> read per entry."""

    def __init__(self, board: Board, config, stats: ProcStats, sink=None, *, start: int | None = 0,
                 hist: HistogramWriter | None = None, file_hist: HistogramWriter | None = None):
        dc = config.detector
        self.reader = DecisionReader(board, start)
        self.stats = stats
        self._u4 = None
        self._counted_read = self.reader.next
        # the position a successor starts from: entries whose records the events file has taken (written,
        # or dropped and counted), not merely read; (records handed to the file by then, ring position after)
        self._handed = 0
        self._marks: collections.deque = collections.deque()
        self._committed = self.reader.next
        self._commit_lock = threading.Lock()      # the file's writer thread commits too, as soon as it wrote
        self.outputs = Outputs(dc.output, dc.print_opportunities, getattr(config, "verbose", False), sink,
                               run_id=getattr(config, "run_id", ""), background=True,
                               publisher=decision_publisher(config), after_file_write=self.written)
        self.hist = hist
        self.file_hist = file_hist
        self._received: dict[int, int] = {}      # id() of a record handed to the file -> its newest leg's receive
        base = board.geometry.procs_offset + stats.slot * PROC_DTYPE.itemsize
        self._u4 = board.buf.cast("B").cast("I")
        self._behind_word = (base + PROC_DTYPE.fields["decisions_behind"][1]) // 4
        self._lost_word = (base + PROC_DTYPE.fields["decisions_lost"][1]) // 4
        self._counted_dropped = 0

    def pump(self, limit: int = BATCH) -> int:
        """Handle up to ``limit`` entries; returns how many there were (0: the ring is read to its end)."""
        reader = self.reader
        write = self.outputs.write
        samples = []
        n = 0
        while n < limit:
            got = reader.read()
            if got is None:
                break
            values = got[1]
            samples.append(values[META])
            self._handed += 1                        # marked before it is handed: the file's writer thread
            self._marks.append((self._handed, reader.next))     # may write it, and commit, at once
            record = reader.record(values)
            if self.file_hist is not None and values[META + 1] and record["event"] in ("open", "update"):
                self._received[id(record)] = max(values[META + 2], values[META + 3])
            write(record)
            n += 1
        if samples and self.hist is not None:
            now = time.time_ns()
            for written_ns in samples:
                self.hist.record(now - written_ns)
        self.count()
        return n

    def committed(self) -> int:
        """The ring position up to which every record is done with by the events file (written, or dropped and
        counted): where a successor must start so that a kill loses no record this process had read but not yet
        written. A record written just before a kill and not yet counted may be written twice; nothing is lost."""
        writer = self.outputs.file_writer
        marks = self._marks
        if writer is None:
            marks.clear()
            self._committed = self.reader.next
            return self._committed
        done = writer.written + writer.failed + writer.full
        while marks and marks[0][0] <= done:
            self._committed = marks.popleft()[1]
        return self._committed

    def written(self, batch: list, ok: bool) -> None:
        """The events file's writer thread, after each batch: ``receive_to_file`` for each ``open`` and ``update``
        decided on a change the detector saw, from its newest leg's receive time (a close may come from a status
        change or from time, not from a frame), then :meth:`commit`."""
        received = self._received
        if received:
            now = time.time_ns()
            hist = self.file_hist
            for record in batch:
                recv_ns = received.pop(id(record), None)
                if recv_ns is not None and ok and hist is not None:
                    hist.record(now - recv_ns)
        self.commit()

    def commit(self) -> None:
        """The slot's ``messages``: the position a restarted output process continues from (:meth:`committed`).
        Called after each pass and by the events file's writer thread after each write, so the slot moves on
        within microseconds of the file."""
        with self._commit_lock:
            if self._u4 is None:            # closed
                return
            committed = self.committed()
            if committed != self._counted_read:
                self.stats.add("messages", committed - self._counted_read)
                self._counted_read = committed

    def count(self) -> None:
        """The slot's counters from the reader and the outputs (added where a restart must continue)."""
        reader = self.reader
        stats = self.stats
        self.commit()
        self._u4[self._behind_word] = min(reader.behind(), 0xFFFFFFFF)
        self._u4[self._lost_word] = min(reader.lost, 0xFFFFFFFF)
        dropped = self.outputs.dropped
        if dropped != self._counted_dropped:
            stats.add("output_dropped", dropped - self._counted_dropped)
            self._counted_dropped = dropped
        if self.outputs.sink_dropped:
            stats.add("sink_dropped", self.outputs.sink_dropped)
            self.outputs.sink_dropped = 0

    def drain(self) -> None:
        while self.pump():
            pass

    def close(self) -> bool:
        """Read the ring to its end, drain the writers and print the detector's summary last (with what the
        outputs dropped). False when stdout could not take the summary (it is logged instead)."""
        self.drain()
        summary = self.reader.summary
        printed = self.outputs.close((lambda: self.final_text(summary)) if summary is not None else None)
        with self._commit_lock:             # everything read is done with, the summary's text entries too
            self._marks.clear()
            self._committed = self.reader.next
        self.count()
        if summary is not None and not printed:
            log.warning("stdout was not read; the summary it could not print:\n%s", self.final_text(summary))
        self.reader.close()
        self._u4 = None
        return printed

    def final_text(self, summary: str) -> str:
        """The detector's summary, with what this process's outputs and the ring lost."""
        lines = [summary]
        dropped = self.outputs.dropped_by_destination()
        if any(dropped.values()):
            words = {"stdout": "lines not printed", NATS_LABEL: "records not published on NATS"}
            cause = ("the disk, a pipe or NATS could not take them" if NATS_LABEL in dropped
                     else "the disk or pipe could not keep up")
            lines.append(f"  OUTPUT DROPPED ({cause}; detection went on): " + ", ".join(
                f"{n} {words.get(where, f'records not written to the {where}')}" for where, n in dropped.items() if n))
        if self.reader.lost:
            lines.append(f"  DECISIONS LOST: {self.reader.lost} entries of the decision ring were overwritten "
                         f"before the output read them (raise detector.decision_ring)")
        return "\n".join(lines)


class FollowerThread:
    """An :class:`OutputFollower` on a thread of the detector's own process (a detector run alone)."""

    def __init__(self, follower: OutputFollower):
        self.follower = follower
        self.wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="pipeline-output-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop:
                if not self.follower.pump():
                    self.wake.wait(SLEEP_TIMEOUT_MS / 1000)
                    self.wake.clear()
        except Exception:                   # a bug here must not die silently
            log.exception("output follower crashed; records are no longer written")

    def close(self) -> bool:
        self._stop = True
        self.wake.set()
        self._thread.join()
        return self.follower.close()


def decision_publisher(config):
    """The NATS destination of ``bridge.publish_decisions`` (None without it), not connected yet."""
    bridge = getattr(config, "bridge", None)
    if bridge is None or not bridge.publish_decisions:
        return None
    from pipeline.output.publisher import DecisionPublisher
    return DecisionPublisher(bridge)


def build_sink(config):
    """The HTTP sink of ``detector.sink`` (None without one), started."""
    sink_config = config.detector.sink
    if sink_config is None:
        return None
    from pipeline.output.sink import HttpSink, SinkError
    token = os.environ.get(sink_config.token_env) if sink_config.token_env else None
    if sink_config.token_env and not token:
        log.error("analysis sink: environment variable %s is not set; sending without a token",
                  sink_config.token_env)
    try:
        sink = HttpSink(sink_config.url, token, timeout_s=sink_config.timeout_s, queue_size=sink_config.queue_size)
    except SinkError as exc:
        raise UnusableResource("detector.sink", str(exc)) from exc
    sink.start()
    return sink


def main(spec: ProcessSpec, config) -> None:
    """Entry point of the output process (called in the forked child); ``spec.decision_fd`` is its doorbell."""
    run_child(spec, lambda stop: run_output(spec, config, spec.decision_fd, stop))


def run_output(spec: ProcessSpec, config, decision_fd: int, stop) -> None:
    board = Board.attach(spec.board_name, spec.depth)
    try:
        stats = ProcStats(board, spec.slot)
        hops = HOPS[ProcessRole.OUTPUT]
        hist = HistogramWriter(board, spec.slot, hops.index("ring_to_output"))
        file_hist = HistogramWriter(board, spec.slot, hops.index("receive_to_file"))
        # a restarted output process continues where its predecessor's events file stood (``messages``)
        follower = OutputFollower(board, config, stats, build_sink(config), start=stats.get("messages"), hist=hist,
                                  file_hist=file_hist)
        doorbell = bell(board, decision_fd)
        spin_ns = int(config.detector.spin_us * 1000)
        heartbeat_word = stats.word("heartbeat_ns")
        words = stats.words
        last_activity = last_beat = time.monotonic_ns()
        try:
            while not stop:
                if follower.pump():
                    last_activity = time.monotonic_ns()
                    continue
                mono = time.monotonic_ns()
                if mono - last_beat > SLEEP_TIMEOUT_MS * 1_000_000:
                    last_beat = mono
                    words[heartbeat_word] = time.time_ns()
                    if not parent_alive(spec):
                        log.error("supervisor is gone; exiting")
                        break
                if mono - last_activity < spin_ns:
                    continue
                doorbell.prepare_sleep()
                if follower.reader.behind():
                    doorbell.cancel_sleep()
                    continue
                doorbell.sleep(SLEEP_TIMEOUT_MS)
                last_activity = time.monotonic_ns()
        finally:
            follower.close()        # to the ring's end, the writers drained, the summary last
    finally:
        board.close()
