"""The bridge's pure parts: wire format, remote row mapping, box liveness, clocks, config, row plan."""
from __future__ import annotations

import dataclasses

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.bridge.codec import (
    MAX_MESSAGE_BYTES,
    heartbeat_subject,
    parse_heartbeat,
    parse_quote,
    parse_rules,
    quote_subject,
    render_heartbeat,
    render_quote,
    render_rules,
    rules_subject,
)
from pipeline.bridge.process import BridgeError, connect_options, describe_connect_error
from pipeline.bridge.rows import BoxClock, RemoteRows
from pipeline.config import parse_config
from pipeline.errors import ConfigError, ParseError
from pipeline.model import RowStatus
from pipeline.runtime import RowAssignment
from pipeline.supervisor.core import bridge_spec, plan_rows
from pipeline.venues import VENUES
from tests.conftest import examples
from tests.unit.test_reference_data import FIXTURES, fixture, rules_of

CORES = frozenset({0, 1})
SUBJECT = "quotes.tokyo.binance.BTC-USDT"
LIVE = int(RowStatus.LIVE)


def quote(**changes) -> dict:
    message = {"box": "tokyo", "venue": "binance", "instrument": "BTC/USDT", "status": LIVE,
               "bids": [[65000.1, 0.5], [65000.0, 1.25]], "asks": [[65000.2, 0.3]], "exch_ts_ns": 0,
               "recv_ns": 1_780_000_000_000_000_000, "publish_ns": 1_780_000_000_000_020_000,
               "sent_ns": 1_780_000_000_000_090_000, "updates": 17}
    message.update(changes)
    return message


def reason(subject: str, data: bytes) -> str:
    with pytest.raises(ParseError) as info:
        parse_quote(subject, data)
    return info.value.reason


# ---------------------------------------------------------------- codec

def test_subjects_name_box_venue_and_instrument_one_token_each():
    assert quote_subject("tokyo", "binance", "BTC/USDT") == SUBJECT
    assert heartbeat_subject("frankfurt") == "heartbeat.frankfurt"


def test_quote_round_trip_keeps_every_value():
    data = render_quote("tokyo", "binance", "BTC/USDT", LIVE, [[65000.1, 0.5], [65000.0, 1.25]], [[65000.2, 0.3]],
                        123, 1_780_000_000_000_000_000, 1_780_000_000_000_020_000, 1_780_000_000_000_090_000, 17,
                        1_780_000_000_500_000_000, 71_234_567_890)
    q = parse_quote(SUBJECT, data)
    assert (q.confirmed_ns, q.xseq) == (1_780_000_000_500_000_000, 71_234_567_890)
    assert (q.box, q.venue, q.instrument, q.status) == ("tokyo", "binance", "BTC/USDT", LIVE)
    assert q.bids == [(65000.1, 0.5), (65000.0, 1.25)] and q.asks == [(65000.2, 0.3)]
    assert (q.exch_ts_ns, q.recv_ns, q.publish_ns, q.sent_ns, q.updates) == (
        123, 1_780_000_000_000_000_000, 1_780_000_000_000_020_000, 1_780_000_000_000_090_000, 17)


def test_confirmed_time_defaults_to_the_receive_time():
    m = quote()
    assert "confirmed_ns" not in m
    assert parse_quote(SUBJECT, orjson.dumps(m)).confirmed_ns == m["recv_ns"]
    assert reason(SUBJECT, orjson.dumps(quote(confirmed_ns=-5))) == "bad_number"


def test_the_exchange_id_is_none_when_absent_and_must_fit_the_rows_u64():
    m = quote()
    assert "xseq" not in m
    assert parse_quote(SUBJECT, orjson.dumps(m)).xseq == 0
    assert parse_quote(SUBJECT, orjson.dumps(quote(xseq=2 ** 64 - 1))).xseq == 2 ** 64 - 1
    for bad in (-1, 1.5, "7"):
        assert reason(SUBJECT, orjson.dumps(quote(xseq=bad))) == "bad_number", bad
    too_big = orjson.dumps(quote(xseq=2 ** 64 - 1)).replace(b"18446744073709551615", b"18446744073709551616")
    assert reason(SUBJECT, too_big) == "bad_number"


