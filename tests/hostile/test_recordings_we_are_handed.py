"""Recording files we are handed are read within bounds: a chunk never makes the reader allocate what it
claims, and a damaged chunk is reported with its file and byte offset, never as a traceback.

A zstd frame declares its own content size and zstandard allocates that much whatever ``max_output_size``
says: a 8 KB chunk that declares 256 MB cost 256 MB. The reader now compares the frame's declared size
with the chunk header's (itself at most 64 MiB) first; and a chunk body may hold at most 250 000 records,
which the recorder keeps to by splitting a backlog.
"""
from __future__ import annotations

import resource
import struct
import zlib

import zstandard

from pipeline.recording.format import (
    CHUNK,
    CHUNK_MAGIC,
    EVENT,
    MAX_CHUNK_RECORDS,
    TEXT,
    RecordingReader,
    encode_chunk,
    encode_header,
    encode_records,
    read_recording,
)
from pipeline.recording.recorder import Recorder
from tests.conftest import run_cli


def recording(tmp_path, *chunks: bytes):
    path = tmp_path / "okx-crafted.rec"
    path.write_bytes(encode_header({"venue": "okx", "compression": "zstd"}) + b"".join(chunks))
    return path


def good_chunk() -> bytes:
    return encode_chunk(encode_records([(TEXT, 1_000, 1, '{"event":"subscribe"}')]))


def lying_chunk(declared_mb: int, header_says: int) -> bytes:
    """A chunk whose zstd frame declares ``declared_mb`` MB (all zeros, 8 KB compressed)."""
    packer = zstandard.ZstdCompressor(level=1).compressobj(size=declared_mb << 20)
    data = b"".join(packer.compress(b"\0" * (1 << 20)) for _ in range(declared_mb)) + packer.flush()
    return CHUNK.pack(CHUNK_MAGIC, len(data), header_says, zlib.crc32(data)) + data


def test_a_chunk_whose_frame_declares_more_than_its_header_is_damage_not_an_allocation(tmp_path):
    path = recording(tmp_path, good_chunk(), lying_chunk(256, 1000))
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    header, records, damage = read_recording(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib) / 1024
    assert len(records) == 1                           # what came before the damage is kept
    assert damage is not None and "declares 268435456 bytes, its header 1000" in str(damage)
    assert str(damage).startswith(str(path)) and damage.offset > 0
    assert grown_mb < 32, grown_mb                     # not the 256 MB the frame asked for


def test_a_chunk_of_more_records_than_a_chunk_may_hold_is_damage(tmp_path):
    body = encode_records([(TEXT, 1_000, 1, "x")])
    count_field = struct.pack("<I", MAX_CHUNK_RECORDS + 1)
    forged = count_field + body[4:]                    # the body header's record count, raised past the cap
    header, records, damage = read_recording(recording(tmp_path, encode_chunk(forged)))
    assert records == [] and f"at most {MAX_CHUNK_RECORDS}" in str(damage)


def test_info_of_a_damaged_recording_says_where_and_does_not_crash(tmp_path):
    path = recording(tmp_path, good_chunk(), lying_chunk(64, 1000))
    info = run_cli("recording", "info", str(path))
    assert info.returncode == 0 and "Traceback" not in info.stderr + info.stdout
    assert "declares" in info.stdout + info.stderr


def test_the_recorder_splits_a_backlog_into_chunks_a_reader_accepts(tmp_path):
    recorder = Recorder(str(tmp_path), "okx", {}, flush_interval_s=3600)
    frames = [('{"n":%d}' % n, 1_000 + n, 1) for n in range(MAX_CHUNK_RECORDS + 10)]
    recorder._write((frames, []))                      # what a slow disk leaves for one write
    recorder.close()
    [path] = sorted(tmp_path.glob("*.rec"))
    reader = RecordingReader(path)
    assert sum(1 for _ in reader.records()) == MAX_CHUNK_RECORDS + 10 and reader.damage is None



