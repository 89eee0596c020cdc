"""Shared pieces of the simulated exchange protocols."""
from __future__ import annotations

from pipeline.model import BBO, DEPTH


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

    # -- hooks ------------------------------------------------------------
    def on_connect(self) -> list:
        return []

    def on_message(self, frame) -> list:
        raise NotImplementedError

    def render(self, symbol: str, channel: int, bids: list, asks: list, ts_ms: int) -> list:
        raise NotImplementedError

    def keepalive(self, now_ms: int) -> list:
        return []

    # -- helpers ----------------------------------------------------------
    def subscribe(self, symbol: str, channel: int) -> None:
        self.subscriptions[(symbol, channel)] = None
        if channel == DEPTH:
            self.sent_books.pop(symbol, None)        # a (re)subscription starts with a snapshot

    def unsubscribe(self, symbol: str, channel: int) -> None:
        self.subscriptions.pop((symbol, channel), None)
        if channel == DEPTH:
            self.sent_books.pop(symbol, None)

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


__all__ = ["SimProtocol", "BBO", "DEPTH"]
