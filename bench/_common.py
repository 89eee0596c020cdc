"""Helpers every benchmark shares: statistics, machine facts, tables, JSON output.

Kept separate so each benchmark module stays about what it measures. The
machine on which these numbers are taken is small and shared (2 vCPUs, other
work running at times), so every result file records the conditions it was
taken under: CPU count, Python, load average and the whole-machine busy cores
during the run (from ``/proc/stat``).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
# the committed results: the reference docs/benchmarks.md quotes; a run writes here only when asked to
REFERENCE_DIR = BENCH_DIR / "results"


def results_dir() -> Path:
    """Where a run writes its results: ``$PIPELINE_BENCH_RESULTS`` if set, else ``$XDG_CACHE_HOME/pipeline-bench``
    (``~/.cache/pipeline-bench``): outside the repository, so running a benchmark leaves a clone as it was.

    ``PIPELINE_BENCH_RESULTS=bench/results`` refreshes the committed reference (bench/README.md)."""
    chosen = os.environ.get("PIPELINE_BENCH_RESULTS")
    if chosen:
        return Path(chosen).resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pipeline-bench"


RESULTS_DIR = results_dir()
FIXTURES_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def percentile(sorted_values: list, p: float) -> float:
    """Nearest-rank percentile of an already sorted list (p in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def latency_summary(ns_values: list[int]) -> dict:
    """p50/p99/p99.9/max in microseconds from nanosecond samples."""
    s = sorted(ns_values)
    return {
        "n": len(s),
        "p50_us": percentile(s, 50) / 1e3,
        "p99_us": percentile(s, 99) / 1e3,
        "p999_us": percentile(s, 99.9) / 1e3,
        "max_us": (s[-1] / 1e3) if s else float("nan"),
    }


def median(values) -> float:
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    """a / b, NaN when either is missing or b is zero."""
    if a is None or b is None or a != a or b != b or b == 0:
        return float("nan")
    return a / b


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


class BusyMeter:
    """Whole-machine busy cores between start and stop (other users' work included)."""

    def __init__(self) -> None:
        self.busy0, self.total0 = cpu_times()
        self.t0 = time.monotonic()

    def busy_cores(self) -> float:
        busy1, total1 = cpu_times()
        dt = total1 - self.total0
        if dt <= 0:
            return float("nan")
        return (busy1 - self.busy0) / dt * (os.cpu_count() or 1)


def machine_info() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg(),
        "code": code_version(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def code_version() -> dict:
    """The commit the pipeline code was at, and pipeline files changed but not committed (the tree moves)."""
    import subprocess

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "uncommitted_pipeline_files": [line[3:] for line in
                                           git("status", "--porcelain", "--", "pipeline").splitlines()]}


def speed_probe_ns() -> float:
    """ns for ``sum`` over a 100-int list, best of 5: how fast this (shared) machine ran Python just now.

    The same VM has given 400-900 ns here on different days; figures from runs with different probes
    are not comparable one to one.
    """
    import timeit
    numbers = list(range(100))
    return min(timeit.repeat(lambda: sum(numbers), number=20000, repeat=5)) / 20000 * 1e9


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if value != value:
        return "n/a"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f} M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.0f} k"
    return f"{value:.{digits}f}"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |")
    return "\n".join(lines)


def write_results(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = dict(payload)
    payload.setdefault("machine", machine_info())
    payload["machine"]["loadavg_end"] = os.getloadavg()
    payload["machine"]["code_end"] = code_version()
    path.write_text(json.dumps(_clean(payload), indent=2, default=str) + "\n")
    return path


def _clean(obj):
    """JSON has no NaN: write null instead; tuples and sets become lists."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_clean(v) for v in obj]
    return obj
