"""Remote rows: which local row mirrors which remote one, when a remote box
counts as alive, and how its times become this box's times. Pure: every
method takes the current time as an argument.

Clocks. Both boxes stamp with ``time.time_ns()`` (CLOCK_REALTIME), and the
boxes are assumed to run NTP or PTP (PTP: microseconds apart; NTP on a good
network: about a millisecond; cross-region round trips: 74-237 ms). For each
remote box the bridge keeps the low envelope of ``arrival - sent_ns`` over a
sliding window, as the feeds do for exchange clocks
(:class:`BoxClock`). That envelope is the clock offset *plus* the smallest
one-way transport delay, and one-way traffic cannot tell the two apart. So the
remote times are trusted as they are, and corrected only by the part of the
envelope that must be clock error: a negative envelope (messages appearing to
arrive before they were sent) means the remote clock is ahead by at least that
much. A remote row's ``recv_ns`` (and ``confirmed_ns``, the last time the
exchange confirmed the quote, which staleness uses) is therefore the remote receive time on this
box's clock, never later than the truth under NTP/PTP, so ``now - recv_ns``
(the detector's staleness age) always includes the transport delay: a quote
that crossed a region is older than a local one, and is judged so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from pipeline.bridge.codec import (
    RemoteQuote,
    heartbeat_subject,
    parse_heartbeat,
    parse_quote,
    parse_rules,
    quote_subject,
    rules_subject,
)
from pipeline.feed.session import ClockOffset
from pipeline.model import InstrumentRules, RowStatus
from pipeline.runtime import RowAssignment

DISCONNECTED = int(RowStatus.DISCONNECTED)


class BoxClock(ClockOffset):
    """Low envelope of (local arrival - remote send time) over a sliding window of ``window_s``: the same
    two-half-window estimate the feeds keep of each exchange's clock."""

    def envelope_ns(self) -> int | None:
        return self.offset_ns(0)

    def correction_ns(self) -> int:
        """Add to a remote time to put it on this box's clock (see the module docstring)."""
        envelope = self.envelope_ns()
        return envelope if envelope is not None and envelope < 0 else 0


@dataclass
class BoxState:
    name: str
    rows: list[int]
    clock: BoxClock = field(default_factory=BoxClock)
    last_seen_ns: int = 0          # local time of the last valid message from this box
    alive: bool = False
    heartbeats: int = 0


class RowWrite(NamedTuple):
    """What to write into one local row for one remote quote (local clock). A tuple: cheap to build."""

    row: int
    status: int
    bids: list
    asks: list
    exch_ts_ns: int
    recv_ns: int                   # remote receive time, on this box's clock
    sent_ns: int                   # remote bridge send time, on this box's clock
    confirmed_ns: int              # last time the exchange confirmed the quote current, on this box's clock
    xseq: int                      # the exchange's id of the newest update in the book (0: none)


class RemoteRows:
    """The rows mirrored from other boxes and the liveness of each box.

    A box is alive while this bridge is connected and its last message
    (quote or heartbeat) is younger than ``heartbeat_timeout_ns``. When it
    stops being alive, :meth:`check` returns its rows to be marked
    DISCONNECTED; they come back with the next quote for each (the publisher
    resends every row at least once per heartbeat interval).
    """

    def __init__(self, rows: list[RowAssignment] | tuple[RowAssignment, ...], heartbeat_timeout_ns: int):
        self.timeout_ns = heartbeat_timeout_ns
        self.row_of = {quote_subject(r.box, r.venue, r.instrument): r.row for r in rows}
        self.rules_row_of = {rules_subject(r.box, r.venue, r.instrument): r.row for r in rows}
        self.boxes: dict[str, BoxState] = {}
        for r in rows:
            self.boxes.setdefault(r.box, BoxState(r.box, [])).rows.append(r.row)
        self.box_of_heartbeat = {heartbeat_subject(box): box for box in self.boxes}
        self.connected = False

    def subjects(self) -> list[str]:
        return list(self.row_of) + list(self.rules_row_of) + list(self.box_of_heartbeat)

    def is_heartbeat(self, subject: str) -> bool:
        return subject in self.box_of_heartbeat

    def is_rules(self, subject: str) -> bool:
        return subject in self.rules_row_of

    def _seen(self, box: BoxState, sent_ns: int, arrival_ns: int) -> None:
        box.clock.observe(arrival_ns - sent_ns, arrival_ns)
        box.last_seen_ns = arrival_ns
        box.alive = self.connected

    def on_heartbeat(self, subject: str, data: bytes, arrival_ns: int) -> None:
        """Raises ParseError for a malformed heartbeat."""
        heartbeat = parse_heartbeat(subject, data)
        box = self.boxes[self.box_of_heartbeat[subject]]
        box.heartbeats += 1
        self._seen(box, heartbeat.sent_ns, arrival_ns)

    def on_quote(self, subject: str, data: bytes, arrival_ns: int) -> RowWrite | None:
        """The write for one quote message (None: not a row we mirror). Raises ParseError when malformed."""
        row = self.row_of.get(subject)
        if row is None:
            return None
        quote: RemoteQuote = parse_quote(subject, data)
        box = self.boxes[quote.box]
        self._seen(box, quote.sent_ns, arrival_ns)
        correction = box.clock.correction_ns()
        return RowWrite(row, quote.status, quote.bids, quote.asks, quote.exch_ts_ns,
                        quote.recv_ns + correction if quote.recv_ns else 0, quote.sent_ns + correction,
                        quote.confirmed_ns + correction if quote.confirmed_ns else 0, quote.xseq)

    def on_rules(self, subject: str, data: bytes, arrival_ns: int) -> tuple[int, InstrumentRules | None]:
        """(local row, its rules) for one rules message on a subject :meth:`is_rules` accepted. Raises ParseError
        when malformed."""
        remote = parse_rules(subject, data)
        self._seen(self.boxes[remote.box], remote.sent_ns, arrival_ns)
        return self.rules_row_of[subject], remote.rules

    def set_connected(self, connected: bool) -> list[int]:
        """Rows to mark DISCONNECTED because the connection to NATS dropped."""
        self.connected = connected
        if connected:
            return []
        rows = []
        for box in self.boxes.values():
            if box.alive:
                box.alive = False
            rows.extend(box.rows)
        return rows

    def check(self, now_ns: int) -> list[int]:
        """Rows of boxes that just went silent for longer than the heartbeat timeout."""
        rows = []
        for box in self.boxes.values():
            if box.alive and now_ns - box.last_seen_ns > self.timeout_ns:
                box.alive = False
                rows.extend(box.rows)
        return rows

    def clock_envelope_ns(self) -> int | None:
        """The largest envelope over the boxes (worst clock offset + transport), for health."""
        values = [b.clock.envelope_ns() for b in self.boxes.values() if b.clock.envelope_ns() is not None]
        return max(values) if values else None
