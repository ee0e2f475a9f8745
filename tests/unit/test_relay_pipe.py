"""The stream relay's Pipe end to end on loopback: a real aiohttp upstream whose chunks the
test sends one by one, a real aiohttp client response, and the relay connection read as
mitmproxy reads it (in process, or over TCP). Every wait is bounded; nothing is timed."""

from __future__ import annotations

import asyncio
import gc
import sys
import zlib
from collections.abc import Callable

import aiohttp
from aiohttp import web

from converters.sse import StreamFault
from llmgate.request_path import relay
from llmgate.request_path.upstream import fail_body_on_bad_framing

WAIT = 10.0  # seconds any one step may take before the test fails instead of hanging
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
ABORT = "abort"  # queue item: the upstream breaks the connection off


class Raw(bytes):
    """Queue item: bytes the upstream writes to its socket as they are, outside the chunked framing."""


class Upper:
    """A transform: upper-cases each read; raises `error` on a read containing `bad`."""

    def __init__(self, bad: bytes = b"", error: Exception | None = None):
        self.bad, self.error = bad, error

    def feed(self, chunk: bytes) -> bytes:
        if self.bad and self.bad in chunk and self.error is not None:
            raise self.error
        return chunk.upper()

    def finish(self) -> bytes:
        return b"END"

    def fail(self, message: str, code: str = "upstream_error") -> bytes:
        return b"ERR:" + code.encode() + b":" + message.encode()


class Upstream:
    """aiohttp web server: GET /stream writes what the test puts in `queue` (bytes; None ends
    the stream; ABORT breaks the connection off; Raw bytes go out unframed); GET /plain answers
    "ok from <the client port>" (which connection a request came over)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self.gone = asyncio.Event()  # the client left while the stream was open
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.peers: list[int] = []  # the client port of each stream request

    async def __aenter__(self) -> Upstream:
        app = web.Application()
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/plain", self._plain)
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def _plain(self, request: web.Request) -> web.Response:
        return web.Response(text=f"ok from {request.transport.get_extra_info('peername')[1]}")  # type: ignore[union-attr]

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername")[1])
        headers = {"Content-Type": "text/event-stream"}
        if "gzip" in request.query:  # the test sends gzip members it compressed itself
            headers["Content-Encoding"] = "gzip"
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        try:
            while (item := await self.queue.get()) is not None:
                if item == ABORT:
                    request.transport.abort()
                    return resp
                assert isinstance(item, bytes)
                if isinstance(item, Raw):
                    request.transport.write(item)
                else:
                    await resp.write(item)
            await resp.write_eof()
            return resp
        except asyncio.CancelledError:
            self.gone.set()
            raise


async def bounded[T](aw: asyncio.Future[T] | asyncio.Task[T] | object) -> T:
    return await asyncio.wait_for(aw, WAIT)  # type: ignore[arg-type]


async def until(cond: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.001)
    await asyncio.wait_for(poll(), WAIT)


def frame(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of the relay's chunked answer (b"" for the last)."""
    size = int((await bounded(reader.readuntil(b"\r\n")))[:-2], 16)
    data = await bounded(reader.readexactly(size))
    assert await bounded(reader.readexactly(2)) == b"\r\n"
    return data


async def read_to_end(reader: asyncio.StreamReader) -> list[bytes]:
    chunks = []
    while chunk := await read_chunk(reader):
        chunks.append(chunk)
    return chunks


async def open_pipe(session: aiohttp.ClientSession, up: Upstream, transform: Upper,
                    read_timeout: float = 30.0, path: str = "/stream", **kw: object) -> relay.Pipe:
    resp = await bounded(session.get(up.url + path, **kw))
    fail_body_on_bad_framing(resp)  # as Upstream.send does for every answer
    return relay.Pipe(resp, transform, [(b"Content-Type", b"text/event-stream")], "'test'", read_timeout)


