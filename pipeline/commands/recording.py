"""``run.py recording info|import``: what a recording holds, and real captures turned into recordings.

``info FILE|DIR`` prints, per venue, the frames per channel, the time span
and rate, the session's view of them (the frames replayed through the feed
session: changes, gaps, checksum failures, resyncs) and the incident list
the live feed recorded (connects, disconnects, gaps, resyncs, refusals,
stale rows, notices). ``--json`` prints the same as one JSON object.

``import --format cryptofeed|jsonl FILE... --out DIR`` converts captures:
cryptofeed's ``TIMESTAMP: PAYLOAD`` files (the exchange from the file name,
``HUOBI.ws.44.0`` is htx; connection lines become ``connect`` events, lines
the client sent are kept as ``sent`` events, HTX's gzip frames stay binary)
and plain JSON-lines files with one received frame per line and no times
(``--exchange`` names the venue; frame *n* gets ``--start`` + *n* ms).

Captures are hostile input. Credentials in them (a login the client sent, a request the exchange echoed,
a token in a URL) are replaced before anything is written (:mod:`pipeline.recording.redact`), counted,
and said once per file. A capture is opened without following a symbolic link and must be a regular file;
``--out`` must not be a symbolic link, and recordings are created ``0640`` without following one
(:mod:`pipeline.files`): either refusal exits 2 naming the path. A line longer than
:data:`MAX_LINE_BYTES` is damage at its byte offset.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

import orjson

from pipeline.commands.decode import split_line
from pipeline.files import NotARegularFile, open_for_reading, open_for_writing
from pipeline.recording.format import (
    BINARY,
    EVENT,
    SUFFIX,
    TEXT,
    RecordingError,
    RecordingReader,
    encode_chunk,
    encode_header,
    encode_records,
    recording_files,
)
from pipeline.recording.redact import redact_frame, redact_text, redact_url

CRYPTOFEED_NAMES = {"BINANCE": "binance", "BYBIT": "bybit", "OKX": "okx", "OKEX": "okx", "HUOBI": "htx",
                    "HTX": "htx", "COINBASE": "coinbase", "KRAKEN": "kraken"}
INCIDENT_KINDS = ("connect_failed", "disconnect", "gap", "resync", "reject", "stale", "notice", "crossed")
CHUNK_RECORDS = 5000
MAX_LINE_BYTES = 64 << 20        # a capture line longer than this is damage (the largest real frame: a few MB)


class ImportRefused(ValueError):
    """A capture or output path the import will not touch (a symbolic link, not a regular file)."""


# ---------------------------------------------------------------- info

def channel_of(venue_module, frame) -> list[str]:
    """What a frame carries, as ``SYMBOL bbo`` / ``SYMBOL depth`` / the control event's name."""
    from pipeline.errors import ParseError
    from pipeline.model import BBO, BookUpdate
    try:
        events = venue_module.parse(frame, 0)
    except ParseError as exc:
        return [f"unusable ({exc.reason})"]
    names = []
    for event in events:
        if isinstance(event, BookUpdate):
            names.append(f"{event.symbol} {'bbo' if event.channel == BBO else 'depth'}")
        else:
            names.append(type(event).__name__.lower())
    return names or ["empty"]


def _live_rows_sink(depth: int):
    from pipeline.feed.session import MemorySink
    from pipeline.model import RowStatus

    class LiveRows(MemorySink):
        """Rows in memory, and which of them were ever written LIVE."""

        def __init__(self, depth: int):
            super().__init__(depth)
            self.live_rows: set = set()

        def write(self, row, status, *args) -> None:
            super().write(row, status, *args)
            if status == RowStatus.LIVE:
                self.live_rows.add(row)
    return LiveRows(depth)


