"""Bybit v5: the fee rates this account pays, ``GET /v5/account/fee-rate?category=spot&symbol=``.

Docs: ``docs/v5/account/fee-rate.mdx`` ("Get Fee Rate"), ``docs/v5/guide.mdx`` ("Authentication
parameters", "Parameters for Authenticated Endpoints") and ``docs/v5/error.mdx`` of
https://github.com/bybit-exchange/docs (read at the commit of 2026-07-24).

Signing: the text ``timestamp + api_key + recv_window + queryString`` (a GET) is signed with HMAC-SHA256
keyed by the secret, lower-case hex, sent as ``X-BAPI-SIGN`` beside ``X-BAPI-API-KEY``,
``X-BAPI-TIMESTAMP`` (ms) and ``X-BAPI-RECV-WINDOW``.

Refusals: ``retCode`` 10003 (API key is invalid), 10004 (error sign), 10005 (permission denied), 10007
(user authentication failed), in an HTTP 200 answer; HTTP 401/403 likewise.

The response::

    {"retCode":0,"retMsg":"OK","result":{"list":[
        {"symbol":"ETHUSDT","takerFeeRate":"0.0006","makerFeeRate":"0.0001"}]},
     "retExtInfo":{},"time":1676360412576}
"""
from __future__ import annotations

import hashlib
import hmac

from pipeline.errors import ParseError
from pipeline.venues._account import (
    AccountFee,
    Credentials,
    FeeRequest,
    answer_object,
    form_encode,
    load_json,
    rate_bps,
    refused_by_code,
)

NAME = "bybit"
PATH = "/v5/account/fee-rate"
RECV_WINDOW_MS = 5000
REFUSED_CODES = {10003: "API key is invalid", 10004: "error sign", 10005: "permission denied",
                 10007: "user authentication failed"}


def sign(timestamp_ms: int | str, api_key: str, recv_window: int | str, payload: str, secret: str) -> str:
    """``X-BAPI-SIGN``: HMAC-SHA256 of ``timestamp + api_key + recv_window + queryString`` (or JSON body), hex."""
    text = f"{timestamp_ms}{api_key}{recv_window}{payload}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def build_requests(credentials: Credentials, symbols, now_ms: int, host: str = "") -> list[FeeRequest]:
    """One signed GET per symbol."""
    out = []
    for symbol in symbols:
        query = form_encode({"category": "spot", "symbol": symbol})
        headers = (("X-BAPI-API-KEY", credentials.key), ("X-BAPI-TIMESTAMP", str(int(now_ms))),
                   ("X-BAPI-RECV-WINDOW", str(RECV_WINDOW_MS)),
                   ("X-BAPI-SIGN", sign(int(now_ms), credentials.key, RECV_WINDOW_MS, query, credentials.secret)))
        out.append(FeeRequest("GET", f"{PATH}?{query}", headers))
    return out


def parse_fees(raw, symbols=()) -> dict[str, AccountFee]:
    """A ``retCode`` 0 answer -> ``{symbol: AccountFee}`` for each entry of ``result.list``."""
    body = load_json(raw, NAME)
    if not isinstance(body, dict) or body.get("retCode") != 0:
        code = body.get("retCode") if isinstance(body, dict) else None
        raise ParseError("bad_account_fee", f"retCode {code}", NAME)
    entries = (body.get("result") or {}).get("list")
    if not isinstance(entries, list):
        raise ParseError("bad_account_fee", "no result.list", NAME)
    out = {}
    for entry in entries:
        symbol = entry.get("symbol") if isinstance(entry, dict) else None
        if not isinstance(symbol, str):
            raise ParseError("bad_account_fee", f"entry without a symbol: {entry!r}"[:120], NAME)
        out[symbol] = AccountFee(symbol, rate_bps(entry.get("takerFeeRate"), NAME, f"{symbol} takerFeeRate"),
                                 rate_bps(entry.get("makerFeeRate"), NAME, f"{symbol} makerFeeRate"))
    return out


def refusal(status: int, raw) -> str | None:
    code = (answer_object(raw, NAME) or {}).get("retCode")
    return refused_by_code(status, code, REFUSED_CODES, f"retCode {code}")
