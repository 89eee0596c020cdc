"""``run.py decode``: captured frames through the feed's own session, one record per line.

Input, one frame per line, exactly as received on the wire: a plain JSON
text (including wrappers such as Binance's combined-stream
``{"stream":…,"data":…}``), the cryptofeed capture format ``TIMESTAMP: PAYLOAD``
(lines the client sent, ``URL <- …``, and connection lines, ``URL <-> …``,
are not received frames), or for HTX the decompressed JSON or a Python bytes
literal of the gzip frame.

Output: exactly one JSON object per input line, in order::

    {"line": 7, "did": "changed", "symbol": "BTCUSDT", "detail": "",
     "events": [["changed", "BTCUSDT", ""]],
     "row": {"state": "live", "bid_price": …, "bid_qty": …, "ask_price": …, "ask_qty": …,
             "exchange_ts_ms": …, "bids": [[p, q], …], "asks": [[p, q], …]}}

``did`` is what the line did: ``changed`` (a row changed), ``unchanged``,
``ignored`` (already applied, not subscribed, before a snapshot),
``gap``/``checksum``/``bad_number`` (the book was discarded and the row is
resyncing), ``resubscribe`` (the pair's precision changed), ``status`` (a
trading status or reference data: halted, resumed, precisions), ``rejected``,
``control`` (acks, pings, heartbeats, liveness), ``unusable``
(the frame could not be parsed; also reported on stderr with its number),
``sent`` or ``connection`` (a capture line that is not a received frame),
``empty``. When a frame touches several symbols, ``events`` lists each
outcome and ``did`` is the most important one; ``row`` is the row of the
last symbol it touched, as it stands after the line (``null`` before any).

``detail`` says what a book update did where the outcome alone does not
(the book's ``note``, :mod:`pipeline.book` "Alignment"): on a venue whose
snapshot is aligned with its delta stream (HTX ``mbp.5`` and its ``req``
answer) a capture may hold deltas before the snapshot, and each step shows::

    {"line": 1, "did": "ignored", "detail": "cached delta 109409288130 (prev 109409288078): 1 waiting ..."}
    {"line": 3, "did": "changed", "detail": "aligned snapshot 109409288078 with delta 109409288130
                                             (prev 109409288078): dropped 0 older, applied 2"}

and likewise ``dropped older delta``, a snapshot ``waiting for the delta
after`` its number, one that ``meets no delta`` (``resubscribe``), a
``cache overflow`` and a ``gap`` whose delta is ``cached for the next
snapshot``.

The session is the one the feed process runs (:mod:`pipeline.feed.session`)
over an in-memory row sink: no second copy of the feed's logic.
"""
from __future__ import annotations

import ast
import re

import orjson

from pipeline.feed.session import FeedSession, MemorySink
from pipeline.model import RowStatus
from pipeline.venues import load_venue

CAPTURE_LINE = re.compile(r"^(\d+(?:\.\d+)?): (.*)$", re.S)
SENT_OR_OPEN = re.compile(r"^\S+ <-(>)? ")
# the outcome that names a line when a frame did several things, most important first
PRIORITY = ("gap", "checksum", "bad_number", "resubscribe", "rejected", "unusable", "changed", "status", "unchanged",
            "ignored", "control")