def test_an_empty_book_is_a_valid_state():
    q = parse_quote(SUBJECT, orjson.dumps(quote(status=int(RowStatus.DISCONNECTED), bids=[], asks=[])))
    assert q.status == RowStatus.DISCONNECTED and q.bids == [] and q.asks == []


@pytest.mark.parametrize("data, expected", [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "unknown_message"),
    (orjson.dumps({k: v for k, v in quote().items() if k != "sent_ns"}), "unknown_message"),
    (orjson.dumps(quote(venue="bybit")), "unknown_message"),              # does not match its subject
    (orjson.dumps(quote(status=99)), "bad_number"),
    (orjson.dumps(quote(status="live")), "bad_number"),
    (orjson.dumps(quote(bids=[[-1.0, 1.0]])), "bad_number"),
    (orjson.dumps(quote(bids=[["65000", 1.0]])), "bad_number"),
    (orjson.dumps(quote(bids=[[65000.0]])), "unknown_message"),
    (orjson.dumps(quote(bids=[[1.0, 1.0], [2.0, 1.0]])), "bad_number"),  # bids must fall
    (orjson.dumps(quote(asks=[[1.0, 1.0]] * 11)), "oversize"),
    (orjson.dumps(quote(recv_ns=1.5)), "bad_number"),
    (orjson.dumps(quote(updates=-1)), "bad_number"),
    (b'{"box": "tokyo", "bids": [[NaN, 1]]}', "invalid_json"),
    (b" " * (MAX_MESSAGE_BYTES + 1), "oversize"),
])
def test_malformed_quotes_are_named_parse_errors(data, expected):
    assert reason(SUBJECT, data) == expected


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20)


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=300)
       | st.builds(orjson.dumps, JSON_VALUES)
       # a valid message with some fields replaced by anything: reaches the deeper checks
       | st.builds(lambda changes: orjson.dumps(quote(**changes)),
                   st.dictionaries(st.sampled_from(list(quote())), JSON_VALUES, max_size=3)))
def test_parse_quote_of_anything_raises_only_parse_error(data):
    try:
        parse_quote(SUBJECT, data)
    except ParseError:
        pass


def test_heartbeat_round_trip_and_mismatch():
    beat = parse_heartbeat("heartbeat.tokyo", render_heartbeat("tokyo", 42, 6))
    assert (beat.box, beat.sent_ns, beat.rows) == ("tokyo", 42, 6)
    with pytest.raises(ParseError):
        parse_heartbeat("heartbeat.frankfurt", render_heartbeat("tokyo", 42, 6))
    with pytest.raises(ParseError):
        parse_heartbeat("heartbeat.tokyo", b'{"box": "tokyo"}')


# ---------------------------------------------------------------- rules messages

RULES_SUBJECT = "quotes.tokyo.binance.BTC-USDT.rules"
BOUNDS = ("tick", "step", "min_qty", "max_qty", "min_notional", "max_notional")


def fixture_rules() -> list:
    """Every venue's rules from the reference-data fixtures (tests/unit/test_reference_data.py)."""
    out = []
    for venue in VENUES:
        if (FIXTURES / venue / "reference_data.json").exists():
            out.extend(rules_of(venue, fixture(venue)).values())
        else:                                          # kraken: its instrument channel, one push a line
            for line in fixture(venue, "instrument.jsonl").splitlines():
                out.extend(rules_of(venue, line).values())
    return out


FIXTURE_RULES = fixture_rules()


def rules_message(**changes) -> dict:
    message = orjson.loads(render_rules("tokyo", "binance", "BTC/USDT", FIXTURE_RULES[0], 42))
    rules = message["rules"]
    for key, value in changes.items():
        if key in rules:
            rules[key] = value
        else:
            message[key] = value
    return message