def info(path: str) -> dict:
    from pipeline.feed.session import FeedSession
    from pipeline.venues import VENUES, load_venue
    venues: dict[str, dict] = {}
    sessions: dict[str, tuple] = {}
    for file in recording_files(path):
        reader = RecordingReader(file)
        venue = reader.venue
        entry = venues.setdefault(venue, {"files": [], "frames": 0, "events": 0, "channels": {}, "first_ns": None,
                                          "last_ns": None, "incidents": [], "session": {}, "damage": []})
        entry["files"].append(file)
        known = venue in VENUES
        if known and venue not in sessions:
            journal: dict[str, int] = {}
            session = FeedSession(load_venue(venue), {}, 5, 1 << 62, _live_rows_sink(5), add_unknown=True,
                                  journal=lambda kind, now, fields, journal=journal: journal.__setitem__(
                                      kind, journal.get(kind, 0) + 1))
            sessions[venue] = (session, session.connection_opened([], 0), journal)
        for record in reader.records():
            entry["first_ns"] = record.recv_ns if entry["first_ns"] is None else min(entry["first_ns"], record.recv_ns)
            entry["last_ns"] = record.recv_ns if entry["last_ns"] is None else max(entry["last_ns"], record.recv_ns)
            if record.kind == EVENT:
                entry["events"] += 1
                event = record.event
                if event.get("kind") in INCIDENT_KINDS:
                    entry["incidents"].append({"time_ns": record.recv_ns, **event})
                continue
            entry["frames"] += 1
            if known:
                session, conn, _ = sessions[venue]
                for name in channel_of(session.venue, record.frame):
                    entry["channels"][name] = entry["channels"].get(name, 0) + 1
                session.receive(record.frame, record.recv_ns, conn)
                conn.reconnect_reason = ""
        if reader.damage is not None:
            entry["damage"].append(str(reader.damage))
    for venue, (session, _, _journal) in sessions.items():
        stats = session.stats
        venues[venue]["session"] = {"parse_errors": stats.get("parse_errors"), "gaps": stats.get("gaps"),
                                    "checksum_failures": stats.get("checksum_failures"),
                                    "resyncs": stats.get("resyncs"),
                                    "never_live": sorted(symbol for symbol, row in session.row_of.items()
                                                         if row not in session.sink.live_rows)}
    for entry in venues.values():
        span = ((entry["last_ns"] or 0) - (entry["first_ns"] or 0)) / 1e9
        entry["duration_s"] = round(span, 3)
        entry["frames_per_s"] = round(entry["frames"] / span, 1) if span > 0 else None
        entry["channels"] = dict(sorted(entry["channels"].items(), key=lambda kv: -kv[1]))
    return venues


def render_info(venues: dict) -> str:
    import datetime
    lines = []
    for venue, e in venues.items():
        start = (datetime.datetime.fromtimestamp(e["first_ns"] / 1e9, datetime.UTC).isoformat(
            timespec="seconds") if e["first_ns"] else "-")
        rate = f"{e['frames_per_s']:.1f}/s" if e["frames_per_s"] else "-"
        lines.append(f"{venue}: {e['frames']} frames, {e['events']} session events, {len(e['files'])} file(s), "
                     f"from {start} for {e['duration_s']:.1f} s ({rate})")
        s = e["session"]
        if s:
            lines.append(f"  through the session: {s['gaps']} gaps, {s['checksum_failures']} checksum failures, "
                         f"{s['resyncs']} resyncs, {s['parse_errors']} unusable frames")
            if s.get("never_live"):
                names = s["never_live"]
                more = f' and {len(names) - 10} more' if len(names) > 10 else ''
                lines.append(f"  never live: {', '.join(names[:10])}{more}"
                             f" (their books never became complete and current: no snapshot in the recording? a "
                             f"file rotated with keep_files starts mid-stream; a replay of them finds nothing)")
        for name, n in list(e["channels"].items())[:12]:
            lines.append(f"  {n:>9}  {name}")
        if len(e["channels"]) > 12:
            lines.append(f"  ... {len(e['channels']) - 12} more channels")
        if e["incidents"]:
            lines.append(f"  incidents recorded: {len(e['incidents'])}")
            for incident in e["incidents"][:20]:
                when = datetime.datetime.fromtimestamp(incident["time_ns"] / 1e9, datetime.UTC)
                detail = ", ".join(f"{k}={v}" for k, v in incident.items() if k not in ("time_ns", "kind"))
                lines.append(f"    {when.strftime('%H:%M:%S.%f')[:-3]}  {incident['kind']:<14} {detail}")
            if len(e["incidents"]) > 20:
                lines.append(f"    ... {len(e['incidents']) - 20} more")
        for damage in e["damage"]:
            lines.append(f"  damaged: {damage}")
    return "\n".join(lines)


# ---------------------------------------------------------------- import

def open_capture(path: str):
    """A capture file for reading in binary (:func:`pipeline.files.open_for_reading`: never through a symbolic
    link, only a regular file). Raises :class:`ImportRefused` naming the path, or OSError."""
    try:
        return open_for_reading(path)
    except NotARegularFile:
        raise ImportRefused(f"{path} is not a regular file: refusing to read it") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImportRefused(f"{path} is a symbolic link: refusing to follow it (import the file it names "
                                f"instead)") from None
        raise


