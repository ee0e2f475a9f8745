"""Addon: bounds on what clients send and how long they hold a connection (server.limits).

- request_body() refuses a body over max_body (413, in the caller's format). mitmproxy's own
  body_size_limit, at twice max_body, stops larger ones while they arrive (with its own 413
  page: its check runs before any hook), so no body is buffered beyond that.
- request_body() also decodes Content-Encoding with bounded streaming decoders (mitmproxy's own
  decoding inflates a gzip bomb whole) and answers 413/400/415 in the caller's format.
- Client connections: closed when silent between requests (idle_timeout), when a request's
  headers (header_timeout) or body (body_timeout) take too long, and the oldest idle ones
  make room when max_connections are open; with no idle one, a newcomer is answered 503.
- Request heads (and chunk-size lines) are bounded by max_header_bytes: mitmproxy 12.2 buffers
  them without limit (its "FIXME: protect against header size DoS"), so its HTTP/1 reader is
  wrapped to answer 431 and close once a head grows past that.
- An HTTP/1.0 client gets an HTTP/1.0 answer, delimited by the connection's end, never chunked;
  an answer to HEAD has no body.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import brotli
import zstandard
from mitmproxy import connection, ctx, http
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.mode_specs import ReverseMode

from llmgate.errors import GatewayError
from llmgate.request_path.answers import error_response
from llmgate.request_path.inbound import inbound_of
from llmgate.runtime import Runtime
from llmgate.settings import Limits

log = logging.getLogger("llmgate")

TICK = 0.25  # seconds between connection sweeps
FDS_PER_CONNECTION = 4  # client socket, upstream socket, both ends of a relay hop
FDS_RESERVED = 64  # listeners, state and log files, the relay's own


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The request body is larger than {limit} bytes once decompressed.",
                        code="request_too_large")


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """zlib/gzip/raw deflate, stopping as soon as the output passes `limit`."""
    out = bytearray()
    while data:  # gzip allows several members back to back
        d = zlib.decompressobj(wbits)
        while not d.eof:
            chunk = d.decompress(data, limit + 1 - len(out))
            out += chunk
            if len(out) > limit:
                raise _too_large(limit)
            data = d.unconsumed_tail
            if not chunk and not data:
                raise zlib.error("truncated input")
        data = d.unused_data
    return bytes(out)


def _deflate(data: bytes, limit: int) -> bytes:
    try:
        return _inflate(data, zlib.MAX_WBITS, limit)
    except zlib.error:  # clients disagree whether "deflate" has the zlib header
        return _inflate(data, -zlib.MAX_WBITS, limit)


def _brotli(data: bytes, limit: int) -> bytes:
    d = brotli.Decompressor()
    out = bytearray(d.process(data, output_buffer_limit=limit + 1))
    while len(out) <= limit and not d.is_finished():
        if d.can_accept_more_data():
            raise brotli.error("truncated input")
        out += d.process(b"", output_buffer_limit=limit + 1 - len(out))
    if len(out) > limit:
        raise _too_large(limit)
    return bytes(out)


def _zstd(data: bytes, limit: int) -> bytes:
    out = bytearray()
    while data:
        d = zstandard.ZstdDecompressor(max_window_size=1 << 23).decompressobj()
        for i in range(0, len(data), 64):  # 64 input bytes inflate to a few MiB at most
            out += d.decompress(data[i:i + 64])
            if len(out) > limit:
                raise _too_large(limit)
            if d.eof:
                break
        if not d.eof:
            raise zstandard.ZstdError("truncated input")
        data = d.unused_data
    return bytes(out)


DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": lambda data, limit: _inflate(data, 16 + zlib.MAX_WBITS, limit),
    "x-gzip": lambda data, limit: _inflate(data, 16 + zlib.MAX_WBITS, limit),
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
    "identity": lambda data, limit: data,
}


def decode(data: bytes, content_encoding: str, limit: int) -> bytes:
    """The body with its Content-Encoding undone (codings listed in the order applied)."""
    for coding in reversed([c.strip().lower() for c in content_encoding.split(",") if c.strip()]):
        if coding not in DECODERS:
            raise GatewayError(415, f"Content-Encoding '{coding}' is not supported; use gzip, deflate, br or zstd.",
                               code="unsupported_encoding", headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
        try:
            data = DECODERS[coding](data, limit)
        except (zlib.error, brotli.error, zstandard.ZstdError) as e:
            raise GatewayError(400, f"The request body is not valid {coding} data ({e}).",
                               code="invalid_encoding") from None
    return data


def request_body(req: http.Request, limits: Limits) -> bytes:
    """The client's body, decoded within limits. The flow then holds it decoded (or, when
    it cannot be decoded, as sent but no longer claiming an encoding), so nothing later
    (request log, mitmweb) inflates it unbounded."""
    raw = req.raw_content or b""
    if len(raw) > limits.max_body:  # body_size_limit lets through up to twice as much
        raise GatewayError(413, f"The request body is larger than {limits.max_body} bytes.", code="request_too_large")
    encoding = req.headers.pop("content-encoding", "")
    if not encoding:
        return raw
    body = decode(raw, encoding, limits.max_decompressed)
    req.raw_content = body
    return body


_head_limit = [Limits().max_header_bytes]  # set from the config by the addon


def _bounded(read: Callable, slack: int) -> Callable:
    """An Http1Server reader state that closes the connection when its unparsed buffer (an
    incomplete head, or chunk-size line) passes the limit; `slack`: what one read may add."""
    def state(self, event):
        yield from read(self, event)
        if self.state.__func__ is state and len(self.buf) > _head_limit[0] + slack:
            err = GatewayError(431, f"The request head is larger than {_head_limit[0]} bytes.",
                               code="request_header_too_large", headers={"Connection": "close"})
            yield commands.SendData(self.conn, http1.assemble_response(error_response(err)))
            yield commands.CloseConnection(self.conn)
            self.state = self.done
    state.original = read  # type: ignore[attr-defined]
    return state


def bound_http1_heads() -> None:
    """Wrap mitmproxy's HTTP/1 server reader (once, also across script reloads)."""
    server = _http1.Http1Server
    for name, slack in (("read_headers", 0), ("read_body", 1 << 16)):
        read = getattr(server, name)
        setattr(server, name, _bounded(getattr(read, "original", read), slack))


