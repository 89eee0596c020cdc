"""Configuration: typed and frozen, every problem named with its dotted path."""
from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import load_config, parse_config
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
    d = config.detector
    assert (d.threshold_bps, d.staleness_ms, d.min_notional, d.max_notional, d.close_hysteresis_bps,
            d.close_after_ms, d.reopen_ms, d.conversion_bps, d.shadow_latencies_ms, d.output) == (
        0.0, 2000.0, 10.0, 100_000.0, None, 1000.0, 100.0, 10.0, (5.0, 20.0, 50.0), "opportunities.jsonl")
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


HOST_PROBLEM = ("must be an IP address or a host name to listen on (127.0.0.1: this machine only, 0.0.0.0: every "
                "interface), without port or scheme, got {!r}")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "0.0.0.0", "10.1.2.3", "localhost", "metrics.box-1.internal"])
def test_metrics_host_takes_an_address_or_a_name(host):
    assert parse_config(minimal(metrics={"port": 9100, "host": host}), available_cores=CORES).metrics.host == host


@pytest.mark.parametrize("host", ["127.0.0.1:9100", "http://127.0.0.1", "999.1.1.1", "", "a b", 127, "-box"])
def test_metrics_host_refuses_what_is_not_one(host):
    assert problems(minimal(metrics={"port": 9100, "host": host})) == [("metrics.host", HOST_PROBLEM.format(host))]


def test_metrics_listen_on_loopback_unless_metrics_host_says_otherwise():
    """The endpoint binds where the config says: this machine only by default, every interface when asked."""
    from prometheus_client import CollectorRegistry

    from pipeline.health.metrics import start_metrics_server, stop_metrics_server
    bound = {}
    for host in (None, "0.0.0.0"):
        metrics = {"port": 9100} if host is None else {"port": 9100, "host": host}
        config = parse_config(minimal(metrics=metrics), available_cores=CORES)
        handle = start_metrics_server(0, CollectorRegistry(), host=config.metrics.host)   # 0: any free port
        try:
            bound[host] = handle[0].server_address[0]
        finally:
            stop_metrics_server(handle)
    assert bound == {None: "127.0.0.1", "0.0.0.0": "0.0.0.0"}


def _readme_table() -> str:
    lines = (REPO / "README.md").read_text().splitlines()
    section = lines.index("## Configuration")
    start = next(i for i in range(section, len(lines)) if lines[i].startswith("| section | key |"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end]) + "\n"


def test_the_readme_configuration_table_is_the_declared_one():
    """Regenerate it with: python -m pipeline.config --markdown (and paste it over the README's table)."""
    from pipeline.config import markdown_table
    assert _readme_table() == markdown_table()


def test_every_key_is_documented_with_its_default():
    """Each key of every section, nested ones included, is a row with a default and a meaning."""
    from pipeline.config import Config, table_rows
    rows = table_rows()
    assert all(default and meaning for _, _, default, meaning in rows)
    keys = {f"{where}.{name}" for where, name, _, _ in rows}
    for needed in ("detector.cores", "health.cores", "detector.print_opportunities", "simulator.cores",
                   "simulator.host", "simulator.start_prices", "metrics.host", "venues.NAME.transport",
                   "simulator.scripted_dislocations[].at_s", "bridge.record.max_messages", "detector.sink.url"):
        assert needed in keys
    declared = {f.name for f in dataclasses.fields(Config) if "check" in f.metadata}
    assert {name for where, name, _, _ in rows if where == "top level"} == declared
    assert ("detector", "staleness_ms", "2000", "quotes older than this never make an opportunity") in rows


def test_the_markdown_command_prints_the_table():
    import subprocess
    import sys

    from pipeline.config import markdown_table
    done = subprocess.run([sys.executable, "-m", "pipeline.config", "--markdown"], capture_output=True, text=True,
                          check=False, cwd=REPO, timeout=60)
    assert done.returncode == 0 and done.stdout == markdown_table()
    done = subprocess.run([sys.executable, "-m", "pipeline.config"], capture_output=True, text=True, check=False,
                          cwd=REPO, timeout=60)
    assert done.returncode == 2 and done.stderr == "usage: python -m pipeline.config --markdown\n"


def test_config_imports_no_process_package():
    """Checking a config (every shipped one) imports the choice lists, not the packages that act on them."""
    import subprocess
    import sys
    script = ("import sys, glob, yaml\n"
              "from pipeline.config import ConfigError, parse_config\n"
              "for path in sorted(glob.glob('configs/*.yaml')):\n"
              "    try:\n"
              "        parse_config(yaml.safe_load(open(path)), path, available_cores=frozenset(range(64)))\n"
              "    except ConfigError:\n"
              "        pass   # tokyo.yaml without picows: refused, every key still walked\n"
              "print(' '.join(sorted(m for m in sys.modules if m.startswith('pipeline.'))))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=REPO,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert "pipeline.config" in loaded and "pipeline.choices" in loaded
    for package in ("feed", "sim", "bridge", "detector", "supervisor", "console", "board", "recording"):
        assert not [m for m in loaded if m == f"pipeline.{package}" or m.startswith(f"pipeline.{package}.")], loaded
    assert not [m for m in loaded if m.startswith("pipeline.venues.") and m.endswith(".sim")], loaded


def test_the_choice_lists_are_the_ones_the_packages_act_on():
    from pipeline import choices
    from pipeline.feed import transport
    from pipeline.sim import protocol
    assert transport.TRANSPORTS is choices.TRANSPORTS and protocol.QUIRK_NAMES is choices.QUIRK_NAMES
    assert [transport.available(kind) for kind in choices.TRANSPORTS] == [
        choices.transport_installed(kind) for kind in choices.TRANSPORTS]


def test_removed_and_secret_keys_are_named_with_what_to_do():
    found = dict(problems(minimal(detector={"sink": {"url": "https://x", "token": "abc"}},
                                  bridge={"nats_url": "tls://a:1", "box": "tokyo", "publish": True,
                                          "password": "pw"})))
    assert found["detector.sink.token"] == ("never put a token in a config file: name an environment variable in "
                                            "token_env and export the token there")
    assert found["bridge.password"] == "never put credentials in a config file: use token_env or token_file"
    assert "abc" not in str(found) and "pw'" not in str(found)
