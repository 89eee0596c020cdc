"""One error tree for the whole pipeline.

Everything the pipeline raises on purpose derives from :class:`PipelineError`,
so a process's top-level ``main`` can tell "we decided this is wrong" from a
bug::

    PipelineError
    ├── ConfigError            bad configuration; run.py exits with status 2
    ├── BoardError             shared-memory quote board
    │   ├── LayoutMismatchError    attach found another layout (magic/version/depth/row size)
    │   ├── RowOwnershipError      a writer touched a row it does not own
    │   ├── TornReadError          a row kept changing under every read attempt
    │   └── BoardInUseError        another live supervisor owns the segment
    ├── VenueError             exchange protocol level
    │   ├── ParseError             a frame we cannot use (counted and skipped, never fatal)
    │   └── SubscriptionRejected   the exchange refused a subscription
    └── FeedError              connection level (reconnect with backoff)
        └── StaleFeedError         no data for longer than the staleness limit

A parse error is not a network error: the feed counts it and carries on, it
never reconnects because of one (see ``pipeline.feed.retry``).
"""
from __future__ import annotations


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """The configuration is invalid. ``problems`` lists every ``(path, message)``."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        lines = [f"{path}: {message}" if path else message for path, message in self.problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


class BoardError(PipelineError):
    """A problem with the shared-memory quote board."""


class LayoutMismatchError(BoardError):
    """The segment's header does not match the layout this build expects."""


class RowOwnershipError(BoardError):
    """A writer tried to write a row that belongs to another feed."""


class RowValueError(BoardError):
    """A value does not fit the row's field (a time past what an int64 of nanoseconds holds); nothing was written."""


class TornReadError(BoardError):
    """A row kept changing for every attempt of a seqlock read (its writer was preempted mid-write)."""


class BoardInUseError(BoardError):
    """The segment belongs to a supervisor that is still running."""


class VenueError(PipelineError):
    """Exchange protocol level problem."""


class ParseError(VenueError):
    """A frame that cannot be used. ``reason`` is a short stable tag for counters."""

    def __init__(self, reason: str, detail: str = "", exchange: str = ""):
        self.reason = reason
        self.detail = detail
        self.exchange = exchange
        where = f"{exchange}: " if exchange else ""
        super().__init__(f"{where}{reason}{': ' + detail if detail else ''}")


class SubscriptionRejected(VenueError):
    """The exchange answered a subscription with an error."""

    def __init__(self, exchange: str, symbol: str, message: str):
        self.exchange = exchange
        self.symbol = symbol
        super().__init__(f"{exchange} rejected subscription for {symbol or '?'}: {message}")


class FeedError(PipelineError):
    """Connection level problem: the feed reconnects with backoff."""


class StaleFeedError(FeedError):
    """No data arrived for longer than the staleness limit."""
