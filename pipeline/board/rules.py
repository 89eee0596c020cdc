"""Each row's trading rules on the board: one writer per row (the row's feed), any number of readers.

An entry (:data:`~pipeline.board.layout.RULES_DTYPE`, two cache lines per row) holds the
:class:`~pipeline.model.InstrumentRules` of the row's instrument, or nothing (``present`` 0: the row has no
rules; the feed holds such a row ``NO_RULES``). It has its own seqlock, separate from the quote row's, with
the contract of :mod:`pipeline.board.seqlock`: the writer makes ``seq`` odd, writes the payload with one
``pack_into``, makes it even again. :func:`read_rules` returns ``(version, rules)``, ``version`` being
``seq // 2`` (0: never written), so a reader that keeps the version it last read re-reads the rules only
when it moved (a rules write is rare: at start, on a refresh that changed something, on a venue's notice).

Exactness. The increments and bounds are stored as float64. A venue publishes them as decimal texts of at
most 15 significant digits, and for those the shortest ``repr`` of the nearest float is the same number,
so ``Decimal(repr(float(value)))`` equals the original Decimal; :meth:`RulesWriter.write` checks that for
every value and refuses (:class:`~pipeline.errors.RowValueError`, nothing written) one it cannot give back.
What is not stored: ``upcoming`` (the announced changes; the feed applies each when the venue publishes
it), read back as ``()``. ``venue``, ``symbol`` and ``status`` hold up to 16, 32 and 80 UTF-8 bytes (a longer
one is refused).
"""
from __future__ import annotations

import math
import struct
from decimal import Decimal

from pipeline.board.layout import RULES_DTYPE, RULES_TEXT
from pipeline.board.seqlock import read_consistent
from pipeline.board.shm import Board
from pipeline.errors import RowOwnershipError, RowValueError
from pipeline.model import InstrumentRules

_PAYLOAD = struct.Struct(f"<6d2B6x{RULES_TEXT['venue']}s{RULES_TEXT['symbol']}s{RULES_TEXT['status']}s")
_PAYLOAD_OFFSET = RULES_DTYPE.fields["tick"][1]
_ENTRY = RULES_DTYPE.itemsize
assert _PAYLOAD_OFFSET + _PAYLOAD.size == _ENTRY
_NONE = float("nan")          # max_qty / max_notional: unbounded


def _to_float(rules: InstrumentRules, name: str, value: Decimal | None) -> float:
    if value is None:
        return _NONE
    number = float(value)
    if not math.isfinite(number) or Decimal(repr(number)) != value:
        raise RowValueError(f"{rules.venue} {rules.symbol}: {name} {value} does not round-trip through a float64")
    return number


def _to_decimal(number: float) -> Decimal | None:
    return None if math.isnan(number) else Decimal(repr(number))


def _text(rules: InstrumentRules, name: str, value: str) -> bytes:
    data = value.encode()
    if len(data) > RULES_TEXT[name]:
        raise RowValueError(f"{rules.venue} {rules.symbol}: {name} {value!r} is longer than {RULES_TEXT[name]} bytes")
    return data


class RulesWriter:
    """Writes the rules entries of ``rows`` (the rows this process owns) and no others."""

    def __init__(self, board: Board, rows):
        self._buf = board.buf
        self._words = board.buf.cast("B").cast("Q")
        self._offset = board.geometry.rules_offset
        self._rows = frozenset(int(r) for r in rows)
        n_rows = board.geometry.n_rows
        for row in self._rows:
            if not 0 <= row < n_rows:
                raise RowOwnershipError(f"row {row} is outside the board (0..{n_rows - 1})")

    @property
    def rows(self) -> frozenset[int]:
        return self._rows

    def write(self, row: int, rules: InstrumentRules | None) -> None:
        """Publish ``rules`` as row ``row``'s (None: the row has none); the row's version moves by one."""
        if row not in self._rows:
            raise RowOwnershipError(f"row {row} does not belong to this writer")
        if rules is None:
            values = (0.0,) * 6 + (0, 0, b"", b"", b"")
        else:
            values = (_to_float(rules, "tick", rules.tick), _to_float(rules, "step", rules.step),
                      _to_float(rules, "min_qty", rules.min_qty), _to_float(rules, "max_qty", rules.max_qty),
                      _to_float(rules, "min_notional", rules.min_notional),
                      _to_float(rules, "max_notional", rules.max_notional),
                      1, 1 if rules.trading else 0, _text(rules, "venue", rules.venue),
                      _text(rules, "symbol", rules.symbol), _text(rules, "status", rules.status))
        base = self._offset + row * _ENTRY
        word = base // 8
        seq = self._words[word] & ~1                 # even between writes (one writer)
        self._words[word] = seq + 1                  # odd: a write in progress
        _PAYLOAD.pack_into(self._buf, base + _PAYLOAD_OFFSET, *values)
        self._words[word] = seq + 2                  # the next even value: version + 1


def read_rules(board: Board, row: int) -> tuple[int, InstrumentRules | None]:
    """``(version, rules)`` of row ``row``: version 0 and None before its writer wrote it; rules None when the
    row has none. The Decimals equal the ones written (see the module docstring)."""
    base = board.geometry.rules_offset + row * _ENTRY
    words = board.buf.cast("B").cast("Q")
    seq, values = read_consistent(words, base // 8, _PAYLOAD.unpack_from, board.buf, base + _PAYLOAD_OFFSET, row)
    tick, step, min_qty, max_qty, min_notional, max_notional, present, trading, venue, symbol, status = values
    if not present:
        return seq // 2, None
    return seq // 2, InstrumentRules(
        venue=venue.rstrip(b"\0").decode(), symbol=symbol.rstrip(b"\0").decode(),
        tick=_to_decimal(tick), step=_to_decimal(step), min_qty=_to_decimal(min_qty), max_qty=_to_decimal(max_qty),
        min_notional=_to_decimal(min_notional), max_notional=_to_decimal(max_notional),
        trading=bool(trading), status=status.rstrip(b"\0").decode())
