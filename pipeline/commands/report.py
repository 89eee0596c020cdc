"""``run.py report FILE.jsonl [--run ID|all] [--out DIR]``: a run of the detector in pictures.

Reads an opportunity file (the JSON lines of ``detector.output``, live or
replayed; a link to the latest run's file is followed). A file may hold several
runs (``run.py --append``, or a file an older version appended to): records are
split by their ``run_id`` (records without one are one run, ``(no run id)``),
and one run is reported, the last unless ``--run`` names another; ``--run all``
reports every run one after another, each with its own totals and plots, so no
span or rate ever stretches over the gap between two runs. It writes into DIR
(default: ``<FILE>-report/`` beside it, named after the run's file when FILE is
a link, and ``<FILE>-<RUN>-report/`` for one run of a file holding several):

* ``pairs_over_time.png``: opportunities opened per venue pair, cumulative over time;
* ``edges.png``: net edge at open and peak net edge, distribution;
* ``lifetimes.png``: lifetime of closed opportunities, distribution (log scale);
* ``shadow.png``: shadow fills by latency: share still profitable (of the fills and of the size detected),
  and edge left against the edge detected;
* ``profit_by_pair.png``: expected profit at detection by pair (per quote currency);
* ``summary.md``: the numbers, and the plots.

With ``--run all`` each run's plots are ``run1-pairs_over_time.png``, ``run2-...``.

:func:`summarize` is a pure function of one run's records (tests compute its
numbers by hand); the plotting needs matplotlib, an optional extra:
``pip install -e '.[report]'``.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import orjson

from pipeline.detector.rules import FULL_FILL  # a shadow fill of at least this share of the size is full

PLOTS = ("pairs_over_time.png", "edges.png", "lifetimes.png", "shadow.png", "profit_by_pair.png")


def nearest_rank(values: list[float], q: float) -> float | None:
    """The nearest-rank q-quantile: the smallest value with at least q of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


LEGACY_RUN = "(no run id)"          # the run of records written before records carried a run id


def quote_of(record: dict) -> str:
    """The currency a record's prices and profit are stated in (older records: the instrument's quote)."""
    return record.get("quote_currency") or record["instrument"].split("/")[-1]


def qty_of(record: dict) -> float:
    """The detected size in the base currency (``qty_base``; older records: ``quantity``)."""
    value = record.get("qty_base", record.get("quantity"))
    return float(value) if value is not None else 0.0


@dataclass(frozen=True)
class ShadowCheck:
    """One shadow fill of one ``open``, at one latency."""

    detected_net_bps: float
    net_bps: float | None           # None: a leg was not tradable then
    reason: str
    qty_base: float                 # the size detected
    filled_qty_base: float          # what both legs could fill
    fill_fraction: float
    profit_quote: float | None      # after both fees on what filled; None when nothing filled (or older records)
    quote: str
    notional: float = 0.0           # the size detected in the quote currency (older records: in the base)

    @property
    def tradable(self) -> bool:
        return self.net_bps is not None and self.filled_qty_base > 0.0

    @property
    def profitable(self) -> bool:
        return self.tradable and self.net_bps > 0.0

    @property
    def full(self) -> bool:
        return self.tradable and self.fill_fraction >= FULL_FILL


@dataclass(frozen=True)
class ShadowRow:
    latency_ms: float
    checked: int
    full: int
    full_profitable: int
    partial: int
    partial_profitable: int
    unfilled: int                   # nothing filled, or a leg not tradable
    size_share: float | None        # filled size of the profitable fills / size detected, valued in quote
    realized: dict                  # quote currency -> profit after fees on what filled
    mean_net_bps: float | None      # over the tradable fills
    edge_kept: float | None         # total net / total detected net, tradable fills

    @property
    def profitable(self) -> int:
        return self.full_profitable + self.partial_profitable


