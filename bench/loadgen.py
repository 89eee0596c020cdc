"""A cheap load generator for the end-to-end benchmark: every venue's frames rendered once, sent many times.

The simulator (``pipeline.sim``) renders every frame with Python and a
WebSocket library at the moment it sends it; at a few thousand updates/s that
is most of a core, which on a 2-core machine is the core the feeds need. This
module renders the same frames in advance, with the simulator's own protocol
code, and then only fills in the few numbers that must change and writes
prebuilt WebSocket frames straight to the socket:

1. **Books.** A seeded :class:`~pipeline.sim.market.Market` gives the books
   of every (venue, instrument) for ``steps`` market steps. The mid price is
   a closed random walk (its steps sum to zero) and the last step is step 0
   again, so the body can be played in a loop without a jump in the book.
   Dislocations (one venue's instrument ``dislocation_bps`` away from the
   others for a while) are placed at fixed steps, none across the loop's end.
2. **Frames.** For each venue a :class:`~pipeline.sim.protocol.SimProtocol`
   instance is subscribed exactly as the feed will subscribe it (the venue
   module's own ``build_url`` and ``build_subscribe`` frames), renders the
   snapshots of step 0 (the *prologue*, sent once per connection) and then
   the *body* (steps 1 .. steps-1 and step 0 again) twice, with Python's
   ``random`` seeded the same way for both passes, and every frame stamped
   with one fixed time.
3. **Templates.** The two passes differ only in the sequence numbers the
   protocol counted on (Binance ``u``, Bybit ``u``/``seq``, OKX ``seqId``/
   ``prevSeqId``, HTX ``seqNum``/``prevSeqNum``, Coinbase ``sequence_num``); each
   such number moves by the same amount every pass, so pass ``k`` of a frame
   carries ``first + k * (second - first)``: sequences stay increasing and
   Coinbase's ``sequence_num`` contiguous for as long as the loop runs. The
   fixed time, in each of the forms the venues print it (ms, RFC 3339 with
   micro- or nanoseconds), becomes a slot filled with the send time. A frame
   is then one bytes %-format and a tuple of slots. Kraken's checksum
   depends on the book only, which is the same in every pass. The
   exchange-wide per-symbol state (:class:`~pipeline.sim.protocol.SymbolState`,
   which numbers HTX's incremental mbp book) takes every step's book without
   trades (the tape, which Kraken's ticker prints, stays where it is).
   A venue whose depth snapshot is a request answered inside the delta
   stream (HTX's ``req``: its ``seqNum`` is the ``prevSeqNum`` of one
   incremental on the same connection) also gets that request's answer
   rendered after the prologue and after every body step, templated alike.
4. **Sending.** One process, one thread, one listening port per venue,
   non-blocking sockets and a minimal RFC 6455 server: the handshake and
   every client frame (subscribe, pings) are answered by a live protocol
   instance of that venue, so acks, errors and pongs are the simulator's,
   except such a request: it gets the answer rendered for the start of the
   step that connection's stream is in (pass ``k`` numbered as its frames),
   so it meets an incremental already sent or the next one;
   once a connection holds every subscription the feed asks for, it gets the
   prologue and then body steps at the target rate. The loop sleeps to the
   next ``tick_ms`` boundary of the wall clock (``time.sleep``: no event
   loop, and the wake-up is not rounded up to a whole millisecond as an
   epoll timeout is): every connection's frames due at that boundary are
   built before it, stamped with it, and written right after it, one
   ``send`` per connection; then what the clients sent is taken. HTX
   frames are gzip members with one stored (uncompressed) deflate block, so
   they stay valid gzip without compressing each frame again.

The rate is in updates (frames) per second over all connections; the step
rate follows from the frames one body step holds. Connections that connect
together start together (the venues' walks stay in step); a connection whose
socket is backed up (more than ``max_buffer`` bytes the kernel did not
take yet) is skipped until it drains, so a feed that cannot keep up sees its
frames queue in the socket, as with an exchange.

Run by hand::

    python -m bench.loadgen --rate 10000 --cores 0

prints one JSON line (the venues' URLs, frames per step, render time) and
serves until SIGTERM, then prints what it sent.
"""
from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import json
import math
import os
import random
import re
import selectors
import signal
import socket
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pipeline.model import BBO, DEPTH
from pipeline.sim.market import DEFAULT_PRICES, Dislocation, Market, Tape, level_quantity, price_decimals
from pipeline.sim.protocol import SymbolState
from pipeline.venues import DEFAULT_TAKER_FEE_BPS, SIM_PATHS, VENUES, load_protocol, load_venue
from pipeline.venues.coinbase.sim import rfc3339_ns
from pipeline.venues.kraken.sim import rfc3339_us

STAMP_MS = 1_700_000_000_123                 # the fixed time every frame is rendered with
STAMP_FORMS = {                              # slot kind -> the fixed time as a venue prints it
    1: str(STAMP_MS),                                             # ms (Bybit, OKX, HTX)
    2: rfc3339_ns(STAMP_MS * 1_000_000),                          # Coinbase envelope timestamp
    3: rfc3339_us(STAMP_MS * 1000),                               # Kraken, Coinbase event_time
}
COUNTER = 0
STAMP_KIND = {form: kind for kind, form in STAMP_FORMS.items()}
_STAMP_RE = re.compile("|".join(f"(?<![0-9]){re.escape(form)}(?![0-9])" if kind == 1 else re.escape(form)
                                for kind, form in sorted(STAMP_FORMS.items(), reverse=True)))
