"""What handing a decision over costs the detector: the decision ring against the old in-process writers.

Run by hand::

    python -m bench.decisions                # defaults: --records 20000 --rounds 5 --work-us 20

Both paths take the same real engine records (open, update and close of a three-venue dislocation, with
shared liquidity, trading rules and exchange ages) and are timed in turn, ``--rounds`` times each:

* ``ring``: what the detector does now: :meth:`pipeline.decisions.DecisionWriter.write` of each record into
  a board's decision ring (its fast encoder, one ``pack_into`` between the slot's two sequence stores, the
  counter). ``ring-plain``: the same with the plain encoder (``DecisionWriter(board, fast=False)``, the
  field-by-field walk the fast one is held to), which puts the very same bytes in the ring.
  The reader (the output process) is another process on another core and never writes the ring, so it
  is left out: on two shared cores it would only add its own scheduling to the writer's figures.
* ``writers``: what the detector did before: :meth:`pipeline.output.writers.Outputs.write` with its
  background writers (the events file and stdout lines, here to files), which only queues the record, but
  whose threads then take the interpreter to render and write it, in the detector's own process.

Two figures per path: ``handover`` is the time of the call alone, per record (p50, p99: the detector's
"seen -> decision out of its hands"); ``per decision`` is the wall time per record of a loop that hands a
record over and then does ``--work-us`` of other work (the next evaluation), less that work: what each
decision really costs the detector's loop, threads included. Medians over the rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench._common import RESULTS_DIR, machine_info
from pipeline.board import Board
from pipeline.decisions import DecisionWriter
from pipeline.output.writers import Outputs

REPO = Path(__file__).resolve().parents[1]


def records(n: int) -> list[dict]:
    sys.path.insert(0, str(REPO))
    from tests.unit.test_decisions import engine_records
    base = [r for r in engine_records() if r["event"] != "shadow"]
    return [dict(base[i % len(base)], id=i + 1) for i in range(n)]


def busy(us: float) -> None:
    end = time.perf_counter_ns() + int(us * 1000)
    while time.perf_counter_ns() < end:
        pass


def pct(values: list[int], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1000


def time_path(hand_over, batch: list[dict], work_us: float) -> dict:
    calls = []
    for record in batch:                       # the call alone
        t0 = time.perf_counter_ns()
        hand_over(record)
        calls.append(time.perf_counter_ns() - t0)
    t0 = time.perf_counter_ns()
    for record in batch:                       # the loop: hand over, then the next evaluation's work
        hand_over(record)
        busy(work_us)
    loop_us = (time.perf_counter_ns() - t0) / 1000 / len(batch) - work_us
    return {"handover_p50_us": pct(calls, 0.5), "handover_p99_us": pct(calls, 0.99), "per_decision_us": loop_us}


def run_ring(batch: list[dict], work_us: float, entries: int, fast: bool = True) -> dict:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    board = Board.create(name, 6, 5, 2, decision_entries=entries, decision_fills=3)
    try:
        writer = DecisionWriter(board, fast=fast)
        meta = (0, 1, 2, 3, 4, 5, 0, 1)
        result = time_path(lambda record: writer.write(record, meta), batch, work_us)
        writer.close()
    finally:
        board.destroy()
    return result


def run_writers(batch: list[dict], work_us: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-decisions-"))
    with open(work / "stdout.txt", "w") as stdout:
        outputs = Outputs(str(work / "events.jsonl"), True, True, stdout=stdout, run_id="bench", background=True,
                          queue_records=10 * len(batch))
        result = time_path(outputs.write, [dict(r) for r in batch], work_us)
        outputs.close()
        result["dropped"] = outputs.dropped
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work-us", type=float, default=20.0)
    parser.add_argument("--out", default="decisions.json")
    args = parser.parse_args()
    batch = records(args.records)
    rounds: dict[str, list[dict]] = {"ring": [], "ring-plain": [], "writers": []}
    for _ in range(args.rounds):                  # in turn, so a busy spell of the machine hits all alike
        rounds["ring"].append(run_ring(batch, args.work_us, 65536))
        rounds["ring-plain"].append(run_ring(batch, args.work_us, 65536, fast=False))
        rounds["writers"].append(run_writers(batch, args.work_us))
    summary = {path: {key: round(statistics.median(r[key] for r in results), 2)
                      for key in ("handover_p50_us", "handover_p99_us", "per_decision_us")}
               for path, results in rounds.items()}
    lines = ["| path | handover p50 µs | handover p99 µs | per decision in the loop µs |", "|---|---|---|---|"]
    for path, s in summary.items():
        lines.append(f"| {path} | {s['handover_p50_us']} | {s['handover_p99_us']} | {s['per_decision_us']} |")
    ring, plain, old = summary["ring"], summary["ring-plain"], summary["writers"]
    lines.append("")
    lines.append(f"writers / ring: handover p50 {old['handover_p50_us'] / ring['handover_p50_us']:.2f}x, "
                 f"per decision {old['per_decision_us'] / ring['per_decision_us']:.2f}x")
    lines.append(f"ring-plain / ring: handover p50 {plain['handover_p50_us'] / ring['handover_p50_us']:.2f}x, "
                 f"per decision {plain['per_decision_us'] / ring['per_decision_us']:.2f}x")
    print("\n".join(lines))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / args.out).write_text(json.dumps({"options": vars(args), "machine": machine_info(),
                                                    "loadavg": os.getloadavg(), "rounds": rounds,
                                                    "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
