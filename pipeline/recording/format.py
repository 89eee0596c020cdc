"""The recording file format, version 1: raw frames exactly as received, plus session events.

One file per venue per rotation, named ``<venue>-<UTC start>-<pid>.rec``::

    file    = preamble header chunk*
    preamble= b"PIPEREC\\n" (8 bytes) | version u16 LE | reserved u16 | header length u32 LE
    header  = JSON object, UTF-8: {"format": 1, "venue": "binance", "created_ns": …, "depth": 5,
                                   "symbols": {"BTCUSDT": "BTC/USDT", …}, "box": "", "compression": "zstd"}
    chunk   = b"CHNK" | compressed length u32 | raw length u32 | CRC-32 of the compressed bytes u32
              | one zstandard frame holding a body
    body    = count u32 | text bytes u32 | binary bytes u32 | event bytes u32
              | kind u8 x count | connection u32 x count | recv_ns i64 x count | length u32 x count
              | text blob | binary blob | event blob                  (all little-endian)

The body is by column so that the recorder's thread builds it with a few
C-level calls per chunk and no Python work per frame (it shares the GIL
with the feed): the text frames of a chunk are one UTF-8 blob (a text
frame's length is counted in characters), binary frames one blob (lengths
in bytes), events one blob of JSON objects (lengths in bytes).

Record kinds: 1 a text frame, 2 a binary frame (the bytes as received:
HTX's gzip stays gzip), 3 a session event (a JSON object ``{"kind": "gap",
…fields}``, ``recv_ns`` is its time). Within a chunk, frames are in the
order the feed received them and events in the order they happened; a
reader merges the two by ``recv_ns`` (wall-clock nanoseconds).

Why chunks of independent zstandard frames rather than one stream: a file cut
short by a crash or a full disk, or damaged later, is readable up to the last
whole chunk, and the reader can say exactly where (file, byte offset) it
stopped. zstandard because it compresses JSON market data 5-10× at a few
hundred MB/s per core and decompresses faster still, far cheaper than gzip at
the same ratio; it releases the GIL while it works, so the feed's thread keeps
running.

:func:`read_recording` is the documented way to read a file.
"""
from __future__ import annotations

import heapq
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import compress, repeat
from operator import not_

import orjson

from pipeline.errors import PipelineError

MAGIC = b"PIPEREC\n"
VERSION = 1
PREAMBLE = struct.Struct("<8sHHI")
CHUNK = struct.Struct("<4sIII")
CHUNK_MAGIC = b"CHNK"
BODY = struct.Struct("<IIII")
TEXT, BINARY, EVENT = 1, 2, 3
_KIND = {True: TEXT, False: BINARY}
_SWAP = sys.byteorder != "little"         # the body is little-endian; arrays are native
SUFFIX = ".rec"
MAX_CHUNK_RAW = 64 << 20
# a chunk holds what a feed received in one flush interval (0.1 s) or one import batch (5 000): a quarter of a
# million records is 2.5 M frames a second; more is a file built to make the reader allocate without end
MAX_CHUNK_RECORDS = 250_000


class RecordingError(PipelineError):
    """A recording that cannot be read at all: not a recording, or a format version we do not know."""


@dataclass(frozen=True, slots=True)
class Record:
    kind: int            # TEXT, BINARY or EVENT
    recv_ns: int
    conn: int
    data: object         # str for a text frame, bytes for a binary frame or an event's JSON

    @property
    def frame(self):
        """The frame as the WebSocket library handed it to the feed: str for text, bytes for binary."""
        return self.data

    @property
    def event(self) -> dict:
        return orjson.loads(self.data)


@dataclass(frozen=True, slots=True)
class Damage:
    """Where a damaged or truncated file stopped being readable."""
    path: str
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: unreadable from byte {self.offset}: {self.reason}"


def _compressor():
    import zstandard
    return zstandard.ZstdCompressor(level=3)


def _decompressor():
    import zstandard
    return zstandard.ZstdDecompressor()


def encode_header(header: dict) -> bytes:
    body = orjson.dumps({"format": VERSION, **header})
    return PREAMBLE.pack(MAGIC, VERSION, 0, len(body)) + body


