"""run.py report: generated opportunity files whose numbers are worked out by hand.

Three files: one written before records carried a run id (``quantity``, ``filled``), one run of the
current schema (``qty_base``, partial shadow fills, flaps), and a file holding two runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import orjson

from pipeline.commands import report as runreport
from tests.conftest import run_cli


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def report(capsys, *args: str) -> Ran:
    """``run.py report ARGS`` in this process (matplotlib imported once per worker, not once per call); one
    test below runs it through ``run.py`` as a user does."""
    capsys.readouterr()
    code = runreport.main(list(args))
    out, err = capsys.readouterr()
    return Ran(code, out, err)

T0 = 1_800_000_000_000_000_000          # 2027-01-15 08:00:00 UTC
S = 1_000_000_000
RUN_A = "20270115T080000Z-aaaaaa"
RUN_B = "20270115T080140Z-bbbbbb"


def event(kind, t_s, instrument="BTC/USDT", buy="binance", sell="bybit", **fields):
    return {"event": kind, "time": "", "time_ns": T0 + int(round(t_s * S)), "instrument": instrument,
            "buy_exchange": buy, "sell_exchange": sell, **fields}


def write(path: Path, records: list[dict], tail: bytes = b"") -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + tail)
    return path


# ---------------------------------------------------------------- a file of an older version
def legacy_shadow(t_s, detected, nets, **pair):
    fills = [{"latency_ms": lat, "filled": 1.0, "net_bps": n, "slippage_bps": 0.0,
              "reason": "" if n is not None else "quote_stale"} for lat, n in zip((5.0, 20.0, 50.0), nets)]
    return event("shadow", t_s, net_bps=detected, quantity=1.0, shadow_fills=fills, **pair)


def legacy_records() -> list[dict]:
    return [
        event("open", 0.0, net_bps=4.0, profit_quote=10.0, quantity=1.0),
        legacy_shadow(0.05, 4.0, (3.0, 1.0, None)),
        event("update", 0.06, net_bps=5.0, profit_quote=12.0, quantity=1.0),
        event("close", 0.1, duration_ms=100.0, peak_net_bps=5.0, close_reason="spread_closed", net_bps=1.0),
        event("open", 1.0, net_bps=6.0, profit_quote=20.0, quantity=1.0),
        legacy_shadow(1.05, 6.0, (6.0, -1.0, 3.0)),
        event("update", 1.1, net_bps=7.0, profit_quote=22.0, quantity=1.0),
        event("close", 1.2, duration_ms=200.0, peak_net_bps=7.0, close_reason="spread_closed", net_bps=1.0),
        event("open", 2.0, "ETH/USD", "coinbase", "kraken", net_bps=2.0, profit_quote=5.0, quantity=2.0),
        event("close", 2.3, "ETH/USD", "coinbase", "kraken", duration_ms=300.0, peak_net_bps=3.0,
              close_reason="spread_closed", net_bps=1.0),
        event("open", 3.0, "BTC/USDT", "okx", "bybit", net_bps=8.0, profit_quote=30.0, quantity=1.0),
        event("close", 4.0, "BTC/USDT", "okx", "bybit", duration_ms=1000.0, peak_net_bps=9.0,
              close_reason="quote_stale", net_bps=1.0),
    ]


def write_legacy(path: Path) -> Path:
    return write(path, legacy_records(), b"{not json\n")


PLOT_LINES = """\
![pairs over time](pairs_over_time.png)
![edges](edges.png)
![lifetimes](lifetimes.png)
![shadow](shadow.png)
![profit by pair](profit_by_pair.png)
"""

SHADOW_HEAD = """\
| shadow fill after | checked | full fills profitable/all | partial fills profitable/all | nothing filled | \
still profitable, by size | realized profit | mean net bps | edge kept |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
"""

SHADOW_NOTE = """
Full fills: both legs could take the whole size detected (fill fraction >= 0.999999); partial: only part of it; \
profitable: net edge after both fees above zero. Still profitable, by size: the size the profitable fills filled \
as a share of the size detected, both valued at the detected buy price. Realized profit: after both fees, on what \
filled. Edge kept: the shadow fills' \
total net edge as a share of the total edge detected, over the fills where both legs were tradable.

"""

EXPECTED_LEGACY = """\
# Run report: `run.jsonl`

