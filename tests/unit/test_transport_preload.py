"""What a feed connects with is loaded before the supervisor forks it (``pipeline.feed.transport.preload``).

A fresh interpreter loads ``preload(kinds)``, then opens a link of each kind to a real WebSocket server on
loopback (by the name ``localhost``, so the name lookup runs too): opening it must import nothing more. Without
the preload the same links import websockets' client (its proxy support and ``urllib.request``) or picows, the
IDNA codec and asyncio's thread pool, in every feed and every restart of one.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.feed.transport import available
from tests.conftest import REPO

pytestmark = pytest.mark.integration

CONNECT = """
import asyncio, sys
from websockets.asyncio.server import serve
from pipeline.feed.transport import open_link, preload
kinds = sys.argv[2:]
if sys.argv[1] == "preload":
    preload(kinds)

async def main():
    async def handler(ws):
        await ws.send("hello")
        await ws.wait_closed()
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        before = set(sys.modules)
        for kind in kinds:
            link = await open_link(kind, f"ws://localhost:{port}", None, 5)
            await link.close()
        print(" ".join(sorted(set(sys.modules) - before)))
asyncio.run(main())
"""


def imported_by_connecting(first: str, kinds: list[str]) -> list[str]:
    result = subprocess.run([sys.executable, "-c", CONNECT, first, *kinds], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize("kind", ["websockets", "picows"])
def test_after_the_preload_opening_a_link_imports_nothing(kind):
    if not available(kind):
        pytest.skip(f"{kind} is not installed (pip install -e '.[fast]')")
    assert imported_by_connecting("preload", [kind]) == []
    without = imported_by_connecting("none", [kind])          # what the preload spares each feed
    assert "encodings.idna" in without and "concurrent.futures.thread" in without
    assert ("picows" if kind == "picows" else "websockets.asyncio.client") in without
