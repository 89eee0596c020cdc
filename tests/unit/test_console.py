"""The console: a real board written through the seqlock, read back read-only,
rendered to exact text; the event book; the file tail; the readable stdout lines."""
from __future__ import annotations

import dataclasses

import orjson
import pytest

from pipeline.board import Board, ProcSnapshot, RowStatus, RowWriter
from pipeline.board.histogram import HistogramWriter
from pipeline.console.app import Console, Setup
from pipeline.console.events import EventBook, JsonlTail
from pipeline.console.render import View, check_alerts, edge_bps, render_text
from pipeline.console.snapshot import BoardSource, ProcessStats, Quote, Snapshot
from pipeline.detector import report
from pipeline.model import ProcessRole
from pipeline.runtime import RowAssignment

NOW = 1_700_000_000_000_000_000
MS = 1_000_000
ROWS = [
    RowAssignment(0, "binance", "BTC/USDT", "BTCUSDT"),
    RowAssignment(1, "bybit", "BTC/USDT", "BTCUSDT"),
    RowAssignment(2, "kraken", "BTC/USDT", "XBT/USDT", box="frankfurt"),
]
FEES = {("binance", "BTC/USDT"): 10.0, ("bybit", "BTC/USDT"): 10.0, ("kraken@frankfurt", "BTC/USDT"): 40.0}


def record(kind: str, t_ms: float, buy="binance", sell="bybit", net=5.0, **extra) -> dict:
    r = {"event": kind, "time_ns": NOW + int(t_ms * MS), "instrument": "BTC/USDT", "buy_exchange": buy,
         "sell_exchange": sell, "base_currency": "BTC", "quote_currency": "USDT", "net_bps": net, "qty_base": 0.5,
         "profit_quote": 12.5}
    r.update(extra)
    return r


def shadow(t_ms: float, buy="binance", sell="bybit", nets=(4.0, 1.5, None), fractions=(1.0, 1.0, 0.0),
           **extra) -> dict:
    fills = [{"latency_ms": latency, "net_bps": n, "reason": "" if n is not None else "quote_stale",
              "filled_qty_base": 0.5 * f, "fill_fraction": f}
             for latency, n, f in zip((5.0, 20.0, 50.0), nets, fractions)]
    return record("shadow", t_ms, buy, sell, shadow_fills=fills, opened_time_ns=NOW, **extra)


@pytest.fixture
def board(board_name):
    b = Board.create(board_name, len(ROWS), 5, 4)
    yield b
    b.destroy()


def fill_board(board: Board) -> None:
    writer = RowWriter(board, [0, 1, 2])
    # binance asks 100.00, bybit bids 100.30: +30 bps gross, +10 net after 10 + 10 bps fees
    # exchange times: binance's change arrived 30 ms after it, bybit's 52.5 ms (of which 2.5 ms are its clock offset)
    writer.write(0, int(RowStatus.LIVE), [(99.9, 2.0)], [(100.0, 1.0)], NOW - 34 * MS, NOW - 4 * MS)
    writer.write(1, int(RowStatus.LIVE), [(100.3, 3.0)], [(100.4, 1.0)], NOW - 64_500_000, NOW - 12 * MS)
    writer.write(2, int(RowStatus.STALE), [(99.0, 1.0)], [(99.5, 1.0)], 0, NOW - 7_500 * MS)
    procs = board.procs
    for slot, (role, venue_id, messages, gaps) in enumerate([(ProcessRole.FEED, 1, 1000, 0),
                                                             (ProcessRole.FEED, 2, 500, 0),
                                                             (ProcessRole.FEED, 6, 0, 40),
                                                             (ProcessRole.DETECTOR, 0, 0, 0)]):
        procs[slot]["role"] = int(role)
        procs[slot]["pid"] = 1000 + slot
        procs[slot]["venue_id"] = venue_id
        procs[slot]["messages"] = messages
        procs[slot]["gaps"] = gaps
        procs[slot]["heartbeat_ns"] = NOW - 100 * MS
    procs[1]["clock_offset_ns"] = 2_500_000
    procs[3]["opportunities"] = 7
    for ns in (100_000, 100_000, 100_000, 900_000):        # binance receive_to_publish
        HistogramWriter(board, 0, 1).record(ns)
    HistogramWriter(board, 3, 2).record(300_000)            # detector receive_to_emitted


