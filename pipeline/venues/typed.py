"""How a feed decodes its frames: ``decoder: orjson`` (the default) or ``msgspec``.

A decoder is two pure functions of one venue:

* ``parse(raw, recv_ns) -> list[event]``, the contract of the venue module's
  own ``parse`` (:func:`pipeline.venues._common.make_parse`);
* ``top(raw) -> tuple | None``, the short path for the venue's top-of-book
  channel (see below), or None for a venue without one.

``top`` contract. ``top(raw)`` either returns None or a tuple
``(symbol, bid_px, bid_qty, ask_px, ask_qty, exch_ts_ms, seq, xseq)``, and a
tuple only for a frame that is exactly one top-of-book snapshot of the venue's
BBO channel, such that ``parse(raw, recv_ns)`` would have returned exactly
``[BookUpdate(symbol, BBO, True, [(bid_px, bid_qty)], [(ask_px, ask_qty)], exch_ts_ms, seq, xseq=xseq)]``
(one level a side, ``prev_seq``/``checksum`` None, ``restart``/``weak`` False).
None is always a correct answer (the session then runs ``parse``, which names
any problem); ``top`` answers None for every other frame (another channel, a
control message, a side with no level, a restart, a frame that does not
decode) and for shapes it does not look for (a Binance raw ``/ws`` frame), and
never raises. Whether the numbers are usable (NaN, zero or negative prices) is
for the book to judge, as on the general path. Both decoders return the same
values for the same frame (``tests/unit/test_top_path.py``,
``tests/unit/test_typed_decoder.py``), and a session on the short path writes
the same rows as one without it (``tests/property/test_top_path_properties.py``).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

from pipeline.model import BBO, BookUpdate

DECODERS = ("orjson", "msgspec")


@dataclass(frozen=True)
class Decoder:
    name: str
    parse: Callable
    top: Callable | None


def available(name: str) -> bool:
    """Whether decoder ``name`` can run here (msgspec is the optional ``fast`` extra)."""
    if name == "orjson":
        return True
    return name == "msgspec" and importlib.util.find_spec("msgspec") is not None


def decoder_for(venue, name: str = "orjson") -> Decoder:
    """The decoder ``name`` for the venue module ``venue``."""
    if name == "orjson":
        return Decoder(name, venue.parse, venue.top)
    if name == "msgspec":
        if not available(name):
            raise ValueError("decoder 'msgspec' needs msgspec installed (pip install -e '.[fast]')")
        from pipeline.venues import typed_msgspec
        return typed_msgspec.decoder(venue)
    raise ValueError(f"unknown decoder {name!r}; one of {', '.join(DECODERS)}")


def top_from_parse(parse) -> Callable:
    """``top`` computed the long way, from ``parse``: the contract above, word for word.

    The msgspec decoder hands the frames its structs cannot settle to the
    venue's own ``top``, or to this one for a venue module without a ``top``.
    """
    def top(raw):
        try:
            events = parse(raw, 0)
        except Exception:  # noqa: BLE001 - a frame parse refuses is not a top-of-book frame
            return None
        if len(events) != 1:
            return None
        e = events[0]
        if (e.__class__ is not BookUpdate or e.channel != BBO or not e.snapshot or len(e.bids) != 1
                or len(e.asks) != 1 or e.prev_seq is not None or e.checksum is not None or e.restart or e.weak
                or e.bids_text is not None or e.asks_text is not None):
            return None
        (bid_px, bid_qty), (ask_px, ask_qty) = e.bids[0], e.asks[0]
        return (e.symbol, bid_px, bid_qty, ask_px, ask_qty, e.exch_ts_ms, e.seq, e.xseq)
    return top