def test_a_malformed_session_event_is_damage_with_its_place_and_replay_runs_to_it(tmp_path):
    frames = encode_chunk(encode_records([(EVENT, 1_000, 1, b'{"kind":"connect","symbols":["BTC-USDT"]}'),
                                          (TEXT, 1_001, 1, '{"event":"subscribe"}')]))
    for bad in (b"not json", b"[1, 2]", b'{"kind":"connect","symbols":"BTC-USDT"}'):
        path = recording(tmp_path, frames, encode_chunk(encode_records([(EVENT, 2_000, 1, bad)])))
        header, records, damage = read_recording(path)
        assert len(records) == 2 and damage is not None and "session event" in str(damage)
    from tests.conftest import write_config
    config = write_config(tmp_path / "c.yaml", {
        "board": {"name": "unused"}, "venues": {"okx": {"instruments": ["BTC/USDT"], "url": "wss://x"}},
        "detector": {"output": str(tmp_path / "unused.jsonl")}})
    result = run_cli("replay", "--config", str(config), "--recording", str(path), "--quiet",
                     "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert f"replay: stopped reading {path}: unreadable from byte" in result.stdout


def test_a_writer_that_cannot_keep_up_bounds_the_buffer_and_counts_what_it_drops(tmp_path):
    from pipeline.recording.recorder import MAX_BUFFERED_FRAMES
    recorder = Recorder(str(tmp_path), "okx", {}, flush_interval_s=3600)    # the writer never gets to write
    for n in range(MAX_BUFFERED_FRAMES + 1234):
        recorder.frame("{}", n, 1)
    assert len(recorder._buffer) == MAX_BUFFERED_FRAMES and recorder.overflowed == 1234
    recorder.close()                                    # what was kept is written at close
    [path] = sorted(tmp_path.glob("*.rec"))
    reader = RecordingReader(path)
    assert sum(1 for _ in reader.records()) == MAX_BUFFERED_FRAMES


def test_an_import_the_parser_cannot_read_is_warned_about_at_once(tmp_path):
    old_api = tmp_path / "bybit-v2.jsonl"                # Bybit's retired v2 orderBookL2 frames
    old_api.write_text(
        '{"topic":"orderBookL2_25.BTCUSD","type":"snapshot","data":[{"price":"1","symbol":"BTCUSD","id":1,'
        '"side":"Buy","size":1}]}\n'
        '{"topic":"orderBookL2_25.BTCUSD","type":"delta","data":{"delete":[],"update":[],"insert":[]}}\n')
    current = tmp_path / "bybit-v5.jsonl"
    current.write_text(
        '{"topic":"orderbook.1.BTCUSDT","ts":1700000000001,"type":"snapshot","data":{"s":"BTCUSDT",'
        '"b":[["100.0","1"]],"a":[["101.0","1"]],"u":1,"seq":1001}}\n')
    result = run_cli("recording", "import", "--format", "jsonl", "--exchange", "bybit", "--out",
                     str(tmp_path / "rec"), str(old_api), str(current))
    assert result.returncode == 0, result.stderr
    assert f"{old_api}: 2 of 2 frames are unusable to the bybit parser" in result.stderr
    assert str(current) not in result.stderr


def test_info_says_which_books_never_went_live_in_a_recording_that_starts_mid_stream(tmp_path):
    deltas = tmp_path / "bybit-mid-stream.jsonl"           # what a file rotated away from its snapshot holds
    deltas.write_text("".join(
        '{"topic":"orderbook.50.BTCUSDT","ts":%d,"type":"delta","data":{"s":"BTCUSDT","b":[["100.%d","1"]],'
        '"a":[],"u":%d,"seq":%d}}\n' % (1700000000000 + n, n, 5 + n, 1005 + n) for n in range(50)))
    assert run_cli("recording", "import", "--format", "jsonl", "--exchange", "bybit", "--out",
                   str(tmp_path / "rec"), str(deltas)).returncode == 0
    info = run_cli("recording", "info", str(tmp_path / "rec"))
    assert info.returncode == 0, info.stderr
    assert "0 gaps, 0 checksum failures, 0 resyncs, 0 unusable frames" in info.stdout
    assert "never live: BTCUSDT (their books never became complete and current" in info.stdout
