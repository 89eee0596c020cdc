"""OKX v5 parser against the real and documented messages in tests/fixtures/okx."""
from __future__ import annotations

import ast
import zlib
from functools import partial
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import (
    BBO,
    DEPTH,
    Ack,
    BookUpdate,
    ChannelNotPermitted,
    LoginResult,
    Notice,
    Pong,
    RowStatus,
    SchemaDrift,
    SubscribeError,
)
from pipeline.venues import load_venue
from pipeline.venues.okx import VENUE as OKX_VENUE
from pipeline.venues.okx import wire as okx
from tests.conftest import FIXTURES as SHARED
from tests.conftest import examples, fixture_lines, single_book_update
from tests.property import test_sim_fuzz as fuzz
from tests.unit import test_sim_protocols as sim

FIXTURES = SHARED / "okx"
VENUE = load_venue("okx")
parse = VENUE.parse
top = VENUE.top
one = partial(single_book_update, VENUE)      # the one BookUpdate a frame parses into


lines = partial(fixture_lines, "okx")


def books_msg(action: str, prev: int, seq: int, bids=(), asks=(), checksum: int = 0) -> bytes:
    return orjson.dumps({"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": action,
                         "data": [{"asks": [list(a) for a in asks], "bids": [list(b) for b in bids],
                                   "ts": "1597026383200", "checksum": checksum,
                                   "prevSeqId": prev, "seqId": seq}]})


# ---------------------------------------------------------------- market data
def test_bbo_tbt_with_seq_id():
    u = one(lines("bbo.jsonl")[0])
    assert (u.symbol, u.channel, u.snapshot) == ("BCH-USDT-SWAP", BBO, True)
    assert u.bids == [(111.05, 57745.0)]
    assert u.asks == [(111.06, 55154.0)]
    assert (u.exch_ts_ms, u.seq, u.prev_seq, u.checksum) == (1670324386802, 363996337, None, None)


def test_bbo_tbt_and_books_carry_seq_id_as_cross_channel_id():
    assert one(lines("bbo.jsonl")[0]).xseq == 363996337
    snap = one(lines("books.jsonl")[0])
    assert snap.xseq == snap.seq


def test_late_books_never_override_a_newer_bbo_tbt():
    """W1: books seqId 10 -> bbo-tbt seqId 12 -> books update seqId 11 delivered late keeps bbo-tbt's top."""
    book = InstrumentBook("BTC-USDT", depth=2, keep_levels=OKX_VENUE.book_levels)
    assert book.apply(one(books_msg("snapshot", -1, 10, bids=[("100.0", "1", "0", "1"), ("99", "2", "0", "1")],
                                    asks=[("101", "1", "0", "1")]))) is Outcome.CHANGED
    bbo = orjson.dumps({"arg": {"channel": "bbo-tbt", "instId": "BTC-USDT"}, "data": [{
        "asks": [["101", "1", "0", "1"]], "bids": [["99.5", "3", "0", "1"]], "ts": "1597026383300", "seqId": 12}]})
    assert book.apply(one(bbo)) is Outcome.CHANGED
    assert book.apply(one(books_msg("update", 10, 11, bids=[("100.0", "1.5", "0", "1")]))) is Outcome.CHANGED
    assert book.compose()[0] == [(99.5, 3.0), (99.0, 2.0)]
    assert book.apply(one(books_msg("update", 11, 13, bids=[("100.0", "0", "0", "0")]))) is Outcome.CHANGED
    assert book.compose()[0] == [(99.0, 2.0)]                   # books seqId 13 is newer than bbo-tbt 12


def _bbo(seq: int, ts: int, bid: str = "99.5") -> bytes:
    return orjson.dumps({"arg": {"channel": "bbo-tbt", "instId": "BTC-USDT"}, "data": [{
        "asks": [["101", "1", "0", "1"]], "bids": [[bid, "3", "0", "1"]], "ts": str(ts), "seqId": seq}]})


def test_sequence_reset_on_books_rearms_bbo_tbt():
    """T3: after books resets (prev 1002 -> seqId 5) bbo-tbt ids 6, 7 are taken, not ignored."""
    book = InstrumentBook("BTC-USDT", depth=2, keep_levels=OKX_VENUE.book_levels)
    book.apply(one(books_msg("snapshot", -1, 1000, bids=[("99", "2", "0", "1")], asks=[("101", "1", "0", "1")])))
    book.apply(one(_bbo(1001, 1597026383000)))
    book.apply(one(books_msg("update", 1000, 1002, bids=[("98", "1", "0", "1")])))
    reset = one(books_msg("update", 1002, 5, bids=[("98", "2", "0", "1")]))
    assert reset.restart and reset.prev_seq == 1002
    assert book.apply(reset) is Outcome.CHANGED and book.sequence_resets == 1
    assert book.apply(one(_bbo(6, 1597026384000, "99.6"))) is Outcome.CHANGED
    assert book.apply(one(_bbo(7, 1597026384010, "99.7"))) is Outcome.CHANGED
    assert book.compose()[0][0] == (99.7, 3.0) and book.state == RowStatus.LIVE
    assert book.stuck_channels == 0


