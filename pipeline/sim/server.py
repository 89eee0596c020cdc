"""Real WebSocket servers on loopback, one per exchange, speaking each
exchange's own protocol, fed by one shared :class:`~pipeline.sim.market.Market`.

Every connection gets its own protocol instance (sequence numbers and
last-sent books are per connection, as on the real exchanges). On each
market step the book of every (exchange, instrument) is computed once and
rendered for every connection subscribed to it.

Two kinds of switches make it misbehave. :class:`Faults` are one-shot or
test-driven failures (a dropped or corrupted message, silence, refused
handshakes). :class:`~pipeline.sim.protocol.Quirks` (config
``simulator.quirks``) make it behave like the real venues where they differ
from the happy path: numbers printed in shortest or exponent form, depth
arriving behind a newer top of book, re-sent unchanged books, and staged
events every few seconds (sequence resets, Kraken status changes, announced
disconnects, lost messages). ``announce_*`` push one such event now.
:class:`~pipeline.sim.protocol.Hostile` switches (the soak's ``--hostile``)
stage crafted input no real venue should send: numbers no row can hold in a
venue's own wire format, messages in many fragments or past the clients'
16 MiB cap, and book / instrument messages naming endless new symbols; their
one-shot forms are :class:`Faults` too, and ``hostile_sent`` counts what went out.
:class:`Rules` are the venues' server-side rules (HTX closing a connection
that misses two pings, idle timeouts, Binance's incoming message rate); they
are off unless switched on, because the demo and the tests of our own feeds
do not need them.

Clients we did not write can use the simulator too: every venue answers a
subscription it does not serve with the venue's own error frame (a protocol
that raises is logged and the connection stays open), Binance also reads
streams from the URL (``/stream?streams=a/b``, ``/ws/<stream>``), a
handshake on a path the venue does not serve gets 404, and the
few REST calls those clients need to build a book (Binance
``GET /api/v3/depth``) are answered on the WebSocket port (:meth:`ExchangeServer.rest`).

Reference data. Each venue serves its trading rules (tick, step, minimums, status) where the real one publishes
them: the REST endpoint its record's ``reference_data`` names, on the same port, and OKX's ``instruments`` /
Kraken's ``instrument`` channels. The values come from each protocol's ``REFERENCE_RULES`` (real responses) and
the market quotes on their ticks. :meth:`ExchangeServer.change_rule` changes one (or halts the instrument) while
running: REST answers the new rule at once and the channels push it; the ``rule_changes`` quirk stages such
changes every ``every_s`` on a schedule drawn from the market's seed.

Account fees. Each venue's signed fee endpoint answers as :mod:`pipeline.sim.account` describes: a GET on
the WebSocket port, any request on the exchange's :attr:`ExchangeServer.account_port`.

Network paths. With :attr:`ExchangeServer.paths` set (config ``simulator.paths``) every connection gets its own
path (:mod:`pipeline.sim.paths`): each frame it would get, market data, replies and keepalives alike, waits in
its :class:`~pipeline.sim.paths.PathSchedule` and one sender task per connection sends it when due (delay,
stalls, in order) or drops the connection abruptly. :meth:`ExchangeServer.stall` stalls one connection now,
:meth:`ExchangeServer.path_statistics` tells what the paths did. Without it frames are sent inline, as always.
With ``fault_every_s`` the server also rotates faults through its connections
(:class:`~pipeline.sim.paths.FaultRotation`, one task from :meth:`ExchangeServer.start` to
:meth:`Simulator.close`): every ``fault_every_s`` the oldest open connection is dropped (TCP reset, no close
frame) or stalled ``fault_stall_ms``, alternately, never while another is down; at close the server logs what
the rotation did.
Close frames (rules, planned disconnects) are not delayed.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import logging
import random
import re
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from pipeline.model import DEPTH
from pipeline.sim.account import ACCOUNT_RATES, AccountListener, AccountRequest, SimAccount, sim_credentials
from pipeline.sim.account import answer as answer_account
from pipeline.sim.market import Market, Tape, price_decimals
from pipeline.sim.paths import FaultRotation, PathModel, PathSchedule, PathStatistics, PathTotals
from pipeline.sim.protocol import (
    BBO,
    OUT_OF_RANGE_KINDS,
    Hostile,
    InstrumentRule,
    Quirks,
    Rules,
    SymbolState,
    grid_rule,
)
from pipeline.venues import SIM_PATHS, load_protocol, load_venue

log = logging.getLogger("pipeline.sim")

CHECKSUM_FIELD = re.compile(rb'"checksum":(\d+)')


@dataclass
class Faults:
    """Misbehaviour a test or the soak script switches on, per simulated exchange.

    One-shot sets (``drop_next_depth`` ...) hold native symbols and are
    consumed by the next market step that renders that symbol's depth.
    """

    silent: bool = False                                   # connected, no market data (keepalive still answered)
    silent_symbols: set = field(default_factory=set)       # one instrument goes quiet while others flow
    drop_next_depth: set = field(default_factory=set)      # rendered but not sent: a sequence gap
    duplicate_next_depth: set = field(default_factory=set) # sent twice: a duplicated update
    corrupt_checksum_next: set = field(default_factory=set)  # checksum field altered (Kraken)
    bad_book_next: dict = field(default_factory=dict)      # symbol -> (bids, asks) rendered instead of the market
    inject_next: list = field(default_factory=list)        # raw frames sent once to every connection
    refuse_until: float = 0.0                              # time.monotonic(): handshakes answered 503 before it
    hang_handshake: bool = False                           # accept TCP, never answer the handshake
    burst: int = 0                                         # extra back-to-back updates on the next step
    reset_sequence_next: set = field(default_factory=set)  # the exchange restarts the symbol's sequence (OKX, Bybit)
    # hostile input (pipeline.sim.protocol.Hostile stages these; tests set them directly)
    out_of_range_next: dict = field(default_factory=dict)  # symbol -> (kind, variant): its next frame carries a
                                                           # number no row can hold (SimProtocol.out_of_range)
    fragment_next: int = 0                                 # the next market-data frame of every connection goes
                                                           # out in this many WebSocket fragments
    oversize_next: int = 0                                 # a message of this many bytes, in 1 MiB fragments
    unknown_symbols_next: int = 0                          # book messages naming this many never-seen symbols


FRAGMENT_BYTES = 2 ** 20          # the size of each fragment of an oversize message
OVERSIZE_WATCH_S = 5.0            # a connection still open this long after an oversize message took it


def _fragments(frame, n: int) -> list:
    """``frame`` cut into (at most) ``n`` pieces, sent as one message in that many WebSocket fragments."""
    size = max(1, -(-len(frame) // max(n, 1)))
    return [frame[i:i + size] for i in range(0, len(frame), size)] or [frame]


def _corrupt_checksum(frame):
    raw = frame.encode() if isinstance(frame, str) else frame
    altered = CHECKSUM_FIELD.sub(lambda m: b'"checksum":' + str((int(m.group(1)) + 1) % 2 ** 32).encode(), raw, 1)
    return altered.decode() if isinstance(frame, str) else altered

URL_PATHS = SIM_PATHS     # from each venue's declared record
PATHS_KEPT = 256          # per server, the statistics of this many closed connections' paths are kept apart


class PathSender:
    """The I/O side of one connection's path: :meth:`send` hands a frame to the schedule, one task sends the
    frames when due and aborts the connection (TCP reset, no close frame) when the path drops it.

    The task sleeps until the next due time (or the drop), then sends every frame due; with nothing waiting it
    waits for the next frame. It never wakes to poll.
    """

    def __init__(self, websocket, schedule: PathSchedule) -> None:
        self.websocket = websocket
        self.schedule = schedule
        self.closed = False
        self._wake = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def send(self, frame) -> None:
        """Like ``websocket.send``: ``frame`` goes out when its path says; a no-op once the connection is gone."""
        if self.closed:
            return
        self.schedule.push(frame, time.monotonic())
        if self.schedule.waiting == 1:                  # the queue was empty: the task waits for this frame
            self._wake.set()

    def stall(self, ms: float) -> float:
        """Stall the path now for ``ms``; returns its end (monotonic s)."""
        return self.schedule.stall(time.monotonic(), ms)

    def drop(self) -> None:
        """Drop the connection now, as the path's own drop does: the task aborts it (TCP reset, no close frame)."""
        self.schedule.drop(time.monotonic())
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        schedule, websocket = self.schedule, self.websocket
        try:
            while True:
                now_s = time.monotonic()
                if schedule.drop_due(now_s):
                    websocket.transport.abort()
                    return
                for frame in schedule.pop_due(now_s):
                    await websocket.send(frame)
                wake_s = min(schedule.next_s(), schedule.next_drop_s)
                self._wake.clear()
                if wake_s == float("inf"):
                    await self._wake.wait()
                    continue
                timer = loop.call_at(wake_s, self._wake.set)      # loop.time() is time.monotonic()
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True