def fetch(pipe: relay.Pipe) -> tuple[asyncio.StreamReader, asyncio.Task[bool]]:
    """mitmproxy fetching the stream in process, as StreamRelay.connect_in_process and _serve do."""
    (reader, theirs), (_, writer) = relay.in_process_pair(("127.0.0.1", 0))

    async def serve() -> bool:
        try:
            return await pipe.run(writer)
        finally:
            writer.close()
            theirs.close()  # mitmproxy's writer: held until here (dropped, it would close the pair)
    return reader, asyncio.ensure_future(serve())


def record_takers(pipe: relay.Pipe) -> list[tuple[str, bool, bytes]]:
    """Who took each upstream read: the calling function, and whether a task ran it (False: the
    upstream connection's data_received did, outside any task)."""
    takers: list[tuple[str, bool, bytes]] = []
    take = pipe._take

    def recording(chunk: bytes) -> None:
        takers.append((sys._getframe(1).f_code.co_name, asyncio.current_task() is not None, chunk))
        take(chunk)
    pipe._take = recording  # type: ignore[method-assign]
    return takers


def protocol_of(pipe: relay.Pipe) -> aiohttp.client_proto.ResponseHandler:
    assert pipe.resp.connection is not None and pipe.resp.connection.protocol is not None
    return pipe.resp.connection.protocol


async def send_and_read(up: Upstream, reader: asyncio.StreamReader, part: bytes) -> None:
    up.queue.put_nowait(part)
    assert await bounded(reader.readexactly(len(frame(part.upper())))) == frame(part.upper())


async def fetched(pipe: relay.Pipe, up: Upstream | None = None
                  ) -> tuple[aiohttp.client_proto.ResponseHandler, asyncio.StreamReader, asyncio.Task[bool]]:
    """Fetched in process and its head read; with `up`, also a first event sent and read, and
    the synchronous path listening (from then on data_received takes each read)."""
    protocol = protocol_of(pipe)
    reader, served = fetch(pipe)
    assert await bounded(reader.readexactly(len(HEAD))) == HEAD
    if up is not None:
        await send_and_read(up, reader, b"data: first\n\n")
        await until(lambda: pipe._pushing)
    return protocol, reader, served


def run(coro_fn: Callable[[], object]) -> None:
    """One asyncio.run; fails on any error the loop reports (e.g. an exception never retrieved)."""
    reported: list[dict] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        await coro_fn()  # type: ignore[misc]
        gc.collect()  # a task dropped with its exception unread reports it here
        await asyncio.sleep(0)
    asyncio.run(main())
    assert not reported, reported


PARTS = (b"data: one\n\n", b"data: two\n\n", b"data: three\n\n")


def test_fetched_in_process_each_chunk_converted_in_order_and_the_connection_reused():
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper())
            protocol, reader, served = await fetched(pipe)
            for part in PARTS:
                await send_and_read(up, reader, part)
            up.queue.put_nowait(None)
            assert await bounded(reader.read()) == frame(b"END") + b"0\r\n\r\n"
            assert await bounded(served) is True
            assert pipe.outcome == "complete"
            assert pipe.upstream.bytes() == b"".join(PARTS)
            assert pipe.client.bytes() == b"".join(PARTS).upper() + b"END"
            assert pipe.resp.closed
            assert "data_received" not in protocol.__dict__
            async with session.get(up.url + "/plain") as again:  # over the same pooled connection
                assert await bounded(again.text()) == f"ok from {up.peers[0]}"
    run(go)


def test_after_the_fetch_each_read_is_converted_and_written_inside_data_received():
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper())
            takers = record_takers(pipe)
            catch_ups = 0
            catch_up = pipe._catch_up

            async def counting() -> None:
                nonlocal catch_ups
                catch_ups += 1
                await catch_up()
            pipe._catch_up = counting  # type: ignore[method-assign]
            protocol, reader, served = await fetched(pipe)
            await until(lambda: pipe._pushing)  # from the fetch on: the first token too
            before = catch_ups
            parts = (b"data: first\n\n", *PARTS)
            for part in parts:
                await send_and_read(up, reader, part)
            assert takers == [("_feed", False, part) for part in parts]  # from aiohttp's parser, not its buffer
            assert catch_ups == before  # the task did not run for them
            up.queue.put_nowait(None)
            assert await bounded(served) is True and pipe.outcome == "complete"
            assert "data_received" not in protocol.__dict__
    run(go)


