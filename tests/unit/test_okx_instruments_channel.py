"""OKX's ``instruments`` channel on the public connection: subscribed beside the market data, each push applied
as a change of the instruments it names (the path Kraken's ``instrument`` updates take), announced changes
(``upcChg``) journaled once, and the simulator's ack and pushes read without a parse error."""
from __future__ import annotations

import dataclasses
from decimal import Decimal as D
from pathlib import Path

import orjson

from pipeline.model import Ack, InstrumentSpec, RowStatus, RuleChange, SkipReason
from pipeline.venues import load_venue
from pipeline.venues.okx import sim as okx_sim
from pipeline.venues.okx import wire as okx
from tests.conftest import fixture_lines, session_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "okx"
SUBSCRIBE = '{"op":"subscribe","args":[{"channel":"instruments","instType":"SPOT"}]}'


def push(**fields) -> bytes:
    """The docs' push of BTC-USDT (tests/fixtures/okx/instruments_push.json) with ``fields`` replaced."""
    raw = orjson.loads((FIXTURES / "instruments_push.json").read_bytes())
    raw["data"][0].update(fields)
    return orjson.dumps(raw)


def okx_session(symbols=("BTC-USDT",)):
    """A session following ``symbols`` with the REST fixture's rules applied, a live BTC-USDT book, and a list
    of what ``rules_sink`` was given."""
    session, sink, conn, journal = session_for("okx", list(symbols))
    written: list = []
    session.rules_sink = lambda row, rules: written.append((row, rules))
    session.apply_rules(load_venue("okx").reference_data.parse((FIXTURES / "reference_data.json").read_bytes()), 1)
    bbo = next(line for line in fixture_lines("okx", "bbo.jsonl") if '"BTC-USDT"' in line and '"data"' in line)
    session.receive(bbo, 2, conn)
    assert sink.row(0).status == RowStatus.LIVE
    written.clear()
    return session, sink, conn, journal, written


def entries(journal, kind: str) -> list:
    return [(now, fields) for k, now, fields in journal if k == kind]


def test_the_record_declares_the_channel_and_every_connection_subscribes_it():
    venue = load_venue("okx")
    assert venue.reference_data.channel_subscribe == okx.INSTRUMENTS_SUBSCRIBE == SUBSCRIBE
    assert venue.reference_data.transport == "rest"       # the rules themselves are still fetched over REST
    session, _, conn, journal = session_for("okx", ["BTC-USDT", "ETH-USDT"])
    assert session.subscribe_frames(conn) == [
        '{"op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"},{"channel":"books","instId":"BTC-USDT"},'
        '{"channel":"bbo-tbt","instId":"ETH-USDT"},{"channel":"books","instId":"ETH-USDT"}]}', SUBSCRIBE]
    assert len(conn.requests) == 2                          # counted in the connection's 480 requests an hour
    assert journal[-1] == ("subscribe", 0, {"conn": conn.id, "frames": 2})
    # after a login the depth channel changes; the instruments channel is still asked for
    session.depth_channel = "books50-l2-tbt"
    assert session.subscribe_frames(conn)[-1] == SUBSCRIBE


def test_a_push_is_one_instrument_spec_per_instrument():
    assert okx.parse(push(), 0) == [InstrumentSpec("BTC-USDT", 1, 8, "online")]
    assert okx.parse(push(state="suspend", tickSz="0.05"), 0) == [InstrumentSpec("BTC-USDT", 2, 8, "suspend")]
    assert okx.parse(b'{"event":"subscribe","arg":{"channel":"instruments","instType":"SPOT"},"connId":"a4d3ae55"}',
                     0) == [Ack("", "instruments")]


def test_a_push_changing_the_tick_applies_to_the_row():
    session, sink, conn, journal, written = okx_session()
    before = session.rules["BTC-USDT"]
    assert before.tick == D("0.1")
    session.receive(push(tickSz="0.5"), 3, conn)
    after = dataclasses.replace(before, tick=D("0.5"))
    assert session.rules["BTC-USDT"] == after
    assert written == [(0, after)]
    assert session.stats.get("rules_changes") == 1
    assert entries(journal, "rules_change") == [
        (3, {"symbol": "BTC-USDT", "field": "tick", "old": "0.1", "new": "0.5", "source": "instrument_channel"})]
    assert session.stats.get("parse_errors") == 0 and sink.row(0).status == RowStatus.LIVE
    session.receive(push(tickSz="0.5"), 4, conn)            # the same push again: nothing changes
    assert session.stats.get("rules_changes") == 1 and written == [(0, after)]


