"""``run.py replay``: recorded frames through the live path, deterministically.

The frames of every venue in a recording, merged in ``recv_ns`` order, go
through the same :class:`~pipeline.feed.session.FeedSession` the feed process
runs, into real seqlocked board rows (a private board, removed at the end),
read back by the detector's own board scan, decided by the same
:class:`~pipeline.detector.engine.DetectorEngine`, and written by the same
output fan-out: the events file has the live schema and the summary is the
live summary.

Time comes only from the recording: a frame is handled at its ``recv_ns``;
the feeds' staleness checks (every 100 ms, like the feed's watchdog), the
detector's expiry checks (every 20 ms) and the shadow fills (at their due
time) run on that clock, before the first frame that comes after them. So
two replays of one recording with one config write byte-identical event files.
Recorded connects and disconnects replay as such; a frame with no recorded
connection (imported captures) opens one for all of its venue's instruments.

Trading rules: the reference-data responses the feeds applied are in the recording (``reference_data``
events) and are applied again at the same point. Until a venue's first one, and for a recording made
before they were recorded, its rows get the rules of the reference-data cache directory (``--rules-cache``,
default ``reference_data.cache_dir``); a venue with neither has its rows ``no_rules`` (never tradable) and
the summary says so.

Where replay and a live run can differ: the live detector sees the board when
it gets to it, and a burst of updates can land between two of its passes; the
replay evaluates after every frame, so it sees every intermediate state.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import heapq
import os
import sys
import time
import uuid
from dataclasses import dataclass, field

from pipeline.board import Board, RowWriter, RulesWriter, plan_rows
from pipeline.detector.engine import EXPIRE_INTERVAL_NS, DetectorEngine
from pipeline.detector.scan import BoardRules, BoardView, RowUniverse
from pipeline.errors import ConfigError
from pipeline.feed.arbiter import open_paths, path_of_connection
from pipeline.feed.session import FeedSession
from pipeline.output.writers import Outputs
from pipeline.recording.format import EVENT, RecordingError, RecordingReader, recording_files
from pipeline.refdata import RulesCache
from pipeline.venues import load_venue

TICK_INTERVAL_NS = 100_000_000       # the feed watchdog's interval
CATCH_UP_LIMIT_NS = 10_000_000_000   # a silence longer than this is jumped, not walked in 20 ms steps


@dataclass
class ReplayResult:
    frames: int = 0
    active_frames: int = 0           # frames inside --from/--to (the others only build the books)
    events: int = 0
    skipped_frames: int = 0          # venues or instruments the config does not have
    records: int = 0
    first_ns: int = 0
    last_ns: int = 0
    damage: list = field(default_factory=list)
    summary: str = ""
    incidents: dict = field(default_factory=dict)
    rules: dict = field(default_factory=dict)        # venue -> where its rules came from: recording, cache, none
    without_rules: list = field(default_factory=list)   # venues whose rows had no rules (no_rules) throughout


def parse_time(text: str | None) -> int | None:
    """``--from``/``--to``: ISO-8601 (``2026-11-29T08:00:00Z``) or Unix seconds."""
    if text is None:
        return None
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError([("--from/--to", f"not a time: {text!r} (ISO-8601 or Unix seconds)")]) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1e9)


def _stream(reader: RecordingReader, index: int):
    pid = reader.header.get("pid", index)
    for record in reader.records():
        yield record.recv_ns, index, reader.venue, pid, record


class Replay:
    def __init__(self, config, paths: list[str], out_path: str | None, speed: float | None = None,
                 from_ns: int | None = None, to_ns: int | None = None, print_lines: bool = True,
                 stdout=None, rules_cache: str | None = None):
        self.config = config
        self.rules_cache = rules_cache      # reference-data cache directory for venues the recording has no rules of
        self.paths = paths
        self.speed = speed
        self.from_ns = from_ns
        self.to_ns = to_ns
        self.rows = plan_rows(config)
        self.out_path = out_path
        self.print_lines = print_lines
        self.stdout = stdout or sys.stdout

    def run_id(self) -> str:
        """``replay-`` and a digest of what decides the records (the files, the window, the venues and the
        detector's settings): the same replay always has the same id, so its file is byte for byte the same."""
        detector = dataclasses.replace(self.config.detector, output="")       # where it is written decides nothing
        what = repr(([os.path.basename(p) for p in self.paths], self.from_ns, self.to_ns, self.config.venues,
                     detector))
        return "replay-" + hashlib.sha1(what.encode()).hexdigest()[:12]

    def run(self) -> ReplayResult:
        config = self.config
        depth = config.board.depth
        result = ReplayResult()
        readers = [RecordingReader(path) for path in self.paths]      # RecordingError: unreadable file
        board = Board.create(f"pipeline-replay-{uuid.uuid4().hex[:12]}", max(1, len(self.rows)), depth, 1)
        outputs = None
        try:
            # one writer for every row, logging each publish in one change lane: the scan after a frame reads
            # the rows that frame changed, not every row's sequence word
            board.assign_lane([r.row for r in self.rows], 0)
            writer = RowWriter(board, [r.row for r in self.rows])
            rules_writer = RulesWriter(board, [r.row for r in self.rows])      # what the feeds write for the detector
            sessions: dict[str, FeedSession] = {}
            paths: dict[str, list[FeedSession]] = {}     # a venue read over redundant connections: its paths
            incidents: dict[str, dict[str, int]] = {}
            for venue_config in config.venues:
                mine = {r.symbol: r.row for r in self.rows if r.venue == venue_config.name}
                counts = incidents.setdefault(venue_config.name, {})

                def journal(kind, now_ns, fields, counts=counts):
                    if kind != "rules":                 # (where the rules came from is said once, below)
                        counts[kind] = counts.get(kind, 0) + 1
                _, venue_paths = open_paths(load_venue(venue_config.name), mine, depth,
                                            int(venue_config.staleness_ms * 1e6), writer, venue_config.connections,
                                            journal=journal)
                session = sessions[venue_config.name] = venue_paths[0]
                if len(venue_paths) > 1:
                    paths[venue_config.name] = venue_paths
                session.rules_sink = rules_writer.write
                cached = RulesCache(self.rules_cache).load(venue_config.name) if self.rules_cache else None
                for path_session in venue_paths:
                    path_session.apply_rules(cached.rules if cached is not None else [], 0,
                                             source="cache" if cached is not None else "none")
                result.rules[venue_config.name] = "cache" if cached is not None else "none"
            universe = RowUniverse(config, self.rows)
            view = BoardView(board, universe)
            clock = {"now": 0}

            def clock_offset(label: str) -> int:
                session = sessions.get(label)
                offset = session.clock.offset_ns(clock["now"]) if session is not None else None
                return offset or 0
            engine = DetectorEngine(config, universe, view.quotes, clock_offset, BoardRules(board, universe))
            outputs = Outputs(self.out_path, self.print_lines, config.verbose, stdout=self.stdout, truncate=True,
                              run_id=self.run_id())

            def emit(items):
                for item in items:
                    outputs.write(item.record)
                    result.records += 1

            conns: dict[tuple, object] = {}
            next_tick = next_expire = None
            wall_start = None
            first = None
            merged = heapq.merge(*(_stream(r, i) for i, r in enumerate(readers)), key=lambda item: item[0])
            for recv_ns, index, venue, pid, record in merged:
                if self.to_ns is not None and recv_ns > self.to_ns:
                    break
                session = sessions.get(venue)
                if session is None:
                    if record.kind != EVENT:
                        result.skipped_frames += 1
                    continue
                venue_paths = paths.get(venue)
                if venue_paths is not None:             # the frame's (or incident's) own path, as live
                    failed = record.kind == EVENT and record.event.get("kind") == "connect_failed"   # (no connection)
                    path = record.event.get("path", 0) if failed else path_of_connection(record.conn, len(venue_paths))
                    session = venue_paths[path]
                if first is None:
                    first = recv_ns
                    next_tick = recv_ns + TICK_INTERVAL_NS
                    next_expire = recv_ns + EXPIRE_INTERVAL_NS
                active = self.from_ns is None or recv_ns >= self.from_ns
                # timers due before this frame, in time order, on the recording's clock
                if recv_ns - min(next_tick, next_expire) > CATCH_UP_LIMIT_NS:
                    # a long silence (or captures taken far apart): one check at its end, not one per step
                    while engine.next_shadow_ns() is not None and engine.next_shadow_ns() <= recv_ns:
                        clock["now"] = engine.next_shadow_ns()
                        emit(engine.run_shadows(clock["now"]))
                    next_tick = next_expire = recv_ns
                while True:
                    due_shadow = engine.next_shadow_ns()
                    due = min(next_tick, next_expire, due_shadow if due_shadow is not None else next_tick)
                    if due > recv_ns:
                        break
                    clock["now"] = due
                    if due_shadow is not None and due == due_shadow:
                        emit(engine.run_shadows(due))
                    elif due == next_tick:
                        for s in sessions.values():
                            for path_session in paths.get(s.name, (s,)):
                                path_session.tick(due)
                        next_tick = due + TICK_INTERVAL_NS
                        self._scan(view, engine, due, emit, active)
                    else:
                        if active:
                            emit(engine.expire(due))
                        next_expire = due + EXPIRE_INTERVAL_NS
                clock["now"] = recv_ns
                if self.speed and active:
                    if wall_start is None:
                        wall_start = (time.monotonic_ns(), recv_ns)
                    ahead = (recv_ns - wall_start[1]) / self.speed - (time.monotonic_ns() - wall_start[0])
                    if ahead > 0:
                        time.sleep(ahead / 1e9)
                key = (index if pid is None else pid, venue, record.conn)
                if record.kind == EVENT:
                    result.events += 1
                    if self._event(session, record, key, conns, paths.get(venue)):
                        result.rules[venue] = "recording"
                else:
                    result.frames += 1
                    result.active_frames += active
                    conn = conns.get(key)
                    if conn is None:
                        conn = conns[key] = session.connection_opened(list(session.books), recv_ns, record.conn)
                    session.receive(record.frame, recv_ns, conn)
                    self._scan(view, engine, recv_ns, emit, active)
                result.last_ns = recv_ns
            result.first_ns = first or 0
            emit(engine.close_all(result.last_ns))
            result.damage = [str(r.damage) for r in readers if r.damage is not None]
            result.summary = engine.summary.render()
            result.incidents = {v: dict(sorted(c.items())) for v, c in incidents.items() if c}
            result.without_rules = sorted(v for v, where in result.rules.items() if where == "none")
            view.close()
            writer = None
        finally:
            if outputs is not None:
                outputs.close()
            for reader in readers:
                reader.close()
            board.destroy()
        return result

    @staticmethod
    def _scan(view: BoardView, engine: DetectorEngine, now_ns: int, emit, active: bool) -> None:
        dirty = view.changed()
        if not dirty or not active:
            return
        for key, rows in dirty.items():            # only the rows that changed are read again, as live
            emit(engine.evaluate(key, view.refresh(key, rows), now_ns))
        engine.suspects.clear()

    @staticmethod
    def _event(session: FeedSession, record, key, conns, venue_paths=None) -> bool:
        """Apply one recorded session event; True when it was the venue's trading rules."""
        event = record.event
        kind = event.get("kind")
        if kind == "reference_data":
            from pipeline.errors import ParseError
            try:
                rules = session.venue.reference_data.parse(event.get("raw", "").encode())
            except ParseError:
                rules = []                      # what the feed applied parsed; a damaged event gives no rules
            for path_session in venue_paths or (session,):     # every path's books hold the rules
                path_session.apply_rules(rules, record.recv_ns, full=event.get("full", True) is not False,
                                         source=event.get("source", "reference_data"))   # full False: HTX's ts
            return True
        if kind == "connect":
            conns[key] = session.connection_opened(event.get("symbols") or list(session.books), record.recv_ns,
                                                   record.conn)
        elif kind == "disconnect":
            conn = conns.pop(key, None)
            if conn is not None:
                session.connection_lost(conn, record.recv_ns, event.get("reason", ""))
        elif kind == "connect_failed":
            session.connection_failed(event.get("symbols") or list(session.books), record.recv_ns,
                                      event.get("reason", ""))
        return False


def recording_span(paths: list[str]) -> tuple[int | None, int | None]:
    """The first and last receive time in the files (None when they hold no record)."""
    first = last = None
    for path in paths:
        reader = RecordingReader(path)
        try:
            for record in reader.records():
                first = record.recv_ns if first is None else min(first, record.recv_ns)
                last = record.recv_ns if last is None else max(last, record.recv_ns)
        finally:
            reader.close()
    return first, last


def _when(ns: int | None) -> str:
    if ns is None:
        return "(nothing)"
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _window(from_ns: int | None, to_ns: int | None) -> str:
    start = _when(from_ns) if from_ns is not None else "the start"
    end = _when(to_ns) if to_ns is not None else "the end"
    return f"{start} .. {end}"


# ---------------------------------------------------------------- command line

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py replay", description="Replay recorded frames through the feed session, the board and the "
                                          "detector, on the recording's clock.")
    p.add_argument("--config", required=True, help="YAML config: venues, instruments, detector settings")
    p.add_argument("--recording", required=True, help="a recording file or a directory of them")
    p.add_argument("--speed", default="max", help="1, 10 (paced by the recorded gaps) or max (default)")
    p.add_argument("--from", dest="from_time", help="start time (ISO-8601 or Unix seconds); earlier frames only "
                                                    "build the books")
    p.add_argument("--to", dest="to_time", help="stop time (ISO-8601 or Unix seconds)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set detector.threshold_bps=5 (repeatable)")
    p.add_argument("--compare", action="store_true",
                   help="replay twice, as configured and with the --set overrides, and print both summaries")
    p.add_argument("--out", default="out/replay-opportunities.jsonl",
                   help="events file (default out/replay-opportunities.jsonl; with --compare, a -baseline "
                        "file is written beside it)")
    p.add_argument("--rules-cache", metavar="DIR",
                   help="reference-data cache directory (<venue>.json) for venues the recording holds no trading "
                        "rules of (default: a rules/ folder beside the recording's files when there is one, else "
                        "the config's reference_data.cache_dir)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--verbose", action="store_true", help="print update and shadow lines too")
    return p


