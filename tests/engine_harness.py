"""A :class:`~pipeline.detector.engine.DetectorEngine` over declared rows, with quotes the test hands in."""
from __future__ import annotations

from decimal import Decimal

from pipeline.board import RowStatus
from pipeline.config import parse_config
from pipeline.detector.engine import DetectorEngine
from pipeline.detector.rules import Quote
from pipeline.detector.scan import RowUniverse
from pipeline.model import InstrumentRules
from pipeline.runtime import RowAssignment

LIVE = int(RowStatus.LIVE)
MS = 1_000_000
T0 = 1_700_000_000_000 * MS


def engine_for(venues: dict, quotes_of=lambda key: {}, clock_offset_ns=lambda label: 0, venue_keys=None,
               rules=None, **detector) -> DetectorEngine:
    """``venues``: {name: [instruments]}; ``detector``: detector config keys (no shadow fills unless given);
    ``venue_keys``: {name: {key: value}} added to a venue's section; ``rules``: each venue's trading rules
    ({name: InstrumentRules or None}, version 0), or the engine's ``rules_of(leg)`` itself (None: unsized)."""
    raw = {"venues": {name: {"instruments": list(instruments), "url": "wss://127.0.0.1:1",
                             **(venue_keys or {}).get(name, {})}
                      for name, instruments in venues.items()},
           "detector": {"shadow_latencies_ms": [], **detector}}
    config = parse_config(raw, available_cores=frozenset({0}))
    rows = [RowAssignment(n, venue, instrument, instrument.replace("/", ""))
            for n, (venue, instrument) in enumerate((v, i) for v, ins in venues.items() for i in ins)]
    rules_of = rules
    if isinstance(rules, dict):
        table = dict(rules)

        def rules_of(leg: str) -> tuple[int, InstrumentRules | None]:
            return 0, table.get(leg.split(" ", 1)[0])
    return DetectorEngine(config, RowUniverse(config, rows), quotes_of, clock_offset_ns, rules_of)


def rules(venue, tick="0.01", step="0.0001", min_qty="0", min_notional="0", max_qty=None, max_notional=None,
          trading=True) -> InstrumentRules:
    """An :class:`InstrumentRules` from decimal text."""
    return InstrumentRules(venue, venue.upper(), Decimal(tick), Decimal(step), Decimal(min_qty),
                           None if max_qty is None else Decimal(max_qty), Decimal(min_notional),
                           None if max_notional is None else Decimal(max_notional), trading,
                           "online" if trading else "halted")


def quote(venue, instrument, bids, asks, now=T0, status=LIVE):
    return Quote(venue, status, bids, asks, now - MS, 0, 0, 0, 0, 0, instrument)
