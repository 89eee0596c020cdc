"""PNG plots of the transport, detector and end-to-end results, for docs/benchmarks.md.

Why: the tables carry the numbers; the plots show the shape at a glance (the
orders of magnitude between transports, how a detector pass grows with the
board, and which hop of the pipeline grows with the update rate). They are
drawn only from the JSON results a run wrote, never from numbers typed in here.

By default from the last runs' results and into the same folder (:func:`bench._common.results_dir`, outside
the repository); ``--results bench/results --out docs`` redraws the plots docs/benchmarks.md shows from the
committed reference results.
"""
from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from bench._common import RESULTS_DIR  # noqa: E402


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
    from matplotlib.ticker import FuncFormatter
    depths = sorted({c["depth"] for c in cells})
    exchanges = sorted({c["exchanges"] for c in cells})
    colours = dict(zip(exchanges, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")))
    styles = dict(zip(depths, (("o", "-"), ("s", "--"), ("^", ":"), ("d", "-."))))
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, (key, title) in zip(axes, (("idle_us", "idle pass (nothing changed)"),
                                       ("one_us", "one row changed"),
                                       ("all_us", "all rows changed"))):
        # one line per (exchanges, depth): the cost of a changed instrument grows with the exchanges,
        # so joining cells of different exchange counts by row count would draw a zigzag
        for n_ex in exchanges:
            for depth in depths:
                pts = sorted((c["rows"], c[key]) for c in cells if c["depth"] == depth and c["exchanges"] == n_ex)
                marker, line = styles.get(depth, ("o", "-"))
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, linestyle=line,
                        color=colours.get(n_ex), label=f"{n_ex} exchanges, depth {depth}")
        if key == "one_us":
            ax.axhline(12, color="red", linestyle="--", linewidth=1, label="target 12 µs (600 rows, depth 5)")
            ax.axvline(600, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows on the board (exchanges x instruments)")
        ax.set_ylabel("µs per pass (median, log)")
        ax.yaxis.set_major_formatter(plain)
        low, high = ax.get_ylim()
        if high / low < 20:                          # label the minor ticks only when the range is narrow
            ax.yaxis.set_minor_formatter(plain)
        else:
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda _v, _pos: ""))
        ax.xaxis.set_major_formatter(plain)
        ax.set_title(title)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2 if key == "one_us" else 1)
    m = data["machine"]
    fig.suptitle(f"Detector pass against board size ({m['nproc']} CPUs, Python {m['python']})")
    fig.tight_layout()
    fig.savefig(path_out, dpi=110)
    plt.close(fig)


E2E_HOPS = ("exchange_to_receive", "receive_to_publish", "publish_to_seen", "seen_to_emitted", "receive_to_emitted")
WAIT_COLOURS = {"doorbell": "tab:blue", "spin": "tab:orange"}


