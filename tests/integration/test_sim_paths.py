"""Network paths between the simulated exchange and each connection, over real loopback sockets.

Raw ``websockets`` clients take Binance's diff-depth stream (``<s>@depth@100ms``), numbered by the exchange-wide
book id, so two connections must see the same updates (``U``..``u``) whatever their paths; each update carries
the exchange time of the market step that made it (``E``, ms), which the stall test uses as a lower bound of
when it was rendered. Delays are asserted only as lower bounds. A real feed over a path with delay, jitter and
stalls stays correct.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import time

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from pipeline.board import RowStatus
from pipeline.sim.market import Market
from pipeline.sim.paths import PathModel, PathSchedule, PathTotals
from pipeline.sim.server import Simulator
from tests.conftest import async_wait_until as until
from tests.conftest import run
from tests.integration.harness import FeedHarness

pytestmark = pytest.mark.integration

STREAM = "btcusdt@depth@100ms"


@contextlib.asynccontextmanager
async def binance(paths: PathModel | None, seed: int = 7):
    """A simulated Binance quoting BTC/USDT every 10 ms, its connections on ``paths``; yields (server, url)."""
    market = Market(["binance"], ["BTC/USDT"], seed=seed, random_dislocations=False)
    sim = Simulator({"binance": {"BTC/USDT": "BTCUSDT"}}, market, 10)
    server = sim.exchanges["binance"]
    server.paths = paths
    urls = await sim.start()
    stop = asyncio.Event()
    task = asyncio.ensure_future(sim.run(stop))
    try:
        yield server, urls["binance"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await sim.close()


class Client:
    """One raw connection subscribed to :data:`STREAM`: every update as (arrival ``time.time()``, U, u, E), and
    how the connection ended (``closed``)."""

    def __init__(self, url: str):
        self.url = url
        self.updates: list[tuple[float, int, int, int]] = []
        self.closed: ConnectionClosed | None = None

    async def __aenter__(self) -> Client:
        self.websocket = await connect(self.url, max_size=2 ** 24, ping_interval=None)
        await self.websocket.send(orjson.dumps({"method": "SUBSCRIBE", "params": [STREAM], "id": 1}).decode())
        self.task = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.websocket.close()

    async def _read(self) -> None:
        try:
            async for message in self.websocket:
                msg = orjson.loads(message)
                data = msg.get("data", msg)
                if data.get("e") == "depthUpdate":
                    self.updates.append((time.time(), data["U"], data["u"], data["E"]))
        except ConnectionClosed as exc:
            self.closed = exc

    def ids(self, first: int, last: int) -> list[tuple[int, int]]:
        return [(U, u) for _, U, u, _ in self.updates if first <= u <= last]

    def arrival(self) -> dict[int, float]:
        return {u: t for t, _, u, _ in self.updates}


def contiguous(ids: list[tuple[int, int]]) -> bool:
    return all(ids[n][0] == ids[n - 1][1] + 1 for n in range(1, len(ids)))


def test_two_connections_get_the_same_updates_in_the_same_order_at_their_own_times():
    async def scenario():
        async with binance(PathModel(delay_ms=2.0, jitter=0.8, stall_every_s=0.0)) as (server, url):
            async with Client(url) as a:
                await until(lambda: a.updates, 10, "connection 0 to get updates")
                async with Client(url) as b:
                    await until(lambda: len(b.updates) >= 60, 20, "connection 1 to get 60 updates")
                    await until(lambda: a.updates[-1][2] >= b.updates[-1][2], 5, "connection 0 to catch up")
            first, last = max(a.updates[0][2], b.updates[0][2]), b.updates[-1][2]
            assert a.ids(first, last) == b.ids(first, last)
            assert len(b.ids(first, last)) >= 50 and contiguous(b.ids(first, last))
            at_a, at_b = a.arrival(), b.arrival()
            ahead = [at_a[u] < at_b[u] for _, u in b.ids(first, last)]
            assert any(ahead) and not all(ahead)              # each path first some of the time: independent
            totals = server.path_statistics()
            zero, one = totals.connection(0), totals.connection(1)
            assert zero.frames > 0 and one.frames > 0
            assert totals.frames_delayed == zero.frames + one.frames
            assert zero.delay_sum_ms != one.delay_sum_ms
            assert 0 < zero.delay_p50_ms < zero.delay_p99_ms and 0 < one.delay_p50_ms < one.delay_p99_ms
            assert (totals.stalls, totals.frames_held, totals.drops) == (0, 0, 0)
    run(scenario())


def test_a_stall_holds_connection_0_while_connection_1_keeps_flowing():
    stall_ms = 500

    async def scenario():
        async with binance(PathModel(delay_ms=0.2, jitter=0.5, stall_every_s=0.0)) as (server, url):
            async with Client(url) as a:
                await until(lambda: a.updates, 10, "connection 0 to get updates")
                async with Client(url) as b:
                    await until(lambda: len(b.updates) >= 5, 10, "connection 1 to get updates")
                    before = time.time()
                    await server.stall(0, stall_ms)
                    after_ms = math.ceil(time.time() * 1000)
                    # an update stamped after_ms or later was rendered after the stall began: it cannot leave
                    # connection 0's path before the stall ends
                    await until(lambda: any(e >= after_ms for *_, e in a.updates), 10, "connection 0 again")
                    late = [(t, u) for t, _, u, e in a.updates if e >= after_ms]
                    assert all(t - before >= stall_ms / 1000 for t, _ in late), (late[0], before)
                    during = [u for t, _, u, e in b.updates if e >= after_ms and t < before + stall_ms / 1000]
                    assert during, "connection 1 got nothing while connection 0 was stalled"
                    await until(lambda: a.updates[-1][2] >= during[-1], 5, "connection 0 to get them too")
            first, last = max(a.updates[0][2], b.updates[0][2]), during[-1]
            assert a.ids(first, last) == b.ids(first, last) and contiguous(a.ids(first, last))   # held, not lost
            totals = server.path_statistics()
            assert (totals.stalls, totals.stall_ms, totals.drops) == (1, pytest.approx(stall_ms), 0)
            assert totals.connection(0).held >= len(during) and totals.connection(1).held == 0
            with pytest.raises(KeyError):
                await server.stall(5, 10)                        # no such connection
    run(scenario())


def test_a_dropped_connection_ends_without_a_close_frame_and_a_new_one_works():
    model = PathModel(delay_ms=0.2, jitter=0.5, stall_every_s=0.0, disconnect_every_s=2.0)
    # the paths are seeded: take a seed whose connection 0 drops within 1.5 s and whose connection 1 lives 3 s
    seed = next(s for s in range(1, 10_000) if PathSchedule(model, s, "binance", 0, 0.0).next_drop_s < 1.5
                and PathSchedule(model, s, "binance", 1, 0.0).next_drop_s > 3.0)

    async def scenario():
        async with binance(model, seed) as (server, url):
            async with Client(url) as a:
                await until(lambda: a.closed is not None, 10, "connection 0 to be dropped")
                assert isinstance(a.closed, ConnectionClosedError) and a.closed.rcvd is None   # a reset, no close
            assert server.path_statistics().drops == 1 and server.path_statistics().connection(0).dropped
            async with Client(url) as b:
                await until(lambda: len(b.updates) >= 20, 10, "the new connection to get updates")
                assert b.closed is None and contiguous(b.ids(0, 10 ** 12))
            totals = server.path_statistics()
            assert totals.drops == 1 and not totals.connection(1).dropped
    run(scenario())


def test_without_paths_frames_go_out_inline():
    async def scenario():
        async with binance(None) as (server, url):
            async with Client(url) as a:
                await until(lambda: len(a.updates) >= 5, 10, "updates")
            assert server.path_statistics() == PathTotals()
            with pytest.raises(RuntimeError, match="simulator.paths is not configured"):
                await server.stall(0, 10)
    run(scenario())


def test_a_feed_stays_live_and_gapless_over_a_path_with_delay_jitter_and_stalls():
    async def scenario():
        h = FeedHarness("okx")
        h.sim.exchanges["okx"].paths = PathModel(delay_ms=1.0, jitter=1.0, stall_every_s=0.5, stall_ms=(20.0, 80.0))
        async with h:
            await h.all_live()
            marks = {i: h.writes(i) for i in h.instruments}
            await h.until(lambda: h.server.path_statistics().stalls >= 3 and h.server.path_statistics().frames_held,
                          20, "three stalls that held frames")
            messages = h.stat("messages")
            await h.until(lambda: h.stat("messages") > messages + 100, 10, "more frames after the stalls")
            for instrument in h.instruments:
                assert set(h.statuses(instrument, marks[instrument])) == {RowStatus.LIVE}, instrument
                assert h.row(instrument)["gaps"] == 0, instrument
            assert h.stat("reconnects") == 0 and h.stat("resyncs") == 0
            assert h.server.path_statistics().connection(0).frames > 100
    run(scenario())