From 2027-01-15 08:00:00 UTC, 4.0 s of events.
Events: 4 open, 2 update, 4 close, 2 shadow. 1 unreadable lines skipped.

**4 opportunities opened**; expected profit at detection: 5.00 USD, 60.00 USDT (older records: liquidity two \
open opportunities shared counts for each).

| buy > sell | opened | median net bps | expected profit |
|---|---:|---:|---|
| binance>bybit | 2 | 4.00 | 30.00 USDT |
| coinbase>kraken | 1 | 2.00 | 5.00 USD |
| okx>bybit | 1 | 8.00 | 30.00 USDT |

Lifetime of 4 closed (nearest rank): p50 200.0 ms, p90 1000.0 ms, max 1000.0 ms. Closed by: spread_closed 3, \
quote_stale 1.

""" + SHADOW_HEAD + """\
| 5 ms | 2 | 2/2 | 0/0 | 0 | 100% | - | +4.50 | 90% |
| 20 ms | 2 | 1/2 | 0/0 | 0 | 50% | - | +0.00 | 0% |
| 50 ms | 2 | 1/1 | 0/0 | 1 | 50% | - | +3.00 | 50% |
""" + SHADOW_NOTE + PLOT_LINES


def test_a_file_without_run_ids_still_reports_with_the_numbers_worked_out_by_hand(tmp_path):
    # profit: USDT 10 + 20 + 30, USD 5; binance>bybit median of [4, 6] by nearest rank is 4;
    # lifetimes [100, 200, 300, 1000]: p50 is the 2nd, p90 the 4th. Every fill took the whole 1.0 detected
    # (``filled`` 1.0 of ``quantity`` 1.0): full fills. 5 ms: both profitable, by size 2 / 2; (3 + 6) / 2 =
    # 4.5 bps, kept (3 + 6) / (4 + 6) = 90 %; 20 ms: 1 of 2 above zero, by size 1 / 2, (1 - 1) / 2 = 0, kept
    # 0 / 10 = 0 %; 50 ms: the stale fill is checked but not tradable (nothing filled), by size 1 / 2, 3 bps,
    # kept 3 / 6 (its detected 4 bps left out). Older records carry no profit per fill: realized "-".
    records, bad = runreport.read_records(str(write_legacy(tmp_path / "run.jsonl")))
    [(run_id, run)] = runreport.split_runs(records)
    assert run_id == runreport.LEGACY_RUN and len(run) == 12
    summary = runreport.summarize(run, run_id)
    summary.skipped_lines = bad
    assert summary.flaps is None                          # no close carried flaps: no flaps line
    assert runreport.render_markdown(str(tmp_path / "run.jsonl"), summary) == EXPECTED_LEGACY


# ---------------------------------------------------------------- the current schema
def fill(latency, filled, fraction, net, profit, reason=""):
    return {"latency_ms": latency, "filled_qty_base": filled, "fill_fraction": fraction, "buy_price": 1.0,
            "sell_price": 1.0, "net_bps": net, "profit_quote": profit, "slippage_bps": 0.0, "reason": reason}


def current(kind, t_s, run_id, number, instrument="BTC/USDT", buy="binance", sell="bybit", **fields):
    base, quote = instrument.split("/")
    return event(kind, t_s, instrument, buy, sell, run_id=run_id, id=number, buy_instrument=instrument,
                 sell_instrument=instrument, base_currency=base, quote_currency=quote, **fields)


def run_b() -> list[dict]:
    """Two opportunities, 100 s after run A; partial shadow fills and flaps."""
    eth = dict(instrument="ETH/USDT", buy="okx", sell="kraken")
    return [
        current("open", 100.0, RUN_B, 1, net_bps=5.0, profit_quote=10.0, qty_base=2.0),
        current("shadow", 100.05, RUN_B, 1, net_bps=5.0, qty_base=2.0, opened_time_ns=T0 + 100 * S,
                shadow_fills=[fill(5.0, 2.0, 1.0, 4.0, 8.0),
                              fill(20.0, 0.5, 0.25, 2.0, 1.0),
                              fill(50.0, 0.0, 0.0, None, None, "quote_stale")]),
        current("update", 100.08, RUN_B, 1, net_bps=6.0, profit_quote=12.0, qty_base=2.0),
        current("close", 100.15, RUN_B, 1, net_bps=1.0, profit_quote=1.0, qty_base=2.0, duration_ms=150.0,
                peak_net_bps=6.0, peak_profit_quote=12.0, close_reason="spread_closed", flaps=2),
        current("open", 101.0, RUN_B, 2, **eth, net_bps=3.0, profit_quote=4.0, qty_base=4.0),
        current("shadow", 101.05, RUN_B, 2, **eth, net_bps=3.0, qty_base=4.0, opened_time_ns=T0 + 101 * S,
                shadow_fills=[fill(5.0, 1.0, 0.25, -2.0, -0.4),
                              fill(20.0, 4.0, 1.0, 1.5, 2.4),
                              fill(50.0, 3.0, 0.75, 0.5, 0.6)]),
        current("close", 101.2, RUN_B, 2, **eth, net_bps=1.0, profit_quote=1.0, qty_base=4.0, duration_ms=200.0,
                peak_net_bps=3.5, peak_profit_quote=5.0, close_reason="quote_stale", flaps=0),
    ]


def run_a() -> list[dict]:
    return [
        current("open", 0.0, RUN_A, 1, "BTC/USDT", "okx", "bybit", net_bps=8.0, profit_quote=30.0, qty_base=1.0),
        current("close", 2.0, RUN_A, 1, "BTC/USDT", "okx", "bybit", net_bps=1.0, profit_quote=1.0, qty_base=1.0,
                duration_ms=2000.0, peak_net_bps=9.0, peak_profit_quote=33.0, close_reason="spread_closed", flaps=1),
    ]


# Run B by hand. Expected profit 10 + 4 USDT. Lifetimes [150, 200]: p50 the 1st, p90 the 2nd. Flaps 2 + 0.
# Size detected at each latency 2 + 4 = 6.
#   5 ms: BTC filled all 2.0 at +4 (full, profitable); ETH 1.0 of 4.0 at -2 (partial, not profitable).
#         by size 2.0 / 6 = 33 %; realized 8.0 - 0.4 = 7.60; mean (4 - 2) / 2 = +1.00; kept 2 / (5 + 3) = 25 %.
#  20 ms: BTC 0.5 of 2.0 at +2 (partial, profitable); ETH all 4.0 at +1.5 (full, profitable).
#         by size (0.5 + 4.0) / 6 = 75 %; realized 1.0 + 2.4 = 3.40; mean 3.5 / 2 = +1.75; kept 3.5 / 8 = 44 %.
#  50 ms: BTC nothing filled (quote_stale); ETH 3.0 of 4.0 at +0.5 (partial, profitable).
#         by size 3.0 / 6 = 50 %; realized 0.60; mean +0.50; kept 0.5 / 3 (BTC's detected 5 left out) = 17 %.
BODY_B = """\
From 2027-01-15 08:01:40 UTC, 1.2 s of events.
Events: 2 open, 1 update, 2 close, 2 shadow.

