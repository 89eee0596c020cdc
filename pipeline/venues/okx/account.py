"""OKX v5: the fee rates this account pays, ``GET /api/v5/account/trade-fee?instType=SPOT&instId=``.

Docs: https://www.okx.com/docs-v5/en/#trading-account-rest-api-get-fee-rates ("Get fee rates") and
https://www.okx.com/docs-v5/en/#overview-rest-authentication ("REST Authentication", "Making Requests",
"Signature"); error codes https://www.okx.com/docs-v5/en/#error-code-rest-api-public.

Signing: ``OK-ACCESS-SIGN`` is base64 of HMAC-SHA256, keyed by the secret, of ``timestamp + method +
requestPath + body``; a GET's query string is part of ``requestPath`` and its body is empty. The
timestamp is ISO 8601 UTC with milliseconds (``2020-12-08T09:08:57.715Z``) and is sent again as
``OK-ACCESS-TIMESTAMP``, with ``OK-ACCESS-KEY`` and ``OK-ACCESS-PASSPHRASE``.

Refusals: HTTP 401 with ``{"code":"50111","msg":"Invalid OK-ACCESS-KEY"}``, 50113 (invalid sign), 50105
(wrong passphrase), 50110 (IP not allowed), 50102 (timestamp expired), 50114 (invalid authorization).

The response (spot: one entry for the instrument asked)::

    {"code":"0","msg":"","data":[{"category":"1","delivery":"","exercise":"","instType":"SPOT",
      "level":"Lv1","maker":"-0.0008","taker":"-0.001","ts":"1639043138472"}]}

OKX writes a fee as a negative number (a rebate is positive), so the cost in bps is ``-rate * 10000``.
Spot rates are by instrument group, not one per account, so the request names the instrument (one per
symbol); the entry carries no instrument id, it is the one asked.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

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

NAME = "okx"
PATH = "/api/v5/account/trade-fee"
REFUSED_CODES = {"50111": "invalid OK-ACCESS-KEY", "50113": "invalid sign", "50105": "passphrase incorrect",
                 "50110": "IP not allowed", "50114": "invalid authorization", "50102": "timestamp expired"}


def iso_timestamp(now_ms: int) -> str:
    """``2020-12-08T09:08:57.715Z``: OKX's ``OK-ACCESS-TIMESTAMP``."""
    seconds, ms = divmod(int(now_ms), 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def sign(timestamp: str, method: str, request_path: str, body: str, secret: str) -> str:
    """``OK-ACCESS-SIGN``: base64 of HMAC-SHA256 of ``timestamp + method + requestPath + body``."""
    digest = hmac.new(secret.encode(), f"{timestamp}{method.upper()}{request_path}{body}".encode(),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def build_requests(credentials: Credentials, symbols, now_ms: int, host: str = "") -> list[FeeRequest]:
    """One signed GET per instrument (``instId``)."""
    out = []
    stamp = iso_timestamp(now_ms)
    for symbol in symbols:
        path = f"{PATH}?{form_encode({'instType': 'SPOT', 'instId': symbol})}"
        headers = (("OK-ACCESS-KEY", credentials.key), ("OK-ACCESS-SIGN", sign(stamp, "GET", path, "",
                                                                                credentials.secret)),
                   ("OK-ACCESS-TIMESTAMP", stamp), ("OK-ACCESS-PASSPHRASE", credentials.passphrase))
        out.append(FeeRequest("GET", path, headers))
    return out


def parse_fees(raw, symbols=()) -> dict[str, AccountFee]:
    """A ``code`` "0" answer for the one instrument of ``symbols`` -> ``{instId: AccountFee}``."""
    body = load_json(raw, NAME)
    if not isinstance(body, dict) or body.get("code") != "0":
        code = body.get("code") if isinstance(body, dict) else None
        raise ParseError("bad_account_fee", f"code {code}", NAME)
    data = body.get("data")
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict) or len(symbols) != 1:
        raise ParseError("bad_account_fee", "expected one data entry for one instrument", NAME)
    entry, symbol = data[0], next(iter(symbols))
    if entry.get("instType") != "SPOT":
        raise ParseError("bad_account_fee", f"instType {entry.get('instType')!r}, not SPOT", NAME)
    taker = -decimal_of(entry.get("taker"), NAME, f"{symbol} taker")
    maker = -decimal_of(entry.get("maker"), NAME, f"{symbol} maker")
    return {symbol: AccountFee(symbol, float(taker * 10000), float(maker * 10000))}


def refusal(status: int, raw) -> str | None:
    code = (answer_object(raw, NAME) or {}).get("code")
    return refused_by_code(status, code, REFUSED_CODES, f"HTTP {status} code {code}")
