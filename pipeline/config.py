"""Typed, frozen configuration, validated once at load.

``load_config(path)`` reads YAML and returns a :class:`Config` or raises
:class:`~pipeline.errors.ConfigError` listing *every* problem with its dotted
path and the bad value (``venues.binance.cores[0]: core 7 does not exist ...``).
Unknown keys are errors: a misspelled key must never silently read as a
default. Nothing else in the pipeline reads YAML, argv or the environment.

Each key is declared once, as one dataclass field made by :func:`key`: its
default, its check and its one line of documentation. One walk
(:func:`_load`) reads every section from those fields (nested sections, optional
sections, lists and maps of sections); what relates two keys (a size cap below
the size floor, an override for an instrument the venue does not quote, the
bridge's transport and credentials) is checked by the explicit ``_check_*``
functions after it. The README's configuration table is printed from the same
declaration (``python -m pipeline.config --markdown``) and a test keeps the two
equal. Choice lists come from :mod:`pipeline.choices`: this module imports no
process package (feed, simulator, detector, bridge, supervisor, board); ``MAX_DEPTH`` from
:mod:`pipeline.model`.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.choices import QUIRK_NAMES, TRANSPORTS, WAIT_MODES, transport_installed
from pipeline.errors import ConfigError
from pipeline.model import MAX_CONNECTIONS, MAX_DEPTH
from pipeline.net import is_loopback

INSTRUMENT_RE = re.compile(r"^[A-Z0-9]{2,12}/[A-Z0-9]{2,12}$")
BOX_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")     # one NATS subject token: no dots, no wildcards
STREAM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
CREDENTIAL_KEYS = ("key", "secret", "passphrase")
REQUIRED = dataclasses.MISSING


# ---------------------------------------------------------------- checks
#
# A check is ``check(value, path, ctx) -> value``: it returns the value to store (converted: lists become
# tuples) or ``_BAD`` after adding its problems to ``ctx`` with their dotted paths.

_BAD = object()


class _Context:
    """The problems found so far, and what the checks need to know about this machine."""

    def __init__(self, available: frozenset[int], known_venues: dict[str, float]) -> None:
        self.items: list[tuple[str, str]] = []
        self.available = available            # cores that exist here
        self.known_venues = known_venues      # exchange name -> its standard taker fee, bps
        self.section: dict = {}               # the raw mapping being walked (for keys that read a sibling)
        self.cores_preferred = False          # supervisor.cores_preferred: a core missing here is no error

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(minimum: float | None = None, maximum: float | None = None, integer: bool = False,
            exclusive_min: bool = False):
    def check(value, path, ctx):
        if not _is_number(value) or (integer and not isinstance(value, int)):
            kind = "an integer" if integer else "a number"
            ctx.add(path, f"must be {kind}, got {value!r}")
            return _BAD
        if value != value or value in (float("inf"), float("-inf")):
            ctx.add(path, f"must be finite, got {value!r}")
            return _BAD
        if minimum is not None and (value <= minimum if exclusive_min else value < minimum):
            ctx.add(path, f"must be {'>' if exclusive_min else '>='} {minimum}, got {value!r}")
            return _BAD
        if maximum is not None and value > maximum:
            ctx.add(path, f"must be <= {maximum}, got {value!r}")
            return _BAD
        return value
    return check


def _string(pattern: re.Pattern | None = None, choices: tuple[str, ...] | None = None):
    def check(value, path, ctx):
        if not isinstance(value, str) or not value:
            ctx.add(path, f"must be a non-empty string, got {value!r}")
            return _BAD
        if choices is not None and value not in choices:
            ctx.add(path, f"must be one of {', '.join(choices)}, got {value!r}")
            return _BAD
        if pattern is not None and not pattern.match(value):
            ctx.add(path, f"invalid value {value!r}")
            return _BAD
        return value
    return check


def _url_list(value, path, ctx):
    """A non-empty list of ws(s) URLs."""
    if not isinstance(value, list) or not value:
        ctx.add(path, f"must be a non-empty list of wss:// URLs, got {value!r}")
        return _BAD
    check = _string(re.compile(r"^wss?://"))
    urls = [check(url, f"{path}[{n}]", ctx) for n, url in enumerate(value)]
    return _BAD if any(u is _BAD for u in urls) else tuple(urls)


def _boolean(value, path, ctx):
    if not isinstance(value, bool):
        ctx.add(path, f"must be true or false, got {value!r}")
        return _BAD
    return value


def _cores(value, path, ctx):
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        ctx.add(path, f"must be a core number or a non-empty list of core numbers, got {value!r}")
        return _BAD
    ok = True
    for i, core in enumerate(value):
        if not isinstance(core, int) or isinstance(core, bool):
            ctx.add(f"{path}[{i}]", f"must be a core number, got {core!r}")
            ok = False
        elif core not in ctx.available and not ctx.cores_preferred:
            ctx.add(f"{path}[{i}]", f"core {core} does not exist on this machine "
                                    f"(available: {', '.join(map(str, sorted(ctx.available)))})")
            ok = False
    if len(set(value)) != len(value):
        ctx.add(path, f"lists a core twice: {value!r}")
        ok = False
    return tuple(value) if ok else _BAD


def _bind_host(value, path, ctx):
    """An address to listen on: an IP address (``127.0.0.1``, ``::1``, ``0.0.0.0``) or a host name; no port, no
    scheme."""
    if isinstance(value, str) and value:
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            # a name, but not one made of numbers only (999.1.1.1 is a mistyped address, not a name)
            if HOST_NAME.match(value) and not all(part.isdigit() for part in value.split(".")):
                return value
    ctx.add(path, f"must be an IP address or a host name to listen on (127.0.0.1: this machine only, 0.0.0.0: "
                  f"every interface), without port or scheme, got {value!r}")
    return _BAD


def _transport(value, path, ctx):
    """A transport whose non-default values come with the ``fast`` extra: refused when not installed."""
    if value not in TRANSPORTS:
        ctx.add(path, f"must be one of {', '.join(TRANSPORTS)}, got {value!r}")
        return _BAD
    if not transport_installed(value):
        ctx.add(path, f"{value} is not installed (pip install -e '.[fast]')")
        return _BAD
    return value


def _env_name(value, path, ctx):
    """The name of an environment variable that holds a secret. What was given is never echoed: a value that
    is not a name may be the secret itself, pasted where its variable's name belongs."""
    if not isinstance(value, str) or not ENV_NAME.match(value):
        ctx.add(path, "must be the name of an environment variable (letters, digits and _, not starting with "
                      "a digit); the secret itself never goes in the config (what was given is not shown: "
                      "it may be the secret)")
        return _BAD
    return value


