"""Feed hot path per message type: parse + book apply + publish, on one core.

Why: a feed process is one Python thread. The frames it can turn into board
rows per second bounds how many instruments one feed can carry, and the time
per frame is part of every quote's latency. We drive the real
``FeedSession.receive`` of a real feed process object (venue parse, ``InstrumentBook.apply``,
``compose``, ``RowWriter.write``, the doorbell check and the per-process
counters) with frames taken from ``tests/fixtures``; only sequence fields are
renumbered so that every frame is new to the book (otherwise the book would
rightly ignore repeats). There is no socket here: see the receive benchmark
below for that part.

Each case runs once through the session, with the venue record's own
``parse``/``top`` (its wire messages declared once as msgspec structs in
``pipeline/venues/<name>/wire.py``): there is no decoder to choose.

Peer: cryptofeed 2.4.1's own ``message_handler`` coroutine on the same frames
with a no-op callback (its JSON decode with Decimal prices, its book update,
its callback dispatch). Side measurements: the building block, orjson +
``float()`` against a msgspec typed decoder on bookTicker; distinct bookTicker
frames from a socket through a real feed's frame handler, per transport
(``websockets``, ``picows``); and the bare WebSocket receive rate of
``websockets`` (what the feed uses) against ``picows``, each receiving the
same frame blasted by a local raw-socket sender over loopback.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import multiprocessing as mp
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass

import msgspec
import orjson

from bench._common import FIXTURES_DIR, BusyMeter, machine_info, markdown_table, median, ratio, write_results
from pipeline.board import Board, Doorbell, ProcessRole
from pipeline.model import BookUpdate
from pipeline.runtime import ProcessSpec, RowAssignment
from pipeline.venues import load_venue

CTX = mp.get_context("fork")
SEQ_BASE = 1_000_000


# ---------------------------------------------------------------- frames

@dataclass(frozen=True)
class Case:
    """One message type: which fixture lines, and which fields to renumber / re-time.

    ``seq``: path of the sequence field written with the frame number, so every
    frame is new to the book. ``ts``: (path, kind) of exchange timestamps reset
    to the time the frames are built: the feed records exchange-to-receive
    delay per frame, and years-old capture times are not what it sees live.
    ``verbatim``: use the fixture bytes unchanged apart from RFC 3339 times
    (Kraken's checksum covers the exact number text, which a JSON round trip
    would change).
    """

    name: str
    venue: str
    file: str
    keep: object = None                 # keep(msg) -> bool
    normalise: object = None            # normalise(msg) -> msg
    seq: tuple = ()
    ts: tuple = ()
    verbatim: bool = False


def _wrap_book_ticker(msg):
    if "stream" not in msg:
        msg = {"stream": f"{msg['s'].lower()}@bookTicker", "data": msg}
    return msg


CASES = [
    Case("binance bookTicker", "binance", "binance/bbo.jsonl", normalise=_wrap_book_ticker, seq=("data", "u")),
    Case("binance depth5 snapshot", "binance", "binance/depth5.jsonl", keep=lambda m: "stream" in m,
         seq=("data", "lastUpdateId")),
    Case("bybit orderbook.1", "bybit", "bybit/bbo.jsonl", seq=("data", "u"), ts=((("ts",), "ms"), (("cts",), "ms"))),
    Case("bybit orderbook.50 delta", "bybit", "bybit/depth.jsonl", ts=((("ts",), "ms"), (("cts",), "ms"))),
    Case("okx bbo-tbt", "okx", "okx/bbo.jsonl", seq=("data", 0, "seqId"), ts=((("data", 0, "ts"), "ms_str"),)),
    Case("okx books5", "okx", "okx/depth5.jsonl", keep=lambda m: "arg" in m, seq=("data", 0, "seqId"),
         ts=((("data", 0, "ts"), "ms_str"),)),
    Case("htx bbo", "htx", "htx/bbo.jsonl", seq=("tick", "seqId"),
         ts=((("ts",), "ms"), (("tick", "quoteTime"), "ms"))),
    Case("coinbase ticker", "coinbase", "coinbase/at_ticker.jsonl", seq=("sequence_num",),
         ts=((("timestamp",), "rfc3339"),)),
    Case("kraken ticker", "kraken", "kraken/ticker.jsonl", verbatim=True),
    # the real ETH/USD snapshot: the docs' MATIC/USD line only checksums after re-padding (fixture README)
    Case("kraken book snapshot", "kraken", "kraken/book.jsonl",
         keep=lambda m: m.get("type") == "snapshot" and m["data"][0]["symbol"] == "ETH/USD", verbatim=True),
]


def _put(msg, path, value):
    """Set a nested field (dict keys or list indices) if it is there."""
    node = msg
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict) and path[-1] in node:
        node[path[-1]] = value


def _now_fields():
    ms = time.time_ns() // 1_000_000
    rfc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}000Z"
    return {"ms": ms, "ms_str": str(ms), "rfc3339": rfc}


def _lines(rel):
    return [line for line in (FIXTURES_DIR / rel).read_bytes().splitlines() if line.strip()]


def build_frames(case: Case, n: int):
    """(setup frames, timed frames) as str, the type websockets hands the feed."""
    if case.name == "bybit orderbook.50 delta":
        return _bybit_delta_frames(case, n)
    now = _now_fields()
    raw = [line for line in _lines(case.file) if case.keep is None or case.keep(orjson.loads(line))]
    if case.verbatim:
        raw = [re.sub(rb'"timestamp":"[^"]*"', b'"timestamp":"' + now["rfc3339"].encode() + b'"', line)
               for line in raw]
        return [], [raw[k % len(raw)].decode() for k in range(n)]
    templates = []
    for line in raw:
        msg = orjson.loads(line)
        if case.normalise is not None:
            msg = case.normalise(msg)
        for path, kind in case.ts:
            _put(msg, path, now[kind])
        templates.append(orjson.dumps(msg))
    frames = []
    for k in range(n):
        msg = orjson.loads(templates[k % len(templates)])
        if case.seq:
            _put(msg, case.seq, SEQ_BASE + k)
        frames.append(orjson.dumps(msg).decode())
    return [], frames


def _bybit_delta_frames(case: Case, n: int):
    """The real orderbook.200 snapshot and its 3 deltas, relabelled orderbook.50; u renumbered so deltas chain."""
    now = _now_fields()
    msgs = [orjson.loads(line) for line in _lines(case.file)]
    snap = next(m for m in msgs if m["topic"].startswith("orderbook.200") and m["type"] == "snapshot")
    deltas = [m for m in msgs if m["topic"].startswith("orderbook.200") and m["type"] == "delta"]
    for m in [snap, *deltas]:
        m["topic"] = m["topic"].replace("orderbook.200", "orderbook.50")
        for path, kind in case.ts:
            _put(m, path, now[kind])
    snap["data"]["u"] = SEQ_BASE
    frames = []
    for k in range(n):
        msg = orjson.loads(orjson.dumps(deltas[k % len(deltas)]))
        msg["data"]["u"] = SEQ_BASE + 1 + k
        frames.append(orjson.dumps(msg).decode())
    return [orjson.dumps(snap).decode()], frames


# ---------------------------------------------------------------- ours: FeedSession.receive

def symbols_of(venue_module, frames):
    seen = {}
    for raw in frames[:50]:
        for ev in venue_module.parse(raw, 0):
            if isinstance(ev, BookUpdate):
                seen.setdefault(ev.symbol, None)
    return list(seen)


class FeedRig:
    """A real Feed on a private board, without sockets: frames go straight to its session's ``receive``."""

    def __init__(self, venue, symbols, depth):
        from pipeline.feed.process import Feed
        self.board = Board.create(f"bench-{uuid.uuid4().hex[:12]}", n_rows=len(symbols), depth=depth, n_procs=1)
        self.efd = Doorbell.create_fd()
        rows = tuple(RowAssignment(i, venue, f"I{i}/USDT", s) for i, s in enumerate(symbols))
        self.spec = ProcessSpec(key=f"feed:{venue}", role=ProcessRole.FEED, title="bench", slot=0, cores=(),
                                board_name=self.board.name, depth=depth, doorbell_fd=self.efd, venue=venue, rows=rows)
        self.Feed = Feed
        self.feed = None

    def fresh(self):
        """A new Feed (fresh books) on the same board, so renumbered sequences start over each round."""
        if self.feed is not None:
            self.feed.close()
        self.feed = self.Feed(self.spec, "ws://127.0.0.1:1/", 60_000.0)
        self.conn = self.feed.session.connection_opened([r.symbol for r in self.spec.rows], 0)
        return self.feed

    def publishes(self):
        return sum(state[1] for state in self.feed.writer._state.values())  # noqa: SLF001 - update counts

    def close(self):
        if self.feed is not None:
            self.feed.close()
        self.board.destroy()
        os.close(self.efd)