def test_render_of_a_known_board_is_exact(board):
    fill_board(board)
    source = BoardSource(board, ROWS, FEES)
    source.read(NOW - 1_000 * MS)
    board.procs[0]["messages"] = 1500                        # +500 in one second
    board.procs[2]["gaps"] = 45                              # +5 in one second: a gap storm
    snapshot = source.read(NOW)
    book = EventBook()
    book.apply(record("open", -300, net=8.0))
    book.apply(record("update", -100, net=10.0))
    book.apply(record("open", -2000, buy="bybit", sell="binance", net=1.0))
    book.apply(shadow(-1950, buy="bybit", sell="binance"))
    book.apply(record("close", -1500, buy="bybit", sell="binance", duration_ms=500.0, peak_net_bps=2.5,
                      close_reason="spread_closed", flaps=2))
    # a shadow fill that took 14 % of the size detected at the longest latency (too long for one line at 80)
    book.apply(record("open", -1200, buy="kraken@frankfurt", sell="bybit", net=3.0))
    book.apply(shadow(-1150, buy="kraken@frankfurt", sell="bybit", nets=(2.0, 1.0, 0.5), fractions=(1.0, 0.5, 0.14)))
    book.apply(record("close", -1000, buy="kraken@frankfurt", sell="bybit", duration_ms=200.0, peak_net_bps=3.0,
                      close_reason="spread_closed", flaps=1))
    text = render_text(snapshot, book, NOW, View(width=80, height=24))
    expected = f"""\
{board.name[:16]} 22:13:20  live 2/3  500 msg/s  1 open  e2e p50/p99 300/300µs
BTC/USDT [1/1]        bid    qty       ask    qty       mid  sprd   imb   age
binance  live     99.9000      2  100.0000      1   99.9500 10.01 +0.33   4ms
bybit    live    100.3000      3  100.4000      1  100.3500  9.97 +0.50  12ms
kraken@f stale    99.0000      1   99.5000      1   99.2500 50.38 +0.00  7.5s
net bps buy/sell binance   bybit kraken@
binance               ·  *+10.0       -
bybit             -69.8       ·       -
kraken@frankfur       -       -       ·
venue   msg/s rcn gap lagms p50/p99µs open 1 flaps 3 (net/peak bps, size, age)
binance   500   0   0    30   115/900 BTC/USDT binan>bybit 10.0/10.0 0.5 300ms
bybit       0   0   0    50         - closed (lifetime, peak, shadow fill)
kraken      0   0  45     -         - BTC/USDT krake>bybit 200ms 3.0 0.5@50ms
                                                                     14% filled
                                      BTC/USDT bybit>binan 500ms 2.5 x@50ms
alerts: kraken@frankfurt stale; kraken gap storm 5/s
f/b next/previous instrument   p pause   q quit"""
    assert text == expected
    # wider: the partial fill fits on the close's own line
    wide = render_text(snapshot, book, NOW, View(width=100, height=24)).splitlines()
    assert wide[12].endswith("BTC/USDT kraken>bybit  200ms 3.0 0.5@50ms 14% filled")
    # an instrument is never cut: SHIB/USDT cut to SHIB/USD would be another instrument
    book.apply(record("open", -100, net=12.0, instrument="SHIB/USDT", base_currency="SHIB"))
    lines = render_text(snapshot, book, NOW, View(width=80, height=24)).splitlines()
    assert lines[10].endswith("SHIB/USDT binan>bybit 12.0/12.0 0.5 100ms")
    assert lines[11].endswith("BTC/USDT  binan>bybit 10.0/10.0 0.5 300ms")
    # nor is a figure: a wide edge and size make the peak give way before the age is cut (738ms cut is 738m)
    book.apply(record("open", -738, net=152.8, instrument="SHIB/USDT", base_currency="SHIB", qty_base=91765.4321))
    lines = render_text(snapshot, book, NOW, View(width=80, height=24)).splitlines()
    assert lines[10].endswith(" SHIB/USDT binan>bybit 152.8 92k 738ms"), lines[10]


