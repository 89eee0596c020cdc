"""The decisions over NATS (``bridge.publish_decisions``): ``run.py`` with the simulator and a real nats-server
started by the test; a nats-py subscriber gets every record of the events file, byte for byte and in order;
a server that is not there holds up nothing and is said once; a server lost mid-run costs the decisions of the
outage, counted, and publishing resumes when it is back."""
from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.output.writers import BATCH_RECORDS
from tests.conftest import (
    REPO,
    complete_lines,
    complete_records,
    demo_config,
    end_run,
    nats_connect,
    run_until,
    wait_until,
    write_config,
)
from tests.integration.test_bridge import NatsServer, free_port

pytestmark = pytest.mark.integration


def opens(path: Path) -> int:
    return sum(r["event"] == "open" for r in complete_records(path))


class Subscriber:
    """A nats-py client on a thread of its own, subscribed to ``subject`` before :meth:`start` returns;
    :attr:`messages` holds ``(subject, data)`` in arrival order."""

    def __init__(self, url: str, subject: str):
        self.url = url
        self.subject = subject
        self.messages: list[tuple[str, bytes]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.nc = None

    def start(self) -> Subscriber:
        self.thread.start()
        self.call(self._subscribe())
        return self

    def call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _subscribe(self) -> None:
        async def received(msg):
            self.messages.append((msg.subject, msg.data))
        self.nc = await nats_connect(self.url, connect_timeout=2, max_reconnect_attempts=1)
        await self.nc.subscribe(self.subject, cb=received)
        await self.nc.flush(5)          # the server has the subscription before the run starts

    def stop(self) -> None:
        """Close the client and its loop; call it while the server is up (nats-py's ``close`` on a client whose
        server has gone races the client's own reconnection, and may end cancelled)."""
        if self.loop.is_closed():
            return
        if self.nc is not None:
            self.call(self.nc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def decisions_config(tmp_path: Path, board_name: str, url: str) -> tuple[Path, Path]:
    out = tmp_path / "opps.jsonl"
    raw = demo_config(board_name, out)
    raw["bridge"] = {"nats_url": url, "box": "tokyo", "publish_decisions": True}
    return write_config(tmp_path / "c.yaml", raw), out


def test_every_record_of_the_events_file_arrives_on_nats_with_the_same_bytes_in_order(tmp_path, board_name):
    server = NatsServer(tmp_path).start()
    subscriber = None
    try:
        subscriber = Subscriber(server.url, "decisions.>").start()
        config, out = decisions_config(tmp_path, board_name, server.url)
        result = run_until(lambda stdout: opens(out) >= 3, "--config", str(config), timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        lines = complete_lines(out)
        assert len(lines) == len(out.read_bytes().splitlines()) and opens(out) >= 3
        # each batch was flushed (the server held it) before the output process exited
        wait_until(lambda: len(subscriber.messages) >= len(lines), 10,
                   message=f"{len(lines)} decisions on NATS (got {len(subscriber.messages)})")
        subscriber.call(subscriber.nc.flush(5))         # anything still on its way is read before comparing
        assert [data for _, data in subscriber.messages] == lines
        assert {subject for subject, _ in subscriber.messages} == {"decisions.tokyo"}
        run_id = re.search(r"supervisor: run (\S+): events in ", result.stdout).group(1)
        assert f'"run_id":"{run_id}"'.encode() in lines[0]
        assert "OUTPUT DROPPED" not in result.stdout
        assert "publishing decisions on decisions.tokyo at " + server.url in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        if subscriber is not None:
            subscriber.stop()
        server.kill()
    assert not (Path("/dev/shm") / board_name).exists()


def test_a_nats_server_down_at_start_holds_up_nothing_and_is_said_once(tmp_path, board_name):
    url = f"nats://127.0.0.1:{free_port()}"         # held by the test, never listening: connections are refused
    config, out = decisions_config(tmp_path, board_name, url)
    result = run_until(lambda stdout: opens(out) >= 2, "--config", str(config), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = complete_lines(out)
    assert opens(out) >= 2
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    name = f"NATS decisions (decisions.tokyo at {url})"
    said = [line for line in result.stderr.splitlines() if name in line and "until it answers" in line]
    assert len(said) == 1, result.stderr[-3000:]
    assert f"cannot connect to NATS at {url}" in said[0] and "decisions are dropped (and counted)" in said[0]
    # every record went to the file and none to NATS: the summary counts each one as not published
    assert f"OUTPUT DROPPED (the disk, a pipe or NATS could not take them; detection went on): " \
           f"{len(lines)} records not published on NATS" in result.stdout
    assert not (Path("/dev/shm") / board_name).exists()


def test_a_lost_server_costs_the_decisions_of_the_outage_only_counted_and_publishing_resumes(tmp_path, board_name):
    server = NatsServer(tmp_path).start()
    subscribers = [Subscriber(server.url, "decisions.>").start()]
    config, out = decisions_config(tmp_path, board_name, server.url)
    stdout, stderr = open(tmp_path / "stdout", "w+"), open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", str(config)], stdout=stdout,
                            stderr=stderr, cwd=tmp_path)
    try:
        wait_until(lambda: subscribers[0].messages and opens(out) >= 2, 60, message="decisions on NATS")
        subscribers[0].stop()           # while its server is up: see Subscriber.stop
        server.kill()
        at_kill = len(complete_lines(out))
        wait_until(lambda: len(complete_lines(out)) >= at_kill + 3, 60, message="decisions made while NATS is down")
        server.start()
        subscribers.append(Subscriber(server.url, "decisions.>").start())
        wait_until(lambda: subscribers[1].messages, 60, message="decisions on NATS again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        end_run(proc)
        subscribers[-1].stop()
        server.kill()
    stdout.seek(0)
    stderr.seek(0)
    printed, logged = stdout.read(), stderr.read()
    assert "Traceback" not in logged and "Traceback" not in printed
    lines = complete_lines(out)
    received = [data for subscriber in subscribers for _, data in subscriber.messages]
    # what arrived is the file's records, in the file's order, with the outage's (and the reconnection's) missing
    at = {line: i for i, line in enumerate(lines)}
    positions = [at[data] for data in received]
    assert positions == sorted(set(positions))
    assert positions[-1] >= at_kill
    dropped = int(re.search(r"OUTPUT DROPPED \([^)]*\): (\d+) records not published on NATS", printed).group(1))
    # counted: at most what did not arrive (published while no subscriber was back yet is gone uncounted), plus
    # the one batch the server may have taken as the connection broke, before it could confirm it
    assert 0 < dropped <= len(lines) - len(received) + BATCH_RECORDS
    name = f"NATS decisions (decisions.tokyo at {server.url})"
    assert sum(name in line and "lost the NATS connection" in line and "until it is back" in line
               for line in logged.splitlines()) == 1
    assert f"publishing decisions on decisions.tokyo at {server.url} again" in logged
    assert not (Path("/dev/shm") / board_name).exists()
