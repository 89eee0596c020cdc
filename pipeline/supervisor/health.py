"""Health reporter: reads the board's process slots and rows, asks psutil
about each process, prints one block every ``health.interval_s``.

It reads counters straight from shared memory (no messages to the
processes it reports on), so a wedged feed shows up as a stale heartbeat and
a message rate of zero instead of as a missing answer.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import psutil

from pipeline.board import Board, RowStatus
from pipeline.board.histogram import read_histogram
from pipeline.board.layout import HOPS, ProcessRole
from pipeline.runtime import ProcessSpec, parent_alive, setup_child


class HealthReporter:
    def __init__(self, board: Board, specs: list[ProcessSpec], rows, cpu_count: int | None = None):
        self.board = board
        self.specs = [s for s in specs if s.slot >= 0]
        self.rows = rows                     # list of RowAssignment
        self.cpu_count = cpu_count or psutil.cpu_count()
        self._procs: dict[int, psutil.Process] = {}
        self._last_counts: dict[int, tuple[int, int, int]] = {}   # slot -> (t_ns, messages, scans)
        self._last_e2e = None                # the detector's receive_to_emitted histogram at the last status line

    def _process(self, pid: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        if proc is None:
            try:
                proc = psutil.Process(pid)
                proc.cpu_percent(None)       # prime: the first call always says 0
            except psutil.Error:
                return None
            self._procs[pid] = proc
        return proc

    def snapshot(self, now_ns: int | None = None) -> list[dict]:
        """One dict per process: what the block prints (also used by tests)."""
        now_ns = now_ns or time.time_ns()
        procs = self.board.procs
        rows = self.board.rows
        out = []
        for spec in self.specs:
            slot = procs[spec.slot]
            pid = int(slot["pid"])
            info = {"title": spec.title, "key": spec.key, "pid": pid, "cores": None, "cpu_percent": None,
                    "rss_mb": None, "alive": False}
            proc = self._process(pid) if pid else None
            if proc is not None:
                try:
                    with proc.oneshot():
                        info["cores"] = proc.cpu_affinity()
                        info["cpu_percent"] = proc.cpu_percent(None)
                        info["rss_mb"] = proc.memory_info().rss / 2 ** 20
                        info["alive"] = proc.status() != psutil.STATUS_ZOMBIE
                except psutil.Error:
                    self._procs.pop(pid, None)
            messages = int(slot["messages"])
            scans = int(slot["scans"])
            previous = self._last_counts.get(spec.slot)
            self._last_counts[spec.slot] = (now_ns, messages, scans)
            if previous is not None and now_ns > previous[0]:
                dt = (now_ns - previous[0]) / 1e9
                info["messages_per_s"] = max(0, messages - previous[1]) / dt
                info["scans_per_s"] = max(0, scans - previous[2]) / dt
            else:
                info["messages_per_s"] = info["scans_per_s"] = None
            heartbeat = int(slot["heartbeat_ns"])
            info["heartbeat_age_ms"] = (now_ns - heartbeat) / 1e6 if heartbeat else None
            for field in ("messages", "parse_errors", "reconnects", "gaps", "checksum_failures", "resyncs",
                          "opportunities", "restarts", "last_exit_code", "connected", "connect_failures"):
                info[field] = int(slot[field])
            info["scans"] = scans
            info["clock_offset_ms"] = int(slot["clock_offset_ns"]) / 1e6
            info["shadow_fills"] = int(slot["shadow_fills"])
            info["shadow_profitable"] = int(slot["shadow_profitable"])
            info["recorded"] = int(slot["recorded"])
            info["record_dropped"] = int(slot["record_dropped"])
            # a backlog: frames waiting between the socket and the session (feed/process.py)
            info["behind"] = int(slot["behind"])
            info["fell_behind"] = int(slot["fell_behind"])
            info["late_frames"] = int(slot["late_frames"])
            info["backlog_wait_ms"] = int(slot["backlog_wait_ns"]) / 1e6
            info["backlog_frames"] = int(slot["backlog_frames"])
            info["hops"] = latency_rows(self.board, spec)
            if spec.role == ProcessRole.FEED:
                own = [r for r in self.rows if r.venue == spec.venue and not r.box]
                recv = [int(rows[r.row]["recv_ns"]) for r in own]
                states = [RowStatus(int(rows[r.row]["status"])).name.lower() for r in own]
                # clamped: a row written after now_ns was taken would otherwise show a negative age
                info["last_update_age_ms"] = max(0.0, (now_ns - max(recv)) / 1e6) if any(recv) else None
                info["row_states"] = {s: states.count(s) for s in sorted(set(states))}
            out.append(info)
        return out

    def status_line(self, snapshot: list[dict], clock: str | None = None) -> str:
        """The one line printed every interval by default (the full block is ``--verbose``)."""
        clock = clock or time.strftime("%H:%M:%S")
        feeds = [i for i in snapshot if i["key"].startswith("feed:")]
        live = sum(1 for i in feeds if i.get("row_states") and set(i["row_states"]) == {"live"})
        rates = [i["messages_per_s"] for i in feeds if i["messages_per_s"] is not None]
        detector = next((i for i in snapshot if i["key"] == "detector"), None)
        e2e = None
        if detector is not None:
            spec = next(s for s in self.specs if s.key == "detector")
            hops = HOPS.get(spec.role, ())
            if "receive_to_emitted" in hops:
                now = read_histogram(self.board, spec.slot, hops.index("receive_to_emitted"))
                e2e = now.minus(self._last_e2e) if self._last_e2e is not None else now
                self._last_e2e = now
        not_live = [f"{i['key'][5:]} " + ",".join(k for k in i["row_states"] if k != "live")
                    for i in feeds if i.get("row_states") and set(i["row_states"]) != {"live"}]
        line = format_status(clock, live, len(feeds), sum(rates) if rates else None,
                             detector["opportunities"] if detector else None, e2e,
                             [f"{i['title'].removeprefix('pipeline: ')} {i['restarts']}" for i in snapshot
                              if i["restarts"]], not_live)
        failing = [f"{i['key'][5:]} {i['record_dropped']}" for i in feeds if i.get("record_dropped")]
        line += "  RECORDING FAILING (frames not recorded): " + ", ".join(failing) if failing else ""
        return line + behind_part(feeds)

    def render(self, snapshot: list[dict]) -> str:
        n = len(self.specs) + 1   # + the supervisor
        lines = [f"--- health {time.strftime('%H:%M:%S')} --- {n} processes on {self.cpu_count} cores"
                 + (" (more processes than cores: they share)" if n > self.cpu_count else "")]
        for info in snapshot:
            cpu = "-" if info["cpu_percent"] is None else f"{info['cpu_percent']:5.1f}%"
            rss = "-" if info["rss_mb"] is None else f"{info['rss_mb']:.0f}MB"
            cores = "-" if info["cores"] is None else ",".join(map(str, info["cores"]))
            rate = "-" if info["messages_per_s"] is None else f"{info['messages_per_s']:.0f}"
            line = f"  {info['title']:26} pid {info['pid']:>7} cores {cores:5} cpu {cpu:>6} rss {rss:>6}"
            if info["key"].startswith("feed:"):
                age = "-" if info["last_update_age_ms"] is None else f"{info['last_update_age_ms']:.0f}ms"
                states = " ".join(f"{k}={v}" for k, v in info["row_states"].items())
                failed = f" failed connects {info['connect_failures']}" if info["connect_failures"] else ""
                line += (f" msg/s {rate:>6} last {age:>7} reconnects {info['reconnects']}{failed} "
                         f"parse_errors {info['parse_errors']} gaps {info['gaps']} [{states}]")
            elif info["key"] == "detector":
                scans = "-" if info["scans_per_s"] is None else f"{info['scans_per_s']:.0f}"
                line += f" scans/s {scans:>8} opportunities {info['opportunities']}"
            elif info["key"] == "simulator":
                line += f" frames/s {rate:>6}"
            elif info["key"] == "bridge":
                line += " " + bridge_status(info)
            if info["key"].startswith("feed:") and info["clock_offset_ms"]:
                line += f" clock offset {info['clock_offset_ms']:+.1f}ms"
            if info["key"].startswith("feed:") and info["record_dropped"]:
                line += f" RECORDING FAILING: {info['record_dropped']} frames not recorded"
            if info["key"].startswith("feed:"):
                line += backlog_status(info)
            if info["key"] == "detector" and info["shadow_fills"]:
                line += f" shadow fills profitable {info['shadow_profitable']}/{info['shadow_fills']}"
            if info["restarts"]:
                line += f" restarts {info['restarts']} (last exit {info['last_exit_code']})"
            if info["heartbeat_age_ms"] is not None and info["heartbeat_age_ms"] > 2000:
                line += f" HEARTBEAT {info['heartbeat_age_ms'] / 1000:.1f}s OLD"
            lines.append(line)
            for hop, p50, p99, p999, top, count in info["hops"]:
                if count:
                    lines.append(f"      {hop:22} p50 {p50:9.1f} p99 {p99:9.1f} p99.9 {p999:9.1f} max {top:9.1f} µs"
                                 f"  (n={count})")
        return "\n".join(lines)


def format_status(clock: str, live: int, feeds: int, messages_per_s: float | None, opportunities: int | None,
                  e2e, restarted: list[str], not_live: list[str] = ()) -> str:
    """``--- health 12:00:05  venues live 6/6  msg/s 1480  opportunities 12  end to end p50 118 µs p99 402 µs``.

    ``e2e`` is the detector's frame-received -> opportunity-emitted histogram since the last line
    (a :class:`~pipeline.board.histogram.HistogramSnapshot`), or None.
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


