"""The JetStream stream a publishing box records its rows into, and the bounds it keeps.

``bridge.record: {stream, max_age_h, max_mb, max_messages}`` creates (or updates, when the config
changed) a file-stored stream of ``quotes.<box>.>`` and ``heartbeat.<box>``, bounded in age, size,
count and message size, each enforced by the server:

* ``max_age_h`` (default 24): a message older than this is removed;
* ``max_mb`` (default 1024 MiB) and ``max_messages`` (default 10 000 000): past either, the server
  discards the **oldest** messages (``discard: old``), so the newest quotes are always kept and publishing
  never fails;
* one message at most :data:`~pipeline.bridge.codec.MAX_MESSAGE_BYTES` (what the codec accepts).

A box publishing 1 000 row states a second (about 400 bytes each at depth 5) stores some 1.4 GiB an hour,
so the size bound is usually the one met first. Every :data:`CHECK_INTERVAL_S` the bridge asks the server
for the stream's state; when the stream is at its size or count bound, the messages that left its front
since the previous check were discarded by that bound (before ``max_age_h``), and are counted in the bridge
slot's ``record_dropped``. The first time the bound is met it logs one warning naming the bound and the
config keys; leaving it (the bound raised) logs once more. Messages removed by age alone are the
retention asked for and are not counted. A stream that disappears (the server lost its store) is created
again at the next check.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.bridge.codec import MAX_MESSAGE_BYTES, heartbeat_subject

log = logging.getLogger("pipeline.bridge")

CHECK_INTERVAL_S = 5.0
MIB = 1 << 20
STREAM_IN_USE = 10058          # JetStream: "stream name already in use with a different configuration"


def stream_config(record, box: str):
    """The nats-py StreamConfig for ``record`` (a BridgeRecordConfig) on box ``box``."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    return StreamConfig(name=record.stream, subjects=[f"quotes.{box}.>", heartbeat_subject(box)],
                        retention=RetentionPolicy.LIMITS, discard=DiscardPolicy.OLD, storage=StorageType.FILE,
                        max_age=record.max_age_h * 3600.0, max_bytes=int(record.max_mb * MIB),
                        max_msgs=int(record.max_messages), max_msg_size=MAX_MESSAGE_BYTES)


def describe_bounds(record) -> str:
    return (f"{record.max_mb:g} MiB, {record.max_messages} messages, {record.max_age_h:g} h "
            f"(bridge.record.max_mb / max_messages / max_age_h)")


def at_bound(messages: int, size: int, max_msgs: int, max_bytes: int) -> str | None:
    """Which bound a stream holding ``messages`` in ``size`` bytes is at ("size", "count"), or None. At its
    size bound a stream is within a few messages of ``max_bytes`` (the server removes whole messages)."""
    if max_msgs > 0 and messages >= max_msgs:
        return "count"
    if max_bytes > 0 and messages and size + 4 * (size // messages) >= max_bytes:
        return "size"
    return None


class StreamKeeper:
    """Creates the stream, keeps its config current, and counts what its bounds discard.

    ``on_discarded(total)`` is called with the running count whenever it grows."""

    def __init__(self, record, box: str, on_discarded: Callable[[int], None] = lambda total: None):
        self.record = record
        self.box = box
        self.on_discarded = on_discarded
        self.discarded = 0            # messages discarded by the size or count bound, since this process started
        self.bound: str | None = None # the bound the stream was at, at the last check
        self._first_seq: int | None = None
        self._last_seq = 0

    async def ensure(self, js) -> bool:
        """Create the stream, or update it to the configured bounds; False (logged) when the server refuses."""
        from nats.js.errors import BadRequestError
        record, config = self.record, stream_config(self.record, self.box)
        try:
            try:
                await js.add_stream(config)
                how = "created, or found as configured"
            except BadRequestError as exc:
                if exc.err_code != STREAM_IN_USE:
                    raise
                await js.update_stream(config)     # the bounds (or subjects) changed since it was created
                how = "updated to the configured bounds"
        except Exception as exc:  # noqa: BLE001 - recording is optional; publishing goes on
            log.error("cannot create JetStream stream %s (is JetStream enabled on the server, e.g. "
                      "nats-server -js, and does it have room for %g MiB?): %s: %s", record.stream, record.max_mb,
                      type(exc).__name__, exc)
            return False
        log.info("recording quotes.%s.> and %s into JetStream stream %s (%s), kept within %s; past the size or "
                 "message bound the oldest messages are discarded", self.box, heartbeat_subject(self.box),
                 record.stream, how, describe_bounds(record))
        self._first_seq = None                       # a new baseline: what happened before is not ours to count
        return True

    async def check(self, js) -> None:
        """Read the stream's state: count what its bounds discarded since the last check, log entering or
        leaving a bound, create it again if it is gone."""
        from nats.js.errors import NotFoundError
        try:
            info = await js.stream_info(self.record.stream)
        except NotFoundError:
            log.warning("JetStream stream %s is gone; creating it again", self.record.stream)
            await self.ensure(js)
            return
        self.observe(info.state.messages, info.state.bytes, info.state.first_seq, info.state.last_seq,
                     info.config.max_msgs or 0, info.config.max_bytes or 0)

    def observe(self, messages: int, size: int, first_seq: int, last_seq: int, max_msgs: int,
                max_bytes: int) -> None:
        bound = at_bound(messages, size, max_msgs, max_bytes)
        if not messages:
            first_seq = last_seq + 1           # an empty stream reports 0 before its first message
        if self._first_seq is not None and last_seq >= self._last_seq:
            removed = max(0, first_seq - self._first_seq)
            if bound and removed:
                self.discarded += removed
                self.on_discarded(self.discarded)
        self._first_seq, self._last_seq = first_seq, last_seq
        if bound and bound != self.bound:
            held = f"{size / MIB:.1f} MiB" if bound == "size" else f"{messages} messages"
            log.warning("JetStream stream %s reached its %s bound (%s): the server now discards the oldest "
                        "messages before they are %g h old (counted as record_dropped in the bridge's slot); "
                        "raise bridge.record.max_mb / max_messages to keep more", self.record.stream, bound, held,
                        self.record.max_age_h)
        elif self.bound and bound is None:
            log.info("JetStream stream %s is within its bounds again (%d messages, %.1f MiB)", self.record.stream,
                     messages, size / MIB)
        self.bound = bound