def rules_reason(data: bytes, subject: str = RULES_SUBJECT) -> str:
    with pytest.raises(ParseError) as info:
        parse_rules(subject, data)
    return info.value.reason


def test_rules_subject_is_the_quote_subject_plus_rules():
    assert rules_subject("tokyo", "binance", "BTC/USDT") == SUBJECT + ".rules" == RULES_SUBJECT


def test_fixture_rules_cover_every_venue_and_an_unbounded_maximum():
    assert {r.venue for r in FIXTURE_RULES} == set(VENUES)
    assert any(r.max_qty is None for r in FIXTURE_RULES) and any(r.max_notional is not None for r in FIXTURE_RULES)
    assert any(not r.trading for r in FIXTURE_RULES)


@pytest.mark.parametrize("rules", FIXTURE_RULES, ids=[f"{r.venue}-{r.symbol}" for r in FIXTURE_RULES])
def test_rules_round_trip_is_exact(rules):
    data = render_rules("tokyo", rules.venue, "BTC/USDT", rules, 1_780_000_000_000_090_000)
    got = parse_rules(rules_subject("tokyo", rules.venue, "BTC/USDT"), data)
    assert (got.box, got.venue, got.instrument, got.sent_ns) == ("tokyo", rules.venue, "BTC/USDT",
                                                                 1_780_000_000_000_090_000)
    assert got.rules == dataclasses.replace(rules, upcoming=())       # upcoming changes are not carried
    # the very decimal texts, exponent and trailing zeros included: never through a float
    assert [str(getattr(got.rules, name)) for name in BOUNDS] == [str(getattr(rules, name)) for name in BOUNDS]
    body = orjson.loads(data)["rules"]
    assert all(body[name] is None or body[name].__class__ is str for name in BOUNDS)


def test_a_row_without_rules_is_sent_as_null():
    got = parse_rules(RULES_SUBJECT, render_rules("tokyo", "binance", "BTC/USDT", None, 7))
    assert got.rules is None and got.sent_ns == 7


@pytest.mark.parametrize("data, expected", [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "unknown_message"),
    (orjson.dumps({k: v for k, v in rules_message().items() if k != "rules"}), "unknown_message"),
    (orjson.dumps({k: v for k, v in rules_message().items() if k != "sent_ns"}), "unknown_message"),
    (orjson.dumps(rules_message(box="frankfurt")), "unknown_message"),       # does not match its subject
    (orjson.dumps(rules_message(rules=[])), "unknown_message"),
    (orjson.dumps({**rules_message(), "rules": {k: v for k, v in rules_message()["rules"].items() if k != "step"}}),
     "unknown_message"),
    (orjson.dumps(rules_message(tick=0.01)), "bad_number"),                   # a float, not the exact text
    (orjson.dumps(rules_message(tick="0")), "bad_number"),
    (orjson.dumps(rules_message(step="-0.001")), "bad_number"),
    (orjson.dumps(rules_message(min_qty="NaN")), "bad_number"),
    (orjson.dumps(rules_message(max_qty="Infinity")), "bad_number"),
    (orjson.dumps(rules_message(max_notional="0")), "bad_number"),
    (orjson.dumps(rules_message(min_notional=None)), "bad_number"),          # only the maximums may be null
    (orjson.dumps(rules_message(min_notional=" 5")), "bad_number"),
    (orjson.dumps(rules_message(tick="1_0")), "bad_number"),
    (orjson.dumps(rules_message(trading=1)), "unknown_message"),
    (orjson.dumps(rules_message(status="")), "unknown_message"),
    (orjson.dumps(rules_message(symbol=5)), "unknown_message"),
    (orjson.dumps(rules_message(sent_ns=-1)), "bad_number"),
    (b" " * (MAX_MESSAGE_BYTES + 1), "oversize"),
])
def test_malformed_rules_are_named_parse_errors(data, expected):
    assert rules_reason(data) == expected


