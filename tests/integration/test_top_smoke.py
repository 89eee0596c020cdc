"""Smoke test of the console on a real short demo: the pipeline runs with --console in
one terminal, ``run.py top --board`` attaches from another, and the screens are read
back. tmux when it is installed (the screen as a person sees it), otherwise a
pseudo-terminal with the escape sequences stripped."""
from __future__ import annotations

import os
import pty
import re
import select
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, demo_config, wait_for, write_config

pytestmark = pytest.mark.integration

DURATION_S = 9            # the pty test's run; the tmux run is stopped with q long before its 60 s


def start_demo_config(tmp_path, board_name):
    raw = demo_config(board_name, tmp_path / "out" / "opps.jsonl")
    raw["health"]["interval_s"] = 2.0
    return write_config(tmp_path / "demo.yaml", raw)


class Tmux:
    """A private tmux server (its own socket): nothing else's sessions are touched."""

    def __init__(self):
        self.socket = f"pipeline-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10).stdout

    def start(self, window: str, command: str) -> None:
        if window == "pipeline":
            self("new-session", "-d", "-s", "smoke", "-n", window, "-x", "80", "-y", "24", command)
            self("set-option", "-t", "smoke", "remain-on-exit", "on")
        else:
            self("new-window", "-d", "-t", "smoke", "-n", window, command)

    def screen(self, window: str, history: bool = False) -> str:
        """What the window shows; with ``history`` also what scrolled off, wrapped lines joined."""
        extra = ("-J", "-S", "-200") if history else ()
        return self("capture-pane", "-p", *extra, "-t", f"smoke:{window}")

    def keys(self, window: str, keys: str) -> None:
        self("send-keys", "-t", f"smoke:{window}", keys)

    def close(self) -> None:
        path = self("display-message", "-p", "#{socket_path}").strip()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        if path:
            Path(path).unlink(missing_ok=True)         # the server leaves its socket file behind


def shell(*args) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (the pty test covers top)")
def test_console_and_top_in_tmux(tmp_path, board_name):
    config = start_demo_config(tmp_path, board_name)
    tmux = Tmux()
    status = tmp_path / "status"
    try:
        run = shell(sys.executable, 'run.py', '--config', config, '--console', '--duration', 60)
        tmux.start("pipeline", f"cd {shell(REPO)} && {run}; echo $? > {shell(status)}")
        wait_for(lambda: (Path("/dev/shm") / board_name).exists(), 15, message="the board")
        tmux.start("top", f"cd {shell(REPO)} && {shell(sys.executable, 'run.py', 'top', '--board', board_name)}; "
                          f"echo top exit $?; sleep 20")

        def top_shows_live_venues():
            screen = tmux.screen("top")
            # both rows live, and a second frame (the message rates need two reads)
            return screen if re.search(r"binance\s+live", screen) and re.search(r"bybit\s+live", screen) \
                and re.search(r"binance\s+\d+\s+\d+\s+\d+", screen) else ""
        screen = wait_for(top_shows_live_venues, 15, 0.2, "top to show both venues live")
        assert "BTC/USDT [1/2]" in screen and "net bps buy/sell" in screen and "q quit" in screen
        assert len(screen.splitlines()) <= 24 and max(len(line) for line in screen.splitlines()) <= 80
        console = wait_for(lambda: (lambda s: s if "net bps buy/sell" in s else "")(tmux.screen("pipeline")), 10, 0.2,
                           "the --console screen")
        assert re.search(r"binance\s+live", console) and "supervisor:" not in console    # no scrolling output
        tmux.keys("top", "f")
        wait_for(lambda: "ETH/USDT [2/2]" in tmux.screen("top"), 5, 0.1, "f to show the next instrument")
        tmux.keys("top", "q")
        wait_for(lambda: "top exit 0" in tmux.screen("top"), 5, 0.1, "q to quit top")
        tmux.keys("pipeline", "q")                                   # q in the console stops the pipeline
        wait_for(status.exists, 15, 0.2, "q in the console to stop the pipeline")
        assert status.read_text().strip() == "0"
        after = tmux.screen("pipeline", history=True)
        assert "console closed; this run's output is in" in after and "--- health at stop" in after, after
        log = (tmp_path / "out" / "pipeline.log").read_text()
        # the children's output went to the log; the block at stop comes after the console, on the terminal
        assert "simulator listening" in log and "--- health at stop" not in log
    finally:
        tmux.close()
    assert not (Path("/dev/shm") / board_name).exists()


ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


def test_top_in_a_pseudo_terminal(tmp_path, board_name):
    config = start_demo_config(tmp_path, board_name)
    pipeline = subprocess.Popen([sys.executable, "run.py", "--config", str(config), "--duration", str(DURATION_S)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    master = slave = -1
    top = None
    try:
        wait_for(lambda: (Path("/dev/shm") / board_name).exists(), 15, message="the board")
        master, slave = pty.openpty()
        os.set_blocking(master, False)
        env = dict(os.environ, COLUMNS="80", LINES="24", TERM="xterm")
        import fcntl
        import struct
        import termios
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

        def controlling_terminal():
            # a session of its own with the pty as controlling terminal, so Ctrl-C there is a SIGINT
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        top = subprocess.Popen([sys.executable, "run.py", "top", "--board", board_name], cwd=REPO, stdin=slave,
                               stdout=slave, stderr=slave, env=env, preexec_fn=controlling_terminal)
        os.close(slave)
        slave = -1
        seen = bytearray()

        def drain():
            while select.select([master], [], [], 0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                seen.extend(chunk)

        def shows(pattern):
            drain()
            return re.search(pattern, ANSI.sub(b"", bytes(seen[-20000:])))
        wait_for(lambda: shows(rb"binance\s+live") and shows(rb"bybit\s+live"), 15, 0.2, "top to show live venues")
        assert shows(rb"BTC/USDT \[1/2\]") and shows(rb"net bps buy/sell")
        os.write(master, b"\x03")                 # Ctrl-C quits like q, and puts the terminal back
        assert top.wait(10) == 0
        drain()
        assert b"Traceback" not in seen
        once = subprocess.run([sys.executable, "run.py", "top", "--config", str(config), "--once"], cwd=REPO,
                              capture_output=True, text=True, timeout=30)
        assert once.returncode == 0, once.stderr
        lines = once.stdout.splitlines()
        assert lines[1].startswith("BTC/USDT [1/2]") and re.match(r"binance\s+live", lines[2]), once.stdout
        assert lines[-1] == "f/b next/previous instrument   p pause   q quit"
    finally:
        if top is not None and top.poll() is None:
            top.kill()
            top.wait()
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
        pipeline.terminate()
        pipeline.wait(30)
    assert not (Path("/dev/shm") / board_name).exists()
