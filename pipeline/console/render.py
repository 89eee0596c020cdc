"""The console screen as a pure function of (board snapshot, events, now).

:func:`render` returns a :class:`rich.text.Text` (colours for the terminal);
:func:`render_text` its plain text, which is what the tests compare. Everything
is laid out for an 80x24 terminal first: one instrument's quotes and edge
matrix at a time (``f``/``b`` choose it), the venues and the opportunities side
by side below, one line of alerts.
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from rich.text import Text

from pipeline.console.events import EventBook
from pipeline.console.snapshot import Quote, Snapshot
from pipeline.detector.rules import FULL_FILL

STATE_STYLE = {"live": "green", "stale": "yellow", "resyncing": "magenta", "disconnected": "red",
               "halted": "bold red", "crossed": "yellow", "rejected": "red", "syncing": "cyan", "empty": "dim",
               "no_rules": "bold red"}
STATE_SHORT = {"resyncing": "resync", "disconnected": "discon", "rejected": "reject", "syncing": "sync",
               "crossed": "crossd", "no_rules": "norule"}


@dataclass(frozen=True)
class View:
    """What the keys choose: the instrument shown, paused or not, the terminal size."""

    instrument: str | None = None
    paused: bool = False
    width: int = 80
    height: int = 24


def render_text(snapshot: Snapshot, events: EventBook, now_ns: int, view: View = View()) -> str:
    return render(snapshot, events, now_ns, view).plain


def render(snapshot: Snapshot, events: EventBook, now_ns: int, view: View = View()) -> Text:
    instrument = view.instrument if view.instrument in snapshot.instruments else (
        snapshot.instruments[0] if snapshot.instruments else None)
    lines: list[Text] = [_header(snapshot, events, now_ns, view)]
    quotes = [q for q in snapshot.quotes if q.instrument == instrument]
    if instrument is not None:
        position = f"[{snapshot.instruments.index(instrument) + 1}/{len(snapshot.instruments)}]"
        lines += _quotes(instrument, position, quotes, snapshot.taken_ns)
        lines += _matrix(instrument, quotes, snapshot, events)
    lines += _bottom(snapshot, events, now_ns, view.width, max(0, view.height - len(lines) - 2))
    alerts = check_alerts(snapshot)
    lines.append(Text("alerts: " + "; ".join(alerts), style="bold red") if alerts else Text("alerts: none",
                                                                                             style="dim"))
    lines.append(Text("f/b next/previous instrument   p pause   q quit", style="dim"))
    if len(lines) > view.height:         # the alerts and keys lines stay; the venue/opportunity block is cut
        lines = lines[:view.height - 2] + lines[-2:]
    out = Text("\n").join(line[:view.width] if len(line) > view.width else line for line in lines)
    out.no_wrap = True
    return out


# ------------------------------------------------------------------ sections
def _header(snapshot: Snapshot, events: EventBook, now_ns: int, view: View) -> Text:
    feeds = snapshot.feeds
    live = sum(1 for q in snapshot.quotes if q.status == "live")
    rate = sum(p.messages_per_s for p in feeds if p.messages_per_s is not None)
    clock = datetime.datetime.fromtimestamp(now_ns / 1e9, datetime.UTC).strftime("%H:%M:%S")
    text = Text(f"{snapshot.board[:16]} {clock}", style="bold")
    text.append(f"  live {live}/{len(snapshot.quotes)}  {rate:.0f} msg/s  {len(events.open)} open")
    detector = snapshot.detector
    if detector is not None and detector.hop_p50_us is not None:
        text.append(f"  e2e p50/p99 {_us(detector.hop_p50_us)}/{_us(detector.hop_p99_us)}µs")
    if view.paused:
        text.append("  PAUSED", style="bold reverse")
    return text


def _quotes(instrument: str, position: str, quotes: list[Quote], taken_ns: int) -> list[Text]:
    head = f"{instrument} {position}"
    lines = [Text(f"{head:15} {'bid':>9} {'qty':>6} {'ask':>9} {'qty':>6} {'mid':>9} {'sprd':>5} {'imb':>5} "
                  f"{'age':>5}", style="bold")]
    top = max((p for q in quotes for p in (q.bid_px, q.ask_px) if p > 0 and math.isfinite(p)), default=1.0)
    decimals = max(0, min(8, 6 - int(math.floor(math.log10(top)))))     # one scale for the whole column
    for q in quotes:
        line = Text(f"{q.venue[:8]:8} ")
        line.append(f"{STATE_SHORT.get(q.status, q.status)[:6]:6}", style=STATE_STYLE.get(q.status, "bold"))
        spread, imbalance = q.spread_bps, q.imbalance
        age = _age((taken_ns - q.recv_ns) / 1e6) if q.recv_ns else "-"
        line.append(f" {_px(q.bid_px, decimals):>9} {_qty(q.bid_qty):>6} {_px(q.ask_px, decimals):>9} "
                    f"{_qty(q.ask_qty):>6} {_px(q.mid, decimals):>9} {'-' if spread is None else f'{spread:.2f}':>5} "
                    f"{'-' if imbalance is None else f'{imbalance:+.2f}':>5} {age:>5}")
        lines.append(line)
    return lines


def edge_bps(buy: Quote, sell: Quote, buy_fee_bps: float, sell_fee_bps: float) -> float | None:
    """Net edge after both taker fees at the top of the two books: buy at ``buy``'s ask, sell into ``sell``'s bid."""
    if buy.status != "live" or sell.status != "live" or buy.ask_px <= 0 or sell.bid_px <= 0:
        return None
    return (sell.bid_px - buy.ask_px) / buy.ask_px * 1e4 - buy_fee_bps - sell_fee_bps


def _matrix(instrument: str, quotes: list[Quote], snapshot: Snapshot, events: EventBook) -> list[Text]:
    if len(quotes) < 2:
        return []
    head = Text(f"{'net bps buy/sell':15}", style="bold")
    for q in quotes:
        head.append(f" {q.venue[:7]:>7}", style="bold")
    lines = [head]
    for buy in quotes:
        line = Text(f"{buy.venue[:15]:15}")
        for sell in quotes:
            if sell is buy:
                line.append(f" {'·':>7}", style="dim")
                continue
            edge = edge_bps(buy, sell, snapshot.fee(buy.venue, instrument), snapshot.fee(sell.venue, instrument))
            is_open = (instrument, buy.venue, sell.venue) in events.open
            cell = "-" if edge is None else f"{edge:+.1f}"
            if is_open:
                line.append(f" {'*' + cell:>7}", style="bold black on green")
            else:
                line.append(f" {cell:>7}", style="green" if edge is not None and edge > 0 else "")
        lines.append(line)
    return lines


LEFT_WIDTH = 38      # the venue table; the opportunities take the rest of the width


def _bottom(snapshot: Snapshot, events: EventBook, now_ns: int, width: int, room: int) -> list[Text]:
    """Venues on the left; open opportunities, then the last closes, on the right, in ``room`` lines."""
    left = [Text(f"{'venue':7} {'msg/s':>5} {'rcn':>3} {'gap':>3} {'lagms':>5} {'p50/p99µs':>9}", style="bold")]
    for p in snapshot.feeds:
        rate = "-" if p.messages_per_s is None else f"{p.messages_per_s:.0f}"
        hop = "-" if p.hop_p50_us is None else f"{_us(p.hop_p50_us)}/{_us(p.hop_p99_us)}"
        left.append(Text(f"{p.name[:7]:7} {rate:>5} {p.reconnects:>3} {min(p.gaps, 999):>3} {_lag(p.lag_ms):>5} "
                         f"{hop:>9}", style="red" if p.restarted_recently else "yellow" if p.behind else ""))
    right_width = max(0, width - LEFT_WIDTH)
    n = 6 if right_width >= 46 else 5                # venue names in a pair
    title = f"open {len(events.open)} flaps {events.counts['flaps']}"
    legend = next((t for t in (" (net/peak bps, size, age)", " (net/peak, size, age)")
                   if len(title) + len(t) <= right_width), "")
    right = [Text(title + legend, style="bold")]
    # an instrument is never cut (SHIB/USDT cut to SHIB/USD is another instrument): its column is as wide as the
    # widest shown; the venue names and the tail of the line give way instead
    w = max([8, *(len(o.instrument) for o in events.open.values()), *(len(c.instrument) for c in events.closes)])
    for opp in sorted(events.open.values(), key=lambda o: -o.net_bps):
        pair = f"{opp.buy[:n]}>{opp.sell[:n]}"
        head, age = f"{opp.instrument:{w}} {pair:{2 * n + 1}}", _age((now_ns - opp.opened_ns) / 1e6)
        # a cut figure reads as another one (738ms cut to 738m is minutes): the peak, then the size give way
        line = next((t for t in (f"{head} {opp.net_bps:.1f}/{opp.peak_net_bps:.1f} {_qty(opp.qty_base)} {age}",
                                 f"{head} {opp.net_bps:.1f} {_qty(opp.qty_base)} {age}",
                                 f"{head} {opp.net_bps:.1f} {age}") if len(t) <= right_width),
                    f"{head} {opp.net_bps:.1f} {age}")
        right.append(Text(line, style="bold green"))
    right.append(Text("closed (lifetime, peak, shadow fill)", style="bold"))
    for closed in events.closes:
        pair = f"{closed.buy[:n]}>{closed.sell[:n]}"
        line = (f"{closed.instrument:{w}} {pair:{2 * n + 1}} {_age(closed.duration_ms):>5} "
                f"{closed.peak_net_bps:.1f} {_shadow(closed.shadow)}")
        partial = _partial(closed.shadow)
        if partial and len(line) + 1 + len(partial) <= right_width:
            right.append(Text(f"{line} {partial}"))
        else:
            right.append(Text(line))
            if partial:          # too narrow for one line: under it, where the shadow fill is
                right.append(Text(f"{'':{max(0, len(line) - len(_shadow(closed.shadow)))}}{partial}",
                                  style="yellow"))
    lines = []
    for i in range(min(room, max(len(left), len(right)))):
        line = left[i].copy() if i < len(left) else Text("")
        if i < len(right):
            line.pad_right(LEFT_WIDTH - len(line))
            line.append_text(right[i][:right_width])
        lines.append(line)
    return lines


def check_alerts(snapshot: Snapshot) -> list[str]:
    """What needs a person's eyes: venues not live, gap storms, processes restarting or silent."""
    alerts = []
    by_venue: dict[str, list[str]] = {}
    for q in snapshot.quotes:
        if q.status != "live":
            by_venue.setdefault(q.venue, []).append(q.status)
    for venue, states in by_venue.items():
        alerts.append(f"{venue} " + ",".join(f"{s}x{states.count(s)}" if states.count(s) > 1 else s
                                              for s in dict.fromkeys(states)))
    for p in snapshot.processes:
        if p.gaps_per_s is not None and p.gaps_per_s >= 1.0:
            alerts.append(f"{p.name} gap storm {p.gaps_per_s:.0f}/s")
        if p.restarted_recently:
            alerts.append(f"{p.name} restarted ({p.restarts}x)")
        if p.record_dropped:
            alerts.append(f"{p.name} recording failing ({p.record_dropped} frames)")
        if p.schema_fallbacks:
            alerts.append(f"{p.name} wire format changed ({p.schema_fallbacks} frames with unknown fields)")
        if p.behind:
            alerts.append(f"{p.name} behind {p.backlog_wait_ms / 1000:.1f}s ({p.backlog_frames} queued, "
                          f"{p.late_frames} late)")
        if p.heartbeat_age_ms is not None and p.heartbeat_age_ms > 2000:
            alerts.append(f"{p.name} silent {p.heartbeat_age_ms / 1000:.0f}s")
        alerts.extend(path_alerts(p, sum(1 for q in snapshot.quotes if q.venue == p.name)))
    return alerts


