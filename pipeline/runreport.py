"""``run.py report FILE.jsonl [--out DIR]``: a run of the detector in pictures.

Reads an opportunity file (the JSON lines of ``detector.output``, live or
replayed) and writes into DIR (default: ``<FILE>-report/`` beside it):

* ``pairs_over_time.png``: opportunities opened per venue pair, cumulative over time;
* ``edges.png``: net edge at open and peak net edge, distribution;
* ``lifetimes.png``: lifetime of closed opportunities, distribution (log scale);
* ``shadow.png``: shadow fills by latency: share still profitable, and edge left against the edge detected;
* ``profit_by_pair.png``: expected profit at detection by pair (per quote currency);
* ``summary.md``: the numbers, and the plots.

:func:`summarize` is a pure function of the records (tests compute its numbers
by hand); the plotting needs matplotlib, an optional extra:
``pip install -e '.[report]'``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import orjson

PLOTS = ("pairs_over_time.png", "edges.png", "lifetimes.png", "shadow.png", "profit_by_pair.png")


def nearest_rank(values: list[float], q: float) -> float | None:
    """The nearest-rank q-quantile: the smallest value with at least q of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class RunSummary:
    events: Counter = field(default_factory=Counter)
    first_ns: int = 0
    last_ns: int = 0
    opens: list = field(default_factory=list)              # (time_ns, pair, instrument, net_bps, profit, quote)
    closes: list = field(default_factory=list)             # (duration_ms, peak_net_bps, reason)
    shadow: dict = field(default_factory=dict)             # latency -> list of (detected net, net or None, reason)
    skipped_lines: int = 0

    @property
    def duration_s(self) -> float:
        return (self.last_ns - self.first_ns) / 1e9 if self.last_ns > self.first_ns else 0.0

    def pairs(self) -> dict[str, dict]:
        """buy>sell -> {opens, profit by quote, median net bps}."""
        out: dict[str, dict] = {}
        for _, pair, _, net, profit, quote in self.opens:
            entry = out.setdefault(pair, {"opens": 0, "profit": defaultdict(float), "nets": []})
            entry["opens"] += 1
            entry["profit"][quote] += profit
            entry["nets"].append(net)
        return out

    def shadow_rows(self) -> list[tuple]:
        """(latency, checked, profitable, mean net bps of the tradable ones, share of the detected edge kept).

        The share kept is a ratio of sums (total shadow net over total detected net, tradable fills only):
        a mean of per-fill ratios would be dominated by the opportunities detected with an edge near zero.
        """
        rows = []
        for latency in sorted(self.shadow):
            fills = self.shadow[latency]
            nets = [net for _, net, _ in fills if net is not None]
            detected = sum(d for d, net, _ in fills if net is not None)
            rows.append((latency, len(fills), sum(1 for n in nets if n > 0),
                         sum(nets) / len(nets) if nets else None, sum(nets) / detected if detected > 0 else None))
        return rows


def read_records(path: str) -> tuple[list[dict], int]:
    records, bad = [], 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            if isinstance(record, dict) and "event" in record:
                records.append(record)
            else:
                bad += 1
    return records, bad


def summarize(records: list[dict]) -> RunSummary:
    s = RunSummary()
    times = [r["time_ns"] for r in records if isinstance(r.get("time_ns"), int)]
    if times:
        s.first_ns, s.last_ns = min(times), max(times)
    for r in records:
        kind = r["event"]
        s.events[kind] += 1
        if kind == "open":
            s.opens.append((r["time_ns"], f"{r['buy_exchange']}>{r['sell_exchange']}", r["instrument"],
                            r["net_bps"], r["profit_quote"], r["instrument"].split("/")[-1]))
        elif kind == "close":
            s.closes.append((r["duration_ms"], r["peak_net_bps"], r["close_reason"]))
        elif kind == "shadow":
            for fill in r["shadow_fills"]:
                s.shadow.setdefault(fill["latency_ms"], []).append((r["net_bps"], fill["net_bps"], fill.get("reason", "")))
    return s


