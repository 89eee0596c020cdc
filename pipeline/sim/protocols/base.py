"""Shared pieces of the simulated exchange protocols."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.model import BBO, DEPTH

QUIRK_NAMES = ("shortest_numbers", "late_depth", "resend_unchanged", "sequence_resets", "venue_status",
               "planned_disconnects", "dropped_messages")


@dataclass
class Quirks:
    """Real-venue behaviours the simulator can switch on (config ``simulator.quirks``).

    Each applies only to the venues that have it; the others ignore it. The
    first three change how every message is written; the last four are events
    the simulator stages every ``every_s`` seconds (see
    :meth:`pipeline.sim.server.ExchangeServer.stage_events`); tests can also
    trigger each one directly.
    """

    shortest_numbers: bool = False     # kraken: numbers as JSON serializers print them (63298, 5.1e-05), dust deep in the book
    late_depth: bool = False           # binance/bybit/okx: each depth message goes out one step late, after a newer top of book
    resend_unchanged: bool = False     # bybit: an unchanged orderbook.1 is re-sent with the same u (as every 3 s live)
    sequence_resets: bool = False      # okx/bybit: every instrument's sequence restarts (maintenance, u == 1)
    venue_status: bool = False         # kraken: status maintenance, then online again after status_s
    planned_disconnects: bool = False  # binance serverShutdown / okx 64008, then the connection is closed after grace_s
    dropped_messages: bool = False     # one depth message is lost (coinbase: a sequence_num jump; others: a gap)
    every_s: float = 10.0              # how often the staged events happen
    status_s: float = 1.0              # how long a staged non-online status lasts
    grace_s: float = 2.0               # how long after a shutdown notice the connection is closed

    @classmethod
    def named(cls, names) -> "Quirks":
        unknown = set(names) - set(QUIRK_NAMES)
        if unknown:
            raise ValueError(f"unknown simulator quirks: {sorted(unknown)}")
        return cls(**{name: True for name in names})

    def stages_events(self) -> bool:
        return self.sequence_resets or self.venue_status or self.planned_disconnects or self.dropped_messages


class SimProtocol:
    """One client connection's view of a simulated exchange.

    Subclasses implement :meth:`on_message` and :meth:`render`; the server
    calls :meth:`on_connect` once, :meth:`on_message` for every client frame,
    :meth:`render` for every subscribed (symbol, channel) on every market
    step, and :meth:`keepalive` every ``KEEPALIVE_INTERVAL_S`` when set.
    """

    NAME = ""
    KEEPALIVE_INTERVAL_S: float | None = None
    DEPTH_LEVELS = 5

    def __init__(self, decimals: dict[str, int] | None = None):
        self.subscriptions: dict[tuple[str, int], None] = {}   # (native symbol, channel), insertion ordered
        self.decimals = decimals or {}                        # native symbol -> price decimals
        self.known_symbols: set[str] | None = None            # None: accept any symbol
        self.sent_books: dict[str, tuple[list, list]] = {}    # last depth book rendered per symbol
        self.quirks = Quirks()                                # the server shares its switches with every connection
        self.reset_next: set[str] = set()                     # symbols whose sequence resets on the next depth render
        self._late: dict[str, list] = {}                      # late_depth: the depth frames held back one step

    # -- hooks ------------------------------------------------------------
    def on_connect(self) -> list:
        return []

    def on_message(self, frame) -> list:
        raise NotImplementedError

    def render(self, symbol: str, channel: int, bids: list, asks: list, ts_ms: int) -> list:
        raise NotImplementedError

    def keepalive(self, now_ms: int) -> list:
        return []

    def render_shutdown(self, now_ms: int) -> list:
        """Frames announcing a planned disconnect (Binance ``serverShutdown``, OKX 64008), or []."""
        return []

    def render_status(self, system: str) -> list:
        """Frames announcing the venue's trading status (Kraken ``status``), or []."""
        return []

    def render_pair(self, symbol: str, status: str, price_precision: int | None = None) -> list:
        """Frames announcing one pair's status / precision (Kraken ``instrument`` update), or []."""
        return []

    def late(self, symbol: str, frames: list) -> list:
        """``late_depth``: send the previous step's depth frames now and keep these for the next step."""
        if not self.quirks.late_depth:
            return frames
        held = self._late.pop(symbol, [])
        self._late[symbol] = frames
        return held

    # -- helpers ----------------------------------------------------------
    def subscribe(self, symbol: str, channel: int) -> None:
        self.subscriptions[(symbol, channel)] = None
        if channel == DEPTH:
            self.sent_books.pop(symbol, None)        # a (re)subscription starts with a snapshot
            self._late.pop(symbol, None)

    def unsubscribe(self, symbol: str, channel: int) -> None:
        self.subscriptions.pop((symbol, channel), None)
        if channel == DEPTH:
            self.sent_books.pop(symbol, None)
            self._late.pop(symbol, None)

    def accepts(self, symbol: str) -> bool:
        return self.known_symbols is None or symbol in self.known_symbols

    def fmt_px(self, symbol: str, price: float) -> str:
        return f"{price:.{self.decimals.get(symbol, 2)}f}"

    @staticmethod
    def fmt_qty(qty: float) -> str:
        return f"{qty:.6f}"

    def depth_delta(self, symbol: str, bids: list, asks: list):
        """(is_snapshot, bid changes, ask changes) against the last book sent on this connection.

        Changes are (price, qty) with qty 0 for a removed level. The first
        call per symbol (or after a resubscription) is a snapshot.
        """
        bids = bids[: self.DEPTH_LEVELS]
        asks = asks[: self.DEPTH_LEVELS]
        previous = self.sent_books.get(symbol)
        self.sent_books[symbol] = (bids, asks)
        if previous is None:
            return True, bids, asks
        return False, _changes(previous[0], bids), _changes(previous[1], asks)


def _changes(old: list, new: list) -> list:
    new_map = dict(new)
    out = [(price, 0.0) for price, _ in old if price not in new_map]
    old_map = dict(old)
    out.extend((price, qty) for price, qty in new if old_map.get(price) != qty)
    return out


__all__ = ["SimProtocol", "Quirks", "QUIRK_NAMES", "BBO", "DEPTH"]