@dataclass
class RunSummary:
    run_id: str = ""
    events: Counter = field(default_factory=Counter)
    first_ns: int = 0
    last_ns: int = 0
    opens: list = field(default_factory=list)              # (time_ns, pair, instrument, net_bps, profit, quote)
    closes: list = field(default_factory=list)             # (duration_ms, peak_net_bps, reason)
    shadow: dict = field(default_factory=dict)             # latency -> list of ShadowCheck
    flaps: int | None = None                               # sum of the closes' flaps; None: no close carried it
    legacy_sizes: bool = False                             # opens without qty_base: an older engine wrote them
    skipped_lines: int = 0

    @property
    def duration_s(self) -> float:
        return (self.last_ns - self.first_ns) / 1e9 if self.last_ns > self.first_ns else 0.0

    def profit(self) -> dict[str, float]:
        """Expected profit at detection per quote currency: the sum over the ``open`` records."""
        out: dict[str, float] = defaultdict(float)
        for *_, p, quote in self.opens:
            out[quote] += p
        return dict(out)

    def pairs(self) -> dict[str, dict]:
        """buy>sell -> {opens, profit by quote, median net bps}."""
        out: dict[str, dict] = {}
        for _, pair, _, net, profit, quote in self.opens:
            entry = out.setdefault(pair, {"opens": 0, "profit": defaultdict(float), "nets": []})
            entry["opens"] += 1
            entry["profit"][quote] += profit
            entry["nets"].append(net)
        return out

    def shadow_rows(self) -> list[ShadowRow]:
        """One row per latency: full and partial fills (each with how many were still profitable), the
        size-weighted share still profitable, the realized profit, the mean net edge and the edge kept.

        The share by size is the size the profitable fills filled over the size detected, both valued in
        the quote currency at the detected buy price, so BTC and SOL opportunities weigh by what they are
        worth (every check counts in the denominator: a fill that got nothing kept nothing). The edge kept is a ratio of
        sums (total shadow net over total detected net, tradable fills only): a mean of per-fill ratios
        would be dominated by the opportunities detected with an edge near zero.
        """
        rows = []
        for latency in sorted(self.shadow):
            checks = self.shadow[latency]
            tradable = [c for c in checks if c.tradable]
            full = [c for c in tradable if c.full]
            partial = [c for c in tradable if not c.full]
            detected = sum(c.notional for c in checks)
            realized: dict[str, float] = defaultdict(float)
            for c in checks:
                if c.profit_quote is not None:
                    realized[c.quote] += c.profit_quote
            nets = [c.net_bps for c in tradable]
            detected_net = sum(c.detected_net_bps for c in tradable)
            rows.append(ShadowRow(
                latency, len(checks), len(full), sum(1 for c in full if c.profitable), len(partial),
                sum(1 for c in partial if c.profitable), len(checks) - len(tradable),
                (sum(c.fill_fraction * c.notional for c in tradable if c.profitable) / detected
                 if detected > 0 else None),
                dict(realized), sum(nets) / len(nets) if nets else None,
                sum(nets) / detected_net if detected_net > 0 else None))
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


def split_runs(records: list[dict]) -> list[tuple[str, list[dict]]]:
    """(run id, its records) in the order the runs start in the file; records without a run id are one
    run of their own, :data:`LEGACY_RUN`."""
    runs: dict[str, list[dict]] = {}
    for r in records:
        runs.setdefault(r.get("run_id") or LEGACY_RUN, []).append(r)
    return list(runs.items())


def _shadow_check(record: dict, fill: dict, quote: str) -> ShadowCheck:
    qty = qty_of(record)
    filled = fill.get("filled_qty_base", fill.get("filled"))
    filled = float(filled) if filled is not None else 0.0
    fraction = fill.get("fill_fraction")
    if fraction is None:
        fraction = filled / qty if qty > 0 else 0.0
    return ShadowCheck(record["net_bps"], fill["net_bps"], fill.get("reason", ""), qty, filled, float(fraction),
                       fill.get("profit_quote"), quote, float(record.get("notional_quote", qty)))


