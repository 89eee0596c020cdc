"""Fetching a venue's trading rules (its reference data) and keeping the last good answer on disk.

Blocking and small: the feed calls :func:`fetch_reference_data_async` (the same in a worker thread) at
start and on its refresh schedule; ``run.py instruments`` and the tests call :func:`fetch_reference_data`.
No process, board or asyncio-loop state lives here.

* Where: the venue record's ``reference_data`` (``url`` + ``path``). ``base_url`` replaces the record's
  scheme, host and port (the simulator serves every venue's endpoint on its own port under the same path,
  :func:`rules_base_url` derives it from a feed URL). A ``"rest"`` venue is one HTTP GET; a
  ``"websocket"`` venue (Kraken) is one connection that subscribes to the channel ``path`` names and takes
  its first snapshot.
* How hard: each attempt has ``timeout_s`` (connect and read); up to ``retries`` attempts in all,
  separated by :class:`~pipeline.backoff.Backoff` delays. An HTTP error status, a timeout, a refused
  connection and an answer the venue's ``parse`` refuses all count as a failed attempt; when every attempt
  failed :class:`~pipeline.errors.FeedError` says, in one line, the venue, the URL and the last reason.
* What: :func:`fetch_reference_response` gives the raw response body with its parsed rules (the feed
  records and caches the raw text: replaying it gives the same rules); :func:`fetch_reference_data`
  gives the rules only.

The cache (:class:`RulesCache`): one file per venue, ``<dir>/<venue>.json``, the raw response of the
last whole answer that parsed, written atomically; its age is the file's modification time (the last time the
venue gave or confirmed it: an empty answer to "what changed since" touches the file).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from pipeline.backoff import Backoff
from pipeline.errors import FeedError, ParseError
from pipeline.model import InstrumentRules

USER_AGENT = "pipeline-refdata/1"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def rules_base_url(feed_url: str) -> str:
    """``ws://host:port/...`` -> ``http://host:port``; ``wss`` -> ``https`` (http/https kept as they are)."""
    parts = urlsplit(feed_url)
    scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a ws/wss/http/https URL: {feed_url!r}")
    return f"{scheme}://{parts.netloc}"


def reference_url(venue_name: str, base_url: str | None = None, since: str | None = None) -> str:
    """The full request URL of ``venue_name``'s reference data (``base_url`` replacing the record's host);
    ``since``: the stamp of the last answer, for a venue that answers what changed since one (``since_param``)."""
    record = _record(venue_name)
    ref = record.reference_data
    if ref.transport == "websocket":
        real = urlsplit(ref.url)
        if base_url is None:
            return ref.url
        base = urlsplit(base_url)
        scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(base.scheme.lower(), base.scheme)
        return f"{scheme}://{base.netloc}{real.path}"
    url = (base_url.rstrip("/") if base_url is not None else ref.url.rstrip("/")) + ref.path
    if since is not None and ref.since_param:
        url += ("&" if "?" in url else "?") + urlencode({ref.since_param: since})
    return url


def _record(venue_name: str):
    from pipeline.venues import load_venue  # the venue records; no process imports
    try:
        record = load_venue(venue_name)
    except KeyError:
        raise FeedError(f"{venue_name}: unknown venue") from None
    if getattr(record, "reference_data", None) is None:
        raise FeedError(f"{venue_name}: the venue publishes no reference data")
    return record


