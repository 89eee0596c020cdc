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
* ``await link.close()``;
* ``link.take_waiting()``: the most messages that waited in the library's queue
  since the last call (websockets; picows has no queue).

With websockets the messages come out of an ``async for``; with picows they
come straight out of the protocol callback, so a frame goes from the socket to
the session without a task switch. Text frames reach the session as ``str``
and binary frames as ``bytes``.

The receive time (``recv_ns``, wall clock) is taken as close to the socket as
each transport allows, never when the feed gets round to the frame, so frames
that waited (a backlog) carry the time they arrived and the wait shows in the
staleness rules (``feed/process.py`` measures it on every frame):

* websockets: the kernel's own receive time. The link opens its own TCP socket
  (:class:`StampedSocket`) with ``SO_TIMESTAMPNS`` on, and asyncio's reads of it
  go through ``recvmsg``, which returns when the last packet of each read
  reached the machine. Every message completed by that read carries it; they
  wait in the library's queue (:data:`MAX_QUEUE`) in order with their times
  (:class:`StampedConnection`). Where the kernel gives no stamp (not Linux, or
  through a proxy from the environment, where websockets opens the socket) it
  is the time of the read, before the messages are parsed and queued.
* picows: the time of the read, taken in the frame callback of the first frame
  the read completes; the frames behind it in the same read carry it too. picows
  reads through aiofastnet's own C transport, whose reads cannot be given a
  kernel stamp, so what waits in the kernel before a read is not seen. picows
  has no queue: each read is parsed and all its frames are handed over before
  the next read.

Flow control. websockets pauses reading once more than :data:`MAX_QUEUE`
messages wait (resuming at a quarter of it); one read (at most 256 KiB, asyncio's
read size) may add more. The rest waits in the kernel's receive buffer, and
then on the exchange's side (TCP flow control). picows' read buffer grows to the
largest read, which the kernel's receive buffer bounds (``net.ipv4.tcp_rmem``).

RFC 6455 pings: every ``ping_interval_s`` when the connection is idle (picows)
or always (websockets), and the connection is closed when no pong comes back
within the same interval; ``None`` turns them off.
"""
from __future__ import annotations

import asyncio
import functools
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable

from pipeline.choices import TRANSPORTS  # noqa: F401 - the transports (venues.NAME.transport) are named there

# one message, fragments joined: websockets closes a connection past it (1009), picows too
MAX_MESSAGE_BYTES = 2 ** 24
# websockets: reading pauses while more than this many messages wait in the library (it resumes at a quarter)
MAX_QUEUE = 64

SO_TIMESTAMPNS = 35            # <asm-generic/socket.h>; the control message it yields has the same type
_TIMESPEC = struct.Struct("@qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0


class Link:
    async def run(self, on_frame: Callable) -> str: ...

    def send(self, frame) -> None: ...

    def stop(self, reason: str) -> None: ...

    async def close(self) -> None: ...

    def take_waiting(self) -> int:
        """The most messages that waited in the library's queue since the last call (0 with picows: no queue)."""
        return 0


# ---------------------------------------------------------------- websockets

class StampedSocket(socket.socket):
    """A TCP socket whose reads note when their data reached the machine (``read_ns``, wall clock ns).

    ``SO_TIMESTAMPNS`` makes the kernel stamp every packet as it arrives; a read through ``recvmsg``
    returns the stamp of the last packet it took (Linux ``tcp_recv_timestamp``). asyncio's selector
    transport reads with ``recv`` or ``recv_into``, both of which go through ``recvmsg`` here. Without a
    stamp (the option refused, not Linux) ``read_ns`` is the time of the read.
    """

    __slots__ = ("read_ns", "stamped")

    def __init__(self, family=socket.AF_INET, type=socket.SOCK_STREAM, proto=0):   # noqa: A002 - socket's names
        super().__init__(family, type, proto)
        self.read_ns = 0
        self.stamped = False
        if sys.platform.startswith("linux") and _CMSG_SPACE:
            try:
                self.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self.stamped = True
            except OSError:
                pass

    def recv(self, bufsize, flags=0):
        if not self.stamped:
            data = super().recv(bufsize, flags)
            self.read_ns = time.time_ns()
            return data
        data, ancillary, _, _ = self.recvmsg(bufsize, _CMSG_SPACE, flags)
        self.read_ns = _stamp(ancillary)
        return data

    def recv_into(self, buffer, nbytes=0, flags=0):
        if not self.stamped:
            n = super().recv_into(buffer, nbytes, flags)
            self.read_ns = time.time_ns()
            return n
        if nbytes:
            buffer = memoryview(buffer)[:nbytes]
        n, ancillary, _, _ = self.recvmsg_into([buffer], _CMSG_SPACE, flags)
        self.read_ns = _stamp(ancillary)
        return n


