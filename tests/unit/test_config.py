"""Configuration: typed and frozen, every problem named with its dotted path."""
from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import DetectorConfig, load_config, parse_config
from pipeline.errors import ConfigError
from tests.conftest import REPO, run_cli, write_config

CORES = frozenset({0, 1})


def minimal(**extra):
    raw = {"venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://stream.binance.com:9443/stream"}}}
    raw.update(extra)
    return raw


def problems(raw) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, available_cores=CORES)
    return info.value.problems


@pytest.mark.parametrize("name", ["demo.yaml", "tokyo.yaml", "global.yaml"])
def test_shipped_configs_load(name):
    path = REPO / "configs" / name
    if not path.exists():
        pytest.skip(f"{name} not shipped yet")
    config = load_config(path)
    assert config.venues
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.board.depth = 3


def test_defaults_are_the_documented_ones():
    config = parse_config(minimal(), available_cores=CORES)
    assert config.board.depth == 5
    assert config.detector == DetectorConfig()
    assert config.detector.wait == "doorbell"
    assert config.venues[0].taker_fee_bps == 10.0
    assert config.instruments == ("BTC/USDT",)


def test_unknown_key_is_named_with_its_path():
    path, message = problems(minimal(detector={"treshold_bps": 1}))[0]
    assert path == "detector.treshold_bps" and "unknown key" in message


def test_every_problem_is_reported_together():
    raw = {
        "board": {"depth": 11},
        "venues": {
            "binance": {"instruments": ["BTC/USDT", "BTCUSDX", "BTC/USDT"], "cores": [7], "taker_fee_bps": -1},
            "ftx": {"instruments": ["BTC/USD"]},
        },
        "detector": {"threshold_bps": "high", "wait": "nap"},
    }
    found = dict(problems(raw))
    assert "board.depth" in found and "11" in found["board.depth"]
    assert "unknown instrument 'BTCUSDX'" in found["venues.binance.instruments[1]"]
    assert "duplicate instrument" in found["venues.binance.instruments[2]"]
    assert "core 7 does not exist" in found["venues.binance.cores[0]"]
    assert "-1" in found["venues.binance.taker_fee_bps"]
    assert "unknown exchange 'ftx'" in found["venues.ftx"]
    assert "'high'" in found["detector.threshold_bps"]
    assert "'nap'" in found["detector.wait"]


def test_real_venue_needs_url_without_simulator():
    raw = {"venues": {"bybit": {"instruments": ["BTC/USDT"]}}}
    assert problems(raw)[0][0] == "venues.bybit.url"
    raw["simulator"] = {"seed": 1}
    assert parse_config(raw, available_cores=CORES).simulator.seed == 1


def test_symbol_override_must_name_a_configured_instrument():
    raw = minimal()
    raw["venues"]["binance"]["symbols"] = {"ETH/USDT": "ETHUSDT"}
    assert problems(raw)[0][0] == "venues.binance.symbols.ETH/USDT"


def test_cli_exits_2_and_names_the_field(tmp_path):
    config = write_config(tmp_path / "bad.yaml", minimal(detector={"staleness_ms": -5}))
    result = run_cli("--config", str(config))
    assert result.returncode == 2
    assert "detector.staleness_ms" in result.stderr and "-5" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content, expected", [
    (None, "not found"),
    ("venues: [unclosed", "invalid YAML at line"),
    ("- just\n- a list\n", "top level must be a mapping"),
])
def test_cli_bad_files_exit_2(tmp_path, content, expected):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    result = run_cli("--config", str(path))
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_cli_usage_error_exits_2():
    result = run_cli("--duration", "5")
    assert result.returncode == 2
    assert "usage:" in result.stderr and "--config" in result.stderr


def test_connection_options_per_venue():
    from pipeline.config import parse_config
    from pipeline.errors import ConfigError
    raw = {"venues": {"okx": {"instruments": ["BTC/USDT"], "url": "wss://x", "ws_ping_interval_s": 0,
                              "transport": "websockets",
                              "credentials_env": {"key": "OKX_KEY", "secret": "OKX_SECRET", "passphrase": "OKX_PASS"}}}}
    okx = parse_config(raw, available_cores=frozenset({0})).venue("okx")
    assert okx.ws_ping_interval_s == 0 and okx.transport == "websockets"
    assert dict(okx.credentials_env) == {"key": "OKX_KEY", "secret": "OKX_SECRET", "passphrase": "OKX_PASS"}
    bad = {"venues": {"okx": {"instruments": ["BTC/USDT"], "url": "wss://x", "transport": "tcp", "decoder": "json",
                              "credentials_env": {"key": "OKX_KEY", "secret": "s3cr3t value", "passphrase": "P"}},
                      "binance": {"instruments": ["BTC/USDT"], "url": "wss://x",
                                  "credentials_env": {"key": "A", "secret": "B", "passphrase": "C"}}}}
    try:
        parse_config(bad, available_cores=frozenset({0}))
    except ConfigError as exc:
        text = str(exc)
    else:
        raise AssertionError("accepted")
    assert "venues.okx.transport: must be one of websockets, picows, got 'tcp'" in text
    assert "venues.okx.decoder: no longer exists: each venue's wire messages are declared once" in text
    assert "venues.okx.credentials_env.secret: must be the name of an environment variable" in text
    assert "venues.binance.credentials_env: only okx takes credentials" in text


def test_a_size_cap_below_the_smallest_reported_size_is_refused_naming_both():
    raw = {"venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://x"}},
           "detector": {"max_notional": 5, "min_notional": 10, "max_notional_by_instrument": {"BTC/USDT": 8}}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, available_cores=frozenset({0}))
    text = str(err.value)
    assert "detector.max_notional: 5 is below detector.min_notional (10)" in text
    assert "detector.max_notional_by_instrument.BTC/USDT: 8 is below detector.min_notional (10)" in text


def test_a_bare_config_name_is_also_looked_for_in_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("demo.yaml").board.name == load_config(REPO / "configs" / "demo.yaml").board.name
    with pytest.raises(ConfigError) as err:
        load_config("nothere.yaml")
    assert f"looked for 'nothere.yaml' or '{tmp_path}/configs/nothere.yaml' or '{REPO}/configs/nothere.yaml'" in str(
        err.value)
