"""Cost of one detector pass against the size of the board.

Why: the detector is one Python process that must notice a changed row and
decide within microseconds, however many exchanges, instruments and levels
the board holds. A pass is what ``Detector.run`` does each time around its
loop: read the writers' change lanes (one counter per feed, then only the
rows published since the last pass; see ``pipeline.board.layout``), then for
each changed instrument read its changed rows through the seqlock, run the
pair rules (depth walk for every pair whose first levels can pay both fees)
and the opportunity lifecycle. We time exactly that on the real
``pipeline.detector.process.Detector``, built from a ``ProcessSpec`` and a
config validated by ``parse_config``, attached to a real board filled by one
``RowWriter`` per exchange, each logging to its feed's lane as the supervisor
assigns them:

* ``idle``: a pass where nothing changed (the lanes' counters only);
* ``one row``: one row rewritten before each pass (the common case);
* ``all rows``: every row rewritten before each pass (a burst).

Writes happen outside the timed region. Quotes are LIVE and fresh; each
exchange's book is offset by 1 bps from the previous one, so some pairs have
a positive gross edge and get walked, but none clears the fees, so no events
are written: the numbers are the cost of deciding "nothing to do".
"""
from __future__ import annotations

import argparse
import os
import time
import uuid

from bench._common import BusyMeter, machine_info, markdown_table, median, percentile, speed_probe_ns, write_results
from pipeline.board import Board, Doorbell, ProcessRole, RowStatus, RowWriter
from pipeline.config import parse_config
from pipeline.runtime import ProcessSpec, RowAssignment
from pipeline.venues import VENUES

LIVE = int(RowStatus.LIVE)


def book(mid: float, depth: int) -> tuple[list, list]:
    """Bids and asks 1 bps apart around ``mid``, half-spread 0.5 bps."""
    step = mid * 1e-4
    bids = [(mid - step * (0.5 + k), 1.0 + k) for k in range(depth)]
    asks = [(mid + step * (0.5 + k), 1.0 + k) for k in range(depth)]
    return bids, asks


class Rig:
    """A board of ``n_venues`` x ``n_instruments`` rows at ``depth``, its writer, and a real Detector on it."""

    def __init__(self, n_venues: int, n_instruments: int, depth: int, detector: dict | None = None):
        venues = VENUES[:n_venues]
        instruments = [f"X{i:04d}/USDT" for i in range(n_instruments)]
        raw = {
            "board": {"name": f"bench-{uuid.uuid4().hex[:12]}", "depth": depth},
            "simulator": {},                                    # no urls needed
            "venues": {v: {"instruments": instruments} for v in venues},
            "detector": {"output": os.devnull, "print_opportunities": False, "staleness_ms": 3_600_000,
                         **(detector or {})},
        }
        self.config = parse_config(raw, source="bench")
        rows = []
        for v in self.config.venues:                          # venue-major, as the supervisor assigns rows
            for instrument in v.instruments:
                rows.append(RowAssignment(len(rows), v.name, instrument, instrument.replace("/", "")))
        self.rows = rows
        self.board = Board.create(raw["board"]["name"], len(rows), depth, n_venues + 3)
        self.efd = Doorbell.create_fd()
        self.decision_fd = Doorbell.create_fd()     # the output process's bell, as live: no follower thread here
        try:
            self._fill(rows, n_venues, depth)
        except BaseException:
            # a rig that could not be built must not leave its board in /dev/shm
            self.writers = self.detector = None
            self.board.destroy()
            os.close(self.efd)
            os.close(self.decision_fd)
            raise

    def _fill(self, rows, n_venues: int, depth: int) -> None:
        from pipeline.detector.process import Detector
        # one writer per exchange, each logging to its feed's change lane, as the supervisor sets them up
        # (a board without lanes, before layout 6: one writer for every row)
        if hasattr(self.board, "assign_lane"):
            self.writers = {}
            for slot, v in enumerate(self.config.venues):
                mine = [r.row for r in rows if r.venue == v.name]
                self.board.assign_lane(mine, slot)
                writer = RowWriter(self.board, mine)
                self.writers.update((row, writer) for row in mine)
        else:
            writer = RowWriter(self.board, [r.row for r in rows])
            self.writers = {r.row: writer for r in rows}
        self.depth = depth
        self.books = {}
        for r in rows:
            v = VENUES.index(r.venue)
            i = int(r.instrument[1:5])
            self.books[r.row] = book((100.0 + i) * (1 + v * 1e-4), depth)
            self.write(r.row)
        spec = ProcessSpec(key="detector", role=ProcessRole.DETECTOR, title="bench detector", slot=n_venues,
                           cores=(), board_name=self.board.name, depth=depth, doorbell_fd=self.efd, rows=tuple(rows))
        self.detector = Detector(spec, self.config, decision_fd=self.decision_fd)
        self.one_pass()                                         # absorb the first-seen rows
        self._check_tradable()

    def _check_tradable(self) -> None:
        """Every quote must be tradable, or the benchmark would time the cheap early exits instead."""
        from pipeline.detector.rules import untradable_reason
        det = self.detector
        key = next(iter(det.universe.rows_of))
        now = time.time_ns()
        reasons = {q.venue: untradable_reason(q, now, det.engine.staleness_ns)
                   for q in det.view.quotes(key).values()}
        if any(reasons.values()) or len(reasons) != len(self.config.venues):
            raise RuntimeError(f"bench quotes are not all tradable: {reasons}")

    def write(self, row: int) -> None:
        bids, asks = self.books[row]
        now = time.time_ns()
        self.writers[row].write(row, LIVE, bids, asks, now, now)

    def one_pass(self) -> int:
        """One loop of Detector.run while there is work; returns the changed instruments."""
        det = self.detector
        if hasattr(det, "view"):
            dirty = det.view.changed()
            if dirty:
                seen_ns = time.time_ns()
                for key, rows in dirty.items():
                    det.evaluate(key, seen_ns, rows)
            return len(dirty)
        if hasattr(det, "changed"):                            # before the scan/engine split
            dirty = det.changed()
            if dirty:
                seen_ns = time.time_ns()
                for key, rows in dirty.items():
                    det.evaluate(key, seen_ns, rows)
            return len(dirty)
        dirty = det.changed_instruments()                     # older Detector API
        now = time.time_ns()
        for instrument in dirty:
            det.evaluate(instrument, now)
        return len(dirty)

    def close(self) -> None:
        try:
            self.detector.close()
        finally:
            self.writers = None
            self.board.destroy()
            os.close(self.efd)
            os.close(self.decision_fd)


