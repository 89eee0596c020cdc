"""Shared test helpers: fixture paths, unique board names, running the CLI."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"         # real captures, with their provenance


def fixture_lines(exchange: str, name: str) -> list[str]:
    return [line for line in (FIXTURES / exchange / name).read_text().splitlines() if line.strip()]


def single_book_update(venue_module, raw):
    """The one BookUpdate a frame must parse into."""
    from pipeline.model import BookUpdate
    events = venue_module.parse(raw, 0)
    assert len(events) == 1 and isinstance(events[0], BookUpdate)
    return events[0]



def top_from_parse(parse):
    """``top`` computed the long way, from ``parse``: the short path's contract (venues/_common.py), word for word.

    The oracle the tests hold each venue's ``top`` to."""
    from pipeline.model import BBO, BookUpdate

    def top(raw):
        try:
            events = parse(raw, 0)
        except Exception:  # noqa: BLE001 - a frame parse refuses is not a top-of-book frame
            return None
        if len(events) != 1:
            return None
        e = events[0]
        if (e.__class__ is not BookUpdate or e.channel != BBO or not e.snapshot or len(e.bids) != 1
                or len(e.asks) != 1 or e.prev_seq is not None or e.checksum is not None or e.restart or e.weak
                or e.bids_text is not None or e.asks_text is not None):
            return None
        (bid_px, bid_qty), (ask_px, ask_qty) = e.bids[0], e.asks[0]
        return (e.symbol, bid_px, bid_qty, ask_px, ask_qty, e.exch_ts_ms, e.seq, e.xseq)
    return top


@pytest.fixture
def board_name():
    """A unique shared-memory name; the test fails if the segment is left behind."""
    name = f"pipeline-test-{uuid.uuid4().hex[:10]}"
    yield name
    leftover = Path("/dev/shm") / name
    if leftover.exists():
        leftover.unlink()
        pytest.fail(f"shared memory {name} was left behind")


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def demo_config(board: str, out: Path, venues=("binance", "bybit"), **detector) -> dict:
    instruments = {"binance": ["BTC/USDT", "ETH/USDT"], "bybit": ["BTC/USDT", "ETH/USDT"],
                   "okx": ["BTC/USDT", "ETH/USDT"], "htx": ["BTC/USDT", "ETH/USDT"],
                   "coinbase": ["BTC/USDT", "ETH/USDT"], "kraken": ["BTC/USDT", "ETH/USDT"]}
    return {
        "board": {"name": board, "depth": 5},
        "simulator": {"seed": 11, "update_interval_ms": 20, "dislocation_every_s": 0.5,
                      "dislocation_bps": 60, "dislocation_ms": 200},
        "venues": {v: {"instruments": instruments[v]} for v in venues},
        "detector": {"threshold_bps": 0.0, "staleness_ms": 2000, "output": str(out), **detector},
        "health": {"interval_s": 1.0},
        "supervisor": {"restart_backoff_s": 0.1},
    }


def run_cli(*args: str, timeout: float = 60, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def wait_for(predicate, timeout: float, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")
