"""``run.py decode``: captured frames through the feed's own parser and book code.

Input, one frame per line, exactly as received on the wire: a plain JSON
text (including wrappers such as Binance's combined-stream
``{"stream":…,"data":…}``), the cryptofeed capture format ``TIMESTAMP: PAYLOAD``
(lines the client sent, ``URL <- …``, and connection lines, ``URL <-> …``, are
skipped), or for HTX the decompressed JSON or a Python bytes literal of the
gzip frame. Output: one JSON object per book change. A line that cannot be
used is reported on stderr with its number; decoding never stops on it.
"""
from __future__ import annotations

import ast
import re

import orjson

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import BookUpdate
from pipeline.venues import load_venue

CAPTURE_LINE = re.compile(r"^(\d+(?:\.\d+)?): (.*)$", re.S)
SENT_OR_OPEN = re.compile(r"^\S+ <-(>)? ")


def frame_of(line: str):
    """The raw frame of one capture line, or None for lines that are not received frames."""
    line = line.rstrip("\r\n")
    if not line.strip() or SENT_OR_OPEN.match(line):
        return None
    match = CAPTURE_LINE.match(line)
    payload = match.group(2) if match else line
    if payload[:2] in ("b'", 'b"'):
        try:
            return ast.literal_eval(payload)
        except (ValueError, SyntaxError):
            return payload
    return payload


def book_record(exchange: str, book: InstrumentBook, depth: int) -> dict:
    bids, asks = book.compose()
    bids, asks = bids[:depth], asks[:depth]
    return {
        "exchange": exchange,
        "symbol": book.symbol,
        "bid_price": bids[0][0] if bids else None,
        "bid_qty": bids[0][1] if bids else None,
        "ask_price": asks[0][0] if asks else None,
        "ask_qty": asks[0][1] if asks else None,
        "exchange_ts_ms": book.exch_ts_ms or None,
        "bids": [list(level) for level in bids] if book.uses_depth else None,
        "asks": [list(level) for level in asks] if book.uses_depth else None,
        "state": book.state.name.lower(),
    }


def decode_stream(exchange: str, lines, out, err, depth: int = 5) -> int:
    venue = load_venue(exchange)
    books: dict[str, InstrumentBook] = {}
    bad = 0
    for number, line in enumerate(lines, 1):
        raw = frame_of(line)
        if raw is None:
            continue
        try:
            events = venue.parse(raw, 0)
        except ParseError as exc:
            bad += 1
            err.write(f"line {number}: {exc}\n")
            continue
        for event in events:
            if not isinstance(event, BookUpdate):
                continue
            book = books.get(event.symbol)
            if book is None:
                book = books[event.symbol] = InstrumentBook(
                    event.symbol, max(depth, 1), venue.BOOK_LEVELS, venue.CHECKSUM, venue.CHECKSUM_LEVELS or 10)
            outcome = book.apply(event)
            if outcome in (Outcome.GAP, Outcome.CHECKSUM, Outcome.BAD_NUMBER):
                err.write(f"line {number}: {event.symbol}: {outcome.name.lower()}, book discarded\n")
            if outcome not in (Outcome.IGNORED, Outcome.UNCHANGED):
                out.write(orjson.dumps(book_record(exchange, book, depth)).decode() + "\n")
    out.flush()
    return 0


def parser():
    import argparse
    from pipeline.venues import VENUES
    p = argparse.ArgumentParser(
        prog="run.py decode", description="Decode raw WebSocket frames (one per line) through the feed's parser "
                                          "and book code; print one JSON object per book change.")
    p.add_argument("--exchange", required=True, choices=VENUES)
    p.add_argument("--depth", type=int, default=5, help="levels to print per side (default 5)")
    p.add_argument("file", nargs="?", default="-", help="capture file, or - for standard input")
    return p


def main(argv: list[str]) -> int:
    import sys
    args = parser().parse_args(argv)
    if args.file == "-":
        return decode_stream(args.exchange, sys.stdin, sys.stdout, sys.stderr, args.depth)
    try:
        with open(args.file, "r", encoding="utf-8", errors="replace") as stream:
            return decode_stream(args.exchange, stream, sys.stdout, sys.stderr, args.depth)
    except OSError as exc:
        sys.stderr.write(f"run.py decode: cannot read {args.file}: {exc.strerror}\n")
        return 2
