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

An entry is one fixed-size slot (:func:`entry_struct`, sized by ``pipeline.board.layout``): numbers as
float64 (None as NaN, which JSON writes as null either way; a per-field bit keeps an int an int) and
int64, and text by index into the ring's names table (venue labels, instruments, currencies, close
reasons, the exact decimals of the trading rules): an append-only table of short strings the writer
fills before the first entry that uses one, so a reader that starts late finds every name. What is
not in the JSON record rides along for consumers: when the entry was written and when the detector
saw the change, each leg's board row, its row's sequence number and receive time.

:func:`encode` and :func:`decode` are exact inverses on the engine's records: ``decode(encode(r))``
has the same keys in the same order and the same values (``tests/unit/test_decisions.py`` checks it on
real engine output), so the JSON lines the output process writes are the ones a detector writing its
own file wrote. The detector's exit summary travels as text entries at the end.
"""
from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
RULES_AT = {"buy_rules": len(NAMES), "sell_rules": len(NAMES) + len(RULES_FIELDS)}
SHARES_AT = len(NAMES) + 2 * len(RULES_FIELDS)
MAX_SHARES = 22
N_FLOATS, N_NAMES, N_INTS = len(FLOATS), SHARES_AT + MAX_SHARES, 3
FILL_NUMBERS = ("latency_ms", "filled_qty_base", "fill_fraction", "buy_price", "sell_price", "net_bps",
                "profit_quote", "slippage_bps")

# the payload after the slot's sequence word: kind, fills, shares, flags, text length, present bits, int bits,
# then what rides along (written, seen, each leg's receive time, row sequence and row), three ints, the floats,
# the name indexes; then the shadow fills
_HEAD = f"<BBBBIQQ qqqqQQII {N_INTS}q {N_FLOATS}d {N_NAMES}H".replace(" ", "")
_FILL = "8dHH4x"
assert struct.calcsize(_HEAD) + SEQ_BYTES == DECISION_FIXED and struct.calcsize("<" + _FILL) == DECISION_FILL
META, INTS = 7, 15
FLOAT0 = INTS + N_INTS
NAME0 = FLOAT0 + N_FLOATS
FILL0 = NAME0 + N_NAMES
FILL_WIDTH = 10
TEXT_CHUNK = DECISION_FIXED - SEQ_BYTES - 8          # bytes of summary text one entry carries
_TEXT = struct.Struct(f"<BBBBI{TEXT_CHUNK}s")

# each record field, in the engine's order: (key, where, index); ``e`` the kind, ``t`` the time text
# (from time_ns), ``i`` an int, ``f`` a number, ``s`` a name, ``R`` a rules dict, ``L`` a list of names,
# ``F`` the shadow fills
_F = {name: n for n, name in enumerate(FLOATS)}
DECISION_ORDER = (("event", "e", 0), ("id", "i", 0), ("time", "t", 0), ("time_ns", "i", 1),
                  *((name, "s", n) for n, name in enumerate(NAMES[:7])),
                  *((name, "f", _F[name]) for name in FLOATS[:8]),
                  ("buy_fee_source", "s", 8), ("sell_fee_source", "s", 9),
                  *((name, "f", _F[name]) for name in FLOATS[8:15]),
                  ("buy_rules", "R", RULES_AT["buy_rules"]), ("sell_rules", "R", RULES_AT["sell_rules"]),
                  ("conversion_bps", "f", _F["conversion_bps"]), ("shares_liquidity_with", "L", SHARES_AT),
                  *((name, "f", _F[name]) for name in FLOATS[16:]),
                  ("close_reason", "s", 7), ("flaps", "i", 2))
SHADOW_ORDER = (("event", "e", 0), ("id", "i", 0), ("time", "t", 0), ("time_ns", "i", 1),
                ("opened_time_ns", "i", 2), ("instrument", "s", 0), ("buy_exchange", "s", 1),
                ("sell_exchange", "s", 2), ("quote_currency", "s", 3), ("qty_base", "f", 0),
                ("notional_quote", "f", 1), ("net_bps", "f", 2), ("shadow_fills", "F", 0),
                ("remote_leg_delay_ms", "f", 3))
assert len(DECISION_ORDER) <= 64 and len(SHADOW_ORDER) <= 64


class DecisionError(BoardError):
    """A record the decision ring cannot carry (a name too long, the names table full, a field it does not
    know): the detector logs it and counts it, it never reaches the outputs."""


def entry_struct(fills: int) -> struct.Struct:
    """The payload of one ring slot holding up to ``fills`` shadow fills."""
    return struct.Struct(_HEAD + _FILL * fills)


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
        self._index = {text: n for n, text in enumerate(self._text)}
        self.known = self._index              # text -> index, for a lookup without a call

    def index(self, text: str | None) -> int:
        if text is None:
            return NO_NAME
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
def _number(value, n: int, out: list, at: int) -> int:
    """Store a JSON number (or None) at ``out[at]``; returns its int bit."""
    if value is None:
        out[at] = math.nan
        return 0
    out[at] = float(value)
    return (1 << n) if type(value) is int else 0


_F, _S, _I, _R, _L, _FILLS, _NONE = range(7)      # where a field goes (the ``e`` and ``t`` fields: nowhere)


def _specs(order: tuple) -> dict:
    """key -> (its present bit, where, the value's position in the entry, its int bit) for one record order."""
    out = {}
    for bit, (key, where, n) in enumerate(order):
        at = {"f": FLOAT0, "i": INTS, "s": NAME0, "R": NAME0, "L": NAME0}.get(where, 0) + n
        code = {"f": _F, "s": _S, "i": _I, "R": _R, "L": _L, "F": _FILLS}.get(where, _NONE)
        out[key] = (1 << bit, code, at, 1 << n)
    return out


_SPECS = {code: _specs(SHADOW_ORDER if code == KIND_CODE["shadow"] else DECISION_ORDER) for code in KIND_CODE.values()}
_NAN = math.nan


def encode(record: dict, names: Callable[[str | None], int], fills: int, meta: tuple = (0,) * 8,
           known: dict | None = None) -> list:
    """The entry values of ``record`` (an engine record; a ``run_id`` stamped on it is not carried).

    ``names`` gives a text's index (:class:`_NamesWriter`), ``known`` (optional) the indexes it gave already,
    looked up first; ``meta``: (written_ns, seen_ns, buy_recv_ns, sell_recv_ns, buy_seq, sell_seq, buy_row,
    sell_row). Raises :class:`DecisionError` for a record the entry cannot carry exactly: a field it does not
    know, its fields in another order than the engine's, a name too long, more shares or fills than it holds."""
    code = KIND_CODE.get(record.get("event"))
    if code is None:
        raise DecisionError(f"unknown event {record.get('event')!r}")
    spec = _SPECS[code]
    get = spec.get
    index = (known or {}).get
    out = [0] * (FILL0 + FILL_WIDTH * fills)
    out[0] = code
    out[META:META + 8] = meta
    present = int_bits = 0
    for key, value in record.items():
        found = get(key)
        if found is None:
            if key == "run_id":
                continue
            raise DecisionError(f"a {record['event']} record with a field the decision ring does not know: {key!r}")
        bit, where, at, int_bit = found
        if bit <= present:
            raise DecisionError(f"a {record['event']} record with {key!r} out of the engine's order")
        present |= bit
        if where == _F:
            if type(value) is float:
                out[at] = value
            elif value is None:
                out[at] = _NAN
            else:
                out[at] = float(value)
                int_bits |= int_bit
        elif where == _S:
            n = index(value)
            out[at] = names(value) if n is None else n
        elif where == _I:
            out[at] = value
        elif where == _R:
            for m, text in enumerate(value.values()):      # in RULES_FIELDS order (report.rules_fields)
                n = index(text)
                out[at + m] = names(text) if n is None else n
        elif where == _L:
            if len(value) > MAX_SHARES:
                raise DecisionError(f"{len(value)} shares_liquidity_with names (at most {MAX_SHARES})")
            out[2] = len(value)
            for m, text in enumerate(value):
                out[at + m] = names(text)
        elif where == _FILLS:
            if len(value) > fills:
                raise DecisionError(f"{len(value)} shadow fills (the ring's entries hold {fills})")
            out[1] = len(value)
            for m, fill in enumerate(value):
                base = FILL0 + m * FILL_WIDTH
                bits = 0
                for k, field in enumerate(FILL_NUMBERS):
                    bits |= _number(fill[field], k, out, base + k)
                out[base + 8] = names(fill["reason"])
                out[base + 9] = bits
    out[5] = present
    out[6] = int_bits
    return out


def _value(x: float, is_int: int):
    if x != x:
        return None
    return int(x) if is_int else x


def decode(values, name: Callable[[int], str | None]) -> dict:
    """The record of an entry's values: the inverse of :func:`encode` (same keys, order and values)."""
    code = values[0]
    order = SHADOW_ORDER if code == 4 else DECISION_ORDER
    present, int_bits = values[5], values[6]
    record: dict = {}
    for bit, (key, where, n) in enumerate(order):
        if not present >> bit & 1:
            continue
        if where == "f":
            record[key] = _value(values[FLOAT0 + n], int_bits >> n & 1)
        elif where == "i":
            record[key] = values[INTS + n]
        elif where == "s":
            record[key] = name(values[NAME0 + n])
        elif where == "e":
            record[key] = KINDS[code]
        elif where == "t":
            record[key] = iso(values[INTS + 1])
        elif where == "R":
            record[key] = {field: name(values[NAME0 + n + m]) for m, field in enumerate(RULES_FIELDS)}
        elif where == "L":
            record[key] = [name(values[NAME0 + n + m]) for m in range(values[2])]
        elif where == "F":
            fills = []
            for m in range(values[1]):
                base = FILL0 + m * FILL_WIDTH
                bits = values[base + 9]
                fill = {field: _value(values[base + k], bits >> k & 1) for k, field in enumerate(FILL_NUMBERS)}
                fill["reason"] = name(values[base + 8])
                fills.append(fill)
            record[key] = fills
    return record


# ---------------------------------------------------------------- writer and reader
class DecisionWriter:
    """The detector's end of the ring: :meth:`write` one engine record (with what rides along), :meth:`text`
    the exit summary. Only the detector writes; a restarted detector continues the numbering."""

    def __init__(self, board: Board):
        offset, slots, entries, slot_size = _ring_geometry(board)
        self.fills = board.geometry.decision_fills
        self._struct = entry_struct(self.fills)
        self._pack = self._struct.pack_into
        self._ring = RingWriter(board.buf, offset, slots, entries, slot_size)
        self._names = _NamesWriter(board)
        self._name = self._names.index

    @property
    def count(self) -> int:
        return self._ring.count

    def write(self, record: dict, meta: tuple = (0,) * 8) -> int:
        """Put ``record`` in the ring; returns its entry number. ``meta[0]`` (written_ns) 0: stamped now."""
        values = encode(record, self._name, self.fills, meta, self._names.known)
        if not values[META]:
            values[META] = time.time_ns()
        return self._ring.write(self._pack, values)

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
        self._unpack = entry_struct(self.fills).unpack_from
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
                return n, self._unpack(raw)
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
