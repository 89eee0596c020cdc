"""One process slot, read once into an immutable :class:`ProcSnapshot`.

This is the only place that reads a process slot's fields
(:data:`~pipeline.board.layout.PROC_DTYPE`) for reporting: the health block
(every interval and at stop), the Prometheus collector and the console all
render a :class:`ProcSnapshot` and keep no field list of their own. A field
added to the slot must be added here too, or :func:`read_proc` refuses to
build the snapshot (``tests/unit/test_proc_snapshot.py`` holds the two in
step), so no reader can silently leave a new counter out.

A snapshot is one copy of the slot (one ``numpy`` copy, no lock: each counter
has one writer and is read whole, and counters of one slot may be a sample
apart, which reports tolerate) plus the histograms of the hops the process's
role records (:data:`~pipeline.board.layout.HOPS`). Rates and windows are the
readers' business: they keep earlier snapshots.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

from pipeline.board.histogram import HistogramSnapshot, read_histogram
from pipeline.board.layout import HOPS, PROC_DTYPE, ProcessRole, SkipReason
from pipeline.model import MAX_CONNECTIONS

# slot fields that hold no value (alignment holes)
PAD_FIELDS = frozenset(name for name in PROC_DTYPE.names if name.startswith("pad"))
SLOT_FIELDS = tuple(name for name in PROC_DTYPE.names if name not in PAD_FIELDS)


@dataclass(frozen=True)
class ProcSnapshot:
    """Everything one process slot says, at ``taken_ns``.

    The fields after ``taken_ns`` are the slot's, by the same names (see
    :data:`~pipeline.board.layout.PROC_DTYPE` for what each counts); ``role``
    is a :class:`~pipeline.model.ProcessRole` (the raw int when this build does
    not know it), ``skipped`` the per-:class:`~pipeline.model.SkipReason`
    counts. ``venue`` is a feed's exchange (named from ``venue_id``), ``""``
    for other roles; ``hops`` is ``(hop, histogram)`` for each hop the role
    records. Every field has a default so that a test can build one by hand.
    """

    slot: int = 0
    venue: str = ""
    taken_ns: int = 0
    # -- the slot's fields, in layout order
    pid: int = 0
    role: ProcessRole | int = ProcessRole.NONE
    venue_id: int = 0
    started_ns: int = 0
    heartbeat_ns: int = 0
    messages: int = 0
    parse_errors: int = 0
    reconnects: int = 0
    gaps: int = 0
    checksum_failures: int = 0
    resyncs: int = 0
    scans: int = 0
    opportunities: int = 0
    skipped: tuple[int, ...] = (0,) * len(SkipReason)
    connected: int = 0
    clock_offset_ns: int = 0
    shadow_fills: int = 0
    shadow_profitable: int = 0
    sink_dropped: int = 0
    recorded: int = 0
    record_dropped: int = 0
    record_errors: int = 0
    resyncs_deferred: int = 0
    stuck_channels: int = 0
    schema_fallbacks: int = 0
    backlog_wait_ns: int = 0
    backlog_frames: int = 0
    late_frames: int = 0
    fell_behind: int = 0
    behind: int = 0
    output_dropped: int = 0
    connect_failures: int = 0
    rules_changes: int = 0
    rules_fetch_failures: int = 0
    rules_cache_age_s: int = 0
    refused_below_min_qty: int = 0
    refused_below_min_notional: int = 0
    refused_not_trading: int = 0
    refused_no_rules: int = 0
    decisions_behind: int = 0
    decisions_lost: int = 0
    fee_lookup_failures: int = 0
    fee_lookup_state: int = 0
    fee_lookup_status: int = 0
    paths: int = 0
    failovers: int = 0
    path_first: tuple[int, ...] = (0,) * MAX_CONNECTIONS
    path_copies: tuple[int, ...] = (0,) * MAX_CONNECTIONS
    path_lag_p50_us: tuple[int, ...] = (0,) * MAX_CONNECTIONS
    path_lag_p99_us: tuple[int, ...] = (0,) * MAX_CONNECTIONS
    path_live_rows: tuple[int, ...] = (0,) * MAX_CONNECTIONS
    path_reconnects: tuple[int, ...] = (0,) * MAX_CONNECTIONS
    restarts: int = 0
    last_exit_code: int = 0
    # -- the role's latency histograms
    hops: tuple[tuple[str, HistogramSnapshot], ...] = ()

    @property
    def key(self) -> str:
        """How every report names the process: ``feed:binance``, ``detector``, ``health``, ``simulator``, ``bridge``.

        The same string as the supervisor's :attr:`~pipeline.runtime.ProcessSpec.key`.
        """
        if self.role == ProcessRole.FEED:
            return f"feed:{self.venue or self.slot}"
        return self.role.name.lower() if isinstance(self.role, ProcessRole) else f"process{self.slot}"

    def hop(self, name: str) -> HistogramSnapshot | None:
        """The histogram of hop ``name``, None when the role does not record it."""
        for hop, histogram in self.hops:
            if hop == name:
                return histogram
        return None

    def skipped_for(self, reason: SkipReason) -> int:
        return self.skipped[int(reason)]

    def heartbeat_age_ms(self, now_ns: int | None = None) -> float | None:
        """Milliseconds since the last heartbeat (never negative), None before the first."""
        if not self.heartbeat_ns:
            return None
        return max(0.0, ((now_ns or self.taken_ns) - self.heartbeat_ns) / 1e6)


def _value(name: str, value):
    if name == "skipped" or name.startswith("path_"):
        return tuple(int(n) for n in value)
    if name == "role":
        role = int(value)
        return ProcessRole(role) if role in ProcessRole._value2member_map_ else role
    return int(value)


def read_proc(board, slot: int, venues: Sequence[str] = (), now_ns: int | None = None) -> ProcSnapshot:
    """Copy process slot ``slot`` of ``board`` (and its hop histograms) into a :class:`ProcSnapshot`.

    ``venues`` names the venue ids (id ``n`` is ``venues[n - 1]``, as in :data:`pipeline.venues.VENUES`);
    a feed whose id is not in it is named ``venue<id>``.
    """
    copy = board.procs[slot].copy()
    values = {name: _value(name, copy[name]) for name in SLOT_FIELDS}
    role = values["role"]
    venue = ""
    if role == ProcessRole.FEED:
        venue_id = values["venue_id"]
        venue = venues[venue_id - 1] if 0 < venue_id <= len(venues) else f"venue{venue_id}"
    hops = tuple((hop, read_histogram(board, slot, index)) for index, hop in enumerate(HOPS.get(role, ())))
    return ProcSnapshot(slot=slot, venue=venue, taken_ns=now_ns or time.time_ns(), hops=hops, **values)


def read_procs(board, slots: Sequence[int] | None = None, venues: Sequence[str] = (),
               now_ns: int | None = None) -> tuple[ProcSnapshot, ...]:
    """:func:`read_proc` of each of ``slots`` (default: every slot of the board), all stamped ``now_ns``."""
    now_ns = now_ns or time.time_ns()
    if slots is None:
        slots = range(board.geometry.n_procs)
    return tuple(read_proc(board, slot, venues, now_ns) for slot in slots)


def snapshot_fields() -> tuple[str, ...]:
    """The names of :class:`ProcSnapshot`'s fields."""
    return tuple(f.name for f in fields(ProcSnapshot))