_GZIP_HEAD = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"          # gzip, deflate, no flags, mtime 0, OS unknown
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
pack_head = struct.Struct("!BBH").pack
pack_long = struct.Struct("!BBQ").pack

DEFAULT_INSTRUMENTS = {"coinbase": ("BTC/USD", "ETH/USD", "BTC/USDT"), "kraken": ("BTC/USD", "ETH/USD", "BTC/USDT")}
OTHER_INSTRUMENTS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def instruments_of(venue: str) -> tuple[str, ...]:
    """The instruments the benchmark gives each venue (as the demo config)."""
    return DEFAULT_INSTRUMENTS.get(venue, OTHER_INSTRUMENTS)


# ---------------------------------------------------------------- templates

@dataclass(frozen=True)
class Template:
    """One frame: ``fmt % values`` with a value per slot; ``slots`` are ``(COUNTER, first, per_pass)`` or
    ``(stamp kind, 0, 0)``. ``binary``: sent as a gzip member in a binary frame (HTX)."""

    fmt: bytes
    slots: tuple
    binary: bool = False

    def payload(self, k: int, stamps: dict) -> bytes:
        """The message text of pass ``k`` with the send time ``stamps`` (kind -> bytes)."""
        if not self.slots:
            return self.fmt
        return self.fmt % tuple([first + k * step if kind == COUNTER else stamps[kind]
                                 for kind, first, step in self.slots])


def _counters(a: str, b: str) -> list:
    """``(start, end, value in a, value in b)`` of each digit run where ``b`` differs from ``a``.

    Nothing else may differ (ValueError otherwise).
    """
    out = []
    ia = ib = 0
    while a[ia:] != b[ib:]:
        ra, rb = a[ia:], b[ib:]
        lo, hi = 0, min(len(ra), len(rb))
        while lo < hi:                       # the first position where they differ, by bisection (C compares)
            mid = (lo + hi) // 2
            if ra[:mid + 1] == rb[:mid + 1]:
                lo = mid + 1
            else:
                hi = mid
        s = lo
        while s > 0 and ra[s - 1].isdigit():
            s -= 1
        ea = eb = lo
        while ea < len(ra) and ra[ea].isdigit():
            ea += 1
        while eb < len(rb) and rb[eb].isdigit():
            eb += 1
        if s == ea or s == eb:
            raise ValueError(f"the two passes differ in text, not in a number: {a[:200]!r} / {b[:200]!r}")
        out.append((ia + s, ia + ea, int(ra[s:ea]), int(rb[s:eb])))
        ia += ea
        ib += eb
    return out


def template(first, second) -> Template:
    """The template of one frame from its text in pass 0 and in pass 1 (the counters differ, nothing else)."""
    binary = isinstance(first, (bytes, bytearray))
    if binary:                               # HTX: gzip'd JSON
        first = zlib.decompress(first, 16 + zlib.MAX_WBITS).decode()
        second = zlib.decompress(second, 16 + zlib.MAX_WBITS).decode()
    marks = [(start, end, (COUNTER, v1, v2 - v1)) for start, end, v1, v2 in _counters(first, second)]
    marks += [(m.start(), m.end(), (STAMP_KIND[m.group()], 0, 0)) for m in _STAMP_RE.finditer(first)]
    marks.sort()
    fmt: list[bytes] = []
    at = 0
    for start, end, slot in marks:
        fmt.append(first[at:start].encode().replace(b"%", b"%%"))
        fmt.append(b"%d" if slot[0] == COUNTER else b"%b")
        at = end
    if not marks:
        return Template(first.encode(), (), binary)
    fmt.append(first[at:].encode().replace(b"%", b"%%"))
    return Template(b"".join(fmt), tuple(slot for _, _, slot in marks), binary)


