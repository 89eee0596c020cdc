"""A bad number the simulator injects reaches the client as the malformed frame it is meant to be.

The soak's ``bad_number`` fault hands a protocol a book whose best bid is NaN, infinity, negative or zero;
OKX's renderer used to raise on it (``int(inf)`` in its order count), so the fault became a simulator
traceback instead of a frame. Every venue renders such a book on both channels, and the venue's own parser
and the book then count it as a bad number (or skip it), never as anything the row would trust.
"""
from __future__ import annotations

import math

import pytest

from pipeline.book import InstrumentBook, Outcome
from pipeline.errors import ParseError
from pipeline.model import BBO, DEPTH, BookUpdate
from pipeline.venues import VENUES, load_protocol, load_venue

T0 = 1_790_000_000_000
GOOD_BIDS = [(100.0, 1.0), (99.9, 2.0)]
ASKS = [(100.1, 1.0), (100.2, 2.0)]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 0.0], ids=["nan", "inf", "negative", "zero"])
@pytest.mark.parametrize("name", VENUES)
def test_every_venue_renders_a_bad_price_as_a_frame_its_parser_rejects(name, bad):
    venue = load_venue(name)
    symbol = venue.native_symbol("ETH/USDT")
    proto = load_protocol(name)({symbol: 2})
    proto.known_symbols = {symbol}
    book = InstrumentBook(symbol, depth=5, keep_levels=venue.book_levels, checksum=venue.checksum,
                          checksum_levels=venue.checksum_levels or 10)
    rejected = 0
    for n, channel in enumerate((BBO, DEPTH, BBO, DEPTH)):
        bids = GOOD_BIDS if n < 2 else [(bad, 1.0)] + GOOD_BIDS[1:]
        frames = proto.render(symbol, channel, bids, ASKS, T0 + n)      # never raises
        assert all(isinstance(f, (str, bytes)) for f in frames)
        for frame in frames:
            try:
                events = venue.parse(frame, 0)
            except ParseError as exc:
                # a bad number, or a malformed message: JSON has no NaN or infinity (HTX sends numbers, so they go
                # out as null; Kraken prints its numbers' text, so the frame is not JSON): each is counted
                assert n >= 2, exc
                rejected += 1
                continue
            for event in events:
                if isinstance(event, BookUpdate):
                    outcome = book.apply(event)
                    if n >= 2 and any(not 0.0 < price < math.inf for price, _ in event.bids):
                        assert outcome is Outcome.BAD_NUMBER
                        rejected += 1
    assert rejected >= 1, "the bad price reached the client as a frame that is rejected"
