"""The fees this account pays, looked up through each venue's signed fee endpoint (off by default).

``venues.NAME.fee_lookup: true`` with ``credentials_env`` (names of environment variables: key, secret,
and passphrase where the venue takes one) makes the venue's feed ask the venue what this account pays, at
start and every ``reference_data.refresh_s``, in a worker thread (:func:`fetch_account_fees_async`). The
feed writes each row's taker fee into its rules entry on the board
(:meth:`~pipeline.board.RulesWriter.write_fees`), and the detector uses it in place of the configured one
(:func:`account_fee_or_configured`). The venue's own part (the request, its signature, the answer, the
refusal) is its folder's ``account.py``, declared in its record's ``account_fees``; this module is the
HTTP around it, the credentials, and the classification of a failure:

* ``refused``: HTTP 401/403 or the venue's authentication error (a wrong key, secret or passphrase, a key
  without the permission, a clock outside the venue's window). The feed drops any account fee it had, keeps
  the configured ones, counts it and says so in health (``ALERT binance: account fee lookup refused ...``).
* ``unreachable``: no answer (refused connection, timeout, HTTP 5xx, another status). The last account fees
  are kept (none at start: the configured ones).
* ``bad_answer``: an answer the venue's parser refuses.

Nothing here raises past :class:`FeeLookupError`; no secret is ever logged or put in an error (the reasons
name the HTTP status and the venue's error code only).
"""
from __future__ import annotations

import asyncio
import math
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from pipeline.errors import FeedError, ParseError
from pipeline.refdata import failure_reason
from pipeline.venues._account import AccountFee, Credentials

USER_AGENT = "pipeline-fees/1"
MAX_RESPONSE_BYTES = 4 * 1024 * 1024

# the slot's fee_lookup_state (pipeline.board.layout PROC_DTYPE)
STATE_OFF, STATE_OK, STATE_REFUSED, STATE_UNREACHABLE, STATE_BAD_ANSWER = 0, 1, 2, 3, 4
STATE_NAMES = {STATE_OFF: "off", STATE_OK: "account", STATE_REFUSED: "refused", STATE_UNREACHABLE: "unreachable",
               STATE_BAD_ANSWER: "bad_answer"}


class FeeLookupError(FeedError):
    """A lookup that gave no fees: ``kind`` ``refused`` / ``unreachable`` / ``bad_answer``, ``status`` the HTTP
    status (0: no answer), ``reason`` one line without secrets."""

    def __init__(self, venue: str, kind: str, reason: str, status: int = 0):
        self.venue = venue
        self.kind = kind
        self.reason = reason
        self.status = status
        super().__init__(f"{venue}: account fee lookup {kind} ({reason})")

    @property
    def state(self) -> int:
        return {"refused": STATE_REFUSED, "unreachable": STATE_UNREACHABLE}.get(self.kind, STATE_BAD_ANSWER)


def account_fees_of(venue_name: str):
    """The venue record's ``account_fees`` (None: it has no fee endpoint)."""
    from pipeline.venues import load_venue
    return getattr(load_venue(venue_name), "account_fees", None)


def read_fee_credentials(venue_config, environ) -> Credentials:
    """The credentials ``venue_config.credentials_env`` names, from ``environ``; :class:`FeeLookupError`
    (``refused``) naming the unset variables (never their values)."""
    names = dict(venue_config.credentials_env)
    missing = [names[part] for part in ("key", "secret", "passphrase")
               if part in names and not environ.get(names[part])]
    if missing:
        raise FeeLookupError(venue_config.name, "refused", f"environment variable(s) {', '.join(missing)} not set")
    return Credentials(environ[names["key"]], environ[names["secret"]],
                       environ.get(names["passphrase"], "") if "passphrase" in names else "")


def check_fee_credentials(config, environ) -> str | None:
    """At start: the first venue with ``fee_lookup`` whose credential variables are not set, as one line
    naming the field (``venues.binance.credentials_env.secret: environment variable BINANCE_SECRET is not
    set``), or None."""
    for venue in config.venues:
        if not getattr(venue, "fee_lookup", False):
            continue
        for part, name in venue.credentials_env:
            if not environ.get(name):
                return (f"venues.{venue.name}.credentials_env.{part}: environment variable {name} is not set "
                        f"(fee_lookup needs the account's API {part})")
    return None


