"""The decision stream: every record the detector decides, in a seqlocked ring on the board.

The detector writes each record it emits (``open`` / ``update`` / ``close`` with both legs, and each
``shadow``) into the board's decision ring (:mod:`pipeline.board.ring`: one writer, any number of
readers, a reader that falls a whole ring behind is told how many entries it lost) and rings the
output's doorbell. Nothing else happens on the detector's path: the output process
(:mod:`pipeline.output.process`) turns the entries back into the very records the engine made and
writes stdout, the events file and the sink; any other program follows the same ring with
:func:`follow`::

    from pipeline.decisions import follow

    for decision in follow("pipeline-board"):          # typed: see Decision
        print(decision.kind, decision.instrument, decision.buy_venue, decision.buy_price,
              decision.sell_venue, decision.sell_price, decision.qty_base, decision.profit_quote)

An entry is one fixed-size slot (sized by ``pipeline.board.layout``) holding the fields the record has and
no others (:func:`entry_struct`: a head saying which, then the numbers, then the names): numbers as int64
or float64 (None as NaN, which JSON writes as null either way; a per-number bit keeps an int an int), and
text by index into the ring's names table (venue labels, instruments, currencies, close
reasons, the exact decimals of the trading rules): an append-only table of short strings the writer
fills before the first entry that uses one, so a reader that starts late finds every name. What is
not in the JSON record rides along for consumers: when the entry was written and when the detector
saw the change, each leg's board row, its row's sequence number and receive time.

:func:`encode` and :func:`decode` are exact inverses on the engine's records: ``decode(encode(r))``
has the same keys in the same order and the same values (``tests/unit/test_decisions.py`` checks it on
real engine output), so the JSON lines the output process writes are the ones a detector writing its
own file wrote. The detector's exit summary travels as text entries at the end.

The hand-over is the detector's cost, so the writer does not walk the record: its :class:`FastEncoder`
makes a plan once per record shape (the kind and the keys in order: ``itemgetter`` over the numbers and
over the names, the struct) and per record only fetches, checks the numbers' types as one tuple and packs,
the names' indexes coming packed from a cache. :func:`encode` is its plain twin, field by field; anything
the plan does not cover goes through it, and the tests hold the two to the same bytes.
"""
from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter

from pipeline.board import (
    CACHE_LINE,
    DECISION_FILL,
    DECISION_FIXED,
    HEADER_DTYPE,
    NAME_SIZE,
    NAMES_MAX,
    RING_CONTROL,
    SEQ_BYTES,
    Board,
    Doorbell,
    RingReader,
    RingWriter,
    pid_alive,
)
from pipeline.detector.report import RULES_FIELDS, iso
from pipeline.errors import BoardError

KINDS = ("", "open", "update", "close", "shadow")
KIND_CODE = {kind: n for n, kind in enumerate(KINDS) if kind}
TEXT = 5                  # an entry carrying a piece of the detector's exit summary
NO_NAME = 0xFFFF          # a text field that is None
SUPERVISOR_CHECK_NS = 500_000_000     # how often an idle follower checks that the pipeline still runs

FLOATS = ("buy_price", "sell_price", "qty_base", "gross_bps", "net_bps", "fees_bps", "buy_fee_bps", "sell_fee_bps",
          "profit_quote", "buy_quote_age_ms", "sell_quote_age_ms", "best_ask", "best_bid", "buy_limit_price",
          "sell_limit_price", "conversion_bps", "alone_qty_base", "alone_profit_quote", "buy_exchange_age_ms",
          "sell_exchange_age_ms", "duration_ms", "peak_net_bps", "peak_profit_quote")
NAMES = ("instrument", "buy_exchange", "sell_exchange", "buy_instrument", "sell_instrument", "base_currency",
         "quote_currency", "close_reason", "buy_fee_source", "sell_fee_source")
MAX_SHARES = 22
FILL_NUMBERS = ("latency_ms", "filled_qty_base", "fill_fraction", "buy_price", "sell_price", "net_bps",
                "profit_quote", "slippage_bps")
FILL_KEYS = (*FILL_NUMBERS, "reason")
FILL_WIDTH = len(FILL_KEYS) + 1               # a fill's values in an entry: its numbers, its reason, its int bits
_FILL_NUMBERS = itemgetter(*FILL_NUMBERS)