def _array(code: str, values) -> bytes:
    column = array(code, values)
    if _SWAP:
        column.byteswap()
    return column.tobytes()


def encode_body(frames, events=()) -> bytes:
    """A chunk body. ``frames``: (raw str|bytes, recv_ns, conn) as the feed received them; ``events``:
    (recv_ns, conn, JSON bytes). Only C-level calls per chunk: no Python work per frame."""
    if frames:
        raws, recvs, conns = zip(*frames)
    else:
        raws = recvs = conns = ()
    is_text = list(map(isinstance, raws, repeat(str)))
    text = "".join(compress(raws, is_text)).encode("utf-8", "surrogatepass")
    binary = b"".join(map(bytes, compress(raws, map(not_, is_text))))
    if events:
        ev_recvs, ev_conns, ev_payloads = zip(*events)
    else:
        ev_recvs = ev_conns = ev_payloads = ()
    blob = b"".join(ev_payloads)
    kinds = bytes(map(_KIND.__getitem__, is_text)) + bytes([EVENT]) * len(events)
    return b"".join((BODY.pack(len(raws) + len(events), len(text), len(binary), len(blob)), kinds,
                     _array("I", conns + ev_conns), _array("q", recvs + ev_recvs),
                     _array("I", list(map(len, raws)) + list(map(len, ev_payloads))), text, binary, blob))


def encode_records(records) -> bytes:
    """A chunk body from (kind, recv_ns, conn, data) records (imports; data str for text, bytes otherwise)."""
    frames = [(data, recv_ns, conn) for kind, recv_ns, conn, data in records if kind != EVENT]
    events = [(recv_ns, conn, data) for kind, recv_ns, conn, data in records if kind == EVENT]
    return encode_body(frames, events)


def decode_body(raw: bytes) -> list[Record]:
    """The records of one chunk body, frames and events merged by time. Raises ValueError if inconsistent."""
    if len(raw) < BODY.size:
        raise ValueError("body header cut")
    count, text_len, bin_len, event_len = BODY.unpack_from(raw, 0)
    if count > MAX_CHUNK_RECORDS:
        raise ValueError(f"{count} records in one chunk (at most {MAX_CHUNK_RECORDS})")
    pos = BODY.size
    need = pos + count * (1 + 4 + 8 + 4) + text_len + bin_len + event_len
    if need != len(raw):
        raise ValueError(f"body of {len(raw)} bytes, its header says {need}")
    kinds = raw[pos:pos + count]
    pos += count
    columns = []
    for code, size in (("I", 4), ("q", 8), ("I", 4)):
        column = array(code)
        column.frombytes(raw[pos:pos + size * count])
        if _SWAP:
            column.byteswap()
        columns.append(column)
        pos += size * count
    conns, recvs, lengths = columns
    text = raw[pos:pos + text_len].decode("utf-8", "surrogatepass")
    pos += text_len
    binary = raw[pos:pos + bin_len]
    pos += bin_len
    blob = raw[pos:pos + event_len]
    frames, events = [], []
    t = b = e = 0
    for i in range(count):
        kind, length = kinds[i], lengths[i]
        if kind == TEXT:
            data, t = text[t:t + length], t + length
            frames.append(Record(TEXT, recvs[i], conns[i], data))
        elif kind == BINARY:
            data, b = binary[b:b + length], b + length
            frames.append(Record(BINARY, recvs[i], conns[i], data))
        elif kind == EVENT:
            data, e = blob[e:e + length], e + length
            _check_event(i, data)
            events.append(Record(EVENT, recvs[i], conns[i], data))
        else:
            raise ValueError(f"record {i} has kind {kind}")
    if (t, b, e) != (len(text), bin_len, event_len):
        raise ValueError("record lengths do not add up to the blobs")
    if not events:
        return frames
    return list(heapq.merge(frames, events, key=lambda r: r.recv_ns))


