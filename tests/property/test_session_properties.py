"""Property tests of the feed session: any input, any interleaving, the rows it writes stay trustworthy."""
from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeline.model import RowStatus
from pipeline.venues import VENUES
from tests.conftest import FIXTURES, examples, session_for

# real frames of each venue (book channels and control frames), as the wire gave them: per capture, in order
CAPTURES: dict[str, list[list[str]]] = {}
for venue in VENUES:
    CAPTURES[venue] = [lines for path in sorted((FIXTURES / venue).glob("*.jsonl"))
                       if (lines := [line for line in path.read_text().splitlines() if line.strip()][:40])]
FRAMES = {venue: [line for lines in CAPTURES[venue] for line in lines] for venue in VENUES}
CAPTURED = [venue for venue in VENUES if FRAMES[venue]]     # a venue folder without captures has nothing to mix

LIVE = int(RowStatus.LIVE)


def new_session(venue: str):
    session, sink, conn, _ = session_for(venue, [], add_unknown=True)
    return session, sink, conn


def makes_a_row_live(venue: str, lines: list[str]) -> bool:
    session, sink, conn = new_session(venue)
    for n, raw in enumerate(lines):
        session.receive(raw, n * 1_000_000, conn)
        conn.reconnect_reason = ""
    return any(row.status == LIVE for row in sink.rows.values())


# the captures that make a row live when replayed in order (book channels, not control frames)
BOOK_CAPTURES = {venue: [lines for lines in CAPTURES[venue] if makes_a_row_live(venue, lines)] for venue in VENUES}


garbage = st.one_of(st.text(max_size=200), st.binary(max_size=200))


@functools.cache
def book_captures(venue: str):
    """One book capture of the venue (any capture if none makes a row live), built once."""
    return st.sampled_from(BOOK_CAPTURES[venue] or CAPTURES[venue])


@functools.cache
def starts(n: int):
    """Where a run of a capture of ``n`` frames starts: at the snapshot one time in two (built once per n)."""
    return st.one_of(st.just(0), st.integers(0, n - 1))


@st.composite
def capture_runs(draw, venue: str) -> list:
    """A run of one book capture in its own order (from its start one time in two: the snapshot, then
    updates), with garbage frames slipped in: the frames that make a row live, and then test it."""
    lines = draw(book_captures(venue))
    start = draw(starts(len(lines)))
    run = lines[start:start + draw(st.integers(1, 40))]
    for _ in range(draw(st.integers(0, 5))):
        run.insert(draw(st.integers(0, len(run))), draw(garbage))
    return run


@functools.cache
def mixed_frames(venue: str):
    """Real frames and garbage in any order, or one of two runs of a book capture (built once per venue; the
    two ``capture_runs`` are distinct objects, so ``one_of`` keeps both branches: a run two times in three)."""
    return st.one_of(st.lists(st.one_of(st.sampled_from(FRAMES[venue]), garbage), max_size=40),
                     capture_runs(venue), capture_runs(venue))


@functools.cache
def frames_before_a_loss(venue: str):
    """Real frames in any order, or a run of a book capture (built once per venue)."""
    return st.one_of(st.lists(st.sampled_from(FRAMES[venue]), min_size=1, max_size=30), capture_runs(venue))


@pytest.mark.parametrize("venue", CAPTURED)
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mix_of_real_and_garbage_frames_never_raises_and_live_rows_are_uncrossed(venue, data):
    session, sink, conn = new_session(venue)
    frames = data.draw(mixed_frames(venue))
    for n, raw in enumerate(frames):
        session.receive(raw, n * 1_000_000, conn)
        conn.reconnect_reason = ""
    event("a row live at the end" if any(row.status == LIVE for row in sink.rows.values()) else "no row live")
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
    frames = data.draw(frames_before_a_loss(venue))
    for n, raw in enumerate(frames):
        session.receive(raw, n, conn)
    event("rows live before the loss" if any(row.status == LIVE for row in sink.rows.values()) else "none live")
    session.connection_lost(conn, 10**6, "test")
    assert all(row.status != LIVE for row in sink.rows.values())
    assert session.tick(10**12) == []            # nothing live left to go stale