def default_max_connections() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(8, (soft - FDS_RESERVED) // FDS_PER_CONNECTION)


@dataclass(slots=True)
class Conn:
    """What the sweep knows of one client connection."""

    client: connection.Client
    since: float = field(default_factory=time.monotonic)  # when it last became idle (or opened)
    # requests in progress (several at once on HTTP/2): flow id -> when its body began, None once read
    flows: dict[str, float | None] = field(default_factory=dict)
    over: bool = False  # opened over max_connections: its requests are answered 503
    activity: float | None = None  # mitmproxy's last-activity stamp a tick into the idle time
    bytes_at: float | None = None  # when bytes of a next request were first seen


class ClientLimits:
    def __init__(self, rt: Runtime, clock: Callable[[], float] = time.monotonic):
        self.rt = rt
        self.clock = clock
        self.conns: dict[str, Conn] = {}
        self._task: asyncio.Task | None = None
        self._backstop: int | None = None

    @property
    def limits(self) -> Limits:
        return self.rt.settings.server.limits

    def load(self, loader) -> None:
        bound_http1_heads()

    def running(self) -> None:
        self._apply_backstop()
        self._task = asyncio.get_running_loop().create_task(self._sweep_forever())

    def done(self) -> None:
        if self._task:
            self._task.cancel()

    # --- connections ------------------------------------------------------------------

    def client_connected(self, client: connection.Client) -> None:
        mode = getattr(client, "proxy_mode", None)
        if mode is not None and not isinstance(mode, ReverseMode):
            return  # intercept mode: the CLIs' own connections, tunnels among them, last as long as they are used
        cap = self.limits.max_connections or default_max_connections()
        while len(self.conns) >= cap:
            idle = min((c for c in self.conns.values() if not c.flows), key=lambda c: c.since, default=None)
            if idle is None:
                break  # everyone is being served: the newcomer gets a 503 (requestheaders)
            self._close(idle, "making room for a new connection")
        self.conns[client.id] = Conn(client, since=self.clock(), over=len(self.conns) >= cap)

    def client_disconnected(self, client: connection.Client) -> None:
        self.conns.pop(client.id, None)

    # --- requests -------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        c = self.conns.get(flow.client_conn.id)
        if c is None:
            return
        c.flows[flow.id] = self.clock()
        if c.over:
            self._refuse(flow, GatewayError(503, "The gateway has too many open connections; retry shortly.",
                                            code="too_many_connections", headers={"Retry-After": "1"}))

    def request(self, flow: http.HTTPFlow) -> None:
        c = self.conns.get(flow.client_conn.id)
        if c is not None and flow.id in c.flows:
            c.flows[flow.id] = None  # the body is in

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        _http10(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        _http10(flow)
        if flow.request.method == "HEAD" and flow.response is not None:
            # an answer the gateway made (a 404, a 405) must not send its body: the client
            # would read those bytes as the start of the next answer on the connection
            flow.response.raw_content = b""
        self._ended(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def _ended(self, flow: http.HTTPFlow) -> None:
        # a body the front door never read (a 405, a 401...) keeps its bytes as sent but stops
        # claiming an encoding: the request log or mitmweb would inflate a bomb whole
        flow.request.headers.pop("content-encoding", None)
        c = self.conns.get(flow.client_conn.id)
        if c is not None and flow.id in c.flows:
            del c.flows[flow.id]
            if not c.flows:
                c.since, c.activity, c.bytes_at = self.clock(), None, None

    def _refuse(self, flow: http.HTTPFlow, err: GatewayError) -> None:
        """Answer (once the body is in: mitmproxy reads it first) and end the connection."""
        flow.response = error_response(err, inbound_of(flow, self.rt.settings).api)
        flow.response.headers["Connection"] = "close"

    # --- the sweep --------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self._apply_backstop()
                for c in list(self.conns.values()):
                    reason = self.overdue(c, self._last_activity(c), self.clock())
                    if reason:
                        self._close(c, reason)
            except Exception:  # the sweep must outlive any one bad connection
                log.exception("client limits: sweep failed")

    def overdue(self, c: Conn, activity: float | None, now: float) -> str | None:
        """Why this connection should be closed now, if it should. `activity`: mitmproxy's
        last-activity stamp for it (moves when the client sends bytes)."""
        lim = self.limits
        if any(start is not None and now - start > lim.body_timeout for start in c.flows.values()):
            return f"a request body took over {lim.body_timeout:g} s"
        if c.flows:  # being answered: an answer may take long, the upstream timeouts bound it
            return None
        if c.activity is None:  # a tick into the idle time (the answer's own events are done): note activity
            if now - c.since >= TICK:
                c.activity = activity
        elif c.bytes_at is None and activity != c.activity:
            c.bytes_at = now  # bytes of a next request arrived, its headers are not complete yet
        if c.bytes_at is not None and now - c.bytes_at > lim.header_timeout:
            return f"its request headers took over {lim.header_timeout:g} s"
        if now - c.since > lim.idle_timeout and c.bytes_at is None:
            return f"idle for {lim.idle_timeout:g} s"
        return None

    def _handler(self, c: Conn):
        server = ctx.master.addons.get("proxyserver")
        return server.connections.get(c.client.id) if server is not None else None

    def _last_activity(self, c: Conn) -> float | None:
        handler = self._handler(c)
        return handler.timeout_watchdog.last_activity if handler is not None else None

    def _close(self, c: Conn, reason: str) -> None:
        self.conns.pop(c.client.id, None)
        handler = self._handler(c)
        io = handler.transports.get(handler.client) if handler is not None else None
        if io is not None and io.handler is not None:
            log.info("closing client connection %s: %s", c.client.peername, reason)
            io.handler.cancel(reason)

    def _apply_backstop(self) -> None:
        """mitmproxy's body_size_limit stops a body while it arrives, but answers with its own
        page before any hook runs: twice max_body, so that a body just over the limit still
        reaches the front door's 413 in the caller's format. Also the head limit, from the config."""
        _head_limit[0] = self.limits.max_header_bytes
        backstop = 2 * self.limits.max_body
        if backstop != self._backstop:
            self._backstop = backstop
            ctx.options.update(body_size_limit=str(backstop))


def _http10(flow: http.HTTPFlow) -> None:
    """An HTTP/1.0 client cannot read chunked encoding: send the body as is and close."""
    resp = flow.response
    if resp is None or flow.request.http_version != "HTTP/1.0" or resp.http_version == "HTTP/1.0":
        return
    resp.http_version = "HTTP/1.0"
    if "chunked" in resp.headers.get("transfer-encoding", "").lower():
        del resp.headers["transfer-encoding"]
        resp.headers["Connection"] = "close"
