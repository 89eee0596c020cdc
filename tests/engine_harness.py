"""A :class:`~pipeline.detector.engine.DetectorEngine` over declared rows, with quotes the test hands in."""
from __future__ import annotations

from pipeline.board import RowStatus
from pipeline.config import parse_config
from pipeline.detector.engine import DetectorEngine
from pipeline.detector.rules import Quote
from pipeline.detector.scan import RowUniverse
from pipeline.runtime import RowAssignment

LIVE = int(RowStatus.LIVE)
MS = 1_000_000
T0 = 1_700_000_000_000 * MS


def engine_for(venues: dict, quotes_of=lambda key: {}, clock_offset_ns=lambda label: 0, venue_keys=None,
               **detector) -> DetectorEngine:
    """``venues``: {name: [instruments]}; ``detector``: detector config keys (no shadow fills unless given);
    ``venue_keys``: {name: {key: value}} added to a venue's section."""
    raw = {"venues": {name: {"instruments": list(instruments), "url": "wss://127.0.0.1:1",
                             **(venue_keys or {}).get(name, {})}
                      for name, instruments in venues.items()},
           "detector": {"shadow_latencies_ms": [], **detector}}
    config = parse_config(raw, available_cores=frozenset({0}))
    rows = [RowAssignment(n, venue, instrument, instrument.replace("/", ""))
            for n, (venue, instrument) in enumerate((v, i) for v, ins in venues.items() for i in ins)]
    return DetectorEngine(config, RowUniverse(config, rows), quotes_of, clock_offset_ns)


def quote(venue, instrument, bids, asks, now=T0, status=LIVE):
    return Quote(venue, status, bids, asks, now - MS, 0, 0, 0, 0, 0, instrument)
