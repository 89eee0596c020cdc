"""The detector process: polls the board, evaluates what changed, puts each decision in the decision ring.

Three parts, each in its own module: the board scan
(:mod:`pipeline.detector.scan`: changed rows and their quotes, read in place
through the seqlock), the pure decision engine
(:mod:`pipeline.detector.engine`: edge after fees, lifecycle, shadow fills,
summary; it takes the time as an argument) and the decision ring
(:mod:`pipeline.decisions`: one fixed-size entry per record, in the board).
This module is the loop that ties them together with the clock, the doorbell
and the board counters; ``replay`` drives the same scan and engine with
recorded time.

Waiting: in ``doorbell`` mode (default) it spins for ``spin_us`` after the
last change, then raises the sleeping flag and blocks on the eventfd the
feeds ring (see :mod:`pipeline.board.doorbell`); idle it uses ~0 % CPU. In
``spin`` mode it never sleeps: lowest latency, one whole core.

Every ``open`` is looked at again after each configured execution latency
(shadow fills): what would taking both legs then have given?

Nothing is formatted or written here: each record goes into the board's
decision ring (one fixed-size entry, numbers and name indexes, no text made;
``python -m bench.decisions`` measures it) and the output's doorbell is rung
once per pass that wrote; the output
process (:mod:`pipeline.output.process`) writes stdout, the events file and
the sink from the ring, at its own pace. At a clean stop the detector closes
what is open, puts its exit summary in the ring after the last record, and
exits; the output process then reads the ring to its end and prints the
summary last. Started on its own (no output process: ``spec.decision_fd``
-1), the detector follows its own ring on a thread with the same code.
"""
from __future__ import annotations

import logging
import time

from pipeline.board import (
    HOPS,
    PROC_DTYPE,
    Board,
    BoardPlan,
    Doorbell,
    HistogramBuffer,
    HistogramWriter,
    ProcessRole,
    ProcStats,
    TornReadError,
)
from pipeline.decisions import DecisionError, DecisionWriter, bell
from pipeline.detector.engine import EXPIRE_INTERVAL_NS, DetectorEngine, Emitted
from pipeline.detector.scan import BoardRules, BoardView, RowUniverse
from pipeline.output.process import FollowerThread, OutputFollower, build_sink
from pipeline.runtime import ProcessSpec, RateLimitedLog, UnusableResource, parent_alive, run_child
from pipeline.venues import VENUE_IDS

log = logging.getLogger("pipeline.detector")

SLEEP_TIMEOUT_MS = 50          # bounds a lost wake-up and the staleness re-check interval
SAMPLE_BATCH = 256             # publish_to_seen samples kept before they are recorded in a busy stretch


NO_META = (0, 0, 0, 0, 0, 0, 0, 0)


