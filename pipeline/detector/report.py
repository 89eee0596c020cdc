"""What the detector writes: JSON-lines records, readable lines, the exit summary.

The record schema is documented in the README (keep the two in step).
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from functools import lru_cache

from pipeline.detector.lifecycle import Event
from pipeline.detector.rules import FULL_FILL, ShadowFill, sig
from pipeline.model import InstrumentRules

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
        cache[1] = datetime.datetime.fromtimestamp(whole, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{cache[1]}.{us:06d}Z"


def _labels(c, currency: tuple[str, str]) -> tuple[str, str]:
    """(instrument, quote currency) a record names: the legs' own when both trade one instrument, else the
    compared group's (``currency`` is its (base, quote))."""
    if c.buy.instrument and c.buy.instrument == c.sell.instrument:
        return c.buy.instrument, c.buy.instrument.split("/")[1]
    return c.instrument, currency[1]


RULES_FIELDS = ("tick", "step", "min_qty", "min_notional", "max_qty", "max_notional")


def rules_fields(rules: InstrumentRules) -> dict:
    """One leg's trading rules as an event carries them: each bound as the text of its exact Decimal
    (``"0.01"``), None where the venue states none (``max_qty``, ``max_notional``)."""
    return dict(_rules_items(rules))


@lru_cache(maxsize=1024)
def _rules_items(rules: InstrumentRules) -> tuple:
    return tuple((name, None if getattr(rules, name) is None else str(getattr(rules, name))) for name in RULES_FIELDS)


def event_record(event: Event, now_ns: int, fees_bps: dict[str, float], currency: tuple[str, str],
                 buy_offset_ns: int = 0, sell_offset_ns: int = 0, fee_source: dict[str, str] | None = None) -> dict:
    """The JSON-lines object for one lifecycle event (fields and units: the README's event table).

    ``currency``: (base, the currency profit is stated in) of the compared instrument. Prices and
    quantities carry 10 significant digits (a volume-weighted price is not on the venue's tick). A
    candidate sized to its legs' rules also carries each leg's limit price (on the venue's tick) and, on
    ``open``, the rules themselves, so the event says on its own which orders would have been sent.
    ``fee_source`` (leg -> ``"account"`` / ``"config"``): where each leg's fee came from, carried as
    ``buy_fee_source`` / ``sell_fee_source`` (the account's, as its feed looked it up, or the configured one).
    """
    c = event.candidate
    fill = c.fill
    buy, sell = c.buy, c.sell
    instrument, quote_currency = _labels(c, currency)
    record = {
        "event": event.kind,
        "id": event.id,
        "time": iso(now_ns),
        "time_ns": now_ns,
        "instrument": instrument,
        "buy_exchange": buy.venue,
        "sell_exchange": sell.venue,
        "buy_instrument": buy.instrument or c.instrument,
        "sell_instrument": sell.instrument or c.instrument,
        "base_currency": currency[0],
        "quote_currency": quote_currency,
        "buy_price": sig(fill.buy_price),
        "sell_price": sig(fill.sell_price),
        "qty_base": sig(fill.quantity),
        "gross_bps": round(fill.gross_bps, 4),
        "net_bps": round(fill.net_bps, 4),
        "fees_bps": round(fill.fees_bps, 4),
        "buy_fee_bps": fees_bps[c.key[1]],
        "sell_fee_bps": fees_bps[c.key[2]],
        "buy_fee_source": fee_source.get(c.key[1], "config") if fee_source else "config",
        "sell_fee_source": fee_source.get(c.key[2], "config") if fee_source else "config",
        "profit_quote": round(fill.profit_quote, 6),
        "buy_quote_age_ms": round((now_ns - buy.recv_ns) / 1e6, 3),
        "sell_quote_age_ms": round((now_ns - sell.recv_ns) / 1e6, 3),
        "best_ask": buy.asks[0][0],
        "best_bid": sell.bids[0][0],
    }
    sizer = c.sizer
    if sizer is not None:         # sized to both venues' rules: the orders a trader would send
        record["buy_limit_price"] = fill.buy_limit
        record["sell_limit_price"] = fill.sell_limit
        if event.kind == "open":
            record["buy_rules"] = rules_fields(sizer.buy)
            record["sell_rules"] = rules_fields(sizer.sell)
    if c.conversion_bps:
        record["conversion_bps"] = c.conversion_bps
    if c.shares:
        record["shares_liquidity_with"] = list(c.shares)
    if c.alone is not None:
        record["alone_qty_base"] = sig(c.alone.quantity)
        record["alone_profit_quote"] = round(c.alone.profit_quote, 6)
    # exchange-time age, corrected by the feed's clock-offset estimate (only where the exchange sends a time)
    if buy.exch_ts_ns:
        record["buy_exchange_age_ms"] = round((now_ns - buy.exch_ts_ns - buy_offset_ns) / 1e6, 3)
    if sell.exch_ts_ns:
        record["sell_exchange_age_ms"] = round((now_ns - sell.exch_ts_ns - sell_offset_ns) / 1e6, 3)
    if event.kind == "close":
        record["duration_ms"] = round(event.duration_ms, 3)
        record["peak_net_bps"] = round(event.peak_net_bps, 4)
        record["peak_profit_quote"] = round(event.peak_profit, 6)
        record["close_reason"] = event.close_reason
        record["flaps"] = event.flaps
    return record


