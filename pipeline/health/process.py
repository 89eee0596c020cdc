"""Health reporter: reads the board's process slots and rows, asks psutil
about each process, prints one block every ``health.interval_s``.

It reads counters straight from shared memory (no messages to the
processes it reports on), so a wedged feed shows up as a stale heartbeat and
a message rate of zero instead of as a missing answer.

Each process's counters come from one :class:`~pipeline.board.ProcSnapshot`
of its slot (the same one the metrics endpoint and the console render); this
module adds what psutil says of the process and its rates, and
:func:`render_block` is the one rendering of the block: every interval with
``--verbose``, and once when the run stops (:func:`final_block`, printed by
the supervisor after every child has stopped, so a process that has stopped
says ``stopped`` and shows its last counters instead of psutil's figures of a
process that is gone).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import psutil

from pipeline.board import Board, ProcessRole, ProcSnapshot, RowStatus, read_proc
from pipeline.fees import STATE_OFF, STATE_OK, describe_failure
from pipeline.model import REFUSAL_REASONS
from pipeline.runtime import ProcessSpec, parent_alive, run_child
from pipeline.venues import VENUES

# a process created more than this after its slot's started_ns is a recycled pid, not ours
PID_REUSE_TOLERANCE_S = 2.0


@dataclass(frozen=True)
class ProcessHealth:
    """One process in the health block: its slot snapshot, what psutil says of it, its rates.

    ``alive`` is False once the process has stopped (or its pid belongs to another process now); then
    ``cores``, ``cpu_percent`` and ``rss_mb`` are None. The slot's counters are read through: ``entry.gaps``
    is ``entry.proc.gaps``.
    """

    title: str
    key: str
    proc: ProcSnapshot
    alive: bool = False
    cores: tuple[int, ...] | None = None
    cpu_percent: float | None = None
    rss_mb: float | None = None
    messages_per_s: float | None = None
    scans_per_s: float | None = None
    last_update_age_ms: float | None = None            # feeds: since their newest row was received
    row_states: tuple[tuple[str, int], ...] = ()       # feeds: (state, rows in it), by state name

    def __getattr__(self, name: str):
        # only called for names that are not fields: the slot's counters
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.proc, name)

    @property
    def is_feed(self) -> bool:
        return self.proc.role == ProcessRole.FEED or self.key.startswith("feed:")

    @property
    def heartbeat_age_ms(self) -> float | None:
        return self.proc.heartbeat_age_ms()


class HealthReporter:
    def __init__(self, board: Board, specs: list[ProcessSpec], rows, cpu_count: int | None = None):
        self.board = board
        self.specs = [s for s in specs if s.slot >= 0]
        self.rows = rows                     # list of RowAssignment
        self.cpu_count = cpu_count or psutil.cpu_count()
        self._procs: dict[int, psutil.Process] = {}
        self._last: dict[int, ProcSnapshot] = {}    # slot -> the snapshot of the last reading
        self._last_e2e = None                # the detector's receive_to_emitted histogram at the last status line

    def _process(self, pid: int, started_ns: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        if proc is None:
            try:
                proc = psutil.Process(pid)
                if started_ns and proc.create_time() > started_ns / 1e9 + PID_REUSE_TOLERANCE_S:
                    return None              # the slot's process is gone and its pid went to another one
                proc.cpu_percent(None)       # prime: the first call always says 0
            except psutil.Error:
                return None
            self._procs[pid] = proc
        return proc

    def snapshot(self, now_ns: int | None = None) -> list[ProcessHealth]:
        """One :class:`ProcessHealth` per process: what the block prints (also used by tests)."""
        now_ns = now_ns or time.time_ns()
        rows = self.board.rows
        out = []
        for spec in self.specs:
            proc = read_proc(self.board, spec.slot, VENUES, now_ns)
            usage = dict(alive=False, cores=None, cpu_percent=None, rss_mb=None)
            process = self._process(proc.pid, proc.started_ns) if proc.pid else None
            if process is not None:
                try:
                    with process.oneshot():
                        if process.status() != psutil.STATUS_ZOMBIE:
                            usage = dict(alive=True, cores=tuple(process.cpu_affinity()),
                                         cpu_percent=process.cpu_percent(None),
                                         rss_mb=process.memory_info().rss / 2 ** 20)
                except psutil.Error:
                    self._procs.pop(proc.pid, None)
            previous = self._last.get(spec.slot)
            self._last[spec.slot] = proc
            messages_per_s = scans_per_s = None
            if previous is not None and now_ns > previous.taken_ns:
                dt = (now_ns - previous.taken_ns) / 1e9
                messages_per_s = max(0, proc.messages - previous.messages) / dt
                scans_per_s = max(0, proc.scans - previous.scans) / dt
            feed = {}
            if spec.role == ProcessRole.FEED:
                own = [r for r in self.rows if r.venue == spec.venue and not r.box]
                recv = [int(rows[r.row]["recv_ns"]) for r in own]
                states = [RowStatus(int(rows[r.row]["status"])).name.lower() for r in own]
                # clamped: a row written after now_ns was taken would otherwise show a negative age
                feed = dict(last_update_age_ms=max(0.0, (now_ns - max(recv)) / 1e6) if any(recv) else None,
                            row_states=tuple((s, states.count(s)) for s in sorted(set(states))))
            out.append(ProcessHealth(spec.title, spec.key, proc, messages_per_s=messages_per_s,
                                     scans_per_s=scans_per_s, **usage, **feed))
        return out

    def status_line(self, snapshot: list[ProcessHealth], clock: str | None = None) -> str:
        """The one line printed every interval by default (the full block is ``--verbose``), and under it an
        ``ALERT`` line for each feed whose account fee lookup failed (refused credentials, no answer)."""
        clock = clock or time.strftime("%H:%M:%S")
        feeds = [i for i in snapshot if i.is_feed]
        live = sum(1 for i in feeds if i.row_states and {s for s, _ in i.row_states} == {"live"})
        rates = [i.messages_per_s for i in feeds if i.messages_per_s is not None]
        detector = next((i for i in snapshot if i.key == "detector"), None)
        e2e = None
        if detector is not None:
            now = detector.proc.hop("receive_to_emitted")
            if now is not None:
                e2e = now.minus(self._last_e2e) if self._last_e2e is not None else now
                self._last_e2e = now
        not_live = [f"{i.key[5:]} " + ",".join(s for s, _ in i.row_states if s != "live")
                    for i in feeds if i.row_states and {s for s, _ in i.row_states} != {"live"}]
        line = format_status(clock, live, len(feeds), sum(rates) if rates else None,
                             detector.proc.opportunities if detector else None, e2e,
                             [f"{i.title.removeprefix('pipeline: ')} {i.proc.restarts}" for i in snapshot
                              if i.proc.restarts], not_live)
        failing = [f"{i.key[5:]} {i.proc.record_dropped}" for i in feeds if i.proc.record_dropped]
        line += "  RECORDING FAILING (frames not recorded): " + ", ".join(failing) if failing else ""
        return line + behind_part(feeds) + "".join(f"\n  ALERT {fee_alert(i.proc)}" for i in feeds if fee_alert(i.proc))

    def render(self, snapshot: list[ProcessHealth], clock: str | None = None) -> str:
        """The full block of ``snapshot`` (see :func:`render_block`)."""
        return render_block(snapshot, self.cpu_count, clock or time.strftime("%H:%M:%S"))


def render_block(snapshot: list[ProcessHealth], cpu_count: int, clock: str, at_stop: bool = False) -> str:
    """The health block: per process its title, pid, cores, CPU, RSS and counters, then its hops.

    The one rendering of the block, every interval and at stop (``at_stop``: the heading says so). A
    process that has stopped shows ``stopped`` in place of cores, CPU and RSS, and its last counters; a
    rate not known yet (no earlier reading) shows the total instead (``messages 1234``, ``scans 5000``).
    """
    n = len(snapshot) + 1   # + the supervisor
    heading = "health at stop" if at_stop else "health"
    lines = [f"--- {heading} {clock} --- {n} processes on {cpu_count} cores"
             + (" (more processes than cores: they share)" if n > cpu_count else "")]
    for info in snapshot:
        proc = info.proc
        if info.alive:
            cpu = "-" if info.cpu_percent is None else f"{info.cpu_percent:5.1f}%"
            rss = "-" if info.rss_mb is None else f"{info.rss_mb:.0f}MB"
            cores = "-" if info.cores is None else ",".join(map(str, info.cores))
            usage = f"cores {cores:5} cpu {cpu:>6} rss {rss:>6}"
        else:
            usage = f"{'stopped':33}"
        line = f"  {info.title:26} pid {proc.pid:>7} {usage}"
        if info.is_feed:
            rate = (f"messages {proc.messages:>6}" if info.messages_per_s is None
                    else f"msg/s {info.messages_per_s:>6.0f}")
            age = "-" if info.last_update_age_ms is None else f"{info.last_update_age_ms:.0f}ms"
            states = " ".join(f"{k}={v}" for k, v in info.row_states)
            failed = f" failed connects {proc.connect_failures}" if proc.connect_failures else ""
            line += (f" {rate} last {age:>7} reconnects {proc.reconnects}{failed} "
                     f"parse_errors {proc.parse_errors} gaps {proc.gaps} [{states}]")
            if proc.clock_offset_ns:
                line += f" clock offset {proc.clock_offset_ns / 1e6:+.1f}ms"
            if proc.record_dropped:
                line += f" RECORDING FAILING: {proc.record_dropped} frames not recorded"
            line += backlog_status(proc) + rules_status(proc) + fee_status(proc) + paths_status(proc)
        elif info.key == "detector":
            scans = f"scans {proc.scans:>6}" if info.scans_per_s is None else f"scans/s {info.scans_per_s:>8.0f}"
            line += f" {scans} opportunities {proc.opportunities}"
            if proc.shadow_fills:
                line += f" shadow fills profitable {proc.shadow_profitable}/{proc.shadow_fills}"
            refused = [(reason, getattr(proc, f"refused_{reason}")) for reason in REFUSAL_REASONS]
            if any(n for _, n in refused):
                line += " refused " + " ".join(f"{reason} {n}" for reason, n in refused if n)
        elif info.key == "output":
            line += (f" decisions {proc.messages:>6} behind {proc.decisions_behind} lost {proc.decisions_lost}"
                     f" dropped {proc.output_dropped + proc.sink_dropped}")
        elif info.key == "simulator":
            line += (f" frames {proc.messages:>6}" if info.messages_per_s is None
                     else f" frames/s {info.messages_per_s:>6.0f}")
        elif info.key == "bridge":
            line += " " + bridge_status(proc)
        if proc.restarts:
            line += f" restarts {proc.restarts} (last exit {proc.last_exit_code})"
        beat = proc.heartbeat_age_ms()
        if info.alive and beat is not None and beat > 2000:
            line += f" HEARTBEAT {beat / 1000:.1f}s OLD"
        lines.append(line.rstrip())
        if info.is_feed and fee_alert(proc):
            lines.append(f"  ALERT {fee_alert(proc)}")
        for hop, p50, p99, p999, top, count in latency_rows(proc):
            if count:
                lines.append(f"      {hop:22} p50 {p50:9.1f} p99 {p99:9.1f} p99.9 {p999:9.1f} max {top:9.1f} µs"
                             f"  (n={count})")
    return "\n".join(lines)


def final_block(board: Board, specs: list[ProcessSpec], cpu_count: int | None = None,
                clock: str | None = None) -> str:
    """The block printed once when the run stops, from one snapshot of every slot taken now.

    The supervisor calls it after its children have stopped: each shows ``stopped`` and its last counters
    and hops (a process still running shows its CPU and RSS as usual).
    """
    rows = {r.row: r for s in specs for r in s.rows}
    reporter = HealthReporter(board, specs, [rows[i] for i in sorted(rows)], cpu_count)
    return render_block(reporter.snapshot(), reporter.cpu_count, clock or time.strftime("%H:%M:%S"), at_stop=True)


def format_status(clock: str, live: int, feeds: int, messages_per_s: float | None, opportunities: int | None,
                  e2e, restarted: list[str], not_live: list[str] = ()) -> str:
    """``--- health 12:00:05  venues live 6/6  msg/s 1480  opportunities 12  end to end p50 118 µs p99 402 µs``.

    ``e2e`` is the detector's frame-received -> opportunity-emitted histogram since the last line
    (a :class:`~pipeline.board.HistogramSnapshot`), or None.
    """
    parts = [f"--- health {clock}", f"venues live {live}/{feeds}" + (f" ({'; '.join(not_live)})" if not_live else "")]
    parts.append("msg/s -" if messages_per_s is None else f"msg/s {messages_per_s:.0f}")
    if opportunities is not None:
        parts.append(f"opportunities {opportunities}")
    if e2e is not None and e2e.count:
        parts.append(f"end to end p50 {e2e.percentile_ns(0.5) / 1e3:.0f} µs p99 {e2e.percentile_ns(0.99) / 1e3:.0f} µs")
    if restarted:
        parts.append("restarts: " + ", ".join(restarted))
    return "  ".join(parts)


def paths_status(proc: ProcSnapshot) -> str:
    """`` paths first 61%/39% lag p50 0.3/0.4ms p99 2.1/1.8ms live 3/3 reconnects 1/0 failovers 2``: a feed that
    reads its venue over redundant connections: each path's share of the updates it delivered first, how long
    after the first its copies came, the rows it holds trusted now, its reconnects (pipeline.feed.arbiter)."""
    n = proc.paths
    if n < 2:
        return ""
    total = sum(proc.path_first[:n]) or 1
    share = "/".join(f"{100 * proc.path_first[p] / total:.0f}%" for p in range(n))
    p50 = "/".join(f"{proc.path_lag_p50_us[p] / 1000:.1f}" for p in range(n))
    p99 = "/".join(f"{proc.path_lag_p99_us[p] / 1000:.1f}" for p in range(n))
    live = "/".join(str(proc.path_live_rows[p]) for p in range(n))
    reconnects = "/".join(str(proc.path_reconnects[p]) for p in range(n))
    return (f" paths first {share} lag p50 {p50}ms p99 {p99}ms live {live} reconnects {reconnects} "
            f"failovers {proc.failovers}")


def backlog_status(proc: ProcSnapshot) -> str:
    """`` backlog waited 1750ms queued 64 late 250 fell behind 2x BEHIND``: a feed's backlog, when it has had one."""
    if not (proc.behind or proc.fell_behind or proc.late_frames):
        return ""
    return (f" backlog waited {proc.backlog_wait_ns / 1e6:.0f}ms queued {proc.backlog_frames} late "
            f"{proc.late_frames} fell behind {proc.fell_behind}x" + (" BEHIND" if proc.behind else ""))


