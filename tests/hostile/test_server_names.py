"""Whatever names a server sends, a session keeps state only for the pairs it follows."""
from __future__ import annotations

import orjson

from pipeline.feed.session import FeedSession, MemorySink
from pipeline.venues import load_venue


def test_reference_data_for_pairs_we_do_not_follow_is_kept_nowhere():
    session = FeedSession(load_venue("kraken"), {"BTC/USD": 0}, 5, 5_000_000_000, MemorySink(5))
    conn = session.connection_opened(["BTC/USD"], 0)
    pairs = [{"symbol": f"Z{n:05d}/USD", "base": f"Z{n:05d}", "quote": "USD", "status": "online",
              "qty_precision": 8, "price_precision": 1} for n in range(20_000)]
    pairs.append({"symbol": "BTC/USD", "base": "BTC", "quote": "USD", "status": "online", "qty_precision": 8,
                  "price_precision": 1})
    session.receive(orjson.dumps({"channel": "instrument", "type": "snapshot",
                                  "data": {"assets": [], "pairs": pairs}}).decode(), 1, conn)
    assert list(session.reference) == ["BTC/USD"]       # 20 000 names a server made up cost nothing
