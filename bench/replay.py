"""Replay at max speed: frames/s through session + board + detector, with the per-stage split.

Why: replay runs exactly the live per-frame code (venue parse, book, row
write, change scan, detector engine) with no sockets and no scheduler
between the stages, so its rate is the cleanest measure of our per-frame
cost. The load is a mix of top-of-book frames (Binance bookTicker, Bybit
orderbook.1, OKX bbo-tbt) for ``--instruments`` instruments, written as a
real recording (the documented format) from the real frame shapes in
``tests/fixtures`` with prices walking and update ids rising.

Stages, each timed over the same recording in one run, rounds interleaved:

* ``read``: the recording read and merged (decompression, record decoding);
* ``+ session``: each frame through its venue's ``FeedSession`` into board rows;
* ``+ scan``: the detector's change scan and quote reads after every frame;
* ``+ engine``: the full replay (``pipeline.commands.replay.Replay``): edge, lifecycle,
  shadow fills, the events file.

Each session parses with its venue record's own ``parse``/``top`` (the wire
messages declared once in ``pipeline/venues/<name>/wire.py``), as live.

Run: ``python -m bench.replay [--frames 60000] [--instruments 20] [--rounds 3]``
"""
from __future__ import annotations

import argparse
import heapq
import os
import random
import tempfile
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import orjson

from bench._common import BusyMeter, machine_info, markdown_table, median, write_results
from pipeline.board import Board, RowWriter
from pipeline.commands.recording import RecordingFileWriter
from pipeline.commands.replay import Replay, plan_rows
from pipeline.config import parse_config
from pipeline.detector.scan import BoardView, RowUniverse
from pipeline.feed.session import FeedSession
from pipeline.recording.format import TEXT, RecordingReader, recording_files
from pipeline.sim.protocol import grid_rule
from pipeline.venues import load_protocol, load_venue

VENUES = ("binance", "bybit", "okx")


def render(venue: str, base: str, n: int, bid: float, ask: float, ts_ms: int) -> str:
    if venue == "binance":
        sym = f"{base}USDT"
        return (f'{{"stream":"{sym.lower()}@bookTicker","data":{{"u":{n},"s":"{sym}","b":"{bid:.2f}",'
                f'"B":"1.5","a":"{ask:.2f}","A":"2.25"}}}}')
    if venue == "bybit":
        sym = f"{base}USDT"
        return (f'{{"topic":"orderbook.1.{sym}","ts":{ts_ms},"type":"snapshot","data":{{"s":"{sym}",'
                f'"b":[["{bid:.2f}","1.5"]],"a":[["{ask:.2f}","2.25"]],"u":{n},"seq":{n}}},"cts":{ts_ms}}}')
    inst = f"{base}-USDT"
    return (f'{{"arg":{{"channel":"bbo-tbt","instId":"{inst}"}},"data":[{{"asks":[["{ask:.2f}","2.25","0","1"]],'
            f'"bids":[["{bid:.2f}","1.5","0","1"]],"ts":"{ts_ms}","seqId":{n}}}]}}')


