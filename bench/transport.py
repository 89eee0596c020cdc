"""Cross-process quote hand-off: the quote board against the usual IPC.

Why: the pipeline's central bet is that feeds publish into a shared-memory
board guarded by per-row seqlocks and the detector reads it in place, instead
of serialising every quote through a queue or a broker. This benchmark puts a
number on that bet on this machine, with the pipeline's own ``RowWriter``,
``RowReader`` and ``Doorbell``:

* ``board_spin``     the board, reader spinning on the row's seq word;
* ``board_doorbell`` the board, reader spins 50 µs after the last change and
  then blocks on the eventfd; the writer calls ``ring_if_sleeping`` after
  every write (what the feed and detector do);
* ``board_doorbell_ahead`` the same, and the writer also calls
  ``ring_ahead`` just before it writes, so the reader's wake-up overlaps the
  writer's publish (what a feed does when it calls it as a frame arrives);
* ``mp_queue``       ``multiprocessing.Queue`` (pickled tuples);
* ``os_pipe``        ``os.pipe`` carrying one orjson line per quote;
* ``os_pipe_row``    the same pipe carrying what a board row carries (status, the levels as
  given, exchange / receive / publish times, update count, confirmed time, venue and
  instrument ids, gap and checksum counts: the writer takes ``time.time_ns()`` and counts
  updates as ``RowWriter.write`` does), so its writer does the work the board's does;
* ``redis``          Redis pub/sub on loopback (a private ``redis-server``).

One writer process and one reader process per variant run, both forked.
The writer runs on core 0 and the reader on core 1 (``--pin``), where the
shipped configs put the feeds and the detector, so every variant's wake-up
crosses cores the same way; ``--pin none`` leaves placement to the scheduler,
which on this VM tends to queue the woken reader behind the writer on its own
core (then a wake-up cannot overlap anything the writer still does).
Every quote carries the writer's ``time.perf_counter_ns()`` taken just before
it publishes (CLOCK_MONOTONIC, one clock for the whole machine); the reader
subtracts it from its own clock once it holds the quote. The writer also
notes the moment its message is ready (the row written, the line or the
tuple built) just before it hands it over, so each quote's latency splits
into the writer's own cold publish (stamp to ready) and the hand-off (ready
to the reader holding it: for the board the ring, the wake-up and the read;
for the pipe the write, the wake-up, the read and the decode). The board's reader holds the
quote once it has read the row's head (``RowReader.read_top``: the best levels, the times and
the status, what the pipes carry), not the deeper levels. Paced phase: about
1 quote/ms, which lets the writer sleep between quotes as a feed does, so the
latencies include cold caches and wake-ups. Blast phase: the writer publishes
as fast as it can for ``--blast-s``; for the board the reader can only see
the latest value, so we report both the writer's publish rate and the
distinct updates the reader saw. Variants run round-robin, several rounds,
so that noise from other work on the machine spreads over all of them; the
tables report medians over rounds.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import time
import uuid

import orjson

from bench._common import BusyMeter, latency_summary, machine_info, markdown_table, median, ratio, write_results
from pipeline.board import Board, Doorbell, RowReader, RowStatus, RowWriter, TornReadError

CTX = mp.get_context("fork")
VARIANTS = ("board_spin", "board_doorbell", "board_doorbell_ahead", "mp_queue", "os_pipe", "os_pipe_row", "redis")
BLAST = 1 << 40          # tags at or above this are blast quotes
PACED_END = -1
BLAST_END = -2
LIVE = int(RowStatus.LIVE)
SPIN_NS = 50_000         # doorbell reader: spin this long after the last change
HARD_LIMIT_S = 120.0     # a child gives up after this long (a peer died)


def quote(tag: int, stamp: int) -> tuple:
    """The same top-of-book quote for every transport: tag, stamp, bid, bid qty, ask, ask qty."""
    px = 65000.0 + (tag % 1000) * 0.1
    return (tag, stamp, px, 1.25, px + 0.1, 0.75)


# ---------------------------------------------------------------- channels
# Each transport is a pair of functions built in the child after fork:
# send(tag) for the writer, and a receive loop that calls on_quote(tag, stamp, now).

# Every send(tag) returns (stamp, ready): the stamp the quote carries, and the moment the message was
# ready to hand over (the row written; the line, tuple or message built).

def board_sender(res, doorbell: bool, ahead: bool = False):
    writer = RowWriter(res["board"], [0])
    write = writer.write
    perf = time.perf_counter_ns
    if doorbell:
        bell = Doorbell(res["board"].buf, res["efd"])
        ring = bell.ring_if_sleeping
        ring_ahead = bell.ring_ahead

        def send(tag):
            q = quote(tag, perf())
            if ahead:
                ring_ahead()
            write(0, LIVE, ((q[2], q[3]),), ((q[4], q[5]),), tag, q[1])
            ready = perf()
            ring()
            return q[1], ready
    else:
        def send(tag):
            q = quote(tag, perf())
            write(0, LIVE, ((q[2], q[3]),), ((q[4], q[5]),), tag, q[1])
            return q[1], perf()
    return send


def board_receive(res, doorbell: bool, on_quote, ready):
    reader = RowReader(res["board"])
    words = reader._words  # noqa: SLF001 - the poll reads the seq word directly, as the detector does
    word = reader.seq_words[0]
    idx = reader.codec.index
    i_tag, i_stamp = idx["exch_ts_ns"], idx["recv_ns"]
    read = reader.read_top                 # the head: best levels, times, status (what the pipes carry)
    perf = time.perf_counter_ns
    bell = Doorbell(res["board"].buf, res["efd"]) if doorbell else None
    last = words[word]
    ready.set()
    deadline = perf() + int(HARD_LIMIT_S * 1e9)
    last_activity = perf()
    polls = 0
    while True:
        if words[word] != last:
            try:
                last, v = read(0)
            except TornReadError:          # READ_RETRIES exhausted (writer preempted mid-write): count, look again
                key = "torn_" + res.get("phase", "paced")
                res[key] = res.get(key, 0) + 1
                continue
            now = perf()
            if on_quote(v[i_tag], v[i_stamp], now):
                return
            last_activity = now
            continue
        if bell is None:
            polls += 1
            if polls & 0xFFFFF == 0 and perf() > deadline:
                return
            continue
        now = perf()
        if now - last_activity < SPIN_NS:
            continue
        if now > deadline:
            return
        bell.prepare_sleep()
        if words[word] != last:
            bell.cancel_sleep()
            continue
        bell.sleep(50)
        last_activity = perf()


def queue_sender(res):
    put = res["queue"].put
    perf = time.perf_counter_ns

    def send(tag):
        q = quote(tag, perf())
        ready = perf()
        put(q)
        return q[1], ready
    return send


def queue_receive(res, on_quote, ready):
    get = res["queue"].get
    perf = time.perf_counter_ns
    ready.set()
    while True:
        q = get(timeout=HARD_LIMIT_S)
        if on_quote(q[0], q[1], perf()):
            return


def pipe_sender(res):
    os.close(res["pipe"][0])
    fd = res["pipe"][1]
    dumps = orjson.dumps
    write = os.write
    perf = time.perf_counter_ns

    def send(tag):
        q = quote(tag, perf())
        line = dumps(q) + b"\n"
        ready = perf()
        write(fd, line)
        return q[1], ready
    return send


def pipe_row_sender(res):
    """The pipe writer doing a board row's work: the same fields, its own publish time and update count."""
    os.close(res["pipe"][0])
    fd = res["pipe"][1]
    dumps = orjson.dumps
    write = os.write
    perf = time.perf_counter_ns
    time_ns = time.time_ns
    count = [0]

    def send(tag):
        q = quote(tag, perf())
        count[0] += 1
        line = dumps((LIVE, ((q[2], q[3]),), ((q[4], q[5]),), tag, q[1], time_ns(), count[0], q[1], 1, 1, 0, 0)) + b"\n"
        ready = perf()
        write(fd, line)
        return q[1], ready
    return send


