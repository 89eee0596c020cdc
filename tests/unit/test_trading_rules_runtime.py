"""Trading rules at run time: fetched over real HTTP, cached on disk, carried on the board exactly, and the
session/book holding rows without rules NO_RULES and rows whose rules say "not trading" HALTED."""
from __future__ import annotations

import dataclasses
import http.server
import os
import threading
import time
from decimal import Decimal as D
from pathlib import Path

import orjson
import pytest

from pipeline.board import Board, RulesWriter, read_rules, remove_leftover
from pipeline.errors import FeedError, RowOwnershipError, RowValueError
from pipeline.model import RowStatus
from pipeline.refdata import (
    RulesCache,
    describe_age,
    fetch_reference_data,
    fetch_reference_data_async,
    fetch_reference_response,
    reference_url,
    rules_base_url,
)
from pipeline.venues import load_venue
from tests.conftest import fixture_lines, session_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REST_VENUES = ("binance", "bybit", "okx", "htx", "coinbase")


def fixture(venue: str) -> bytes:
    return (FIXTURES / venue / "reference_data.json").read_bytes()


def kraken_instrument_frames() -> list[str]:
    return [line for line in fixture_lines("kraken", "instrument.jsonl") if '"channel":"instrument"' in line]


class Server:
    """A real HTTP server on a free port answering from a queue of (status, body, delay_s) per request."""

    def __init__(self):
        self.answers: list[tuple[int, bytes, float]] = []
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server name
                outer.paths.append(self.path)
                status, body, delay = outer.answers.pop(0) if len(outer.answers) > 1 else outer.answers[0]
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_rules_base_url_maps_websocket_schemes_to_http():
    assert rules_base_url("ws://127.0.0.1:8765/ws/v5/public") == "http://127.0.0.1:8765"
    assert rules_base_url("wss://stream.binance.com:9443/stream") == "https://stream.binance.com:9443"
    assert reference_url("okx", "http://127.0.0.1:9") == "http://127.0.0.1:9/api/v5/public/instruments?instType=SPOT"
    assert reference_url("kraken", "http://127.0.0.1:9") == "ws://127.0.0.1:9/v2"
    assert reference_url("binance") == "https://api.binance.com/api/v3/exchangeInfo?permissions=SPOT"
    with pytest.raises(ValueError):
        rules_base_url("ftp://x")


@pytest.mark.parametrize("venue", REST_VENUES)
def test_fetch_reads_the_fixture_served_over_http(venue):
    expected = load_venue(venue).reference_data.parse(fixture(venue))
    with Server() as server:
        server.answers = [(200, fixture(venue), 0.0)]
        assert fetch_reference_data(venue, server.url, timeout_s=2.0, retries=1) == expected
        assert server.paths == [load_venue(venue).reference_data.path]


def test_a_500_then_success_is_retried():
    with Server() as server:
        server.answers = [(500, b"oops", 0.0), (200, fixture("okx"), 0.0)]
        raw, rules = fetch_reference_response("okx", server.url, timeout_s=2.0, retries=3, sleep=lambda s: None)
        assert raw == fixture("okx") and rules == load_venue("okx").reference_data.parse(fixture("okx"))
        assert len(server.paths) == 2


def test_a_500_every_time_is_a_feed_error_naming_the_status():
    with Server() as server:
        server.answers = [(500, b"oops", 0.0)]
        with pytest.raises(FeedError) as err:
            fetch_reference_response("okx", server.url, timeout_s=2.0, retries=2, sleep=lambda s: None)
        assert str(err.value) == (f"okx: reference data from {server.url}/api/v5/public/instruments?instType=SPOT "
                                  "failed after 2 attempts: HTTP 500")
        assert len(server.paths) == 2


def test_a_timeout_is_a_feed_error():
    with Server() as server:
        server.answers = [(200, fixture("okx"), 1.5)]
        with pytest.raises(FeedError, match=r"failed after 1 attempt: timed out$"):
            fetch_reference_data("okx", server.url, timeout_s=0.3, retries=1)


def test_garbage_is_a_feed_error_naming_the_parse_problem():
    with Server() as server:
        server.answers = [(200, b"<html>not json</html>", 0.0)]
        with pytest.raises(FeedError, match=r"failed after 1 attempt: invalid_json: "):
            fetch_reference_data("bybit", server.url, timeout_s=2.0, retries=1)


def test_nothing_listening_is_a_feed_error():
    with Server() as server:
        url = server.url
    with pytest.raises(FeedError, match=r"failed after 1 attempt: .*refused"):
        fetch_reference_data("htx", url, timeout_s=1.0, retries=1)


def test_the_async_fetch_gives_the_same_rules():
    import asyncio
    with Server() as server:
        server.answers = [(200, fixture("htx"), 0.0)]
        rules = asyncio.run(fetch_reference_data_async("htx", server.url, 2.0, 1))
    assert rules == load_venue("htx").reference_data.parse(fixture("htx"))


