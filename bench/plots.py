"""PNG plots of the transport and detector results, for docs/benchmarks.md.

Why: the tables carry the numbers; the plots show the shape at a glance (the
orders of magnitude between transports, and how a detector pass grows with
the board). They are drawn only from ``bench/results/*.json`` written by a
run, never from numbers typed in here.
"""
from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from bench._common import REPO_DIR, RESULTS_DIR  # noqa: E402

DOCS = REPO_DIR / "docs"


def plot_transport(path_in, path_out) -> None:
    data = json.loads(path_in.read_text())
    summary = data["summary"]
    names = list(summary)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = range(len(names))
    width = 0.27
    for i, (key, label) in enumerate((("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9"))):
        values = [summary[n][key] or 0 for n in names]
        ax1.bar([xi + (i - 1) * width for xi in x], values, width, label=label)
    ax1.set_yscale("log")
    ax1.set_xticks(list(x), names, rotation=20)
    ax1.set_ylabel("one-way latency, µs (log)")
    ax1.set_title("Paced, about 1 quote/ms (median of rounds)")
    ax1.legend()
    ax1.grid(axis="y", which="both", alpha=0.3)
    pub = [summary[n]["publish_per_s"] or 0 for n in names]
    seen = [summary[n]["seen_per_s"] or 0 for n in names]
    ax2.bar([xi - 0.2 for xi in x], pub, 0.4, label="writer publishes/s")
    ax2.bar([xi + 0.2 for xi in x], seen, 0.4, label="reader sees/s")
    ax2.set_yscale("log")
    ax2.set_xticks(list(x), names, rotation=20)
    ax2.set_ylabel("updates per second (log)")
    ax2.set_title("Unpaced blast")
    ax2.legend()
    ax2.grid(axis="y", which="both", alpha=0.3)
    m = data["machine"]
    fig.suptitle(f"Quote hand-off between two processes ({m['nproc']} CPUs, Python {m['python']})")
    fig.tight_layout()
    fig.savefig(path_out, dpi=110)
    plt.close(fig)


def plot_detector(path_in, path_out) -> None:
    data = json.loads(path_in.read_text())
    cells = data["cells"]
    depths = sorted({c["depth"] for c in cells})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (key, title) in zip(axes, (("idle_us", "idle pass (nothing changed)"),
                                       ("one_us", "one row changed"),
                                       ("all_us", "all rows changed"))):
        for depth in depths:
            pts = sorted((c["rows"], c[key]) for c in cells if c["depth"] == depth)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"depth {depth}")
        if key == "one_us":
            ax.axhline(20, color="red", linestyle="--", linewidth=1, label="target 20 µs (600 rows, depth 5)")
            ax.axvline(600, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows on the board (exchanges x instruments)")
        ax.set_ylabel("µs per pass (median, log)")
        ax.set_title(title)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = data["machine"]
    fig.suptitle(f"Detector pass against board size ({m['nproc']} CPUs, Python {m['python']})")
    fig.tight_layout()
    fig.savefig(path_out, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(RESULTS_DIR), help="folder with transport.json and detector.json")
    args = ap.parse_args(argv)
    from pathlib import Path
    results = Path(args.results)
    DOCS.mkdir(exist_ok=True)
    for name, fn, out in (("transport", plot_transport, DOCS / "bench_transport.png"),
                          ("detector", plot_detector, DOCS / "bench_detector.png")):
        src = results / f"{name}.json"
        if not src.exists():
            print(f"{src} missing: run python -m bench.{name} first")
            continue
        fn(src, out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