def test_fetched_over_tcp_all_data_arrives_the_same_way():
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            rl = relay.StreamRelay()
            port = await rl.ensure_started()
            try:
                pipe = await open_pipe(session, up, Upper())
                takers = record_takers(pipe)
                protocol = protocol_of(pipe)
                token = rl.register(pipe)
                reader, writer = await bounded(relay._tcp_open_connection("127.0.0.1", port))
                assert writer.get_extra_info("socket") is not None  # a real socket, not in process
                writer.write(b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 0\r\n\r\n"
                             % (token.encode(), port))
                assert await bounded(reader.readexactly(len(HEAD))) == HEAD
                for part in PARTS:
                    await send_and_read(up, reader, part)
                    assert not pipe._pushing  # no synchronous path over TCP
                up.queue.put_nowait(None)
                assert await read_to_end(reader) == [b"END"]
                assert pipe.outcome == "complete"
                assert takers and all(task and taker not in ("_push", "_feed") for taker, task, _ in takers)
                assert "data_received" not in protocol.__dict__
                assert pipe.client.bytes() == b"".join(PARTS).upper() + b"END"
                writer.close()
                await bounded(writer.wait_closed())
            finally:
                await rl.close()
    run(go)


def pattern(i: int, size: int = 64 << 10) -> bytes:
    return (b"<%06d>" % i + b"abcdefghijklmnopqrstuvwxyz" * (size // 26 + 1))[:size]


async def stop_reading_then_resume(up: Upstream, session: aiohttp.ClientSession) -> tuple[list[bytes], bytes, int]:
    """The synchronous path meets 8 MiB while the reader's end is not read; then it is read to
    the end. Returns what the upstream sent, what the reader got and what the Pipe held meanwhile."""
    pipe = await open_pipe(session, up, Upper())
    protocol, reader, served = await fetched(pipe, up)
    sent = [pattern(i) for i in range(128)]
    for part in sent:
        up.queue.put_nowait(part)
    up.queue.put_nowait(None)
    # the reader's end is full and aiohttp stopped reading the upstream socket
    transport = pipe._writer.transport if pipe._writer is not None else None
    assert isinstance(transport, relay._InProcess)
    await until(lambda: transport.paused and protocol._reading_paused)
    held = pipe.upstream.size
    for _ in range(100):  # nothing more is taken while nobody reads
        await asyncio.sleep(0)
    assert pipe.upstream.size == held and transport.paused
    received = b"".join(await read_to_end(reader))
    assert await bounded(served) is True and pipe.outcome == "complete"
    assert pipe.upstream.size == len(b"data: first\n\n") + len(received) - len(b"END")
    assert "data_received" not in protocol.__dict__
    return sent, received, held


def test_a_reader_that_stops_reading_bounds_what_is_taken_from_upstream():
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            sent, received, held = await stop_reading_then_resume(up, session)
            assert held <= 1 << 20
            assert len(received) == len(b"".join(sent)) + len(b"END") and received.endswith(b"END")
    run(go)


def test_a_reader_that_stops_reading_then_resumes_gets_every_byte_in_order():
    """aiohttp's read_nowait may resume its parser, which calls data_received (the Pipe's):
    _push must not run inside itself, or a later read is written before the one being taken."""
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            sent, received, _ = await stop_reading_then_resume(up, session)
            assert received == b"".join(sent).upper() + b"END"
    run(go)


def test_a_bulk_stream_to_a_reader_that_keeps_reading_arrives_in_order():
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper())
            protocol, reader, served = await fetched(pipe, up)
            sent = [pattern(i) for i in range(128)]
            for part in sent:
                up.queue.put_nowait(part)
            up.queue.put_nowait(None)
            assert b"".join(await read_to_end(reader)) == b"".join(sent).upper() + b"END"
            assert await bounded(served) is True and pipe.outcome == "complete"
            assert "data_received" not in protocol.__dict__
    run(go)


def test_a_client_that_leaves_mid_stream_ends_it_and_closes_the_upstream():
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper())
            protocol, reader, served = await fetched(pipe, up)
            assert pipe._writer is not None
            pipe._writer.transport.peer.close()  # type: ignore[attr-defined]  # mitmproxy's end of the relay hop
            up.queue.put_nowait(b"data: lost\n\n")
            assert await bounded(served) is False and pipe.outcome == "client-gone"
            await bounded(up.gone.wait())
            assert pipe.resp.closed and "data_received" not in protocol.__dict__
    run(go)


