"""Arbitrary client frames against every simulated venue: never an exception, always a well-formed reply.

Each example is a short conversation with one connection's protocol: the frames the venue's own client
sends (its record's subscribe, resubscribe, keepalive, pong and login frames) with fields replaced,
renamed, dropped or added (plus raw text, bytes and random JSON), then three market steps rendered for
whatever ended up subscribed, and a keepalive. The protocol must not raise (the server would log it
and the client would see nothing), every reply must be a frame the venue could send (JSON text, gzip
JSON when the record says its frames are gzip, or a frame its own parser reads, such as OKX's bare
``pong``), and nothing may end up subscribed for a symbol the venue does not list.

Every venue in the registry is fuzzed so. A venue's test file can fuzz it further with requests shaped
from what it knows of the exchange (:func:`fuzz` with :func:`shaped`: stream names, channels, methods
the client never sends).
"""
from __future__ import annotations

import copy
import functools
import gzip
import json
from urllib.parse import urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.model import BBO, DEPTH
from pipeline.sim.market import Tape
from pipeline.sim.protocol import Rules, SymbolState
from pipeline.venues import SIM_PATHS, VENUES, load_protocol, load_venue
from tests.conftest import examples, weighted

INSTRUMENT = "BTC/USDT"
UNKNOWN = "ZZZ/USDT"
T0 = 1_790_000_000_000
EXAMPLES = examples(150)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                           max_leaves=12)
junk = st.one_of(st.text(max_size=40), st.binary(max_size=40), json_values.map(json.dumps))


def native(venue: str) -> str:
    return load_venue(venue).native_symbol(INSTRUMENT)


def names(served: list) -> st.SearchStrategy:
    """Stream / topic / channel names: the served ones, near misses and noise."""
    return st.one_of(st.sampled_from(served), st.text(max_size=20), json_values)


def symbols(venue: str) -> st.SearchStrategy:
    return st.one_of(st.sampled_from([native(venue), load_venue(venue).native_symbol(UNKNOWN), ""]), json_values)


def shaped(requests: st.SearchStrategy) -> st.SearchStrategy:
    """Requests of an exchange's shape (dicts), JSON-encoded, three times in four; junk otherwise."""
    return weighted((requests.map(json.dumps), 3), (junk, 1))


