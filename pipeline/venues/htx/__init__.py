"""htx: the venue record (wire format in :mod:`.wire`, simulator in :mod:`.sim`)."""
from __future__ import annotations

from pipeline.venues._account import AccountFees
from pipeline.venues._common import ReferenceData, Venue, wire_functions
from pipeline.venues.htx import account, wire

VENUE = Venue(
    name=wire.NAME,
    default_url="wss://api.huobi.pro/feed",  # the MBP incremental channel and its req live on /feed only (wire.py)
    sim_path="/feed",
    compression="gzip",
    taker_fee_bps=20.0,
    keepalive_interval_s=None,  # the server pings; we answer with build_pong
    ws_ping_interval_s=20.0,    # whether HTX answers RFC 6455 pings is not documented: watch for ~40 s reconnects
    subscribe_interval_s=0.1,   # one topic per frame; bursts get '429 too many request'; a req at most every 100 ms
    max_symbols_per_connection=20,  # no documented limit; a topic and a req each
    book_levels=wire.BOOK_LEVELS,
    depth_is_delta=True,        # mbp.5 deltas chained by prevSeqNum, aligned with the req snapshot (pipeline.book)
    aligned_snapshots=True,
    bbo_channel=False,          # bbo is not documented on /feed; mbp.5 is tick by tick: its best level is the top
    single_connection=("bbo carries seqId and the depth stream seqNum, two id spaces that order nothing across the "
                       "channels, so a copy of a composed book on another connection cannot be told from a newer one"),
    cross_channel_seq="",
    quirks=("dropped_messages",),
    reference_data=ReferenceData(   # trading rules: tick, step, minimums (docs/trading-rules.md)
        url="https://api.huobi.pro", path="/v1/settings/common/market-symbols",
        doc="https://www.htx.com/en-us/opend/newApiPages/?id=7ec4f5d6-7773-11ed-9966-0242ac110003",
        parse=wire.instrument_rules,
        since_param=wire.INCREMENTAL_PARAM, since=wire.reference_since),   # a refresh asks what changed since ts
    # the fees this account pays, when venues.htx.fee_lookup is on (docs/trading-rules.md "Fees your account pays")
    account_fees=AccountFees(
        url="https://api.huobi.pro", path=account.PATH,
        doc="https://huobiapi.github.io/docs/spot/v1/en/#get-current-fee-rate-applied-to-the-user",
        build_requests=account.build_requests, parse=account.parse_fees, refusal=account.refusal,
        needs=("key", "secret")),
    **wire_functions(wire),     # parse, top, the control frames: the wire module's functions
)
