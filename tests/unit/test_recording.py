"""The recording format and the feed's recorder: what goes in comes out, damage is located, disk trouble is absorbed."""
from __future__ import annotations

import os
import struct

import pytest

from pipeline.recording.format import (
    BINARY,
    EVENT,
    MAGIC,
    PREAMBLE,
    TEXT,
    RecordingError,
    RecordingReader,
    read_recording,
    recording_files,
)
from pipeline.recording.recorder import Recorder
from tests.conftest import fixture_lines, run_cli


def record(directory, frames, **kwargs) -> Recorder:
    recorder = Recorder(str(directory), "bybit", {"depth": 5, "symbols": {"BTCUSDT": "BTC/USDT"}},
                        flush_interval_s=0.01, **kwargs)
    for n, (raw, conn) in enumerate(frames):
        recorder.frame(raw, 1_000 + n, conn)
    recorder.event("gap", 5_000, {"conn": 2, "reason": "connection sequence jumped 4 -> 9"})
    recorder.close()
    return recorder


def test_frames_and_events_come_back_exactly_as_recorded(tmp_path):
    text = fixture_lines("bybit", "bbo.jsonl")[:3]
    gzip_frame = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\xab\xae\x05\x00"
    recorder = record(tmp_path, [(text[0], 1), (gzip_frame, 1), (text[1], 2), (text[2], 2)])
    assert recorder.recorded == 4 and recorder.dropped == 0
    [path] = recording_files(tmp_path)
    header, records, damage = read_recording(path)
    assert damage is None
    assert header["format"] == 1 and header["venue"] == "bybit" and header["symbols"] == {"BTCUSDT": "BTC/USDT"}
    assert [(r.kind, r.recv_ns, r.conn) for r in records] == [(TEXT, 1000, 1), (BINARY, 1001, 1), (TEXT, 1002, 2),
                                                              (TEXT, 1003, 2), (EVENT, 5000, 2)]
    assert records[0].frame == text[0] and records[1].frame == gzip_frame and records[2].frame == text[1]
    assert records[4].event == {"kind": "gap", "conn": 2, "reason": "connection sequence jumped 4 -> 9"}


def test_truncated_file_is_read_up_to_the_damage_and_says_where(tmp_path):
    frames = [(line, 1) for line in fixture_lines("bybit", "depth.jsonl")]
    recorder = Recorder(str(tmp_path), "bybit", {}, flush_interval_s=60)
    for n, (raw, conn) in enumerate(frames[:5]):
        recorder.frame(raw, n, conn)
    recorder._write(recorder._take())                   # noqa: SLF001 - one chunk now, deterministically
    for n, (raw, conn) in enumerate(frames[5:], 5):
        recorder.frame(raw, n, conn)
    recorder.close()
    [path] = recording_files(tmp_path)
    size = os.path.getsize(path)
    first_chunk_end = None
    with open(path, "rb") as stream:          # find where the second chunk starts
        data = stream.read()
    first_chunk_end = data.index(b"CHNK", data.index(b"CHNK") + 4)
    with open(path, "r+b") as stream:
        stream.truncate(size - 7)
    header, records, damage = read_recording(path)
    assert len(records) == 5 and [r.recv_ns for r in records] == [0, 1, 2, 3, 4]
    assert damage is not None and damage.offset == first_chunk_end and "truncated chunk" in damage.reason
    assert str(damage).startswith(f"{path}: unreadable from byte {first_chunk_end}")


def test_corrupt_chunk_is_detected_by_its_checksum(tmp_path):
    record(tmp_path, [(line, 1) for line in fixture_lines("bybit", "bbo.jsonl")])
    [path] = recording_files(tmp_path)
    with open(path, "r+b") as stream:
        stream.seek(os.path.getsize(path) - 3)
        stream.write(b"\x00\x00\x00")
    _, records, damage = read_recording(path)
    assert records == [] and damage.reason == "chunk checksum mismatch"


def test_unknown_version_and_non_recordings_are_clear_errors(tmp_path):
    record(tmp_path, [(fixture_lines("bybit", "bbo.jsonl")[0], 1)])
    [path] = recording_files(tmp_path)
    with open(path, "r+b") as stream:
        stream.seek(8)
        stream.write(struct.pack("<H", 9))
    with pytest.raises(RecordingError, match="format version 9; this program reads version 1"):
        RecordingReader(path)
    other = tmp_path / "x.rec"
    other.write_bytes(b"hello")
    with pytest.raises(RecordingError, match="not a recording"):
        RecordingReader(other)
    result = run_cli("recording", "info", path)
    assert result.returncode == 2 and "format version 9" in result.stderr and "Traceback" not in result.stderr


def test_rotation_and_keep_files(tmp_path):
    line = fixture_lines("bybit", "depth.jsonl")[0]
    recorder = Recorder(str(tmp_path), "bybit", {}, rotate_mb=0.0001, keep_files=2, flush_interval_s=60)
    for n in range(6):
        recorder.frame(line, n, 1)
        recorder._write(recorder._take())               # noqa: SLF001 - one chunk (over 100 bytes) per file
    recorder.close()
    assert len(recorder.files) == 6
    kept = recording_files(tmp_path)
    assert kept == sorted(recorder.files)[-2:]
    assert [r.recv_ns for path in kept for r in read_recording(path)[1]] == [4, 5]


def test_unwritable_directory_drops_from_the_recording_and_never_raises(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    recorder = Recorder(str(blocker / "recordings"), "bybit", {}, flush_interval_s=0.01, retry_after_s=60)
    for n in range(100):
        recorder.frame('{"x":1}', n, 1)
    recorder.close()
    assert recorder.recorded == 0 and recorder.dropped == 100 and recorder.errors == 1


def test_preamble_is_the_documented_one(tmp_path):
    record(tmp_path, [(fixture_lines("bybit", "bbo.jsonl")[0], 1)])
    [path] = recording_files(tmp_path)
    with open(path, "rb") as stream:
        magic, version, reserved, length = PREAMBLE.unpack(stream.read(PREAMBLE.size))
    assert (magic, version, reserved) == (MAGIC, 1, 0) and length > 0