def test_the_cache_keeps_the_last_response_with_its_age(tmp_path):
    cache = RulesCache(tmp_path / "rules")
    assert cache.load("okx") is None
    path = cache.store("okx", fixture("okx"))
    assert path == tmp_path / "rules" / "okx.json" and path.read_bytes() == fixture("okx")
    os.utime(path, (1_000_000, 1_000_000))
    cached = cache.load("okx", now_s=1_000_090)
    assert cached.age_s == 90.0 and cached.raw == fixture("okx")
    assert cached.rules == load_venue("okx").reference_data.parse(fixture("okx"))
    path.write_bytes(b"{broken")
    assert cache.load("okx") is None                       # a cache that no longer parses is no cache
    assert [describe_age(a) for a in (42, 1020, 18720, 3 * 86400)] == ["42 s", "17 min", "5.2 h", "3.0 d"]


def test_rules_from_another_source_never_stand_in_for_the_venues_own(tmp_path):
    """The simulator's (or a rules_url's) responses are cached under their source: a feed of the real venue
    finds none of them when the venue is unreachable."""
    simulated = RulesCache(tmp_path, "http://127.0.0.1:41234")
    path = simulated.store("okx", fixture("okx"))
    assert path == tmp_path / "okx@127.0.0.1_41234.json"
    assert RulesCache(tmp_path).load("okx") is None
    assert RulesCache(tmp_path, "http://127.0.0.1:41234").load("okx").raw == fixture("okx")


def all_fixture_rules():
    out = []
    for venue in REST_VENUES:
        out.extend(load_venue(venue).reference_data.parse(fixture(venue)))
    for frame in kraken_instrument_frames():
        out.extend(load_venue("kraken").reference_data.parse(frame))
    return out


@pytest.fixture
def board():
    name = f"h6rules{os.getpid()}"
    remove_leftover(name)
    b = Board.create(name, n_rows=64, depth=2, n_procs=2)
    yield b
    b.destroy()


def test_read_rules_gives_back_every_fixture_value_exactly(board):
    rules = all_fixture_rules()
    assert len(rules) >= 18
    writer = RulesWriter(board, range(board.geometry.n_rows))
    for start in range(0, len(rules), board.geometry.n_rows):
        chunk = rules[start:start + board.geometry.n_rows]
        for row, r in enumerate(chunk):
            writer.write(row, r)
        for row, r in enumerate(chunk):
            version, back = read_rules(board, row)
            assert back == dataclasses.replace(r, upcoming=()), r
            for name in ("tick", "step", "min_qty", "max_qty", "min_notional", "max_notional"):
                assert getattr(back, name) == getattr(r, name) and (getattr(back, name) is None) == (
                    getattr(r, name) is None)


def test_the_rules_version_moves_once_per_write_and_none_reads_back_none(board):
    rules = load_venue("okx").reference_data.parse(fixture("okx"))[0]
    assert read_rules(board, 3) == (0, None)
    writer = RulesWriter(board, [3])
    writer.write(3, rules)
    assert read_rules(board, 3) == (1, dataclasses.replace(rules, upcoming=()))
    writer.write(3, None)
    assert read_rules(board, 3) == (2, None)
    with pytest.raises(RowOwnershipError):
        writer.write(4, rules)
    with pytest.raises(RowValueError, match="does not round-trip"):
        writer.write(3, dataclasses.replace(rules, tick=D("0.1234567890123456789")))
    assert read_rules(board, 3) == (2, None)                   # nothing written


# ---------------------------------------------------------------- the session and the book

def okx_rules():
    return load_venue("okx").reference_data.parse(fixture("okx"))


def live_okx_session():
    session, sink, conn, journal = session_for("okx", ["BTC-USDT"])
    frames = [line for line in fixture_lines("okx", "bbo.jsonl") if '"BTC-USDT"' in line and '"data"' in line]
    return session, sink, conn, journal, frames


def test_a_row_without_rules_is_never_live():
    session, sink, conn, journal, frames = live_okx_session()
    written = []
    session.rules_sink = lambda row, rules: written.append((row, rules))
    session.apply_rules([r for r in okx_rules() if r.symbol != "BTC-USDT"], 1)
    assert written == [(0, None)] and session.rows_without_rules() == ["BTC-USDT"]
    assert journal[-1] == ("rules", 1, {"source": "reference_data", "instruments": 3, "missing": ["BTC-USDT"]})
    session.receive(frames[0], 2, conn)
    assert sink.row(0).status == RowStatus.NO_RULES
    # the rules arrive: the row is LIVE at once, one change counted
    btc = next(r for r in okx_rules() if r.symbol == "BTC-USDT")
    changes = session.apply_rules(okx_rules(), 3)
    assert changes == [("BTC-USDT", "rules", "none", "present")]
    assert sink.row(0).status == RowStatus.LIVE and written[-1] == (0, btc)
    assert session.stats.get("rules_changes") == 1


