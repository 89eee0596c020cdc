"""Exit statuses the supervisor acts on, and the run's own: a child's configuration exit is not restarted and
ends the run with 2, a crash is restarted, a closed stdout stops the run cleanly, an unusable
``detector.output`` is refused before anything starts."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, demo_config, run_cli, wait_until, write_config

pytestmark = pytest.mark.integration

# The real run.py, with the detector's body replaced by a fault: the supervisor, the board and every other
# child are the real ones, and the faulty detector still starts through the child runtime.
INJECT = """
import os, sys
from pipeline.runtime import UnusableResource, run_child
import pipeline.detector.process as detector_process
real_main = detector_process.main
fault, marker = sys.argv[1], sys.argv[2]

def faulty(spec, config):
    if fault == "unusable":
        def body(stop):
            raise UnusableResource("detector.output", "cannot write 'x' (read-only file system)")
        run_child(spec, body)
    if not os.path.exists(marker):           # crash once, then run the real detector
        open(marker, "w").close()
        def body(stop):
            raise RuntimeError("injected crash")
        run_child(spec, body)
    real_main(spec, config)

detector_process.main = faulty
from pipeline.commands import main
sys.exit(main(sys.argv[3:]))
"""


def start_with_fault(fault: str, tmp_path: Path, board_name: str, *extra: str) -> subprocess.Popen:
    config = write_config(tmp_path / "c.yaml", demo_config(board_name, tmp_path / "o.jsonl"))
    return subprocess.Popen([sys.executable, "-c", INJECT, fault, str(tmp_path / "crashed"), "--config", str(config),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_a_child_exiting_with_the_configuration_status_is_not_restarted_and_the_run_exits_2(tmp_path, board_name):
    proc = start_with_fault("unusable", tmp_path, board_name, "--duration", "60")
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 2, out[-2000:] + err[-2000:]
    assert ("supervisor: pipeline: detector cannot run: detector.output: cannot write 'x' (read-only file system); "
            "not restarting, stopping the run") in out.splitlines()
    assert "restarted pipeline: detector" not in out
    assert "Traceback" not in err
    assert err.count("cannot run: detector.output: cannot write 'x' (read-only file system)") == 1
    assert not (Path("/dev/shm") / board_name).exists()


def test_a_crashing_child_is_restarted_with_the_backoff(tmp_path, board_name):
    proc = start_with_fault("crash", tmp_path, board_name)
    try:
        wait_until(lambda: (tmp_path / "o.jsonl").exists() and (tmp_path / "o.jsonl").read_bytes(), 60,
                   message="events of the restarted detector")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert (tmp_path / "crashed").exists()
    assert [line for line in out.splitlines() if "pipeline: detector died" in line][0].startswith(
        "supervisor: pipeline: detector died (exit status 1); restarting in ")
    assert "restarted pipeline: detector" in out
    assert err.count("pipeline: detector failed: RuntimeError: injected crash") == 1    # logged once
    assert err.count("Traceback") == 1                                                   # with its traceback
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    assert not (Path("/dev/shm") / board_name).exists()


def test_a_closed_stdout_stops_the_run_cleanly(tmp_path, board_name):
    """``run.py ... | head``: the reader goes after a few lines; no traceback, exit status 0, no board left."""
    config = write_config(tmp_path / "c.yaml", demo_config(board_name, tmp_path / "o.jsonl"))
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--config", str(config), "--duration", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    lines = []
    while len(lines) < 3 or not any(line.startswith(b"OPEN") for line in lines):   # live and printing events
        line = proc.stdout.readline()
        assert line, b"".join(lines)[-2000:]
        lines.append(line)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "BrokenPipeError" not in err, err[-3000:]
    assert "supervisor: stdout was closed by its reader; stopping" in err
    assert not (Path("/dev/shm") / board_name).exists()


@pytest.mark.parametrize("output, reason", [
    ("/sys/pipeline-test/opps.jsonl", "cannot create '/sys/pipeline-test': "),
    ("/sys/opps.jsonl", " in '/sys'"),
])
def test_an_output_that_cannot_be_created_exits_2_naming_the_field(tmp_path, board_name, output, reason):
    """Even as root, where os.access says yes: the check creates a file where the run will write."""
    raw = demo_config(board_name, Path(output))
    result = run_cli("--config", str(write_config(tmp_path / "c.yaml", raw)), "--duration", "5", timeout=60)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"run.py: detector.output: cannot write {output!r} (") and reason in line, line
    assert "started" not in result.stdout
    assert not (Path("/dev/shm") / board_name).exists()


def test_a_run_in_which_no_venue_ever_went_live_exits_4(tmp_path, board_name):
    """No exchange reachable (a port the kernel gave us, bound but not listening: every connection is refused):
    a run that goes on past the grace period without one LIVE row must fail for cron and systemd."""
    import socket

    from pipeline.supervisor.core import LIVE_GRACE_S
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{closed.getsockname()[1]}/ws"
        config = demo_config(board_name, tmp_path / "o.jsonl", venues=("binance",))
        del config["simulator"]
        config["venues"]["binance"]["url"] = url
        done = run_cli("--config", str(write_config(tmp_path / "c.yaml", config)),
                       "--duration", str(LIVE_GRACE_S + 1), timeout=90)
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    said = [line for line in done.stdout.splitlines() if line.startswith("supervisor: no venue went live in ")]
    assert len(said) == 1 and said[0].endswith(" s (no row was ever LIVE)"), done.stdout[-2000:]
    assert LIVE_GRACE_S <= float(said[0].split()[6]) <= LIVE_GRACE_S + 1
    assert "Traceback" not in done.stderr
    assert not (Path("/dev/shm") / board_name).exists()


def test_cores_as_a_preference_pin_only_to_cores_that_exist(tmp_path, board_name):
    """``supervisor.cores_preferred`` (the demo's): a listed core this machine lacks is left out and said once;
    the run goes on. Without it the same config is refused before anything starts, naming the field."""
    import os
    missing = max(os.sched_getaffinity(0)) + 1
    config = demo_config(board_name, tmp_path / "o.jsonl")
    config["detector"]["cores"] = [missing]
    strict = run_cli("--config", str(write_config(tmp_path / "strict.yaml", config)), "--duration", "1")
    assert strict.returncode == 2
    assert f"detector.cores[0]: core {missing} does not exist on this machine" in strict.stderr
    config["supervisor"]["cores_preferred"] = True
    done = run_cli("--config", str(write_config(tmp_path / "c.yaml", config)), "--duration", "2", timeout=90)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count(f"supervisor: pipeline: detector: core(s) {missing} not on this machine; "
                             "not pinned") == 1
    assert "Traceback" not in done.stderr
