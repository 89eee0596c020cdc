"""Redundant connections against the simulator: a venue read over two connections keeps its rows live while
either one is trusted, and only both lost makes them disconnected.

The feed's own status writes are kept (:meth:`FeedHarness.statuses`), so a row that left LIVE for a moment
cannot go unseen."""
from __future__ import annotations

import time

import pytest

from pipeline.board import RowStatus
from tests.conftest import run
from tests.integration.harness import FeedHarness

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("venue", ["binance", "bybit", "okx"])
def test_a_dropped_connection_is_invisible_to_the_rows_while_the_other_carries_them(venue):
    async def scenario():
        async with FeedHarness(venue, connections=2) as h:
            await h.all_live()
            await h.until(lambda: len(h.server.connections) == 2, 5, "two connections")
            arbiter = h.feed.arbiter
            # on loopback one path wins nearly every race: the other's copies are counted, later or older
            await h.until(lambda: sum(arbiter.duplicates) + sum(arbiter.late) > 20, 10, "copies on both paths")
            marks = {i: h.writes(i) for i in h.instruments}
            handshakes = len(h.server.handshakes)
            dropped = next(iter(h.server.connections))
            dropped.transport.abort()                   # one path's TCP connection reset, no close frame
            await h.until(lambda: len(h.server.handshakes) > handshakes and len(h.server.connections) == 2, 10,
                          "the dropped path reconnected")
            updated = {i: h.writes(i) for i in h.instruments}
            await h.until(lambda: all(h.writes(i) > updated[i] + 5 for i in h.instruments), 10, "rows still moving")
            for n, instrument in enumerate(h.instruments):
                assert set(h.statuses(instrument, marks[instrument])) == {RowStatus.LIVE}, instrument
                # the row carries the exchange's id of the update it shows (a status-only write of an unchanged
                # book at a newer id moves the arbiter's, not the row's)
                assert 0 < h.row(instrument)["xseq"] <= arbiter.rows[n][1], instrument
            assert h.stat("reconnects") >= 1
            assert sum(arbiter.first) > 0
            # the slot says which path reconnected (published every 100 ms)
            await h.until(lambda: sum(int(n) for n in h.board.procs[0]["path_reconnects"][:2]) == h.stat("reconnects"),
                          5, "the reconnects per path in the slot")
    run(scenario())


def test_both_connections_lost_disconnect_the_rows_until_one_is_back():
    async def scenario():
        async with FeedHarness("binance", connections=2) as h:
            await h.all_live()
            await h.until(lambda: len(h.server.connections) == 2, 5, "two connections")
            h.server.faults.refuse_until = time.monotonic() + 60
            await h.server.drop_connections("abort")
            await h.until(lambda: all(h.status(i) == RowStatus.DISCONNECTED for i in h.instruments), 5,
                          "rows disconnected once no path is left")
            h.server.faults.refuse_until = 0.0
            await h.all_live(10)
    run(scenario())


def test_over_paths_with_their_own_delays_and_stalls_each_path_delivers_first_and_a_stall_is_invisible():
    """The simulator's network paths (each connection its own lognormal delay): both paths win races; one path
    stalled for 400 ms goes stale on its own (staleness 150 ms) while the rows stay live, carried by the other."""
    from pipeline.sim.paths import PathModel
    paths = PathModel(delay_ms=0.5, jitter=1.0, stall_every_s=0.0, stall_ms=(50.0, 150.0), disconnect_every_s=0.0)

    async def scenario():
        async with FeedHarness("okx", connections=2, paths=paths, staleness_ms=150) as h:
            await h.all_live()
            await h.until(lambda: len(h.server.connections) == 2, 5, "two connections")
            arbiter = h.feed.arbiter
            await h.until(lambda: all(n > 20 for n in arbiter.first), 10, "each path first with some updates")
            said: list[tuple[int, int]] = []                 # (path, status) of every status-only write
            set_status = arbiter.set_status

            def observed(path, row, status, confirmed_ns, version=None):
                said.append((path, status))
                set_status(path, row, status, confirmed_ns, version)
            arbiter.set_status = observed
            marks = {i: h.writes(i) for i in h.instruments}
            index = next(iter(h.server._path_schedules))          # noqa: SLF001 - the first open connection's index
            stall_ends = await h.server.stall(index, 400)
            await h.until(lambda: time.monotonic() > stall_ends + 0.1, 5, "the stall over")
            await h.until(lambda: all(h.writes(i) > marks[i] + 10 for i in h.instruments), 5, "rows moving")
            assert any(status == int(RowStatus.STALE) for _, status in said), "the stalled path never went stale"
            for instrument in h.instruments:
                assert set(h.statuses(instrument, marks[instrument])) == {RowStatus.LIVE}, instrument
            assert all(arbiter.lag_percentiles(p) is not None for p in range(2))
            # what the health line and the metrics read: the feed's slot, published every 100 ms
            proc = h.board.procs[0]
            n = len(h.instruments)
            await h.until(lambda: int(proc["paths"]) == 2 and list(proc["path_live_rows"][:2]) == [n, n], 5,
                          "the paths in the slot, both holding every row")
            assert all(int(x) > 20 for x in proc["path_first"][:2]) and all(int(x) > 0 for x in proc["path_copies"][:2])
    run(scenario())


