"""Upstream HTTP: one pooled aiohttp session per outbound proxy, timeouts, and errors mapped to 502/504.

aiohttp rather than httpx: on this gateway's hot path (16 concurrent requests
through mitmdump) httpx's pool managed ~30% of aiohttp's throughput.
"""

from __future__ import annotations

import functools
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import aiohttp_socks
from aiohttp import http_exceptions
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from yarl import URL

from llmgate.errors import GatewayError

if TYPE_CHECKING:  # settings imports the provider kinds, whose accounts use this module
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
    proxy: str | None = None  # the provider's proxy setting (settings.check_proxy); None: direct


PROXY_SCHEMES = ("http", "https", "socks4", "socks5", "socks5h")


def check_proxy(v: str | None) -> str | None:
    """A proxy setting (a URL, "env", "none"); the message never repeats it (its password is a secret)."""
    if v is None or v in ("env", "none"):
        return v
    if not isinstance(v, str):
        raise ValueError("must be a string")
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid proxy URL") from None
    if parts.scheme not in PROXY_SCHEMES or not parts.hostname or port is None or \
            any(c.isspace() or not c.isprintable() for c in v):
        raise ValueError(f"must be \"env\", \"none\" or a proxy URL ({', '.join(PROXY_SCHEMES)}) with a host "
                         "and a port")
    return v


def proxy_setting(p: Any, server: Any) -> str | None:
    """The proxy a provider entry's calls take: its own `proxy`, else server.proxy."""
    return p.proxy or server.proxy


@functools.cache
def _env_proxies() -> dict[str, str]:
    return urllib.request.getproxies_environment()  # read once: a process's environment stays


@functools.lru_cache(maxsize=256)
def _env_proxy(scheme: str, host: str) -> str | None:
    """HTTPS_PROXY / HTTP_PROXY / ALL_PROXY for this scheme, unless NO_PROXY names the host."""
    env = _env_proxies()
    if urllib.request.proxy_bypass_environment(host, env):  # type: ignore[attr-defined]  # not in typeshed
        return None
    return env.get(scheme) or env.get("all")


def proxy_url(url: str, setting: str | None) -> str | None:
    """The proxy a request to `url` goes through under `setting` (None: direct)."""
    if setting is None or setting == "none":
        return None
    if setting != "env":
        return setting
    parts = urlsplit(url)
    return _env_proxy(parts.scheme, parts.hostname or "")


def proxy_name(proxy: str) -> str:
    """host:port of a proxy URL: what messages may say (never its credentials)."""
    parts = urlsplit(proxy)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def proxy_secrets(settings: Any, *more: Any) -> list[str]:
    """The passwords in the configured proxy URLs, `more` (the accounts' own) and the environment's
    when `env` is used."""
    urls = [settings.server.proxy, *(p.proxy for p in settings.providers), *more]
    if "env" in urls:
        urls += _env_proxies().values()
    return [_password(u) for u in urls if isinstance(u, str) and u not in ("env", "none")]


def _password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


class _SocksConnector(aiohttp_socks.ProxyConnector):
    """aiohttp-socks raises its own exceptions: as aiohttp's, every `except aiohttp.ClientError` holds."""

    async def _wrap_create_connection(self, *args: Any, req: Any, **kwargs: Any) -> Any:
        try:
            return await super()._wrap_create_connection(*args, req=req, **kwargs)
        except (aiohttp_socks.ProxyConnectionError, aiohttp_socks.ProxyError, aiohttp_socks.ProxyTimeoutError) as e:
            # named by the proxy's address, as aiohttp names an HTTP proxy it cannot reach
            key = req.connection_key._replace(host=self._proxy_host, port=self._proxy_port)
            raise aiohttp.ClientProxyConnectionError(key, OSError(str(e))) from None


def _new_session(proxy: str | None) -> aiohttp.ClientSession:
    """A pooled session whose every request goes through `proxy` (None: direct)."""
    pool: dict[str, Any] = {"limit": 0, "enable_cleanup_closed": True}
    if proxy is not None and proxy.startswith("socks"):
        remote_dns = proxy.startswith("socks5h")  # the proxy resolves names (curl's meaning)
        connector: aiohttp.TCPConnector = _SocksConnector.from_url(
            proxy.replace("socks5h://", "socks5://", 1), rdns=remote_dns, **pool)
    else:
        connector = aiohttp.TCPConnector(ttl_dns_cache=300, **pool)
    return aiohttp.ClientSession(
        connector=connector,
        proxy=proxy if proxy is not None and not proxy.startswith("socks") else None,
        auto_decompress=True,  # we never ask for compression, but some upstreams compress anyway
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        trust_env=False,  # `proxy: env` is resolved here, per host (NO_PROXY), SOCKS included
    )


