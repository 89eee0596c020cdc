"""Cross-box opportunities end to end: the aggregating box's detector trades a mirrored row against a
local one, with honest ages, sized to the remote leg's trading rules (which the bridge carries), and never
while the mirrored row is disconnected (NATS killed)."""
from __future__ import annotations

import os
import time

import pytest

from pipeline.board import RowStatus, read_rules
from pipeline.detector.report import rules_fields
from tests.conftest import complete_records, wait_for
from tests.integration.test_bridge import Box, NatsServer, bridge_section

pytestmark = pytest.mark.integration


def sim(seed: int, venue: str) -> dict:
    """No drift; one venue per box, so the dislocations are scripted (random ones need two venues)."""
    return {"seed": seed, "update_interval_ms": 20, "volatility_bps": 0, "random_dislocations": False,
            "scripted_dislocations": [{"at_s": 2 + 0.75 * k, "exchange": venue, "instrument": "BTC/USDT",
                                       "bps": 60 if k % 2 else -60, "duration_ms": 300} for k in range(60)]}


REMOTE_STALENESS_MS = 5000          # venues.binance.staleness_ms on the tokyo box (the default)


def test_cross_box_opportunities_with_honest_ages_and_none_while_disconnected(tmp_path):
    server = NatsServer(tmp_path).start()
    suffix = os.urandom(4).hex()
    tokyo = Box(tmp_path, "tokyo", {
        "board": {"name": f"pipeline-test-xt-{suffix}"}, "simulator": sim(5, "binance"),
        "venues": {"binance": {"instruments": ["BTC/USDT"]}},
        "detector": {"output": str(tmp_path / "tokyo.jsonl"), "print_opportunities": False},
        "bridge": bridge_section(server.url, "tokyo", publish=True)}).attach()
    out = tmp_path / "central.jsonl"
    central = Box(tmp_path, "central", {
        "board": {"name": f"pipeline-test-xc-{suffix}"}, "simulator": sim(6, "okx"),
        "venues": {"okx": {"instruments": ["BTC/USDT"]}},
        "detector": {"output": str(out), "print_opportunities": False, "staleness_ms": 2000},
        "bridge": bridge_section(server.url, "central", subscribe={"tokyo": {"binance": ["BTC/USDT"]}})}).attach()
    try:
        def cross_opens():
            return [e for e in complete_records(out) if e["event"] == "open"
                    and "binance@tokyo" in (e["buy_exchange"], e["sell_exchange"])]
        opens = wait_for(cross_opens, 30, interval=0.2, message="a cross-box opportunity")
        for e in opens:
            assert {e["buy_exchange"], e["sell_exchange"]} == {"okx", "binance@tokyo"}
            remote_age = e["sell_quote_age_ms"] if e["sell_exchange"] == "binance@tokyo" else e["buy_quote_age_ms"]
            assert 0 <= remote_age < 2000
            fees = {e["buy_exchange"]: e["buy_fee_bps"], e["sell_exchange"]: e["sell_fee_bps"]}
            assert fees == {"okx": 10.0, "binance@tokyo": 10.0}
        # the remote leg is sized to the rules tokyo's feed wrote, carried exactly: the same decimal texts
        _, tokyo_rules = read_rules(tokyo.board, tokyo.row_of("binance", "BTC/USDT"))
        assert tokyo_rules is not None
        assert read_rules(central.board, central.row_of("binance@tokyo", "BTC/USDT"))[1] == tokyo_rules
        for e in opens:
            remote_rules = e["sell_rules"] if e["sell_exchange"] == "binance@tokyo" else e["buy_rules"]
            local_rules = e["buy_rules"] if e["sell_exchange"] == "binance@tokyo" else e["sell_rules"]
            assert remote_rules == rules_fields(tokyo_rules) and local_rules is not None, e
        # the shadow fills of a cross-box open are priced later by the remote leg's age on arrival
        shadows = wait_for(lambda: [e for e in complete_records(out) if e["event"] == "shadow"
                                    and "binance@tokyo" in (e["buy_exchange"], e["sell_exchange"])], 10,
                           interval=0.2, message="a cross-box shadow fill")
        # the delay is the remote quote's age when this board last wrote its row: a row the remote box publishes
        # live was updated within its venue's staleness budget (5 s by default), and a status change (caught up
        # after a backlog, a confirmation) re-publishes it with its last change's receive time
        assert all(0 < e["remote_leg_delay_ms"] < REMOTE_STALENESS_MS + 1000 for e in shadows), [
            (e["remote_leg_delay_ms"], e["buy_exchange"], e["sell_exchange"]) for e in shadows]
        remote = central.row_of("binance@tokyo", "BTC/USDT")
        server.kill()
        wait_for(lambda: central.row(remote)["status"] == int(RowStatus.DISCONNECTED), 3,
                 message="remote row disconnected")
        killed_ns = time.time_ns()
        # while NATS is down, the local okx quote dislocates by 60 bps every 0.75 s (300 ms each): against the
        # last mirrored binance quote each would be an opportunity. Wait until three have come and gone.
        local = central.row_of("okx", "BTC/USDT")
        base = central.row(local)["bids"][0][0]
        flips = [False]

        def dislocations_seen() -> bool:
            far = abs(central.row(local)["bids"][0][0] / base - 1) > 40e-4
            if far != flips[-1]:
                flips.append(far)
            return len(flips) > 6                        # three times away from the base price and back
        wait_for(dislocations_seen, 15, message="three dislocations of the local quote while NATS is down")
        assert central.row(remote)["status"] == int(RowStatus.DISCONNECTED)
        late = [e for e in cross_opens() if e["time_ns"] > killed_ns]
        assert late == [], late
    finally:
        texts = [central.stop(), tokyo.stop()]
        server.kill()
    assert all("Traceback" not in t for t in texts), [t[t.index("Traceback") - 300:][:3000] for t in texts
                                                      if "Traceback" in t]
