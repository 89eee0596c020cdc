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

"Newer" is decided by the exchange's own cross-channel id (``BookUpdate.xseq``:
Binance ``u``/``lastUpdateId``, Bybit ``seq``, OKX ``seqId``) when both
channels carry one, so a late depth message never overrides a fresher top of
book; only where a venue has no comparable id (HTX, Kraken, Coinbase) is
arrival order the fallback. A ``weak`` top of book (Kraken/Coinbase
``ticker``) never overrides a synced depth book.

Besides book updates, :meth:`InstrumentBook.apply` takes the pair's
:class:`~pipeline.model.InstrumentSpec` (precisions for a checksum that needs
them; a change returns :attr:`Outcome.RESUBSCRIBE`) and
:class:`~pipeline.model.TradingStatus` (holds the row ``HALTED``); :meth:`InstrumentBook.set_rules` takes
the instrument's trading rules (none: ``NO_RULES``; not trading: ``HALTED``).

On a gap or checksum mismatch the book is discarded (never merged) and the
instrument goes to ``RESYNCING`` until a new snapshot arrives; the caller
(the feed) asks the exchange for one.

Alignment: a snapshot numbered inside its delta stream
------------------------------------------------------
Most venues send their depth snapshot as the first message of the
subscription and every later delta follows it. HTX's incremental MBP does
not: the deltas (``market.<sym>.mbp.<N>``, ``seqNum``/``prevSeqNum``) flow
from the subscription on, and the snapshot is the answer to a separate
``req``, numbered with a ``seqNum`` of the same stream. A venue marks such a
snapshot :class:`AlignedSnapshot` and the book builds it as HTX documents
(HTX Spot v1, "Market By Price (incremental update)", suggested downstream
processing steps 1-4; announcement 900001078223):

A1. On a book built with ``aligned=True`` (the venue record's
    ``aligned_snapshots``), a depth delta that carries ``seq`` and ``prev_seq``
    and arrives while the depth book is not synced is *cached*, in arrival
    order (the stream order: one TCP connection). The outcome stays
    ``IGNORED``; a plain snapshot later simply drops the cache. Every other
    venue's book ignores such a delta, as before.
A2. When the :class:`AlignedSnapshot` (``seq`` = s) arrives, it is *aligned*
    with the first cached delta whose ``prev_seq`` is s: the cached deltas
    before that one are *dropped as older* (the snapshot holds them), the
    snapshot is loaded and the rest applied in order, each ``prev_seq`` equal
    to the ``seq`` applied before it (a duplicate, ``seq`` at or below it, is
    skipped). Only then is the depth book synced, so only a book built this
    way goes ``LIVE``. A break in that chain is a lost message: ``GAP``
    (counted), the book is discarded and the deltas from the break on stay
    cached for the next snapshot.
A3. No cached delta follows s:
    * every cached delta is at or below s (or none came yet): they are dropped
      as older and the snapshot *waits*, not synced (``IGNORED``), for the
      next delta: one with ``prev_seq`` s aligns it (A2), one at or below s is
      dropped as older, any other is a hole (next case);
    * a cached delta is newer than s, yet none follows s (a hole between the
      snapshot and the stream: the snapshot is older than what we hold): the
      snapshot is discarded, counted in ``refresh_misses``, the newer deltas
      stay cached and the outcome is ``RESUBSCRIBE``: the feed asks for a
      fresh snapshot. Not a data error: nothing was lost.
A4. Once aligned, every delta's ``prev_seq`` must equal the last ``seq``
    (the usual continuity check); a delta that breaks it is a ``GAP``: the
    book is discarded and that delta is the first one cached for the next
    snapshot (it is the stream the next snapshot must meet). Another
    :class:`AlignedSnapshot` while the book is synced changes nothing: at the
    book's own ``seq`` it confirms it (``UNCHANGED``), otherwise ``IGNORED``.
A5. The cache is bounded: :data:`MAX_CACHED_DELTAS` deltas, spanning at most
    :data:`MAX_CACHE_SPAN_MS` of exchange time. Past either bound the request
    is taken as lost (a ``req`` refused for its rate, an answer that never
    came): counted in ``delta_cache_overflows``, the cache restarts from the
    newest delta and the outcome is ``RESUBSCRIBE`` (the feed asks again;
    its resync rate limit applies).

