"""Seen -> decision in the ring, in the detector's own process: what a pass that decides costs, part by part.

Run by hand::

    python -m bench.decide                    # defaults: --passes 20000 --rounds 5 --depth 5
    py-spy record -r 2000 -f raw -o decide.txt -- python -m bench.decide --rounds 1   # where the time goes

The real :class:`~pipeline.detector.process.Detector` on a real board (:class:`bench.detector.Rig`: two
venues, one instrument, ``--depth`` levels, trading rules on the board as the feeds publish them), on one
core with nothing else to do. Before each pass (outside the timed region) bybit's row is rewritten, alternately
60 bps above binance's and level with it, so every pass decides: an ``open`` (both books walked, the size fitted
to both venues' rules, the record built) or a ``close``. Each pass is timed whole (``Detector.evaluate`` as
``Detector.run`` calls it: what the ``seen_to_emitted`` hop measures live) and in its three parts, in turn:

* ``read``: ``BoardView.refresh``, the changed row read through the seqlock into the instrument's quotes;
* ``engine``: ``DetectorEngine.evaluate``: pairs, the depth walk, rules, the lifecycle, the record dict;
* ``hand-over``: ``Detector.emit``: the record encoded into the decision ring, the counters, the ring's bell.

Medians over ``--rounds`` of each part's p50 and p99 (µs), per decision kind.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from decimal import Decimal

from bench._common import machine_info, percentile, speed_probe_ns, write_results
from bench.detector import Rig
from pipeline.board import RulesWriter
from pipeline.model import InstrumentRules

PARTS = ("read", "engine", "hand-over", "whole")


def build(depth: int) -> tuple[Rig, int]:
    rig = Rig(2, 1, depth, detector={"reopen_ms": 0, "threshold_bps": 0, "shadow_latencies_ms": [600_000]})
    rules = RulesWriter(rig.board, [r.row for r in rig.rows])
    for r in rig.rows:
        rules.write(r.row, InstrumentRules(r.venue, r.symbol, Decimal("0.0001"), Decimal("0.0001"),
                                           Decimal(0), None, Decimal(0), None, True, "online"))
    for r in rig.rows:                  # a leg takes its rules with its next quote
        rig.write(r.row)
    rig.one_pass()
    [moving] = [r.row for r in rig.rows if r.venue == rig.config.venues[1].name]
    return rig, moving


def books(rig: Rig, row: int, apart: bool) -> None:
    bids, asks = rig.books[row]
    factor = 1.006 if apart else 1 / 1.006
    rig.books[row] = [(p * factor, q) for p, q in bids], [(p * factor, q) for p, q in asks]


def one_round(depth: int, passes: int) -> dict:
    rig, moving = build(depth)
    det = rig.detector
    perf = time.perf_counter_ns
    samples: dict[tuple[str, str], list[int]] = {(kind, part): [] for kind in ("open", "close") for part in PARTS}
    try:
        apart = False
        for i in range(passes):
            apart = not apart
            books(rig, moving, apart)
            rig.write(moving)
            kind = "open" if apart else "close"
            before = det.decisions.count
            dirty = det.view.changed()
            [(key, rows)] = dirty.items()
            seen_ns = time.time_ns()
            if (i // 2) % 2 == 0:             # the whole pass (both kinds), as Detector.run calls it
                t0 = perf()
                det.evaluate(key, seen_ns, rows)
                samples[(kind, "whole")].append(perf() - t0)
            else:                              # the same pass in its three parts
                t0 = perf()
                quotes = det.view.refresh(key, rows)
                t1 = perf()
                emitted = det.engine.evaluate(key, quotes, time.time_ns())
                t2 = perf()
                det.emit(emitted, seen_ns)
                t3 = perf()
                samples[(kind, "read")].append(t1 - t0)
                samples[(kind, "engine")].append(t2 - t1)
                samples[(kind, "hand-over")].append(t3 - t2)
            if det.decisions.count != before + 1:
                raise RuntimeError(f"pass {i}: expected one {kind} in the ring, got {det.decisions.count - before}")
    finally:
        rig.close()
    out = {}
    for (kind, part), values in samples.items():
        values.sort()
        out[f"{kind} {part}"] = {"p50_us": percentile(values, 50) / 1e3, "p99_us": percentile(values, 99) / 1e3,
                                 "n": len(values)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--core", type=int, default=1, help="the core this runs on (the detector's, live)")
    args = ap.parse_args()
    if args.core in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {args.core})
    rounds = [one_round(args.depth, args.passes) for _ in range(args.rounds)]
    summary = {name: {stat: round(statistics.median(r[name][stat] for r in rounds), 2) for stat in ("p50_us", "p99_us")}
               for name in rounds[0]}
    lines = ["| decision | read p50 / p99 µs | engine | hand-over | whole pass (seen -> in the ring) |",
             "|---|---|---|---|---|"]
    for kind in ("open", "close"):
        cells = [f"{summary[f'{kind} {part}']['p50_us']:.1f} / {summary[f'{kind} {part}']['p99_us']:.1f}"
                 for part in PARTS]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    machine = machine_info()
    machine["python_speed_probe_ns"] = speed_probe_ns()
    path = write_results("decide", {"options": vars(args), "rounds": rounds, "summary": summary, "machine": machine})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