def behind_part(feeds: list[ProcessHealth]) -> str:
    """``  BEHIND (rows stale): binance 1.8s``: the feeds whose frames reach them later than their staleness limit."""
    behind = [f"{i.key[5:]} {i.proc.backlog_wait_ns / 1e9:.1f}s" for i in feeds if i.proc.behind]
    return "  BEHIND (rows stale): " + ", ".join(behind) if behind else ""


def rules_status(proc: ProcSnapshot) -> str:
    """The feed's trading rules when there is something to say: cached ones in use (with their age), failed
    fetches, changes applied while running."""
    parts = []
    if proc.rules_cache_age_s > 0:
        parts.append(f"rules from cache, {proc.rules_cache_age_s} s old")
    if proc.rules_fetch_failures:
        parts.append(f"rules fetch failures {proc.rules_fetch_failures}")
    if proc.rules_changes:
        parts.append(f"rules changes {proc.rules_changes}")
    return "".join(f" {p}" for p in parts)


def fee_status(proc: ProcSnapshot) -> str:
    """`` fees account`` (looked up and in use) / `` fee lookup failures 3``: the account fee lookup, when on."""
    parts = []
    if proc.fee_lookup_state == STATE_OK:
        parts.append("fees account")
    if proc.fee_lookup_failures:
        parts.append(f"fee lookup failures {proc.fee_lookup_failures}")
    return "".join(f" {p}" for p in parts)


