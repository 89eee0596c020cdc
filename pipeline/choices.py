"""The closed lists a configuration chooses from, stated once.

The configuration checks a value against these, and the package that acts on it (the feed's
transports, the simulator's quirks, the detector's wait) imports the same
tuple, so a name added here is known to both and :mod:`pipeline.config` never has to import a
process package to check itself. This module imports nothing from the pipeline. (The board's
``MAX_DEPTH`` lives in :mod:`pipeline.model`, as low.)
"""
from __future__ import annotations

import importlib

TRANSPORTS = ("websockets", "picows")           # venues.NAME.transport; picows comes with the ``fast`` extra
OPTIONAL_TRANSPORTS = {"picows": "picows"}      # transport -> the module it needs

WAIT_MODES = ("doorbell", "spin")               # detector.wait

QUIRK_NAMES = ("shortest_numbers", "late_depth", "resend_unchanged", "sequence_resets", "venue_status",
               "planned_disconnects", "dropped_messages", "rule_changes")   # simulator.quirks


def transport_installed(kind: str) -> bool:
    """Whether the modules ``kind`` needs import here (websockets always does: it is a dependency)."""
    module = OPTIONAL_TRANSPORTS.get(kind)
    if module is None:
        return True
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