**2 opportunities opened**; expected profit at detection, over liquidity no two open opportunities share: \
14.00 USDT.

| buy > sell | opened | median net bps | expected profit |
|---|---:|---:|---|
| binance>bybit | 1 | 5.00 | 10.00 USDT |
| okx>kraken | 1 | 3.00 | 4.00 USDT |

Lifetime of 2 closed (nearest rank): p50 150.0 ms, p90 200.0 ms, max 200.0 ms. Closed by: spread_closed 1, \
quote_stale 1.

Flaps: 2 (an open opportunity's edge dropped out and came back within `detector.reopen_ms`; counted on its close).

""" + SHADOW_HEAD + """\
| 5 ms | 2 | 1/1 | 0/1 | 0 | 33% | 7.60 USDT | +1.00 | 25% |
| 20 ms | 2 | 1/1 | 1/1 | 0 | 75% | 3.40 USDT | +1.75 | 44% |
| 50 ms | 2 | 0/0 | 1/1 | 1 | 50% | 0.60 USDT | +0.50 | 17% |
""" + SHADOW_NOTE

BODY_A = """\
From 2027-01-15 08:00:00 UTC, 2.0 s of events.
Events: 1 open, 0 update, 1 close, 0 shadow.

**1 opportunities opened**; expected profit at detection, over liquidity no two open opportunities share: \
30.00 USDT.

| buy > sell | opened | median net bps | expected profit |
|---|---:|---:|---|
| okx>bybit | 1 | 8.00 | 30.00 USDT |

Lifetime of 1 closed (nearest rank): p50 2000.0 ms, p90 2000.0 ms, max 2000.0 ms. Closed by: spread_closed 1.

Flaps: 1 (an open opportunity's edge dropped out and came back within `detector.reopen_ms`; counted on its close).

"""


def test_partial_and_full_shadow_fills_are_counted_apart_and_weighted_by_size():
    summary = runreport.summarize(run_b(), RUN_B)
    rows = {row.latency_ms: row for row in summary.shadow_rows()}
    five = rows[5.0]
    assert (five.checked, five.full, five.full_profitable, five.partial, five.partial_profitable, five.unfilled) \
        == (2, 1, 1, 1, 0, 0)
    assert abs(five.size_share - 2.0 / 6.0) < 1e-12 and abs(five.realized["USDT"] - 7.6) < 1e-12
    twenty = rows[20.0]
    assert (twenty.full, twenty.full_profitable, twenty.partial, twenty.partial_profitable) == (1, 1, 1, 1)
    assert twenty.size_share == 0.75
    fifty = rows[50.0]
    assert (fifty.full, fifty.partial, fifty.partial_profitable, fifty.unfilled) == (0, 1, 1, 1)
    assert fifty.size_share == 0.5 and abs(fifty.edge_kept - 0.5 / 3.0) < 1e-12
    assert summary.flaps == 2 and summary.profit() == {"USDT": 14.0}
    assert runreport.render_markdown("o.jsonl", summary) == (
        f"# Run report: `o.jsonl`\n\nRun `{RUN_B}`.\n\n" + BODY_B + PLOT_LINES)


def test_a_file_with_two_runs_reports_the_last_and_says_which(tmp_path, capsys):
    source = write(tmp_path / "two.jsonl", run_a() + run_b())
    records, _ = runreport.read_records(str(source))
    assert [(run_id, len(run)) for run_id, run in runreport.split_runs(records)] == [(RUN_A, 2), (RUN_B, 7)]
    result = report(capsys, str(source), "--no-plots")         # the plots: the tests below and the one after
    assert result.returncode == 0, result.stderr
    out = tmp_path / f"two-{RUN_B}-report"
    assert result.stdout.splitlines() == [
        f"report: {source} holds 2 runs; reporting run {RUN_B} (7 events); --run ID or --run all",
        f"report: 7 events -> {out}/summary.md (no plots)"]
    assert (out / "summary.md").read_text() == (
        f"# Run report: `two.jsonl`\n\nRun `{RUN_B}`, one of the 2 runs in the file (by default the last; "
        f"`--run ID` chooses another, `--run all` reports every one).\n\n" + BODY_B)
    assert sorted(p.name for p in out.iterdir()) == ["summary.md"]
    chosen = report(capsys, str(source), "--run", RUN_A, "--out", str(tmp_path / "a"), "--no-plots")
    assert chosen.returncode == 0, chosen.stderr
    assert f"reporting run {RUN_A} (2 events)" in chosen.stdout
    assert BODY_A in (tmp_path / "a" / "summary.md").read_text()
    unknown = report(capsys, str(source), "--run", "nope")
    assert unknown.returncode == 2 and unknown.stderr == (
        f"run.py report: --run: no run 'nope' in {str(source)!r} (it holds {RUN_A}, {RUN_B})\n")


def test_run_all_reports_the_runs_one_after_another_never_as_one_span(tmp_path, capsys):
    source = write(tmp_path / "two.jsonl", run_a() + run_b())
    result = report(capsys, str(source), "--run", "all", "--out", str(tmp_path / "all"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"report: {source} holds 2 runs; reporting all 2, one after another (9 events)")
    plots = {n: "".join(line.replace("](", f"](run{n}-") + "\n" for line in PLOT_LINES.splitlines())
             for n in (1, 2)}
    assert (tmp_path / "all" / "summary.md").read_text() == (
        "# Run report: `two.jsonl`\n\n2 runs in the file, each reported on its own (`--run all`).\n\n"
        "| run | from (UTC) | s of events | events | opened | expected profit | flaps |\n"
        "|---|---|---:|---:|---:|---|---:|\n"
        f"| `{RUN_A}` | 2027-01-15 08:00:00 | 2.0 | 2 | 1 | 30.00 USDT | 1 |\n"
        f"| `{RUN_B}` | 2027-01-15 08:01:40 | 1.2 | 7 | 2 | 14.00 USDT | 2 |\n\n"
        f"## Run `{RUN_A}` (1 of 2)\n\n" + BODY_A + plots[1] + "\n"
        f"## Run `{RUN_B}` (2 of 2)\n\n" + BODY_B + plots[2])
    for n in (1, 2):
        for name in runreport.PLOTS:
            assert (tmp_path / "all" / f"run{n}-{name}").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_legacy_records_before_a_run_with_ids_are_a_run_of_their_own():
    records = legacy_records() + run_b()
    runs = runreport.split_runs(records)
    assert [(run_id, len(run)) for run_id, run in runs] == [(runreport.LEGACY_RUN, 12), (RUN_B, 7)]
    assert runreport.summarize(runs[0][1]).duration_s == 4.0            # not 101.2 s: the gap is not a span


def test_report_follows_the_link_to_the_latest_run_file(tmp_path, capsys):
    write(tmp_path / f"opps-{RUN_B}.jsonl", run_b())
    os.symlink(f"opps-{RUN_B}.jsonl", tmp_path / "opps.jsonl")
    result = report(capsys, str(tmp_path / "opps.jsonl"), "--no-plots")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"report: {tmp_path / 'opps.jsonl'} holds 1 run; reporting run {RUN_B} (7 events)")
    summary = (tmp_path / f"opps-{RUN_B}-report" / "summary.md").read_text()
    assert summary == f"# Run report: `opps-{RUN_B}.jsonl` (via `opps.jsonl`)\n\nRun `{RUN_B}`.\n\n" + BODY_B


def test_report_command_writes_plots_and_summary(tmp_path):
    source = write_legacy(tmp_path / "run.jsonl")
    result = run_cli("report", str(source), "--out", str(tmp_path / "out"), timeout=120)
    assert result.returncode == 0, result.stderr
    for name in runreport.PLOTS:
        data = (tmp_path / "out" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert (tmp_path / "out" / "summary.md").read_text() == EXPECTED_LEGACY
    assert result.stdout.splitlines()[0] == f"report: {source} holds 1 run; reporting run (no run id) (12 events)"


def test_report_default_directory_and_errors(tmp_path, capsys):
    source = write_legacy(tmp_path / "run.jsonl")
    assert report(capsys, str(source), "--no-plots").returncode == 0
    assert (tmp_path / "run-report" / "summary.md").exists()
    missing = report(capsys, str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "empty.jsonl").write_text("")
    empty = report(capsys, str(tmp_path / "empty.jsonl"))
    assert empty.returncode == 1 and "no opportunity events" in empty.stderr


def test_the_share_still_profitable_by_size_weighs_each_opportunity_by_its_value():
    # a BTC opportunity of 1.0 at 60 000 (60 000 USDT) half filled at a profit, and a SOL one of 100 at 150
    # (15 000 USDT) filled whole at a loss: 30 000 / 75 000 = 40 % of the detected size filled at a profit
    # (by base quantities it would read 0.5 / 101, as if the SOL were worth as much a unit as the BTC)
    btc = event("shadow", 0.05, net_bps=10.0, qty_base=1.0, notional_quote=60_000.0, quote_currency="USDT",
                shadow_fills=[{"latency_ms": 5.0, "filled_qty_base": 0.5, "fill_fraction": 0.5, "net_bps": 8.0,
                               "profit_quote": 24.0, "reason": ""}])
    sol = event("shadow", 0.06, "SOL/USDT", net_bps=10.0, qty_base=100.0, notional_quote=15_000.0,
                quote_currency="USDT", shadow_fills=[{"latency_ms": 5.0, "filled_qty_base": 100.0,
                                                      "fill_fraction": 1.0, "net_bps": -2.0, "profit_quote": -3.0,
                                                      "reason": ""}])
    [row] = runreport.summarize([btc, sol]).shadow_rows()
    assert (row.full, row.full_profitable, row.partial, row.partial_profitable) == (1, 0, 1, 1)
    assert row.size_share == 0.4
    assert row.realized == {"USDT": 21.0}