def pipe_receiver(tag_at: int, stamp_at: int):
    """A reader of orjson lines from the pipe, handing (line[tag_at], line[stamp_at]) to ``on_quote``."""
    def receive(res, on_quote, ready):
        os.close(res["pipe"][1])
        fd = res["pipe"][0]
        loads = orjson.loads
        perf = time.perf_counter_ns
        pending = b""
        ready.set()
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                q = loads(line)
                if on_quote(q[tag_at], q[stamp_at], perf()):  # held once decoded, as for the board
                    return
    return receive


pipe_receive = pipe_receiver(0, 1)          # the quote tuple
pipe_row_receive = pipe_receiver(3, 4)      # everything a row carries: the tag and stamp sit after the levels


def redis_sender(res):
    import redis
    client = redis.Redis(host="127.0.0.1", port=res["redis_port"], socket_timeout=HARD_LIMIT_S)
    publish = client.publish
    channel = res["channel"]
    dumps = orjson.dumps
    perf = time.perf_counter_ns

    def send(tag):
        q = quote(tag, perf())
        message = dumps(q)
        ready = perf()
        publish(channel, message)
        return q[1], ready
    return send


def redis_receive(res, on_quote, ready):
    import redis
    client = redis.Redis(host="127.0.0.1", port=res["redis_port"], socket_timeout=HARD_LIMIT_S)
    pubsub = client.pubsub()
    pubsub.subscribe(res["channel"])
    while True:                                    # wait until the server confirms the subscription
        msg = pubsub.get_message(timeout=5.0)
        if msg and msg["type"] == "subscribe":
            break
    loads = orjson.loads
    perf = time.perf_counter_ns
    ready.set()
    for msg in pubsub.listen():
        if msg["type"] != "message":
            continue
        q = loads(msg["data"])
        if on_quote(q[0], q[1], perf()):
            break
    pubsub.close()
    client.close()


