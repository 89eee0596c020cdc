"""Typed, frozen configuration, validated once at load.

``load_config(path)`` reads YAML and returns a :class:`Config` or raises
:class:`~pipeline.errors.ConfigError` listing *every* problem with its dotted
path and the bad value (``venues.binance.cores[0]: core 7 does not exist ...``).
Unknown keys are errors: a misspelled key must never silently read as a
default. Nothing else in the pipeline reads YAML, argv or the environment.
"""
from __future__ import annotations

import importlib
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError
from pipeline.net import is_loopback
from pipeline.board.layout import MAX_DEPTH

INSTRUMENT_RE = re.compile(r"^[A-Z0-9]{2,12}/[A-Z0-9]{2,12}$")


@dataclass(frozen=True)
class BoardConfig:
    name: str = "pipeline-board"
    depth: int = 5


@dataclass(frozen=True)
class VenueConfig:
    name: str
    instruments: tuple[str, ...]
    url: str | None = None                 # None: connect to the simulator
    symbols: tuple[tuple[str, str], ...] = ()  # canonical -> native overrides
    taker_fee_bps: float = 10.0
    cores: tuple[int, ...] = ()
    staleness_ms: float = 5000.0
    # the detector opens nothing on this venue's quote when it has not changed for this long while another
    # venue's quote of the instrument did (confirmations prove the connection, not the price);
    # None: detector.staleness_ms, 0: never
    max_unchanged_ms: float | None = None
    # ... nor when its last change arrived more than this after its exchange time, corrected by the feed's clock
    # offset: the venue's stream runs late (0: never)
    max_exchange_lag_ms: float = 1000.0
    fee_overrides: tuple[tuple[str, float], ...] = ()   # instrument -> taker fee bps on this venue
    ws_ping_interval_s: float | None = None   # RFC 6455 pings; None: the venue's default, 0: off
    transport: str = "websockets"             # or "picows" (pip install -e '.[fast]')
    # OKX only: names of the environment variables holding key, secret and passphrase (never the values):
    # log in on the public connection and take the tick-by-tick depth channel
    credentials_env: tuple[tuple[str, str], ...] = ()

    def fee_bps(self, instrument: str) -> float:
        return dict(self.fee_overrides).get(instrument, self.taker_fee_bps)

    def native_overrides(self) -> dict[str, str]:
        return dict(self.symbols)


@dataclass(frozen=True)
class DetectorConfig:
    threshold_bps: float = 0.0
    staleness_ms: float = 2000.0
    wait: str = "doorbell"                 # "doorbell" (idle-friendly) or "spin" (dedicated core)
    spin_us: float = 50.0                  # doorbell mode: spin this long after activity before blocking
    output: str = "opportunities.jsonl"
    cores: tuple[int, ...] = ()
    print_opportunities: bool = True
    max_notional: float = 100_000.0        # cap on the size walked through the books, in quote currency
    min_notional: float = 10.0             # smaller opportunities are not reported
    sanity_bps: float = 500.0              # a net edge above this is a suspected data or mapping error
    update_bps: float = 1.0                # an open opportunity whose edge moves this much gets an update
    # an open opportunity ends below threshold_bps - close_hysteresis_bps (None: half the pair's two taker fees)
    close_hysteresis_bps: float | None = None
    close_after_ms: float = 1000.0         # or after this long under threshold_bps (0: never)
    reopen_ms: float = 100.0               # an end followed within this long by the same pair's return is a flap
    conversion_bps: float = 10.0           # charged to a pair whose legs quote different equivalent currencies
    shadow_latencies_ms: tuple[float, ...] = (5.0, 20.0, 50.0)  # look at the books again this long after open
    equivalent_quotes: tuple[tuple[str, ...], ...] = ()   # e.g. ((USD, USDC),): treated as one instrument
    max_notional_by_instrument: tuple[tuple[str, float], ...] = ()
    sink: "SinkConfig | None" = None

    def max_notional_for(self, instrument: str) -> float:
        return dict(self.max_notional_by_instrument).get(instrument, self.max_notional)


@dataclass(frozen=True)
class SinkConfig:
    """Optional HTTP sink: POST every ``open`` event to ``url`` with a bearer token
    read from the environment variable ``token_env`` (never from the file)."""

    url: str
    token_env: str | None = None
    timeout_s: float = 2.0
    queue_size: int = 1000


