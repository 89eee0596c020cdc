"""A message sent in fragments is bounded like any other: past 16 MiB the connection ends, on both transports.

picows joined fragments with no total cap (websockets enforces its ``max_size`` on the whole message), so a
server could grow a feed's memory without limit by never sending the last fragment. A real WebSocket server
on loopback sends 20 fragments of 1 MiB; the link ends the connection once they pass the cap, and the
session never sees the message.
"""
from __future__ import annotations

import asyncio

import pytest

from pipeline.feed.retry import should_reconnect
from pipeline.feed.transport import MAX_MESSAGE_BYTES, available, open_link

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["websockets", "picows"])
def test_a_message_past_the_cap_in_fragments_ends_the_connection(kind):
    if not available(kind):
        pytest.skip(f"{kind} is not installed (pip install -e '.[fast]')")
    from websockets.asyncio.server import serve

    async def scenario():
        async def handler(ws):
            await ws.send("small")
            await ws.send([b"x" * (1 << 20) for _ in range(20)])     # one 20 MiB binary message, 20 fragments
            await ws.wait_closed()                              # until the client gives up on it

        async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            link = await open_link(kind, f"ws://127.0.0.1:{port}", None, 5)
            seen = []
            try:
                ended = await asyncio.wait_for(link.run(lambda raw, recv_ns: seen.append(len(raw)) or []), 10)
            except Exception as exc:  # noqa: BLE001 - websockets raises its own ConnectionClosed
                ended = exc
            await link.close()
            return seen, ended

    seen, ended = asyncio.run(scenario())
    assert seen == [5]                                  # the small message, never the big one
    assert 20 * (1 << 20) > MAX_MESSAGE_BYTES
    if kind == "picows":
        assert ended == f"message too big (more than {MAX_MESSAGE_BYTES} bytes in fragments)"
    else:                                               # websockets closes with 1009; the feed reconnects
        assert should_reconnect(ended) and "exceeds limit of 16777216 bytes" in str(ended.__cause__ or ended)
