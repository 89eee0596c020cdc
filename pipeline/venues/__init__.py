"""One sans-I/O module per exchange, all the same shape.

A venue module imports no asyncio, websockets, socket, time or
multiprocessing. It offers:

* ``NAME``, ``DEFAULT_URL``, ``DEFAULT_TAKER_FEE_BPS`` (standard spot taker tier);
* ``KEEPALIVE_INTERVAL_S``: how often the client must send ``build_keepalive()``
  (None when the server pings and we only answer);
* ``SUBSCRIBE_INTERVAL_S``: pause between subscribe frames (the exchange's request rate limit);
* ``MAX_SYMBOLS_PER_CONNECTION``: the feed splits instruments over several
  connections above this;
* ``BOOK_LEVELS``: levels the depth book keeps (the exchange's channel depth;
  None for full books), ``CHECKSUM`` / ``CHECKSUM_LEVELS``: the book checksum
  function over level text, or None;
* ``native_symbol(instrument) -> str``: the rule from canonical ``BASE/QUOTE``;
* ``build_url(url, symbols, depth) -> str``;
* ``build_subscribe(symbols, depth) -> list[str]``: frames to send after connecting;
* ``build_resubscribe(symbol, depth) -> list[str]``: frames that make the
  exchange send a fresh snapshot of one symbol (after a gap);
* ``build_keepalive() -> str | None``, ``build_pong(token) -> str``;
* ``WS_PING_INTERVAL_S``: RFC 6455 pings the client sends (None: only the
  venue's own keepalive; per venue because not every server answers them);
* ``parse(raw, recv_ns) -> list[event]``: one frame into
  :mod:`pipeline.model` events; raises only :class:`~pipeline.errors.ParseError`.

Each module ends with ``VENUE = Venue(...)`` (:class:`pipeline.venues._common.Venue`),
the one record of that exchange's facts; :func:`venue_record` returns it, and the
fee table, the simulator's URL paths (:data:`SIM_PATHS`) and the conformance lists
(:func:`venues_with`) are derived from those records. :func:`load_venue` keeps
returning the module, which carries every name listed above.

Adding an exchange means adding one module here, its name to ``VENUES``, a
simulator protocol in ``pipeline/sim/protocols`` and a fixture folder.
"""
from __future__ import annotations

import importlib
from types import ModuleType

VENUES = ("binance", "bybit", "okx", "htx", "coinbase", "kraken")

VENUE_IDS = {name: i + 1 for i, name in enumerate(VENUES)}


def load_venue(name: str) -> ModuleType:
    """The venue module for ``name`` (imported on first use)."""
    if name not in VENUES:
        raise KeyError(f"unknown exchange {name!r}")
    return importlib.import_module(f"pipeline.venues.{name}")


def venue_record(name: str):
    """The declared :class:`~pipeline.venues._common.Venue` of ``name``."""
    return load_venue(name).VENUE


def venues_with(predicate) -> list[str]:
    """Names of the venues whose record satisfies ``predicate`` (conformance lists)."""
    return [name for name in VENUES if predicate(venue_record(name))]


DEFAULT_TAKER_FEE_BPS = {name: venue_record(name).taker_fee_bps for name in VENUES}
SIM_PATHS = {name: venue_record(name).sim_path for name in VENUES}


def native_symbols(venue_config) -> dict[str, str]:
    """Canonical instrument -> the exchange's native symbol, overrides first."""
    module = load_venue(venue_config.name)
    overrides = venue_config.native_overrides()
    return {i: overrides.get(i) or module.native_symbol(i) for i in venue_config.instruments}
