"""One fan-out for the detector's records: stdout, the JSON-lines file, the analysis sink.

The live detector process and ``replay`` both hand every
:class:`~pipeline.detector.engine.Emitted` record here, so the file a replay
writes has exactly the schema a live run writes (documented in the README).
Board counters (opportunities per pair, shadow fills) are the live process's
business and are kept there.

Every record written here carries the run's id (``run_id``), so a file that
holds several runs (``--append``, or an older version's appended file) can be
split again. Where a live run writes is decided once, by the supervisor, with
:func:`run_output_path`: a file of its own beside the configured
``detector.output``, which becomes a link to it.
"""
from __future__ import annotations

import collections
import datetime
import logging
import os
import sys
import threading
import time

import orjson

from pipeline.detector.report import event_line
from pipeline.files import open_for_writing

log = logging.getLogger("pipeline.detector")

QUEUE_RECORDS = 20_000      # records waiting for one destination (the file, stdout); past it they are dropped
BATCH_RECORDS = 64          # records rendered (holding the GIL) and joined into one write
OPEN_WAIT_S = 0.5           # the constructor waits this long for the file to open (a FIFO may need a reader)
CLOSE_TIMEOUT_S = 2.0       # at stop, how long the file and stdout may take to drain
STDOUT_GRACE_S = 0.5        # ... and stdout this much more, for the summary
ERROR_LOG_INTERVAL_S = 10.0
NATS_LABEL = "NATS decisions"   # the decision publisher in dropped_by_destination() and the summary


