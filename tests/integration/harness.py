"""Run a simulator and a feed in one event loop, over real sockets and a real board."""
from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid

from pipeline.board import Board, RowReader, RowStatus
from pipeline.board.doorbell import Doorbell
from pipeline.feed.process import Feed
from pipeline.model import ProcessRole
from pipeline.runtime import ProcessSpec, RowAssignment, claim_slot
from pipeline.sim.market import Market
from pipeline.sim.server import Simulator
from pipeline.venues import VENUE_IDS, load_venue
from tests.conftest import async_wait_until, wait_until

INSTRUMENTS = {"coinbase": ["BTC/USD", "ETH/USD"], "kraken": ["BTC/USD", "ETH/USD"]}
DEFAULT_TRANSPORT = "websockets"     # the conformance suite runs once per transport (see its fixture)


class FeedHarness:
    def __init__(self, venue: str, instruments=None, staleness_ms: float = 5000, keepalive_s: float | None = None,
                 update_interval_ms: float = 10, depth: int = 5, open_timeout_s: float = 10.0,
                 transport: str | None = None, connections: int = 1, paths=None, urls=None):
        self.venue = venue
        self.connections = connections
        self.urls = urls                 # (url) -> one endpoint per path, from the simulator's url
        module = load_venue(venue)
        self.instruments = instruments or INSTRUMENTS.get(venue, ["BTC/USDT", "ETH/USDT"])
        self.symbols = {i: module.native_symbol(i) for i in self.instruments}
        self.board_name = f"pipeline-test-{uuid.uuid4().hex[:10]}"
        self.rows = tuple(RowAssignment(n, venue, i, self.symbols[i]) for n, i in enumerate(self.instruments))
        self.depth = depth
        self.market = Market([venue], self.instruments, seed=3, depth=10, random_dislocations=False)
        self.sim = Simulator({venue: self.symbols}, self.market, update_interval_ms)
        self.sim.exchanges[venue].paths = paths     # a PathModel: each connection's own network path (None: none)
        self.staleness_ms = staleness_ms
        self.keepalive_s = keepalive_s
        self.open_timeout_s = open_timeout_s
        self.transport = transport or DEFAULT_TRANSPORT
        self.stop = asyncio.Event()
        self.tasks = []

    async def __aenter__(self) -> FeedHarness:
        self.board = Board.create(self.board_name, len(self.rows), self.depth, 1)
        self.fd = Doorbell.create_fd()
        urls = await self.sim.start()
        self.server = self.sim.exchanges[self.venue]
        spec = ProcessSpec(key=f"feed:{self.venue}", role=ProcessRole.FEED, title="test feed", slot=0, cores=(),
                           board_name=self.board_name, depth=self.depth, doorbell_fd=self.fd, venue=self.venue,
                           rows=self.rows, supervisor_pid=0, venue_id=VENUE_IDS[self.venue])
        claim_slot(spec)                 # as run_child does for the feed process: role, venue id, pid
        self.feed = Feed(spec, urls[self.venue], self.staleness_ms, backoff_base_s=0.05, backoff_cap_s=0.5,
                         keepalive_s=self.keepalive_s, open_timeout_s=self.open_timeout_s, transport=self.transport,
                         connections=self.connections,
                         urls=tuple(self.urls(urls[self.venue])) if self.urls is not None else ())
        self.reader = RowReader(self.board)
        self._record_statuses()
        self.tasks = [asyncio.ensure_future(self.sim.run(self.stop)), asyncio.ensure_future(self.feed.run())]
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        self.feed.stop.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
        await self.sim.close()
        self.feed.close()
        self.reader = None
        self.board.destroy()
        os.close(self.fd)

    def _record_statuses(self) -> None:
        """Keep every status the feed writes to each row, in order (:meth:`statuses`).

        Polling the board can miss a state that lasts a millisecond (a book discarded and rebuilt at once on
        loopback); the feed's own writes cannot be missed. The writes still go to the board unchanged."""
        self.written: dict[int, list[RowStatus]] = {r.row: [] for r in self.rows}
        sink, writer = self.feed.sink, self.feed.writer
        # the sink keeps the writer's ``write`` from its start (so wrap the sink's); its ``set_status`` and the
        # feed's own status writes (syncing, disconnected) go through the writer's
        write, set_status, set_status_all = sink.write, writer.set_status, writer.set_status_all

        def recorded_write(row, status, *rest):
            self.written[row].append(RowStatus(status))
            write(row, status, *rest)

        def recorded_set_status(row, status, confirmed_ns=None):
            self.written[row].append(RowStatus(status))
            set_status(row, status, confirmed_ns)

        def recorded_set_status_all(status):
            for history in self.written.values():
                history.append(RowStatus(status))
            set_status_all(status)

        sink.write = recorded_write
        writer.set_status, writer.set_status_all = recorded_set_status, recorded_set_status_all

    def statuses(self, instrument: str, since: int = 0) -> list[RowStatus]:
        """The statuses the feed wrote to the instrument's row, from the ``since``-th write on."""
        return self.written[self.instruments.index(instrument)][since:]

    def writes(self, instrument: str) -> int:
        """How many times the feed wrote the instrument's row (a mark for :meth:`statuses`)."""
        return len(self.written[self.instruments.index(instrument)])

    # ------------------------------------------------------------ reading
    def row(self, instrument: str) -> dict:
        n = self.instruments.index(instrument)
        seq, v = self.reader.read_with_seq(n)
        idx = self.reader.codec.index
        b, a = idx["bids"], idx["asks"]
        return {"seq": seq, "status": RowStatus(v[idx["status"]]),
                "bids": [(v[b + 2 * k], v[b + 2 * k + 1]) for k in range(v[idx["n_bids"]])],
                "asks": [(v[a + 2 * k], v[a + 2 * k + 1]) for k in range(v[idx["n_asks"]])],
                "gaps": v[idx["gaps"]], "checksum_failures": v[idx["checksum_failures"]],
                "recv_ns": v[idx["recv_ns"]], "exch_ts_ns": v[idx["exch_ts_ns"]], "xseq": v[idx["xseq"]]}

    def status(self, instrument: str) -> RowStatus:
        return self.row(instrument)["status"]

    def stat(self, name: str) -> int:
        return self.feed.stats.get(name)

    async def until(self, predicate, timeout: float = 10.0, message: str = "condition"):
        return await async_wait_until(predicate, timeout, message=message)

    async def all_live(self, timeout: float = 10.0):
        return await self.until(lambda: all(self.status(i) == RowStatus.LIVE for i in self.instruments),
                                timeout, f"{self.venue} rows to be live")

    async def all_rebuilt(self, timeout: float = 10.0):
        """Every row live with its whole depth: after a depth book is discarded, the top-of-book channel alone
        can make the row live again (one level a side) before the depth snapshot is back."""
        def rebuilt(instrument: str) -> bool:
            row = self.row(instrument)
            return row["status"] == RowStatus.LIVE and len(row["bids"]) == len(row["asks"]) == self.depth
        return await self.until(lambda: all(rebuilt(i) for i in self.instruments), timeout,
                                f"{self.venue} rows live with their whole depth")


class SimulatorThread:
    """One venue's simulator on its own event loop in a thread, for a test that runs the pipeline as real
    processes against it and changes the exchange while they run: ``server`` is the venue's
    :class:`~pipeline.sim.server.ExchangeServer`, ``call`` runs one of its coroutines there and waits for it."""

    def __init__(self, venue: str, symbols: dict[str, str], seed: int, host: str = "127.0.0.1"):
        self.sim = Simulator({venue: symbols}, Market([venue], list(symbols), seed=seed, random_dislocations=False),
                             20, host)
        self.server = self.sim.exchanges[venue]
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self):
        await self.sim.start()
        self.stop = asyncio.Event()
        self.started.set()
        try:
            await self.sim.run(self.stop)
        finally:
            await self.sim.close()

    def __enter__(self):
        self.thread.start()
        wait_until(self.started.is_set, 30, message="the simulator to listen")
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)