# each record field, in the engine's order: (key, what): ``e`` the kind, ``t`` the time text (made again from
# time_ns), ``i`` an int, ``f`` a number, ``s`` a name, ``R`` a rules dict (RULES_FIELDS, each a name), ``L`` a
# list of names, ``F`` the shadow fills
DECISION_ORDER = (("event", "e"), ("id", "i"), ("time", "t"), ("time_ns", "i"),
                  *((name, "s") for name in NAMES[:7]), *((name, "f") for name in FLOATS[:8]),
                  ("buy_fee_source", "s"), ("sell_fee_source", "s"), *((name, "f") for name in FLOATS[8:15]),
                  ("buy_rules", "R"), ("sell_rules", "R"), ("conversion_bps", "f"), ("shares_liquidity_with", "L"),
                  *((name, "f") for name in FLOATS[16:]), ("close_reason", "s"), ("flaps", "i"))
SHADOW_ORDER = (("event", "e"), ("id", "i"), ("time", "t"), ("time_ns", "i"), ("opened_time_ns", "i"),
                ("instrument", "s"), ("buy_exchange", "s"), ("sell_exchange", "s"), ("quote_currency", "s"),
                ("qty_base", "f"), ("notional_quote", "f"), ("net_bps", "f"), ("shadow_fills", "F"),
                ("remote_leg_delay_ms", "f"))
ORDERS = {code: SHADOW_ORDER if kind == "shadow" else DECISION_ORDER for kind, code in KIND_CODE.items()}
assert len(DECISION_ORDER) <= 64 and len(SHADOW_ORDER) <= 64

# An entry: the head, then the record's numbers (an ``i`` field as int64, an ``f`` field as float64, None as
# NaN), then its names (uint16 indexes into the names table: ``s`` one, ``R`` six, ``L`` as many as listed),
# then the shadow fills, each field only if the record has it. The head: kind, fills, shares, flags, text
# length, present bits (bit k: the k-th field of the kind's order is in the record), int bits (bit k: the k-th
# number was an int), then what rides along (written, seen, each leg's receive time, row sequence and row).
# So the head says which struct the rest is (:func:`entry_struct`), and what is packed is what the record has.
_HEAD = "<BBBBIQQqqqqQQII"
_SHAPE = struct.Struct("<BBBBIQ")             # the head up to the present bits: enough to know the struct
_FILL = "8dHH"                                # a fill's numbers, its reason, its int bits
HEAD_VALUES = 15
META = 7
TEXT_CHUNK = DECISION_FIXED - SEQ_BYTES - 8          # bytes of summary text one entry carries
_TEXT = struct.Struct(f"<BBBBI{TEXT_CHUNK}s")
_NUMBER_FORMAT = {"i": "q", "f": "d"}
_NAME_COUNT = {"s": 1, "R": len(RULES_FIELDS)}


def _largest(order: tuple) -> int:
    """Bytes of the largest entry of a kind (every field, the most shares), before its shadow fills."""
    return struct.calcsize(_HEAD) + sum(8 if where in _NUMBER_FORMAT else 2 * _NAME_COUNT.get(where, 0)
                                        for _, where in order) + 2 * MAX_SHARES * (order is DECISION_ORDER)


assert all(_largest(order) + SEQ_BYTES <= DECISION_FIXED for order in ORDERS.values())
assert struct.calcsize("<" + _FILL) <= DECISION_FILL


class DecisionError(BoardError):
    """A record the decision ring cannot carry (a name too long, the names table full, a field it does not
    know): the detector logs it and counts it, it never reaches the outputs."""


def _formats(code: int, present: int, shares: int) -> tuple[str, int]:
    """The numbers' struct format and the count of names of a ``code`` entry with ``present`` fields."""
    fields = [where for bit, (_, where) in enumerate(ORDERS[code]) if present >> bit & 1]
    return "".join(_NUMBER_FORMAT[w] for w in fields if w in _NUMBER_FORMAT), sum(
        _NAME_COUNT.get(w, 0) for w in fields) + shares


@lru_cache(maxsize=4096)
def entry_struct(code: int, present: int, shares: int = 0, fills: int = 0) -> struct.Struct:
    """The payload of one ring entry: a ``code`` record with the fields ``present`` names (bit k: the k-th
    field of its order), ``shares`` names in its ``shares_liquidity_with`` and ``fills`` shadow fills."""
    numbers, names = _formats(code, present, shares)
    return struct.Struct(_HEAD + numbers + "H" * names + _FILL * fills)


@lru_cache(maxsize=4096)
def _packer(code: int, present: int, shares: int = 0, fills: int = 0) -> Callable:
    """The ``pack_into`` of :func:`entry_struct`'s entry that takes the names as one block of bytes (their
    indexes packed little-endian, as the entry holds them) instead of one value each: the same bytes, fewer
    values to convert."""
    numbers, names = _formats(code, present, shares)
    packer = struct.Struct(f"{_HEAD}{numbers}{2 * names}s{_FILL * fills}")
    assert packer.size == entry_struct(code, present, shares, fills).size
    return packer.pack_into


