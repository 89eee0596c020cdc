"""The feed's per-frame cost on several commits, measured in turn: did a change cost anything?

Each commit is checked out into a temporary git worktree; the same loop (the ``time_ours`` loop of
``bench.parse``: a real feed object on a private board, frames straight into its per-frame call)
runs there in a fresh process, commits in turn, ``--runs`` times, so that drifts of a busy machine
hit every commit alike. Prints the median µs per frame of each message type per commit. Each checkout reads
its own captured frames (``tests/fixtures``), so the commits compared must carry them (``5043bf5`` or later).

Run: ``python -m bench.compare_commits e10cf6d HEAD [--runs 5]``
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = ("binance bookTicker", "bybit orderbook.1", "bybit orderbook.50 delta", "okx bbo-tbt")

# Runs inside each checkout against that checkout's own bench.parse, so it uses only what every version has:
# ``time_ours(rig, setup, frames)`` with no keyword (older versions took ``decoder=``, defaulting to orjson, the
# current one has no decoder to choose), and the venue as the record ``VENUE`` (a venue folder) or, on older
# commits, the venue module itself.
PROBE = r'''
import importlib, json, sys
sys.path.insert(0, ".")
from bench.parse import CASES, build_frames, FeedRig, symbols_of, time_ours
out = {}
for name in %r:
    case = next(c for c in CASES if c.name == name)
    setup, frames = build_frames(case, 20000)
    package = importlib.import_module(f"pipeline.venues.{case.venue}")
    module = getattr(package, "VENUE", None) or package
    rig = FeedRig(case.venue, symbols_of(module, setup + frames), 5)
    try:
        rates = sorted(time_ours(rig, setup, frames)[0] for _ in range(5))
    finally:
        rig.close()
    out[name] = 1e6 / rates[2]
print(json.dumps(out))
'''


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("commits", nargs="+")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-commits-"))
    trees = {}
    try:
        for commit in args.commits:
            tree = root / commit.replace("/", "_")
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit], check=True,
                           capture_output=True)
            trees[commit] = tree
        results = {commit: {name: [] for name in CASES} for commit in args.commits}
        for _ in range(args.runs):
            for commit, tree in trees.items():
                done = subprocess.run([sys.executable, "-c", PROBE % (CASES,)], cwd=tree, capture_output=True,
                                      text=True, timeout=600)
                if done.returncode:
                    raise SystemExit(f"{commit}: {done.stderr[-2000:]}")
                for name, us in json.loads(done.stdout.splitlines()[-1]).items():
                    results[commit][name].append(us)
        print("µs per frame, median of", args.runs, "runs per commit, commits in turn")
        print("| message | " + " | ".join(args.commits) + " |")
        print("|---|" + "---|" * len(args.commits))
        for name in CASES:
            print(f"| {name} | " + " | ".join(f"{statistics.median(results[c][name]):.2f}" for c in args.commits)
                  + " |")
    finally:
        for tree in trees.values():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)


if __name__ == "__main__":
    main()
