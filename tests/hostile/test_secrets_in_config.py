"""A secret pasted where its environment variable's name belongs is refused without being printed."""
from __future__ import annotations

import pytest

from pipeline.config import parse_config
from pipeline.errors import ConfigError
from tests.conftest import demo_config, run_cli, write_config

SECRET = "sk-live-9f8e7d6c5b4a3210"        # not a variable name (dashes): the token itself


def problems_of(raw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, available_cores=frozenset({0, 1}))
    return str(info.value)


@pytest.mark.parametrize("where", ["sink", "bridge", "okx"])
def test_a_secret_where_a_variable_name_belongs_is_named_but_never_shown(where):
    raw = {"venues": {"okx": {"instruments": ["BTC/USDT"], "url": "wss://127.0.0.1:1"}}}
    if where == "sink":
        raw["detector"] = {"sink": {"url": "https://127.0.0.1:1/x", "token_env": SECRET}}
        path = "detector.sink.token_env"
    elif where == "bridge":
        raw["bridge"] = {"nats_url": "tls://127.0.0.1:4222", "box": "tokyo", "publish": True, "token_env": SECRET}
        path = "bridge.token_env"
    else:
        raw["venues"]["okx"]["credentials_env"] = {"key": "OKX_KEY", "secret": SECRET, "passphrase": "OKX_PASS"}
        path = "venues.okx.credentials_env.secret"
    text = problems_of(raw)
    assert f"{path}: must be the name of an environment variable" in text
    assert SECRET not in text and "9f8e7d" not in text


def test_a_credentials_map_with_the_wrong_keys_names_the_keys_not_the_values():
    raw = {"venues": {"okx": {"instruments": ["BTC/USDT"], "url": "wss://127.0.0.1:1",
                              "credentials_env": {"api_key": SECRET}}}}
    text = problems_of(raw)
    assert "(given: api_key)" in text and SECRET not in text


@pytest.mark.integration
def test_run_exits_2_and_prints_no_secret(tmp_path, board_name):
    raw = demo_config(board_name, tmp_path / "opps.jsonl")
    raw["detector"]["sink"] = {"url": "https://127.0.0.1:1/x", "token_env": SECRET}
    result = run_cli("--config", str(write_config(tmp_path / "c.yaml", raw)), "--duration", "5", timeout=60)
    assert result.returncode == 2
    assert "detector.sink.token_env" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_a_login_over_plain_ws_to_another_machine_is_refused():
    creds = {"key": "OKX_KEY", "secret": "OKX_SECRET", "passphrase": "OKX_PASS"}
    raw = {"venues": {"okx": {"instruments": ["BTC/USDT"], "url": "ws://ws.okx.example:8443/ws/v5/public",
                              "credentials_env": creds}}}
    text = problems_of(raw)
    assert "venues.okx.url: ws://ws.okx.example:8443/ws/v5/public is plain text" in text and "wss://" in text
    raw["venues"]["okx"]["url"] = "wss://ws.okx.example:8443/ws/v5/public"
    assert parse_config(raw, available_cores=frozenset({0})).venues[0].credentials_env
    raw["venues"]["okx"]["url"] = "ws://127.0.0.1:8443/ws/v5/public"        # a local test server
    assert parse_config(raw, available_cores=frozenset({0})).venues[0].credentials_env
