"""What the detector writes: JSON-lines records, readable lines, the exit summary.

The record schema is documented in the README (keep the two in step).
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field

from pipeline.detector.lifecycle import Event
from pipeline.detector.rules import ShadowFill


_ISO_SECOND = [None, ""]       # the last whole second formatted, and its text


def iso(now_ns: int) -> str:
    """``2026-11-29T08:00:00.123457Z``: what ``datetime.fromtimestamp(now_ns / 1e9, utc).isoformat()`` gives,
    with the same rounding to the microsecond, but the date and time formatted once per second (this is on
    the path from a board change to an emitted event)."""
    frac, whole = math.modf(now_ns / 1e9)
    us = round(frac * 1e6)                  # half-even, as datetime rounds a float timestamp
    if us >= 1_000_000:
        us -= 1_000_000
        whole += 1.0
    cache = _ISO_SECOND
    if cache[0] != whole:
        cache[0] = whole
        cache[1] = datetime.datetime.fromtimestamp(whole, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{cache[1]}.{us:06d}Z"


def event_record(event: Event, now_ns: int, fees_bps: dict[str, float], buy_offset_ns: int = 0,
                 sell_offset_ns: int = 0) -> dict:
    """The JSON-lines object for one lifecycle event."""
    c = event.candidate
    fill = c.fill
    record = {
        "event": event.kind,
        "time": iso(now_ns),
        "time_ns": now_ns,
        "instrument": c.instrument,
        "buy_exchange": c.buy.venue,
        "sell_exchange": c.sell.venue,
        "buy_price": fill.buy_price,
        "sell_price": fill.sell_price,
        "quantity": fill.quantity,
        "gross_bps": round(fill.gross_bps, 4),
        "net_bps": round(fill.net_bps, 4),
        "fees_bps": round(fill.fees_bps, 4),
        "buy_fee_bps": fees_bps[c.buy.venue],
        "sell_fee_bps": fees_bps[c.sell.venue],
        "profit_quote": round(fill.profit_quote, 6),
        "buy_quote_age_ms": round((now_ns - c.buy.recv_ns) / 1e6, 3),
        "sell_quote_age_ms": round((now_ns - c.sell.recv_ns) / 1e6, 3),
        "best_ask": c.buy.asks[0][0],
        "best_bid": c.sell.bids[0][0],
    }
    # exchange-time age, corrected by the feed's clock-offset estimate (only where the exchange sends a time)
    if c.buy.exch_ts_ns:
        record["buy_exchange_age_ms"] = round((now_ns - c.buy.exch_ts_ns - buy_offset_ns) / 1e6, 3)
    if c.sell.exch_ts_ns:
        record["sell_exchange_age_ms"] = round((now_ns - c.sell.exch_ts_ns - sell_offset_ns) / 1e6, 3)
    if event.kind == "close":
        record["duration_ms"] = round(event.duration_ms, 3)
        record["peak_net_bps"] = round(event.peak_net_bps, 4)
        record["peak_profit_quote"] = round(event.peak_profit, 6)
        record["close_reason"] = event.close_reason
    return record


def shadow_record(opened: Event, fills: list[ShadowFill], now_ns: int) -> dict:
    """Follow-up of an ``open``: the shadow fills at every configured latency."""
    c = opened.candidate
    return {
        "event": "shadow",
        "time": iso(now_ns),
        "time_ns": now_ns,
        "opened_time_ns": opened.now_ns,
        "instrument": c.instrument,
        "buy_exchange": c.buy.venue,
        "sell_exchange": c.sell.venue,
        "quantity": c.fill.quantity,
        "net_bps": round(c.fill.net_bps, 4),
        "shadow_fills": [f.as_dict() for f in fills],
    }


def event_line(record: dict, verbose: bool = False) -> str | None:
    """The readable stdout line for one record, or None when it shows only with ``--verbose``.

    By default only ``open`` and ``close`` print, one short line each; a ``close`` carries the
    shadow-fill outcome of its ``open`` when that ``shadow`` record came first (the shadow is
    remembered here, keyed by instrument and pair, whether or not it is printed). ``--verbose``
    prints every record in full, ``update`` and ``shadow`` included.
    """
    kind = record["event"]
    if kind == "shadow":
        outcome = shadow_outcome(record["shadow_fills"])
        _remember_shadow((record["instrument"], record["buy_exchange"], record["sell_exchange"]), outcome)
        if not verbose:
            return None
        return (f"SHADOW {record['instrument']:10} buy {record['buy_exchange']} sell {record['sell_exchange']} "
                f"detected {record['net_bps']:.2f} bps -> {outcome}")
    shadow = None
    if kind == "close":
        shadow = _RECENT_SHADOWS.pop((record["instrument"], record["buy_exchange"], record["sell_exchange"]), None)
    if not verbose:
        if kind == "open":
            return (f"OPEN  {record['instrument']:10} buy {record['buy_exchange']:8} sell {record['sell_exchange']:8} "
                    f"net {record['net_bps']:6.2f} bps  qty {record['quantity']:.4g}  "
                    f"profit {record['profit_quote']:.4g}")
        if kind == "close":
            line = (f"CLOSE {record['instrument']:10} buy {record['buy_exchange']:8} sell {record['sell_exchange']:8} "
                    f"after {_duration(record['duration_ms'])} peak {record['peak_net_bps']:.2f} bps "
                    f"({record['close_reason']})")
            return line + (f"  shadow {shadow}" if shadow else "")
        return None
    base = (f"{kind.upper():6} {record['instrument']:10} buy {record['buy_exchange']} @ "
            f"{record['buy_price']:.6g} sell {record['sell_exchange']} @ {record['sell_price']:.6g} "
            f"qty {record['quantity']:.6g} gross {record['gross_bps']:.2f} bps net {record['net_bps']:.2f} bps "
            f"profit {record['profit_quote']:.4g}")
    if kind == "close":
        base += f" after {record['duration_ms']:.1f} ms ({record['close_reason']})"
        if shadow:
            base += f" shadow {shadow}"
    return base


def shadow_outcome(fills: list[dict]) -> str:
    """``5ms +5.98bps, 20ms +6.82bps, 50ms quote_stale``: the edge left at each latency."""
    return ", ".join(f"{f['latency_ms']:g}ms " + (f"{f['net_bps']:+.2f}bps" if f["net_bps"] is not None
                                                   else (f["reason"] or "none"))
                     for f in fills)


def _duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


# (instrument, buy, sell) -> shadow outcome text, until the close that follows it; bounded so
# opportunities that never close (shutdown) cannot grow it without limit
_RECENT_SHADOWS: dict[tuple[str, str, str], str] = {}
_RECENT_SHADOWS_MAX = 4096


def _remember_shadow(key: tuple[str, str, str], outcome: str) -> None:
    _RECENT_SHADOWS.pop(key, None)
    _RECENT_SHADOWS[key] = outcome
    while len(_RECENT_SHADOWS) > _RECENT_SHADOWS_MAX:
        del _RECENT_SHADOWS[next(iter(_RECENT_SHADOWS))]


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


@dataclass
class Summary:
    """Totals for the exit summary."""

    opens: int = 0
    suspects: int = 0
    by_pair: dict = field(default_factory=dict)
    profit_by_quote: dict = field(default_factory=dict)
    durations_ms: list = field(default_factory=list)
    shadow_by_latency: dict = field(default_factory=dict)   # latency -> [checked, profitable, sum net bps]

    def opened(self, record: dict) -> None:
        self.opens += 1
        pair = (record["buy_exchange"], record["sell_exchange"])
        self.by_pair[pair] = self.by_pair.get(pair, 0) + 1
        quote = record["instrument"].split("/")[1]
        self.profit_by_quote[quote] = self.profit_by_quote.get(quote, 0.0) + record["profit_quote"]

    def closed(self, record: dict) -> None:
        self.durations_ms.append(record["duration_ms"])

    def shadow(self, fill: ShadowFill) -> None:
        totals = self.shadow_by_latency.setdefault(fill.latency_ms, [0, 0, 0.0])
        totals[0] += 1
        if fill.net_bps is not None:
            totals[2] += fill.net_bps
            if fill.net_bps > 0:
                totals[1] += 1

    def render(self) -> str:
        profit = ", ".join(f"{v:.4f} {q}" for q, v in sorted(self.profit_by_quote.items())) or "0"
        lines = [f"detector summary: {self.opens} opportunities opened; expected profit at detection: {profit}"]
        for (buy, sell), n in sorted(self.by_pair.items(), key=lambda kv: -kv[1]):
            lines.append(f"  buy {buy:9} sell {sell:9} {n}")
        if self.durations_ms:
            d = sorted(self.durations_ms)
            lines.append(f"  lifetime ms: p50 {_pct(d, 0.5):.1f} p90 {_pct(d, 0.9):.1f} max {d[-1]:.1f} "
                         f"({len(d)} closed)")
        for latency, (checked, profitable, net_sum) in sorted(self.shadow_by_latency.items()):
            lines.append(f"  shadow fill after {latency:g} ms: {profitable}/{checked} still profitable, "
                         f"mean realized net {net_sum / checked if checked else 0.0:+.2f} bps")
        if self.suspects:
            lines.append(f"  {self.suspects} suspected data/mapping errors (edge above the sanity bound) not reported")
        return "\n".join(lines)