def test_edge_is_net_of_both_fees_at_the_top_of_book():
    buy = Quote(0, "a", "X/Y", "live", 99.0, 1.0, 100.0, 1.0, NOW)
    sell = Quote(1, "b", "X/Y", "live", 100.5, 1.0, 101.0, 1.0, NOW)
    assert edge_bps(buy, sell, 10.0, 20.0) == pytest.approx(50.0 - 30.0)
    assert edge_bps(buy, Quote(1, "b", "X/Y", "stale", 100.5, 1.0, 101.0, 1.0, NOW), 10.0, 20.0) is None


def test_alerts_name_unknown_states_restarts_and_silence():
    quotes = (Quote(0, "okx", "X/Y", "halted", 1, 1, 2, 1, NOW), Quote(1, "okx", "Z/Y", "state9", 1, 1, 2, 1, NOW))
    slot = ProcSnapshot(role=ProcessRole.FEED, pid=1, taken_ns=NOW, heartbeat_ns=NOW - 2500 * MS, restarts=3,
                        record_dropped=12, schema_fallbacks=4)
    procs = (ProcessStats("okx", "feed", slot, messages_per_s=10.0, gaps_per_s=0.0, restarted_recently=True),)
    snapshot = Snapshot("b", NOW, ("X/Y", "Z/Y"), quotes, procs, ())
    assert check_alerts(snapshot) == ["okx halted,state9", "okx restarted (3x)", "okx recording failing (12 frames)",
                                      "okx wire format changed (4 frames with unknown fields)", "okx silent 2s"]


def test_a_feed_behind_is_an_alert_and_its_venue_line_shows_the_lag():
    from pipeline.console.render import _lag
    from pipeline.console.snapshot import exchange_lag_ms
    slot = ProcSnapshot(role=ProcessRole.FEED, pid=1, taken_ns=NOW, heartbeat_ns=NOW - 100 * MS, behind=1,
                        backlog_wait_ns=1_750_000_000, backlog_frames=64, late_frames=250)
    behind = ProcessStats("okx", "feed", slot, messages_per_s=10.0, gaps_per_s=0.0)
    assert check_alerts(Snapshot("b", NOW, (), (), (behind,), ())) == ["okx behind 1.8s (64 queued, 250 late)"]
    # the lag is the newest own row's (receive - exchange time - clock offset); bridged rows and rows without an
    # exchange time do not count
    quotes = (Quote(0, "okx", "X/Y", "live", 1, 1, 2, 1, NOW - 5 * MS, NOW - 25 * MS),
              Quote(1, "okx", "Z/Y", "live", 1, 1, 2, 1, NOW - 9 * MS, NOW - 11 * MS),
              Quote(2, "okx", "W/Y", "live", 1, 1, 2, 1, NOW),
              Quote(3, "okx@tokyo", "X/Y", "live", 1, 1, 2, 1, NOW, NOW - 900 * MS))
    assert exchange_lag_ms(quotes, "okx", 3 * MS) == 17.0             # row 0: 20 ms, less the 3 ms offset
    assert exchange_lag_ms(quotes, "bybit", 0) is None
    assert [_lag(v) for v in (None, 17.0, -0.4, -12.6, 9_999.0, 12_345.0, 9_999_000.0, 3.6e7)] == [
        "-", "17", "0", "-13", "9999", "12s", "9999s", "10h"]


