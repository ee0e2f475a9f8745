"""Upstream HTTP: one pooled aiohttp session, timeouts, and errors mapped to 502/504.

aiohttp rather than httpx: on this gateway's hot path (16 concurrent requests
through mitmdump) httpx's pool managed ~30% of aiohttp's throughput.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from aiohttp import http_exceptions
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from yarl import URL

from llmgate.errors import GatewayError
from llmgate.settings import Timeouts

MAX_ERROR_BODY = 1 << 20  # bytes of an upstream error body we read (the rest is cut off)
# Limits on what an upstream may send. Module constants until server.limits exists in settings.
MAX_BODY = 64 << 20  # a non-streamed answer, decoded
# encodings aiohttp decodes (in bounded steps); any other would reach the client still encoded
DECODABLE = {"", "identity", "gzip", "deflate", *(["br"] if HAS_BROTLI else []), *(["zstd"] if HAS_ZSTD else [])}


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class Upstream:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        # per-request construction of these shows in profiles; there are few distinct ones
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[tuple[Timeouts, bool], aiohttp.ClientTimeout] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        # created lazily: it must be made inside the running event loop
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True),
                auto_decompress=True,  # we never ask for compression, but some upstreams compress anyway
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                trust_env=False,
            )
        return self._session

    async def send(self, req: UpstreamRequest, timeouts: Timeouts, who: str,
                   stream: bool = False) -> aiohttp.ClientResponse:
        """Send and wait for the response headers. Raises GatewayError 502/504.

        A non-streamed answer must also be complete within timeouts.total (the read timeout
        restarts with every byte, so a dripping upstream would otherwise never end)."""
        timeout = self._timeouts.get((timeouts, stream))
        if timeout is None:
            timeout = self._timeouts[(timeouts, stream)] = aiohttp.ClientTimeout(
                total=None if stream else timeouts.total, connect=timeouts.connect, sock_read=timeouts.read)
        url = self._urls.get(req.url)
        if url is None:
            if len(self._urls) > 1000:
                self._urls.clear()
            url = self._urls[req.url] = URL(req.url)
        try:
            resp = await self.session.request(
                req.method, url, headers=req.headers, data=req.body or None, timeout=timeout,
                allow_redirects=False,
            )
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as e:
            if isinstance(e, aiohttp.ConnectionTimeoutError):
                message = f"did not connect within {timeouts.connect:g} s"
            elif isinstance(e, aiohttp.ServerTimeoutError):
                message = f"did not respond within {timeouts.read:g} s"
            else:
                message = f"did not answer within {timeouts.total:g} s (timeouts.total)"
            raise GatewayError(504, f"Upstream {who} {message}.", code="upstream_timeout") from None
        except aiohttp.ClientConnectorError as e:
            raise GatewayError(
                502, f"Upstream {who} is unreachable: {e.os_error.strerror or e.os_error}.",
                code="upstream_unreachable",
            ) from None
        except aiohttp.ClientError as e:
            raise GatewayError(
                502, f"Upstream {who} failed before responding: {describe(e)}.", code="upstream_error"
            ) from None
        encoding = resp.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in DECODABLE:
            resp.close()
            raise GatewayError(502, f"Upstream {who} sent its answer in an encoding the gateway cannot decode "
                               f"(Content-Encoding: {encoding[:40]}).", code="upstream_bad_encoding")
        return resp

    async def read_body(self, resp: aiohttp.ClientResponse, who: str, limit: int = MAX_BODY,
                        cut: bool = False) -> bytes:
        """The whole body, at most `limit` bytes: more is a 502 ("upstream_too_large"),
        or with `cut` (error bodies) simply cut off."""
        buf = bytearray()
        try:
            declared = resp.content_length
            if declared is not None and declared > limit and not cut:
                raise _too_large(who, limit)
            while len(buf) <= limit and (chunk := await resp.content.read(limit + 1 - len(buf))):
                buf += chunk
            if len(buf) > limit:
                if not cut:
                    raise _too_large(who, limit)
                del buf[limit:]
            return bytes(buf)
        except aiohttp.ServerTimeoutError:
            raise GatewayError(504, f"Upstream {who} stopped sending its answer after {len(buf)} bytes.",
                               code="upstream_timeout") from None
        except asyncio.TimeoutError:
            raise GatewayError(504, f"Upstream {who} did not finish its answer in time (timeouts.total); "
                               f"{len(buf)} bytes had arrived.", code="upstream_timeout") from None
        except aiohttp.ClientError as e:
            raise GatewayError(502, f"Upstream {who} {broke_off(e, len(buf), 'its answer')}.",
                               code="upstream_disconnected") from None
        finally:
            resp.release()  # closes the connection if the body was not read to its end

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.split("\n")[0][:300]


def broke_off(e: aiohttp.ClientError, received: int, what: str) -> str:
    """What happened, in words (not aiohttp's exception text), after `received` bytes of `what`."""
    cause = e.__cause__  # aiohttp keeps the parser's own exception there
    if isinstance(cause, http_exceptions.ContentEncodingError):
        return f"sent {what} in a compression that does not decode, after {received} bytes"
    if isinstance(cause, http_exceptions.ContentLengthError):
        return f"closed the connection after {received} bytes of {what}, short of the length it announced"
    if isinstance(e, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
        return f"closed the connection in the middle of {what}, after {received} bytes"
    return f"broke off {what} after {received} bytes ({type(e).__name__})"


def _too_large(who: str, limit: int) -> GatewayError:
    return GatewayError(502, f"Upstream {who} sent an answer larger than the gateway's limit of "
                        f"{limit >> 20} MiB.", code="upstream_too_large")