def fee_alert(proc: ProcSnapshot) -> str:
    """The alert line of a feed whose last account fee lookup failed (refused credentials, no answer), else ''."""
    if proc.fee_lookup_state in (STATE_OFF, STATE_OK):
        return ""
    return describe_failure(proc.venue or proc.key, proc.fee_lookup_state, proc.fee_lookup_status)


def bridge_status(proc: ProcSnapshot) -> str:
    """The bridge's NATS state and counters (see :mod:`pipeline.bridge.process` for what each slot field means)."""
    if proc.connected:
        state = "NATS connected"
    elif proc.checksum_failures:
        state = "NATS CREDENTIALS REFUSED (see the bridge's log line)"
    else:
        state = "NATS NOT CONNECTED"
    envelope = f" clock envelope {proc.clock_offset_ns / 1e6:+.1f}ms" if proc.clock_offset_ns else ""
    return (f"{state}  rows in {proc.messages} out {proc.scans} malformed {proc.parse_errors} "
            f"reconnects {proc.reconnects}{envelope}")


def bridge_part(snapshot: list[ProcessHealth]) -> str:
    """Appended to the one-line status when a bridge runs."""
    return "".join(f"  bridge: {bridge_status(i.proc)}" for i in snapshot if i.key == "bridge")


def latency_rows(proc: ProcSnapshot) -> list[tuple]:
    """(hop, p50, p99, p99.9, max in µs, count) for each hop the process records."""
    return [(hop, h.percentile_ns(0.5) / 1e3, h.percentile_ns(0.99) / 1e3, h.percentile_ns(0.999) / 1e3,
             h.max_ns / 1e3, h.count) for hop, h in proc.hops]


