"""A venue folder kept outside the package joins without editing any other file (docs/adding-a-venue.md).

``tests/venues/toyex`` is the smallest venue folder: a record, a wire format declared once, a simulator
protocol. Registered with ``PIPELINE_EXTRA_VENUES``, it runs through the same registry-driven suites as
the built-in venues: the folder's shape, the simulator's protocol tests and fuzzing, and the
conformance suite (the feed process's session against the simulator over loopback, both transports).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from pipeline.venues import BUILT_IN, _extra
from tests.conftest import REPO, run_cli

SUITES = ["tests/unit/test_venue_shape.py", "tests/unit/test_sim_protocols.py", "tests/unit/test_loadgen.py",
          "tests/property/test_sim_fuzz.py", "tests/property/test_top_path_properties.py",
          "tests/integration/test_conformance.py"]


@pytest.mark.integration
def test_the_toy_venue_passes_the_suites_every_venue_passes():
    env = {**os.environ, "PIPELINE_EXTRA_VENUES": "toyex=tests.venues.toyex"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-k", "toyex",
                          *SUITES],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 15 and "failed" not in summary and "error" not in summary, summary


def test_the_registration_is_name_equals_package_after_the_built_in_venues():
    assert _extra("toyex=tests.venues.toyex, other = my.pkg") == ({"toyex": "tests.venues.toyex", "other": "my.pkg"},
                                                                 [])
    packages, problems = _extra("Toyex=tests.venues.toyex,bybit=x.y,toyex,a=b c")
    assert packages == {}
    assert problems == ["'Toyex=tests.venues.toyex' is not name=package (a lower-case name, a dotted Python package)",
                        "'bybit' is registered twice",
                        "'toyex' is not name=package (a lower-case name, a dotted Python package)",
                        "'a=b c' is not name=package (a lower-case name, a dotted Python package)"]
    assert BUILT_IN == ("binance", "bybit", "okx", "htx", "coinbase", "kraken")     # board ids never move


@pytest.mark.parametrize("value, words", [
    ("toyex", "'toyex' is not name=package"),
    ("toyex=tests.venues.nothing_here", "toyex: tests.venues.nothing_here does not load (ModuleNotFoundError"),
])
def test_a_registration_that_cannot_work_exits_2_naming_the_variable(value, words, monkeypatch):
    monkeypatch.setenv("PIPELINE_EXTRA_VENUES", value)
    run = run_cli("--config", "configs/demo.yaml", "--duration", "1")
    assert run.returncode == 2
    assert f"run.py: PIPELINE_EXTRA_VENUES: {words}" in run.stderr and "Traceback" not in run.stderr
