"""okx: the venue record (wire format in :mod:`.wire`, simulator in :mod:`.sim`)."""
from __future__ import annotations

from pipeline.venues._account import AccountFees
from pipeline.venues._common import ReferenceData, Venue, wire_functions
from pipeline.venues.okx import account, wire

VENUE = Venue(
    name=wire.NAME,
    default_url="wss://ws.okx.com:8443/ws/v5/public",
    sim_path="/ws/v5/public",
    taker_fee_bps=10.0,
    keepalive_interval_s=20.0,
    ws_ping_interval_s=20.0,  # whether OKX answers RFC 6455 pings is not documented: watch for ~40 s reconnects live
    subscribe_interval_s=0.0,  # 480 (un)subscribe requests per connection per hour: a handful at start
    max_symbols_per_connection=25,  # one 400-level `books` channel each: under the advised 30
    limits=(("connections_per_s", 3), ("requests_per_connection_per_hour", 480),
            ("depth_channels_per_connection", 30)),
    book_levels=400,
    checksum=None,  # the `checksum` field is always 0 now
    checksum_levels=0,
    depth_is_delta=True,
    cross_channel_seq="seqId",
    login_depth_channel=wire.TBT_CHANNEL,
    depth_channels=wire.DEPTH_CHANNELS,
    quirks=("late_depth", "sequence_resets", "planned_disconnects", "dropped_messages"),
    # trading rules (docs/trading-rules.md): fetched over REST; their changes are pushed on the `instruments`
    # channel, subscribed on each public connection (one request more a connection, of its 480 an hour)
    reference_data=ReferenceData(
        url="https://www.okx.com", path="/api/v5/public/instruments?instType=SPOT",
        doc="https://www.okx.com/docs-v5/en/#public-data-rest-api-get-instruments",
        parse=wire.instrument_rules, channel_subscribe=wire.INSTRUMENTS_SUBSCRIBE),
    # the fees this account pays, when venues.okx.fee_lookup is on (docs/trading-rules.md "Fees your account pays")
    account_fees=AccountFees(
        url="https://www.okx.com", path=account.PATH,
        doc="https://www.okx.com/docs-v5/en/#trading-account-rest-api-get-fee-rates",
        build_requests=account.build_requests, parse=account.parse_fees, refusal=account.refusal,
        needs=("key", "secret", "passphrase")),
    **wire_functions(wire),      # parse, top, the control frames: the wire module's functions
)
