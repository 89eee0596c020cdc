"""The board plan: which row and which process slot belongs to whom, declared once.

Everything that sizes the board, names its rows or finds a process's slot reads
this plan instead of recomputing it: the supervisor creates the board from it
(:meth:`BoardPlan.create_board`) and builds each child's spec from its slots;
the detector, bridge, health and metrics, the console and replay read rows
and slots from it.

Rows: one per (exchange, instrument) in config order, then one per (remote
box, venue, instrument) that ``bridge.subscribe`` mirrors from other boxes.
Each row has exactly one writer: a feed writes its venue's local rows, the
bridge writes every mirrored row; each writer logs its publishes in its own
change lane, the lane of its process slot.

Process slots, in this order, one per process key: ``feed:<venue>`` for each
venue, ``detector``, ``health``, then ``simulator`` when the config runs one
and ``bridge`` when it has a bridge section, and last ``output`` (the process
that follows the detector's decision ring and writes stdout, the events file
and the sink). The console (``--console``) has no slot. The number of slots is
the number of planned processes.

The board's decision ring is sized here too: ``detector.decision_ring``
entries, each holding as many shadow fills as ``detector.shadow_latencies_ms``
has latencies.

Pure: built from the config object passed in (``pipeline.config`` is not
imported here), no board needed to build it.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.model import ProcessRole


@dataclass(frozen=True)
class RowAssignment:
    row: int
    venue: str
    instrument: str      # canonical
    symbol: str          # native
    box: str = ""        # "" for a row this box's own feed writes; the remote box's name for a bridged row

    @property
    def label(self) -> str:
        """How events and screens name the row's venue: ``kraken`` locally, ``kraken@frankfurt`` bridged."""
        return f"{self.venue}@{self.box}" if self.box else self.venue


@dataclass(frozen=True)
class SlotPlan:
    """One process slot: the process key it belongs to, its role, and the rows that process writes."""

    slot: int
    key: str                                # "feed:binance", "detector", "health", "simulator", "bridge"
    role: ProcessRole
    venue: str = ""                         # feeds: the venue
    rows: tuple[RowAssignment, ...] = ()    # the rows this process writes (their change lane is this slot)

    @property
    def title(self) -> str:
        """The process title (setproctitle): ``pipeline: feed binance``, ``pipeline: detector``."""
        return f"pipeline: feed {self.venue}" if self.role == ProcessRole.FEED else f"pipeline: {self.key}"

    @property
    def lane(self) -> int:
        """The change lane the process logs its publishes in (its slot), or -1 when it writes no row."""
        return self.slot if self.rows else -1


