"""The console's live feed: each new request-log row as a server-sent event.

Accounting publishes every row it logs (its `subscribers`); each open feed is a `FeedStream`
that the loopback relay (llmgate/request_path/relay.py) serves like a provider stream, so mitmproxy streams
it to the browser. Bounded: MAX_FEEDS open at once, QUEUE rows waiting per feed (more are
dropped for that feed: a browser that stops reading does not hold the gateway's memory).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

FIELDS = ("ts", "key_id", "inbound", "endpoint", "model", "provider", "account", "attempts", "status", "stream",
          "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "error")
QUEUE = 256
MAX_FEEDS = 16
KEEPALIVE = 15.0  # seconds between comments on a quiet feed: how a closed browser tab is noticed


class FeedStream:
    """One browser's feed; duck-types relay.Pipe (headers, run, abandon)."""

    headers = [(b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-store"),
               (b"X-Content-Type-Options", b"nosniff")]

    def __init__(self, on_close: Callable[[FeedStream], None], keepalive: float = KEEPALIVE):
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE)
        self._on_close = on_close
        self._keepalive = keepalive
        self.closed = False
        self.dropped = 0

    def publish(self, row: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait({k: row.get(k) for k in FIELDS})  # never the captured bodies
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self, writer: asyncio.StreamWriter) -> bool:
        """Send rows as a chunked HTTP/1.1 response until the browser leaves. False: connection unusable."""
        head = [b"HTTP/1.1 200 OK", *(k + b": " + v for k, v in self.headers), b"Transfer-Encoding: chunked"]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + self._chunk(b"retry: 2000\n\n"))
        try:
            while not self.closed:
                try:
                    row = await asyncio.wait_for(self._queue.get(), self._keepalive)
                except TimeoutError:
                    data = b": keepalive\n\n"
                else:
                    if row is None:
                        break
                    data = b"data: " + json.dumps(row).encode() + b"\n\n"
                writer.write(self._chunk(data))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        except (ConnectionError, RuntimeError):
            return False
        finally:
            self.abandon("done")

    @staticmethod
    def _chunk(data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data)

    def abandon(self, outcome: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._on_close(self)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)  # wake run()


class Feeds:
    """The open feeds; `publish` is what Accounting calls for each row."""

    def __init__(self) -> None:
        self.open: set[FeedStream] = set()

    def publish(self, row: dict[str, Any]) -> None:
        for f in list(self.open):
            f.publish(row)

    def new(self) -> FeedStream | None:
        if len(self.open) >= MAX_FEEDS:
            return None
        f = FeedStream(self.open.discard)
        self.open.add(f)
        return f
