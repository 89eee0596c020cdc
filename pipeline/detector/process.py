"""The detector process: polls the board, evaluates what changed, reports.

It reads rows straight out of shared memory through the seqlock (no
serialization, no queue) and evaluates only the instruments whose rows
changed since the last pass, so its cost grows with what changed, not with
the size of the board.

Waiting: in ``doorbell`` mode (default) it spins for ``spin_us`` after the
last change, then raises the sleeping flag and blocks on the eventfd the
feeds ring (see :mod:`pipeline.board.doorbell`); idle it uses ~0 % CPU. In
``spin`` mode it never sleeps: lowest latency, one whole core.
"""
from __future__ import annotations

import datetime
import logging
import os
import signal
import sys
import time

import orjson

from pipeline.board import Board, RowReader, RowStatus, TornReadError
from pipeline.board.doorbell import Doorbell
from pipeline.board.layout import ProcessRole
from pipeline.board.stats import ProcStats
from pipeline.detector.lifecycle import Event, Lifecycle
from pipeline.detector.rules import Quote, find
from pipeline.runtime import ProcessSpec, RateLimitedLog, parent_alive, setup_child

log = logging.getLogger("pipeline.detector")

SLEEP_TIMEOUT_MS = 50          # bounds a lost wake-up and the staleness re-check interval
EXPIRE_INTERVAL_NS = 20_000_000


def event_record(event: Event, now_ns: int, fees_bps: dict[str, float]) -> dict:
    """The JSON-lines object for one lifecycle event (schema in the README)."""
    c = event.candidate
    fill = c.fill
    record = {
        "event": event.kind,
        "time": datetime.datetime.fromtimestamp(now_ns / 1e9, datetime.timezone.utc).isoformat(
            timespec="microseconds").replace("+00:00", "Z"),
        "time_ns": now_ns,
        "instrument": c.instrument,
        "buy_exchange": c.buy.venue,
        "sell_exchange": c.sell.venue,
        "buy_price": fill.buy_price,
        "sell_price": fill.sell_price,
        "quantity": fill.quantity,
        "gross_bps": round(fill.gross_bps, 4),
        "net_bps": round(fill.net_bps, 4),
        "fees_bps": round(fill.fees_bps, 4),
        "buy_fee_bps": fees_bps[c.buy.venue],
        "sell_fee_bps": fees_bps[c.sell.venue],
        "profit_quote": round(fill.profit_quote, 6),
        "buy_quote_age_ms": round((now_ns - c.buy.recv_ns) / 1e6, 3),
        "sell_quote_age_ms": round((now_ns - c.sell.recv_ns) / 1e6, 3),
        "best_ask": c.buy.asks[0][0],
        "best_bid": c.sell.bids[0][0],
    }
    if event.kind == "close":
        record["duration_ms"] = round(event.duration_ms, 3)
        record["peak_net_bps"] = round(event.peak_net_bps, 4)
        record["peak_profit_quote"] = round(event.peak_profit, 6)
        record["close_reason"] = event.close_reason
    return record


def event_line(record: dict) -> str:
    """The readable stdout line for one event."""
    base = (f"{record['event'].upper():6} {record['instrument']:10} buy {record['buy_exchange']} @ "
            f"{record['buy_price']:.6g} sell {record['sell_exchange']} @ {record['sell_price']:.6g} "
            f"qty {record['quantity']:.6g} gross {record['gross_bps']:.2f} bps net {record['net_bps']:.2f} bps "
            f"profit {record['profit_quote']:.4g}")
    if record["event"] == "close":
        base += f" after {record['duration_ms']:.1f} ms ({record['close_reason']})"
    return base


