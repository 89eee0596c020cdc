"""Small helpers the venue parsers share (pure, no I/O)."""
from __future__ import annotations

import orjson

from pipeline.errors import ParseError

MAX_FRAME_BYTES = 64 * 1024 * 1024  # Coinbase's whole-book snapshot is ~5 MB; anything near this is not a quote


def loads(raw: bytes | str, exchange: str):
    """orjson decode with the project's error; rejects absurd frame sizes first."""
    if len(raw) > MAX_FRAME_BYTES:
        raise ParseError("oversize", f"{len(raw)} bytes", exchange)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError("invalid_json", str(exc)[:120], exchange) from None


def levels(pairs) -> list[tuple[float, float]]:
    """[[price, qty, ...], ...] (strings or numbers) -> [(float, float), ...]."""
    return [(float(p[0]), float(p[1])) for p in pairs]


SHAPE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)
