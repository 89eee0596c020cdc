"""The detector process: polls the board, evaluates what changed, reports.

It reads rows straight out of shared memory through the seqlock (no
serialization, no queue) and evaluates only the instruments whose rows
changed since the last pass, so its cost grows with what changed, not with
the size of the board.

Waiting: in ``doorbell`` mode (default) it spins for ``spin_us`` after the
last change, then raises the sleeping flag and blocks on the eventfd the
feeds ring (see :mod:`pipeline.board.doorbell`); idle it uses ~0 % CPU. In
``spin`` mode it never sleeps: lowest latency, one whole core.

Every ``open`` is looked at again after each configured execution latency
(shadow fills): what would taking both legs then have given?
"""
from __future__ import annotations

import heapq
import logging
import os
import signal
import sys
import time

import numpy as np
import orjson

from pipeline.board import Board, RowReader, TornReadError
from pipeline.board.doorbell import Doorbell
from pipeline.board.histogram import HistogramWriter
from pipeline.board.layout import HOPS, ProcessRole
from pipeline.board.stats import ProcStats
from pipeline.detector.lifecycle import Event, Lifecycle
from pipeline.detector.report import Summary, event_line, event_record, shadow_record
from pipeline.detector.rules import Quote, find, shadow_fill
from pipeline.runtime import ProcessSpec, RateLimitedLog, parent_alive, setup_child
from pipeline.venues import VENUE_IDS

log = logging.getLogger("pipeline.detector")

NUMPY_SCAN_ROWS = 64
SLEEP_TIMEOUT_MS = 50          # bounds a lost wake-up and the staleness re-check interval
EXPIRE_INTERVAL_NS = 20_000_000


def instrument_key(instrument: str, equivalent_quotes) -> str:
    """The identity used to compare exchanges: quotes declared equivalent map to the group's first."""
    base, quote = instrument.split("/")
    for group in equivalent_quotes:
        if quote in group:
            return f"{base}/{group[0]}"
    return instrument


