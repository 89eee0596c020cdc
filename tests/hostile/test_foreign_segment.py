"""A shared-memory segment with the board's name that another user owns, or that others may write, is never
trusted or removed: the supervisor exits 2 naming board.name before anything starts, and ``top`` says so.

The segments are real: made with the board's name, then given to another user (``chown``, which needs
root: skipped where this user may not) or opened to everyone (``chmod 666``).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from pipeline.board import Board, foreign_segment, remove_leftover
from pipeline.errors import BoardError
from tests.conftest import demo_config, run_cli, write_config

NOBODY = 65534


@pytest.fixture
def segment():
    """A real board segment under a fresh name; removed afterwards whoever it then belongs to."""
    board = Board.create(f"pipeline-test-{uuid.uuid4().hex[:10]}", 2, 5, 1)
    path = Path("/dev/shm") / board.name
    try:
        yield board, path
    finally:
        os.chown(path, os.geteuid(), os.getegid()) if os.geteuid() == 0 else None
        board.destroy()


def give_away(path: Path) -> None:
    try:
        os.chown(path, NOBODY, NOBODY)
    except PermissionError:
        pytest.skip("giving a file to another user needs root here")


def test_our_own_board_is_ours(segment):
    board, _ = segment
    assert foreign_segment(board.name) is None and foreign_segment("pipeline-no-such-board") is None


def test_a_segment_of_another_user_is_neither_attached_nor_removed(segment):
    board, path = segment
    give_away(path)
    problem = foreign_segment(board.name)
    assert f"uid {NOBODY}" in problem and "not to this user" in problem and "board.name" in problem
    with pytest.raises(BoardError, match="not ours to trust or remove"):
        Board.attach(board.name)
    with pytest.raises(BoardError, match="not ours to trust or remove"):
        remove_leftover(board.name)
    assert path.exists()


def test_a_segment_others_may_write_is_not_trusted(segment):
    board, path = segment
    os.chmod(path, 0o666)
    with pytest.raises(BoardError, match=r"may be written by other users \(mode 666\)"):
        Board.attach(board.name)


@pytest.mark.integration
def test_the_supervisor_exits_2_naming_board_name_and_leaves_the_segment(segment, tmp_path):
    board, path = segment
    give_away(path)
    raw = demo_config(board.name, tmp_path / "opps.jsonl")
    result = run_cli("--config", str(write_config(tmp_path / "c.yaml", raw)), "--duration", "5", timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"run.py: board.name: shared memory segment {board.name!r} belongs to")
    assert "Traceback" not in result.stderr + result.stdout
    assert path.exists() and path.stat().st_uid == NOBODY
    top = run_cli("top", "--board", board.name, "--once", timeout=30)
    assert top.returncode == 2 and "not ours to trust or remove" in top.stderr and "Traceback" not in top.stderr
