"""Addon: answers every request itself: the client APIs' routes, routing, upstream I/O.

Nothing is ever forwarded to mitmproxy's reverse target. Non-streamed answers
are set as the flow's response; streams are handed to the loopback relay.
Routes are listed in llmgate/inbound.py.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from mitmproxy import ctx, http
from prometheus_client import CONTENT_TYPE_LATEST

from converters import anthropic, embeddings, gemini, openai_chat
from converters import canonical as cn
from converters.token_estimate import estimate
from llmgate import listings
from llmgate.accounting import INBOUND
from llmgate.admin_api import AdminApi
from llmgate.client_apis import ANTHROPIC, GEMINI
from llmgate.errors import GatewayError
from llmgate.failover import (
    affinity_key,
    cool_down,
    exhausted,
    fails_over,
    is_rate_limit,
)
from llmgate.inbound import ROUTES_HINT, Inbound, inbound_of
from llmgate.limits import request_body
from llmgate.pool import Cooling
from llmgate.providers import PROVIDER_TYPES
from llmgate.providers.base import ProviderKind
from llmgate.relay import Pipe, bound_socket_buffers, point_at_relay
from llmgate.responses import error_response, json_response
from llmgate.routing import Route, members
from llmgate.runtime import UPSTREAM_MARK, Exchange, Runtime
from llmgate.translate import UPSTREAM_FORMATS, plan
from llmgate.upstream import MAX_ERROR_BODY, UpstreamRequest

log = logging.getLogger("llmgate")

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length", "content-encoding", "set-cookie",
}
GEMINI_BATCH_LIMIT = 100  # inputs per batchEmbedContents call
COUNTERS = {"anthropic": (anthropic.count_request, anthropic.count_of),
            "gemini": (gemini.count_request, gemini.count_of),
            "code_assist": (gemini.count_request, gemini.count_of)}  # the account re-wraps it


def client_headers(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers that make sense to pass on to the client."""
    return [(k, v) for k, v in raw if k.lower().decode("latin-1") not in HOP_BY_HOP]


def _redirect_target(location: str) -> str:
    """Where a redirect points, by host only (its path or query may carry tokens)."""
    try:
        host = urlsplit(location).hostname
    except ValueError:
        host = None
    return f"host {host}" if host else "another path" if location else "nowhere (no Location)"


def _parse_body(raw: bytes, max_depth: int) -> dict[str, Any]:
    try:
        return openai_chat.parse_json_object(raw, max_depth)
    except openai_chat.RequestError as e:
        raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None


def _model_field(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "Missing required parameter: 'model'.", code="invalid_request", param="model")
    return model


def _stream_field(data: dict[str, Any]) -> bool:
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise GatewayError(400, "'stream' must be a boolean.", code="invalid_request", param="stream")
    return stream is True


