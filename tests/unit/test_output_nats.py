"""Decisions on NATS without a server: the config key, the subject, the permissions hint, one message per
record through the writer, and a server that is not there (a port nothing listens on) costing only counted
drops, never the file."""
from __future__ import annotations

import io
import time

import orjson
import pytest

from pipeline.bridge.codec import decisions_subject
from pipeline.bridge.process import describe_connect_error
from pipeline.config import parse_config
from pipeline.errors import ConfigError
from pipeline.output.process import decision_publisher
from pipeline.output.writers import BackgroundWriter, Outputs
from tests.conftest import port_holder, run_cli, wait_until, write_config

CORES = frozenset({0, 1})
VENUES = {"binance": {"instruments": ["BTC/USDT"], "url": "wss://stream.binance.com:9443/stream"}}


def bridge(**extra) -> dict:
    return {"venues": VENUES, "bridge": {"nats_url": "nats://127.0.0.1:4222", "box": "tokyo", **extra}}


def test_publish_decisions_is_off_by_default_and_alone_is_enough_for_a_bridge():
    assert parse_config(bridge(publish=True), available_cores=CORES).bridge.publish_decisions is False
    config = parse_config(bridge(publish_decisions=True), available_cores=CORES)
    assert (config.bridge.publish_decisions, config.bridge.publish, config.bridge.subscribe) == (True, False, ())


def test_publish_decisions_of_the_wrong_type_is_named_alone():
    with pytest.raises(ConfigError) as info:
        parse_config(bridge(publish_decisions="yes"), available_cores=CORES)
    assert info.value.problems == [("bridge.publish_decisions", "must be true or false, got 'yes'")]


def test_run_exits_2_naming_bridge_publish_decisions(tmp_path):
    config = write_config(tmp_path / "bad.yaml", bridge(publish_decisions=1))
    result = run_cli("--config", str(config))
    assert result.returncode == 2
    assert "bridge.publish_decisions: must be true or false, got 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_subject_and_the_permissions_hint():
    assert decisions_subject("tokyo") == "decisions.tokyo"
    message, refused = describe_connect_error(
        Exception("nats: 'Permissions Violation for Publish to \"decisions.tokyo\"'"), "nats://h:1")
    assert not refused
    assert message == ("NATS server nats://h:1 denied a subject (nats: 'Permissions Violation for Publish to "
                       "\"decisions.tokyo\"'): bridge.publish_decisions needs publish permission on decisions.>")
    assert "quotes.>" in describe_connect_error(Exception("Permissions Violation for Publish to quotes.x"), "u")[0]


def test_only_a_bridge_with_publish_decisions_gets_a_publisher():
    def config(**bridge_keys):
        raw = bridge(**bridge_keys) if bridge_keys else {"venues": VENUES}
        return parse_config(raw, available_cores=CORES)
    assert decision_publisher(config()) is None
    assert decision_publisher(config(publish=True)) is None
    publisher = decision_publisher(config(publish_decisions=True))
    assert (publisher.subject, publisher.url) == ("decisions.tokyo", "nats://127.0.0.1:4222")
    assert publisher.name == "NATS decisions (decisions.tokyo at nats://127.0.0.1:4222)"


def test_a_writer_not_joined_gets_one_item_per_record_in_order():
    batches = []
    writer = BackgroundWriter("list", orjson.dumps, lambda: (batches.append, None), capacity=1000, joined=False)
    records = [{"event": "open", "id": i} for i in range(150)]
    for record in records:
        assert writer.put(record)
    assert writer.close(time.monotonic() + 5)
    assert [item for batch in batches for item in batch] == [orjson.dumps(r) for r in records]
    assert all(isinstance(batch, list) and 0 < len(batch) <= 64 for batch in batches)
    assert (writer.written, writer.dropped) == (150, 0)


def test_no_server_drops_and_counts_the_decisions_and_writes_the_file(tmp_path, caplog):
    pytest.importorskip("nats")
    holder = port_holder()          # bound, never listening: every connection is refused
    try:
        url = f"nats://127.0.0.1:{holder.getsockname()[1]}"
        raw = {"venues": VENUES, "bridge": {"nats_url": url, "box": "tokyo", "publish_decisions": True}}
        config = parse_config(raw, available_cores=CORES)
        out = tmp_path / "events.jsonl"
        outputs = Outputs(str(out), False, stdout=io.StringIO(), run_id="r1", background=True,
                          publisher=decision_publisher(config))
        name = f"NATS decisions (decisions.tokyo at {url})"
        wait_until(lambda: any(name in r.getMessage() and "until it answers" in r.getMessage()
                               for r in caplog.records), 10, message="the first refused attempt logged")
        for i in range(5):
            outputs.write({"event": "open", "id": i})
        outputs.close()
    finally:
        holder.close()
    assert out.read_bytes() == b"".join(orjson.dumps({"event": "open", "id": i, "run_id": "r1"}) + b"\n"
                                        for i in range(5))
    assert outputs.dropped_by_destination() == {"NATS decisions": 5}
    assert outputs.dropped == 5
    said = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert said[0] == (f"{name}: cannot connect to NATS at {url}: ConnectionRefusedError: [Errno 111] Connect call "
                       f"failed ('127.0.0.1', {url.rsplit(':', 1)[1]}); decisions are dropped (and counted) until "
                       f"it answers")
    assert sum("until it answers" in m for m in said) == 1
    assert all(r.exc_info is None for r in caplog.records)