def summarize(records: list[dict], run_id: str = "") -> RunSummary:
    """The numbers of one run (:func:`split_runs` first: times and totals never span two runs)."""
    s = RunSummary(run_id=run_id)
    times = [r["time_ns"] for r in records if isinstance(r.get("time_ns"), int)]
    if times:
        s.first_ns, s.last_ns = min(times), max(times)
    for r in records:
        kind = r["event"]
        s.events[kind] += 1
        if kind == "open":
            s.opens.append((r["time_ns"], f"{r['buy_exchange']}>{r['sell_exchange']}", r["instrument"],
                            r["net_bps"], r["profit_quote"], quote_of(r)))
            s.legacy_sizes |= "qty_base" not in r
        elif kind == "close":
            s.closes.append((r["duration_ms"], r["peak_net_bps"], r["close_reason"]))
            if "flaps" in r:
                s.flaps = (s.flaps or 0) + int(r["flaps"])
        elif kind == "shadow":
            quote = quote_of(r)
            for fill in r["shadow_fills"]:
                s.shadow.setdefault(fill["latency_ms"], []).append(_shadow_check(r, fill, quote))
    return s


def _money(amounts: dict[str, float]) -> str:
    return ", ".join(f"{v:.2f} {q}" for q, v in sorted(amounts.items())) or "0"