def backlog_status(info: dict) -> str:
    """`` backlog waited 1750ms queued 64 late 250 fell behind 2x BEHIND``: a feed's backlog, when it has had one."""
    if not (info["behind"] or info["fell_behind"] or info["late_frames"]):
        return ""
    return (f" backlog waited {info['backlog_wait_ms']:.0f}ms queued {info['backlog_frames']} late "
            f"{info['late_frames']} fell behind {info['fell_behind']}x" + (" BEHIND" if info["behind"] else ""))


def behind_part(feeds: list[dict]) -> str:
    """``  BEHIND (rows stale): binance 1.8s``: the feeds whose frames reach them later than their staleness limit."""
    behind = [f"{i['key'][5:]} {i['backlog_wait_ms'] / 1000:.1f}s" for i in feeds if i.get("behind")]
    return "  BEHIND (rows stale): " + ", ".join(behind) if behind else ""


def bridge_status(info: dict) -> str:
    """The bridge's NATS state and counters (see :mod:`pipeline.bridge.process` for what each slot field means)."""
    if info["connected"]:
        state = "NATS connected"
    elif info["checksum_failures"]:
        state = "NATS CREDENTIALS REFUSED (see the bridge's log line)"
    else:
        state = "NATS NOT CONNECTED"
    envelope = f" clock envelope {info['clock_offset_ms']:+.1f}ms" if info.get("clock_offset_ms") else ""
    return (f"{state}  rows in {info['messages']} out {info['scans']} malformed {info['parse_errors']} "
            f"reconnects {info['reconnects']}{envelope}")