def path_alerts(p, rows: int) -> list[str]:
    """A feed on redundant connections: each path that holds fewer of its rows trusted than the venue has (the
    rows stay live from the other paths, so the board cannot show it)."""
    n = getattr(p, "paths", 0)
    if n < 2 or not rows or not getattr(p, "pid", 0):
        return []
    return [f"{p.name} path {path}: {p.path_live_rows[path]}/{rows} rows trusted (the other paths carry them)"
            for path in range(n) if p.path_live_rows[path] < rows]


# ------------------------------------------------------------------ formats
def _px(px: float | None, decimals: int) -> str:
    if px is None or px <= 0 or not math.isfinite(px):
        return "-"
    return f"{px:.{decimals}f}"[:9]


def _qty(qty: float) -> str:
    if qty <= 0:
        return "-"
    if qty >= 1e6:
        return f"{qty / 1e6:.1f}M"
    if qty >= 1e4:
        return f"{qty / 1e3:.0f}k"
    text = f"{qty:.4g}"
    return text if len(text) <= 6 else f"{qty:.3g}"[:6]


def _age(ms: float) -> str:
    ms = max(0.0, ms)
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.0f}m"
    return f"{ms / 3_600_000:.0f}h"


def _lag(ms: float | None) -> str:
    """A venue's exchange-time lag in 5 characters: ``12``, ``1234``, ``12s``, ``3h``; ``-`` without exchange times."""
    if ms is None:
        return "-"
    if abs(ms) < 10_000:
        return f"{round(ms)}"
    if abs(ms) < 10_000_000:
        return f"{round(ms / 1000)}s"
    return f"{round(ms / 3_600_000)}h"[:5]


def _us(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us:.0f}" if us < 10_000 else f"{us / 1000:.0f}k"


def _shadow(shadow: tuple | None) -> str:
    """The net edge a shadow fill at the longest latency got, ``17.7@50ms``; ``x`` when a leg was not tradable."""
    if not shadow:
        return ""
    latency, net = shadow[-1][:2]
    return f"{'x' if net is None else f'{net:.1f}'}@{latency:g}ms"


def _partial(shadow: tuple | None) -> str:
    """``14% filled`` when the shadow fill at the longest latency filled only part of the size detected."""
    if not shadow:
        return ""
    _, net, _, fraction = shadow[-1]
    if net is None or fraction is None or fraction >= FULL_FILL:
        return ""
    return f"{min(99, max(1, round(fraction * 100)))}% filled"
