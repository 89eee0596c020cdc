"""A replay window that misses the recording says so, with the recording's span, instead of "0 frames", exit 0."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli, write_config

pytestmark = pytest.mark.integration

RECORDING = Path(__file__).resolve().parents[1] / "data" / "demo-recording"
SPAN = "it spans 2026-12-07T06:38:51.971164Z to 2026-12-07T06:39:05.481577Z"


@pytest.mark.parametrize("window, said", [
    (("--from", "2030-01-01T00:00:00Z"), "in 2030-01-01T00:00:00.000000Z .. the end"),
    (("--to", "2020-01-01T00:00:00Z"), "in the start .. 2020-01-01T00:00:00.000000Z"),
])
def test_a_window_outside_the_recording_exits_2_showing_its_span(tmp_path, window, said):
    config = write_config(tmp_path / "c.yaml", {
        "board": {"name": "unused"}, "simulator": {},
        "venues": {v: {"instruments": ["BTC/USDT"]} for v in ("binance", "bybit", "okx", "htx")},
        "detector": {"output": str(tmp_path / "unused.jsonl")}})
    result = run_cli("replay", "--config", str(config), "--recording", str(RECORDING), "--quiet",
                     "--out", str(tmp_path / "o.jsonl"), *window)
    assert result.returncode == 2
    assert result.stderr == f"run.py replay: --from/--to: no frame of the recording {said}; {SPAN}\n"
