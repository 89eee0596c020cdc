"""OKX's trading-rule changes reach a running pipeline over the ``instruments`` channel, long before the next
REST refresh: the feed (a real process under the supervisor) is pointed at a simulator this test runs in a
thread and changes through :class:`~pipeline.sim.server.ExchangeServer`'s API while the feed runs."""
from __future__ import annotations

import re

import pytest

from tests.conftest import demo_config, run_until, write_config
from tests.integration.harness import SimulatorThread

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


def okx_health(stdout: str) -> str:
    """The last health line of the okx feed ('' before the first)."""
    lines = [line for line in stdout.splitlines() if "feed okx" in line]
    return lines[-1] if lines else ""


def test_a_rule_change_reaches_the_feed_over_the_instruments_channel(tmp_path, board_name):
    with SimulatorThread("okx", {i: i.replace("/", "-") for i in ("BTC/USDT", "ETH/USDT")}, seed=11) as sim:
        server = sim.server
        raw = demo_config(board_name, tmp_path / "opps.jsonl", venues=("okx",))
        del raw["simulator"]                                   # the test's simulator, not the supervisor's
        raw["venues"]["okx"]["url"] = server.url(HOST)
        raw["venues"]["okx"]["rules_url"] = server.rest_base(HOST)
        raw["reference_data"]["refresh_s"] = 3600               # REST is asked once, at start
        config = write_config(tmp_path / "c.yaml", raw)
        steps = ["live", "announced", "halted"]

        def progress(stdout: str) -> bool:
            last = okx_health(stdout)
            if steps[0] == "live" and "live=2" in last:
                sim.call(server.announce_rule_change("BTC-USDT", 1.0, min_qty="0.0001"))
                steps.pop(0)
            elif steps[0] == "announced" and "rules changes 1" in last and "live=2" in last:
                sim.call(server.halt("ETH-USDT"))
                steps.pop(0)
            elif steps[0] == "halted" and "halted=1" in last and "rules changes 3" in last:
                steps.pop(0)
                return True
            return False

        result = run_until(progress, "--config", str(config), "--verbose", timeout=90)
    assert steps == [], (steps, result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0, result.stderr[-3000:]
    logged = result.stdout + result.stderr
    announced = re.findall(r"okx BTC-USDT: trading rule minSz announced: 0\.0001 at \d+ ms \(instrument_channel\)",
                           logged)
    assert len(announced) == 1, logged[-3000:]
    changes = re.findall(r"okx [A-Z]+-USDT: trading rule \w+ \S+ -> \S+ \((\w+)\)", logged)
    assert "okx BTC-USDT: trading rule min_qty 0.00001 -> 0.0001 (instrument_channel)" in logged
    assert "okx ETH-USDT: trading rule trading True -> False (instrument_channel)" in logged
    assert "okx ETH-USDT: trading rule status live -> suspend (instrument_channel)" in logged
    assert changes == ["instrument_channel"] * 3                # none of them came over REST
    healths = [line for line in result.stdout.splitlines() if "feed okx" in line]
    assert healths and all("parse_errors 0 " in line for line in healths)   # the ack and every push were read
    assert not [line for line in healths if "restarts" in line]