def make_sender(variant, res):
    if variant == "board_spin":
        return board_sender(res, False)
    if variant == "board_doorbell":
        return board_sender(res, True)
    if variant == "board_doorbell_ahead":
        return board_sender(res, True, ahead=True)
    return {"mp_queue": queue_sender, "os_pipe": pipe_sender, "os_pipe_row": pipe_row_sender,
            "redis": redis_sender}[variant](res)


def receive(variant, res, on_quote, ready):
    if variant.startswith("board_"):
        return board_receive(res, variant != "board_spin", on_quote, ready)
    return {"mp_queue": queue_receive, "os_pipe": pipe_receive, "os_pipe_row": pipe_row_receive,
            "redis": redis_receive}[variant](res, on_quote, ready)


# ---------------------------------------------------------------- processes

def pin(cpu):
    """Run this process on ``cpu`` only (None: wherever the scheduler puts it)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def writer_main(variant, res, opts, ready, acks, results):
    pin(opts["pin"][0])
    send = make_sender(variant, res)
    perf = time.perf_counter_ns
    latest_value = variant.startswith("board_")
    ready.wait(30)
    period = int(1e9 / opts["rate"])
    next_t = perf()
    warmup = opts["warmup"]
    publish = []                                   # the writer's own cost per paced quote
    ready_at = {}                                  # tag -> (stamp, ready, hand-over call returned)
    for tag in range(warmup + opts["paced"]):
        now = perf()
        if next_t > now:
            time.sleep((next_t - now) / 1e9)
            next_t += period
        else:
            next_t = now + period                  # late: never burst to catch up
        t0 = perf()
        stamp, ready = send(tag)
        done = perf()                              # the hand-over call (ring, write, put) has returned
        if tag >= warmup:
            publish.append(done - t0)
            ready_at[tag] = (stamp, ready, done)
    _finish(send, PACED_END, acks[0], latest_value)
    count = 0
    t0 = perf()
    end = t0 + int(opts["blast_s"] * 1e9)
    while True:
        send(BLAST + count)
        count += 1
        if count & 63 == 0 and perf() >= end:
            break
    elapsed = (perf() - t0) / 1e9
    _finish(send, BLAST_END, acks[1], latest_value)
    publish.sort()
    results.put(("writer", {"ready_at": ready_at, "blast_sent": count, "blast_s": elapsed,
                            "publish_per_s": count / elapsed,
                            "writer_send_p50_us": publish[len(publish) // 2] / 1e3 if publish else float("nan")}))


def _finish(send, tag, ack, latest_value):
    """Send an end marker and wait for the reader; a board row may be overwritten, so repeat it there."""
    send(tag)
    deadline = time.monotonic() + HARD_LIMIT_S
    while not ack.wait(0.002 if latest_value else 1.0):
        if time.monotonic() > deadline:
            return
        if latest_value:
            send(tag)


def reader_main(variant, res, opts, ready, acks, results):
    pin(opts["pin"][1])
    warmup = opts["warmup"]
    lat: list[int] = []
    seen_at: dict[int, int] = {}
    st = {"paced_seen": 0, "blast_seen": 0, "blast_first": 0, "blast_last": 0, "t0": 0, "cpu0": 0.0,
          "cpu_pct": float("nan"), "ended_paced": False}

    def on_quote(tag, stamp, now):
        if tag >= BLAST:
            if not st["blast_seen"]:
                st["blast_first"] = now
            st["blast_seen"] += 1
            st["blast_last"] = now
        elif tag >= 0:
            st["paced_seen"] += 1
            if tag == warmup:
                st["t0"], st["cpu0"] = now, time.process_time()
            if tag >= warmup:
                lat.append(now - stamp)
                seen_at[tag] = now
        elif tag == PACED_END:
            if not st["ended_paced"]:
                st["ended_paced"] = True
                res["phase"] = "blast"
                if st["t0"]:
                    st["cpu_pct"] = 100.0 * (time.process_time() - st["cpu0"]) / ((now - st["t0"]) / 1e9)
                acks[0].set()
        elif tag == BLAST_END:
            acks[1].set()
            return True
        return False

    receive(variant, res, on_quote, ready)
    span = (st["blast_last"] - st["blast_first"]) / 1e9
    out = latency_summary(lat)
    out.update({
        "seen_at": seen_at,
        "paced_seen": len(lat),                    # distinct paced quotes seen after the warm-up
        "paced_sent": opts["paced"],
        "reader_cpu_pct": st["cpu_pct"],
        "blast_seen": st["blast_seen"],
        "seen_per_s": (st["blast_seen"] - 1) / span if span > 0 else float("nan"),
        "torn_paced": res.get("torn_paced", 0),          # TornReadError raised by read_with_seq
        "torn_blast": res.get("torn_blast", 0),
    })
    results.put(("reader", out))


def run_variant(variant, opts, redis_port):
    """One writer/reader pair for one transport; returns the merged result dict."""
    res = {}
    board = None
    try:
        if variant.startswith("board_"):
            board = Board.create(f"bench-{uuid.uuid4().hex[:12]}", n_rows=1, depth=opts["depth"], n_procs=1)
            if hasattr(board, "assign_lane"):
                board.assign_lane([0], 0)          # the writer logs its publishes, as a feed does
            res["board"] = board
            res["efd"] = Doorbell.create_fd()
        elif variant == "mp_queue":
            res["queue"] = CTX.Queue(maxsize=4096)
        elif variant in ("os_pipe", "os_pipe_row"):
            res["pipe"] = os.pipe()
        elif variant == "redis":
            res["redis_port"] = redis_port
            res["channel"] = f"bench-{uuid.uuid4().hex[:8]}"
        ready = CTX.Event()
        acks = (CTX.Event(), CTX.Event())
        results = CTX.Queue()
        reader = CTX.Process(target=reader_main, args=(variant, res, opts, ready, acks, results), daemon=True)
        writer = CTX.Process(target=writer_main, args=(variant, res, opts, ready, acks, results), daemon=True)
        reader.start()
        writer.start()
        if "pipe" in res:
            os.close(res["pipe"][0])
            os.close(res["pipe"][1])
        merged = {}
        try:
            for _ in range(2):
                who, data = results.get(timeout=opts["warmup"] / 1e3 + opts["paced"] / opts["rate"] * 3 + 60)
                merged.update(data)
        except Exception as exc:  # noqa: BLE001 - reported, the round goes on
            merged["error"] = f"{type(exc).__name__}: {exc}"
        ready_at, seen_at = merged.pop("ready_at", {}), merged.pop("seen_at", {})
        if ready_at and seen_at:
            publish = latency_summary([ready - stamp for stamp, ready, _ in ready_at.values()])
            handoff = latency_summary([seen_at[t] - ready_at[t][1] for t in seen_at if t in ready_at])
            call = latency_summary([done - ready for _, ready, done in ready_at.values()])
            after = latency_summary([seen_at[t] - ready_at[t][2] for t in seen_at if t in ready_at])
            merged.update({"publish_p50_us": publish["p50_us"], "handoff_p50_us": handoff["p50_us"],
                           "handoff_p99_us": handoff["p99_us"], "call_p50_us": call["p50_us"],
                           "after_call_p50_us": after["p50_us"]})
        for proc in (writer, reader):
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
        return merged
    finally:
        if board is not None:
            board.destroy()
            os.close(res["efd"])


# ---------------------------------------------------------------- redis server

def start_redis():
    """A private redis-server on a free loopback port, or (None, reason)."""
    exe = shutil.which("redis-server")
    if exe is None:
        return None, None, "redis-server not installed (apt-get install -y redis-server)"
    try:
        import redis
    except ImportError:
        return None, None, "redis-py not installed (pip install redis)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            version = client.info("server").get("redis_version", "?")
            client.close()
            return proc, port, (f"redis-server {version}, redis-py {redis.__version__}, "
                                f"hiredis {redis.utils.HIREDIS_AVAILABLE}")
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.terminate()
    proc.wait(5)
    return None, None, "redis-server did not answer on loopback"


# ---------------------------------------------------------------- main

def summarize(rounds: dict[str, list[dict]]) -> dict[str, dict]:
    keys = ("p50_us", "p99_us", "p999_us", "max_us", "writer_send_p50_us", "publish_p50_us", "handoff_p50_us",
            "handoff_p99_us", "call_p50_us", "after_call_p50_us", "reader_cpu_pct", "publish_per_s", "seen_per_s")
    out = {}
    for variant, runs in rounds.items():
        ok = [r for r in runs if "error" not in r]
        out[variant] = {k: median([r.get(k) for r in ok]) for k in keys}
        out[variant]["rounds"] = len(ok)
        out[variant]["torn_paced"] = sum(r.get("torn_paced", 0) for r in ok)
        out[variant]["torn_blast"] = sum(r.get("torn_blast", 0) for r in ok)
        out[variant]["paced_seen_pct"] = median([100.0 * r["paced_seen"] / r["paced_sent"] for r in ok]) if ok else None
    return out


def report(summary: dict, notes: list[str]) -> str:
    rows = []
    for v, s in summary.items():
        rows.append([v, s["p50_us"], s["p99_us"], s["p999_us"], s["max_us"], s["writer_send_p50_us"],
                     s["paced_seen_pct"], s["reader_cpu_pct"], s["publish_per_s"], s["seen_per_s"], str(s["rounds"])])
    text = ["One-way latency at about 1 quote/ms (µs; median over rounds of each round's percentile)", "",
            markdown_table(["variant", "p50", "p99", "p99.9", "max", "writer send p50", "seen %", "reader CPU %",
                            "blast: writer publish/s", "blast: reader sees/s", "rounds"], rows), ""]
    split_rows = [[v, s["p50_us"], s["publish_p50_us"], s["handoff_p50_us"], s["handoff_p99_us"], s["call_p50_us"],
                   s["after_call_p50_us"]] for v, s in summary.items()]
    text += ["Where the one-way time goes (µs; median over rounds): the writer's own publish (stamp -> message "
             "ready: for the board the row written, with a ring-ahead before it) and the hand-off (ready -> the "
             "reader holds it), which splits into the writer's hand-over call (ring, write, put, publish) and "
             "what follows it (the wake-up and the read; negative when the reader already holds it)", "",
             markdown_table(["variant", "one-way p50", "publish p50", "hand-off p50", "hand-off p99",
                             "hand-over call p50", "after the call p50"], split_rows), ""]
    ratio_rows = []
    q = summary.get("mp_queue", {})
    r = summary.get("redis", {})
    pipe = summary.get("os_pipe", {})
    for v, s in summary.items():
        ratio_rows.append([v, ratio(pipe.get("p50_us"), s["p50_us"]), ratio(pipe.get("handoff_p50_us"),
                                                                            s["handoff_p50_us"]),
                           ratio(q.get("p50_us"), s["p50_us"]), ratio(r.get("p50_us"), s["p50_us"]),
                           ratio(q.get("p99_us"), s["p99_us"]), ratio(r.get("p99_us"), s["p99_us"])])
    text += ["How many times lower than os.pipe / mp.Queue / Redis (ratio of medians; above 1: lower)", "",
             markdown_table(["variant", "p50 vs os.pipe", "hand-off p50 vs os.pipe", "p50 vs mp.Queue",
                             "p50 vs Redis", "p99 vs mp.Queue", "p99 vs Redis"], ratio_rows)]
    torn = {v: (s["torn_paced"], s["torn_blast"]) for v, s in summary.items() if v.startswith("board_")}
    if torn:
        text += ["", "RowReader.read_with_seq gave up (TornReadError) in the paced / blast phase, summed over rounds: "
                 + ", ".join(f"{v} {p} / {b}" for v, (p, b) in torn.items())]
    if notes:
        text += ["", *[f"note: {n}" for n in notes]]
    return "\n".join(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="round-robin rounds (default 5)")
    ap.add_argument("--paced", type=int, default=2000, help="paced quotes per variant run (default 2000)")
    ap.add_argument("--warmup", type=int, default=100, help="paced quotes not counted (default 100)")
    ap.add_argument("--rate", type=float, default=1000.0, help="paced quotes per second (default 1000)")
    ap.add_argument("--blast-s", type=float, default=1.0, help="unpaced blast duration, s (default 1.0)")
    ap.add_argument("--depth", type=int, default=5, help="board depth (default 5)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    ap.add_argument("--pin", default="0,1",
                    help="WRITER,READER cores for every variant, as the shipped configs place the feeds (core 0) "
                         "and the detector (core 1); 'none' leaves both to the scheduler (default 0,1)")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if args.pin == "none" or len(os.sched_getaffinity(0)) < 2:
        cores = (None, None)
    else:
        cores = tuple(int(c) for c in args.pin.split(","))
    opts = {"paced": args.paced, "warmup": args.warmup, "rate": args.rate, "blast_s": args.blast_s,
            "depth": args.depth, "pin": cores}
    notes = []
    redis_proc = redis_port = None
    if "redis" in variants:
        redis_proc, redis_port, info = start_redis()
        if redis_proc is None:
            notes.append(f"redis skipped: {info}")
            variants.remove("redis")
        else:
            notes.append(info)
    machine = machine_info()
    meter = BusyMeter()
    rounds: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        for rnd in range(args.rounds):
            order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]   # rotate the start
            for variant in order:
                result = run_variant(variant, opts, redis_port)
                result["round"] = rnd
                rounds[variant].append(result)
                print(f"round {rnd} {variant:15} p50 {result.get('p50_us', float('nan')):8.1f} µs  "
                      f"p99 {result.get('p99_us', float('nan')):8.1f} µs  {result.get('error', '')}", flush=True)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(5)
    summary = summarize(rounds)
    machine["busy_cores_during_run"] = meter.busy_cores()
    text = report(summary, notes)
    print()
    print(text)
    path = write_results("transport", {"options": opts, "variants": variants, "summary": summary, "rounds": rounds,
                                       "notes": notes, "machine": machine, "table": text})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
