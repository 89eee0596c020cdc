"""HTX: the fee rates this account pays, ``GET /v2/reference/transact-fee-rate?symbols=`` (signed).

Docs: https://huobiapi.github.io/docs/spot/v1/en/#get-current-fee-rate-applied-to-the-user ("Get Current Fee
Rate Applied to The User") and https://huobiapi.github.io/docs/spot/v1/en/#signing-api-requests ("Signing
API Requests", signature version 2).

Signing: the query carries ``AccessKeyId``, ``SignatureMethod=HmacSHA256``, ``SignatureVersion=2`` and
``Timestamp`` (UTC, ``YYYY-MM-DDThh:mm:ss``) beside the request's own parameters; the text signed is
``"GET\\n" + host (lower case) + "\\n" + path + "\\n" +`` the parameters sorted by name (ASCII),
each percent-encoded, joined with ``&``; HMAC-SHA256 keyed by the secret, base64, sent as ``Signature``
(percent-encoded too). The host is the one the request goes to (``api.huobi.pro``, or the simulator's
``127.0.0.1:PORT``): it is part of what is signed.

Refusals: ``{"status":"error","err-code":"api-signature-not-valid","err-msg":"Signature not valid: ..."}``
(v1 style) or ``{"code":1003,"message":"invalid signature"}`` / ``1002`` (unauthorized) on the v2 endpoints,
both in an HTTP 200; HTTP 401/403 likewise.

The response (up to 10 symbols a request)::

    {"code":200,"data":[{"symbol":"btcusdt","actualMakerRate":"0.002","actualTakerRate":"0.002",
                         "takerFeeRate":"0.002","makerFeeRate":"0.002"}],"success":true}

``actualTakerRate`` / ``actualMakerRate`` are what the account pays after its deductions; they are kept.
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
    load_json,
    percent_encode,
    rate_bps,
    refused_by_code,
)

NAME = "htx"
PATH = "/v2/reference/transact-fee-rate"
SYMBOLS_PER_REQUEST = 10
REFUSED_CODES = {1002: "unauthorized", 1003: "invalid signature", "api-signature-not-valid": "signature not valid",
                 "invalid-access-key": "invalid access key", 403: "incorrect access key"}


def timestamp_text(now_ms: int) -> str:
    """``2017-05-11T15:19:30``: the signed ``Timestamp`` (UTC, seconds)."""
    return datetime.fromtimestamp(int(now_ms) // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def canonical_query(params: dict[str, str]) -> str:
    """The parameters sorted by name, each name and value percent-encoded, joined with ``&``."""
    return "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))


def sign(method: str, host: str, path: str, params: dict[str, str], secret: str) -> str:
    """``Signature``: base64 of HMAC-SHA256 of ``METHOD\\nhost\\npath\\nsorted-encoded-params``."""
    text = f"{method.upper()}\n{host.lower()}\n{path}\n{canonical_query(params)}"
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()).decode()


def build_requests(credentials: Credentials, symbols, now_ms: int, host: str = "api.huobi.pro") -> list[FeeRequest]:
    """Signed GETs for ``symbols``, ten a request (the endpoint's limit)."""
    symbols = list(symbols)
    out = []
    for start in range(0, len(symbols), SYMBOLS_PER_REQUEST):
        params = {"AccessKeyId": credentials.key, "SignatureMethod": "HmacSHA256", "SignatureVersion": "2",
                  "Timestamp": timestamp_text(now_ms), "symbols": ",".join(symbols[start:start + SYMBOLS_PER_REQUEST])}
        signature = sign("GET", host, PATH, params, credentials.secret)
        out.append(FeeRequest("GET", f"{PATH}?{canonical_query(params)}&Signature={percent_encode(signature)}"))
    return out


def parse_fees(raw, symbols=()) -> dict[str, AccountFee]:
    """A ``code`` 200 answer -> ``{symbol: AccountFee}`` from ``actualTakerRate`` / ``actualMakerRate``."""
    body = load_json(raw, NAME)
    if not isinstance(body, dict) or body.get("code") != 200 or not isinstance(body.get("data"), list):
        code = body.get("code", body.get("err-code")) if isinstance(body, dict) else None
        raise ParseError("bad_account_fee", f"code {code}", NAME)
    out = {}
    for entry in body["data"]:
        symbol = entry.get("symbol") if isinstance(entry, dict) else None
        if not isinstance(symbol, str):
            raise ParseError("bad_account_fee", f"entry without a symbol: {entry!r}"[:120], NAME)
        out[symbol] = AccountFee(symbol, rate_bps(entry.get("actualTakerRate"), NAME, f"{symbol} actualTakerRate"),
                                 rate_bps(entry.get("actualMakerRate"), NAME, f"{symbol} actualMakerRate"))
    return out


def refusal(status: int, raw) -> str | None:
    body = answer_object(raw, NAME) or {}
    code = body.get("err-code", body.get("err_code", body.get("code")))
    return refused_by_code(status, code, REFUSED_CODES, f"HTTP {status} {code}")
