"""A feed's memory does not grow with the frames it reads (issue 24, finding 12).

At the end of a 20-minute soak the Kraken feed held 56.7 MB RSS against 36 MB for every other feed (61.5 in a
later one). Its book checksum formats every number of the top 10 levels to the pair's precision, and kept what
it had formatted in an ``lru_cache`` of 65 536 numbers: about 190 bytes a number, so 12 MB traced and 21 MB of
RSS once full, filled within minutes as prices and quantities wander.
Now :data:`pipeline.venues.kraken.wire.DIGITS_CACHE_SIZE` numbers at most (emptied when full, counted in
``wire.DIGITS.clears``), and the Kraken feed's RSS is within 1 MB of Bybit's on the same run.

The session here is the real one (:class:`~pipeline.feed.session.FeedSession` with the Kraken record) reading
frames the simulator's Kraken protocol renders, ``shortest_numbers`` on (exponent forms, dust quantities), a
book whose quantities change on every frame (a new number each time) and whose prices move a tick now and
then. Memory is traced (``tracemalloc``) only after a warm-up, over N and then 2N frames.
"""
from __future__ import annotations

import gc
import random
import tracemalloc

from pipeline.model import RowStatus
from pipeline.venues import load_protocol, load_venue
from pipeline.venues.kraken import wire
from tests.conftest import session_for

SYMBOLS = ("ETH/USD", "BTC/USD")
LEVELS = 10
WARM_UP = 5_000
N = 5_000
# what the session may hold after the warm-up, whatever it has read: a full digits cache is about 0.7 MB (4096
# numbers at ~170 bytes). Here it holds 0.05 MB after N frames and 0.06 MB after 2N; the old cache held 1.2 MB
# after N and 2.4 MB after 2N (~240 bytes a frame, without end until its 65 536 numbers).
BOUND = 1_000_000
T0 = 1_790_000_000_000


class Walk:
    """Kraken frames from the simulator: each step one level's quantity changes to a new number on every book,
    and one step in twenty the whole book moves a tick."""

    def __init__(self, seed: int = 5):
        self.venue = load_venue("kraken")
        self.proto = load_protocol("kraken")({s: 2 for s in SYMBOLS})
        self.proto.known_symbols = set(SYMBOLS)
        self.proto.quirks.shortest_numbers = True
        self.rng = random.Random(seed)
        self.books = {s: [320_000 * (i + 1), [self._qty() for _ in range(2 * LEVELS)]]
                      for i, s in enumerate(SYMBOLS)}
        self.ts = T0

    def _qty(self) -> float:
        return round(self.rng.uniform(0.001, 40.0), 8)

    def frames(self, n: int) -> list[tuple[str, int]]:
        """The next ``n`` or so frames, with the time each is received (ns)."""
        out = []
        while len(out) < n:
            self.ts += 10
            for symbol, book in self.books.items():
                if self.rng.random() < 0.05:
                    book[0] += self.rng.choice((-1, 1))
                else:
                    book[1][self.rng.randrange(2 * LEVELS)] = self._qty()
                mid, qty = book
                bids = [((mid - 1 - i) / 100, qty[i]) for i in range(LEVELS)]
                asks = [((mid + 1 + i) / 100, qty[LEVELS + i]) for i in range(LEVELS)]
                for key in [k for k in self.proto.subscriptions if k[0] == symbol]:
                    out.extend((frame, self.ts * 1_000_000) for frame in self.proto.render(*key, bids, asks, self.ts))
        return out


def _session(walk: Walk):
    session, _, conn, _ = session_for(walk.venue, list(SYMBOLS), staleness_ms=1e9, depth=10, journal=False)

    def feed(frames) -> None:
        for frame, recv_ns in frames:
            for reply in session.receive(frame, recv_ns, conn):      # a resubscribe: answered by the simulator
                feed((answer, recv_ns) for answer in walk.proto.on_message(reply))

    feed((frame, 0) for frame in walk.proto.on_connect())
    for request in session.subscribe_frames(conn):
        feed((frame, 0) for frame in walk.proto.on_message(request))
    return session, feed


def _traced(feed, frames) -> int:
    feed(frames)
    frames.clear()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_a_kraken_session_holds_a_bounded_memory_whatever_numbers_it_reads():
    walk = Walk()
    session, feed = _session(walk)
    warm, first, second = walk.frames(WARM_UP), walk.frames(N), walk.frames(N)   # rendered before tracing
    clears = wire.DIGITS.clears
    feed(warm)
    tracemalloc.start()
    try:
        after_n = _traced(feed, first)
        after_2n = _traced(feed, second)
    finally:
        tracemalloc.stop()
    assert all(book.state == RowStatus.LIVE for book in session.books.values())
    assert session.stats.get("checksum_failures") == 0 and session.stats.get("parse_errors") == 0
    assert session.stats.get("messages") > WARM_UP + 2 * N
    assert after_n < BOUND and after_2n < BOUND, (after_n, after_2n)
    assert after_2n - after_n < BOUND // 2, (after_n, after_2n)       # no growth with the frames read
    assert wire.DIGITS.size <= wire.DIGITS_CACHE_SIZE
    assert wire.DIGITS.clears > clears                                 # the bound was reached, and held
