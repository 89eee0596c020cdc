"""Coinbase Advanced Trade: this account's fee tier, ``GET /api/v3/brokerage/transaction_summary``.

Docs: https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/fees/get-transaction-summary
("Get Transaction Summary") and https://docs.cdp.coinbase.com/coinbase-app/authentication-authorization/api-key-authentication
("API Key Authentication": a CDP key signs a JWT per request).

Signing: a CDP API key is a name (``organizations/{org_id}/apiKeys/{key_id}``, the ``key``) and an EC P-256
private key in PEM (the ``secret``). Each request carries ``Authorization: Bearer <JWT>``, the JWT signed
ES256 with header ``{"alg":"ES256","kid":<key name>,"nonce":<random hex>,"typ":"JWT"}`` and claims
``{"sub":<key name>,"iss":"cdp","nbf":now,"exp":now+120,"uri":"GET api.coinbase.com/api/v3/brokerage/..."}``
(the ``uri`` claim: method, host and path, without the query). The signature is the raw 64-byte
``r || s``, base64url like the other two parts. ECDSA signatures differ at each signing; what is fixed is
the signed text, and that the key's public half verifies it.

Refusals: HTTP 401 (``Unauthorized``: a bad or expired JWT, an unknown key), 403 (no permission).

The response (one fee tier for the whole account, every spot product)::

    {"total_volume":0,"total_fees":0,"fee_tier":{"pricing_tier":"Advanced 1","usd_from":"0","usd_to":"1000",
     "taker_fee_rate":"0.008","maker_fee_rate":"0.006","aop_from":"","aop_to":""},"margin_rate":null,
     "goods_and_services_tax":null,"advanced_trade_only_volume":0,"advanced_trade_only_fees":0,
     "coinbase_pro_volume":0,"coinbase_pro_fees":0,"total_balance":"","has_promo_fee":false}

``cryptography`` (a dependency for this reason only) does the ES256 signing; it is imported when signing.
"""
from __future__ import annotations

import base64
import json

from pipeline.errors import ParseError
from pipeline.venues._account import AccountFee, Credentials, FeeRequest, load_json, rate_bps, refused_by_status

NAME = "coinbase"
PATH = "/api/v3/brokerage/transaction_summary"
QUERY = "product_type=SPOT"
JWT_LIFETIME_S = 120


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_parts(key_name: str, method: str, host: str, path: str, now_s: int, nonce: str) -> tuple[dict, dict]:
    """(header, claims) of the request's JWT."""
    header = {"alg": "ES256", "kid": key_name, "nonce": nonce, "typ": "JWT"}
    claims = {"sub": key_name, "iss": "cdp", "nbf": int(now_s), "exp": int(now_s) + JWT_LIFETIME_S,
              "uri": f"{method.upper()} {host}{path}"}
    return header, claims


def signing_input(header: dict, claims: dict) -> str:
    """``base64url(header) + "." + base64url(claims)``: the text ES256 signs."""
    def part(value: dict) -> str:
        return b64url(json.dumps(value, separators=(",", ":")).encode())
    return f"{part(header)}.{part(claims)}"


def sign(key_name: str, private_key_pem: str, method: str, host: str, path: str, now_s: int, nonce: str) -> str:
    """The JWT for one request: ``signing_input`` and its ES256 signature (raw ``r || s``), base64url."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("a CDP API secret is an EC P-256 private key in PEM")
    text = signing_input(*jwt_parts(key_name, method, host, path, now_s, nonce))
    r, s = decode_dss_signature(key.sign(text.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{text}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def build_requests(credentials: Credentials, symbols, now_ms: int, host: str = "api.coinbase.com",
                   nonce: str | None = None) -> list[FeeRequest]:
    """One signed GET: the tier is the account's, the same for every product."""
    if nonce is None:
        import secrets
        nonce = secrets.token_hex(16)
    token = sign(credentials.key, credentials.secret, "GET", host, PATH, int(now_ms) // 1000, nonce)
    return [FeeRequest("GET", f"{PATH}?{QUERY}", (("Authorization", f"Bearer {token}"),))]


def parse_fees(raw, symbols=()) -> dict[str, AccountFee]:
    """The account's ``fee_tier`` -> the same :class:`AccountFee` for each of ``symbols``."""
    body = load_json(raw, NAME)
    tier = body.get("fee_tier") if isinstance(body, dict) else None
    if not isinstance(tier, dict):
        raise ParseError("bad_account_fee", "no fee_tier in the transaction summary", NAME)
    taker = rate_bps(tier.get("taker_fee_rate"), NAME, "fee_tier.taker_fee_rate")
    maker = rate_bps(tier.get("maker_fee_rate"), NAME, "fee_tier.maker_fee_rate")
    return {symbol: AccountFee(symbol, taker, maker) for symbol in symbols}


def refusal(status: int, raw) -> str | None:
    return refused_by_status(status)
