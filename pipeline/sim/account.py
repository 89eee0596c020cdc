"""The simulated account behind each venue's signed fee endpoint.

Each simulated exchange answers its venue's fee endpoint (the record's ``account_fees.path``) the way the
venue does: it verifies the request's signature with the venue's own rule (each venue's
``sim.py`` ``render_account``, using the signing of its ``account.py``) and refuses a wrong key, secret or
passphrase with the venue's real error (status and body); a good request gets the account's fees, a
VIP tier below the venue's public default so a change is visible (:data:`ACCOUNT_RATES`).

Where: a GET endpoint on the exchange's WebSocket port, beside its reference data; every endpoint (Kraken's
``POST /0/private/TradeVolume`` too: the WebSocket server reads no request body) on the exchange's account
port, :attr:`pipeline.sim.server.ExchangeServer.account_port`, a small HTTP/1.1 listener
(:class:`AccountListener`).

Credentials: the simulator's account accepts one API key, :data:`SIM_CREDENTIALS` by default, or the
values of the environment variables ``PIPELINE_SIM_API_KEY``, ``PIPELINE_SIM_API_SECRET`` and
``PIPELINE_SIM_API_PASSPHRASE`` when set in the simulator's environment (Coinbase's secret is an EC P-256
private key in PEM: its default is :data:`SIM_COINBASE_PEM`, a key made for the simulator only, and the
variable ``PIPELINE_SIM_COINBASE_PEM`` replaces it). Point a feed's ``credentials_env`` at variables holding
these to look fees up against the simulator.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import orjson

from pipeline.venues._account import Credentials

log = logging.getLogger("pipeline.sim")

KEY_ENV, SECRET_ENV, PASSPHRASE_ENV, COINBASE_PEM_ENV = (
    "PIPELINE_SIM_API_KEY", "PIPELINE_SIM_API_SECRET", "PIPELINE_SIM_API_PASSPHRASE", "PIPELINE_SIM_COINBASE_PEM")

# A key made for the simulator (and its tests) only: it signs nothing anywhere else.
SIM_COINBASE_PEM = """-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIPYFEvIG3A4cU4NYth1QULFHBEaIEu60GNi93/pw671roAoGCCqGSM49
AwEHoUQDQgAE4CRpdZiGonVWSCUTamGgqhbyph6gDixvB0lsfejPyEcH9cJupx0K
akGVdBCme3OH2G0cTxivFo0QFaXBZlArYQ==
-----END EC PRIVATE KEY-----
"""
# the secret is base64 because Kraken's is (it signs with the decoded bytes): "sim-api-secret-0123456789"
SIM_CREDENTIALS = Credentials(key="sim-api-key", secret="c2ltLWFwaS1zZWNyZXQtMDEyMzQ1Njc4OQ==",
                              passphrase="sim-passphrase")
SIM_COINBASE_KEY = "organizations/sim-org/apiKeys/sim-api-key"

# (taker, maker) rate of the simulated account, as each venue writes a rate (Kraken in percent, OKX negative
# for a cost): below every venue's public default taker fee
ACCOUNT_RATES = {
    "binance": ("0.00060000", "0.00040000"),     # 6 bps (public 10)
    "bybit": ("0.0006", "0.0004"),               # 6 bps (public 10)
    "okx": ("-0.0007", "-0.0005"),               # 7 bps (public 10)
    "htx": ("0.0015", "0.0012"),                 # 15 bps (public 20)
    "coinbase": ("0.0025", "0.0015"),            # 25 bps (public 120)
    "kraken": ("0.2000", "0.1000"),              # 20 bps (public 40)
}


def sim_credentials(venue: str, environ=None) -> Credentials:
    """The one API key the simulated ``venue`` accepts."""
    environ = os.environ if environ is None else environ
    if venue == "coinbase":
        return Credentials(environ.get(KEY_ENV) or SIM_COINBASE_KEY, environ.get(COINBASE_PEM_ENV) or SIM_COINBASE_PEM)
    return Credentials(environ.get(KEY_ENV) or SIM_CREDENTIALS.key, environ.get(SECRET_ENV) or SIM_CREDENTIALS.secret,
                       environ.get(PASSPHRASE_ENV) or SIM_CREDENTIALS.passphrase)


@dataclass
class SimAccount:
    """What the simulated venue knows of the one account: its key, its rates, the instruments it lists."""

    credentials: Credentials
    taker: str
    maker: str
    symbols: list[str] = field(default_factory=list)      # native symbols
    # the venue's own host name: a signature over it is accepted too (HTX and Coinbase sign the host; a client
    # pointed at the simulator may still sign the name of the venue it stands in for)
    real_host: str = ""


@dataclass(frozen=True)
class AccountRequest:
    """One HTTP request to the fee endpoint as the server received it."""

    method: str
    path: str                     # without the query
    raw_query: str                # the query string exactly as sent
    headers: dict[str, str]       # names in lower case
    body: bytes
    host: str                     # the Host header

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.raw_query, keep_blank_values=True).items()}


def answer(protocol_class, request: AccountRequest, account: SimAccount) -> tuple[int, object] | None:
    """(status, JSON body) from the venue's ``render_account``, or None when ``request`` is not its fee endpoint."""
    from pipeline.venues import load_venue
    endpoint = getattr(load_venue(protocol_class.NAME), "account_fees", None)
    if endpoint is None or request.path != endpoint.path:
        return None
    return protocol_class.render_account(request, account)


class AccountListener:
    """A minimal HTTP/1.1 server (one request a connection, ``Content-Length`` bodies) for the fee endpoint."""

    MAX_BODY = 64 * 1024

    def __init__(self, handle):
        self.handle = handle           # AccountRequest -> (status, JSON body) | None
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int = 0, ssl=None) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, ssl=ssl)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._one(reader), 10)
        except Exception:  # noqa: BLE001 - a malformed request is answered 400, the listener stays up
            status, body = 400, {"error": "bad request"}
        raw = orjson.dumps(body)
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                  404: "Not Found"}.get(status, "")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + raw)
        with contextlib.suppress(Exception):
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader) -> tuple[int, object]:
        method, target, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length > self.MAX_BODY:
            return 400, {"error": "body too large"}
        body = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        answered = self.handle(AccountRequest(method.upper(), url.path, url.query, headers, body,
                                              headers.get("host", "")))
        return answered if answered is not None else (404, {"error": f"not served by the simulator: {url.path}"})

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
