"""The benchmark's load generator: its frames are what the real parsers and the feed session take.

Every venue's prerendered frames, played the way a connection gets them (the
answers to the feed's own subscribe frames, the prologue, then the body loop
pass after pass with the counters moved on), go through a FeedSession with a
MemorySink: no gap, resync, checksum failure or parse error, every row LIVE,
and each row holds exactly the top levels of the book of the step just sent,
in the third pass as in the first. Then the same over real sockets.
"""
from __future__ import annotations

import asyncio
import gzip
import threading
import zlib

import pytest

from bench.loadgen import (
    COUNTER,
    STAMP_MS,
    LoadGenerator,
    Stamper,
    Template,
    VenueScript,
    build_scripts,
    gzip_stored,
    instruments_of,
    ladder_books,
    market_books,
    message,
    render_venue,
    stamps_at,
    template,
)
from pipeline.model import BookUpdate, Pong, RowStatus
from pipeline.sim.protocol import _changes
from pipeline.venues import VENUES, load_protocol, load_venue, venues_with
from tests.conftest import session_for as shared_session_for

DEPTH = 5
SEND_NS = 1_800_000_000_123_456_789          # the "send time" the tests stamp frames with
VENUE_INSTRUMENTS = {v: instruments_of(v) for v in VENUES}


@pytest.fixture(scope="module", params=["ladder", "sim"])
def market(request):
    make = ladder_books if request.param == "ladder" else market_books
    return make(VENUE_INSTRUMENTS, 24, seed=5, dislocation_every=12, dislocation_steps=3)


def session_for(script):
    venue = load_venue(script.name)
    session, sink, conn, _ = shared_session_for(venue, list(script.symbols.values()), staleness_ms=1e9, depth=DEPTH)
    return venue, session, sink, conn


def control_answers(script, venue, frames_sent: int = 0) -> list:
    """What a live connection answers the feed's handshake and subscribe frames (acks, Kraken's status, HTX's
    snapshot requests) when it was sent ``frames_sent`` body frames, as the load generator's server does."""
    proto = script.control_protocol()
    proto.path = script.path
    out = list(proto.on_connect())
    for frame in venue.build_subscribe(list(script.symbols.values()), DEPTH):
        out += script.answer(proto, frame, frames_sent, stamps_at(SEND_NS))
    assert script.subscriptions <= set(proto.subscriptions)
    return out


def top(book) -> tuple[list, list]:
    return list(book[0][:DEPTH]), list(book[1][:DEPTH])


@pytest.mark.parametrize("name", VENUES)
def test_frames_pass_after_pass_rebuild_exactly_the_rendered_books(market, name):
    books, decimals = market
    script = render_venue(name, books, decimals, VENUE_INSTRUMENTS[name], DEPTH)
    venue, session, sink, conn = session_for(script)
    stamps = stamps_at(SEND_NS)
    recv = SEND_NS

    def feed(raw):
        nonlocal recv
        recv += 1000
        assert session.receive(raw, recv, conn) == []

    for raw in control_answers(script, venue):
        feed(raw)
    for t in script.prologue:
        feed(message(t, 0, stamps))
    instruments = list(script.symbols)
    for row, instrument in enumerate(instruments):
        if venue.aligned_snapshots and sink.row(row).status != RowStatus.LIVE:
            continue                    # a snapshot aligned with the deltas may wait for the next one (book, A3)
        assert sink.row(row).status == RowStatus.LIVE
        assert (sink.row(row).bids, sink.row(row).asks) == top(books[0][(name, instrument)])
    steps = len(script.body)
    for k in range(3):
        for j, step in enumerate(script.body):
            for t in step:
                feed(message(t, k, stamps))
            if j in (4, steps - 1):                  # mid-loop, and the loop's end (the book of step 0 again)
                book_of = books[(j + 1) % steps]
                for row, instrument in enumerate(instruments):
                    assert sink.row(row).status == RowStatus.LIVE, (k, j, instrument)
                    assert (sink.row(row).bids, sink.row(row).asks) == top(book_of[(name, instrument)]), (k, j)
    for counter in ("gaps", "resyncs", "parse_errors", "checksum_failures", "resyncs_deferred"):
        assert session.stats.get(counter) == 0, counter
    assert conn.reconnect_reason == ""
    if venue.exchange_time:                           # (Binance's partial depth and bookTicker carry no time)
        assert sink.row(0).exch_ts_ns == SEND_NS // 1_000_000 * 1_000_000


