"""Book logic every venue shares: snapshot + delta, continuity, checksum,
truncation, crossed/locked and bad-number detection.

Venue modules only translate wire frames into :class:`~pipeline.model.BookUpdate`;
everything that decides whether a book can be trusted lives here, once.

An :class:`InstrumentBook` holds up to two books for one native symbol: the
exchange's top-of-book channel (``BBO``, the freshest best bid/ask) and its
depth channel (``DEPTH``). :meth:`InstrumentBook.compose` merges them into the
top-N levels a board row carries: when the BBO is newer than the depth book
it replaces level 0 and depth levels at or through it are dropped, so the
row is always one monotone book.

On a gap or checksum mismatch the book is discarded (never merged) and the
instrument goes to ``RESYNCING`` until a new snapshot arrives; the caller
(the feed) asks the exchange for one.
"""
from __future__ import annotations

import enum
import math
from itertools import islice

from sortedcontainers import SortedDict

from pipeline.board.layout import RowStatus
from pipeline.model import BBO, BookUpdate

_INF = math.inf


class Outcome(enum.IntEnum):
    """What applying one update did."""

    CHANGED = 0        # book changed; publish
    UNCHANGED = 1      # valid but nothing new (Bybit's 3 s re-sent snapshot); refresh liveness only
    IGNORED = 2        # not applicable now (delta before snapshot, duplicate or old update)
    GAP = 3            # continuity broken: book discarded, resync needed
    CHECKSUM = 4       # checksum mismatch: book discarded, resync needed
    BAD_NUMBER = 5     # NaN/inf/negative/zero price or negative quantity: book discarded, resync needed


class SideBook:
    """One side, sorted best first. Keys are ``-price`` for bids so both sides iterate best first."""

    __slots__ = ("levels", "sign", "text", "_top", "_top_n")

    def __init__(self, is_bid: bool, keep_text: bool):
        self.levels: SortedDict = SortedDict()
        self.sign = -1.0 if is_bid else 1.0
        self.text: dict | None = {} if keep_text else None
        self._top: list | None = None      # cached top levels, dropped on every change
        self._top_n = 0

    def clear(self) -> None:
        self.levels.clear()
        self._top = None
        if self.text is not None:
            self.text.clear()

    def set(self, price: float, qty: float, text: tuple | None) -> None:
        self._top = None
        key = self.sign * price
        if qty == 0.0:
            self.levels.pop(key, None)
            if self.text is not None:
                self.text.pop(key, None)
        else:
            self.levels[key] = qty
            if self.text is not None and text is not None:
                self.text[key] = text

    def truncate(self, keep: int) -> None:
        levels = self.levels
        if len(levels) > keep:
            self._top = None
        while len(levels) > keep:
            key, _ = levels.popitem(-1)
            if self.text is not None:
                self.text.pop(key, None)

    def top(self, n: int) -> list[tuple[float, float]]:
        top = self._top
        if top is not None and self._top_n == n:
            return top
        sign = self.sign
        top = self._top = [(sign * key, qty) for key, qty in islice(self.levels.items(), n)]
        self._top_n = n
        return top

    def top_text(self, n: int) -> list[tuple[str, str]]:
        text = self.text
        return [text[k] for k in islice(self.levels.keys(), n)]

    def best(self) -> float | None:
        if not self.levels:
            return None
        return self.sign * self.levels.keys()[0]


def _valid_levels(levels) -> bool:
    for price, qty in levels:
        # comparisons with NaN are False, so NaN fails both tests
        if not (0.0 < price < _INF) or not (0.0 <= qty < _INF):
            return False
    return True


