"""htx: the venue record (wire format in :mod:`.wire`, simulator in :mod:`.sim`)."""
from __future__ import annotations

from pipeline.venues._common import Venue
from pipeline.venues.htx import wire

VENUE = Venue(
    name=wire.NAME,
    default_url="wss://api.huobi.pro/ws",
    sim_path="/ws",
    taker_fee_bps=20.0,
    keepalive_interval_s=None,  # the server pings; we answer with build_pong
    ws_ping_interval_s=20.0,  # whether HTX answers RFC 6455 pings is not documented: watch for ~40 s reconnects live
    subscribe_interval_s=0.1,  # between subscribe frames: one topic per frame; bursts of requests get '429 too many request'
    max_symbols_per_connection=20,  # no documented limit; 2 topics each
    book_levels=wire.BOOK_LEVELS,
    checksum=None,
    checksum_levels=0,
    depth_is_delta=False,
    cross_channel_seq="",
    native_symbol=wire.native_symbol,
    build_url=wire.build_url,
    build_subscribe=wire.build_subscribe,
    build_resubscribe=wire.build_resubscribe,
    build_keepalive=wire.build_keepalive,
    build_pong=wire.build_pong,
    parse=wire.parse,
    top=wire.top,
)