def new_run_id(now: datetime.datetime | None = None) -> str:
    """``20261207T063000Z-3fa2c1``: the UTC time and 6 random hex digits (two runs in one second differ)."""
    now = now or datetime.datetime.now(datetime.UTC)
    if now.tzinfo is not None:
        now = now.astimezone(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"


def _utc_stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def _free_name(directory: str, stem: str, ext: str) -> str:
    """``stem + ext`` in ``directory``, or ``stem-2 + ext``, ... : a name nothing has yet."""
    candidate = os.path.join(directory, stem + ext)
    n = 2
    while os.path.lexists(candidate):
        candidate = os.path.join(directory, f"{stem}-{n}{ext}")
        n += 1
    return candidate


def run_output_path(configured: str, run_id: str, append: bool = False, say=None) -> str:
    """The file this run's detector writes, given ``detector.output`` (``configured``).

    ``append``: the configured path itself (the old behaviour: every run appended to one file; the
    records still carry their run id). Otherwise ``<stem>-<run_id><ext>`` in the same directory,
    created empty, and ``configured`` made a relative symlink to it (a temporary link renamed over
    it, so a reader never finds the name missing). A regular file at ``configured`` (appended by
    an older version) is first renamed to ``<stem>-before-<its mtime, UTC><ext>``, and ``say`` (a
    callable taking one line) is told so: nothing is lost. Calling it again with the same run id
    (a restarted detector) changes nothing and returns the same path.
    """
    if not configured:
        return configured
    if append:
        if os.path.islink(configured):      # our own latest-run link (a name beside it): append to its file
            link = os.readlink(configured)
            if os.sep in link or link.startswith("."):
                raise OSError(f"{configured!r} is a link to {link!r}, not to a run file beside it: not written")
            return os.path.join(os.path.dirname(configured), link)
        return configured
    directory, name = os.path.split(configured)
    stem, ext = os.path.splitext(name)
    target = os.path.join(directory, f"{stem}-{run_id}{ext}")
    os.makedirs(directory or ".", exist_ok=True)
    if os.path.lexists(configured) and not os.path.islink(configured):
        if os.path.isdir(configured):
            raise IsADirectoryError(f"{configured!r} is a directory")
        aside = _free_name(directory, f"{stem}-before-{_utc_stamp(os.stat(configured).st_mtime)}", ext)
        os.rename(configured, aside)
        if say is not None:
            say(f"{configured} was a file of earlier runs; renamed to {aside} (each run now writes its own "
                f"file and {configured} links to the latest)")
    with open_for_writing(target, append=True):
        pass
    if os.path.islink(configured) and os.readlink(configured) == os.path.basename(target):
        return target
    temporary = os.path.join(directory, f".{name}.{run_id}.link")
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(os.path.basename(target), temporary)
    os.replace(temporary, configured)
    return target


class BackgroundWriter:
    """Writes records to one destination from a daemon thread; :meth:`put` never blocks.

    ``render`` turns a record into the bytes to write (``None``: nothing for this record); it runs on
    the writer thread. ``opener`` returns ``(write, close)`` (``write(bytes)`` writes all of them; with
    ``joined=False`` it is given the list of a batch's rendered records instead, for a destination that sends
    one message per record); it also runs on the writer thread, so a FIFO nobody opened yet holds up the
    writer, not the caller.
    The constructor waits up to ``open_wait_s`` for it and raises what it raised (a planted link, a
    missing directory); past that the open goes on in the background.

    Records wait in a deque of at most ``capacity``; a record arriving when it is full is dropped and
    counted (``full``), as is everything after a failed write or open (``failed``, logged once per
    :data:`ERROR_LOG_INTERVAL_S`). Order is kept: one consumer, first in, first out, written in batches.
    """

    def __init__(self, name: str, render, opener, capacity: int, open_wait_s: float = OPEN_WAIT_S,
                 joined: bool = True, after_write=None):
        self.name = name
        self.joined = joined
        self.after_write = after_write      # after_write(batch, written): on the writer thread, after each batch
        self.capacity = int(capacity)
        self.full = 0                       # written by the producer (the detector loop) only
        self.failed = 0                     # written under _lock (writer thread; close after abandoning)
        self.written = 0
        self._render = render
        self._opener = opener
        self._queue: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._closing = False
        self._abandoned = False
        self._in_flight = 0
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._close_target = None
        self._gave_up_waiting = False
        self._reported = 0                  # drops already logged
        self._report_at = 0.0
        self._error_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"pipeline-output-{name}", daemon=True)
        self._thread.start()
        self._opened.wait(open_wait_s)
        with self._lock:
            self._gave_up_waiting = not self._opened.is_set()
        if not self._gave_up_waiting:
            if self._open_error is not None:
                self._thread.join()
                raise self._open_error
        else:
            log.warning("%s: not open yet after %.1f s (a FIFO nobody reads?); records wait for it, at most "
                        "%d, then are dropped and counted", name, open_wait_s, self.capacity)

    # ---------------------------------------------------------------- the detector's side
    def put(self, record) -> bool:
        """Queue ``record``; False (and counted) when the buffer is full or closed."""
        if self._closing or len(self._queue) >= self.capacity:
            self.full += 1
            return False
        self._queue.append(record)
        if not self._wake.is_set():
            self._wake.set()
        return True

    def put_last(self, record) -> None:
        """Queue ``record`` whatever the buffer holds (the summary at stop), then take nothing more."""
        self._queue.append(record)          # before _closing: the writer leaves only on closing and empty
        self._closing = True
        self._wake.set()

    @property
    def dropped(self) -> int:
        return self.full + self.failed

    def close(self, deadline: float) -> bool:
        """Write what is queued until ``deadline`` (``time.monotonic()``), then give the rest up, counted.

        True when everything was written."""
        self._closing = True
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        stuck = self._thread.is_alive()
        with self._lock:                    # a writer stuck in a write or an open is left there
            self._abandoned = True
            lost = (self._in_flight if stuck else 0) + len(self._queue)
            self._queue.clear()
            self.failed += lost
        if stuck:
            log.warning("%s: still blocked at stop; %d records not written", self.name, lost)
        return not lost

    # ---------------------------------------------------------------- the writer thread
    def _run(self) -> None:
        write = None
        try:
            try:
                write, self._close_target = self._opener()
            except Exception as exc:        # noqa: BLE001 - raised by the constructor, or logged
                with self._lock:
                    self._open_error = exc
                    self._opened.set()
                    late = self._gave_up_waiting
                if not late:
                    return
                log.error("%s: cannot open (%s); its records are dropped and counted", self.name, exc)
            self._opened.set()
            while True:
                self._wake.wait()
                self._wake.clear()
                while self._queue:
                    self._write_batch(write)
                    self._report_drops()
                self._report_drops()
                if self._closing and not self._queue:
                    break
        except Exception:                   # a bug here must not die silently
            log.exception("%s: writer thread crashed; records are no longer written", self.name)
        finally:
            if self._close_target is not None and not self._abandoned:
                try:
                    self._close_target()
                except OSError:
                    pass

    def _write_batch(self, write) -> None:
        queue = self._queue
        batch = []
        with self._lock:
            if self._abandoned:
                return
            while queue and len(batch) < BATCH_RECORDS:
                batch.append(queue.popleft())
            self._in_flight = len(batch)
        parts = []
        for record in batch:
            try:
                data = self._render(record)
            except (TypeError, ValueError) as exc:      # not serializable: that record alone is lost
                log.error("%s: a record could not be written (%s)", self.name, exc)
                with self._lock:
                    self.failed += 1
                continue
            if data is not None:
                parts.append(data)
        self._in_flight = len(parts)
        ok = write is not None
        if ok and parts:
            try:
                write(b"".join(parts) if self.joined else parts)
            except OSError as exc:
                ok = False
                if time.monotonic() >= self._error_at:
                    log.error("%s: write failed (%s); %d records dropped (logged at most every %.0f s)",
                              self.name, exc, len(parts), ERROR_LOG_INTERVAL_S)
                    self._error_at = time.monotonic() + ERROR_LOG_INTERVAL_S
        with self._lock:
            if not self._abandoned:
                if ok:
                    self.written += len(parts)
                else:
                    self.failed += len(parts)
            self._in_flight = 0
        if self.after_write is not None:
            self.after_write(batch, ok)

    def _report_drops(self) -> None:
        full = self.full
        if full != self._reported and time.monotonic() >= self._report_at:
            log.warning("%s: could not keep up; %d records dropped (at most %d wait; detection is never held "
                        "up by it)", self.name, full - self._reported, self.capacity)
            self._reported = full
            self._report_at = time.monotonic() + ERROR_LOG_INTERVAL_S