def test_rules_on_the_quote_subject_are_refused():
    assert rules_reason(orjson.dumps(rules_message()), SUBJECT) == "unknown_message"


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=300)
       | st.builds(orjson.dumps, JSON_VALUES)
       | st.builds(lambda changes: orjson.dumps(rules_message(**changes)),
                   st.dictionaries(st.sampled_from([*rules_message(), *rules_message()["rules"]]), JSON_VALUES,
                                   max_size=3)))
def test_parse_rules_of_anything_raises_only_parse_error(data):
    try:
        parse_rules(RULES_SUBJECT, data)
    except ParseError:
        pass


# ---------------------------------------------------------------- remote rows

ROWS = (RowAssignment(3, "binance", "BTC/USDT", "", box="tokyo"),
        RowAssignment(4, "kraken", "BTC/USD", "", box="frankfurt"),
        RowAssignment(5, "kraken", "ETH/USD", "", box="frankfurt"))
TIMEOUT_NS = 3_000_000_000


def test_quote_maps_to_its_row_and_unknown_subjects_to_none():
    remote = RemoteRows(ROWS, TIMEOUT_NS)
    remote.set_connected(True)
    assert set(remote.subjects()) == {SUBJECT, "quotes.frankfurt.kraken.BTC-USD", "quotes.frankfurt.kraken.ETH-USD",
                                      RULES_SUBJECT, "quotes.frankfurt.kraken.BTC-USD.rules",
                                      "quotes.frankfurt.kraken.ETH-USD.rules", "heartbeat.tokyo", "heartbeat.frankfurt"}
    m = quote(confirmed_ns=1_780_000_000_050_000_000)
    write = remote.on_quote(SUBJECT, orjson.dumps(m), m["sent_ns"] + 80_000_000)
    assert write.confirmed_ns == m["confirmed_ns"]
    assert write.row == 3 and write.status == LIVE and write.bids == [(65000.1, 0.5), (65000.0, 1.25)]
    # clocks agree (positive envelope: transport, not offset): remote times are kept as they are
    assert write.recv_ns == m["recv_ns"] and write.sent_ns == m["sent_ns"]
    assert remote.on_quote("quotes.tokyo.binance.ETH-USDT", orjson.dumps(quote()), 0) is None


def test_rules_map_to_their_row_and_count_as_hearing_the_box():
    remote = RemoteRows(ROWS, TIMEOUT_NS)
    remote.set_connected(True)
    kraken = next(r for r in FIXTURE_RULES if r.venue == "kraken")
    subject = "quotes.frankfurt.kraken.ETH-USD.rules"
    assert remote.is_rules(subject) and not remote.is_rules("quotes.frankfurt.kraken.ETH-USD")
    row, rules = remote.on_rules(subject, render_rules("frankfurt", "kraken", "ETH/USD", kraken, 100), 200)
    assert (row, rules) == (5, kraken)
    assert remote.boxes["frankfurt"].alive and remote.boxes["frankfurt"].last_seen_ns == 200
    with pytest.raises(ParseError):           # another row's rules on this row's subject
        remote.on_rules(subject, render_rules("frankfurt", "kraken", "BTC/USD", kraken, 100), 200)


def test_a_remote_clock_ahead_is_corrected_by_the_negative_envelope():
    remote = RemoteRows(ROWS, TIMEOUT_NS)
    remote.set_connected(True)
    m = quote()
    arrival = m["sent_ns"] - 5_000_000           # arrived 5 ms "before" it was sent: remote clock >= 5 ms ahead
    write = remote.on_quote(SUBJECT, orjson.dumps(m), arrival)
    assert write.recv_ns == m["recv_ns"] - 5_000_000 and write.sent_ns == arrival
    assert write.confirmed_ns == m["recv_ns"] - 5_000_000