def test_a_reset_after_a_lost_message_is_a_gap():
    """The reset message's prevSeqId must still be the last seqId applied: 1002 lost, reset says prev 1003."""
    book = InstrumentBook("BTC-USDT", depth=2, keep_levels=OKX_VENUE.book_levels)
    book.apply(one(books_msg("snapshot", -1, 1000, bids=[("99", "2", "0", "1")], asks=[("101", "1", "0", "1")])))
    assert book.apply(one(books_msg("update", 1003, 5, bids=[("98", "2", "0", "1")]))) is Outcome.GAP
    assert book.gaps == 1 and book.state == RowStatus.RESYNCING


def test_deltas_stuck_behind_a_missed_reset_rebuild_the_book():
    """T3: a reset whose message was lost leaves later ids below the last applied: rebuilt after ~1 s."""
    book = InstrumentBook("BTC-USDT", depth=2, keep_levels=OKX_VENUE.book_levels)
    book.apply(one(books_msg("snapshot", -1, 1000, bids=[("99", "2", "0", "1")], asks=[("101", "1", "0", "1")])))

    def update(prev, seq, ts):
        msg = orjson.loads(books_msg("update", prev, seq, bids=[("98", "1", "0", "1")]))
        msg["data"][0]["ts"] = str(ts)
        return one(orjson.dumps(msg))

    assert book.apply(update(6, 7, 1597026383000)) is Outcome.IGNORED
    assert book.apply(update(7, 8, 1597026383500)) is Outcome.IGNORED
    assert book.apply(update(8, 9, 1597026384000)) is Outcome.GAP
    assert book.stuck_channels == 1 and book.gaps == 1 and book.state == RowStatus.RESYNCING


def test_a_stuck_bbo_channel_is_rearmed_and_counted():
    """T3: bbo-tbt resets on its own (no prevSeqId to say so); older ids for > 1 s while books advances."""
    book = InstrumentBook("BTC-USDT", depth=2, keep_levels=OKX_VENUE.book_levels)
    book.apply(one(books_msg("snapshot", -1, 1000, bids=[("99", "2", "0", "1")], asks=[("101", "1", "0", "1")])))
    book.apply(one(_bbo(5000, 1597026383000)))
    assert book.apply(one(_bbo(10, 1597026383100, "99.1"))) is Outcome.IGNORED
    book.apply(one(books_msg("update", 1000, 1001, bids=[("98", "1", "0", "1")])))
    assert book.apply(one(_bbo(11, 1597026383600, "99.2"))) is Outcome.IGNORED      # 0.5 s: still waiting
    assert book.apply(one(_bbo(12, 1597026384100, "99.3"))) is Outcome.CHANGED      # 1.0 s: re-armed
    assert book.stuck_channels == 1
    assert book.apply(one(_bbo(13, 1597026384110, "99.4"))) is Outcome.CHANGED
    assert book.bbo.bids.level == [(99.4, 3.0)]


def test_an_older_bbo_alone_is_not_called_stuck():
    book = InstrumentBook("BTC-USDT", depth=2, keep_levels=OKX_VENUE.book_levels)
    book.apply(one(books_msg("snapshot", -1, 1000, bids=[("99", "2", "0", "1")], asks=[("101", "1", "0", "1")])))
    book.apply(one(_bbo(5000, 1597026383000)))
    for k in range(3):                                   # depth did not move: a late frame, not a reset
        assert book.apply(one(_bbo(10 + k, 1597026383000 + 2000 * (k + 1)))) is Outcome.IGNORED
    assert book.stuck_channels == 0