def _file_bytes(record: dict) -> bytes:
    return orjson.dumps(record) + b"\n"


def _write_all(fd: int):
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    return write


def _stream_writer(stream, encoding: str):
    """``(write, None)`` for a text stream: straight to its descriptor when it has one (its buffer and lock
    stay free, so printing the summary or exiting never waits on a blocked write), else through the stream
    (a ``StringIO`` in tests)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is not None:
        stream.flush()
        return _write_all(fd), None

    def write(data: bytes) -> None:
        stream.write(data.decode(encoding, "replace"))
        stream.flush()
    return write, None


class Outputs:
    """Writes each record to the file, as a stdout line and to the sink.

    ``run_id`` (when not empty) is stamped on every record, in place, before any of the three sees it.

    ``background=False`` (``replay``): written as they come, in the caller's thread. ``background=True``
    (the live detector): :meth:`write` only queues; one :class:`BackgroundWriter` thread per destination
    (the file, stdout) writes, so a slow disk or a pipe nobody reads costs dropped records (counted:
    :attr:`dropped`), never detection time. A blocked stdout does not hold up the file, nor the reverse.
    At :meth:`close` both are drained (the summary last on stdout) and the file closed.

    ``publisher`` (``background=True`` only; the output process's
    :class:`~pipeline.output.publisher.DecisionPublisher` when ``bridge.publish_decisions`` is set) is a third
    destination on a writer of its own: each record as the file has it, without the newline, one message
    each (its ``name``, ``open``: the writer's name and opener). Its drops count in :attr:`dropped` like the
    file's and stdout's.
    """

    def __init__(self, output_path: str | None, print_lines: bool, verbose: bool = False, sink=None,
                 stdout=None, truncate: bool = False, *, run_id: str = "", background: bool = False,
                 queue_records: int | None = None, publisher=None, after_file_write=None):
        if output_path:
            os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        self.print_lines = print_lines
        self.verbose = verbose
        self.sink = sink
        self.stdout = stdout or sys.stdout
        self.sink_dropped = 0
        self.run_id = run_id
        self.background = background
        self.file = self.file_writer = self.stdout_writer = self.nats_writer = None
        self._closed = False
        self._encoding = getattr(self.stdout, "encoding", None) or "utf-8"
        if not background:
            self.file = (open_for_writing(output_path, append=not truncate, truncate=truncate, buffering=0)
                         if output_path else None)
            return
        capacity = QUEUE_RECORDS if queue_records is None else queue_records
        if output_path:
            def open_file():
                file = open_for_writing(output_path, append=not truncate, truncate=truncate, buffering=0)
                return _write_all(file.fileno()), file.close
            self.file_writer = BackgroundWriter(f"events file {output_path}", _file_bytes, open_file, capacity,
                                                after_write=after_file_write)
        try:
            self.stdout_writer = BackgroundWriter("stdout", self._line_bytes,
                                                  lambda: _stream_writer(self.stdout, self._encoding), capacity)
            if publisher is not None:
                self.nats_writer = BackgroundWriter(publisher.name, orjson.dumps, publisher.open, capacity,
                                                    joined=False)
        except BaseException:
            for writer in (self.file_writer, self.stdout_writer):
                if writer is not None:
                    writer.close(time.monotonic() + CLOSE_TIMEOUT_S)
            raise

    def write(self, record: dict) -> None:
        if self.run_id:
            record["run_id"] = self.run_id
        if self.background:
            if self.file_writer is not None:
                self.file_writer.put(record)
            if self.print_lines:
                self.stdout_writer.put(record)
            if self.nats_writer is not None:
                self.nats_writer.put(record)
        else:
            if self.file is not None:
                self.file.write(orjson.dumps(record) + b"\n")
            if self.print_lines:
                line = event_line(record, self.verbose)
                if line is not None:
                    self.stdout.write(line + "\n")
                    self.stdout.flush()
        if self.sink is not None and record["event"] == "open" and not self.sink.submit(record):
            self.sink_dropped += 1

    def _line_bytes(self, record) -> bytes | None:
        if isinstance(record, str):         # the text close() prints last
            return record.encode(self._encoding, "backslashreplace")
        line = event_line(record, self.verbose)
        return None if line is None else (line + "\n").encode(self._encoding, "backslashreplace")

    @property
    def dropped(self) -> int:
        """Records the file, stdout or NATS lost (buffer full, a failed write or publish, still queued when stop
        gave up)."""
        return sum(w.dropped for w in (self.file_writer, self.stdout_writer, self.nats_writer) if w is not None)

    def dropped_by_destination(self) -> dict[str, int]:
        """``{"events file": n, "stdout": n, "NATS decisions": n}`` for the destinations that lost records."""
        out = {}
        for label, writer in (("events file", self.file_writer), ("stdout", self.stdout_writer),
                              (NATS_LABEL, self.nats_writer)):
            if writer is not None and writer.dropped:
                out[label] = writer.dropped
        return out

    def close(self, final_text=None, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Drain, then close (a second call does nothing).

        ``final_text`` (a string, or a callable returning one once the file is done, so that it can count what
        the file lost) is printed on stdout after every record. Background writers still blocked
        ``timeout_s`` from now (stdout: :data:`STDOUT_GRACE_S` more, for that text) are given up, their
        records counted in :attr:`dropped`. Returns False when ``final_text`` could not be printed.
        """
        if self._closed:
            return True
        self._closed = True
        deadline = time.monotonic() + timeout_s
        printed = True
        if self.background:
            for writer in (self.file_writer, self.nats_writer):
                if writer is not None:
                    writer.close(deadline)
            if self.sink is not None:
                self.sink.close(1.0)
            text = final_text() if callable(final_text) else final_text
            if text:
                self.stdout_writer.put_last(text if text.endswith("\n") else text + "\n")
            printed = self.stdout_writer.close(deadline + STDOUT_GRACE_S)
            if text and not printed:
                self.stdout_writer.failed -= 1      # the text itself is not a record
        else:
            if self.file is not None:
                self.file.close()
                self.file = None
            if self.sink is not None:
                self.sink.close(1.0)
            text = final_text() if callable(final_text) else final_text
            if text:
                self.stdout.write(text if text.endswith("\n") else text + "\n")
                self.stdout.flush()
        return printed