def bridge_part(snapshot: list[dict]) -> str:
    """Appended to the one-line status when a bridge runs."""
    return "".join(f"  bridge: {bridge_status(i)}" for i in snapshot if i["key"] == "bridge")


def latency_rows(board: Board, spec: ProcessSpec) -> list[tuple]:
    """(hop, p50, p99, p99.9, max in µs, count) for each hop the process records."""
    out = []
    for index, hop in enumerate(HOPS.get(spec.role, ())):
        h = read_histogram(board, spec.slot, index)
        out.append((hop, h.percentile_ns(0.5) / 1e3, h.percentile_ns(0.99) / 1e3, h.percentile_ns(0.999) / 1e3,
                    h.max_ns / 1e3, h.count))
    return out


def latency_table(board: Board, specs: list[ProcessSpec]) -> str:
    """The whole per-hop table, for the exit summary."""
    lines = ["latency per hop (µs)            p50       p99     p99.9       max       count"]
    for spec in specs:
        if spec.slot < 0:
            continue
        who = spec.venue or spec.key
        for hop, p50, p99, p999, top, count in latency_rows(board, spec):
            if count:
                lines.append(f"  {who:9} {hop:20} {p50:9.1f} {p99:9.1f} {p999:9.1f} {top:9.1f} {count:11}")
    return "\n".join(lines)


def main(spec: ProcessSpec, config, specs: list[ProcessSpec]) -> None:
    setup_child(spec)
    board = Board.attach(spec.board_name, spec.depth)
    slot = board.procs[spec.slot]
    slot["role"] = int(ProcessRole.HEALTH)
    slot["pid"] = os.getpid()
    slot["started_ns"] = time.time_ns()
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
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
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
        time.sleep(0.2)
    if stop and not verbose:
        # the full block once at the end of a run: how every process finished
        sys.stdout.write(reporter.render(reporter.snapshot()) + "\n")
        sys.stdout.flush()
    if metrics is not None:
        from pipeline.supervisor.metrics import stop_metrics_server
        stop_metrics_server(metrics)
    board.close()


def start_metrics(board: Board, specs: list[ProcessSpec], spec: ProcessSpec, port: int, host: str = "127.0.0.1"):
    """Serve /metrics on host:port (``metrics.host``, loopback by default) from this (health) process,
    reading the same board."""
    from pipeline.board.histogram import bucket_upper_ns
    from pipeline.board.layout import HIST_BUCKETS
    from pipeline.supervisor.metrics import BoardCollector, start_metrics_server
    from pipeline.venues import VENUES
    # buckets 1..3 are never used (everything below 128 ns is bucket 0); the last one is open-ended
    used = [0] + list(range(4, HIST_BUCKETS - 1))
    bounds = [bucket_upper_ns(i) / 1e9 for i in used]

    def histograms():
        out = []
        for s in specs:
            for index, hop in enumerate(HOPS.get(s.role, ())):
                h = read_histogram(board, s.slot, index)
                cumulative, running = [], 0
                for n in h.buckets:
                    running += n
                    cumulative.append(running)
                counts = [cumulative[i] for i in used] + [h.count]
                out.append((hop, {"process": s.venue or s.key}, bounds, counts, h.sum_ns / 1e9))
        return out

    def pairs():
        opened = board.pairs
        return {(VENUES[i], VENUES[j]): int(opened[i, j]) for i in range(len(VENUES)) for j in range(len(VENUES))
                if opened[i, j]}

    collector = BoardCollector(board, specs, list(spec.rows), histograms=histograms, opportunities_by_pair=pairs)
    return start_metrics_server(port, collector, host)