@dataclass(frozen=True)
class HealthConfig:
    interval_s: float = 5.0
    cores: tuple[int, ...] = ()


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus endpoint on ``host``:``port`` (off unless configured; loopback unless ``host`` says otherwise)."""

    port: int
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class RecordingConfig:
    """Record every frame each feed receives (see :mod:`pipeline.recording`); off unless configured."""

    dir: str
    rotate_mb: float = 256.0     # start a new file past this size
    keep_files: int = 0          # per venue, the newest kept; 0 keeps all


@dataclass(frozen=True)
class SupervisorConfig:
    restart_backoff_s: float = 0.2
    restart_backoff_max_s: float = 10.0
    max_restarts: int = 20                 # within restart_window_s, then reported as failed
    restart_window_s: float = 300.0


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int = 7
    host: str = "127.0.0.1"
    cores: tuple[int, ...] = ()
    update_interval_ms: float = 20.0       # per exchange, per instrument
    volatility_bps: float = 1.0            # per step, of the shared random walk
    noise_bps: float = 0.3                 # per exchange quote noise
    half_spread_bps: float = 0.5
    dislocation_every_s: float = 2.0       # mean time between dislocations
    dislocation_bps: float = 25.0          # how far the lagging exchange is off
    dislocation_ms: float = 150.0          # how long it lags
    start_prices: tuple[tuple[str, float], ...] = ()
    random_dislocations: bool = True
    scripted_dislocations: tuple["ScriptedDislocation", ...] = ()
    quirks: tuple[str, ...] = ()           # real-venue behaviours to imitate (pipeline.sim.protocol.QUIRK_NAMES)


@dataclass(frozen=True)
class ScriptedDislocation:
    """``exchange`` quotes ``instrument`` ``bps`` away from the market from ``at_s`` after
    the simulator starts, for ``duration_ms`` (positive: too high)."""

    at_s: float
    exchange: str
    instrument: str
    bps: float
    duration_ms: float


@dataclass(frozen=True)
class BridgeRecordConfig:
    """Keep the published rows in a JetStream stream named ``stream`` for ``max_age_h`` hours, in at most
    ``max_mb`` MiB and ``max_messages`` messages: past either the server discards the oldest messages (the
    bridge counts them, see :mod:`pipeline.bridge.stream`)."""

    stream: str
    max_age_h: float = 24.0
    max_mb: float = 1024.0
    max_messages: int = 10_000_000


@dataclass(frozen=True)
class BridgeConfig:
    """Join boxes over NATS (see :mod:`pipeline.bridge`).

    ``subscribe`` maps a remote box name to the venues (full :class:`VenueConfig`
    records, for fees and staleness) whose rows this box mirrors. Credentials
    are named, never given: an environment variable for a token, or a file path
    for a token, an nkey seed or a creds file.
    """

    nats_url: str
    box: str
    publish: bool = False
    subscribe: tuple[tuple[str, tuple[VenueConfig, ...]], ...] = ()
    depth: int | None = None                 # levels per side published; None: the board's depth
    heartbeat_interval_ms: float = 1000.0
    heartbeat_timeout_ms: float = 3000.0
    poll_interval_ms: float = 1.0            # how often the publisher scans the board for changed rows
    connect_timeout_s: float = 2.0
    token_env: str | None = None
    token_file: str | None = None
    nkey_seed_file: str | None = None
    creds_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # nats:// to another machine carries the credentials and the quotes in clear: refused unless this says the
    # network between the boxes is private and trusted
    allow_plaintext: bool = False
    cores: tuple[int, ...] = ()
    record: BridgeRecordConfig | None = None

    def remote_rows(self) -> list[tuple[str, VenueConfig, str]]:
        """(box, venue, instrument) of every mirrored row, in config order."""
        return [(box, venue, instrument) for box, venues in self.subscribe for venue in venues
                for instrument in venue.instruments]


@dataclass(frozen=True)
class Config:
    board: BoardConfig
    venues: tuple[VenueConfig, ...]
    detector: DetectorConfig
    health: HealthConfig
    supervisor: SupervisorConfig
    simulator: SimulatorConfig | None = None
    metrics: MetricsConfig | None = None
    bridge: BridgeConfig | None = None
    recording: RecordingConfig | None = None
    source: str = ""
    verbose: bool = False      # from the command line (--verbose), never from the file: full health block, update/shadow lines
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

class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _section(raw: Any, path: str, allowed: dict[str, Any], problems: _Problems) -> dict[str, Any]:
    """Check keys and types of a mapping. ``allowed`` maps key -> checker(value, path) -> value."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.add(path, f"must be a mapping, got {type(raw).__name__} {raw!r}")
        return {}
    out = {}
    for key, value in raw.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in allowed:
            problems.add(sub, f"unknown key (allowed: {', '.join(sorted(allowed))})")
            continue
        checked = allowed[key](value, sub, problems)
        if checked is not _BAD:
            out[key] = checked
    return out


_BAD = object()