Each of these steps leaves a line in ``note`` (taken by :meth:`pop_note`):
``decode`` shows it as the record's ``detail``.
"""
from __future__ import annotations

import enum
import math
from bisect import bisect_left, insort

from pipeline.model import BBO, MAX_ID, MAX_TS_MS, AlignedSnapshot, BookUpdate, InstrumentSpec, RowStatus, TradingStatus

_INF = math.inf


class Outcome(enum.IntEnum):
    """What applying one event did, and what the feed session must do about it.

    * CHANGED: publish the row (``composed``, ``state``).
    * UNCHANGED: the exchange confirmed the book without changing it (Bybit's
      3 s re-send, OKX's empty update, a repeated snapshot id): refresh the
      row's confirmed time; publish only if ``state`` differs from the row's.
    * IGNORED: nothing to do.
    * GAP, CHECKSUM, BAD_NUMBER: the channel's book was discarded: publish
      (the state is RESYNCING), count it, send ``build_resubscribe(symbol)``
      (rate-limited by the session).
    * RESUBSCRIBE: the pair's precision changed (Kraken): the depth book was
      discarded; or the depth book needs a fresh snapshot to align with (a
      snapshot that meets no cached delta, an overflowing delta cache: see
      "Alignment" in the module docstring); publish and send
      ``build_resubscribe(symbol)``. Not a data error: count it apart from
      gaps and checksum failures. ``resubscribe_reason`` says which.
    * STATUS: the trust state changed with no book change (HALTED set or
      cleared): publish the row state.
    """

    CHANGED = 0        # book changed; publish
    UNCHANGED = 1      # valid but nothing new (Bybit's 3 s re-sent snapshot); refresh liveness only
    IGNORED = 2        # not applicable now (delta before snapshot, duplicate or old update)
    GAP = 3            # continuity broken: book discarded, resync needed
    CHECKSUM = 4       # checksum mismatch: book discarded, resync needed
    BAD_NUMBER = 5     # NaN/inf/negative/zero price, negative quantity, an exchange time a row cannot hold
                       # (model.MAX_TS_MS), or a side deeper than MAX_BOOK_LEVELS: book discarded, resync needed
    RESUBSCRIBE = 6    # precision changed / a snapshot to align with is needed: send build_resubscribe(symbol)
    STATUS = 7         # trust state changed without a book change (halted / resumed): publish the row state


_CHANGED = Outcome.CHANGED
# members as module constants: the hot path reads them without the enum class's attribute lookup
_LIVE, _CROSSED, _HALTED = RowStatus.LIVE, RowStatus.CROSSED, RowStatus.HALTED
_NO_RULES = RowStatus.NO_RULES
_SYNCING, _RESYNCING = RowStatus.SYNCING, RowStatus.RESYNCING

# a side of a full-depth book (Coinbase level2) holds at most this many levels: the deepest real one in our
# captures is 16 399 (Coinbase ETH-USD asks); a server adding levels without end costs a resync, not the memory
MAX_BOOK_LEVELS = 100_000
STUCK_AFTER_MS = 1000        # a channel whose ids stay behind this long while the other advances is re-armed
STUCK_AFTER_IGNORED = 200    # the same, counted in messages, for venues without exchange timestamps
# depth deltas kept while their snapshot is awaited (Alignment, A5). HTX answers a `req` at once and our feed sends
# it 0.2 s after the subscription; mbp.5 is tick by tick (tens of deltas a second on BTC): both bounds are ours,
# far above what an answered request needs, and they turn an unanswered one into a new request
MAX_CACHED_DELTAS = 1000
MAX_CACHE_SPAN_MS = 10_000


class SideBook:
    """One side, best first: ``levels`` maps a key to its quantity, ``keys`` holds the keys sorted.

    Keys are ``-price`` for bids and ``price`` for asks, so both sides read best first. A quantity change
    at a known price is one dict store; only a new or removed price touches ``keys`` (``bisect``, a
    C-level search and memmove). At the depths the feeds keep (50 to 400 levels, a few thousand on
    Coinbase) that beats a balanced tree written in Python several times over.
    """

    __slots__ = ("levels", "keys", "sign", "text", "_top", "_top_n")

    def __init__(self, is_bid: bool, keep_text: bool):
        self.levels: dict[float, float] = {}
        self.keys: list[float] = []
        self.sign = -1.0 if is_bid else 1.0
        self.text: dict | None = {} if keep_text else None
        self._top: list | None = None      # cached top levels, dropped on every change
        self._top_n = 0

    def clear(self) -> None:
        self.levels.clear()
        self.keys.clear()
        self._top = None
        if self.text is not None:
            self.text.clear()

    def set(self, price: float, qty: float, text: tuple | None) -> None:
        self._top = None
        key = self.sign * price
        levels = self.levels
        if qty == 0.0:
            if key in levels:
                del levels[key]
                keys = self.keys
                del keys[bisect_left(keys, key)]
                if self.text is not None:
                    self.text.pop(key, None)
        else:
            if key not in levels:
                insort(self.keys, key)
            levels[key] = qty
            if self.text is not None and text is not None:
                self.text[key] = text

    def load(self, pairs, texts) -> None:
        """Set every ``(price, qty)`` of ``pairs`` (``texts[i]`` the wire text of pair i, or None)."""
        self._top = None
        sign = self.sign
        levels = self.levels
        keys = self.keys
        text = self.text
        for i, (price, qty) in enumerate(pairs):
            key = sign * price
            if qty == 0.0:
                if key in levels:
                    del levels[key]
                    del keys[bisect_left(keys, key)]
                    if text is not None:
                        text.pop(key, None)
            else:
                if key not in levels:
                    insort(keys, key)
                levels[key] = qty
                if text is not None and texts is not None:
                    text[key] = texts[i]

    def replace(self, pairs, texts) -> None:
        """The side becomes ``pairs`` (a snapshot): what :meth:`clear` then :meth:`load` leave, built at once."""
        self._top = None
        sign = self.sign
        levels = self.levels = {sign * price: qty for price, qty in pairs}
        if 0.0 in levels.values():
            for key in [key for key, qty in levels.items() if qty == 0.0]:
                del levels[key]
        self.keys = sorted(levels)
        text = self.text
        if text is not None:
            text.clear()
            if texts is not None:
                for (price, _), wire in zip(pairs, texts):
                    key = sign * price
                    if key in levels:
                        text[key] = wire

    def truncate(self, keep: int) -> None:
        keys = self.keys
        if len(keys) > keep:
            self._top = None
            levels = self.levels
            text = self.text
            for key in keys[keep:]:
                del levels[key]
                if text is not None:
                    text.pop(key, None)
            del keys[keep:]

    def top(self, n: int) -> list[tuple[float, float]]:
        top = self._top
        if top is not None and self._top_n == n:
            return top
        sign = self.sign
        levels = self.levels
        top = self._top = [(sign * key, levels[key]) for key in self.keys[:n]]
        self._top_n = n
        return top

    def top_text(self, n: int) -> list[tuple[str, str]]:
        text = self.text
        assert text is not None, "a side keeps its wire text only when its venue's checksum needs it"
        return [text[k] for k in self.keys[:n]]

    def best(self) -> float | None:
        if not self.keys:
            return None
        return self.sign * self.keys[0]


def _valid_levels(levels) -> bool:
    for price, qty in levels:
        # comparisons with NaN are False, so NaN fails both tests
        if not (0.0 < price < _INF) or not (0.0 <= qty < _INF):
            return False
    return True


def _valid_ids(update) -> bool:
    """The exchange's ids of an update fit an int64 (:data:`~pipeline.model.MAX_ID`), or are absent."""
    for value in (update.seq, update.prev_seq, update.xseq):
        if value is not None and not -MAX_ID <= value <= MAX_ID:
            return False
    return True


def _usable(update) -> bool:
    """Every number of an update is one a book and a row can hold: levels, exchange time, ids."""
    return (_valid_levels(update.bids) and _valid_levels(update.asks) and 0 <= update.exch_ts_ms <= MAX_TS_MS
            and _valid_ids(update))


class Book:
    """A price-level book with optional truncation and wire text (for checksums)."""

    __slots__ = ("bids", "asks", "keep_levels", "last_seq", "synced", "exch_ts_ms", "recv_order", "xseq",
                 "weak")

    def __init__(self, keep_levels: int | None = None, keep_text: bool = False):
        self.bids = SideBook(True, keep_text)
        self.asks = SideBook(False, keep_text)
        self.keep_levels = keep_levels
        self.last_seq: int | None = None
        self.synced = False
        self.exch_ts_ms = 0
        self.recv_order = 0
        self.xseq: int | None = None
        self.weak = False

    def reset(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.last_seq = None
        self.synced = False
        self.xseq = None

    def load(self, update: BookUpdate, replace: bool) -> None:
        if replace:
            self.bids.replace(update.bids, update.bids_text)
            self.asks.replace(update.asks, update.asks_text)
        else:
            self.bids.load(update.bids, update.bids_text)
            self.asks.load(update.asks, update.asks_text)
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
    ...), so it avoids the sorted key list the depth book needs.
    """

    __slots__ = ("bids", "asks", "last_seq", "synced", "exch_ts_ms", "recv_order", "xseq", "weak")

    def __init__(self):
        self.bids = _TopSide()
        self.asks = _TopSide()
        self.last_seq: int | None = None
        self.synced = False
        self.exch_ts_ms = 0
        self.recv_order = 0
        self.xseq: int | None = None
        self.weak = False

    def reset(self) -> None:
        self.bids.level = []
        self.asks.level = []
        self.last_seq = None
        self.synced = False
        self.xseq = None

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
    carry no usable checksum. A checksum function with the attribute
    ``precision_required`` True (Kraken) is called as
    ``checksum(bids_text, asks_text, price_precision, qty_precision)``; until
    an :class:`~pipeline.model.InstrumentSpec` gave the precisions the depth
    book is kept but the row stays ``SYNCING``, and it goes ``LIVE`` only once
    a checksum has matched.

    Attributes a caller may read: ``state``, ``composed``, ``gaps``,
    ``checksum_failures``, ``exch_ts_ms``, ``precision`` (``(price, qty)`` or
    None), ``halted`` (the reason, '' when tradable), ``stuck_channels`` (how
    often a channel whose ids stayed behind was re-armed, see :meth:`apply`),
    ``sequence_resets`` (exchange-side resets seen), ``refresh_misses`` and
    ``delta_cache_overflows`` (Alignment A3, A5), ``resubscribe_reason`` (why
    the last ``RESUBSCRIBE``), ``note`` (what the last update did, where it is
    not obvious from the outcome: Alignment).
    """

    def __init__(self, symbol: str, depth: int, keep_levels: int | None = None,
                 checksum=None, checksum_levels: int = 10, aligned: bool = False):
        self.symbol = symbol
        self.aligned = aligned                  # the venue's snapshots are aligned with cached deltas (Alignment)
        self.depth = depth
        self.checksum = checksum
        self.checksum_levels = checksum_levels
        self.precision_required = bool(getattr(checksum, "precision_required", False))
        self.precision: tuple[int, int] | None = None
        self.checksum_ok = False               # a checksum matched since the depth book was (re)built
        self.bbo = TopBook()
        self.book = Book(keep_levels=keep_levels, keep_text=checksum is not None)
        self.uses_depth = False
        self.uses_bbo = False
        self.state = RowStatus.SYNCING
        self.composed: tuple[list, list] = ([], [])   # top-N as of the last applied update
        self.gaps = 0
        self.checksum_failures = 0
        self.exch_ts_ms = 0
        self.halted = ""                        # why the venue or pair cannot trade ('' = tradable)
        self._halted_venue = ""
        self._halted_pair = ""
        self._halted_rules = ""                 # the trading rules say it does not trade (rules.trading False)
        self.has_rules = True                   # False: no trading rules (set_rules(None)): held NO_RULES
        self._hold = _HALTED                    # the state a whole book is held in while ``halted``
        self.stuck_channels = 0
        self.sequence_resets = 0
        self._order = 0
        self._bbo_ignored = 0                   # consecutive older top-of-book updates ignored
        self._bbo_ignored_since_ms = 0          # exchange time of the first of them
        self._depth_advanced = False            # the depth channel moved on while they were ignored
        self._depth_ignored = 0                 # consecutive older depth deltas ignored
        self._depth_ignored_since_ms = 0
        # Alignment (module docstring): deltas before their snapshot, and a snapshot waiting for its delta
        self._cache: list = []
        self._pending: AlignedSnapshot | None = None
        self._aligns = False                    # an AlignedSnapshot was seen: a gap's delta starts the next cache
        self.refresh_misses = 0
        self.delta_cache_overflows = 0
        self.resubscribe_reason = ""
        self.note = ""

    # ------------------------------------------------------------------
    @property
    def version(self) -> int | None:
        """The exchange's own id of the newest update the composed book holds: the larger ``xseq`` of its synced
        channels (Binance ``u``, Bybit ``seq``, OKX ``seqId``: one id space per instrument, the same on every
        connection), or None where the venue's frames carry none. Two connections' books at one version hold
        the same update (:mod:`pipeline.feed.arbiter`)."""
        bbo, depth = self.bbo, self.book               # (read on every write of a redundant path: no list made)
        top = bbo.xseq if bbo.synced else None
        deep = depth.xseq if depth.synced else None
        if top is None:
            return deep
        return top if deep is None or top > deep else deep

    def invalidate(self, state: RowStatus = RowStatus.RESYNCING, book: Book | TopBook | None = None) -> None:
        """Discard ``book`` (default: both); the row must not be traded until it is rebuilt.

        A gap in the depth channel says nothing about the separate top-of-book
        channel, so only the channel that failed is discarded; a lost connection
        discards both.
        """
        if book is None or book is self.bbo:
            self.bbo.reset()
            self._bbo_ignored = 0
        if book is None or book is self.book:
            self.book.reset()
            self.checksum_ok = False
            self._depth_ignored = 0
            self._cache = []
            self._pending = None
            # the rebuilt depth book may start a new id epoch (a reset we did not see): the top of book keeps
            # its levels but takes its next update whatever its id, and is merged by arrival until then
            self.bbo.last_seq = None
            self.bbo.xseq = None
            self._bbo_ignored = 0
        self.state = state
        self.composed = self.compose()

    def apply(self, update) -> Outcome:
        """Apply one :class:`BookUpdate`, :class:`InstrumentSpec` or :class:`TradingStatus`."""
        if update.__class__ is not BookUpdate:
            if update.__class__ is AlignedSnapshot:
                return self._apply_aligned(update)
            if isinstance(update, InstrumentSpec):
                return self._apply_spec(update)
            if isinstance(update, TradingStatus):
                return self._apply_status(update)
            raise TypeError(f"cannot apply {type(update).__name__} to a book")
        book: Book | TopBook
        if update.channel == BBO:
            self.uses_bbo = True
            book = self.bbo
        else:
            self.uses_depth = True
            book = self.book
        if not _usable(update):
            # the book can no longer be trusted either way: a delta was lost, a snapshot is unusable
            self.invalidate(book=book)
            return Outcome.BAD_NUMBER
        seq = update.seq
        if update.restart:
            self.sequence_resets += 1
            if book is self.book:
                # one id space per instrument: the top-of-book channel restarts too (T3)
                self.bbo.last_seq = None
                self.bbo.xseq = None
                self._bbo_ignored = 0
        if update.snapshot:
            if (seq is not None and book.synced and book.last_seq is not None and seq == book.last_seq
                    and not update.restart):
                return Outcome.UNCHANGED           # Bybit re-sends an unchanged snapshot with the same u
            if (seq is not None and book.synced and book.last_seq is not None and seq < book.last_seq
                    and not update.restart and book is self.bbo):
                if not self._bbo_stuck(update):
                    return Outcome.IGNORED         # an older top-of-book snapshot arrived late
            book.load(update, replace=True)
            book.synced = True
            if self._cache and book is self.book:
                self._cache = []                   # deltas from before a plain snapshot: it holds them
        else:
            if not book.synced:
                if book is self.bbo:
                    # a top-of-book delta with no snapshot yet: treat as a one-level snapshot
                    book.load(update, replace=True)
                    book.synced = True
                else:
                    return self._early_delta(update)   # cached for an AlignedSnapshot (Alignment A1)
            else:
                last = book.last_seq
                if update.restart:
                    # the ids start again, but the reset message still follows the last one we applied
                    if update.prev_seq is not None and last is not None and update.prev_seq != last:
                        self.gaps += 1
                        self.invalidate(book=book)
                        return Outcome.GAP
                elif seq is not None and last is not None and seq <= last:
                    if seq == last and not update.bids and not update.asks:
                        return Outcome.UNCHANGED   # keep-alive (OKX: empty update, prevSeqId == seqId)
                    if book is self.bbo:
                        if not self._bbo_stuck(update):
                            return Outcome.IGNORED
                    elif self._depth_stuck(update):
                        self.gaps += 1
                        self.invalidate(book=book)
                        return Outcome.GAP         # ids stayed behind: a reset we missed, rebuild
                    else:
                        return Outcome.IGNORED     # duplicate or out of order: already applied
                elif update.prev_seq is not None and last is not None and update.prev_seq != last:
                    self.gaps += 1
                    self.invalidate(book=book)
                    if self._aligns and book is self.book:
                        self._cache.append(update)     # Alignment A4: the stream the next snapshot must meet
                        self.note = (f"gap: delta {seq} follows {update.prev_seq}, the book is at {last}; "
                                     f"cached for the next snapshot")
                    return Outcome.GAP
                book.load(update, replace=False)
        return self._loaded(book, seq, update.xseq, update.weak, update.exch_ts_ms, update.checksum)

    def apply_top(self, top: tuple) -> Outcome:
        """Apply one top-of-book snapshot given as numbers: the short path of :meth:`apply`.

        ``top`` is ``(symbol, bid_px, bid_qty, ask_px, ask_qty, exch_ts_ms, seq, xseq)``, what a decoder's
        ``top`` returns (contract in :mod:`pipeline.venues._common`). This does exactly what
        ``apply(BookUpdate(symbol, BBO, True, [(bid_px, bid_qty)], [(ask_px, ask_qty)], exch_ts_ms, seq,
        xseq=xseq))`` does, without building the update and its level lists when the
        update is a plain newer quote (positive numbers, an id above the last one); anything else (a bad
        number, an empty side, an older or repeated id) goes through :meth:`apply` itself. The property
        test ``test_top_path_properties.py`` holds the two to the same books and rows.
        """
        _, bid_px, bid_qty, ask_px, ask_qty, exch_ts_ms, seq, xseq = top
        bbo = self.bbo
        last = bbo.last_seq
        if (0.0 < bid_px < _INF and 0.0 < bid_qty < _INF and 0.0 < ask_px < _INF and 0.0 < ask_qty < _INF
                and 0 <= exch_ts_ms <= MAX_TS_MS and (seq is None or (-MAX_ID <= seq <= MAX_ID and (
                    last is None or seq > last or not bbo.synced))) and (xseq is None or -MAX_ID <= xseq <= MAX_ID)):
            self.uses_bbo = True
            bbo.bids.level = [(bid_px, bid_qty)]
            bbo.asks.level = [(ask_px, ask_qty)]
            bbo.synced = True
            self._bbo_ignored = 0
            if seq is not None:
                bbo.last_seq = seq
            bbo.xseq = xseq
            bbo.weak = False
            if exch_ts_ms:
                bbo.exch_ts_ms = exch_ts_ms
                self.exch_ts_ms = exch_ts_ms
            self._order += 1
            bbo.recv_order = self._order
            if self.uses_depth:
                self._refresh_state()
            else:       # a top-of-book-only row: what _refresh_state would decide, without its general cases
                self.composed = bbo.bids.level, bbo.asks.level
                self.state = self._hold if self.halted else _CROSSED if bid_px >= ask_px else _LIVE
            return _CHANGED
        return self.apply(BookUpdate(self.symbol, BBO, True, [(bid_px, bid_qty)], [(ask_px, ask_qty)], exch_ts_ms,
                                     seq, xseq=xseq))

    # ------------------------------------------------------------------ Alignment (module docstring)
    def pop_note(self) -> str:
        """What the last update did, once (``decode`` puts it in the record's ``detail``); '' when nothing to say."""
        note, self.note = self.note, ""
        return note

    def _early_delta(self, update: BookUpdate) -> Outcome:
        """A depth delta while the depth book is not synced: cached (A1), or the one a waiting snapshot needed (A3)."""
        seq, prev = update.seq, update.prev_seq
        if not self.aligned or seq is None or prev is None:
            return Outcome.IGNORED                 # no snapshot will be aligned with it: it carries nothing usable
        cache = self._cache
        cache.append(update)
        if self._pending is not None:
            return self._align(self._pending, waiting=True)
        first_ts = cache[0].exch_ts_ms
        if len(cache) > MAX_CACHED_DELTAS or (
                first_ts and update.exch_ts_ms and update.exch_ts_ms - first_ts > MAX_CACHE_SPAN_MS):
            self.delta_cache_overflows += 1
            self.note = (f"cache overflow: {len(cache) - 1} deltas over {update.exch_ts_ms - first_ts} ms and no "
                         f"snapshot; restarted from delta {seq}, asking for a snapshot")
            del cache[:-1]
            self.resubscribe_reason = "delta_cache_overflow"
            return Outcome.RESUBSCRIBE
        self.note = f"cached delta {seq} (prev {prev}): {len(cache)} waiting for the snapshot"
        return Outcome.IGNORED

    def _apply_aligned(self, snap: AlignedSnapshot) -> Outcome:
        """An :class:`AlignedSnapshot` (A2-A4)."""
        self.uses_depth = True
        book = self.book
        if not _usable(snap):
            self.invalidate(book=book)
            return Outcome.BAD_NUMBER
        seq = snap.seq
        if seq is None:
            self.note = "snapshot without a sequence number: nothing to align it with"
            return Outcome.IGNORED
        self._aligns = True
        if book.synced:
            last = book.last_seq
            if seq == last:
                self.note = f"snapshot {seq} confirms the aligned book"
                return Outcome.UNCHANGED
            self.note = f"snapshot {seq} ignored: the book is aligned and continuous at {last}"
            return Outcome.IGNORED
        return self._align(snap)

    def _align(self, snap: AlignedSnapshot, waiting: bool = False) -> Outcome:
        """Align ``snap`` with the cached deltas (A2), or keep it waiting / ask for another (A3).

        ``waiting``: ``snap`` was already waiting and one delta has just been cached."""
        s = snap.seq
        cache = self._cache
        at = next((i for i, delta in enumerate(cache) if delta.prev_seq == s), -1)
        if at < 0:
            newer = [delta for delta in cache if delta.seq > s]
            if not newer:
                if waiting:
                    self.note = f"dropped older delta {cache[-1].seq}: snapshot {s} holds it; still waiting"
                else:
                    self.note = (f"snapshot {s}: dropped {len(cache)} older cached deltas; waiting for the delta "
                                 f"after {s}")
                self._cache = []
                self._pending = snap
                return Outcome.IGNORED
            self._pending = None
            self._cache = newer
            self.refresh_misses += 1
            self.resubscribe_reason = "snapshot_unaligned"
            self.note = (f"snapshot {s} meets no delta: the {len(newer)} newer cached deltas start after "
                         f"{newer[0].prev_seq}; dropped {len(cache) - len(newer)} older, asking for a fresh one")
            return Outcome.RESUBSCRIBE
        chain = cache[at:]
        dropped = at
        self._cache = []
        self._pending = None
        book = self.book
        book.load(snap, replace=True)
        last = s
        ts = snap.exch_ts_ms
        applied = 0
        for k, delta in enumerate(chain):
            if delta.seq <= last:
                dropped += 1                       # a duplicate: already in the book
                continue
            if delta.prev_seq != last:             # a lost message between cached deltas (A2)
                self.gaps += 1
                self.invalidate(book=book)
                self._cache = chain[k:]
                self.note = (f"aligned snapshot {s}, then a gap: delta {delta.seq} follows {delta.prev_seq}, not "
                             f"{last}; book discarded, {len(chain) - k} deltas stay cached")
                return Outcome.GAP
            book.load(delta, replace=False)
            last = delta.seq
            ts = delta.exch_ts_ms or ts
            applied += 1
        book.synced = True
        self.note = (f"aligned snapshot {s} with delta {chain[0].seq} (prev {s}): dropped {dropped} older, "
                     f"applied {applied}")
        newest = chain[-1]
        return self._loaded(book, last, newest.xseq, False, ts, newest.checksum)

    def _loaded(self, book, seq, xseq, weak: bool, exch_ts_ms: int, checksum) -> Outcome:
        """What follows loading an update into ``book`` (or aligning a depth book, Alignment A2): the level
        bound, the ids and times the update carried, the checksum over the new top, the trust state."""
        if book is self.book and (len(book.bids.levels) > MAX_BOOK_LEVELS or len(book.asks.levels) > MAX_BOOK_LEVELS):
            self.invalidate(book=book)
            return Outcome.BAD_NUMBER
        if book is self.bbo:
            self._bbo_ignored = 0
        else:
            self._depth_advanced = True
            self._depth_ignored = 0
        if seq is not None:
            book.last_seq = seq
        book.xseq = xseq
        book.weak = weak
        if exch_ts_ms:
            book.exch_ts_ms = exch_ts_ms
            self.exch_ts_ms = exch_ts_ms
        self._order += 1
        book.recv_order = self._order
        if book is self.book and self.checksum is not None:
            if checksum is not None and (self.precision is not None or not self.precision_required):
                n = self.checksum_levels
                bids_text = book.bids.top_text(n)
                asks_text = book.asks.top_text(n)
                if self.precision_required:
                    assert self.precision is not None          # checked above
                    expected = self.checksum(bids_text, asks_text, *self.precision)
                else:
                    expected = self.checksum(bids_text, asks_text)
                if expected != checksum:
                    self.checksum_failures += 1
                    self.invalidate(book=book)
                    return Outcome.CHECKSUM
                self.checksum_ok = True
        self._refresh_state()
        return Outcome.CHANGED

    def _bbo_stuck(self, update: BookUpdate) -> bool:
        """True when an older-id top-of-book update must be taken after all (T3).

        After an exchange-side sequence reset that the top-of-book channel does
        not announce itself (OKX ``bbo-tbt`` has no ``prevSeqId``), its new ids
        are lower than the last one accepted and would be ignored for ever.
        When such updates keep coming for ``STUCK_AFTER_MS`` of exchange time
        (or ``STUCK_AFTER_IGNORED`` messages without timestamps) while the
        depth channel advanced, the channel is re-armed and counted in
        ``stuck_channels``. The threshold is ours; the exchanges document the
        reset, not how long a client should wait.
        """
        if self._bbo_ignored == 0:
            self._bbo_ignored_since_ms = update.exch_ts_ms
            self._depth_advanced = False
        self._bbo_ignored += 1
        if not self._depth_advanced and self.uses_depth:
            return False
        if update.exch_ts_ms and self._bbo_ignored_since_ms:
            stuck = update.exch_ts_ms - self._bbo_ignored_since_ms >= STUCK_AFTER_MS
        else:
            stuck = self._bbo_ignored >= STUCK_AFTER_IGNORED
        if stuck:
            self.stuck_channels += 1
            self._bbo_ignored = 0
            self.bbo.last_seq = None
            self.bbo.xseq = None
        return stuck

    def _depth_stuck(self, update: BookUpdate) -> bool:
        """True when depth deltas have stayed behind the last applied id for too long (T3).

        A reset whose announcing message was lost leaves every later delta with
        an id below the last one applied; they would be ignored for ever while
        the row looks valid. After ``STUCK_AFTER_MS`` of exchange time (or
        ``STUCK_AFTER_IGNORED`` messages) the depth book is declared broken and
        rebuilt; counted in ``stuck_channels``. Our threshold, not a documented one.
        """
        if self._depth_ignored == 0:
            self._depth_ignored_since_ms = update.exch_ts_ms
        self._depth_ignored += 1
        if update.exch_ts_ms and self._depth_ignored_since_ms:
            stuck = update.exch_ts_ms - self._depth_ignored_since_ms >= STUCK_AFTER_MS
        else:
            stuck = self._depth_ignored >= STUCK_AFTER_IGNORED
        if stuck:
            self.stuck_channels += 1
            self._depth_ignored = 0
        return stuck

    def _apply_spec(self, spec: InstrumentSpec) -> Outcome:
        if spec.symbol != self.symbol:
            return Outcome.IGNORED
        before = self.state
        outcome = Outcome.IGNORED
        precision = (spec.price_precision, spec.qty_precision)
        if self.precision is not None and precision != self.precision and self.precision_required:
            # every level text the checksum was built from is now in the old precision: start again
            self.precision = precision
            self.invalidate(book=self.book)
            self.resubscribe_reason = "precision_changed"
            outcome = Outcome.RESUBSCRIBE
        self.precision = precision
        self._halted_pair = "" if spec.status == "online" else f"pair {spec.status}"
        self._update_halted()
        if outcome is Outcome.RESUBSCRIBE:
            return outcome
        self._refresh_state()
        return Outcome.STATUS if self.state != before else outcome

    def _apply_status(self, status: TradingStatus) -> Outcome:
        if status.symbol is not None and status.symbol != self.symbol:
            return Outcome.IGNORED
        before = self.state
        reason = "" if status.tradable else status.reason or "not tradable"
        if status.symbol is None:
            self._halted_venue = reason and f"venue {reason}"
        else:
            self._halted_pair = reason and f"pair {reason}"
        self._update_halted()
        self._refresh_state()
        return Outcome.STATUS if self.state != before else Outcome.IGNORED

    def set_rules(self, rules) -> Outcome:
        """The instrument's trading rules (an :class:`~pipeline.model.InstrumentRules`), or None: it has none.

        No rules: a whole book is held ``NO_RULES`` (never LIVE; ``halted`` says ``no rules``). Rules whose
        ``trading`` is False hold it ``HALTED`` (``rules <status>``), like the venue's own status does, until
        rules that trade arrive. A book built before any call trades on the book alone (the rules are not
        tracked: ``decode``, a session without reference data). ``STATUS`` when the row's state changed.
        """
        before = self.state
        self.has_rules = rules is not None
        self._halted_rules = "" if rules is None or rules.trading else f"rules {rules.status or 'not trading'}"
        self._update_halted()
        self._refresh_state()
        return Outcome.STATUS if self.state != before else Outcome.IGNORED

    def _update_halted(self) -> None:
        if not self.has_rules:
            self.halted, self._hold = "no rules", _NO_RULES
        else:
            self.halted, self._hold = self._halted_venue or self._halted_pair or self._halted_rules, _HALTED

    def _depth_valid(self) -> bool:
        return self.book.synced and (not self.precision_required or self.checksum_ok)

    def _stand_in(self) -> bool:
        """A weak top of book (Kraken ticker) stands in while the depth book is not valid (W4).

        Not before the pair's precisions are known: until then the row stays syncing.
        """
        return (self.uses_depth and self.uses_bbo and self.bbo.weak and self.bbo.synced
                and not self._depth_valid() and (self.precision is not None or not self.precision_required))

    def _refresh_state(self) -> None:
        bbo = self.bbo
        if bbo.weak and self._stand_in():
            ready = True
        else:
            uses_depth = self.uses_depth
            depth_ok = not uses_depth or (self.book.synced and (self.checksum_ok or not self.precision_required))
            ready = depth_ok and (not self.uses_bbo or bbo.synced or (uses_depth and bbo.weak))
        if not ready:
            self.state = _RESYNCING if self.state == _RESYNCING else _SYNCING
            self.composed = self.compose()
            return
        bids, asks = self.composed = self.compose()
        if self.halted:
            self.state = self._hold
        elif not bids or not asks:
            self.state = _SYNCING        # one-sided book: nothing to trade against
        elif bids[0][0] >= asks[0][0]:
            self.state = _CROSSED
        else:
            self.state = _LIVE

    def compose(self) -> tuple[list, list]:
        """Top-``depth`` bids and asks for the board row, best first."""
        n = self.depth
        bbo = self.bbo
        if not self.uses_depth or (bbo.weak and self._stand_in()):
            return bbo.bids.top(1), bbo.asks.top(1)
        book = self.book
        bids = book.bids.top(n)
        asks = book.asks.top(n)
        if not self.uses_bbo or not bbo.synced or bbo.weak:
            return bids, asks                      # a weak source never overrides the depth book (W4)
        if bbo.xseq is not None and book.xseq is not None:
            newer = bbo.xseq > book.xseq           # the exchange's own order (W1)
        else:
            newer = bbo.recv_order > book.recv_order   # no comparable id: arrival order
        if newer:
            top_bid = bbo.bids.top(1)
            top_ask = bbo.asks.top(1)
            if top_bid:
                bid_px = top_bid[0][0]
                bids = top_bid + [lvl for lvl in bids if lvl[0] < bid_px][: n - 1]
            if top_ask:
                ask_px = top_ask[0][0]
                asks = top_ask + [lvl for lvl in asks if lvl[0] > ask_px][: n - 1]
        return bids, asks
