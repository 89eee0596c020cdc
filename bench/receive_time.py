"""How much earlier the feed's receive time is now than when the feed took the frame (issue 24, finding 3).

A WebSocket server in another process sends bybit-sized top-of-book frames over loopback; the feed's own link
(:func:`pipeline.feed.transport.open_link`) hands them to a consumer that spends ``--work-us`` on each (about what
the session costs a frame on this VM). For every frame the consumer notes the time it gets the frame, which is
what the receive time used to be, next to the receive time the link gives now:

* ``websockets``: the kernel's stamp of the read (``SO_TIMESTAMPNS``);
* ``websockets-read``: the same link with the stamp off (the time of the read, before parsing and queueing);
* ``picows``: the time of the read, taken in the callback of its first frame.

Scenarios: ``paced`` (one frame every ``--interval-ms``), ``burst`` (``--burst`` frames at once, then quiet),
``slow`` (bursts the consumer cannot keep up with: ``--work-us`` x 10). It prints p50 / p99 / max of
(taken - receive time) in µs per transport and scenario, and the per-read cost of ``recvmsg`` against ``recv``.

    .venv/bin/python -m bench.receive_time
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import time

from pipeline.feed.transport import _CMSG_SPACE, SO_TIMESTAMPNS, available, open_link

FRAME = ('{"topic":"orderbook.1.BTCUSDT","ts":%d,"type":"snapshot","data":{"s":"BTCUSDT","b":[["28165.07",'
         '"0.175231"]],"a":[["28165.08","0.996816"]],"u":%d,"seq":4281281856}}')


def serve(port_queue, scenario: str, n: int, interval_ms: float, burst: int) -> None:
    from websockets.asyncio.server import serve as ws_serve

    async def handler(ws):
        sent = 0
        while sent < n:
            k = burst if scenario != "paced" else 1
            for _ in range(min(k, n - sent)):
                await ws.send(FRAME % (time.time_ns() // 1_000_000, sent))
                sent += 1
            await asyncio.sleep(interval_ms / 1000 if scenario == "paced" else 0.5)
        await asyncio.sleep(2)

    async def main():
        async with ws_serve(handler, "127.0.0.1", 0, compression=None) as server:
            port_queue.put(server.sockets[0].getsockname()[1])
            await asyncio.sleep(120)
    asyncio.run(main())


async def measure(kind: str, port: int, n: int, work_ns: int) -> list[int]:
    link = await open_link("picows" if kind == "picows" else "websockets", f"ws://127.0.0.1:{port}", None, 5)
    if kind == "websockets-read":
        link.ws.stamp_source.stamped = False
    delays = []

    def on_frame(raw, recv_ns):
        taken = time.time_ns()                 # what the receive time used to be
        delays.append(taken - recv_ns)
        end = time.perf_counter_ns() + work_ns
        while time.perf_counter_ns() < end:
            pass
        if len(delays) >= n:
            link.stop("done")
        return []
    await asyncio.wait_for(link.run(on_frame), 120)
    await link.close()
    return delays


def percentiles(values: list[int]) -> tuple[float, float, float]:
    v = sorted(values)
    return v[len(v) // 2] / 1e3, v[int(len(v) * 0.99)] / 1e3, v[-1] / 1e3


def read_cost(reads: int = 20_000) -> tuple[float, float]:
    """µs per read of 200 bytes: ``recv`` against ``recvmsg`` with room for the stamp (option on)."""
    server = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(server.getsockname())
    b, _ = server.accept()
    a.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    out = []
    for use_msg in (False, True):
        total = 0
        for _ in range(reads // 100):
            b.sendall(b"x" * 200 * 100)
            time.sleep(0.001)
            start = time.perf_counter_ns()
            for _ in range(100):
                if use_msg:
                    a.recvmsg(200, _CMSG_SPACE)
                else:
                    a.recv(200)
            total += time.perf_counter_ns() - start
        out.append(total / reads / 1e3)
    for s in (a, b, server):
        s.close()
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--interval-ms", type=float, default=1.0)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--work-us", type=float, default=20.0)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    kinds = ["websockets", "websockets-read"] + (["picows"] if available("picows") else [])
    print(f"{'transport':16} {'scenario':7} {'p50 µs':>10} {'p99 µs':>10} {'max µs':>10}   (taken - receive time)")
    for scenario in ("paced", "burst", "slow"):
        for kind in kinds:
            queue = ctx.Queue()
            server = ctx.Process(target=serve, args=(queue, scenario, args.frames, args.interval_ms, args.burst),
                                 daemon=True)
            server.start()
            try:
                port = queue.get(timeout=20)
                work = args.work_us * (10 if scenario == "slow" else 1)
                delays = asyncio.run(measure(kind, port, args.frames, int(work * 1000)))
            finally:
                server.terminate()
                server.join()
            p50, p99, top = percentiles(delays)
            print(f"{kind:16} {scenario:7} {p50:10.1f} {p99:10.1f} {top:10.1f}")
    plain, stamped = read_cost()
    print(f"per read of 200 bytes: recv {plain:.2f} µs, recvmsg with the stamp {stamped:.2f} µs "
          f"(+{stamped - plain:.2f} µs); time.time_ns() {timeit_clock():.3f} µs")


def timeit_clock() -> float:
    import timeit
    return timeit.timeit(time.time_ns, number=1_000_000)


if __name__ == "__main__":
    main()
