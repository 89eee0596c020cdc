"""The feed's recorder: every frame exactly as received, without slowing the feed down.

The hot path only appends a tuple to a list (:meth:`Recorder.frame`, well
under a microsecond); a writer thread swaps the list out every
``flush_interval_s``, builds the chunk body by column with a few C-level
calls (no Python work per frame, so the feed barely waits for the GIL),
compresses it (zstandard releases the GIL) and appends it to the file. Disk trouble
(full, unwritable, removed directory) never reaches the feed: the batch is
dropped from the recording and counted (``record_dropped``, ``record_errors``
in the process slot, shown by health and metrics), the error is logged once
per distinct message, and the writer tries a new file after
``retry_after_s``. Frames are never dropped from the board.

Files rotate at ``rotate_mb``; at most ``keep_files`` files of this venue are
kept in ``dir`` (the oldest go first). The format is
:mod:`pipeline.recording.format`.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import orjson

from pipeline.config import RecordingConfig
from pipeline.files import open_for_writing
from pipeline.recording.format import MAX_CHUNK_RECORDS, SUFFIX, encode_body, encode_chunk, encode_header

log = logging.getLogger("pipeline.recording")


# frames waiting for the writer thread: about 2 s at 100 k frames/s; a writer stuck on a disk that blocks
# makes the feed drop frames from the recording (counted as record_dropped), never grow without bound
MAX_BUFFERED_FRAMES = 200_000


class Recorder:
    def __init__(self, directory: str, venue: str, header: dict, rotate_mb: float = RecordingConfig.rotate_mb,
                 keep_files: int = RecordingConfig.keep_files, flush_interval_s: float = 0.1,
                 retry_after_s: float = 5.0):
        self.directory = directory
        self.venue = venue
        self.header = {"venue": venue, "compression": "zstd", **header}
        self.rotate_bytes = int(rotate_mb * 1024 * 1024)
        self.keep_files = keep_files
        self.flush_interval_s = flush_interval_s
        self.retry_after_s = retry_after_s
        self._buffer: list = []           # (raw, recv_ns, conn), appended by the feed
        self._events: list = []           # (now_ns, conn, kind, fields)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._file = None
        self._file_bytes = 0
        self._failed_at = 0.0
        self._last_error = ""
        self.recorded = 0
        self.dropped = 0
        self.overflowed = 0               # frames refused because the buffer was full (the feed's thread counts these)
        self.errors = 0
        self.files: list[str] = []
        self._compressor = None
        self._thread = threading.Thread(target=self._run, name=f"recorder-{venue}", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- feed side (hot)
    def frame(self, raw, recv_ns: int, conn: int) -> None:
        buffer = self._buffer
        if len(buffer) < MAX_BUFFERED_FRAMES:
            buffer.append((raw, recv_ns, conn))
        else:                                # the writer is stuck (a disk that blocks): bounded, and counted
            self.overflowed += 1

    def event(self, kind: str, now_ns: int, fields: dict) -> None:
        conn = fields.get("conn")
        self._events.append((now_ns, conn if isinstance(conn, int) else 0, kind, fields))

    def publish_stats(self, stats) -> None:
        """Copy the counters into the feed's process slot (called by the feed's watchdog)."""
        stats.set("recorded", self.recorded)
        stats.set("record_dropped", self.dropped + self.overflowed)
        stats.set("record_errors", self.errors)

    # ---------------------------------------------------------------- writer thread
    def _take(self) -> tuple[list, list]:
        # one rebinding each, atomic under the GIL: the feed appends to the new lists from here on
        frames, self._buffer = self._buffer, []
        events, self._events = self._events, []
        return frames, events

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self._write(self._take())
        self._write(self._take())
        self._close_file()

    @staticmethod
    def _encode(frames: list, events: list) -> bytes:
        """The chunk body: C-level calls per chunk, no Python work per frame (the feed shares the GIL)."""
        return encode_body(frames, [(now_ns, conn, orjson.dumps({"kind": kind, **fields},
                                                                  option=orjson.OPT_NON_STR_KEYS))
                                    for now_ns, conn, kind, fields in events])

    def _write(self, batch: tuple[list, list]) -> None:
        frame_list, events = batch
        if not frame_list and not events:
            return
        frames = len(frame_list)
        try:
            if self._file is None:
                if time.monotonic() - self._failed_at < self.retry_after_s:
                    self.dropped += frames
                    return
                self._open_file()
            if self._compressor is None:
                import zstandard
                self._compressor = zstandard.ZstdCompressor(level=3)
            # chunks of at most MAX_CHUNK_RECORDS (a backlog after a slow disk can exceed one), events in the first
            step = max(1, MAX_CHUNK_RECORDS - len(events))
            for start in range(0, max(frames, 1), step):
                part = frame_list[start:start + step]
                chunk = encode_chunk(self._encode(part, events if start == 0 else []), self._compressor)
                self._file.write(chunk)
                self._file_bytes += len(chunk)
            self._file.flush()
            self.recorded += frames
            if self._file_bytes >= self.rotate_bytes:
                self._close_file()
        except OSError as exc:
            self.errors += 1
            self.dropped += frames
            self._failed_at = time.monotonic()
            message = f"{self.venue}: recording to {self.directory} failed: {exc.strerror or exc}; frames are " \
                      f"dropped from the recording (never from the board) until it works again"
            if message != self._last_error:
                log.error(message)
                self._last_error = message
            self._close_file(quiet=True)

    def _open_file(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        now = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now / 1e9)) + f".{now % 1_000_000_000 // 1000:06d}Z"
        path = os.path.join(self.directory, f"{self.venue}-{stamp}-{os.getpid()}{SUFFIX}")
        stream = open_for_writing(path, exclusive=True)
        try:
            header = encode_header({**self.header, "created_ns": now})
            stream.write(header)
        except OSError:
            stream.close()
            raise
        self._file = stream
        self._file_bytes = len(header)
        self._last_error = ""
        self.files.append(path)
        self._prune()

    def _prune(self) -> None:
        if self.keep_files <= 0:
            return
        prefix = f"{self.venue}-"
        mine = sorted(name for name in os.listdir(self.directory) if name.startswith(prefix) and name.endswith(SUFFIX))
        for name in mine[:-self.keep_files]:
            try:
                os.unlink(os.path.join(self.directory, name))
            except OSError:
                pass

    def _close_file(self, quiet: bool = False) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                if not quiet:
                    raise
            self._file = None

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is buffered and close the file."""
        self._stop.set()
        self._thread.join(timeout_s)