def main(spec: ProcessSpec, config, specs: list[ProcessSpec]) -> None:
    """Entry point of the health process (called in the forked child)."""
    run_child(spec, lambda stop: run_health(spec, config, specs, stop))


def run_health(spec: ProcessSpec, config, specs: list[ProcessSpec], stop) -> None:
    board = Board.attach(spec.board_name, spec.depth)
    slot = board.procs[spec.slot]
    reporter = HealthReporter(board, specs, list(spec.rows))
    metrics = None
    if config.metrics:
        try:
            metrics = start_metrics(board, specs, spec, config.metrics.port, config.metrics.host)
        except OSError as exc:
            # the supervisor checked the port before starting; something took it since. Health goes on
            # without the endpoint rather than dying and restarting in a loop
            sys.stderr.write(f"health: metrics.port {config.metrics.port}: cannot listen on 127.0.0.1 "
                             f"({exc.strerror}); no metrics endpoint this run\n")
            sys.stderr.flush()
    reporter.snapshot()
    verbose = getattr(config, "verbose", False)
    interval = config.health.interval_s
    next_at = time.monotonic() + interval
    while not stop and parent_alive(spec):
        slot["heartbeat_ns"] = time.time_ns()
        if time.monotonic() >= next_at:
            next_at += interval
            snapshot = reporter.snapshot()
            text = reporter.render(snapshot) if verbose else reporter.status_line(snapshot) + bridge_part(snapshot)
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        stop.wait(0.2)
    if metrics is not None:
        from pipeline.health.metrics import stop_metrics_server
        stop_metrics_server(metrics)
    del slot
    board.close()


def start_metrics(board: Board, specs: list[ProcessSpec], spec: ProcessSpec, port: int, host: str = "127.0.0.1"):
    """Serve /metrics on host:port (``metrics.host``, loopback by default) from this (health) process,
    reading the same board."""
    from pipeline.health.metrics import BoardCollector, start_metrics_server

    def pairs():
        opened = board.pairs
        return {(VENUES[i], VENUES[j]): int(opened[i, j]) for i in range(len(VENUES)) for j in range(len(VENUES))
                if opened[i, j]}

    collector = BoardCollector(board, specs, list(spec.rows), opportunities_by_pair=pairs)
    return start_metrics_server(port, collector, host)
