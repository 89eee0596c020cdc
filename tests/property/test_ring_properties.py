"""The decision ring's primitive against its plain twin, under any interleaving of writes and reads.

:class:`RingWriter` / :class:`RingReader` (sequence words in a buffer) and :class:`PlainRing` (a list)
are driven by the same schedule: writes, reads, reads that happen while a write is half packed (the
writer's ``pack_into`` runs them between its two halves), and reads whose copy is interrupted by whole
writes (the reader's ``unpack_from`` runs them between its two halves, so the copy may be torn). After
every step each reader must give the same answer from both: the same entry with the values written for
it (never a torn mix), or nothing yet, with the same count of entries lost to the writer lapping it.
"""
from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.board import SEQ_BYTES, PlainRing, RingReader, RingWriter
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
