"""A seqlocked ring of fixed-size entries in shared memory: one writer, any number of readers.

Contract:

* exactly one writer. Entry ``n`` (numbered from 0 for the life of the ring) goes into slot
  ``n % entries``. The writer stores the slot's sequence word ``2n + 1`` (odd: write in progress),
  packs the payload after it, stores ``2n + 2`` (even: entry ``n`` complete), and then the ring's
  counter ``n + 1`` (entries published). The sequence word names the entry, not only its parity, so
  a slot overwritten a whole lap later never looks like the entry a reader wants (no ABA);
* any number of readers, each with its own position, which never write the ring and never block
  the writer. To read entry ``n`` a reader loads the slot's sequence word: ``2n + 2``, copy the
  payload and load the word again; still ``2n + 2``, the copy is entry ``n``, whole. Below
  ``2n + 2`` (an earlier lap's entry, or ``2n + 1`` in progress): not written yet, come back
  later. Above it (or changed during the copy): the writer has lapped the reader and entry ``n``
  is gone; the reader jumps to the oldest entry that may still be there (``counter - entries``)
  and adds what it skipped to :attr:`RingReader.lost`. So a reader more than a whole ring behind
  knows exactly how many entries it lost, and every entry it hands out is one the writer wrote,
  never a mix of two.

Why this is correct without fences: the same hardware assumption as the board's rows
(:mod:`pipeline.board.seqlock`): x86-64 keeps stores in order with stores and loads in order with
loads (TSO), CPython issues each word store through a memoryview as one aligned 8-byte store, and
neither the interpreter nor ``struct`` reorders them. The sequence word is never inside the
``pack_into`` (it zero-fills its span before it stores the fields). A writer that died mid-write
left the slot odd and the counter unmoved: the next writer (a restarted detector) resumes at the
counter and writes that entry again.

The trick lives here only; :class:`PlainRing` is its plain twin (a list and the same rules, no
shared memory), and ``tests/property/test_ring_properties.py`` holds the two to the same answers
under any interleaving of writes and reads.
"""
from __future__ import annotations

from collections.abc import Callable

from pipeline.board.layout import CACHE_LINE

SEQ_BYTES = 8          # each slot starts with its sequence word; the payload follows


class RingWriter:
    """The one writer of a ring at ``offset`` of ``buf`` (its counter word, then ``entries`` slots from
    ``slots_offset``, each ``slot_size`` bytes). Resumes at the counter it finds (a restarted writer)."""

    def __init__(self, buf, offset: int, slots_offset: int, entries: int, slot_size: int):
        if entries < 1 or slot_size % 8 or offset % CACHE_LINE or slots_offset % 8:
            raise ValueError(f"a ring needs entries >= 1 and aligned words (entries {entries}, slot {slot_size})")
        self._buf = buf
        self._words = buf.cast("B").cast("Q")
        self._count_word = offset // 8
        self._first_word = slots_offset // 8
        self._slot_words = slot_size // 8
        self.entries = entries
        self.count = self._words[self._count_word]       # entries published so far

    def write(self, pack_into: Callable, values) -> int:
        """Publish one entry: ``pack_into(buf, payload_offset, *values)`` between the two sequence stores.
        Returns the entry's number."""
        n = self.count
        words = self._words
        word = self._first_word + (n % self.entries) * self._slot_words
        words[word] = 2 * n + 1                          # odd: entry n in progress
        pack_into(self._buf, word * 8 + SEQ_BYTES, *values)
        words[word] = 2 * n + 2                          # even: entry n complete
        self.count = n + 1
        words[self._count_word] = n + 1                  # then the counter
        return n

    def close(self) -> None:
        self._words = self._buf = None


class RingReader:
    """One reader's position in a ring laid out as for :class:`RingWriter`.

    ``start``: the first entry to read; None starts at the entries published by now (a follower that
    wants only what comes next), 0 at the oldest still in the ring (what was lost before is counted).
    """

    def __init__(self, buf, offset: int, slots_offset: int, entries: int, slot_size: int,
                 start: int | None = None):
        self._buf = buf
        self._words = buf.cast("B").cast("Q")
        self._count_word = offset // 8
        self._first_word = slots_offset // 8
        self._slot_words = slot_size // 8
        self.entries = entries
        self.next = self.written() if start is None else start     # the entry this reader reads next
        self.lost = 0           # entries overwritten before this reader got to them

    def written(self) -> int:
        """Entries the writer has published (the ring's counter)."""
        return self._words[self._count_word]

    def behind(self) -> int:
        """Entries published and not yet read (lost ones included)."""
        return max(0, self.written() - self.next)

    def read(self, unpack_from: Callable):
        """``(n, unpack_from(buf, payload_offset))`` of the next entry, or None when it is not written yet.

        Entries the writer overwrote before this reader reached them are skipped and counted in
        :attr:`lost`; the entry handed out is always whole (module docstring)."""
        words = self._words
        entries = self.entries
        while True:
            n = self.next
            want = 2 * n + 2
            word = self._first_word + (n % entries) * self._slot_words
            seq = words[word]
            if seq == want:
                values = unpack_from(self._buf, word * 8 + SEQ_BYTES)
                if words[word] == want:
                    self.next = n + 1
                    return n, values
            elif seq < want:
                return None                              # not written yet (or in progress)
            # lapped: entry n is gone; the oldest that may still be whole is counter - entries
            oldest = words[self._count_word] - entries
            skip_to = max(n + 1, oldest)
            self.lost += skip_to - n
            self.next = skip_to

    def close(self) -> None:
        self._words = self._buf = None


class PlainRing:
    """The plain twin of :class:`RingWriter` + :class:`RingReader`: the same numbering, the same answers,
    kept in a Python list (one process, no sequence words). What a reader of it gets is by definition
    right: an entry still in the ring, or the count of those the writer has overwritten.

    :meth:`begin` and :meth:`finish` are the two halves of a write, so that a test can read in between:
    the slot of the entry in progress no longer holds the entry a whole ring older."""

    def __init__(self, entries: int):
        self.entries = entries
        self.slots: list = [None] * entries       # (n, values) per slot
        self.count = 0
        self.pending = False                      # entry ``count`` is being written

    def begin(self, values) -> None:
        self.slots[self.count % self.entries] = (self.count, None)
        self.pending = True
        self._values = values

    def finish(self) -> int:
        n = self.count
        self.slots[n % self.entries] = (n, self._values)
        self.pending = False
        self.count = n + 1
        return n

    def write(self, values) -> int:
        self.begin(values)
        return self.finish()

    def reader(self, start: int | None = None) -> PlainReader:
        return PlainReader(self, self.count if start is None else start)


class PlainReader:
    def __init__(self, ring: PlainRing, start: int):
        self.ring = ring
        self.next = start
        self.lost = 0

    def read(self):
        ring = self.ring
        n = self.next
        if n >= ring.count:
            return None
        oldest = ring.count + (1 if ring.pending else 0) - ring.entries
        if n < oldest:
            self.lost += oldest - n
            n = self.next = oldest
            if n >= ring.count:
                return None
        entry_n, values = ring.slots[n % ring.entries]
        assert entry_n == n
        self.next = n + 1
        return n, values
