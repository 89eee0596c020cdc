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

A venue folder kept outside this package (a private exchange adapter, the test suite's own
``tests/venues/toyex``) is registered with the environment variable ``PIPELINE_EXTRA_VENUES``:
``name=package[,name=package...]``, appended after the built-in venues (so board ids of the
built-in ones never move). Child processes inherit it.
"""
from __future__ import annotations

import importlib
import os
import re

BUILT_IN = ("binance", "bybit", "okx", "htx", "coinbase", "kraken")
EXTRA_ENV = "PIPELINE_EXTRA_VENUES"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,19}$")
_PACKAGE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _extra(text: str) -> tuple[dict[str, str], list[str]]:
    """``name=package,...`` -> ({name: package}, problems)."""
    packages, problems = {}, []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, package = item.partition("=")
        name, package = name.strip(), package.strip()
        if not _NAME.match(name) or not _PACKAGE.match(package):
            problems.append(f"{item!r} is not name=package (a lower-case name, a dotted Python package)")
        elif name in BUILT_IN or name in packages:
            problems.append(f"{name!r} is registered twice")
        else:
            packages[name] = package
    return packages, problems


def _loadable(packages: dict[str, str], problems: list[str]) -> dict[str, str]:
    """The registered folders that load (a record named as registered, a simulator protocol); the rest are
    problems, for ``run.py`` to exit 2 on, and left out of the registry."""
    kept = {}
    for name, package in packages.items():
        try:
            record = importlib.import_module(package).VENUE
            importlib.import_module(f"{package}.sim").Protocol   # noqa: B018 - it must exist
        except Exception as exc:  # noqa: BLE001 - whatever stops it loading is what the user must read
            problems.append(f"{name}: {package} does not load ({type(exc).__name__}: {exc})")
            continue
        if getattr(record, "name", None) != name:
            problems.append(f"{name}: {package}.VENUE is named {getattr(record, 'name', None)!r}")
            continue
        kept[name] = package
    return kept


_EXTRA, EXTRA_PROBLEMS = _extra(os.environ.get(EXTRA_ENV, ""))
PACKAGES = {**{name: f"pipeline.venues.{name}" for name in BUILT_IN}}
PACKAGES.update(_loadable(_EXTRA, EXTRA_PROBLEMS))
VENUES = tuple(PACKAGES)

VENUE_IDS = {name: i + 1 for i, name in enumerate(VENUES)}


def load_venue(name: str):
    """The declared :class:`~pipeline.venues._common.Venue` of ``name`` (imported on first use)."""
    if name not in VENUES:
        raise KeyError(f"unknown exchange {name!r}")
    return importlib.import_module(PACKAGES[name]).VENUE


def extra_problems() -> list[str]:
    """What is wrong with ``PIPELINE_EXTRA_VENUES`` (malformed, or a folder that does not load), for exit 2."""
    return [f"{EXTRA_ENV}: {p}" for p in EXTRA_PROBLEMS]


def venues_with(predicate) -> list[str]:
    """Names of the venues whose record satisfies ``predicate`` (conformance lists)."""
    return [name for name in VENUES if predicate(load_venue(name))]


DEFAULT_TAKER_FEE_BPS = {name: load_venue(name).taker_fee_bps for name in VENUES}
SIM_PATHS = {name: load_venue(name).sim_path for name in VENUES}


def load_protocol(name: str):
    """The simulator protocol class of ``name`` (its folder's ``sim.py``; imported on first use)."""
    if name not in VENUES:
        raise KeyError(f"unknown exchange {name!r}")
    return importlib.import_module(f"{PACKAGES[name]}.sim").Protocol


def native_symbols(venue_config) -> dict[str, str]:
    """Canonical instrument -> the exchange's native symbol, overrides first."""
    venue = load_venue(venue_config.name)
    overrides = venue_config.native_overrides()
    return {i: overrides.get(i) or venue.native_symbol(i) for i in venue_config.instruments}