@pytest.mark.parametrize("channel, levels", [("books-l2-tbt", 400), ("books50-l2-tbt", 50)])
def test_tick_by_tick_channels_decode_like_books(channel, levels):
    for line, action in zip(lines("books.jsonl")[:2], ("snapshot", "update")):
        msg = orjson.loads(line)
        msg["arg"]["channel"] = channel
        u = one(orjson.dumps(msg))
        ref = one(line)
        assert (u.symbol, u.channel, u.snapshot, u.bids, u.asks, u.seq, u.prev_seq) == (
            ref.symbol, DEPTH, action == "snapshot", ref.bids, ref.asks, ref.seq, ref.prev_seq)
    assert okx.DEPTH_CHANNELS[channel] == levels
    [frame] = okx.build_subscribe(["BTC-USDT"], 5, channel=channel)
    assert orjson.loads(frame)["args"] == [{"channel": "bbo-tbt", "instId": "BTC-USDT"},
                                           {"channel": channel, "instId": "BTC-USDT"}]
    assert '"books"' not in frame                        # never books and a tbt channel for one instId
    unsub, sub = okx.build_resubscribe("BTC-USDT", 5, channel=channel)
    assert channel in unsub and channel in sub


def test_login_and_channel_refusals():
    assert parse(b'{"event":"login","code":"0","msg":"","connId":"a4d3ae55"}', 0) == [LoginResult(True, "0", "")]
    assert parse(b'{"event":"error","code":"60009","msg":"Login failed.","connId":"a4d3ae55"}', 0) == [
        LoginResult(False, "60009", "Login failed.")]
    refused = parse(b'{"event":"error","code":"64003","msg":"Your trading fee tier does not meet the '
                    b'requirement to access this channel","arg":{"channel":"books50-l2-tbt","instId":"BTC-USDT"},'
                    b'"connId":"a4d3ae55"}', 0)
    assert refused == [ChannelNotPermitted("BTC-USDT", "books50-l2-tbt", "64003", "Your trading fee tier does not "
                                           "meet the requirement to access this channel")]
    [login] = parse(b'{"event":"error","msg":"Please log in","code":"60011"}', 0)       # cryptofeed #845, 2022
    assert isinstance(login, ChannelNotPermitted) and login.code == "60011"


def test_build_login_signs_timestamp_get_verify_path():
    import base64
    import hashlib
    import hmac
    frame = orjson.loads(okx.build_login("key", "secret", "pass", 1538054050))
    [arg] = frame["args"]
    expected = base64.b64encode(hmac.new(b"secret", b"1538054050GET/users/self/verify", hashlib.sha256).digest())
    assert frame["op"] == "login" and arg == {"apiKey": "key", "passphrase": "pass", "timestamp": "1538054050",
                                              "sign": expected.decode()}


def test_bbo_tbt_2022_without_seq_id():
    u = one(lines("bbo.jsonl")[1].encode())
    assert (u.symbol, u.channel, u.snapshot) == ("BTC-USDT", BBO, True)
    assert u.bids == [(31774.6, 0.3392211)]
    assert u.asks == [(31774.7, 0.14368878)]
    assert (u.exch_ts_ms, u.seq) == (1654031991947, None)


def test_tickers_as_bbo():
    first, second = (one(line) for line in lines("ticker.jsonl"))
    assert (first.symbol, first.channel, first.snapshot) == ("BTC-USDT", BBO, True)
    assert first.bids == [(64028.6, 0.00503393)]
    assert first.asks == [(64028.7, 2.31126955)]
    assert first.exch_ts_ms == 1786538789464
    assert second.bids == [(64028.6, 0.00484352)]
    assert second.asks == [(64028.7, 2.36206603)]
    assert second.exch_ts_ms == 1786538789666


def test_tickers_empty_side_is_empty_list():
    line = lines("ticker.jsonl")[0].replace('"bidPx":"64028.6"', '"bidPx":""').replace(
        '"bidSz":"0.00503393"', '"bidSz":""')
    u = one(line)
    assert u.bids == []
    assert u.asks == [(64028.7, 2.31126955)]


def test_books5_snapshot_real_2026():
    u = one(lines("depth5.jsonl")[1])
    assert (u.symbol, u.channel, u.snapshot) == ("BTC-USDT", DEPTH, True)
    assert u.bids == [(64073.0, 0.58849577), (64072.7, 0.00050267), (64072.2, 0.0000102),
                      (64072.0, 0.14185639), (64071.9, 0.19905687)]
    assert u.asks == [(64073.1, 1.07909367), (64073.6, 0.15471482), (64074.0, 0.0000102),
                      (64075.0, 0.00024081), (64075.8, 0.24629813)]
    assert (u.exch_ts_ms, u.seq, u.prev_seq) == (1786538744703, 79706756139, None)
    assert one(lines("depth5.jsonl")[2]).seq == 79706756227


