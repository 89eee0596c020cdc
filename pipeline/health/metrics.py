"""Prometheus metrics read straight from the quote board, on every scrape.

:class:`BoardCollector` is a prometheus_client custom collector. Each
``collect()`` copies the process slots and the few row fields it needs out of
shared memory and asks psutil about each process's pid; nothing polls in the
background and nothing is sent to the processes being measured, so (as with
the health reporter) a wedged feed shows up as counters that stop moving, not
as a missing answer.

The collector is registered on its own :class:`~prometheus_client.CollectorRegistry`
(``collector.registry``), never on prometheus_client's global default
registry, and :func:`start_metrics_server` serves that registry on
127.0.0.1 only. Importing this module starts nothing and registers nothing.

Exposed families (``_total`` is the counter sample suffix)::

    pipeline_feed_messages_total{exchange}
    pipeline_feed_parse_errors_total{exchange}
    pipeline_feed_skipped_total{exchange,reason}           reason: SkipReason name, lower-case
    pipeline_feed_reconnects_total{exchange}
    pipeline_feed_connect_failures_total{exchange}        attempts that failed before the connection opened
    pipeline_feed_gaps_total{exchange}
    pipeline_feed_checksum_failures_total{exchange}
    pipeline_feed_resyncs_total{exchange}
    pipeline_feed_connected_connections{exchange}         gauge
    pipeline_feed_late_frames_total{exchange}             frames handed to the session later than the staleness limit
    pipeline_feed_fell_behind_total{exchange}             times a connection fell behind (rows stale until caught up)
    pipeline_feed_behind_connections{exchange}            gauge, connections behind now
    pipeline_feed_backlog_wait_seconds{exchange}          gauge, longest socket -> session wait over the last 100 ms
    pipeline_feed_backlog_frames{exchange}                gauge, most messages queued in the WebSocket library, same
    pipeline_feed_restarts_total{exchange}                supervisor-owned slot field
    pipeline_feed_rules_changes_total{exchange}           trading-rule fields changed while running
    pipeline_feed_rules_fetch_failures_total{exchange}    reference-data fetches that failed
    pipeline_feed_fee_lookup_failures_total{exchange}     account fee lookups refused or unanswered
    pipeline_feed_failovers_total{exchange}               redundant connections: rows published from another path
    pipeline_feed_path_first_total{exchange,path}         updates each connection path delivered first
    pipeline_feed_path_copies_total{exchange,path}        copies it delivered after another path (later or older)
    pipeline_feed_path_lag_seconds{exchange,path,quantile}  gauge, how long after the first its copies were received
                                                            (0.5, 0.99; negative: received first, read second)
    pipeline_feed_path_live_rows{exchange,path}           gauge, rows the path holds trusted now
    pipeline_feed_path_reconnects_total{exchange,path}    connections the path opened again after a loss
    pipeline_row_state{exchange,instrument,state}         gauge, 1 for the current RowStatus, else 0 (no_rules:
                                                          the instrument has no trading rules)
    pipeline_row_last_update_age_seconds{exchange,instrument}   gauge, absent until the row is written
    pipeline_row_updates_total{exchange,instrument}
    pipeline_detector_scans_total
    pipeline_bridge_connected                             gauge, 1 while the bridge is connected to NATS
    pipeline_bridge_received_total / _published_total / _malformed_total / _refused_total
    pipeline_bridge_stream_discarded_total                messages the recording stream's size/count bound discarded
    pipeline_bridge_clock_envelope_seconds                gauge, largest remote clock offset + minimal transport
    pipeline_detector_opportunities_total
    pipeline_detector_refused_total{reason}               pairs the trading rules refused: below_min_qty,
                                                          below_min_notional, not_trading, no_rules
    pipeline_detector_output_dropped_total                records the events file or stdout lost (full buffer,
                                                          failed write)
    pipeline_detector_sink_dropped_total                  events the HTTP sink dropped
    pipeline_output_decisions_behind                      gauge, decisions in the ring the output process has not
                                                          handled yet (at its last look)
    pipeline_output_decisions_lost_total                  decisions overwritten before the output process read them
    pipeline_process_cpu_seconds_total{process}           psutil user + system
    pipeline_process_resident_memory_bytes{process}       psutil rss
    pipeline_process_restarts_total{process}
    pipeline_process_heartbeat_age_seconds{process}       absent until the process beats
    pipeline_latency_seconds_bucket/_count/_sum{hop,process}   each process's hop histograms on the board
                                                          (and the ``histograms`` hook's entries, with their labels)
    pipeline_opportunities_by_pair_total{buy_exchange,sell_exchange}   from the ``opportunities_by_pair`` hook
    pipeline_metrics_hook_errors_total{hook}              hook calls/entries that failed and were left out

The ``process`` label. Every per-process metric (CPU, RSS, restarts,
heartbeat age and the latency histograms) names the process the same way: by
its key, ``feed:binance``, ``detector``, ``health``, ``simulator``,
``bridge`` (``supervisor`` for the supervisor's CPU and RSS), so a feed's
latency and its CPU join on one label value. ``exchange`` (``binance``) is
the label of the feed-level families above. ``process_label="title"`` uses
the process titles (``pipeline: feed binance``) instead, for every
per-process metric alike.

The counters come from one :class:`~pipeline.board.ProcSnapshot` per process
slot per scrape (the same snapshot the health block and the console render),
never from the slot's fields directly.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import psutil
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from pipeline.board import (
    HIST_BUCKETS,
    HistogramSnapshot,
    ProcessRole,
    ProcSnapshot,
    RowStatus,
    SkipReason,
    bucket_upper_ns,
    read_proc,
)
from pipeline.model import REFUSAL_REASONS
from pipeline.runtime import ProcessSpec, RateLimitedLog, RowAssignment

__all__ = ["BoardCollector", "HistogramData", "start_metrics_server", "stop_metrics_server", "LISTEN_ADDR",
           "histogram_data"]

LISTEN_ADDR = "127.0.0.1"

# (name -> hop label, extra labels, bucket upper bounds in seconds, cumulative counts, sum in seconds)
HistogramData = tuple[str, dict, Sequence[float], Sequence[int], float]

_FEED_COUNTERS = (
    # (slot field, metric name without _total, help)
    ("messages", "pipeline_feed_messages", "Frames received by the feed process."),
    ("parse_errors", "pipeline_feed_parse_errors", "Frames the feed process could not parse."),
    ("reconnects", "pipeline_feed_reconnects", "Websocket reconnects by the feed process."),
    ("connect_failures", "pipeline_feed_connect_failures",
     "Connection attempts by the feed process that failed before the connection opened."),
    ("gaps", "pipeline_feed_gaps", "Sequence gaps detected by the feed process."),
    ("checksum_failures", "pipeline_feed_checksum_failures", "Book checksum mismatches seen by the feed process."),
    ("resyncs", "pipeline_feed_resyncs", "Book resynchronisations (book discarded and rebuilt) by the feed process."),
    ("restarts", "pipeline_feed_restarts", "Times the supervisor restarted the feed process."),
    ("recorded", "pipeline_feed_recorded_frames", "Frames written to the feed's recording."),
    ("record_dropped", "pipeline_feed_recording_dropped_frames",
     "Frames lost from the recording (disk full, unwritable directory); never from the board."),
    ("record_errors", "pipeline_feed_recording_errors", "Recording write failures."),
    ("resyncs_deferred", "pipeline_feed_resyncs_deferred",
     "Resubscribes held back by the per-instrument limit (3 a minute): a gap storm, not a subscribe storm."),
    ("stuck_channels", "pipeline_feed_stuck_channels",
     "Top-of-book channels re-armed after their ids stayed behind the depth channel's."),
    ("schema_fallbacks", "pipeline_feed_schema_fallbacks",
     "Market-data frames carrying fields their declaration does not know (decoded with them ignored)."),
    ("late_frames", "pipeline_feed_late_frames",
     "Frames handed to the feed's session more than its staleness limit after they reached the socket."),
    ("fell_behind", "pipeline_feed_fell_behind",
     "Times a connection fell behind by more than the staleness limit (its rows stale until it caught up)."),
    ("rules_changes", "pipeline_feed_rules_changes",
     "Trading-rule fields changed while running (one field of one instrument each)."),
    ("rules_fetch_failures", "pipeline_feed_rules_fetch_failures",
     "Reference-data fetches that failed after their retries (at start or on a refresh)."),
    ("fee_lookup_failures", "pipeline_feed_fee_lookup_failures",
     "Account fee lookups (the venue's signed fee endpoint) that were refused or found no answer."),
)
# board histogram buckets exposed: 1..3 are never used (everything below 128 ns is bucket 0); the last is open-ended
_USED_BUCKETS = (0, *range(4, HIST_BUCKETS - 1))
_BOUNDS_S = tuple(bucket_upper_ns(i) / 1e9 for i in _USED_BUCKETS)
_SKIP_REASONS = tuple((int(r), r.name.lower()) for r in SkipReason)
_ROW_STATES = tuple((int(s), s.name.lower()) for s in RowStatus)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# a process created more than this after it wrote started_ns is a recycled pid, not ours
_PID_REUSE_TOLERANCE_S = 2.0


class BoardCollector:
    """Reads the board on every scrape and yields metric families.

    ``board``: an attached (or created) :class:`~pipeline.board.Board`.
    ``specs``: the supervisor's :class:`~pipeline.runtime.ProcessSpec` list; feed
    specs give the ``exchange`` label, every spec with a slot gives a ``process``.
    ``rows``: the :class:`~pipeline.runtime.RowAssignment` list; defaults to the
    rows named in ``specs``.
    The hop histograms of every process are read from the board and exposed as
    ``pipeline_latency_seconds{hop, process}``.
    ``histograms``: optional ``() -> list[HistogramData]``, more entries exposed as
    ``pipeline_latency_seconds{hop=name, **labels}``. ``cumulative_counts`` has
    one entry per upper bound, plus optionally a last one for ``+Inf`` (the total
    count); without it the ``+Inf`` bucket equals the last count (or the last
    bound is itself ``inf``).
    ``opportunities_by_pair``: optional ``() -> {(buy, sell): count}``.
    ``process_label``: ``"key"`` (``feed:binance``) or ``"title"``
    (``pipeline: feed binance``) for the ``process`` label of every per-process metric.
    ``include_supervisor``: also report the pid in the board header as ``supervisor``.
    ``clock``: wall-clock nanoseconds (rows and heartbeats are ``time.time_ns()``).
    """

    def __init__(self, board, specs: Iterable[ProcessSpec], rows: Iterable[RowAssignment] | None = None, *,
                 histograms: Callable[[], list[HistogramData]] | None = None,
                 opportunities_by_pair: Callable[[], dict[tuple[str, str], int]] | None = None,
                 process_label: str = "key", include_supervisor: bool = True,
                 clock: Callable[[], int] = time.time_ns):
        if process_label not in ("key", "title"):
            raise ValueError(f"process_label must be 'key' or 'title', got {process_label!r}")
        self.board = board
        self.specs = [s for s in specs if s.slot >= 0]
        if rows is None:
            by_row: dict[int, RowAssignment] = {}
            for spec in self.specs:
                for r in spec.rows:
                    by_row.setdefault(r.row, r)
            rows = [by_row[i] for i in sorted(by_row)]
        self.rows = list(rows)
        self.histograms = histograms
        self.opportunities_by_pair = opportunities_by_pair
        self.process_label = process_label
        self.include_supervisor = include_supervisor
        self.clock = clock
        self.hook_errors: dict[str, int] = {"histograms": 0, "opportunities_by_pair": 0}
        self._log = RateLimitedLog(30.0)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # ------------------------------------------------------------------ scrape
    def collect(self) -> Iterator:
        now_ns = self.clock()
        board = self.board
        procs = self._read(now_ns) if board is not None and board.procs is not None else None
        if procs is not None:
            yield from self._feed_families(procs)
            yield from self._row_families(now_ns)
            yield from self._detector_families(procs)
            yield from self._bridge_families(procs)
            yield from self._process_families(procs, now_ns)
        yield from self._histogram_families(procs or [])
        yield from self._pair_families()
        errors = CounterMetricFamily("pipeline_metrics_hook_errors",
                                     "Hook calls or entries that failed and were left out of a scrape.",
                                     labels=["hook"])
        for hook, n in self.hook_errors.items():
            errors.add_metric([hook], n)
        yield errors

    def _read(self, now_ns: int) -> list[tuple[ProcessSpec, ProcSnapshot]]:
        """One snapshot of each process's slot, for this scrape."""
        n = self.board.geometry.n_procs
        return [(s, read_proc(self.board, s.slot, now_ns=now_ns)) for s in self.specs if s.slot < n]

    def label(self, spec: ProcessSpec) -> str:
        """The ``process`` label of ``spec``'s process, the same in every per-process metric."""
        return spec.key if self.process_label == "key" else spec.title

    def _feeds(self, procs) -> list[tuple[ProcessSpec, ProcSnapshot]]:
        return [(s, p) for s, p in procs if s.role == ProcessRole.FEED]

    def _feed_families(self, procs) -> Iterator:
        feeds = self._feeds(procs)
        for field, name, doc in _FEED_COUNTERS:
            family = CounterMetricFamily(name, doc, labels=["exchange"])
            for spec, proc in feeds:
                family.add_metric([spec.venue], getattr(proc, field))
            yield family
        skipped = CounterMetricFamily("pipeline_feed_skipped",
                                      "Frames or updates dropped by the feed process, by reason.",
                                      labels=["exchange", "reason"])
        connected = GaugeMetricFamily("pipeline_feed_connected_connections",
                                      "Websocket connections the feed process currently has open.", labels=["exchange"])
        behind = GaugeMetricFamily("pipeline_feed_behind_connections",
                                   "Connections behind by more than the staleness limit now (their rows stale).",
                                   labels=["exchange"])
        wait = GaugeMetricFamily("pipeline_feed_backlog_wait_seconds",
                                 "Longest a frame waited between the socket and the feed's session, last 100 ms.",
                                 labels=["exchange"])
        queued = GaugeMetricFamily("pipeline_feed_backlog_frames",
                                   "Most messages waiting in the WebSocket library's queue, last 100 ms "
                                   "(picows: none).",
                                   labels=["exchange"])
        for spec, proc in feeds:
            for index, reason in _SKIP_REASONS:
                skipped.add_metric([spec.venue, reason], proc.skipped[index])
            connected.add_metric([spec.venue], proc.connected)
            behind.add_metric([spec.venue], proc.behind)
            wait.add_metric([spec.venue], proc.backlog_wait_ns / 1e9)
            queued.add_metric([spec.venue], proc.backlog_frames)
        yield skipped
        yield connected
        yield behind
        yield wait
        yield queued
        yield from self._path_families(feeds)

    @staticmethod
    def _path_families(feeds) -> Iterator:
        """Redundant connections (pipeline.feed.arbiter): per path of each feed that reads more than one."""
        failovers = CounterMetricFamily("pipeline_feed_failovers",
                                        "Rows published from another connection path because theirs stopped being "
                                        "trusted.", labels=["exchange"])
        first = CounterMetricFamily("pipeline_feed_path_first", "Updates this connection path delivered first.",
                                    labels=["exchange", "path"])
        copies = CounterMetricFamily("pipeline_feed_path_copies", "Copies this connection path delivered after "
                                     "another had (later, or older than the row).", labels=["exchange", "path"])
        lag = GaugeMetricFamily("pipeline_feed_path_lag_seconds", "How long after the first copy this path's copies "
                                "were received (its latest 4096; negative: received first, read second), by quantile.",
                                labels=["exchange", "path", "quantile"])
        live = GaugeMetricFamily("pipeline_feed_path_live_rows", "Rows this connection path holds trusted now.",
                                 labels=["exchange", "path"])
        reconnects = CounterMetricFamily("pipeline_feed_path_reconnects", "Connections this path opened again after "
                                         "a loss.", labels=["exchange", "path"])
        for spec, proc in feeds:
            if proc.paths < 2:
                continue
            failovers.add_metric([spec.venue], proc.failovers)
            for path in range(proc.paths):
                labels = [spec.venue, str(path)]
                first.add_metric(labels, proc.path_first[path])
                copies.add_metric(labels, proc.path_copies[path])
                lag.add_metric(labels + ["0.5"], proc.path_lag_p50_us[path] / 1e6)
                lag.add_metric(labels + ["0.99"], proc.path_lag_p99_us[path] / 1e6)
                live.add_metric(labels, proc.path_live_rows[path])
                reconnects.add_metric(labels, proc.path_reconnects[path])
        yield from (failovers, first, copies, lag, live, reconnects)

    def _row_families(self, now_ns: int) -> Iterator:
        rows = self.board.rows
        status = rows["status"].copy()
        recv_ns = rows["recv_ns"].copy()
        updates = rows["update_count"].copy()
        state = GaugeMetricFamily("pipeline_row_state", "1 for the row's current state, 0 for the others.",
                                  labels=["exchange", "instrument", "state"])
        age = GaugeMetricFamily("pipeline_row_last_update_age_seconds",
                                "Seconds since the feed last received an update for the row.",
                                labels=["exchange", "instrument"])
        count = CounterMetricFamily("pipeline_row_updates", "Updates written to the row.",
                                    labels=["exchange", "instrument"])
        for r in self.rows:
            if not 0 <= r.row < len(status):
                continue
            labels = [r.label, r.instrument]           # kraken, or kraken@frankfurt for a bridged row
            current = int(status[r.row])
            for value, name in _ROW_STATES:
                state.add_metric(labels + [name], 1.0 if current == value else 0.0)
            if current not in RowStatus._value2member_map_:
                state.add_metric(labels + ["unknown"], 1.0)
            received = int(recv_ns[r.row])
            if received:
                age.add_metric(labels, max(0.0, (now_ns - received) / 1e9))
            count.add_metric(labels, int(updates[r.row]))
        yield state
        yield age
        yield count

    def _bridge_families(self, procs) -> Iterator:
        """The bridge's slot fields, as :mod:`pipeline.bridge.process` defines them."""
        bridges = [p for s, p in procs if s.role == ProcessRole.BRIDGE]
        if not bridges:
            return
        bridge = bridges[0]
        yield GaugeMetricFamily("pipeline_bridge_connected", "1 while the bridge is connected to NATS.",
                                value=bridge.connected)
        for field, name, doc in (("messages", "received", "Messages the bridge received from other boxes."),
                                 ("scans", "published", "Row states the bridge published."),
                                 ("parse_errors", "malformed", "Malformed messages the bridge skipped."),
                                 ("checksum_failures", "refused",
                                  "Connection attempts whose credentials NATS refused."),
                                 ("record_dropped", "stream_discarded",
                                  "Messages the recording stream's size or count bound discarded (bridge.record).")):
            yield CounterMetricFamily(f"pipeline_bridge_{name}", doc, value=getattr(bridge, field))
        yield GaugeMetricFamily("pipeline_bridge_clock_envelope_seconds",
                                "Largest low envelope of (arrival - remote send time) over the mirrored boxes.",
                                value=bridge.clock_offset_ns / 1e9)

    def _detector_families(self, procs) -> Iterator:
        detectors = [p for s, p in procs if s.role in (ProcessRole.DETECTOR, ProcessRole.OUTPUT)]    # + its output
        if not detectors:
            return
        yield CounterMetricFamily("pipeline_detector_scans", "Board scans by the detector.",
                                  value=sum(d.scans for d in detectors))
        yield CounterMetricFamily("pipeline_detector_opportunities",
                                  "Arbitrage opportunities reported by the detector.",
                                  value=sum(d.opportunities for d in detectors))
        yield CounterMetricFamily("pipeline_detector_output_dropped",
                                  "Records the detector's events file or stdout lost (a full buffer, a failed write).",
                                  value=sum(d.output_dropped for d in detectors))
        refused = CounterMetricFamily("pipeline_detector_refused", "Pairs the venues' trading rules refused "
                                      "(each counted once while the refusal lasts), by reason.", labels=["reason"])
        for reason in REFUSAL_REASONS:
            refused.add_metric([reason], sum(getattr(d, f"refused_{reason}") for d in detectors))
        yield refused
        yield CounterMetricFamily("pipeline_detector_sink_dropped", "Events the detector's HTTP sink dropped.",
                                  value=sum(d.sink_dropped for d in detectors))
        outputs = [p for s, p in procs if s.role == ProcessRole.OUTPUT]
        if outputs:
            yield GaugeMetricFamily("pipeline_output_decisions_behind", "Decisions in the ring the output process "
                                    "had not handled yet, at its last look.",
                                    value=sum(o.decisions_behind for o in outputs))
            yield CounterMetricFamily("pipeline_output_decisions_lost", "Decisions overwritten in the ring before the "
                                      "output process read them (it fell a whole ring behind).",
                                      value=sum(o.decisions_lost for o in outputs))

    def _process_families(self, procs, now_ns: int) -> Iterator:
        cpu = CounterMetricFamily("pipeline_process_cpu_seconds", "User plus system CPU time of the process (psutil).",
                                  labels=["process"])
        rss = GaugeMetricFamily("pipeline_process_resident_memory_bytes", "Resident set size of the process (psutil).",
                                labels=["process"])
        restarts = CounterMetricFamily("pipeline_process_restarts", "Times the supervisor restarted the process.",
                                       labels=["process"])
        heartbeat = GaugeMetricFamily("pipeline_process_heartbeat_age_seconds",
                                      "Seconds since the process last wrote its heartbeat.", labels=["process"])
        targets: list[tuple[str, int, int]] = []   # (label, pid, started_ns)
        for spec, proc in procs:
            label = self.label(spec)
            targets.append((label, proc.pid, proc.started_ns))
            restarts.add_metric([label], proc.restarts)
            beat = proc.heartbeat_age_ms(now_ns)
            if beat is not None:
                heartbeat.add_metric([label], beat / 1e3)
        if self.include_supervisor:
            header = self.board.header
            if header is not None:
                targets.append(("supervisor", int(header["supervisor_pid"]), int(header["created_ns"])))
        for label, pid, started_ns in targets:
            usage = _process_usage(pid, started_ns)
            if usage is not None:
                cpu.add_metric([label], usage[0])
                rss.add_metric([label], usage[1])
        yield cpu
        yield rss
        yield restarts
        yield heartbeat

    # ------------------------------------------------------------------ hooks
    def _hook_failed(self, hook: str, message: str) -> None:
        self.hook_errors[hook] += 1
        self._log.warning(f"metrics:{hook}", f"metrics hook {hook}: {message}")

    def _histogram_families(self, procs) -> Iterator:
        entries = [histogram_data(hop, {"process": self.label(spec)}, h)
                   for spec, proc in procs for hop, h in proc.hops]
        if self.histograms is not None:
            try:
                entries += list(self.histograms())
            except Exception as exc:  # noqa: BLE001 - a broken hook must not break the scrape
                self._hook_failed("histograms", f"raised {exc!r}")
        if not entries:
            return
        checked = []
        for entry in entries:
            try:
                checked.append(_check_histogram(entry))
            except (TypeError, ValueError) as exc:
                self._hook_failed("histograms", f"left out {entry!r:.200}: {exc}")
        extra = sorted({k for _, labels, _, _ in checked for k in labels})
        family = HistogramMetricFamily("pipeline_latency_seconds", "Latency per pipeline hop, in seconds.",
                                       labels=["hop", *extra])
        for hop, labels, buckets, total in checked:
            family.add_metric([hop, *(labels.get(k, "") for k in extra)], buckets, total)
        yield family

    def _pair_families(self) -> Iterator:
        if self.opportunities_by_pair is None:
            return
        try:
            pairs = dict(self.opportunities_by_pair())
        except Exception as exc:  # noqa: BLE001
            self._hook_failed("opportunities_by_pair", f"raised {exc!r}")
            return
        family = CounterMetricFamily("pipeline_opportunities_by_pair",
                                     "Arbitrage opportunities by (buy exchange, sell exchange).",
                                     labels=["buy_exchange", "sell_exchange"])
        for key in sorted(pairs, key=repr):
            try:
                buy, sell = key
                value = float(pairs[key])
                if not value >= 0:
                    raise ValueError("count must be >= 0")
            except (TypeError, ValueError) as exc:
                self._hook_failed("opportunities_by_pair", f"left out {key!r}: {exc}")
                continue
            family.add_metric([str(buy), str(sell)], value)
        yield family


