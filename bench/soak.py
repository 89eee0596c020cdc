"""Soak: the pipeline against a misbehaving simulator for minutes, with children killed.

Run by hand (not in CI)::

    python -m bench.soak --minutes 30
    python -m bench.soak --minutes 20 --kill-every 15 --seed 11     # issue 24's "done when" run

This script runs the exchange simulator itself (in-process, so it can switch
faults on and off) and starts the supervisor as a subprocess with a config
whose venues point at it. Every few seconds it injects a fault on a random
exchange (dropped connections, refused reconnects, hung handshakes, silence,
a quiet instrument, garbage frames, bad numbers, crossed books, sequence
gaps, duplicates, corrupted checksums, bursts) and now and then kills a random
child with SIGKILL. At the end it prints the figures and writes them as JSON
to ``soak.json`` in the results folder (:func:`bench._common.results_dir`, outside the repository).

``--hostile`` (on by default: all of :data:`~pipeline.sim.protocol.HOSTILE_NAMES`;
``--hostile ''`` for none) has every simulated venue stage crafted input on its
own as well (:class:`~pipeline.sim.protocol.Hostile`): a number no row can hold in
the venue's own wire format (an exchange time past 2262, an id past int64, a price
``1e400`` / ``inf`` / ``NaN``) every ~20 s, a real frame in 64 WebSocket fragments
every ~5 s, a message past the clients' 16 MiB cap in 1 MiB fragments every ~60 s,
and book (Kraken: instrument too) messages naming a new, never-subscribed symbol
every 5 market steps.

The summary's ``verdict`` is issue 24's "done when": processes the supervisor
gave up on (``FAILED``), tracebacks anywhere in the pipeline's output, and whether
each process's RSS stayed flat (sampled every 5 s; over the steady part of the run,
from 10 s after every feed refused its first oversize message, the peak of the
second half no more than 10 % + 5 MB above the peak of the first half, or below
the start + 10 % + 5 MB + the 16 MiB a refused message may leave allocated; peaks,
so that children restarted by the kills still compare: see :func:`rss_summary`);
``rss_mb`` has each process's RSS at the start, middle and end (every 5 s sample is
in the JSON file, ``rss_samples``), and ``hostile`` what the hostile faults sent and
what the feeds counted (bad numbers, frames skipped as malformed, oversize messages
refused, unknown symbols skipped).

"Opportunities opened from untrustworthy rows" is checked from outside the
detector: an ``open`` whose quote age exceeds the staleness limit, or that
names an exchange while the simulator was refusing it or keeping it silent
(after a grace period for the feed to notice), counts. It must be 0.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psutil
import yaml

from bench._common import RESULTS_DIR
from pipeline.board import Board, ProcessRole, RowStatus, SkipReason
from pipeline.feed.transport import MAX_MESSAGE_BYTES
from pipeline.sim.market import Market
from pipeline.sim.protocol import HOSTILE_NAMES, QUIRK_NAMES, Hostile, Quirks
from pipeline.sim.server import Simulator
from pipeline.venues import VENUES, load_venue

REPO = Path(__file__).resolve().parents[1]
INSTRUMENTS = {"coinbase": ["BTC/USD", "BTC/USDT"], "kraken": ["BTC/USD", "BTC/USDT"]}
STALENESS_MS = 1000
GRACE_S = 0.5
RSS_EVERY_S = 5.0
FAULTS = ["drop_close", "drop_abort", "refuse", "hang", "silence", "quiet_instrument", "garbage", "bad_number",
          "crossed", "gap", "duplicate", "checksum", "burst", "kill_child"]


def process_usage(pids: dict[str, int]) -> dict[str, dict]:
    out = {}
    for name, pid in pids.items():
        try:
            p = psutil.Process(pid)
            out[name] = {"pid": pid, "rss_mb": round(p.memory_info().rss / 2 ** 20, 1),
                         "cpu_s": round(sum(p.cpu_times()[:2]), 2)}
        except psutil.Error:
            out[name] = {"pid": pid, "rss_mb": None, "cpu_s": None}
    return out


def rss_summary(samples: list[tuple[float, dict]], steady_from_s: float = 0.0) -> dict:
    """Per process: RSS (MB) at the start, middle and end, the peaks of each half of the steady part of the run
    (from ``steady_from_s``: every feed has refused its first oversize message), whether it stayed flat, and the
    longest-lived pid's own growth (a process restarted by a kill starts small again).

    Flat: the second half's peak at most 10 % + 5 MB above the first half's, or within ``bound``: the start RSS
    + 10 % + 5 MB + the 16 MiB a refused oversize message may leave allocated (the allocator keeps it or not,
    so that step can come in either half)."""
    out = {}
    names = sorted({name for _, usage in samples for name in usage})
    steady = [t for t, _ in samples if t >= steady_from_s] or [t for t, _ in samples]
    middle_s = steady[len(steady) // 2]
    for name in names:
        series = [(t, u[name]["pid"], u[name]["rss_mb"]) for t, u in samples
                  if name in u and u[name]["rss_mb"] is not None]
        if not series:
            continue
        first = [rss for t, _, rss in series if steady[0] <= t <= middle_s] or [series[0][2]]
        second = [rss for t, _, rss in series if t > middle_s] or [series[-1][2]]
        lives: dict[int, list] = {}
        for t, pid, rss in series:
            lives.setdefault(pid, []).append((t, rss))
        pid, life = max(lives.items(), key=lambda item: item[1][-1][0] - item[1][0][0])
        middle = min(series, key=lambda x: abs(x[0] - middle_s))
        bound = round(series[0][2] * 1.10 + 5.0 + MAX_MESSAGE_BYTES / 2 ** 20, 1)
        out[name] = {"start": series[0][2], "middle": middle[2], "end": series[-1][2],
                     "peak_first_half": max(first), "peak_second_half": max(second), "bound": bound,
                     "flat": max(second) <= max(max(first) * 1.10 + 5.0, bound),
                     "pids": len(lives),
                     "longest_life": {"pid": pid, "seconds": round(life[-1][0] - life[0][0]),
                                      "rss_first": life[0][1], "rss_last": life[-1][1]}}
    return out


def board_pids(board_name: str, venues: list[str]) -> dict[str, int]:
    try:
        board = Board.attach(board_name)
    except Exception:  # noqa: BLE001 - not created yet, or already gone: no pids
        return {}
    try:
        return {name: int(board.procs[i]["pid"]) for i, name in slot_names(board).items() if int(board.procs[i]["pid"])}
    finally:
        board.close()


def slot_names(board) -> dict[int, str]:
    """Process slot -> name, from what each process wrote in its slot (role, venue id): the supervisor
    assigns slots in the config's order, which is not VENUES order."""
    names = {}
    for i in range(board.geometry.n_procs):
        role = int(board.procs[i]["role"])
        if role == int(ProcessRole.FEED):
            names[i] = VENUES[int(board.procs[i]["venue_id"]) - 1]
        elif role == int(ProcessRole.DETECTOR):
            names[i] = "detector"
        elif role == int(ProcessRole.HEALTH):
            names[i] = "health"
    return names