def _check_event(i: int, data: bytes) -> None:
    """A session event is a JSON object with a ``kind`` string (replay and info read it): anything else is damage."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ValueError(f"record {i}: a session event that is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("kind"), str):
        raise ValueError(f"record {i}: a session event that is not an object with a kind")
    symbols = event.get("symbols")
    if symbols is not None and not (isinstance(symbols, list) and all(isinstance(x, str) for x in symbols)):
        raise ValueError(f"record {i}: a session event whose symbols are not a list of names")


def encode_chunk(raw: bytes, compressor=None) -> bytes:
    data = (compressor or _compressor()).compress(raw)
    return CHUNK.pack(CHUNK_MAGIC, len(data), len(raw), zlib.crc32(data)) + data


def read_header(stream, path: str) -> dict:
    head = stream.read(PREAMBLE.size)
    if len(head) < PREAMBLE.size or head[:8] != MAGIC:
        raise RecordingError(f"{path}: not a recording (no {MAGIC!r} preamble)")
    _, version, _, length = PREAMBLE.unpack(head)
    if version != VERSION:
        raise RecordingError(f"{path}: recording format version {version}; this program reads version {VERSION}")
    body = stream.read(length)
    try:
        header = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RecordingError(f"{path}: recording header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or "venue" not in header:
        raise RecordingError(f"{path}: recording header names no venue")
    return header


class RecordingReader:
    """Reads one file: ``header``, then ``records()``; ``damage`` says where a damaged file stopped."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._stream = open(self.path, "rb")
        try:
            self.header = read_header(self._stream, self.path)
        except BaseException:
            self._stream.close()
            raise
        self.venue: str = self.header["venue"]
        self.damage: Damage | None = None

    def records(self) -> Iterator[Record]:
        import zstandard
        stream = self._stream
        decompressor = _decompressor()
        try:
            while True:
                offset = stream.tell()
                head = stream.read(CHUNK.size)
                if not head:
                    return
                if len(head) < CHUNK.size:
                    self.damage = Damage(self.path, offset, "truncated chunk header")
                    return
                magic, clen, rlen, crc = CHUNK.unpack(head)
                if magic != CHUNK_MAGIC or rlen > MAX_CHUNK_RAW:
                    self.damage = Damage(self.path, offset, "not a chunk header")
                    return
                data = stream.read(clen)
                if len(data) < clen:
                    self.damage = Damage(self.path, offset, f"truncated chunk ({len(data)} of {clen} bytes)")
                    return
                if zlib.crc32(data) != crc:
                    self.damage = Damage(self.path, offset, "chunk checksum mismatch")
                    return
                try:
                    # the size the compressed frame declares, before anything is allocated: zstandard allocates
                    # whatever a frame declares (max_output_size only bounds frames that declare none)
                    declared = zstandard.frame_content_size(data)
                    if declared not in (rlen, -1):
                        self.damage = Damage(self.path, offset, f"chunk's compressed frame declares {declared} "
                                                                f"bytes, its header {rlen}")
                        return
                    raw = decompressor.decompress(data, max_output_size=rlen)
                except Exception as exc:  # noqa: BLE001 - zstandard raises its own error type
                    self.damage = Damage(self.path, offset, f"chunk does not decompress: {exc}")
                    return
                if len(raw) != rlen:
                    self.damage = Damage(self.path, offset, "chunk length mismatch")
                    return
                try:
                    records = decode_body(raw)
                except ValueError as exc:
                    self.damage = Damage(self.path, offset, f"bad chunk body: {exc}")
                    return
                yield from records
        finally:
            stream.close()

    def close(self) -> None:
        self._stream.close()


def read_recording(path: str | os.PathLike) -> tuple[dict, list[Record], Damage | None]:
    """Everything in one file: (header, records, damage or None). Raises :class:`RecordingError`
    for a file that is not a recording or has an unknown version."""
    reader = RecordingReader(path)
    records = list(reader.records())
    return reader.header, records, reader.damage


def recording_files(path: str | os.PathLike) -> list[str]:
    """The recording files at ``path`` (a file, or a directory searched one level deep), sorted by name."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return sorted(os.path.join(path, name) for name in os.listdir(path) if name.endswith(SUFFIX))
    return [path]