class Detector:
    def __init__(self, spec: ProcessSpec, config):
        self.spec = spec
        self.config = config
        dc = config.detector
        self.board = Board.attach(spec.board_name, spec.depth)
        self.reader = RowReader(self.board)
        self.stats = ProcStats(self.board, spec.slot)
        self.doorbell = Doorbell(self.board.buf, spec.doorbell_fd)
        self.fees = {v.name: v.taker_fee_bps for v in config.venues}
        self.staleness_ns = int(dc.staleness_ms * 1e6)
        self.venue_staleness_ns = {v.name: int(min(v.staleness_ms, dc.staleness_ms) * 1e6) for v in config.venues}
        self.threshold_bps = dc.threshold_bps
        self.lifecycle = Lifecycle(update_bps=dc.update_bps)
        self.rows_of: dict[str, list[tuple[int, str]]] = {}
        self.instrument_of_row: dict[int, str] = {}
        for assignment in spec.rows:
            self.rows_of.setdefault(assignment.instrument, []).append((assignment.row, assignment.venue))
            self.instrument_of_row[assignment.row] = assignment.instrument
        self.watch = sorted(self.instrument_of_row)
        self.seq_words = [self.reader.seq_words[r] for r in self.watch]
        self.last_seq = [0] * len(self.watch)
        codec = self.reader.codec
        self.idx = codec.index
        self.depth = codec.depth
        if dc.output:
            os.makedirs(os.path.dirname(os.path.abspath(dc.output)), exist_ok=True)
        self.output = open(dc.output, "ab", buffering=0) if dc.output else None
        self.print_opportunities = dc.print_opportunities
        self.rate_log = RateLimitedLog()
        self.stop = False
        self.opened = 0
        self.suspects = 0
        self.by_pair: dict[tuple[str, str], int] = {}
        self.total_profit = 0.0

    def quote(self, row: int, venue: str) -> Quote:
        seq, v = self.reader.read_with_seq(row)
        idx = self.idx
        b = idx["bids"]
        a = idx["asks"]
        n_bids = v[idx["n_bids"]]
        n_asks = v[idx["n_asks"]]
        bids = [(v[b + 2 * k], v[b + 2 * k + 1]) for k in range(n_bids)]
        asks = [(v[a + 2 * k], v[a + 2 * k + 1]) for k in range(n_asks)]
        return Quote(venue, v[idx["status"]], bids, asks, v[idx["recv_ns"]], v[idx["exch_ts_ns"]],
                     v[idx["publish_ns"]], seq)

    def quotes(self, instrument: str) -> dict[str, Quote]:
        return {venue: self.quote(row, venue) for row, venue in self.rows_of[instrument]}

    def changed_instruments(self) -> set[str]:
        words = self.reader._words  # noqa: SLF001 - the hot loop reads seq words directly
        last = self.last_seq
        dirty = set()
        for i, word in enumerate(self.seq_words):
            seq = words[word]
            if seq != last[i]:
                last[i] = seq
                dirty.add(self.instrument_of_row[self.watch[i]])
        return dirty

    def anything_changed(self) -> bool:
        words = self.reader._words  # noqa: SLF001
        last = self.last_seq
        for i, word in enumerate(self.seq_words):
            if words[word] != last[i]:
                return True
        return False

    def evaluate(self, instrument: str, now_ns: int) -> None:
        try:
            quotes = self.quotes(instrument)
        except TornReadError:
            # a writer was preempted mid-write: evaluate this instrument again on the next pass
            for i, row in enumerate(self.watch):
                if self.instrument_of_row[row] == instrument:
                    self.last_seq[i] = -1
            return
        dc = self.config.detector
        found, suspect = find(instrument, list(quotes.values()), self.fees, now_ns, self.staleness_ns,
                              self.threshold_bps, dc.max_notional, dc.min_notional, dc.sanity_bps)
        for candidate in suspect:
            self.suspects += 1
            self.rate_log.warning(f"suspect:{instrument}:{candidate.buy.venue}:{candidate.sell.venue}",
                                  f"suspected data or mapping error, not an opportunity: {instrument} "
                                  f"buy {candidate.buy.venue} sell {candidate.sell.venue} "
                                  f"net {candidate.fill.net_bps:.1f} bps > sanity bound {dc.sanity_bps} bps")
        self.emit(self.lifecycle.step(instrument, found, quotes, now_ns, self.staleness_ns))

    def emit(self, events: list[Event]) -> None:
        for event in events:
            now_ns = time.time_ns()
            record = event_record(event, now_ns, self.fees)
            if event.kind == "open":
                self.opened += 1
                self.stats.add("opportunities")
                pair = (record["buy_exchange"], record["sell_exchange"])
                self.by_pair[pair] = self.by_pair.get(pair, 0) + 1
                self.total_profit += record["profit_quote"]
            if self.output is not None:
                self.output.write(orjson.dumps(record) + b"\n")
            if self.print_opportunities:
                sys.stdout.write(event_line(record) + "\n")
                sys.stdout.flush()

    def expire(self, now_ns: int) -> None:
        if not self.lifecycle.live:
            return
        instruments = {key[0] for key in self.lifecycle.live}
        try:
            quotes = {i: self.quotes(i) for i in instruments}
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
            dirty = self.changed_instruments()
            words[scans_word] += 1
            if dirty:
                now_ns = time.time_ns()
                for instrument in dirty:
                    self.evaluate(instrument, now_ns)
                last_activity = time.monotonic_ns()
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
            doorbell.sleep(SLEEP_TIMEOUT_MS)
            last_activity = time.monotonic_ns()

    def summary(self) -> str:
        durations = sorted(self.lifecycle.closed_durations_ms)

        def pct(p):
            return durations[min(len(durations) - 1, int(p * len(durations)))] if durations else 0.0
        lines = [f"detector summary: {self.opened} opportunities opened, "
                 f"expected profit {self.total_profit:.4f} (quote currency, summed over instruments)"]
        for (buy, sell), n in sorted(self.by_pair.items(), key=lambda kv: -kv[1]):
            lines.append(f"  buy {buy:9} sell {sell:9} {n}")
        if durations:
            lines.append(f"  lifetime ms: p50 {pct(0.5):.1f} p90 {pct(0.9):.1f} max {durations[-1]:.1f} "
                         f"({len(durations)} closed)")
        if self.suspects:
            lines.append(f"  {self.suspects} suspected data/mapping errors (edge above the sanity bound) not reported")
        return "\n".join(lines)

    def close(self) -> None:
        self.emit(self.lifecycle.close_all(time.time_ns()))
        if self.output is not None:
            self.output.close()
        self.reader = None
        self.board.close()


def main(spec: ProcessSpec, config) -> None:
    setup_child(spec)
    detector = Detector(spec, config)

    def on_term(signum, frame):
        detector.stop = True
    signal.signal(signal.SIGTERM, on_term)
    try:
        detector.run()
    finally:
        detector.close()
        sys.stdout.write(detector.summary() + "\n")
        sys.stdout.flush()