def _stamp(ancillary) -> int:
    """The kernel's receive time in a ``recvmsg`` answer, else now."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return seconds * 1_000_000_000 + nanoseconds
    return time.time_ns()


async def connect_stamped(host: str, port: int) -> StampedSocket:
    """A connected :class:`StampedSocket` to ``host:port`` (each address in turn, as asyncio does)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = StampedSocket(family, kind, proto)
        try:
            sock.setblocking(False)
            if family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"no address for {host}:{port}")


@functools.cache
def stamped_connection_class():
    from websockets.asyncio.client import ClientConnection
    from websockets.frames import DATA_OPCODES

    class StampedConnection(ClientConnection):
        """websockets' connection, noting each message's receive time as the read that completes it is parsed.

        ``arrivals`` holds one time per message waiting in the library's queue, in order: the kernel's stamp
        of the read (:class:`StampedSocket`), else the time the read was handed to the protocol.
        """

        stamp_source: StampedSocket | None = None

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.arrivals: deque = deque()
            self.read_ns = 0

        def data_received(self, data: bytes) -> None:
            source = self.stamp_source
            self.read_ns = source.read_ns if source is not None and source.read_ns else time.time_ns()
            super().data_received(data)

        def process_event(self, event) -> None:
            super().process_event(event)           # the handshake, or the frame queued (or refused once closed)
            if getattr(event, "fin", False) and event.opcode in DATA_OPCODES:
                self.arrivals.append(self.read_ns)  # a message is complete: it waits with this time

    return StampedConnection


class WebsocketsLink(Link):
    def __init__(self, ws):
        self.ws = ws
        self._stop_reason = ""
        self._pending: list = []
        self._sender = None
        self.waiting_peak = 0

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
        arrivals = ws.arrivals
        async for raw in ws:
            recv_ns = arrivals.popleft() if arrivals else time.time_ns()
            waiting = len(arrivals)
            if waiting > self.waiting_peak:
                self.waiting_peak = waiting
            replies = on_frame(raw, recv_ns)
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

    def take_waiting(self) -> int:
        peak, self.waiting_peak = self.waiting_peak, 0
        return peak


async def _open_websockets(url: str, ping_interval_s: float | None, open_timeout_s: float) -> Link:
    from websockets.asyncio.client import connect
    from websockets.proxy import get_proxy
    from websockets.uri import parse_uri
    uri = parse_uri(url)
    options = dict(max_size=MAX_MESSAGE_BYTES, open_timeout=open_timeout_s, close_timeout=1, compression=None,
                   ping_interval=ping_interval_s, ping_timeout=ping_interval_s, max_queue=MAX_QUEUE)
    connection_class = stamped_connection_class()
    sock = None
    if get_proxy(uri) is None:         # through a proxy, websockets opens the socket (times of the reads then)
        sock = await asyncio.wait_for(connect_stamped(uri.host, uri.port), open_timeout_s)
        options["sock"] = sock

    def create_connection(*args, **kwargs):
        connection = connection_class(*args, **kwargs)
        connection.stamp_source = sock
        return connection
    try:
        ws = await connect(url, create_connection=create_connection, **options)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
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
        self._read_ns = 0                 # when the read being parsed was taken (0: the next frame starts a read)

    # -- picows listener callbacks (the listener forwards to these)
    def frame(self, frame) -> None:
        from picows import WSMsgType
        recv_ns = self._read_ns
        if not recv_ns:                                # the first frame of a read: its bytes were read just now
            recv_ns = self._read_ns = time.time_ns()
        if frame.last_in_buffer:                       # the frames behind it in the read carry the same time
            self._read_ns = 0
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
    await asyncio.wait_for(ws_connect(Listener, url, ssl_context=ssl_context,
                                      websocket_handshake_timeout=open_timeout_s,
                                      max_frame_size=MAX_MESSAGE_BYTES, **options), open_timeout_s + 1)
    return link


def preload(kinds) -> None:
    """Load what links of these kinds connect with, ahead of the first connection.

    The supervisor calls it before it forks the feeds, so that each feed, and each restart of one, starts with it
    loaded instead of importing it on its own (about 25 ms a feed): websockets' client with its proxy support, or
    picows; the IDNA codec a host name is encoded with for its lookup; the thread pool asyncio looks names up in."""
    import concurrent.futures.thread  # noqa: F401 - asyncio's getaddrinfo runs in its default executor
    import encodings.idna  # noqa: F401
    for kind in set(kinds):
        if kind == "picows":
            import picows  # noqa: F401
        else:
            stamped_connection_class()        # websockets' client, its proxy support and URI parser with it


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
