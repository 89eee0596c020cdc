"""One folder per exchange, all the same shape (``docs/adding-a-venue.md``).

``pipeline/venues/<name>/`` holds everything about one exchange and nothing about others:

* ``__init__.py``: ``VENUE = Venue(...)`` (:class:`pipeline.venues._common.Venue`), the one record
  of that exchange's facts (URLs, fees, limits, book rules, and the wire functions below). The
  session, the feed, the simulator, the config checks and the console read this record only;
  :func:`load_venue` returns it.
* ``wire.py``: sans-I/O (no asyncio, websockets, socket, time or multiprocessing): the exchange's
  wire messages, ``parse(raw, recv_ns) -> list[event]`` into :mod:`pipeline.model` events (raises
  only :class:`~pipeline.errors.ParseError`), the top-of-book short path ``top(raw)``, and the
  control frames (subscribe, resubscribe, keepalive, pong, login).
* ``sim.py``: the simulator's side of the protocol, a
  :class:`~pipeline.sim.protocol.SimProtocol` subclass named ``Protocol``.

The fee table, the simulator's URL paths (:data:`SIM_PATHS`) and the conformance lists
(:func:`venues_with`) are derived from the records. Board ids follow the order of ``VENUES``.
"""
from __future__ import annotations

import importlib

VENUES = ("binance", "bybit", "okx", "htx", "coinbase", "kraken")

VENUE_IDS = {name: i + 1 for i, name in enumerate(VENUES)}


def load_venue(name: str):
    """The declared :class:`~pipeline.venues._common.Venue` of ``name`` (imported on first use)."""
    if name not in VENUES:
        raise KeyError(f"unknown exchange {name!r}")
    return importlib.import_module(f"pipeline.venues.{name}").VENUE


def venues_with(predicate) -> list[str]:
    """Names of the venues whose record satisfies ``predicate`` (conformance lists)."""
    return [name for name in VENUES if predicate(load_venue(name))]


DEFAULT_TAKER_FEE_BPS = {name: load_venue(name).taker_fee_bps for name in VENUES}
SIM_PATHS = {name: load_venue(name).sim_path for name in VENUES}


def load_protocol(name: str):
    """The simulator protocol class of ``name`` (its folder's ``sim.py``; imported on first use)."""
    if name not in VENUES:
        raise KeyError(f"unknown exchange {name!r}")
    return importlib.import_module(f"pipeline.venues.{name}.sim").Protocol


def native_symbols(venue_config) -> dict[str, str]:
    """Canonical instrument -> the exchange's native symbol, overrides first."""
    venue = load_venue(venue_config.name)
    overrides = venue_config.native_overrides()
    return {i: overrides.get(i) or venue.native_symbol(i) for i in venue_config.instruments}