def test_suspend_halts_the_row_and_live_releases_it():
    session, sink, conn, journal, written = okx_session()
    session.receive(push(state="suspend"), 3, conn)
    assert sink.row(0).status == RowStatus.HALTED
    assert session.books["BTC-USDT"].halted == "pair suspend"    # the pair's status said it first
    assert session.rules["BTC-USDT"].trading is False and session.rules["BTC-USDT"].status == "suspend"
    assert [(f["field"], f["old"], f["new"]) for _, f in entries(journal, "rules_change")] == [
        ("trading", "True", "False"), ("status", "live", "suspend")]
    session.receive(push(state="live"), 4, conn)
    assert sink.row(0).status == RowStatus.LIVE and session.books["BTC-USDT"].halted == ""
    assert session.rules["BTC-USDT"].trading is True
    assert session.stats.get("rules_changes") == 4
    assert [rules.trading for _, rules in written] == [False, True]


def test_an_announced_change_is_kept_and_journaled_once():
    session, sink, conn, journal, written = okx_session()
    # the REST fixture already announced tickSz 0.0001: journaled once, when the rules were first applied
    assert entries(journal, "rules_announced") == [
        (1, {"symbol": "BTC-USDT", "field": "tickSz", "new": "0.0001", "effective_ms": 1704876947000,
             "source": "reference_data"})]
    session.receive(push(), 3, conn)                         # the push repeats it: not journaled again
    assert len(entries(journal, "rules_announced")) == 1
    announced = [{"param": "minSz", "newValue": "0.001", "effTime": "1704880000000"}]
    session.receive(push(upcChg=announced), 4, conn)
    assert session.rules["BTC-USDT"].upcoming == (RuleChange("minSz", D("0.001"), 1704880000000),)
    assert entries(journal, "rules_announced")[1:] == [
        (4, {"symbol": "BTC-USDT", "field": "minSz", "new": "0.001", "effective_ms": 1704880000000,
             "source": "instrument_channel"})]
    session.receive(push(upcChg=announced), 5, conn)
    assert len(entries(journal, "rules_announced")) == 2     # once per announced change
    assert session.stats.get("rules_changes") == 0           # an announcement changes no rule yet
    session.receive(push(upcChg=[], minSz="0.001"), 6, conn) # it takes effect
    assert session.rules["BTC-USDT"].min_qty == D("0.001") and session.rules["BTC-USDT"].upcoming == ()
    assert entries(journal, "rules_change") == [
        (6, {"symbol": "BTC-USDT", "field": "min_qty", "old": "0.00001", "new": "0.001",
             "source": "instrument_channel"})]
    assert len(entries(journal, "rules_announced")) == 2


def test_a_push_names_only_what_changed_and_one_not_followed_is_ignored():
    session, sink, conn, journal, written = okx_session(("BTC-USDT", "ETH-USDT"))
    eth = session.rules["ETH-USDT"]
    session.receive(push(tickSz="0.2"), 3, conn)             # BTC-USDT alone: ETH-USDT keeps its rules
    assert session.rules["ETH-USDT"] == eth and session.rules["BTC-USDT"].tick == D("0.2")
    before = dict(session.rules)
    session.receive(push(instId="DOGE-USDT", tickSz="0.00001", state="suspend"), 4, conn)
    assert session.rules == before and "DOGE-USDT" not in session.rules
    assert session.stats.get("rules_changes") == 1 and session.stats.get("parse_errors") == 0
    assert sink.row(0).status == RowStatus.LIVE


def test_a_push_before_any_rules_were_fetched_is_not_applied():
    session, sink, conn, journal = session_for("okx", ["BTC-USDT"])
    session.receive(push(), 1, conn)
    assert session.rules is None and session.stats.get("parse_errors") == 0


def test_the_simulators_ack_and_pushes_are_read_without_a_parse_error():
    session, sink, conn, journal, written = okx_session()
    proto = okx_sim.Protocol({"BTC-USDT": (1, 8)})
    proto.trading_rules = {symbol: rule for symbol, rule in
                           (("BTC-USDT", okx_sim.REFERENCE_RULES["BTC/USDT"]),
                            ("ETH-USDT", okx_sim.REFERENCE_RULES["ETH/USDT"]))}
    replies = proto.on_message(session.subscribe_frames(conn)[-1])
    assert [orjson.loads(r).get("event") for r in replies] == ["subscribe", None]
    for n, frame in enumerate(replies):
        session.receive(frame, 3 + n, conn)
    proto.trading_rules["BTC-USDT"] = proto.trading_rules["BTC-USDT"].replace(tick="0.5", halted=True)
    for frame in proto.render_rule("BTC-USDT"):
        session.receive(frame, 10, conn)
    assert session.stats.get("parse_errors") == 0
    assert session.stats.skipped(SkipReason.UNKNOWN_MESSAGE) == 0
    assert (session.rules["BTC-USDT"].tick, session.rules["BTC-USDT"].status) == (D("0.5"), "suspend")
    assert sink.row(0).status == RowStatus.HALTED