def shadow_record(opened: Event, fills: list[ShadowFill], now_ns: int, currency: tuple[str, str]) -> dict:
    """Follow-up of an ``open``: the shadow fills at every configured latency."""
    c = opened.candidate
    instrument, quote_currency = _labels(c, currency)
    return {
        "event": "shadow",
        "id": opened.id,
        "time": iso(now_ns),
        "time_ns": now_ns,
        "opened_time_ns": opened.now_ns,
        "instrument": instrument,
        "buy_exchange": c.buy.venue,
        "sell_exchange": c.sell.venue,
        "quote_currency": quote_currency,
        "qty_base": sig(c.fill.quantity),
        "notional_quote": round(c.fill.quantity * c.fill.buy_price, 6),
        "net_bps": round(c.fill.net_bps, 4),
        "shadow_fills": [f.as_dict() for f in fills],
    }


def event_line(record: dict, verbose: bool = False) -> str | None:
    """The readable stdout line for one record, or None when it shows only with ``--verbose``.

    By default only ``open`` and ``close`` print, one short line each; a ``close`` carries the
    shadow-fill outcome of its ``open`` when that ``shadow`` record came first (the shadow is
    remembered here, by opportunity id, whether or not it is printed). ``--verbose`` prints every
    record in full, ``update`` and ``shadow`` included.
    """
    kind = record["event"]
    if kind == "shadow":
        outcome = shadow_outcome(record["shadow_fills"])
        _remember_shadow(record["id"], outcome)
        if not verbose:
            return None
        return (f"SHADOW {record['instrument']:10} buy {record['buy_exchange']} sell {record['sell_exchange']} "
                f"detected {record['net_bps']:.2f} bps -> {outcome}")
    shadow = None
    if kind == "close":
        shadow = _RECENT_SHADOWS.pop(record["id"], None)
    money = f"{record['profit_quote']:.4g} {record['quote_currency']}"
    if not verbose:
        if kind == "open":
            return (f"OPEN  {record['instrument']:10} buy {record['buy_exchange']:8} sell {record['sell_exchange']:8} "
                    f"net {record['net_bps']:6.2f} bps  qty {record['qty_base']:.4g} {record['base_currency']}  "
                    f"profit {money}" + (f"  shares with {', '.join(record['shares_liquidity_with'])}"
                                         if record.get("shares_liquidity_with") else ""))
        if kind == "close":
            line = (f"CLOSE {record['instrument']:10} buy {record['buy_exchange']:8} sell {record['sell_exchange']:8} "
                    f"after {_duration(record['duration_ms'])} peak {record['peak_net_bps']:.2f} bps "
                    f"({record['close_reason']}" + (f", {_flaps(record['flaps'])}" if record["flaps"] else "") + ")")
            return line + (f"  shadow {shadow}" if shadow else "")
        return None
    base = (f"{kind.upper():6} {record['instrument']:10} buy {record['buy_exchange']} @ "
            f"{record['buy_price']:.6g} sell {record['sell_exchange']} @ {record['sell_price']:.6g} "
            f"qty {record['qty_base']:.6g} {record['base_currency']} gross {record['gross_bps']:.2f} bps "
            f"net {record['net_bps']:.2f} bps profit {money}")
    if record.get("shares_liquidity_with"):
        base += f" shares with {', '.join(record['shares_liquidity_with'])}"
    if kind == "close":
        base += f" after {record['duration_ms']:.1f} ms ({record['close_reason']}, {_flaps(record['flaps'])})"
        if shadow:
            base += f" shadow {shadow}"
    return base


