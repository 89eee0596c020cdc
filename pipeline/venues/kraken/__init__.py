"""kraken: the venue record (wire format in :mod:`.wire`, simulator in :mod:`.sim`)."""
from __future__ import annotations

from pipeline.venues._account import AccountFees
from pipeline.venues._common import ReferenceData, Venue, wire_functions
from pipeline.venues.kraken import account, wire

VENUE = Venue(
    name=wire.NAME,
    default_url="wss://ws.kraken.com/v2",
    sim_path="/v2",
    taker_fee_bps=40.0,
    keepalive_interval_s=20.0,
    ws_ping_interval_s=20.0,  # transport pings besides the documented method ping
    subscribe_interval_s=0.0,  # between subscribe frames: one frame per channel
    max_symbols_per_connection=50,  # no documented per-connection limit
    limits=(("connection_attempts_per_10_min", 150), ("reconnect_after_status_s", 5)),
    book_levels=wire.BOOK_LEVELS,
    checksum=wire.checksum,
    checksum_levels=wire.CHECKSUM_LEVELS,
    depth_is_delta=True,
    single_connection=("book updates carry no id (a CRC32 checksum and per-level timestamps only): an update's copy on "
                       "another connection cannot be told from a newer update with the same levels"),
    cross_channel_seq="",
    quirks=("shortest_numbers", "venue_status", "dropped_messages"),
    reference_data=ReferenceData(   # trading rules: tick, step, minimums (docs/trading-rules.md)
        url="wss://ws.kraken.com/v2", path="instrument",
        doc="https://docs.kraken.com/api/docs/websocket-v2/instrument",
        parse=wire.instrument_rules, transport="websocket"),
    # the fees this account pays, when venues.kraken.fee_lookup is on (docs/trading-rules.md "Fees your account pays")
    account_fees=AccountFees(
        url="https://api.kraken.com", path=account.PATH,
        doc="https://docs.kraken.com/api/docs/rest-api/get-trade-volume",
        build_requests=account.build_requests, parse=account.parse_fees, refusal=account.refusal,
        needs=("key", "secret"), method="POST"),
    **wire_functions(wire),      # parse, top, the control frames: the wire module's functions
)