class FrontDoor:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.admin = AdminApi(rt, lambda: ctx.options.gateway_config, lambda: rt.reload())

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or UPSTREAM_MARK in flow.metadata:
            return
        inbound = inbound_of(flow, self.rt.settings)
        flow.metadata[INBOUND] = {"inbound": inbound.api.name, "endpoint": inbound.endpoint}
        try:
            await self._dispatch(flow, inbound)
        except GatewayError as e:
            array = inbound.action == "streamGenerateContent" and flow.request.query.get("alt") != "sse"
            flow.response = error_response(e, inbound.api, array)
        except Exception:
            log.exception("gateway failed on %s %s", flow.request.method, flow.request.path)
            flow.response = error_response(GatewayError(
                500, "Internal gateway error; the gateway log has the details.", code="internal_error"), inbound.api)

    def done(self) -> None:
        for shim in self.rt.claude_code_shims.values():
            shim.kill_all()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = self.rt.exchanges.get(flow.id)
        if ex is not None and ex.pipe is not None and flow.response is not None:
            flow.response.stream = True  # the relay sends converted events: pass them straight on
            bound_socket_buffers(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        ex = self.rt.exchanges.get(flow.id)
        if ex is not None:  # done (a stream: fully sent): the account's slot is free
            self.rt.pool.release(ex.inflight)
            ex.inflight = None

    def error(self, flow: http.HTTPFlow) -> None:
        ex = self.rt.exchanges.get(flow.id)
        if ex is not None:
            self.rt.pool.release(ex.inflight)
            ex.inflight = None
        if ex is not None and ex.pipe is not None:  # the client left: stop the upstream generating
            self.rt.relay.discard(ex.token)
            ex.pipe.abandon("client-gone")

    async def _dispatch(self, flow: http.HTTPFlow, ib: Inbound) -> None:
        settings = self.rt.settings
        if ib.endpoint == "unknown":
            raise GatewayError(404, f"Unknown route: {flow.request.method} {flow.request.path.split('?', 1)[0]}. "
                               + ROUTES_HINT, code="unknown_route")
        if ib.endpoint == "admin":
            flow.response = await self.admin.handle(flow)
            return
        if ib.endpoint == "ui":
            return  # the web console: llmgate/console's addon, next in the chain, answers
        self._allow(flow.request.method, ib.method)
        raw = request_body(flow.request, settings.server.limits)
        depth = settings.server.limits.max_depth
        catalog = self.rt.catalog
        if ib.endpoint == "health":
            flow.response = await listings.health(self.rt, settings)
        elif ib.endpoint == "metrics":
            flow.response = http.Response.make(200, self.rt.metrics.render(), {"Content-Type": CONTENT_TYPE_LATEST})
        elif ib.endpoint == "models":
            flow.response = await listings.model_list(catalog, settings, ib)
        elif ib.endpoint == "model":
            flow.response = await listings.one_model(catalog, settings, ib)
        elif ib.endpoint == "chat":
            try:
                data, req = openai_chat.parse_request(raw, depth)
            except openai_chat.RequestError as e:
                raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None
            await self._generate(flow, ib, data, raw, req.model, bool(req.stream))
        elif ib.endpoint in ("messages", "responses"):
            data = _parse_body(raw, depth)
            await self._generate(flow, ib, data, raw, _model_field(data), _stream_field(data))
        elif ib.endpoint == "count_tokens":
            data = _parse_body(raw, depth)
            await self._count(flow, ib, data, raw, _model_field(data))
        elif ib.endpoint == "gemini":
            data = _parse_body(raw, depth)
            model = unquote(ib.model or "").removeprefix("models/")
            if ib.action == "countTokens":
                await self._count(flow, ib, gemini.count_body_of(data), raw, model)
            elif ib.action in ("embedContent", "batchEmbedContents"):
                await self._embed(flow, ib, data, raw, model)
            elif ib.action in ("generateContent", "streamGenerateContent"):
                stream = ib.action == "streamGenerateContent"
                await self._generate(flow, ib, data, raw, model, stream, sse=flow.request.query.get("alt") == "sse")
        elif ib.endpoint == "embeddings":
            data = _parse_body(raw, depth)
            await self._embed(flow, ib, data, raw, _model_field(data))

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise GatewayError(405, f"Method {method} is not allowed here; use {allowed}.",
                               code="method_not_allowed", headers={"Allow": allowed})

    async def _members(self, model: str, forced: str | None, header: str | None) -> list[Route]:
        settings, models_of = self.rt.settings, self.rt.catalog.models
        try:
            return members(settings, models_of, model, forced, header)
        except GatewayError as e:
            if e.code != "model_not_found":
                raise
        # maybe a provider that discovers its models serves it: look (again) and retry
        await listings.refresh(self.rt.catalog, settings.providers)
        return members(settings, models_of, model, forced, header)

    def _member_open(self, route: Route, kind: ProviderKind) -> Cooling | None | bool:
        """True if some account of this member may take a request now; else the cooldown
        that keeps it out (None: busy at its concurrency limit, or no usable account)."""
        pool, p = self.rt.pool, route.provider
        names = [a.name for a in self.rt.account_set(p, kind).accounts if a.usable()] if kind.accounts else [""]
        if kind.accounts and not names:
            return True  # let the attempt say which logins are missing
        for name in names:
            if pool.available(p.id, name, route.model, p.max_concurrency):
                return True
        return min((c for n in names if (c := pool.cooling(p.id, n, route.model))), key=lambda c: c.until,
                   default=None)

    async def _failover(self, flow: http.HTTPFlow, ib: Inbound, model: str, data: dict[str, Any] | None,
                        attempt: Callable[[Route, ProviderKind, bool], Awaitable[None]]) -> None:
        """Try the model's pool (then its fallback models' pools) until a member answers.
        A member that fails before the first byte reaches the client with a rate limit, a
        5xx, no connection or no answer in time cools down, and the next one is tried."""
        settings = self.rt.settings
        flow.metadata[INBOUND]["model"] = model
        rules = settings.routing.for_model(model)
        header = flow.request.headers.get("model-provider")
        strategy = rules.strategy or settings.routing.strategy
        session = affinity_key(rules.affinity or settings.routing.affinity, flow.request.headers, data)
        tiers = [(model, await self._members(model, ib.forced, header))]
        for fallback in rules.fallbacks:
            try:
                tiers.append((fallback, await self._members(fallback, None, header)))
            except GatewayError:
                log.warning("fallback model %s of %s is served by no provider", fallback, model)
        failures: list[tuple[Route, str, GatewayError]] = []
        cooling: list[tuple[Route, Cooling | None]] = []
        deadline = time.monotonic() + settings.routing.deadline
        candidates = [(n, r) for n, routes in tiers for r in self.rt.pool.order(n, routes, strategy, session)]
        probe = None  # a member backing off after an error (not a rate limit): the last resort
        while candidates:
            pool_name, route = candidates.pop(0)
            if len(failures) >= settings.routing.max_attempts or time.monotonic() > deadline:
                break
            kind = PROVIDER_TYPES[route.provider.type]
            if route is not probe:
                state = self._member_open(route, kind)
                if state is not True:
                    cooling.append((route, state or None))
                    if not candidates and not failures and probe is None:
                        soft = sorted((c.until, i) for i, (_, c) in enumerate(cooling)
                                      if c is not None and not is_rate_limit(c))
                        if soft:  # nobody else to ask: try the one whose backoff ends first, early
                            probe = cooling[soft[0][1]][0]
                            cooling = [(r, c) for r, c in cooling if r is not probe]
                            candidates.append((pool_name, probe))
                    continue
            try:
                await attempt(route, kind, route is probe)
                return
            except GatewayError as e:
                ex = self.rt.exchanges.get(flow.id)
                account = ex.account if ex is not None else ""
                if ex is not None:
                    self.rt.pool.release(ex.inflight)
                    ex.inflight = None
                if not fails_over(e) or flow.error:
                    raise
                c = cool_down(self.rt.pool, route, account, e)
                failures.append((route, account, e))
                note = f"{route.provider.id}/{route.model}: {e.status}" + (
                    f", cooling {c.until - time.time():.0f} s" if c else "")
                flow.metadata.setdefault("llmgate_attempts", []).append(note)
                log.info("%s failed over: %s", flow.request.path, note)
        raise exhausted(model, failures, cooling)

    async def _send(self, flow: http.HTTPFlow, ib: Inbound, route: Route, kind: ProviderKind, model: str,
                    url: str, body: bytes, accept: str, error: Callable[[int, str, Any, bytes], GatewayError],
                    note: str, purpose: str = "generate", probe: bool = False):
        """POST to the provider; answers the upstream response (2xx) or raises its error.
        None if the client left while we waited.

        Subscription kinds: the account puts its credentials (refreshed when due) and envelope
        on the request; a 401 refreshes and retries once; a host that fails (connect error,
        timeout, 5xx) gives way to the kind's fallback hosts. purpose: generate | stream | count | embed."""
        p = route.provider
        headers = kind.headers(p.api_key, accept)
        if kind.wire == ib.api.wire:
            for name in ib.api.pass_headers:
                if name in flow.request.headers:
                    headers[name] = flow.request.headers[name]
        pool = self.rt.pool
        accounts = self.rt.account_set(p, kind) if kind.accounts else None

        def open_(a: Any) -> bool:
            if probe:  # the last resort: only a rate limit keeps it out
                c = pool.cooling(p.id, a.name, route.model)
                return c is None or not is_rate_limit(c)
            return pool.available(p.id, a.name, route.model, p.max_concurrency)

        account = accounts.pick(open_) if accounts else None
        path = url[len(p.base_url):] if url.startswith(p.base_url) else None
        bases = [p.base_url] + (list(p.fallback_urls) or ([] if "base_url" in p.model_fields_set
                                                          else list(kind.fallback_urls)))
        if path is None:
            bases = bases[:1]
        ex = Exchange(p.id, route.model, model, route.how, UpstreamRequest("POST", url, headers, body),
                      started=time.time())
        ex.account = account.name if account is not None else ""
        ex.inflight = pool.acquire(p.id, ex.account)
        self.rt.exchanges[flow.id] = ex
        flow.metadata["llmgate"] = {"provider": p.id, "upstream_model": route.model, "route": route.how}
        converted = "" if kind.wire == ib.api.wire else f", {ib.api.wire}->{kind.wire}"
        flow.comment = f"-> {p.id} / {route.model} ({route.how}{converted}{note})"

        timeouts = p.timeouts or self.rt.settings.server.timeouts
        who = f"'{p.id}'"
        refreshed = False
        i = 0
        while True:
            up = UpstreamRequest("POST", url if path is None else bases[i] + path, dict(headers), body)
            last_host = i == len(bases) - 1
            if account is not None:
                try:
                    await account.prepare(up, route.model, purpose, force=refreshed)
                except GatewayError as e:
                    if e.code == "provider_login_required" and accounts is not None:
                        account, refreshed = accounts.pick(open_), False  # this one needs a login: the next
                        pool.release(ex.inflight)
                        ex.account, ex.inflight = account.name, pool.acquire(p.id, account.name)
                        continue
                    if e.code == "provider_setup_failed" and e.status == 502 and not last_host:
                        i += 1  # this host could not even set up the account
                        continue
                    raise
            up.headers.update(p.headers)  # the entry's own headers have the last word
            ex.upstream = up
            try:
                resp = await self.rt.upstream.send(up, timeouts, who, stream=purpose == "stream")
            except GatewayError as e:
                if last_host or e.status not in (502, 504):
                    raise
                log.warning("provider %s: %s failed (%s); trying %s", p.id, bases[i], e.message, bases[i + 1])
                i += 1
                continue
            if flow.error:  # the client left while we waited
                resp.close()
                return None
            if resp.status in kind.reauth_statuses and account is not None and not refreshed:
                resp.close()  # the token may have been revoked early: refresh and try once more
                refreshed = True
                continue
            if resp.status >= 500 and not last_host:
                resp.close()
                log.warning("provider %s: %s answered %d; trying %s", p.id, bases[i], resp.status, bases[i + 1])
                i += 1
                continue
            break
        if account is not None:
            flow.comment = flow.comment[:-1] + f", account {account.name})"
        ex.first_byte = time.time()
        ex.status = resp.status
        # bodies are kept decoded: the provider-side flow must not claim an encoding
        ex.response_headers = tuple((k, v) for k, v in resp.raw_headers if k.lower() != b"content-encoding")
        if 300 <= resp.status < 400:  # never followed: the request carries the provider's key
            resp.close()
            raise GatewayError(502, f"Upstream {who} redirected the request ({resp.status}) to "
                               f"{_redirect_target(resp.headers.get('Location', ''))}; the "
                               "gateway does not follow redirects: check the provider's base_url.",
                               code="upstream_redirect")
        if resp.status >= 400:
            ex.response_body = await self.rt.upstream.read_body(resp, who, limit=MAX_ERROR_BODY, cut=True)
            specific = account.error(resp.status, resp.headers, ex.response_body) if account is not None else None
            raise specific or error(resp.status, resp.reason or "", resp.headers, ex.response_body)
        pool.success(p.id, ex.account, route.model)
        return resp

    async def _read_json(self, flow: http.HTTPFlow, resp: Any, route: Route) -> tuple[bytes, Any]:
        ex = self.rt.exchanges[flow.id]
        ex.response_body = await self.rt.upstream.read_body(resp, f"'{route.provider.id}'")
        try:
            return ex.response_body, json.loads(ex.response_body)
        except ValueError:
            raise GatewayError(502, f"Upstream '{route.provider.id}' sent a response that is not valid JSON.",
                               code="upstream_error") from None

    async def _generate(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes,
                        model: str, stream: bool, sse: bool = True) -> None:
        flow.metadata[INBOUND]["stream"] = stream

        async def attempt(route: Route, kind: ProviderKind, probe: bool) -> None:
            p = route.provider
            pl = plan(ib.api, kind, p, route.model, model, data, raw, stream, self.rt.reasoning, sse)
            resp = await self._send(flow, ib, route, kind, model, pl.url, pl.body, pl.accept, pl.error, "",
                                    "stream" if stream else "generate", probe)
            if resp is None:
                return
            out_headers = client_headers(resp.raw_headers) + pl.headers
            ex = self.rt.exchanges[flow.id]
            if stream and resp.content_type != kind.stream_type:
                resp.close()
                raise GatewayError(502, f"Upstream '{p.id}' answered a streaming request with "
                                   f"{resp.content_type or 'no content type'}, not a stream.", code="upstream_error")
            if stream:
                if not sse:  # a Gemini client that asked for one JSON array
                    out_headers = [(k, v) for k, v in out_headers if k.lower() != b"content-type"]
                    out_headers.append((b"content-type", b"application/json; charset=UTF-8"))
                read_timeout = (p.timeouts or self.rt.settings.server.timeouts).read
                pipe = Pipe(resp, self.rt.secrets.stream(pl.transform()), out_headers, f"'{p.id}'", read_timeout)
                port = await self.rt.relay.ensure_started()
                ex.pipe, ex.token = pipe, self.rt.relay.register(pipe)
                ex.relay_saved = point_at_relay(flow.request, port, ex.token)
                return
            ex.response_body = await self.rt.upstream.read_body(resp, f"'{p.id}'")
            try:
                client_body = pl.response(ex.response_body)
            except ValueError:
                raise GatewayError(502, f"Upstream '{p.id}' answered {resp.status} with a body that is not valid "
                                   f"JSON ({resp.content_type}).", code="upstream_error") from None
            flow.response = http.Response.make(resp.status, client_body, out_headers)

        await self._failover(flow, ib, model, data, attempt)

    async def _count(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes, model: str) -> None:
        """Token counting: the provider's own count where it has one, else a local estimate."""
        await self._failover(flow, ib, model, data,
                             lambda route, kind, probe: self._count_at(flow, ib, data, raw, model, route, kind, probe))

    async def _count_at(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes, model: str,
                        route: Route, kind: ProviderKind, probe: bool) -> None:
        p = route.provider
        error = UPSTREAM_FORMATS[kind.wire].error
        fail = lambda status, reason, headers, b: error(p, status, reason, headers, b)
        if kind.count_url and kind.wire == ib.api.wire:  # passthrough
            body = ib.api.with_model(data, raw, route.model)
            resp = await self._send(flow, ib, route, kind, model, kind.count_url(p.base_url, route.model), body,
                                    "application/json", fail, ", count", "count", probe)
            if resp is not None:
                body, _ = await self._read_json(flow, resp, route)
                flow.response = http.Response.make(resp.status, body, client_headers(resp.raw_headers))
            return
        try:
            # count_tokens bodies have no max_tokens, which the Messages decoder requires
            req = ib.api.decode_request({"max_tokens": 1, **data} if ib.api is ANTHROPIC else data, model)
            req.model = route.model
        except cn.ConversionError as e:
            raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None
        if kind.count_url and kind.wire in COUNTERS:
            encode, count_of = COUNTERS[kind.wire]
            try:
                body = openai_chat.dumps(encode(req))
            except cn.ConversionError as e:
                raise GatewayError(400, str(e), code="unsupported_for_provider", param=e.param) from None
            resp = await self._send(flow, ib, route, kind, model, kind.count_url(p.base_url, route.model), body,
                                    "application/json", fail, ", count", "count", probe)
            if resp is None:
                return
            _, answer = await self._read_json(flow, resp, route)
            try:
                n = count_of(answer)
            except ValueError as e:
                raise GatewayError(502, f"Upstream '{p.id}' sent an unusable token count: {e}.",
                                   code="upstream_error") from None
        else:
            n = estimate(req)
            flow.comment = f"-> {p.id} / {route.model} ({route.how}, local token estimate)"
        counted = {"input_tokens": n} if ib.api is ANTHROPIC else {"totalTokens": n}
        flow.response = json_response(200, counted)

    async def _embed(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes, model: str) -> None:
        """Embeddings, OpenAI or Gemini shape in, an OpenAI-compatible or Gemini provider out."""
        await self._failover(flow, ib, model, data,
                             lambda route, kind, probe: self._embed_at(flow, ib, data, raw, model, route, kind, probe))

    async def _embed_at(self, flow: http.HTTPFlow, ib: Inbound, data: dict[str, Any], raw: bytes, model: str,
                        route: Route, kind: ProviderKind, probe: bool) -> None:
        p = route.provider
        if kind.embed_url is None:
            raise GatewayError(400, f"Provider '{p.id}' ({p.type}) has no embeddings endpoint.",
                               code="unsupported_for_provider", param="model")
        error = UPSTREAM_FORMATS[kind.wire].error
        fail = lambda status, reason, headers, b: error(p, status, reason, headers, b)  # noqa: E731
        upstream_gemini = kind.wire == "gemini"
        batch = ib.action == "batchEmbedContents"
        url = kind.embed_url(p.base_url, route.model)
        try:
            if ib.api is not GEMINI and not upstream_gemini:  # OpenAI both sides: passthrough
                body, back = openai_chat.with_model(data, raw, route.model), None
            elif ib.api is GEMINI and upstream_gemini:  # Gemini both sides: passthrough
                url = url.rsplit(":", 1)[0] + ":" + (ib.action or "embedContent")
                body, back = self._gemini_embed_body(data, raw, model, route.model, batch), None
            elif ib.api is GEMINI:
                body = openai_chat.dumps(embeddings.gemini_to_openai_request(data, route.model, batch))
                back = lambda answer: embeddings.openai_to_gemini_response(answer, batch)  # noqa: E731
            else:
                req = embeddings.parse_openai_request(data)
                if len(req.inputs) > GEMINI_BATCH_LIMIT:
                    raise GatewayError(400, f"Gemini embeds at most {GEMINI_BATCH_LIMIT} inputs per request; "
                                       f"this one has {len(req.inputs)}.", code="invalid_request", param="input")
                body = openai_chat.dumps(embeddings.openai_to_gemini(req, route.model))
                back = lambda answer: embeddings.gemini_to_openai_response(  # noqa: E731
                    answer, model, req.encoding_format, list(req.inputs))
        except cn.ConversionError as e:
            raise GatewayError(400, str(e), code="invalid_request", param=e.param) from None
        resp = await self._send(flow, ib, route, kind, model, url, body, "application/json", fail, ", embeddings", "embed",
                                probe)
        if resp is None:
            return
        answer_raw, answer = await self._read_json(flow, resp, route)
        if back is None:
            out = openai_chat.rename_model(answer_raw, model) if ib.api is not GEMINI else answer_raw
        else:
            try:
                out = openai_chat.dumps(back(answer))
            except (ValueError, TypeError, KeyError) as e:
                raise GatewayError(502, f"Upstream '{p.id}' sent an unusable embeddings response: {e}.",
                                   code="upstream_error") from None
        flow.response = http.Response.make(200, out, {"Content-Type": "application/json"})

    @staticmethod
    def _gemini_embed_body(data: dict[str, Any], raw: bytes, client_model: str, model: str, batch: bool) -> bytes:
        """A batch names its model in every item, which must match the URL's: renamed with it."""
        items = data.get("requests")
        if not batch or client_model == model or not isinstance(items, list):
            return raw
        renamed = [{**r, "model": gemini.model_path(model)} if isinstance(r, dict) else r for r in items]
        return openai_chat.dumps({**data, "requests": renamed})