def shadow_outcome(fills: list[dict]) -> str:
    """``5ms +5.98bps, 20ms +6.82bps 14% filled, 50ms quote_stale``: the edge left at each latency, and how
    much of the detected size both legs could still fill when not all of it."""
    parts = []
    for f in fills:
        text = f"{f['latency_ms']:g}ms "
        if f["net_bps"] is None:
            text += f["reason"] or "none"
        else:
            text += f"{f['net_bps']:+.2f}bps"
            if f["fill_fraction"] < FULL_FILL:
                text += f" {_percent(f['fill_fraction'])} filled"
        parts.append(text)
    return ", ".join(parts)


def _percent(fraction: float) -> str:
    """A fill fraction as a percentage that never reads as full (99.96 % is ``99.9%``, not ``100%``)."""
    pct = math.floor(fraction * 1000) / 10
    return f"{pct:.0f}%" if pct >= 1 and pct == int(pct) else f"{pct:.1f}%"


def _flaps(n: int) -> str:
    return "1 flap" if n == 1 else f"{n} flaps"


def _duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


# opportunity id -> shadow outcome text, until the close that follows it; bounded so
# opportunities that never close (shutdown) cannot grow it without limit
_RECENT_SHADOWS: dict[int, str] = {}
_RECENT_SHADOWS_MAX = 4096


def _remember_shadow(key: int, outcome: str) -> None:
    _RECENT_SHADOWS.pop(key, None)
    _RECENT_SHADOWS[key] = outcome
    while len(_RECENT_SHADOWS) > _RECENT_SHADOWS_MAX:
        del _RECENT_SHADOWS[next(iter(_RECENT_SHADOWS))]


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


@dataclass
class ShadowTotals:
    """One latency's shadow fills: full and partial apart, and size-weighted."""

    full: int = 0
    full_profitable: int = 0
    partial: int = 0
    partial_profitable: int = 0
    untradable: int = 0            # a leg not tradable then, or nothing left to fill
    detected: float = 0.0          # sum of the detected sizes, in the quote currency at the detected buy price
    profitable: float = 0.0        # sum of the sizes filled at a profit, valued the same way
    profit: dict = field(default_factory=dict)   # currency -> realized profit on what filled, after fees
    net_bps_sum: float = 0.0       # over the fills that filled something

    @property
    def checked(self) -> int:
        return self.full + self.partial + self.untradable

    @property
    def profitable_share(self) -> float:
        """Of the size detected (valued in the quote currency: a BTC and a SOL opportunity weigh by what they
        are worth), the share that filled at a profit."""
        return self.profitable / self.detected if self.detected > 0 else 0.0