def test_books_snapshot_and_update():
    snap, upd = (one(line) for line in lines("books.jsonl"))
    assert (snap.symbol, snap.channel, snap.snapshot) == ("BTC-USDT", DEPTH, True)
    assert snap.asks[:3] == [(8476.98, 415.0), (8477.0, 7.0), (8477.34, 85.0)]
    assert snap.asks[-1] == (8506.96, 100.0) and len(snap.asks) == 8
    assert snap.bids[:3] == [(8476.97, 256.0), (8475.55, 101.0), (8475.54, 100.0)]
    assert snap.bids[-1] == (8446.0, 95.0) and len(snap.bids) == 8
    assert (snap.exch_ts_ms, snap.seq, snap.prev_seq, snap.restart) == (1597026383085, 123456, None, False)
    assert (upd.snapshot, upd.seq, upd.prev_seq, upd.restart) == (False, 123457, 123456, False)
    assert snap.checksum is None and upd.checksum is None      # the wire checksum is always 0: never used


def test_nonzero_checksum_is_still_ignored():
    u = one(books_msg("update", 10, 11, asks=[("1", "1", "0", "1")], checksum=-1234567))
    assert u.checksum is None


# ---------------------------------------------------------------- through the shared book
def test_snapshot_update_keepalive_reset_and_gap_through_book():
    book = InstrumentBook("BTC-USDT", depth=5, keep_levels=OKX_VENUE.book_levels, checksum=OKX_VENUE.checksum)
    snap, upd = (one(line) for line in lines("books.jsonl"))
    assert book.apply(snap) == Outcome.CHANGED
    assert book.apply(upd) == Outcome.CHANGED
    bids, asks = book.compose()
    assert bids == [(8476.97, 256.0), (8475.55, 101.0), (8475.54, 100.0), (8475.3, 1.0), (8447.32, 6.0)]
    assert asks == [(8476.98, 415.0), (8477.0, 7.0), (8477.34, 85.0), (8477.56, 1.0), (8505.84, 8.0)]

    # a real change: remove the best ask, change the best bid
    change = one(books_msg("update", 123457, 123458, bids=[("8476.97", "3", "0", "1")],
                           asks=[("8476.98", "0", "0", "0")]))
    assert book.apply(change) == Outcome.CHANGED
    bids, asks = book.compose()
    assert bids[0] == (8476.97, 3.0) and asks[0] == (8477.0, 7.0)

    # ~60 s keep-alive: empty sides, prevSeqId == seqId
    keepalive = one(books_msg("update", 123458, 123458))
    assert (keepalive.bids, keepalive.asks, keepalive.seq, keepalive.restart) == ([], [], 123458, False)
    assert book.apply(keepalive) == Outcome.UNCHANGED     # proves liveness, changes nothing
    assert book.gaps == 0 and book.compose() == (bids, asks)

    # maintenance reset: seqId < prevSeqId is not a gap
    reset = one(books_msg("update", 123458, 3, asks=[("8477", "9", "0", "1")]))
    assert (reset.restart, reset.prev_seq, reset.seq) == (True, 123458, 3)   # still follows the last seqId
    assert book.apply(reset) == Outcome.CHANGED
    assert book.gaps == 0 and book.compose()[1][0] == (8477.0, 9.0)
    assert book.apply(one(books_msg("update", 3, 4, bids=[("8476.5", "1", "0", "1")]))) == Outcome.CHANGED
    assert book.compose()[0][:2] == [(8476.97, 3.0), (8476.5, 1.0)]

    # prevSeqId that is not the last seqId: a gap, the book is discarded
    assert book.apply(one(books_msg("update", 7, 8, bids=[("8476.6", "1", "0", "1")]))) == Outcome.GAP
    assert book.gaps == 1 and book.compose() == ([], [])
    # and the next snapshot restores it
    assert book.apply(one(books_msg("snapshot", -1, 20, bids=[("1", "1", "0", "1")],
                                    asks=[("2", "1", "0", "1")]))) == Outcome.CHANGED
    assert book.compose() == ([(1.0, 1.0)], [(2.0, 1.0)])


def _okx_2022_checksum(bids_text, asks_text) -> int:
    """OKX's retired algorithm (interleaved top 25, signed CRC32): only to validate 2022 data."""
    parts = []
    for i in range(25):
        if i < len(bids_text):
            parts.append(":".join(bids_text[i]))
        if i < len(asks_text):
            parts.append(":".join(asks_text[i]))
    value = zlib.crc32(":".join(parts).encode())
    return value - (1 << 32) if value >= (1 << 31) else value