class Detector:
    def __init__(self, spec: ProcessSpec, config, sink=None):
        self.spec = spec
        self.config = config
        dc = config.detector
        self.board = Board.attach(spec.board_name, spec.depth)
        self.reader = RowReader(self.board)
        self.stats = ProcStats(self.board, spec.slot)
        self.doorbell = Doorbell(self.board.buf, spec.doorbell_fd)
        self.staleness_ns = int(dc.staleness_ms * 1e6)
        self.threshold_bps = dc.threshold_bps
        self.lifecycle = Lifecycle(update_bps=dc.update_bps)
        self.sink = sink
        # rows grouped by instrument identity; fees per identity and venue
        self.rows_of: dict[str, list[tuple[int, str]]] = {}
        self.key_of_row: dict[int, str] = {}
        self.venue_of_row: dict[int, str] = {}
        self.fees: dict[str, dict[str, float]] = {}
        self.max_age_ns = {v.name: int(v.staleness_ms * 1e6) for v in config.venues}
        self.max_notional: dict[str, float] = {}
        venues = {v.name: v for v in config.venues}
        for assignment in spec.rows:
            key = instrument_key(assignment.instrument, dc.equivalent_quotes)
            self.rows_of.setdefault(key, []).append((assignment.row, assignment.venue))
            self.key_of_row[assignment.row] = key
            self.venue_of_row[assignment.row] = assignment.venue
            self.fees.setdefault(key, {})[assignment.venue] = venues[assignment.venue].fee_bps(assignment.instrument)
            self.max_notional[key] = dc.max_notional_for(assignment.instrument)
        self.watch = sorted(self.key_of_row)
        self.seq_words = [self.reader.seq_words[r] for r in self.watch]
        self.last_seq = [0] * len(self.watch)
        self.feed_slot = {}
        for other in config.venues:
            self.feed_slot[other.name] = [v.name for v in config.venues].index(other.name)
        codec = self.reader.codec
        idx = codec.index
        self._fields = (idx["bids"], idx["asks"], idx["n_bids"], idx["n_asks"], idx["status"], idx["recv_ns"],
                        idx["exch_ts_ns"], idx["publish_ns"])
        # large boards: find changed rows with one strided numpy copy of the seq column instead of a
        # Python loop (about 37 ns a row); small boards: the loop is cheaper than numpy's call overhead
        self._seq_column = None
        if len(self.watch) > NUMPY_SCAN_ROWS and self.watch == list(range(len(self.watch))):
            self._seq_column = np.ndarray((len(self.watch),), "<u8", self.board.buf, codec.rows_offset,
                                          (codec.row_size,))
            self._last_column = np.zeros(len(self.watch), "<u8")
        hops = HOPS[ProcessRole.DETECTOR]
        self.publish_to_seen = HistogramWriter(self.board, spec.slot, hops.index("publish_to_seen"))
        self.seen_to_emitted = HistogramWriter(self.board, spec.slot, hops.index("seen_to_emitted"))
        self.receive_to_emitted = HistogramWriter(self.board, spec.slot, hops.index("receive_to_emitted"))
        if dc.output:
            os.makedirs(os.path.dirname(os.path.abspath(dc.output)), exist_ok=True)
        self.output = open(dc.output, "ab", buffering=0) if dc.output else None
        self.print_opportunities = dc.print_opportunities
        self.rate_log = RateLimitedLog()
        self.summary = Summary()
        self.pairs = self.board.pairs
        self.shadow_due: list = []        # heap of (due_ns, n, opened event, latency_ms)
        self.shadow_pending: dict = {}    # id(open) -> [event, {latency: ShadowFill}]
        self._shadow_n = 0
        self.stop = False

    # ---------------------------------------------------------------- reading
    def quote(self, row: int, venue: str) -> Quote:
        seq, v = self.reader.read_with_seq(row)
        b, a, nb, na, status, recv, exch, publish = self._fields
        bids = list(zip(v[b:b + 2 * v[nb]:2], v[b + 1:b + 2 * v[nb]:2]))
        asks = list(zip(v[a:a + 2 * v[na]:2], v[a + 1:a + 2 * v[na]:2]))
        return Quote(venue, v[status], bids, asks, v[recv], v[exch], v[publish], seq, self.max_age_ns[venue])

    def quotes(self, key: str) -> dict[str, Quote]:
        return {venue: self.quote(row, venue) for row, venue in self.rows_of[key]}

    def clock_offset_ns(self, venue: str) -> int:
        return int(self.board.procs[self.feed_slot[venue]]["clock_offset_ns"])

    def changed(self) -> dict[str, list[int]]:
        """Instrument identities whose rows changed since the last pass, with those rows."""
        if self._seq_column is not None:
            return self._changed_numpy()
        words = self.reader._words  # noqa: SLF001 - the hot loop reads seq words directly
        last = self.last_seq
        dirty: dict[str, list[int]] = {}
        for i, word in enumerate(self.seq_words):
            seq = words[word]
            if seq != last[i] and not seq & 1:      # odd: a write in progress, seen when it completes
                last[i] = seq
                row = self.watch[i]
                dirty.setdefault(self.key_of_row[row], []).append(row)
        return dirty

    def _changed_numpy(self) -> dict[str, list[int]]:
        current = self._seq_column.copy()          # each u64 load is atomic; rows are re-validated when read
        if current.tobytes() == self._last_column.tobytes():
            return {}
        in_progress = (current & 1).astype(bool)
        if in_progress.any():                      # odd: a write in progress, seen when it completes
            current[in_progress] = self._last_column[in_progress]
        dirty: dict[str, list[int]] = {}
        key_of_row = self.key_of_row
        for row in np.flatnonzero(current != self._last_column).tolist():
            dirty.setdefault(key_of_row[row], []).append(row)
        self._last_column = current
        return dirty

    def anything_changed(self) -> bool:
        if self._seq_column is not None:
            return self._seq_column.tobytes() != self._last_column.tobytes()
        words = self.reader._words  # noqa: SLF001
        last = self.last_seq
        for i, word in enumerate(self.seq_words):
            if words[word] != last[i]:
                return True
        return False

    # ---------------------------------------------------------------- deciding
    def evaluate(self, key: str, seen_ns: int, changed_rows: list[int]) -> None:
        try:
            quotes = self.quotes(key)
        except TornReadError:
            # a writer was preempted mid-write: evaluate this instrument again on the next pass
            for row, _ in self.rows_of[key]:
                if self._seq_column is not None:
                    self._last_column[row] = 0
                else:
                    self.last_seq[self.watch.index(row)] = -1
            return
        venue_of_row = self.venue_of_row
        for row in changed_rows:
            publish_ns = quotes[venue_of_row[row]].publish_ns
            if publish_ns:
                self.publish_to_seen.record(seen_ns - publish_ns)
        dc = self.config.detector
        found, suspect = find(key, list(quotes.values()), self.fees[key], seen_ns, self.staleness_ns,
                              self.threshold_bps, self.max_notional[key], dc.min_notional, dc.sanity_bps)
        for candidate in suspect:
            self.summary.suspects += 1
            self.rate_log.warning(f"suspect:{key}:{candidate.buy.venue}:{candidate.sell.venue}",
                                  f"suspected data or mapping error, not an opportunity: {key} "
                                  f"buy {candidate.buy.venue} sell {candidate.sell.venue} "
                                  f"net {candidate.fill.net_bps:.1f} bps > sanity bound {dc.sanity_bps} bps")
        self.emit(self.lifecycle.step(key, found, quotes, seen_ns, self.staleness_ns), seen_ns)

    def emit(self, events: list[Event], seen_ns: int | None = None) -> None:
        for event in events:
            now_ns = time.time_ns()
            if seen_ns is not None and event.kind != "close":
                self.seen_to_emitted.record(now_ns - seen_ns)
                newest = max(event.candidate.buy.recv_ns, event.candidate.sell.recv_ns)
                self.receive_to_emitted.record(now_ns - newest)
            record = event_record(event, now_ns, self.fees[event.candidate.instrument],
                                  self.clock_offset_ns(event.candidate.buy.venue),
                                  self.clock_offset_ns(event.candidate.sell.venue))
            if event.kind == "open":
                self.stats.add("opportunities")
                self.pairs[VENUE_IDS[event.candidate.buy.venue] - 1, VENUE_IDS[event.candidate.sell.venue] - 1] += 1
                self.summary.opened(record)
                self.schedule_shadows(event)
                if self.sink is not None and not self.sink.submit(record):
                    self.stats.add("sink_dropped")
            elif event.kind == "close":
                self.summary.closed(record)
            self.write(record)

    def write(self, record: dict) -> None:
        if self.output is not None:
            self.output.write(orjson.dumps(record) + b"\n")
        if self.print_opportunities:
            sys.stdout.write(event_line(record) + "\n")
            sys.stdout.flush()

    # ---------------------------------------------------------------- shadow fills
    def schedule_shadows(self, event: Event) -> None:
        latencies = self.config.detector.shadow_latencies_ms
        if not latencies:
            return
        self.shadow_pending[id(event)] = [event, {}]
        for latency_ms in latencies:
            self._shadow_n += 1
            heapq.heappush(self.shadow_due, (event.now_ns + int(latency_ms * 1e6), self._shadow_n, event, latency_ms))

    def run_shadows(self, now_ns: int) -> None:
        due = self.shadow_due
        while due and due[0][0] <= now_ns:
            _, _, event, latency_ms = heapq.heappop(due)
            c = event.candidate
            try:
                quotes = self.quotes(c.instrument)
            except TornReadError:
                heapq.heappush(due, (now_ns + 100_000, 0, event, latency_ms))
                return
            fill = shadow_fill(c, quotes[c.buy.venue], quotes[c.sell.venue], self.fees[c.instrument], latency_ms,
                               now_ns, self.staleness_ns)
            self.stats.add("shadow_fills")
            if fill.net_bps is not None and fill.net_bps > 0:
                self.stats.add("shadow_profitable")
            self.summary.shadow(fill)
            pending = self.shadow_pending[id(event)]
            pending[1][latency_ms] = fill
            if len(pending[1]) == len(self.config.detector.shadow_latencies_ms):
                del self.shadow_pending[id(event)]
                fills = [pending[1][ms] for ms in sorted(pending[1])]
                self.write(shadow_record(event, fills, time.time_ns()))

    def next_shadow_in_ms(self, now_ns: int) -> float:
        if not self.shadow_due:
            return SLEEP_TIMEOUT_MS
        return max(0.0, min(SLEEP_TIMEOUT_MS, (self.shadow_due[0][0] - now_ns) / 1e6))

    # ---------------------------------------------------------------- loop
    def expire(self, now_ns: int) -> None:
        if not self.lifecycle.live:
            return
        keys = {key[0] for key in self.lifecycle.live}
        try:
            quotes = {k: self.quotes(k) for k in keys}
        except TornReadError:
            return
        self.emit(self.lifecycle.expire(quotes, now_ns, self.staleness_ns))

    def run(self) -> None:
        slot = self.board.procs[self.spec.slot]
        slot["role"] = int(ProcessRole.DETECTOR)
        self.stats.set("pid", os.getpid())
        self.stats.set("started_ns", time.time_ns())
        spin = self.config.detector.wait == "spin"
        spin_ns = int(self.config.detector.spin_us * 1000)
        scans_word = self.stats.word("scans")
        words = self.stats.words
        heartbeat_word = self.stats.word("heartbeat_ns")
        doorbell = self.doorbell
        last_activity = time.monotonic_ns()
        last_expire = 0
        while not self.stop:
            dirty = self.changed()
            words[scans_word] += 1
            if dirty:
                seen_ns = time.time_ns()
                for key, rows in dirty.items():
                    self.evaluate(key, seen_ns, rows)
                last_activity = time.monotonic_ns()
            if self.shadow_due and self.shadow_due[0][0] <= time.time_ns():
                self.run_shadows(time.time_ns())
            if dirty:
                continue
            mono = time.monotonic_ns()
            if mono - last_expire > EXPIRE_INTERVAL_NS:
                last_expire = mono
                words[heartbeat_word] = time.time_ns()
                self.expire(time.time_ns())
                if not parent_alive(self.spec):
                    log.error("supervisor is gone; exiting")
                    break
            if spin or mono - last_activity < spin_ns:
                continue
            doorbell.prepare_sleep()
            if self.anything_changed():
                doorbell.cancel_sleep()
                continue
            doorbell.sleep(self.next_shadow_in_ms(time.time_ns()))
            last_activity = time.monotonic_ns()

    def close(self) -> None:
        self.emit(self.lifecycle.close_all(time.time_ns()))
        if self.output is not None:
            self.output.close()
        if self.sink is not None:
            self.sink.close(1.0)
        self.reader = None
        self.pairs = None
        self._seq_column = None
        self.board.close()


def build_sink(config):
    sink_config = config.detector.sink
    if sink_config is None:
        return None
    from pipeline.detector.sink import HttpSink
    token = os.environ.get(sink_config.token_env) if sink_config.token_env else None
    if sink_config.token_env and not token:
        log.error("analysis sink: environment variable %s is not set; sending without a token",
                  sink_config.token_env)
    sink = HttpSink(sink_config.url, token, timeout_s=sink_config.timeout_s, queue_size=sink_config.queue_size)
    sink.start()
    return sink


def main(spec: ProcessSpec, config) -> None:
    setup_child(spec)
    detector = Detector(spec, config, build_sink(config))

    def on_term(signum, frame):
        detector.stop = True
    signal.signal(signal.SIGTERM, on_term)
    try:
        detector.run()
    finally:
        detector.close()
        sys.stdout.write(detector.summary.render() + "\n")
        sys.stdout.flush()