# ---------------------------------------------------------------- the client's own frames, mutated
def client_frames(name: str) -> list:
    """Every frame the venue's client sends, from its record: subscribe (several depths, with an unknown symbol,
    each depth channel), resubscribe, keepalive, the pong to a ping, the login."""
    venue = load_venue(name)
    symbol, unknown = native(name), venue.native_symbol(UNKNOWN)
    frames = []
    for depth in sorted({1, 5, 20, venue.book_levels or 5}):
        frames += venue.build_subscribe([symbol], depth)
    frames += venue.build_subscribe([symbol, unknown], 5)
    for channel in venue.depth_channels:
        frames += venue.build_subscribe([symbol], 5, channel=channel)
    frames += venue.build_resubscribe(symbol, 5)
    if venue.build_keepalive() is not None:
        frames.append(venue.build_keepalive())
    try:
        frames.append(venue.build_pong(T0))
    except NotImplementedError:                  # the venue does not ping its clients
        pass
    if venue.build_login is not None:
        frames.append(venue.build_login("key", "secret", "passphrase", T0 // 1000))
    return frames


def _nodes(doc, path=()):
    yield path
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _nodes(value, (*path, i))


def _words(frames: list) -> list:
    """The strings of the client's frames (keys and values) and near misses of them."""
    found = set()
    for frame in frames:
        try:
            doc = orjson.loads(frame)
        except orjson.JSONDecodeError:
            found.add(frame if isinstance(frame, str) else frame.decode("latin-1"))
            continue
        for path in _nodes(doc):
            found.update(p for p in path if isinstance(p, str))
            node = functools.reduce(lambda d, k: d[k], path, doc)
            if isinstance(node, str):
                found.add(node)
    near = {w for word in found for w in (word, word.upper(), word.lower(), word[:-1], word + "1", word + ".x")}
    return sorted(near)


CHANGES = st.sampled_from(["value", "word", "drop", "rename", "add"])


@st.composite
def mutated(draw, frames: tuple, words: tuple):
    """One of the client's frames with up to three changes: a value replaced (by anything, or by another word of
    the client's), a key renamed, a key or item dropped, a key or item added."""
    frame = draw(st.sampled_from(frames))
    try:
        doc = copy.deepcopy(orjson.loads(frame))
    except orjson.JSONDecodeError:               # a frame that is not JSON (OKX's bare ping): as is, or cut
        return draw(st.one_of(st.just(frame), st.integers(0, len(frame)).map(lambda n: frame[:n])))
    word = st.sampled_from(words)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(list(_nodes(doc))))
        kind = draw(CHANGES)
        value = draw(json_values if kind in ("value", "add") else word)
        if not path:
            doc = value if kind in ("value", "word") else doc
            continue
        parent = functools.reduce(lambda d, k: d[k], path[:-1], doc)
        key = path[-1]
        if kind in ("value", "word"):
            parent[key] = value
        elif kind == "drop":
            del parent[key]
        elif kind == "rename" and isinstance(parent, dict):
            parent[value] = parent.pop(key)
        elif kind == "add" and isinstance(parent, dict):
            parent[draw(word)] = value
        elif kind == "add":
            parent.insert(key, value)
    return json.dumps(doc)


@functools.cache
def own_requests(name: str) -> st.SearchStrategy:
    frames = tuple(client_frames(name))
    return st.one_of(mutated(frames, tuple(_words(frames))), mutated(frames, tuple(_words(frames))), junk)


def paths(name: str, extra=()) -> st.SearchStrategy:
    """The URL path the client connects to (from the record), every path a simulated venue serves, and noise."""
    venue = load_venue(name)
    url = urlsplit(venue.build_url(f"ws://127.0.0.1:1{venue.sim_path}", [native(name)], 5))
    own = url.path + (f"?{url.query}" if url.query else "")
    served = {own, *SIM_PATHS.values(), *(p for n in VENUES for p in load_protocol(n).PATHS), *extra}
    return st.one_of(st.just("/"), st.sampled_from(sorted(served)), st.text(max_size=40).map(lambda t: "/" + t))


# ---------------------------------------------------------------- one conversation
def check_frame(venue, frame) -> object:
    """A frame the venue could send: JSON text (gzip JSON when the record says so), or a frame its parser reads."""
    if venue.compression == "gzip":
        assert isinstance(frame, bytes), frame
        return orjson.loads(gzip.decompress(frame))
    assert isinstance(frame, str), frame
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        return venue.parse(frame, 0)             # not JSON (OKX's bare pong): the venue's own parser reads it


def conversation(name: str, frames: list, path: str) -> None:
    venue = load_venue(name)
    symbol = native(name)
    proto = load_protocol(name)({symbol: 2})
    proto.known_symbols = {symbol}
    proto.rules = Rules(missed_pongs=True, idle_timeout=True, message_rate=True, request_budget=True)
    state = SymbolState(symbol, Tape(f"{name}:{symbol}", 65000.0, 2, trade_chance=1.0))
    proto.states = {symbol: state}
    proto.path = path
    for frame in proto.on_connect():
        check_frame(venue, frame)
    for raw in frames:
        for reply in proto.on_message(raw):
            check_frame(venue, reply)
        proto.close_reason(0.0)
    for step in range(3):
        mid = 65000.0 + step
        bids = [(round(mid - 0.5 - i, 2), 0.1 + i) for i in range(10)]
        asks = [(round(mid + 0.5 + i, 2), 0.2 + i) for i in range(10)]
        ts = T0 + step * 100
        state.update(bids, asks, ts)
        for sym, channel in list(proto.subscriptions):
            assert sym == symbol, f"{name}: subscribed to unknown symbol {sym!r}"
            if channel in (BBO, DEPTH):
                out = proto.render(sym, channel, bids, asks, ts)
            else:
                out = proto.render_stream(sym, channel, state)
            for frame in out:
                check_frame(venue, frame)
        for frame in proto.keepalive(ts):
            check_frame(venue, frame)


def fuzz(name: str, requests: st.SearchStrategy, extra_paths=()):
    """A test: conversations of ``requests`` with ``name``'s protocol (for a venue's own test file)."""
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frames=st.lists(requests, min_size=1, max_size=6), path=paths(name, extra_paths))
    def check(frames, path):
        conversation(name, frames, path)

    return check


@functools.cache
def own_conversation(name: str) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    """(frames, path) of a conversation with ``name``'s protocol: built once per venue, not per example."""
    return st.lists(own_requests(name), min_size=1, max_size=6), paths(name)


@pytest.mark.parametrize("name", VENUES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_clients_own_frames_changed_anyhow_never_raise(name, data):
    frames, path = own_conversation(name)
    conversation(name, data.draw(frames, label="frames"), data.draw(path, label="path"))