class ExchangeServer:
    """One simulated exchange: its listening socket and its live connections."""

    def __init__(self, name: str, symbols: dict[str, str], market: Market):
        self.name = name
        self.instrument_of = {native: canonical for canonical, native in symbols.items()}
        self.protocol_class = load_protocol(name)
        self.market = market
        self.connections: dict[object, object] = {}   # websocket -> protocol
        self.server = None
        self.port = 0
        self.tls = False
        self.frames_sent = 0
        self.faults = Faults()
        self.received: list[tuple[float, object]] = []     # (monotonic time, client frame), for tests
        self.connections_opened = 0
        self.last_books: dict[str, tuple[list, list]] = {}  # native symbol -> last book rendered
        self.keepalive_s: float | None = None               # override of the protocol's server keepalive period
        self.quirks = Quirks()                              # shared by every connection; switch at any time
        self.rules = Rules()                                # the venue's server-side rules; off by default
        self.handshakes = collections.deque(maxlen=10_000)  # when each WebSocket handshake came (monotonic s)
        self.rest_queries: collections.deque = collections.deque(maxlen=1_000)   # (path, query) of each REST call
        self.states: dict[str, SymbolState] = {}            # native symbol -> this step's shared state
        self.handler_errors = 0                             # protocol exceptions caught (a test asserts 0)
        self._next_event_s: float | None = None             # when the next staged quirk events happen
        self._due: list = []                                # (monotonic time, coroutine function) staged for later
        self._dropped = 0
        self.hostile = Hostile()                            # crafted input staged by stage_events; off by default
        self.hostile_sent = collections.Counter()           # what the hostile faults sent (and what became of it)
        self._rng = random.Random(f"hostile:{name}")
        self._hostile_due: dict[str, float] = {}            # hostile fault -> when it is next staged (monotonic)
        self._steps = 0
        self._unknown = 0                                   # never-seen symbols named so far
        self._watchers: set = set()                         # oversize: tasks waiting for the client to hang up
        self.paths: PathModel | None = None                 # simulator.paths; None: frames are sent inline
        self._senders: dict[object, PathSender] = {}        # websocket -> its path's sender (with paths only)
        self._path_schedules: dict[int, PathSchedule] = {}  # open connection's index -> its path
        self._paths_closed: dict[int, PathStatistics] = {}  # closed connection's index -> what its path did
        self._paths_retired = PathTotals()                  # the totals of the closed paths no longer kept apart
        self.fault_rotation: FaultRotation | None = None    # with paths.fault_every_s, from start() on
        self._fault_task: asyncio.Future | None = None
        self.trading_rules: dict[str, InstrumentRule] = {}  # native symbol -> the rules served (reference data)
        self.base_rules: dict[str, InstrumentRule] = {}     # native symbol -> the venue's table rule (quirk reverts)
        for native, canonical in self.instrument_of.items():
            rule = self.protocol_class.REFERENCE_RULES.get(canonical) or grid_rule(market.decimals[canonical])
            rule = rule.replace(instrument=canonical)
            self.trading_rules[native] = self.base_rules[native] = rule
            market.set_tick(name, canonical, Decimal(rule.tick))
        self._rule_rng = random.Random(f"rule_changes:{name}:{market.seed}")
        self._rule_events = 0
        # the account behind the venue's signed fee endpoint (pipeline.sim.account), and its own listener
        rates = ACCOUNT_RATES.get(name, ("0", "0"))
        endpoint = getattr(load_venue(name), "account_fees", None)
        self.account = SimAccount(sim_credentials(name), rates[0], rates[1], list(self.instrument_of),
                                  urlsplit(endpoint.url).netloc if endpoint is not None else "")
        self.account_listener = AccountListener(self.answer_account)

    def decimals(self) -> dict[str, int]:
        """Native symbol -> the decimals of the grid this venue quotes it on (its served tick's)."""
        return {native: self.market.grid(self.name, canonical)[1] for native, canonical in self.instrument_of.items()}

    async def start(self, host: str, port: int = 0, ssl=None) -> None:
        """Listen on ``host:port``; ``ssl`` (an ``ssl.SSLContext``) serves ``wss://`` and ``https://`` instead."""
        self.server = await serve(self.handle, host, port, max_size=2 ** 24, compression=None,
                                  process_request=self._process_request, ssl=ssl)
        self.port = self.server.sockets[0].getsockname()[1]
        self.tls = ssl is not None
        if self.paths is not None and self.paths.fault_every_s > 0:
            self.fault_rotation = FaultRotation(self.paths.fault_every_s, self.paths.fault_stall_ms, time.monotonic())
            self._fault_task = asyncio.ensure_future(self._rotate_faults(self.fault_rotation))
        await self.account_listener.start(host, 0, ssl)

    @property
    def account_port(self) -> int:
        """The port of the account listener: the fee endpoint with any method and a request body (Kraken's POST)."""
        return self.account_listener.port

    def answer_account(self, request: AccountRequest) -> tuple[int, object] | None:
        """(status, JSON body) of the venue's signed fee endpoint, None for another path."""
        return answer_account(self.protocol_class, request, self.account)

    def url(self, host: str) -> str:
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}{URL_PATHS.get(self.name, '/')}"

    def rest_base(self, host: str) -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def state(self, symbol: str) -> SymbolState:
        """The shared per-symbol state, created on first use (before the first market step too)."""
        state = self.states.get(symbol)
        if state is None:
            canonical = self.instrument_of[symbol]
            tape = Tape(f"{self.name}:{symbol}", self.market.mid[canonical], self.market.grid(self.name, canonical)[1])
            state = self.states[symbol] = SymbolState(symbol, tape)
        return state

    def rest(self, path: str, query: dict) -> tuple[int, object]:
        """(HTTP status, JSON body) of a REST call, or (404, ...) for what the venue's protocol does not serve."""
        self.rest_queries.append((path, dict(query)))
        if not self.states:
            for symbol in self.instrument_of:
                self.state(symbol)
        return self.protocol_class.render_rest(path, query, self.states, self.decimals(), self.trading_rules)

    async def _process_request(self, connection, request):
        if "upgrade" in request.headers.get("Connection", "").lower():
            self.handshakes.append(time.monotonic())
        if self.faults.hang_handshake:
            await asyncio.sleep(3600)
        if time.monotonic() < self.faults.refuse_until:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "simulated outage\n")
        if "upgrade" not in request.headers.get("Connection", "").lower():
            url = urlsplit(request.path)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            try:
                signed = self.answer_account(AccountRequest(
                    getattr(request, "method", "GET"), url.path, url.query,
                    {k.lower(): v for k, v in request.headers.raw_items()}, b"", request.headers.get("Host", "")))
                status, body = signed if signed is not None else self.rest(url.path, query)
            except Exception:                             # never let a REST bug take the server down
                log.exception("%s: REST %s failed", self.name, request.path)
                self.handler_errors += 1
                status, body = 500, {"error": "internal error"}
            raw = orjson.dumps(body)
            headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(raw))),
                               ("Connection", "close")])
            return Response(status, http.HTTPStatus(status).phrase, headers, raw)
        if not self.protocol_class.serves_path(urlsplit(request.path).path):
            return connection.respond(http.HTTPStatus.NOT_FOUND, f"{self.name}: no WebSocket endpoint here\n")
        return None

    async def drop_connections(self, mode: str = "close") -> int:
        """Drop every connection: ``close`` (close frame), ``abort`` (TCP reset, no close frame)."""
        count = 0
        for websocket in list(self.connections):
            count += 1
            if mode == "abort":
                websocket.transport.abort()
            else:
                await websocket.close(1001, "simulated disconnect")
        return count

    async def announce(self, render) -> int:
        """Send ``render(protocol)``'s frames to every connection now; returns the frames sent."""
        sent = 0
        for websocket, protocol in list(self.connections.items()):
            send = self._send_of(websocket)
            with contextlib.suppress(ConnectionClosed):
                for frame in render(protocol):
                    await send(frame)
                    sent += 1
        return sent

    async def announce_shutdown(self) -> int:
        """A planned disconnect notice (Binance ``serverShutdown``, OKX 64008); the connections stay open."""
        now_ms = int(time.time() * 1000)
        return await self.announce(lambda protocol: protocol.render_shutdown(now_ms))

    async def announce_status(self, system: str) -> int:
        """The venue's trading status (Kraken ``status``: ``maintenance``, ``cancel_only``, ``online`` ...)."""
        return await self.announce(lambda protocol: protocol.render_status(system))

    async def announce_pair(self, symbol: str, status: str, price_precision: int | None = None) -> int:
        """One pair's status or precision change (Kraken ``instrument`` update)."""
        return await self.announce(lambda protocol: protocol.render_pair(symbol, status, price_precision))

    async def change_rule(self, symbol: str, **changes) -> int:
        """Change ``symbol``'s trading rules now (fields of :class:`~pipeline.sim.protocol.InstrumentRule`:
        ``min_qty="0.001"``, ``halted=True``, ``tick="0.5"`` ...); returns the frames pushed.

        REST answers the new rule from the next request; subscribed clients of OKX's ``instruments`` and
        Kraken's ``instrument`` channels get a push. A new ``tick`` also moves the market's grid for this venue
        (every connection formats prices with its decimals from then on). A halt sets the venue's own
        non-trading status; the simulated book keeps being quoted (see docs/trading-rules.md, "The simulator").
        """
        rule = self.trading_rules[symbol].replace(**changes, changed_ms=int(time.time() * 1000))
        self.trading_rules[symbol] = rule
        if "tick" in changes:
            canonical = self.instrument_of[symbol]
            self.market.set_tick(self.name, canonical, Decimal(rule.tick))
            decimals = self.market.grid(self.name, canonical)[1]
            for protocol in self.connections.values():
                protocol.decimals[symbol] = decimals
        return await self.announce(lambda protocol: protocol.render_rule(symbol))

    async def halt(self, symbol: str, halted: bool = True) -> int:
        """``symbol`` stops trading (the venue's halt status) or, with ``halted=False``, trades again."""
        return await self.change_rule(symbol, halted=halted)

    async def announce_rule_change(self, symbol: str, after_s: float, **changes) -> int:
        """An announced change: OKX lists it in ``upcChg`` now (its ``tickSz`` / ``minSz`` / ``maxMktSz``), and it
        takes effect ``after_s`` seconds later (then ``upcChg`` is empty again). Other venues publish no
        announcement: their rule just changes then."""
        names = {"tick": "tickSz", "min_qty": "minSz"}
        effective_ms = int((time.time() + after_s) * 1000)
        upcoming = tuple((names[k], str(v), effective_ms) for k, v in changes.items() if k in names)
        sent = await self.change_rule(symbol, upcoming=upcoming) if upcoming else 0
        self._due.append((time.monotonic() + after_s, lambda: self.change_rule(symbol, upcoming=(), **changes)))
        return sent

    def _stage_rule_change(self, now_s: float) -> None:
        """The ``rule_changes`` quirk: a symbol drawn from the seed either halts for ``status_s`` (even events) or
        has its minimums doubled, announced ``status_s`` ahead (odd events; the next such event on that symbol
        puts them back)."""
        symbols = sorted(self.instrument_of)
        if not symbols:
            return
        symbol = self._rule_rng.choice(symbols)
        self._rule_events += 1
        status_s = self.quirks.status_s
        if self._rule_events % 2:
            self._due.append((now_s, lambda: self.halt(symbol)))
            self._due.append((now_s + status_s, lambda: self.halt(symbol, False)))
            return
        base, rule = self.base_rules[symbol], self.trading_rules[symbol]
        if rule.min_qty == base.min_qty and rule.min_notional == base.min_notional:
            changes = {"min_qty": str(Decimal(base.min_qty) * 2), "min_notional": str(Decimal(base.min_notional) * 2)}
        else:
            changes = {"min_qty": base.min_qty, "min_notional": base.min_notional}
        self._due.append((now_s, lambda: self.announce_rule_change(symbol, status_s, **changes)))

    async def stage_events(self, now_s: float) -> None:
        """The event quirks, every ``quirks.every_s`` seconds (``now_s``: monotonic time)."""
        quirks = self.quirks
        due = self._due
        for at_s, action in [d for d in due if d[0] <= now_s]:
            due.remove((at_s, action))
            await action()
        if self.hostile.any():
            self._stage_hostile(now_s)
        if not quirks.stages_events():
            return
        if self._next_event_s is None:
            self._next_event_s = now_s + quirks.every_s
        if now_s < self._next_event_s:
            return
        self._next_event_s = now_s + quirks.every_s
        symbols = sorted(self.instrument_of)
        if quirks.rule_changes:
            self._stage_rule_change(now_s)
        if quirks.sequence_resets:
            self.faults.reset_sequence_next |= set(symbols)
        if quirks.dropped_messages and symbols:
            self._dropped += 1
            self.faults.drop_next_depth.add(symbols[self._dropped % len(symbols)])
        if quirks.venue_status and await self.announce_status("maintenance"):
            due.append((now_s + quirks.status_s, lambda: self.announce_status("online")))
        if quirks.planned_disconnects:
            notified = list(self.connections)          # a replacement opened after the notice stays open
            if await self.announce_shutdown():
                due.append((now_s + quirks.grace_s, lambda: self._close(notified)))

    def _stage_hostile(self, now_s: float) -> None:
        """Hostile faults, each on its own period (randomised +-50 %, reproducibly per venue)."""
        hostile, faults, rng = self.hostile, self.faults, self._rng
        periods = {"out_of_range_numbers": hostile.numbers_every_s, "fragmented_messages": hostile.fragments_every_s,
                   "oversize_messages": hostile.oversize_every_s}
        for name, period in periods.items():
            if not getattr(hostile, name):
                continue
            due = self._hostile_due.get(name)
            if due is None:                                  # the first one comes early: 10-50 % of a period
                self._hostile_due[name] = now_s + period * rng.uniform(0.1, 0.5)
            elif now_s >= due:
                self._hostile_due[name] = now_s + period * rng.uniform(0.5, 1.5)
                if name == "out_of_range_numbers":
                    symbol = rng.choice(sorted(self.instrument_of))
                    faults.out_of_range_next[symbol] = (rng.choice(OUT_OF_RANGE_KINDS), rng.randrange(60))
                elif name == "fragmented_messages":
                    faults.fragment_next = hostile.fragments
                else:
                    faults.oversize_next = hostile.oversize_bytes

    def unknown_symbol(self) -> str:
        """A symbol in the venue's own form that it never listed and nobody subscribed (``Q1234567/USDT``)."""
        self._unknown += 1
        quote = next(iter(self.instrument_of.values())).split("/")[1]
        return load_venue(self.name).native_symbol(f"Q{self._unknown:07d}/{quote}")

    def _out_of_range(self, protocol, frames: list, kind: str, variant: int) -> str | None:
        """Puts a number no row can hold into the first of ``frames`` that has a field for it (the kind asked
        for first, then the others); returns the kind used, or None when no frame had any."""
        kinds = (kind,) + tuple(k for k in OUT_OF_RANGE_KINDS if k != kind)
        for i, frame in enumerate(frames):
            for k in kinds:
                bad = self._answer(protocol, protocol.out_of_range, frame, k, variant)
                if bad:
                    frames[i] = bad
                    return k
        return None

    async def _send_oversize(self, websocket, size: int, binary: bool) -> None:
        """A message of ``size`` bytes in 1 MiB fragments (never one complete JSON value); the client must refuse
        it. A watcher then counts whether the client hung up (``oversize_refused``) or kept the connection
        (``oversize_kept``: it took a message past its cap)."""
        chunk = b"A" * FRAGMENT_BYTES if binary else "A" * FRAGMENT_BYTES
        head = (b'{"pad":"' if binary else '{"pad":"') + chunk[8:]
        parts = [head] + [chunk] * (-(-size // FRAGMENT_BYTES) - 1)
        self.hostile_sent["oversize"] += 1
        try:
            await self._send_of(websocket)(parts)
        except ConnectionClosed:
            pass
        watcher = asyncio.ensure_future(self._watch_oversize(websocket))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch_oversize(self, websocket) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(websocket.wait_closed()), OVERSIZE_WATCH_S)
            self.hostile_sent["oversize_refused"] += 1
        except TimeoutError:
            self.hostile_sent["oversize_kept"] += 1

    async def _close(self, websockets: list) -> None:
        for websocket in websockets:
            with contextlib.suppress(Exception):
                await websocket.close(1001, "simulated service upgrade")

    def _answer(self, protocol, call, *args) -> list:
        """A protocol hook's frames; an exception is a simulator bug: logged, counted, the connection kept."""
        try:
            return call(*args)
        except Exception:
            self.handler_errors += 1
            log.exception("%s: protocol %s failed on %r", self.name, getattr(call, "__name__", call), args[:1])
            return []

    async def handle(self, websocket) -> None:
        protocol = self.protocol_class(self.decimals())
        protocol.known_symbols = set(self.instrument_of)
        protocol.quirks = self.quirks
        protocol.rules = self.rules
        protocol.path = websocket.request.path if websocket.request is not None else "/"
        for symbol in self.instrument_of:
            self.state(symbol)
        protocol.states = self.states
        protocol.trading_rules = self.trading_rules
        send = websocket.send
        if self.paths is not None:
            send = self._open_path(websocket, self.connections_opened).send
        self.connections[websocket] = protocol
        self.connections_opened += 1
        tasks = []
        try:
            for frame in self._answer(protocol, protocol.on_connect):
                await send(frame)
            if self.keepalive_s or protocol.KEEPALIVE_INTERVAL_S:
                tasks.append(asyncio.ensure_future(self._keepalive(websocket, protocol)))
            if self.rules.any():
                tasks.append(asyncio.ensure_future(self._watch_rules(websocket, protocol)))
            async for message in websocket:
                now_s = time.monotonic()
                self.received.append((now_s, message))
                protocol.note_received(now_s)
                for frame in self._answer(protocol, protocol.on_message, message):
                    await send(frame)
                    protocol.last_sent_s = time.monotonic()
                reason = protocol.close_reason(now_s)
                if reason is not None:
                    await websocket.close(*reason)
        except ConnectionClosed:
            pass
        finally:
            self.connections.pop(websocket, None)
            sender = self._senders.pop(websocket, None)
            if sender is not None:
                tasks.append(sender.task)
                self._close_path(sender.schedule)
            for task in tasks:
                task.cancel()

    def _send_of(self, websocket):
        """How a frame goes to ``websocket``: through its path when paths are on, else ``websocket.send``."""
        sender = self._senders.get(websocket) if self._senders else None
        return websocket.send if sender is None else sender.send

    def _open_path(self, websocket, index: int) -> PathSender:
        """The path of connection ``index`` (seeded from the market's seed, the venue and the index)."""
        assert self.paths is not None
        schedule = self._path_schedules[index] = PathSchedule(self.paths, self.market.seed, self.name, index,
                                                              time.monotonic())
        sender = self._senders[websocket] = PathSender(websocket, schedule)
        if self.fault_rotation is not None:
            self.fault_rotation.opened(sum(not s.closed for s in self._senders.values()))
        return sender

    def _close_path(self, schedule: PathSchedule) -> None:
        """Keep what a closed connection's path did (its samples go): the newest :data:`PATHS_KEPT` apart, the
        older ones in the totals only."""
        self._path_schedules.pop(schedule.index, None)
        self._paths_closed[schedule.index] = schedule.statistics()
        while len(self._paths_closed) > PATHS_KEPT:
            oldest = self._paths_closed.pop(next(iter(self._paths_closed)))
            self._paths_retired = self._paths_retired.add(oldest, keep=False)

    async def stall(self, index: int, ms: float) -> float:
        """Stall the path of open connection ``index`` (0: the first this server accepted) now for ``ms``: every
        frame due before the end waits for it. Returns the end (monotonic s). KeyError: no such open
        connection; RuntimeError: paths are off (``simulator.paths`` / :attr:`paths`)."""
        if self.paths is None:
            raise RuntimeError(f"{self.name}: no network paths (simulator.paths is not configured)")
        for sender in list(self._senders.values()):
            if sender.schedule.index == index and not sender.closed:
                return sender.stall(ms)
        raise KeyError(f"{self.name}: no open connection {index}")

    def path_statistics(self) -> PathTotals:
        """What the paths did, over every connection so far, with each open connection's own and the newest
        :data:`PATHS_KEPT` closed ones' (:class:`~pipeline.sim.paths.PathTotals`), and the fault rotation's
        turns; all 0 with paths off."""
        totals = self._paths_retired
        for closed in self._paths_closed.values():
            totals = totals.add(closed)
        for schedule in self._path_schedules.values():
            totals = totals.add(schedule.statistics())
        rotation = self.fault_rotation
        if rotation is not None:
            totals = replace(totals, faults_dropped=rotation.dropped, faults_stalled=rotation.stalled,
                             faults_skipped=rotation.skipped)
        return totals

    async def _rotate_faults(self, rotation: FaultRotation) -> None:
        """At each of ``rotation``'s turns take down what it says: the oldest open connection, dropped or
        stalled (:class:`~pipeline.sim.paths.FaultRotation`)."""
        assert self.paths is not None
        while True:
            await asyncio.sleep(max(0.0, rotation.next_s - time.monotonic()))
            senders = {sender.schedule.index: sender for sender in self._senders.values() if not sender.closed}
            fault = rotation.turn(sorted(senders), time.monotonic())
            if fault is None:
                log.debug("%s: fault rotation: turn skipped (%d of %d connections open)", self.name,
                          len(senders), rotation.peak)
                continue
            kind, index = fault
            if kind == "drop":
                senders[index].drop()
            else:
                senders[index].stall(self.paths.fault_stall_ms)
            log.debug("%s: fault rotation: connection %d %s", self.name, index,
                      "dropped" if kind == "drop" else "stalled")

    def stop_fault_rotation(self) -> None:
        """Cancel the fault rotation (no-op without one) and log what it did."""
        if self._fault_task is None or self.fault_rotation is None:
            return
        self._fault_task.cancel()
        self._fault_task = None
        rotation = self.fault_rotation
        log.info("%s: fault rotation every %gs: %d dropped, %d stalled %gms, %d skipped", self.name,
                 rotation.every_s, rotation.dropped, rotation.stalled, rotation.stall_ms, rotation.skipped)

    async def _keepalive(self, websocket, protocol) -> None:
        send = self._send_of(websocket)
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.keepalive_s or protocol.KEEPALIVE_INTERVAL_S)
                for frame in self._answer(protocol, protocol.keepalive, int(time.time() * 1000)):
                    await send(frame)
                    protocol.last_sent_s = time.monotonic()

    async def _watch_rules(self, websocket, protocol) -> None:
        """Closes the connection the moment one of the venue's rules says so (missed pongs, idle)."""
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            while True:
                await asyncio.sleep(0.1)
                reason = protocol.close_reason(time.monotonic())
                if reason is not None:
                    await websocket.close(*reason)
                    return

    async def publish(self, books: dict, ts_ms: int) -> None:
        faults = self.faults
        if faults.silent:
            return
        injected = faults.inject_next
        faults.inject_next = []
        repeat = 1 + faults.burst
        faults.burst = 0
        one_shot = {symbol for symbol in self.instrument_of
                    if symbol in faults.drop_next_depth or symbol in faults.duplicate_next_depth
                    or symbol in faults.corrupt_checksum_next or symbol in faults.bad_book_next}
        resets = faults.reset_sequence_next
        faults.reset_sequence_next = set()
        self._steps += 1
        unknown = faults.unknown_symbols_next
        faults.unknown_symbols_next = 0
        if self.hostile.endless_symbols and self._steps % max(self.hostile.symbol_every, 1) == 0:
            unknown += 1
        unknown_symbols = [self.unknown_symbol() for _ in range(unknown)]
        fragments, oversize = faults.fragment_next, faults.oversize_next
        faults.fragment_next = faults.oversize_next = 0
        numbers_done = set()                             # out_of_range_next symbols that found a frame this step
        fragmented = oversized = False                   # whether any connection got them this step
        for symbol, canonical in self.instrument_of.items():
            if symbol not in faults.silent_symbols:
                self.state(symbol).update(*books[(self.name, canonical)], ts_ms)
        for websocket, protocol in list(self.connections.items()):
            send = self._send_of(websocket)
            protocol.reset_next |= resets
            frames = list(injected)
            hit = set()                                  # symbols given their out-of-range number on this connection
            for step in range(repeat):
                for symbol, channel in list(protocol.subscriptions):
                    canonical = self.instrument_of.get(symbol)
                    if canonical is None or symbol in faults.silent_symbols:
                        continue
                    if channel not in (BBO, DEPTH):
                        if step == 0:
                            frames.extend(self._answer(protocol, protocol.render_stream, symbol, channel,
                                                       self.states[symbol]))
                        continue
                    bids, asks = faults.bad_book_next.get(symbol) or books[(self.name, canonical)]
                    rendered = self._answer(protocol, protocol.render, symbol, channel, bids, asks, ts_ms)
                    self.last_books[symbol] = (bids, asks)
                    if channel == DEPTH and symbol in one_shot:
                        if symbol in faults.drop_next_depth:
                            continue
                        if symbol in faults.corrupt_checksum_next:
                            rendered = [_corrupt_checksum(f) for f in rendered]
                        if symbol in faults.duplicate_next_depth:
                            rendered = rendered + rendered
                    bad = faults.out_of_range_next.get(symbol)
                    if bad is not None and step == 0 and rendered and symbol not in hit:
                        kind = self._out_of_range(protocol, rendered, *bad)
                        if kind is not None:
                            hit.add(symbol)
                            numbers_done.add(symbol)
                            self.hostile_sent[f"out_of_range_{kind}"] += 1
                    frames.extend(rendered)
            if unknown_symbols and protocol.subscriptions:
                followed = next(iter(protocol.subscriptions))[0]
                canonical = self.instrument_of.get(followed)
                if canonical is not None:
                    bids, asks = books[(self.name, canonical)]
                    for symbol in unknown_symbols:
                        named = self._answer(protocol, protocol.render_unknown, symbol, bids, asks, ts_ms)
                        frames.extend(named)
                        self.hostile_sent["unknown_symbol"] += 1
                        self.hostile_sent["unknown_symbol_frames"] += len(named)
            first = len(injected)                        # the first market-data frame goes out in fragments
            try:
                for n, frame in enumerate(frames):
                    if fragments and n == first:
                        await send(_fragments(frame, fragments))
                        self.hostile_sent["fragmented"] += 1
                        fragmented = True
                    else:
                        await send(frame)
                    self.frames_sent += 1
                if frames:
                    protocol.last_sent_s = time.monotonic()
                if oversize:
                    binary = bool(frames) and not isinstance(frames[-1], str)
                    oversized = True
                    await self._send_oversize(websocket, oversize, binary)
            except ConnectionClosed:
                self.connections.pop(websocket, None)
        for symbol in numbers_done:
            faults.out_of_range_next.pop(symbol, None)
        if fragments and not fragmented:
            faults.fragment_next = fragments             # no connection had a frame this step: the next one
        if oversize and not oversized:
            faults.oversize_next = oversize
        for symbol in one_shot:
            faults.drop_next_depth.discard(symbol)
            faults.duplicate_next_depth.discard(symbol)
            faults.corrupt_checksum_next.discard(symbol)
            faults.bad_book_next.pop(symbol, None)