def test_real_2022_books_session_replays_with_verified_checksums():
    """Every BTC-USDT `books` frame of the 2022 session, through parse and the shared book.

    OKX no longer sends a checksum, but in 2022 its CRC32s were real: verifying them after every
    update proves the parsed levels and the delta application reproduce OKX's own book.
    """
    book = InstrumentBook("BTC-USDT", depth=5, keep_levels=OKX_VENUE.book_levels,
                          checksum=_okx_2022_checksum, checksum_levels=25)
    applied = 0
    for line in (SHARED / "cryptofeed-2021" / "OKX.ws.1.0").read_text().splitlines():
        payload = line.split(": ", 1)[-1]
        if '"channel":"books","instId":"BTC-USDT"},"action"' not in payload or "<-" in line:
            continue
        u = one(payload)
        data = orjson.loads(payload)["data"][0]
        assert u.checksum is None
        u.bids_text = [tuple(level[:2]) for level in data["bids"]]
        u.asks_text = [tuple(level[:2]) for level in data["asks"]]
        u.checksum = data["checksum"]
        assert book.apply(u) == Outcome.CHANGED
        applied += 1
    assert applied == 98 and book.checksum_failures == 0
    bids, asks = book.compose()
    assert len(bids) == 5 and len(asks) == 5 and bids[0][0] < asks[0][0]


# ---------------------------------------------------------------- control
def test_text_pong_is_not_json():
    ping, pong = (FIXTURES / "control_text_frames.txt").read_text().split()
    assert okx.build_keepalive() == ping == "ping"
    assert parse(pong, 0) == [Pong()]
    assert parse(pong.encode(), 0) == [Pong()]
    assert parse(b"pong\n", 0) == [Pong()]
    assert OKX_VENUE.keepalive_interval_s == 20.0


def test_control_messages():
    ack, ack5, error, notice = lines("control_recv.jsonl")
    assert parse(ack, 0) == [Ack("BTC-USDT", "books")]
    assert parse(ack5.encode(), 0) == [Ack("BTC-USDT", "books5")]
    [err] = parse(error, 0)
    assert isinstance(err, SubscribeError)
    assert err.symbol == "BTC-USD-191227" and err.message.startswith("code 60012: Invalid request")
    # C1: 64008 is an announced (planned) disconnect: make-before-break
    assert parse(notice, 0) == [Notice("code 64008: The connection will soon be closed for a service "
                                       "upgrade. Please reconnect.", reconnect=True, planned=True)]
    other = parse(b'{"event":"notice","code":"64009","msg":"x"}', 0)
    assert other == [Notice("code 64009: x", reconnect=False, planned=False)]
    assert parse(b'{"event":"unsubscribe","arg":{"channel":"books","instId":"BTC-USDT"}}', 0) == []


def test_build_subscribe_and_resubscribe():
    assert okx.native_symbol("BTC/USDT") == "BTC-USDT"
    assert okx.build_url(OKX_VENUE.default_url, ["BTC-USDT"], 5) == "wss://ws.okx.com:8443/ws/v5/public"
    assert okx.build_subscribe(["BTC-USDT"], 5) == [
        '{"op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"},'
        '{"channel":"books","instId":"BTC-USDT"}]}']
    # same shape as the captured/documented request, which adds only an optional id
    documented = orjson.loads(lines("control_sent.jsonl")[0])
    del documented["id"]
    unsub, sub = okx.build_resubscribe("BTC-USDT", 5)
    assert orjson.loads(sub) == documented
    assert orjson.loads(unsub) == {**documented, "op": "unsubscribe"}
    assert set(orjson.loads(lines("control_sent.jsonl")[1])) == set(orjson.loads(sub))


def test_errors():
    with pytest.raises(ParseError) as exc:
        parse(b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{}]}', 0)
    assert exc.value.reason == "unknown_message"
    with pytest.raises(ParseError) as exc:
        parse(b"pang", 0)
    assert exc.value.reason == "invalid_json"
    with pytest.raises(ParseError) as exc:
        parse(b'{"arg":{"channel":"books","instId":"X"},"action":"update","data":[{"bids":[]}]}', 0)
    assert exc.value.reason == "unknown_message"