def _ring_geometry(board: Board) -> tuple[int, int, int, int]:
    g = board.geometry
    if not g.decision_entries:
        raise BoardError(f"board {board.name!r} has no decision ring")
    names = g.decisions_offset + RING_CONTROL
    return g.decisions_offset, names + CACHE_LINE + NAMES_MAX * NAME_SIZE, g.decision_entries, g.decision_slot_size


def bell(board: Board, fd: int) -> Doorbell:
    """The output's doorbell: the board's doorbell contract (:mod:`pipeline.board.doorbell`) with its
    sleeping flag in the ring's control block, rung by the detector after it writes decisions."""
    assert HEADER_DTYPE.fields["detector_sleeping"][1] == CACHE_LINE      # the flag word the doorbell uses
    return Doorbell(board.buf[board.geometry.decisions_offset:], fd)


# ---------------------------------------------------------------- names
class _Names:
    """The ring's names table: a counter on its own line, then NAMES_MAX entries of up to NAME_SIZE - 1 bytes.
    One writer appends (the text, then the counter); readers look up by index."""

    def __init__(self, board: Board):
        base = board.geometry.decisions_offset + RING_CONTROL
        self._buf = board.buf
        self._count_word = base // 8
        self._first = base + CACHE_LINE
        self._words = board.buf.cast("B").cast("Q")
        self._text: list[str] = []

    def _load(self) -> None:
        count = self._words[self._count_word]
        for n in range(len(self._text), min(count, NAMES_MAX)):
            at = self._first + n * NAME_SIZE
            self._text.append(bytes(self._buf[at:at + NAME_SIZE]).rstrip(b"\0").decode("utf-8", "replace"))

    def name(self, index: int) -> str | None:
        if index == NO_NAME:
            return None
        if index >= len(self._text):
            self._load()
        return self._text[index]

    def close(self) -> None:
        self._words = self._buf = None


class _NamesWriter(_Names):
    def __init__(self, board: Board):
        super().__init__(board)
        self._load()                                  # a restarted detector keeps the names already there
        self._index: dict[str | None, int] = {text: n for n, text in enumerate(self._text)}
        self._index[None] = NO_NAME
        self.known = self._index              # text -> index (None -> NO_NAME), for a lookup without a call

    def index(self, text: str | None) -> int:
        if text is None:
            return NO_NAME
        if type(text) is not str:
            raise DecisionError(f"a name that is not text: {text!r}")
        n = self._index.get(text)
        if n is not None:
            return n
        data = text.encode()
        if len(data) >= NAME_SIZE:
            raise DecisionError(f"name {text!r} is longer than {NAME_SIZE - 1} bytes")
        n = len(self._text)
        if n >= NAMES_MAX:
            raise DecisionError(f"the decision ring's names table is full ({NAMES_MAX} names)")
        at = self._first + n * NAME_SIZE
        self._buf[at:at + NAME_SIZE] = data.ljust(NAME_SIZE, b"\0")
        self._text.append(text)
        self._index[text] = n
        self._words[self._count_word] = n + 1         # after the text: a reader that sees the count sees the name
        return n


# ---------------------------------------------------------------- records <-> entries
_SPECS = {code: {key: (1 << bit, where) for bit, (key, where) in enumerate(order)} for code, order in ORDERS.items()}
_NAN = math.nan


def _refuse(record: dict, what: str) -> DecisionError:
    return DecisionError(f"a {record.get('event')} record with {what}")