def _credentials_env(value, path, ctx):
    """``{key: ENV, secret: ENV[, passphrase: ENV]}``: environment variable names, never the secrets (whether
    the venue needs the passphrase is checked with the venue, :func:`_check_venue`)."""
    if not isinstance(value, dict) or not {"key", "secret"} <= set(value) <= set(CREDENTIAL_KEYS):
        keys = sorted(map(str, value)) if isinstance(value, dict) else None
        ctx.add(path, "must map key, secret (and passphrase, where the venue has one) to environment variable "
                      "names" + (f" (given: {', '.join(keys)})" if keys is not None else ""))
        return _BAD
    out = []
    for name in (n for n in CREDENTIAL_KEYS if n in value):
        checked = _env_name(value[name], f"{path}.{name}", ctx)
        if checked is _BAD:
            return _BAD
        out.append((name, checked))
    return tuple(out)


def _existing_file(value, path, ctx):
    if not isinstance(value, str) or not value:
        ctx.add(path, f"must be a file path, got {value!r}")
        return _BAD
    if not os.path.isfile(value):
        ctx.add(path, f"file {value!r} does not exist")
        return _BAD
    return value


def _number_list(minimum=None, exclusive_min=False):
    item = _number(minimum, exclusive_min=exclusive_min)

    def check(value, path, ctx):
        if not isinstance(value, list):
            ctx.add(path, f"must be a list of numbers, got {value!r}")
            return _BAD
        out = [item(v, f"{path}[{i}]", ctx) for i, v in enumerate(value)]
        return _BAD if any(v is _BAD for v in out) else tuple(float(v) for v in out)
    return check


def _quote_groups(value, path, ctx):
    if not isinstance(value, list):
        ctx.add(path, f"must be a list of lists of quote currencies, e.g. [[USD, USDC]], got {value!r}")
        return _BAD
    groups = []
    seen = set()
    for i, group in enumerate(value):
        if not isinstance(group, list) or len(group) < 2 or not all(
                isinstance(c, str) and re.fullmatch(r"[A-Z0-9]{2,12}", c) for c in group):
            ctx.add(f"{path}[{i}]", f"must list at least two currencies like [USD, USDC], got {group!r}")
            return _BAD
        if seen & set(group):
            ctx.add(f"{path}[{i}]", f"a currency appears in two groups: {sorted(seen & set(group))}")
            return _BAD
        seen |= set(group)
        groups.append(tuple(group))
    return tuple(groups)


def _instrument_numbers(minimum=None, exclusive_min=False):
    item = _number(minimum, exclusive_min=exclusive_min)

    def check(value, path, ctx):
        if not isinstance(value, dict):
            ctx.add(path, f"must map instrument -> number, got {value!r}")
            return _BAD
        out = []
        for instrument, number in value.items():
            sub = f"{path}.{instrument}"
            if not isinstance(instrument, str) or not INSTRUMENT_RE.match(instrument):
                ctx.add(sub, f"unknown instrument {instrument!r}")
                continue
            checked = item(number, sub, ctx)
            if checked is not _BAD:
                out.append((instrument, float(checked)))
        return tuple(out)
    return check


def _start_prices(value, path, ctx):
    if not isinstance(value, dict):
        ctx.add(path, f"must map instrument -> price, got {value!r}")
        return _BAD
    prices = []
    for instrument, price in value.items():
        sub = f"{path}.{instrument}"
        if not isinstance(instrument, str) or not INSTRUMENT_RE.match(instrument):
            ctx.add(sub, f"unknown instrument {instrument!r}")
        elif not _is_number(price) or not price > 0 or price == float("inf"):
            ctx.add(sub, f"must be a positive number, got {price!r}")
        else:
            prices.append((instrument, float(price)))
    return tuple(prices)


def _instrument_list(value, path, ctx):
    if not isinstance(value, list) or not value:
        ctx.add(path, f"must be a non-empty list of instruments like BTC/USDT, got {value!r}")
        return _BAD
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not INSTRUMENT_RE.match(item):
            ctx.add(f"{path}[{i}]", f"unknown instrument {item!r} (expected BASE/QUOTE in capitals, e.g. BTC/USDT)")
            continue
        if item in out:
            ctx.add(f"{path}[{i}]", f"duplicate instrument {item!r}")
            continue
        out.append(item)
    return tuple(out)


def _symbols(value, path, ctx):
    """``{canonical: native}``; whether each canonical instrument is one the venue quotes is checked after the
    walk (:func:`_check_venue`)."""
    if not isinstance(value, dict):
        ctx.add(path, f"must map instrument -> native symbol, got {value!r}")
        return _BAD
    out = []
    for canonical, native in value.items():
        if not isinstance(native, str) or not native:
            ctx.add(f"{path}.{canonical}", f"native symbol must be a non-empty string, got {native!r}")
        else:
            out.append((canonical, native))
    return tuple(out)


def _sim_quirks(value, path, ctx):
    if not isinstance(value, list):
        ctx.add(path, f"must be a list of quirk names ({', '.join(QUIRK_NAMES)}), got {value!r}")
        return _BAD
    ok = True
    for i, name in enumerate(value):
        if name not in QUIRK_NAMES:
            ctx.add(f"{path}[{i}]", f"unknown quirk {name!r} (known: {', '.join(QUIRK_NAMES)})")
            ok = False
    return tuple(value) if ok else _BAD


def _off_or_at_least(shortest_s: float, longest_s: float | None = None):
    """A time between events, s: 0 (never), or from ``shortest_s`` (to ``longest_s``)."""
    number = _number(0, longest_s)

    def check(value, path, ctx):
        checked = number(value, path, ctx)
        if checked is not _BAD and 0 < checked < shortest_s:
            ctx.add(path, f"must be 0 (never) or at least {shortest_s:g} s, got {value!r}")
            return _BAD
        return checked
    return check


_every_s = _off_or_at_least(0.01)          # a mean time between random events


def _ms_range(value, path, ctx):
    """``[low, high]``: two numbers of ms, 0 <= low <= high <= one hour."""
    if not isinstance(value, list) or len(value) != 2:
        ctx.add(path, f"must be a range of two numbers [low, high], ms, got {value!r}")
        return _BAD
    bounds = [_number(0, 3_600_000)(v, f"{path}[{i}]", ctx) for i, v in enumerate(value)]
    if _BAD in bounds:
        return _BAD
    if bounds[0] > bounds[1]:
        ctx.add(path, f"low must not be above high, got {value!r}")
        return _BAD
    return (float(bounds[0]), float(bounds[1]))


# ---------------------------------------------------------------- declaring keys

def key(default: Any, check: Callable, doc: str, *, shown: str | Callable[[], str] | None = None,
        missing: str | None = None):
    """One configuration key: a dataclass field carrying its default (``REQUIRED``: none), its check and its
    one line of documentation. ``shown``: the default as the table states it, where the value alone does not
    say it (``None`` meaning "the venue's"); ``missing``: what to say when a required key is absent."""
    metadata = {"check": check, "doc": doc, "shown": shown, "missing": missing}
    if default is REQUIRED:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type, doc: str, *, optional: bool = False, shown: str | None = None):
    """A nested section, loaded by the same walk. An optional one is off (None) unless the file has it; a
    required one takes every default when absent."""
    def check(value, path, ctx):
        if value is None:
            return None if optional else cls()
        loaded = _load(cls, value, path, ctx)
        return _BAD if loaded is None else loaded
    metadata = {"check": check, "doc": doc, "shown": shown or ("off" if optional else "—"), "section": cls}
    if optional:
        return field(default=None, metadata=metadata)
    return field(default_factory=cls, metadata=metadata)


