"""The bridge never carries credentials or quotes in clear to another machine unless told the network is private.

``nats://`` to anything but loopback sends the token and every quote unencrypted: anyone on the path could
read the token or inject quotes the detector would trade on. It is a configuration error naming
``bridge.nats_url`` (exit 2, before anything starts) unless ``bridge.allow_plaintext: true`` says the
network is private; ``tls://`` and loopback are fine; credentials written into the URL are refused without
being echoed.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import parse_config
from pipeline.errors import ConfigError
from tests.conftest import demo_config, run_cli, write_config

CORES = frozenset({0, 1})


def bridge_config(url: str, **extra):
    return {"venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://127.0.0.1:1"}},
            "bridge": {"nats_url": url, "box": "tokyo", "publish": True, "token_env": "NATS_TOKEN", **extra}}


def problems(raw) -> list[tuple[str, str]]:
    try:
        parse_config(raw, available_cores=CORES)
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize("url", ["nats://nats.example:4222", "nats://10.1.2.3:4222", "nats://[2001:db8::1]:4222"])
def test_plain_nats_to_another_machine_is_refused_naming_the_field_and_the_way_out(url):
    [(path, message)] = problems(bridge_config(url))
    assert path == "bridge.nats_url"
    assert "in clear" in message and "tls://" in message and "bridge.allow_plaintext: true" in message


@pytest.mark.parametrize("url", ["tls://nats.example:4222", "nats://127.0.0.1:4222", "nats://localhost:4222",
                                 "nats://[::1]:4222"])
def test_tls_or_loopback_is_accepted(url):
    assert problems(bridge_config(url)) == []


def test_a_private_network_is_an_explicit_choice():
    config = parse_config(bridge_config("nats://10.1.2.3:4222", allow_plaintext=True), available_cores=CORES)
    assert config.bridge.allow_plaintext and config.bridge.nats_url == "nats://10.1.2.3:4222"


def test_credentials_in_the_url_are_refused_and_never_echoed():
    [(path, message)] = problems(bridge_config("tls://bob:hunter2@nats.example:4222"))
    assert path == "bridge.nats_url" and "hunter2" not in message and "bob" not in message


@pytest.mark.integration
def test_run_exits_2_before_anything_starts(tmp_path, board_name):
    raw = demo_config(board_name, tmp_path / "opps.jsonl")
    raw["bridge"] = {"nats_url": "nats://nats.example:4222", "box": "tokyo", "publish": True}
    result = run_cli("--config", str(write_config(tmp_path / "c.yaml", raw)), "--duration", "5", timeout=60)
    assert result.returncode == 2
    assert "bridge.nats_url: nats://nats.example:4222 is plain text to another machine" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (Path("/dev/shm") / board_name).exists()
