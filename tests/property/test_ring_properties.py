"""The decision ring's primitive against its plain twin, under any interleaving of writes and reads; its
fast encoder against its plain one, on any record.

:class:`RingWriter` / :class:`RingReader` (sequence words in a buffer) and :class:`PlainRing` (a list)
are driven by the same schedule: writes, reads, reads that happen while a write is half packed (the
writer's ``pack_into`` runs them between its two halves), and reads whose copy is interrupted by whole
writes (the reader's ``unpack_from`` runs them between its two halves, so the copy may be torn). After
every step each reader must give the same answer from both: the same entry with the values written for
it (never a torn mix), or nothing yet, with the same count of entries lost to the writer lapping it.
"""
from __future__ import annotations

import functools
import struct
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.board import SEQ_BYTES, Board, PlainRing, RingReader, RingWriter
from pipeline.decisions import (
    FILL_NUMBERS,
    KIND_CODE,
    ORDERS,
    DecisionError,
    DecisionReader,
    DecisionWriter,
)
from pipeline.detector.report import RULES_FIELDS, iso
from tests.conftest import examples

PAYLOAD = struct.Struct("<QQQQ")
SLOT = SEQ_BYTES + PAYLOAD.size
CONTROL = 64


def values_of(n: int) -> tuple[int, int, int, int]:
    return n, n * 7 + 1, n ^ 0x5A5A5A5A, n * 13 + 5


class Harness:
    def __init__(self, entries: int, starts: list[int | None]):
        self.buf = memoryview(bytearray(CONTROL + entries * SLOT))
        self.writer = RingWriter(self.buf, 0, CONTROL, entries, SLOT)
        self.plain = PlainRing(entries)
        self.readers = [RingReader(self.buf, 0, CONTROL, entries, SLOT, start) for start in starts]
        self.twins = [self.plain.reader(start) for start in starts]
        self.delivered = [0] * len(starts)

    def write(self, reads_inside: list[int]) -> None:
        n = self.writer.count
        values = values_of(n)

        def pack_into(buf, offset, *packed):
            # half of the payload, then the reads, then the rest: the readers meet a write in progress
            struct.pack_into("<QQ", buf, offset, *packed[:2])
            self.plain.begin(packed)
            for reader in reads_inside:
                self.check_read(reader)
            struct.pack_into("<QQ", buf, offset + 16, *packed[2:])
        self.writer.write(pack_into, values)
        self.plain.finish()

    def plain_write(self) -> None:
        n = self.writer.count
        self.writer.write(PAYLOAD.pack_into, values_of(n))
        self.plain.write(values_of(n))

    def read(self, reader: int, writes_inside: int) -> None:
        done = []

        def unpack_from(buf, offset):
            first = struct.unpack_from("<QQ", buf, offset)
            if not done:                       # the writer runs in the middle of this copy (once)
                done.append(True)
                for _ in range(writes_inside):
                    self.plain_write()
            return first + struct.unpack_from("<QQ", buf, offset + 16)
        got = self.readers[reader].read(unpack_from)
        if not done:
            for _ in range(writes_inside):
                self.plain_write()
            if got is not None:                # read before the writes: the twin reads before them too
                self.compare(reader, got, self.twins[reader].read(), check_twin_first=True)
                return
            got = self.readers[reader].read(PAYLOAD.unpack_from)
        self.compare(reader, got, self.twins[reader].read())

    def check_read(self, reader: int) -> None:
        self.compare(reader, self.readers[reader].read(PAYLOAD.unpack_from), self.twins[reader].read())

    def compare(self, reader: int, got, expected, check_twin_first: bool = False) -> None:
        if got is not None:
            n, values = got
            assert values == values_of(n), f"torn entry {n}: {values}"
            self.delivered[reader] += 1
        assert got == expected
        assert self.readers[reader].lost == self.twins[reader].lost
        assert self.readers[reader].next == self.twins[reader].next


step = st.one_of(
    st.tuples(st.just("write"), st.lists(st.integers(0, 1), max_size=3)),
    st.tuples(st.just("read"), st.integers(0, 1), st.integers(0, 12)),
    st.tuples(st.just("burst"), st.integers(1, 40)),
)