def test_box_clock_keeps_the_low_envelope_over_its_window():
    clock = BoxClock(window_s=2.0)
    for t, delay in [(0, 900), (10, 500), (20, 700)]:
        clock.observe(delay, t)
    assert clock.envelope_ns() == 500 and clock.correction_ns() == 0
    clock.observe(-300, 1_500_000_000)           # second half-window
    assert clock.envelope_ns() == -300 and clock.correction_ns() == -300
    clock.observe(800, 3_100_000_000)            # third: the first half-window has left
    assert clock.envelope_ns() == -300
    clock.observe(800, 4_700_000_000)
    assert clock.envelope_ns() == 800


def test_a_silent_box_goes_disconnected_after_the_timeout_and_comes_back_with_a_message():
    remote = RemoteRows(ROWS, TIMEOUT_NS)
    remote.set_connected(True)
    t0 = 1_780_000_000_000_000_000
    remote.on_heartbeat("heartbeat.frankfurt", render_heartbeat("frankfurt", t0, 2), t0)
    remote.on_heartbeat("heartbeat.tokyo", render_heartbeat("tokyo", t0, 1), t0)
    assert remote.check(t0 + TIMEOUT_NS) == []
    remote.on_heartbeat("heartbeat.tokyo", render_heartbeat("tokyo", t0 + 2_000_000_000, 1), t0 + 2_000_000_000)
    assert sorted(remote.check(t0 + TIMEOUT_NS + 1)) == [4, 5]          # frankfurt only
    assert remote.check(t0 + TIMEOUT_NS + 2) == []                      # reported once
    remote.on_heartbeat("heartbeat.frankfurt", render_heartbeat("frankfurt", t0 + 4_000_000_000, 2),
                        t0 + 4_000_000_000)
    assert remote.boxes["frankfurt"].alive


def test_a_lost_connection_disconnects_every_remote_row():
    remote = RemoteRows(ROWS, TIMEOUT_NS)
    remote.set_connected(True)
    assert sorted(remote.set_connected(False)) == [3, 4, 5]
    assert remote.check(10 ** 20) == []


# ---------------------------------------------------------------- config and plan

BRIDGE = {"nats_url": "nats://127.0.0.1:4222", "box": "tokyo", "publish": True,
          "subscribe": {"frankfurt": {"kraken": ["BTC/USD"], "coinbase": {"instruments": ["BTC/USD", "ETH/USD"],
                                                                          "taker_fee_bps": 60}}}}


def config(**bridge):
    raw = {"venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://stream.binance.com:9443/stream"}},
           "bridge": {**BRIDGE, **bridge}}
    return parse_config(raw, available_cores=CORES)


def problems(raw) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, available_cores=CORES)
    return dict(info.value.problems)


def test_bridge_config_defaults_and_remote_venues():
    c = config()
    assert c.bridge.heartbeat_interval_ms == 1000 and c.bridge.heartbeat_timeout_ms == 3000
    assert c.bridge.record is None and c.bridge.token_env is None
    assert [(box, v.name, i) for box, v, i in c.bridge.remote_rows()] == [
        ("frankfurt", "kraken", "BTC/USD"), ("frankfurt", "coinbase", "BTC/USD"), ("frankfurt", "coinbase", "ETH/USD")]
    assert c.venue_for("coinbase", "frankfurt").taker_fee_bps == 60
    assert c.venue_for("kraken", "frankfurt").taker_fee_bps == 40          # the exchange's standard tier
    assert c.board_instruments == ("BTC/USDT", "BTC/USD", "ETH/USD") and c.instruments == ("BTC/USDT",)


