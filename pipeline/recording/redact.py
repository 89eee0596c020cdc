"""Credentials taken out of imported captures before they land in a recording.

A capture (cryptofeed's raw-data files) keeps what the client sent as well as what it received: an OKX
``login`` (``apiKey``, ``passphrase``, ``sign``), a Coinbase signed subscribe (``key``, ``passphrase``,
``signature``), a Bybit ``auth`` (key and signature as positional ``args``), a Kraken ``token``, a Binance
``listenKey`` in the URL; and exchanges echo requests back (OKX 60012 quotes the whole login in its
``msg``; Kraken's ``subscriptionStatus`` repeats the token). A recording is kept, copied and handed around,
so the import replaces every such value with :data:`REDACTED` and keeps the frame's shape: a JSON frame stays
the same JSON with the same keys, the value a string ``"<redacted>"``.

What is replaced:

* the quoted value of a credential field (:data:`NAMES`: ``apiKey``, ``key``, ``passphrase``, ``sign``,
  ``signature``, ``secret``, ``password``, ``token``, ``jwt``, ``listenKey`` ...) in JSON text, escaped JSON
  text inside a string (an echoed request), or ``name=value`` text (a URL's query, a form);
* every string argument of a login frame the client sent (``"op"``/``"event"``/``"method"``/``"action"``/
  ``"type"``/``"ch"`` naming ``login``, ``auth``, ``authenticate`` ...): Bybit's
  ``{"op":"auth","args":[KEY, EXPIRES, SIGN]}`` has no field names to go by. The exchange's answer
  (``{"event":"login","code":"0"}``) is left alone: the session reads it;
* in a URL, the ``user:password@`` part and any path segment of 32 or more letters and digits (Binance's
  ``/ws/<listenKey>``).

Binary frames (HTX's gzip) are kept as they are: HTX's market stream takes no credentials.
"""
from __future__ import annotations

import re

import orjson

REDACTED = "<redacted>"

NAMES = (r"api[_-]?key|access[_-]?key(?:[_-]?id)?|api[_-]?secret|secret[_-]?key|client[_-]?secret|secret"
         r"|passphrase|password|passwd|signature|sign|access[_-]?token|refresh[_-]?token|auth[_-]?token|token"
         r"|jwt|listen[_-]?key|key")
# "name": "value" in JSON, \"name\":\"value\" in JSON inside a JSON string, 'name': 'value' in Python text
_QUOTED = re.compile(r"""(?<![A-Za-z0-9_])((?:%s)\\*["']\s*:\s*\\*["'])([^"'\\]*)""" % NAMES, re.IGNORECASE)
# name=value (a URL's query string, form or log text)
_ASSIGNED = re.compile(r"""(?<![A-Za-z0-9_])((?:%s)\s*=\s*)([^\s"'\\&,;}\]]+)""" % NAMES, re.IGNORECASE)
_ANY_NAME = re.compile(r"(?<![A-Za-z0-9_])(?:%s)(?![A-Za-z0-9_])" % NAMES, re.IGNORECASE)
LOGIN_VERBS = {"login", "auth", "authenticate", "authorize", "authorization", "public/auth", "private/auth"}
_LOGIN = re.compile(r""""(?:op|event|method|action|type|ch)"\s*:\s*"(?:%s)\"""" %
                    "|".join(re.escape(v) for v in sorted(LOGIN_VERBS)), re.IGNORECASE)
_URL_USER = re.compile(r"(//)[^/@\s]+@")
_URL_LONG_SEGMENT = re.compile(r"(?<=/)[A-Za-z0-9]{32,}(?=[/?#]|$)")


def _fields(text: str) -> tuple[str, int]:
    """``text`` with credential field values replaced, and how many were."""
    text, quoted = _QUOTED.subn(lambda m: m.group(1) + REDACTED, text)
    text, assigned = _ASSIGNED.subn(lambda m: m.group(1) + REDACTED, text)
    return text, quoted + assigned


def _login_arguments(value, verb_keys=("op", "event", "method", "action", "type", "ch")):
    """A login frame's JSON with every string argument replaced (its verb and the keys kept)."""
    if isinstance(value, dict):
        return {k: (v if k in verb_keys and isinstance(v, str) else _login_arguments(v, ())) for k, v in value.items()}
    if isinstance(value, list):
        return [_login_arguments(v, ()) for v in value]
    if isinstance(value, str):
        return REDACTED
    return value


def redact_text(text: str, sent: bool = True) -> tuple[str, bool]:
    """A text frame with its credentials replaced, and whether any were; ``sent``: the client's own frame (a
    login's positional arguments go too)."""
    login = sent and _LOGIN.search(text) is not None
    if not login and not _ANY_NAME.search(text):
        return text, False
    changed = False
    if login:
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            redacted = orjson.dumps(_login_arguments(parsed)).decode()
            if redacted != text:
                text, changed = redacted, True
    text, n = _fields(text)
    return text, changed or n > 0


def redact_url(url: str) -> tuple[str, bool]:
    """A connection URL without its user:password, credential query values or token-like path segments."""
    redacted, n = _fields(url)
    redacted, users = _URL_USER.subn(lambda m: m.group(1) + REDACTED + "@", redacted)
    redacted, segments = _URL_LONG_SEGMENT.subn(REDACTED, redacted)
    return redacted, bool(n or users or segments)


def redact_frame(frame):
    """A received frame (``str`` or ``bytes``) with its credentials replaced, and whether any were; binary
    frames are kept (HTX's gzip), a frame without a credential field name is returned unchanged."""
    if isinstance(frame, bytes):
        return frame, False
    return redact_text(frame, sent=False)