def _run_body(s: RunSummary, plots: tuple[str, ...], heading: str = "##") -> list[str]:
    """The report of one run: span, events, opportunities and profit, lifetimes and flaps, shadow fills."""
    lines = []
    if s.first_ns:
        import datetime
        start = datetime.datetime.fromtimestamp(s.first_ns / 1e9, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"From {start} UTC, {s.duration_s:.1f} s of events.")
    counts = ", ".join(f"{s.events[k]} {k}" for k in ("open", "update", "close", "shadow"))
    lines += [f"Events: {counts}." + (f" {s.skipped_lines} unreadable lines skipped." if s.skipped_lines else ""), ""]
    if s.legacy_sizes:      # an older engine: two open opportunities could count the same liquidity
        lines.append(f"**{len(s.opens)} opportunities opened**; expected profit at detection: {_money(s.profit())} "
                     "(older records: liquidity two open opportunities shared counts for each).")
    else:
        lines.append(f"**{len(s.opens)} opportunities opened**; expected profit at detection, over liquidity no "
                     f"two open opportunities share: {_money(s.profit())}.")
    lines.append("")
    if s.opens:
        lines += ["| buy > sell | opened | median net bps | expected profit |", "|---|---:|---:|---|"]
        for pair, entry in sorted(s.pairs().items(), key=lambda kv: (-kv[1]["opens"], kv[0])):
            lines.append(f"| {pair} | {entry['opens']} | {nearest_rank(entry['nets'], 0.5):.2f} | "
                         f"{_money(entry['profit'])} |")
        lines.append("")
    if s.closes:
        durations = [d for d, _, _ in s.closes]
        reasons = Counter(r for _, _, r in s.closes)
        lines.append(f"Lifetime of {len(durations)} closed (nearest rank): p50 {nearest_rank(durations, 0.5):.1f} ms, "
                     f"p90 {nearest_rank(durations, 0.9):.1f} ms, max {max(durations):.1f} ms. Closed by: "
                     + ", ".join(f"{k} {v}" for k, v in reasons.most_common()) + ".")
        lines.append("")
    if s.flaps is not None:
        lines.append(f"Flaps: {s.flaps} (an open opportunity's edge dropped out and came back within "
                     "`detector.reopen_ms`; counted on its close).")
        lines.append("")
    rows = s.shadow_rows()
    if rows:
        lines += ["| shadow fill after | checked | full fills profitable/all | partial fills profitable/all | "
                  "nothing filled | still profitable, by size | realized profit | mean net bps | edge kept |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in rows:
            lines.append(f"| {row.latency_ms:g} ms | {row.checked} | {row.full_profitable}/{row.full} | "
                         f"{row.partial_profitable}/{row.partial} | {row.unfilled} | "
                         f"{'-' if row.size_share is None else f'{row.size_share:.0%}'} | "
                         f"{_money(row.realized) if row.realized else '-'} | "
                         f"{'-' if row.mean_net_bps is None else f'{row.mean_net_bps:+.2f}'} | "
                         f"{'-' if row.edge_kept is None else f'{row.edge_kept:.0%}'} |")
        lines.append("")
        lines.append(f"Full fills: both legs could take the whole size detected (fill fraction >= {FULL_FILL:.6f}); "
                     "partial: only part of it; profitable: net edge after both fees above zero. Still profitable, "
                     "by size: the size the profitable fills filled as a share of the size detected, both valued "
                     "at the "
                     "detected buy price. Realized "
                     "profit: after both fees, on what filled. Edge kept: the shadow fills' total net edge as a "
                     "share of the total edge detected, over the fills where both legs were tradable.")
        lines.append("")
    for name in plots:
        lines.append(f"![{_plot_title(name)}]({name})")
    return lines


def _plot_title(name: str) -> str:
    base = name[:-4]
    if base.startswith("run") and "-" in base:
        base = base.split("-", 1)[1]
    return base.replace("_", " ")


def render_markdown(source: str, s: RunSummary, plots: tuple[str, ...] = PLOTS, runs: int = 1,
                    resolved: str = "") -> str:
    """summary.md for one run of a file holding ``runs`` runs (the last one unless ``--run`` chose)."""
    lines = [f"# Run report: {_source_name(source, resolved)}", ""]
    if runs > 1:
        lines += [f"Run `{s.run_id}`, one of the {runs} runs in the file (by default the last; `--run ID` "
                  "chooses another, `--run all` reports every one).", ""]
    elif s.run_id and s.run_id != LEGACY_RUN:
        lines += [f"Run `{s.run_id}`.", ""]
    return "\n".join(lines + _run_body(s, plots)) + "\n"


def render_markdown_all(source: str, summaries: list[RunSummary], plots: list[tuple[str, ...]],
                        skipped_lines: int = 0, resolved: str = "") -> str:
    """summary.md for ``--run all``: a line of totals per run, then each run's report, one after another."""
    lines = [f"# Run report: {_source_name(source, resolved)}", "",
             f"{len(summaries)} runs in the file, each reported on its own (`--run all`)."
             + (f" {skipped_lines} unreadable lines skipped." if skipped_lines else ""), "",
             "| run | from (UTC) | s of events | events | opened | expected profit | flaps |",
             "|---|---|---:|---:|---:|---|---:|"]
    import datetime
    for s in summaries:
        start = (datetime.datetime.fromtimestamp(s.first_ns / 1e9, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
                 if s.first_ns else "-")
        lines.append(f"| `{s.run_id}` | {start} | {s.duration_s:.1f} | {sum(s.events.values())} | {len(s.opens)} | "
                     f"{_money(s.profit())} | {'-' if s.flaps is None else s.flaps} |")
    lines.append("")
    for n, (s, names) in enumerate(zip(summaries, plots), 1):
        lines += [f"## Run `{s.run_id}` ({n} of {len(summaries)})", ""] + _run_body(s, names) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _source_name(source: str, resolved: str) -> str:
    name = f"`{os.path.basename(source)}`"
    if resolved and os.path.basename(resolved) != os.path.basename(source):
        name = f"`{os.path.basename(resolved)}` (via `{os.path.basename(source)}`)"
    return name


def plot(s: RunSummary, out_dir: str, prefix: str = "") -> list[str]:
    """The five PNGs of one run, named ``prefix + name``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name):
        fig.tight_layout()
        path = os.path.join(out_dir, prefix + name)
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
    labels = [f"{r.latency_ms:g} ms" for r in rows]
    where = list(range(len(rows)))
    left.bar([x - 0.2 for x in where], [100 * r.profitable / r.checked if r.checked else 0 for r in rows], 0.4,
             color="tab:green", label="of the fills")
    left.bar([x + 0.2 for x in where], [100 * (r.size_share or 0.0) for r in rows], 0.4, color="tab:olive",
             label="of the size detected")
    left.set_xticks(where, labels)
    left.set(title="Still profitable after fees", ylabel="%", ylim=(0, 100))
    if rows:
        left.legend(fontsize=8)
    data = [[c.net_bps for c in s.shadow[r.latency_ms] if c.tradable] for r in rows]
    if any(data):
        right.boxplot([d if d else [math.nan] for d in data], tick_labels=labels, showfliers=False)
        detected = [c.detected_net_bps for c in next(iter(s.shadow.values()))] if s.shadow else []
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


def _safe(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id).strip("-") or "run"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py report",
                                     description="PNG plots and a markdown summary of an opportunity file. A file "
                                                 "may hold several runs (records carry their run id): the last "
                                                 "one is reported unless --run says otherwise.")
    parser.add_argument("file", help="JSON-lines file written by the detector (detector.output: a link to the "
                                     "latest run's file, which is followed)")
    parser.add_argument("--run", metavar="ID|all",
                        help="the run to report (default: the last in the file); `all`: every run, one after "
                             "another, each with its own totals and plots")
    parser.add_argument("--out", help="directory for the plots and summary.md (default: beside FILE, named after "
                                      "the file read (for a link: the run's file): NAME-report/, or "
                                      "NAME-RUN-report/ for one run of a file holding several)")
    parser.add_argument("--no-plots", action="store_true",
                        help="summary.md only: no PNGs, and no need of matplotlib (the `report` extra)")
    args = parser.parse_args(argv)
    try:
        records, bad = read_records(args.file)
    except OSError as exc:
        sys.stderr.write(f"run.py report: cannot read {args.file!r}: {exc.strerror}\n")
        return 2
    if not records:
        sys.stderr.write(f"run.py report: {args.file!r} holds no opportunity events\n")
        return 1
    runs = split_runs(records)
    if args.run is None:
        chosen = [runs[-1]]
    elif args.run == "all":
        chosen = runs
    else:
        chosen = [run for run in runs if run[0] == args.run]
        if not chosen:
            sys.stderr.write(f"run.py report: --run: no run {args.run!r} in {args.file!r} (it holds "
                             + ", ".join(run_id for run_id, _ in runs) + ")\n")
            return 2
    plots = not args.no_plots
    shown = PLOTS if plots else ()             # the plots summary.md shows
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sys.stderr.write("run.py report: the plots need matplotlib: pip install -e '.[report]' "
                             "(or --no-plots for summary.md alone)\n")
            return 2
    resolved = os.path.realpath(args.file) if os.path.islink(args.file) else args.file
    stem = os.path.join(os.path.dirname(args.file), os.path.splitext(os.path.basename(resolved))[0])
    if len(chosen) == 1 and len(runs) > 1:
        stem += "-" + _safe(chosen[0][0])
    out_dir = args.out or stem + "-report"
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        sys.stderr.write(f"run.py report: --out: cannot create {out_dir!r}: {exc.strerror}\n")
        return 2
    held = f"report: {args.file} holds {len(runs)} run{'s' if len(runs) != 1 else ''}; "
    if len(chosen) == 1:
        run_id, run_records = chosen[0]
        sys.stdout.write(held + f"reporting run {run_id} ({len(run_records)} events)"
                         + ("; --run ID or --run all" if len(runs) > 1 else "") + "\n")
        summary = summarize(run_records, run_id)
        summary.skipped_lines = bad
        if plots:
            plot(summary, out_dir)
        names = [shown]
        markdown = render_markdown(args.file, summary, shown, runs=len(runs), resolved=resolved)
    else:
        sys.stdout.write(held + f"reporting all {len(runs)}, one after another ({len(records)} events)\n")
        summaries = [summarize(run_records, run_id) for run_id, run_records in chosen]
        names = [tuple(f"run{n}-{name}" for name in shown) for n in range(1, len(summaries) + 1)]
        if plots:
            for n, summary in enumerate(summaries, 1):
                plot(summary, out_dir, f"run{n}-")
        markdown = render_markdown_all(args.file, summaries, names, bad, resolved=resolved)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(markdown)
    events = sum(len(run_records) for _, run_records in chosen)
    n_plots = sum(map(len, names))
    sys.stdout.write(f"report: {events} events -> {out_dir}/summary.md and {n_plots} plots\n" if n_plots
                     else f"report: {events} events -> {out_dir}/summary.md (no plots)\n")
    return 0
