"""``run.py instruments``: the instruments two or more venues list, with each venue's trading rules side by side.

Asks each venue for its reference data (``docs/trading-rules.md``): the venues of ``--config`` (those without a
``url`` through a simulator this command starts for its own duration when the config has a ``simulator:``
section; the others at their real endpoints), and any ``--venue NAME=BASE_URL`` (a REST base such as
``http://127.0.0.1:8080``, or the WebSocket URL of a venue that publishes its rules on a channel). Each venue's
native symbols are mapped to canonical ``BASE/QUOTE`` instruments by the venue's own inverse of its
``native_symbol`` (``canonical_symbol`` in its ``wire.py``); ``BTC/USD`` and ``BTC/USDT`` stay different
instruments.

One line per (instrument, venue): the native symbol, tick, step, minimum quantity and value, status and the
taker fee the config (or the venue's standard tier) charges, or, for a venue with ``fee_lookup``, what the
account pays as the venue's signed fee endpoint answers (marked ``(account)``; ``fee_source`` in ``--json``).
``--json`` prints the same as one JSON document;
``--write-config FILE`` writes a config that watches them (the given config with each venue's instruments
replaced, nothing else changed; refused when the file exists). A venue whose reference data cannot be had is
one line on stderr and left out; exit status 0 when at least one venue answered, 2 (naming them) when none did.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import yaml

from pipeline.errors import ConfigError, ParseError
from pipeline.model import InstrumentRules

COLUMNS = (("instrument", 12), ("venue", 10), ("symbol", 12), ("tick", 12), ("step", 12), ("min_qty", 12),
           ("min_notional", 13), ("status", 10), ("taker_bps", 0))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py instruments",
                                description="List the instruments listed on two or more venues, with each venue's "
                                            "trading rules side by side.")
    p.add_argument("--config", help="YAML config: the venues to ask (a simulator: section is started for them)")
    p.add_argument("--venue", action="append", default=[], metavar="NAME=BASE_URL",
                   help="ask this venue at BASE_URL (REST base, or the WebSocket URL of a channel venue); repeatable")
    p.add_argument("--quote", help="only instruments quoted in this currency (USDT and USD are different)")
    p.add_argument("--min-venues", type=int, default=2, metavar="N", help="listed on at least N venues (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--write-config", metavar="FILE", help="write a config watching them (never overwrites)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="per request (default 5)")
    return p


def decimal_text(value: Decimal | None) -> str | None:
    """``Decimal('1E-8')`` -> ``'0.00000001'``; None stays None."""
    return None if value is None else format(value.normalize(), "f")


def canonical_of(venue: str):
    """The venue's inverse of ``native_symbol`` (its wire module's ``canonical_symbol``)."""
    from pipeline.venues import load_venue
    record = load_venue(venue)
    wire = sys.modules[record.native_symbol.__module__]
    return wire.canonical_symbol


def fetch(venue: str, base_url: str | None, timeout_s: float) -> list[InstrumentRules]:
    """The venue's trading rules from ``base_url`` (None: its real endpoint); raises what
    :func:`pipeline.refdata.fetch_reference_data` raises."""
    from pipeline.refdata import fetch_reference_data
    return fetch_reference_data(venue, base_url, timeout_s)


def gather(answers: dict[str, list[InstrumentRules]], fees, quote: str | None, min_venues: int,
           fee_source=lambda venue, instrument: "config") -> list[dict]:
    """Instruments listed on at least ``min_venues`` venues: [{instrument, venues: {name: fields}}], sorted.
    ``fee_source(venue, instrument)``: ``account`` where ``fees`` gives what the account pays, else ``config``."""
    by_instrument: dict[str, dict[str, dict]] = {}
    for venue, rules in answers.items():
        canonical = canonical_of(venue)
        for r in rules:
            instrument = canonical(r.symbol)
            if instrument is None or (quote and instrument.split("/")[1] != quote.upper()):
                continue
            by_instrument.setdefault(instrument, {})[venue] = {
                "symbol": r.symbol, "tick": decimal_text(r.tick), "step": decimal_text(r.step),
                "min_qty": decimal_text(r.min_qty), "max_qty": decimal_text(r.max_qty),
                "min_notional": decimal_text(r.min_notional), "max_notional": decimal_text(r.max_notional),
                "status": r.status, "trading": r.trading, "taker_fee_bps": fees(venue, instrument),
                "fee_source": fee_source(venue, instrument)}
    return [{"instrument": instrument, "venues": dict(sorted(venues.items()))}
            for instrument, venues in sorted(by_instrument.items()) if len(venues) >= min_venues]


def table(listed: list[dict]) -> list[str]:
    """The readable lines: a header, then one line per (instrument, venue), the instrument named once."""
    def line(values) -> str:
        return "".join(f"{v:<{w}} " if w else f"{v}" for v, (_, w) in zip(values, COLUMNS)).rstrip()
    out = [line(name for name, _ in COLUMNS)]
    for item in listed:
        first = True
        for venue, f in item["venues"].items():
            out.append(line([item["instrument"] if first else "", venue, f["symbol"], f["tick"], f["step"],
                             f["min_qty"], f["min_notional"], f["status"],
                             f"{f['taker_fee_bps']:g}" + (" (account)" if f.get("fee_source") == "account" else "")]))
            first = False
    return out


def config_text(raw: dict | None, listed: list[dict]) -> str:
    """A config watching ``listed``: ``raw`` (the given config's YAML) with each venue's instruments replaced by
    those it lists here; venues listing none are left out. Without a config: just the venues."""
    out = dict(raw or {})
    venues = dict(out.get("venues") or {})
    watched: dict[str, list[str]] = {}
    for item in listed:
        for venue in item["venues"]:
            watched.setdefault(venue, []).append(item["instrument"])
    new_venues = {}
    for venue, instruments in watched.items():
        section = dict(venues.get(venue) or {})
        section["instruments"] = instruments
        new_venues[venue] = section
    out["venues"] = new_venues
    return yaml.safe_dump(out, sort_keys=False)


async def ask_all(targets: dict[str, str | None], config, timeout_s: float,
                  accounts: dict | None = None) -> tuple[dict, dict]:
    """({venue: rules}, {venue: why not}) for every target; the config's simulated venues through a simulator
    started here (and stopped before returning). With ``accounts`` (a dict), the fees the account pays on each
    ``fee_lookup`` venue go there (``{venue: {instrument: bps}}``)."""
    accounts = {} if accounts is None else accounts
    answers: dict[str, list[InstrumentRules]] = {}
    failed: dict[str, str] = {}
    fee_bases: dict[str, str] = {}        # venue -> where its fee endpoint is asked (the simulator's port)
    async with contextlib.AsyncExitStack() as stack:
        if config is not None and config.simulator is not None and any(v is None for v in targets.values()):
            from pipeline.sim.server import build_simulator
            simulator = build_simulator(config)
            await simulator.start()
            stop = asyncio.Event()
            task = asyncio.ensure_future(simulator.run(stop))

            async def shut() -> None:
                stop.set()
                await task
                await simulator.close()
            stack.push_async_callback(shut)
            host = simulator.host
            for name, server in simulator.exchanges.items():
                if name in targets and targets[name] is None:
                    record = __import__("pipeline.venues", fromlist=["load_venue"]).load_venue(name)
                    rest = record.reference_data is None or record.reference_data.transport == "rest"
                    targets[name] = server.rest_base(host) if rest else server.url(host)
                    fee_bases[name] = server.rest_base(host)

        async def one(venue: str, base: str | None) -> None:
            try:
                answers[venue] = await asyncio.to_thread(fetch, venue, base, timeout_s)
            except ParseError as exc:
                failed[venue] = f"unreadable answer ({exc})"
            except Exception as exc:  # noqa: BLE001 - any failure of one venue is its line, the others go on
                failed[venue] = f"{type(exc).__name__}: {exc}"
        await asyncio.gather(*(one(v, b) for v, b in targets.items()))
        if config is not None:
            await asyncio.gather(*(account_fees(v, fee_bases, timeout_s, accounts, failed)
                                   for v in config.venues if v.fee_lookup))
    return answers, failed


async def account_fees(venue_config, fee_bases: dict, timeout_s: float, accounts: dict, failed: dict) -> None:
    """What the account pays on ``venue_config``'s instruments, into ``accounts[venue][instrument]`` (bps); a
    failed lookup is a line in ``failed`` (``venues.NAME.fee_lookup``) and the configured fee is shown."""
    import os

    from pipeline.fees import FeeLookupError, fee_base_url, fetch_account_fees, read_fee_credentials
    from pipeline.venues import native_symbols
    name = venue_config.name
    natives = native_symbols(venue_config)
    base = fee_bases.get(name) or fee_base_url(name, venue_config.rules_url)
    try:
        credentials = read_fee_credentials(venue_config, os.environ)
        fees = await asyncio.to_thread(fetch_account_fees, name, base, credentials, list(natives.values()), timeout_s)
    except FeeLookupError as exc:
        failed[f"{name}.fee_lookup"] = f"{exc}: configured fees shown"
        return
    accounts[name] = {instrument: fees[native].taker_bps for instrument, native in natives.items() if native in fees}


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if not args.config and not args.venue:
        parser().error("give --config FILE or --venue NAME=BASE_URL")
    if args.min_venues < 1:
        parser().error("--min-venues must be at least 1")
    from pipeline.venues import DEFAULT_TAKER_FEE_BPS, VENUES
    config = raw = None
    targets: dict[str, str | None] = {}
    if args.config:
        from pipeline.config import load_config
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            sys.stderr.write(f"run.py instruments: {exc}\n")
            return 2
        raw = yaml.safe_load(Path(args.config).read_text()) if Path(args.config).exists() else None
        targets = {venue.name: None for venue in config.venues}
    for item in args.venue:
        name, sep, url = item.partition("=")
        if not sep or name not in VENUES or not url.startswith(("http://", "https://", "ws://", "wss://")):
            sys.stderr.write(f"run.py instruments: --venue {item!r}: expected NAME=BASE_URL with NAME one of "
                             f"{', '.join(VENUES)} and an http(s):// or ws(s):// URL\n")
            return 2
        targets[name] = url
    if args.write_config and Path(args.write_config).exists():
        sys.stderr.write(f"run.py instruments: --write-config: {args.write_config} exists; not overwritten\n")
        return 2

    accounts: dict[str, dict[str, float]] = {}

    def fees(venue: str, instrument: str) -> float:
        if instrument in accounts.get(venue, {}):
            return accounts[venue][instrument]
        if config is not None:
            for v in config.venues:
                if v.name == venue:
                    return v.fee_bps(instrument)
        return DEFAULT_TAKER_FEE_BPS[venue]

    try:
        answers, failed = asyncio.run(ask_all(targets, config, args.timeout, accounts))
    except OSError as exc:
        sys.stderr.write(f"run.py instruments: simulator: {exc}\n")
        return 2
    for venue, why in sorted(failed.items()):
        if venue.endswith(".fee_lookup"):
            sys.stderr.write(f"run.py instruments: venues.{venue}: {why}\n")
        else:
            sys.stderr.write(f"run.py instruments: venues.{venue}: reference data not available ({why})\n")
    failed = {venue: why for venue, why in failed.items() if not venue.endswith(".fee_lookup")}
    if not answers:
        sys.stderr.write("run.py instruments: no venue answered: "
                         + ", ".join(f"venues.{v}" for v in sorted(failed)) + "\n")
        return 2
    listed = gather(answers, fees, args.quote, args.min_venues,
                    lambda venue, instrument: "account" if instrument in accounts.get(venue, {}) else "config")
    if args.json:
        sys.stdout.write(orjson.dumps({"instruments": listed, "unavailable": failed}).decode() + "\n")
    else:
        for line in table(listed):
            print(line)
        if not listed:
            print(f"(no instrument listed on {args.min_venues} or more of: {', '.join(sorted(answers))})")
    if args.write_config:
        if not listed:
            sys.stderr.write("run.py instruments: --write-config: nothing to watch; no file written\n")
            return 2
        try:
            with open(args.write_config, "x") as out:
                out.write(config_text(raw, listed))
        except OSError as exc:
            sys.stderr.write(f"run.py instruments: --write-config: {exc}\n")
            return 2
    return 0