@dataclass
class Summary:
    """Totals for the exit summary.

    Expected profit adds the ``open`` records' ``profit_quote``: the engine allocates a book's liquidity to
    one opportunity at a time, so no level is counted twice. It is totalled per compared instrument's
    currency (quotes declared equivalent count 1:1, the conversion cost already charged per pair).
    """

    opens: int = 0
    flaps: int = 0
    shared: int = 0                 # opens that took from a book side another open opportunity also takes from
    alone_profit: float = 0.0       # what those would claim if each had the books to itself, less what they got
    suspects: int = 0
    held_back: dict = field(default_factory=dict)   # reason -> would-be opens held back (quote_unchanged, ...)
    # reason -> would-be opens the venues' trading rules refused (below_min_qty, below_min_notional, not_trading),
    # each counted once while the same refusal of a pair lasts; no_rules: legs without rules, once while it lasts
    refused: dict = field(default_factory=dict)
    by_pair: dict = field(default_factory=dict)
    profit_by_quote: dict = field(default_factory=dict)
    durations_ms: list = field(default_factory=list)
    shadow_by_latency: dict = field(default_factory=dict)   # latency -> ShadowTotals
    output_dropped: dict = field(default_factory=dict)      # "events file"/"stdout" -> records it lost (live)

    def opened(self, record: dict, currency: str | None = None) -> None:
        self.opens += 1
        pair = (record["buy_exchange"], record["sell_exchange"])
        self.by_pair[pair] = self.by_pair.get(pair, 0) + 1
        quote = currency or record["quote_currency"]
        self.profit_by_quote[quote] = self.profit_by_quote.get(quote, 0.0) + record["profit_quote"]
        if record.get("shares_liquidity_with"):
            self.shared += 1
        if "alone_profit_quote" in record:
            self.alone_profit += record["alone_profit_quote"] - record["profit_quote"]

    def closed(self, record: dict) -> None:
        self.durations_ms.append(record["duration_ms"])
        self.flaps += record["flaps"]

    def shadow(self, fill: ShadowFill, detected_notional: float, currency: str = "") -> None:
        """One shadow fill of an opportunity detected at ``detected_notional`` (size x buy price)."""
        totals = self.shadow_by_latency.get(fill.latency_ms)
        if totals is None:
            totals = self.shadow_by_latency[fill.latency_ms] = ShadowTotals()
        totals.detected += detected_notional
        if fill.net_bps is None:
            totals.untradable += 1
            return
        profitable = fill.net_bps > 0
        if fill.full:
            totals.full += 1
            totals.full_profitable += profitable
        else:
            totals.partial += 1
            totals.partial_profitable += profitable
        if profitable:
            totals.profitable += fill.fraction * detected_notional
        totals.profit[currency] = totals.profit.get(currency, 0.0) + fill.profit_quote
        totals.net_bps_sum += fill.net_bps

    def render(self) -> str:
        profit = ", ".join(f"{v:.4f} {q}" for q, v in sorted(self.profit_by_quote.items())) or "0"
        lines = [f"detector summary: {self.opens} opportunities opened, {self.flaps} flaps; "
                 f"expected profit at detection: {profit}"]
        if self.shared:
            lines.append(f"  {self.shared} opened sharing a book side with another (liquidity counted once; each "
                         f"alone would have claimed {self.alone_profit:.4f} more)")
        for (buy, sell), n in sorted(self.by_pair.items(), key=lambda kv: -kv[1]):
            lines.append(f"  buy {buy:9} sell {sell:9} {n}")
        if self.durations_ms:
            d = sorted(self.durations_ms)
            lines.append(f"  lifetime ms: p50 {_pct(d, 0.5):.1f} p90 {_pct(d, 0.9):.1f} max {d[-1]:.1f} "
                         f"({len(d)} closed)")
        for latency, t in sorted(self.shadow_by_latency.items()):
            filled = t.full + t.partial
            lines.append(f"  shadow fill after {latency:g} ms: {t.profitable_share:.0%} of the detected size filled "
                         f"at a profit; full fills {t.full_profitable}/{t.full} profitable, partial "
                         f"{t.partial_profitable}/{t.partial}, not tradable {t.untradable}; realized profit "
                         f"{', '.join(f'{v:.4f} {q}' for q, v in sorted(t.profit.items())) or '0'}, "
                         f"mean net {t.net_bps_sum / filled if filled else 0.0:+.2f} bps")
        if self.held_back:
            words = {"quote_unchanged": "a quote unchanged while the market moved",
                     "exchange_lag": "an exchange stream running late"}
            lines.append("  held back, not opened: " + ", ".join(
                f"{n} on {words.get(reason, reason)}" for reason, n in sorted(self.held_back.items())))
        if self.refused:
            lines.append("  refused by the venues' trading rules, not opened: " + ", ".join(
                f"{n} {reason}" for reason, n in sorted(self.refused.items())))
        if self.suspects:
            lines.append(f"  {self.suspects} suspected data/mapping errors (edge above the sanity bound) not reported")
        if any(self.output_dropped.values()):
            lines.append("  OUTPUT DROPPED (the disk or pipe could not keep up; detection went on): " + ", ".join(
                f"{n} records not written to the {where}" if where != "stdout" else f"{n} lines not printed"
                for where, n in self.output_dropped.items() if n))
        return "\n".join(lines)
