"""bybit: the venue record (wire format in :mod:`.wire`, simulator in :mod:`.sim`)."""
from __future__ import annotations

from pipeline.venues._account import AccountFees
from pipeline.venues._common import ReferenceData, Venue, wire_functions
from pipeline.venues.bybit import account, wire

VENUE = Venue(
    name=wire.NAME,
    default_url="wss://stream.bybit.com/v5/public/spot",
    sim_path="/v5/public/spot",
    taker_fee_bps=10.0,
    keepalive_interval_s=20.0,
    ws_ping_interval_s=20.0,  # whether Bybit answers RFC 6455 pings is not documented: watch for ~40 s reconnects live
    subscribe_interval_s=0.0,  # between subscribe frames: no documented per-second limit; 500 connections per 5 minutes
    max_symbols_per_connection=50,
    limits=(("args_per_request", wire.ARGS_PER_REQUEST), ("connections_per_5_min", 500)),
    book_levels=wire.BOOK_LEVELS,
    checksum=None,
    checksum_levels=0,
    depth_is_delta=True,
    cross_channel_seq="data.seq",
    quirks=("late_depth", "resend_unchanged", "sequence_resets", "dropped_messages"),
    reference_data=ReferenceData(   # trading rules: tick, step, minimums (docs/trading-rules.md)
        url="https://api.bybit.com", path="/v5/market/instruments-info?category=spot",
        doc="https://bybit-exchange.github.io/docs/v5/market/instrument",
        parse=wire.instrument_rules),
    # the fees this account pays, when venues.bybit.fee_lookup is on (docs/trading-rules.md "Fees your account pays")
    account_fees=AccountFees(
        url="https://api.bybit.com", path=account.PATH,
        doc="https://bybit-exchange.github.io/docs/v5/account/fee-rate",
        build_requests=account.build_requests, parse=account.parse_fees, refusal=account.refusal,
        needs=("key", "secret")),
    **wire_functions(wire),      # parse, top, the control frames: the wire module's functions
)
