"""Which published rows changed: the writers' change lanes, followed as the detector follows them.

The publishing bridge sends the latest state of each local row that changed. It
learns which from the change lanes (:mod:`pipeline.board.layout`): one load of
each lane's counter per pass, then only the ring entries logged since the last
pass, so a pass costs per change, not per row, and a row logged ten times since
the last pass is a candidate once (conflation: the caller reads its latest
state). A lane that moved by a whole ring or more since the last pass cannot
say which rows changed: all its published rows are candidates. Rows whose
writer keeps no lane (a board whose creator assigned none) are candidates on
every pass, and the caller compares their seq words with the ones it sent.

Only the rows given are followed: the bridge's own lane (the rows it mirrors
from other boxes) is never read, so a mirrored row is never published again.

A candidate may be mid-write or read torn; the caller skips it then, and loses
nothing: that write logs the row in its lane again when it completes (and rings
the doorbell), so the next pass, or :meth:`ChangedRows.pending` before a sleep,
sees it.
"""
from __future__ import annotations

from pipeline.board import LANE_MASK, LANE_RING, Board, ChangeLane, lane_of_rows


class ChangedRows:
    """The candidates for publishing among ``rows`` (board rows, by published index) since the last pass.

    ``seq_words`` are the rows' seq words (u64 indices) and ``sent`` the seq last sent per published index
    (the caller's list, updated in place; -1: never): what :meth:`pending` compares the rows without a lane
    with.
    """

    def __init__(self, board: Board, rows: list[int], seq_words: list[int], sent: list[int]):
        self._words = board.buf.cast("B").cast("Q")
        by_lane: dict[int, dict[int, int]] = {}
        unlaned = []
        for i, row in enumerate(rows):
            lane = lane_of_rows(board, [row])
            if lane is None:
                unlaned.append(i)
            else:
                by_lane.setdefault(lane, {})[row] = i
        # per lane: [counter word, count seen, ring, {row: published index}, every published index it logs]
        self._lanes: list[list] = []
        for lane, index in sorted(by_lane.items()):
            where = ChangeLane(board, lane)
            self._lanes.append([where.count_word, self._words[where.count_word], where.ring, index,
                                sorted(index.values())])
        self._unlaned = unlaned
        self._unlaned_words = [(i, seq_words[rows[i]]) for i in unlaned]
        self._sent = sent
        self._every = list(range(len(rows)))
        self._all = True                       # the first pass: every row

    def mark_all(self) -> None:
        """Every row a candidate at the next pass (a resend: a refresh, a reconnection)."""
        self._all = True

    def changed(self) -> list[int]:
        """Published indices that may have changed since the last pass (each once); consumes the lanes."""
        words = self._words
        if self._all:
            self._all = False
            for lane in self._lanes:
                lane[1] = words[lane[0]]       # before the rows: a publish after this is logged again, never lost
            return self._every
        out: dict[int, None] = {}
        for lane in self._lanes:
            count = words[lane[0]]
            seen = lane[1]
            if count == seen:
                continue
            if count - seen < LANE_RING:
                ring, index = lane[2], lane[3]
                rows = [ring[n & LANE_MASK] for n in range(seen, count)]
                if words[lane[0]] - seen < LANE_RING:      # (after the entries: none was overwritten)
                    lane[1] = count
                    for row in rows:
                        i = index.get(row)
                        if i is not None:
                            out[i] = None
                    continue
            lane[1] = count                    # lapped: every row of the lane
            out.update(dict.fromkeys(lane[4]))
        if self._unlaned:
            out.update(dict.fromkeys(self._unlaned))
        return list(out)

    def pending(self) -> bool:
        """Whether :meth:`changed` would find a change now (the doorbell's re-check before sleeping)."""
        if self._all:
            return True
        words = self._words
        for lane in self._lanes:
            if words[lane[0]] != lane[1]:
                return True
        sent = self._sent
        for i, word in self._unlaned_words:
            seq = words[word]
            if seq != sent[i] and not seq & 1:
                return True
        return False