def test_a_recording_of_two_paths_says_each_frames_path_and_replays_the_arbitration_alike(tmp_path, board_name):
    """``run.py`` with ``connections: 2`` and recording on: the frames carry their path's connection ids (path 1
    numbers from 100000), and replay, which arbitrates the paths as the feed does, writes the same events twice."""
    from pipeline.recording.format import EVENT, read_recording, recording_files
    from tests.conftest import demo_config, run_cli, write_config
    raw = demo_config(board_name, tmp_path / "live.jsonl")
    for venue in raw["venues"].values():
        venue["connections"] = 2
    raw["recording"] = {"dir": str(tmp_path / "rec")}
    config = write_config(tmp_path / "c.yaml", raw)
    result = run_cli("--config", str(config), "--duration", "3", timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    for path in recording_files(tmp_path / "rec"):
        _, records, damage = read_recording(path)
        assert damage is None
        paths = {r.conn // 100_000 for r in records if r.kind != EVENT}
        assert paths == {0, 1}, path
    outs = []
    for n in range(2):
        out = tmp_path / f"replay{n}.jsonl"
        replay = run_cli("replay", "--config", str(config), "--recording", str(tmp_path / "rec"), "--out", str(out),
                         "--quiet")
        assert replay.returncode == 0, replay.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and b'"event":"open"' in outs[0]


def test_each_path_connects_to_its_own_endpoint_from_urls():
    """``venues.NAME.urls``: one endpoint per path, in order (here the simulator by two host names)."""
    def two_hosts(url: str) -> list[str]:
        return [url, url.replace("127.0.0.1", "localhost")]

    async def scenario():
        async with FeedHarness("binance", connections=2, urls=two_hosts) as h:
            await h.all_live()
            await h.until(lambda: len(h.server.connections) == 2, 5, "two connections")
            port = h.server.port
            hosts = sorted(ws.request.headers["Host"] for ws in h.server.connections)
            assert hosts == sorted([f"127.0.0.1:{port}", f"localhost:{port}"])
            assert [h.feed.url_of(s) for s in h.feed.sessions] == two_hosts(h.feed.url)
    run(scenario())


def test_urls_are_one_per_connection_and_replace_url():
    from pipeline.config import parse_config
    from pipeline.errors import ConfigError

    def problems(venue: dict) -> str:
        try:
            parse_config({"venues": {"binance": {"instruments": ["BTC/USDT"], **venue}}},
                         available_cores=frozenset({0}))
        except ConfigError as exc:
            return str(exc)
        return ""
    two = ["wss://stream.binance.com:9443/stream", "wss://data-stream.binance.vision/stream"]
    assert problems({"connections": 2, "urls": two}) == ""
    assert ("venues.binance.urls: 1 URLs for 2 connections: one per connection (venues.binance.connections)"
            in problems({"connections": 2, "urls": two[:1]}))
    assert ("venues.binance.urls: give url (every connection) or urls (one per connection), not both"
            in problems({"connections": 2, "urls": two, "url": two[0]}))
    assert "venues.binance.urls[1]: invalid value 'https://x'" in problems({"connections": 2, "urls": [two[0], "https://x"]})


def read_two_connections(venue: str, native: str, subscribe, take) -> None:
    """Two raw connections to the simulated ``venue`` quoting ``native`` (BTC/USDT), the second opened 0.3 s after
    the first, each sending ``subscribe(n)`` and handing every message it gets for 1.5 s to ``take(n, message)``."""
    import asyncio
    import contextlib

    import orjson
    from websockets.asyncio.client import connect

    from pipeline.sim.market import Market
    from pipeline.sim.server import Simulator

    async def scenario():
        market = Market([venue], ["BTC/USDT"], seed=5, random_dislocations=False)
        sim = Simulator({venue: {"BTC/USDT": native}}, market, 10)
        urls = await sim.start()
        stop = asyncio.Event()
        task = asyncio.ensure_future(sim.run(stop))

        async def read(n: int, delay_s: float):
            await asyncio.sleep(delay_s)
            async with connect(urls[venue]) as ws:
                await ws.send(orjson.dumps(subscribe(n)))
                deadline = asyncio.get_running_loop().time() + 1.5
                while asyncio.get_running_loop().time() < deadline:
                    take(n, orjson.loads(await ws.recv()))
        try:
            await asyncio.gather(read(0, 0.0), read(1, 0.3))
        finally:
            stop.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(task, 5)
            await sim.close()
    run(scenario())


def test_the_simulated_okx_numbers_each_push_alike_on_every_connection():
    """OKX, "Sequence ID": "The set of sequence ID received by users is the same if users are connecting to the
    same channel through multiple websocket connections. Each instId has an unique set of sequence ID." Two raw
    connections to the simulated OKX, subscribed to bbo-tbt and books at different moments, get the same seqId for
    the same push (each seqId names one top of book and one book), and books chains prevSeqId -> seqId on each."""
    seen: list[dict] = [{}, {}]                   # per connection: (channel, seqId) -> what it said
    chains: list[list] = [[], []]

    def take(n: int, message: dict) -> None:
        channel = message.get("arg", {}).get("channel")
        for data in message.get("data", ()):
            if channel == "bbo-tbt":
                seen[n][(channel, data["seqId"])] = (data["bids"], data["asks"])
            elif channel == "books":
                chains[n].append((data["prevSeqId"], data["seqId"]))
                if data["bids"] or data["asks"]:
                    seen[n][(channel, data["seqId"])] = message.get("action")
    read_two_connections("okx", "BTC-USDT", lambda n: {"op": "subscribe", "args": [
        {"channel": "bbo-tbt", "instId": "BTC-USDT"}, {"channel": "books", "instId": "BTC-USDT"}]}, take)
    tops = [{k: v for k, v in s.items() if k[0] == "bbo-tbt"} for s in seen]
    shared = set(tops[0]) & set(tops[1])
    assert len(shared) > 20, (len(tops[0]), len(tops[1]))
    assert all(tops[0][k] == tops[1][k] for k in shared)        # one id, one top of book, on both
    # while both read, every top of book connection 1 was pushed (after its first, the state it subscribed in)
    # connection 0 was pushed too, under the same id
    first, last = min(x[1] for x in tops[1]), max(x[1] for x in tops[0])
    both = {k for k in tops[1] if first < k[1] <= last}
    assert both and both <= set(tops[0]), "connection 1 got ids connection 0 never did"
    for chain in chains:
        assert chain[0][0] == -1 and all(b[0] == a[1] for a, b in zip(chain, chain[1:]))


# per venue: its native symbol, the subscription of a top-of-book channel (connection 0 also takes trades, so
# the two connections have sent different numbers of frames), and a frame's (id, top) or None
TOP_CHANNELS = {
    "bybit": ("BTCUSDT",
              lambda first: {"op": "subscribe",
                             "args": ["orderbook.1.BTCUSDT"] + (["publicTrade.BTCUSDT"] if first else [])},
              lambda m: (m["data"]["seq"], (m["data"]["b"], m["data"]["a"]))
              if m.get("topic") == "orderbook.1.BTCUSDT" else None),
    "binance": ("BTCUSDT",
                lambda first: {"method": "SUBSCRIBE", "id": 1,
                               "params": ["btcusdt@bookTicker"] + (["btcusdt@trade"] if first else [])},
                lambda m: (m["data"]["u"], (m["data"]["b"], m["data"]["a"]))
                if str(m.get("stream", "")).endswith("@bookTicker") else None),
}


@pytest.mark.parametrize("venue", sorted(TOP_CHANNELS))
def test_the_simulated_venue_numbers_each_top_of_book_alike_on_every_connection(venue):
    """Bybit's ``seq``, "Cross sequence": "You can use this field to compare different levels orderbook data, and
    for the smaller seq, then it means the data is generated earlier"; Binance's bookTicker ``u``, "order book
    updateId". The venue numbers its own events, whatever connection relays them. Two raw connections to the
    simulated venue, subscribed at different moments and to different channels (so each has sent a different
    number of frames), get the same id for the same top of book, rising."""
    native, subscribe, top = TOP_CHANNELS[venue]
    seen: list[dict] = [{}, {}]                   # per connection: id -> top of book

    def take(n: int, message: dict) -> None:
        found = top(message)
        if found is not None:
            seen[n][found[0]] = found[1]
    read_two_connections(venue, native, lambda n: subscribe(n == 0), take)
    shared = set(seen[0]) & set(seen[1])
    assert len(shared) > 20, (len(seen[0]), len(seen[1]))
    assert all(seen[0][k] == seen[1][k] for k in shared)       # one id, one top of book, on both
    first, last = min(seen[1]), max(seen[0])
    both = {k for k in seen[1] if first < k <= last}
    assert both and both <= set(seen[0]), "connection 1 got ids connection 0 never did"
    for s in seen:
        assert list(s) == sorted(s)                             # rising, as the venue's own order