def capture_lines(stream, path: str):
    """The lines of an open capture as text, each at most :data:`MAX_LINE_BYTES`; a longer one is damage at
    its byte offset (ValueError), never read whole."""
    offset = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(f"{path}: the line at byte {offset} is longer than {MAX_LINE_BYTES} bytes: "
                             f"not a capture, or damaged")
        offset += len(line)
        yield line.decode("utf-8", errors="replace")


class RecordingFileWriter:
    """Writes one recording file synchronously (for imports; the live feed uses the threaded Recorder)."""

    def __init__(self, path: str, venue: str, header: dict):
        self.path = path
        try:
            self.stream = open_for_writing(path, truncate=True)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ImportRefused(f"{path} is a symbolic link: refusing to write through it") from None
            raise
        self.stream.write(encode_header({"venue": venue, "compression": "zstd", **header}))
        self.pending: list = []
        self.count = 0
        self.redacted = 0           # records whose credentials were replaced

    def add(self, kind: int, recv_ns: int, conn: int, payload: bytes) -> None:
        self.pending.append((kind, recv_ns, conn, payload))
        self.count += 1
        if len(self.pending) >= CHUNK_RECORDS:
            self.flush()

    def add_frame(self, recv_ns: int, conn: int, frame) -> None:
        """A received frame, its credentials (an echoed request) replaced."""
        frame, redacted = redact_frame(frame)
        self.redacted += redacted
        self.add(BINARY if isinstance(frame, bytes) else TEXT, recv_ns, conn, frame)

    def flush(self) -> None:
        if self.pending:
            self.stream.write(encode_chunk(encode_records(self.pending)))
            self.pending = []

    def close(self) -> None:
        self.flush()
        self.stream.close()

    def abandon(self) -> None:
        """Close and remove a file whose import failed part way (nothing half-read is left behind)."""
        self.pending = []
        self.stream.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def import_cryptofeed(src: str, out_dir: str, exchange: str | None = None) -> tuple[str, int, int]:
    """(recording written, records, records whose credentials were replaced)."""
    name = os.path.basename(src)
    venue = exchange or CRYPTOFEED_NAMES.get(name.split(".")[0].upper())
    if venue is None:
        raise ValueError(f"{src}: cannot tell the exchange from the file name; give --exchange")
    out = os.path.join(out_dir, f"{venue}-import-{name}{SUFFIX}")
    with open_capture(src) as stream:     # refused (a link, not a file) before the recording is created
        return _import_cryptofeed(stream, src, RecordingFileWriter(
            out, venue, {"source": name, "imported_from": "cryptofeed", "pid": name}))


def _import_cryptofeed(stream, src: str, writer: RecordingFileWriter) -> tuple[str, int, int]:
    conn = 0
    last_ns = 0
    try:
        for line in capture_lines(stream, src):
            kind, frame, when = split_line(line)
            text = line.rstrip("\r\n")
            if kind == "connection":
                conn += 1
                try:
                    last_ns = int(float(text.split(" <-> ", 1)[1].strip()) * 1e9)
                except (IndexError, ValueError):
                    pass
                url, redacted = redact_url(text.split(" ", 1)[0])
                writer.redacted += redacted
                writer.add(EVENT, last_ns, conn, orjson.dumps({"kind": "connect", "conn": conn, "url": url}))
            elif kind == "sent":
                stamp, _, payload = text.split(" <- ", 1)[1].partition(": ")
                try:
                    last_ns = int(float(stamp) * 1e9)
                except ValueError:
                    pass
                payload, redacted = redact_text(payload)
                writer.redacted += redacted
                writer.add(EVENT, last_ns, conn, orjson.dumps({"kind": "sent", "conn": conn, "frame": payload}))
            elif kind == "frame":
                if when is not None:
                    last_ns = int(when * 1e9)
                writer.add_frame(last_ns, conn, frame)
    except BaseException:
        writer.abandon()
        raise
    writer.close()
    return writer.path, writer.count, writer.redacted