def plot_e2e(path_in, path_out) -> None:
    """One panel per hop: p50 (solid) and p99 (dashed) against the target rate, one colour per wait mode;
    the last panel shows the update rate reached and the CPU of the detector and of core 0's processes."""
    from matplotlib.ticker import FuncFormatter, LogLocator
    data = json.loads(path_in.read_text())
    results = data["results"] if isinstance(data, dict) else data      # e2e_load.py writes a bare list
    if len({r.get("transport", "websockets") for r in results}) > 1:     # one series per feed transport and wait
        results = [dict(r, wait=f"{r['transport']} {r['wait']}") for r in results]
    hops = [h for h in E2E_HOPS if any(h in r["hops"] for r in results)]
    waits = list(dict.fromkeys(r["wait"] for r in results))
    rates = sorted({r["target_rate"] for r in results})
    labels = [f"{r // 1000} k" if r >= 1000 else str(r) for r in rates]
    ncols = 3
    nrows = (len(hops) + 1 + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")

    def by_wait(wait, hop=None):
        return sorted((r for r in results if r["wait"] == wait and (hop is None or hop in r["hops"])),
                      key=lambda r: r["target_rate"])

    for ax, hop in zip(flat, hops):
        for wait in waits:
            runs = by_wait(wait, hop)
            xs = [r["target_rate"] for r in runs]
            colour = WAIT_COLOURS.get(wait)
            ax.plot(xs, [r["hops"][hop]["p50_us"] for r in runs], "o-", color=colour, label=f"{wait} p50")
            ax.plot(xs, [r["hops"][hop]["p99_us"] for r in runs], "s--", color=colour, label=f"{wait} p99")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda _v, _pos: ""))
        ax.set_ylabel("µs (log; histogram bucket bound)")
        ax.set_title(hop)
        ax.legend(fontsize=7)
    ax = flat[len(hops)]
    width = 0.8 / max(1, len(waits))
    for i, wait in enumerate(waits):
        runs = {r["target_rate"]: r for r in by_wait(wait)}
        xs = [k + (i - (len(waits) - 1) / 2) * width for k in range(len(rates))]
        ax.bar(xs, [runs[r]["achieved_rate"] if r in runs else 0 for r in rates], width,
               color=WAIT_COLOURS.get(wait), alpha=0.8, label=f"{wait}: achieved updates/s")
    ax.plot(range(len(rates)), rates, "k_", markersize=30, markeredgewidth=2, label="target updates/s")
    ax.set_yscale("log")
    ax.set_ylim(min(rates) / 2, max(rates) * 8)
    ax.yaxis.set_major_formatter(plain)
    ax.set_ylabel("updates/s (log)")
    ax2 = ax.twinx()
    for wait in waits:
        runs = {r["target_rate"]: r for r in by_wait(wait)}
        ax2.plot(range(len(rates)), [runs[r]["detector_cpu_percent"] if r in runs else None for r in rates], "^:",
                 color=WAIT_COLOURS.get(wait), label=f"{wait}: detector CPU %")
    ax2.plot(range(len(rates)), [max(r["feeds_cpu_percent_total"] for r in results if r["target_rate"] == t)
                                 for t in rates], "kx:", label="core 0 processes CPU % (max)")
    ax2.set_ylim(0, 160)
    ax2.set_ylabel("CPU % of one core")
    ax.set_title("rate reached and CPU")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    for k, a in enumerate(flat):
        if k > len(hops):
            a.set_visible(False)
            continue
        if k < len(hops):
            a.set_xscale("log")
            a.set_xticks(rates, labels)
            a.minorticks_off()
            a.yaxis.set_minor_formatter(FuncFormatter(lambda _v, _pos: ""))
        else:
            a.set_xticks(range(len(rates)), labels)
        a.set_xlabel("target updates/s (all feeds)")
        a.grid(which="major", alpha=0.3)
    load = "load generator" if all(r.get("load", "simulator") == "loadgen" for r in results) else "simulator"
    fig.suptitle(f"End to end under load, per hop: supervisor + {load}, 6 exchanges x 3 instruments x 2 channels "
                 "(p50 solid, p99 dashed; feeds 'fast' = picows + msgspec)")
    fig.tight_layout()
    fig.savefig(path_out, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(RESULTS_DIR),
                    help="folder with transport.json, detector.json and e2e_load.json (default: %(default)s)")
    ap.add_argument("--out", default=None, help="folder for the PNGs (default: the --results folder; "
                                                "docs: the plots docs/benchmarks.md shows)")
    args = ap.parse_args(argv)
    from pathlib import Path
    results = Path(args.results)
    out_dir = Path(args.out) if args.out else results
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, fn, out in (("transport", plot_transport, out_dir / "bench_transport.png"),
                          ("detector", plot_detector, out_dir / "bench_detector.png"),
                          ("e2e_load", plot_e2e, out_dir / "bench_e2e.png")):
        src = results / f"{name}.json"
        if not src.exists():
            print(f"{src} missing: run python -m bench.{name} first")
            continue
        fn(src, out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