def make_recording(directory: str, frames: int, instruments: int, seed: int = 1) -> tuple[dict, int]:
    """One recording file per venue; returns (config dict, frames written)."""
    rng = random.Random(seed)
    bases = [f"C{i:03d}" for i in range(instruments)]
    mids = {b: 100.0 + i for i, b in enumerate(bases)}
    writers = {v: RecordingFileWriter(os.path.join(directory, f"{v}-bench.rec"), v, {"pid": v}) for v in VENUES}
    t_ns = 1_700_000_000_000_000_000
    seqs = {(v, b): 1000 for v in VENUES for b in bases}
    for n in range(frames):
        venue = VENUES[n % 3]
        base = bases[rng.randrange(instruments)]
        mids[base] *= 1 + rng.gauss(0, 2e-4)
        off = rng.gauss(0, 3e-4)            # each venue a little off the market: some opportunities
        mid = mids[base] * (1 + off)
        seqs[(venue, base)] += 1
        t_ns += 20_000
        raw = render(venue, base, seqs[(venue, base)], mid * (1 - 5e-5), mid * (1 + 5e-5), t_ns // 1_000_000 - 3)
        writers[venue].add(TEXT, t_ns, 1, raw.encode())
    for w in writers.values():
        w.close()
    instruments_list = [f"{b}/USDT" for b in bases]
    raw_config = {"board": {"name": "bench-replay", "depth": 5},
                  "venues": {v: {"instruments": instruments_list, "url": "wss://bench"} for v in VENUES},
                  "detector": {"threshold_bps": 0.0, "staleness_ms": 5000, "output": os.path.join(directory, "o.jsonl"),
                               "print_opportunities": False, "shadow_latencies_ms": [5, 50]}}
    return raw_config, frames


def write_rules_cache(directory: str, instruments: list[str]) -> str:
    """The venues' trading rules for the bench's instruments, as each venue's reference-data endpoint answers
    them (rendered by its simulator protocol: a fine tick, step 0.0001): replay reads them as a rules cache."""
    cache = os.path.join(directory, "rules")
    os.makedirs(cache, exist_ok=True)
    for venue in VENUES:
        record = load_venue(venue)
        where = urlsplit(record.reference_data.path)
        query = {key: values[-1] for key, values in parse_qs(where.query).items()}
        symbols = {record.native_symbol(i): i for i in instruments}
        rules = {s: grid_rule(6).replace(instrument=i) for s, i in symbols.items()}
        status, body = load_protocol(venue).render_rest(where.path, query, dict.fromkeys(symbols),
                                                        dict.fromkeys(symbols, 6), rules)
        assert status == 200, (venue, status, body)
        with open(os.path.join(cache, f"{venue}.json"), "wb") as f:
            f.write(orjson.dumps(body))
    return cache


def _stream(reader: RecordingReader, index: int):
    venue = reader.venue
    for record in reader.records():
        yield record.recv_ns, index, venue, record


def merged(paths):
    # one generator function per file: a generator expression in a comprehension would read the loop's
    # last reader for every file when it runs
    return heapq.merge(*(_stream(RecordingReader(p), i) for i, p in enumerate(paths)), key=lambda item: item[0])


def time_read(paths) -> float:
    t0 = time.perf_counter()
    n = sum(1 for _ in merged(paths))
    return n / (time.perf_counter() - t0)


def time_sessions(config, paths, scan: bool) -> float:
    rows = plan_rows(config)
    board = Board.create(f"bench-{uuid.uuid4().hex[:10]}", len(rows), config.board.depth, 1)
    try:
        board.assign_lane([r.row for r in rows], 0)            # as Replay: one writer, one change lane
        writer = RowWriter(board, [r.row for r in rows])
        sessions = {}
        for v in config.venues:
            s = FeedSession(load_venue(v.name), {r.symbol: r.row for r in rows if r.venue == v.name},
                            config.board.depth, 1 << 62, writer)
            sessions[v.name] = (s, s.connection_opened(list(s.books), 0))
        view = BoardView(board, RowUniverse(config, rows)) if scan else None
        t0 = time.perf_counter()
        n = 0
        for recv_ns, _, venue, record in merged(paths):
            session, conn = sessions[venue]
            session.receive(record.frame, recv_ns, conn)
            if view is not None:
                for key, changed in view.changed().items():
                    view.refresh(key, changed)
            n += 1
        rate = n / (time.perf_counter() - t0)
        unusable = sum(s.stats.get("parse_errors") for s, _ in sessions.values())
        if unusable:
            raise RuntimeError(f"{unusable} of {n} frames were unusable to their session: the bench is broken")
        if view is not None:
            view.close()
        writer = None
        return rate
    finally:
        board.destroy()


def time_full(config, paths, out, rules_cache: str | None = None) -> tuple[float, int]:
    t0 = time.perf_counter()
    result = Replay(config, paths, out, print_lines=False, rules_cache=rules_cache).run()
    return result.frames / (time.perf_counter() - t0), result.records


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=60000)
    ap.add_argument("--instruments", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    machine = machine_info()
    meter = BusyMeter()
    with tempfile.TemporaryDirectory() as tmp:
        raw_config, frames = make_recording(tmp, args.frames, args.instruments)
        config = parse_config(raw_config, source="bench", available_cores=frozenset({0}))
        paths = recording_files(tmp)
        rules_cache = write_rules_cache(os.path.join(tmp, "cache"), raw_config["venues"][VENUES[0]]["instruments"])
        stages = {"read": [], "session": [], "scan": [], "full": []}
        records = 0
        for _ in range(args.rounds):
            stages["read"].append(time_read(paths))
            stages["session"].append(time_sessions(config, paths, scan=False))
            stages["scan"].append(time_sessions(config, paths, scan=True))
            rate, records = time_full(config, paths, os.path.join(tmp, "o.jsonl"), rules_cache)
            stages["full"].append(rate)
    med = {k: median(v) for k, v in stages.items()}
    us = {k: 1e6 / v for k, v in med.items()}
    rows = [["read + merge", med["read"], us["read"], us["read"]],
            ["+ session (parse, book, row write)", med["session"], us["session"], us["session"] - us["read"]],
            ["+ change scan and quote reads", med["scan"], us["scan"], us["scan"] - us["session"]],
            ["+ detector engine, events file (full replay)", med["full"], us["full"], us["full"] - us["scan"]]]
    text = "\n".join([
        f"Replay at max speed: {frames} top-of-book frames (binance bookTicker, bybit orderbook.1, okx bbo-tbt), "
        f"{args.instruments} instruments x 3 venues, median of {args.rounds} rounds; {records} event records",
        "", markdown_table(["stage (cumulative)", "frames/s", "µs/frame", "stage µs/frame"], rows)])
    print(text)
    machine["busy_cores_during_run"] = meter.busy_cores()
    path = write_results("replay", {"options": vars(args), "stages": stages, "medians": med, "records": records,
                                    "machine": machine, "table": text})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
