"""binance: the venue record (wire format in :mod:`.wire`, simulator in :mod:`.sim`)."""
from __future__ import annotations

from pipeline.venues._account import AccountFees
from pipeline.venues._common import ReferenceData, Venue, wire_functions
from pipeline.venues.binance import account, wire

VENUE = Venue(
    name=wire.NAME,
    default_url="wss://stream.binance.com:9443/stream",
    sim_path="/stream",
    taker_fee_bps=10.0,
    keepalive_interval_s=None,
    ws_ping_interval_s=20.0,    # the server pings every 20 s; ours count towards 5 messages/s (one per 20 s is fine)
    subscribe_interval_s=0.25,  # 5 incoming messages per second per connection, SUBSCRIBE and pongs included
    max_symbols_per_connection=200,  # 2 streams each, well under 1024 streams per connection
    limits=(("incoming_messages_per_s", 5), ("streams_per_connection", 1024), ("connections_per_5_min", 300),
            ("connection_lifetime_s", 24 * 3600)),
    book_levels=None,  # partial-depth snapshots replace the book
    checksum=None,
    checksum_levels=0,
    depth_is_delta=False,
    cross_channel_seq="u / lastUpdateId",
    exchange_time=False,              # bookTicker and partial depth carry no time
    refuses_unknown_symbols=False,    # a stream of an unknown symbol is acked and stays silent
    quirks=("late_depth", "planned_disconnects"),
    reference_data=ReferenceData(   # trading rules: tick, step, minimums (docs/trading-rules.md)
        url="https://api.binance.com", path="/api/v3/exchangeInfo?permissions=SPOT",
        doc="https://github.com/binance/binance-spot-api-docs/blob/master/rest-api.md#exchange-information",
        parse=wire.instrument_rules),
    # the fees this account pays, when venues.binance.fee_lookup is on (docs/trading-rules.md "Fees your account pays")
    account_fees=AccountFees(
        url="https://api.binance.com", path=account.PATH,
        doc="https://github.com/binance/binance-spot-api-docs/blob/master/rest-api.md#query-commission-rates-user_data",
        build_requests=account.build_requests, parse=account.parse_fees, refusal=account.refusal,
        needs=("key", "secret")),
    **wire_functions(wire),      # parse, top, the control frames: the wire module's functions
)
