"""One upstream call to a provider entry: the only way the gateway talks to a provider.

Generate, count, embed, model discovery and the admin test all go through `ProviderCall`, so
they send the same headers and credentials and recover the same way:

- headers: the kind's (JSON, no compression, its own, the key), then what the caller adds
  (a client's passed-through headers), then the account's, then the entry's own `headers`;
- subscription kinds: the account picked (skipping those cooling, busy or needing a login)
  puts its credentials (refreshed when due) and envelope on the request; an answer in the
  kind's `reauth_statuses` forces a refresh and one retry;
- a host that fails (no connection, no answer in time, a 5xx, an account set-up failure)
  gives way to the next of `fallback_urls` (the kind's own when base_url is not set);
- timeouts: the entry's, else server.timeouts (timeouts.total bounds a non-streamed answer);
- errors: redirects are never followed; an error answer becomes the account's specific error
  (quota, capacity, permission) or the caller's mapping of the kind's error format.

The call keeps an `Exchange` (what was sent and answered), which the front door registers for
flow_record and accounting, and holds an in-flight slot of the account (rt.pool) until the
exchange ends (the front door's response/error hooks) or `release()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from converters import jsonio
from converters.first_event import FirstEvent, StreamStartError
from llmgate.errors import GatewayError
from llmgate.providers.base import ProviderKind
from llmgate.request_path.failover import is_rate_limit
from llmgate.request_path.failover_engine import HOLD_LIMIT, StreamStart
from llmgate.request_path.routing import Route
from llmgate.request_path.upstream import MAX_BODY, MAX_ERROR_BODY, UpstreamRequest, broke_off, proxy_setting
from llmgate.settings import Timeouts

if TYPE_CHECKING:
    from llmgate.request_path.relay import Pipe

log = logging.getLogger("llmgate")

ErrorMap = Callable[[int, str, Any, bytes], GatewayError]  # (status, reason, headers, body) -> error
TRAFFIC = frozenset(("generate", "stream", "count", "embed"))  # purposes that honour cooldowns and limits


@dataclass(slots=True)
class Exchange:
    """What the gateway did with one client flow."""

    provider: str
    model: str  # model name sent upstream
    requested: str  # model name the client asked for
    how: str
    upstream: UpstreamRequest
    relay_saved: tuple | None = None  # the client request's own fields while it points at the relay
    status: int | None = None
    response_headers: tuple[tuple[bytes, bytes], ...] = ()
    response_body: bytes | None = None
    pipe: Pipe | None = None
    token: str | None = None
    started: float = 0.0
    first_byte: float | None = None
    account: str = ""  # the account of a subscription provider that served it
    inflight: tuple[str, str] | None = None  # its slot in the pool's in-flight count, until it ends
    failure: dict[str, Any] | None = None  # a failed-over attempt: why, and the cooldown it started (front door)
    earlier: tuple[Exchange, ...] = ()  # the same client flow's failed-over attempts before this one


@dataclass(slots=True)
class CallRequest:
    url: str
    error: ErrorMap  # an error answer -> the error the caller raises (the kind's error format)
    body: bytes = b""
    accept: str = "application/json"
    purpose: str = "generate"  # generate | stream | count | embed | models | test
    headers: dict[str, str] = field(default_factory=dict)  # added to the kind's (passed-through client headers)
    method: str = "POST"
    timeouts: Timeouts | None = None  # None: the entry's, else server.timeouts


def redirect_target(location: str) -> str:
    """Where a redirect points, by host only (its path or query may carry tokens)."""
    try:
        host = urlsplit(location).hostname
    except ValueError:
        host = None
    return f"host {host}" if host else "another path" if location else "nowhere (no Location)"


class ProviderCall:
    def __init__(self, rt: Any, route: Route, kind: ProviderKind, req: CallRequest, requested: str = "",
                 probe: bool = False):
        """Picks the account (raising when none may serve) and takes its in-flight slot.
        probe: the failover's last resort, where only a rate limit keeps an account out."""
        self.rt, self.route, self.kind, self.req, self.probe = rt, route, kind, req, probe
        p = route.provider
        self.who = f"'{p.id}'"
        self.headers = {**kind.headers(p.api_key, req.accept), **req.headers}
        self.accounts = rt.account_set(p, kind) if kind.accounts else None
        self.account = self.accounts.pick(self._open) if self.accounts is not None else None
        self.ex = Exchange(p.id, route.model, requested or route.model, route.how,
                           UpstreamRequest(req.method, req.url, self.headers, req.body, self._proxy()),
                           started=time.time())
        self.ex.account = self.account.name if self.account is not None else ""
        self.ex.inflight = rt.pool.acquire(p.id, self.ex.account)

    def _open(self, account: Any) -> bool:
        p, pool = self.route.provider, self.rt.pool
        if self.req.purpose not in TRAFFIC:  # discovery and the admin test use any usable account
            return True
        if self.probe:
            c = pool.cooling(p.id, account.name, self.route.model)
            return c is None or not is_rate_limit(c)
        return pool.available(p.id, account.name, self.route.model, p.max_concurrency)

    def _proxy(self) -> str | None:
        """The account's own proxy (its credentials file's proxy_url), else the entry's, else server.proxy."""
        own = self.account.proxy if self.account is not None else None
        return own or proxy_setting(self.route.provider, self.rt.settings.server)

    def _hosts(self) -> tuple[list[str], str | None]:
        """The URLs to try in turn, and the path below base_url (None: the URL is not below it)."""
        p, url = self.route.provider, self.req.url
        if not url.startswith(p.base_url):
            return [url], None
        explicit = "base_url" in p.model_fields_set
        return [p.base_url] + (list(p.fallback_urls) or ([] if explicit else list(self.kind.fallback_urls))), \
            url[len(p.base_url):]

    def release(self) -> None:
        """Give the account's in-flight slot back (once)."""
        self.rt.pool.release(self.ex.inflight)
        self.ex.inflight = None

    def _repick(self) -> None:
        """The account needs a login after all: the next one, with its own slot."""
        self.release()
        assert self.accounts is not None  # only subscription kinds have logins to need
        self.account = self.accounts.pick(self._open)
        self.ex.account, self.ex.inflight = self.account.name, self.rt.pool.acquire(self.route.provider.id,
                                                                                   self.account.name)

    async def send(self, gone: Callable[[], bool] = lambda: False) -> aiohttp.ClientResponse | None:
        """Send it; answers the upstream response (2xx) or raises its error. None if `gone()`
        says the client left while we waited."""
        bases, path = self._hosts()
        refreshed, i = False, 0
        while True:
            last_host = i == len(bases) - 1
            up = UpstreamRequest(self.req.method, bases[i] + (path or ""), dict(self.headers), self.req.body,
                                 self._proxy())
            step = await self._prepare(up, refreshed, last_host)
            if step == "next-host":
                i += 1
                continue
            if step == "next-account":
                refreshed = False
                continue
            resp = await self._exchange(up, bases, i, last_host)
            if resp is None:
                i += 1
                continue
            if gone():
                resp.close()
                return None
            if resp.status in self.kind.reauth_statuses and self.account is not None and not refreshed:
                resp.close()  # the token may have been revoked early: refresh and try once more
                refreshed = True
                continue
            if resp.status >= 500 and not last_host:
                resp.close()
                log.warning("provider %s: %s answered %d; trying %s", self.route.provider.id, bases[i], resp.status,
                            bases[i + 1])
                i += 1
                continue
            return await self._answer(resp)

    async def _prepare(self, up: UpstreamRequest, refreshed: bool, last_host: bool) -> str | None:
        """The account's credentials and envelope, then the entry's own headers. Or which way to
        go on: "next-account" (this one needs a login), "next-host" (set-up failed here)."""
        if self.account is not None:
            purpose = "generate" if self.req.purpose == "test" else self.req.purpose  # the test generates
            try:
                await self.account.prepare(up, self.route.model, purpose, force=refreshed)
            except GatewayError as e:
                if e.code == "provider_login_required":
                    self._repick()
                    return "next-account"
                if e.code == "provider_setup_failed" and e.status == 502 and not last_host:
                    return "next-host"  # this host could not even set up the account
                raise
        up.headers.update(self.route.provider.headers)  # the entry's own headers have the last word
        self.ex.upstream = up
        return None

    async def _exchange(self, up: UpstreamRequest, bases: list[str], i: int,
                        last_host: bool) -> aiohttp.ClientResponse | None:
        """The response headers; None when this host failed and the next one is to be tried."""
        p = self.route.provider
        timeouts = self.req.timeouts or p.timeouts or self.rt.settings.server.timeouts
        try:
            return await self.rt.upstream.send(up, timeouts, self.who, stream=self.req.purpose == "stream")
        except GatewayError as e:
            if last_host or e.status not in (502, 504):
                raise
            log.warning("provider %s: %s failed (%s); trying %s", p.id, bases[i], e.message, bases[i + 1])
            return None

    async def _answer(self, resp: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
        """Record the answer; a 2xx is handed back, anything else raised as its error."""
        ex = self.ex
        ex.first_byte = time.time()
        ex.status = resp.status
        # bodies are kept decoded: the provider-side flow must not claim an encoding
        ex.response_headers = tuple((k, v) for k, v in resp.raw_headers if k.lower() != b"content-encoding")
        if 300 <= resp.status < 400:  # never followed: the request carries the provider's key
            resp.close()
            raise GatewayError(502, f"Upstream {self.who} redirected the request ({resp.status}) to "
                               f"{redirect_target(resp.headers.get('Location', ''))}; the "
                               "gateway does not follow redirects: check the provider's base_url.",
                               code="upstream_redirect")
        if resp.status >= 400:
            body = await self.read(resp, MAX_ERROR_BODY, cut=True)
            raise self._error(resp.status, resp.reason or "", resp.headers, body)
        if self.req.purpose != "stream":  # a stream has answered once its first event is no error
            self.succeeded()
        return resp

    def _error(self, status: int, reason: str, headers: Any, body: bytes) -> GatewayError:
        """An error answer: the account's specific error (quota, capacity...), else the kind's format's."""
        specific = self.account.error(status, headers, body) if self.account is not None else None
        return specific or self.req.error(status, reason, headers, body)

    def succeeded(self) -> None:
        self.rt.pool.success(self.route.provider.id, self.ex.account, self.route.model)

    async def first_event(self, resp: aiohttp.ClientResponse, wait: float) -> bytes:
        """Hold a 2xx stream until its first real event (failover_engine.StreamStart) and answer
        the bytes read, which the client gets first. An error as that event is raised as the error
        the same answer with an HTTP status would be; a stream that breaks off, stays silent for the
        read timeout or ends before its first event is a 502/504: nothing reached the client yet, so
        the failover may try another member. wait: seconds of keepalives alone before it goes on."""
        gate = StreamStart(FirstEvent(self.kind.wire), time.monotonic, wait)
        try:
            while (verdict := await self._next_read(resp, gate)) is False:
                pass
        except aiohttp.ServerTimeoutError:
            raise self._broken(resp, gate, GatewayError(
                504, f"Upstream {self.who} sent no event within {wait:g} s.", code="upstream_timeout")) from None
        except aiohttp.ClientError as e:
            raise self._broken(resp, gate, GatewayError(
                502, f"Upstream {self.who} {broke_off(e, len(gate.held), 'the stream')}.",
                code="upstream_disconnected")) from None
        except GatewayError as e:  # it ended before its first event
            raise self._broken(resp, gate, e) from None
        if isinstance(verdict, StreamStartError):
            raise self._broken(resp, gate, self._error(verdict.status, "", resp.headers, verdict.body))
        self.succeeded()
        return gate.held

    async def _next_read(self, resp: aiohttp.ClientResponse, gate: StreamStart) -> StreamStartError | bool:
        try:
            async with asyncio.timeout(gate.remaining()):
                chunk = await resp.content.read(HOLD_LIMIT)
        except aiohttp.ServerTimeoutError:
            raise
        except TimeoutError:
            return True  # keepalives alone for the whole wait: the stream goes on as it is
        if not chunk:
            raise GatewayError(502, f"Upstream {self.who} ended the stream before its first event.",
                               code="upstream_disconnected")
        return gate.feed(chunk)

    def _broken(self, resp: aiohttp.ClientResponse, gate: StreamStart, e: GatewayError) -> GatewayError:
        """A stream that failed before its first event: what came is kept for the provider flow."""
        resp.close()
        self.ex.response_body = gate.held
        return e

    async def read(self, resp: aiohttp.ClientResponse, limit: int = MAX_BODY, cut: bool = False) -> bytes:
        """The answer's body (kept on the exchange), at most `limit` bytes (llmgate/upstream.read_body)."""
        self.ex.response_body = await self.rt.upstream.read_body(resp, self.who, limit=limit, cut=cut)
        return self.ex.response_body

    async def read_json(self, resp: aiohttp.ClientResponse, limit: int = MAX_BODY) -> tuple[bytes, Any]:
        body = await self.read(resp, limit)
        try:
            return body, jsonio.loads(body)
        except ValueError:
            raise GatewayError(502, f"Upstream {self.who} sent a response that is not valid JSON.",
                               code="upstream_error") from None