def histogram_data(hop: str, labels: dict, histogram: HistogramSnapshot) -> HistogramData:
    """A board histogram as a :data:`HistogramData` entry: cumulative counts at the buckets' upper bounds."""
    cumulative, running = [], 0
    for n in histogram.buckets:
        running += n
        cumulative.append(running)
    counts = [cumulative[i] for i in _USED_BUCKETS] if cumulative else [0] * len(_USED_BUCKETS)
    return hop, labels, _BOUNDS_S, counts + [histogram.count], histogram.sum_ns / 1e9


def _check_histogram(entry) -> tuple[str, dict[str, str], list[tuple[str, float]], float]:
    """Validate one hook entry; return (hop, extra labels, prometheus buckets, sum)."""
    name, labels, bounds, counts, total = entry
    bounds = [float(b) for b in bounds]
    counts = [float(c) for c in counts]
    labels = {str(k): str(v) for k, v in dict(labels).items() if k != "hop"}
    for key in labels:
        if not _LABEL_NAME.match(key) or key.startswith("__") or key == "le":
            raise ValueError(f"invalid label name {key!r}")
    if not bounds:
        raise ValueError("no bucket bounds")
    if any(math.isnan(b) for b in bounds) or any(b >= c for b, c in zip(bounds, bounds[1:])):
        raise ValueError("bucket bounds must be strictly increasing")
    if len(counts) == len(bounds) + 1:
        if math.isinf(bounds[-1]):
            raise ValueError("an extra +Inf count was given although the last bound is already +Inf")
        bounds.append(math.inf)
    elif len(counts) == len(bounds):
        if not math.isinf(bounds[-1]):
            bounds.append(math.inf)
            counts.append(counts[-1])
    else:
        raise ValueError(f"{len(counts)} counts for {len(bounds)} bounds")
    if any(not c >= 0 for c in counts) or any(a > b for a, b in zip(counts, counts[1:])):
        raise ValueError("cumulative counts must be >= 0 and non-decreasing")
    total = float(total)
    if math.isnan(total):
        raise ValueError("sum is NaN")
    return str(name), labels, [(floatToGoString(b), c) for b, c in zip(bounds, counts)], total


