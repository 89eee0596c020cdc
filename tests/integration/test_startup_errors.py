"""Resources a config names are checked before anything starts: one line naming the
field, exit status 2, no traceback, nothing started, no board left."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import demo_config, run_cli, write_config

pytestmark = pytest.mark.integration


def test_metrics_port_in_use_exits_2_naming_the_field(tmp_path, board_name):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        raw = demo_config(board_name, tmp_path / "opps.jsonl")
        raw["metrics"] = {"port": port}
        result = run_cli("--config", str(write_config(tmp_path / "c.yaml", raw)), "--duration", "5", timeout=60)
    finally:
        holder.close()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"run.py: metrics.port: port {port} on 127.0.0.1 is not free"), \
        result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "started" not in result.stdout                 # nothing was started
    assert not (Path("/dev/shm") / board_name).exists()


def test_a_free_metrics_port_runs(tmp_path, board_name):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    raw = demo_config(board_name, tmp_path / "opps.jsonl")
    raw["metrics"] = {"port": port}
    result = run_cli("--config", str(write_config(tmp_path / "c.yaml", raw)), "--duration", "2", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_unwritable_output_exits_2_naming_the_field(tmp_path, board_name):
    (tmp_path / "a-file").write_text("")
    raw = demo_config(board_name, tmp_path / "a-file" / "opps.jsonl")     # a file where a directory should be
    result = run_cli("--config", str(write_config(tmp_path / "c.yaml", raw)), "--duration", "5", timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"run.py: detector.output: cannot write {str(tmp_path / 'a-file' / 'opps.jsonl')!r} "
        f"({str(tmp_path / 'a-file')!r} is not a directory)"]
    assert not (Path("/dev/shm") / board_name).exists()


def test_output_naming_a_directory_exits_2_naming_the_field(tmp_path, board_name):
    (tmp_path / "opps.jsonl").mkdir()
    raw = demo_config(board_name, tmp_path / "opps.jsonl")
    for extra in ((), ("--append",)):
        result = run_cli("--config", str(write_config(tmp_path / "c.yaml", raw)), "--duration", "5", *extra,
                         timeout=60)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"run.py: detector.output: cannot write {str(tmp_path / 'opps.jsonl')!r} (it is a directory)"]
    assert not (Path("/dev/shm") / board_name).exists()


def test_top_without_a_board_exits_2_naming_it():
    result = run_cli("top", "--board", "pipeline-test-no-such-board", timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "run.py top: --board: no quote board named 'pipeline-test-no-such-board' (is the supervisor running?)"]


@pytest.mark.serial
def test_top_without_flags_finds_the_one_running_board_or_says_which_exist(board_name):
    """No --board and no --config: the board a live supervisor holds; with none or several, exit 2 saying so.

    Serial, so it runs last and alone: by then the bridge tests' boxes (the one module-wide pipeline) are gone."""
    from pipeline.board import Board
    from pipeline.board.shm import running_boards
    others = running_boards()
    if others:
        pytest.skip(f"pipelines already running here: {others}")
    result = run_cli("top", "--once", timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "run.py top: no pipeline is running (no quote board held by a live supervisor); start one with "
        "python run.py --config FILE"]
    board = Board.create(board_name, 2, 5, 4)             # held by this process, alive: a running pipeline's board
    second = Board.create(board_name + "-b", 2, 5, 4)
    try:
        result = run_cli("top", "--once", timeout=30)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"run.py top: 2 pipelines are running: {board_name}, {board_name}-b; pick one with --board NAME"]
        second.destroy()
        result = run_cli("top", "--once", timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0].startswith(board_name[:16])
    finally:
        board.destroy()
        if (Path("/dev/shm") / (board_name + "-b")).exists():
            second.destroy()
