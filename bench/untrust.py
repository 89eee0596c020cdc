"""Row untrusted -> close decision in the ring: how long an executor goes on seeing an opportunity whose leg
nobody can trust any more.

Run by hand::

    python -m bench.untrust                  # defaults: --trials 150 --rate 5000

The real pieces: the supervisor's board plan, board and doorbells (:class:`pipeline.supervisor.core.Supervisor`, none of
its children but the detector), the real detector process (``pipeline.detector.process.main``, started and
pinned to ``--detector-core`` by the supervisor's own ``_spawn``), and this script as binance's and bybit's
feed (their rows written through the feed's own :class:`~pipeline.feed.process.BoardSink`, as the session
does), following the decision ring with
:class:`~pipeline.decisions.DecisionReader` on ``--feed-core``.

Each trial: both BTC/USDT rows LIVE with bybit 60 bps above binance; ``--settle-ms`` after the ``open`` is in
the ring (the detector, done spinning, has gone to sleep as it does between changes in a quiet market), one leg
is untrusted and the time from that row's change on the board (its ``publish_ns``) to the ``close`` entry's
write (its ``written_ns``) is one sample; then both rows are made level again. The ways a row stops being
trusted, each as the code that does it:

* ``gap``: the session marks the rows RESYNCING (a sequence gap, a checksum failure), ``BoardSink.set_status``;
* ``halt``: the session marks it HALTED (the venue's status), the same call;
* ``disconnect``: the feed's connection is gone, every row DISCONNECTED, the same call per row;
* ``dead_writer``: the feed process died; the supervisor's ``release_rows`` marks its rows DISCONNECTED.

``--markets quiet busy``: quiet, nothing else moves; busy, another process writes okx's ETH/USDT row (a feed of
its own, rows no pair uses) ``--rate`` times a second, ringing the doorbell as a feed does. ``--waits doorbell
spin``: the detector's two wait modes. ``without-ring`` (doorbell only): the status written the way a
status-only change was written before (no ring), for the same trials: the detector notices at its next wake-up.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
import uuid
from decimal import Decimal

from bench._common import latency_summary, write_results
from pipeline.board import Doorbell, ProcessRole, RowReader, RowStatus, RowWriter, RulesWriter
from pipeline.config import parse_config
from pipeline.decisions import META, DecisionReader
from pipeline.feed.process import BoardSink
from pipeline.model import InstrumentRules
from pipeline.supervisor.core import Child, Supervisor

CTX = multiprocessing.get_context("fork")
KINDS = ("gap", "halt", "disconnect", "dead_writer")
STATUS = {"gap": RowStatus.RESYNCING, "halt": RowStatus.HALTED, "disconnect": RowStatus.DISCONNECTED,
          "dead_writer": RowStatus.DISCONNECTED}


def config_for(board_name: str, wait: str, detector_core: int):
    return parse_config({
        "board": {"name": board_name, "depth": 2},
        "venues": {"binance": {"instruments": ["BTC/USDT"], "url": "wss://127.0.0.1:1"},
                   "bybit": {"instruments": ["BTC/USDT"], "url": "wss://127.0.0.1:2"},
                   "okx": {"instruments": ["ETH/USDT"], "url": "wss://127.0.0.1:3"}},
        "detector": {"wait": wait, "cores": [detector_core], "threshold_bps": 0.0, "print_opportunities": False,
                     "output": "/dev/null", "decision_ring": 4096, "shadow_latencies_ms": [60000.0]}},
        available_cores=frozenset(range(os.cpu_count() or 1)))


def busy_market(board_name: str, depth: int, rows: list[int], fds: tuple[int, int], rate: float, core: int,
                stop) -> None:
    """Another feed's rows, written ``rate`` times a second until ``stop`` is set (a forked child)."""
    from pipeline.board import Board
    os.sched_setaffinity(0, {core})
    board = Board.attach(board_name, depth)
    writer = RowWriter(board, rows)
    doorbell = Doorbell(board.buf, *fds)
    period = 1.0 / rate
    step = 0
    next_at = time.perf_counter()
    while not stop.is_set():
        step += 1
        now = time.time_ns()
        mid = 3000.0 + (step % 11) * 0.01
        for row in rows:
            writer.write(row, int(RowStatus.LIVE), [(mid - 0.01, 1.0)], [(mid + 0.01, 1.0)], now, now)
        doorbell.ring_if_sleeping()
        next_at += period
        wait = next_at - time.perf_counter()
        if wait > 0:
            time.sleep(wait)                   # sleeps, so the core is left to the feeds' trials
    writer = doorbell = None
    board.close()


