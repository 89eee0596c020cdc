"""Binance: the commission rates this account pays, ``GET /api/v3/account/commission`` (USER_DATA).

Docs: ``rest-api.md`` "Query Commission Rates (USER_DATA)", "SIGNED (TRADE, USER_DATA AND MARGIN) Endpoint
security" and ``faqs/commission_faq.md`` of https://github.com/binance/binance-spot-api-docs (read at the
commit of 2026-07-21).

Signing: the query string (``symbol=...&recvWindow=...&timestamp=...``, the body concatenated when there is
one) is signed with HMAC-SHA256 keyed by the secret, as lower-case hex, appended as ``&signature=``; the key
goes in the ``X-MBX-APIKEY`` header. ``timestamp`` is ms; the server refuses one outside ``recvWindow``.

Refusals: HTTP 401 with ``{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}``, and
``-1022`` (``INVALID_SIGNATURE``) / ``-2014`` (``BAD_API_KEY_FMT``), which arrive with HTTP 400.

The response, per symbol (one request per symbol)::

    {"symbol":"BTCUSDT",
     "standardCommission":{"maker":"0.00000010","taker":"0.00000020","buyer":"0.00000030","seller":"0.00000040"},
     "specialCommission":{...same keys...}, "taxCommission":{...same keys...},
     "discount":{"enabledForAccount":true,"enabledForSymbol":true,"discountAsset":"BNB","discount":"0.75000000"}}

A taker fill pays, on each of the three, ``taker`` plus ``buyer`` (a buy) or ``seller`` (a sell)
(commission_faq.md "How is the commission calculated?"); the fee kept is the larger side's sum of all three
(``maker`` likewise). The BNB discount is not assumed: it applies only when BNB is held and paid with.
"""
from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal

from pipeline.errors import ParseError
from pipeline.venues._account import (
    AccountFee,
    Credentials,
    FeeRequest,
    answer_object,
    decimal_of,
    form_encode,
    load_json,
    refused_by_code,
)

NAME = "binance"
PATH = "/api/v3/account/commission"
RECV_WINDOW_MS = 5000
REFUSED_CODES = {-2015: "invalid API key, IP or permissions", -2014: "API key format invalid",
                 -1022: "signature not valid"}
_PARTS = ("standardCommission", "specialCommission", "taxCommission")


def sign(payload: str, secret: str) -> str:
    """HMAC-SHA256 of the query string (+ body) keyed by the secret, lower-case hex: the ``signature``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def build_requests(credentials: Credentials, symbols, now_ms: int, host: str = "") -> list[FeeRequest]:
    """One signed GET per symbol (the endpoint takes exactly one)."""
    out = []
    for symbol in symbols:
        query = form_encode({"symbol": symbol, "recvWindow": RECV_WINDOW_MS, "timestamp": int(now_ms)})
        out.append(FeeRequest("GET", f"{PATH}?{query}&signature={sign(query, credentials.secret)}",
                              (("X-MBX-APIKEY", credentials.key),)))
    return out


def _side_max(entry: dict, role: str, symbol: str) -> Decimal:
    total = {"buyer": Decimal(0), "seller": Decimal(0)}
    for part in _PARTS:
        rates = entry.get(part)
        if not isinstance(rates, dict):
            raise ParseError("bad_account_fee", f"{symbol}: no {part}", NAME)
        for side in total:
            total[side] += (decimal_of(rates.get(role), NAME, f"{symbol} {part}.{role}")
                            + decimal_of(rates.get(side), NAME, f"{symbol} {part}.{side}"))
    return max(total.values())


def parse_fees(raw, symbols=()) -> dict[str, AccountFee]:
    """One response -> ``{symbol: AccountFee}`` (its one symbol)."""
    entry = load_json(raw, NAME)
    if not isinstance(entry, dict) or not isinstance(entry.get("symbol"), str):
        raise ParseError("bad_account_fee", "no symbol in the commission response", NAME)
    symbol = entry["symbol"]
    taker = _side_max(entry, "taker", symbol)
    maker = _side_max(entry, "maker", symbol)
    return {symbol: AccountFee(symbol, float(taker * 10000), float(maker * 10000))}


def refusal(status: int, raw) -> str | None:
    """HTTP 401/403, or one of the key/signature error codes (which come with HTTP 400)."""
    code = (answer_object(raw, NAME) or {}).get("code")
    return refused_by_code(status, code, REFUSED_CODES, f"HTTP {status} code {code}")