@dataclass(frozen=True)
class BoardPlan:
    rows: tuple[RowAssignment, ...]
    slots: tuple[SlotPlan, ...]
    instruments: tuple[str, ...]           # every instrument on the board; its index is its id
    venue_ids: tuple[int, ...]             # per row
    instrument_ids: tuple[int, ...]        # per row
    decision_entries: int = 0              # the decision ring (pipeline.decisions)
    decision_fills: int = 1

    @classmethod
    def from_config(cls, config) -> BoardPlan:
        """The plan of ``config`` (a :class:`pipeline.config.Config`, or anything shaped like one)."""
        from pipeline.venues import VENUE_IDS
        rows = tuple(plan_rows(config))
        slots = [SlotPlan(n, f"feed:{venue.name}", ProcessRole.FEED, venue.name,
                          tuple(r for r in rows if r.venue == venue.name and not r.box))
                 for n, venue in enumerate(config.venues)]
        for key, role in (("detector", ProcessRole.DETECTOR), ("health", ProcessRole.HEALTH)):
            slots.append(SlotPlan(len(slots), key, role))
        if getattr(config, "simulator", None) is not None:
            slots.append(SlotPlan(len(slots), "simulator", ProcessRole.SIMULATOR))
        if getattr(config, "bridge", None) is not None:
            slots.append(SlotPlan(len(slots), "bridge", ProcessRole.BRIDGE, rows=tuple(r for r in rows if r.box)))
        slots.append(SlotPlan(len(slots), "output", ProcessRole.OUTPUT))
        instruments = tuple(config.board_instruments)
        index = {name: i for i, name in enumerate(instruments)}
        detector = config.detector
        return cls(rows, tuple(slots), instruments, tuple(VENUE_IDS[r.venue] for r in rows),
                   tuple(index[r.instrument] for r in rows), detector.decision_ring,
                   max(1, len(detector.shadow_latencies_ms)))

    # ---------------------------------------------------------------- reading
    @property
    def n_procs(self) -> int:
        return len(self.slots)

    @property
    def local_rows(self) -> tuple[RowAssignment, ...]:
        """The rows this box's own feeds write (the bridge publishes these)."""
        return tuple(r for r in self.rows if not r.box)

    @property
    def remote_rows(self) -> tuple[RowAssignment, ...]:
        """The rows mirrored from other boxes (the bridge writes these)."""
        return tuple(r for r in self.rows if r.box)

    def slot(self, key: str) -> SlotPlan:
        """The slot of process ``key``; KeyError when the plan has none (e.g. no simulator)."""
        for slot in self.slots:
            if slot.key == key:
                return slot
        raise KeyError(f"no process {key!r} on this board (planned: {', '.join(s.key for s in self.slots)})")

    def has(self, key: str) -> bool:
        return any(s.key == key for s in self.slots)

    def feed_slots(self) -> dict[str, int]:
        """venue -> the slot of its feed."""
        return {s.venue: s.slot for s in self.slots if s.role == ProcessRole.FEED}

    def lanes(self) -> list[tuple[list[int], int]]:
        """``(rows, lane)`` for every process that writes rows: what :meth:`Board.assign_lane` takes."""
        return [([r.row for r in s.rows], s.lane) for s in self.slots if s.rows]

    def geometry(self, depth: int):
        """The board's geometry for this plan at ``depth``: what :meth:`create_board` maps, and its size."""
        from pipeline.board.layout import BoardGeometry
        return BoardGeometry(n_rows=len(self.rows), depth=depth, n_procs=self.n_procs,
                             decision_entries=self.decision_entries, decision_fills=self.decision_fills)

    def create_board(self, name: str, depth: int):
        """Create the board of this plan: sized for its rows and slots, each row's venue and instrument
        ids written, each writer's rows in its change lane. Only the supervisor calls this."""
        from pipeline.board.shm import Board
        board = Board.create(name, len(self.rows), depth, self.n_procs, self.decision_entries, self.decision_fills)
        for r in self.rows:
            board.rows[r.row]["venue_id"] = self.venue_ids[r.row]
            board.rows[r.row]["instrument_id"] = self.instrument_ids[r.row]
        for rows, lane in self.lanes():
            board.assign_lane(rows, lane)
        return board


def plan_rows(config) -> list[RowAssignment]:
    """One row per (exchange, instrument), in config order; then the rows mirrored from other boxes."""
    from pipeline.venues import native_symbols
    rows = []
    for venue in config.venues:
        symbols = native_symbols(venue)
        for instrument in venue.instruments:
            rows.append(RowAssignment(len(rows), venue.name, instrument, symbols[instrument]))
    return rows + plan_remote_rows(config, len(rows))


def plan_remote_rows(config, first_row: int) -> list[RowAssignment]:
    """One row per (remote box, venue, instrument) of ``bridge.subscribe``, written by the bridge only.

    ``venue`` is the real venue name (fees, venue ids) and ``box`` the remote box, so the
    row's label reads ``kraken@frankfurt``; the native symbol is the remote feed's business.
    """
    bridge = getattr(config, "bridge", None)
    if bridge is None:
        return []
    return [RowAssignment(first_row + n, venue.name, instrument, "", box=box)
            for n, (box, venue, instrument) in enumerate(bridge.remote_rows())]
