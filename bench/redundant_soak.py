"""Redundant connections under faults for minutes: one connection of each venue killed or stalled every 10 s,
and the rows never leave LIVE.

Run by hand::

    python -m bench.redundant_soak                 # defaults: --minutes 10 --every-s 10 --stall-ms 300

For each of binance, bybit and okx, at once in one process: a simulated venue (its connections on the
simulator's network paths: a lognormal delay, no random stalls) and a real feed reading it over two connections
(:class:`tests.integration.harness.FeedHarness`, the feed's own status writes all kept). Every ``--every-s``
each venue loses one connection, the oldest open one, alternately killed (TCP reset, no close frame: the feed
reconnects on its backoff) and stalled ``--stall-ms`` (every frame held, then sent back to back). After each
fault the other connection is whole, so a row may never leave LIVE. Reported per venue: status writes other
than LIVE after the warm-up (must be 0), faults made, reconnects, failovers, the share of first copies per path
and the rows' updates.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from bench._common import write_results

REPO = Path(__file__).resolve().parents[1]
VENUES = ("binance", "bybit", "okx")


async def soak(venue: str, args) -> dict:
    sys.path.insert(0, str(REPO))
    from pipeline.board import RowStatus
    from pipeline.sim.paths import PathModel
    from tests.integration.harness import FeedHarness
    paths = PathModel(delay_ms=0.3, jitter=0.5, stall_every_s=0.0, stall_ms=(50.0, 300.0), disconnect_every_s=0.0)
    async with FeedHarness(venue, connections=2, paths=paths, update_interval_ms=args.update_ms) as h:
        await h.all_live(30)
        await h.until(lambda: len(h.server.connections) == 2, 10, "two connections")
        await asyncio.sleep(args.warmup_s)
        marks = {i: h.writes(i) for i in h.instruments}
        faults = {"killed": 0, "stalled": 0}
        started = time.monotonic()
        kill = True
        while time.monotonic() - started < args.minutes * 60:
            await asyncio.sleep(args.every_s)
            if len(h.server.connections) < 2:            # the last one killed has not reconnected yet: skip
                continue
            oldest = next(iter(h.server.connections))
            if kill:
                oldest.transport.abort()
                faults["killed"] += 1
            else:
                index = next(iter(h.server._path_schedules))      # noqa: SLF001 - the oldest open connection's
                await h.server.stall(index, args.stall_ms)
                faults["stalled"] += 1
            kill = not kill
        await asyncio.sleep(1.0)
        untrusted = {i: [s.name for s in h.statuses(i, marks[i]) if s != RowStatus.LIVE] for i in h.instruments}
        arbiter = h.feed.arbiter
        total = sum(arbiter.first) or 1
        return {"venue": venue, "faults": faults, "not_live_writes": {i: len(v) for i, v in untrusted.items()},
                "not_live_states": {i: sorted(set(v)) for i, v in untrusted.items()},
                "updates": {i: h.writes(i) - marks[i] for i in h.instruments},
                "reconnects": h.stat("reconnects"), "failovers": arbiter.failovers,
                "first_share": [round(n / total, 3) for n in arbiter.first]}


async def run_all(args) -> list[dict]:
    return list(await asyncio.gather(*(soak(v, args) for v in args.venues)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every-s", type=float, default=10.0)
    parser.add_argument("--stall-ms", type=float, default=300.0)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--update-ms", type=float, default=20.0)
    parser.add_argument("--venues", nargs="+", default=list(VENUES))
    parser.add_argument("--out", default="redundant_soak", help="results name (<results dir>/<name>.json)")
    args = parser.parse_args()
    results = asyncio.run(run_all(args))
    lines = ["| venue | faults killed / stalled | status writes not LIVE | row updates | reconnects | failovers | "
             "first copies by path |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['venue']} | {r['faults']['killed']} / {r['faults']['stalled']} | "
                     f"{sum(r['not_live_writes'].values())} | {sum(r['updates'].values())} | {r['reconnects']} | "
                     f"{r['failovers']} | {' / '.join(f'{100 * s:.0f}%' for s in r['first_share'])} |")
    print("\n".join(lines))
    path = write_results(args.out, {"options": vars(args), "loadavg": os.getloadavg(), "results": results})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