class Simulator:
    """All simulated exchanges and the loop that moves the market."""

    def __init__(self, venues: dict[str, dict[str, str]], market: Market, update_interval_ms: float,
                 host: str = "127.0.0.1"):
        self.host = host
        self.market = market
        self.update_interval_s = update_interval_ms / 1000.0
        self.exchanges = {name: ExchangeServer(name, symbols, market) for name, symbols in venues.items()}
        self.steps = 0
        self.scripted = []            # (at_s, Dislocation template) scheduled relative to the first step

    async def start(self, ports: dict[str, int] | None = None, ssl=None) -> dict[str, str]:
        for name, server in self.exchanges.items():
            await server.start(self.host, (ports or {}).get(name, 0), ssl)
        return {name: server.url(self.host) for name, server in self.exchanges.items()}

    def books(self, now_ms: float) -> dict:
        return {(exchange, instrument): self.market.book(exchange, instrument, now_ms)
                for exchange, server in self.exchanges.items()
                for instrument in server.instrument_of.values()}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        next_step = time.monotonic()
        start_ms = time.time() * 1000.0
        for at_s, dislocation in self.scripted:
            dislocation.start_ms = start_ms + at_s * 1000.0
            self.market.schedule(dislocation)
        while not stop.is_set():
            now_ms = time.time() * 1000.0
            self.market.step(now_ms)
            self.steps += 1
            books = self.books(now_ms)
            ts_ms = int(now_ms)
            for server in self.exchanges.values():
                await server.publish(books, ts_ms)
                await server.stage_events(time.monotonic())
            next_step += self.update_interval_s
            delay = next_step - time.monotonic()
            if delay < -1.0:                      # fell far behind: do not try to catch up in a burst
                next_step = time.monotonic()
                delay = 0
            await asyncio.sleep(max(delay, 0))

    async def close(self) -> None:
        for server in self.exchanges.values():
            server.stop_fault_rotation()
            for watcher in list(server._watchers):
                watcher.cancel()
            server.account_listener.close()
            if server.server is not None:
                server.server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.server.wait_closed(), 2)