def encode(record: dict, names: Callable[[str | None], int], fills: int, meta: tuple = (0,) * 8) -> list:
    """The entry values of ``record`` (an engine record; a ``run_id`` stamped on it is not carried), packed
    with ``struct_of(values)``. The plain encoder: one field at a time, in the record's order; the writer's
    :class:`FastEncoder` packs the same bytes faster (and falls back to this one).

    ``names`` gives a text's index (:class:`_NamesWriter`), asked once the whole record is known to fit, in
    the order the entry holds them (the ``s`` fields', the rules', the shares', then each fill's reason), so
    the names table grows the same whichever encoder ran. ``meta``: (written_ns, seen_ns, buy_recv_ns,
    sell_recv_ns, buy_seq, sell_seq, buy_row, sell_row). Raises :class:`DecisionError` for a record the entry
    cannot carry exactly: a field it does not know, its fields in another order than the engine's, a number
    that is not one, a name too long or not text, rules or fills with other fields, more shares or fills than
    it holds."""
    code = KIND_CODE.get(record.get("event"))
    if code is None:
        raise DecisionError(f"unknown event {record.get('event')!r}")
    spec = _SPECS[code]
    numbers: list = []
    texts: list = []                # the ``s`` fields' names
    rules: list = []                # then the rules'
    listed: list = []               # then the shares'
    fill_values: list = []          # per fill: its numbers, its reason (a text until the end), its int bits
    present = int_bits = shares = fill_count = 0
    for key, value in record.items():
        found = spec.get(key)
        if found is None:
            if key == "run_id":
                continue
            raise _refuse(record, f"a field the decision ring does not know: {key!r}")
        bit, where = found
        if bit <= present:
            raise _refuse(record, f"{key!r} out of the engine's order")
        present |= bit
        if where == "i":
            if type(value) is not int:
                raise _refuse(record, f"{key!r} not an int: {value!r}")
            int_bits |= 1 << len(numbers)
            numbers.append(value)
        elif where == "f":
            k = len(numbers)
            int_bits |= _number(record, key, value, numbers) << k
        elif where == "s":
            texts.append(value)
        elif where == "R":
            if not isinstance(value, dict) or tuple(value) != RULES_FIELDS:
                raise _refuse(record, f"{key!r} not a dict of {RULES_FIELDS}: {value!r}")
            rules += value.values()
        elif where == "L":
            if len(value) > MAX_SHARES:
                raise DecisionError(f"{len(value)} shares_liquidity_with names (at most {MAX_SHARES})")
            shares = len(value)
            listed += value
        elif where == "F":
            if len(value) > fills:
                raise DecisionError(f"{len(value)} shadow fills (the ring's entries hold {fills})")
            fill_count = len(value)
            for fill in value:
                if not isinstance(fill, dict) or tuple(fill) != FILL_KEYS:
                    raise _refuse(record, f"a shadow fill not a dict of {FILL_KEYS}: {fill!r}")
                numbers_of_fill: list = []
                bits = 0
                for k, field in enumerate(FILL_NUMBERS):
                    bits |= _number(record, field, fill[field], numbers_of_fill) << k
                fill_values += (*numbers_of_fill, fill["reason"], bits)
    indexes = [names(text) for text in (*texts, *rules, *listed)]
    for at in range(len(FILL_NUMBERS), len(fill_values), FILL_WIDTH):
        fill_values[at] = names(fill_values[at])
    return [code, fill_count, shares, 0, 0, present, int_bits, *meta, *numbers, *indexes, *fill_values]


def _number(record: dict, key: str, value, out: list) -> int:
    """Append a JSON number (or None, as NaN) to ``out``; 1 if it is an int (it comes back an int)."""
    if value is None:
        out.append(_NAN)
        return 0
    if type(value) is not int and not isinstance(value, float):
        raise _refuse(record, f"{key!r} not a number: {value!r}")
    out.append(float(value))
    return 1 if type(value) is int else 0


def struct_of(values) -> struct.Struct:
    """The struct an entry's ``values`` (from :func:`encode`) are packed with."""
    return entry_struct(values[0], values[5], values[2], values[1])


def _getter(keys: tuple) -> Callable[[dict], tuple]:
    """``record -> tuple of record[key] for keys`` (always a tuple, even of one key or none)."""
    if len(keys) > 1:
        return itemgetter(*keys)
    if keys:
        key = keys[0]
        return lambda record: (record[key],)
    return lambda record: ()


class _Plan:
    """How :class:`FastEncoder` encodes one record shape (its keys in order), made once: which kinds follow
    it, its present bits, its numbers and names fetched by key in C, the rest it has (rules, shares, fills)."""

    __slots__ = ("codes", "present", "wheres", "numbers", "names", "rules", "shares", "fills", "simple", "pack",
                 "packs", "types")

    def __init__(self, kind: str, keys: tuple):
        order = ORDERS[KIND_CODE[kind]]
        spec = _SPECS[KIND_CODE[kind]]
        present = 0
        fields = []
        for key in keys:
            if key == "run_id":
                continue
            bit, where = spec[key]                  # KeyError: a field it does not know (refused by encode)
            if bit <= present:
                raise ValueError(key)               # out of order (refused by encode)
            present |= bit
            fields.append((key, where))
        self.codes = {kind: code for kind, code in KIND_CODE.items() if ORDERS[code] is order}
        self.present = present
        self.wheres = tuple(w for _, w in fields if w in _NUMBER_FORMAT)
        self.numbers = _getter(tuple(k for k, w in fields if w in _NUMBER_FORMAT))
        self.names = _getter(tuple(k for k, w in fields if w == "s"))
        self.rules = tuple(k for k, w in fields if w == "R")
        self.shares = next((k for k, w in fields if w == "L"), None)
        self.fills = next((k for k, w in fields if w == "F"), None)
        self.simple = not (self.rules or self.fills)          # its names: the ``s`` fields' and the shares'
        self.pack = _packer(KIND_CODE[kind], present)
        self.packs = [_packer(KIND_CODE[kind], present, shares) for shares in range(MAX_SHARES + 1)]
        self.types: dict = {}                 # the numbers' types -> (int bits, has a None)

    def kinds(self, types: tuple) -> tuple[int, bool] | None:
        """(int bits, has a None) for numbers of these ``types``; None when one is not what its field takes."""
        int_bits, nones = 0, False
        for k, (kind, where) in enumerate(zip(types, self.wheres)):
            if kind is int:
                int_bits |= 1 << k
            elif where == "i" or kind not in (float, type(None)):
                return None
            else:
                nones = nones or kind is not float
        return int_bits, nones


