"""What every venue's ``account.py`` shares: the signed fee request, the fee it reads, the refusal it names.

A venue's ``account.py`` is sans-I/O like its ``wire.py``: a pure ``sign_*`` function (the request's parts,
the time or nonce and the secret in; the header or query values out), ``build_requests(credentials,
symbols, now_ms) -> [FeeRequest]``, ``parse_fees(raw, symbols) -> {symbol: AccountFee}`` (raises only
:class:`~pipeline.errors.ParseError`) and ``refusal(status, raw) -> str | None`` (the venue's way of saying
it refused the credentials: an HTTP 401/403, or its own error code in a 200). :mod:`pipeline.fees` does the
HTTP around them; the simulator verifies the same signatures (``pipeline/venues/<name>/sim.py``).

Rates arrive as decimal texts (``"0.00075"``, Kraken's as percent ``"0.2600"``, OKX's negative for a cost);
:func:`rate_bps` turns one exact :class:`~decimal.Decimal` rate into basis points once (``Decimal * 10000``,
then a float), so ``0.00075`` is exactly ``7.5``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from pipeline.errors import ParseError


@dataclass(frozen=True)
class Credentials:
    """An API key's parts, read from the environment (never from a file). ``repr`` shows none of them."""

    key: str = field(repr=False)
    secret: str = field(repr=False)
    passphrase: str = field(default="", repr=False)


@dataclass(frozen=True)
class FeeRequest:
    """One signed HTTP request: ``path`` with its query string, the headers to send, the body (POST)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True)
class AccountFee:
    """The fee this account pays on one instrument (``symbol``: the venue's native symbol), in bps."""

    symbol: str
    taker_bps: float
    maker_bps: float | None = None


@dataclass(frozen=True)
class AccountFees:
    """Where a venue answers "what does this account pay" (the record's ``account_fees``).

    ``url``: scheme and host of the real endpoint; ``path``: its path (the simulator serves it on the same
    path); ``doc``: the venue's documentation of it; ``needs``: the credential parts it takes (``key``,
    ``secret``, and ``passphrase`` for OKX); the three functions of the venue's ``account.py``.
    """

    url: str
    path: str
    doc: str
    build_requests: Callable
    parse: Callable
    refusal: Callable
    needs: tuple[str, ...] = ("key", "secret")
    method: str = "GET"                   # Kraken's is a POST with a form body


def rate_bps(text, exchange: str, what: str) -> float:
    """A fee rate as the venue writes it (a decimal text, e.g. ``"0.001"``) -> basis points (``10.0``)."""
    return float(decimal_of(text, exchange, what) * 10000)


def decimal_of(text, exchange: str, what: str) -> Decimal:
    """The exact Decimal of a rate's text; a :class:`ParseError` naming ``what`` when it is not a number."""
    try:
        value = Decimal(str(text))
    except (InvalidOperation, ValueError):
        raise ParseError("bad_account_fee", f"{what} is not a number: {text!r}", exchange) from None
    if not value.is_finite():
        raise ParseError("bad_account_fee", f"{what} is not a finite number: {text!r}", exchange)
    return value


def load_json(raw, exchange: str):
    """The JSON value of a fee response; a :class:`ParseError` when it is not JSON."""
    import orjson
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError("bad_account_fee", f"not JSON: {exc}", exchange) from None


def refused_by_status(status: int) -> str | None:
    """HTTP 401 / 403: every venue's way of refusing a key, a signature or a permission."""
    return f"HTTP {status}" if status in (401, 403) else None


def answer_object(raw, exchange: str) -> dict | None:
    """The answer's JSON object, or None when it is not JSON or not an object: a refusal check reads what it can."""
    try:
        body = load_json(raw, exchange)
    except ParseError:
        return None
    return body if isinstance(body, dict) else None


def refused_by_code(status: int, code, codes: dict, said: str) -> str | None:
    """``said`` (the venue's words for the code: ``HTTP 400 code -2015``) and the code's meaning when ``code``
    is one of the venue's refusal ``codes``; else :func:`refused_by_status`."""
    if code in codes:
        return f"{said}: {codes[code]}"
    return refused_by_status(status)


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def percent_encode(text: str) -> str:
    """RFC 3986 percent-encoding of everything but the unreserved characters (what every venue signs)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in str(text).encode())


def form_encode(params) -> str:
    """``a=1&b=x%2Fy``: pairs (or a dict) in the order given, each name and value percent-encoded."""
    items = params.items() if isinstance(params, dict) else params
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in items)
