"""Box to box through NATS on loopback, against the local board hop and raw NATS, in the same run.

Why: a bridged row must cost little next to the cross-region delay it carries
(74-237 ms round trips), and a burst must never make the bridge fall behind
(conflation: the latest state wins). This puts numbers on both on this machine.

Set-up, all real: a private ``nats-server`` on 127.0.0.1; board A with ``--rows``
rows written by a writer process; the pipeline's own bridge process publishing
board A (box ``a``); a second bridge process mirroring those rows into board B
(box ``b``); and a local reader on board A that waits on the doorbell as the
detector does. The writer stamps ``recv_ns`` just before each write, so

* ``bridge``: row written on A -> the same state written on B (bridge B's
  ``remote_receive_to_written`` histogram: scan, encode, NATS, decode, write);
* ``local``:  row written on A -> seen by the local reader (``publish_ns`` ->
  seen, the detector's ``publish_to_seen`` hop)

start at the same write. The publishing bridge wakes on board A's doorbell as
its second sleeper (the writer rings it as a feed does) and follows the writer's
change lane. Phases per round: idle (bridge CPU with nothing to
send), steady (``--rate`` rows/s), burst (``--burst-rate`` rows/s, default
50 k), then quiet while the parent times how long B takes to hold A's final
state of every row. Then, on the same server, ``raw``: one nats-py process
publishes messages of a bridged row's size at ``--rate`` (stamped just before
``publish``) and another receives them in a subscription callback (stamp ->
callback): what NATS and its Python client cost with nothing of ours around
them, the floor the bridge is compared with. Rounds repeat so noise spreads over
all of them; tables give medians over rounds and ratios. Raw percentiles are
given exact and, to compare like with like, as the bucket upper bounds of the
board's log histogram the bridge figures come from.

    python -m bench.bridge [--rounds 3] [--rows 20] [--rate 2000] [--burst-rate 50000] [--profile PREFIX]

``--profile PREFIX`` runs both bridges under cProfile (``PREFIX-a-<round>.prof``, ``PREFIX-b-...``;
``python -m pstats`` reads them): where a bridged row's time goes inside the two processes.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sysconfig
import time
import uuid
from pathlib import Path

import psutil

from bench._common import BusyMeter, machine_info, markdown_table, median, ratio, write_results
from pipeline.board import (
    HIST_BUCKETS,
    HOPS,
    Board,
    Doorbell,
    HistogramSnapshot,
    ProcessRole,
    ProcStats,
    RowReader,
    RowStatus,
    RowWriter,
    TornReadError,
    bucket_of,
    read_histogram,
)
from pipeline.bridge.codec import render_row
from pipeline.config import parse_config
from pipeline.runtime import ProcessSpec
from pipeline.supervisor.core import plan_rows

CTX = mp.get_context("fork")
LIVE = int(RowStatus.LIVE)
SPIN_NS = 50_000
PHASES = (("idle", 0), ("steady", None), ("burst", None))
RAW_SUBJECT = "bench.raw"
STAMP_DIGITS = 19


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nats(port: int) -> subprocess.Popen:
    binary = Path(sysconfig.get_path("scripts")) / "nats-server"
    server = subprocess.Popen([str(binary), "-a", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError as exc:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("nats-server did not start (pip install -e '.[bridge]')") from exc
            time.sleep(0.05)


# ---------------------------------------------------------------- child processes

def writer_main(board_name: str, depth: int, rows: int, efd: int, bridge_efd: int, schedule: list,
                stop_at_ns: int) -> None:
    """Writes the rows round robin at each phase's rate, logging them in its change lane and ringing both
    sleepers of the doorbell as a feed does; ``schedule``: [(start_ns, end_ns, rows_per_s)]."""
    board = Board.attach(board_name, depth)
    writer = RowWriter(board, list(range(rows)))
    write = writer.write
    ring = Doorbell(board.buf, efd, bridge_efd).ring_if_sleeping
    now = time.time_ns
    n = 0
    for start_ns, end_ns, rate in schedule:
        while now() < start_ns:
            time.sleep(0.0005)
        if not rate:
            continue
        interval_ns = 1e9 / rate
        batch = max(1, int(rate / 2000))        # writes per 0.5 ms tick at high rates
        due = float(start_ns)
        while True:
            t = now()
            if t >= end_ns:
                break
            if t < due:
                if due - t > 200_000:
                    time.sleep((due - t) / 1e9 / 2)
                continue
            for _ in range(batch):
                row = n % rows
                px = 1000.0 + row + (n % 100_000) * 1e-3
                write(row, LIVE, ((px, 1.0), (px - 0.01, 2.0)), ((px + 0.01, 1.0), (px + 0.02, 2.0)), 0, now())
                ring()
                n += 1
            due += interval_ns * batch
    while now() < stop_at_ns:
        time.sleep(0.01)
    writer = None
    board.close()


def local_reader_main(board_name: str, depth: int, rows: int, efd: int, stop_at_ns: int, out) -> None:
    """The detector's wait (spin 50 µs, then the doorbell); records (seen_ns, publish -> seen ns)."""
    board = Board.attach(board_name, depth)
    reader = RowReader(board)
    words = reader._words  # noqa: SLF001 - the poll reads seq words directly, as the detector does
    seq_words = reader.seq_words[:rows]
    i_publish = reader.codec.index["publish_ns"]
    bell = Doorbell(board.buf, efd)
    last = [words[w] for w in seq_words]
    samples = []
    now = time.time_ns
    last_activity = now()
    while True:
        changed = False
        for i, w in enumerate(seq_words):
            seq = words[w]
            if seq != last[i] and not seq & 1:
                try:
                    seq, v = reader.read_with_seq(i)
                except TornReadError:
                    continue
                t = now()
                last[i] = seq
                samples.append((t, t - v[i_publish]))
                changed = True
        t = now()
        if changed:
            last_activity = t
            continue
        if t > stop_at_ns:
            break
        if t - last_activity < SPIN_NS:
            continue
        bell.prepare_sleep()
        if any(words[w] != last[i] for i, w in enumerate(seq_words)):
            bell.cancel_sleep()
            continue
        bell.sleep(20)
        last_activity = now()
    out.send(samples)
    out.close()
    reader = None
    board.close()


