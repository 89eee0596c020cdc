"""A full-depth book has a bound: a server adding levels without end costs a resync, not the feed's memory.

Coinbase's level2 book is the whole book (the deepest side in our captures: 16 399 levels, ETH-USD asks).
Each new level was kept, at an O(n) insert each, however many came. A side past ``MAX_BOOK_LEVELS`` is now
a counted bad number: the book is discarded and asked for again.
"""
from __future__ import annotations

import orjson

from pipeline.book import MAX_BOOK_LEVELS
from pipeline.feed.session import FeedSession, MemorySink
from pipeline.model import RowStatus, SkipReason
from pipeline.venues import load_venue


def l2(seq: int, kind: str, updates: list) -> str:
    return orjson.dumps({"channel": "l2_data", "timestamp": "2026-08-09T21:05:48.629702747Z", "sequence_num": seq,
                         "events": [{"type": kind, "product_id": "ETH-USD", "updates": updates}]}).decode()


def level(side: str, price: float, qty: str = "1") -> dict:
    return {"side": side, "event_time": "2026-08-09T21:05:48.559352Z", "price_level": f"{price:.2f}",
            "new_quantity": qty}


def test_a_side_past_the_bound_is_a_counted_bad_number_and_the_book_is_asked_for_again():
    sink = MemorySink(5)
    session = FeedSession(load_venue("coinbase"), {"ETH-USD": 0}, 5, 5_000_000_000, sink)
    conn = session.connection_opened(["ETH-USD"], 0)
    session.receive(l2(0, "snapshot", [level("bid", 1000.0), level("offer", 1000.5)]), 1, conn)
    assert sink.row(0).status == RowStatus.LIVE
    far = [level("offer", 2000.0 + n * 0.01) for n in range(MAX_BOOK_LEVELS)]   # far from the top, endless
    replies = session.receive(l2(1, "update", far), 2, conn)
    assert session.stats.skipped(SkipReason.BAD_NUMBER) == 1
    assert sink.row(0).status != RowStatus.LIVE
    assert replies                                        # the book is asked for again
    assert len(session.books["ETH-USD"].book.asks.levels) == 0