def time_ours(rig, setup, frames, recorder=None):
    """frames/s through the session; with ``recorder``, each frame is also handed to it as the feed loop does."""
    feed = rig.fresh()
    handle, conn, now = feed.session.receive, rig.conn, time.time_ns
    for raw in setup:
        handle(raw, now(), conn)
    before = rig.publishes()
    if recorder is None:
        t0 = time.perf_counter()
        for raw in frames:
            handle(raw, now(), conn)
        elapsed = time.perf_counter() - t0
    else:
        record, conn_id = recorder.frame, conn.id
        t0 = time.perf_counter()
        for raw in frames:
            recv_ns = now()
            record(raw, recv_ns, conn_id)
            handle(raw, recv_ns, conn)
        elapsed = time.perf_counter() - t0
    return len(frames) / elapsed, (rig.publishes() - before) / len(frames)


def time_stages(venue, setup, frames, depth):
    """µs/frame for the venue parse alone, and parse + ``InstrumentBook.apply`` (books built as the feed builds
    them)."""
    from pipeline.book import InstrumentBook
    module = load_venue(venue)
    parse, now = module.parse, time.time_ns
    t0 = time.perf_counter()
    for raw in frames:
        parse(raw, now())
    parse_us = (time.perf_counter() - t0) / len(frames) * 1e6
    books = {s: InstrumentBook(s, depth, module.book_levels, module.checksum, module.checksum_levels or 10,
                               aligned=module.aligned_snapshots)
             for s in symbols_of(module, setup + frames)}
    for raw in setup:
        for ev in parse(raw, now()):
            if ev.__class__ is BookUpdate:
                books[ev.symbol].apply(ev)
    t0 = time.perf_counter()
    for raw in frames:
        for ev in parse(raw, now()):
            if ev.__class__ is BookUpdate:
                books[ev.symbol].apply(ev)
    return parse_us, (time.perf_counter() - t0) / len(frames) * 1e6