def render_markdown(source: str, s: RunSummary, plots: tuple[str, ...] = PLOTS) -> str:
    lines = [f"# Run report: `{os.path.basename(source)}`", ""]
    if s.first_ns:
        import datetime
        start = datetime.datetime.fromtimestamp(s.first_ns / 1e9, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"From {start} UTC, {s.duration_s:.1f} s of events.")
    counts = ", ".join(f"{s.events[k]} {k}" for k in ("open", "update", "close", "shadow"))
    lines += [f"Events: {counts}." + (f" {s.skipped_lines} unreadable lines skipped." if s.skipped_lines else ""), ""]
    profit = defaultdict(float)
    for *_, p, quote in s.opens:
        profit[quote] += p
    lines.append(f"**{len(s.opens)} opportunities opened**; expected profit at detection: "
                 + (", ".join(f"{v:.2f} {q}" for q, v in sorted(profit.items())) or "0") + ".")
    lines.append("")
    if s.opens:
        lines += ["| buy > sell | opened | median net bps | expected profit |", "|---|---:|---:|---|"]
        for pair, entry in sorted(s.pairs().items(), key=lambda kv: (-kv[1]["opens"], kv[0])):
            money = ", ".join(f"{v:.2f} {q}" for q, v in sorted(entry["profit"].items()))
            lines.append(f"| {pair} | {entry['opens']} | {nearest_rank(entry['nets'], 0.5):.2f} | {money} |")
        lines.append("")
    if s.closes:
        durations = [d for d, _, _ in s.closes]
        reasons = Counter(r for _, _, r in s.closes)
        lines.append(f"Lifetime of {len(durations)} closed (nearest rank): p50 {nearest_rank(durations, 0.5):.1f} ms, "
                     f"p90 {nearest_rank(durations, 0.9):.1f} ms, max {max(durations):.1f} ms. Closed by: "
                     + ", ".join(f"{k} {v}" for k, v in reasons.most_common()) + ".")
        lines.append("")
    rows = s.shadow_rows()
    if rows:
        lines += ["| shadow fill after | checked | still profitable | mean net bps | edge kept |",
                  "|---:|---:|---:|---:|---:|"]
        for latency, checked, profitable, mean_net, kept in rows:
            lines.append(f"| {latency:g} ms | {checked} | {profitable} ({profitable / checked:.0%}) | "
                         f"{'-' if mean_net is None else f'{mean_net:+.2f}'} | "
                         f"{'-' if kept is None else f'{kept:.0%}'} |")
        lines.append("")
        lines.append("Edge kept: the shadow fills' total net edge as a share of the total edge detected, over the "
                     "fills where both legs were tradable.")
        lines.append("")
    for name in plots:
        lines.append(f"![{name[:-4].replace('_', ' ')}]({name})")
    return "\n".join(lines) + "\n"