def _process_usage(pid: int, started_ns: int) -> tuple[float, int] | None:
    """(cpu user+system seconds, rss bytes) of ``pid``, None when it is gone or is not ours."""
    if pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if started_ns and proc.create_time() > started_ns / 1e9 + _PID_REUSE_TOLERANCE_S:
                return None        # the slot's process died and its pid was given to another one
            times = proc.cpu_times()
            rss = proc.memory_info().rss
    except psutil.Error:
        return None
    return times.user + times.system, int(rss)


def start_metrics_server(port: int, collector, host: str = LISTEN_ADDR):
    """Serve ``collector``'s registry over HTTP on 127.0.0.1:``port`` (0: any free port).

    ``collector`` is a :class:`BoardCollector` (its own registry is served), a
    :class:`~prometheus_client.CollectorRegistry`, or any collector (registered
    on a new registry). Returns what ``prometheus_client.start_http_server``
    returns: ``(server, thread)`` on prometheus_client >= 0.17; the bound port is
    ``server.server_port``. Stop it with :func:`stop_metrics_server`.
    """
    if isinstance(collector, CollectorRegistry):
        registry = collector
    elif isinstance(getattr(collector, "registry", None), CollectorRegistry):
        registry = collector.registry
    else:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
    return start_http_server(port, addr=host, registry=registry)


def stop_metrics_server(handle, timeout: float = 5.0) -> None:
    """Shut down what :func:`start_metrics_server` returned and close its socket."""
    if not handle:
        return
    server, thread = handle
    server.shutdown()
    server.server_close()
    thread.join(timeout)
