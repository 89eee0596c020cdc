"""Where a feed session's time goes, per message type: a py-spy profile of ``FeedSession.receive``.

Run by hand (py-spy is a sampling profiler: it does not slow the code it samples)::

    pip install py-spy
    py-spy record -r 2000 -f raw -o /tmp/session.txt -- python -m bench.profile_session run "binance bookTicker"
    python -m bench.profile_session summary /tmp/session.txt

``run CASE [--seconds S]`` feeds the frames of one ``bench.parse`` case through a real ``Feed``'s session
(its venue record's own ``parse``/``top``) on a private board (the frames ``bench.parse`` times) for S seconds.
``summary FILE`` reads py-spy's raw output and prints, for the samples inside ``FeedSession.receive``, the
share of each function (inclusive) and of each source line (self).
"""
from __future__ import annotations

import argparse
import re
import time
from collections import Counter

from bench import parse as bench_parse
from pipeline.venues import load_venue


def run(case_name: str, seconds: float) -> None:
    case = next(c for c in bench_parse.CASES if c.name == case_name)
    if "orderbook.50 delta" in case_name:
        setup, frames = bench_parse._bybit_delta_frames(case, 20000)  # noqa: SLF001 - the same frames bench.parse times
    else:
        setup, frames = bench_parse.build_frames(case, 20000)
    module = load_venue(case.venue)
    rig = bench_parse.FeedRig(case.venue, bench_parse.symbols_of(module, setup + frames), 5)
    now = time.time_ns
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            feed = rig.fresh()
            session, conn = feed.session, rig.conn
            for raw in setup:
                session.receive(raw, now(), conn)
            for raw in frames:
                session.receive(raw, now(), conn)
    finally:
        rig.close()


def summary(path: str, root: str = "FeedSession.receive", top: int = 18) -> str:
    inclusive: Counter = Counter()
    by_line: Counter = Counter()
    inside = 0
    for line in open(path):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        frames = stack.split(";")
        start = next((i for i, f in enumerate(frames) if f.startswith(root + " ")), None)
        if start is None:
            continue
        n = int(count)
        inside += n
        by_line[frames[-1]] += n
        for name in {re.sub(r":\d+\)", ")", f) for f in frames[start:]}:
            inclusive[name] += n
    if not inside:
        return f"no samples inside {root}"
    out = [f"{inside} samples inside {root}", "", "inclusive, by function:"]
    out += [f"  {100 * n / inside:5.1f} %  {name}" for name, n in inclusive.most_common(top)]
    out += ["", "self, by line:"]
    out += [f"  {100 * n / inside:5.1f} %  {name}" for name, n in by_line.most_common(top)]
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("case", choices=[c.name for c in bench_parse.CASES])
    r.add_argument("--seconds", type=float, default=8.0)
    s = sub.add_parser("summary")
    s.add_argument("file")
    args = ap.parse_args(argv)
    if args.command == "run":
        run(args.case, args.seconds)
    else:
        print(summary(args.file))


if __name__ == "__main__":
    main()