def split_line(line: str) -> tuple[str, object, float | None]:
    """(kind, frame, capture time in seconds) of one capture line; kind is frame, sent, connection or empty."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return "empty", None, None
    sent = SENT_OR_OPEN.match(line)
    if sent:
        return ("connection" if sent.group(1) else "sent"), None, None
    match = CAPTURE_LINE.match(line)
    payload = match.group(2) if match else line
    when = float(match.group(1)) if match else None
    if payload[:2] in ("b'", 'b"'):
        try:
            return "frame", ast.literal_eval(payload), when
        except (ValueError, SyntaxError):
            return "frame", payload, when
    return "frame", payload, when


def frame_of(line: str):
    """The raw frame of one capture line, or None for lines that are not received frames."""
    kind, frame, _ = split_line(line)
    return frame if kind == "frame" else None


def row_record(session: FeedSession, sink: MemorySink, symbol: str) -> dict | None:
    row = session.row_of.get(symbol)
    if row is None:
        return None
    r = sink.row(row)
    book = session.books[symbol]
    bids, asks = r.bids, r.asks
    return {
        "state": RowStatus(r.status).name.lower(),
        "bid_price": bids[0][0] if bids else None,
        "bid_qty": bids[0][1] if bids else None,
        "ask_price": asks[0][0] if asks else None,
        "ask_qty": asks[0][1] if asks else None,
        "exchange_ts_ms": (r.exch_ts_ns // 1_000_000) or None,
        "bids": [list(level) for level in bids] if book.uses_depth else None,
        "asks": [list(level) for level in asks] if book.uses_depth else None,
    }


def inferred_reference(venue):
    """For captures with no reference data (Kraken without its ``instrument`` messages): the pair's
    precisions inferred from the first snapshot's numbers (inferred, not documented: it can only err low,
    and then the checksum fails visibly)."""
    infer = venue.infer_precision
    if infer is None:
        return None
    from pipeline.model import InstrumentSpec

    def reference(update):
        if not update.snapshot or update.bids_text is None or update.asks_text is None:
            return None
        try:
            price_dp, qty_dp = infer(update.bids_text, update.asks_text)
        except ValueError:
            return None
        return InstrumentSpec(update.symbol, price_dp, qty_dp)
    return reference


def decode_stream(exchange: str, lines, out, err, depth: int = 5, infer_precision: bool = False) -> int:
    venue = load_venue(exchange)
    sink = MemorySink(max(depth, 1))
    session = FeedSession(venue, {}, max(depth, 1), staleness_ns=1 << 62, sink=sink, add_unknown=True)
    if infer_precision:
        session.infer_reference = inferred_reference(venue)
    session.trace = trace = []
    conn = session.connection_opened([], 0)
    last_symbol = ""
    for number, line in enumerate(lines, 1):
        kind, raw, when = split_line(line)
        record = {"line": number, "exchange": exchange}
        if kind != "frame":
            record.update(did=kind, symbol=None, detail="", events=[])
        else:
            trace.clear()
            session.receive(raw, int(when * 1e9) if when is not None else 0, conn)
            events = [list(e) for e in trace]
            did = min((e[0] for e in events), key=lambda k: PRIORITY.index(k) if k in PRIORITY else 99,
                      default="control")
            main = next((e for e in events if e[0] == did), ["", "", ""])
            for event in events:
                if event[1] and event[1] in session.row_of:
                    last_symbol = event[1]
            record.update(did=did, symbol=main[1] or None, detail=main[2], events=events)
            if did == "unusable":
                err.write(f"line {number}: {main[2]}\n")
            elif did in ("gap", "checksum", "bad_number"):
                err.write(f"line {number}: {main[1] or exchange}: {did}, book discarded\n")
        record["row"] = row_record(session, sink, last_symbol) if last_symbol else None
        out.write(orjson.dumps(record).decode() + "\n")
    out.flush()
    return 0


def parser():
    import argparse

    from pipeline.venues import VENUES
    p = argparse.ArgumentParser(
        prog="run.py decode", description="Decode raw WebSocket frames (one per line) through the feed's own "
                                          "session; print one JSON object per input line.")
    p.add_argument("--exchange", required=True, choices=VENUES)
    p.add_argument("--depth", type=int, default=5, help="levels to print per side (default 5)")
    p.add_argument("--infer-precision", action="store_true",
                   help="kraken: captures without instrument messages get each pair's precisions from its first "
                        "snapshot (inferred; a wrong guess shows as checksum failures)")
    p.add_argument("file", nargs="?", default="-", help="capture file, or - for standard input")
    return p


def main(argv: list[str]) -> int:
    import sys
    args = parser().parse_args(argv)
    if not 1 <= args.depth <= 50:
        parser().error("--depth must be 1..50")
    try:
        if args.file == "-":
            return decode_stream(args.exchange, sys.stdin, sys.stdout, sys.stderr, args.depth, args.infer_precision)
        with open(args.file, encoding="utf-8", errors="replace") as stream:
            return decode_stream(args.exchange, stream, sys.stdout, sys.stderr, args.depth, args.infer_precision)
    except BrokenPipeError:                     # the reader went away (| head): not an error of ours
        sys.stderr.close()
        return 0
    except OSError as exc:
        sys.stderr.write(f"run.py decode: cannot read {args.file}: {exc.strerror}\n")
        return 2
