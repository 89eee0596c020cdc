"""``run.py two-box-demo``: one market both boxes read, the aggregating box's cross-box opportunities, and a
venue never counted twice through another box.

The committed demo configs, moved to ports and files of the test's own (the market's five venues on
consecutive free ports, a free NATS port, events files under the test's directory).
"""
from __future__ import annotations

import random
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, complete_records, wait_until

pytestmark = pytest.mark.integration

PORTS = {"binance": 0, "bybit": 1, "okx": 2, "coinbase": 3, "kraken": 4}      # configs/two-box-market.yaml order


def free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive ports free on 127.0.0.1 now."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        if all(free(base + i) for i in range(n)):
            return base
    raise AssertionError("no run of free ports")


def box_configs(tmp_path: Path, market_port: int, nats_port: int) -> list[Path]:
    paths = []
    for box in ("frankfurt", "tokyo"):
        raw = yaml.safe_load((REPO / f"configs/two-box-{box}.yaml").read_text())
        raw["board"]["name"] = f"pipeline-test-2box-{box}-{market_port}"
        raw["detector"]["output"] = str(tmp_path / f"{box}.jsonl")
        raw["reference_data"] = {"cache_dir": str(tmp_path / f"rules-{box}")}
        raw["bridge"]["nats_url"] = f"nats://127.0.0.1:{nats_port}"
        raw["bridge"].pop("record", None)
        for venue, section in raw["venues"].items():
            port = market_port + PORTS[venue]
            section["url"] = re.sub(r":\d+/", f":{port}/", section["url"])
            section["rules_url"] = f"http://127.0.0.1:{port}"
        path = tmp_path / f"{box}.yaml"
        path.write_text(yaml.safe_dump(raw))
        paths.append(path)
    return paths


def demo_args(market: Path, market_port: int, configs: list[Path]) -> list[str]:
    args = [sys.executable, str(REPO / "run.py"), "two-box-demo", "--market", str(market),
            "--market-port", str(market_port)]
    for path in configs:
        args += ["--config", str(path)]
    return args


def demo(tmp_path: Path, market_port: int, configs: list[Path], *more: str, timeout: float = 120):
    return subprocess.run([*demo_args(REPO / "configs/two-box-market.yaml", market_port, configs), *more],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def busy_market(tmp_path: Path) -> Path:
    """The demo's market with a dislocation every 0.3 s lasting about 0.4 s, and books every 50 ms rather than 20, so
    that a loaded machine still sees cross-box ones soon. At the demo's rates the three pipelines need about a core
    to keep up: starved of it in a full test run, their rows went stale and the first cross-box opportunity took
    27 s (30 s of CPU) against 3.5 s alone; with the machine loaded by two busy loops, 5-10 s at the demo's rates
    and 6.0-6.2 s at these."""
    raw = yaml.safe_load((REPO / "configs/two-box-market.yaml").read_text())
    raw["simulator"]["dislocation_every_s"] = 0.3
    raw["simulator"]["update_interval_ms"] = 50
    raw["simulator"]["dislocation_ms"] = 400
    path = tmp_path / "market.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))          # the venues' order is their ports' order
    return path


def test_two_boxes_on_one_market_find_cross_box_opportunities_and_count_each_venue_once(tmp_path):
    market_port = free_ports(5)
    nats_port = free_ports(1)
    configs = box_configs(tmp_path, market_port, nats_port)
    tokyo = tmp_path / "tokyo.jsonl"

    def opens() -> list[dict]:
        return [r for r in complete_records(tokyo) if r["event"] == "open"]

    def crossed() -> bool:
        assert process.poll() is None, "the demo ended before a cross-box opportunity"
        return any("@" in r["buy_exchange"] + r["sell_exchange"] for r in opens())
    process = subprocess.Popen(demo_args(busy_market(tmp_path), market_port, configs), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        wait_until(crossed, 90, interval=0.2, message="a cross-box opportunity on tokyo")
    finally:
        process.send_signal(signal.SIGINT)             # as Ctrl-C: the boxes print their summaries, the demo counts
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stdout[-3000:] + stderr[-2000:]
    assert f"[market] binance   ws ws://127.0.0.1:{market_port}/stream" in stdout
    found = re.search(r"two-box-demo: tokyo found (\d+) opportunities with a leg on another box", stdout)
    assert found and int(found.group(1)) > 0, stdout[-3000:]
    legs = [(r["buy_exchange"], r["sell_exchange"], r["instrument"]) for r in opens()]
    # tokyo reads binance itself: binance@frankfurt is another path to it, never a leg of its own
    assert not [leg for leg in legs if "binance@frankfurt" in leg[:2]], legs
    # a venue only frankfurt reads is a leg like any other, and no venue is paired with itself
    assert any("kraken@frankfurt" in leg[:2] or "coinbase@frankfurt" in leg[:2] for leg in legs), legs
    assert all(buy.partition("@")[0] != sell.partition("@")[0] for buy, sell, _ in legs)


def test_a_box_venue_that_does_not_read_the_market_exits_2_naming_the_field(tmp_path):
    market_port = free_ports(5)
    configs = box_configs(tmp_path, market_port, free_ports(1))
    raw = yaml.safe_load(configs[1].read_text())
    raw["venues"]["okx"]["url"] = f"ws://127.0.0.1:{market_port + 7}/ws/v5/public"
    configs[1].write_text(yaml.safe_dump(raw))
    result = demo(tmp_path, market_port, configs, "--duration", "1", timeout=60)
    assert result.returncode == 2
    assert result.stderr == (f"run.py two-box-demo: {configs[1]}: venues.okx.url is "
                             f"'ws://127.0.0.1:{market_port + 7}/ws/v5/public'; the market serves okx at "
                             f"ws://127.0.0.1:{market_port + 2}/ws/v5/public\n")