def _number(minimum: float | None = None, maximum: float | None = None, integer: bool = False,
            exclusive_min: bool = False):
    def check(value, path, problems):
        if not _is_number(value) or (integer and not isinstance(value, int)):
            kind = "an integer" if integer else "a number"
            problems.add(path, f"must be {kind}, got {value!r}")
            return _BAD
        if value != value or value in (float("inf"), float("-inf")):
            problems.add(path, f"must be finite, got {value!r}")
            return _BAD
        if minimum is not None and (value <= minimum if exclusive_min else value < minimum):
            problems.add(path, f"must be {'>' if exclusive_min else '>='} {minimum}, got {value!r}")
            return _BAD
        if maximum is not None and value > maximum:
            problems.add(path, f"must be <= {maximum}, got {value!r}")
            return _BAD
        return value
    return check


def _string(pattern: re.Pattern | None = None, choices: tuple[str, ...] | None = None):
    def check(value, path, problems):
        if not isinstance(value, str) or not value:
            problems.add(path, f"must be a non-empty string, got {value!r}")
            return _BAD
        if choices is not None and value not in choices:
            problems.add(path, f"must be one of {', '.join(choices)}, got {value!r}")
            return _BAD
        if pattern is not None and not pattern.match(value):
            problems.add(path, f"invalid value {value!r}")
            return _BAD
        return value
    return check


def _boolean(value, path, problems):
    if not isinstance(value, bool):
        problems.add(path, f"must be true or false, got {value!r}")
        return _BAD
    return value


def _cores(available: frozenset[int]):
    def check(value, path, problems):
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not value:
            problems.add(path, f"must be a core number or a non-empty list of core numbers, got {value!r}")
            return _BAD
        ok = True
        for i, core in enumerate(value):
            if not isinstance(core, int) or isinstance(core, bool):
                problems.add(f"{path}[{i}]", f"must be a core number, got {core!r}")
                ok = False
            elif core not in available:
                problems.add(f"{path}[{i}]", f"core {core} does not exist on this machine "
                                             f"(available: {', '.join(map(str, sorted(available)))})")
                ok = False
        if len(set(value)) != len(value):
            problems.add(path, f"lists a core twice: {value!r}")
            ok = False
        return tuple(value) if ok else _BAD
    return check


BOARD_SCHEMA = {
    "name": _string(re.compile(r"^[A-Za-z0-9_.-]{1,60}$")),
    "depth": _number(1, MAX_DEPTH, integer=True),
}


def _venue_schema(available):
    return {
        "url": _string(re.compile(r"^wss?://")),
        "instruments": None,  # checked separately (needs the per-item paths)
        "symbols": None,
        "taker_fee_bps": _number(0, 1000),
        "cores": _cores(available),
        "staleness_ms": _number(0, exclusive_min=True),
        "max_unchanged_ms": _number(0),
        "max_exchange_lag_ms": _number(0),
        "fee_overrides": _instrument_numbers(0),
        "ws_ping_interval_s": _number(0, 3600),
        "transport": _transport,
        "decoder": _replaced("each venue's wire messages are declared once and decoded by that declaration "
                             "(msgspec); there is no decoder to choose: remove the key"),
        "credentials_env": _credentials_env,
    }


def _fast_choice(module: str, choices: str):
    """A check for a choice whose non-default values come with the ``fast`` extra (transport, decoder).

    The module is imported when a config is checked, not when this one is imported: it pulls in the
    WebSocket and decoding stacks.
    """
    def check(value, path, problems):
        loaded = importlib.import_module(module)
        allowed = getattr(loaded, choices)
        if value not in allowed:
            problems.add(path, f"must be one of {', '.join(allowed)}, got {value!r}")
            return _BAD
        if not loaded.available(value):
            problems.add(path, f"{value} is not installed (pip install -e '.[fast]')")
            return _BAD
        return value
    return check


_transport = _fast_choice("pipeline.feed.transport", "TRANSPORTS")


def _replaced(what: str):
    """A key that no longer exists: its config is refused with what replaced it (exit 2, the field named)."""
    def check(value, path, problems):
        problems.add(path, f"no longer exists: {what}")
        return _BAD
    return check


CREDENTIAL_KEYS = ("key", "secret", "passphrase")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(value, path, problems):
    """The name of an environment variable that holds a secret. What was given is never echoed: a value that
    is not a name may be the secret itself, pasted where its variable's name belongs."""
    if not isinstance(value, str) or not ENV_NAME.match(value):
        problems.add(path, "must be the name of an environment variable (letters, digits and _, not starting with "
                           "a digit); the secret itself never goes in the config (what was given is not shown: "
                           "it may be the secret)")
        return _BAD
    return value


