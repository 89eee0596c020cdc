"""A backlog never looks fresh: frames carry the time they reached the socket, and a feed whose frames reach it
later than its staleness limit untrusts its rows until it has caught up.

Before, the receive time was taken when the feed took a frame out of the WebSocket library's queue (unbounded:
``max_queue=None``), so frames that had waited seconds in the kernel or the library were stamped "now" and
every staleness rule saw a fresh quote. Now websockets' reads carry the kernel's receive time (``SO_TIMESTAMPNS``)
and picows' frames the time of their read; the library queue is bounded; the wait from the socket to the session
is measured on every frame, counted and shown in health, metrics and the console.

The real-feed tests slow the session down (every frame costs a millisecond more) and have the simulator send a
burst of hundreds of updates at once: the feed falls behind, its rows are STALE whenever it is, and it is LIVE
again once it has caught up.
"""
from __future__ import annotations

import asyncio
import select
import socket
import time
import types

import pytest

from pipeline.feed import transport
from pipeline.feed.transport import MAX_QUEUE, StampedSocket, available, open_link
from pipeline.model import RowStatus
from tests.conftest import fixture_lines, session_for

MS = 1_000_000
SECOND = 1_000_000_000
LIVE, STALE = int(RowStatus.LIVE), int(RowStatus.STALE)


# ------------------------------------------------------------------ the session's decision, exact values

def _bybit_session(staleness_ms: float = 1000):
    session, sink, conn, journal = session_for("bybit", ["BTCUSDT"], staleness_ms)
    snapshot, delta = [line for line in fixture_lines("bybit", "bbo.jsonl") if '"orderbook.1.BTCUSDT"' in line]
    return session, sink, conn, journal, snapshot, delta


def test_a_connection_behind_writes_its_rows_stale_and_catching_up_makes_them_live_as_of_their_last_update():
    session, sink, conn, journal, snapshot, delta = _bybit_session()
    session.receive(snapshot, 5 * SECOND, conn)
    assert sink.row(0).status == LIVE

    session.fall_behind(conn, 6 * SECOND, 1_500 * MS)
    row = sink.row(0)
    assert row.status == STALE and session.status[0] == STALE
    assert (session.stats.get("behind"), session.stats.get("fell_behind")) == (1, 1)
    assert journal[-1] == ("behind", 6 * SECOND, {"conn": conn.id, "waited_ms": 1500.0, "limit_ms": 1000.0})
    session.fall_behind(conn, 6 * SECOND + 1, 2_000 * MS)      # still behind: not a second time
    assert session.stats.get("fell_behind") == 1

    # a frame applied while behind: the book follows it, the row is written with it, but STALE
    session.receive(delta, 5_500 * MS, conn)
    row = sink.row(0)
    assert row.status == STALE and row.bids == [(28165.07, 0.166754)] and row.recv_ns == 5_500 * MS
    # a confirmation while behind changes nothing on the board
    writes = row.writes
    session.confirm(session.books["BTCUSDT"], 5_600 * MS)
    assert sink.row(0).writes == writes and session.last_update_ns[0] == 5_600 * MS

    # caught up within the limit of its last update (5.6 s): LIVE, confirmed as of that update
    session.caught_up(conn, 6_200 * MS)
    row = sink.row(0)
    assert row.status == LIVE and row.confirmed_ns == 5_600 * MS
    assert session.stats.get("behind") == 0 and session.behind_rows == set()
    assert journal[-1] == ("caught_up", 6_200 * MS, {"conn": conn.id})

    # behind again, and caught up only when its row has been silent for longer than the limit: it stays STALE
    session.fall_behind(conn, 7 * SECOND, 1_100 * MS)
    session.caught_up(conn, 6_601 * MS + SECOND)
    assert sink.row(0).status == STALE and session.stats.get("fell_behind") == 2
    # ... until the exchange speaks of it again
    session.confirm(session.books["BTCUSDT"], 8 * SECOND)
    assert sink.row(0).status == LIVE and sink.row(0).confirmed_ns == 8 * SECOND


def test_a_connection_lost_while_behind_leaves_nothing_behind():
    session, sink, conn, _, snapshot, _ = _bybit_session()
    session.receive(snapshot, 5 * SECOND, conn)
    session.fall_behind(conn, 6 * SECOND, 1_500 * MS)
    session.connection_lost(conn, 6 * SECOND, "closed")
    assert sink.row(0).status == int(RowStatus.DISCONNECTED)
    assert session.stats.get("behind") == 0 and session.behind_rows == set() and not conn.behind
    fresh = session.connection_opened(["BTCUSDT"], 7 * SECOND)
    session.receive(snapshot, 7 * SECOND, fresh)
    assert sink.row(0).status == LIVE                        # the new connection is not behind


