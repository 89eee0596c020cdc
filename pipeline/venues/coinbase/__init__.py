"""coinbase: the venue record (wire format in :mod:`.wire`, simulator in :mod:`.sim`)."""
from __future__ import annotations

from pipeline.venues._account import AccountFees
from pipeline.venues._common import ReferenceData, Venue, wire_functions
from pipeline.venues.coinbase import account, wire

VENUE = Venue(
    name=wire.NAME,
    default_url="wss://advanced-trade-ws.coinbase.com",
    sim_path="/",
    taker_fee_bps=120.0,
    keepalive_interval_s=None,  # `heartbeats` keeps the subscriptions open
    ws_ping_interval_s=20.0,  # transport pings; the heartbeats channel keeps subscriptions open
    subscribe_interval_s=0.0,  # between subscribe frames: three subscribe frames, well under the documented rate
    max_symbols_per_connection=10,  # every level2 subscription starts with a multi-MB full book
    limits=(("connections_per_s", 8), ("unauthenticated_messages_per_s", 8)),
    book_levels=None,  # full book
    checksum=None,
    checksum_levels=0,
    depth_is_delta=True,
    single_connection=("sequence_num counts the messages of one connection, and level2 updates carry no per-product "
                       "id: an update's copy on another connection cannot be recognised"),
    cross_channel_seq="",
    bbo_channel=False,                # level2 only: the top of book is the book's own (W4)
    quirks=("dropped_messages",),
    reference_data=ReferenceData(   # trading rules: tick, step, minimums (docs/trading-rules.md)
        url="https://api.coinbase.com", path="/api/v3/brokerage/market/products?product_type=SPOT",
        doc="https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/public/list-public-products",
        parse=wire.instrument_rules),
    # the fees this account pays, when venues.coinbase.fee_lookup is on (docs/trading-rules.md "Fees your account pays")
    account_fees=AccountFees(
        url="https://api.coinbase.com", path=account.PATH,
        doc="https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/fees/get-transaction-summary",
        build_requests=account.build_requests, parse=account.parse_fees, refusal=account.refusal,
        needs=("key", "secret")),
    **wire_functions(wire),      # parse, top, the control frames: the wire module's functions
)