def _load(path: str, overrides, verbose: bool):
    from pipeline.config import load_config
    config = load_config(path, overrides)
    if config.bridge is not None:
        config = dataclasses.replace(config, bridge=None)   # replay runs one box's venues, no bridge
    return dataclasses.replace(config, verbose=verbose) if verbose else config


def side_by_side(left: str, right: str, titles: tuple[str, str]) -> str:
    a, b = left.splitlines(), right.splitlines()
    width = max([len(line) for line in a] + [len(titles[0])]) + 3
    lines = [titles[0].ljust(width) + titles[1], "-" * (width + max(len(titles[1]), 10))]
    for n in range(max(len(a), len(b))):
        lines.append((a[n] if n < len(a) else "").ljust(width) + (b[n] if n < len(b) else ""))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.speed == "max":
        speed = None
    else:
        try:
            speed = float(args.speed)
            if not speed > 0:
                raise ValueError
        except ValueError:
            parser().error(f"--speed must be 1, 10, another positive number or max, got {args.speed!r}")
    try:
        from_ns, to_ns = parse_time(args.from_time), parse_time(args.to_time)
        config = _load(args.config, args.overrides, args.verbose)
        baseline = _load(args.config, (), args.verbose) if args.compare else None
    except ConfigError as exc:
        sys.stderr.write(f"run.py replay: {exc}\n")
        return 2
    paths = recording_files(args.recording)
    if not paths or not all(os.path.isfile(p) for p in paths):
        sys.stderr.write(f"run.py replay: no recording at {args.recording}\n")
        return 2
    runs = [("as configured" if not args.overrides else "with " + " ".join(args.overrides), config, args.out)]
    if baseline is not None:
        root, ext = os.path.splitext(args.out)
        runs.insert(0, ("as configured", baseline, f"{root}-baseline{ext or '.jsonl'}"))
    kept_with = os.path.join(args.recording if os.path.isdir(args.recording) else os.path.dirname(args.recording),
                             "rules")
    rules_cache = args.rules_cache or (kept_with if os.path.isdir(kept_with) else None)
    results = []
    for title, cfg, out in runs:
        try:
            result = Replay(cfg, paths, out, speed, from_ns, to_ns,
                            print_lines=not args.quiet and baseline is None,
                            rules_cache=rules_cache or cfg.reference_data.cache_dir).run()
        except RecordingError as exc:
            sys.stderr.write(f"run.py replay: {exc}\n")
            return 2
        except OSError as exc:
            sys.stderr.write(f"run.py replay: {exc.filename or ''}: {exc.strerror}\n")
            return 2
        results.append((title, result, out))
    title, result, out = results[-1]
    if not result.active_frames and (from_ns is not None or to_ns is not None):
        first, last = recording_span(paths)
        sys.stderr.write(f"run.py replay: --from/--to: no frame of the recording in {_window(from_ns, to_ns)}; "
                         f"it spans {_when(first)} to {_when(last)}\n")
        return 2
    span = (result.last_ns - result.first_ns) / 1e9
    sys.stdout.write(f"replay: {result.frames} frames, {result.events} session events over {span:.1f} s of "
                     f"recording; {result.records} records written to {out}\n")
    if result.skipped_frames:
        sys.stdout.write(f"replay: {result.skipped_frames} frames of venues not in the config skipped\n")
    for venue, counts in result.incidents.items():
        sys.stdout.write(f"replay: {venue} incidents: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "\n")
    if result.without_rules:
        sys.stdout.write(f"replay: no trading rules for {', '.join(result.without_rules)} (none in the recording, "
                         f"none in {rules_cache or config.reference_data.cache_dir}): their rows were "
                         f"no_rules, never traded\n")
    for damage in result.damage:
        sys.stdout.write(f"replay: stopped reading {damage}\n")
    if len(results) == 2:
        sys.stdout.write(side_by_side(results[0][1].summary, results[1][1].summary,
                                      (results[0][0], results[1][0])) + "\n")
    else:
        sys.stdout.write(result.summary + "\n")
    return 0
