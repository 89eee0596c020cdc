"""What the pipeline writes is for its owner and group only, and never written through a planted link."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipeline.files import FILE_MODE, open_for_writing
from pipeline.output.writers import Outputs, run_output_path
from tests.conftest import run_cli, write_config

RECORDING = Path(__file__).resolve().parents[1] / "data" / "demo-recording"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    def set_to(value):
        previous.append(os.umask(value))
    previous = []
    yield set_to
    if previous:
        os.umask(previous[0])


def test_files_are_created_for_the_owner_and_group_only_and_the_umask_can_only_narrow_that(tmp_path, umask):
    umask(0o022)
    with open_for_writing(str(tmp_path / "a"), append=True):
        pass
    assert mode(tmp_path / "a") == FILE_MODE == 0o640
    umask(0o077)
    with open_for_writing(str(tmp_path / "b"), truncate=True):
        pass
    assert mode(tmp_path / "b") == 0o600


def test_a_run_file_and_its_events_are_0640(tmp_path, umask):
    umask(0o022)
    target = run_output_path(str(tmp_path / "opportunities.jsonl"), "20261207T000000Z-abcdef")
    outputs = Outputs(target, False, run_id="20261207T000000Z-abcdef")
    outputs.write({"event": "open"})
    outputs.close()
    assert mode(target) == 0o640 and os.path.islink(tmp_path / "opportunities.jsonl")


def test_a_link_planted_where_we_write_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = tmp_path / "out.jsonl"
    planted.symlink_to(victim)
    with pytest.raises(OSError):
        Outputs(str(planted), False, truncate=True)
    assert victim.read_text() == "precious\n"
    # --append follows only our own latest-run link (a name beside it), never one pointing elsewhere
    with pytest.raises(OSError, match="not to a run file beside it"):
        run_output_path(str(planted), "x", append=True)


def test_append_through_our_own_latest_link_reaches_the_run_file(tmp_path):
    target = run_output_path(str(tmp_path / "o.jsonl"), "run1")
    assert run_output_path(str(tmp_path / "o.jsonl"), "run2", append=True) == target


@pytest.mark.integration
def test_replay_into_a_planted_link_exits_2_and_leaves_the_target_alone(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "o.jsonl").symlink_to(victim)
    config = write_config(tmp_path / "c.yaml", {
        "board": {"name": "unused"}, "simulator": {},
        "venues": {v: {"instruments": ["BTC/USDT"]} for v in ("binance", "bybit", "okx", "htx")},
        "detector": {"output": str(tmp_path / "unused.jsonl")}})
    result = run_cli("replay", "--config", str(config), "--recording", str(RECORDING), "--quiet",
                     "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert victim.read_text() == "precious\n"