# ---------------------------------------------------------------- peer: cryptofeed

class _Conn:
    """The two attributes cryptofeed's handlers read from a connection."""

    def __init__(self, address):
        self.address = address
        self.uuid = "bench"


def cryptofeed_peer(case_name, symbols):
    """(handler, conn, note) for cases cryptofeed 2.4.1 handles, else (None, None, reason)."""
    try:
        from cryptofeed.defines import BINANCE, BYBIT, L2_BOOK, TICKER
        from cryptofeed.exchanges import Binance, Bybit
        from cryptofeed.symbols import Symbols
    except Exception as exc:  # noqa: BLE001 - reported
        return None, None, f"cryptofeed not importable: {type(exc).__name__}: {exc}"

    async def noop(obj, receipt_timestamp):
        CALLBACKS[0] += 1                         # proves the handler got all the way to its callback

    def std(sym):
        for quote in ("USDT", "USDC", "BTC", "ETH"):
            if sym.endswith(quote):
                return f"{sym[:-len(quote)]}-{quote}"
        return sym
    if case_name == "binance bookTicker":
        Symbols.set(BINANCE, {std(s): s for s in symbols}, {})
        feed = Binance(symbols=[std(s) for s in symbols], channels=[TICKER], callbacks={TICKER: noop})
        return feed.message_handler, _Conn("wss://stream.binance.com:9443/stream"), "Binance._ticker"
    if case_name in ("bybit orderbook.1", "bybit orderbook.50 delta"):
        Symbols.set(BYBIT, {std(s): std(s).replace("-", "/") for s in symbols}, {})
        feed = Bybit(symbols=[std(s) for s in symbols], channels=[L2_BOOK], callbacks={L2_BOOK: noop})
        return feed.message_handler, _Conn("wss://stream.bybit.com/v5/public/spot"), "Bybit._book (L2_BOOK)"
    if case_name == "binance depth5 snapshot":
        return None, None, "cryptofeed 2.4.1 has no partial-depth stream (its Binance L2 is diff depth + REST snapshot)"
    return None, None, "not compared"