def build_simulator(config, rules=(), hostile=()) -> Simulator:
    """A simulator for every venue of ``config`` (a :class:`pipeline.config.Config`).

    ``rules``: names of :class:`~pipeline.sim.protocol.Rules` to enforce (none by default); ``hostile``: names of
    :class:`~pipeline.sim.protocol.Hostile` faults to stage (none by default). ``simulator.paths`` gives every
    server's connections their network paths (absent: none, frames are sent inline).
    """
    from pipeline.venues import native_symbols
    sim = config.simulator
    venues = {venue.name: native_symbols(venue) for venue in config.venues if venue.url is None}
    market = Market(list(venues), list(config.instruments), seed=sim.seed, depth=max(config.board.depth, 10),
                    volatility_bps=sim.volatility_bps, noise_bps=sim.noise_bps,
                    half_spread_bps=sim.half_spread_bps, dislocation_every_s=sim.dislocation_every_s,
                    dislocation_bps=sim.dislocation_bps, dislocation_ms=sim.dislocation_ms,
                    start_prices=dict(sim.start_prices), random_dislocations=sim.random_dislocations)
    simulator = Simulator(venues, market, sim.update_interval_ms, sim.host)
    paths = None if sim.paths is None else PathModel(
        sim.paths.delay_ms, sim.paths.jitter, sim.paths.stall_every_s, sim.paths.stall_ms, sim.paths.disconnect_every_s,
        sim.paths.fault_every_s, sim.paths.fault_stall_ms)
    for server in simulator.exchanges.values():
        server.quirks = Quirks.named(sim.quirks)
        server.rules = Rules.named(rules)
        server.hostile = Hostile.named(hostile)
        server.paths = paths
    from pipeline.sim.market import Dislocation
    simulator.scripted = [(d.at_s, Dislocation(d.exchange, d.instrument, d.bps, 0.0, d.duration_ms))
                          for d in sim.scripted_dislocations]
    return simulator


__all__ = ["Simulator", "ExchangeServer", "build_simulator", "price_decimals"]