class FastEncoder:
    """:func:`encode`'s fast twin for one ring: the same entry, byte for byte, for every record (the tests hold
    the two to it), from a plan per record shape instead of a walk over the record's fields.

    Per record: its keys as a tuple find the :class:`_Plan` (checked once per shape: known fields, in the
    engine's order); the numbers come out in one ``itemgetter`` call and their types, as one tuple, give the
    int bits; the names come out the same way, and that tuple of names gives their indexes already packed (a
    name's index never changes: the table is append-only), so the one ``pack_into`` takes them as one block
    (:func:`_packer`). A new shape, a new tuple of types or a new tuple of names is learnt once (names through
    the table's own :meth:`_NamesWriter.index`, after the whole record is known to fit, in the entry's order,
    as :func:`encode` does, so the two grow the names table alike). Whatever the plan does not cover (another
    type, rules or fills of another form, too many shares or fills, a field it does not know or out of
    order) goes through :func:`encode`, which refuses what must be refused."""

    MAX_PLANS = 256                     # shapes beyond these (not the engine's) take the plain path
    MAX_TYPES = 64
    MAX_TEXTS = 4096                    # tuples of names remembered (then forgotten all at once)

    def __init__(self, names: _NamesWriter, fills: int):
        self._index = names.index
        self.fills = fills
        self._plans: dict = {}
        self._texts: dict = {}          # tuple of names -> their indexes, packed

    def encode(self, record: dict, written_ns: int, meta: tuple) -> tuple[Callable, tuple | list]:
        """``(pack_into, values)`` of ``record``'s entry, written at ``written_ns`` (``meta[0]`` is not used):
        the bytes :func:`encode`'s values pack to."""
        try:
            plan = self._plans.get(tuple(record))
            if plan is None:
                plan = self._plan(record)
            code = plan.codes.get(record["event"])
            if code is None:
                raise _Plain
            numbers = plan.numbers(record)
            types = tuple(map(type, numbers))
            kinds = plan.types.get(types)
            if kinds is None:
                kinds = self._kinds(plan, types)
            int_bits, nones = kinds
            if nones:
                numbers = [_NAN if x is None else x for x in numbers]
            names = plan.names(record)
            if not plan.simple:
                return self._rest(plan, code, record, written_ns, meta, numbers, int_bits, names)
            texts = self._texts.get(names)
            if plan.shares is None:
                if texts is None:
                    texts = self._indexes(names)
                return plan.pack, (code, 0, 0, 0, 0, plan.present, int_bits, written_ns, *meta[1:], *numbers, texts)
            listed = record[plan.shares]
            shares = len(listed)
            if type(listed) is not list or shares > MAX_SHARES:
                raise _Plain
            listed = tuple(listed)
            more = self._texts.get(listed)
            if texts is None:                   # names indexed once the record is known to fit, as encode does
                texts = self._indexes(names)
            if more is None:
                more = self._indexes(listed)
            return plan.packs[shares], (code, 0, shares, 0, 0, plan.present, int_bits, written_ns, *meta[1:],
                                        *numbers, texts + more)
        except (_Plain, TypeError):        # TypeError: a value that is no key (a list for a name)
            values = encode(record, self._index, self.fills, meta)
            values[META] = written_ns
            return struct_of(values).pack_into, values

    def _rest(self, plan: _Plan, code: int, record: dict, written_ns: int, meta: tuple, numbers, int_bits: int,
              names: tuple) -> tuple[Callable, tuple]:
        """The entry of a record with rules or shadow fills: all of it checked, then its names indexed."""
        rules = []
        for key in plan.rules:
            value = record[key]
            if type(value) is not dict or tuple(value) != RULES_FIELDS:
                raise _Plain
            rules.append(tuple(value.values()))
        listed: tuple = ()
        if plan.shares is not None:
            shared = record[plan.shares]
            if type(shared) is not list or len(shared) > MAX_SHARES:
                raise _Plain
            listed = tuple(shared)
        fill_values: list = []
        fill_count = 0
        if plan.fills is not None:
            fills = record[plan.fills]
            if type(fills) is not list or len(fills) > self.fills:
                raise _Plain
            fill_count = len(fills)
            for fill in fills:
                if type(fill) is not dict or tuple(fill) != FILL_KEYS:
                    raise _Plain
                fill_numbers = _FILL_NUMBERS(fill)
                bits = 0
                for k, x in enumerate(fill_numbers):
                    kind = type(x)
                    if kind is int:
                        bits |= 1 << k
                    elif kind is not float and x is not None:
                        raise _Plain
                fill_values += (*[_NAN if x is None else x for x in fill_numbers], fill["reason"], bits)
        texts = self._names_of(names) + b"".join([self._names_of(r) for r in rules]) + self._names_of(listed)
        for at in range(len(FILL_NUMBERS), len(fill_values), FILL_WIDTH):
            fill_values[at] = self._index(fill_values[at])
        return _packer(code, plan.present, len(listed), fill_count), (
            code, fill_count, len(listed), 0, 0, plan.present, int_bits, written_ns, *meta[1:], *numbers, texts,
            *fill_values)

    def _kinds(self, plan: _Plan, types: tuple) -> tuple[int, bool]:
        kinds = plan.kinds(types)
        if kinds is None or len(plan.types) >= self.MAX_TYPES:
            raise _Plain
        plan.types[types] = kinds
        return kinds

    def _names_of(self, names: tuple) -> bytes:
        texts = self._texts.get(names)
        return self._indexes(names) if texts is None else texts

    def _indexes(self, names: tuple) -> bytes:
        """The indexes of ``names`` (each added to the table if it is not there, or refused), packed."""
        texts = struct.pack(f"<{len(names)}H", *map(self._index, names))
        if len(self._texts) >= self.MAX_TEXTS:
            self._texts.clear()
        self._texts[names] = texts
        return texts

    def _plan(self, record: dict) -> _Plan:
        kind = record.get("event")
        if kind not in KIND_CODE or len(self._plans) >= self.MAX_PLANS:
            raise _Plain
        keys = tuple(record)
        try:
            plan = _Plan(kind, keys)
        except (KeyError, ValueError):
            raise _Plain from None
        self._plans[keys] = plan
        return plan


