"""A frame that inflates to far more than the venue ever sends is refused at the cap, not inflated.

HTX gzips every frame. A 200 KB frame of zeros inflates to 200 MB; the old cap (64 MiB, the general frame
limit) still let one such frame cost 64 MB and a burst of them gigabytes. HTX's own largest frame (a
400-level refresh) is about 25 KB, so it now stops inflating at 4 MiB and counts the frame as oversize.
"""
from __future__ import annotations

import resource
import zlib

from pipeline.feed.session import FeedSession, MemorySink
from pipeline.model import SkipReason
from pipeline.venues import load_venue
from pipeline.venues.htx import wire as htx

SECOND = 1_000_000_000


def gzip_bomb(inflated_mb: int) -> bytes:
    """A gzip frame that inflates to ``inflated_mb`` MB of JSON text, made one MB at a time."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"0" * (1024 * 1024)
    parts = [packer.compress(b'{"ch":"market.btcusdt.bbo","tick":{"x":"')]
    parts += [packer.compress(chunk) for _ in range(inflated_mb)]
    parts.append(packer.compress(b'"}}') + packer.flush())
    return b"".join(parts)


def test_an_htx_gzip_bomb_is_refused_as_oversize_at_the_cap():
    bomb = gzip_bomb(200)
    assert len(bomb) < 300_000                         # a few hundred KB on the wire
    session = FeedSession(load_venue("htx"), {"btcusdt": 0}, 5, 5 * SECOND, MemorySink(5))
    conn = session.connection_opened(["btcusdt"], 0)
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for n in range(3):
        session.receive(bomb, n, conn)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib
    assert session.stats.skipped(SkipReason.OVERSIZE) == 3
    assert grown_kib < 3 * htx.MAX_INFLATED_BYTES // 1024, grown_kib   # the peak: a cap or two, not 64+ MB


def test_a_real_sized_frame_still_inflates():
    frame = zlib.compress(b'{"ping":1786563068868}', 9, wbits=16 + zlib.MAX_WBITS)
    assert htx.decompress(frame) == b'{"ping":1786563068868}'