def sections(cls: type, doc: str, *, what: str):
    """A list of sections (``[{...}, {...}]``); an item with problems is left out, its problems reported."""
    def check(value, path, ctx):
        if not isinstance(value, list):
            ctx.add(path, f"must be a list of {what}, got {value!r}")
            return _BAD
        loaded = (_load(cls, item, f"{path}[{i}]", ctx) for i, item in enumerate(value))
        return tuple(item for item in loaded if item is not None)
    return field(default=(), metadata={"check": check, "doc": doc, "shown": "[]", "section": cls, "items": "[]"})


def _keys(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of ``cls`` read from the file, in declaration order (``name``, ``source`` ... are not)."""
    return {f.name: f for f in dataclasses.fields(cls) if "check" in f.metadata}


def _venue(name, raw, path, ctx):
    """One venue's section (``venues.NAME`` or ``bridge.subscribe.BOX.NAME``), or None."""
    if name not in ctx.known_venues:
        ctx.add(path, f"unknown exchange {name!r} (known: {', '.join(sorted(ctx.known_venues))})")
        return None
    if not isinstance(raw, dict):
        ctx.add(path, f"must be a mapping, got {raw!r}")
        return None
    return _load(VenueConfig, raw, path, ctx, name=name)


def _venues(value, path, ctx):
    """``{exchange: {...}}``; an absent section is judged after the walk (a box may only mirror others)."""
    if value is None:
        return ()
    if not isinstance(value, dict) or not value:
        ctx.add(path, f"must map exchange name -> settings, with at least one exchange, got {value!r}")
        return ()
    venues = (_venue(name, raw, f"{path}.{name}", ctx) for name, raw in value.items())
    return tuple(venue for venue in venues if venue is not None)


# the keys of a venue another box quotes that this box sets (fees and trust); the rest is the remote box's
REMOTE_VENUE_KEYS = {"instruments", "taker_fee_bps", "fee_overrides", "staleness_ms", "max_unchanged_ms",
                     "max_exchange_lag_ms"}


def _bridge_subscribe(raw, path, ctx):
    """``{box: {venue: [instruments] | {instruments, taker_fee_bps, fee_overrides, staleness_ms}}}``."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        ctx.add(path, f"must map box name -> {{venue: [instruments]}}, got {raw!r}")
        return _BAD
    own_box = ctx.section.get("box")
    out = []
    ok = True
    for box, venues_raw in raw.items():
        sub = f"{path}.{box}"
        if not isinstance(box, str) or not BOX_RE.match(box):
            ctx.add(sub, f"invalid box name {box!r} (lower-case letters, digits, - and _)")
            ok = False
            continue
        if box == own_box:
            ctx.add(sub, f"is this box's own name ({own_box!r}): its rows are already local")
            ok = False
            continue
        if not isinstance(venues_raw, dict) or not venues_raw:
            ctx.add(sub, f"must map venue -> instruments, got {venues_raw!r}")
            ok = False
            continue
        venues = []
        for name, venue_raw in venues_raw.items():
            if isinstance(venue_raw, list):
                venue_raw = {"instruments": venue_raw}
            elif isinstance(venue_raw, dict) and set(venue_raw) - REMOTE_VENUE_KEYS:
                for extra in sorted(set(venue_raw) - REMOTE_VENUE_KEYS, key=str):
                    ctx.add(f"{sub}.{name}.{extra}", "belongs in the remote box's own config, not here "
                                                     f"(allowed: {', '.join(sorted(REMOTE_VENUE_KEYS))})")
                ok = False
                continue
            venue = _venue(name, venue_raw, f"{sub}.{name}", ctx)
            if venue is None or not venue.instruments:
                ok = False
                continue
            venues.append(venue)
        out.append((box, tuple(venues)))
    return tuple(out) if ok else _BAD


def _fee_default() -> str:
    from pipeline.venues import BUILT_IN, load_venue
    return "the exchange's standard spot taker tier: " + ", ".join(
        f"{name} {load_venue(name).taker_fee_bps:g}" for name in BUILT_IN)


# ---------------------------------------------------------------- the declaration

@dataclass(frozen=True)
class BoardConfig:
    name: str = key("pipeline-board", _string(re.compile(r"^[A-Za-z0-9_.-]{1,60}$")),
                    "shared-memory segment name (`/dev/shm/<name>`)")
    depth: int = key(5, _number(1, MAX_DEPTH, integer=True), f"levels per side on each row (1–{MAX_DEPTH})")


@dataclass(frozen=True)
class VenueConfig:
    name: str                              # the key under ``venues``
    instruments: tuple[str, ...] = key(
        REQUIRED, _instrument_list, "canonical `BASE/QUOTE`; `BTC/USD` and `BTC/USDT` are different instruments",
        missing="list the instruments to quote, e.g. [BTC/USDT]")
    url: str | None = key(None, _string(re.compile(r"^wss?://")),
                          "real endpoint; without it the venue connects to the simulator", shown="simulator")
    symbols: tuple[tuple[str, str], ...] = key((), _symbols, "per-instrument native symbol override",
                                               shown="rule per exchange")
    taker_fee_bps: float = key(10.0, _number(0, 1000), "taker fee on this exchange, bps", shown=_fee_default)
    cores: tuple[int, ...] = key((), _cores, "cores for this feed process", shown="unpinned")
    staleness_ms: float = key(5000.0, _number(0, exclusive_min=True),
                              "a row neither updated nor confirmed (heartbeat, unchanged re-send) for this long is "
                              "marked stale")
    max_unchanged_ms: float | None = key(
        None, _number(0), "the detector opens nothing on this venue's quote when its price has not changed for "
        "this long while another venue's quote of the instrument did (the exchange's confirmations prove the "
        "connection, not the price); 0: never. Counted in the summary as held back", shown="detector.staleness_ms")
    max_exchange_lag_ms: float = key(
        1000.0, _number(0), "nor when its last change arrived more than this after the exchange's own time for "
        "it, less the feed's clock-offset estimate (the venue's stream runs late); 0: never")
    fee_overrides: tuple[tuple[str, float], ...] = key((), _instrument_numbers(0),
                                                       "per-instrument taker fee on this exchange", shown="{}")
    ws_ping_interval_s: float | None = key(None, _number(0, 3600), "RFC 6455 pings from the client; 0 turns them "
                                           "off for a server that does not answer them", shown="the venue's (20)")
    transport: str = key("websockets", _transport,
                         "`picows` (`pip install -e '.[fast]'`): a Cython WebSocket client that hands each message "
                         "to the feed session from its protocol callback; the conformance suite runs every venue "
                         "over both")
    credentials_env: tuple[tuple[str, str], ...] = key(
        (), _credentials_env, "`{key: ENV, secret: ENV, passphrase: ENV}`: names of environment variables (never "
        "the secrets) of an API key; for okx (with its passphrase) log in and take `books50-l2-tbt`, falling back "
        "to `books` when OKX refuses it (64003); with `fee_lookup`, every venue (passphrase: okx only)",
        shown="off")
    fee_lookup: bool = key(False, _boolean, "ask the venue what this account pays (its signed fee endpoint, with "
                           "`credentials_env`) at start and every `reference_data.refresh_s`; the detector uses it in "
                           "place of `taker_fee_bps` / `fee_overrides`; refused: configured fees and a health alert "
                           "([Fees your account pays](docs/trading-rules.md#fees-your-account-pays))")
    connections: int = key(1, _number(1, MAX_CONNECTIONS, integer=True),
                           "independent connections to the venue, each subscribed to every instrument; the first copy "
                           "of each update wins and a row stays live while one connection is trusted "
                           "([Redundant connections](#redundant-connections)); venues whose updates carry no "
                           "exchange-wide id keep 1")
    urls: tuple[str, ...] = key((), _url_list, "one endpoint per connection, in order (the venue's documented "
                                "alternatives, e.g. Binance's `stream.binance.com:9443` and "
                                "`data-stream.binance.vision`), in place of `url`", shown="`url` for each")
    rules_url: str | None = key(None, _string(re.compile(r"^(https?|wss?)://[^\s/]+/?$")),
                                "`http(s)://host:port` the venue's trading rules are fetched from (its endpoint's "
                                "path is kept; ws(s) for a venue that publishes them on a channel)",
                                shown="the venue's; the simulator's without `url`")

    def fee_bps(self, instrument: str) -> float:
        return dict(self.fee_overrides).get(instrument, self.taker_fee_bps)

    def native_overrides(self) -> dict[str, str]:
        return dict(self.symbols)


@dataclass(frozen=True)
class SinkConfig:
    """Optional HTTP sink: POST every ``open`` event to ``url`` with a bearer token
    read from the environment variable ``token_env`` (never from the file)."""

    url: str = key(REQUIRED, _string(re.compile(r"^https?://")), "the analysis service's http(s) URL",
                   missing="the analysis service's http(s) URL")
    token_env: str | None = key(None, _env_name, "environment variable holding the bearer token", shown="no token")
    timeout_s: float = key(2.0, _number(0, exclusive_min=True), "seconds per request")
    queue_size: int = key(1000, _number(1, integer=True), "events waiting to be sent, at most")


@dataclass(frozen=True)
class DetectorConfig:
    threshold_bps: float = key(0.0, _number(0), "net edge after both fees at which an opportunity opens")
    staleness_ms: float = key(2000.0, _number(0, exclusive_min=True), "quotes older than this never make an "
                                                                      "opportunity")
    wait: str = key("doorbell", _string(choices=WAIT_MODES), "`doorbell` (idle-friendly) or `spin` (dedicated core)")
    spin_us: float = key(50.0, _number(0), "doorbell mode: spin this long after activity before sleeping")
    output: str = key("opportunities.jsonl", _string(),
                      "events file: each run writes its own beside it and this name links to the latest "
                      "([One run, one file](#one-run-one-file))")
    cores: tuple[int, ...] = key((), _cores, "cores for the detector process", shown="unpinned")
    print_opportunities: bool = key(True, _boolean, "print each event as a readable line on stdout")
    decision_ring: int = key(65536, _number(16, 1 << 24, integer=True),
                             "entries of the decision ring the detector writes and the output process (and "
                             "`pipeline.decisions.follow`) reads; a reader more than this behind loses entries, "
                             "counted")
    output_cores: tuple[int, ...] = key((), _cores, "cores for the output process (stdout, events file, sink)",
                                        shown="unpinned")
    max_notional: float = key(100_000.0, _number(0, exclusive_min=True), "size cap, quote currency")
    min_notional: float = key(10.0, _number(0), "size floor, quote currency: smaller opportunities are not reported")
    sanity_bps: float = key(500.0, _number(0, exclusive_min=True),
                            "edges above this are reported as suspected data errors, not opportunities")
    update_bps: float = key(1.0, _number(0), "an open opportunity whose edge moves this much emits `update`")
    close_hysteresis_bps: float | None = key(
        None, _number(0), "an open opportunity ends when its edge falls below `threshold_bps` minus this "
        "(10 bps for two 10 bps venues)", shown="half the pair's two taker fees")
    close_after_ms: float = key(1000.0, _number(0), "or when it stays under `threshold_bps` this long (0: never); "
                                                    "its pair then cannot reopen until the edge is gone")
    reopen_ms: float = key(100.0, _number(0), "an opportunity whose pair comes back within this long after it "
                                              "ended continues (a flap), and its `close` waits this long")
    conversion_bps: float = key(10.0, _number(0), "cost charged to a pair whose legs quote different currencies "
                                                  "of one `equivalent_quotes` group")
    shadow_latencies_ms: tuple[float, ...] = key((5.0, 20.0, 50.0), _number_list(0, exclusive_min=True),
                                                 "re-price every `open` this long after detection")
    equivalent_quotes: tuple[tuple[str, ...], ...] = key(
        (), _quote_groups, "quote currencies compared as one, e.g. `[[USD, USDT]]`; the first states the totals")
    max_notional_by_instrument: tuple[tuple[str, float], ...] = key(
        (), _instrument_numbers(0, exclusive_min=True), "per-instrument size caps", shown="{}")
    sink: SinkConfig | None = section(
        SinkConfig, "POST `open` events ([Sending opportunities](#sending-opportunities-to-an-analysis-service))",
        optional=True)

    def max_notional_for(self, instrument: str) -> float:
        return dict(self.max_notional_by_instrument).get(instrument, self.max_notional)


@dataclass(frozen=True)
class HealthConfig:
    interval_s: float = key(5.0, _number(0.1), "seconds between health blocks")
    cores: tuple[int, ...] = key((), _cores, "cores for the health reporter", shown="unpinned")


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus endpoint on ``host``:``port`` (off unless configured; loopback unless ``host`` says otherwise)."""

    port: int = key(REQUIRED, _number(1, 65535, integer=True), "Prometheus `/metrics` on `host:port`",
                    missing="the port to serve /metrics on, at metrics.host")
    host: str = key("127.0.0.1", _bind_host, "address `/metrics` listens on: this machine only unless this names "
                                             "another (`0.0.0.0`: every interface)")


@dataclass(frozen=True)
class RecordingConfig:
    """Record every frame each feed receives (see :mod:`pipeline.recording`); off unless configured."""

    dir: str = key(REQUIRED, _string(re.compile(r".+")), "directory the feeds write their recordings to",
                   missing="the directory the feeds write their recordings to")
    rotate_mb: float = key(256.0, _number(minimum=0.01), "start a new file past this size, MiB")
    keep_files: int = key(0, _number(minimum=0, integer=True), "per venue, the newest kept; 0 keeps all")


@dataclass(frozen=True)
class ReferenceDataConfig:
    """Each feed's trading rules (docs/trading-rules.md "How the pipeline loads them")."""

    cache_dir: str = key("~/.cache/pipeline/rules", _string(re.compile(r".+")),
                         "the last good reference-data response of each venue is kept here (`<venue>.json`)")
    refresh_s: float = key(3600.0, _number(0), "fetch the rules again this often, s (0: only at start and on the "
                                               "venue's change notices)")
    timeout_s: float = key(5.0, _number(0, exclusive_min=True), "per fetch attempt, s")
    retries: int = key(3, _number(1, 100, integer=True), "attempts per fetch (with backoff between them)")


@dataclass(frozen=True)
class SupervisorConfig:
    restart_backoff_s: float = key(0.2, _number(0), "delay before restarting a child that died; doubles with each "
                                                    "death in a row")
    restart_backoff_max_s: float = key(10.0, _number(0), "the restart delay at most")
    max_restarts: int = key(20, _number(1, integer=True), "a child dying more often within `restart_window_s` is "
                                                          "reported failed, the rest keeps running")
    restart_window_s: float = key(300.0, _number(0, exclusive_min=True), "the window `max_restarts` counts in, s")
    cores_preferred: bool = key(False, _boolean, "cores are a preference: pin each process only to its listed "
                                                 "cores that exist here and say which were left out (the demo); "
                                                 "false: a listed core missing here is a configuration error")


@dataclass(frozen=True)
class ScriptedDislocation:
    """``exchange`` quotes ``instrument`` ``bps`` away from the market from ``at_s`` after
    the simulator starts, for ``duration_ms`` (positive: too high)."""

    at_s: float = key(REQUIRED, _number(0), "seconds after the simulator starts")
    exchange: str = key(REQUIRED, _string(), "the exchange that quotes away from the market")
    instrument: str = key(REQUIRED, _string(INSTRUMENT_RE), "the instrument it quotes away")
    bps: float = key(REQUIRED, _number(-5000, 5000), "how far (positive: too high)")
    duration_ms: float = key(REQUIRED, _number(0, exclusive_min=True), "for how long")


@dataclass(frozen=True)
class SimulatorPathsConfig:
    """Each simulated connection's own network path (:mod:`pipeline.sim.paths`); off unless configured, and then
    every frame of every connection goes through one."""

    delay_ms: float = key(0.2, _number(0, 10_000), "median one-way delay of each frame (lognormal), ms; a frame "
                                                   "never overtakes an earlier one of its connection")
    jitter: float = key(0.5, _number(0, 3), "sigma of the delay's lognormal (0: every frame takes `delay_ms`)")
    stall_every_s: float = key(5.0, _every_s, "mean time between stalls of one connection (exponential), s; a "
                                              "stall holds every frame until it ends; 0: never")
    stall_ms: tuple[float, float] = key((50.0, 300.0), _ms_range, "`[low, high]`: how long a stall lasts "
                                                                  "(uniform), ms")
    disconnect_every_s: float = key(0.0, _every_s, "mean time between abrupt drops (TCP reset, no close frame) of "
                                                   "one connection (exponential), s; 0: never")
    # 0.1 s at least: a turn must leave the dropped connection time to come back
    fault_every_s: float = key(0.0, _off_or_at_least(0.1, 86_400),
                               "every this many seconds each venue's oldest open connection goes down, dropped (TCP "
                               "reset) and stalled in turn, never while another of its connections is down; 0: never")
    fault_stall_ms: float = key(300.0, _number(1, 3_600_000), "how long each stall of `fault_every_s` lasts, ms")


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int = key(7, _number(0, integer=True), "seed of the simulated market")
    host: str = key("127.0.0.1", _string(re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|::1)$")),
                    "loopback address the simulated exchanges listen on")
    cores: tuple[int, ...] = key((), _cores, "cores for the simulator process", shown="unpinned")
    update_interval_ms: float = key(20.0, _number(0.01), "between two updates, per exchange and instrument")
    volatility_bps: float = key(1.0, _number(0), "per step, of the shared random walk")
    noise_bps: float = key(0.3, _number(0), "per exchange quote noise")
    half_spread_bps: float = key(0.5, _number(0), "half the simulated spread")
    dislocation_every_s: float = key(2.0, _number(0, exclusive_min=True), "mean time between random dislocations")
    dislocation_bps: float = key(25.0, _number(0), "how far the lagging exchange is off")
    dislocation_ms: float = key(150.0, _number(0), "how long it lags")
    start_prices: tuple[tuple[str, float], ...] = key(
        (), _start_prices, "`{BTC/USDT: 65000}`: where each instrument's price starts", shown="by base currency")
    random_dislocations: bool = key(True, _boolean, "one exchange lagging the others now and then")
    scripted_dislocations: tuple[ScriptedDislocation, ...] = sections(
        ScriptedDislocation, "dislocations at set times, for repeatable scenarios", what="dislocations")
    quirks: tuple[str, ...] = key(
        (), _sim_quirks, "real-venue behaviours to imitate: `shortest_numbers` (Kraken numbers as JSON serializers "
        "print them), `late_depth` (depth after a newer top of book), `resend_unchanged` (Bybit's 3 s re-send), "
        "and every 10 s `sequence_resets`, `venue_status` (Kraken maintenance), `planned_disconnects` (Binance "
        "`serverShutdown`, OKX 64008), `dropped_messages`")
    paths: SimulatorPathsConfig | None = section(SimulatorPathsConfig, "each connection's own network path: "
                                                 "delay, stalls, drops, seeded per connection", optional=True)


@dataclass(frozen=True)
class BridgeRecordConfig:
    """Keep the published rows in a JetStream stream named ``stream`` for ``max_age_h`` hours, in at most
    ``max_mb`` MiB and ``max_messages`` messages: past either the server discards the oldest messages (the
    bridge counts them, see :mod:`pipeline.bridge.stream`)."""

    stream: str = key(REQUIRED, _string(STREAM_RE), "JetStream stream the published rows are kept in",
                      missing="the JetStream stream name, e.g. QUOTES")
    max_age_h: float = key(24.0, _number(0, exclusive_min=True), "hours a message is kept")
    # at least a few hundred row messages; at most what one JetStream file store sensibly holds (1 TiB)
    max_mb: float = key(1024.0, _number(0.1, 1 << 20), "MiB kept at most; past it the oldest are discarded "
                                                       "(and counted)")
    max_messages: int = key(10_000_000, _number(100, 1 << 40, integer=True), "messages kept at most; past it the "
                                                                             "oldest are discarded (and counted)")


@dataclass(frozen=True)
class BridgeConfig:
    """Join boxes over NATS (see :mod:`pipeline.bridge`).

    ``subscribe`` maps a remote box name to the venues (full :class:`VenueConfig`
    records, for fees and staleness) whose rows this box mirrors. Credentials
    are named, never given: an environment variable for a token, or a file path
    for a token, an nkey seed or a creds file.
    """

    nats_url: str = key(REQUIRED, _string(re.compile(r"^(nats|tls)://[^\s/]+(:\d+)?/?$")),
                        "`tls://host:port`; `nats://host:port` only to this machine unless `allow_plaintext`",
                        missing="e.g. nats://127.0.0.1:4222")
    box: str = key(REQUIRED, _string(BOX_RE), "this box's name (lower case, one subject token)",
                   missing="this box's name, e.g. tokyo")
    publish: bool = key(False, _boolean, "publish this box's rows")
    publish_decisions: bool = key(False, _boolean, "publish each decision record (the events file's JSON) on "
                                                   "`decisions.<box>`, from the output process")
    subscribe: tuple[tuple[str, tuple[VenueConfig, ...]], ...] = key(
        (), _bridge_subscribe, "`{box: {venue: [instruments] or {instruments, taker_fee_bps, fee_overrides, "
        "staleness_ms, max_unchanged_ms, max_exchange_lag_ms}}}`: rows mirrored from other boxes, with the fees "
        "and trust limits the detector uses for them", shown="{}")
    depth: int | None = key(None, _number(1, MAX_DEPTH, integer=True), "levels per side published",
                            shown="board.depth")
    heartbeat_interval_ms: float = key(1000.0, _number(10), "between two heartbeats of this box")
    heartbeat_timeout_ms: float = key(3000.0, _number(0, exclusive_min=True),
                                      "a box silent this long has its rows marked `disconnected`")
    connect_timeout_s: float = key(2.0, _number(0, exclusive_min=True), "per connection attempt")
    token_env: str | None = key(None, _env_name, "environment variable holding the token; at most one "
                                                 "credential source", shown="—")
    token_file: str | None = key(None, _existing_file, "file holding the token", shown="—")
    nkey_seed_file: str | None = key(None, _existing_file, "file holding the nkey seed", shown="—")
    creds_file: str | None = key(None, _existing_file, "NATS creds file", shown="—")
    tls_ca_file: str | None = key(None, _existing_file, "CA to trust", shown="—")
    tls_cert_file: str | None = key(None, _existing_file, "client certificate (with `tls_key_file`)", shown="—")
    tls_key_file: str | None = key(None, _existing_file, "client certificate's key", shown="—")
    # nats:// to another machine carries the credentials and the quotes in clear: refused unless this says the
    # network between the boxes is private and trusted
    allow_plaintext: bool = key(False, _boolean, "`true` accepts `nats://` to another machine: only on a private "
                                                 "network you trust")
    cores: tuple[int, ...] = key((), _cores, "cores for the bridge process", shown="unpinned")
    record: BridgeRecordConfig | None = section(BridgeRecordConfig, "keep the published rows in a JetStream stream",
                                                optional=True)

    def remote_rows(self) -> list[tuple[str, VenueConfig, str]]:
        """(box, venue, instrument) of every mirrored row, in config order."""
        return [(box, venue, instrument) for box, venues in self.subscribe for venue in venues
                for instrument in venue.instruments]


@dataclass(frozen=True)
class Config:
    board: BoardConfig = section(BoardConfig, "the shared-memory quote board")
    venues: tuple[VenueConfig, ...] = key((), _venues, "`{exchange: {...}}`: the exchanges this box quotes "
                                                        "(at least one, unless `bridge.subscribe` mirrors others)",
                                          shown="required")
    detector: DetectorConfig = section(DetectorConfig, "the opportunity detector")
    health: HealthConfig = section(HealthConfig, "the health reporter")
    supervisor: SupervisorConfig = section(SupervisorConfig, "restarts of the child processes")
    reference_data: ReferenceDataConfig = section(ReferenceDataConfig, "trading rules: where they are cached, "
                                                                       "how often they are fetched again")
    simulator: SimulatorConfig | None = section(SimulatorConfig, "the local exchange simulator (the venues without "
                                                                 "`url` connect to it)", optional=True)
    metrics: MetricsConfig | None = section(MetricsConfig, "Prometheus endpoint", optional=True)
    bridge: BridgeConfig | None = section(
        BridgeConfig, "join boxes over NATS ([Several boxes](#several-boxes-joining-them-over-nats))", optional=True)
    recording: RecordingConfig | None = section(RecordingConfig, "record every frame (see [Record and "
                                                                 "replay](#record-and-replay))", optional=True)
    source: str = ""
    # from the command line (--verbose), never from the file: full health block, update/shadow lines
    verbose: bool = False
    run_id: str = ""           # chosen by the supervisor at start, never from the file: stamped on every event record

    @property
    def instruments(self) -> tuple[str, ...]:
        """Every canonical instrument, in first-seen order (its index is its id)."""
        seen: dict[str, None] = {}
        for venue in self.venues:
            for instrument in venue.instruments:
                seen.setdefault(instrument, None)
        return tuple(seen)

    def venue(self, name: str) -> VenueConfig:
        for venue in self.venues:
            if venue.name == name:
                return venue
        raise KeyError(name)

    @property
    def board_instruments(self) -> tuple[str, ...]:
        """Every instrument on the board (local, then mirrored from other boxes); its index is its id."""
        seen = dict.fromkeys(self.instruments)
        if self.bridge is not None:
            for _, _, instrument in self.bridge.remote_rows():
                seen.setdefault(instrument, None)
        return tuple(seen)

    def venue_for(self, venue: str, box: str = "") -> VenueConfig:
        """Fees and staleness of a row: this box's venue, or the one declared under ``bridge.subscribe.<box>``."""
        if not box:
            return self.venue(venue)
        if self.bridge is not None:
            for name, venues in self.bridge.subscribe:
                if name == box:
                    for candidate in venues:
                        if candidate.name == venue:
                            return candidate
        raise KeyError(f"{venue}@{box}")


# ---------------------------------------------------------------- loading

# keys a section refuses by name, with what to do instead: secrets never go in a config file, and keys that no
# longer exist say what replaced them
SECRET_KEYS = {"token": "token_env or token_file", "password": "token_env or token_file",
               "nkey_seed": "nkey_seed_file", "creds": "creds_file", "user": "creds_file"}
REFUSED_KEYS: dict[type, dict[str, str]] = {
    VenueConfig: {"decoder": "no longer exists: each venue's wire messages are declared once and decoded by that "
                             "declaration (msgspec); there is no decoder to choose: remove the key"},
    SinkConfig: {"token": "never put a token in a config file: name an environment variable in token_env and "
                          "export the token there"},
    BridgeConfig: {name: f"never put credentials in a config file: use {use}" for name, use in SECRET_KEYS.items()},
}


def _load(cls: type, raw: Any, path: str, ctx: _Context, **fixed: Any):
    """Walk the declared keys of ``cls`` over ``raw``; returns the instance, or None when it cannot be built.

    Every problem is added to ``ctx`` with its dotted path: a key that is not declared, a refused key, a value
    its check rejects, a required key that is missing. Then the section's ``_check_*`` function (in
    :data:`CROSS_CHECKS`) judges what relates its keys; it may return False to leave the section out.
    ``fixed``: values that do not come from the file (a venue's name is its key).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        ctx.add(path, f"must be a mapping, got {type(raw).__name__} {raw!r}")
        return None
    declared = _keys(cls)
    refused = REFUSED_KEYS.get(cls, {})
    allowed = ", ".join(declared) if cls is Config else ", ".join(sorted(declared))
    outer, ctx.section = ctx.section, raw
    values: dict[str, Any] = dict(fixed)
    try:
        for name, value in raw.items():
            sub = f"{path}.{name}" if path else str(name)
            if name in refused:
                ctx.add(sub, refused[name])
            elif name not in declared:
                ctx.add(sub, f"unknown key (allowed: {allowed})")
            else:
                checked = declared[name].metadata["check"](value, sub, ctx)
                if checked is not _BAD:
                    values[name] = checked
        required = [f for f in declared.values() if f.default is REQUIRED and f.default_factory is REQUIRED]
        for f in required:
            if f.name not in raw:
                hint = f.metadata["missing"]
                ctx.add(f"{path}.{f.name}" if path else f.name, "missing" + (f" ({hint})" if hint else ""))
        cross_check = CROSS_CHECKS.get(cls)
        if cross_check is not None and cross_check(values, raw, path, ctx) is False:
            return None
    finally:
        ctx.section = outer
    if any(f.name not in values for f in required):
        return None
    return cls(**values)


def _default(cls: type, values: dict, name: str):
    """The value of ``name`` in a section being checked: what the file gave, else the declared default."""
    return values.get(name, next(f.default for f in dataclasses.fields(cls) if f.name == name))


def _check_venue(values, raw, path, ctx):
    """Overrides name instruments this venue quotes; credentials only where the venue logs in, and never over
    plain text to another machine; the fee defaults to the venue's standard one."""
    instruments = values.setdefault("instruments", ())      # a missing or bad list is reported: check the rest
    for canonical, _ in values.get("symbols", ()):
        if canonical not in instruments:
            ctx.add(f"{path}.symbols.{canonical}", f"override for {canonical!r}, which is not in {path}.instruments")
    from pipeline.venues import VENUES, load_venue
    record = load_venue(values["name"])
    if values.get("connections", 1) > 1 and record.single_connection:
        ctx.add(f"{path}.connections", f"{values['name']} keeps one connection: {record.single_connection}")
    if values.get("urls"):
        if "url" in values:
            ctx.add(f"{path}.urls", "give url (every connection) or urls (one per connection), not both")
        else:
            if len(values["urls"]) != values.get("connections", 1):
                ctx.add(f"{path}.urls", f"{len(values['urls'])} URLs for {values.get('connections', 1)} connections: "
                                        f"one per connection ({path}.connections)")
            values["url"] = values["urls"][0]      # the venue's endpoint where one is asked for (rules, doctor)
    fees = getattr(record, "account_fees", None)
    if values.get("fee_lookup"):
        if fees is None:
            with_fees = [v for v in VENUES if getattr(load_venue(v), "account_fees", None) is not None]
            ctx.add(f"{path}.fee_lookup", f"{values['name']} has no account fee endpoint (these do: "
                                          f"{', '.join(with_fees)})")
        elif not values.get("credentials_env"):
            ctx.add(f"{path}.fee_lookup", f"needs {path}.credentials_env: the names of the environment variables "
                                          f"holding the API {', '.join(fees.needs)}")
        elif fees.method != "GET" and not values.get("url") and not values.get("rules_url"):
            ctx.add(f"{path}.fee_lookup", f"the simulator answers {values['name']}'s signed {fees.method} on its "
                                          "account port only, not where a feed asks: look fees up against the venue "
                                          "(give url)")
    if values.get("credentials_env"):
        logs_in = [v for v in VENUES if load_venue(v).build_login is not None]
        given = {part for part, _ in values["credentials_env"]}
        needs = set(fees.needs) if fees is not None and values.get("fee_lookup") else set()
        if record.build_login is not None:
            needs |= set(CREDENTIAL_KEYS)
        if record.build_login is None and not (values.get("fee_lookup") and fees is not None):
            ctx.add(f"{path}.credentials_env", f"only {', '.join(logs_in)} takes credentials (to log in for "
                                               "tick-by-tick depth), or a venue with fee_lookup")
        elif needs - given:
            ctx.add(f"{path}.credentials_env", f"{values['name']} needs {', '.join(sorted(needs - given))} too")
        rules_at = values.get("rules_url")
        if values.get("fee_lookup") and rules_at and rules_at.startswith("http://") and not is_loopback(
                urllib.parse.urlsplit(rules_at).hostname):
            ctx.add(f"{path}.rules_url", f"{rules_at} is plain text: the signed fee lookup would travel in clear; "
                                         "use https:// with fee_lookup")
        url = values.get("url")
        if record.build_login is not None and url and url.startswith("ws://") and not is_loopback(
                urllib.parse.urlsplit(url).hostname):
            ctx.add(f"{path}.url", f"{url} is plain text: the login (api key, passphrase, signature) would travel "
                                   f"in clear; log in over wss:// only")
    for instrument, _ in values.get("fee_overrides", ()):
        if instrument not in instruments:
            ctx.add(f"{path}.fee_overrides.{instrument}", f"override for {instrument!r}, which is not in "
                                                          f"{path}.instruments")
    values.setdefault("taker_fee_bps", ctx.known_venues[values["name"]])


def _check_detector(values, raw, path, ctx):
    """A size cap below the size floor would never let an opportunity through."""
    max_notional = _default(DetectorConfig, values, "max_notional")
    min_notional = _default(DetectorConfig, values, "min_notional")
    if max_notional < min_notional:
        ctx.add(f"{path}.max_notional", f"{max_notional:g} is below {path}.min_notional "
                                        f"({min_notional:g}): no opportunity could ever be reported")
    for instrument, cap in values.get("max_notional_by_instrument", ()):
        if cap < min_notional:
            ctx.add(f"{path}.max_notional_by_instrument.{instrument}",
                    f"{cap:g} is below {path}.min_notional ({min_notional:g}): no opportunity in "
                    f"{instrument} could ever be reported")


def _check_bridge(values, raw, path, ctx):
    """No credentials in the URL, nothing in clear to another machine unless allowed, one credential source, a
    whole client certificate, a heartbeat timeout longer than the interval, and something to do."""
    url = values.get("nats_url")
    if url and "@" in url:
        ctx.add(f"{path}.nats_url", "never put credentials in a config file (user:password@ in the URL): "
                                    "use token_env, token_file, nkey_seed_file or creds_file")
        values.pop("nats_url")
    elif url and url.startswith("nats://") and not values.get("allow_plaintext") \
            and not is_loopback(urllib.parse.urlsplit(url).hostname):
        ctx.add(f"{path}.nats_url", f"{url} is plain text to another machine: the credentials and every quote "
                                    f"travel in clear, and anyone on the path can read them or inject quotes "
                                    f"the detector would trade on; use tls://{url[len('nats://'):]} (or, only on "
                                    f"a private network you trust, set {path}.allow_plaintext: true)")
    given = [k for k in ("token_env", "token_file", "nkey_seed_file", "creds_file") if k in values]
    if len(given) > 1:
        ctx.add(f"{path}.{given[1]}", f"only one credential source, got {', '.join(given)}")
    if ("tls_cert_file" in values) != ("tls_key_file" in values):
        ctx.add(f"{path}.tls_key_file" if "tls_cert_file" in values else f"{path}.tls_cert_file",
                "a client certificate needs both tls_cert_file and tls_key_file")
    interval_ms = _default(BridgeConfig, values, "heartbeat_interval_ms")
    timeout_ms = _default(BridgeConfig, values, "heartbeat_timeout_ms")
    if timeout_ms <= interval_ms:
        ctx.add(f"{path}.heartbeat_timeout_ms", f"must be longer than heartbeat_interval_ms "
                                                f"({interval_ms}), got {timeout_ms!r}")
    if "nats_url" not in values or "box" not in values or \
            any(name in raw and name not in values for name in ("subscribe", "publish_decisions")):
        return False
    if not values.get("publish") and not values.get("subscribe") and not values.get("publish_decisions"):
        ctx.add(path, "neither publish: true, publish_decisions: true nor a subscribe section: the bridge would "
                      "do nothing")
        return False
    return True


def _check_config(values, raw, path, ctx):
    """A box quotes at least one venue unless it only mirrors other boxes; a venue without ``url`` needs the
    simulator."""
    bridge = values.get("bridge")
    if raw.get("venues") is None and not (bridge is not None and bridge.subscribe):
        ctx.add("venues", f"must map exchange name -> settings, with at least one exchange, got {raw.get('venues')!r}")
    if values.get("simulator") is None:
        for venue in values.get("venues", ()):
            if venue.url is None:
                ctx.add(f"venues.{venue.name}.url", "missing (no simulator section, so every venue needs its real url)")


CROSS_CHECKS: dict[type, Callable] = {VenueConfig: _check_venue, DetectorConfig: _check_detector,
                                      BridgeConfig: _check_bridge, Config: _check_config}


def parse_config(raw: Any, source: str = "<config>", available_cores: frozenset[int] | None = None,
                 known_venues: dict[str, float] | None = None) -> Config:
    """Validate an already-parsed YAML document. Raises ConfigError with every problem."""
    if available_cores is None:
        available_cores = frozenset(os.sched_getaffinity(0))
    if known_venues is None:
        from pipeline.venues import DEFAULT_TAKER_FEE_BPS
        known_venues = DEFAULT_TAKER_FEE_BPS
    if not isinstance(raw, dict):
        raise ConfigError([("", f"{source}: the top level must be a mapping with a 'venues' section, got {raw!r}")])
    ctx = _Context(available_cores, known_venues)
    supervisor = raw.get("supervisor")
    ctx.cores_preferred = isinstance(supervisor, dict) and supervisor.get("cores_preferred") is True
    config = _load(Config, raw, "", ctx, source=source)
    if ctx.items or config is None:
        raise ConfigError(ctx.items)
    return config


def apply_overrides(raw: Any, overrides) -> Any:
    """``overrides``: ``"detector.threshold_bps=5"`` strings; each value is read as YAML (so ``5`` is a
    number, ``[5, 20]`` a list). Raises ConfigError naming a malformed one."""
    problems: list[tuple[str, str]] = []
    for text in overrides:
        key_path, sep, value = text.partition("=")
        if not sep or not key_path or any(not part for part in key_path.split(".")):
            problems.append((key_path or text, f"override must look like section.key=value, got {text!r}"))
            continue
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            problems.append((key_path, f"override value is not valid YAML: {value!r}"))
            continue
        node = raw if isinstance(raw, dict) else {}
        parts = key_path.split(".")
        for n, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append((".".join(parts[:n + 1]), "is not a section, cannot override inside it"))
                break
            node = child
        else:
            node[parts[-1]] = parsed
    if problems:
        raise ConfigError(problems)
    return raw


def load_config(path: str | os.PathLike, overrides=()) -> Config:
    """Read and validate a YAML config file, with ``section.key=value`` overrides applied first.
    Raises ConfigError naming the problem."""
    path = Path(path)
    looked = [path]
    if not path.exists() and len(path.parts) == 1:     # a bare name: also the shipped configs/ folder
        for folder in (Path.cwd() / "configs", Path(__file__).resolve().parents[1] / "configs"):
            if folder / path not in looked:
                looked.append(folder / path)
        path = next((p for p in looked if p.exists()), path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        where = " or ".join(repr(str(p)) for p in looked)
        raise ConfigError([("", f"config file {str(looked[0])!r} not found (looked for {where})")]) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read config file {str(path)!r}: {exc.strerror}")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([("", f"{path}: invalid YAML{where}: {problem}")]) from None
    if overrides:
        raw = apply_overrides(raw, overrides)
    return parse_config(raw, source=str(path))


# ---------------------------------------------------------------- the documentation table

TABLE_HEADER = ("| section | key | default | meaning |", "|---|---|---|---|")


def _shown(f: dataclasses.Field) -> str:
    """A key's default as the table states it."""
    shown = f.metadata.get("shown")
    if callable(shown):
        return shown()
    if shown is not None:
        return shown
    if f.default is REQUIRED and f.default_factory is REQUIRED:
        return "required"
    return _yaml_text(f.default)


def _yaml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    return "—" if value is None else str(value)


def table_rows(cls: type = Config, where: str = "top level") -> list[tuple[str, str, str, str]]:
    """(section, key, default, meaning) of every key under ``cls``, nested sections after their parent's keys."""
    rows, nested = [], []
    for name, f in _keys(cls).items():
        rows.append((where, name, _shown(f), f.metadata["doc"]))
        inner = f.metadata.get("section")
        if inner is not None:
            label = name if where == "top level" else f"{where}.{name}"
            nested.append((inner, label + f.metadata.get("items", "")))
        elif name == "venues":
            nested.append((VenueConfig, "venues.NAME"))
    for inner, label in nested:
        rows.extend(table_rows(inner, label))
    return rows


def markdown_table() -> str:
    """The README's configuration table, printed from the declaration."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")
    lines = list(TABLE_HEADER)
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table_rows()]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``python -m pipeline.config --markdown``: print the configuration table (README.md holds the same)."""
    if argv != ["--markdown"]:
        sys.stderr.write("usage: python -m pipeline.config --markdown\n")
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