def fee_base_url(venue_name: str, rules_base: str | None) -> str:
    """Where the fee endpoint is asked: the simulator's (or ``rules_url``'s) host when the rules come from
    there, else the venue's own."""
    return rules_base.rstrip("/") if rules_base else account_fees_of(venue_name).url


def _request(url: str, method: str, headers, body: bytes, timeout_s: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body or None, method=method,
                                     headers={"User-Agent": USER_AGENT, "Accept": "application/json", **dict(headers)})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:   # noqa: S310 - http(s) URLs only
            return response.status, response.read(MAX_RESPONSE_BYTES)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(MAX_RESPONSE_BYTES)


def fetch_account_fees(venue_name: str, base_url: str, credentials: Credentials, symbols,
                       timeout_s: float = 5.0, now_ms: int | None = None) -> dict[str, AccountFee]:
    """``{native symbol: AccountFee}`` of the symbols the venue answered for (blocking; every request of the
    lookup). Raises :class:`FeeLookupError` at the first request that fails."""
    endpoint = account_fees_of(venue_name)
    if endpoint is None:
        raise FeeLookupError(venue_name, "bad_answer", "the venue has no fee endpoint")
    base = base_url.rstrip("/")
    host = urlsplit(base).netloc
    stamp = int(time.time() * 1000) if now_ms is None else int(now_ms)
    try:
        requests = endpoint.build_requests(credentials, list(symbols), stamp, host=host)
    except ValueError as exc:                      # a secret that is not what the venue's signing needs
        raise FeeLookupError(venue_name, "refused", f"the secret cannot sign: {exc}") from None
    fees: dict[str, AccountFee] = {}
    for request in requests:
        try:
            status, raw = _request(base + request.path, request.method, request.headers, request.body, timeout_s)
        except Exception as exc:  # noqa: BLE001 - every network failure is one unreachable lookup
            raise FeeLookupError(venue_name, "unreachable", failure_reason(exc)) from None
        refused = endpoint.refusal(status, raw)
        if refused is not None:
            raise FeeLookupError(venue_name, "refused", refused, status)
        if status != 200:
            raise FeeLookupError(venue_name, "unreachable", f"HTTP {status}", status)
        wanted = _asked(request, symbols, venue_name)
        try:
            fees.update(endpoint.parse(raw, wanted))
        except ParseError as exc:
            raise FeeLookupError(venue_name, "bad_answer", f"{exc.reason}: {exc.detail}"[:160], status) from None
    return fees


def _asked(request, symbols, venue_name: str) -> list[str]:
    """The symbols one request asked for (OKX answers one instrument without naming it)."""
    if venue_name == "okx":
        from urllib.parse import parse_qs
        query = parse_qs(urlsplit(request.path).query)
        return query.get("instId", [])[:1]
    return list(symbols)


async def fetch_account_fees_async(venue_name: str, base_url: str, credentials: Credentials, symbols,
                                   timeout_s: float = 5.0) -> dict[str, AccountFee]:
    """:func:`fetch_account_fees` in a worker thread."""
    return await asyncio.to_thread(fetch_account_fees, venue_name, base_url, credentials, list(symbols), timeout_s)


def account_fee_or_configured(account_bps: float, configured_bps: float) -> tuple[float, str]:
    """The taker fee a leg uses and where it came from: the account's when its feed looked one up (not NaN),
    else the configured one."""
    if account_bps == account_bps and not math.isinf(account_bps):
        return account_bps, "account"
    return configured_bps, "config"


def describe_failure(venue: str, state: int, status: int, kept_account: bool = False) -> str:
    """The health alert of a failed lookup: ``binance: account fee lookup refused (HTTP 401): using configured
    fees``."""
    what = {STATE_REFUSED: "refused", STATE_UNREACHABLE: "unreachable", STATE_BAD_ANSWER: "answered badly"}.get(
        state, "failed")
    why = f" (HTTP {status})" if status else ""
    using = "the last looked-up fees" if kept_account else "configured fees"
    return f"{venue}: account fee lookup {what}{why}: using {using}"