def test_module_contract():
    tree = ast.parse(Path(okx.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"asyncio", "websockets", "socket", "time", "multiprocessing"}
    assert (okx.NAME, OKX_VENUE.book_levels, OKX_VENUE.checksum, OKX_VENUE.taker_fee_bps) == ("okx", 400, None, 10.0)
    with pytest.raises(NotImplementedError):
        okx.build_pong(1)


# ---------------------------------------------------------------- the declaration (okx.BookPush)
def _values(events) -> list:
    """Events as comparable values (BookUpdate has slots, no __eq__)."""
    return [tuple(getattr(e, k) for k in BookUpdate.__slots__) if isinstance(e, BookUpdate) else e for e in events]


def _with_field(line: str, where: str) -> str:
    """A real frame with an unknown field ``extra`` added inside ``arg`` or inside the first ``data`` item."""
    msg = orjson.loads(line)
    (msg["arg"] if where == "arg" else msg["data"][0])["extra"] = "1"
    return orjson.dumps(msg).decode()


@pytest.mark.parametrize("name, index", [("bbo.jsonl", 0), ("bbo.jsonl", 1), ("books.jsonl", 0), ("books.jsonl", 1),
                                         ("depth5.jsonl", 1)])
@pytest.mark.parametrize("where, at", [("arg", "$.arg"), ("data", "$.data[0]")])
def test_an_unknown_field_is_one_schema_drift_after_the_same_events(name, index, where, at):
    line = lines(name)[index]
    *events, drift = parse(_with_field(line, where), 0)
    assert _values(events) == _values(parse(line, 0)) and all(isinstance(e, BookUpdate) for e in events)
    assert isinstance(drift, SchemaDrift) and drift.message == "BookPush"
    assert "unknown field `extra`" in drift.detail and at in drift.detail
    assert top(_with_field(line, where)) is None               # the short path leaves a drifted frame to parse


def test_unknown_fields_in_arg_and_data_are_still_one_schema_drift():
    line = lines("books.jsonl")[1]
    events = parse(_with_field(_with_field(line, "arg"), "data"), 0)
    assert _values(events[:-1]) == _values(parse(line, 0))
    assert [type(e) for e in events].count(SchemaDrift) == 1 and "`extra`" in events[-1].detail


@pytest.mark.parametrize("name, index, old, new", [
    ("bbo.jsonl", 0, '["111.05",', "[null,"),                  # a price null
    ("books.jsonl", 1, '["8476.98",', "[null,"),
    ("bbo.jsonl", 0, '"seqId":363996337', '"seqId":[363996337]'),   # seqId a list
    ("books.jsonl", 1, '"seqId":123457', '"seqId":[123457]'),
    ("books.jsonl", 1, '"prevSeqId":123456', '"prevSeqId":"x"'),
    ("depth5.jsonl", 1, '"ts":"1786538744703"', '"ts":null'),
    ("books.jsonl", 0, '"asks":[[', '"asks":[{"p":1},['),
])
def test_a_wrong_type_is_a_parse_error(name, index, old, new):
    line = lines(name)[index]
    assert old in line
    bad = line.replace(old, new, 1)
    for raw in (bad, bad.encode()):
        with pytest.raises(ParseError) as exc:
            parse(raw, 0)
        assert exc.value.reason == "unknown_message" and "BookPush" in str(exc.value)
        assert top(raw) is None


def test_a_push_that_is_not_json_text_is_a_parse_error():
    line = lines("bbo.jsonl")[0]
    deep = line.replace('"ts"', '"extra":' + "[" * 100_000 + "]" * 100_000 + ',"ts"', 1)   # skipped as drift
    for raw in (line.replace("BCH-USDT-SWAP", "BCH-\ud800"), line.encode().replace(b"BCH", b"\xff\xfe"), deep,
                deep.encode()):
        with pytest.raises(ParseError) as exc:
            parse(raw, 0)
        assert exc.value.reason == "invalid_json"
        assert top(raw) is None


def test_a_push_without_the_usual_first_bytes_is_read_by_the_same_declaration():
    snap = lines("books.jsonl")[0]
    msg = orjson.loads(snap)
    reordered = orjson.dumps({"data": msg["data"], "action": msg["action"], "arg": msg["arg"]})
    spaced = snap.replace('{"arg":{"channel":"books"', '{ "arg" : { "channel" : "books"', 1)
    assert _values(parse(reordered, 0)) == _values(parse(spaced, 0)) == _values(parse(snap, 0))
    msg["data"][0]["extra"] = 1
    [_, drift] = parse(orjson.dumps({"data": msg["data"], "action": "snapshot", "arg": msg["arg"]}), 0)
    assert isinstance(drift, SchemaDrift) and "`extra`" in drift.detail


def test_empty_depth_push_and_action_rules():
    assert parse(b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[]}', 0) == []
    assert parse(b'{"arg":{"channel":"books"},"data":[]}', 0) == []          # nothing to apply: nothing needed
    snap = orjson.loads(lines("books.jsonl")[0])
    for change in ({"action": "partial"}, {"arg": {"channel": "books"}}):
        with pytest.raises(ParseError):
            parse(orjson.dumps({**snap, **change}), 0)
    no_action = {k: v for k, v in snap.items() if k != "action"}
    with pytest.raises(ParseError):
        parse(orjson.dumps(no_action), 0)


def test_books5_and_bbo_take_the_instrument_from_data_or_arg():
    bbo = orjson.loads(lines("bbo.jsonl")[0])
    bbo["data"][0]["instId"] = "ETH-USDT"
    assert one(orjson.dumps(bbo)).symbol == "ETH-USDT"
    del bbo["arg"]["instId"]
    assert one(orjson.dumps(bbo)).symbol == "ETH-USDT"
    del bbo["data"][0]["instId"]
    with pytest.raises(ParseError):
        parse(orjson.dumps(bbo), 0)
    books = orjson.loads(lines("books.jsonl")[1])
    books["data"][0]["instId"] = "ETH-USDT"                   # a depth push names its book by arg
    assert one(orjson.dumps(books)).symbol == "BTC-USDT"


def _bbo_of(events) -> tuple | None:
    """``top``'s answer as the contract derives it from parse's events."""
    if len(events) != 1:
        return None
    e = events[0]
    if (e.__class__ is not BookUpdate or e.channel != BBO or not e.snapshot or len(e.bids) != 1 or len(e.asks) != 1
            or e.prev_seq is not None or e.checksum is not None or e.restart or e.weak):
        return None
    (bid_px, bid_qty), (ask_px, ask_qty) = e.bids[0], e.asks[0]
    return (e.symbol, bid_px, bid_qty, ask_px, ask_qty, e.exch_ts_ms, e.seq, e.xseq)


_ALL_LINES = [(path.name, line) for path in sorted(FIXTURES.iterdir()) for line in fixture_lines("okx", path.name)]


@pytest.mark.parametrize("name, line", _ALL_LINES, ids=[f"{n}:{i}" for i, (n, _) in enumerate(_ALL_LINES)])
def test_top_agrees_with_parse_on_every_fixture_line(name, line):
    for raw in (line, line.encode()):
        try:
            expected = _bbo_of(parse(raw, 0))
        except ParseError:
            expected = None
        assert top(raw) == expected
        if name == "bbo.jsonl":
            assert expected is not None                        # the short path takes every real bbo-tbt frame


def test_top_of_a_real_frame():
    assert top(lines("bbo.jsonl")[0]) == ("BCH-USDT-SWAP", 111.05, 57745.0, 111.06, 55154.0, 1670324386802,
                                          363996337, 363996337)
    assert top(lines("bbo.jsonl")[1].encode()) == ("BTC-USDT", 31774.6, 0.3392211, 31774.7, 0.14368878,
                                                   1654031991947, None, None)
    two = lines("bbo.jsonl")[0].replace('"asks":[', '"asks":[["111.07","1","0","1"],', 1)
    assert top(two) is None and len(one(two).asks) == 2
    for other in (lines("depth5.jsonl")[0], lines("books.jsonl")[0], lines("ticker.jsonl")[0], "pong", b"", 7):
        assert top(other) is None


# ---------------------------------------------------------------- fuzz
@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=512))
def test_parse_arbitrary_bytes_raises_only_parse_error(raw):
    try:
        parse(raw, 0)
    except ParseError:
        pass
    top(raw)                                                   # never raises


