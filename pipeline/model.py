"""Normalized events that venue parsers return, and instrument identities.

A venue's ``parse(raw, recv_ns)`` turns one WebSocket frame into a list of
these. Market data becomes :class:`BookUpdate`; control frames become typed
events too (ack, ping, pong, error, notice) so the feed process, which owns
the socket, decides what to do with each, and the parser stays pure.
"""
from __future__ import annotations

from dataclasses import dataclass

# Which book an update belongs to: the exchange's top-of-book channel, or its depth channel.
BBO = 0
DEPTH = 1


class BookUpdate:
    """One book change for one native symbol.

    ``snapshot`` True replaces the whole (top-of-book or depth) book; False
    is a delta where quantity 0 deletes the level. Prices and quantities are
    floats, parsed once at the edge. ``seq``/``prev_seq`` carry the
    exchange's continuity numbers: the book checks ``prev_seq`` against the
    ``seq`` it applied last (None means "nothing to check"). ``checksum`` is
    the exchange's integrity value when it sends a usable one (Kraken);
    ``bids_text``/``asks_text`` keep the wire text of each level for it.
    ``restart`` marks an update the exchange says restarts the sequence
    (Bybit ``u == 1``, OKX ``seqId < prevSeqId``): the book resets its
    continuity instead of declaring a gap.
    """

    __slots__ = ("symbol", "channel", "snapshot", "bids", "asks", "exch_ts_ms", "seq", "prev_seq",
                 "checksum", "bids_text", "asks_text", "restart")

    def __init__(self, symbol: str, channel: int, snapshot: bool, bids: list, asks: list,
                 exch_ts_ms: int = 0, seq: int | None = None, prev_seq: int | None = None,
                 checksum: int | None = None, bids_text: list | None = None, asks_text: list | None = None,
                 restart: bool = False):
        self.symbol = symbol
        self.channel = channel
        self.snapshot = snapshot
        self.bids = bids
        self.asks = asks
        self.exch_ts_ms = exch_ts_ms
        self.seq = seq
        self.prev_seq = prev_seq
        self.checksum = checksum
        self.bids_text = bids_text
        self.asks_text = asks_text
        self.restart = restart

    def __repr__(self) -> str:
        kind = "snapshot" if self.snapshot else "delta"
        chan = "bbo" if self.channel == BBO else "depth"
        return (f"BookUpdate({self.symbol} {chan} {kind} bids={self.bids[:3]} asks={self.asks[:3]} "
                f"ts={self.exch_ts_ms} seq={self.seq} prev={self.prev_seq})")


@dataclass(frozen=True, slots=True)
class Ack:
    """The exchange accepted a subscription (``symbol`` may be '' when it does not say)."""
    symbol: str = ""
    channel: str = ""


@dataclass(frozen=True, slots=True)
class SubscribeError:
    """The exchange refused a request; ``symbol`` is set when it names one."""
    message: str
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class Ping:
    """The server asked for an application-level pong carrying ``token``."""
    token: object = None


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to our keepalive."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness message with no market data (Kraken/Coinbase heartbeats, status)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """Server announcement; ``reconnect`` True when it is about to drop us."""
    message: str
    reconnect: bool = False


@dataclass(frozen=True, slots=True)
class SequenceMark:
    """A per-connection sequence number (Coinbase ``sequence_num``)."""
    seq: int


@dataclass(frozen=True, slots=True)
class Instrument:
    """A canonical instrument: the same one across exchanges only because config says so."""
    base: str
    quote: str

    @classmethod
    def parse(cls, text: str) -> "Instrument":
        base, quote = text.split("/")
        return cls(base, quote)

    def __str__(self) -> str:
        return f"{self.base}/{self.quote}"
