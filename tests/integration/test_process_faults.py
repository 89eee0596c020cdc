"""Process-side faults: kill -9 of children and of the supervisor, signals during start-up."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest

from pipeline.board import Board
from pipeline.errors import BoardError
from tests.conftest import REPO, demo_config, run_cli, wait_for, write_config

pytestmark = pytest.mark.integration


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


def slot_pid(board_name: str, slot: int) -> int:
    try:
        board = Board.attach(board_name)
    except (BoardError, OSError):
        return 0
    try:
        return int(board.procs[slot]["pid"])
    finally:
        board.close()


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    return output


def test_killed_detector_is_restarted(tmp_path, board_name):
    out = tmp_path / "o.jsonl"
    config = write_config(tmp_path / "c.yaml", demo_config(board_name, out))
    proc = start(config)
    try:
        detector_slot = 2                                  # after the two feeds
        first = wait_for(lambda: slot_pid(board_name, detector_slot), 30, message="detector running")
        wait_for(lambda: out.exists() and out.read_bytes(), 30, message="the detector's first events")
        before = out.read_bytes()
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: (p := slot_pid(board_name, detector_slot)) and p != first, 15, message="detector restarted")
        wait_for(lambda: len(out.read_bytes()) > len(before), 30, message="events of the restarted detector")
    finally:
        output = stop(proc)
    assert proc.returncode == 0, output[-2000:]
    assert "pipeline: detector died (killed by signal 9)" in output
    assert "restarted pipeline: detector" in output
    assert not (Path("/dev/shm") / board_name).exists()
    # the restarted detector is the same run: the same run id, appending to the same run file
    [run_file] = tmp_path.glob("o-*.jsonl")
    assert os.readlink(out) == run_file.name
    data = run_file.read_bytes()
    assert data.startswith(before) and len(data) > len(before)
    assert {orjson.loads(line)["run_id"] for line in data.splitlines()} == {run_file.name[len("o-"):-len(".jsonl")]}


def test_a_child_that_keeps_dying_is_reported_failed_and_the_rest_keeps_running(tmp_path, board_name):
    raw = demo_config(board_name, tmp_path / "o.jsonl")
    raw["supervisor"] = {"restart_backoff_s": 0.05, "max_restarts": 2, "restart_window_s": 60}
    proc = start(write_config(tmp_path / "c.yaml", raw))
    try:
        for _ in range(3):
            pid = wait_for(lambda: slot_pid(board_name, 0), 30, message="binance feed running")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: slot_pid(board_name, 0) != pid or not psutil.pid_exists(pid), 10,
                     message="binance feed gone")
            time.sleep(0.5)
        bybit = slot_pid(board_name, 1)
        assert bybit and psutil.pid_exists(bybit), "the other feed keeps running"
        assert proc.poll() is None, "the supervisor keeps running"
    finally:
        output = stop(proc)
    assert "pipeline: feed binance FAILED" in output
    assert proc.returncode == 3                            # RunStatus.CHILD_FAILED: cron and systemd see it
    assert not (Path("/dev/shm") / board_name).exists()


def test_killed_supervisor_children_exit_and_next_start_removes_the_leftover(tmp_path, board_name):
    config = write_config(tmp_path / "c.yaml", demo_config(board_name, tmp_path / "o.jsonl"))
    proc = start(config)
    try:
        wait_for(lambda: slot_pid(board_name, 2), 30, message="detector running")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4
        proc.kill()
        proc.communicate(timeout=10)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"children still running after the supervisor died: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (Path("/dev/shm") / board_name).exists(), "a SIGKILLed supervisor cannot unlink"
    result = run_cli("--config", str(config), "--duration", "1", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"removed leftover shared memory {board_name!r}" in result.stdout
    assert not (Path("/dev/shm") / board_name).exists()


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` installed (``SigCgt`` in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(mask >> (signum - 1) & 1)


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.3, 0.5, 0.8, 1.2])
def test_sigterm_during_start_up_exits_cleanly(tmp_path, board_name, delay):
    """SIGTERM at points of the start-up, counted from the moment run.py can catch it (its first lines install
    the handler; before that the interpreter is still starting, which on a loaded machine takes longer than the
    shorter delays here)."""
    config = write_config(tmp_path / "c.yaml", demo_config(board_name, tmp_path / "o.jsonl"))
    proc = start(config)
    wait_for(lambda: catches(proc.pid, signal.SIGTERM), 30, interval=0.001, message="run.py catching SIGTERM")
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output[-2000:]
    wait_for(lambda: not (Path("/dev/shm") / board_name).exists(), 5, message="board removed")
    assert "Traceback" not in output, output[-3000:]