def test_an_upstream_that_breaks_off_ends_the_stream_with_an_error_event():
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper())
            protocol, reader, served = await fetched(pipe)
            for part in PARTS:
                await send_and_read(up, reader, part)
            up.queue.put_nowait(ABORT)
            [tail] = await read_to_end(reader)
            assert tail.startswith(b"ERR:upstream_disconnected:Upstream 'test' closed the connection")
            assert b"after %d bytes" % len(b"".join(PARTS)) in tail
            assert await bounded(served) is True and pipe.outcome == "upstream-error"
            assert "data_received" not in protocol.__dict__
    run(go)


def test_a_malformed_upstream_chunk_ends_the_stream_with_an_error_event():
    """aiohttp 3.14 closes the connection on a bad chunk size but neither fails nor ends the body
    and stops its read timeout: without the Pipe failing it, the stream hung."""
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper())
            protocol, reader, served = await fetched(pipe, up)
            up.queue.put_nowait(Raw(b"zz\r\nnot a chunk\r\n"))  # aiohttp's parser fails inside data_received
            await bounded(up.gone.wait())  # aiohttp closed the connection on the parse error
            [tail] = await asyncio.wait_for(read_to_end(reader), 2)  # as good as at once (it hung)
            assert tail.startswith(b"ERR:upstream_disconnected:Upstream 'test' ")
            assert await bounded(served) is True and pipe.outcome == "upstream-error"
            assert pipe.resp.closed and "data_received" not in protocol.__dict__
    run(go)


def transform_fails_in_data_received(error: Exception, expected_tail: bytes) -> None:
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper(bad=b"bad", error=error))
            takers = record_takers(pipe)
            protocol, reader, served = await fetched(pipe, up)
            up.queue.put_nowait(b"data: bad\n\n")
            assert await read_to_end(reader) == [expected_tail]
            assert takers[-1] == ("_feed", False, b"data: bad\n\n")  # it failed in the synchronous path
            assert await bounded(served) is True and pipe.outcome == "upstream-error"
            assert pipe.resp.closed
            await bounded(up.gone.wait())  # the upstream connection was closed
            assert "data_received" not in protocol.__dict__
    run(go)


def test_a_stream_fault_in_data_received_ends_the_stream_with_what_came_before_and_the_error():
    fault = StreamFault("sent a stream event that is not valid JSON.")
    fault.before = b"BEFORE"
    transform_fails_in_data_received(
        fault, b"BEFORE" + b"ERR:upstream_malformed:Upstream 'test' sent a stream event that is not valid JSON.")


def test_a_converter_bug_in_data_received_ends_the_stream_with_an_internal_error():
    transform_fails_in_data_received(
        RuntimeError("bug"),
        b"ERR:internal_error:The gateway failed converting the stream; its log has the details.")


def test_an_upstream_that_goes_silent_is_cut_off_after_the_read_timeout():
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper(), read_timeout=1.0,
                                   timeout=aiohttp.ClientTimeout(sock_read=1.0))
            protocol, reader, served = await fetched(pipe, up)
            assert await read_to_end(reader) == [
                b"ERR:upstream_timeout:Upstream 'test' sent nothing for 1 s; the stream was cut off."]
            assert await bounded(served) is True and pipe.outcome == "upstream-error"
            await bounded(up.gone.wait())
            assert "data_received" not in protocol.__dict__
    run(go)