class _Plain(Exception):
    """Inside :class:`FastEncoder`: this record takes the plain path."""


@lru_cache(maxsize=4096)
def _layout(code: int, present: int, shares: int) -> tuple:
    """Where each field of such an entry is: ``(key, where, position in the values, its int bit)``, in the
    record's order (the position of the shadow fills: the first value after the names)."""
    fields = [(key, where) for bit, (key, where) in enumerate(ORDERS[code]) if present >> bit & 1]
    wheres = [where for _, where in fields]
    number = HEAD_VALUES                                                   # the next number
    text = number + sum(where in _NUMBER_FORMAT for where in wheres)       # the next ``s`` name
    rules = text + wheres.count("s")                                       # the next rules
    listed = rules + len(RULES_FIELDS) * wheres.count("R")                 # the shares
    out = []
    for key, where in fields:
        if where in _NUMBER_FORMAT:
            out.append((key, where, number, number - HEAD_VALUES))
            number += 1
        elif where == "s":
            out.append((key, where, text, 0))
            text += 1
        elif where == "R":
            out.append((key, where, rules, 0))
            rules += len(RULES_FIELDS)
        else:
            out.append((key, where, {"L": listed, "F": listed + shares}.get(where, 0), 0))
    return tuple(out)


def decode(values, name: Callable[[int], str | None]) -> dict:
    """The record of an entry's values: the inverse of :func:`encode` (same keys, order and values)."""
    code, fill_count, shares, _, _, present, int_bits = values[:7]
    record: dict = {}
    for key, where, at, bit in _layout(code, present, shares):
        if where == "f":
            x = values[at]
            record[key] = None if x != x else int(x) if int_bits >> bit & 1 else x
        elif where == "s":
            record[key] = name(values[at])
        elif where == "i":
            record[key] = values[at]
        elif where == "e":
            record[key] = KINDS[code]
        elif where == "t":
            record[key] = None                            # made from time_ns below, in its place
        elif where == "R":
            record[key] = {field: name(values[at + m]) for m, field in enumerate(RULES_FIELDS)}
        elif where == "L":
            record[key] = [name(values[at + m]) for m in range(shares)]
        elif where == "F":
            fills = []
            for m in range(fill_count):
                first = at + m * FILL_WIDTH
                bits = values[first + 9]
                fill = {field: _value(values[first + k], bits >> k & 1) for k, field in enumerate(FILL_NUMBERS)}
                fill["reason"] = name(values[first + 8])
                fills.append(fill)
            record[key] = fills
    if "time" in record:
        record["time"] = iso(record.get("time_ns", 0))
    return record