def board_counters(board_name: str, venues: list[str]) -> dict:
    board = Board.attach(board_name)
    try:
        out = {}
        slots = {name: i for i, name in slot_names(board).items()}
        for venue in venues:
            slot = board.procs[slots[venue]]
            out[venue] = {k: int(slot[k]) for k in ("messages", "parse_errors", "reconnects", "gaps",
                                                    "checksum_failures", "resyncs", "restarts", "resyncs_deferred",
                                                    "stuck_channels")}
            out[venue]["skipped"] = {r.name.lower(): int(slot["skipped"][r]) for r in SkipReason}
        detector = board.procs[slots["detector"]]
        out["detector"] = {k: int(detector[k]) for k in ("scans", "opportunities", "restarts", "shadow_fills")}
        return out
    finally:
        board.close()


class Soak:
    def __init__(self, minutes: float, seed: int, fault_every_s: float, kill_every_s: float,
                 quirks: tuple[str, ...] = QUIRK_NAMES, hostile: tuple[str, ...] = HOSTILE_NAMES):
        self.minutes = minutes
        self.rng = random.Random(seed)
        self.fault_every_s = fault_every_s
        self.kill_every_s = kill_every_s
        self.venues = list(VENUES)
        self.symbols = {v: {i: load_venue(v).native_symbol(i) for i in INSTRUMENTS.get(v, ["BTC/USDT", "ETH/USDT"])}
                        for v in self.venues}
        instruments = sorted({i for s in self.symbols.values() for i in s})
        self.market = Market(self.venues, instruments, seed=seed, depth=10, dislocation_every_s=1.0,
                             dislocation_bps=45, dislocation_ms=150)
        self.sim = Simulator(self.symbols, self.market, update_interval_ms=20)
        self.board_name = f"pipeline-soak-{uuid.uuid4().hex[:8]}"
        self.injected: dict[str, int] = {k: 0 for k in FAULTS}
        self.untrusted_windows: list[tuple[str, float, float, str]] = []   # exchange, from, to (wall clock), fault
        self.kills: list[str] = []
        self.deaths: list[tuple[str, int]] = []            # (exchange, wall-clock ns of the SIGKILL) of killed feeds
        self.reaction_ms: list[float] = []                 # SIGKILL -> every row of that feed untrusted on the board
        self.reaction_timeouts: list[str] = []             # feeds whose rows were still live 1 s after the SIGKILL
        self.quirks = quirks
        self.hostile = hostile
        for server in self.sim.exchanges.values():
            server.quirks = Quirks.named(quirks)
            server.hostile = Hostile.named(hostile)
        self.rss_samples: list[tuple[float, dict]] = []    # (seconds into the run, process -> pid and RSS)
        self.steady_from_s: float | None = None if "oversize_messages" in hostile else 0.0

    def config(self, urls: dict[str, str], out: Path) -> dict:
        return {
            "board": {"name": self.board_name, "depth": 5},
            "venues": {v: {"url": urls[v], "instruments": list(self.symbols[v]), "staleness_ms": STALENESS_MS}
                       for v in self.venues},
            "detector": {"threshold_bps": 0.0, "staleness_ms": STALENESS_MS, "output": str(out),
                         "print_opportunities": False},
            "health": {"interval_s": 30},
            "supervisor": {"restart_backoff_s": 0.2, "max_restarts": 1000},
        }

    async def inject(self, kind: str) -> None:
        venue = self.rng.choice(self.venues)
        server = self.sim.exchanges[venue]
        faults = server.faults
        symbol = self.rng.choice(list(self.symbols[venue].values()))
        now = time.time()
        self.injected[kind] += 1
        if kind in ("drop_close", "drop_abort"):
            await server.drop_connections("close" if kind == "drop_close" else "abort")
        elif kind == "refuse":
            faults.refuse_until = time.monotonic() + 2.0
            await server.drop_connections("abort")
            self.untrusted_windows.append((venue, now + GRACE_S, now + 2.0, kind))
        elif kind == "hang":
            faults.hang_handshake = True
            await server.drop_connections("abort")
            self.untrusted_windows.append((venue, now + GRACE_S, now + 2.0, kind))
            await asyncio.sleep(2.0)
            faults.hang_handshake = False
        elif kind == "silence":
            faults.silent = True
            self.untrusted_windows.append((venue, now + STALENESS_MS / 1000 + GRACE_S, now + 3.0, kind))
            await asyncio.sleep(3.0)
            faults.silent = False
        elif kind == "quiet_instrument":
            faults.silent_symbols.add(symbol)
            await asyncio.sleep(3.0)
            faults.silent_symbols.discard(symbol)
        elif kind == "garbage":
            faults.inject_next.extend(["{not json", '{"unknown":"type"}', b"\x00\xff binary", "[" * 10,
                                       '{"x":"' + "A" * 3_000_000 + '"}'])
        elif kind in ("bad_number", "crossed"):
            canonical = next(i for i, s in self.symbols[venue].items() if s == symbol)
            bids, asks = self.market.book(venue, canonical, time.time() * 1000)
            if kind == "bad_number":
                bad = self.rng.choice([math.nan, math.inf, -1.0, 0.0])
                faults.bad_book_next[symbol] = ([(bad, 1.0)] + bids[1:], asks)
            else:
                faults.bad_book_next[symbol] = ([(asks[0][0] * 1.01, 1.0)] + bids[1:], asks)
        elif kind == "gap":
            faults.drop_next_depth.add(symbol)
        elif kind == "duplicate":
            faults.duplicate_next_depth.add(symbol)
        elif kind == "checksum":
            faults.corrupt_checksum_next.add(symbol)
        elif kind == "burst":
            faults.burst = 1000

    def kill_child(self) -> None:
        pids = board_pids(self.board_name, self.venues)
        if not pids:
            return
        name = self.rng.choice(sorted(pids))
        try:
            killed_ns = time.time_ns()
            os.kill(pids[name], signal.SIGKILL)
            self.kills.append(name)
            self.injected["kill_child"] += 1
            if name in self.venues:
                self.deaths.append((name, killed_ns))
                self.measure_reaction(name, killed_ns)
        except ProcessLookupError:
            pass

    def measure_reaction(self, venue: str, killed_ns: int, timeout_s: float = 1.0) -> None:
        """How long after the SIGKILL every row of the dead feed is untrusted on the board (polled every ~50 µs)."""
        board = Board.attach(self.board_name, 5)
        try:
            mine = [n for n in range(board.geometry.n_rows) if int(board.rows[n]["venue_id"]) ==
                    VENUES.index(venue) + 1]
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if all(int(board.rows[n]["status"]) != int(RowStatus.LIVE) for n in mine):
                    self.reaction_ms.append((time.time_ns() - killed_ns) / 1e6)
                    return
                time.sleep(0.00005)
            self.reaction_timeouts.append(venue)
        finally:
            board.close()

    async def run(self) -> dict:
        urls = await self.sim.start()
        sim_task = asyncio.ensure_future(self.sim.run())
        workdir = Path(tempfile.mkdtemp(prefix="soak-"))
        out = workdir / "opportunities.jsonl"
        config_path = workdir / "soak.yaml"
        config_path.write_text(yaml.safe_dump(self.config(urls, out)))
        proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", str(config_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        log_lines: list[str] = []
        reader = asyncio.get_running_loop().run_in_executor(None, lambda: log_lines.extend(proc.stdout))
        deadline = time.monotonic() + 30
        while len(board_pids(self.board_name, self.venues)) < len(self.venues) + 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)
        start_usage = process_usage(board_pids(self.board_name, self.venues))
        started = time.monotonic()
        end_at = started + self.minutes * 60
        next_kill = time.monotonic() + self.kill_every_s
        sampler = asyncio.ensure_future(self.sample_rss(started))
        pending = set()
        while time.monotonic() < end_at:
            kind = self.rng.choice(FAULTS[:-1])
            pending.add(asyncio.ensure_future(self.inject(kind)))
            if time.monotonic() >= next_kill:
                self.kill_child()
                next_kill = time.monotonic() + self.kill_every_s
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.fault_every_s)
            pending = {t for t in pending if not t.done()}
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(5)                                   # let everything recover
        sampler.cancel()
        self.rss_samples.append((time.monotonic() - started, self.usage()))
        end_usage = process_usage(board_pids(self.board_name, self.venues))
        counters = board_counters(self.board_name, self.venues)
        proc.send_signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        await reader
        sim_task.cancel()
        await self.sim.close()
        return self.figures(out, counters, start_usage, end_usage, log_lines, proc.returncode)

    def usage(self) -> dict:
        usage = process_usage(board_pids(self.board_name, self.venues))
        usage["simulator"] = process_usage({"simulator": os.getpid()})["simulator"]   # this process
        return usage

    async def sample_rss(self, started: float) -> None:
        while True:
            now_s = time.monotonic() - started
            self.rss_samples.append((now_s, self.usage()))
            if self.steady_from_s is None and all(s.hostile_sent["oversize_refused"]
                                                  for s in self.sim.exchanges.values()):
                self.steady_from_s = now_s + 10.0      # every feed has met its first oversize message
            await asyncio.sleep(RSS_EVERY_S)

    def hostile_figures(self, counters: dict, log_lines: list[str]) -> dict:
        """What the hostile faults sent (the simulator's counts) and what the feeds made of it (the board's)."""
        sent: dict[str, int] = {}
        for server in self.sim.exchanges.values():
            for key, n in server.hostile_sent.items():
                sent[key] = sent.get(key, 0) + n
        def skipped(reason: str) -> int:
            return sum(counters[v]["skipped"][reason] for v in self.venues)
        return {
            "sent": dict(sorted(sent.items())),
            "sent_by_venue": {name: dict(sorted(server.hostile_sent.items()))
                              for name, server in self.sim.exchanges.items()},
            "feeds_counted": {
                "bad_numbers": skipped("bad_number"),
                "frames_skipped_as_invalid_json": skipped("invalid_json"),
                "frames_skipped_as_unknown_message": skipped("unknown_message"),   # unknown symbols are counted here
                "stuck_channels_rearmed": sum(counters[v]["stuck_channels"] for v in self.venues),
                "oversize_messages_refused": sent.get("oversize_refused", 0),   # the client hung up on it
                "oversize_messages_kept": sent.get("oversize_kept", 0),         # must be 0
                "oversize_refusals_logged": sum("exceeds limit" in line or "message too big" in line
                                                for line in log_lines),       # rate-limited log lines
            },
            "unknown_symbols_named": sent.get("unknown_symbol", 0),
            "simulator_handler_errors": sum(server.handler_errors for server in self.sim.exchanges.values()),
        }

    def dead_quote(self, record: dict) -> str | None:
        """Exact attribution of a kill: the open came after a feed's death and used a quote that feed had
        received before it died (the leg's receive time is the open's time minus the leg's quote age)."""
        opened_ns = record["time_ns"]
        for side in ("buy", "sell"):
            venue = record[f"{side}_exchange"]
            received_ns = opened_ns - record[f"{side}_quote_age_ms"] * 1e6
            for dead, killed_ns in self.deaths:
                if dead == venue and received_ns < killed_ns <= opened_ns:
                    return "quote_of_a_dead_feed"
        return None

    def figures(self, out: Path, counters: dict, start_usage, end_usage, log_lines, returncode) -> dict:
        records = [orjson.loads(line) for line in out.read_bytes().splitlines()] if out.exists() else []
        opens = [r for r in records if r["event"] == "open"]
        untrusted = 0
        untrusted_by_fault: dict[str, int] = {}
        for record in opens:
            t = record["time_ns"] / 1e9
            too_old = max(record["buy_quote_age_ms"], record["sell_quote_age_ms"]) > STALENESS_MS
            window = next((kind for v, a, b, kind in self.untrusted_windows
                           if v in (record["buy_exchange"], record["sell_exchange"]) and a <= t <= b), None)
            if not too_old and not window:
                window = self.dead_quote(record)
            if too_old or window:
                untrusted += 1
                key = "quote_too_old" if too_old else window
                untrusted_by_fault[key] = untrusted_by_fault.get(key, 0) + 1
        skipped: dict[str, int] = {}
        for venue in self.venues:
            for reason, n in counters[venue]["skipped"].items():
                skipped[reason] = skipped.get(reason, 0) + n
        leftovers = [p.name for p in Path("/dev/shm").iterdir() if p.name == self.board_name]
        rss = rss_summary(self.rss_samples, self.steady_from_s or 0.0)
        failed = [line.strip() for line in log_lines if " FAILED: " in line]
        tracebacks = sum("Traceback (most recent call last)" in line for line in log_lines)
        crashes = [line.strip() for line in log_lines if "died (" in line and "killed by signal 9" not in line]
        return {
            "verdict": {"processes_failed": len(failed), "tracebacks_in_logs": tracebacks,
                        "unexpected_deaths": len(crashes), "rss_flat": all(r["flat"] for r in rss.values()),
                        "rss_not_flat": sorted(name for name, r in rss.items() if not r["flat"]),
                        "done": not failed and not tracebacks and all(r["flat"] for r in rss.values())},
            "failed_lines": failed[:20],
            "unexpected_death_lines": crashes[:20],
            "traceback_excerpts": traceback_excerpts(log_lines),
            "rss_mb": rss,
            "rss_steady_from_s": self.steady_from_s,
            "hostile_faults": list(self.hostile),
            "hostile": self.hostile_figures(counters, log_lines),
            "minutes": self.minutes,
            "supervisor_exit_status": returncode,
            "faults_injected": self.injected,
            "children_killed": {name: self.kills.count(name) for name in sorted(set(self.kills))},
            "restarts_reported": sum("died (" in line for line in log_lines),
            "reconnects": sum(counters[v]["reconnects"] for v in self.venues),
            "rows_invalidated_gaps": sum(counters[v]["gaps"] for v in self.venues),
            "checksum_failures": sum(counters[v]["checksum_failures"] for v in self.venues),
            "book_resyncs": sum(counters[v]["resyncs"] for v in self.venues),
            "frames_skipped_by_reason": skipped,
            "parse_errors": sum(counters[v]["parse_errors"] for v in self.venues),
            "opportunities_opened": len(opens),
            "opportunities_from_untrusted_rows": untrusted,
            "quirks": list(self.quirks),
            "feed_deaths": len(self.deaths),
            "death_to_rows_untrusted_ms": {"n": len(self.reaction_ms),
                                           "p50": sorted(self.reaction_ms)[len(self.reaction_ms) // 2]
                                           if self.reaction_ms else None,
                                           "max": max(self.reaction_ms) if self.reaction_ms else None,
                                           "still_live_after_1_s": self.reaction_timeouts},
            "untrusted_by_fault": untrusted_by_fault,
            "process_usage_start": start_usage,
            "process_usage_end": end_usage,
            "shared_memory_left": leftovers,
            "note": "counters of restarted feeds start again from the values on the board (rows and slots persist)",
            "rss_samples": {name: [[round(t, 1), u[name]["pid"], u[name]["rss_mb"]] for t, u in self.rss_samples
                                   if name in u] for name in rss},          # written to the file, not printed
        }


def traceback_excerpts(log_lines: list[str], most: int = 5) -> list[str]:
    """The first few tracebacks of the pipeline's output, each up to its exception line."""
    out = []
    for i, line in enumerate(log_lines):
        if "Traceback (most recent call last)" in line:
            end = next((j for j in range(i + 1, min(i + 80, len(log_lines)))
                        if log_lines[j][:1] not in (" ", "\t") and "Traceback" not in log_lines[j]), i)
            out.append("".join(log_lines[max(i - 1, 0):end + 1])[-3000:])
            if len(out) >= most:
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Soak the pipeline against a misbehaving simulator.")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-every", type=float, default=3.0, help="mean seconds between faults")
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between SIGKILLs of a child")
    parser.add_argument("--quirks", default=",".join(QUIRK_NAMES),
                        help=f"simulator quirks to switch on, comma-separated (default: all: {','.join(QUIRK_NAMES)}; "
                             "'' for none)")
    parser.add_argument("--hostile", default=",".join(HOSTILE_NAMES),
                        help=f"hostile faults every venue stages, comma-separated (default: all: "
                             f"{','.join(HOSTILE_NAMES)}; '' for none)")
    args = parser.parse_args()
    quirks = tuple(q for q in args.quirks.split(",") if q)
    hostile = tuple(h for h in args.hostile.split(",") if h)
    try:
        Hostile.named(hostile)                                # unknown names: an error before anything starts
    except ValueError as exc:
        parser.error(str(exc))
    figures = asyncio.run(Soak(args.minutes, args.seed, args.fault_every, args.kill_every, quirks, hostile).run())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "soak.json").write_text(json.dumps(figures, indent=2))
    print(f"results: {RESULTS_DIR / 'soak.json'}")
    figures.pop("rss_samples")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
