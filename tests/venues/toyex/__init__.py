"""toyex: the smallest venue folder, kept in the tests to prove the guide (docs/adding-a-venue.md).

Registered only when ``PIPELINE_EXTRA_VENUES=toyex=tests.venues.toyex`` is set
(``tests/unit/test_extra_venue.py``); nothing outside this folder names it.
"""
from __future__ import annotations

from pipeline.venues._common import ReferenceData, Venue
from tests.venues.toyex import wire

VENUE = Venue(
    name="toyex",
    default_url="wss://toyex.invalid/ws",
    sim_path="/ws",
    taker_fee_bps=10.0,
    keepalive_interval_s=None,
    max_symbols_per_connection=20,
    book_levels=None,                 # every depth push is a full snapshot
    depth_is_delta=False,
    cross_channel_seq="",             # top of book and depth in arrival order
    native_symbol=wire.native_symbol,
    build_url=wire.build_url,
    build_subscribe=wire.build_subscribe,
    build_resubscribe=wire.build_resubscribe,
    build_keepalive=wire.build_keepalive,
    build_pong=wire.build_pong,
    parse=wire.parse,
    top=wire.top,
    reference_data=ReferenceData(url="https://toyex.invalid", path="/api/symbols",
                                 doc="tests/venues/toyex/wire.py", parse=wire.instrument_rules),
)
