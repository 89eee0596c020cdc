"""Kraken: the fees this account pays, ``POST /0/private/TradeVolume`` (``pair=...&fee-info=true``).

Docs: https://docs.kraken.com/api/docs/rest-api/get-trade-volume ("Get Trade Volume") and
https://docs.kraken.com/api/docs/guides/spot-rest-auth ("Spot REST Authentication", with its worked example).

Signing: the body is form-encoded and starts with ``nonce`` (always increasing, here ms); ``API-Sign`` is
base64 of HMAC-SHA512, keyed by the base64-decoded secret, of ``URI path + SHA256(nonce + POST data)``
(the path starting at ``/0/private``); ``API-Key`` is the public key.

Refusals: ``{"error":["EAPI:Invalid key"],"result":{}}`` (also ``EAPI:Invalid signature``,
``EAPI:Invalid nonce``, ``EGeneral:Permission denied``), in an HTTP 200 answer; HTTP 401/403 likewise.

The response: fees in percent, keyed by Kraken's own pair name (``XXBTZUSD`` for ``BTC/USD``)::

    {"error":[],"result":{"currency":"ZUSD","volume":"0.0000",
     "fees":{"XXBTZUSD":{"fee":"0.2600","minfee":"0.1000","maxfee":"0.2600","nextfee":"0.2400",
                         "tiervolume":"0.0000","nextvolume":"50000.0000"}},
     "fees_maker":{"XXBTZUSD":{"fee":"0.1600","minfee":"0.0000","maxfee":"0.1600","nextfee":"0.1400",
                               "tiervolume":"0.0000","nextvolume":"50000.0000"}}}}

The request names the feed's symbols (``BTC/USD``, which the REST API accepts); an answer's pair is matched
to one by :func:`pair_key` (``XXBTZUSD``, ``XBTUSD`` and ``BTC/USD`` are one pair). ``0.2600`` % is 26 bps.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

from pipeline.errors import ParseError
from pipeline.venues._account import (
    AccountFee,
    Credentials,
    FeeRequest,
    answer_object,
    decimal_of,
    form_encode,
    load_json,
    refused_by_status,
)

NAME = "kraken"
PATH = "/0/private/TradeVolume"
REFUSED = ("EAPI:Invalid key", "EAPI:Invalid signature", "EAPI:Invalid nonce", "EGeneral:Permission denied")
_ASSET_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}


def sign(uri_path: str, nonce: str | int, post_data: str, secret_b64: str) -> str:
    """``API-Sign``: base64 HMAC-SHA512(base64-decoded secret, path + SHA256(nonce + POST data))."""
    digest = hashlib.sha256(f"{nonce}{post_data}".encode()).digest()
    mac = hmac.new(base64.b64decode(secret_b64), uri_path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


def build_requests(credentials: Credentials, symbols, now_ms: int, host: str = "") -> list[FeeRequest]:
    """One signed POST for every symbol."""
    nonce = str(int(now_ms))
    body = form_encode([("nonce", nonce), ("pair", ",".join(symbols)), ("fee-info", "true")])
    headers = (("API-Key", credentials.key), ("API-Sign", sign(PATH, nonce, body, credentials.secret)),
               ("Content-Type", "application/x-www-form-urlencoded"))
    return [FeeRequest("POST", PATH, headers, body.encode())]


def pair_key(name: str) -> str:
    """One spelling of a pair: ``XXBTZUSD`` / ``XBTUSD`` / ``BTC/USD`` -> ``BTCUSD``."""
    text = name.upper()
    if "/" in text:
        base, quote = text.split("/", 1)
    elif len(text) == 8 and text[0] in "XZ" and text[4] in "XZ":
        base, quote = text[1:4], text[5:]           # the legacy names: XXBTZUSD, XETHZEUR
    else:
        return text.replace("XBT", "BTC").replace("XDG", "DOGE")
    return _ASSET_ALIASES.get(base, base) + _ASSET_ALIASES.get(quote, quote)


def parse_fees(raw, symbols=()) -> dict[str, AccountFee]:
    """``result.fees`` (taker) and ``result.fees_maker`` -> ``{symbol: AccountFee}`` for ``symbols`` answered."""
    body = load_json(raw, NAME)
    if not isinstance(body, dict) or body.get("error") or not isinstance(body.get("result"), dict):
        raise ParseError("bad_account_fee", f"error {body.get('error') if isinstance(body, dict) else None}", NAME)
    result = body["result"]
    taker_of, maker_of = result.get("fees") or {}, result.get("fees_maker") or {}
    if not isinstance(taker_of, dict) or not isinstance(maker_of, dict):
        raise ParseError("bad_account_fee", "fees / fees_maker are not objects", NAME)
    asked = {pair_key(s): s for s in symbols}
    out = {}
    for pair, entry in taker_of.items():
        symbol = asked.get(pair_key(pair))
        if symbol is None:
            continue
        taker = decimal_of((entry or {}).get("fee"), NAME, f"{pair} fee")
        maker_entry = maker_of.get(pair)
        maker = None if maker_entry is None else decimal_of(maker_entry.get("fee"), NAME, f"{pair} maker fee")
        out[symbol] = AccountFee(symbol, float(taker * 100), None if maker is None else float(maker * 100))
    return out


def refusal(status: int, raw) -> str | None:
    errors = (answer_object(raw, NAME) or {}).get("error")
    for error in errors if isinstance(errors, list) else ():
        if isinstance(error, str) and error.startswith(REFUSED):
            return f"HTTP {status} {error}"
    return refused_by_status(status)
