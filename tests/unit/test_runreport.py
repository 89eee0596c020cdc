"""run.py report: a generated opportunity file whose numbers are worked out by hand."""
from __future__ import annotations

from pathlib import Path

import orjson

from pipeline import runreport
from tests.conftest import run_cli

T0 = 1_800_000_000_000_000_000
S = 1_000_000_000


def event(kind, t_s, instrument="BTC/USDT", buy="binance", sell="bybit", **fields):
    return {"event": kind, "time": "", "time_ns": T0 + int(t_s * S), "instrument": instrument,
            "buy_exchange": buy, "sell_exchange": sell, **fields}


def shadow(t_s, detected, nets, **pair):
    fills = [{"latency_ms": lat, "filled": 1.0, "net_bps": n, "slippage_bps": 0.0,
              "reason": "" if n is not None else "quote_stale"} for lat, n in zip((5.0, 20.0, 50.0), nets)]
    return event("shadow", t_s, net_bps=detected, quantity=1.0, shadow_fills=fills, **pair)


def write_run(path: Path) -> Path:
    records = [
        event("open", 0.0, net_bps=4.0, profit_quote=10.0, quantity=1.0),
        shadow(0.05, 4.0, (3.0, 1.0, None)),
        event("update", 0.06, net_bps=5.0, profit_quote=12.0, quantity=1.0),
        event("close", 0.1, duration_ms=100.0, peak_net_bps=5.0, close_reason="spread_closed", net_bps=1.0),
        event("open", 1.0, net_bps=6.0, profit_quote=20.0, quantity=1.0),
        shadow(1.05, 6.0, (6.0, -1.0, 3.0)),
        event("update", 1.1, net_bps=7.0, profit_quote=22.0, quantity=1.0),
        event("close", 1.2, duration_ms=200.0, peak_net_bps=7.0, close_reason="spread_closed", net_bps=1.0),
        event("open", 2.0, "ETH/USD", "coinbase", "kraken", net_bps=2.0, profit_quote=5.0, quantity=2.0),
        event("close", 2.3, "ETH/USD", "coinbase", "kraken", duration_ms=300.0, peak_net_bps=3.0,
              close_reason="spread_closed", net_bps=1.0),
        event("open", 3.0, "BTC/USDT", "okx", "bybit", net_bps=8.0, profit_quote=30.0, quantity=1.0),
        event("close", 4.0, "BTC/USDT", "okx", "bybit", duration_ms=1000.0, peak_net_bps=9.0,
              close_reason="quote_stale", net_bps=1.0),
    ]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + b"{not json\n")
    return path


EXPECTED_SUMMARY = """\
# Run report: `run.jsonl`

From 2027-01-15 08:00:00 UTC, 4.0 s of events.
Events: 4 open, 2 update, 4 close, 2 shadow. 1 unreadable lines skipped.

**4 opportunities opened**; expected profit at detection: 5.00 USD, 60.00 USDT.

| buy > sell | opened | median net bps | expected profit |
|---|---:|---:|---|
| binance>bybit | 2 | 4.00 | 30.00 USDT |
| coinbase>kraken | 1 | 2.00 | 5.00 USD |
| okx>bybit | 1 | 8.00 | 30.00 USDT |

Lifetime of 4 closed (nearest rank): p50 200.0 ms, p90 1000.0 ms, max 1000.0 ms. Closed by: spread_closed 3, quote_stale 1.

| shadow fill after | checked | still profitable | mean net bps | edge kept |
|---:|---:|---:|---:|---:|
| 5 ms | 2 | 2 (100%) | +4.50 | 90% |
| 20 ms | 2 | 1 (50%) | +0.00 | 0% |
| 50 ms | 2 | 1 (50%) | +3.00 | 50% |

Edge kept: the shadow fills' total net edge as a share of the total edge detected, over the fills where both legs were tradable.

![pairs over time](pairs_over_time.png)
![edges](edges.png)
![lifetimes](lifetimes.png)
![shadow](shadow.png)
![profit by pair](profit_by_pair.png)
"""


def test_summary_numbers_are_the_ones_worked_out_by_hand(tmp_path):
    # profit: USDT 10 + 20 + 30, USD 5; binance>bybit median of [4, 6] by nearest rank is 4;
    # lifetimes [100, 200, 300, 1000]: p50 is the 2nd, p90 the 4th; 5 ms: (3 + 6) / 2 = 4.5 bps,
    # kept (3 + 6) / (4 + 6) = 90 %; 20 ms: 1 of 2 above zero, (1 - 1) / 2 = 0, kept 0 / 10 = 0 %;
    # 50 ms: the stale fill is checked but not tradable: 3 bps, kept 3 / 6 (its detected 4 bps left out)
    records, bad = runreport.read_records(str(write_run(tmp_path / "run.jsonl")))
    summary = runreport.summarize(records)
    summary.skipped_lines = bad
    assert runreport.render_markdown(str(tmp_path / "run.jsonl"), summary) == EXPECTED_SUMMARY


def test_report_command_writes_plots_and_summary(tmp_path):
    source = write_run(tmp_path / "run.jsonl")
    result = run_cli("report", str(source), "--out", str(tmp_path / "out"), timeout=120)
    assert result.returncode == 0, result.stderr
    for name in runreport.PLOTS:
        data = (tmp_path / "out" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert (tmp_path / "out" / "summary.md").read_text() == EXPECTED_SUMMARY


def test_report_default_directory_and_errors(tmp_path):
    source = write_run(tmp_path / "run.jsonl")
    assert run_cli("report", str(source), timeout=120).returncode == 0
    assert (tmp_path / "run-report" / "summary.md").exists()
    missing = run_cli("report", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "empty.jsonl").write_text("")
    empty = run_cli("report", str(tmp_path / "empty.jsonl"))
    assert empty.returncode == 1 and "no opportunity events" in empty.stderr