class Trials:
    """This process as the binance and bybit feeds, and a reader of the decision ring."""

    def __init__(self, sup: Supervisor, settle_s: float):
        self.sup = sup
        self.settle_s = settle_s
        board = sup.board
        self.specs = {s.venue: s for s in sup.specs() if s.role == ProcessRole.FEED}
        fds = (sup.doorbell_fd, sup.bridge_doorbell_fd)
        self.rows = {venue: self.specs[venue].rows[0].row for venue in ("binance", "bybit")}
        self.sinks = {}
        for venue, row in self.rows.items():
            self.sinks[venue] = BoardSink.of(board, self.specs[venue].slot, RowWriter(board, [row]),
                                             Doorbell(board.buf, *fds))
        rules = RulesWriter(board, [r.row for r in sup.plan.rows])
        for r in sup.plan.rows:
            rules.write(r.row, InstrumentRules(r.venue, r.venue.upper(), Decimal("0.01"), Decimal("0.0001"),
                                               Decimal(0), None, Decimal(0), None, True, "online"))
        self.reader = DecisionReader(board, 0)
        self.rows_reader = RowReader(board)
        self.publish_index = self.rows_reader.codec.index["publish_ns"]

    def quote(self, venue: str, apart: bool) -> None:
        mid = 100.0 * (1.006 if apart and venue == "bybit" else 1.0)
        now = time.time_ns()
        self.sinks[venue].write(self.rows[venue], int(RowStatus.LIVE), [(mid - 0.005, 1.0)], [(mid + 0.005, 1.0)],
                                now, now, 0, 0)

    def wait_for(self, kind: str, timeout_s: float = 5.0) -> tuple:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.reader.read()
            if got is None:
                continue
            record = self.reader.record(got[1])
            if record["event"] == kind:
                return record, got[1][META]
        raise RuntimeError(f"no {kind} decision within {timeout_s} s")

    def untrust(self, kind: str, ring: bool) -> int:
        """Untrust bybit's row the way ``kind`` does; the row's publish time."""
        row = self.rows["bybit"]
        sink = self.sinks["bybit"]
        status = int(STATUS[kind])
        if kind == "dead_writer":
            self.sup.release_rows(Child(self.specs["bybit"], None, ()))
        elif ring:
            sink.set_status(row, status)
        else:
            sink.writer.set_status(row, status)       # a status-only change as it was written before: no ring
        return self.rows_reader.read(row)[self.publish_index]

    def trial(self, kind: str, ring: bool) -> int:
        self.quote("binance", True)
        self.quote("bybit", True)
        self.wait_for("open")
        time.sleep(self.settle_s)
        untrusted_ns = self.untrust(kind, ring)
        record, written_ns = self.wait_for("close")
        assert record["close_reason"] in ("book_invalidated", "venue_halted", "exchange_disconnected"), record
        self.quote("binance", False)
        self.quote("bybit", False)
        return written_ns - untrusted_ns


def run(args, wait: str, market: str, ring: bool) -> dict:
    name = f"bench-untrust-{uuid.uuid4().hex[:8]}"
    config = config_for(name, wait, args.detector_core)
    sup = Supervisor(config)
    sup.create_board()
    stop = CTX.Event()
    children = []
    try:
        from pipeline.detector.process import main as detector_main
        spec = next(s for s in sup.specs() if s.role == ProcessRole.DETECTOR)
        child = Child(spec, detector_main, (spec, config))
        sup._spawn(child)                      # started, and pinned to detector.cores, as the supervisor does
        children.append(child.process)
        if market == "busy":
            okx = next(s for s in sup.specs() if s.role == ProcessRole.FEED and s.venue == "okx")
            load = CTX.Process(target=busy_market, args=(name, config.board.depth, [r.row for r in okx.rows],
                                                         (sup.doorbell_fd, sup.bridge_doorbell_fd), args.rate,
                                                         args.feed_core, stop), daemon=True)
            load.start()
            children.append(load)
        trials = Trials(sup, args.settle_ms / 1000)
        samples = {}
        for kind in KINDS if ring else [k for k in KINDS if k != "dead_writer"]:
            for _ in range(args.warmup):
                trials.trial(kind, ring)
            samples[kind] = [trials.trial(kind, ring) for _ in range(args.trials)]
        trials = None
        return {kind: latency_summary(values) for kind, values in samples.items()}
    finally:
        stop.set()
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join(10)
        sup.board.destroy()
        for fd in (sup.doorbell_fd, sup.bridge_doorbell_fd, sup.decision_fd, *sup._exit_reasons):
            os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5000.0, help="row updates/s of the busy market")
    parser.add_argument("--markets", nargs="+", default=["quiet", "busy"], choices=["quiet", "busy"])
    parser.add_argument("--waits", nargs="+", default=["doorbell", "spin"], choices=["doorbell", "spin"])
    parser.add_argument("--settle-ms", type=float, default=5.0, help="after each open, before the untrust")
    parser.add_argument("--feed-core", type=int, default=0)
    parser.add_argument("--detector-core", type=int, default=1)
    parser.add_argument("--out", default="untrust", help="results name (<results dir>/<name>.json)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.feed_core})
    results = []
    for market in args.markets:
        for wait in args.waits:
            for ring in ((True, False) if wait == "doorbell" else (True,)):
                started = time.monotonic()
                figures = run(args, wait, market, ring)
                results.append({"market": market, "wait": wait, "ring": ring, "figures": figures,
                                "seconds": round(time.monotonic() - started, 1)})
    lines = ["| market | detector wait | status change | untrusted by | p50 µs | p99 µs | max µs |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for kind, f in r["figures"].items():
            lines.append(f"| {r['market']} | {r['wait']} | {'rings' if r['ring'] else 'without-ring'} | {kind} | "
                         f"{f['p50_us']:.0f} | {f['p99_us']:.0f} | {f['max_us']:.0f} |")
    print("\n".join(lines))
    medians = {(r["market"], r["ring"]): statistics.median(f["p50_us"] for f in r["figures"].values())
               for r in results if r["wait"] == "doorbell"}
    for market in args.markets:
        if (market, True) in medians and (market, False) in medians:
            print(f"{market}, doorbell: without-ring / rings, median of the p50s: "
                  f"{medians[(market, False)] / medians[(market, True)]:.0f}x")
    path = write_results(args.out, {"options": vars(args), "loadavg": os.getloadavg(), "results": results})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