def _value(x: float, is_int: int):
    if x != x:
        return None
    return int(x) if is_int else x


# ---------------------------------------------------------------- writer and reader
class DecisionWriter:
    """The detector's end of the ring: :meth:`write` one engine record (with what rides along), :meth:`text`
    the exit summary. Only the detector writes; a restarted detector continues the numbering."""

    def __init__(self, board: Board, fast: bool = True):
        offset, slots, entries, slot_size = _ring_geometry(board)
        self.fills = board.geometry.decision_fills
        self._ring = RingWriter(board.buf, offset, slots, entries, slot_size)
        self._names = _NamesWriter(board)
        self._encode = FastEncoder(self._names, self.fills).encode if fast else self._plain

    @property
    def count(self) -> int:
        return self._ring.count

    def write(self, record: dict, meta: tuple = (0,) * 8) -> int:
        """Put ``record`` in the ring; returns its entry number. ``meta[0]`` (written_ns) 0: stamped now.
        ``fast`` (the default) encodes with :class:`FastEncoder`, else with the plain :func:`encode`: the same
        entry either way."""
        pack, values = self._encode(record, meta[0] or time.time_ns(), meta)
        return self._ring.write(pack, values)

    def _plain(self, record: dict, written_ns: int, meta: tuple) -> tuple[Callable, list]:
        values = encode(record, self._names.index, self.fills, meta)
        values[META] = written_ns
        return struct_of(values).pack_into, values

    def text(self, text: str) -> None:
        """Put ``text`` (the exit summary) in the ring, in as many entries as it takes; the last is flagged."""
        data = text.encode("utf-8", "backslashreplace")
        chunks = [data[i:i + TEXT_CHUNK] for i in range(0, len(data), TEXT_CHUNK)] or [b""]
        for n, chunk in enumerate(chunks):
            self._ring.write(_TEXT.pack_into, (TEXT, 0, 0, int(n == len(chunks) - 1), len(chunk), chunk))

    def close(self) -> None:
        self._ring.close()
        self._names.close()


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision, typed: what :func:`follow` yields.

    ``kind`` is ``open``, ``update`` or ``close`` (``shadow`` when asked for); prices in the quote currency,
    ``qty_base`` the size rounded to what both venues accept, ``profit_quote`` the expected profit after
    fees. Each leg: its venue label, its own instrument, its board row, the row's sequence number and
    receive time when the decision was made, and the quote's age then. ``written_ns`` is when the detector
    put it in the ring and ``seen_ns`` when it saw the change that led to it (0 for a decision the clock
    made: a close on staleness, the shadow fills). ``lost`` counts the entries this reader lost just before
    this one (it fell a whole ring behind). ``record`` is the JSON record the events file holds for it.
    """

    n: int
    kind: str
    id: int
    time_ns: int
    written_ns: int
    seen_ns: int
    instrument: str
    buy_venue: str
    sell_venue: str
    buy_instrument: str
    sell_instrument: str
    buy_price: float | None
    sell_price: float | None
    buy_limit_price: float | None
    sell_limit_price: float | None
    qty_base: float | None
    net_bps: float | None
    profit_quote: float | None
    buy_row: int
    sell_row: int
    buy_seq: int
    sell_seq: int
    buy_recv_ns: int
    sell_recv_ns: int
    buy_quote_age_ms: float | None
    sell_quote_age_ms: float | None
    lost: int
    record: dict


class DecisionReader:
    """One reader of a board's decision ring; never writes the board, never holds up the detector.

    ``start``: None follows from the entries written by now, 0 from the oldest still in the ring."""

    def __init__(self, board: Board, start: int | None = None):
        offset, slots, entries, slot_size = _ring_geometry(board)
        self.fills = board.geometry.decision_fills
        self._size = slot_size - SEQ_BYTES
        self._ring = RingReader(board.buf, offset, slots, entries, slot_size, start)
        self._names = _Names(board)
        self.name = self._names.name
        self._text: list[bytes] = []
        self.summary: str | None = None       # the detector's exit summary, once its last entry is read

    @property
    def lost(self) -> int:
        return self._ring.lost

    @property
    def next(self) -> int:
        return self._ring.next

    def behind(self) -> int:
        return self._ring.behind()

    def written(self) -> int:
        return self._ring.written()

    def read(self) -> tuple[int, tuple] | None:
        """``(n, values)`` of the next decision entry (summary text is collected into :attr:`summary`), or None."""
        while True:
            got = self._ring.read(self._copy)
            if got is None:
                return None
            n, raw = got
            if raw[0] != TEXT:
                code, fills, shares, _, _, present = _SHAPE.unpack_from(raw)
                return n, entry_struct(code, present, shares, fills).unpack_from(raw)
            _, _, _, last, length, chunk = _TEXT.unpack_from(raw)
            self._text.append(chunk[:length])
            if last:
                self.summary = b"".join(self._text).decode("utf-8", "replace")
                self._text = []

    def _copy(self, buf, offset: int) -> bytes:
        return bytes(buf[offset:offset + self._size])

    def record(self, values) -> dict:
        return decode(values, self.name)

    def decision(self, n: int, values, lost: int = 0) -> Decision:
        record = decode(values, self.name)
        get = record.get
        return Decision(
            n=n, kind=record["event"], id=record["id"], time_ns=record["time_ns"], written_ns=values[META],
            seen_ns=values[META + 1], instrument=record["instrument"], buy_venue=record["buy_exchange"],
            sell_venue=record["sell_exchange"], buy_instrument=get("buy_instrument", record["instrument"]),
            sell_instrument=get("sell_instrument", record["instrument"]), buy_price=get("buy_price"),
            sell_price=get("sell_price"), buy_limit_price=get("buy_limit_price"),
            sell_limit_price=get("sell_limit_price"), qty_base=get("qty_base"), net_bps=get("net_bps"),
            profit_quote=get("profit_quote"), buy_row=values[META + 6], sell_row=values[META + 7],
            buy_seq=values[META + 4], sell_seq=values[META + 5], buy_recv_ns=values[META + 2],
            sell_recv_ns=values[META + 3], buy_quote_age_ms=get("buy_quote_age_ms"),
            sell_quote_age_ms=get("sell_quote_age_ms"), lost=lost, record=record)

    def close(self) -> None:
        self._ring.close()
        self._names.close()


def follow(board_name: str, *, kinds: tuple[str, ...] = ("open", "update", "close"), start: int | None = None,
           stop: Callable[[], bool] | None = None, spin_us: float = 200.0, idle_sleep_s: float = 0.0005,
           ) -> Iterator[Decision]:
    """Follow a running pipeline's decisions: attach to board ``board_name`` read-only and yield each
    :class:`Decision` of ``kinds`` as the detector writes it, until ``stop()`` says so (checked whenever the
    ring is idle) or the generator is closed.

    Waiting: the output process has the ring's doorbell; a follower polls, spinning ``spin_us`` after each
    decision and then sleeping ``idle_sleep_s`` between looks, so it reacts within about that sleep and uses
    little CPU while nothing happens. ``start``: None follows from now, 0 from the oldest entry still in the
    ring. A follower that falls a whole ring behind is told how many entries it lost (``Decision.lost``).
    The stream ends when the pipeline's supervisor has gone and every decision was read. It attaches (and
    fixes where it starts) when called: a board that is not there raises at once.
    """
    board = Board.attach(board_name)
    try:
        reader = DecisionReader(board, start)
    except BaseException:
        board.close()
        raise
    return _follow(board, reader, kinds, stop, spin_us, idle_sleep_s)


def _follow(board: Board, reader: DecisionReader, kinds, stop, spin_us: float, idle_sleep_s: float):
    supervisor_pid = int(board.header["supervisor_pid"])
    try:
        lost = 0
        last_activity = last_check = time.monotonic_ns()
        spin_ns = int(spin_us * 1000)
        while True:
            got = reader.read()
            if got is None:
                if stop is not None and stop():
                    return
                mono = time.monotonic_ns()
                if mono - last_check > SUPERVISOR_CHECK_NS:
                    last_check = mono
                    if supervisor_pid and not pid_alive(supervisor_pid) and reader.read() is None:
                        return                  # the pipeline has stopped and everything it decided was read
                    continue
                if mono - last_activity > spin_ns:
                    time.sleep(idle_sleep_s)
                continue
            last_activity = time.monotonic_ns()
            n, values = got
            if KINDS[values[0]] in kinds:
                yield reader.decision(n, values, reader.lost - lost)
                lost = reader.lost
    finally:
        reader.close()
        board.close()
