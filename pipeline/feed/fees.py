"""The feed's account fee lookup: at start and every ``reference_data.refresh_s``, off the hot path.

One :class:`AccountFeeLookup` per feed whose venue has ``fee_lookup`` on (:func:`build_fee_lookup`). Each
lookup runs :func:`pipeline.fees.fetch_account_fees` in a worker thread, writes each row's taker fee into its
rules entry (:meth:`~pipeline.board.RulesWriter.write_fees`) and keeps the slot's ``fee_lookup_state`` /
``fee_lookup_status`` / ``fee_lookup_failures`` current for health and metrics:

* the venue answered: the account's fees on the board (a row the answer does not name keeps NaN: its
  configured fee), state ``account``;
* refused (HTTP 401/403, the venue's auth error): the rows' account fees are cleared (NaN: configured fees),
  counted, one log line;
* unreachable or a bad answer: counted, logged; the last account fees stay (none at start: configured).

A failure is retried on a backoff (1 s doubling to a minute) until the venue answers, then the schedule is
``refresh_s`` again (0: only at start). Nothing here raises into the feed: a lookup never stops it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from pipeline.backoff import Backoff
from pipeline.fees import (
    STATE_OK,
    STATE_REFUSED,
    FeeLookupError,
    describe_failure,
    fee_base_url,
    fetch_account_fees_async,
    read_fee_credentials,
)

log = logging.getLogger("pipeline.feed")
NAN = float("nan")


class AccountFeeLookup:
    """Looks up what this account pays on ``venue`` and publishes it on the rows ``row_of`` names."""

    def __init__(self, venue: str, base_url: str, credentials, row_of: dict[str, int], refresh_s: float,
                 timeout_s: float):
        self.venue = venue
        self.base_url = base_url
        self.credentials = credentials
        self.row_of = dict(row_of)          # native symbol -> row
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.fees: dict[str, float] = {}    # native symbol -> the taker fee on the board now (bps)

    async def lookup_once(self, writer, stats) -> bool:
        """One lookup applied; True when the venue answered."""
        try:
            if self.credentials is None:
                raise FeeLookupError(self.venue, "refused", "credential environment variables not set")
            fees = await fetch_account_fees_async(self.venue, self.base_url, self.credentials, list(self.row_of),
                                                  self.timeout_s)
        except FeeLookupError as exc:
            stats.add("fee_lookup_failures")
            stats.set("fee_lookup_state", exc.state)
            stats.set("fee_lookup_status", exc.status)
            if exc.state == STATE_REFUSED:
                for row in self.row_of.values():
                    writer.write_fees(row, NAN)
                self.fees.clear()
            log.warning("%s (%s)", describe_failure(self.venue, exc.state, exc.status, bool(self.fees)), exc.reason)
            return False
        for symbol, row in self.row_of.items():
            fee = fees.get(symbol)
            writer.write_fees(row, NAN if fee is None else fee.taker_bps, None if fee is None else fee.maker_bps)
            if fee is None:
                self.fees.pop(symbol, None)
            else:
                self.fees[symbol] = fee.taker_bps
        stats.set("fee_lookup_state", STATE_OK)
        stats.set("fee_lookup_status", 0)
        missing = sorted(set(self.row_of) - set(fees))
        log.info("%s: account fees looked up: %s%s", self.venue,
                 ", ".join(f"{s} taker {fees[s].taker_bps:g} bps" for s in sorted(fees) if s in self.row_of) or "none",
                 f" (not answered, configured fee kept: {', '.join(missing)})" if missing else "")
        return True

    async def run(self, writer, stats, stop: asyncio.Event) -> None:
        """At start, then every ``refresh_s`` (0: never again), on a backoff until the venue first answers."""
        backoff = Backoff(1.0, 60.0)
        while not stop.is_set():
            answered = await self.lookup_once(writer, stats)
            if answered:
                backoff.reset()
                if not self.refresh_s:
                    return
                delay = self.refresh_s
            else:
                delay = backoff.next_delay()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


def build_fee_lookup(venue_config, rules_base: str | None, rows, settings, environ) -> AccountFeeLookup | None:
    """The feed's lookup when ``venue_config.fee_lookup`` is on, else None. ``rules_base``: where the feed's rules
    come from (the simulator, ``rules_url``; None: the venue), the fee endpoint being on the same host.
    Unset credential variables are refused at start (:func:`pipeline.fees.check_fee_credentials`); a feed
    started without them anyway (a restart after the environment changed) counts one refused lookup."""
    if not getattr(venue_config, "fee_lookup", False):
        return None
    try:
        credentials = read_fee_credentials(venue_config, environ)
    except FeeLookupError as exc:
        log.error("%s: %s: using configured fees", venue_config.name, exc.reason)
        credentials = None
    return AccountFeeLookup(venue_config.name, fee_base_url(venue_config.name, rules_base), credentials,
                            {r.symbol: r.row for r in rows}, settings.refresh_s, settings.timeout_s)