class Upstream:
    def __init__(self) -> None:
        # one per distinct proxy URL (None: direct); few, as configured
        self._sessions: dict[str | None, aiohttp.ClientSession] = {}
        # per-request construction of these shows in profiles; there are few distinct ones
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[tuple[Timeouts, bool], aiohttp.ClientTimeout] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        """The direct session (no proxy)."""
        return self._session(None)

    def session_for(self, url: str, setting: str | None) -> aiohttp.ClientSession:
        """The session for a request to `url` under a provider's proxy setting (proxy_setting)."""
        return self._session(proxy_url(url, setting))

    def _session(self, proxy: str | None) -> aiohttp.ClientSession:
        session = self._sessions.get(proxy)
        if session is None or session.closed:  # created lazily: inside the running event loop
            session = self._sessions[proxy] = _new_session(proxy)
        return session

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
        proxy = proxy_url(req.url, req.proxy)
        try:
            resp = await self._session(proxy).request(
                req.method, url, headers=req.headers, data=req.body or None, timeout=timeout,
                allow_redirects=False,
            )
        except (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError) as e:
            raise proxy_error(e, proxy or "", who) from None
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
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
            if isinstance(e.__cause__, http_exceptions.HttpProcessingError):  # aiohttp's "400", not the upstream's
                what = (e.__cause__.message or type(e.__cause__).__name__).split("\n")[0].rstrip(":")[:200]
                raise GatewayError(502, f"Upstream {who} sent an answer that is not valid HTTP ({what}).",
                                   code="upstream_error") from None
            raise GatewayError(
                502, f"Upstream {who} failed before responding: {describe(e)}.", code="upstream_error"
            ) from None
        if resp.status == 407 and proxy is not None:  # the proxy's own answer (plain http through it)
            resp.close()
            raise GatewayError(502, f"Upstream {who} could not be reached through the proxy {proxy_name(proxy)}: "
                               "it refused the credentials (407).", code="proxy_unreachable")
        fail_body_on_bad_framing(resp)
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
        except TimeoutError:
            raise GatewayError(504, f"Upstream {who} did not finish its answer in time (timeouts.total); "
                               f"{len(buf)} bytes had arrived.", code="upstream_timeout") from None
        except aiohttp.ClientError as e:
            raise GatewayError(502, f"Upstream {who} {broke_off(e, len(buf), 'its answer')}.",
                               code="upstream_disconnected") from None
        finally:
            resp.release()  # closes the connection if the body was not read to its end

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def proxy_error(e: aiohttp.ClientError, proxy: str, who: str) -> GatewayError:
    """Not reaching the upstream through its proxy: a 502 naming the proxy by host only."""
    if isinstance(e, aiohttp.ClientHttpProxyError):
        why = f"it answered {e.status} to the tunnel request"
    else:
        os_error = e.os_error if isinstance(e, aiohttp.ClientConnectorError) else e
        why = str(getattr(os_error, "strerror", None) or os_error)
    return GatewayError(502, f"Upstream {who} could not be reached through the proxy {proxy_name(proxy)}: "
                        f"{why}.", code="proxy_unreachable")


def describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.split("\n")[0][:300]


class UnreadableFraming(aiohttp.ClientPayloadError):
    """A body whose HTTP framing (chunk sizes) does not parse."""


def fail_body_on_bad_framing(resp: aiohttp.ClientResponse) -> None:
    """aiohttp (3.14) closes the connection when a body's framing does not parse, but leaves the
    body neither failed nor ended, with its read timeout stopped: every reader would wait until
    timeouts.total, or forever on a stream. Fail the body with it (until the body's end, when the
    connection goes back to the pool as it came)."""
    protocol, body = (resp.connection.protocol if resp.connection else None), resp.content
    if protocol is None:
        return
    fail = type(protocol).set_exception.__get__(protocol)

    def set_exception(exc: BaseException, *cause: BaseException) -> None:
        fail(exc, *cause)
        if isinstance(exc, http_exceptions.HttpProcessingError) and not body.is_eof() and body.exception() is None:
            body.set_exception(UnreadableFraming(str(exc)), exc)

    protocol.set_exception = set_exception  # type: ignore[method-assign,assignment]
    body.on_eof(lambda: protocol.__dict__.pop("set_exception", None))


def broke_off(e: aiohttp.ClientError, received: int, what: str) -> str:
    """What happened, in words (not aiohttp's exception text), after `received` bytes of `what`."""
    cause = e.__cause__  # aiohttp keeps the parser's own exception there
    if isinstance(cause, http_exceptions.ContentEncodingError):
        return f"sent {what} in a compression that does not decode, after {received} bytes"
    if isinstance(cause, http_exceptions.ContentLengthError):
        return f"closed the connection after {received} bytes of {what}, short of the length it announced"
    if isinstance(e, UnreadableFraming):
        return f"sent {what} in HTTP framing that does not parse, after {received} bytes"
    if isinstance(e, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
        return f"closed the connection in the middle of {what}, after {received} bytes"
    return f"broke off {what} after {received} bytes ({type(e).__name__})"


def _too_large(who: str, limit: int) -> GatewayError:
    return GatewayError(502, f"Upstream {who} sent an answer larger than the gateway's limit of "
                        f"{limit >> 20} MiB.", code="upstream_too_large")
