"""One fan-out for the detector's records: stdout, the JSON-lines file, the analysis sink.

The live detector process and ``replay`` both hand every
:class:`~pipeline.detector.engine.Emitted` record here, so the file a replay
writes has exactly the schema a live run writes (documented in the README).
Board counters (opportunities per pair, shadow fills) are the live process's
business and are kept there.
"""
from __future__ import annotations

import os
import sys

import orjson

from pipeline.detector.report import event_line


class Outputs:
    def __init__(self, output_path: str | None, print_lines: bool, verbose: bool = False, sink=None,
                 stdout=None, truncate: bool = False):
        if output_path:
            os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        self.file = open(output_path, "wb" if truncate else "ab", buffering=0) if output_path else None
        self.print_lines = print_lines
        self.verbose = verbose
        self.sink = sink
        self.stdout = stdout or sys.stdout
        self.sink_dropped = 0

    def write(self, record: dict) -> None:
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