def bridge_main(spec: ProcessSpec, config, local_rows, profile: str = "") -> None:
    """The pipeline's bridge process; under cProfile into ``profile`` (a file) when given."""
    from pipeline.bridge import process
    if not profile:
        process.main(spec, config, local_rows)
        return
    import cProfile
    profiler = cProfile.Profile()
    signal.signal(signal.SIGTERM, lambda *_: (profiler.disable(), profiler.dump_stats(profile), os._exit(0)))
    profiler.enable()
    process.run_bridge(spec, config, local_rows, _NoStop())


class _NoStop:
    """A stop the profiled bridge never sees set (SIGTERM dumps the profile and exits)."""

    def link(self, event) -> None:
        pass


def raw_subscriber_main(url: str, stop_at_ns: int, ready, out) -> None:
    """A nats-py subscription callback that records (seen_ns, stamp -> callback ns) of each message."""
    import asyncio

    import nats
    samples = []

    async def body():
        nc = await nats.connect(url)

        async def on_message(msg):
            t = time.time_ns()
            samples.append((t, t - int(msg.data[:STAMP_DIGITS])))
        await nc.subscribe(RAW_SUBJECT, cb=on_message)
        await nc.flush()
        ready.set()
        while time.time_ns() < stop_at_ns:
            await asyncio.sleep(0.05)
        await nc.close()
    asyncio.run(body())
    out.send(samples)
    out.close()


def raw_publisher_main(url: str, size: int, start_ns: int, end_ns: int, rate: float) -> None:
    """Publishes ``size``-byte messages at ``rate``, each stamped with the time just before its publish."""
    import asyncio

    import nats

    async def body():
        nc = await nats.connect(url)
        pad = b" " * max(0, size - STAMP_DIGITS)
        interval_ns = 1e9 / rate
        due = float(start_ns)
        while True:
            t = time.time_ns()
            if t >= end_ns:
                break
            if t < due:
                await asyncio.sleep((due - t) / 1e9)
                continue
            await nc.publish(RAW_SUBJECT, b"%019d" % time.time_ns() + pad)
            due += interval_ns
        await nc.flush()
        await nc.close()
    asyncio.run(body())


def bucketed(ns_values: list[int]) -> HistogramSnapshot:
    """The samples as the board's log histogram holds them (its percentiles: bucket upper bounds)."""
    buckets = [0] * HIST_BUCKETS
    for ns in ns_values:
        buckets[bucket_of(max(0, ns))] += 1
    return HistogramSnapshot(len(ns_values), sum(ns_values), max(ns_values, default=0), tuple(buckets))


