"""Typed, frozen configuration, validated once at load.

``load_config(path)`` reads YAML and returns a :class:`Config` or raises
:class:`~pipeline.errors.ConfigError` listing *every* problem with its dotted
path and the bad value (``venues.binance.cores[0]: core 7 does not exist ...``).
Unknown keys are errors: a misspelled key must never silently read as a
default. Nothing else in the pipeline reads YAML, argv or the environment.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError
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
    fee_overrides: tuple[tuple[str, float], ...] = ()   # instrument -> taker fee bps on this venue

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
    """Prometheus endpoint on 127.0.0.1:``port`` (off unless configured)."""

    port: int


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
class Config:
    board: BoardConfig
    venues: tuple[VenueConfig, ...]
    detector: DetectorConfig
    health: HealthConfig
    supervisor: SupervisorConfig
    simulator: SimulatorConfig | None = None
    metrics: MetricsConfig | None = None
    source: str = ""

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
        "fee_overrides": _instrument_numbers(0),
    }


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
    "token_env": _string(re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")),
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
    }


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
    fee_default = known_venues[name]
    for instrument, _ in values.get("fee_overrides", ()):
        if instrument not in instruments:
            problems.add(f"{path}.fee_overrides.{instrument}", f"override for {instrument!r}, which is not in "
                                                                f"{path}.instruments")
    return VenueConfig(name=name, instruments=instruments, symbols=tuple(overrides),
                       url=values.get("url"), taker_fee_bps=values.get("taker_fee_bps", fee_default),
                       cores=values.get("cores", ()), staleness_ms=values.get("staleness_ms", 5000.0),
                       fee_overrides=values.get("fee_overrides", ()))


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
        "supervisor": None, "simulator": None, "metrics": None,
    }
    if not isinstance(raw, dict):
        raise ConfigError([("", f"{source}: the top level must be a mapping with a 'venues' section, got {raw!r}")])
    for key in raw:
        if key not in top_schema:
            problems.add(str(key), f"unknown key (allowed: {', '.join(top_schema)})")

    board = BoardConfig(**_section(raw.get("board"), "board", BOARD_SCHEMA, problems))
    detector = DetectorConfig(**_section(raw.get("detector"), "detector", _detector_schema(available_cores), problems))
    health = HealthConfig(**_section(raw.get("health"), "health", _health_schema(available_cores), problems))
    supervisor = SupervisorConfig(**_section(raw.get("supervisor"), "supervisor", SUPERVISOR_SCHEMA, problems))

    metrics = None
    if raw.get("metrics") is not None:
        values = _section(raw["metrics"], "metrics", {"port": _number(1, 65535, integer=True)}, problems)
        if "port" in values:
            metrics = MetricsConfig(port=values["port"])
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

    venues: list[VenueConfig] = []
    raw_venues = raw.get("venues")
    if not isinstance(raw_venues, dict) or not raw_venues:
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
                  supervisor=supervisor, simulator=simulator, metrics=metrics, source=source)


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a YAML config file. Raises ConfigError naming the problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError([("", f"config file {str(path)!r} not found")]) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read config file {str(path)!r}: {exc.strerror}")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([("", f"{path}: invalid YAML{where}: {problem}")]) from None
    return parse_config(raw, source=str(path))