def _credentials_env(value, path, problems):
    """``{key: ENV, secret: ENV, passphrase: ENV}``: environment variable names, never the secrets."""
    if not isinstance(value, dict) or set(value) != set(CREDENTIAL_KEYS):
        keys = sorted(map(str, value)) if isinstance(value, dict) else None
        problems.add(path, "must map key, secret and passphrase to environment variable names"
                           + (f" (given: {', '.join(keys)})" if keys is not None else ""))
        return _BAD
    out = []
    for key in CREDENTIAL_KEYS:
        name = _env_name(value[key], f"{path}.{key}", problems)
        if name is _BAD:
            return _BAD
        out.append((key, name))
    return tuple(out)


def _detector_schema(available):
    return {
        "threshold_bps": _number(0),
        "staleness_ms": _number(0, exclusive_min=True),
        "wait": _string(choices=("doorbell", "spin")),
        "spin_us": _number(0),
        "output": _string(),
        "cores": _cores(available),
        "print_opportunities": _boolean,
        "max_notional": _number(0, exclusive_min=True),
        "min_notional": _number(0),
        "sanity_bps": _number(0, exclusive_min=True),
        "update_bps": _number(0),
        "close_hysteresis_bps": _number(0),
        "close_after_ms": _number(0),
        "reopen_ms": _number(0),
        "conversion_bps": _number(0),
        "shadow_latencies_ms": _number_list(0, exclusive_min=True),
        "equivalent_quotes": _quote_groups,
        "max_notional_by_instrument": _instrument_numbers(0, exclusive_min=True),
        "sink": _sink,
    }