def test_a_path_of_a_redundant_feed_that_holds_fewer_rows_trusted_is_an_alert():
    """The rows stay live from the other path, so only the feed's slot can say one of its connections is bad."""
    quotes = (Quote(0, "okx", "X/Y", "live", 1, 1, 2, 1, NOW), Quote(1, "okx", "Z/Y", "live", 1, 1, 2, 1, NOW),
              Quote(2, "okx@tokyo", "X/Y", "live", 1, 1, 2, 1, NOW))
    slot = ProcSnapshot(role=ProcessRole.FEED, pid=1, taken_ns=NOW, heartbeat_ns=NOW - 100 * MS, paths=2,
                        path_live_rows=(2, 0, 0, 0))
    feed = ProcessStats("okx", "feed", slot, messages_per_s=10.0, gaps_per_s=0.0)
    assert check_alerts(Snapshot("b", NOW, ("X/Y", "Z/Y"), quotes, (feed,), ())) == [
        "okx path 1: 0/2 rows trusted (the other paths carry them)"]
    whole = ProcessStats("okx", "feed", dataclasses.replace(slot, path_live_rows=(2, 2, 0, 0)), messages_per_s=10.0,
                         gaps_per_s=0.0)
    assert check_alerts(Snapshot("b", NOW, ("X/Y", "Z/Y"), quotes, (whole,), ())) == []


def test_event_book_follows_the_lifecycle_and_ignores_an_earlier_run():
    book = EventBook(keep=2, since_ns=NOW)
    book.apply(record("open", -5000))                      # an earlier run in the same file
    assert not book.open
    book.apply(record("open", 0, net=3.0))
    book.apply(record("update", 10, net=6.0))
    book.apply(record("update", 20, net=4.0))
    opp = book.open[("BTC/USDT", "binance", "bybit")]
    assert (opp.net_bps, opp.peak_net_bps) == (4.0, 6.0)
    book.apply(record("close", 100, duration_ms=100.0, peak_net_bps=6.0, close_reason="quote_stale"))
    book.apply(shadow(120))                                # the shadow can come after the close
    assert not book.open
    assert book.closes[0].shadow == ((5.0, 4.0, "", 1.0), (20.0, 1.5, "", 1.0), (50.0, None, "quote_stale", 0.0))
    for i in range(3):
        book.apply(record("open", 200 + i, buy=f"v{i}"))
        book.apply(record("close", 300 + i, buy=f"v{i}", duration_ms=1.0, peak_net_bps=1.0, close_reason="x"))
    assert [c.buy for c in book.closes] == ["v2", "v1"]    # newest first, ``keep`` of them


def test_tail_reads_whole_lines_and_starts_over_after_truncation(tmp_path):
    path = tmp_path / "o.jsonl"
    tail = JsonlTail(str(path))
    assert tail.read() == []                               # not there yet
    path.write_bytes(orjson.dumps(record("open", 0)) + b"\n" + b'{"event": "upd')
    assert [r["event"] for r in tail.read()] == ["open"]
    with open(path, "ab") as f:
        f.write(b'ate", "time_ns": 1}\nnot json\n')
    assert tail.read() == [{"event": "update", "time_ns": 1}]
    path.write_bytes(orjson.dumps(record("close", 0)) + b"\n")     # truncated and rewritten
    assert [r["event"] for r in tail.read()] == ["close"]
    tail.close()


