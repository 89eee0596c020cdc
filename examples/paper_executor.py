"""A paper-trading executor that follows a running pipeline's decision stream.

    python examples/paper_executor.py --board pipeline-demo            # or --config configs/demo.yaml
    python examples/paper_executor.py --board pipeline-demo --duration 60

It attaches to the board read-only (:func:`pipeline.decisions.follow`) and, for every ``open``, "sends" both
legs at the quoted prices: a marketable limit buy of ``qty_base`` on the buy venue at the decision's
``buy_limit_price`` (the worst level the size walks) and the matching sell on the other venue, and logs what
it would have done, with the expected profit and its own reaction latency (the decision written to the ring
-> seen here). ``update`` and ``close`` are logged as they come; nothing is ever sent anywhere. At the end it
prints how many decisions it saw, what it sent, its paper position per venue and its reaction latency.

One line per event, on stdout::

    PAPER OPEN  #3 BTC/USDT BUY 0.6986 @ 64733.8 on okx, SELL 0.6986 @ 64740.1 on htx  expected +1.61 USDT
      reaction 212 µs

(one line, folded here).
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # run from a checkout without installing

from pipeline.config import load_config  # noqa: E402
from pipeline.decisions import Decision, follow  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402


class PaperExecutor:
    """What a real executor would do with each decision, without sending anything."""

    def __init__(self, out=sys.stdout):
        self.out = out
        self.decisions = 0
        self.orders = 0
        self.lost = 0
        self.expected: dict[str, float] = {}          # quote currency -> expected profit of what was sent
        self.position: dict[tuple[str, str], float] = {}   # (venue, base currency) -> base bought less sold
        self.reaction_ns: list[int] = []

    def on_decision(self, decision: Decision, seen_ns: int) -> None:
        self.decisions += 1
        self.lost += decision.lost
        reaction_ns = seen_ns - decision.written_ns
        self.reaction_ns.append(reaction_ns)
        record = decision.record
        if decision.lost:
            self.say(f"PAPER LOST  {decision.lost} decisions (this follower fell a whole ring behind)")
        reaction = f"reaction {reaction_ns / 1000:.0f} µs"
        if decision.kind == "open":
            buy_px = decision.buy_limit_price or decision.buy_price
            sell_px = decision.sell_limit_price or decision.sell_price
            qty = decision.qty_base or 0.0
            base, quote = record.get("base_currency", "?"), record.get("quote_currency", "?")
            self.orders += 2
            self.expected[quote] = self.expected.get(quote, 0.0) + (decision.profit_quote or 0.0)
            buy_key, sell_key = (decision.buy_venue, base), (decision.sell_venue, base)
            self.position[buy_key] = self.position.get(buy_key, 0.0) + qty
            self.position[sell_key] = self.position.get(sell_key, 0.0) - qty
            self.say(f"PAPER OPEN  #{decision.id} {decision.instrument} BUY {qty:g} @ {buy_px:g} on "
                     f"{decision.buy_venue}, SELL {qty:g} @ {sell_px:g} on {decision.sell_venue}  expected "
                     f"{decision.profit_quote:+.4g} {quote}  {reaction}")
        elif decision.kind == "update":
            self.say(f"PAPER UPDATE #{decision.id} {decision.instrument} net {decision.net_bps:.2f} bps (nothing "
                     f"sent: the legs went out at the open)  {reaction}")
        elif decision.kind == "close":
            self.say(f"PAPER CLOSE #{decision.id} {decision.instrument} {record.get('close_reason', '')} after "
                     f"{record.get('duration_ms', 0.0):.0f} ms  {reaction}")

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def summary(self) -> str:
        r = sorted(self.reaction_ns)

        def pct(q: float) -> float:
            return r[min(len(r) - 1, int(q * len(r)))] / 1000 if r else 0.0
        expected = ", ".join(f"{v:+.4f} {q}" for q, v in sorted(self.expected.items())) or "0"
        position = ", ".join(f"{venue} {qty:+g} {base}" for (venue, base), qty in sorted(self.position.items())
                             if abs(qty) > 1e-12) or "flat"
        return (f"paper executor: {self.decisions} decisions, {self.orders} orders sent on paper, expected "
                f"{expected}; position {position}; reaction p50 {pct(0.5):.0f} µs p99 {pct(0.99):.0f} µs; "
                f"lost {self.lost}")


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--board", help="the running pipeline's board name (board.name)")
    where.add_argument("--config", help="the running pipeline's config file (its board.name is used)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    args = parser.parse_args(argv)
    board = args.board
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        if board is None:
            board = load_config(args.config).board.name
        stream = follow(board, stop=lambda: deadline is not None and time.monotonic() >= deadline)
    except PipelineError as exc:                  # no such board, a config that does not load
        print(f"paper_executor.py: {exc}", file=sys.stderr)
        return 2
    executor = PaperExecutor()
    signal.signal(signal.SIGTERM, _stop)         # a service manager's stop ends it like Ctrl-C: with the summary
    try:
        executor.say(f"paper executor: following the decisions on board {board!r}")
        for decision in stream:
            executor.on_decision(decision, time.time_ns())
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        pass
    executor.say(executor.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