def plot(s: RunSummary, out_dir: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name):
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    # opportunities per pair over time
    fig, ax = plt.subplots(figsize=(8, 4.5))
    by_pair: dict[str, list[float]] = defaultdict(list)
    for t, pair, *_ in sorted(s.opens):
        by_pair[pair].append((t - s.first_ns) / 1e9)
    ranked = sorted(by_pair, key=lambda p: (-len(by_pair[p]), p))
    end_s = s.duration_s

    def steps(xs, **style):
        # from 0 at the first event to the count at the last: every pair's line spans the run
        ax.step([0.0] + xs + [end_s], [0] + list(range(1, len(xs) + 1)) + [len(xs)], where="post", **style)

    for pair in ranked[:10]:
        steps(by_pair[pair], label=f"{pair} ({len(by_pair[pair])})")
    if len(ranked) > 10:
        rest = sorted(x for p in ranked[10:] for x in by_pair[p])
        steps(rest, label=f"{len(ranked) - 10} other pairs ({len(rest)})", color="grey")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set(title="Opportunities opened per venue pair (buy>sell)", xlabel="seconds since the first event",
           ylabel="opened (cumulative)")
    if ranked:
        ax.legend(fontsize=8, loc="upper left")
    save(fig, "pairs_over_time.png")

    # edge distribution
    fig, ax = plt.subplots(figsize=(8, 4.5))
    nets = [o[3] for o in s.opens]
    peaks = [c[1] for c in s.closes]
    if nets or peaks:
        bins = _bins(nets + peaks, 30)
        ax.hist(nets, bins=bins, alpha=0.7, label=f"net at open ({len(nets)})")
        ax.hist(peaks, bins=bins, histtype="step", linewidth=2, color="tab:red",
                label=f"peak net while open ({len(peaks)})")
        ax.legend()
    ax.set(title="Edge after fees", xlabel="net bps", ylabel="opportunities")
    save(fig, "edges.png")

    # lifetime distribution
    fig, ax = plt.subplots(figsize=(8, 4.5))
    durations = [c[0] for c in s.closes if c[0] > 0]
    if durations:
        low, high = min(durations), max(durations)
        if high > low:
            edges = [low * (high / low) ** (i / 30) for i in range(31)]
            ax.hist(durations, bins=edges)
            ax.set_xscale("log")
        else:
            ax.hist(durations, bins=5)
        p50 = nearest_rank(durations, 0.5)
        ax.axvline(p50, color="black", linestyle="--", label=f"p50 {p50:.0f} ms")
        ax.legend()
    ax.set(title="Lifetime of closed opportunities", xlabel="ms", ylabel="opportunities")
    save(fig, "lifetimes.png")

    # shadow fills by latency
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.5))
    rows = s.shadow_rows()
    labels = [f"{r[0]:g} ms" for r in rows]
    left.bar(labels, [100 * r[2] / r[1] if r[1] else 0 for r in rows], color="tab:green")
    left.set(title="Still profitable after fees", ylabel="% of shadow fills", ylim=(0, 100))
    data = [[net for _, net, _ in s.shadow[r[0]] if net is not None] for r in rows]
    if any(data):
        right.boxplot([d if d else [math.nan] for d in data], tick_labels=labels, showfliers=False)
        detected = [d for d, _, _ in next(iter(s.shadow.values()))] if s.shadow else []
        if detected:
            right.axhline(nearest_rank(detected, 0.5), color="tab:blue", linestyle="--",
                          label="median edge detected")
            right.legend(fontsize=8)
        right.axhline(0, color="black", linewidth=0.8)
    right.set(title="Net edge left at each latency", ylabel="net bps")
    save(fig, "shadow.png")

    # expected profit by pair
    fig, ax = plt.subplots(figsize=(8, 4.5))
    pairs = s.pairs()
    bars = sorted(((f"{pair} ({q})", v) for pair, e in pairs.items() for q, v in e["profit"].items()),
                  key=lambda kv: kv[1])[-15:]
    if bars:
        ax.barh([b[0] for b in bars], [b[1] for b in bars], color="tab:orange")
    ax.set(title="Expected profit at detection, by pair (top 15)", xlabel="quote currency")
    save(fig, "profit_by_pair.png")
    return written


def _bins(values: list[float], n: int) -> list[float]:
    low, high = min(values), max(values)
    if high <= low:
        return [low - 0.5, low + 0.5]
    return [low + (high - low) * i / n for i in range(n + 1)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py report",
                                     description="PNG plots and a markdown summary of an opportunity file.")
    parser.add_argument("file", help="JSON-lines file written by the detector (detector.output)")
    parser.add_argument("--out", help="directory for the plots and summary.md (default: FILE-report/)")
    args = parser.parse_args(argv)
    try:
        records, bad = read_records(args.file)
    except OSError as exc:
        sys.stderr.write(f"run.py report: cannot read {args.file!r}: {exc.strerror}\n")
        return 2
    if not records:
        sys.stderr.write(f"run.py report: {args.file!r} holds no opportunity events\n")
        return 1
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.stderr.write("run.py report: the plots need matplotlib: pip install -e '.[report]'\n")
        return 2
    out_dir = args.out or os.path.splitext(args.file)[0] + "-report"
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        sys.stderr.write(f"run.py report: --out: cannot create {out_dir!r}: {exc.strerror}\n")
        return 2
    summary = summarize(records)
    summary.skipped_lines = bad
    plot(summary, out_dir)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(render_markdown(args.file, summary))
    sys.stdout.write(f"report: {len(records)} events -> {out_dir}/summary.md and {len(PLOTS)} plots\n")
    return 0