def test_a_standby_behind_hands_its_rows_over_untrusted():
    session, sink, conn, _, snapshot, _ = _bybit_session()
    session.receive(snapshot, 5 * SECOND, conn)
    standby = session.connection_opened(["BTCUSDT"], 5 * SECOND, standby_for=conn)
    session.fall_behind(standby, 6 * SECOND, 1_500 * MS)
    assert sink.row(0).status == LIVE                        # its books are not on the board yet
    session.receive(snapshot, 5_100 * MS, standby)           # its book is whole: it takes the rows over
    assert conn.retired and sink.row(0).status == STALE
    session.caught_up(standby, 5_200 * MS)
    assert sink.row(0).status == LIVE


# ------------------------------------------------------------------ the transports' receive times

def test_a_stamped_socket_reads_the_time_its_data_reached_the_machine():
    """Each read's time is the kernel's stamp of the data's arrival, or (when the kernel attached none) the
    time of the read: never anything in between. Under load the kernel now and then attaches no stamp to a
    loopback read (2 reads in 20 runs of the load-sensitive files with a core kept busy), so of five tries
    with each read, most must carry the arrival time."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = StampedSocket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            assert client.stamped
            for read in ("recv", "recv_into"):
                stamped = 0
                for _ in range(5):
                    before = time.time_ns()
                    peer.sendall(b"x" * 100)             # on loopback the packet arrives during the send
                    # or, on a busy machine, in a softirq a little later: it has arrived once the socket is readable
                    assert select.select([client], [], [], 5)[0]
                    after = time.time_ns()
                    time.sleep(0.1)
                    read_before = time.time_ns()
                    if read == "recv":
                        assert client.recv(4096) == b"x" * 100
                    else:
                        buffer = bytearray(4096)
                        assert client.recv_into(buffer, 50) == 50 and client.recv_into(buffer) == 50
                    read_at = time.time_ns()
                    arrival = before <= client.read_ns <= after               # the kernel's stamp
                    fallback = read_before <= client.read_ns <= read_at       # no stamp: the read's own time
                    assert arrival or fallback, (read, client.read_ns - before, after - before)
                    stamped += arrival
                assert stamped >= 3, (read, stamped)


def test_picows_frames_carry_the_time_of_their_read(monkeypatch):
    picows = pytest.importorskip("picows")
    clock = iter([1_000, 2_000, 3_000])
    monkeypatch.setattr(transport.time, "time_ns", lambda: next(clock))

    def frame(text: str, last: bool):
        return types.SimpleNamespace(msg_type=picows.WSMsgType.TEXT, fin=True, last_in_buffer=last,
                                     get_payload_as_utf8_text=lambda: text)

    async def scenario():
        link = transport.PicowsLink()
        seen = []
        link.on_frame = lambda raw, recv_ns: seen.append((raw, recv_ns)) or []
        for text, last in (("a", False), ("b", False), ("c", True), ("d", True), ("e", False), ("f", True)):
            link.frame(frame(text, last))
        return seen
    # three reads: a b c, then d, then e f; each frame carries its read's time, the clock is read once a read
    assert asyncio.run(scenario()) == [("a", 1_000), ("b", 1_000), ("c", 1_000), ("d", 2_000), ("e", 3_000),
                                       ("f", 3_000)]


@pytest.mark.integration
def test_websockets_messages_keep_their_arrival_time_in_a_bounded_queue():
    from websockets.asyncio.server import serve
    n = 3_000

    async def scenario():
        sent = []

        async def handler(ws):
            for i in range(n):
                sent.append(time.time_ns())
                await ws.send(f'{{"i":{i}}}')
            await ws.wait_closed()                                   # until the client is done with it

        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            link = await open_link("websockets", f"ws://127.0.0.1:{port}", None, 5)
            assert link.ws.recv_messages.high == MAX_QUEUE          # flow control on: reading pauses past it
            seen, peaks = [], []

            def on_frame(raw, recv_ns):
                seen.append((recv_ns, time.time_ns()))
                time.sleep(0.0002)                                   # a slow consumer: a queue builds up
                if len(seen) % 500 == 0:
                    peaks.append(link.take_waiting())
                if len(seen) == n:
                    link.stop("done")
                return []
            await asyncio.wait_for(link.run(on_frame), 30)
            await link.close()
            return sent, seen, peaks

    sent, seen, peaks = asyncio.run(scenario())
    assert [r for r, _ in seen] == sorted(r for r, _ in seen)            # in order with their times
    assert all(sent[0] <= recv <= handed for recv, handed in seen)
    waits = sorted(handed - recv for recv, handed in seen)
    assert waits[-1] > 100 * MS                                          # the queue's wait is seen: n x 0.2 ms
    assert max(peaks) > 0                                                # messages waited in the library
    # the library holds at most the bound plus what one read (256 KiB) brings: these messages are 10-13 bytes
    assert max(peaks) <= MAX_QUEUE + 256 * 1024 // 10


# ------------------------------------------------------------------ a real feed against the simulator

@pytest.mark.integration
@pytest.mark.parametrize("kind", ["websockets", "picows"])
def test_a_slowed_feed_flooded_by_the_simulator_is_stale_while_behind_then_live_again(kind):
    if not available(kind):
        pytest.skip(f"{kind} is not installed (pip install -e '.[fast]')")
    from prometheus_client import generate_latest

    from pipeline.console.events import EventBook
    from pipeline.console.render import check_alerts, render_text
    from pipeline.console.snapshot import BoardSource
    from pipeline.health.metrics import BoardCollector
    from pipeline.health.process import HealthReporter
    from tests.integration.harness import FeedHarness

    async def scenario():
        async with FeedHarness("bybit", staleness_ms=300, update_interval_ms=50, transport=kind) as h:
            await h.all_live()
            session = h.feed.session
            console = BoardSource(h.board, h.rows)
            while_behind = []            # (row states, the console's alerts) whenever the feed was behind

            def slowed(step):
                def slow(raw, *args):
                    time.sleep(0.001)
                    if h.stat("behind"):
                        alerts = check_alerts(console.read())
                        while_behind.append((tuple(h.status(i) for i in h.instruments), tuple(alerts)))
                    return step(raw, *args)
                return slow
            session.parse = slowed(session.parse)
            if session.top is not None:
                session.top = slowed(session.top)

            gauges = {"backlog_wait_ns": 0, "backlog_frames": 0}

            async def sample():              # the watchdog's gauges, published every 100 ms
                while True:
                    for name in gauges:
                        gauges[name] = max(gauges[name], h.stat(name))
                    await asyncio.sleep(0.01)
            sampler = asyncio.ensure_future(sample())
            sent, received = h.server.frames_sent, h.stat("messages")
            h.server.faults.burst = 400      # 400 more updates of every subscription, back to back
            await h.until(lambda: h.stat("fell_behind") >= 1, 30, "the feed to fall behind")
            # what still waits on the simulator's side of the connection (its buffers, TCP flow control) has no
            # receive time yet: the feed may catch up and fall behind again until the whole burst is through
            await h.until(lambda: h.stat("messages") - received >= h.server.frames_sent - sent
                          and not h.stat("behind"), 30, "the feed to catch up with everything sent")
            await h.all_live(10)
            # the watchdog publishes its gauges every 100 ms: wait for the ones the burst must have moved
            await h.until(lambda: gauges["backlog_wait_ns"] > 300 * MS
                          and (kind != "websockets" or gauges["backlog_frames"] > 0), 5, "the backlog gauges")
            sampler.cancel()
            assert h.server.frames_sent - sent >= 1_600
            assert h.stat("late_frames") > 0
            assert while_behind, "the slowed session never saw the feed behind"
            assert {states for states, _ in while_behind} == {(RowStatus.STALE,) * len(h.instruments)}
            assert all(any(a.startswith("bybit behind ") for a in alerts) for _, alerts in while_behind)
            assert gauges["backlog_wait_ns"] > 300 * MS
            if kind == "websockets":
                assert gauges["backlog_frames"] > 0
            # caught up: the rows LIVE, the console shows the venue's lag, health and metrics the counts
            snapshot = console.read()
            feed = snapshot.feeds[0]
            assert feed.behind == 0 and feed.late_frames == h.stat("late_frames")
            assert feed.lag_ms is not None and -50 < feed.lag_ms < 1_000
            screen = render_text(snapshot, EventBook(), snapshot.taken_ns).splitlines()
            table = next(n for n, line in enumerate(screen) if line.startswith("venue "))
            assert screen[table].split()[4] == "lagms"
            assert screen[table + 1].split()[:1] + screen[table + 1].split()[4:5] == ["bybit", str(round(feed.lag_ms))]
            spec = h.feed.spec
            info = HealthReporter(h.board, [spec], list(h.rows), cpu_count=2).snapshot()[0]
            assert info.proc.fell_behind == h.stat("fell_behind") >= 1 and info.proc.behind == 0
            text = generate_latest(BoardCollector(h.board, [spec], include_supervisor=False).registry).decode()
            assert f'pipeline_feed_fell_behind_total{{exchange="bybit"}} {float(h.stat("fell_behind"))}' in text
            assert f'pipeline_feed_late_frames_total{{exchange="bybit"}} {float(h.stat("late_frames"))}' in text

    asyncio.run(asyncio.wait_for(scenario(), 90))