class Book:
    """A price-level book with optional truncation and wire text (for checksums)."""

    __slots__ = ("bids", "asks", "keep_levels", "last_seq", "synced", "exch_ts_ms", "recv_order")

    def __init__(self, keep_levels: int | None = None, keep_text: bool = False):
        self.bids = SideBook(True, keep_text)
        self.asks = SideBook(False, keep_text)
        self.keep_levels = keep_levels
        self.last_seq: int | None = None
        self.synced = False
        self.exch_ts_ms = 0
        self.recv_order = 0

    def reset(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.last_seq = None
        self.synced = False

    def load(self, update: BookUpdate, replace: bool) -> None:
        if replace:
            self.bids.clear()
            self.asks.clear()
        bids_text = update.bids_text
        asks_text = update.asks_text
        bset = self.bids.set
        for i, (price, qty) in enumerate(update.bids):
            bset(price, qty, bids_text[i] if bids_text is not None else None)
        aset = self.asks.set
        for i, (price, qty) in enumerate(update.asks):
            aset(price, qty, asks_text[i] if asks_text is not None else None)
        if self.keep_levels is not None:
            self.bids.truncate(self.keep_levels)
            self.asks.truncate(self.keep_levels)


class _TopSide:
    __slots__ = ("level",)

    def __init__(self):
        self.level: list = []

    def top(self, n: int) -> list:
        return self.level


class TopBook:
    """The top-of-book channel's one level per side: plain lists, no sorted map.

    This is the hottest path of most feeds (bookTicker, orderbook.1, bbo-tbt,
    ...), so it avoids the SortedDict the depth book needs.
    """

    __slots__ = ("bids", "asks", "last_seq", "synced", "exch_ts_ms", "recv_order")

    def __init__(self):
        self.bids = _TopSide()
        self.asks = _TopSide()
        self.last_seq: int | None = None
        self.synced = False
        self.exch_ts_ms = 0
        self.recv_order = 0

    def reset(self) -> None:
        self.bids.level = []
        self.asks.level = []
        self.last_seq = None
        self.synced = False

    def load(self, update: BookUpdate, replace: bool) -> None:
        for side, levels in ((self.bids, update.bids), (self.asks, update.asks)):
            if levels:
                best = levels[0]
                side.level = [best] if best[1] > 0.0 else []
            elif replace:
                side.level = []


class InstrumentBook:
    """Trust state and books for one native symbol on one exchange.

    ``checksum`` is the venue's ``checksum(bids_text, asks_text) -> int``
    over its top ``checksum_levels`` levels, or None for venues whose books
    carry no usable checksum.
    """

    def __init__(self, symbol: str, depth: int, keep_levels: int | None = None,
                 checksum=None, checksum_levels: int = 10):
        self.symbol = symbol
        self.depth = depth
        self.checksum = checksum
        self.checksum_levels = checksum_levels
        self.bbo = TopBook()
        self.book = Book(keep_levels=keep_levels, keep_text=checksum is not None)
        self.uses_depth = False
        self.uses_bbo = False
        self.state = RowStatus.SYNCING
        self.composed: tuple[list, list] = ([], [])   # top-N as of the last applied update
        self.gaps = 0
        self.checksum_failures = 0
        self.exch_ts_ms = 0
        self._order = 0

    # ------------------------------------------------------------------
    def invalidate(self, state: RowStatus = RowStatus.RESYNCING, book: Book | None = None) -> None:
        """Discard ``book`` (default: both); the row must not be traded until it is rebuilt.

        A gap in the depth channel says nothing about the separate top-of-book
        channel, so only the channel that failed is discarded; a lost connection
        discards both.
        """
        if book is None or book is self.bbo:
            self.bbo.reset()
        if book is None or book is self.book:
            self.book.reset()
        self.state = state
        self.composed = self.compose()

    def apply(self, update: BookUpdate) -> Outcome:
        if update.channel == BBO:
            self.uses_bbo = True
            book = self.bbo
        else:
            self.uses_depth = True
            book = self.book
        if not (_valid_levels(update.bids) and _valid_levels(update.asks)):
            # the book can no longer be trusted either way: a delta was lost, a snapshot is unusable
            self.invalidate(book=book)
            return Outcome.BAD_NUMBER
        seq = update.seq
        if update.snapshot:
            if (seq is not None and book.synced and book.last_seq is not None and seq == book.last_seq
                    and not update.restart):
                return Outcome.UNCHANGED           # Bybit re-sends an unchanged snapshot with the same u
            if (seq is not None and book.synced and book.last_seq is not None and seq < book.last_seq
                    and not update.restart and book is self.bbo):
                return Outcome.IGNORED             # an older top-of-book snapshot arrived late
            book.load(update, replace=True)
            book.synced = True
        else:
            if not book.synced:
                if book is self.bbo:
                    # a top-of-book delta with no snapshot yet: treat as a one-level snapshot
                    book.load(update, replace=True)
                    book.synced = True
                else:
                    return Outcome.IGNORED         # deltas before the snapshot carry nothing usable
            else:
                last = book.last_seq
                if update.restart:
                    pass
                elif seq is not None and last is not None and seq <= last:
                    if seq == last and not update.bids and not update.asks:
                        return Outcome.UNCHANGED   # keep-alive (OKX: empty update, prevSeqId == seqId)
                    return Outcome.IGNORED         # duplicate or out of order: already applied
                elif update.prev_seq is not None and last is not None and update.prev_seq != last:
                    self.gaps += 1
                    self.invalidate(book=book)
                    return Outcome.GAP
                book.load(update, replace=False)
        if seq is not None:
            book.last_seq = seq
        if update.exch_ts_ms:
            book.exch_ts_ms = update.exch_ts_ms
            self.exch_ts_ms = update.exch_ts_ms
        self._order += 1
        book.recv_order = self._order
        if update.checksum is not None and self.checksum is not None and book is self.book:
            n = self.checksum_levels
            expected = self.checksum(book.bids.top_text(n), book.asks.top_text(n))
            if expected != update.checksum:
                self.checksum_failures += 1
                self.invalidate(book=book)
                return Outcome.CHECKSUM
        self._refresh_state()
        return Outcome.CHANGED

    def _refresh_state(self) -> None:
        ready = (not self.uses_depth or self.book.synced) and (not self.uses_bbo or self.bbo.synced)
        if not ready:
            self.state = RowStatus.RESYNCING if self.state == RowStatus.RESYNCING else RowStatus.SYNCING
            self.composed = self.compose()
            return
        bids, asks = self.composed = self.compose()
        if not bids or not asks:
            self.state = RowStatus.SYNCING        # one-sided book: nothing to trade against
        elif bids[0][0] >= asks[0][0]:
            self.state = RowStatus.CROSSED
        else:
            self.state = RowStatus.LIVE

    def compose(self) -> tuple[list, list]:
        """Top-``depth`` bids and asks for the board row, best first."""
        n = self.depth
        if not self.uses_depth:
            return self.bbo.bids.top(1), self.bbo.asks.top(1)
        bids = self.book.bids.top(n)
        asks = self.book.asks.top(n)
        if self.uses_bbo and self.bbo.synced and self.bbo.recv_order > self.book.recv_order:
            top_bid = self.bbo.bids.top(1)
            top_ask = self.bbo.asks.top(1)
            if top_bid:
                bid_px = top_bid[0][0]
                bids = top_bid + [lvl for lvl in bids if lvl[0] < bid_px][: n - 1]
            if top_ask:
                ask_px = top_ask[0][0]
                asks = top_ask + [lvl for lvl in asks if lvl[0] > ask_px][: n - 1]
        return bids, asks
