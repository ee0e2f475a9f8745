"""Loopback stream relay: how an upstream stream the addon holds reaches the client.

mitmproxy can only stream a response it receives from a server, and an addon
cannot hand it one. So the addon opens the upstream stream itself (to own
timeouts, errors and, later, failover), then points the flow at this small
HTTP/1.1 server inside the same process. The relay answers with the stream,
converted frame by frame, and mitmproxy passes it on to the client unbuffered.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Callable
from typing import Protocol

import aiohttp
from aiohttp.client_proto import ResponseHandler
from mitmproxy import ctx, http

from converters.sse import StreamFault
from llmgate.request_path.upstream import broke_off

log = logging.getLogger(__name__)

CLAIM_TIMEOUT = 30.0  # seconds a registered stream waits for mitmproxy to fetch it
# Kernel socket buffers a stream may fill when its client stops reading. Left to autotuning,
# each grows to net.ipv4.tcp_wmem/tcp_rmem's max (4 MiB and more): 200 such clients then push
# the kernel's TCP memory into pressure, and every other connection slows to a crawl.
SOCKET_BUFFER = 256 << 10
READ_SIZE = 64 << 10  # bytes per upstream read at most: what one queued item can hold
CAPTURE_LIMIT = 256 << 10  # bytes of each side of a stream kept for inspection (per stream: many may be open)


class StreamTransform(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...
    def fail(self, message: str, code: str = ...) -> bytes: ...


class Capture:
    """The first CAPTURE_LIMIT bytes of a stream, for mitmweb and saved flows; with keep=False
    only their count (nothing will show them: up to CAPTURE_LIMIT per open stream not held)."""

    __slots__ = ("parts", "size", "truncated", "keep")

    def __init__(self, keep: bool = True) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.keep = keep

    def add(self, chunk: bytes) -> None:
        if self.size >= CAPTURE_LIMIT:
            self.truncated = True
        elif self.keep:
            self.parts.append(chunk)
        self.size += len(chunk)

    def bytes(self) -> bytes:
        if len(self.parts) > 1:  # asked for twice per stream (the request log, the flow): joined once
            self.parts = [b"".join(self.parts)]
        return self.parts[0] if self.parts else b""


class _ClientGone(Exception):
    """The relay connection failed while writing: mitmproxy closed it because the client left."""


class Pipe:
    """One upstream stream, converted and written to the relay connection.

    Each upstream read is converted and written in the same callback that received it (the
    upstream connection's data_received): one event-loop pass from the provider's socket to
    mitmproxy's side of the relay, as bare mitmproxy takes from socket to socket. A task stands
    by for what cannot be done there: waiting for mitmproxy to fetch the stream, for a client
    that stopped reading, for the end or the failure of the upstream read.

    Until mitmproxy fetches the stream, at most BACKLOG outputs wait and reading pauses.
    What a client that stops reading can hold: one read, the captures, aiohttp's read buffer,
    mitmproxy's reader of the hop (its writes wait beyond 128 KiB), mitmproxy's write buffer
    (it drains before reading more) and the client socket's buffers (bound_socket_buffers)."""

    BACKLOG = 2

    def __init__(self, resp: aiohttp.ClientResponse, transform: StreamTransform,
                 headers: list[tuple[bytes, bytes]], who: str, read_timeout: float, head: bytes = b"",
                 keep_upstream: bool = True):
        self.resp = resp
        self.head = head  # bytes read before the stream was handed over (provider_call.first_event)
        self.transform = transform
        self.headers = headers
        self.who = who
        self.read_timeout = read_timeout
        self.upstream = Capture(keep_upstream)  # raw bytes from the provider (for its provider-side flow)
        self.client = Capture()  # bytes sent on to the client (its flow, and the usage the request log counts)
        self.outcome = "pending"  # complete | upstream-error | client-gone | unclaimed
        self.first_sent: float | None = None  # when the first bytes went to the client (time to first token)
        self._writer: asyncio.StreamWriter | None = None  # the relay connection, once mitmproxy fetched the stream
        self._backlog: list[bytes] = []  # output made before that
        self._claimed = asyncio.Event()
        self._pushing = False  # data_received converts and writes (the task is waiting for it to stop)
        self._in_push = False  # _push is running (it must not run inside itself)
        self._listener: Callable[[bytes], None] | None = None  # our data_received on aiohttp's protocol
        self._timer: LazyReadTimeout | None = None  # the read timeout, while listening
        self._reading: asyncio.Future[bytes] | None = None  # the task's wait for a read (_slow)
        self._stopped: asyncio.Future[None] | None = None  # set when the synchronous path stops
        self._fault: BaseException | None = None  # what stopped it, if the task must raise it
        loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[bool] = loop.create_future()  # run()'s answer
        # read at once: aiohttp drops buffered data when the connection dies before it is read
        self._puller = loop.create_task(self._pull())

    async def _pull(self) -> None:
        ok = False
        try:
            tail = await self._convert()
            if tail:
                self._emit(tail)
                await self._drain()
            self._emit(b"")
            await self._drain()
            ok = True
        except _ClientGone:
            self.outcome = "client-gone"
        finally:
            if not self._ended.done():
                self._ended.set_result(ok)

    async def _convert(self) -> bytes:
        """Read, convert and send the stream; returns its last bytes (an end or error event)."""
        try:
            if self.head:
                self._take(self.head)
            await self._read_all()
            tail, self.outcome = self.transform.finish(), "complete"
        except StreamFault as f:  # an event too large or malformed: the rest is not read
            tail = f.before + self.transform.fail(f"Upstream {self.who} {f.message}", f.code)
            self.outcome = "upstream-error"
        except (TimeoutError, aiohttp.ServerTimeoutError):
            tail = self.transform.fail(
                f"Upstream {self.who} sent nothing for {self.read_timeout:g} s; the stream was cut off.",
                "upstream_timeout",
            )
            self.outcome = "upstream-error"
        except aiohttp.ClientError as e:
            tail = self.transform.fail(
                f"Upstream {self.who} {broke_off(e, self.upstream.size, 'the stream')}.", "upstream_disconnected"
            )
            self.outcome = "upstream-error"
        except _ClientGone:
            raise
        except RecursionError:  # an event nested past json.loads' reach: the upstream's bytes, not a converter bug
            tail = self.transform.fail(f"Upstream {self.who} sent an event that nests its JSON too deeply to be read.",
                                       "upstream_error")
            self.outcome = "upstream-error"
        except Exception:  # a converter bug must end this stream with an error, not hang it
            log.exception("stream conversion failed")
            tail = self.transform.fail("The gateway failed converting the stream; its log has the details.",
                                       "internal_error")
            self.outcome = "upstream-error"
        finally:
            self.resp.close()
        return tail

    async def _read_all(self) -> None:
        """Until the upstream's end: data_received converts each read while it can; this task
        takes over (awaiting the fetch or a full client) whenever it cannot. Raises what ended
        the read (a timeout, a broken connection, a conversion error)."""
        eof = asyncio.ensure_future(self.resp.content.wait_eof())  # raises the read's error: timeout, disconnect
        protocol = self.resp.connection.protocol if self.resp.connection is not None else None  # None: all read
        if protocol is not None:
            self._listen(protocol)
        try:
            while True:
                await self._catch_up()
                if eof.done():
                    break
                if not isinstance(self._writer_transport(), _InProcess):
                    await self._slow(eof)  # not fetched yet (or fetched over TCP)
                    continue
                self._stopped = asyncio.get_running_loop().create_future()
                self._pushing = True
                self._push()  # what arrived since the task last looked
                try:
                    await asyncio.wait((eof, self._stopped), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self._pushing = False
                if self._fault is not None:
                    raise self._fault
            eof.result()
            await self._catch_up()  # what came with the end
        finally:
            eof.cancel()
            if protocol is not None:
                self._unlisten(protocol)

    async def _slow(self, eof: asyncio.Future) -> None:
        """Wait for the next read as any reader does (run() stops the wait when the stream is
        fetched: from then on data_received takes each read, the first token included)."""
        read = self._reading = asyncio.ensure_future(self.resp.content.readany())
        try:
            await asyncio.wait((eof, read), return_when=asyncio.FIRST_COMPLETED)
            if read.done() and not read.cancelled() and read.exception() is None and (chunk := read.result()):
                self._take(chunk)
        finally:
            self._reading = None
            read.cancel()

    def _listen(self, protocol: ResponseHandler) -> None:
        """Take each read as aiohttp's protocol receives it (for the stream's life): its parser
        hands the body's bytes to _feed, which converts and writes them when it can and leaves
        them in aiohttp's buffer when it cannot (read from there by _push or the task, in order)."""
        received, content = type(protocol).data_received.__get__(protocol), self.resp.content

        def data_received(data: bytes) -> None:
            received(data)
            if content.is_eof():  # aiohttp gives the connection back to its pool at the end
                self._unlisten(protocol)
            if content._buffer:  # what _feed left there
                self._push()

        protocol.data_received = self._listener = data_received  # type: ignore[method-assign]
        if type(content) is aiohttp.StreamReader:  # slotted: its class is swapped, not its methods
            _PIPED[id(content)] = self
            content.__class__ = _Piped
        self._timer = LazyReadTimeout(protocol)

    def _unlisten(self, protocol: ResponseHandler) -> None:
        """Stop listening, unless the connection serves another stream by now (back in aiohttp's
        pool at this one's end, while this task still waited for its client)."""
        if protocol.__dict__.get("data_received") is self._listener:
            del protocol.__dict__["data_received"]
        content = self.resp.content
        if _PIPED.get(id(content)) is self:
            content.__class__ = aiohttp.StreamReader
            del _PIPED[id(content)]
        if self._timer is not None:
            self._timer.remove()
            self._timer = None

    def _feed(self, data: bytes, size: int = 0) -> bool:
        """aiohttp's parser hands over body bytes: converted and written at once while the
        synchronous path runs and nothing older waits in aiohttp's buffer, else buffered there
        (StreamReader.feed_data, which pauses the socket when that buffer is full)."""
        content = self.resp.content
        if not self._pushing or self._in_push or content._buffer or not data or self._blocked():
            return aiohttp.StreamReader.feed_data(content, data, size)
        content.total_bytes += len(data)
        self._in_push = True
        try:
            self._take(data)
            if self._blocked():
                self._stop_pushing()  # the output has nowhere to go: the task waits for the client
        except Exception as e:  # a conversion error or a client gone: the task raises it
            self._fault = e
            self._stop_pushing()
        finally:
            self._in_push = False
        return False

    def _push(self) -> None:
        """Convert and write what is in aiohttp's buffer, or stop."""
        if not self._pushing or self._in_push:  # re-entered: aiohttp's read_nowait may resume its parser,
            return  # which calls data_received; the outer loop reads on, in order
        self._in_push = True
        try:
            while not self._blocked():
                chunk = self.resp.content.read_nowait(READ_SIZE)
                if not chunk:
                    return
                self._take(chunk)
            self._stop_pushing()  # the output has nowhere to go: the task waits for the client
        except (aiohttp.ClientError, TimeoutError):  # the read's error: the task gets it from the end of the read
            self._stop_pushing()
        except Exception as e:  # a conversion error or a client gone: the task raises it
            self._fault = e
            self._stop_pushing()
        finally:
            self._in_push = False

    def _stop_pushing(self) -> None:
        self._pushing = False
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    async def _catch_up(self) -> None:
        """Convert and write what is buffered, waiting for the fetch or the client as needed."""
        content = self.resp.content
        while True:
            if self._writer is None and len(self._backlog) >= self.BACKLOG:
                await self._claimed.wait()
            await self._drain()
            chunk = content.read_nowait(READ_SIZE)
            if not chunk:
                return
            self._take(chunk)

    def _take(self, chunk: bytes) -> None:
        self.upstream.add(chunk)
        out = self.transform.feed(chunk)
        if out:
            self._emit(out)

    def _writer_transport(self) -> asyncio.BaseTransport | None:
        return self._writer.transport if self._writer is not None else None

    def _blocked(self) -> bool:
        if self._writer is None:
            return len(self._backlog) >= self.BACKLOG
        t = self._writer.transport
        return t.is_closing() or (isinstance(t, _InProcess) and t.paused)

    def _emit(self, data: bytes) -> None:
        """One HTTP chunk to the relay connection (b"": the last), or to the backlog before it exists."""
        w = self._writer
        if w is None:
            self._backlog.append(data)
            return
        if w.transport.is_closing():
            raise _ClientGone
        self._write(w, data)

    async def _drain(self) -> None:
        w = self._writer
        if w is None:
            return
        try:
            await w.drain()
        except (ConnectionError, RuntimeError):
            raise _ClientGone from None

    def _write(self, w: asyncio.StreamWriter, data: bytes) -> None:
        if not data:
            w.write(b"0\r\n\r\n")
            return
        if self.first_sent is None:
            self.first_sent = time.time()
        self.client.add(data)
        w.transport.write(b"%x\r\n%b\r\n" % (len(data), data))  # StreamWriter.write, one call less

    async def run(self, writer: asyncio.StreamWriter) -> bool:
        """Send the stream as a chunked HTTP/1.1 response. False if the connection is unusable."""
        head = [b"HTTP/1.1 200 OK", *(k + b": " + v for k, v in self.headers), b"Transfer-Encoding: chunked"]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n")
        for data in self._backlog:
            self._write(writer, data)
        self._backlog.clear()
        self._writer = writer
        self._claimed.set()
        if self._reading is not None and isinstance(writer.transport, _InProcess):
            self._reading.cancel()  # nothing read by it is lost: aiohttp hands data over only on return
        try:
            await writer.drain()
        except (ConnectionError, RuntimeError):
            self.abandon("client-gone")
            return False
        return await self._ended

    def abandon(self, outcome: str) -> None:
        """Stop reading the upstream (which closes it), e.g. because the client left."""
        if not self._puller.done():
            self.outcome = outcome
            self._puller.cancel()
        if not self._ended.done():
            self._ended.set_result(False)  # wake run() at once


_PIPED: dict[int, Pipe] = {}  # id of an aiohttp StreamReader -> the Pipe its body goes to


class _Piped(aiohttp.StreamReader):
    """An aiohttp StreamReader whose body bytes go to its Pipe (Pipe._feed) while it listens."""

    __slots__ = ()

    def feed_data(self, data: bytes, size: int = 0) -> bool:
        return _PIPED[id(self)]._feed(data, size)

    def end_http_chunk_receiving(self) -> None:
        """Where each HTTP chunk ends is kept for iter_chunks(), which nothing here reads."""


class LazyReadTimeout:
    """aiohttp's read timeout (sock_read) on a streaming connection, without a new timer per read.

    aiohttp cancels its timer and starts another for every read: for 200 streams of 20 reads a
    second, 4000 timer objects a second in the event loop's heap, most of them cancelled. Here a
    read only notes the time; the one timer, when due, sets itself again from the last read, or
    fails the read as aiohttp would. aiohttp's own pauses still stop it (_drop_timeout)."""

    __slots__ = ("_protocol", "_loop", "_last")

    def __init__(self, protocol: ResponseHandler):
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        running = protocol._read_timeout_handle is not None  # none while aiohttp has reading paused
        protocol._drop_timeout()  # aiohttp's timer, started at the last read: this one replaces it
        protocol._reschedule_timeout = self._read  # type: ignore[method-assign]
        if running:
            self._read()

    def _read(self) -> None:
        p = self._protocol
        self._last = self._loop.time()
        if p._read_timeout_handle is None and p._read_timeout:
            p._read_timeout_handle = self._loop.call_at(self._last + p._read_timeout, self._due)

    def _due(self) -> None:
        p = self._protocol
        p._read_timeout_handle = None
        if not p._read_timeout:
            return
        due = self._last + p._read_timeout
        if due > self._loop.time():  # read since the timer was set
            p._read_timeout_handle = self._loop.call_at(due, self._due)
        else:
            p._on_read_timeout()

    def remove(self) -> None:
        """aiohttp's own timer back, for a body still being read."""
        p = self._protocol
        if p.__dict__.get("_reschedule_timeout") == self._read:
            del p.__dict__["_reschedule_timeout"]
            handle = p._read_timeout_handle
            if handle is not None and handle._callback == self._due:  # type: ignore[attr-defined]
                p._drop_timeout()
                if p._payload is not None:
                    p._reschedule_timeout()


class _InProcess(asyncio.Transport):
    """One end of an in-process connection: what it writes is what the other end's protocol
    receives, with no socket, syscall or poll in between. Flow control as on a socket: a
    reader whose buffer is full pauses the other end's writer (its drain waits)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, peername: tuple[str, int]):
        super().__init__()
        self._loop = loop
        self._extra = {"peername": peername, "sockname": ("127.0.0.1", 0), "socket": None}
        self._closing = False
        self.paused = False  # the other end's reader is full: writes should wait (drain)
        self.protocol: asyncio.StreamReaderProtocol
        self.reader: asyncio.StreamReader  # what its protocol feeds (held here: the protocol holds it weakly)
        self.peer: _InProcess

    def get_extra_info(self, name: str, default=None):
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data) -> None:
        if not self._closing and not self.peer._closing:
            self.peer.reader.feed_data(data)  # as the peer's StreamReaderProtocol.data_received would

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self.peer._closing:
            self.peer.protocol.eof_received()

    def get_write_buffer_size(self) -> int:
        return 0  # written data is in the other end's reader at once

    def pause_reading(self) -> None:
        self.peer.paused = True
        self.peer.protocol.pause_writing()

    def resume_reading(self) -> None:
        self.peer.paused = False
        self.peer.protocol.resume_writing()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self.protocol.connection_lost, None)
            self.peer.close()

    def abort(self) -> None:
        self.close()


def in_process_pair(peername: tuple[str, int]) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], ...]:
    """Two connected (reader, writer) ends, as asyncio.open_connection and a server's callback get them."""
    loop = asyncio.get_running_loop()
    a, b = _InProcess(loop, peername), _InProcess(loop, ("127.0.0.1", 0))
    a.peer, b.peer = b, a
    ends = []
    for t in (a, b):
        t.reader = reader = asyncio.StreamReader(loop=loop)
        t.protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        t.protocol.connection_made(t)
        ends.append((reader, asyncio.StreamWriter(t, t.protocol, reader, loop)))
    return tuple(ends)


_RELAYS: dict[int, StreamRelay] = {}  # relays running in this process, by port
_tcp_open_connection = asyncio.open_connection


async def _open_connection(host=None, port=None, **kwds):
    """asyncio.open_connection, except that a connection to a relay of this process (mitmproxy
    fetching a stream) is made in process: the hop costs no socket, syscalls or polling."""
    relay = _RELAYS.get(port) if host == "127.0.0.1" else None
    if relay is None:
        return await _tcp_open_connection(host, port, **kwds)
    # yield once, as a connect does: mitmproxy registers the connection's task after starting it
    # (eagerly), and data it sends before that would find no writer
    await asyncio.sleep(0)
    return relay.connect_in_process()


def bound_socket_buffers(flow: http.HTTPFlow) -> None:
    """Cap the kernel buffers of a streamed flow's client socket (send) and of mitmproxy's
    end of the relay hop (receive); the relay's own end is capped when it accepts."""
    server = ctx.master.addons.get("proxyserver")
    handler = server.connections.get(flow.client_conn.id) if server is not None else None
    if handler is None:
        return
    for conn, option in ((flow.client_conn, socket.SO_SNDBUF), (flow.server_conn, socket.SO_RCVBUF)):
        io = handler.transports.get(conn)
        extra = getattr(io.writer, "get_extra_info", None) if io is not None else None  # not on WireGuard streams
        sock = extra("socket") if extra is not None else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)


def point_at_relay(req: http.Request, port: int, token: str) -> tuple:
    """Aim a client request at the relay, bodiless; returns what restore() needs.

    The request's fields are swapped in place: building a new mitmproxy Request
    costs more than the rest of the hop (its fields are type-checked).
    """
    d = req.data
    saved = (d.host, d.port, d.scheme, d.authority, d.path, d.headers, d.content)
    d.host, d.port, d.scheme, d.authority, d.path = "127.0.0.1", port, b"http", b"", f"/{token}".encode()
    d.headers = http.Headers(host=f"127.0.0.1:{port}", content_length="0")
    d.content = b""
    return saved


def restore(req: http.Request, saved: tuple) -> None:
    d = req.data
    d.host, d.port, d.scheme, d.authority, d.path, d.headers, d.content = saved


class StreamRelay:
    def __init__(self) -> None:
        # token -> the stream and its unclaimed-expiry timer (cancelled when claimed: a timer
        # left for every stream kept thousands in the event loop's heap under load)
        self._pipes: dict[str, tuple[Pipe, asyncio.TimerHandle]] = {}
        self._server: asyncio.base_events.Server | None = None
        self._starting: asyncio.Lock | None = None
        self._serving: set[asyncio.Task] = set()  # in-process connections being served
        self.port: int = 0

    async def ensure_started(self) -> int:
        if self._server is None:
            self._starting = self._starting or asyncio.Lock()
            async with self._starting:
                if self._server is None:
                    self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                    self.port = self._server.sockets[0].getsockname()[1]
                    _RELAYS[self.port] = self
                    asyncio.open_connection = _open_connection  # mitmproxy's server connections dial through it
                    log.debug("stream relay listening on 127.0.0.1:%d", self.port)
        return self.port

    def connect_in_process(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to this relay without a socket (the listening one stays: its port names
        the relay, and any client outside this process still reaches it)."""
        ours, theirs = in_process_pair(("127.0.0.1", self.port))
        task = asyncio.get_running_loop().create_task(self._serve(*theirs))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        return ours

    def register(self, pipe: Pipe) -> str:
        token = secrets.token_urlsafe(16)
        self._pipes[token] = (pipe, asyncio.get_running_loop().call_later(CLAIM_TIMEOUT, self._expire, token))
        return token

    def _claim(self, token: str) -> Pipe | None:
        pipe, timer = self._pipes.pop(token, (None, None))
        if timer is not None:
            timer.cancel()
        return pipe

    def _expire(self, token: str) -> None:
        pipe = self._claim(token)
        if pipe is not None:
            pipe.abandon("unclaimed")

    def discard(self, token: str) -> None:
        self._expire(token)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                parts = request_line.split(" ")
                token = parts[1].lstrip("/") if len(parts) == 3 else ""
                pipe = self._claim(token)
                if pipe is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    return
                if not await pipe.run(writer):
                    return
        except Exception:  # never let a relay connection take the process down
            log.exception("stream relay connection failed")
        finally:
            writer.close()

    async def close(self) -> None:
        for token in list(self._pipes):
            self._expire(token)
        if self._server is not None:
            _RELAYS.pop(self.port, None)
            self._server.close()
            self._server = None
