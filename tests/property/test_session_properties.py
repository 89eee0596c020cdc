"""Property tests of the feed session: any input, any interleaving, the rows it writes stay trustworthy."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.board.layout import RowStatus
from pipeline.feed.session import FeedSession, MemorySink
from pipeline.venues import VENUES, load_venue
from tests.conftest import FIXTURES

# real frames of each venue (book channels and control frames), as the wire gave them
FRAMES = {}
for venue in VENUES:
    lines = []
    for path in sorted((FIXTURES / venue).glob("*.jsonl")):
        lines += [line for line in path.read_text().splitlines() if line.strip()][:40]
    FRAMES[venue] = lines
CAPTURED = [venue for venue in VENUES if FRAMES[venue]]     # a venue folder without captures has nothing to mix

LIVE = int(RowStatus.LIVE)


def new_session(venue: str):
    sink = MemorySink(5)
    session = FeedSession(load_venue(venue), {}, 5, 10**9, sink, add_unknown=True)
    return session, sink, session.connection_opened([], 0)


@pytest.mark.parametrize("venue", CAPTURED)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mix_of_real_and_garbage_frames_never_raises_and_live_rows_are_uncrossed(venue, data):
    session, sink, conn = new_session(venue)
    frames = data.draw(st.lists(st.one_of(st.sampled_from(FRAMES[venue]), st.text(max_size=200),
                                          st.binary(max_size=200)), max_size=40))
    for n, raw in enumerate(frames):
        session.receive(raw, n * 1_000_000, conn)
        conn.reconnect_reason = ""
    for row in sink.rows.values():
        if row.status == LIVE:
            assert row.bids and row.asks and row.bids[0][0] < row.asks[0][0]
            assert all(a[0] > b[0] for a, b in zip(row.bids, row.bids[1:]))
            assert all(a[0] < b[0] for a, b in zip(row.asks, row.asks[1:]))
    assert session.stats.get("messages") == len(frames)


@pytest.mark.parametrize("venue", CAPTURED)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_after_a_lost_connection_no_row_is_live_until_the_exchange_sends_again(venue, data):
    session, sink, conn = new_session(venue)
    frames = data.draw(st.lists(st.sampled_from(FRAMES[venue]), min_size=1, max_size=30))
    for n, raw in enumerate(frames):
        session.receive(raw, n, conn)
    session.connection_lost(conn, 10**6, "test")
    assert all(row.status != LIVE for row in sink.rows.values())
    assert session.tick(10**12) == []            # nothing live left to go stale