def run_raw(url: str, size: int, seconds: float, rate: float) -> dict:
    """Raw nats-py publish -> subscription callback on the same server, ``size``-byte messages at ``rate``."""
    ready = CTX.Event()
    start = time.time_ns() + 1_000_000_000
    end = start + int(seconds * 1e9)
    receiver, sender = CTX.Pipe(duplex=False)
    subscriber = CTX.Process(target=raw_subscriber_main, args=(url, end + 500_000_000, ready, sender))
    subscriber.start()
    sender.close()
    if not ready.wait(15):
        subscriber.kill()
        raise SystemExit("the raw NATS subscriber did not start")
    publisher = CTX.Process(target=raw_publisher_main, args=(url, size, start, end, rate))
    publisher.start()
    samples = receiver.recv() if receiver.poll(seconds + 30) else []
    for p in (publisher, subscriber):
        p.join(10)
        if p.is_alive():
            p.kill()
    latencies = sorted(lat for seen, lat in samples if start <= seen < end)
    h = bucketed(latencies)
    return {"n": len(latencies), "message_bytes": size, "rate": rate,
            "p50_us": latencies[len(latencies) // 2] / 1e3 if latencies else float("nan"),
            "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1e3 if latencies
            else float("nan"),
            "bucket_p50_us": h.percentile_ns(0.5) / 1e3 if h.count else float("nan"),
            "bucket_p99_us": h.percentile_ns(0.99) / 1e3 if h.count else float("nan")}


# ---------------------------------------------------------------- one round

def make_configs(url: str, rows: int):
    instruments = [f"C{k:02d}/USDT" for k in range(rows)]
    config_a = parse_config({"venues": {"binance": {"instruments": instruments, "url": "wss://127.0.0.1:1"}},
                             "bridge": {"nats_url": url, "box": "a", "publish": True}})
    config_b = parse_config({"bridge": {"nats_url": url, "box": "b", "subscribe": {"a": {"binance": instruments}}}})
    return config_a, config_b


def states(reader: RowReader, rows: int) -> list | None:
    """(bid, status) of every row; None when a row was being written all along (look again)."""
    idx = reader.codec.index
    try:
        return [(v[idx["bid_px"]], v[idx["status"]]) for v in (reader.read(r) for r in range(rows))]
    except TornReadError:
        return None


def run_round(args, url: str) -> dict:
    rows, depth = args.rows, 5
    config_a, config_b = make_configs(url, rows)
    rows_a, rows_b = plan_rows(config_a), plan_rows(config_b)
    suffix = uuid.uuid4().hex[:8]
    name_a, name_b = f"bench-bridge-a-{suffix}", f"bench-bridge-b-{suffix}"
    board_a = Board.create(name_a, len(rows_a), depth, 3)
    board_b = Board.create(name_b, len(rows_b), depth, 1)
    board_a.assign_lane(list(range(rows)), 2)           # the writer's change lane (slot 2), as a feed's
    efd_a, efd_b, bridge_efd_a = Doorbell.create_fd(), Doorbell.create_fd(), Doorbell.create_fd()
    for fd in (efd_a, efd_b, bridge_efd_a):
        os.set_inheritable(fd, True)
    children = []
    try:
        spec_a = ProcessSpec(key="bridge", role=ProcessRole.BRIDGE, title="pipeline: bridge (bench a)", slot=1,
                             cores=(),
                             board_name=name_a, depth=depth, doorbell_fd=efd_a, supervisor_pid=os.getpid(),
                             bridge_doorbell_fd=bridge_efd_a)
        spec_b = ProcessSpec(key="bridge", role=ProcessRole.BRIDGE, title="pipeline: bridge (bench b)", slot=0,
                             cores=(),
                             board_name=name_b, depth=depth, doorbell_fd=efd_b, supervisor_pid=os.getpid(),
                             rows=tuple(r for r in rows_b if r.box))
        profiles = [f"{args.profile}-{box}-{suffix}.prof" if args.profile else "" for box in "ab"]
        bridge_a = CTX.Process(target=bridge_main, args=(spec_a, config_a, tuple(rows_a), profiles[0]))
        bridge_b = CTX.Process(target=bridge_main, args=(spec_b, config_b, (), profiles[1]))
        for p in (bridge_b, bridge_a):
            p.start()
            children.append(p)
        # wait until both are connected and B mirrors A's rows
        deadline = time.monotonic() + 15
        while not (int(board_a.procs[1]["connected"]) and int(board_b.procs[0]["connected"])):
            if time.monotonic() > deadline:
                raise SystemExit("bridges did not connect")
            time.sleep(0.05)
        t0 = time.time_ns() + 500_000_000
        schedule, bounds = [], []
        t = t0
        for name, _ in PHASES:
            length = {"idle": args.idle_s, "steady": args.steady_s, "burst": args.burst_s}[name]
            rate = {"idle": 0, "steady": args.rate, "burst": args.burst_rate}[name]
            schedule.append((t, t + int(length * 1e9), rate))
            bounds.append((name, t, t + int(length * 1e9), rate))
            t += int(length * 1e9)
        stop_at = t + int(args.settle_s * 1e9)
        receiver, sender = CTX.Pipe(duplex=False)
        writer = CTX.Process(target=writer_main, args=(name_a, depth, rows, efd_a, bridge_efd_a, schedule, stop_at))
        reader = CTX.Process(target=local_reader_main, args=(name_a, depth, rows, efd_a, stop_at, sender))
        for p in (reader, writer):
            p.start()
            children.append(p)
        sender.close()
        proc_a, proc_b = psutil.Process(bridge_a.pid), psutil.Process(bridge_b.pid)
        hop = HOPS[ProcessRole.BRIDGE].index("remote_receive_to_written")
        sent_hop = HOPS[ProcessRole.BRIDGE].index("remote_publish_to_written")   # from A's send stamp
        stats_a, stats_b = ProcStats(board_a, 1), ProcStats(board_b, 0)
        reader_a, reader_b = RowReader(board_a), RowReader(board_b)

        def snapshot():
            return {"hist": read_histogram(board_b, 0, hop), "sent": read_histogram(board_b, 0, sent_hop),
                    "cpu_a": sum(proc_a.cpu_times()[:2]),
                    "cpu_b": sum(proc_b.cpu_times()[:2]), "published": stats_a.get("scans"),
                    "received": stats_b.get("messages"),
                    "written_a": sum(int(board_a.rows[r]["update_count"]) for r in range(rows)),
                    "written_b": sum(int(board_b.rows[r]["update_count"]) for r in range(len(rows_b))),
                    "t": time.time_ns()}
        phases = {}
        for name, start, end, rate in bounds:
            while time.time_ns() < start:
                time.sleep(0.001)
            before = snapshot()
            while time.time_ns() < end:
                time.sleep(0.001)
            after = snapshot()
            seconds = (after["t"] - before["t"]) / 1e9
            h = after["hist"].minus(before["hist"])
            sent = after["sent"].minus(before["sent"])
            phases[name] = {
                "target_rows_per_s": rate,
                "written_a_per_s": (after["written_a"] - before["written_a"]) / seconds,
                "published_per_s": (after["published"] - before["published"]) / seconds,
                "received_per_s": (after["received"] - before["received"]) / seconds,
                "written_b_per_s": (after["written_b"] - before["written_b"]) / seconds,
                "bridge_p50_us": h.percentile_ns(0.5) / 1e3 if h.count else float("nan"),
                "bridge_p99_us": h.percentile_ns(0.99) / 1e3 if h.count else float("nan"),
                # the part after bridge A stamped the message (render, publish, NATS, B's parse and write)
                "sent_p50_us": sent.percentile_ns(0.5) / 1e3 if sent.count else float("nan"),
                "sent_p99_us": sent.percentile_ns(0.99) / 1e3 if sent.count else float("nan"),
                "bridge_n": h.count,
                "cpu_a_percent": (after["cpu_a"] - before["cpu_a"]) / seconds * 100,
                "cpu_b_percent": (after["cpu_b"] - before["cpu_b"]) / seconds * 100,
                "start_ns": start, "end_ns": end,
            }
            if name == "burst":
                # how long after the burst's last write B holds A's final state of every row
                settled = after["written_a"]
                while True:                      # the writer's last batch may end a little after the phase
                    time.sleep(0.002)
                    count = sum(int(board_a.rows[r]["update_count"]) for r in range(rows))
                    if count == settled:
                        break
                    settled = count
                end = time.time_ns() - 2_000_000
                final = None
                while final is None:             # the writer has stopped: a read is whole at once or soon
                    final = states(reader_a, rows)
                caught = None
                limit = time.time_ns() + 10_000_000_000
                while time.time_ns() < limit:
                    if states(reader_b, rows) == final:
                        caught = time.time_ns()
                        break
                    time.sleep(0.0005)
                phases[name]["caught_up_ms"] = (caught - end) / 1e6 if caught else float("nan")
        samples = receiver.recv() if receiver.poll(args.settle_s + 20) else []
        for _name, values in phases.items():
            local = sorted(lat for seen, lat in samples if values["start_ns"] <= seen < values["end_ns"])
            values["local_p50_us"] = local[len(local) // 2] / 1e3 if local else float("nan")
            values["local_p99_us"] = local[min(len(local) - 1, int(len(local) * 0.99))] / 1e3 if local else float("nan")
            values["local_n"] = len(local)
        for p in (writer, reader):
            p.join(30)
        # raw NATS on the same server, messages of a bridged row's size (row 0 as bridge A renders it)
        size = len(render_row("a", "binance", "C00/USDT", reader_a.read(0), reader_a.codec.index, depth,
                              time.time_ns()))
        phases["raw"] = run_raw(url, size, args.steady_s, args.rate)
        reader_a = reader_b = stats_a = stats_b = None
        return phases
    finally:
        for p in children:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in children:
            p.join(10)
            if p.is_alive():
                p.kill()
        board_a.destroy()
        board_b.destroy()
        for fd in (efd_a, efd_b, bridge_efd_a):
            os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2000.0, help="steady phase, rows/s")
    parser.add_argument("--burst-rate", type=float, default=50_000.0, help="burst phase, rows/s")
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--steady-s", type=float, default=5.0)
    parser.add_argument("--burst-s", type=float, default=3.0)
    parser.add_argument("--settle-s", type=float, default=2.0)
    parser.add_argument("--profile", default="", help="cProfile each bridge into PREFIX-{a,b}-<round>.prof")
    args = parser.parse_args()
    port = free_port()
    server = start_nats(port)
    meter = BusyMeter()
    rounds = []
    try:
        for n in range(args.rounds):
            rounds.append(run_round(args, f"nats://127.0.0.1:{port}"))
            print(f"round {n + 1}/{args.rounds} done", flush=True)
    finally:
        server.terminate()
        server.wait(5)

    def med(phase, key):
        return median([r[phase][key] for r in rounds])
    raw50, raw99 = med("raw", "bucket_p50_us"), med("raw", "bucket_p99_us")
    latency = [[phase, med(phase, "local_p50_us"), med(phase, "bridge_p50_us"), raw50,
                ratio(med(phase, "bridge_p50_us"), raw50),
                ratio(med(phase, "bridge_p50_us"), med(phase, "local_p50_us")), med(phase, "local_p99_us"),
                med(phase, "bridge_p99_us"), raw99, ratio(med(phase, "bridge_p99_us"), raw99),
                ratio(med(phase, "bridge_p99_us"), med(phase, "local_p99_us"))]
               for phase in ("steady", "burst")]
    throughput = [[phase, med(phase, "written_a_per_s"), med(phase, "published_per_s"), med(phase, "written_b_per_s"),
                   ratio(med(phase, "written_a_per_s"), med(phase, "published_per_s")),
                   med(phase, "cpu_a_percent"), med(phase, "cpu_b_percent")]
                  for phase in ("idle", "steady", "burst")]
    print()
    print(markdown_table(["phase", "local p50 µs", "bridge p50 µs", "raw NATS p50 µs", "bridge/raw p50",
                          "bridge/local p50", "local p99 µs", "bridge p99 µs", "raw NATS p99 µs", "bridge/raw p99",
                          "bridge/local p99"], latency))
    print()
    for phase in ("steady", "burst"):
        print(f"{phase}: of the bridge's p50 {med(phase, 'bridge_p50_us'):.1f} µs, from bridge A's send stamp to the "
              f"row written on B: p50 {med(phase, 'sent_p50_us'):.1f} µs, p99 {med(phase, 'sent_p99_us'):.1f} µs")
    print(f"raw NATS (nats-py publish -> subscription callback, {rounds[0]['raw']['message_bytes']}-byte messages "
          f"at {args.rate:.0f}/s, same server): exact p50 {med('raw', 'p50_us'):.1f} µs, "
          f"p99 {med('raw', 'p99_us'):.1f} µs; in the table as the histogram's bucket upper bounds, like the "
          f"bridge figures")
    print()
    print(markdown_table(["phase", "rows written on A /s", "rows published /s", "rows written on B /s",
                          "conflation (written/published)", "CPU bridge A %", "CPU bridge B %"], throughput))
    print()
    caught_up_ms = median([r['burst']['caught_up_ms'] for r in rounds])
    print(f"after the burst, B held A's final state of every row {caught_up_ms:.1f} ms "
          f"(median of {len(rounds)} rounds) after the last write; machine busy cores during the run: "
          f"{meter.busy_cores():.2f} of {os.cpu_count()}")
    write_results("bridge", {"machine": machine_info(), "args": vars(args), "rounds": rounds,
                             "busy_cores": meter.busy_cores()})


if __name__ == "__main__":
    main()