_SAMPLES = [line for name in ("bbo.jsonl", "books.jsonl", "depth5.jsonl", "ticker.jsonl", "control_recv.jsonl")
            for line in lines(name)]


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(_SAMPLES), st.integers(0, 2000), st.integers(0, 40), st.binary(max_size=8))
def test_parse_mutated_fixture_raises_only_parse_error(line, at, cut, insert):
    raw = line.encode()
    at %= len(raw)
    mutated = raw[:at] + insert + raw[at + cut:]
    try:
        events = parse(mutated, 0)
    except ParseError:
        events = None
    assert top(mutated) == (None if events is None else _bbo_of(events))


# ---------------------------------------------------------------- the simulator's OKX (sim-fidelity M1-M8)
def test_okx_text_ping_pong():
    venue, proto, _ = sim.setup("okx")
    assert proto.on_message(venue.build_keepalive()) == ["pong"]
    assert venue.parse("pong", 0) == [Pong()]


def test_okx_books_chain_and_keepalive_update():
    venue, proto, symbol = sim.setup("okx")
    proto.on_message(venue.build_subscribe([symbol], sim.SHOWN)[0])
    bids, asks = [(3200.0, 1.0), (3199.5, 2.0)], [(3200.5, 1.5)]
    snap = orjson.loads(proto.render(symbol, DEPTH, bids, asks, sim.T0)[0])
    same = orjson.loads(proto.render(symbol, DEPTH, bids, asks, sim.T0 + 100)[0])
    moved = orjson.loads(proto.render(symbol, DEPTH, bids[:1], asks, sim.T0 + 200)[0])
    assert snap["action"] == "snapshot" and snap["data"][0]["prevSeqId"] == -1
    assert snap["data"][0]["bids"][0][:3] == ["3200", "1", "0"] and snap["data"][0]["checksum"] == 0
    keep = same["data"][0]
    assert (same["action"], keep["asks"], keep["bids"]) == ("update", [], [])
    assert keep["prevSeqId"] == keep["seqId"] == snap["data"][0]["seqId"]
    assert moved["data"][0]["prevSeqId"] == snap["data"][0]["seqId"] < moved["data"][0]["seqId"]
    assert moved["data"][0]["bids"] == [["3199.5", "0", "0", "0"]]