def timed_passes(rig: Rig, mode: str, budget_s: float, min_n: int, max_n: int) -> list[int]:
    """Nanoseconds per pass, ``mode`` in idle / one / all; writes are outside the timed region."""
    n_rows = len(rig.rows)
    samples = []
    spent = 0
    perf = time.perf_counter_ns
    k = 0
    while len(samples) < max_n and (len(samples) < min_n or spent < budget_s * 1e9):
        if mode == "one":
            rig.write(k % n_rows)
            k += 7919                                           # step through rows (and exchanges) out of order
        elif mode == "all":
            for row in range(n_rows):
                rig.write(row)
        t0 = perf()
        changed = rig.one_pass()
        dt = perf() - t0
        if mode != "idle" and not changed:
            raise RuntimeError("the detector saw no change after a write")
        samples.append(dt)
        spent += dt
    return samples


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exchanges", default="2,4,6", help="comma-separated exchange counts (max 6; default 2,4,6)")
    ap.add_argument("--instruments", default="10,100,1000", help="comma-separated (default 10,100,1000)")
    ap.add_argument("--depths", default="1,5,10", help="comma-separated board depths (default 1,5,10)")
    ap.add_argument("--budget-s", type=float, default=0.3, help="timed seconds per cell and mode (default 0.3)")
    args = ap.parse_args(argv)
    machine = machine_info()
    meter = BusyMeter()
    cells = []
    for n_ex in [int(x) for x in args.exchanges.split(",")]:
        for n_inst in [int(x) for x in args.instruments.split(",")]:
            for depth in [int(x) for x in args.depths.split(",")]:
                rig = Rig(n_ex, n_inst, depth)
                try:
                    cell = {"exchanges": n_ex, "instruments": n_inst, "depth": depth, "rows": n_ex * n_inst}
                    for mode, lo, hi in (("idle", 200, 2000), ("one", 200, 2000), ("all", 5, 200)):
                        s = sorted(timed_passes(rig, mode, args.budget_s, lo, hi))
                        cell[f"{mode}_us"] = median(s) / 1e3
                        cell[f"{mode}_p99_us"] = percentile(s, 99) / 1e3
                        cell[f"{mode}_n"] = len(s)
                finally:
                    rig.close()
                cells.append(cell)
                print(f"{n_ex} x {n_inst:5} x depth {depth:2}: idle {cell['idle_us']:9.1f}  one {cell['one_us']:9.1f}"
                      f"  all {cell['all_us']:10.1f} µs", flush=True)
    def us(x):
        return f"{x:,.1f}"
    rows = [[str(c["exchanges"]), str(c["instruments"]), str(c["depth"]), str(c["rows"]), us(c["idle_us"]),
             us(c["one_us"]), us(c["one_p99_us"]), us(c["all_us"]), us(c["all_us"] / c["instruments"])] for c in cells]
    text = ["Detector pass (µs, median; Detector.changed + evaluate on the real Detector)", "",
            markdown_table(["exchanges", "instruments", "depth", "rows", "idle pass", "one row changed",
                            "one row p99", "all rows changed", "all: per instrument"], rows)]
    target = next((c for c in cells if (c["exchanges"], c["instruments"], c["depth"]) == (6, 100, 5)), None)
    large = next((c for c in cells if (c["exchanges"], c["instruments"], c["depth"]) == (6, 1000, 5)), None)
    if target is not None:
        text += ["", f"target: one changed row at 6 x 100 x depth 5 <= 12 µs: {target['one_us']:.1f} µs "
                     f"({'met' if target['one_us'] <= 12 else 'not met'})"]
    if target is not None and large is not None:
        text += [f"target: no worse at 6 x 1000 x depth 5: {large['one_us']:.1f} µs, "
                 f"{large['one_us'] / target['one_us']:.2f}x the 6 x 100 figure (of which the idle scan "
                 f"{large['idle_us']:.1f} against {target['idle_us']:.1f} µs)"]
    machine["python_speed_probe_ns"] = speed_probe_ns()
    machine["busy_cores_during_run"] = meter.busy_cores()
    table = "\n".join(text)
    print()
    print(table)
    path = write_results("detector", {"options": vars(args), "cells": cells, "machine": machine, "table": table,
                                      "measured": "pipeline.detector.process.Detector: changed() + evaluate() "
                                                  "for each changed instrument, as one loop of Detector.run"})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