@settings(max_examples=examples(300), deadline=None)
@given(entries=st.integers(1, 8), steps=st.lists(step, max_size=60), late_start=st.booleans())
def test_any_interleaving_gives_whole_entries_and_counts_exactly_what_is_lost(entries, steps, late_start):
    harness = Harness(entries, [0, None])
    if late_start:
        for _ in range(entries + 3):
            harness.plain_write()
        harness.readers[1] = RingReader(harness.buf, 0, CONTROL, entries, SLOT, None)
        harness.twins[1] = harness.plain.reader(None)
    starts = [0, harness.readers[1].next]
    for op in steps:
        if op[0] == "write":
            harness.write(op[1])
        elif op[0] == "read":
            harness.read(op[1], op[2])
        else:
            for _ in range(op[1]):
                harness.plain_write()
    # once the writer stops, every reader gets every entry still in the ring, and what it lost adds up
    for reader in range(2):
        while harness.readers[reader].read(PAYLOAD.unpack_from) is not None:
            harness.delivered[reader] += 1
        assert harness.delivered[reader] + harness.readers[reader].lost == harness.writer.count - starts[reader]
        assert harness.readers[reader].behind() == 0


def test_a_reader_more_than_a_ring_behind_knows_exactly_how_many_it_lost():
    harness = Harness(4, [0])
    for _ in range(11):
        harness.plain_write()
    reader = harness.readers[0]
    assert reader.behind() == 11
    assert reader.read(PAYLOAD.unpack_from) == (7, values_of(7))      # 0..6 were overwritten
    assert reader.lost == 7
    assert [reader.read(PAYLOAD.unpack_from)[0] for _ in range(3)] == [8, 9, 10]
    assert reader.read(PAYLOAD.unpack_from) is None and reader.lost == 7


def test_a_restarted_writer_continues_the_numbering_and_rewrites_an_interrupted_entry():
    harness = Harness(4, [0])
    harness.plain_write()

    def dies(buf, offset, *values):
        raise RuntimeError("the writer died half way")
    try:
        harness.writer.write(dies, values_of(1))
    except RuntimeError:
        pass
    reader = harness.readers[0]
    assert reader.read(PAYLOAD.unpack_from) == (0, values_of(0))
    assert reader.read(PAYLOAD.unpack_from) is None                   # entry 1 in progress: not yet
    again = RingWriter(harness.buf, 0, CONTROL, 4, SLOT)
    assert again.count == 1
    again.write(PAYLOAD.pack_into, values_of(1))
    assert reader.read(PAYLOAD.unpack_from) == (1, values_of(1)) and reader.lost == 0


# ---------------------------------------------------------------- the entries: fast encoder against plain
NAME_POOL = ("binance", "bybit", "okx@tokyo", "BTC/USDT", "account", "quote_stale", "", "é" * 31)
names = st.one_of(st.none(), st.sampled_from(NAME_POOL * 6 + ("x" * 64,)))        # now and then one too long
numbers = st.one_of(st.none(), st.floats(allow_nan=False), st.integers(-2**53, 2**53))
# built once, not on every record
kinds = st.sampled_from(sorted(KIND_CODE))
name_lists = st.one_of(st.lists(names, max_size=3), st.lists(names, min_size=21, max_size=24))
fill_fields = st.sampled_from(FILL_NUMBERS)


@functools.cache
def fault_choices(faults: tuple[str, ...]):
    """No fault, or one of those the record can have (built once per set of them)."""
    return st.one_of(st.none(), st.sampled_from(faults))


@functools.cache
def positions(indices: tuple[int, ...]):
    """One of the positions given (built once per tuple of them)."""
    return st.sampled_from(indices)