def test_reads_keep_the_read_timeout_off_with_one_timer_and_silence_still_cuts_off():
    """LazyReadTimeout: reads for longer than the read timeout do not end the stream, and they
    do not each make a timer (aiohttp's own makes one per read); silence after them does."""
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper(), read_timeout=0.3,
                                   timeout=aiohttp.ClientTimeout(sock_read=0.3))
            protocol, reader, served = await fetched(pipe, up)
            assert isinstance(pipe._timer, relay.LazyReadTimeout)
            timers = set()
            loop = asyncio.get_running_loop()
            started = loop.time()
            while loop.time() - started < 0.9:  # three read timeouts' worth of reads, 0.05 s apart
                await send_and_read(up, reader, b"data: tick\n\n")
                timers.add(id(protocol._read_timeout_handle))
                await asyncio.sleep(0.05)
            assert len(timers) <= 5, len(timers)  # re-set only when due: ~once per 0.3 s
            assert await read_to_end(reader) == [
                b"ERR:upstream_timeout:Upstream 'test' sent nothing for 0.3 s; the stream was cut off."]
            assert await bounded(served) is True and pipe.outcome == "upstream-error"
            assert "_reschedule_timeout" not in protocol.__dict__
    run(go)


def test_the_read_timeout_stays_off_while_aiohttp_has_reading_paused():
    """A full client pauses the upstream socket and aiohttp stops its read timer: the slow side is
    not the upstream. Taken over while paused, the timer stays off until reading resumes."""
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            resp = await bounded(session.get(up.url + "/stream", timeout=aiohttp.ClientTimeout(sock_read=0.2)))
            protocol = resp.connection.protocol  # type: ignore[union-attr]
            protocol.pause_reading()
            assert protocol._read_timeout_handle is None
            timer = relay.LazyReadTimeout(protocol)
            await asyncio.sleep(0.4)  # twice the read timeout, paused
            assert protocol._read_timeout_handle is None and resp.content.exception() is None
            protocol.resume_reading()
            assert protocol._read_timeout_handle is not None  # reading again: the timer runs
            timer.remove()
            resp.close()
    run(go)


def test_the_connection_gets_aiohttps_own_read_timeout_back_for_its_next_request():
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper())
            protocol, reader, served = await fetched(pipe, up)
            assert "_reschedule_timeout" in protocol.__dict__
            up.queue.put_nowait(None)
            await bounded(reader.read())
            assert await bounded(served) is True
            assert "_reschedule_timeout" not in protocol.__dict__ and pipe._timer is None
            async with session.get(up.url + "/stream", timeout=aiohttp.ClientTimeout(sock_read=0.2)) as r:
                assert up.peers[1] == up.peers[0]  # the same connection, from aiohttp's pool
                try:
                    await bounded(r.content.read())
                    raise AssertionError("a silent upstream outlasted aiohttp's read timeout")
                except aiohttp.ServerTimeoutError:
                    pass
    run(go)


def test_a_gzip_stream_is_decompressed_read_by_read_into_the_pipe():
    """aiohttp's decompressor sits between its parser and the body's reader: what it hands on
    reaches Pipe._feed too, each flushed piece converted as it arrives."""
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper(), path="/stream?gzip")
            takers = record_takers(pipe)
            z = zlib.compressobj(wbits=31)
            protocol, reader, served = await fetched(pipe)
            await until(lambda: pipe._pushing)
            for part in (b"data: first\n\n", *PARTS):
                up.queue.put_nowait(z.compress(part) + z.flush(zlib.Z_SYNC_FLUSH))
                assert await bounded(reader.readexactly(len(frame(part.upper())))) == frame(part.upper())
            up.queue.put_nowait(z.flush())
            up.queue.put_nowait(None)
            assert await read_to_end(reader) == [b"END"]
            assert await bounded(served) is True and pipe.outcome == "complete"
            assert [t[:2] for t in takers[-len(PARTS):]] == [("_feed", False)] * len(PARTS)
    run(go)


def test_abandoned_mid_stream_the_upstream_is_closed_and_run_returns_false():
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper())
            protocol, reader, served = await fetched(pipe)
            for part in PARTS:
                await send_and_read(up, reader, part)
            pipe.abandon("client-gone")
            assert await bounded(served) is False
            assert pipe.outcome == "client-gone"
            await bounded(up.gone.wait())
            assert pipe.resp.closed and "data_received" not in protocol.__dict__
    run(go)


