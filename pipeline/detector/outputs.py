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

import datetime
import os
import sys

import orjson

from pipeline.detector.report import event_line
from pipeline.files import open_for_writing


def new_run_id(now: datetime.datetime | None = None) -> str:
    """``20261207T063000Z-3fa2c1``: the UTC time and 6 random hex digits (two runs in one second differ)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"


def _utc_stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


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


class Outputs:
    """Writes each record to the file, as a stdout line and to the sink.

    ``run_id`` (when not empty) is stamped on every record, in place, before any of the three sees it.
    """

    def __init__(self, output_path: str | None, print_lines: bool, verbose: bool = False, sink=None,
                 stdout=None, truncate: bool = False, *, run_id: str = ""):
        if output_path:
            os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        self.file = (open_for_writing(output_path, append=not truncate, truncate=truncate, buffering=0)
                     if output_path else None)
        self.print_lines = print_lines
        self.verbose = verbose
        self.sink = sink
        self.stdout = stdout or sys.stdout
        self.sink_dropped = 0
        self.run_id = run_id

    def write(self, record: dict) -> None:
        if self.run_id:
            record["run_id"] = self.run_id
        if self.file is not None:
            self.file.write(orjson.dumps(record) + b"\n")
        if self.print_lines:
            line = event_line(record, self.verbose)
            if line is not None:
                self.stdout.write(line + "\n")
                self.stdout.flush()
        if self.sink is not None and record["event"] == "open" and not self.sink.submit(record):
            self.sink_dropped += 1

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.sink is not None:
            self.sink.close(1.0)