def stamps_at(now_ns: int) -> dict:
    """The send time in every form a template slot takes."""
    return {1: str(now_ns // 1_000_000).encode(), 2: rfc3339_ns(now_ns).encode(),
            3: rfc3339_us(now_ns // 1000).encode()}


def gzip_stored(data: bytes) -> bytes:
    """``data`` as a gzip member with one stored deflate block (valid gzip, nothing compressed)."""
    n = len(data)
    return b"".join((_GZIP_HEAD, struct.pack("<BHH", 1, n, n ^ 0xFFFF), data,
                     struct.pack("<II", zlib.crc32(data), n)))


def ws_frame(payload: bytes, binary: bool = False, opcode: int | None = None) -> bytes:
    """One unmasked (server) WebSocket frame: text, binary, or ``opcode`` (pong, close)."""
    first = 0x80 | (opcode if opcode is not None else 0x2 if binary else 0x1)
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def message(t: Template, k: int, stamps: dict):
    """What a client receives for one template: ``str`` for text, the gzip ``bytes`` for binary."""
    data = t.payload(k, stamps)
    return gzip_stored(data) if t.binary else data.decode()


# ---------------------------------------------------------------- rendering

@dataclass
class VenueScript:
    """One venue's frames: what a connection gets after subscribing (``prologue``) and then ``body`` in a loop."""

    name: str
    symbols: dict                    # canonical instrument -> native symbol
    decimals: dict                   # native symbol -> price decimals
    path: str                        # the URL path the feed connects to
    subscriptions: frozenset         # (native symbol, channel) a connection must hold before it is sent data
    prologue: tuple                  # Template, ...
    body: list                       # per step: (Template, ...)
    states: dict = field(default_factory=dict)
    # a request answered from the stream (HTX's mbp ``req``): its text -> (the answer before the body, the
    # answer after each body step), each a tuple of Templates (see :meth:`answer`)
    answers: dict = field(default_factory=dict)

    @property
    def frames_per_pass(self) -> int:
        return sum(len(step) for step in self.body)

    def flatten(self) -> None:
        """``flat``: the body's frames in order; ``before[j]``: how many come before step ``j``."""
        self.flat = [t for step in self.body for t in step]
        self.before = [0]
        for step in self.body:
            self.before.append(self.before[-1] + len(step))

    def frames_due(self, steps: float) -> int:
        """Frames of the body (over all passes) due when ``steps`` market steps have passed: whole steps,
        and the fraction of the next one, so a step's frames go out spread over its duration."""
        k, rest = divmod(steps, len(self.body))
        j = int(rest)
        return int(k) * len(self.flat) + self.before[j] + int((rest - j) * len(self.body[j]))

    def control_protocol(self):
        """A protocol instance that answers one live connection's own frames (handshake path, subscribe, ping)."""
        proto = load_protocol(self.name)(dict(self.decimals))
        proto.known_symbols = set(self.decimals)
        proto.states = self.states
        return proto

    def answer(self, proto, text: str, frames_sent: int, stamps: dict) -> list:
        """What a connection sent ``frames_sent`` body frames (over all passes) is answered for a client frame.

        A request whose answer is numbered inside the stream (HTX's mbp ``req``, whose ``seqNum`` must be the
        ``prevSeqNum`` of an incremental on the same connection) is answered with the book the stream had at
        the start of the step that connection is in, as rendered after the step before (pass ``k`` numbered
        as the body's frames are): the connection's next incremental of that symbol, or one of this step's
        already sent, carries its ``seqNum`` as ``prevSeqNum``. Before any body frame (the prologue sent or
        not yet) it is the prologue's book. Every other frame is answered by ``proto``, live.
        """
        table = self.answers.get(text)
        if table is None:
            return proto.on_message(text)
        before, after = table
        k, i = divmod(frames_sent, len(self.flat)) if self.flat else (0, 0)
        j = bisect.bisect_right(self.before, i) - 1       # the step frame i is in (after any empty ones)
        if j > 0:
            templates = after[j - 1]
        elif k > 0:
            templates, k = after[-1], k - 1
        else:
            templates = before
        return [message(t, k, stamps) for t in templates]


def closed_walk(rng: random.Random, steps: int, volatility: float) -> list[float]:
    """``steps`` log-price offsets of a random walk whose steps sum to zero (the loop closes)."""
    moves = [rng.gauss(0.0, volatility) for _ in range(steps)]
    mean = sum(moves) / steps
    out, level = [], 0.0
    for move in moves:
        out.append(level)
        level += move - mean
    return out


def market_books(venues: dict, steps: int, seed: int = 3, dislocation_every: int = 0, dislocation_steps: int = 0,
                 dislocation_bps: float = 45.0, volatility_bps: float = 1.0) -> list[dict]:
    """Per step, ``{(venue, instrument): (bids, asks)}`` (10 levels); step ``steps`` would be step 0 again.

    ``venues``: venue -> canonical instruments. A dislocation starts every ``dislocation_every`` steps
    (none when 0) on a venue and instrument drawn from the seed and lasts ``dislocation_steps``; none
    starts in the first half period nor reaches the last step.
    """
    instruments = sorted({i for names in venues.values() for i in names})
    market = Market(list(venues), instruments, seed=seed, depth=10, volatility_bps=0.0,
                    dislocation_every_s=1e9, random_dislocations=False)
    rng = random.Random(seed)
    start = dict(market.mid)
    walks = {i: closed_walk(rng, steps, volatility_bps * 1e-4) for i in instruments}
    for dislocation in _dislocations(venues, steps, dislocation_every, dislocation_steps, dislocation_bps):
        market.schedule(dislocation)
    books = []
    for step in range(steps):
        for instrument in instruments:
            market.mid[instrument] = start[instrument] * math.exp(walks[instrument][step])
        books.append({(venue, instrument): market.book(venue, instrument, float(step))
                      for venue, names in venues.items() for instrument in names})
    return books, {i: market.decimals[i] for i in instruments}


def _present(venue_salt: int, ticks: int) -> bool:
    """A fixed sparse price ladder per venue: about three ticks in four hold a level."""
    return ((ticks * 2654435761 + venue_salt) >> 7) % 4 != 0


def ladder_books(venues: dict, steps: int, seed: int = 3, dislocation_every: int = 0, dislocation_steps: int = 0,
                 dislocation_bps: float = 45.0, walk_ticks: float = 1.5, half_spread_bps: float = 0.5,
                 levels: int = 10) -> tuple[list, dict]:
    """Like :func:`market_books`, but the books change the way busy real books do: a few levels per step.

    Levels sit on a fixed sparse ladder of ticks (per venue) and keep their quantity while they exist;
    the mid moves by a closed random walk of ``walk_ticks`` ticks a step, and the quantity at the best
    bid and ask changes almost every step, so top of book changes on most steps while a depth update
    carries two to a few levels. (The simulator's :class:`~pipeline.sim.market.Market` moves the whole
    book with every step's noise, so each of its depth updates replaces every level.)
    """
    instruments = sorted({i for names in venues.values() for i in names})
    rng = random.Random(seed)
    price = {i: DEFAULT_PRICES.get(i.split("/")[0], 100.0) for i in instruments}
    decimals = {i: price_decimals(p) for i, p in price.items()}
    walks = {i: closed_walk(rng, steps, walk_ticks) for i in instruments}
    dislocations = _dislocations(venues, steps, dislocation_every, dislocation_steps, dislocation_bps)
    salt = {venue: zlib.crc32(venue.encode()) for venue in venues}
    books = []
    for step in range(steps):
        now = {}
        for venue, names in venues.items():
            for instrument in names:
                dp = decimals[instrument]
                tick = 10.0 ** -dp
                mid = price[instrument] / tick + walks[instrument][step]
                for d in dislocations:
                    if d.exchange == venue and d.instrument == instrument and d.active(float(step)):
                        mid *= 1.0 + d.bps * 1e-4
                half = max(1.0, price[instrument] * half_spread_bps * 1e-4 / tick)
                size = 20000.0 / price[instrument]
                sides = []
                for start, direction in ((math.floor(mid - half), -1), (math.ceil(mid + half), 1)):
                    side, t = [], start
                    while len(side) < levels:
                        if _present(salt[venue], t):
                            px = round(t * tick, dp)
                            qty = level_quantity(size, px, dp, venue)
                            if not side:            # the best level's quantity moves every step or so
                                qty = round(qty * (1.0 + ((step * 7 + t) % 5) * 0.1), 6)
                            side.append((px, qty))
                        t += direction
                    sides.append(side)
                now[(venue, instrument)] = (sides[0], sides[1])
        books.append(now)
    return books, decimals


def _dislocations(venues: dict, steps: int, every: int, lasting: int, bps: float) -> list:
    """A dislocation every ``every`` steps for ``lasting`` steps, none across the loop's end.

    They go round the venues, cheapest taker fee first (a dislocation smaller than the fees opens
    nothing), and round each venue's instruments, alternately too high and too low.
    """
    order = sorted(venues, key=lambda v: (DEFAULT_TAKER_FEE_BPS.get(v, 0.0), v))
    out = []
    at, n = every // 2, 0
    while every and at + lasting < steps - 1:
        venue = order[n % len(order)]
        names = list(venues[venue])
        instrument = names[(n // len(order)) % len(names)]
        out.append(Dislocation(venue, instrument, bps if n % 2 else -bps, float(at), float(lasting)))
        at += every
        n += 1
    return out


def _render_step(proto, name: str, books: dict, symbols: dict, with_depth: bool) -> list:
    frames = []
    canonical = {native: c for c, native in symbols.items()}
    for native, state in proto.states.items():      # the exchange-wide book, once a step (as the server does):
        # the channels that number it (HTX mbp) read it; the trade tape stays (every pass renders alike)
        state.update(*books[(name, canonical[native])], STAMP_MS, trade=False)
    for symbol, channel in list(proto.subscriptions):
        if channel not in (BBO, DEPTH) or (channel == DEPTH and not with_depth):
            continue
        bids, asks = books[(name, canonical[symbol])]
        frames.extend(proto.render(symbol, channel, bids, asks, STAMP_MS))
    return frames


def _answer_requests(script: VenueScript, requests: list) -> list:
    """The answers a fresh connection gets to ``requests`` now, stamped with the fixed time."""
    if not requests:
        return []
    proto = script.control_protocol()
    proto.now_ms = lambda: STAMP_MS
    return [list(proto.on_message(request)) for request in requests]


def render_venue(name: str, books: list, decimals: dict, instruments, depth: int = 5, depth_every: int = 1,
                 seed: int = 11) -> VenueScript:
    """``name``'s frames for the books of :func:`market_books` (see the module docstring).

    A venue whose depth snapshot is a request answered inside the delta stream (``aligned_snapshots``: HTX's
    ``req``) also gets that request's answers: after the prologue and after every body step (a step without
    a depth render keeps the previous answer: the book is numbered when a depth channel renders it).
    """
    venue = load_venue(name)
    symbols = {i: venue.native_symbol(i) for i in instruments}
    native_decimals = {symbols[i]: decimals[i] for i in instruments}
    url = venue.build_url(f"ws://127.0.0.1:1{SIM_PATHS[name]}", list(symbols.values()), depth)
    split = urlsplit(url)
    path = split.path + (f"?{split.query}" if split.query else "")
    states = {}
    for canonical, native in symbols.items():
        bids, asks = books[0][(name, canonical)]
        tape = Tape(f"{name}:{native}", (bids[0][0] + asks[0][0]) / 2, decimals[canonical])
        states[native] = SymbolState(native, tape, bids=list(bids), asks=list(asks), ts_ms=STAMP_MS)
    script = VenueScript(name, symbols, native_decimals, path, frozenset(), (), [], states)
    requests = ([frame for native in symbols.values() for frame in venue.build_resubscribe(native, depth)]
                if venue.aligned_snapshots else [])
    saved = random.getstate()
    try:
        random.seed(seed)
        proto = script.control_protocol()
        proto.path = path
        proto.on_connect()
        for frame in venue.build_subscribe(list(symbols.values()), depth):
            proto.on_message(frame)
        script.subscriptions = frozenset(k for k in proto.subscriptions if k[1] in (BBO, DEPTH))
        prologue = _render_step(proto, name, books[0], symbols, True)
        prologue_answers = last = _answer_requests(script, requests)
        passes, answer_passes = [], []
        for _ in range(2):
            random.seed(seed + 1)
            steps = len(books)
            frames, answers = [], []
            for step in range(1, steps + 1):
                with_depth = step % depth_every == 0
                frames.append(_render_step(proto, name, books[step % steps], symbols, with_depth))
                if with_depth:
                    last = _answer_requests(script, requests)
                answers.append(last)
            passes.append(frames)
            answer_passes.append(answers)
    finally:
        random.setstate(saved)
    for one, two in zip(*passes):
        if len(one) != len(two):
            raise ValueError(f"{name}: a step renders {len(one)} frames in one pass and {len(two)} in the next")
    script.prologue = tuple(template(f, f) for f in prologue)
    script.body = [tuple(template(a, b) for a, b in zip(one, two)) for one, two in zip(*passes)]
    for n, request in enumerate(requests):
        script.answers[request] = (tuple(template(f, f) for f in prologue_answers[n]),
                                   [tuple(template(a, b) for a, b in zip(one[n], two[n]))
                                    for one, two in zip(*answer_passes)])
    script.flatten()
    return script


def build_scripts(venues: dict, rate: float, loop_s: float = 2.0, seed: int = 3, depth: int = 5,
                  depth_every: int = 1, dislocation_every_s: float = 0.5, dislocation_ms: float = 150.0,
                  dislocation_bps: float = 45.0, min_steps: int = 200, max_steps: int = 1000,
                  book_model: str = "ladder") -> dict:
    """Every venue's script for a target ``rate`` (updates/s over all venues).

    The body is about ``loop_s`` seconds of market at that rate (at least ``min_steps``, at most
    ``max_steps`` steps: at high rates the loop is shorter than ``loop_s``); dislocations about every
    ``dislocation_every_s`` (at least one per loop) for ``dislocation_ms``, converted to steps with the
    frames a step holds (one per subscribed channel; depth channels every ``depth_every`` steps).
    ``book_model``: ``ladder`` (:func:`ladder_books`, a few levels change per step) or ``sim`` (the
    simulator's market, :func:`market_books`: every level changes every step).
    """
    channels = sum(len(names) * (1 + 1 / depth_every) for names in venues.values())
    step_rate = rate / channels
    steps = min(max_steps, max(min_steps, int(round(loop_s * step_rate))))
    every = 0
    if dislocation_every_s:
        count = max(1, int(round(steps / step_rate / dislocation_every_s)))
        every = steps // count
    lasting = max(1, int(round(dislocation_ms / 1000 * step_rate)))
    make = {"ladder": ladder_books, "sim": market_books}[book_model]
    books, decimals = make(venues, steps, seed, every, lasting, dislocation_bps)
    return {name: render_venue(name, books, decimals, names, depth, depth_every, seed + 100 + i)
            for i, (name, names) in enumerate(venues.items())}


# ---------------------------------------------------------------- serving

class SocketTransport:
    """A non-blocking socket with what :class:`Connection` needs of a transport: bytes the kernel did not
    take yet wait in ``pending`` and go first on the next write or flush."""

    def __init__(self, sock: socket.socket, generator: LoadGenerator):
        self.sock = sock
        self.generator = generator
        self.pending = bytearray()
        self.closing = False
        self.protocol = None

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        if self.pending:
            self.pending += data
            self.flush()
            return
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.abort()
            return
        if n < len(data):
            self.pending += memoryview(data)[n:]

    def flush(self) -> None:
        if not self.pending or self.closing:
            return
        try:
            n = self.sock.send(self.pending)
        except BlockingIOError:
            return
        except OSError:
            self.abort()
            return
        del self.pending[:n]

    def get_write_buffer_size(self) -> int:
        return len(self.pending)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.flush()
        self.abort()

    def abort(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.generator.unregister(self.sock)
        self.sock.close()
        if self.protocol is not None:
            self.protocol.connection_lost(None)


class Connection:
    """One client connection: the handshake, the client's frames, and the frames it is owed."""

    def __init__(self, server: VenueServer):
        self.server = server
        self.transport = None
        self.buffer = bytearray()
        self.open = False
        self.proto = None
        self.ready = False
        self.start = 0.0                 # monotonic time its body starts (set when its cohort starts)
        self.sent_steps = 0.0            # market steps passed when it was last written to
        self.sent_frames = 0             # body frames sent (over all passes)
        self.prologue_sent = False
        self.fragments: list = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.server.lost(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[:end + 4]
            self.handshake(head)
        while self.open and self.frame():
            pass

    def handshake(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        key = headers.get("sec-websocket-key")
        if len(parts) < 2 or key is None or "websocket" not in headers.get("upgrade", "").lower():
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        self.transport.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        self.open = True
        self.proto = self.server.script.control_protocol()
        self.proto.path = parts[1]
        self.send_replies(self.proto.on_connect())
        self.server.opened(self)

    def frame(self) -> bool:
        """Handles one complete client frame from the buffer; False when none is complete."""
        buf = self.buffer
        if len(buf) < 2:
            return False
        opcode, fin, n, at = buf[0] & 0x0F, buf[0] & 0x80, buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return False
            n, at = struct.unpack_from("!H", buf, 2)[0], 4
        elif n == 127:
            if len(buf) < 10:
                return False
            n, at = struct.unpack_from("!Q", buf, 2)[0], 10
        masked = buf[1] & 0x80
        if len(buf) < at + (4 if masked else 0) + n:
            return False
        if masked:
            mask = bytes(buf[at:at + 4])
            at += 4
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[at:at + n]))
        else:
            data = bytes(buf[at:at + n])
        del buf[:at + n]
        if opcode == 0x9:                                      # ping -> pong
            self.transport.write(ws_frame(data, opcode=0xA))
        elif opcode == 0x8:                                    # close: echo it and hang up
            self.transport.write(ws_frame(data[:2], opcode=0x8))
            self.open = False
            self.transport.close()
        elif opcode in (0x1, 0x2, 0x0):
            self.fragments.append(data)
            if fin:
                raw = b"".join(self.fragments)
                self.fragments = []
                self.server.client_frames += 1
                self.send_replies(self.server.answer(self, raw.decode("utf-8", "replace")))
                if not self.ready and self.server.script.subscriptions <= set(self.proto.subscriptions):
                    self.ready = True
                    self.server.became_ready(self)
        return True

    def send_replies(self, replies) -> None:
        for reply in replies:
            binary = isinstance(reply, (bytes, bytearray))
            self.transport.write(ws_frame(bytes(reply) if binary else reply.encode(), binary))


class VenueServer:
    """One venue's listening socket and its connections."""

    def __init__(self, script: VenueScript, generator: LoadGenerator):
        self.script = script
        self.generator = generator
        self.name = script.name
        self.connections: list[Connection] = []
        self.sock: socket.socket | None = None
        self.port = 0
        self.frames_sent = 0
        self.bytes_sent = 0
        self.client_frames = 0
        self.handler_errors = 0
        self.skipped_backed_up = 0

    def listen(self, host: str, port: int = 0) -> None:
        self.sock = socket.create_server((host, port), backlog=64)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def url(self, host: str) -> str:
        return f"ws://{host}:{self.port}{SIM_PATHS[self.name]}"

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self)
            transport = SocketTransport(sock, self.generator)
            transport.protocol = conn
            conn.connection_made(transport)
            self.generator.register(sock, conn)

    def answer(self, conn: Connection, text: str) -> list:
        """The replies to one client frame: the live protocol's, or a request's answer where the connection's
        stream is (:meth:`VenueScript.answer`)."""
        try:
            return self.script.answer(conn.proto, text, conn.sent_frames, self.generator.stamper(time.time_ns()))
        except Exception:  # noqa: BLE001 - a protocol bug must not take the generator down
            self.handler_errors += 1
            return []

    def opened(self, conn: Connection) -> None:
        self.connections.append(conn)

    def lost(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        self.generator.forget(conn)

    def became_ready(self, conn: Connection) -> None:
        self.generator.ready(self, conn)


class Stamper:
    """The send time in every form a template slot takes; the date part is formatted once a second."""

    def __init__(self):
        self.second = -1
        self.prefix = ""

    def __call__(self, now_ns: int) -> dict:
        second, frac = divmod(now_ns, 1_000_000_000)
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return {1: str(now_ns // 1_000_000).encode(), 2: f"{self.prefix}.{frac:09d}Z".encode(),
                3: f"{self.prefix}.{frac // 1000:06d}Z".encode()}


class LoadGenerator:
    """Every venue's server and the loop that sends the frames due (see the module docstring).

    One thread, non-blocking sockets: every tick it sleeps to the next ``tick_ms`` boundary of the
    wall clock, handles what the clients sent (handshakes, subscribe frames, pings), then writes
    each streaming connection's due frames with one ``send``.
    """

    def __init__(self, scripts: dict, rate: float, host: str = "127.0.0.1", tick_ms: float = 1.0,
                 max_buffer: int = 1 << 20, cohort_wait_s: float = 5.0):
        self.scripts = scripts
        self.host = host
        self.servers = {name: VenueServer(script, self) for name, script in scripts.items()}
        for script in scripts.values():
            script.flatten()
        steps = len(next(iter(scripts.values())).body)
        self.frames_per_step = sum(s.frames_per_pass for s in scripts.values()) / steps
        self.rate = rate
        self.step_rate = rate / self.frames_per_step
        self.tick_ns = int(tick_ms * 1e6)
        self.max_buffer = max_buffer
        self.cohort_wait_s = cohort_wait_s
        self.waiting: dict[str, Connection] = {}     # venue -> a ready connection waiting for the others
        self.first_waiting = 0.0
        self.streaming: list[Connection] = []
        self.ticks = 0
        self.late_ticks = 0
        self.rebased = 0
        self.selector = selectors.DefaultSelector()
        self.stamper = Stamper()
        self.lateness = [(0, 0)] * 2000       # (wake-up, last write done) after the tick boundary, ns; recent ticks

    def start(self, ports: dict | None = None) -> dict:
        """Listens on every venue's port; returns the venues' URLs."""
        for name, server in self.servers.items():
            server.listen(self.host, (ports or {}).get(name, 0))
            self.selector.register(server.sock, selectors.EVENT_READ, server)
        return {name: server.url(self.host) for name, server in self.servers.items()}

    def register(self, sock: socket.socket, conn: Connection) -> None:
        self.selector.register(sock, selectors.EVENT_READ, conn)

    def unregister(self, sock: socket.socket) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def ready(self, server: VenueServer, conn: Connection) -> None:
        """``conn`` holds its subscriptions: it starts with the other venues' first connections, or at once
        when others already stream (a reconnect), or after ``cohort_wait_s`` when some venue never comes."""
        if self.streaming:
            self._start([conn])
            return
        if not self.waiting:
            self.first_waiting = time.monotonic()
        previous = self.waiting.get(server.name)
        if previous is not None:               # a second connection of the same venue: start the first alone
            self._start([previous])
        self.waiting[server.name] = conn
        if len(self.waiting) == len(self.servers):
            self._start(list(self.waiting.values()))

    def _start(self, conns: list) -> None:
        now = time.monotonic()
        for conn in conns:
            self.waiting.pop(conn.server.name, None)
            if conn.transport is None or conn.transport.is_closing():
                continue
            conn.start = now
            self.streaming.append(conn)

    def forget(self, conn: Connection) -> None:
        if conn in self.streaming:
            self.streaming.remove(conn)
        if self.waiting.get(conn.server.name) is conn:
            del self.waiting[conn.server.name]

    def poll(self) -> None:
        """Accepts connections and hands every client's bytes to its connection, without waiting."""
        for key, _ in self.selector.select(0):
            target = key.data
            if isinstance(target, VenueServer):
                target.accept()
                continue
            transport = target.transport
            try:
                data = key.fileobj.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                target.data_received(data)
            else:
                transport.abort()

    def send_due(self, now_ns: int, now_s: float) -> None:
        """Writes every streaming connection's due frames, stamped ``now_ns``."""
        self.write(self.build_due(now_ns, now_s))

    def build_due(self, now_ns: int, now_s: float) -> list:
        """Every streaming connection's frames due at ``now_s`` (monotonic), stamped ``now_ns``, built
        but not written: ``[(connection, bytes, frames)]``.

        The market advances ``step_rate`` steps a second for every connection; each venue's frames of a
        step go out spread over the step (so 5 k updates/s is about 5 frames a millisecond, not a step's
        34 frames every 7 ms).
        """
        if self.waiting and now_s - self.first_waiting > self.cohort_wait_s:
            self._start(list(self.waiting.values()))          # the others did not come: start without them
        if not self.streaming:
            return []
        stamps = self.stamper(now_ns)
        step_rate = self.step_rate
        writes = []
        for conn in self.streaming:
            transport = conn.transport
            transport.flush()
            if transport.get_write_buffer_size() > self.max_buffer:
                conn.server.skipped_backed_up += 1
                continue
            script = conn.server.script
            steps = (now_s - conn.start) * step_rate
            if steps - conn.sent_steps > step_rate:           # more than a second behind: the market slows
                conn.start += (steps - conn.sent_steps - step_rate) / step_rate
                steps = conn.sent_steps + step_rate
                self.rebased += 1
            due = script.frames_due(steps)
            if due <= conn.sent_frames and conn.prologue_sent:
                continue
            conn.sent_steps = steps
            out = []
            sent = 0
            if not conn.prologue_sent:
                conn.prologue_sent = True
                for t in script.prologue:
                    out.append(_wire(t, 0, stamps))
                sent += len(script.prologue)
            flat = script.flat
            per_pass = len(flat)
            append = out.append
            for position in range(conn.sent_frames, due):
                k, i = divmod(position, per_pass)
                t = flat[i]
                slots = t.slots
                if not slots:
                    data = t.fmt
                else:
                    data = t.fmt % tuple([first + k * step if kind == 0 else stamps[kind]
                                          for kind, first, step in slots])
                if t.binary:
                    data = gzip_stored(data)
                    head = 0x82
                else:
                    head = 0x81
                n = len(data)
                if n < 126:
                    append(bytes((head, n)))
                elif n < 65536:
                    append(pack_head(head, 126, n))
                else:
                    append(pack_long(head, 127, n))
                append(data)
            sent += max(0, due - conn.sent_frames)
            conn.sent_frames = max(due, conn.sent_frames)
            if out:
                writes.append((conn, b"".join(out), sent))
        return writes

    @staticmethod
    def write(writes: list) -> None:
        for conn, data, sent in writes:
            if conn.transport.is_closing():
                continue
            conn.transport.write(data)
            conn.server.frames_sent += sent
            conn.server.bytes_sent += len(data)

    def run(self, stop, stats_path: str | None = None, stats_every_s: float = 0.5) -> None:
        """Serves until ``stop()`` is true; writes :meth:`stats` to ``stats_path`` every ``stats_every_s``."""
        next_stats = 0.0
        while not stop():
            active = self.streaming or self.waiting or any(s.connections for s in self.servers.values())
            tick = self.tick_ns if active else 10_000_000     # idle: every 10 ms
            now_ns = time.time_ns()
            wake = (now_ns // tick + 1) * tick                # the next tick boundary of the wall clock
            wake_s = time.monotonic() + (wake - now_ns) / 1e9
            writes = self.build_due(wake, wake_s)             # built before the boundary, stamped with it
            now_ns = time.time_ns()
            if wake > now_ns:
                time.sleep((wake - now_ns) / 1e9)
            woke = time.time_ns()
            self.write(writes)
            if writes:
                self.lateness[self.ticks % len(self.lateness)] = (woke - wake, time.time_ns() - wake)
            if woke - wake > self.tick_ns:
                self.late_ticks += 1
            self.ticks += 1
            self.poll()
            if stats_path and wake_s >= next_stats:
                next_stats = wake_s + stats_every_s
                write_stats(self.stats(), stats_path)

    def stats(self) -> dict:
        wake = sorted(w for w, _ in self.lateness)
        done = sorted(d for _, d in self.lateness)
        return {"rate": self.rate, "frames_per_step": round(self.frames_per_step, 2),
                "step_rate": round(self.step_rate, 1), "ticks": self.ticks, "late_ticks": self.late_ticks,
                # µs after the tick's boundary, over the last 2000 ticks: the wake-up, the last write done
                "wake_us": [round(wake[len(wake) // 2] / 1e3), round(wake[len(wake) * 99 // 100] / 1e3)],
                "written_us": [round(done[len(done) // 2] / 1e3), round(done[len(done) * 99 // 100] / 1e3)],
                "rebased": self.rebased, "time_s": time.monotonic(),
                "venues": {name: {"frames_sent": s.frames_sent, "bytes_sent": s.bytes_sent,
                                  "client_frames": s.client_frames, "handler_errors": s.handler_errors,
                                  "skipped_backed_up": s.skipped_backed_up, "connections": len(s.connections)}
                           for name, s in self.servers.items()}}

    def close(self) -> None:
        for server in self.servers.values():
            for conn in list(server.connections):
                if conn.transport is not None:
                    conn.transport.abort()
            if server.sock is not None:
                self.unregister(server.sock)
                server.sock.close()
        self.selector.close()


def _wire(t: Template, k: int, stamps: dict) -> bytes:
    data = t.payload(k, stamps)
    return ws_frame(gzip_stored(data), True) if t.binary else ws_frame(data)


def write_stats(stats: dict, path: str) -> None:
    """``stats`` as JSON into ``path``, replaced atomically (the benchmark reads it while we run)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(stats, f)
    os.replace(tmp, path)


# ---------------------------------------------------------------- command line

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="updates (frames) per second over all venues")
    parser.add_argument("--venues", nargs="+", default=list(VENUES))
    parser.add_argument("--depth", type=int, default=5, help="the board depth the feeds subscribe for")
    parser.add_argument("--depth-every", type=int, default=1,
                        help="depth channels get a message every N market steps (top of book every step)")
    parser.add_argument("--book", choices=("ladder", "sim"), default="ladder",
                        help="ladder: a few levels change per step; sim: the simulator's market (every level moves)")
    parser.add_argument("--loop-s", type=float, default=2.0, help="seconds of market in the rendered loop")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--tick-ms", type=float, default=1.0, help="how often due frames are written")
    parser.add_argument("--dislocation-every-s", type=float, default=0.5)
    parser.add_argument("--dislocation-ms", type=float, default=150.0)
    parser.add_argument("--dislocation-bps", type=float, default=45.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--cores", type=int, nargs="*", help="pin this process to these cores")
    parser.add_argument("--stats-file", help="write the counters here as JSON every 0.5 s")
    parser.add_argument("--nice", type=int, default=0,
                        help="scheduling niceness (negative: ahead of the feeds on a shared core; needs the right)")
    args = parser.parse_args(argv)
    if args.cores:
        os.sched_setaffinity(0, args.cores)
    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except OSError as exc:
            print(f"loadgen: could not set niceness {args.nice}: {exc}", file=sys.stderr)
    venues = {v: instruments_of(v) for v in args.venues}
    t0 = time.perf_counter()
    scripts = build_scripts(venues, args.rate, loop_s=args.loop_s, seed=args.seed, depth=args.depth,
                            depth_every=args.depth_every, dislocation_every_s=args.dislocation_every_s,
                            dislocation_ms=args.dislocation_ms, dislocation_bps=args.dislocation_bps,
                            book_model=args.book)
    render_s = time.perf_counter() - t0
    generator = LoadGenerator(scripts, args.rate, args.host, args.tick_ms)
    urls = generator.start()
    print(json.dumps({"urls": urls, "instruments": venues, "render_s": round(render_s, 2), "book": args.book,
                      "steps": len(next(iter(scripts.values())).body),
                      "frames_per_step": round(generator.frames_per_step, 2),
                      "step_rate": round(generator.step_rate, 1), "pid": os.getpid()}), flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    try:
        generator.run(lambda: bool(stopping), args.stats_file)
    finally:
        generator.close()
        print(json.dumps({"stats": generator.stats()}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
