"""Each row's trading rules on the board: one writer per row (the row's feed), any number of readers.

An entry (:data:`~pipeline.board.layout.RULES_DTYPE`, four cache lines per row) holds the
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
The account's fees (version 12): ``taker_fee_bps`` / ``maker_fee_bps``, what the feed's signed fee
lookup found for the row's instrument (:meth:`RulesWriter.write_fees`), NaN when it has none; a write of
either part republishes both, under the same seqlock, so :func:`read_entry` gives rules and fee of one
version. What is not stored: ``upcoming`` (the announced changes; the feed applies each when the venue publishes
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

_PAYLOAD = struct.Struct(f"<6d2B6x{RULES_TEXT['venue']}s{RULES_TEXT['symbol']}s{RULES_TEXT['status']}s2d")
_PAYLOAD_OFFSET = RULES_DTYPE.fields["tick"][1]
_ENTRY = RULES_DTYPE.itemsize
assert _PAYLOAD_OFFSET + _PAYLOAD.size == RULES_DTYPE.fields["maker_fee_bps"][1] + 8 <= _ENTRY
_NO_RULES = (0.0,) * 6 + (0, 0, b"", b"", b"")
_NONE = float("nan")          # max_qty / max_notional: unbounded


def _to_float(rules: InstrumentRules, name: str, value: Decimal | None) -> float:
    if value is None:
        return _NONE
    number = float(value)
    if not math.isfinite(number) or Decimal(repr(number)) != value:
        raise RowValueError(f"{rules.venue} {rules.symbol}: {name} {value} does not round-trip through a float64")
    return number


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Equal fee pairs, NaN equal to NaN."""
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


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
        self._rules: dict[int, tuple] = {}           # row -> the rules part last written (kept by a fee write)
        self._fees: dict[int, tuple[float, float]] = {}   # row -> (taker, maker) bps last written (NaN: none)
        n_rows = board.geometry.n_rows
        for row in self._rows:
            if not 0 <= row < n_rows:
                raise RowOwnershipError(f"row {row} is outside the board (0..{n_rows - 1})")

    @property
    def rows(self) -> frozenset[int]:
        return self._rows

    def write(self, row: int, rules: InstrumentRules | None) -> None:
        """Publish ``rules`` as row ``row``'s (None: the row has none); the row's version moves by one. The
        account fees the row had are kept."""
        if row not in self._rows:
            raise RowOwnershipError(f"row {row} does not belong to this writer")
        if rules is None:
            values = _NO_RULES
        else:
            values = (_to_float(rules, "tick", rules.tick), _to_float(rules, "step", rules.step),
                      _to_float(rules, "min_qty", rules.min_qty), _to_float(rules, "max_qty", rules.max_qty),
                      _to_float(rules, "min_notional", rules.min_notional),
                      _to_float(rules, "max_notional", rules.max_notional),
                      1, 1 if rules.trading else 0, _text(rules, "venue", rules.venue),
                      _text(rules, "symbol", rules.symbol), _text(rules, "status", rules.status))
        self._rules[row] = values
        self._publish(row)

    def write_fees(self, row: int, taker_bps: float, maker_bps: float | None = None) -> None:
        """Publish the fees the row's account pays (NaN taker: none, the configured fee applies); the rules
        stay as last written and the row's version moves by one, so a reader of the version sees both."""
        if row not in self._rows:
            raise RowOwnershipError(f"row {row} does not belong to this writer")
        taker = float(taker_bps)
        maker = _NONE if maker_bps is None else float(maker_bps)
        if not (math.isnan(taker) or 0.0 <= taker <= 10000.0) or math.isinf(maker):
            raise RowValueError(f"row {row}: taker fee {taker_bps} bps is not a fee (0..10000 bps or NaN)")
        if _same(self._fees.get(row, (_NONE, _NONE)), (taker, maker)):
            return                                   # unchanged: the version does not move
        self._fees[row] = (taker, maker)
        self._publish(row)

    def _publish(self, row: int) -> None:
        values = self._rules.get(row, _NO_RULES) + self._fees.get(row, (_NONE, _NONE))
        base = self._offset + row * _ENTRY
        word = base // 8
        seq = self._words[word] & ~1                 # even between writes (one writer)
        self._words[word] = seq + 1                  # odd: a write in progress
        _PAYLOAD.pack_into(self._buf, base + _PAYLOAD_OFFSET, *values)
        self._words[word] = seq + 2                  # the next even value: version + 1


def read_rules(board: Board, row: int) -> tuple[int, InstrumentRules | None]:
    """``(version, rules)`` of row ``row``: version 0 and None before its writer wrote it; rules None when the
    row has none. The Decimals equal the ones written (see the module docstring)."""
    version, rules, _ = read_entry(board, row)
    return version, rules


def read_entry(board: Board, row: int) -> tuple[int, InstrumentRules | None, float]:
    """``(version, rules, taker fee bps)`` of row ``row``, from one consistent read: the fee its account pays
    as its feed looked it up, NaN when there is none (the configured fee applies)."""
    base = board.geometry.rules_offset + row * _ENTRY
    words = board.buf.cast("B").cast("Q")
    seq, values = read_consistent(words, base // 8, _PAYLOAD.unpack_from, board.buf, base + _PAYLOAD_OFFSET, row)
    (tick, step, min_qty, max_qty, min_notional, max_notional, present, trading, venue, symbol, status,
     taker_fee_bps, _maker_fee_bps) = values
    if seq < 2:
        taker_fee_bps = _NONE                        # never written: a zeroed entry says no fee, not a 0 bps one
    if not present:
        return seq // 2, None, taker_fee_bps
    return seq // 2, InstrumentRules(
        venue=venue.rstrip(b"\0").decode(), symbol=symbol.rstrip(b"\0").decode(),
        tick=_to_decimal(tick), step=_to_decimal(step), min_qty=_to_decimal(min_qty), max_qty=_to_decimal(max_qty),
        min_notional=_to_decimal(min_notional), max_notional=_to_decimal(max_notional),
        trading=bool(trading), status=status.rstrip(b"\0").decode()), taker_fee_bps