def import_jsonl(src: str, out_dir: str, exchange: str, start_ns: int) -> tuple[str, int, int]:
    """(recording written, records, records whose credentials were replaced)."""
    name = os.path.basename(src)
    out = os.path.join(out_dir, f"{exchange}-import-{name}{SUFFIX}")
    with open_capture(src) as stream:     # refused (a link, not a file) before the recording is created
        writer = RecordingFileWriter(out, exchange, {"source": name, "imported_from": "jsonl", "pid": name})
        return _import_jsonl(stream, src, writer, start_ns)


def _import_jsonl(stream, src: str, writer: RecordingFileWriter, start_ns: int) -> tuple[str, int, int]:
    n = 0
    try:
        for line in capture_lines(stream, src):
            kind, frame, _ = split_line(line)
            if kind != "frame":
                continue
            writer.add_frame(start_ns + n * 1_000_000, 1, frame)
            n += 1
    except BaseException:
        writer.abandon()
        raise
    writer.close()
    return writer.path, writer.count, writer.redacted


# ---------------------------------------------------------------- command line

def parser() -> argparse.ArgumentParser:
    from pipeline.venues import VENUES
    p = argparse.ArgumentParser(prog="run.py recording", description="Inspect recordings and import captures.")
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("info", help="frames per venue and channel, span, rate, gaps, resyncs, incidents")
    i.add_argument("path", help="a recording file or a directory of them")
    i.add_argument("--json", action="store_true", help="one JSON object instead of text")
    m = sub.add_parser("import", help="convert captures into recordings")
    m.add_argument("--format", required=True, choices=("cryptofeed", "jsonl"))
    m.add_argument("--exchange", choices=VENUES, help="the venue (required for jsonl)")
    m.add_argument("--start", type=float, default=1_600_000_000.0,
                   help="jsonl: Unix time of the first frame (default 1600000000); frames are 1 ms apart")
    m.add_argument("--out", required=True, help="directory for the recordings")
    m.add_argument("files", nargs="+")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "info":
        if not os.path.exists(args.path):
            sys.stderr.write(f"run.py recording info: {args.path}: no such file or directory\n")
            return 2
        try:
            venues = info(args.path)
        except RecordingError as exc:
            sys.stderr.write(f"run.py recording info: {exc}\n")
            return 2
        if args.json:
            sys.stdout.write(orjson.dumps(venues, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            sys.stdout.write((render_info(venues) or f"{args.path}: no recordings") + "\n")
        return 0
    if args.format == "jsonl" and not args.exchange:
        sys.stderr.write("run.py recording import: --exchange is required with --format jsonl\n")
        return 2
    if os.path.islink(args.out):
        sys.stderr.write(f"run.py recording import: --out {args.out} is a symbolic link: refusing to write "
                         f"through it (name the directory itself)\n")
        return 2
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        sys.stderr.write(f"run.py recording import: --out {args.out}: {exc.strerror or exc}\n")
        return 2
    status = 0
    for src in args.files:
        try:
            if args.format == "cryptofeed":
                out, count, redacted = import_cryptofeed(src, args.out, args.exchange)
            else:
                out, count, redacted = import_jsonl(src, args.out, args.exchange, int(args.start * 1e9))
        except ImportRefused as exc:
            sys.stderr.write(f"run.py recording import: {exc}\n")
            status = 2
            continue
        except OSError as exc:           # named by path, never by content
            sys.stderr.write(f"run.py recording import: {exc.filename or src}: {exc.strerror or exc}\n")
            status = 2
            continue
        except ValueError as exc:
            sys.stderr.write(f"run.py recording import: {exc}\n")
            status = 2
            continue
        sys.stdout.write(f"{src} -> {out} ({count} records)\n")
        if redacted:
            sys.stderr.write(f"run.py recording import: {src}: credentials replaced by <redacted> in {redacted} "
                             f"record(s) (a login or signed request the client sent, a request the exchange "
                             f"echoed, a token in a URL)\n")
        warning = unusable_warning(out)
        if warning:
            sys.stderr.write(f"run.py recording import: {src}: {warning}\n")
    return status


def unusable_warning(path: str) -> str | None:
    """What ``recording info`` would find wrong with a file just imported, said at once: frames the venue's
    parser cannot read (an older API version, another venue's capture) make a recording that replays nothing."""
    for venue, entry in info(path).items():
        frames, unusable = entry["frames"], entry["session"].get("parse_errors", 0)
        if frames and unusable * 2 >= frames:
            return (f"{unusable} of {frames} frames are unusable to the {venue} parser (an older API version, or "
                    f"not {venue}'s?): a replay of it finds little or nothing; see run.py recording info {path}")
    return None
