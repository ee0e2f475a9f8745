"""The relay's in-process connection (mitmproxy fetching a stream without a socket): data,
end of data, flow control and closing behave as on a socket."""

import asyncio

import pytest

from llmgate.request_path import relay


def run(coro):
    return asyncio.run(coro)


def test_what_one_end_writes_the_other_reads_then_eof():
    async def go():
        (r1, w1), (r2, w2) = relay.in_process_pair(("127.0.0.1", 9))
        w1.write(b"GET /x HTTP/1.1\r\n\r\n")
        await w1.drain()
        assert await r2.readuntil(b"\r\n\r\n") == b"GET /x HTTP/1.1\r\n\r\n"
        w2.write(b"answer")
        w2.write_eof()
        assert await r1.read() == b"answer"
        assert w1.get_extra_info("peername") == ("127.0.0.1", 9) and w1.get_extra_info("socket") is None
    run(go())


def test_a_full_reader_holds_the_writer_until_it_reads():
    async def go():
        (r1, w1), (r2, w2) = relay.in_process_pair(("127.0.0.1", 9))
        w2.write(b"x" * (300 << 10))  # past the reader's limit (2 x 64 KiB)
        drain = asyncio.ensure_future(w2.drain())
        await asyncio.sleep(0)
        assert not drain.done()
        assert len(await r1.readexactly(300 << 10)) == 300 << 10
        await drain
    run(go())


def test_closing_one_end_ends_the_other():
    async def go():
        (r1, w1), (r2, w2) = relay.in_process_pair(("127.0.0.1", 9))
        w1.close()
        await w1.wait_closed()
        assert await r2.read() == b""
        w2.write(b"lost")  # ignored, as on a closed socket
        with pytest.raises(ConnectionResetError):
            await w2.drain()
    run(go())


def test_a_connection_to_the_relay_is_made_in_process():
    async def go():
        rl = relay.StreamRelay()
        port = await rl.ensure_started()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert writer.get_extra_info("socket") is None
            writer.write(b"GET /unknown-token HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 404 ")
        finally:
            await rl.close()
        assert port not in relay._RELAYS
    run(go())