@pytest.mark.parametrize("depth_every", [1, 2])
@pytest.mark.parametrize("name", venues_with(lambda v: v.aligned_snapshots))
def test_a_snapshot_requested_anywhere_in_the_stream_meets_it(market, name, depth_every):
    """A venue whose snapshot is a request answered inside the delta stream (HTX ``req``): wherever the
    connection is when the request comes (before the prologue, mid-step, at a pass's end, passes later), the
    answer aligns with the incrementals it was or will be sent, and every later book is the rendered one."""
    books, decimals = market
    script = render_venue(name, books, decimals, VENUE_INSTRUMENTS[name], DEPTH, depth_every)
    assert script.answers
    per_pass, steps = len(script.flat), len(script.body)
    stamps = stamps_at(SEND_NS)
    positions = list(range(per_pass + 2)) + [2 * per_pass + script.before[steps // 2] + 1, 3 * per_pass - 1]
    for at in positions:
        venue, session, sink, conn = session_for(script)
        recv = SEND_NS

        def feed(raw):
            nonlocal recv
            recv += 1000
            assert session.receive(raw, recv, conn) == [], at

        proto = script.control_protocol()
        requests = []
        for frame in venue.build_subscribe(list(script.symbols.values()), DEPTH):
            if frame in script.answers:
                requests.append(frame)                    # answered once the connection was sent `at` frames
            else:
                for raw in script.answer(proto, frame, 0, stamps):
                    feed(raw)
        assert len(requests) == len(script.symbols)
        for t in script.prologue:
            feed(message(t, 0, stamps))
        position = 0
        end = (at // per_pass + 2) * per_pass             # the end of the next pass after the requests
        while position < end:
            if position == at:
                for frame in requests:
                    for raw in script.answer(proto, frame, at, stamps):
                        feed(raw)
            k, i = divmod(position, per_pass)
            feed(message(script.flat[i], k, stamps))
            position += 1
        for row, instrument in enumerate(script.symbols):
            assert sink.row(row).status == RowStatus.LIVE, (at, instrument)
            assert (sink.row(row).bids, sink.row(row).asks) == top(books[0][(name, instrument)]), at
        for counter in ("gaps", "resyncs", "parse_errors", "resyncs_deferred"):
            assert not session.stats.get(counter), (at, counter)


def test_counters_move_on_by_one_pass_each_pass_and_times_are_the_send_time():
    first = '{"u":17,"seq":400,"ts":' + str(STAMP_MS) + ',"x":"a%"}'
    second = '{"u":29,"seq":1400,"ts":' + str(STAMP_MS) + ',"x":"a%"}'
    t = template(first, second)
    assert t.fmt == b'{"u":%d,"seq":%d,"ts":%b,"x":"a%%"}'
    assert t.slots == ((COUNTER, 17, 12), (COUNTER, 400, 1000), (1, 0, 0))
    assert t.payload(3, stamps_at(SEND_NS)) == b'{"u":53,"seq":3400,"ts":1800000000123,"x":"a%"}'
    still = template('{"a":1.5}', '{"a":1.5}')
    assert still == Template(b'{"a":1.5}', (), False)
    with pytest.raises(ValueError):
        template('{"a":"x"}', '{"a":"y"}')


def test_rfc3339_stamps_take_the_send_time():
    t = template('{"timestamp":"2023-11-14T22:13:20.123000000Z","e":"2023-11-14T22:13:20.123000Z"}',
                 '{"timestamp":"2023-11-14T22:13:20.123000000Z","e":"2023-11-14T22:13:20.123000Z"}')
    assert t.slots == ((2, 0, 0), (3, 0, 0))
    assert t.payload(0, stamps_at(SEND_NS)) == \
        b'{"timestamp":"2027-01-15T08:00:00.123456789Z","e":"2027-01-15T08:00:00.123456Z"}'


def test_stored_gzip_members_are_valid_gzip():
    data = b'{"ping":1700000000000}'
    packed = gzip_stored(data)
    assert gzip.decompress(packed) == data
    assert zlib.decompress(packed, 16 + zlib.MAX_WBITS) == data


@pytest.mark.parametrize("name", venues_with(lambda v: v.compression == "gzip"))
def test_a_gzip_venues_frames_stored_uncompressed_read_as_its_own(name):
    """What the load generator sends a gzip venue (its frames as stored gzip members) parses as the frames the
    simulator sends: the acks, the server's pings, the top of book and depth pushes."""
    venue = load_venue(name)
    symbol = venue.native_symbol(instruments_of(name)[0])
    proto = load_protocol(name)({symbol: 2})
    proto.known_symbols = {symbol}
    frames = list(proto.on_connect())
    for frame in venue.build_subscribe([symbol], DEPTH):
        frames += proto.on_message(frame)
    frames += proto.keepalive(STAMP_MS)
    bids, asks = [(100.0 - i, 1.0 + i) for i in range(10)], [(101.0 + i, 2.0 + i) for i in range(10)]
    frames += [f for key in list(proto.subscriptions) for f in proto.render(*key, bids, asks, STAMP_MS)]
    assert frames
    for frame in frames:
        assert frame[:2] == b"\x1f\x8b"
        assert _values(venue.parse(gzip_stored(gzip.decompress(frame)), 0)) == _values(venue.parse(frame, 0))


def _values(events: list) -> list:
    return [tuple(getattr(e, k) for k in e.__slots__) if isinstance(e, BookUpdate) else e for e in events]


def test_ladder_books_change_a_few_levels_per_step_and_the_loop_closes():
    pair = VENUES[:2]
    # the one dislocation goes to the lower taker fee, then the name
    dislocated, other = sorted(pair, key=lambda name: (load_venue(name).taker_fee_bps, name))
    books, _ = ladder_books({name: ("BTC/USDT",) for name in pair}, 40, seed=2,
                            dislocation_every=30, dislocation_steps=4, dislocation_bps=45.0)

    def mid(step, venue):
        bids, asks = books[step][(venue, "BTC/USDT")]
        return (bids[0][0] + asks[0][0]) / 2

    key = (other, "BTC/USDT")
    changes = [len(_changes(books[t - 1][key][0], books[t][key][0])) + len(_changes(books[t - 1][key][1],
                                                                                   books[t][key][1]))
               for t in range(1, 40)]
    assert max(changes) < 40 and sum(changes) / len(changes) < 8      # never the whole book (2 x 2 x 10)
    assert abs(mid(39, other) / mid(0, other) - 1) < 2e-5              # the walk comes back near its start
    for step in range(40):                                              # 45 bps too low for steps 15-18
        expected = -45e-4 if 15 <= step <= 18 else 0.0
        assert abs(mid(step, dislocated) / mid(step, other) - 1 - expected) < 2e-5, step


def test_the_step_rate_follows_the_target_rate():
    venues = {name: instruments_of(name)[:1 + n % 2] for n, name in enumerate(VENUES)}   # one or two instruments
    rate = 100.0 * 2 * sum(len(names) for names in venues.values())     # two channels each: 100 steps/s
    scripts = build_scripts(venues, rate, loop_s=1.0, min_steps=50)
    generator = LoadGenerator(scripts, rate)
    assert [len(script.body) for script in scripts.values()] == [100] * len(venues)     # for one second
    subscribed = sum(len(script.subscriptions) for script in scripts.values())          # the channels that send
    # (a top-of-book channel may skip unchanged tops)
    assert 0.9 * subscribed < generator.frames_per_step <= subscribed
    assert generator.step_rate == pytest.approx(rate / generator.frames_per_step)
    generator.close()


def test_a_steps_frames_go_out_spread_over_the_step():
    script = VenueScript(VENUES[0], {}, {}, "/", frozenset(), (), [("a", "b"), ("c", "d", "e"), ("f",)])
    script.flatten()
    assert script.flat == ["a", "b", "c", "d", "e", "f"]
    due = [script.frames_due(steps) for steps in (0, 0.5, 1, 1.34, 1.67, 2, 2.99, 3, 3.5, 4, 6)]
    assert due == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 12]


def test_stamps_are_formatted_like_the_simulator_formats_them():
    stamper = Stamper()
    for now_ns in (SEND_NS, SEND_NS + 5_000_000, SEND_NS + 2_000_000_000, 1_700_000_000_000_000_001):
        assert stamper(now_ns) == stamps_at(now_ns)


def test_over_sockets_every_venue_subscribes_and_gets_frames_its_session_takes():
    websockets = pytest.importorskip("websockets.asyncio.client")
    scripts = build_scripts(VENUE_INSTRUMENTS, 3000.0, loop_s=0.5, min_steps=40)

    async def one(name, url):
        script = scripts[name]
        venue, session, sink, conn = session_for(script)
        async with websockets.connect(url, compression=None, max_size=2 ** 24) as ws:
            pong = await ws.ping()                                   # RFC 6455 pings are answered
            await asyncio.wait_for(pong, 20)
            for frame in venue.build_subscribe(list(script.symbols.values()), DEPTH):
                await ws.send(frame)
            keepalive = venue.build_keepalive()                      # the venue's own keepalive, if it has one
            received, ponged = [], keepalive is None
            while len(received) < 300 or not ponged:
                raw = await asyncio.wait_for(ws.recv(), 20)
                received.append(raw)
                assert session.receive(raw, len(received), conn) == []
                if keepalive is not None and len(received) == 100:
                    await ws.send(keepalive)                         # ... is answered
                elif keepalive is not None and len(received) > 100 and not ponged:
                    ponged = any(isinstance(e, Pong) for e in venue.parse(raw, 0))
        return name, session, sink, len(received)

    async def clients(urls):
        return await asyncio.gather(*(one(name, url) for name, url in urls.items()))

    generator = LoadGenerator(scripts, 3000.0)
    urls = generator.start()
    stop = threading.Event()
    server = threading.Thread(target=generator.run, args=(stop.is_set,), daemon=True)
    server.start()
    try:
        results = asyncio.run(clients(urls))
    finally:
        stop.set()
        server.join(30)
        generator.close()
    stats = generator.stats()
    for name, session, sink, received in results:
        for counter in ("gaps", "resyncs", "parse_errors", "checksum_failures"):
            assert session.stats.get(counter) == 0, (name, counter)
        assert [RowStatus(sink.row(r).status) for r in range(3)] == [RowStatus.LIVE] * 3, name
        assert stats["venues"][name]["handler_errors"] == 0
        venue = load_venue(name)
        answers = len(control_answers(scripts[name], venue)) + (venue.build_keepalive() is not None)  # acks, a pong
        assert stats["venues"][name]["frames_sent"] >= received - answers      # the rest are data frames
