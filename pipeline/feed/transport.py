"""The feed's WebSocket connection, behind one small interface, in two implementations.

``websockets`` (the default; a core dependency) and ``picows`` (``pip install
-e '.[fast]'``; a Cython WebSocket client about 15x faster at receiving on
loopback, see docs/benchmarks.md) both offer the same :class:`Link`:

* ``await open_link(kind, url, ping_interval_s, open_timeout_s)`` connects;
* ``link.send(frame)`` sends one text frame (non-blocking: frames are queued
  by the library);
* ``await link.run(on_frame)`` hands every received message to
  ``on_frame(raw, recv_ns)`` until the connection closes, and returns why;
  ``on_frame`` returns the frames to send back, and the link sends them;
  ``link.stop(reason)`` ends ``run``;
* ``await link.close()``.

With websockets the messages come out of an ``async for``; with picows they
come straight out of the protocol callback, so a frame goes from the socket to
the session without a task switch. Either way the receive time is taken the
moment the message is complete, and text frames reach the session as ``str``
and binary frames as ``bytes``, exactly as before.

RFC 6455 pings: every ``ping_interval_s`` when the connection is idle (picows)
or always (websockets), and the connection is closed when no pong comes back
within the same interval; ``None`` turns them off.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable

TRANSPORTS = ("websockets", "picows")
MAX_MESSAGE_BYTES = 2 ** 24    # one message, fragments joined: websockets closes a connection past it (1009), picows too


class Link:
    async def run(self, on_frame: Callable) -> str: ...

    def send(self, frame) -> None: ...

    def stop(self, reason: str) -> None: ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------- websockets

class WebsocketsLink(Link):
    def __init__(self, ws):
        self.ws = ws
        self._stop_reason = ""
        self._pending: list = []
        self._sender = None

    def send(self, frame) -> None:
        self._pending.append(frame)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            frame = self._pending.pop(0)
            await self.ws.send(frame)

    async def send_now(self, frame) -> None:
        await self.ws.send(frame)

    async def run(self, on_frame: Callable) -> str:
        ws = self.ws
        async for raw in ws:
            replies = on_frame(raw, time.time_ns())
            for frame in replies:
                await ws.send(frame)
            if self._stop_reason:
                return self._stop_reason
        return self._stop_reason or "closed by the exchange"

    def stop(self, reason: str) -> None:
        self._stop_reason = reason
        # ends the async for at the next frame; a quiet connection is ended by closing it
        asyncio.ensure_future(self.ws.close())

    async def close(self) -> None:
        await self.ws.close()


async def _open_websockets(url: str, ping_interval_s: float | None, open_timeout_s: float) -> Link:
    from websockets.asyncio.client import connect
    ws = await connect(url, max_size=MAX_MESSAGE_BYTES, open_timeout=open_timeout_s, close_timeout=1, compression=None,
                       ping_interval=ping_interval_s, ping_timeout=ping_interval_s, max_queue=None)
    return WebsocketsLink(ws)


# ---------------------------------------------------------------- picows

class PicowsLink(Link):
    """A picows connection: messages are handed over in the protocol callback."""

    def __init__(self):
        self.transport = None
        self.on_frame: Callable | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._stop_reason = ""
        self._backlog: list = []          # messages that arrived before run() (login, subscribe acks)
        self._parts: list = []
        self._size = 0                    # bytes of the fragmented message collected so far
        self._text = True

    # -- picows listener callbacks (the listener forwards to these)
    def frame(self, frame) -> None:
        from picows import WSMsgType
        kind = frame.msg_type
        if kind == WSMsgType.TEXT or kind == WSMsgType.BINARY:
            if not frame.fin:                          # a fragmented message: collect it
                self._parts = [frame.get_payload_as_bytes()]
                self._size = len(self._parts[0])
                self._text = kind == WSMsgType.TEXT
                return
            raw = frame.get_payload_as_utf8_text() if kind == WSMsgType.TEXT else frame.get_payload_as_bytes()
        elif kind == WSMsgType.CONTINUATION:
            part = frame.get_payload_as_bytes()
            self._size += len(part)
            if self._size > MAX_MESSAGE_BYTES:         # as websockets does: a message this big ends the connection
                self._parts = []
                self.stop(f"message too big (more than {MAX_MESSAGE_BYTES} bytes in fragments)")
                return
            self._parts.append(part)
            if not frame.fin:
                return
            data = b"".join(self._parts)
            self._parts = []
            raw = data.decode("utf-8", "replace") if self._text else data
        elif kind == WSMsgType.CLOSE:
            self.transport.send_close(frame.get_close_code())
            self.transport.disconnect()
            return
        else:
            return                                     # pings are answered by picows itself, pongs need nothing
        recv_ns = time.time_ns()
        on_frame = self.on_frame
        if on_frame is None:
            self._backlog.append((raw, recv_ns))
            return
        for reply in on_frame(raw, recv_ns):
            self.send(reply)
        if self._stop_reason:
            self.transport.disconnect()

    def disconnected(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    # -- Link
    def send(self, frame) -> None:
        from picows import WSMsgType
        if isinstance(frame, str):
            self.transport.send(WSMsgType.TEXT, frame.encode())
        else:
            self.transport.send(WSMsgType.BINARY, frame)

    async def send_now(self, frame) -> None:
        self.send(frame)

    async def run(self, on_frame: Callable) -> str:
        backlog, self._backlog = self._backlog, []
        self.on_frame = on_frame
        for raw, recv_ns in backlog:
            for reply in on_frame(raw, recv_ns):
                self.send(reply)
        if not self._stop_reason:
            await asyncio.shield(self.closed)
        return self._stop_reason or "closed by the exchange"

    def stop(self, reason: str) -> None:
        self._stop_reason = reason
        self.transport.disconnect()

    async def close(self) -> None:
        if not self.closed.done():
            self.transport.disconnect()
            await asyncio.shield(self.closed)


async def _open_picows(url: str, ping_interval_s: float | None, open_timeout_s: float) -> Link:
    import ssl

    from picows import WSListener, ws_connect
    link = PicowsLink()

    class Listener(WSListener):
        def on_ws_connected(self, transport):
            link.transport = transport

        def on_ws_frame(self, transport, frame):
            link.frame(frame)

        def on_ws_disconnected(self, transport):
            link.disconnected()

    options = {}
    if ping_interval_s:
        options = {"enable_auto_ping": True, "auto_ping_idle_timeout": ping_interval_s,
                   "auto_ping_reply_timeout": ping_interval_s}
    ssl_context = ssl.create_default_context() if url.startswith("wss://") else None
    await asyncio.wait_for(ws_connect(Listener, url, ssl_context=ssl_context, websocket_handshake_timeout=open_timeout_s,
                                      max_frame_size=MAX_MESSAGE_BYTES, **options), open_timeout_s + 1)
    return link


async def open_link(kind: str, url: str, ping_interval_s: float | None, open_timeout_s: float) -> Link:
    if kind == "picows":
        return await _open_picows(url, ping_interval_s, open_timeout_s)
    return await _open_websockets(url, ping_interval_s, open_timeout_s)


def available(kind: str) -> bool:
    if kind == "websockets":
        return True
    try:
        import picows  # noqa: F401
    except ImportError:
        return False
    return True