def test_okx_sim_confirms_an_unchanged_book_with_a_keep_alive_the_book_calls_unchanged():
    venue, proto, symbol = sim.setup("okx")
    for frame in venue.build_subscribe([symbol], sim.SHOWN):
        proto.on_message(frame)
    book = InstrumentBook(symbol, depth=sim.SHOWN, keep_levels=venue.book_levels)
    bids, asks = [(3200.0, 1.0), (3199.5, 2.0)], [(3200.5, 1.5), (3201.0, 1.0)]
    for ts, outcome in ((sim.T0, Outcome.CHANGED), (sim.T0 + 100, Outcome.UNCHANGED)):   # the same book again
        frames = [f for key in list(proto.subscriptions) if key[1] == DEPTH for f in proto.render(*key, bids, asks, ts)]
        assert [book.apply(e) for f in frames for e in venue.parse(f, 0)] == [outcome]


def test_okx_tickers_books5_and_trades():
    _, proto, symbol, state = sim.served("okx")
    args = [{"channel": c, "instId": symbol} for c in ("tickers", "books5", "trades")]
    replies = [orjson.loads(r) for r in proto.on_message(orjson.dumps({"op": "subscribe", "args": args}))]
    assert [r["event"] for r in replies] == ["subscribe"] * 3
    frames = sim.step(proto, state, 1, sim.T0)
    by_channel = {f["arg"]["channel"]: f["data"][0] for f in frames}
    assert set(by_channel) == {"tickers", "books5", "trades"}
    assert len(by_channel["books5"]["bids"]) == 5 and "prevSeqId" not in by_channel["books5"]
    assert by_channel["tickers"]["bidPx"] == "3200.01" and {"open24h", "high24h", "low24h", "vol24h"} <= set(
        by_channel["tickers"])
    assert by_channel["trades"]["side"] in ("buy", "sell")
    refused = orjson.loads(proto.on_message(orjson.dumps({"op": "subscribe", "args": [
        {"channel": "candle1m", "instId": symbol}]}))[0])
    assert refused["code"] == "60018"


def test_okx_sim_refuses_the_tbt_channel_with_64003_and_answers_a_login_with_code_0():
    venue, proto, symbol = sim.setup("okx")
    channel = venue.login_depth_channel
    refused = sim.parse_all(venue, proto.on_message(venue.build_subscribe([symbol], sim.SHOWN, channel=channel)[0]))
    assert [(e.symbol, e.channel, e.code) for e in refused if isinstance(e, ChannelNotPermitted)] == [
        (symbol, "books50-l2-tbt", "64003")]
    assert sim.parse_all(venue, proto.on_message(venue.build_login("key", "secret", "pass", 1_700_000_000))) == [
        LoginResult(True, "0", "")]


def test_okx_request_budget_rule():
    from pipeline.sim.protocol import Rules
    _, proto, symbol = sim.setup("okx")
    frame = orjson.dumps({"op": "subscribe", "args": [{"channel": "bbo-tbt", "instId": symbol}]})
    for _ in range(500):
        proto.on_message(frame)                              # rule off: never refused
    proto.rules = Rules(request_budget=True)
    replies = [orjson.loads(proto.on_message(frame)[0]) for _ in range(481)]
    assert [r["event"] for r in replies[:480]] == ["subscribe"] * 480
    assert (replies[480]["event"], replies[480]["code"]) == ("error", "60014")


# ---------------------------------------------------------------- fuzzing the simulator with OKX's request shapes
def _fuzz_requests():
    name = fuzz.names(["bbo-tbt", "books", "books5", "tickers", "trades", "books-l2-tbt", "candle1m", ""])
    anything = fuzz.json_values
    return fuzz.shaped(st.fixed_dictionaries({
        "op": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "login"]), anything),
        "args": st.one_of(st.lists(st.one_of(st.fixed_dictionaries({"channel": name, "instId": fuzz.symbols("okx")}),
                                             anything), max_size=3), anything),
        "id": anything}))


test_sim_never_raises_on_okx_requests = fuzz.fuzz("okx", _fuzz_requests())