CALLBACKS = [0]


def time_peer(handler, conn, setup, frames):
    async def drive():
        now = time.time
        for raw in setup:
            await handler(raw, conn, now())
        before = CALLBACKS[0]
        t0 = time.perf_counter()
        for raw in frames:
            await handler(raw, conn, now())
        return time.perf_counter() - t0, CALLBACKS[0] - before
    elapsed, calls = asyncio.run(drive())
    return len(frames) / elapsed, calls / len(frames)


# ---------------------------------------------------------------- decode: orjson vs msgspec

class BookTicker(msgspec.Struct):
    u: int
    s: str
    b: float
    B: float
    a: float
    A: float


class BookTickerEnvelope(msgspec.Struct):
    stream: str
    data: BookTicker


def decode_compare(frames, rounds):
    """ns/frame to decode a bookTicker to its fields and 4 floats: orjson + ``float()`` vs a msgspec typed struct."""
    dec = msgspec.json.Decoder(BookTickerEnvelope, strict=False)   # lax mode parses "25.35" into a float in C
    blobs = [f.encode() for f in frames]
    loads = orjson.loads

    def with_orjson():
        for raw in blobs:
            d = loads(raw)["data"]
            (d["u"], d["s"], float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"]))

    def with_msgspec():
        for raw in blobs:
            d = dec.decode(raw).data
            (d.u, d.s, d.b, d.B, d.a, d.A)  # noqa: B018 - the field reads are what is timed
    out = {"orjson": [], "msgspec": []}
    for _ in range(rounds):
        for name, fn in (("orjson", with_orjson), ("msgspec", with_msgspec)):
            t0 = time.perf_counter()
            fn()
            out[name].append((time.perf_counter() - t0) / len(blobs) * 1e9)
    return {k: median(v) for k, v in out.items()}


# ---------------------------------------------------------------- receive: websockets vs picows

def _accept_upgrade(listener):
    """Accept one client and answer its WebSocket upgrade (RFC 6455); returns the socket."""
    conn, _ = listener.accept()
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(4096)
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return conn


def _blast_server(listener, payload):
    """Minimal RFC 6455 server: answer the upgrade, then write the same text frame until the peer goes away."""
    conn = _accept_upgrade(listener)
    n = len(payload)
    header = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + n.to_bytes(2, "big")
    block = (header + payload) * 256
    try:
        while True:
            conn.sendall(block)
    except OSError:
        pass


def _serve(payload):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    proc = CTX.Process(target=_blast_server, args=(listener, payload), daemon=True)
    proc.start()
    port = listener.getsockname()[1]
    listener.close()
    return proc, f"ws://127.0.0.1:{port}/"


async def _recv_websockets(url, seconds):
    from websockets.asyncio.client import connect
    perf = time.perf_counter
    async with connect(url, compression=None, max_size=2 ** 24, max_queue=None, close_timeout=0.1) as ws:
        n = 0
        t0 = None
        async for _msg in ws:                     # what the feed does: one str per text frame
            n += 1
            if t0 is None:
                t0, n = perf(), 0
            elif n & 1023 == 0 and perf() - t0 >= seconds:
                break
        rate = n / (perf() - t0)
        ws.transport.abort()
    return rate


async def _recv_picows(url, seconds):
    from picows import WSListener, ws_connect
    perf = time.perf_counter
    done = asyncio.get_running_loop().create_future()

    class Counter(WSListener):
        n = 0
        t0 = None

        def on_ws_frame(self, transport, frame):
            frame.get_payload_as_bytes()
            self.n += 1
            if self.t0 is None:
                self.t0, self.n = perf(), 0
            elif self.n & 1023 == 0 and perf() - self.t0 >= seconds and not done.done():
                done.set_result(self.n / (perf() - self.t0))
                transport.disconnect(graceful=False)
    transport, _ = await ws_connect(Counter, url)
    rate = await done
    await transport.wait_disconnected()
    return rate


def receive_compare(payload, seconds, rounds):
    out = {"websockets": [], "picows": []}
    for _ in range(rounds):
        for name, fn in (("websockets", _recv_websockets), ("picows", _recv_picows)):
            proc, url = _serve(payload)
            try:
                out[name].append(asyncio.run(asyncio.wait_for(fn(url, seconds), seconds + 20)))
            except Exception as exc:  # noqa: BLE001 - reported
                out.setdefault("errors", []).append(f"{name}: {type(exc).__name__}: {exc}")
            finally:
                proc.join(5)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(2)
    return {k: (median(v) if k != "errors" else v) for k, v in out.items()}


def _blast_distinct(listener, block: bytes):
    """Answer the upgrade, send ``block`` (many distinct text frames) once, then wait for the peer to leave."""
    conn = _accept_upgrade(listener)
    try:
        conn.sendall(block)
        while conn.recv(4096):
            pass
    except OSError:
        pass


def _frame_block(frames) -> bytes:
    parts = []
    for frame in frames:
        payload = frame.encode()
        n = len(payload)
        parts.append((bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + n.to_bytes(2, "big")) + payload)
    return b"".join(parts)


async def _feed_receive(kind, url, rig, n_frames):
    """frames/s from the socket through the feed's own frame handler (session, board row, doorbell, hops)."""
    from pipeline.feed.transport import open_link
    feed = rig.fresh()
    link = await open_link(kind, url, None, 10)
    conn = feed.session.connection_opened([r.symbol for r in rig.spec.rows], time.time_ns())
    handler = feed._handler(link, conn, None)  # noqa: SLF001 - the feed process's own per-frame path
    perf = time.perf_counter
    state = {"n": 0, "t0": 0.0, "t1": 0.0}

    def counting(raw, recv_ns):
        replies = handler(raw, recv_ns)
        n = state["n"] = state["n"] + 1
        if n == 1:
            state["t0"] = perf()
        elif n == n_frames:
            state["t1"] = perf()
            link.stop("done")
        return replies
    before = rig.publishes()
    await asyncio.wait_for(link.run(counting), 60)
    await link.close()
    return (n_frames - 1) / (state["t1"] - state["t0"]), (rig.publishes() - before) / n_frames


def feed_receive_compare(frames, rig, rounds):
    """The same distinct bookTicker frames over loopback into a real feed, per transport: frames/s."""
    from pipeline.feed.transport import TRANSPORTS, available
    block = _frame_block(frames)
    kinds = [kind for kind in TRANSPORTS if available(kind)]
    out = {kind: [] for kind in kinds}
    publishes = {}
    for _ in range(rounds):
        for kind in kinds:
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            proc = CTX.Process(target=_blast_distinct, args=(listener, block), daemon=True)
            proc.start()
            url = f"ws://127.0.0.1:{listener.getsockname()[1]}/"
            listener.close()
            try:
                rate, pubs = asyncio.run(_feed_receive(kind, url, rig, len(frames)))
                out[kind].append(rate)
                publishes[kind] = pubs
            finally:
                proc.join(5)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(2)
    return {kind: median(v) for kind, v in out.items()}, publishes


# ---------------------------------------------------------------- main

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20000, help="frames per case per round (default 20000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds, cases interleaved (default 5)")
    ap.add_argument("--depth", type=int, default=5, help="board depth (default 5)")
    ap.add_argument("--recv-s", type=float, default=1.0, help="seconds per WebSocket receive run (default 1.0)")
    ap.add_argument("--skip-recv", action="store_true", help="skip the websockets/picows receive comparison")
    ap.add_argument("--record-dir", default=None,
                    help="also time each case with a recorder writing to this directory (recording on vs off)")
    args = ap.parse_args(argv)
    machine = machine_info()
    meter = BusyMeter()
    notes = []
    cases = []
    for case in CASES:
        name, venue = case.name, case.venue
        try:
            module = load_venue(venue)
            setup, frames = build_frames(case, args.frames)
            symbols = symbols_of(module, setup + frames)
            rig = FeedRig(venue, symbols, args.depth)
        except Exception as exc:  # noqa: BLE001 - a venue module being edited must not stop the rest
            notes.append(f"{name}: skipped ({type(exc).__name__}: {exc})")
            continue
        handler, conn, peer_note = cryptofeed_peer(name, symbols)
        cases.append({"name": name, "rig": rig, "setup": setup, "frames": frames, "peer": handler, "conn": conn,
                      "peer_note": peer_note, "ours": [], "theirs": [], "publishes": [], "callbacks": [],
                      "parse_us": [], "apply_us": [], "venue": venue, "recording": [],
                      "bytes": sum(map(len, frames[:100])) / min(100, len(frames))})
    try:
        for _ in range(args.rounds):
            for c in cases:
                rate, pubs = time_ours(c["rig"], c["setup"], c["frames"])
                c["ours"].append(rate)
                c["publishes"].append(pubs)
                if args.record_dir:
                    from pipeline.recording.recorder import Recorder
                    recorder = Recorder(args.record_dir, c["venue"], {"bench": c["name"]})
                    try:
                        c["recording"].append(time_ours(c["rig"], c["setup"], c["frames"], recorder)[0])
                    finally:
                        recorder.close()
                parse_us, apply_us = time_stages(c["venue"], c["setup"], c["frames"], args.depth)
                c["parse_us"].append(parse_us)
                c["apply_us"].append(apply_us)
                if c["peer"] is not None:
                    rate, calls = time_peer(c["peer"], c["conn"], c["setup"], c["frames"])
                    c["theirs"].append(rate)
                    c["callbacks"].append(calls)
    finally:
        for c in cases:
            c["rig"].close()
    rows, stage_rows, results = [], [], []
    for c in cases:
        ours, theirs = median(c["ours"]), median(c["theirs"])
        parse_us, apply_us = median(c["parse_us"]), median(c["apply_us"])
        res = {"case": c["name"], "frame_bytes": c["bytes"], "ours_frames_per_s": ours, "us_per_frame": 1e6 / ours,
               "publishes_per_frame": median(c["publishes"]), "parse_us": parse_us, "parse_apply_us": apply_us,
               "peer_frames_per_s": theirs, "peer_callbacks_per_frame": median(c["callbacks"]),
               "ratio_vs_peer": ratio(ours, theirs), "peer": c["peer_note"], "ours_rounds": c["ours"],
               "peer_rounds": c["theirs"]}
        results.append(res)
        rows.append([c["name"], f"{c['bytes']:.0f}", ours, res["us_per_frame"], res["publishes_per_frame"],
                     theirs if c["peer"] else "-", res["peer_callbacks_per_frame"] if c["peer"] else "-",
                     res["ratio_vs_peer"] if c["peer"] else "-", c["peer_note"]])
        stage_rows.append([c["name"], parse_us, apply_us - parse_us, res["us_per_frame"] - apply_us,
                           res["us_per_frame"]])
    text = [f"FeedSession.receive (parse + apply + compose + RowWriter.write), frames/s on one core, "
            f"median of {args.rounds}",
            "", markdown_table(["message", "bytes", "frames/s", "µs/frame", "publishes/frame",
                                "cryptofeed 2.4.1 frames/s", "peer callbacks/frame", "ours / peer", "peer path"], rows),
            "", "Where the time goes (µs/frame, medians; stages timed separately, so they add up only roughly)", "",
            markdown_table(["message", "venue parse", "+ book apply", "+ compose, write, counters", "session.receive"],
                           stage_rows)]
    if args.record_dir:
        record_rows = []
        for c in cases:
            off, on = median(c["ours"]), median(c["recording"])
            record_rows.append([c["name"], 1e6 / off, 1e6 / on, 1e6 / on - 1e6 / off])
            next(r for r in results if r["case"] == c["name"])["with_recording_frames_per_s"] = on
        text += ["", "Recording on vs off (µs/frame, medians; the recorder's writer thread runs beside the feed)", "",
                 markdown_table(["message", "recording off", "recording on", "cost per frame"], record_rows)]
    book_ticker = next((c for c in cases if c["name"] == "binance bookTicker"), None)
    decode = receive = None
    if book_ticker is not None:
        decode = decode_compare(book_ticker["frames"], args.rounds)
    if decode is not None:
        text += ["", "bookTicker decode to 4 floats (ns/frame, median)", "",
                 markdown_table(["orjson + float()", "msgspec typed, strict=False", "orjson / msgspec"],
                                [[decode["orjson"], decode["msgspec"], ratio(decode["orjson"], decode["msgspec"])]])]
    feed_receive = None
    if book_ticker is not None and not args.skip_recv:
        rig = FeedRig("binance", symbols_of(load_venue("binance"),
                                            book_ticker["frames"]), args.depth)
        try:
            feed_receive, pubs = feed_receive_compare(book_ticker["frames"], rig, max(1, min(args.rounds, 3)))
        finally:
            rig.close()
        rows = [[kind, rate, 1e6 / rate, pubs.get(kind)] for kind, rate in feed_receive.items()]
        text += ["", f"Receive + parse + publish over loopback: {len(book_ticker['frames'])} distinct bookTicker "
                 "frames from a socket into a real feed (session, board row, doorbell, hop histograms), median", "",
                 markdown_table(["transport", "frames/s", "µs/frame", "publishes/frame"],
                                rows)]
        if "picows" in feed_receive and "websockets" in feed_receive:
            text += ["", f"picows / websockets: {feed_receive['picows'] / feed_receive['websockets']:.2f}x"]
    if book_ticker is not None and not args.skip_recv:
        receive = receive_compare(book_ticker["frames"][0].encode(), args.recv_s, max(1, min(args.rounds, 3)))
        text += ["", f"WebSocket receive, one frame type blasted over loopback ({args.recv_s:.1f} s per run, "
                 "median; frames/s)", "",
                 markdown_table(["websockets (async for, str)", "picows (payload bytes)", "picows / websockets"],
                                [[receive.get("websockets"), receive.get("picows"),
                                  ratio(receive.get("picows"), receive.get("websockets"))]])]
        if receive.get("errors"):
            notes += receive["errors"]
    if notes:
        text += ["", *[f"note: {n}" for n in notes]]
    machine["busy_cores_during_run"] = meter.busy_cores()
    table = "\n".join(text)
    print(table)
    path = write_results("parse", {"options": vars(args), "cases": results, "decode_ns": decode, "receive": receive,
                                   "feed_receive": feed_receive,
                                   "notes": notes, "machine": machine, "table": table})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
