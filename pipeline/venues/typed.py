"""How a feed decodes its frames: ``decoder: orjson`` (the default) or ``msgspec``.

A decoder is two pure functions of one venue:

* ``parse(raw, recv_ns) -> list[event]``, the contract of the venue module's
  own ``parse`` (:func:`pipeline.venues._common.make_parse`);
* ``top(raw) -> tuple | None``, the short path for the venue's top-of-book
  channel (see below), or None for a venue without one.

``top`` contract. For a frame that is exactly one top-of-book snapshot of the
venue's BBO channel, ``top(raw)`` returns
``(symbol, bid_px, bid_qty, ask_px, ask_qty, exch_ts_ms, seq, xseq)`` such that
``parse(raw, recv_ns)`` would have returned exactly
``[BookUpdate(symbol, BBO, True, [(bid_px, bid_qty)], [(ask_px, ask_qty)], exch_ts_ms, seq, xseq=xseq)]``
(one level a side, ``prev_seq``/``checksum`` None, ``restart``/``weak`` False).
For every other frame (another channel, a control message, a side with no
level, a restart, a frame that does not decode) it returns None and never
raises: the session then runs ``parse``, which names the problem. Whether the
numbers are usable (NaN, zero or negative prices) is for the book to judge,
as on the general path. Both decoders return the same values for the same
frame; ``tests/unit/test_top_path.py`` holds them to it on every fixture.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

DECODERS = ("orjson", "msgspec")


@dataclass(frozen=True)
class Decoder:
    name: str
    parse: Callable
    top: Callable | None


def available(name: str) -> bool:
    if name == "orjson":
        return True
    try:
        import msgspec  # noqa: F401
    except ImportError:
        return False
    return True


def decoder_for(venue, name: str = "orjson") -> Decoder:
    """The decoder ``name`` for the venue module ``venue``."""
    if name == "orjson":
        return Decoder(name, venue.parse, getattr(venue, "top", None))
    raise ValueError(f"unknown decoder {name!r}; one of {', '.join(DECODERS)}")