def _get_http(url: str, timeout_s: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:   # noqa: S310 - http(s) URLs only
        body = response.read(MAX_RESPONSE_BYTES + 1)
    if len(body) > MAX_RESPONSE_BYTES:
        raise FeedError(f"response over {MAX_RESPONSE_BYTES} bytes")
    return body


def _get_websocket(url: str, subscribe: str, channel: str, timeout_s: float) -> bytes:
    """One connection: subscribe, and return the first frame of ``channel`` whose type is ``snapshot``."""
    import orjson
    from websockets.sync.client import connect

    deadline = time.monotonic() + timeout_s
    with connect(url, open_timeout=timeout_s, close_timeout=1.0, max_size=MAX_RESPONSE_BYTES) as ws:
        ws.send(subscribe)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {channel} snapshot within {timeout_s:g} s")
            raw = ws.recv(timeout=left)
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(msg, dict) and msg.get("channel") == channel and msg.get("type") == "snapshot":
                return raw.encode() if isinstance(raw, str) else raw


def _subscribe_frame(record) -> str:
    import importlib

    import orjson
    wire = importlib.import_module(record.reference_data.parse.__module__)   # the venue's wire.py
    frame = getattr(wire, "INSTRUMENT_SUBSCRIBE", None)
    if frame:
        return frame
    return orjson.dumps({"method": "subscribe", "params": {"channel": record.reference_data.path,
                                                           "snapshot": True}}).decode()


def failure_reason(exc: BaseException) -> str:
    """One short line for a failed HTTP or WebSocket attempt: ``HTTP 503``, ``timed out``, the refused
    connection's words. The reference-data fetch and the account fee lookup both say it so."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
        if isinstance(exc, str):
            return exc
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:160] if text else type(exc).__name__


def fetch_reference_response(venue_name: str, base_url: str | None = None, timeout_s: float = 5.0,
                             retries: int = 3, backoff: Backoff | None = None,
                             sleep=time.sleep, since: str | None = None) -> tuple[bytes, list[InstrumentRules]]:
    """``(raw response body, its rules)`` of ``venue_name``: the first attempt whose answer parses.

    ``since``: ask only what changed since that stamp (a venue with ``since_param``; ignored by others). Such an
    answer may name only the changed instruments: the record's ``since(raw)`` says whether it is whole.

    Raises :class:`FeedError` (one line: venue, URL, attempts, last reason) when none did.
    """
    record = _record(venue_name)
    ref = record.reference_data
    url = reference_url(venue_name, base_url, since)
    attempts = max(1, int(retries))
    backoff = backoff or Backoff(base_s=0.2, cap_s=2.0)
    last = "no attempt"
    for attempt in range(attempts):
        if attempt:
            sleep(backoff.next_delay())
        try:
            if ref.transport == "websocket":
                raw = _get_websocket(url, _subscribe_frame(record), ref.path, timeout_s)
            else:
                raw = _get_http(url, timeout_s)
            return raw, list(ref.parse(raw))
        except ParseError as exc:
            last = f"{exc.reason}: {exc.detail}"[:160]
        except FeedError as exc:
            last = str(exc)
        except Exception as exc:  # noqa: BLE001 - every network or protocol failure is one failed attempt
            last = failure_reason(exc)
    raise FeedError(f"{venue_name}: reference data from {url} failed after {attempts} "
                    f"attempt{'s' if attempts != 1 else ''}: {last}")


def fetch_reference_data(venue_name: str, base_url: str | None = None, timeout_s: float = 5.0,
                         retries: int = 3) -> list[InstrumentRules]:
    """The rules ``venue_name`` publishes now (blocking). ``base_url`` None: the record's real URL, else
    e.g. ``http://127.0.0.1:PORT`` (the simulator). Raises :class:`FeedError` with a one-line reason."""
    return fetch_reference_response(venue_name, base_url, timeout_s, retries)[1]


async def fetch_reference_data_async(venue_name: str, base_url: str | None = None, timeout_s: float = 5.0,
                                     retries: int = 3) -> list[InstrumentRules]:
    """:func:`fetch_reference_data` in a worker thread."""
    return await asyncio.to_thread(fetch_reference_data, venue_name, base_url, timeout_s, retries)


async def fetch_reference_response_async(venue_name: str, base_url: str | None = None, timeout_s: float = 5.0,
                                         retries: int = 3, since: str | None = None
                                         ) -> tuple[bytes, list[InstrumentRules]]:
    """:func:`fetch_reference_response` in a worker thread."""
    return await asyncio.to_thread(fetch_reference_response, venue_name, base_url, timeout_s, retries, since=since)


# ---------------------------------------------------------------- the on-disk cache

@dataclass(frozen=True)
class CachedRules:
    """One venue's cached response: the raw body, its rules, and how old it is (seconds, from the file's mtime)."""

    raw: bytes
    rules: list[InstrumentRules]
    age_s: float
    path: Path


class RulesCache:
    """The last good reference-data response per venue, one file each under ``directory``.

    A response is kept under where it came from: ``<venue>.json`` for the venue's own endpoint,
    ``<venue>@<host>_<port>.json`` for another source (``base_url``: the simulator, a ``rules_url``), so
    the simulator's rules never stand in for the exchange's when the exchange is unreachable. A directory
    handed to replay (``--rules-cache``) holds ``<venue>.json`` files.
    """

    def __init__(self, directory: str | os.PathLike, base_url: str | None = None):
        self.directory = Path(directory).expanduser()
        self.suffix = ""
        if base_url:
            where = urlsplit(base_url)
            self.suffix = "@" + re.sub(r"[^A-Za-z0-9.-]", "_", where.netloc or base_url)

    def path(self, venue_name: str) -> Path:
        return self.directory / f"{venue_name}{self.suffix}.json"

    def store(self, venue_name: str, raw: bytes | str) -> Path:
        """Write ``raw`` as ``venue_name``'s cached response (atomically: a temporary file renamed)."""
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(venue_name)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return target

    def touch(self, venue_name: str) -> None:
        """The venue confirmed the cached response is still current (an empty change since its stamp): its age
        starts again. Nothing when there is no cached response."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path(venue_name))

    def load(self, venue_name: str, now_s: float | None = None) -> CachedRules | None:
        """The cached response of ``venue_name`` with its age, or None when there is none or it no longer parses."""
        target = self.path(venue_name)
        try:
            raw = target.read_bytes()
            mtime = target.stat().st_mtime
        except OSError:
            return None
        try:
            rules = list(_record(venue_name).reference_data.parse(raw))
        except (ParseError, FeedError):
            return None
        now = time.time() if now_s is None else now_s
        return CachedRules(raw, rules, max(0.0, now - mtime), target)


def describe_age(age_s: float) -> str:
    """``42 s`` / ``17 min`` / ``5.2 h`` / ``3.0 d``: an age for a log line."""
    if age_s < 120:
        return f"{age_s:.0f} s"
    if age_s < 7200:
        return f"{age_s / 60:.0f} min"
    if age_s < 172800:
        return f"{age_s / 3600:.1f} h"
    return f"{age_s / 86400:.1f} d"