def test_bridge_config_errors_name_their_dotted_paths():
    raw = {"venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://x"}},
           "bridge": {"nats_url": "http://127.0.0.1:4222", "box": "tokyo", "token": "s3cret", "publish": "yes",
                      "token_env": "A", "creds_file": "/nonexistent/creds", "heartbeat_timeout_ms": 500,
                      "record": {"max_age_h": 2}, "subsribe": {},
                      "subscribe": {"tokyo": {"kraken": ["BTC/USD"]}, "frankfurt": {"ftx": ["BTC/USD"]},
                                    "paris": {"kraken": {"instruments": ["BTC/USD"], "url": "wss://x"}}}}}
    found = problems(raw)
    assert "never put credentials" in found["bridge.token"]
    assert "invalid value" in found["bridge.nats_url"]
    assert "true or false" in found["bridge.publish"]
    assert "does not exist" in found["bridge.creds_file"]
    assert "longer than heartbeat_interval_ms" in found["bridge.heartbeat_timeout_ms"]
    assert "missing" in found["bridge.record.stream"]
    assert "unknown key" in found["bridge.subsribe"]
    assert "own name" in found["bridge.subscribe.tokyo"]
    assert "unknown exchange" in found["bridge.subscribe.frankfurt.ftx"]
    assert "remote box's own config" in found["bridge.subscribe.paris.kraken.url"]


def test_the_polling_interval_is_gone_and_a_config_still_naming_it_is_refused_naming_it():
    """The publisher wakes on the doorbell: no interval to set, and an old config saying one is told so."""
    assert not hasattr(config().bridge, "poll_interval_ms")
    assert problems({"venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://x"}},
                     "bridge": {**BRIDGE, "poll_interval_ms": 1}}) == {"bridge.poll_interval_ms": (
        "unknown key (allowed: allow_plaintext, box, connect_timeout_s, cores, creds_file, depth, "
        "heartbeat_interval_ms, heartbeat_timeout_ms, nats_url, nkey_seed_file, publish, publish_decisions, record, "
        "subscribe, tls_ca_file, tls_cert_file, tls_key_file, token_env, token_file)")}


def test_an_aggregating_box_needs_no_venues_but_a_box_without_either_does():
    c = parse_config({"bridge": BRIDGE}, available_cores=CORES)
    assert c.venues == () and len(plan_rows(c)) == 3
    assert "venues" in problems({"bridge": {**BRIDGE, "subscribe": {}}})
    assert "bridge" in problems({"venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://x"}},
                                 "bridge": {"nats_url": "nats://127.0.0.1:1", "box": "a"}})


def test_remote_rows_follow_the_local_ones_and_belong_to_the_bridge():
    c = config()
    rows = plan_rows(c)
    assert [(r.row, r.label, r.instrument) for r in rows] == [
        (0, "binance", "BTC/USDT"), (1, "kraken@frankfurt", "BTC/USD"), (2, "coinbase@frankfurt", "BTC/USD"),
        (3, "coinbase@frankfurt", "ETH/USD")]
    (spec,) = bridge_spec(c, rows, 4, dict(board_name="b", depth=5, doorbell_fd=-1))
    assert spec.title == "pipeline: bridge" and [r.row for r in spec.rows] == [1, 2, 3]


def test_credentials_come_from_the_named_environment_variable_or_file(tmp_path):
    c = config(token_env="BRIDGE_TOKEN")
    assert connect_options(c.bridge, {"BRIDGE_TOKEN": "s3cret"})["token"] == "s3cret"
    with pytest.raises(BridgeError, match="BRIDGE_TOKEN"):
        connect_options(c.bridge, {})
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert connect_options(config(token_file=str(path)).bridge, {})["token"] == "from-file"
    assert "tls" not in connect_options(c.bridge, {"BRIDGE_TOKEN": "x"})
    assert "tls" in connect_options(config(nats_url="tls://127.0.0.1:4222").bridge, {})


def test_refused_credentials_are_told_apart_from_an_absent_server():
    class NatsError(Exception):
        pass
    message, refused = describe_connect_error(NatsError("nats: 'Authorization Violation'"), "nats://h:1")
    assert refused and "bridge.token_env" in message and "keeps running" in message
    assert describe_connect_error(ConnectionRefusedError(111, "refused"), "nats://h:1")[1] is False
    message, refused = describe_connect_error(NatsError("nats: 'Permissions Violation for Publish to quotes.x'"), "u")
    assert not refused and "quotes.>" in message