def test_rules_that_say_not_trading_hold_the_row_halted_until_it_trades_again():
    session, sink, conn, journal, frames = live_okx_session()
    btc = next(r for r in okx_rules() if r.symbol == "BTC-USDT")
    session.apply_rules([btc], 1)
    session.receive(frames[0], 2, conn)
    assert sink.row(0).status == RowStatus.LIVE
    suspended = dataclasses.replace(btc, trading=False, status="suspend", tick=D("0.5"))
    changes = session.apply_rules([suspended], 3, full=False)
    assert changes == [("BTC-USDT", "tick", D("0.1"), D("0.5")), ("BTC-USDT", "trading", True, False),
                       ("BTC-USDT", "status", "live", "suspend")]
    assert sink.row(0).status == RowStatus.HALTED and session.books["BTC-USDT"].halted == "rules suspend"
    assert journal[-3][:2] == ("rules_change", 3) and journal[-3][2] == {
        "symbol": "BTC-USDT", "field": "tick", "old": "0.1", "new": "0.5", "source": "reference_data"}
    session.receive(frames[0], 4, conn)
    assert sink.row(0).status == RowStatus.HALTED                 # the book moves on, the row stays held
    session.apply_rules([btc], 5)
    assert sink.row(0).status == RowStatus.LIVE
    assert session.stats.get("rules_changes") == 6


def test_a_session_that_never_got_rules_trades_on_the_book_alone():
    session, sink, conn, _, frames = live_okx_session()
    session.receive(frames[0], 2, conn)
    assert sink.row(0).status == RowStatus.LIVE and session.rows_without_rules() == []


def test_kraken_instrument_updates_on_the_connection_change_the_rules():
    session, sink, conn, journal = session_for("kraken", ["BTC/USD"])
    snapshot = next(f for f in kraken_instrument_frames() if '"type":"snapshot"' in f)
    session.apply_rules([], 0)                                      # nothing fetched: no rules yet
    assert session.rows_without_rules() == ["BTC/USD"]
    session.receive(snapshot, 1, conn)
    assert session.rows_without_rules() == []
    before = session.rules["BTC/USD"]
    update = orjson.loads(snapshot)
    update["type"] = "update"
    pair = next(p for p in update["data"]["pairs"] if p["symbol"] == "BTC/USD")
    pair["status"] = "maintenance"
    update["data"]["pairs"] = [pair]
    session.receive(orjson.dumps(update).decode(), 2, conn)
    assert session.rules["BTC/USD"] == dataclasses.replace(before, trading=False, status="maintenance")
    assert ("BTC/USD", "trading") in {(e[2]["symbol"], e[2]["field"]) for e in journal if e[0] == "rules_change"}


# ---------------------------------------------------------------- recording and replay

def test_replay_applies_the_recorded_reference_data_at_its_point(tmp_path):
    """A recorded ``reference_data`` event (what a feed applied) is applied again by replay: with it the venue's
    row trades on the recorded rules, without it (and no cache) it stays no_rules and the summary says so."""
    from pipeline.commands.replay import Replay
    from pipeline.config import parse_config
    from pipeline.recording.format import recording_files
    from pipeline.recording.recorder import Recorder

    frames = [line for line in fixture_lines("okx", "bbo.jsonl") if '"BTC-USDT"' in line and '"data"' in line]
    btc = next(r for r in okx_rules() if r.symbol == "BTC-USDT")
    raw = fixture("okx").decode()

    def record(directory, with_rules: bool):
        recorder = Recorder(str(directory), "okx", {"depth": 5, "symbols": {"BTC-USDT": "BTC/USDT"}})
        if with_rules:
            recorder.event("reference_data", 1_000, {"source": "reference_data", "raw": raw})
        recorder.event("connect", 2_000, {"conn": 1, "symbols": ["BTC-USDT"]})
        recorder.frame(frames[0], 3_000, 1)
        recorder.close()
        return recording_files(str(directory))

    config = parse_config({"board": {"name": "h6-rules-replay", "depth": 5}, "simulator": {},
                           "venues": {"okx": {"instruments": ["BTC/USDT"]}},
                           "detector": {"output": str(tmp_path / "o.jsonl")}}, available_cores=frozenset({0}))
    with_rules = Replay(config, record(tmp_path / "a", True), None, print_lines=False, rules_cache=None)
    result = with_rules.run()          # (the rules go to the replay's board, where the detector reads them)
    assert result.rules == {"okx": "recording"} and result.without_rules == [] and result.events == 2
    without = Replay(config, record(tmp_path / "b", False), None, print_lines=False,
                     rules_cache=str(tmp_path / "empty")).run()
    assert without.rules == {"okx": "none"} and without.without_rules == ["okx"]
    assert btc.trading