class Detector:
    """The live detector: a board scan feeding a :class:`DetectorEngine`, records put in the decision ring.

    ``decision_fd``: the output's doorbell (the supervisor's output process follows the ring); None, a
    detector on its own, which follows its ring on a thread (:class:`~pipeline.output.process.FollowerThread`;
    ``sink`` is then its HTTP sink)."""

    def __init__(self, spec: ProcessSpec, config, sink=None, decision_fd: int | None = None):
        self.spec = spec
        self.config = config
        dc = config.detector
        self.board = Board.attach(spec.board_name, spec.depth)
        self.universe = RowUniverse(config, spec.rows)
        self.view = BoardView(self.board, self.universe)
        self.stats = ProcStats(self.board, spec.slot)
        self.doorbell = Doorbell(self.board.buf, spec.doorbell_fd)
        self.feed_slot = BoardPlan.from_config(config).feed_slots()
        # each feed's clock-offset estimate, read as one i8 word of its slot (a numpy field read costs µs per event)
        field_offset = PROC_DTYPE.fields["clock_offset_ns"][1]
        self._signed_words = self.board.buf.cast("B").cast("q")
        self._offset_word = {label: (self.board.geometry.procs_offset + slot * PROC_DTYPE.itemsize + field_offset) // 8
                             for label, slot in self.feed_slot.items()}
        assert (self.board.geometry.procs_offset + field_offset) % 8 == 0 and PROC_DTYPE.itemsize % 8 == 0
        self.rules = BoardRules(self.board, self.universe)      # each row's trading rules, as its feed publishes them
        self.engine = DetectorEngine(config, self.universe, self.view.quotes, self.clock_offset_ns, self.rules)
        fills = self.board.geometry.decision_fills
        if not self.board.geometry.decision_entries or len(dc.shadow_latencies_ms) > fills:
            raise UnusableResource("detector.shadow_latencies_ms",
                                   f"{len(dc.shadow_latencies_ms)} latencies, but the board's decision ring holds "
                                   f"{fills} shadow fills per entry (start the pipeline again with this config)")
        self.decisions = DecisionWriter(self.board)
        self.decisions_dropped = 0      # records the ring could not carry (logged)
        self.follower = None
        self.bell = None
        if decision_fd is None:
            self.follower = FollowerThread(OutputFollower(self.board, config, self.stats, sink,
                                                          start=self.decisions.count))
        else:
            self.bell = bell(self.board, decision_fd)
        self._refused: dict[str, int] = {}   # of the engine's refusals per reason, what the board's counters have
        hops = HOPS[ProcessRole.DETECTOR]
        # publish -> seen samples are kept in a list and recorded when the loop is idle (or every SAMPLE_BATCH),
        # off the path from a change to its events
        self.publish_to_seen = HistogramBuffer(HistogramWriter(self.board, spec.slot, hops.index("publish_to_seen")),
                                               SAMPLE_BATCH)
        self.seen_to_emitted = HistogramWriter(self.board, spec.slot, hops.index("seen_to_emitted"))
        self.receive_to_emitted = HistogramWriter(self.board, spec.slot, hops.index("receive_to_emitted"))
        self.rate_log = RateLimitedLog()
        self.pairs = self.board.pairs
        self.stop = False

    @property
    def summary(self):
        return self.engine.summary

    def clock_offset_ns(self, label: str) -> int:
        word = self._offset_word.get(label)
        return self._signed_words[word] if word is not None else 0

    # ---------------------------------------------------------------- deciding
    def evaluate(self, key: str, seen_ns: int, changed_rows: list[int]) -> None:
        try:
            quotes = self.view.refresh(key, changed_rows)
        except TornReadError:
            self.view.retry(key)       # a writer was preempted mid-write: evaluate again on the next pass
            return
        # decide at a time taken after the read: a row may have been rewritten since ``seen_ns``, and a
        # quote must never look younger than the decision that uses it
        now_ns = time.time_ns()
        leg_of_row = self.universe.leg_of_row
        samples = self.publish_to_seen.samples
        for row in changed_rows:
            quote = quotes[leg_of_row[row]]
            if quote.publish_ns and quote.row == row:      # (a leg's other path, not serving it: not seen)
                samples.append(seen_ns - quote.publish_ns)
        if len(samples) >= SAMPLE_BATCH:
            self.publish_to_seen.flush()
        emitted = self.engine.evaluate(key, quotes, now_ns)
        if self.engine.suspects:
            self.warn_suspects()
        if emitted:
            self.emit(emitted, seen_ns)

    def warn_suspects(self) -> None:
        sanity = self.config.detector.sanity_bps
        for key, candidate in self.engine.suspects:
            self.rate_log.warning(f"suspect:{key}:{candidate.buy.venue}:{candidate.sell.venue}",
                                  f"suspected data or mapping error, not an opportunity: {key} "
                                  f"buy {candidate.buy.venue} sell {candidate.sell.venue} "
                                  f"net {candidate.fill.net_bps:.1f} bps > sanity bound {sanity} bps")
        self.engine.suspects.clear()

    def emit(self, emitted: list[Emitted], seen_ns: int | None = None) -> None:
        """Put each record in the decision ring (``seen_to_emitted``: the change seen -> its decision in the
        ring), count it on the board, and ring the output once."""
        venue_of_label = self.universe.venue_of_label
        write = self.decisions.write
        for item in emitted:
            record, event = item.record, item.event
            meta = NO_META
            if event is not None:
                c = event.candidate
                buy, sell = c.buy, c.sell
                meta = (0, seen_ns or 0, buy.recv_ns, sell.recv_ns, buy.seq, sell.seq, max(buy.row, 0),
                        max(sell.row, 0))
            try:
                write(record, meta)
            except DecisionError as exc:
                self.decisions_dropped += 1
                self.stats.add("output_dropped")
                self.rate_log.warning("decision", f"a {record.get('event')} record not written: {exc}")
            if event is not None and seen_ns is not None and event.kind != "close":
                now_ns = time.time_ns()
                self.seen_to_emitted.record(now_ns - seen_ns)
                self.receive_to_emitted.record(now_ns - max(event.candidate.buy.recv_ns,
                                                            event.candidate.sell.recv_ns))
            kind = record["event"]
            if kind == "open":
                self.stats.add("opportunities")
                buy = VENUE_IDS[venue_of_label[record["buy_exchange"]]]
                sell = VENUE_IDS[venue_of_label[record["sell_exchange"]]]
                self.pairs[buy - 1, sell - 1] += 1
            elif kind == "shadow":
                fills = record["shadow_fills"]
                self.stats.add("shadow_fills", len(fills))
                self.stats.add("shadow_profitable", sum(1 for f in fills if f["net_bps"] is not None
                                                        and f["net_bps"] > 0))
        if emitted:
            self.ring()
        self.count_refused()

    def ring(self) -> None:
        """Tell the output that the ring has new entries (the doorbell; the follower thread's event)."""
        if self.bell is not None:
            self.bell.ring_if_sleeping()
        else:
            self.follower.wake.set()

    def count_refused(self) -> None:
        """The engine's refusals per reason (its summary's ``refused``) into the slot's ``refused_*``
        counters (added, not set: a restarted detector continues its predecessor's count)."""
        refused = self.engine.summary.refused
        for reason, n in refused.items():
            seen = self._refused.get(reason, 0)
            if n != seen and f"refused_{reason}" in PROC_DTYPE.names:
                self.stats.add(f"refused_{reason}", n - seen)
                self._refused[reason] = n

    # ---------------------------------------------------------------- loop
    def next_shadow_in_ms(self, now_ns: int) -> float:
        due = self.engine.next_shadow_ns()
        if due is None:
            return SLEEP_TIMEOUT_MS
        return max(0.0, min(SLEEP_TIMEOUT_MS, (due - now_ns) / 1e6))

    def run(self) -> None:
        spin = self.config.detector.wait == "spin"
        spin_ns = int(self.config.detector.spin_us * 1000)
        scans_word = self.stats.word("scans")
        words = self.stats.words
        heartbeat_word = self.stats.word("heartbeat_ns")
        doorbell = self.doorbell
        view = self.view
        engine = self.engine
        last_activity = time.monotonic_ns()
        last_expire = 0
        while not self.stop:
            dirty = view.changed()
            words[scans_word] += 1
            if dirty:
                seen_ns = time.time_ns()
                for key, rows in dirty.items():
                    self.evaluate(key, seen_ns, rows)
                last_activity = time.monotonic_ns()
            if engine.shadow_due and engine.shadow_due[0][0] <= time.time_ns():
                self.emit(engine.run_shadows(time.time_ns()))
            if dirty:
                continue
            if self.publish_to_seen.samples:
                self.publish_to_seen.flush()
            mono = time.monotonic_ns()
            if mono - last_expire > EXPIRE_INTERVAL_NS:
                last_expire = mono
                words[heartbeat_word] = time.time_ns()
                self.emit(engine.expire(time.time_ns()))     # also counts what a failed write lost
                if not parent_alive(self.spec):
                    log.error("supervisor is gone; exiting")
                    break
            if spin or mono - last_activity < spin_ns:
                continue
            doorbell.prepare_sleep()
            if view.anything_changed():
                doorbell.cancel_sleep()
                continue
            doorbell.sleep(self.next_shadow_in_ms(time.time_ns()))
            last_activity = time.monotonic_ns()

    def close(self) -> bool:
        """Closes what is open and puts the summary in the ring after the last record, for the output to print
        last. Run alone, it then stops its follower, which prints it (False: stdout was blocked; it is logged)."""
        self.publish_to_seen.flush()
        self.emit(self.engine.close_all(time.time_ns()))
        self.decisions.text(self.summary.render())
        self.ring()
        printed = True
        if self.follower is not None:
            printed = self.follower.close()
        self.decisions.close()
        self.view.close()
        self.rules.close()
        self.pairs = self._signed_words = None
        self.board.close()
        return printed


def main(spec: ProcessSpec, config) -> None:
    """Entry point of the detector process (called in the forked child). ``spec.decision_fd``: the output
    process's doorbell; without one (-1) the detector runs alone, writing its outputs from a thread."""
    run_child(spec, lambda stop: run_detector(spec, config, stop))


def run_detector(spec: ProcessSpec, config, stop) -> None:
    decision_fd = spec.decision_fd if spec.decision_fd >= 0 else None
    sink = build_sink(config) if decision_fd is None else None
    detector = Detector(spec, config, sink, decision_fd)
    detector.stop = stop        # SIGTERM ends the loop at its next pass (a sleep on the doorbell is bounded)
    try:
        detector.run()
    finally:
        detector.close()        # every open closed, then the summary: the last entries of the ring
