"""The demo recording replayed as a trader reads it: the totals add up and follow the threshold.

``tests/data/demo-recording`` (13.5 s of the four Tokyo venues on the simulator, see its README) goes
through the live path (feed sessions, board, detector) at several thresholds. What a trader sums must be
summable: counts and expected profit never rise with the threshold, every opportunity has one id, one
open and one final close, the summary's totals are the file's, the opens of one moment that take from
one book side say so, and every record carries the run's id.
"""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.commands.replay import Replay
from pipeline.config import parse_config
from pipeline.recording.format import recording_files

# one set of replays serves the file: the whole file on one xdist worker
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("opportunity_accounting")]

RECORDING = Path(__file__).resolve().parents[1] / "data" / "demo-recording"
RULES = RECORDING / "rules"          # the recording holds no trading rules: the simulator's, as a cache directory
THRESHOLDS = (0.0, 2.0, 5.0, 10.0, 20.0)


def config(threshold_bps: float, out: Path):
    venues = {v: {"instruments": ["BTC/USDT", "ETH/USDT", "SOL/USDT"]} for v in ("binance", "bybit", "okx", "htx")}
    return parse_config({"board": {"name": "pipeline-accounting", "depth": 5}, "venues": venues, "simulator": {},
                         "detector": {"threshold_bps": threshold_bps, "output": str(out)}},
                        available_cores=frozenset({0}))


@pytest.fixture(scope="module")
def replays(tmp_path_factory):
    """threshold -> (ReplayResult, records)."""
    tmp = tmp_path_factory.mktemp("accounting")
    out = {}
    for threshold in THRESHOLDS:
        path = tmp / f"t{threshold:g}.jsonl"
        result = Replay(config(threshold, path), recording_files(str(RECORDING)), str(path), print_lines=False,
                        rules_cache=str(RULES)).run()
        assert result.rules == dict.fromkeys(("binance", "bybit", "okx", "htx"), "cache")
        assert result.without_rules == []
        out[threshold] = (result, [orjson.loads(line) for line in path.read_bytes().splitlines()])
    return out


def opens(records):
    return [r for r in records if r["event"] == "open"]


def test_counts_and_expected_profit_never_rise_with_the_threshold(replays):
    counts = [len(opens(replays[t][1])) for t in THRESHOLDS]
    profits = [sum(r["profit_quote"] for r in opens(replays[t][1])) for t in THRESHOLDS]
    assert counts[0] > 10                      # the recording's dislocations do make opportunities
    assert counts == sorted(counts, reverse=True), counts
    assert profits == sorted(profits, reverse=True), profits
    assert counts[-1] < counts[0]              # and a high bar does drop some


@pytest.mark.parametrize("threshold", [0.0, 5.0])
def test_every_opportunity_has_one_open_and_one_final_close_and_the_summary_is_the_files(replays, threshold):
    result, records = replays[threshold]
    by_id: dict[int, list[str]] = {}
    for r in records:
        by_id.setdefault(r["id"], []).append(r["event"])
    for events in by_id.values():
        assert events[0] == "open" and events.count("open") == 1
        assert events.count("close") == 1 and events.count("shadow") <= 1
        assert "open" not in events[1:] and events.index("close") >= len(events) - 2   # (a shadow may come last)
    closes = [r for r in records if r["event"] == "close"]
    flaps = sum(r["flaps"] for r in closes)
    profit = sum(r["profit_quote"] for r in opens(records))
    assert f"{len(opens(records))} opportunities opened, {flaps} flaps" in result.summary
    assert f"expected profit at detection: {profit:.4f} USDT" in result.summary
    assert {r["run_id"] for r in records} == {Replay(config(threshold, Path("x")), recording_files(str(RECORDING)),
                                                     None).run_id()}
    assert all(r["close_reason"] in ("spread_closed", "liquidity_taken", "below_threshold", "quote_stale",
                                     "book_invalidated", "exchange_disconnected", "venue_halted", "shutdown")
               for r in closes)


def test_opens_that_take_from_one_book_side_at_one_moment_name_each_other(replays):
    _, records = replays[0.0]
    moments: dict[tuple, list[dict]] = {}
    for r in opens(records):
        moments.setdefault((r["time_ns"], r["instrument"]), []).append(r)
    shared = 0
    for group in moments.values():
        for r in group:
            others = {f"{o['buy_exchange']}>{o['sell_exchange']}" for o in group if o is not r and (
                o["buy_exchange"] == r["buy_exchange"] or o["sell_exchange"] == r["sell_exchange"])}
            assert others <= set(r.get("shares_liquidity_with", ()))
            shared += bool(others)
    assert shared > 0                          # the demo's dislocations are seen by several venues at once


def test_partial_shadow_fills_are_reported_as_such(replays):
    _, records = replays[0.0]
    opened = {r["id"]: r for r in opens(records)}
    fills = [(opened[r["id"]], f) for r in records if r["event"] == "shadow" for f in r["shadow_fills"]
             if f["net_bps"] is not None]
    assert fills and any(f["fill_fraction"] < 1.0 for _, f in fills)
    for o, f in fills:
        assert 0.0 < f["fill_fraction"] <= 1.0
        assert f["filled_qty_base"] == pytest.approx(f["fill_fraction"] * o["qty_base"], rel=1e-5)
        # the profit is on what filled, after both fees
        buy_fee = o["buy_fee_bps"] + o.get("conversion_bps", 0.0)
        assert f["profit_quote"] == pytest.approx(f["filled_qty_base"] * (
            f["sell_price"] * (1 - o["sell_fee_bps"] * 1e-4) - f["buy_price"] * (1 + buy_fee * 1e-4)), rel=1e-5,
            abs=1e-5)


def test_without_rules_the_rows_are_no_rules_and_nothing_opens(tmp_path):
    path = tmp_path / "none.jsonl"
    result = Replay(config(0.0, path), recording_files(str(RECORDING)), str(path), print_lines=False,
                    rules_cache=str(tmp_path / "empty")).run()
    assert result.without_rules == ["binance", "bybit", "htx", "okx"]
    assert result.frames > 1000 and path.read_bytes() == b""


def test_replay_takes_the_rules_kept_beside_the_recording(tmp_path):
    """``run.py replay`` of a recording made before trading rules were recorded finds the ``rules/`` folder kept
    beside its files without being told (the demo recording's): its opportunities are sized, not refused."""
    from tests.conftest import REPO, run_cli
    out = tmp_path / "o.jsonl"
    done = run_cli("replay", "--config", str(REPO / "configs" / "demo.yaml"), "--recording", str(RECORDING),
                   "--out", str(out), "--quiet", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    opens = [orjson.loads(line) for line in out.read_bytes().splitlines() if b'"event":"open"' in line]
    assert len(opens) == 44 and all(o["buy_rules"] and o["sell_rules"] for o in opens)
    assert "detector summary: 44 opportunities opened" in done.stdout