def ends_before_it_is_fetched(parts: list[bytes]) -> None:
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            pipe = await open_pipe(session, up, Upper())
            for part in parts:
                up.queue.put_nowait(part)
            up.queue.put_nowait(None)
            await until(lambda: pipe.resp.content.is_eof())
            reader, served = fetch(pipe)
            assert await bounded(reader.readexactly(len(HEAD))) == HEAD
            chunks = await read_to_end(reader)
            assert b"".join(chunks) == b"".join(parts).upper() + b"END" and chunks[-1] == b"END"
            assert await bounded(served) is True and pipe.outcome == "complete"
    run(go)


def test_a_short_stream_that_ends_before_it_is_fetched_is_delivered_whole():
    ends_before_it_is_fetched([b"data: one\n\n"])


def test_a_stream_past_the_backlog_that_ends_before_it_is_fetched_is_delivered_whole():
    ends_before_it_is_fetched([pattern(i, 16 << 10) for i in range(6)])


def test_a_stream_that_ends_while_its_reader_is_full_leaves_the_next_stream_on_its_connection_alone():
    """The first stream's connection goes back to the pool at its upstream's end, while its task
    still waits for its full reader; the next stream takes that connection and listens on it.
    The first stream's task, ending later, must not take the second stream's listener away."""
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            first = await open_pipe(session, up, Upper())
            reader, served = fetch(first)
            assert await bounded(reader.readexactly(len(HEAD))) == HEAD
            await send_and_read(up, reader, b"data: first\n\n")
            await until(lambda: first._pushing)
            for i in range(3):  # 192 KiB: the reader's end fills (and nobody reads it for now)
                up.queue.put_nowait(pattern(i))
            up.queue.put_nowait(None)
            transport = first._writer.transport if first._writer is not None else None
            assert isinstance(transport, relay._InProcess)
            await until(lambda: transport.paused and first.resp.content.is_eof())

            second = await open_pipe(session, up, Upper())
            assert up.peers[1] == up.peers[0]  # over the connection the first stream gave back
            protocol = protocol_of(second)
            takers = record_takers(second)
            reader2, served2 = fetch(second)
            assert await bounded(reader2.readexactly(len(HEAD))) == HEAD
            await send_and_read(up, reader2, b"data: one\n\n")
            await until(lambda: second._pushing)

            received = b"".join(await read_to_end(reader))  # the first stream ends now
            assert received == b"".join(pattern(i) for i in range(3)).upper() + b"END"
            assert await bounded(served) is True and first.outcome == "complete"

            assert "data_received" in protocol.__dict__  # the second stream still listens
            await send_and_read(up, reader2, b"data: two\n\n")
            assert takers[-1] == ("_feed", False, b"data: two\n\n")
            up.queue.put_nowait(None)
            assert await read_to_end(reader2) == [b"END"]
            assert await bounded(served2) is True and second.outcome == "complete"
    run(go)


def test_a_stream_read_whole_before_the_pipe_is_made_is_delivered_with_its_head():
    """A short answer can be all in (its connection back in the pool) by the time the Pipe takes
    it over, with its first bytes already read (provider_call's first event): `head`."""
    async def go() -> None:
        async with Upstream() as up, aiohttp.ClientSession() as session:
            resp = await bounded(session.get(up.url + "/stream"))
            for part in PARTS:
                up.queue.put_nowait(part)
            up.queue.put_nowait(None)
            head = await bounded(resp.content.readexactly(len(PARTS[0])))
            await until(lambda: resp.content.is_eof() and resp.connection is None)
            pipe = relay.Pipe(resp, Upper(), [(b"Content-Type", b"text/event-stream")], "'test'", 30.0, head)
            reader, served = fetch(pipe)
            assert await bounded(reader.readexactly(len(HEAD))) == HEAD
            assert b"".join(await read_to_end(reader)) == b"".join(PARTS).upper() + b"END"
            assert await bounded(served) is True and pipe.outcome == "complete"
            assert pipe.upstream.bytes() == b"".join(PARTS)
    run(go)
