"""HTX's reference data refreshed by what changed since the last answer (``ts``), in a running pipeline: the
feed (a real process under the supervisor) asks the simulator this test runs in a thread for the changes since
the last answer's ``ts``; a halt made through :class:`~pipeline.sim.server.ExchangeServer`'s API reaches the
rows through such an answer, the cache is then refreshed with a whole answer, and an empty answer changes
nothing."""
from __future__ import annotations

import orjson
import pytest

from tests.conftest import demo_config, run_until, write_config
from tests.integration.harness import SimulatorThread

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
PATH = "/v1/settings/common/market-symbols"


def test_a_halt_reaches_the_rows_through_the_changes_since_the_last_answer(tmp_path, board_name):
    with SimulatorThread("htx", {i: i.replace("/", "").lower() for i in ("BTC/USDT", "ETH/USDT")}, seed=5) as sim:
        server = sim.server
        raw = demo_config(board_name, tmp_path / "opps.jsonl", venues=("htx",))
        del raw["simulator"]                                   # the test's simulator, not the supervisor's
        raw["venues"]["htx"]["url"] = server.url(HOST)
        raw["venues"]["htx"]["rules_url"] = server.rest_base(HOST)
        raw["reference_data"].update(refresh_s=0.2, cache_dir=str(tmp_path / "cache"))
        config = write_config(tmp_path / "c.yaml", raw)
        steps = ["live", "halted"]
        seen: dict[str, int] = {}

        def progress(stdout: str) -> bool:
            lines = [line for line in stdout.splitlines() if "feed htx" in line]
            last = lines[-1] if lines else ""
            if steps[0] == "live" and "live=2" in last:
                # the empty answers since the first one changed nothing
                seen["queries_before_halt"] = len(server.rest_queries)
                sim.call(server.halt("btcusdt"))
                steps.pop(0)
            elif steps[0] == "halted" and "halted=1" in last and "rules changes" in last:
                steps.pop(0)
                return True
            return False

        result = run_until(progress, "--config", str(config), "--verbose", timeout=90)
        queries = list(server.rest_queries)
    assert steps == [], (steps, result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0, result.stderr[-3000:]
    asked = [query for path, query in queries if path == PATH]
    assert asked[0] == {}                                       # the first request: the whole list
    since = [query["ts"] for query in asked if "ts" in query]
    assert since and all(stamp.isdigit() for stamp in since)
    assert since == sorted(since)                               # each asks from the last answer's stamp on
    # the change came in an answer to "since ts"; the whole list was asked once more right after, for the cache
    after_halt = asked[seen["queries_before_halt"]:]
    first_change = next(i for i, query in enumerate(after_halt) if "ts" in query)
    assert {} in after_halt[first_change:]
    logged = result.stdout + result.stderr
    assert "htx btcusdt: trading rule trading True -> False (reference_data)" in logged
    assert "htx btcusdt: trading rule status online -> offline (reference_data)" in logged
    assert "htx ethusdt: trading rule" not in logged            # the symbol an answer does not name keeps its rules
    cached = orjson.loads((tmp_path / "cache" / f"htx@{HOST}_{server.port}.json").read_bytes())
    assert cached["full"] == 1
    assert {s["symbol"]: s["state"] for s in cached["data"]} == {"btcusdt": "offline", "ethusdt": "online"}