@st.composite
def ring_records(draw) -> dict:
    """A record of any kind with any of its fields (in the engine's order), its values of every type the entry
    carries (ints and floats and None for numbers, None and long and non-ASCII names, a few shares or about
    as many as an entry holds, up to 3 shadow fills); now and then with a fault: a field it does not know,
    two fields swapped, a text for a number, a float id, a list for a name, rules with a field more, a fill
    with a text for a number (or a ``run_id``, which is no fault)."""
    kind = draw(kinds)
    record: dict = {}
    for key, where in ORDERS[KIND_CODE[kind]]:
        if key not in ("event", "id", "time", "time_ns", "shadow_fills") and not draw(st.booleans()):
            continue
        if where == "e":
            record[key] = kind
        elif where == "t":
            record[key] = ""
        elif where == "i":
            record[key] = draw(st.integers(-2**63, 2**63 - 1))
        elif where == "f":
            record[key] = draw(numbers)
        elif where == "s":
            record[key] = draw(names)
        elif where == "R":
            record[key] = {field: draw(names) for field in RULES_FIELDS}
        elif where == "L":
            record[key] = draw(name_lists)
        else:
            record[key] = [{**{field: draw(numbers) for field in FILL_NUMBERS}, "reason": draw(names)}
                           for _ in range(draw(st.integers(0, 3)))]
    record["time"] = iso(record["time_ns"])
    wheres = {where for key, where in ORDERS[KIND_CODE[kind]] if key in record}
    faults = ["unknown field", "swapped", "run_id", "float id", *(["text number"] if "f" in wheres else []),
              *(["nested name"] if "s" in wheres else []), *(["rules field"] if "buy_rules" in record else []),
              *(["fill field"] if record.get("shadow_fills") else [])]
    fault = draw(fault_choices(tuple(faults)))
    items = list(record.items())
    at = draw(st.integers(1, len(items)))
    if fault == "unknown field":
        items.insert(at, ("surprise", 1))
    elif fault == "run_id":
        items.insert(at, ("run_id", "r1"))
    elif fault == "swapped" and at + 1 < len(items):
        items[at], items[at + 1] = items[at + 1], items[at]
    elif fault == "float id":
        items[1] = ("id", 1.5)
    elif fault == "rules field":
        items[list(record).index("buy_rules")] = ("buy_rules", {**record["buy_rules"], "lot": "1"})
    elif fault == "fill field":
        fills = record["shadow_fills"]
        field = draw(fill_fields)
        items[list(record).index("shadow_fills")] = ("shadow_fills", [*fills[:-1], {**fills[-1], field: "1.5"}])
    elif fault in ("text number", "nested name"):
        where = "f" if fault == "text number" else "s"
        order = dict(ORDERS[KIND_CODE[kind]])
        n = draw(positions(tuple(n for n, (key, _) in enumerate(items) if order[key] == where)))
        items[n] = (items[n][0], "1.5" if where == "f" else ["binance"])
    return dict(items)


def written(writer: DecisionWriter, record: dict, meta: tuple):
    try:
        return writer.write(record, meta)
    except DecisionError as exc:
        return str(exc)


@settings(max_examples=examples(300), deadline=None)
@given(records=st.lists(ring_records(), min_size=1, max_size=6))
def test_the_fast_encoder_and_the_plain_one_put_the_same_bytes_in_the_ring_or_refuse_alike(records):
    """Each record is written twice (the second time from the plans and caches its first time made) through a
    fast and a plain writer, each on its own board: the same entry number or the same refusal, the very same
    bytes in the two rings (names tables included) after every write, and each record read back as it was."""
    boards = [Board.create(f"pipeline-test-{uuid.uuid4().hex[:10]}", 2, 1, 1, decision_entries=64,
                           decision_fills=3) for _ in range(2)]
    try:
        writers = [DecisionWriter(boards[0]), DecisionWriter(boards[1], fast=False)]
        kept = []
        for n, record in enumerate(records + records):
            meta = (n + 1, 2, 3, 4, 5, 6, 7, 8)
            got = [written(writer, record, meta) for writer in writers]
            assert got[0] == got[1]
            assert ring_bytes(boards[0]) == ring_bytes(boards[1])
            if isinstance(got[0], int):
                kept.append(record)
        reader = DecisionReader(boards[0], 0)
        for record in kept:
            back = reader.record(reader.read()[1])
            expected = {key: value for key, value in record.items() if key != "run_id"}
            assert list(back) == list(expected) and back == expected
        assert reader.read() is None
        reader.close()
        for writer in writers:
            writer.close()
    finally:
        for board in boards:
            board.destroy()


def ring_bytes(board: Board) -> bytes:
    g = board.geometry
    return bytes(board.buf[g.decisions_offset:g.size])