def test_event_book_reads_sizes_of_both_schemas_counts_flaps_and_starts_over_on_a_new_run():
    book = EventBook()
    book.apply(record("open", 0, run_id="run-a", id=1, qty_base=0.25))
    assert book.open[("BTC/USDT", "binance", "bybit")].qty_base == 0.25
    book.apply(record("update", 5, run_id="run-a", id=1, qty_base=0.75, net=7.0))
    assert book.open[("BTC/USDT", "binance", "bybit")].qty_base == 0.75
    book.apply(record("close", 10, run_id="run-a", id=1, duration_ms=10.0, peak_net_bps=7.0,
                      close_reason="spread_closed", flaps=2))
    book.apply(record("open", 20, run_id="run-a", id=2, buy="okx"))
    book.apply(record("close", 30, run_id="run-a", id=2, buy="okx", duration_ms=10.0, peak_net_bps=5.0,
                      close_reason="quote_stale", flaps=3))
    assert (book.counts["flaps"], book.counts["open"], book.counts["close"]) == (5, 2, 2)
    book.apply(record("open", 40, run_id="run-a", id=3, buy="htx"))
    # a record of another run: a new run started; what was open belonged to the old one
    book.apply(record("open", 50, run_id="run-b", id=1, buy="kraken"))
    assert list(book.open) == [("BTC/USDT", "kraken", "bybit")] and book.run_id == "run-b"
    assert (book.counts["flaps"], book.counts["open"]) == (0, 1)
    assert [c.buy for c in book.closes] == ["okx", "binance"]          # the last closes stay, as history
    # a late shadow goes to the close of its own id, not to a later close of the same pair
    book.apply(record("close", 60, run_id="run-b", id=1, buy="kraken", duration_ms=10.0, peak_net_bps=5.0,
                      close_reason="spread_closed"))
    book.apply(record("open", 70, run_id="run-b", id=2, buy="kraken"))
    book.apply(record("close", 80, run_id="run-b", id=2, buy="kraken", duration_ms=10.0, peak_net_bps=5.0,
                      close_reason="spread_closed"))
    book.apply(shadow(90, buy="kraken", run_id="run-b", id=1, fractions=(1.0, 0.5, 0.0)))
    assert [(c.id, c.shadow is not None) for c in book.closes][:2] == [(2, False), (1, True)]
    assert book.closes[1].shadow[1] == (20.0, 1.5, "", 0.5)
    # a record of an older version: ``quantity``, no run id, no id, ``filled`` instead of fill_fraction
    def older(r: dict) -> dict:
        return {k: v for k, v in r.items() if k not in ("qty_base", "quote_currency")}
    old = EventBook()
    old.apply(older(record("open", 0, quantity=2.0)))
    assert old.open[("BTC/USDT", "binance", "bybit")].qty_base == 2.0
    old.apply(older(record("close", 10, duration_ms=10.0, peak_net_bps=5.0, close_reason="spread_closed")))
    old.apply(older(record("shadow", 20, quantity=2.0,
                           shadow_fills=[{"latency_ms": 5.0, "filled": 0.5, "net_bps": 1.0, "reason": ""}])))
    assert old.closes[0].shadow == ((5.0, 1.0, "", 0.25),) and old.counts["flaps"] == 0


def test_tail_follows_the_link_when_a_new_run_repoints_it(tmp_path):
    import os
    first, second, link = tmp_path / "o-run-a.jsonl", tmp_path / "o-run-b.jsonl", tmp_path / "o.jsonl"
    first.write_bytes(orjson.dumps(record("open", 0, run_id="run-a")) + b"\n")
    os.symlink(first.name, link)
    tail = JsonlTail(str(link))
    assert [r["run_id"] for r in tail.read()] == ["run-a"]
    with open(first, "ab") as f:
        f.write(orjson.dumps(record("close", 5, run_id="run-a")) + b"\n")
    assert [r["event"] for r in tail.read()] == ["close"]
    # a new run: its own file (longer than what was read of the old one: no shrink to notice), the link repointed
    second.write_bytes(b"".join(orjson.dumps(record(kind, t, run_id="run-b", buy=f"v{t}")) + b"\n"
                                for kind, t in (("open", 10), ("update", 11), ("open", 12))))
    os.symlink(second.name, tmp_path / "tmp-link")
    os.replace(tmp_path / "tmp-link", link)
    assert [(r["run_id"], r["event"]) for r in tail.read()] == [("run-b", "open"), ("run-b", "update"),
                                                                ("run-b", "open")]
    with open(first, "ab") as f:                                   # the old run's file is no longer followed
        f.write(orjson.dumps(record("open", 20, run_id="run-a")) + b"\n")
    with open(second, "ab") as f:
        f.write(orjson.dumps(record("close", 21, run_id="run-b", buy="v10")) + b"\n")
    assert [(r["run_id"], r["event"]) for r in tail.read()] == [("run-b", "close")]
    tail.close()