def _number_list(minimum=None, exclusive_min=False):
    item = _number(minimum, exclusive_min=exclusive_min)

    def check(value, path, problems):
        if not isinstance(value, list):
            problems.add(path, f"must be a list of numbers, got {value!r}")
            return _BAD
        out = [item(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return _BAD if any(v is _BAD for v in out) else tuple(float(v) for v in out)
    return check


def _quote_groups(value, path, problems):
    if not isinstance(value, list):
        problems.add(path, f"must be a list of lists of quote currencies, e.g. [[USD, USDC]], got {value!r}")
        return _BAD
    groups = []
    seen = set()
    for i, group in enumerate(value):
        if not isinstance(group, list) or len(group) < 2 or not all(
                isinstance(c, str) and re.fullmatch(r"[A-Z0-9]{2,12}", c) for c in group):
            problems.add(f"{path}[{i}]", f"must list at least two currencies like [USD, USDC], got {group!r}")
            return _BAD
        if seen & set(group):
            problems.add(f"{path}[{i}]", f"a currency appears in two groups: {sorted(seen & set(group))}")
            return _BAD
        seen |= set(group)
        groups.append(tuple(group))
    return tuple(groups)


def _instrument_numbers(minimum=None, exclusive_min=False):
    item = _number(minimum, exclusive_min=exclusive_min)

    def check(value, path, problems):
        if not isinstance(value, dict):
            problems.add(path, f"must map instrument -> number, got {value!r}")
            return _BAD
        out = []
        for instrument, number in value.items():
            sub = f"{path}.{instrument}"
            if not isinstance(instrument, str) or not INSTRUMENT_RE.match(instrument):
                problems.add(sub, f"unknown instrument {instrument!r}")
                continue
            checked = item(number, sub, problems)
            if checked is not _BAD:
                out.append((instrument, float(checked)))
        return tuple(out)
    return check


SINK_SCHEMA = {
    "url": _string(re.compile(r"^https?://")),
    "token_env": _env_name,
    "timeout_s": _number(0, exclusive_min=True),
    "queue_size": _number(1, integer=True),
}


def _sink(value, path, problems):
    if isinstance(value, dict) and "token" in value:
        problems.add(f"{path}.token", "never put a token in a config file: name an environment variable in "
                                      "token_env and export the token there")
        return _BAD
    values = _section(value, path, SINK_SCHEMA, problems)
    if "url" not in values:
        if isinstance(value, dict) and "url" not in value:
            problems.add(f"{path}.url", "missing (the analysis service's http(s) URL)")
        return _BAD
    return SinkConfig(**values)


def _health_schema(available):
    return {"interval_s": _number(0.1), "cores": _cores(available)}


SUPERVISOR_SCHEMA = {
    "restart_backoff_s": _number(0),
    "restart_backoff_max_s": _number(0),
    "max_restarts": _number(1, integer=True),
    "restart_window_s": _number(0, exclusive_min=True),
}


def _simulator_schema(available):
    return {
        "seed": _number(0, integer=True),
        "host": _string(re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|::1)$")),
        "cores": _cores(available),
        "update_interval_ms": _number(0.01),
        "volatility_bps": _number(0),
        "noise_bps": _number(0),
        "half_spread_bps": _number(0),
        "dislocation_every_s": _number(0, exclusive_min=True),
        "dislocation_bps": _number(0),
        "dislocation_ms": _number(0),
        "start_prices": None,
        "random_dislocations": _boolean,
        "scripted_dislocations": _scripted,
        "quirks": _sim_quirks,
    }


def _sim_quirks(value, path, problems):
    from pipeline.sim.protocol import QUIRK_NAMES
    if not isinstance(value, list):
        problems.add(path, f"must be a list of quirk names ({', '.join(QUIRK_NAMES)}), got {value!r}")
        return _BAD
    ok = True
    for i, name in enumerate(value):
        if name not in QUIRK_NAMES:
            problems.add(f"{path}[{i}]", f"unknown quirk {name!r} (known: {', '.join(QUIRK_NAMES)})")
            ok = False
    return tuple(value) if ok else _BAD


SCRIPTED_SCHEMA = {
    "at_s": _number(0),
    "exchange": _string(),
    "instrument": _string(INSTRUMENT_RE),
    "bps": _number(-5000, 5000),
    "duration_ms": _number(0, exclusive_min=True),
}


def _scripted(value, path, problems):
    if not isinstance(value, list):
        problems.add(path, f"must be a list of dislocations, got {value!r}")
        return _BAD
    out = []
    for i, item in enumerate(value):
        values = _section(item, f"{path}[{i}]", SCRIPTED_SCHEMA, problems)
        missing = [k for k in SCRIPTED_SCHEMA if k not in values]
        if missing:
            if isinstance(item, dict):
                for key in missing:
                    if key not in item:
                        problems.add(f"{path}[{i}].{key}", "missing")
            continue
        out.append(ScriptedDislocation(**values))
    return tuple(out)


def _instrument_list(value, path, problems) -> tuple[str, ...] | object:
    if not isinstance(value, list) or not value:
        problems.add(path, f"must be a non-empty list of instruments like BTC/USDT, got {value!r}")
        return _BAD
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not INSTRUMENT_RE.match(item):
            problems.add(f"{path}[{i}]", f"unknown instrument {item!r} (expected BASE/QUOTE in capitals, e.g. BTC/USDT)")
            continue
        if item in out:
            problems.add(f"{path}[{i}]", f"duplicate instrument {item!r}")
            continue
        out.append(item)
    return tuple(out)


def _parse_venue(name, raw, path, problems, available, known_venues) -> VenueConfig | None:
    if name not in known_venues:
        problems.add(path, f"unknown exchange {name!r} (known: {', '.join(sorted(known_venues))})")
        return None
    schema = _venue_schema(available)
    if not isinstance(raw, dict):
        problems.add(path, f"must be a mapping, got {raw!r}")
        return None
    plain = {k: v for k, v in raw.items() if k not in ("instruments", "symbols")}
    values = _section(plain, path, schema, problems)
    if "instruments" not in raw:
        problems.add(f"{path}.instruments", "missing (list the instruments to quote, e.g. [BTC/USDT])")
        instruments = ()
    else:
        instruments = _instrument_list(raw["instruments"], f"{path}.instruments", problems)
        if instruments is _BAD:
            instruments = ()
    overrides: list[tuple[str, str]] = []
    symbols = raw.get("symbols")
    if symbols is not None:
        if not isinstance(symbols, dict):
            problems.add(f"{path}.symbols", f"must map instrument -> native symbol, got {symbols!r}")
        else:
            for canonical, native in symbols.items():
                sub = f"{path}.symbols.{canonical}"
                if canonical not in instruments:
                    problems.add(sub, f"override for {canonical!r}, which is not in {path}.instruments")
                elif not isinstance(native, str) or not native:
                    problems.add(sub, f"native symbol must be a non-empty string, got {native!r}")
                else:
                    overrides.append((canonical, native))
    if values.get("credentials_env"):
        from pipeline.venues import VENUES, load_venue
        logs_in = [v for v in VENUES if load_venue(v).build_login is not None]
        if load_venue(name).build_login is None:
            problems.add(f"{path}.credentials_env", f"only {', '.join(logs_in)} takes credentials (to log in for "
                                                    "tick-by-tick depth)")
    url = values.get("url")
    if values.get("credentials_env") and url and url.startswith("ws://") \
            and not is_loopback(urllib.parse.urlsplit(url).hostname):
        problems.add(f"{path}.url", f"{url} is plain text: the login (api key, passphrase, signature) would travel "
                                    f"in clear; log in over wss:// only")
    fee_default = known_venues[name]
    for instrument, _ in values.get("fee_overrides", ()):
        if instrument not in instruments:
            problems.add(f"{path}.fee_overrides.{instrument}", f"override for {instrument!r}, which is not in "
                                                                f"{path}.instruments")
    return VenueConfig(name=name, instruments=instruments, symbols=tuple(overrides),
                       url=values.get("url"), taker_fee_bps=values.get("taker_fee_bps", fee_default),
                       cores=values.get("cores", ()), staleness_ms=values.get("staleness_ms", 5000.0),
                       max_unchanged_ms=values.get("max_unchanged_ms"),
                       max_exchange_lag_ms=values.get("max_exchange_lag_ms", VenueConfig.max_exchange_lag_ms),
                       fee_overrides=values.get("fee_overrides", ()),
                       ws_ping_interval_s=values.get("ws_ping_interval_s"),
                       transport=values.get("transport", "websockets"),
                       credentials_env=values.get("credentials_env", ()))


RECORDING_SCHEMA = {
    "dir": _string(re.compile(r".+")),
    "rotate_mb": _number(minimum=0.01),
    "keep_files": _number(minimum=0, integer=True),
}


def parse_config(raw: Any, source: str = "<config>", available_cores: frozenset[int] | None = None,
                 known_venues: dict[str, float] | None = None) -> Config:
    """Validate an already-parsed YAML document. Raises ConfigError with every problem."""
    if available_cores is None:
        available_cores = frozenset(os.sched_getaffinity(0))
    if known_venues is None:
        from pipeline.venues import DEFAULT_TAKER_FEE_BPS
        known_venues = DEFAULT_TAKER_FEE_BPS
    problems = _Problems()
    top_schema = {
        "board": None, "venues": None, "detector": None, "health": None,
        "supervisor": None, "simulator": None, "metrics": None, "bridge": None, "recording": None,
    }
    if not isinstance(raw, dict):
        raise ConfigError([("", f"{source}: the top level must be a mapping with a 'venues' section, got {raw!r}")])
    for key in raw:
        if key not in top_schema:
            problems.add(str(key), f"unknown key (allowed: {', '.join(top_schema)})")

    board = BoardConfig(**_section(raw.get("board"), "board", BOARD_SCHEMA, problems))
    detector = DetectorConfig(**_section(raw.get("detector"), "detector", _detector_schema(available_cores), problems))
    if detector.max_notional < detector.min_notional:
        problems.add("detector.max_notional", f"{detector.max_notional:g} is below detector.min_notional "
                                              f"({detector.min_notional:g}): no opportunity could ever be reported")
    for instrument, cap in detector.max_notional_by_instrument:
        if cap < detector.min_notional:
            problems.add(f"detector.max_notional_by_instrument.{instrument}",
                         f"{cap:g} is below detector.min_notional ({detector.min_notional:g}): no opportunity in "
                         f"{instrument} could ever be reported")
    health = HealthConfig(**_section(raw.get("health"), "health", _health_schema(available_cores), problems))
    supervisor = SupervisorConfig(**_section(raw.get("supervisor"), "supervisor", SUPERVISOR_SCHEMA, problems))

    metrics = None
    if raw.get("metrics") is not None:
        values = _section(raw["metrics"], "metrics", {"port": _number(1, 65535, integer=True),
                                                      "host": _string()}, problems)
        if "port" in values:
            metrics = MetricsConfig(**values)
        elif isinstance(raw["metrics"], dict) and "port" not in raw["metrics"]:
            problems.add("metrics.port", "missing (the port to serve /metrics on, bound to 127.0.0.1)")

    simulator = None
    if raw.get("simulator") is not None:
        sim_raw = raw["simulator"]
        plain = {k: v for k, v in sim_raw.items() if k != "start_prices"} if isinstance(sim_raw, dict) else sim_raw
        values = _section(plain, "simulator", _simulator_schema(available_cores), problems)
        prices = []
        if isinstance(sim_raw, dict) and sim_raw.get("start_prices") is not None:
            sp = sim_raw["start_prices"]
            if not isinstance(sp, dict):
                problems.add("simulator.start_prices", f"must map instrument -> price, got {sp!r}")
            else:
                for instrument, price in sp.items():
                    sub = f"simulator.start_prices.{instrument}"
                    if not isinstance(instrument, str) or not INSTRUMENT_RE.match(instrument):
                        problems.add(sub, f"unknown instrument {instrument!r}")
                    elif not _is_number(price) or not price > 0 or price == float("inf"):
                        problems.add(sub, f"must be a positive number, got {price!r}")
                    else:
                        prices.append((instrument, float(price)))
        simulator = SimulatorConfig(**values, start_prices=tuple(prices))

    recording = None
    if raw.get("recording") is not None:
        values = _section(raw["recording"], "recording", RECORDING_SCHEMA, problems)
        if "dir" in values:
            recording = RecordingConfig(**values)
        elif isinstance(raw["recording"], dict) and "dir" not in raw["recording"]:
            problems.add("recording.dir", "missing (the directory the feeds write their recordings to)")

    bridge = None
    if raw.get("bridge") is not None:
        bridge = _parse_bridge(raw["bridge"], "bridge", problems, available_cores, known_venues)

    venues: list[VenueConfig] = []
    raw_venues = raw.get("venues")
    if raw_venues is None and bridge is not None and bridge.subscribe:
        pass                     # a box that only aggregates other boxes' rows
    elif not isinstance(raw_venues, dict) or not raw_venues:
        problems.add("venues", f"must map exchange name -> settings, with at least one exchange, got {raw_venues!r}")
    else:
        for name, venue_raw in raw_venues.items():
            venue = _parse_venue(name, venue_raw, f"venues.{name}", problems, available_cores, known_venues)
            if venue is not None:
                if venue.url is None and simulator is None:
                    problems.add(f"venues.{name}.url", "missing (no simulator section, so every venue needs its real url)")
                venues.append(venue)

    if problems.items:
        raise ConfigError(problems.items)
    return Config(board=board, venues=tuple(venues), detector=detector, health=health,
                  supervisor=supervisor, simulator=simulator, metrics=metrics, bridge=bridge, recording=recording,
                  source=source)


BOX_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")     # one NATS subject token: no dots, no wildcards
STREAM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# the rest is the remote box's
REMOTE_VENUE_KEYS = {"instruments", "taker_fee_bps", "fee_overrides", "staleness_ms", "max_unchanged_ms",
                     "max_exchange_lag_ms"}
SECRET_KEYS = {"token": "token_env or token_file", "password": "token_env or token_file",
               "nkey_seed": "nkey_seed_file", "creds": "creds_file", "user": "creds_file"}


def _existing_file(value, path, problems):
    if not isinstance(value, str) or not value:
        problems.add(path, f"must be a file path, got {value!r}")
        return _BAD
    if not os.path.isfile(value):
        problems.add(path, f"file {value!r} does not exist")
        return _BAD
    return value


def _bridge_schema(available):
    return {
        "nats_url": _string(re.compile(r"^(nats|tls)://[^\s/]+(:\d+)?/?$")),
        "box": _string(BOX_RE),
        "publish": _boolean,
        "subscribe": None,                 # checked separately (nested venue sections)
        "depth": _number(1, MAX_DEPTH, integer=True),
        "heartbeat_interval_ms": _number(10),
        "heartbeat_timeout_ms": _number(0, exclusive_min=True),
        "poll_interval_ms": _number(0.05, 1000),
        "connect_timeout_s": _number(0, exclusive_min=True),
        "token_env": _env_name,
        "token_file": _existing_file,
        "nkey_seed_file": _existing_file,
        "creds_file": _existing_file,
        "tls_ca_file": _existing_file,
        "tls_cert_file": _existing_file,
        "tls_key_file": _existing_file,
        "allow_plaintext": _boolean,
        "cores": _cores(available),
        "record": _bridge_record,
    }


RECORD_SCHEMA = {"stream": _string(STREAM_RE), "max_age_h": _number(0, exclusive_min=True),
                 # at least a few hundred row messages; at most what one JetStream file store sensibly holds (1 TiB)
                 "max_mb": _number(0.1, 1 << 20), "max_messages": _number(100, 1 << 40, integer=True)}


def _bridge_record(value, path, problems):
    values = _section(value, path, RECORD_SCHEMA, problems)
    if "stream" not in values:
        if isinstance(value, dict) and "stream" not in value:
            problems.add(f"{path}.stream", "missing (the JetStream stream name, e.g. QUOTES)")
        return _BAD
    return BridgeRecordConfig(**values)


def _parse_bridge(raw, path, problems, available, known_venues) -> BridgeConfig | None:
    if not isinstance(raw, dict):
        problems.add(path, f"must be a mapping, got {raw!r}")
        return None
    secrets = [k for k in raw if k in SECRET_KEYS]
    for key in secrets:
        problems.add(f"{path}.{key}", f"never put credentials in a config file: use {SECRET_KEYS[key]}")
    plain = {k: v for k, v in raw.items() if k != "subscribe" and k not in secrets}
    values = _section(plain, path, _bridge_schema(available), problems)
    for key in ("nats_url", "box"):
        if key not in raw:
            problems.add(f"{path}.{key}", "missing" + (" (e.g. nats://127.0.0.1:4222)" if key == "nats_url"
                                                       else " (this box's name, e.g. tokyo)"))
    url = values.get("nats_url")
    if url and "@" in url:
        problems.add(f"{path}.nats_url", "never put credentials in a config file (user:password@ in the URL): "
                                         "use token_env, token_file, nkey_seed_file or creds_file")
        url = values.pop("nats_url")
    elif url and url.startswith("nats://") and not values.get("allow_plaintext") \
            and not is_loopback(urllib.parse.urlsplit(url).hostname):
        problems.add(f"{path}.nats_url", f"{url} is plain text to another machine: the credentials and every quote "
                                         f"travel in clear, and anyone on the path can read them or inject quotes "
                                         f"the detector would trade on; use tls://{url[len('nats://'):]} (or, only on "
                                         f"a private network you trust, set {path}.allow_plaintext: true)")
    given = [k for k in ("token_env", "token_file", "nkey_seed_file", "creds_file") if k in values]
    if len(given) > 1:
        problems.add(f"{path}.{given[1]}", f"only one credential source, got {', '.join(given)}")
    if ("tls_cert_file" in values) != ("tls_key_file" in values):
        problems.add(f"{path}.tls_key_file" if "tls_cert_file" in values else f"{path}.tls_cert_file",
                     "a client certificate needs both tls_cert_file and tls_key_file")
    interval_ms = values.get("heartbeat_interval_ms", BridgeConfig.heartbeat_interval_ms)
    timeout_ms = values.get("heartbeat_timeout_ms", BridgeConfig.heartbeat_timeout_ms)
    if timeout_ms <= interval_ms:
        problems.add(f"{path}.heartbeat_timeout_ms", f"must be longer than heartbeat_interval_ms "
                                                     f"({interval_ms}), got {timeout_ms!r}")
    subscribe = _bridge_subscribe(raw.get("subscribe"), f"{path}.subscribe", problems, available, known_venues,
                                  values.get("box"))
    if "nats_url" not in values or "box" not in values or subscribe is None:
        return None
    if not values.get("publish") and not subscribe:
        problems.add(path, "neither publish: true nor a subscribe section: the bridge would do nothing")
        return None
    return BridgeConfig(**values, subscribe=subscribe)


def _bridge_subscribe(raw, path, problems, available, known_venues, own_box):
    """``{box: {venue: [instruments] | {instruments, taker_fee_bps, fee_overrides, staleness_ms}}}``."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        problems.add(path, f"must map box name -> {{venue: [instruments]}}, got {raw!r}")
        return None
    out = []
    ok = True
    for box, venues_raw in raw.items():
        sub = f"{path}.{box}"
        if not isinstance(box, str) or not BOX_RE.match(box):
            problems.add(sub, f"invalid box name {box!r} (lower-case letters, digits, - and _)")
            ok = False
            continue
        if box == own_box:
            problems.add(sub, f"is this box's own name ({own_box!r}): its rows are already local")
            ok = False
            continue
        if not isinstance(venues_raw, dict) or not venues_raw:
            problems.add(sub, f"must map venue -> instruments, got {venues_raw!r}")
            ok = False
            continue
        venues = []
        for name, venue_raw in venues_raw.items():
            if isinstance(venue_raw, list):
                venue_raw = {"instruments": venue_raw}
            elif isinstance(venue_raw, dict) and set(venue_raw) - REMOTE_VENUE_KEYS:
                for key in sorted(set(venue_raw) - REMOTE_VENUE_KEYS, key=str):
                    problems.add(f"{sub}.{name}.{key}", "belongs in the remote box's own config, not here "
                                                        f"(allowed: {', '.join(sorted(REMOTE_VENUE_KEYS))})")
                ok = False
                continue
            venue = _parse_venue(name, venue_raw, f"{sub}.{name}", problems, available, known_venues)
            if venue is None or not venue.instruments:
                ok = False
                continue
            venues.append(venue)
        out.append((box, tuple(venues)))
    return tuple(out) if ok else None


def apply_overrides(raw: Any, overrides) -> Any:
    """``overrides``: ``"detector.threshold_bps=5"`` strings; each value is read as YAML (so ``5`` is a
    number, ``[5, 20]`` a list). Raises ConfigError naming a malformed one."""
    problems = _Problems()
    for text in overrides:
        key, sep, value = text.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            problems.add(key or text, f"override must look like section.key=value, got {text!r}")
            continue
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            problems.add(key, f"override value is not valid YAML: {value!r}")
            continue
        node = raw if isinstance(raw, dict) else {}
        parts = key.split(".")
        for n, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.add(".".join(parts[:n + 1]), "is not a section, cannot override inside it")
                break
            node = child
        else:
            node[parts[-1]] = parsed
    if problems.items:
        raise ConfigError(problems.items)
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