def test_tail_starts_near_the_end_of_a_long_file(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_bytes(b"".join(orjson.dumps(record("open", i)) + b"\n" for i in range(1000)))
    records = JsonlTail(str(path), start_back_bytes=1000).read()
    assert 0 < len(records) < 10 and records[-1]["time_ns"] == NOW + 999 * MS


def test_keys_choose_the_instrument_pause_and_quit(board):
    rows = ROWS + [RowAssignment(2, "kraken", "ETH/USDT", "ETH/USDT")]
    console = Console(Setup(board, rows[:2] + rows[3:], FEES, None, 0))
    assert console.current_instrument() == "BTC/USDT"
    console.key("f")
    assert console.current_instrument() == "ETH/USDT"
    console.key("b")
    console.key("b")
    assert console.current_instrument() == "ETH/USDT"
    console.key("p")
    assert console.paused
    console.key("q")
    assert console.stop and console.quit_requested


# ---------------------------------------------------------------- readable stdout
def test_default_stdout_is_open_and_close_with_the_shadow_outcome():
    opened = record("open", 0, id=7, net=5.98, qty_base=1.10356, profit_quote=42.68)
    update = dict(record("update", 1, id=7), buy_price=1.0, sell_price=1.0, gross_bps=25.0)
    closed = record("close", 160, id=7, duration_ms=159.7, peak_net_bps=7.19, close_reason="spread_closed", flaps=2)
    assert report.event_line(opened) == \
        "OPEN  BTC/USDT   buy binance  sell bybit    net   5.98 bps  qty 1.104 BTC  profit 42.68 USDT"
    assert report.event_line(update) is None
    assert report.event_line(shadow(50, id=7, fractions=(1.0, 0.14, 0.0))) is None
    assert report.event_line(closed) == ("CLOSE BTC/USDT   buy binance  sell bybit    after 160 ms peak 7.19 bps "
                                         "(spread_closed, 2 flaps)  shadow 5ms +4.00bps, 20ms +1.50bps 14% filled, "
                                         "50ms quote_stale")
    # the shadow outcome belongs to one close only
    assert report.event_line(closed).endswith("(spread_closed, 2 flaps)")


def test_verbose_stdout_prints_every_record_in_full():
    full = dict(record("update", 1, id=7), buy_price=100.0, sell_price=100.3, gross_bps=30.0)
    assert report.event_line(full, verbose=True).startswith("UPDATE BTC/USDT   buy binance @ 100 sell bybit @ 100.3")
    assert report.event_line(shadow(50, id=7), verbose=True) == (
        "SHADOW BTC/USDT   buy binance sell bybit detected 5.00 bps -> 5ms +4.00bps, 20ms +1.50bps, 50ms quote_stale")


def test_health_status_line():
    from pipeline.board.histogram import HistogramSnapshot
    from pipeline.health.process import format_status
    e2e = HistogramSnapshot(count=0, sum_ns=0, max_ns=0, buckets=())
    assert format_status("12:00:05", 5, 6, 1480.4, 12, e2e, ["feed okx 2"], ["okx stale"]) == (
        "--- health 12:00:05  venues live 5/6 (okx stale)  msg/s 1480  opportunities 12  restarts: feed okx 2")
    assert format_status("12:00:05", 0, 2, None, None, None, []) == "--- health 12:00:05  venues live 0/2  msg/s -"


def test_health_status_line_from_a_board(board):
    from pipeline.health.process import HealthReporter
    from pipeline.runtime import ProcessSpec
    fill_board(board)
    rows = ROWS[:2] + [RowAssignment(2, "kraken", "BTC/USDT", "XBT/USDT")]     # this box's own kraken feed
    common = dict(board_name=board.name, depth=5, doorbell_fd=-1, cores=())
    specs = [ProcessSpec(key="feed:binance", role=ProcessRole.FEED, title="pipeline: feed binance", slot=0,
                         venue="binance", rows=(ROWS[0],), **common),
             ProcessSpec(key="feed:bybit", role=ProcessRole.FEED, title="pipeline: feed bybit", slot=1,
                         venue="bybit", rows=(ROWS[1],), **common),
             ProcessSpec(key="feed:kraken", role=ProcessRole.FEED, title="pipeline: feed kraken", slot=2,
                         venue="kraken", rows=(rows[2],), **common),
             ProcessSpec(key="detector", role=ProcessRole.DETECTOR, title="pipeline: detector", slot=3, **common)]
    board.procs[2]["restarts"] = 2
    board.procs[1]["record_dropped"] = 5
    reporter = HealthReporter(board, specs, rows, cpu_count=2)
    reporter.snapshot(NOW - 1_000 * MS)
    first = reporter.status_line(reporter.snapshot(NOW), clock="12:00:00")
    board.procs[0]["messages"] = 1600                                   # +600 in the next second
    for ns in (2_000_000, 2_000_000):                                    # two slow emissions since the last line
        HistogramWriter(board, 3, 2).record(ns)
    second = reporter.status_line(reporter.snapshot(NOW + 1_000 * MS), clock="12:00:01")
    assert first == ("--- health 12:00:00  venues live 2/3 (kraken stale)  msg/s 0  opportunities 7  "
                     "end to end p50 300 µs p99 300 µs  restarts: feed kraken 2  "
                     "RECORDING FAILING (frames not recorded): bybit 5")
    assert second == ("--- health 12:00:01  venues live 2/3 (kraken stale)  msg/s 600  opportunities 7  "
                      "end to end p50 2000 µs p99 2000 µs  restarts: feed kraken 2  "
                      "RECORDING FAILING (frames not recorded): bybit 5")
    # a row written after the snapshot time never shows a negative age
    assert reporter.snapshot(NOW - 60 * MS)[1].last_update_age_ms == 0.0


def test_fees_of_every_row_label_including_bridged_rows():
    from dataclasses import replace

    from pipeline.config import load_config
    from pipeline.console.app import describe
    from tests.conftest import REPO
    config = load_config(REPO / "configs" / "demo.yaml")
    kraken = replace(config.venue("kraken"), fee_overrides=(("ETH/USD", 25.0),))
    config = replace(config, venues=tuple(kraken if v.name == "kraken" else v for v in config.venues))
    rows, fees, output = describe(config, "/srv/run")
    assert fees[("kraken", "ETH/USD")] == 25.0 and fees[("kraken", "BTC/USD")] == 40.0
    assert fees[("coinbase", "BTC/USDT")] == 120.0
    assert output == "/srv/run/out/opportunities.jsonl"
    assert len(rows) == len(fees) == 18
    from pipeline.config import BridgeConfig
    remote = (("frankfurt", (replace(config.venue("kraken"), taker_fee_bps=16.0),)),)
    bridged = replace(config, bridge=BridgeConfig(nats_url="nats://127.0.0.1:4222", box="tokyo", subscribe=remote))
    rows, fees, _ = describe(bridged)
    assert [r.label for r in rows[18:]] == ["kraken@frankfurt"] * 3
    assert fees[("kraken@frankfurt", "BTC/USD")] == 16.0 and fees[("kraken@frankfurt", "ETH/USD")] == 25.0
